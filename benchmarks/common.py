"""Shared helpers of the benchmark scripts: arguments, timing, environment header, markdown tables."""

from __future__ import annotations

import argparse
import datetime
import os
import platform
import statistics
import sys
import time
from collections.abc import Callable, Sequence

import torch


def add_common_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--threads", type=int, default=2, help="torch CPU threads (default 2)")
    parser.add_argument("--quick", action="store_true", help="fewer repetitions and the smallest sizes")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--reps", type=int, default=None, help="timed repetitions (default 3, 1 with --quick)")


def setup(args: argparse.Namespace, title: str) -> torch.device:
    """Fix threads and seeds, print the machine and command the numbers belong to."""
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    if args.reps is None:
        args.reps = 1 if args.quick else 3
    device = torch.device(args.device)
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else platform.processor() or "cpu"
    print(f"## {title}\n")
    print(f"- date: {datetime.date.today().isoformat()}")
    print(f"- machine: {os.cpu_count()} CPUs visible, device {device} ({name}), torch {torch.__version__}, "
          f"{args.threads} threads")
    print(f"- command: `python {' '.join(sys.argv)}`")
    print(f"- load average at start (1/5/15 min): {load_average()} -- other work on a shared machine slows every "
          "number below\n")
    return device


def load_average() -> str:
    return "/".join(f"{x:.1f}" for x in os.getloadavg())


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def timeit(fn: Callable[[], object], device: torch.device, reps: int, warmup: int = 1) -> float:
    """Median wall seconds of ``fn`` over ``reps`` runs after ``warmup`` runs."""
    for _ in range(warmup):
        fn()
    sync(device)
    times = []
    for _ in range(reps):
        start = time.perf_counter()
        fn()
        sync(device)
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def copy_bandwidth(device: torch.device, megabytes: int = 256) -> float:
    """Measured bytes/s of a large tensor copy (read + write), for the bytes-moved floor."""
    x = torch.empty(megabytes * 2**20 // 4, device=device)
    y = torch.empty_like(x)
    seconds = timeit(lambda: y.copy_(x), device, reps=5, warmup=1)
    return 2 * x.numel() * 4 / seconds


def table(headers: Sequence[str], rows: Sequence[Sequence[object]]) -> str:
    """A markdown table."""
    lines = ["| " + " | ".join(headers) + " |", "|" + "|".join("---" for _ in headers) + "|"]
    lines += ["| " + " | ".join(str(cell) for cell in row) + " |" for row in rows]
    return "\n".join(lines)


def ms(seconds: float) -> str:
    return f"{seconds * 1e3:.1f}" if seconds < 10 else f"{seconds * 1e3:.0f}"
