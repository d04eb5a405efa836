"""Input checks shared by the models: each error names the problem and how to fix it."""

from __future__ import annotations

import math
import numbers
from typing import TYPE_CHECKING

import torch

if TYPE_CHECKING:
    from projectable.gpt import GPTConfig


def as_real(value, name: str) -> float:
    """``value`` as a Python float: ints, floats and numpy scalars pass, bools and everything else do not."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise ValueError(f"{name} must be a number, got {value!r} ({type(value).__name__})")
    return float(value)


def as_int(value, name: str) -> int:
    """``value`` as a Python int: ints, numpy integers and integral floats pass (3.0 -> 3), nothing else."""
    if isinstance(value, numbers.Integral) and not isinstance(value, bool):
        return int(value)
    if not isinstance(value, bool) and isinstance(value, numbers.Real) and float(value).is_integer():
        return int(value)
    raise ValueError(f"{name} must be a whole number, got {value!r} ({type(value).__name__})")


def as_scale(scale) -> float:
    """``scale`` as a Python float if it is a positive finite number (numpy scalars included)."""
    value = None if isinstance(scale, bool) or not isinstance(scale, numbers.Real) else float(scale)
    if value is None or not math.isfinite(value) or value <= 0:
        raise ValueError(f"scale must be a positive number 1/2^k (1, 0.5, 0.25, ...), got {scale!r}")
    return value


def group_size(scale: float) -> int:
    """Source rows (or columns) per target row for ``scale = 1/2^k``: 2^k (Sec. 2.2)."""
    scale = as_scale(scale)
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


def check_task(task, task_dim: int, batch: int | None = None, like: torch.Tensor | None = None) -> torch.Tensor:
    """A task vector (task_dim,) or a batch of them (B, task_dim), finite, of any real dtype.

    With ``like`` (a parameter of the model) the result has its dtype and device, so integer, float64,
    float16 or bfloat16 task vectors all reach the model in the dtype it computes in.
    """
    if task is None:
        raise ValueError(f"a task vector of size {task_dim} is required; pass task=(B, {task_dim}) or ({task_dim},)")
    if not torch.is_tensor(task):
        try:
            task = torch.as_tensor(task)
        except (TypeError, ValueError, RuntimeError) as err:
            raise ValueError(
                f"task vector of type {type(task).__name__} is not an array of numbers ({err}); "
                f"pass a tensor or array of shape ({task_dim},) or (B, {task_dim})"
            ) from None
    if task.dtype == torch.bool or task.is_complex():
        raise ValueError(
            f"task vector has dtype {task.dtype}; pass real numbers (a float or int dtype), e.g. task.float()"
        )
    if task.dim() not in (1, 2) or task.shape[-1] != task_dim:
        raise ValueError(
            f"task vector has shape {tuple(task.shape)} but the model expects ({task_dim},) or (B, {task_dim}) "
            f"(task_dim={task_dim}); pass vectors of the task_dim the model was built with"
        )
    if batch is not None and task.dim() == 2 and task.shape[0] != batch:
        raise ValueError(f"got {task.shape[0]} task vectors for {batch} sequences; pass one per sequence or one in all")
    if task.is_floating_point() and not torch.isfinite(task).all():
        raise ValueError(
            f"task vector contains NaN or inf (task_dim={task_dim}); clean the embeddings/task vectors before "
            "passing them"
        )
    if like is not None and (task.dtype != like.dtype or task.device != like.device):
        converted = task.to(device=like.device, dtype=like.dtype)
        if not torch.isfinite(converted).all():
            raise ValueError(
                f"task vector values overflow the model's dtype {like.dtype} (largest magnitude "
                f"{task.abs().max().item():g}, task_dim={task_dim}); rescale the task vectors"
            )
        task = converted
    return task


def check_tokens(tokens: torch.Tensor, config: GPTConfig) -> None:
    if not torch.is_tensor(tokens) or tokens.dtype not in (torch.int64, torch.int32) or tokens.dim() != 2:
        raise ValueError(
            f"tokens must be an integer tensor of shape (B, T), got "
            f"{getattr(tokens, 'dtype', type(tokens))} {tuple(getattr(tokens, 'shape', ()))}; convert with .long()"
        )
    if tokens.shape[0] == 0 or tokens.shape[1] == 0:
        raise ValueError(
            f"tokens have shape {tuple(tokens.shape)}: no sequences or empty sequences; pass at least one "
            "sequence of at least one token"
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


def free_memory() -> int | None:
    """Bytes of memory this machine can still give (Linux's MemAvailable, which counts reclaimable caches), for
    refusing an allocation that cannot fit before it is made; None where it cannot be read."""
    try:
        with open("/proc/meminfo") as meminfo:
            for line in meminfo:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        return None
    return None
