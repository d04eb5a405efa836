"""Figure 3 (data half): SynthMNIST renders for given task vectors beside their palette-quantised versions.

Usage:
  python -m projectable_data.figures --out fig3.png --num 8 --resolution 32 --palette-size 512
  python -m projectable_data.figures --out fig3.png --tasks tasks.json   # JSON list of 18-vectors
"""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from .dataset import SynthMNISTConfig, SynthMNISTTokens
from .synthmnist import TASK_DIM
from .tasks import TaskItems, sample_tasks, stream_rng

_STREAM_FIGURE = 6


def to_uint8(images: torch.Tensor) -> np.ndarray:
    """(B, 3, H, W) in [-1, 1] -> (B, H, W, 3) uint8."""
    pixels = ((images.clamp(-1, 1) + 1.0) * 127.5).round().to(torch.uint8)
    return pixels.permute(0, 2, 3, 1).numpy()


def figure3(
    data: SynthMNISTTokens,
    task_vectors,
    out: str | os.PathLike,
    digit_indices=None,
    upscale: int = 4,
    gap: int = 2,
) -> Path:
    """Write a PNG: one column per task vector, top row the render, bottom row its palette quantisation.

    Digits come from the MNIST test split (`digit_indices`, default 0, 1, 2, ...), never flipped.
    """
    task = np.asarray(task_vectors, dtype=np.float32)
    if task.ndim != 2 or task.shape[1] != TASK_DIM:
        raise ValueError(f"task_vectors must have shape (N, {TASK_DIM}), got {task.shape}.")
    n = task.shape[0]
    digit_index = (
        np.arange(n, dtype=np.int64) if digit_indices is None else np.asarray(digit_indices, np.int64)
    )
    items = TaskItems(task, digit_index, np.zeros(n, dtype=bool))
    rendered = data.render(items, "validation")  # (N, C, H, W)
    quantised = data.decode(data.palette.encode(rendered))
    rows = [to_uint8(rendered), to_uint8(quantised)]  # each (N, H, W, 3)

    size = data.config.resolution * upscale
    canvas = Image.new("RGB", (n * (size + gap) + gap, 2 * (size + gap) + gap), (255, 255, 255))
    for r, row in enumerate(rows):
        for c, pixels in enumerate(row):
            tile = Image.fromarray(pixels).resize((size, size), Image.NEAREST)
            canvas.paste(tile, (gap + c * (size + gap), gap + r * (size + gap)))
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    canvas.save(out)
    return out


def main(argv=None, prog: str | None = None) -> Path:
    parser = argparse.ArgumentParser(
        prog=prog, description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--out", required=True, help="PNG file to write")
    parser.add_argument("--tasks", help="JSON file with a list of 18-element task vectors (default: random)")
    parser.add_argument("--num", type=int, default=8, help="random task vectors when --tasks is not given")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--resolution", type=int, default=32, choices=(32, 16, 8))
    parser.add_argument("--palette-size", type=int, default=512)
    parser.add_argument("--palette-fit-images", type=int, default=2048)
    parser.add_argument("--mnist-root", default=None)
    parser.add_argument("--cache-dir", default=None, help="palette cache (default: the user cache)")
    parser.add_argument("--upscale", type=int, default=4, help="pixels per image pixel in the PNG")
    args = parser.parse_args(argv)

    config = SynthMNISTConfig(
        resolution=args.resolution,
        palette_size=args.palette_size,
        mnist_root=args.mnist_root,
        seed=args.seed,
        val_size=max(1, args.num),
        palette_fit_images=args.palette_fit_images,
    )
    data = SynthMNISTTokens(config, cache_dir=args.cache_dir)
    if args.tasks:
        task = np.asarray(json.loads(Path(args.tasks).read_text()), dtype=np.float32)
    else:
        task = sample_tasks(stream_rng(args.seed, _STREAM_FIGURE), args.num)
    out = figure3(data, task, args.out, upscale=args.upscale)
    print(out)
    return out


if __name__ == "__main__":
    main()
