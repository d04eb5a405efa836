"""Projection of the whole paper-scale source M_1 (Sec. 2.2, GPTConfig.paper(): 24 layers, d=512) to each s.

Part 1 -- generating the small dense weights W_s = P(t) W_1 Q(t), b_s = P(t) b_1 of all 24 layers for one task
and for 32 at once: forward (generation, no autograd) and forward+backward (training: gradients reach the diagonal MLPs and the
source weights), for the structured stacked projection (``projector.project_weight``: reshape + weighted sums
over (L, out, in) stacks) against a dense reference that materialises P and Q as matrices and multiplies
P @ W @ Q, plus the bytes-moved floor (read W_1, write W_s; backward also reads W_1 again, reads dW_s and
writes dW_1) at the measured copy bandwidth of the device.

Part 2 -- the projected forward at a batch of distinct tasks (one task per sequence): the "materialize" route
(per-example small weights) against the "expand" route (inputs expanded by Q through the shared W_1, contracted
by P), forward and forward+backward, at a generation-like shape (32 tasks, T = 32), the paper width at a longer
T and the cpu scale's training step, and which one ``route="auto"`` picks with its time over the faster one's.

    python benchmarks/projection.py --threads 2            # CPU: part 2 at reduced depth and sequence length
    python benchmarks/projection.py --device cuda           # the paper size throughout
"""

from __future__ import annotations

import argparse
from functools import partial

import torch
import torch.nn.functional as F
from common import (
    TASK_DIM,
    add_common_args,
    load_average,
    matmul_flops,
    ms,
    reduced_shape,
    scales_arg,
    setup,
    table,
    timeit,
)
from einops import rearrange
from projectable import GPT, GPTConfig, ProjectableGPT, ProjectorConfig, scale_name
from projectable.gpt import DENSE_KINDS
from projectable.projector import DiagonalGenerator, choose_route, project_bias, project_weight
from projectable.validation import group_size

from experiments.run.precision import autocast


def dense_p(p: torch.Tensor, k: int) -> torch.Tensor:
    """P as a matrix: p (B, L, O) -> (B, L, O/k, O) with P[o, o*k + a] = p[o*k + a]."""
    return rearrange(torch.diag_embed(rearrange(p, "b l (o a) -> b l a o", a=k)), "b l a o1 o2 -> b l o1 (o2 a)")


def dense_q(q: torch.Tensor, k: int) -> torch.Tensor:
    """Q as a matrix: q (B, L, I) -> (B, L, I, I/k) with Q[i*k + c, i] = q[i*k + c]."""
    return rearrange(torch.diag_embed(rearrange(q, "b l (i c) -> b l c i", c=k)), "b l c i1 i2 -> b l (i1 c) i2")


def structured(source: GPT, generator: DiagonalGenerator, task: torch.Tensor, k: int) -> list[torch.Tensor]:
    diag = generator(task)
    out = []
    for kind in DENSE_KINDS:
        w, b = source.dense.weights(kind)
        out += [project_weight(w, diag.p[kind], diag.q[kind], k), project_bias(b, diag.p[kind], k)]
    return out


def dense_reference(source: GPT, generator: DiagonalGenerator, task: torch.Tensor, k: int) -> list[torch.Tensor]:
    diag = generator(task)
    out = []
    for kind in DENSE_KINDS:
        w, b = source.dense.weights(kind)  # (L, O, I), (L, O)
        P, Q = dense_p(diag.p[kind], k), dense_q(diag.q[kind], k)  # (B, L, o, O), (B, L, I, i)
        out += [P @ w @ Q, (P @ b.unsqueeze(-1)).squeeze(-1)]
    return out


def forward_backward(fn, modules, grads):
    for module in modules:
        module.zero_grad(set_to_none=True)
    torch.autograd.backward(fn(), grad_tensors=grads)


def time_projection(source, generator, task, k, grads, device, reps, dense: bool) -> dict[tuple[str, str], float]:
    times = {}
    for name, fn in (("structured", structured), ("dense", dense_reference))[: 2 if dense else 1]:
        call = partial(fn, source, generator, task, k)
        with torch.no_grad():  # both just ran in the correctness check: no warm-up needed
            times[name, "fwd"] = timeit(call, device, reps, warmup=0)
        times[name, "fwd+bwd"] = timeit(partial(forward_backward, call, (source, generator), grads), device, reps)
    return times


def routes_step(model: ProjectableGPT, tokens, tasks, scale: float, route: str) -> None:
    model.zero_grad(set_to_none=True)
    logits = model.projected_logits(tokens, tasks, scale, route=route)
    F.cross_entropy(logits.flatten(0, 1), tokens.flatten()).backward()


def time_routes(model, tokens, tasks, scale, device, reps) -> dict[tuple[str, str], float]:
    times = {}
    for route in ("materialize", "expand"):
        with torch.no_grad():  # both routes just ran in the correctness check
            forward = partial(model.projected_logits, tokens, tasks, scale, route=route)
            times[route, "fwd"] = timeit(forward, device, reps, warmup=0)
        times[route, "fwd+bwd"] = timeit(partial(routes_step, model, tokens, tasks, scale, route), device, reps)
    return times


def floors(dense_count: int, small_count: float, tasks: int, args, precision: str) -> tuple[float, float]:
    """Seconds below which the projection cannot run: max(bytes that must move at the copy bandwidth, FLOPs at
    the matmul ceiling), forward and forward+backward. Bytes: forward reads W_1 (fp32) and writes W_s of every
    task (in the precision's dtype); forward+backward also reads dW_s and W_1 again and writes dW_1 (the
    diagonals' gradients are small and left out). FLOPs: each W_1 element is scaled by p and q and summed into
    its W_s element for every task, 2 per element and task forward, 6 with backward (dW_1 and the diagonals'
    gradients)."""
    element = 2 if precision == "bf16" else 4
    ceiling = args.matmul_flops_bf16 if precision == "bf16" else args.matmul_flops
    bytes_fwd = (4 * dense_count + element * small_count) / args.bandwidth
    bytes_fwd_bwd = (12 * dense_count + 2 * element * small_count) / args.bandwidth
    return max(bytes_fwd, 2 * tasks * dense_count / ceiling), max(bytes_fwd_bwd, 6 * tasks * dense_count / ceiling)


def bench_projection(args, device) -> None:
    source = GPT(GPTConfig.paper()).to(device)
    config = source.config
    dense_count = sum(w.numel() + b.numel() for w, b in (source.dense.weights(kind) for kind in DENSE_KINDS))
    print(f"### Part 1: projecting every dense weight of the paper source ({config.n_layer} layers, "
          f"d={config.n_embd}, {dense_count / 1e6:.1f}M dense parameters)\n")
    print(f"Floor: max(the bytes that must move at the copy bandwidth measured above ({args.bandwidth / 1e9:.1f} "
          "GB/s), the FLOPs at the matmul ceiling of the precision (fp32 "
          f"{args.matmul_flops / 1e9:.0f}, bf16 {args.matmul_flops_bf16 / 1e9:.0f} GFLOP/s)), with n source and "
          "m = n/k^2 small dense parameters per task, B tasks and e bytes per element of W_s (4 fp32, 2 bf16): "
          "bytes forward 4 n + e B m (read W_1, write every W_s), forward+backward 12 n + 2 e B m (also read dW_s "
          "and W_1 again, write dW_1); FLOPs forward 2 B n, forward+backward 6 B n. bf16 runs under "
          "torch.autocast as training does. The dense P @ W @ Q reference runs for one task only (its P and Q "
          f"matrices of 32 tasks do not fit). Times in ms, median of {args.reps}.\n")
    rows = []
    for precision, tasks, scale in ((p, n, s) for p in args.precisions for n in args.tasks for s in args.scales):
        with autocast(precision, device.type):
            k = group_size(scale)
            generator = DiagonalGenerator(config, ProjectorConfig(task_dim=TASK_DIM, scales=(scale,)), scale)
            generator = generator.to(device)
            task = torch.randn(tasks, TASK_DIM, device=device)
            with torch.no_grad():  # the two are the same computation (checked on the first task)
                a = structured(source, generator, task, k)
                b = dense_reference(source, generator, task[:1], k)
                error = max(float((x[:1] - y).abs().max() / y.abs().max()) for x, y in zip(a, b))
            grads = [torch.randn_like(x) for x in a]
            del a, b
            times = time_projection(source, generator, task, k, grads, device, args.reps, dense=tasks == 1)
            floor_fwd, floor_fwd_bwd = floors(dense_count, dense_count / k**2 * tasks, tasks, args, precision)
            dense_cells = ([ms(times["dense", "fwd"]), ms(times["dense", "fwd+bwd"])] if tasks == 1 else ["-", "-"])
            rows.append([
                precision, tasks, scale_name(scale), ms(times["structured", "fwd"]), ms(floor_fwd),
                f"{times['structured', 'fwd'] / floor_fwd:.1f}x", ms(times["structured", "fwd+bwd"]),
                ms(floor_fwd_bwd), f"{times['structured', 'fwd+bwd'] / floor_fwd_bwd:.1f}x", *dense_cells,
                f"{error:.1e}",
            ])
            del grads, generator
    print(table(["precision", "tasks", "s", "fwd", "floor fwd", "fwd / floor", "fwd+bwd", "floor fwd+bwd", "fwd+bwd / floor",
                 "dense P/Q fwd", "dense P/Q fwd+bwd", "max rel. diff (task 1)"], rows))
    print()


def route_shapes(args, device) -> list[tuple[str, GPTConfig, int, int]]:
    """(name, source config, tasks = sequences, T) of part 2: generation-like (many tasks, short T), the paper
    width at a longer T, and the cpu scale's training step; on a GPU the paper depth and T = 1024."""
    cpu_scale = GPTConfig(vocab_size=512, block_size=256, n_layer=4, n_head=4, n_embd=128)
    if device.type == "cuda":
        return [("generation-like", GPTConfig.paper(), 32, 32), ("paper training shape", GPTConfig.paper(), 32, 1024),
                ("cpu scale training step", cpu_scale, 32, 256)]
    layers = args.route_layers
    shapes = [("generation-like", GPTConfig.paper(n_layer=layers), args.route_tasks, 32),
              (f"paper width, T={args.route_seq}", GPTConfig.paper(n_layer=layers), args.route_tasks, args.route_seq)]
    if args.route_seq == 32:  # --quick: the generation-like shape is the longer one
        shapes = shapes[:1]
    return shapes if args.quick else [*shapes, ("cpu scale training step", cpu_scale, 32, 256)]


def bench_routes(args, device) -> None:
    print("### Part 2: the projected forward with one task per sequence: both exact routes, and the one "
          "`route=\"auto\"` picks (projector.choose_route's cost model; fwd: no autograd, fwd+bwd: a training step)\n")
    if device.type == "cpu":
        print(f"The paper width at {args.route_layers} layers instead of 24 so that it runs in seconds (both routes "
              f"scale linearly in depth). Times in ms, median of {args.reps}; \"auto / best\" is auto's route's "
              "time over the faster one's (goal: within 1.15).\n")
    rows = []
    for precision, (name, config, B, T) in ((p, shape) for p in args.precisions for shape in route_shapes(args, device)):
        source = GPT(config).to(device)
        tokens = torch.randint(0, config.vocab_size, (B, T), device=device)
        tasks = torch.randn(B, TASK_DIM, device=device)
        for scale in args.scales:
            k = group_size(scale)
            model = ProjectableGPT(source, ProjectorConfig(task_dim=TASK_DIM, scales=(scale,))).to(device)
            with torch.no_grad(), autocast(precision, device.type):
                reference = model.projected_logits(tokens, tasks, scale, route="materialize")
                expanded = model.projected_logits(tokens, tasks, scale, route="expand")
                error = float((expanded.float() - reference.float()).abs().max())
            with autocast(precision, device.type):
                times = time_routes(model, tokens, tasks, scale, device, args.reps)
            cells = []
            for mode, training in (("fwd", False), ("fwd+bwd", True)):
                auto = choose_route("auto", config, k, B, B, T, device=device.type, training=training)
                best = min(times["materialize", mode], times["expand", mode])
                cells += [auto, f"{times[auto, mode] / best:.2f}"]
            rows.append([
                precision, name, config.n_layer, config.n_embd, B, T, scale_name(scale), ms(times["materialize", "fwd"]),
                ms(times["expand", "fwd"]), ms(times["materialize", "fwd+bwd"]), ms(times["expand", "fwd+bwd"]),
                *cells, f"{error:.1e}",
            ])
            del model
    print(table(["precision", "shape", "layers", "width", "tasks", "T", "s", "materialize fwd", "expand fwd",
                 "materialize fwd+bwd", "expand fwd+bwd", "auto (fwd)", "auto / best (fwd)", "auto (fwd+bwd)",
                 "auto / best (fwd+bwd)", "max abs. logit diff"], rows))
    print()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add_common_args(parser)
    parser.add_argument("--scales", default="1/2,1/4,1/8")
    parser.add_argument("--parts", default="1,2", help="which parts to run (1: projection, 2: routes)")
    parser.add_argument("--precisions", default="fp32,bf16", help="fp32 and/or bf16 (torch.autocast, as training)")
    parser.add_argument("--tasks", default="1,32", help="numbers of task vectors projected at once in part 1")
    parser.add_argument("--route-tasks", type=int, default=32, help="distinct tasks (= sequences) in part 2 (CPU; 32 on cuda)")
    parser.add_argument("--route-layers", type=int, default=None, help="part 2's depth on cpu: default 4 (2 quick); 24 on cuda")
    parser.add_argument("--route-seq", type=int, default=None, help="part 2's longer T on cpu: default 64 (32 quick); 1024 on cuda")
    args = parser.parse_args()
    args.scales = scales_arg(args.scales)
    args.tasks = [int(n) for n in args.tasks.split(",")]
    args.route_layers, args.route_seq = reduced_shape(args, args.route_layers, args.route_seq)
    args.precisions = args.precisions.split(",")
    args.parts = {int(part) for part in args.parts.split(",")}
    device = setup(args, "Projection of the paper-scale source (benchmarks/projection.py)")
    args.matmul_flops_bf16 = matmul_flops(device, dtype=torch.bfloat16)
    if 1 in args.parts:
        bench_projection(args, device)
    if 2 in args.parts:
        bench_routes(args, device)
    print(f"Load average at the end: {load_average()}.")


if __name__ == "__main__":
    main()
