"""Evaluation metrics: nats per token (the paper's tables) and bits per dimension."""

from __future__ import annotations

import math
from typing import NamedTuple

import torch


def bits_per_dim(nats_per_token, tokens_per_image: int, num_subpixels: int):
    """Total NLL of an image in bits divided by its H x W x 3 sub-pixels.

    ``nats_per_token`` may be a float or a tensor; e.g. 32x32 palette tokens of a 32x32 RGB image:
    ``bits_per_dim(loss, 1024, 32 * 32 * 3)``.
    """
    if tokens_per_image <= 0 or num_subpixels <= 0:
        raise ValueError("tokens_per_image and num_subpixels must be positive")
    return nats_per_token * tokens_per_image / (math.log(2) * num_subpixels)


class MeanSE(NamedTuple):
    mean: float
    stderr: float
    n: int


def mean_and_stderr(values: torch.Tensor) -> MeanSE:
    """Mean of per-image losses and its standard error (sample std / sqrt(n))."""
    values = torch.as_tensor(values, dtype=torch.float64).flatten()
    n = values.numel()
    if n == 0:
        raise ValueError("no values to average")
    se = float(values.std(unbiased=True) / math.sqrt(n)) if n > 1 else float("nan")
    return MeanSE(float(values.mean()), se, n)
