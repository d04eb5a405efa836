"""Projection of the whole paper-scale source M_1 (Sec. 2.2, GPTConfig.paper(): 24 layers, d=512) to each s.

Part 1 -- generating the small dense weights W_s = P(t) W_1 Q(t), b_s = P(t) b_1 of all 24 layers for one task:
forward (generation, no autograd) and forward+backward (training: gradients reach the diagonal MLPs and the
source weights), for the structured stacked projection (``projector.project_weight``: reshape + weighted sums
over (L, out, in) stacks) against a dense reference that materialises P and Q as matrices and multiplies
P @ W @ Q, plus the bytes-moved floor (read W_1, write W_s; backward also reads W_1 again, reads dW_s and
writes dW_1) at the measured copy bandwidth of the device.

Part 2 -- the projected forward of item 3 at a batch of distinct tasks (one task per sequence): the
"materialize" route (per-example small weights) against the "expand" route (inputs expanded by Q through the
shared W_1, contracted by P), forward and forward+backward, and which one ``route="auto"`` picks.

    python benchmarks/projection.py --threads 2            # CPU: part 2 at reduced depth and sequence length
    python benchmarks/projection.py --device cuda           # the paper size throughout
"""

from __future__ import annotations

import argparse
from functools import partial

import torch
import torch.nn.functional as F
from common import (
    add_common_args,
    copy_bandwidth,
    load_average,
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

TASK_DIM = 18  # SynthMNIST's task vector


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


def time_projection(source, generator, task, k, grads, device, reps) -> dict[tuple[str, str], float]:
    times = {}
    for name, fn in (("structured", structured), ("dense", dense_reference)):
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


def bench_projection(args, device) -> None:
    source = GPT(GPTConfig.paper()).to(device)
    config = source.config
    dense_count = sum(w.numel() + b.numel() for w, b in (source.dense.weights(kind) for kind in DENSE_KINDS))
    bandwidth = copy_bandwidth(device)
    print(f"### Part 1: projecting every dense weight of the paper source ({config.n_layer} layers, "
          f"d={config.n_embd}, {dense_count / 1e6:.1f}M dense parameters) for {args.tasks} task(s)\n")
    print(f"Measured copy bandwidth: {bandwidth / 1e9:.1f} GB/s (read + write). Times in ms, median of "
          f"{args.reps}.\n")
    rows = []
    for scale in args.scales:
        k = group_size(scale)
        generator = DiagonalGenerator(config, ProjectorConfig(task_dim=TASK_DIM, scales=(scale,)), scale).to(device)
        task = torch.randn(args.tasks, TASK_DIM, device=device)
        with torch.no_grad():  # the two are the same computation
            a, b = structured(source, generator, task, k), dense_reference(source, generator, task, k)
            error = max(float((x - y).abs().max() / y.abs().max()) for x, y in zip(a, b))
        grads = [torch.randn_like(x) for x in a]
        del a, b
        times = time_projection(source, generator, task, k, grads, device, args.reps)
        small = dense_count / k**2 * args.tasks
        floor_fwd = 4 * (dense_count + small) / bandwidth
        floor_fwd_bwd = 4 * (3 * dense_count + 2 * small) / bandwidth
        rows.append([
            scale_name(scale), ms(times["structured", "fwd"]), ms(times["dense", "fwd"]), ms(floor_fwd),
            ms(times["structured", "fwd+bwd"]), ms(times["dense", "fwd+bwd"]), ms(floor_fwd_bwd),
            f"{times['dense', 'fwd+bwd'] / times['structured', 'fwd+bwd']:.1f}x", f"{error:.1e}",
        ])
    print(table(["s", "structured fwd", "dense P/Q fwd", "floor fwd", "structured fwd+bwd", "dense P/Q fwd+bwd",
                 "floor fwd+bwd", "dense/structured (fwd+bwd)", "max rel. diff"], rows))
    print()


def bench_routes(args, device) -> None:
    config = GPTConfig.paper(n_layer=args.route_layers)
    B, T = args.route_tasks, args.route_seq
    reduced = config.n_layer != 24 or T != config.block_size
    print(f"### Part 2: projected forward, {B} sequences each with its own task, {config.n_layer} layers of "
          f"width {config.n_embd}, T={T}\n")
    if reduced:
        print(f"Reduced from the paper's 24 layers x 1024 tokens so that it runs on this device in seconds "
              f"(both routes scale linearly in depth; the expand route also in T). Times in ms, median of "
              f"{args.reps}.\n")
    source = GPT(config).to(device)
    tokens = torch.randint(0, config.vocab_size, (B, T), device=device)
    tasks = torch.randn(B, TASK_DIM, device=device)
    rows = []
    for scale in args.scales:
        k = group_size(scale)
        model = ProjectableGPT(source, ProjectorConfig(task_dim=TASK_DIM, scales=(scale,))).to(device)
        with torch.no_grad():
            reference = model.projected_logits(tokens, tasks, scale, route="materialize")
            error = float((model.projected_logits(tokens, tasks, scale, route="expand") - reference).abs().max())
        times = time_routes(model, tokens, tasks, scale, device, args.reps)
        auto = choose_route("auto", config, k, B, B, T)
        rows.append([
            scale_name(scale), ms(times["materialize", "fwd"]), ms(times["expand", "fwd"]),
            ms(times["materialize", "fwd+bwd"]), ms(times["expand", "fwd+bwd"]), auto, f"{error:.1e}",
        ])
        del model
    print(table(["s", "materialize fwd", "expand fwd", "materialize fwd+bwd", "expand fwd+bwd", "auto picks",
                 "max abs. logit diff"], rows))
    print()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add_common_args(parser)
    parser.add_argument("--scales", default="1/2,1/4,1/8")
    parser.add_argument("--tasks", type=int, default=1, help="task vectors projected at once in part 1")
    parser.add_argument("--route-tasks", type=int, default=32, help="distinct tasks (= sequences) in part 2")
    parser.add_argument("--route-layers", type=int, default=None, help="default 24 on cuda, 4 on cpu (2 quick)")
    parser.add_argument("--route-seq", type=int, default=None, help="default 1024 on cuda, 64 on cpu (32 quick)")
    args = parser.parse_args()
    args.scales = scales_arg(args.scales)
    args.route_layers, args.route_seq = reduced_shape(args, args.route_layers, args.route_seq)
    device = setup(args, "Projection of the paper-scale source (benchmarks/projection.py)")
    bench_projection(args, device)
    bench_routes(args, device)
    print(f"Load average at the end: {load_average()}.")


if __name__ == "__main__":
    main()
