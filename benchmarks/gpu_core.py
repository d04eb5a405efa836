"""Every GPU number of benchmarks/README.md in one run, on the core and data packages alone (torch,
projectable, projectable_data: no Ray, MLflow, Hydra or OmegaConf), in about 8 minutes on one H200.

1. M_1 training at the paper size (GPTConfig.paper(): 24 layers, d=512, T=1024), bf16 autocast, AdamW: eager
   and compiled, tokens/s and MFU (nanoGPT's FLOP count over the GPU's peak bf16 FLOP/s and over the
   matmul ceiling measured here).
2. The co-training step (Eq. 2): M_1 + P_1/4 and P~ (s = 1/2, 1/4, 1/8), compiled, with its MFU (the source's
   FLOPs plus each small model's).
3. The projection forward and forward+backward against the HBM floor, and both exact routes at T=1024 with
   the route ``auto`` picks (``projection.py``'s parts 1 and 2 at the paper size).
4. A shortened pair of gpu-scale cells: M~_1/4 against P_1/4 (co-trained with M_1) on SynthMNIST 32x32 with
   256 colours for ``--pair-steps`` steps from scratch, validation nats/token of both.

    python benchmarks/gpu_core.py                       # on the GPU machine (MNIST under data/mnist or given)
    python benchmarks/gpu_core.py --smoke --device cpu  # a check that it runs: tiny sizes, seconds

Compiles three graphs (M_1's loss, the two co-training losses); ``--no-compile`` skips them.
"""

from __future__ import annotations

import argparse
import dataclasses
import math
import time

import torch
from common import TASK_DIM, add_common_args, setup, sync, table
from projectable import GPT, GPTConfig, ProjectableGPT, ProjectorConfig

PEAK_BF16 = {"H200": 989e12, "H100": 989e12, "A100": 312e12}  # dense bf16 FLOP/s from the vendors' sheets


def peak_flops(device: torch.device) -> float:
    if device.type != "cuda":
        return float("nan")
    name = torch.cuda.get_device_name(device)
    return next((peak for key, peak in PEAK_BF16.items() if key in name), float("nan"))


def model_flops(config: GPTConfig, tokens: int) -> float:
    """nanoGPT's count for a training step: 6 per non-embedding parameter and token plus attention's 12 L d T."""
    with torch.device("meta"):
        params = GPT(config).num_params() - config.block_size * config.n_embd
    return 6 * params * tokens + 12 * config.n_layer * config.n_embd * config.block_size * tokens


def optimizer(module: torch.nn.Module, device: torch.device) -> torch.optim.Optimizer:
    return torch.optim.AdamW(module.parameters(), lr=3e-4, fused=device.type == "cuda")


def time_steps(loss_fn, module, batches, device, steps: int, warmup: int) -> float:
    """Median seconds of a training step (forward, backward, AdamW) after ``warmup`` steps."""
    opt = optimizer(module, device)
    times = []
    for i in range(warmup + steps):
        tokens, tasks = batches(i)
        sync(device)
        start = time.perf_counter()
        opt.zero_grad(set_to_none=True)
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=device.type == "cuda"):
            loss = loss_fn(tokens, tasks)
        loss.backward()
        opt.step()
        sync(device)
        if i >= warmup:
            times.append(time.perf_counter() - start)
    return sorted(times)[len(times) // 2]


def random_batches(config: GPTConfig, batch: int, device):
    def make(step: int):
        generator = torch.Generator(device="cpu").manual_seed(step)
        tokens = torch.randint(0, config.vocab_size, (batch, config.block_size), generator=generator)
        return tokens.to(device), torch.rand(batch, TASK_DIM, generator=generator).to(device)
    return make


def bench_training(args, device, config: GPTConfig) -> None:
    batches = random_batches(config, args.batch, device)
    tokens = args.batch * config.block_size
    peak, ceiling = peak_flops(device), args.matmul_flops
    rows = []

    def row(name: str, seconds: float, flops: float) -> None:
        rows.append([name, f"{seconds * 1e3:.1f}", f"{tokens / seconds:,.0f}", f"{flops / seconds / 1e12:.1f}",
                     f"{flops / seconds / peak:.2f}", f"{flops / seconds / ceiling:.2f}"])

    source_flops = model_flops(config, tokens)
    modes = [("eager", False)] + ([] if args.no_compile else [("compiled", True)])
    for mode, compiled in modes:
        model = GPT(config).to(device)

        def loss(x, t, model=model):
            return model.loss(x)

        row(f"M_1 {mode}", time_steps(torch.compile(loss) if compiled else loss, model, batches, device,
                                      args.steps, args.warmup), source_flops)
    for name, scales in (("M_1 + P_1/4", (0.25,)), ("M_1 + P~ (1/2, 1/4, 1/8)", (0.5, 0.25, 0.125))):
        model = ProjectableGPT(GPT(config), ProjectorConfig(task_dim=TASK_DIM, scales=scales)).to(device)
        flops = source_flops + sum(model_flops(model.small_config(s), tokens) for s in scales)

        def loss(x, t, model=model):
            return model.loss(x, t).total

        compiled = not args.no_compile
        row(f"{name} {'compiled' if compiled else 'eager'}",
            time_steps(torch.compile(loss) if compiled else loss, model, batches, device, args.steps, args.warmup),
            flops)
        del model
    print(f"### Training steps at L={config.n_layer} d={config.n_embd} T={config.block_size}, batch {args.batch}, "
          f"bf16 autocast on cuda, AdamW; median of {args.steps} after {args.warmup} warm-up steps\n")
    print(table(["step", "ms", "tokens/s", "TFLOP/s", "MFU (peak bf16)", "of matmul ceiling"], rows))
    print()


def bench_pair(args, device) -> None:
    """M~_1/4 against P_1/4 (co-trained with M_1) on SynthMNIST at the gpu scale's data and model size."""
    from projectable_data import SynthMNISTConfig, SynthMNISTTokens

    resolution, colours = (8, 16) if args.smoke else (32, 256)
    data = SynthMNISTTokens(SynthMNISTConfig(resolution=resolution, palette_size=colours, val_size=args.val_size,
                                             palette_fit_images=64 if args.smoke else 512,
                                             mnist_root=args.mnist_root))
    source = GPTConfig(vocab_size=colours, block_size=resolution**2, n_layer=2 if args.smoke else 8,
                       n_head=4 if args.smoke else 8, n_embd=64 if args.smoke else 256)
    baseline = GPT(dataclasses.replace(source, task_dim=TASK_DIM).scaled(0.25)).to(device)
    projected = ProjectableGPT(GPT(source), ProjectorConfig(task_dim=TASK_DIM, scales=(0.25,))).to(device)
    losses = {"M~_1/4": (baseline, lambda m, x, t: m.loss(x, t)),
              "P_1/4": (projected, lambda m, x, t: m.loss(x, t).total)}
    val = data.validation()
    rows = []
    for name, (model, loss_fn) in losses.items():
        opt = optimizer(model, device)
        start = time.perf_counter()
        for step in range(args.pair_steps):
            batch = data.train_batch(step, args.pair_batch)
            lr = 1e-3 * min(1.0, (step + 1) / max(1, args.pair_steps // 10))
            for group in opt.param_groups:
                group["lr"] = lr * 0.5 * (1 + math.cos(math.pi * step / args.pair_steps))
            opt.zero_grad(set_to_none=True)
            with torch.autocast(device.type, dtype=torch.bfloat16, enabled=device.type == "cuda"):
                loss = loss_fn(model, batch.tokens.to(device), batch.task.to(device))
            loss.backward()
            opt.step()
        sync(device)
        seconds = time.perf_counter() - start
        with torch.no_grad():
            tokens, tasks = val.tokens.to(device), val.task.to(device)
            nll = (model.sequence_nll(tokens, tasks) if name.startswith("M")
                   else model.sequence_nll(tokens, tasks, 0.25)).mean()
        rows.append([name, args.pair_steps, f"{seconds:.0f}", f"{float(nll):.3f}"])
    print(f"### A shortened pair of gpu-scale cells: {resolution}x{resolution} SynthMNIST, {colours} colours, source "
          f"L={source.n_layer} d={source.n_embd}, batch {args.pair_batch}, from scratch, warm-up + cosine\n")
    print(table(["model", "steps", "seconds", "validation nats/token (s = 1/4)"], rows))
    print()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add_common_args(parser)
    parser.add_argument("--smoke", action="store_true", help="tiny sizes, a check that it runs (any device)")
    parser.add_argument("--batch", type=int, default=None, help="sequences per training step (default 16)")
    parser.add_argument("--steps", type=int, default=None, help="timed training steps (default 10)")
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--no-compile", action="store_true")
    parser.add_argument("--pair-steps", type=int, default=None, help="default 400")
    parser.add_argument("--pair-batch", type=int, default=32)
    parser.add_argument("--val-size", type=int, default=None, help="default 256")
    parser.add_argument("--mnist-root", default=None, help="default: $PROJECTABLE_MNIST_ROOT, ../shared/data/mnist")
    parser.add_argument("--skip-projection", action="store_true")
    args = parser.parse_args()
    if args.smoke:
        args.batch, args.steps, args.warmup = args.batch or 2, args.steps or 1, 1
        args.pair_steps, args.val_size, args.no_compile = args.pair_steps or 3, args.val_size or 8, True
    args.batch, args.steps = args.batch or 16, args.steps or 10
    args.pair_steps, args.val_size = args.pair_steps or 400, args.val_size or 256
    device = setup(args, "GPU numbers on the core packages alone (benchmarks/gpu_core.py)")
    config = (GPTConfig(vocab_size=64, block_size=64, n_layer=2, n_head=2, n_embd=64) if args.smoke
              else GPTConfig.paper())
    bench_training(args, device, config)
    if not args.skip_projection and not args.smoke:
        import projection

        projection_args = argparse.Namespace(**vars(args), scales=[0.5, 0.25, 0.125], tasks=[1, 32],
                                             route_tasks=32, route_layers=24, route_seq=1024)
        projection_args.reps = args.reps or 3
        projection.bench_projection(projection_args, device)
        projection.bench_routes(projection_args, device)
    bench_pair(args, device)


if __name__ == "__main__":
    main()
