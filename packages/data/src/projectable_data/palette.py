"""Colour palette: pixels -> nearest of K colour clusters (Sec. 3.1: 512 clusters, 1024 tokens at 32x32).

The palette is fitted by k-means on pixels of rendered images; a token is the index of a pixel's nearest
centre and decoding puts the centre colour back. Its identity is the hash of its centres.

Letters in shape comments: B batch, C channels (3), H, W image size, T = H * W tokens, K palette size.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch


@dataclass(frozen=True)
class PaletteConfig:
    size: int = 512  # number of colour clusters = vocabulary size; the paper uses 512
    seed: int = 0  # k-means initialisation and pixel subsampling
    max_fit_pixels: int = 200_000  # pixels drawn from the fit images; bounds k-means time at 32x32
    batch_size: int = 4096  # MiniBatchKMeans batch
    n_init: int = 3  # k-means restarts; the best inertia wins


class Palette:
    """K RGB centres in [-1, 1]; `encode` images to tokens, `decode` tokens to images."""

    def __init__(self, centres):
        centres = torch.as_tensor(np.asarray(centres, dtype=np.float32))
        if centres.ndim != 2 or centres.shape[1] != 3 or centres.shape[0] < 2:
            raise ValueError(
                f"palette centres must have shape (K, 3) with K >= 2, got {tuple(centres.shape)}."
            )
        self.centres = centres  # (K, 3)
        self._sq_norms = (centres * centres).sum(-1)  # (K,)

    @property
    def size(self) -> int:
        return self.centres.shape[0]

    @property
    def hash(self) -> str:
        """Content hash: sha256 of the float32 centres (first 16 hex digits)."""
        return hashlib.sha256(self.centres.numpy().astype("<f4").tobytes()).hexdigest()[:16]

    def encode(self, images: torch.Tensor) -> torch.Tensor:
        """(B, 3, H, W) images in [-1, 1] -> (B, H*W) int64 tokens, raster order, nearest centre in RGB."""
        images = torch.as_tensor(images, dtype=torch.float32)
        if images.ndim != 4 or images.shape[1] != 3:
            raise ValueError(f"encode expects (B, 3, H, W) images, got {tuple(images.shape)}.")
        pixels = images.permute(0, 2, 3, 1).reshape(-1, 3)  # (B*H*W, C), raster order
        nearest = np.empty(pixels.shape[0], dtype=np.int64)
        # (rows, K) distance blocks that stay in cache: ~7x faster than one (B*H*W, K) block at K=512
        rows = max(256, (1 << 18) // self.size)
        for start in range(0, pixels.shape[0], rows):
            # argmin_k |p - c_k|^2 = argmin_k (|c_k|^2 - 2 p.c_k)
            block = torch.addmm(self._sq_norms, pixels[start : start + rows], self.centres.T, alpha=-2.0)
            # numpy's argmin along a contiguous row is several times faster than torch's on CPU
            nearest[start : start + rows] = block.numpy().argmin(axis=1)
        return torch.from_numpy(nearest).reshape(images.shape[0], -1)

    def decode(self, tokens: torch.Tensor) -> torch.Tensor:
        """(B, T) tokens with T a square -> (B, 3, H, W) float32 images (the centre colours)."""
        tokens = torch.as_tensor(tokens, dtype=torch.int64)
        if tokens.ndim != 2:
            raise ValueError(f"decode expects (B, T) tokens, got {tuple(tokens.shape)}.")
        side = math.isqrt(tokens.shape[1])
        if side * side != tokens.shape[1]:
            raise ValueError(f"decode needs a square number of tokens per image, got T={tokens.shape[1]}.")
        if tokens.numel() and (tokens.min() < 0 or tokens.max() >= self.size):
            raise ValueError(
                f"tokens must lie in 0..{self.size - 1} for this palette of {self.size} colours."
            )
        pixels = self.centres[tokens]  # (B, T, C)
        return pixels.reshape(tokens.shape[0], side, side, 3).permute(0, 3, 1, 2).contiguous()

    def save(self, path: str | os.PathLike) -> Path:
        """Write centres and hash to `.npz` atomically (safe with several processes writing the cache)."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".npz", dir=path.parent)
        os.close(fd)
        meta = json.dumps({"hash": self.hash, "size": self.size})
        np.savez(tmp, centres=self.centres.numpy(), meta=np.array(meta))
        os.replace(tmp, path)
        return path

    @classmethod
    def load(cls, path: str | os.PathLike, expected_hash: str | None = None) -> Palette:
        """Read a palette saved by `save`; raise ValueError if its content does not match its stored hash."""
        with np.load(path) as archive:
            palette = cls(archive["centres"])
            meta = json.loads(str(archive["meta"]))
        for want, what in ((meta["hash"], "stored"), (expected_hash, "expected")):
            if want is not None and palette.hash != want:
                raise ValueError(
                    f"palette {path} has content hash {palette.hash}, {what} {want}: the file is stale or "
                    "corrupt. Delete it to refit, or pass the palette you meant."
                )
        return palette

    def __repr__(self) -> str:
        return f"Palette(size={self.size}, hash={self.hash})"


def fit_palette(images: torch.Tensor, config: PaletteConfig = PaletteConfig()) -> Palette:
    """k-means (sklearn MiniBatchKMeans) on the pixels of (B, 3, H, W) rendered images -> Palette.

    Centres are sorted by luminance so token ids read dark to light; the fit is deterministic given
    `config.seed`.
    """
    from sklearn.cluster import MiniBatchKMeans

    pixels = torch.as_tensor(images, dtype=torch.float32).permute(0, 2, 3, 1).reshape(-1, 3).numpy()
    if pixels.shape[0] < config.size:
        raise ValueError(
            f"{pixels.shape[0]} pixels cannot fit {config.size} colour clusters; render more images "
            "(palette_fit_images) or use a smaller palette_size."
        )
    rng = np.random.default_rng(config.seed)
    if pixels.shape[0] > config.max_fit_pixels:
        pixels = pixels[rng.choice(pixels.shape[0], config.max_fit_pixels, replace=False)]
    kmeans = MiniBatchKMeans(
        n_clusters=config.size,
        batch_size=config.batch_size,
        n_init=config.n_init,
        random_state=config.seed,
    ).fit(pixels.astype(np.float64))
    centres = kmeans.cluster_centers_.astype(np.float32)
    luminance = centres @ np.array([0.299, 0.587, 0.114], dtype=np.float32)
    order = np.lexsort((centres[:, 2], centres[:, 1], centres[:, 0], luminance))
    return Palette(centres[order])
