"""Optimisation (App. C.1): Adam, linear warmup then cosine decay, optional weight decay and clipping."""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from experiments.run.precision import PRECISIONS


@dataclass(frozen=True)
class TrainConfig:
    steps: int = 1000  # optimizer steps
    batch_size: int = 32  # sequences per optimizer step (split over grad_accum micro-batches)
    lr: float = 2e-3  # peak learning rate
    min_lr_ratio: float = 0.1  # the cosine decays to lr * min_lr_ratio at the last step
    warmup_steps: int = 100  # linear warmup from lr / warmup_steps
    weight_decay: float = 0.0  # decoupled (AdamW); the paper uses 1e-10..1e-8
    betas: tuple[float, float] = (0.9, 0.99)
    grad_clip: float = 1.0  # max global grad norm; 0 disables
    grad_accum: int = 1  # micro-batches per step: same update, less activation memory
    # fp32 | bf16 (autocast around the forward; fp32 weights and optimizer) | auto (bf16 where the device has
    # native bf16 dot products): experiments.run.precision. The driver resolves auto before the run key is made.
    precision: str = "fp32"
    force_precision: bool = False  # train in bf16 even where it is emulated (~100x slower on such a CPU)
    compile: bool = False  # torch.compile the loss; for GPUs (~25 s compile, no gain on CPU)
    log_every: int = 10  # training metrics to MLflow every this many steps
    checkpoint_every: int = 200  # resumable checkpoint every this many steps (and at the end)
    train_fraction: float = 1.0  # train on this leading fraction of a finite pool (data.train_pool_size)
    train_labels: tuple[int, ...] | None = None  # digits to train on (Table 4 splits); None: all
    # "own": every sequence with its image's t; "mean": every sequence, in training and evaluation, with one
    # constant t, the training stream's mean (experiments.run.task_vector; the specialisation experiment)
    task_vector: str = "own"
    memory_check: bool = True  # refuse a run whose estimated memory exceeds the device's free memory

    def __post_init__(self):
        if self.steps < 1 or self.batch_size < 1:
            raise ValueError(f"train.steps and train.batch_size must be >= 1, got {self.steps}, {self.batch_size}")
        if self.grad_accum < 1:
            raise ValueError(f"train.grad_accum={self.grad_accum} must be >= 1 (micro-batches per step)")
        if not self.lr > 0:
            raise ValueError(f"train.lr={self.lr} must be > 0")
        if self.grad_clip < 0:
            raise ValueError(f"train.grad_clip={self.grad_clip} must be >= 0 (0 disables clipping); a negative "
                             "norm would flip the gradients")
        if self.warmup_steps < 0 or self.weight_decay < 0 or not 0 <= self.min_lr_ratio <= 1:
            raise ValueError(f"train.warmup_steps={self.warmup_steps} and train.weight_decay={self.weight_decay} must "
                             f"be >= 0 and train.min_lr_ratio={self.min_lr_ratio} in [0, 1]")
        if self.batch_size % self.grad_accum:
            raise ValueError(
                f"train.batch_size={self.batch_size} is not divisible by train.grad_accum={self.grad_accum}; "
                "pick a grad_accum that divides the batch"
            )
        if not 0.0 < self.train_fraction <= 1.0:
            raise ValueError(f"train.train_fraction must lie in (0, 1], got {self.train_fraction}")
        if self.precision not in PRECISIONS:
            raise ValueError(f"train.precision={self.precision!r} is not one of {', '.join(PRECISIONS)}")
        if len(self.betas) != 2 or not all(0 <= beta < 1 for beta in self.betas):
            raise ValueError(f"train.betas={list(self.betas)} must be two numbers in [0, 1) (Adam's beta1, beta2), "
                             "e.g. train.betas=[0.9,0.99]")
        if self.checkpoint_every < 1 or self.log_every < 1:
            raise ValueError("train.checkpoint_every and train.log_every must be >= 1")
        if self.task_vector not in ("own", "mean"):
            raise ValueError(f"train.task_vector={self.task_vector!r} must be 'own' (each image's t) or 'mean' (one "
                             "constant t, the training stream's mean)")


def lr_at(step: int, cfg: TrainConfig) -> float:
    """Learning rate for optimizer step ``step`` (0-based): linear warmup, then cosine to min_lr_ratio."""
    if step < cfg.warmup_steps:
        return cfg.lr * (step + 1) / cfg.warmup_steps
    decay_steps = max(1, cfg.steps - cfg.warmup_steps)
    progress = min(1.0, (step - cfg.warmup_steps) / decay_steps)
    floor = cfg.lr * cfg.min_lr_ratio
    return floor + 0.5 * (cfg.lr - floor) * (1.0 + math.cos(math.pi * progress))


def build_optimizer(module: torch.nn.Module, cfg: TrainConfig) -> torch.optim.Optimizer:
    """AdamW; matrices decay, vectors (biases, norms, start tokens) do not (nanoGPT's split)."""
    params = [p for p in module.parameters() if p.requires_grad]
    decay = [p for p in params if p.dim() >= 2]
    no_decay = [p for p in params if p.dim() < 2]
    groups = [
        {"params": decay, "weight_decay": cfg.weight_decay},
        {"params": no_decay, "weight_decay": 0.0},
    ]
    return torch.optim.AdamW(groups, lr=cfg.lr, betas=tuple(cfg.betas), weight_decay=cfg.weight_decay)


def set_lr(optimizer: torch.optim.Optimizer, lr: float) -> None:
    for group in optimizer.param_groups:
        group["lr"] = lr
