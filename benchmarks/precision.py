"""fp32 against bf16 (``train.precision``) at the cpu scale: the training step of every model a cpu Table 1 trains,
the evaluation forward, and where a step's time goes, beside the fp32 and bf16 matmul ceilings.

Every model is the cpu scale's (``conf/scale/cpu.yaml``: L=4, d=128, 4 heads, T=256, V=64, batch 32) and is
stepped as ``experiments.train.train_step`` steps it: forward under ``experiments.run.precision.autocast``
(attention in fp32 on the CPU, ``projectable.gpt.CPU_ATTENTION_IN_FP32``), backward, clipping, AdamW. The two
precisions alternate step by step so that both see the same load. Times are medians of wall time and of the
process's CPU time (``time.process_time``; on one thread the CPU time is what the step would take on an idle
core, whatever else runs beside it). The profile splits one step of each model into attention (the SDPA
kernels, forward and backward), dense matmuls (mm, addmm, bmm, baddbmm), GELU, and the rest.

    python benchmarks/precision.py --threads 1        # as a cpu-scale trial runs (two such trials share 2 cores)
"""

from __future__ import annotations

import argparse
import dataclasses
import statistics
import time
from collections.abc import Callable
from functools import partial

import torch
from common import MATMUL_SIZE, TASK_DIM, add_common_args, load_average, matmul_flops, setup, table
from projectable import GPT, GPTConfig, ProjectableGPT, ProjectorConfig

from experiments.run.precision import autocast, cpu_description

CPU_SCALE = GPTConfig(vocab_size=64, block_size=256, n_layer=4, n_head=4, n_embd=128)
BATCH = 32
PRECISIONS = ("fp32", "bf16")


def models() -> dict[str, Callable[[], tuple[torch.nn.Module, Callable]]]:
    """name -> a builder of (module, loss(tokens, tasks)) as the cpu Table 1 trains it."""
    def gpt(width: float, conditional: bool = False):
        config = dataclasses.replace(CPU_SCALE, n_embd=int(CPU_SCALE.n_embd * width),
                                     task_dim=TASK_DIM if conditional else 0)
        model = GPT(config)
        return model, (lambda x, t: model.loss(x, t if conditional else None))

    def projected(scales):
        model = ProjectableGPT(CPU_SCALE, ProjectorConfig(task_dim=TASK_DIM, scales=scales))
        return model, (lambda x, t: model.loss(x, t).total)

    return {"M_1": lambda: gpt(1.0), "M_1/8": lambda: gpt(0.125), "M~_1/4": lambda: gpt(0.25, True),
            "P_1/2 (co-trained with M_1)": lambda: projected((0.5,)),
            "P_1/8 (co-trained with M_1)": lambda: projected((0.125,)),
            "P~ (1/2, 1/4, 1/8 with M_1)": lambda: projected((0.5, 0.25, 0.125))}


def step(module, loss, optimizer, tokens, tasks, precision: str) -> None:
    optimizer.zero_grad(set_to_none=True)
    with autocast(precision, "cpu"):
        out = loss(tokens, tasks)
    out.backward()
    torch.nn.utils.clip_grad_norm_(module.parameters(), 1.0)
    optimizer.step()


def timed(fn) -> tuple[float, float]:
    wall, cpu = time.perf_counter(), time.process_time()
    fn()
    return time.perf_counter() - wall, time.process_time() - cpu


CATEGORIES = {"attention": ("scaled_dot_product", "flash_attention"), "dense matmul": ("aten::mm", "aten::addmm",
              "aten::bmm", "aten::baddbmm", "aten::linear", "aten::matmul"), "GELU": ("gelu",)}


def profile_split(fn) -> dict[str, float]:
    """Seconds of self CPU time per category in one call of ``fn``."""
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CPU]) as prof:
        fn()
    out = dict.fromkeys([*CATEGORIES, "rest"], 0.0)
    for event in prof.key_averages():
        seconds = event.self_cpu_time_total / 1e6
        category = next((c for c, names in CATEGORIES.items() if any(n in event.key for n in names)), "rest")
        out[category] += seconds
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add_common_args(parser)
    parser.add_argument("--steps", type=int, default=None, help="timed steps per precision (default 6, 2 quick)")
    args = parser.parse_args()
    args.device = "cpu"
    setup(args, "fp32 against bf16 at the cpu scale (benchmarks/precision.py)")
    steps = args.steps or (2 if args.quick else 6)
    bf16_flops = matmul_flops(torch.device("cpu"), dtype=torch.bfloat16)
    print(f"- CPU: {cpu_description()}")
    print(f"- matmul ceilings on {args.threads} thread(s) ({MATMUL_SIZE}^2): fp32 {args.matmul_flops / 1e9:.0f} "
          f"GFLOP/s, bf16 {bf16_flops / 1e9:.0f} GFLOP/s\n")
    torch.manual_seed(0)
    tokens = torch.randint(0, CPU_SCALE.vocab_size, (BATCH, CPU_SCALE.block_size))
    tasks = torch.randn(BATCH, TASK_DIM)
    rows, splits = [], []
    for name, build in models().items():
        module, loss = build()
        optimizer = torch.optim.AdamW(module.parameters(), lr=1e-4)
        run = {p: partial(step, module, loss, optimizer, tokens, tasks, p) for p in PRECISIONS}
        for precision in PRECISIONS:  # warm-up
            run[precision]()
        times = {p: [] for p in PRECISIONS}
        for _ in range(steps):
            for precision in PRECISIONS:
                times[precision].append(timed(run[precision]))
        wall = {p: statistics.median(t[0] for t in times[p]) for p in PRECISIONS}
        cpu = {p: statistics.median(t[1] for t in times[p]) for p in PRECISIONS}
        module.eval()
        evaluate = {p: partial(_evaluate, loss, tokens, tasks, p) for p in PRECISIONS}
        for precision in PRECISIONS:
            evaluate[precision]()
        evals = {p: statistics.median(timed(evaluate[p])[1] for _ in range(3)) for p in PRECISIONS}
        module.train()
        rows.append([name, f"{wall['fp32'] * 1e3:.0f}", f"{wall['bf16'] * 1e3:.0f}", f"{cpu['fp32'] * 1e3:.0f}",
                     f"{cpu['bf16'] * 1e3:.0f}", f"{cpu['fp32'] / cpu['bf16']:.2f}", f"{evals['fp32'] * 1e3:.0f}",
                     f"{evals['bf16'] * 1e3:.0f}"])
        for precision in PRECISIONS:
            split = profile_split(run[precision])
            total = sum(split.values())
            splits.append([name, precision, f"{total * 1e3:.0f}",
                           *(f"{split[c] * 1e3:.0f} ({split[c] / total:.0%})" for c in [*CATEGORIES, "rest"])])
        del module, optimizer
    print(f"Training step (batch {BATCH} x {CPU_SCALE.block_size} tokens), median of {steps} alternating steps; "
          f"evaluation: one forward of the batch without autograd (CPU time, median of 3).\n")
    print(table(["model", "fp32 wall ms", "bf16 wall ms", "fp32 CPU ms", "bf16 CPU ms", "fp32 / bf16 (CPU)",
                 "eval fp32 CPU ms", "eval bf16 CPU ms"], rows))
    print("\nOne step under the profiler (self CPU time; the profiler adds its own overhead):\n")
    print(table(["model", "precision", "profiled ms", *CATEGORIES, "rest"], splits))
    print(f"\nLoad average at the end: {load_average()}.")


@torch.no_grad()
def _evaluate(loss, tokens, tasks, precision: str) -> None:
    with autocast(precision, "cpu"):
        loss(tokens, tasks)


if __name__ == "__main__":
    main()
