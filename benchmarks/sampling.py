"""Sampling throughput with and without the KV cache (App. B): the source M_1 against a generated P_1/8.

``projectable.sample`` draws ``n`` sequences; with the cache each step feeds one position, without it each step
recomputes the whole prefix (quadratic). Under one seed both give the same tokens (checked here on the common
prefix). P_1/8 is ``ProjectableGPT(M_1, ...).generate(t, 1/8)``, a standalone GPT of width d/8. Beside ours:
``transformers``' ``GPT2LMHeadModel.generate`` with its KV cache on the same weights (``projectable.hf.to_gpt2``,
whose generation config samples as ours does: temperature 1, no top-k, the start token suppressed).

    python benchmarks/sampling.py --threads 2    # CPU size (full 256-token sequences) and the paper size (256 tokens)
"""

from __future__ import annotations

import argparse
import time

import torch
from common import TASK_DIM, add_common_args, load_average, setup, sync, table
from projectable import GPT, GPTConfig, ProjectableGPT, ProjectorConfig, sample
from projectable.hf import to_gpt2


def run(model: GPT, n: int, length: int, use_cache: bool, device) -> tuple[float, torch.Tensor]:
    generator = torch.Generator(device=device).manual_seed(0)
    sync(device)
    start = time.perf_counter()
    tokens = sample(model, n=n, length=length, use_cache=use_cache, generator=generator)
    sync(device)
    return time.perf_counter() - start, tokens


def run_gpt2(model: GPT, n: int, length: int, device) -> float:
    """Seconds of ``GPT2LMHeadModel.generate`` (its KV cache, the export's generation config) for ``n`` sequences of
    ``length`` new tokens, the same weights through ``projectable.hf.to_gpt2``."""
    gpt2 = to_gpt2(model).to(device).eval()
    start_ids = torch.full((n, 1), model.config.vocab_size, device=device)  # the start token
    options = dict(max_new_tokens=length, min_new_tokens=length, use_cache=True)
    gpt2.generate(start_ids, max_new_tokens=2, use_cache=True)  # warm-up
    sync(device)
    start = time.perf_counter()
    with torch.no_grad():
        out = gpt2.generate(start_ids, **options)
    sync(device)
    assert out.shape == (n, length + 1), out.shape
    return time.perf_counter() - start


def bench(name: str, config: GPTConfig, n: int, length: int, uncached_length: int, device) -> list[list]:
    torch.manual_seed(0)
    source = GPT(config).to(device).eval()
    projectable = ProjectableGPT(source, ProjectorConfig(task_dim=TASK_DIM, scales=(0.125,))).to(device)
    small = projectable.generate(torch.randn(TASK_DIM, device=device), 0.125)
    rows = []
    for label, model in (("M_1", source), ("P_1/8", small)):
        sample(model, n=n, length=2)  # warm-up
        seconds_cached, cached = run(model, n, length, True, device)
        seconds_plain, plain = run(model, n, uncached_length, False, device)
        seconds_gpt2 = run_gpt2(model, n, length, device)
        same = torch.equal(cached[:, :uncached_length], plain)
        rows.append([
            name, label, f"{model.num_params() / 1e6:.2f}M", n,
            f"{length}", f"{n * length / seconds_cached:,.0f}", f"{n * length / seconds_gpt2:,.0f}",
            f"{seconds_gpt2 / seconds_cached:.2f}",
            f"{uncached_length}", f"{n * uncached_length / seconds_plain:,.0f}",
            "yes" if same else "NO",
        ])
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add_common_args(parser)
    parser.add_argument("--cpu-n", type=int, default=8, help="sequences at the CPU size")
    parser.add_argument("--paper-n", type=int, default=4, help="sequences at the paper size")
    parser.add_argument("--paper-length", type=int, default=256, help="new tokens at the paper size")
    parser.add_argument("--paper-uncached-length", type=int, default=None,
                        help="tokens without the cache at the paper size (default: 32 on cpu, paper-length on cuda)")
    parser.add_argument("--skip-paper", action="store_true")
    args = parser.parse_args()
    device = setup(args, "Sampling with and without the KV cache (benchmarks/sampling.py)")
    cpu = device.type == "cpu"
    cpu_n = 4 if args.quick else args.cpu_n
    cpu_config = GPTConfig(vocab_size=512, block_size=256, n_layer=4, n_head=4, n_embd=128)
    rows = bench("CPU size", cpu_config, cpu_n, 256, 256, device)
    if not args.skip_paper:
        uncached = args.paper_uncached_length or (32 if cpu else args.paper_length)
        if uncached < args.paper_length:
            print(f"Paper size without the cache: only the first {uncached} tokens (recomputing the prefix each "
                  f"step is quadratic and too slow here); tokens/s over those.\n")
        rows += bench("paper size", GPTConfig.paper(), args.paper_n, args.paper_length, uncached, device)
    print("fp32, temperature 1, no top-k; one timed run each after a 2-token warm-up.\n")
    print(table(["config", "model", "params", "n", "tokens (cache)", "tokens/s with cache",
                 "GPT-2 generate tokens/s (cache)", "speed ratio ours/GPT-2", "tokens (no cache)",
                 "tokens/s without cache", "same tokens"], rows))
    print()
    print(f"Load average at the end: {load_average()}.")


if __name__ == "__main__":
    main()
