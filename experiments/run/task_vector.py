"""The task vector a run trains and evaluates with (``train.task_vector``): each image's own t (``own``, the
paper's protocol), or one constant t for every sequence (``mean``).

With ``mean`` a projected run is P_s(const) of the specialisation experiment (conf/experiment/
specialisation.yaml): the projection with its task input fixed, a small model inherited from the co-trained
source but not specialised to any task. The constant is the training distribution's mean t, taken as
``datasets.training_task_mean`` takes it for the final evaluation's "mean" task condition: the mean over the
first ceil(MEAN_TASK_IMAGES / B) batches of the run's own training stream (its pool, fraction, labels and
task overrides; on SynthMNIST ~0.5 in every free coordinate, t ~ U[0, 1]^18). It is a fixed function of the
data config and the batch size, the same for every seed, and computed from the task vectors alone (no image
is rendered). The run never sees an image's own t: every training batch and every validation subset (so
also the learning curve, the samples and the logged models' example) carries the constant.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import NamedTuple

import torch
from projectable_data import Batch

from experiments.run.datasets import TrainStream, training_task_mean

# Training images averaged for the constant t: as many as the final evaluation's "mean" task condition
# averages by default (eval.task_mean_images), so that P_s(t) evaluated with the mean t and P_s(const) read
# the same vector. 4096 draws of U[0, 1] put each coordinate within ~0.005 (one SE) of 0.5.
MEAN_TASK_IMAGES = 4096


def with_task(batch: Batch, task: torch.Tensor, overrides: Mapping[int, float] | None = None) -> Batch:
    """``batch`` with every sequence's t replaced by ``task`` (D,); ``overrides`` (a validation subset's,
    e.g. Figure 4's t1) set coordinates of it, the same for every sequence."""
    task = task.to(batch.task.dtype).clone()  # (D,)
    for index, value in (overrides or {}).items():
        task[int(index)] = float(value)
    return batch._replace(task=task.expand_as(batch.task).contiguous())  # (B, D), one row repeated


class ConstantTaskStream:
    """A ``TrainStream`` whose every batch carries one task vector ``task`` (D,) instead of its images' own."""

    def __init__(self, stream: TrainStream, task: torch.Tensor):
        self.stream, self.task = stream, task
        self.batch_size = stream.batch_size

    def batch(self, step: int) -> Batch:
        return with_task(self.stream.batch(step), self.task)

    def tasks(self, step: int) -> torch.Tensor:
        """(B, D): the constant, as ``batch(step).task``."""
        return self.task.expand(self.batch_size, -1)


class RunTasks(NamedTuple):
    stream: TrainStream | ConstantTaskStream  # what the run trains on
    subsets: dict[str, Batch]  # what it is evaluated (and sampled) on
    task: torch.Tensor | None  # (D,) the constant t of ``mean``; None with ``own``


def apply_task_vector(mode: str, stream: TrainStream, subsets: Mapping[str, Batch],
                      overrides: Mapping[str, Mapping[int, float]] | None = None,
                      images: int = MEAN_TASK_IMAGES) -> RunTasks:
    """The run's training stream and validation subsets under ``train.task_vector`` = ``mode``: unchanged
    with ``own``; with ``mean`` every batch and every subset carries the training stream's mean t (each
    subset's own ``overrides`` applied on top, so a subset that fixes a coordinate still fixes it); the mean
    is over the stream's first ceil(``images`` / B) batches."""
    if mode == "own":
        return RunTasks(stream, dict(subsets), None)
    if mode != "mean":
        raise ValueError(f"train.task_vector={mode!r} must be 'own' or 'mean'")
    task = training_task_mean(stream, images)  # (D,), from the unchanged stream
    overrides = overrides or {}
    constant = {name: with_task(batch, task, overrides.get(name)) for name, batch in subsets.items()}
    return RunTasks(ConstantTaskStream(stream, task), constant, task)
