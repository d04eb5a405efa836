"""Input checks shared by the models: each error names the problem and how to fix it."""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

import torch

if TYPE_CHECKING:
    from projectable.gpt import GPTConfig


def group_size(scale: float) -> int:
    """Source rows (or columns) per target row for ``scale = 1/2^k``: 2^k (Sec. 2.2)."""
    if not isinstance(scale, (int, float)) or not math.isfinite(scale) or scale <= 0:
        raise ValueError(f"scale must be a positive number 1/2^k (1, 0.5, 0.25, ...), got {scale!r}")
    inverse = 1.0 / scale
    k = round(inverse)
    if abs(inverse - k) > 1e-9 or k & (k - 1):
        raise ValueError(
            f"scale={scale} is not of the form 1/2^k; use 1, 1/2, 1/4, 1/8, ... "
            "(each target row averages 2^k consecutive source rows)"
        )
    return k


def check_scale(scale: float, config: GPTConfig) -> int:
    """Validate ``scale`` against a source config; return the group size 2^k."""
    k = group_size(scale)
    for what, size in (("width n_embd", config.n_embd), ("head size", config.head_size),
                       ("MLP width", config.mlp_width)):
        if size % k:
            raise ValueError(
                f"scale={scale} does not divide the source {what}={size} (groups of {k} consecutive units); "
                f"choose a larger scale or a source whose {what} is a multiple of {k}"
            )
    return k


def check_task(task: torch.Tensor | None, task_dim: int, batch: int | None = None) -> torch.Tensor:
    """A task vector (task_dim,) or a batch of them (B, task_dim), finite."""
    if task is None:
        raise ValueError(f"a task vector of size {task_dim} is required; pass task=(B, {task_dim}) or ({task_dim},)")
    if not torch.is_tensor(task):
        task = torch.as_tensor(task, dtype=torch.float32)
    if task.dim() not in (1, 2) or task.shape[-1] != task_dim:
        raise ValueError(
            f"task vector has shape {tuple(task.shape)} but the model expects ({task_dim},) or (B, {task_dim}); "
            "pass vectors of the task_dim the model was built with"
        )
    if batch is not None and task.dim() == 2 and task.shape[0] != batch:
        raise ValueError(f"got {task.shape[0]} task vectors for {batch} sequences; pass one per sequence or one in all")
    if not torch.isfinite(task).all():
        raise ValueError("task vector contains NaN or inf; clean the embeddings/task vectors before passing them")
    return task


def check_tokens(tokens: torch.Tensor, config: GPTConfig) -> None:
    if not torch.is_tensor(tokens) or tokens.dtype not in (torch.int64, torch.int32) or tokens.dim() != 2:
        raise ValueError(
            f"tokens must be an integer tensor of shape (B, T), got "
            f"{getattr(tokens, 'dtype', type(tokens))} {tuple(getattr(tokens, 'shape', ()))}; convert with .long()"
        )
    if tokens.shape[1] > config.block_size:
        raise ValueError(
            f"sequence length {tokens.shape[1]} exceeds the model's {config.block_size} positions; "
            "crop the sequences or build the model with a larger block_size"
        )
    if tokens.numel() and (int(tokens.min()) < 0 or int(tokens.max()) >= config.vocab_size):
        raise ValueError(
            f"tokens range over [{int(tokens.min())}, {int(tokens.max())}] but the vocabulary is "
            f"[0, {config.vocab_size - 1}]; tokenise with the palette/codebook the model was trained on"
        )
