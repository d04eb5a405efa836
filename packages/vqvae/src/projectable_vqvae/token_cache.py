"""On-disk token cache: a whole image dataset tokenised once by the VQ-VAE (Sec. 3.1 ImageNet data).

Layout of a cache directory:
  meta.json      what was tokenised: model fingerprint, dataset size and image shape, token grid
  tokens.npy     (N, h, w) uint16 array, written in place through np.memmap (npy header, so np.load works)
  progress.json  chunk size and indices of finished chunks, rewritten atomically after each chunk is flushed

An interrupted run leaves finished chunks on disk; calling `tokenize_dataset` again with the same model
and data resumes at the first unfinished chunk. A different model or dataset is refused (or, with
overwrite=True, the cache is rebuilt).
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import torch
from tqdm.auto import tqdm

from .vqvae import VQVAE

CACHE_VERSION = 1


class SliceableImages(Protocol):
    """Anything with len() whose [a:b] gives a (b - a, C, H, W) uint8 or float array/tensor."""

    def __len__(self) -> int: ...

    def __getitem__(self, index: slice) -> Any: ...


@dataclass(frozen=True)
class TokenCache:
    directory: Path
    tokens: np.ndarray  # (N, h, w) uint16, read-only memory map
    fingerprint: str  # sha256 of the model weights, its config and the dataset description

    def __len__(self) -> int:
        return self.tokens.shape[0]

    def get(self, indices: np.ndarray | list[int] | slice) -> torch.Tensor:
        """Tokens of the given images as (B, h, w) int64 (the dtype the GPT embeds)."""
        return torch.from_numpy(np.asarray(self.tokens[indices], dtype=np.int64))


def model_fingerprint(model: VQVAE) -> str:
    """sha256 over the config and every tensor of the state dict (names, shapes, dtypes, bytes)."""
    h = hashlib.sha256(json.dumps(model.cfg.to_dict(), sort_keys=True).encode())
    for name, t in sorted(model.state_dict().items()):
        t = t.detach().cpu().contiguous()
        h.update(f"{name}:{tuple(t.shape)}:{t.dtype}".encode())
        h.update(t.numpy().tobytes() if t.dtype != torch.bfloat16 else t.float().numpy().tobytes())
    return h.hexdigest()


def _to_tensor(batch: Any) -> torch.Tensor:
    return batch if isinstance(batch, torch.Tensor) else torch.from_numpy(np.ascontiguousarray(batch))


def _write_json_atomic(path: Path, obj: dict) -> None:
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(json.dumps(obj, indent=1, sort_keys=True))
    os.replace(tmp, path)


def tokenize_dataset(
    model: VQVAE,
    images: SliceableImages,
    cache_dir: str | Path,
    *,
    chunk_size: int = 4096,
    batch_size: int = 256,
    dataset_id: str = "",
    overwrite: bool = False,
    progress: bool = True,
) -> TokenCache:
    """Encode every image of `images` into `cache_dir`, resuming an interrupted run.

    `dataset_id` is folded into the fingerprint: give it a name for the data (e.g. "imagenet64/train")
    so two datasets of equal size and shape are never confused.
    """
    if chunk_size < 1 or batch_size < 1:
        raise ValueError(f"chunk_size and batch_size must be >= 1, got {chunk_size}, {batch_size}")
    n = len(images)
    if n == 0:
        raise ValueError("images is empty; nothing to tokenise")
    first = _to_tensor(images[0:1])
    if first.ndim != 4 or first.shape[0] != 1:
        raise ValueError(
            f"images[0:1] must have shape (1, C, H, W), got {tuple(first.shape)}; "
            "wrap the dataset so slices give channel-first batches"
        )
    _, c, hgt, wid = first.shape
    if hgt != wid:
        raise ValueError(f"images must be square, got {hgt}x{wid}")
    grid = model.cfg.token_shape(hgt)
    meta = {
        "version": CACHE_VERSION,
        "num_images": n,
        "image_shape": [int(c), int(hgt), int(wid)],
        "token_shape": list(grid),
        "codebook_size": model.cfg.codebook_size,
        "dataset_id": dataset_id,
        "model_fingerprint": model_fingerprint(model),
    }
    meta["fingerprint"] = hashlib.sha256(json.dumps(meta, sort_keys=True).encode()).hexdigest()

    cache_dir = Path(cache_dir)
    cache_dir.mkdir(parents=True, exist_ok=True)
    meta_path, tokens_path, progress_path = (
        cache_dir / "meta.json",
        cache_dir / "tokens.npy",
        cache_dir / "progress.json",
    )
    if meta_path.exists():
        old = json.loads(meta_path.read_text())
        if old.get("fingerprint") != meta["fingerprint"]:
            if not overwrite:
                diff = sorted(k for k in meta if old.get(k) != meta[k] and k != "fingerprint")
                raise ValueError(
                    f"token cache {cache_dir} was built for different inputs (differs in {diff}); "
                    "pass overwrite=True to rebuild it or choose another cache_dir"
                )
            for p in (meta_path, tokens_path, progress_path):
                p.unlink(missing_ok=True)

    done: set[int] = set()
    if meta_path.exists() and tokens_path.exists() and progress_path.exists():
        prog = json.loads(progress_path.read_text())
        done, chunk_size = set(prog["done_chunks"]), prog["chunk_size"]  # resume on the original chunking
        mm = np.lib.format.open_memmap(tokens_path, mode="r+")
        if mm.shape != (n, *grid) or mm.dtype != np.uint16:
            raise ValueError(
                f"{tokens_path} has shape {mm.shape} / {mm.dtype}, expected {(n, *grid)} uint16; "
                "delete the cache directory and run again"
            )
    else:
        mm = np.lib.format.open_memmap(tokens_path, mode="w+", dtype=np.uint16, shape=(n, *grid))
        done = set()
        _write_json_atomic(progress_path, {"done_chunks": [], "complete": False, "chunk_size": chunk_size})
        _write_json_atomic(meta_path, meta)

    num_chunks = (n + chunk_size - 1) // chunk_size
    todo = [i for i in range(num_chunks) if i not in done]
    bar = tqdm(
        total=n,
        initial=n - sum(min(chunk_size, n - i * chunk_size) for i in todo),
        disable=not progress,
        desc="tokenise",
        unit="img",
        leave=False,
    )
    try:
        for chunk in todo:
            start, stop = chunk * chunk_size, min((chunk + 1) * chunk_size, n)
            block = _to_tensor(images[start:stop])  # (b, C, H, W)
            if block.shape[0] != stop - start or tuple(block.shape[1:]) != (c, hgt, wid):
                raise ValueError(
                    f"images[{start}:{stop}] has shape {tuple(block.shape)}, expected "
                    f"({stop - start}, {c}, {hgt}, {wid})"
                )
            for b0 in range(0, stop - start, batch_size):
                tokens = model.encode(block[b0 : b0 + batch_size])  # (b, h, w) int64
                mm[start + b0 : start + b0 + tokens.shape[0]] = tokens.cpu().numpy().astype(np.uint16)
                bar.update(tokens.shape[0])
            mm.flush()  # the tokens reach disk before the chunk is marked done
            done.add(chunk)
            _write_json_atomic(
                progress_path,
                {"done_chunks": sorted(done), "complete": len(done) == num_chunks, "chunk_size": chunk_size},
            )
    finally:
        bar.close()
        del mm
    _write_json_atomic(
        progress_path, {"done_chunks": sorted(done), "complete": True, "chunk_size": chunk_size}
    )
    return load_token_cache(cache_dir)


def load_token_cache(cache_dir: str | Path) -> TokenCache:
    """Open a finished cache read-only; an unfinished one is an error telling how to resume it."""
    cache_dir = Path(cache_dir)
    meta_path, tokens_path, progress_path = (
        cache_dir / "meta.json",
        cache_dir / "tokens.npy",
        cache_dir / "progress.json",
    )
    for p in (meta_path, tokens_path, progress_path):
        if not p.exists():
            raise FileNotFoundError(
                f"{p} is missing: {cache_dir} is not a token cache; "
                "build it with projectable_vqvae.tokenize_dataset"
            )
    meta = json.loads(meta_path.read_text())
    prog = json.loads(progress_path.read_text())
    if not prog.get("complete"):
        total = (meta["num_images"] + prog["chunk_size"] - 1) // prog["chunk_size"]
        raise ValueError(
            f"token cache {cache_dir} is unfinished ({len(prog['done_chunks'])}/{total} chunks); "
            "call tokenize_dataset again with the same model and images to resume it"
        )
    tokens = np.load(tokens_path, mmap_mode="r")
    expected = (meta["num_images"], *meta["token_shape"])
    if tokens.shape != expected:
        raise ValueError(
            f"{tokens_path} has shape {tokens.shape}, meta.json says {expected}; rebuild the cache"
        )
    return TokenCache(cache_dir, tokens, meta["fingerprint"])
