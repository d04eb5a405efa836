"""Task vectors t ~ U[0, 1]^18 (App. C.3) and the reproducible streams that pair them with MNIST digits.

Every draw comes from its own numpy generator seeded by (seed, stream, ...): the training batch of a step
depends on nothing but (seed, step, batch_size), validation on (seed, size), so streams never share
random numbers and training can resume at any step.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import NamedTuple

import numpy as np

from .synthmnist import TASK_DIM

# Stream ids, mixed into the seed so the streams are independent of each other.
STREAM_TRAIN, STREAM_VALIDATION, STREAM_PALETTE, STREAM_POOL, STREAM_POOL_ORDER = 1, 2, 3, 4, 5


class TaskItems(NamedTuple):
    """What a SynthMNIST image is made from (the image is a deterministic function of these)."""

    task: np.ndarray  # (B, 18) float32 task vectors
    digit_index: np.ndarray  # (B,) int64 index into the MNIST split the stream draws from
    flip: np.ndarray  # (B,) bool, horizontal digit mirror (training split only)


def stream_rng(seed: int, stream: int, *keys: int) -> np.random.Generator:
    """Generator for one stream position; `keys` (e.g. step, batch_size) select the position."""
    return np.random.default_rng([int(seed), int(stream), *(int(k) for k in keys)])


def apply_overrides(task: np.ndarray, overrides: Mapping[int, float] | None) -> np.ndarray:
    """Copy of `task` (B, 18) with coordinates fixed: {index: value}, value a float or a (B,) array.

    Values outside [0, 1] are allowed on purpose (Figure 4 sweeps the scale coordinate t1 over [0, 2]).
    """
    if not overrides:
        return task
    task = np.array(task, dtype=np.float32, copy=True)
    for index, value in overrides.items():
        if isinstance(index, str) and index.isdigit():  # YAML / JSON configs often give keys as strings
            index = int(index)
        if not isinstance(index, (int, np.integer)) or not 0 <= index < TASK_DIM:
            raise ValueError(
                f"override key {index!r} is not a task coordinate; use an int in 0..{TASK_DIM - 1} "
                "(e.g. {1: 1.5} sets the scale coordinate t1)."
            )
        task[:, index] = np.asarray(value, dtype=np.float32)
    return task


def sample_tasks(
    rng: np.random.Generator, n: int, overrides: Mapping[int, float] | None = None
) -> np.ndarray:
    """n task vectors t ~ U[0, 1]^18 as (n, 18) float32, with optional fixed coordinates."""
    task = rng.random((n, TASK_DIM), dtype=np.float32)
    return apply_overrides(task, overrides)


def sample_items(rng: np.random.Generator, n: int, num_digits: int, flip: bool) -> TaskItems:
    """n (task, digit, flip) triples; digits uniform over the split, flips with p = 0.5 if `flip`."""
    task = sample_tasks(rng, n)
    digit_index = rng.integers(0, num_digits, size=n, dtype=np.int64)
    flips = rng.random(n) < 0.5 if flip else np.zeros(n, dtype=bool)
    return TaskItems(task, digit_index, flips)


def train_items(seed: int, step: int, batch_size: int, num_digits: int) -> TaskItems:
    """Training items of one step: a deterministic function of (seed, step, batch_size)."""
    if step < 0 or batch_size <= 0:
        raise ValueError(f"need step >= 0 and batch_size > 0, got step={step}, batch_size={batch_size}.")
    return sample_items(stream_rng(seed, STREAM_TRAIN, step, batch_size), batch_size, num_digits, flip=True)


def validation_items(seed: int, size: int, num_digits: int) -> TaskItems:
    """The fixed validation set: `size` distinct test digits, fresh tasks, never flipped."""
    if not 0 < size <= num_digits:
        raise ValueError(f"val_size={size} must be in 1..{num_digits} (the MNIST test split's size).")
    rng = stream_rng(seed, STREAM_VALIDATION, size)
    task = sample_tasks(rng, size)
    digit_index = np.sort(rng.choice(num_digits, size=size, replace=False)).astype(np.int64)
    return TaskItems(task, digit_index, np.zeros(size, dtype=bool))
