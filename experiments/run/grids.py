"""Sample image grids as PNG files."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import torch
from einops import rearrange
from PIL import Image


def image_grid(images: torch.Tensor, cols: int | None = None, upscale: int = 4) -> np.ndarray:
    """(N, C, H, W) images in [-1, 1] -> (rows*H*up, cols*W*up, C) uint8, row-major, blank cells black.

    Letters: n images, r rows, c columns, h/w height/width, ch channels.
    """
    n = images.shape[0]
    cols = cols or math.ceil(math.sqrt(n))
    rows = math.ceil(n / cols)
    pad = images.new_full((rows * cols - n, *images.shape[1:]), -1.0)
    cells = torch.cat([images.float().cpu(), pad])  # (r*c, ch, h, w)
    grid = rearrange(cells, "(r c) ch h w -> (r h) (c w) ch", r=rows, c=cols)
    grid = grid.repeat_interleave(upscale, 0).repeat_interleave(upscale, 1)  # nearest-neighbour upscale
    return ((grid.clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8).numpy()


def save_png(array: np.ndarray, path: str | Path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(array).save(path)
    return path
