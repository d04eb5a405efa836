"""The weight generators of App. B at the paper source size (GPTConfig.paper(): 24 layers, d=512), each sized
by ``match_budget`` against the projection at r = 8 (as ``experiment=generators`` sizes its cells).

Part 1 -- own parameters per generator and s: the size knob, every own parameter, the t-dependent ones, and
with the co-trained source (the projection and blocks read M_1; low_rank and linear hold base weights instead).

Part 2 -- generating one standalone model (``ProjectableGPT.generate(t, s)``, no autograd): wall time, peak
memory above what was allocated before, and FLOPs counted analytically (2 x multiply-adds: the t-map, i.e. the
MLPs or subspace maps, plus building the dense weights from the source or the base).

Part 3 -- the batched per-example forward (``projected_logits``, one task per sequence, ``route="auto"``):
forward and forward+backward time and peak memory, and the analytic FLOPs of the dense operators on the route
``auto`` picks plus the t-map per task (attention, embeddings and the head are the same for every generator
at one s and are left out). On the CPU at reduced depth and sequence length, as ``projection.py`` part 2.

    python benchmarks/generators.py --threads 2            # CPU: part 3 at 4 layers, T = 64
    python benchmarks/generators.py --device cuda           # the paper size throughout
    python benchmarks/generators.py --quick                 # a check that it runs: 1 repetition, 2 layers, T = 32
"""

from __future__ import annotations

import argparse
import dataclasses
from functools import partial

import torch
import torch.nn.functional as F
from common import (
    TASK_DIM,
    add_common_args,
    load_average,
    mib,
    ms,
    peak_memory,
    reduced_shape,
    scales_arg,
    setup,
    table,
    timeit,
)
from projectable import GPT, GPTConfig, ProjectableGPT, ProjectorConfig, scale_name
from projectable.generators import GENERATORS, generator_class, generator_params, match_budget
from projectable.projector import route_cost, scale_key
from projectable.validation import group_size


def sized(source: GPTConfig, scale: float, generator: str, count: str, rank: int) -> ProjectorConfig:
    """The generator's config at ``scale`` matched to the projection at ``rank`` (``count``: task or total)."""
    reference = ProjectorConfig(task_dim=TASK_DIM, rank=rank, scales=(scale,))
    if generator == "projection":
        return reference
    return match_budget(source, reference, scale, generator, count).config


def dense_macs(model: ProjectableGPT, scale: float, tasks: int, batch: int, seq: int, route: str = "auto",
               device: str = "cpu", training: bool = False) -> tuple[float, str]:
    """Multiply-adds of the dense operators (building the weights included) on ``route`` (``auto``: the one
    the model picks on ``device`` for a forward or a training step); with no sequences, materialize is the cost
    of building the weights alone."""
    generator = model.generators[scale_key(scale)]
    route = generator.route(route, tasks, batch, seq, device, training)
    if model.config.generator == "projection":
        cost = route_cost(model.source_config, group_size(scale), tasks, batch, seq)
        materialize, expand = cost.materialize_flops, cost.expand_flops
    else:
        materialize, expand, _ = generator.cost(tasks, batch, seq)
    return (materialize if route == "materialize" else expand), route


def gflops(macs: float) -> str:
    return f"{2 * macs / 1e9:,.3f}"


def bench_params(args, source: GPTConfig) -> dict[tuple[str, float], ProjectorConfig]:
    with torch.device("meta"):
        source_params = GPT(source).num_params()
    print(f"### Part 1: own parameters at the paper source ({source.n_layer} layers, d={source.n_embd}, "
          f"{source_params / 1e6:.1f}M), matched to the projection at r = {args.rank} ({args.match} count)\n")
    configs, rows = {}, []
    for scale in args.scales:
        for name in GENERATORS:
            config = sized(source, scale, name, args.match, args.rank)
            configs[name, scale] = config
            own = generator_params(source, config, scale)
            size_knob = generator_class(name).size_knob
            knob = f"{size_knob} = {getattr(config, size_knob)}"
            with_source = own.total + (source_params if config.reads_source else 0)
            rows.append([scale_name(scale), name, knob, f"{own.total:,}", f"{own.task:,}", f"{own.base + own.parts:,}",
                         f"{with_source:,}"])
    print(table(["s", "generator", "size knob", "own", "own, t-dependent", "own base + small parts",
                 "with the co-trained source"], rows))
    print()
    return configs


def bench_generate(args, device, source: GPTConfig, configs) -> None:
    print("### Part 2: generating one standalone model (`generate(t, s)`, no autograd)\n")
    print(f"Times in ms (median of {args.reps}); memory in MiB above what was allocated before the call; "
          "GFLOP = 2 x multiply-adds of the t-map and of building the dense weights.\n")
    gpt = GPT(source).to(device)
    task = torch.rand(TASK_DIM, device=device)
    rows = []
    for scale in args.scales:
        for name in GENERATORS:
            config = configs[name, scale]
            model = ProjectableGPT(gpt if config.reads_source else source, config).to(device).eval()
            generate = partial(model.generate, task, scale)
            seconds = timeit(generate, device, args.reps)
            memory = peak_memory(generate, device)
            task_map = generator_class(config.generator).task_map_macs(source, config, scale)
            macs = task_map + dense_macs(model, scale, 1, 0, 0, "materialize")[0]
            rows.append([scale_name(scale), name, ms(seconds), mib(memory), gflops(macs)])
            del model
    print(table(["s", "generator", "generate ms", "peak MiB", "GFLOP"], rows))
    print()


def step(model: ProjectableGPT, tokens, tasks, scale: float) -> None:
    model.zero_grad(set_to_none=True)
    logits = model.projected_logits(tokens, tasks, scale)
    F.cross_entropy(logits.flatten(0, 1), tokens.flatten()).backward()


def bench_forward(args, device, paper: GPTConfig, configs) -> None:
    config = dataclasses.replace(paper, n_layer=args.layers)
    B, T = args.batch_tasks, args.seq
    print(f"### Part 3: batched per-example forward, {B} sequences each with its own task, {config.n_layer} layers "
          f"of width {config.n_embd}, T={T}\n")
    if config.n_layer != paper.n_layer or T != paper.block_size:
        print(f"Reduced from the paper's {paper.n_layer} layers x {paper.block_size} tokens so that it runs on this "
              "device in seconds; each generator keeps its paper-size knob (its counts scale with depth as the "
              f"projection's). Times in ms (median of {args.reps}); memory in MiB above what was allocated before; "
              "GFLOP of the forward (dense operators on the route `auto` picks, and the t-map per task).\n")
    gpt = GPT(config).to(device)
    tokens = torch.randint(0, config.vocab_size, (B, T), device=device)
    tasks = torch.rand(B, TASK_DIM, device=device)
    rows = []
    for scale in args.scales:
        for name in GENERATORS:
            projector = configs[name, scale]
            model = ProjectableGPT(gpt if projector.reads_source else config, projector).to(device)
            forward = partial(model.projected_logits, tokens, tasks, scale)
            with torch.no_grad():
                seconds = timeit(forward, device, args.reps)
                memory = peak_memory(forward, device)
            train = partial(step, model, tokens, tasks, scale)
            seconds_train = timeit(train, device, args.reps)
            memory_train = peak_memory(train, device)
            macs, route = dense_macs(model, scale, B, B, T, device=device.type)
            route_train = dense_macs(model, scale, B, B, T, device=device.type, training=True)[1]
            macs += B * generator_class(projector.generator).task_map_macs(config, projector, scale)
            rows.append([scale_name(scale), name, route, ms(seconds), mib(memory), route_train, ms(seconds_train),
                         mib(memory_train), gflops(macs)])
            del model
    print(table(["s", "generator", "auto route (fwd)", "fwd ms", "fwd peak MiB", "auto route (fwd+bwd)", "fwd+bwd ms",
                 "fwd+bwd peak MiB", "fwd GFLOP"], rows))
    print()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add_common_args(parser)
    parser.add_argument("--scales", default="1/2,1/4,1/8")
    parser.add_argument("--rank", type=int, default=8, help="the projection's rank every generator is matched to")
    parser.add_argument("--match", default="task", choices=("task", "total"),
                        help="match the t-dependent parameters (default) or every own parameter")
    parser.add_argument("--batch-tasks", type=int, default=32, help="distinct tasks (= sequences) in part 3")
    parser.add_argument("--layers", type=int, default=None, help="part 3 depth: 24 on cuda, 4 on cpu (2 quick)")
    parser.add_argument("--seq", type=int, default=None, help="part 3 T: 1024 on cuda, 64 on cpu (32 quick)")
    args = parser.parse_args()
    args.scales = scales_arg(args.scales)
    args.layers, args.seq = reduced_shape(args, args.layers, args.seq)
    device = setup(args, "Weight generators at the paper source size (benchmarks/generators.py)")
    paper = GPTConfig.paper()
    configs = bench_params(args, paper)
    bench_generate(args, device, paper, configs)
    bench_forward(args, device, paper, configs)
    print(f"Load average at the end: {load_average()}.")


if __name__ == "__main__":
    main()
