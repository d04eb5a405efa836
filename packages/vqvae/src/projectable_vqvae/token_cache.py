"""On-disk token cache: a whole image dataset tokenised once by the VQ-VAE (Sec. 3.1 ImageNet data).

Layout of a cache directory:
  meta.json      what was tokenised: model fingerprint, dataset size and image shape, token grid
  tokens.npy     (N, h, w) uint16 array, written in place through np.memmap (npy header, so np.load works)
  progress.json  chunk size and indices of finished chunks, rewritten atomically after each chunk is flushed

An interrupted run leaves finished chunks on disk; calling `tokenize_dataset` again with the same model
and data resumes at the first unfinished chunk. A different model or dataset is refused (or, with
overwrite=True, the cache is rebuilt). A damaged tokens.npy or progress.json under a meta.json of the same
inputs is rebuilt (with a warning naming the file); a damaged meta.json is refused, naming it, unless
overwrite=True, since without it nothing says the directory holds only a cache. `load_token_cache` names a
damaged file and says how to rebuild.
"""

from __future__ import annotations

import hashlib
import json
import os
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import torch
from tqdm.auto import tqdm

from .vqvae import VQVAE

CACHE_VERSION = 1
REBUILD_HINT = "rebuild it with tokenize_dataset(model, images, cache_dir, overwrite=True)"


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


class CorruptCacheError(ValueError):
    """A file of a token cache is unreadable or inconsistent; the message names it and how to rebuild."""


def _read_json(path: Path, keys: tuple[str, ...]) -> dict:
    """A cache JSON file holding ``keys``; a damaged one is a CorruptCacheError naming it."""
    try:
        obj = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise CorruptCacheError(f"{path} is not readable JSON ({err})") from None
    if not isinstance(obj, dict):
        raise CorruptCacheError(f"{path} holds a {type(obj).__name__}, not a JSON object")
    missing = [k for k in keys if k not in obj]
    if missing:
        raise CorruptCacheError(f"{path} lacks {missing}")
    return obj


def _read_progress(path: Path, num_images: int) -> dict:
    prog = _read_json(path, ("done_chunks", "chunk_size"))
    size, done = prog["chunk_size"], prog["done_chunks"]
    if not isinstance(size, int) or size < 1 or not isinstance(done, list):
        raise CorruptCacheError(f"{path} holds chunk_size={size!r}, done_chunks of type {type(done).__name__}")
    num_chunks = (num_images + size - 1) // size
    if not all(isinstance(c, int) and 0 <= c < num_chunks for c in done):
        raise CorruptCacheError(f"{path} lists chunks outside 0..{num_chunks - 1}")
    return prog


def _open_tokens(path: Path, mode: str, shape: tuple[int, ...]) -> np.ndarray:
    """The (N, h, w) uint16 tokens array of a cache, memory-mapped; anything else is a CorruptCacheError."""
    try:
        with open(path, "rb") as f:
            major, _ = np.lib.format.read_magic(f)
            read_header = np.lib.format.read_array_header_1_0 if major == 1 else np.lib.format.read_array_header_2_0
            header = read_header(f)  # (shape, fortran_order, dtype)
            offset = f.tell()
    except (OSError, ValueError, EOFError) as err:  # a foreign or damaged npy header
        raise CorruptCacheError(f"{path} is not a readable .npy array ({err})") from None
    found_shape, _, dtype = header
    if tuple(found_shape) != shape or dtype != np.uint16:
        raise CorruptCacheError(f"{path} has shape {tuple(found_shape)} / {dtype}, expected {shape} uint16")
    size, expected = path.stat().st_size, offset + 2 * int(np.prod(shape))
    if size != expected:  # a memory map opened read-write would silently pad a truncated file with zeros
        raise CorruptCacheError(f"{path} is truncated or padded: {size} bytes, expected {expected}")
    return np.lib.format.open_memmap(path, mode="r+") if mode == "r+" else np.load(path, mmap_mode=mode)


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

    def start_over() -> None:
        for p in (meta_path, tokens_path, progress_path):
            p.unlink(missing_ok=True)

    if meta_path.exists():
        try:
            old = _read_json(meta_path, ())
        except CorruptCacheError as err:
            if not overwrite:  # without a readable meta.json nothing says the directory holds only a cache
                raise CorruptCacheError(
                    f"token cache {cache_dir} is damaged: {err}; pass overwrite=True to rebuild it, or delete "
                    f"{cache_dir}"
                ) from None
            old = {}
        if old.get("fingerprint") != meta["fingerprint"]:
            if not overwrite:
                diff = sorted(k for k in meta if old.get(k) != meta[k] and k != "fingerprint")
                raise ValueError(
                    f"token cache {cache_dir} was built for different inputs (differs in {diff}); "
                    "pass overwrite=True to rebuild it or choose another cache_dir"
                )
            start_over()

    done: set[int] = set()
    mm = None
    if meta_path.exists() and tokens_path.exists() and progress_path.exists():
        try:
            prog = _read_progress(progress_path, n)
            mm = _open_tokens(tokens_path, "r+", (n, *grid))
            done, chunk_size = set(prog["done_chunks"]), prog["chunk_size"]  # resume on the original chunking
        except CorruptCacheError as err:  # our own cache (meta.json matches): rebuild what it lost
            warnings.warn(f"rebuilding token cache {cache_dir}: {err}", stacklevel=2)
            mm = None
            start_over()
    if mm is None:
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
    try:
        meta = _read_json(meta_path, ("num_images", "token_shape", "fingerprint"))
        prog = _read_progress(progress_path, meta["num_images"])
    except CorruptCacheError as err:
        raise CorruptCacheError(f"token cache {cache_dir} is damaged: {err}; {REBUILD_HINT}") from None
    if not prog.get("complete"):
        total = (meta["num_images"] + prog["chunk_size"] - 1) // prog["chunk_size"]
        raise ValueError(
            f"token cache {cache_dir} is unfinished ({len(prog['done_chunks'])}/{total} chunks); "
            "call tokenize_dataset again with the same model and images to resume it"
        )
    try:
        tokens = _open_tokens(tokens_path, "r", (meta["num_images"], *meta["token_shape"]))
    except CorruptCacheError as err:
        raise CorruptCacheError(f"token cache {cache_dir} is damaged: {err}; {REBUILD_HINT}") from None
    return TokenCache(cache_dir, tokens, meta["fingerprint"])
