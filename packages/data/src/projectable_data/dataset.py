"""SynthMNIST as token sequences (Sec. 3.1): rendered images quantised by a colour palette.

`SynthMNISTTokens.train_batch(step, batch_size)` is a pure function of (seed, step, batch_size), which is
what makes training resumable; `validation()` is one fixed set, and `selection(size)` a second fixed set on
the MNIST test digits validation leaves out (for choosing a protocol without reading the reported
validation numbers). `SynthMNISTStream` wraps the training stream as a torch IterableDataset that gives the
same batches in the same order with any number of DataLoader workers.

Letters in shape comments: B batch, C channels (3), H, W image size, T = H * W tokens.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
import warnings
from collections.abc import Iterator, Mapping
from dataclasses import asdict, dataclass
from functools import lru_cache
from pathlib import Path
from typing import NamedTuple

import numpy as np
import torch
from torch.utils.data import IterableDataset, get_worker_info

from .mnist import MNIST_MD5, load_mnist
from .palette import Palette, PaletteConfig, PaletteFileError, fit_palette
from .paths import user_cache_dir
from .synthmnist import RENDERER_VERSION, RESOLUTIONS, TASK_DIM, one_thread, render_synthmnist
from .tasks import (
    STREAM_PALETTE,
    STREAM_POOL,
    STREAM_POOL_ORDER,
    TaskItems,
    apply_overrides,
    sample_items,
    sample_tasks,
    stream_rng,
    train_items,
    validation_items,
)

_RENDER_CHUNK = 1024  # images rendered at once when building a palette, pool or validation set

# The selection set's stream id, beside the ids of tasks.py (1..5): its task vectors share no random numbers
# with training, validation, the palette fit or the pool.
STREAM_SELECTION = 6


@dataclass(frozen=True)
class SynthMNISTConfig:
    resolution: int = 32  # 32 (paper, 1024 tokens), 16 (256) or 8 (64); smaller ones are area-downsampled
    palette_size: int = 512  # colour clusters = vocabulary; the paper uses 512, CPU scales use fewer
    mnist_root: str | None = None  # None: $PROJECTABLE_MNIST_ROOT, <repo>/../shared/data/mnist, user cache
    seed: int = 0  # selects the training stream, the validation set, the palette fit and the pool
    val_size: int = 512  # fixed validation items (digits from the MNIST test split)
    train_pool_size: int | None = None  # None: fresh tasks every step; N: a finite pool of N training items
    palette_fit_images: int = 2048  # rendered training images whose pixels fit the palette
    task_overrides: Mapping[int, float] | None = None  # {index: value}: coordinates of t fixed everywhere

    def __post_init__(self):
        if self.resolution not in RESOLUTIONS:
            raise ValueError(f"resolution={self.resolution} is not supported; use one of {RESOLUTIONS}.")
        if self.palette_size < 2:
            raise ValueError(f"palette_size={self.palette_size} must be >= 2 (512 in the paper).")
        if self.train_pool_size is not None and self.train_pool_size <= 0:
            raise ValueError(f"train_pool_size={self.train_pool_size} must be positive, or None for no pool.")
        if self.palette_fit_images <= 0:
            raise ValueError(f"palette_fit_images={self.palette_fit_images} must be positive.")


class Batch(NamedTuple):
    tokens: torch.Tensor  # (B, T) int64 palette indices, raster order
    task: torch.Tensor  # (B, 18) float32 task vectors t
    label: torch.Tensor  # (B,) int64 MNIST class of the overlaid digit

    def to(self, device) -> Batch:
        return Batch(*(x.to(device) for x in self))


def _settings_key(**settings) -> str:
    text = json.dumps(settings, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def _overrides_key(overrides: Mapping[int, float] | None):
    return sorted((int(k), float(v)) for k, v in overrides.items()) if overrides else None


def _atomic_savez(path: Path, **arrays) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".npz", dir=path.parent)
    os.close(fd)
    np.savez(tmp, **arrays)
    os.replace(tmp, path)


class SynthMNISTTokens:
    """SynthMNIST images as palette tokens (Sec. 3.1, App. C.3): training stream, validation and selection
    sets, decoding."""

    def __init__(
        self, config: SynthMNISTConfig = SynthMNISTConfig(), cache_dir: str | os.PathLike | None = None
    ):
        self.config = config
        self.cache_dir = Path(cache_dir) if cache_dir is not None else user_cache_dir("synthmnist")
        self._train_digits = load_mnist("train", config.mnist_root)
        self._test_digits = load_mnist("test", config.mnist_root)
        if config.val_size > len(self._test_digits.labels):
            raise ValueError(
                f"val_size={config.val_size} exceeds the {len(self._test_digits.labels)} test digits."
            )
        self.palette = self._load_or_fit_palette()
        self._pool = self._load_or_build_pool() if config.train_pool_size else None
        self._validation = None
        self._selection: dict[int, Batch] = {}  # size -> selection Batch without overrides

    # --- properties -------------------------------------------------------------------------------
    @property
    def task_dim(self) -> int:
        return TASK_DIM

    @property
    def vocab_size(self) -> int:
        return self.palette.size

    @property
    def seq_len(self) -> int:
        return self.config.resolution**2

    @property
    def image_shape(self) -> tuple[int, int, int]:
        return (3, self.config.resolution, self.config.resolution)

    # --- rendering --------------------------------------------------------------------------------
    def render(self, items: TaskItems, split: str = "train") -> torch.Tensor:
        """Images (B, 3, H, W) in [-1, 1] at the configured resolution; digits from MNIST `split`."""
        digits = self._digits(split).images[items.digit_index]  # (B, 28, 28) uint8
        return render_synthmnist(items.task, digits, items.flip, self.config.resolution)

    def tokenize(self, items: TaskItems, split: str = "train") -> torch.Tensor:
        """(B, T) int64 tokens of the rendered items, rendered in chunks to bound memory."""
        chunks = [
            self.palette.encode(self.render(TaskItems(*(x[i : i + _RENDER_CHUNK] for x in items)), split))
            for i in range(0, len(items.task), _RENDER_CHUNK)
        ]
        return torch.cat(chunks) if chunks else torch.empty(0, self.seq_len, dtype=torch.int64)

    def decode(self, tokens: torch.Tensor) -> torch.Tensor:
        """(B, T) tokens -> (B, 3, H, W) images in [-1, 1] (palette colours)."""
        return self.palette.decode(tokens)

    def _digits(self, split: str):
        if split not in ("train", "validation"):
            raise ValueError(
                f"split={split!r}: use 'train' (MNIST train digits) or 'validation' (MNIST test)."
            )
        return self._train_digits if split == "train" else self._test_digits

    def _batch(self, items: TaskItems, split: str, tokens: torch.Tensor | None = None) -> Batch:
        if tokens is None:
            with one_thread():
                tokens = self.tokenize(items, split)
        labels = torch.from_numpy(self._digits(split).labels[items.digit_index])
        return Batch(tokens, torch.from_numpy(np.ascontiguousarray(items.task)), labels)

    # --- training stream --------------------------------------------------------------------------
    def train_items(
        self, step: int, batch_size: int, overrides: Mapping[int, float] | None = None
    ) -> TaskItems:
        """What batch `step` is made of: a deterministic function of (seed, step, batch_size)."""
        if self._pool is not None:
            items = self._pool_items(self._pool_indices(step, batch_size))
        else:
            items = train_items(self.config.seed, step, batch_size, len(self._train_digits.labels))
            items = items._replace(task=apply_overrides(items.task, self.config.task_overrides))
        return items._replace(task=apply_overrides(items.task, overrides))

    def train_batch(self, step: int, batch_size: int, overrides: Mapping[int, float] | None = None) -> Batch:
        """Training Batch of `step`: the same (seed, step, batch_size) always gives the same batch.

        Without a pool every step draws fresh t ~ U[0,1]^18, MNIST training digits and flips (p = 0.5).
        With `train_pool_size` the batch is read from the cached pool (epochs of seeded permutations).
        `overrides` {index: value} fixes coordinates of t (the images are then rendered afresh).
        """
        if self._pool is not None and not overrides:
            index = self._pool_indices(step, batch_size)
            tokens = torch.from_numpy(self._pool["tokens"][index].astype(np.int64))
            return self._batch(self._pool_items(index), "train", tokens)
        return self._batch(self.train_items(step, batch_size, overrides), "train")

    # --- validation -------------------------------------------------------------------------------
    def validation_items(self, overrides: Mapping[int, float] | None = None) -> TaskItems:
        """The fixed validation items: distinct MNIST test digits, no flips, t ~ U[0,1]^18 (seeded)."""
        items = validation_items(self.config.seed, self.config.val_size, len(self._test_digits.labels))
        task = apply_overrides(apply_overrides(items.task, self.config.task_overrides), overrides)
        return items._replace(task=task)

    def validation(self, overrides: Mapping[int, float] | None = None) -> Batch:
        """Fixed validation Batch (same every call); `overrides` re-renders the same items with t changed."""
        if overrides:
            return self._batch(self.validation_items(overrides), "validation")
        if self._validation is None:
            self._validation = self._batch(self.validation_items(), "validation")
        return self._validation

    # --- selection set ----------------------------------------------------------------------------
    def selection_items(self, size: int, overrides: Mapping[int, float] | None = None) -> TaskItems:
        """`size` fixed items for choosing a protocol: distinct MNIST test digits that the validation set
        does not use, no flips, t ~ U[0,1]^18 from a stream of their own (seeded by seed and size)."""
        validation_digits = self.validation_items().digit_index
        items = _selection_items(self.config.seed, size, validation_digits, len(self._test_digits.labels))
        task = apply_overrides(apply_overrides(items.task, self.config.task_overrides), overrides)
        return items._replace(task=task)

    def selection(self, size: int, overrides: Mapping[int, float] | None = None) -> Batch:
        """Fixed selection Batch of `size` images (same every call), disjoint in digits from `validation()`;
        `overrides` re-renders the same items with t changed."""
        if overrides:
            return self._batch(self.selection_items(size, overrides), "validation")
        if size not in self._selection:
            self._selection[size] = self._batch(self.selection_items(size), "validation")
        return self._selection[size]

    # --- palette and pool caches ------------------------------------------------------------------
    def _palette_path(self) -> Path:
        c = self.config
        key = _settings_key(
            renderer=RENDERER_VERSION,
            mnist=MNIST_MD5["train-images-idx3-ubyte"],
            resolution=c.resolution,
            size=c.palette_size,
            seed=c.seed,
            fit_images=c.palette_fit_images,
            overrides=_overrides_key(c.task_overrides),
            fit=asdict(PaletteConfig(size=c.palette_size, seed=c.seed)),
        )
        return self.cache_dir / f"palette-r{c.resolution}-k{c.palette_size}-{key}.npz"

    def _load_or_fit_palette(self) -> Palette:
        path = self._palette_path()
        if path.is_file():
            try:
                return Palette.load(path)
            except PaletteFileError as err:  # a cache: fit it again (deterministic) rather than stop
                warnings.warn(f"{err}; refitting it", stacklevel=2)
        c = self.config
        rng = stream_rng(c.seed, STREAM_PALETTE, c.palette_fit_images)
        items = sample_items(rng, c.palette_fit_images, len(self._train_digits.labels), flip=True)
        items = items._replace(task=apply_overrides(items.task, c.task_overrides))
        with one_thread():
            images = torch.cat(
                [
                    self.render(TaskItems(*(x[i : i + _RENDER_CHUNK] for x in items)), "train")
                    for i in range(0, len(items.task), _RENDER_CHUNK)
                ]
            )  # (N, C, H, W)
        palette = fit_palette(images, PaletteConfig(size=c.palette_size, seed=c.seed))
        palette.save(path)
        return palette

    def _pool_path(self) -> Path:
        c = self.config
        key = _settings_key(
            renderer=RENDERER_VERSION,
            palette=self.palette.hash,
            resolution=c.resolution,
            seed=c.seed,
            size=c.train_pool_size,
            overrides=_overrides_key(c.task_overrides),
        )
        return self.cache_dir / f"pool-r{c.resolution}-n{c.train_pool_size}-{self.palette.hash}-{key}.npz"

    def _load_or_build_pool(self) -> dict[str, np.ndarray]:
        path = self._pool_path()
        if path.is_file():
            with np.load(path) as archive:
                return {name: archive[name] for name in archive.files}
        c = self.config
        rng = stream_rng(c.seed, STREAM_POOL, c.train_pool_size)
        items = sample_items(rng, c.train_pool_size, len(self._train_digits.labels), flip=True)
        items = items._replace(task=apply_overrides(items.task, c.task_overrides))
        tokens = self.tokenize(items, "train").numpy()
        pool = {
            "tokens": tokens.astype(np.uint16 if self.palette.size <= 65536 else np.int64),
            "task": items.task,
            "digit_index": items.digit_index,
            "flip": items.flip,
        }
        _atomic_savez(path, **pool)
        return pool

    def _pool_items(self, index: np.ndarray) -> TaskItems:
        return TaskItems(
            self._pool["task"][index], self._pool["digit_index"][index], self._pool["flip"][index]
        )

    def _pool_indices(self, step: int, batch_size: int) -> np.ndarray:
        """Pool rows of batch `step`: positions step*B .. step*B+B-1 of a stream of seeded epoch permutations."""
        if step < 0 or batch_size <= 0:
            raise ValueError(f"need step >= 0 and batch_size > 0, got step={step}, batch_size={batch_size}.")
        n = self.config.train_pool_size
        positions = np.arange(step * batch_size, (step + 1) * batch_size, dtype=np.int64)
        epochs, offsets = np.divmod(positions, n)
        index = np.empty(batch_size, dtype=np.int64)
        for epoch in np.unique(epochs):
            mask = epochs == epoch
            index[mask] = _epoch_permutation(self.config.seed, n, int(epoch))[offsets[mask]]
        return index


def _selection_items(seed: int, size: int, validation_digits: np.ndarray, num_digits: int) -> TaskItems:
    """`size` distinct test digits from those outside `validation_digits`, fresh tasks, never flipped."""
    free = np.setdiff1d(np.arange(num_digits, dtype=np.int64), validation_digits)  # sorted
    if not 0 < size <= len(free):
        raise ValueError(
            f"selection size={size} must be in 1..{len(free)}: of the {num_digits} MNIST test digits, "
            f"{len(free)} lie outside the validation set (val_size={len(validation_digits)})."
        )
    rng = stream_rng(seed, STREAM_SELECTION, size)
    task = sample_tasks(rng, size)
    digit_index = np.sort(rng.choice(free, size=size, replace=False)).astype(np.int64)
    return TaskItems(task, digit_index, np.zeros(size, dtype=bool))


@lru_cache(maxsize=4)
def _epoch_permutation(seed: int, n: int, epoch: int) -> np.ndarray:
    return stream_rng(seed, STREAM_POOL_ORDER, n, epoch).permutation(n)


class SynthMNISTStream(IterableDataset):
    """Training batches `start_step, start_step + 1, ...` as an IterableDataset (use `batch_size=None`).

    Worker w of W yields the steps congruent to w mod W; the DataLoader reads workers round-robin, so
    the batches arrive in step order and equal `data.train_batch(step, batch_size)` for any W.
    """

    def __init__(
        self, data: SynthMNISTTokens, batch_size: int, start_step: int = 0, num_steps: int | None = None
    ):
        self.data, self.batch_size, self.start_step, self.num_steps = data, batch_size, start_step, num_steps

    def __iter__(self) -> Iterator[Batch]:
        info = get_worker_info()
        worker, workers = (info.id, info.num_workers) if info is not None else (0, 1)
        step = self.start_step + worker
        stop = None if self.num_steps is None else self.start_step + self.num_steps
        while stop is None or step < stop:
            yield self.data.train_batch(step, self.batch_size)
            step += workers
