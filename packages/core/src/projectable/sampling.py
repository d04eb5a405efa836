"""Batched autoregressive sampling with a KV cache (temperature, top-k) for any GPT: source, baselines and
generated models. ``use_cache=False`` recomputes the whole prefix each step; under a fixed generator both give
the same tokens (a test invariant)."""

from __future__ import annotations

import math
from typing import NamedTuple

import torch

from projectable.gpt import GPT, GPTConfig, KVCache, refuse_task
from projectable.validation import as_int, as_real, check_task


def _draw(logits: torch.Tensor, temperature: float, top_k: int | None, generator: torch.Generator | None):
    """Sample one token per row from logits (B, V)."""
    logits = logits.float()
    if not torch.isfinite(logits).all():
        raise ValueError(
            "the model's logits contain NaN or inf: its weights are damaged (NaN or inf) or overflow their dtype; "
            "check the model file (projectable info <file>) or sample in float32"
        )
    # The largest logit subtracted first: a tiny temperature then sends the others to -inf, never to inf/inf.
    logits = (logits - logits.amax(dim=-1, keepdim=True)) / temperature
    if top_k is not None:
        kth = torch.topk(logits, min(top_k, logits.shape[-1]), dim=-1).values[:, -1:]  # (B, 1)
        logits = logits.masked_fill(logits < kth, float("-inf"))
    probs = torch.softmax(logits, dim=-1)
    return torch.multinomial(probs, 1, generator=generator)  # (B, 1)


class SamplingArgs(NamedTuple):
    n: int
    temperature: float
    top_k: int | None
    length: int


def check_sampling(config: GPTConfig, n, temperature, top_k, length) -> SamplingArgs:
    """The arguments of ``sample`` checked and as Python numbers (numpy scalars accepted), before any work."""
    n = as_int(n, "n (the number of samples)")
    if n <= 0:
        raise ValueError(f"n must be a positive number of samples, got {n}")
    temperature = as_real(temperature, "temperature")
    if not math.isfinite(temperature) or temperature <= 0:
        raise ValueError(
            f"temperature must be a finite number > 0, got {temperature}; use a small value such as 0.01 for "
            "near-greedy sampling"
        )
    if top_k is not None:
        top_k = as_int(top_k, "top_k")
        if top_k < 1:
            raise ValueError(f"top_k must be None (no truncation) or an int >= 1, got {top_k}")
    length = config.block_size if length is None else as_int(length, "length")
    if not 0 < length <= config.block_size:
        raise ValueError(
            f"length {length} must lie in 1..block_size={config.block_size}; an empty sequence has no tokens"
        )
    return SamplingArgs(n, temperature, top_k, length)


@torch.no_grad()
def sample(
    model: GPT,
    n: int,
    task: torch.Tensor | None = None,
    temperature: float = 1.0,
    top_k: int | None = None,
    generator: torch.Generator | None = None,
    use_cache: bool = True,
    length: int | None = None,
) -> torch.Tensor:
    """Draw ``n`` sequences of ``length`` (default: block_size) tokens -> (n, length) int64.

    ``task``: (t,) shared by all samples or (n, t), required for conditional models (M~_s).
    """
    config = model.config
    n, temperature, top_k, length = check_sampling(config, n, temperature, top_k, length)
    if config.conditional:
        task = check_task(task, config.task_dim, batch=n, like=model.parts.wte)
        task = task.expand(n, -1) if task.dim() == 1 else task
    else:
        refuse_task(task)
    was_training = model.training
    model.eval()
    device = model.parts.wte.device
    tokens = torch.zeros(n, 0, dtype=torch.long, device=device)
    cache = KVCache(config.n_layer) if use_cache else None
    for step in range(length):
        if use_cache:
            inputs = tokens[:, -1:] if step else torch.zeros(n, 1, dtype=torch.long, device=device)
            logits = model.step(inputs, cache, task)
        else:
            # forward() predicts every position of its argument; a dummy last token is never read.
            prefix = torch.cat([tokens, tokens.new_zeros(n, 1)], dim=1)
            logits = model(prefix, task)[:, -1]
        tokens = torch.cat([tokens, _draw(logits, temperature, top_k, generator)], dim=1)
    model.train(was_training)
    return tokens
