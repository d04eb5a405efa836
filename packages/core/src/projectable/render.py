"""Token sequences to pictures for palette tokens (SynthMNIST): each token is a palette colour, a sequence of
T = side^2 tokens is one side x side image in raster order. The palette is a (K, 3) array of RGB centres in
[-1, 1] (``projectable_data.Palette.centres``), stored as ``palette.json`` (a list of K [r, g, b] rows) beside a
GPT-2 export, or read from a data cache's palette ``.npz``. PNG writing needs Pillow (``pip install pillow``).
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np

from projectable.tokenizer import check_palette

PALETTE_FILE = "palette.json"  # beside a GPT-2 export


def load_palette(path: str | Path) -> np.ndarray:
    """(K, 3) float32 centres in [-1, 1] from ``palette.json`` or a palette ``.npz`` (its ``centres`` array)."""
    path = Path(path)
    if not path.is_file():
        raise ValueError(f"no palette file at {path}; pass a palette.json (K rows of [r, g, b] in [-1, 1]) or a .npz")
    try:
        if path.suffix == ".json":
            centres = np.asarray(json.loads(path.read_text()), dtype=np.float32)
        else:
            with np.load(path) as arrays:
                centres = np.asarray(arrays["centres"] if "centres" in arrays else arrays[arrays.files[0]], np.float32)
    except (OSError, ValueError, KeyError, IndexError, TypeError) as err:
        raise ValueError(f"palette file {path} is not readable ({type(err).__name__}: {err})") from err
    return check_palette(centres, what=f"palette file {path}")


def palette_json(centres) -> bytes:
    """``palette.json``'s bytes for (K, 3) centres in [-1, 1]."""
    return json.dumps(check_palette(centres).round(6).tolist()).encode()


def readable_upscale(side: int, target: int = 128) -> int:
    """The nearest-neighbour zoom that shows a ``side``-pixel image about ``target`` pixels high (at least 1)."""
    return max(1, target // max(1, side))


def tokens_to_images(tokens, centres: np.ndarray) -> np.ndarray:
    """(N, T) tokens -> (N, side, side, 3) uint8 pixels, T = side^2."""
    tokens = np.asarray(tokens, dtype=np.int64)
    side = math.isqrt(tokens.shape[-1])
    if tokens.ndim != 2 or side * side != tokens.shape[1]:
        raise ValueError(f"tokens of shape {tokens.shape} are not (N, side^2) images")
    if tokens.min() < 0 or tokens.max() >= len(centres):
        raise ValueError(f"tokens lie in [{tokens.min()}, {tokens.max()}] but the palette has {len(centres)} colours")
    pixels = ((centres[tokens] + 1) * 127.5).clip(0, 255).round().astype(np.uint8)  # (N, T, 3)
    return pixels.reshape(len(tokens), side, side, 3)


def save_grid_png(images: np.ndarray, path: str | Path, upscale: int | None = None) -> Path:
    """(N, H, W, 3) uint8 images as one PNG grid (ceil(sqrt N) columns, nearest-neighbour upscale; by default
    each image about 128 px high)."""
    try:
        from PIL import Image
    except ImportError as err:
        raise ImportError("writing a PNG needs Pillow: pip install pillow") from err
    n, h, w, _ = images.shape
    upscale = readable_upscale(h) if upscale is None else upscale
    cols = math.ceil(math.sqrt(n))
    rows = math.ceil(n / cols)
    grid = np.zeros((rows * h, cols * w, 3), np.uint8)
    for i, image in enumerate(images):
        r, c = divmod(i, cols)
        grid[r * h : (r + 1) * h, c * w : (c + 1) * w] = image
    grid = grid.repeat(upscale, 0).repeat(upscale, 1)
    path = Path(path)
    Image.fromarray(grid).save(path, format="PNG")
    return path
