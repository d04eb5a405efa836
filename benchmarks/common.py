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
          "number below")
    args.bandwidth, args.matmul_flops = copy_bandwidth(device), matmul_flops(device)
    print(f"- ceilings measured now: copy bandwidth {args.bandwidth / 1e9:.1f} GB/s (read + write, 256 MiB), "
          f"matmul {args.matmul_flops / 1e9:.1f} GFLOP/s ({MATMUL_SIZE}^2, fp32 on CPU, bf16 on GPU)\n")
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


MATMUL_SIZE = 2048
TASK_DIM = 18  # SynthMNIST's task vector, the t of every benchmarked projector


def matmul_flops(device: torch.device, size: int = MATMUL_SIZE, dtype: torch.dtype | None = None) -> float:
    """Measured FLOP/s of a square matmul, the compute ceiling: fp32 on the CPU and bf16 on a GPU (as the scales
    train) unless ``dtype`` says otherwise."""
    dtype = dtype or (torch.bfloat16 if device.type == "cuda" else torch.float32)
    a = torch.randn(size, size, device=device, dtype=dtype)
    b = torch.randn(size, size, device=device, dtype=dtype)
    out = torch.empty_like(a)
    seconds = timeit(lambda: torch.matmul(a, b, out=out), device, reps=5, warmup=1)
    return 2 * size**3 / seconds


def table(headers: Sequence[str], rows: Sequence[Sequence[object]]) -> str:
    """A markdown table."""
    lines = ["| " + " | ".join(headers) + " |", "|" + "|".join("---" for _ in headers) + "|"]
    lines += ["| " + " | ".join(str(cell) for cell in row) + " |" for row in rows]
    return "\n".join(lines)


def ms(seconds: float) -> str:
    return f"{seconds * 1e3:.1f}" if seconds < 10 else f"{seconds * 1e3:.0f}"


def _proc_kib(field: str) -> float:
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith(field + ":"):
                return float(line.split()[1])
    raise OSError(field)


def _libc():
    import ctypes
    import ctypes.util

    try:
        return ctypes.CDLL(ctypes.util.find_library("c"))
    except (OSError, TypeError):
        return None


def _mallopt(threshold: int) -> bool:
    """glibc's M_MMAP_THRESHOLD: allocations above it get a mapping of their own, unmapped when freed."""
    libc = _libc()
    try:
        return bool(libc.mallopt(-3, threshold))  # -3: M_MMAP_THRESHOLD
    except AttributeError:  # not glibc
        return False


def peak_memory(fn: Callable[[], object], device: torch.device) -> float:
    """Bytes ``fn`` needed above what was allocated before it: the CUDA allocator's peak on a GPU; on a
    Linux CPU the process's peak resident set (VmHWM, reset through /proc/self/clear_refs) above its
    resident set before the call, after glibc has handed its freed pages back (``malloc_trim``) and with
    every allocation above 128 KiB mapped on its own for the call, so that memory freed earlier and reused
    during the call counts; NaN where neither works."""
    if device.type == "cuda":
        sync(device)
        torch.cuda.reset_peak_memory_stats(device)
        before = torch.cuda.memory_allocated(device)
        fn()
        sync(device)
        return float(torch.cuda.max_memory_allocated(device) - before)
    if not _mallopt(128 * 1024):
        fn()
        return float("nan")
    try:
        _libc().malloc_trim(0)  # hand freed heap pages back: reusing them during the call counts again
        with open("/proc/self/clear_refs", "w") as refs:
            refs.write("5")  # resets VmHWM to the current resident set
        before = _proc_kib("VmRSS")
        fn()
        return 1024.0 * max(_proc_kib("VmHWM") - before, 0.0)
    except OSError:
        return float("nan")
    finally:
        _mallopt(32 * 2**20)  # glibc's largest dynamic threshold: large tensors stay mapped, small ones reused


def mib(nbytes: float) -> str:
    return "n/a" if nbytes != nbytes else f"{nbytes / 2**20:,.1f}"


def scales_arg(text: str) -> list[float]:
    """``--scales 1/2,1/4`` -> [0.5, 0.25]."""
    from fractions import Fraction

    return [float(Fraction(s)) for s in text.split(",")]


def reduced_shape(args: argparse.Namespace, layers: int | None, seq: int | None) -> tuple[int, int]:
    """Depth and T of a batched forward: the paper's 24 x 1024 on a GPU, 4 x 64 on the CPU (2 x 32 quick),
    unless given."""
    cpu = args.device == "cpu"
    if layers is None:
        layers = (2 if args.quick else 4) if cpu else 24
    if seq is None:
        seq = (32 if args.quick else 64) if cpu else 1024
    return layers, seq
