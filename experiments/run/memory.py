"""A run's memory, estimated from its config before anything is allocated, and the refusal of a run that
cannot fit the device it would run on (``train.memory_check``; false tries anyway).

The estimate of one training step (fp32 throughout, so an upper bound under bf16 autocast):

* parameters, their gradients and AdamW's two moments: 16 bytes per trained parameter;
* activations kept for the backward pass by one micro-batch (``batch_size / grad_accum`` sequences) of
  every model the loss runs (M_s; or the source and every P_s of a projected run): per layer and token a
  multiple of the width and of the MLP width, the attention probabilities where the attention kernel keeps
  them (on the CPU with dropout, where torch falls back to its math path; its flash kernel without dropout
  and the GPU's kernels keep none), the logits and their softmax;
* a projected run's generated weights: every sequence gets its own P_s(t), whose dense weights (and their
  gradients) are as large as the small model's, once per sequence of the micro-batch.

The constants were fitted on measured peaks of live tensor bytes over two CPU training steps (the tracker in
``experiments/tests/test_memory.py``); on eight smoke-sized configs of every kind (widths 32 and 128, 64 and
256 tokens, with and without dropout and micro-batches) the estimate was 0.85 to 1.27 times the measured
peak, and the test keeps it within 2x. The data pools, Python, torch
and MLflow are left out (hundreds of MB, whatever the run).
"""

from __future__ import annotations

import dataclasses
from typing import NamedTuple

import torch
from projectable.validation import free_memory

FLOAT = 4  # bytes: fp32
OPTIMIZER_STATES = 2  # AdamW's exp_avg and exp_avg_sq
PER_TOKEN_WIDTH = 8  # saved activations per layer and token, in units of the width (layer norms, q, k, v, ...)
PER_TOKEN_MLP = 3  # ... and of the MLP width (the up projection, the GELU, its output)
LOGIT_COPIES = 4  # logits, log-softmax, and their gradients


class MemoryEstimate(NamedTuple):
    weights: int  # bytes of the trained parameters
    gradients: int
    optimizer: int  # AdamW's moments
    activations: int  # kept for backward by one micro-batch of every model the loss runs
    generated: int  # a projected run's per-sequence generated weights (and their gradients)

    @property
    def total(self) -> int:
        return sum(self)

    def describe(self) -> str:
        gib = lambda n: f"{n / 2**30:.2f} GiB"
        return (f"{gib(self.total)} (weights {gib(self.weights)}, gradients {gib(self.gradients)}, AdamW "
                f"{gib(self.optimizer)}, activations {gib(self.activations)}, generated weights {gib(self.generated)})")


def model_activations(config, batch: int, keeps_attention: bool) -> int:
    """Bytes one forward of a GPT of ``config`` keeps for its backward pass on ``batch`` sequences."""
    tokens = batch * config.block_size
    per_layer = tokens * (PER_TOKEN_WIDTH * config.n_embd + PER_TOKEN_MLP * config.mlp_width)
    if keeps_attention:
        per_layer += 3 * batch * config.n_head * config.block_size**2  # probabilities, dropped out, gradient
    logits = LOGIT_COPIES * tokens * config.vocab_size
    return FLOAT * (config.n_layer * per_layer + logits)


def dense_params(config) -> int:
    """Parameters of a GPT's dense (per-layer matrix) weights: what a generator makes per task."""
    from projectable import GPT

    with torch.device("meta"):
        model = GPT(config)
    return sum(p.numel() for name, p in model.named_parameters() if name.startswith("dense."))


def estimate_run(run, task_dim: int) -> MemoryEstimate:
    """The memory of one training step of ``run`` (a ``RunConfig``), from its config alone: the models are
    built on the meta device (no storage) to count their parameters."""
    from experiments.run.trainees import ProjectedTrainee, build_trainee

    with torch.device("meta"):
        trainee = build_trainee(run.kind, run.width, run.model, run.projector, task_dim, device="meta")
    trained = sum(p.numel() for p in trainee.module.parameters() if p.requires_grad)
    micro = run.train.batch_size // run.train.grad_accum
    keeps_attention = run.device == "cpu" and run.model.dropout > 0  # the CPU's flash kernel runs without dropout
    if isinstance(trainee, ProjectedTrainee):
        model = trainee.model
        configs = [model.small_config(scale) for scale in model.config.scales]
        generated = sum(2 * FLOAT * micro * dense_params(config) for config in configs)
        if model.reads_source:
            configs.append(model.source_config)
    else:
        configs, generated = [dataclasses.replace(trainee.model.config)], 0
    activations = sum(model_activations(config, micro, keeps_attention) for config in configs)
    return MemoryEstimate(FLOAT * trained, FLOAT * trained, OPTIMIZER_STATES * FLOAT * trained, activations, generated)


def available_memory(device: str) -> int | None:
    """Bytes free for this run: the GPU's free memory, or the machine's available memory (Linux's
    MemAvailable, which counts reclaimable caches); None where it cannot be read."""
    if device == "cuda":
        return int(torch.cuda.mem_get_info()[0])
    return free_memory()


def check_fits(run, task_dim: int) -> MemoryEstimate:
    """Refuse (``ConfigError``) a run whose estimated memory exceeds what its device has free, naming both
    and the override; returns the estimate."""
    from experiments.config import ConfigError

    estimate = estimate_run(run, task_dim)
    free = available_memory(run.device)
    if run.train.memory_check and free is not None and estimate.total > free:
        where = "the GPU" if run.device == "cuda" else "this machine"
        raise ConfigError(
            f"this run needs about {estimate.describe()}, but {where} has {free / 2**30:.2f} GiB free; lower "
            "train.batch_size (or raise train.grad_accum), the model's size (model.n_embd, model.n_layer, width) "
            "or projector.scales, or set train.memory_check=false to try anyway"
        )
    return estimate
