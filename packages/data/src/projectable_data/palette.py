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
import zipfile
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

_GRID = 16  # cells per RGB axis for the nearest-centre search; ~6 candidates per cell at K=512
_CELL_MARGIN = 1e-4  # cells are widened so float rounding at a cell border cannot drop the true nearest


@dataclass(frozen=True)
class PaletteConfig:
    size: int = 512  # number of colour clusters = vocabulary size; the paper uses 512
    seed: int = 0  # k-means initialisation and pixel subsampling
    max_fit_pixels: int = 200_000  # pixels drawn from the fit images; bounds k-means time at 32x32
    batch_size: int = 4096  # MiniBatchKMeans batch
    n_init: int = 3  # k-means restarts; the best inertia wins


STALE_HINT = "It is a cache: delete it to refit (SynthMNISTTokens fits a missing palette), or pass the palette you meant."


class PaletteFileError(ValueError):
    """A palette file is unreadable, not a palette, or its content does not match its hash."""


class Palette:
    """K RGB centres in [-1, 1]; `encode` images to tokens, `decode` tokens to images."""

    def __init__(self, centres):
        centres = torch.as_tensor(np.asarray(centres, dtype=np.float32))
        if centres.ndim != 2 or centres.shape[1] != 3 or centres.shape[0] < 2:
            raise ValueError(
                f"palette centres must have shape (K, 3) with K >= 2, got {tuple(centres.shape)}."
            )
        if not torch.isfinite(centres).all():
            raise ValueError("palette centres contain NaN or inf; refit the palette")
        self.centres = centres  # (K, 3)
        self._candidates = None  # built on first encode

    @property
    def size(self) -> int:
        return self.centres.shape[0]

    @property
    def hash(self) -> str:
        """Content hash: sha256 of the float32 centres (first 16 hex digits)."""
        return hashlib.sha256(self.centres.numpy().astype("<f4").tobytes()).hexdigest()[:16]

    def encode(self, images: torch.Tensor) -> torch.Tensor:
        """(B, 3, H, W) images in [-1, 1] -> (B, H*W) int64 tokens, raster order, nearest centre in RGB.

        Exact nearest centre (ties to the lower index). Pixels inside the RGB cube [-1, 1]^3 compare only
        against the few centres that can be nearest anywhere in their grid cell; others against all.
        """
        images = torch.as_tensor(images, dtype=torch.float32)
        if images.ndim != 4 or images.shape[1] != 3:
            raise ValueError(f"encode expects (B, 3, H, W) images, got {tuple(images.shape)}.")
        if not torch.isfinite(images).all():
            raise ValueError(
                f"encode got images with {int((~torch.isfinite(images)).sum())} NaN or inf values; "
                "pass finite images in [-1, 1]"
            )
        pixels = images.permute(0, 2, 3, 1).reshape(-1, 3)  # (N, C) with N = B*H*W, raster order
        if pixels.numel() and pixels.abs().max() <= 1.0:
            candidates = self._cell_candidates()[self._cell_index(pixels)].numpy()  # (N, M) ids, ascending
        else:
            candidates = np.broadcast_to(np.arange(self.size), (pixels.shape[0], self.size))  # (N, K)
        pixels, centres = pixels.numpy(), self.centres.numpy().T  # (N, C), (C, K)
        nearest = np.empty(pixels.shape[0], dtype=np.int64)
        rows = 4096
        for start in range(0, pixels.shape[0], rows):
            block, colour = candidates[start : start + rows], pixels[start : start + rows]  # (R, M), (R, C)
            # squared distances, one channel at a time: numpy gathers and row argmin beat torch's here
            distances = (colour[:, 0:1] - centres[0][block]) ** 2  # (R, M)
            distances += (colour[:, 1:2] - centres[1][block]) ** 2
            distances += (colour[:, 2:3] - centres[2][block]) ** 2
            best = distances.argmin(axis=1)[:, None]  # first minimum: the lower centre id on ties
            nearest[start : start + rows] = np.take_along_axis(block, best, axis=1)[:, 0]
        return torch.from_numpy(nearest).reshape(images.shape[0], -1)

    def _cell_index(self, pixels: torch.Tensor) -> torch.Tensor:
        cell = ((pixels + 1.0) * (_GRID / 2)).floor().clamp_(0, _GRID - 1).long()  # (N, C)
        return (cell[:, 0] * _GRID + cell[:, 1]) * _GRID + cell[:, 2]  # (N,)

    def _cell_candidates(self) -> torch.Tensor:
        """(G^3, M) ids of the centres that can be nearest to some point of each cell of a G^3 grid on
        [-1, 1]^3: those whose smallest distance to the cell is within the smallest largest-distance of
        any centre. Padded with the cell's last candidate; built once per palette."""
        if getattr(self, "_candidates", None) is None:
            edges = torch.linspace(-1.0, 1.0, _GRID + 1, dtype=torch.float64)
            lo, hi = edges[:-1, None] - _CELL_MARGIN, edges[1:, None] + _CELL_MARGIN  # (G, 1), widened
            centres = self.centres.double()
            near, far = [], []
            for axis in range(3):
                c = centres[None, :, axis]  # (1, K)
                near.append((torch.clamp(lo - c, min=0) + torch.clamp(c - hi, min=0)) ** 2)  # (G, K)
                far.append(torch.maximum((c - lo).abs(), (c - hi).abs()) ** 2)
            # (G, G, G, K) squared distance bounds between every cell and every centre
            d_near = near[0][:, None, None] + near[1][None, :, None] + near[2][None, None, :]
            d_far = far[0][:, None, None] + far[1][None, :, None] + far[2][None, None, :]
            possible = (d_near <= d_far.min(-1, keepdim=True).values).reshape(_GRID**3, self.size)
            width = int(possible.sum(1).max())
            # stable sort puts candidate ids first, ascending; pad with the last candidate of the cell
            order = torch.sort((~possible).to(torch.int8), dim=1, stable=True).indices[:, :width]
            count = possible.sum(1, keepdim=True)
            pad = torch.arange(width)[None] >= count
            order = torch.where(pad, order.gather(1, count - 1), order)
            self._candidates = order
        return self._candidates

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
        """Read a palette saved by `save`. A missing file is a FileNotFoundError; a truncated, damaged or
        foreign file, or one whose content does not match its stored hash, a `PaletteFileError` naming it."""
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"no palette file at {path}; write one with Palette.save")
        try:
            archive = np.load(path, allow_pickle=False)
            if not isinstance(archive, np.lib.npyio.NpzFile):
                raise ValueError(f"it holds one array of shape {archive.shape}, not an .npz of 'centres' and 'meta'")
            with archive:
                palette = cls(archive["centres"])
                stored = json.loads(str(archive["meta"]))["hash"]
        except (OSError, EOFError, KeyError, TypeError, ValueError, zipfile.BadZipFile, zlib.error) as err:
            raise PaletteFileError(
                f"palette file {path} is truncated, damaged or not a palette ({type(err).__name__}: {err}). "
                f"{STALE_HINT}"
            ) from None
        for want, what in ((stored, "stored"), (expected_hash, "expected")):
            if want is not None and palette.hash != want:
                raise PaletteFileError(
                    f"palette {path} has content hash {palette.hash}, {what} {want}: the file is stale or "
                    f"corrupt. {STALE_HINT}"
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
