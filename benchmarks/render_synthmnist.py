"""SynthMNIST throughput: renderer images/s at 32x32, and the cost of one training batch.

    python benchmarks/render_synthmnist.py [--threads 2] [--batch 1024] [--seconds 3] [--workers 2]

Prints one line per measurement; record results in benchmarks/README.md with machine, command and date.
"""

from __future__ import annotations

import argparse
import platform
import tempfile
import time

import numpy as np
import torch
from projectable_data import (
    SynthMNISTConfig,
    SynthMNISTStream,
    SynthMNISTTokens,
    load_mnist,
    render_synthmnist,
)
from torch.utils.data import DataLoader


def _rate(fn, seconds: float) -> tuple[float, int]:
    fn()  # warm-up
    calls, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        fn()
        calls += 1
    return (time.perf_counter() - start) / calls, calls


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--batch", type=int, default=1024)
    parser.add_argument("--seconds", type=float, default=3.0)
    parser.add_argument("--mnist-root", default=None)
    parser.add_argument("--workers", type=int, default=2, help="DataLoader workers for the stream (0: skip)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    print(
        f"# {platform.processor() or platform.machine()}, torch {torch.__version__}, threads {args.threads}"
    )

    digits = load_mnist("train", args.mnist_root).images
    rng = np.random.default_rng(0)
    for batch in sorted({32, args.batch}):
        tasks = rng.random((batch, 18), dtype=np.float32)
        index = rng.integers(0, len(digits), batch)
        flips = rng.random(batch) < 0.5
        per_call, calls = _rate(
            lambda t=tasks, d=digits[index], f=flips: render_synthmnist(t, d, f), args.seconds
        )
        print(
            f"render 32x32 batch {batch}: {batch / per_call:,.0f} images/s ({per_call * 1e3:.2f} ms/batch, {calls} calls)"
        )

    with tempfile.TemporaryDirectory() as cache:
        for resolution, palette_size in ((16, 64), (32, 512)):
            config = SynthMNISTConfig(
                resolution=resolution,
                palette_size=palette_size,
                mnist_root=args.mnist_root,
                val_size=32,
                palette_fit_images=512,
            )
            start = time.perf_counter()
            data = SynthMNISTTokens(config, cache_dir=cache)
            fit = time.perf_counter() - start
            step = iter(range(10**9))
            per_call, calls = _rate(lambda d=data, s=step: d.train_batch(next(s), 32), args.seconds)
            print(
                f"train_batch {resolution}x{resolution}, {palette_size} colours, batch 32: {per_call * 1e3:.2f} ms "
                f"({calls} calls; palette fit on 512 images {fit:.1f} s)"
            )
            if args.workers:
                loader = DataLoader(
                    SynthMNISTStream(data, batch_size=256, num_steps=8 * args.workers),
                    batch_size=None,
                    num_workers=args.workers,
                )
                start = time.perf_counter()
                images = sum(len(batch.tokens) for batch in loader)
                rate = images / (time.perf_counter() - start)
                print(
                    f"DataLoader {args.workers} workers, {resolution}x{resolution} tokens, batch 256: "
                    f"{rate:,.0f} images/s (incl. worker start)"
                )


if __name__ == "__main__":
    main()
