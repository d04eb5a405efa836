"""Training-step throughput of our GPT against ``transformers``' ``GPT2LMHeadModel`` at the identical configuration.

Both models hold the same weights (the GPT-2 is ``projectable.hf.to_gpt2`` of ours: one extra vocabulary row for
the start token), use SDPA attention and fp32, and take the same step: forward, cross-entropy over the batch,
backward, AdamW. Steps alternate between the two models so that both see the same machine load. Beside the
times: our achieved FLOP/s (nanoGPT's count) against the matmul ceiling measured in the same run, and the peak
memory of one step of each (``common.peak_memory``).

    python benchmarks/train_step.py --threads 2              # CPU size (L=4, d=128, T=256, B=32) and one paper step
"""

from __future__ import annotations

import argparse
import os
from functools import partial

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import statistics  # noqa: E402
import time  # noqa: E402

import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402
from common import add_common_args, load_average, mib, peak_memory, setup, sync, table  # noqa: E402
from projectable import GPT, GPTConfig  # noqa: E402
from projectable.hf import to_gpt2  # noqa: E402


def our_step(model: GPT, optimizer, tokens) -> None:
    optimizer.zero_grad(set_to_none=True)
    model.loss(tokens).backward()
    optimizer.step()


def gpt2_step(model, optimizer, inputs, tokens) -> None:
    optimizer.zero_grad(set_to_none=True)
    logits = model(input_ids=inputs).logits  # (B, T, V + 1)
    F.cross_entropy(logits.flatten(0, 1), tokens.flatten()).backward()
    optimizer.step()


def timed(fn, device) -> float:
    sync(device)
    start = time.perf_counter()
    fn()
    sync(device)
    return time.perf_counter() - start


def compare(name: str, config: GPTConfig, batch: int, steps: int, warmup: int, device, matmul: float) -> list:
    ours = GPT(config).to(device).train()
    gpt2 = to_gpt2(ours).to(device).train()
    V = config.vocab_size
    tokens = torch.randint(0, V, (batch, config.block_size), device=device)
    inputs = torch.cat([torch.full_like(tokens[:, :1], V), tokens[:, :-1]], dim=1)  # start token, shifted
    with torch.no_grad():  # same function before training (dropout 0 in this check)
        ours.eval(), gpt2.eval()
        diff = float((ours(tokens) - gpt2(input_ids=inputs).logits[..., :V]).abs().max())
        ours.train(), gpt2.train()
    step_ours = partial(our_step, ours, torch.optim.AdamW(ours.parameters(), lr=1e-4), tokens)
    step_gpt2 = partial(gpt2_step, gpt2, torch.optim.AdamW(gpt2.parameters(), lr=1e-4), inputs, tokens)
    for _ in range(warmup):
        step_ours(), step_gpt2()
    times_ours, times_gpt2 = [], []
    for _ in range(steps):  # alternate so both see the same load
        times_ours.append(timed(step_ours, device))
        times_gpt2.append(timed(step_gpt2, device))
    t_ours, t_gpt2 = statistics.median(times_ours), statistics.median(times_gpt2)
    memory_ours, memory_gpt2 = peak_memory(step_ours, device), peak_memory(step_gpt2, device)
    n_tokens = batch * config.block_size
    c = config
    achieved = step_flops(ours, config, batch) / t_ours
    return [
        name, f"L={c.n_layer} d={c.n_embd} H={c.n_head} T={c.block_size} V={V} B={batch}", f"{steps}",
        f"{t_ours * 1e3:.0f}", f"{t_gpt2 * 1e3:.0f}", f"{n_tokens / t_ours:,.0f}", f"{n_tokens / t_gpt2:,.0f}",
        f"{t_gpt2 / t_ours:.2f}", f"{achieved / 1e9:.0f} ({achieved / matmul:.2f})", mib(memory_ours),
        mib(memory_gpt2), f"{memory_gpt2 / memory_ours:.2f}", f"{diff:.1e}",
    ]


def step_flops(model: GPT, config: GPTConfig, batch: int) -> float:
    """FLOPs of one training step as nanoGPT counts them: 6 per parameter and token (positional embeddings left
    out) plus attention's 12 L d T per token."""
    tokens = batch * config.block_size
    params = model.num_params() - config.block_size * config.n_embd
    return 6 * params * tokens + 12 * config.n_layer * config.n_embd * config.block_size * tokens


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add_common_args(parser)
    parser.add_argument("--cpu-steps", type=int, default=None, help="timed steps at the CPU size (default 10, 4 quick)")
    parser.add_argument("--paper-batch", type=int, default=None, help="default 1 on cpu, 32 on cuda")
    parser.add_argument("--paper-steps", type=int, default=1)
    parser.add_argument("--dropout", type=float, default=0.0, help="paper: 0.1; 0 by default")
    parser.add_argument("--skip-paper", action="store_true")
    args = parser.parse_args()
    device = setup(args, "Training step: our GPT vs transformers GPT2LMHeadModel (benchmarks/train_step.py)")
    import transformers

    cpu_steps = args.cpu_steps or (4 if args.quick else 10)
    paper_batch = args.paper_batch or (1 if device.type == "cpu" else 32)
    print(f"transformers {transformers.__version__}, fp32, AdamW, dropout {args.dropout}, SDPA attention in both; "
          f"one warm-up step each, then alternating timed steps (median).\n")
    rows = [compare("CPU size", GPTConfig(vocab_size=512, block_size=256, n_layer=4, n_head=4, n_embd=128,
                                          dropout=args.dropout), 32, cpu_steps, 1, device, args.matmul_flops)]
    if not args.skip_paper:
        rows.append(compare("paper M_1", GPTConfig.paper(dropout=args.dropout), paper_batch, args.paper_steps, 1,
                            device, args.matmul_flops))
    print(table(["config", "shape", "timed steps", "ours ms/step", "GPT-2 ms/step", "ours tokens/s",
                 "GPT-2 tokens/s", "speed ratio ours/GPT-2", "ours GFLOP/s (of matmul ceiling)",
                 "ours peak MiB", "GPT-2 peak MiB", "memory ratio GPT-2/ours", "max logit diff at start"], rows))
    print()
    print(f"Load average at the end: {load_average()}.")


if __name__ == "__main__":
    main()
