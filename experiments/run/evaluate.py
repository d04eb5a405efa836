"""Validation loss of every model a run holds (Table 1's numbers): nats/token and bits/dim, each with its
standard error over validation images; and, at the end of a run, the loss of every model that reads t under
other task vectors than the images' own ("does the model use t?"). Evaluators return metrics; the driver logs
them."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import NamedTuple

import torch
from projectable import bits_per_dim, mean_and_stderr
from projectable.metrics import MeanSE
from projectable_data import Batch

from experiments.base.sections import ConfigError, build_section, to_plain

# (tokens (B, T), tasks (B, 18)) -> (B,) mean nats/token of each sequence
NLLFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


SUBSET_SOURCES = ("validation", "selection")

# ------------------------------------------------------------------------------------------------
# Task-vector conditions: does a model use t? At the end of a run every model that reads t (M~_s, P_s, every
# width of P~; not M_s, not the co-trained unconditional source) is evaluated on each subset's images with
#   own:      each image's own t (the loss reported everywhere else);
#   permuted: another image's t, by a fixed derangement of the subset's images (``permute_tasks``);
#   mean:     one t for every image, the mean t of the run's training stream (``datasets.training_task_mean``),
#             with the subset's own task overrides still applied.
# A condition is a suffix of the subset's name, so that metric keys and per-image keys keep their layout:
# val/all-t_permuted/s1_4/nats_per_token beside val/all/s1_4/nats_per_token, "all-t_mean/s1_4" beside
# "all/s1_4" in eval/per_image_nats.json. This block is the only place that spells the names.

TASK_CONDITIONS = ("own", "permuted", "mean")
CONDITION_MARK = "-t_"  # <subset>-t_<condition>; subset names may not contain it
# The derangement's seed: fixed, independent of the run's seed, so every run (and every seed of a cell)
# pairs each validation image with the same other image's t.
PERMUTATION_SEED = 2024


class TaskCondition(NamedTuple):
    subset: str  # the subset's own name ("all")
    condition: str  # one of TASK_CONDITIONS


def condition_subset(subset: str, condition: str) -> str:
    """The name of ``subset`` evaluated under ``condition``: 'all' (own), 'all-t_permuted', 'all-t_mean'."""
    if condition not in TASK_CONDITIONS:
        raise ValueError(f"task condition {condition!r} is not one of {TASK_CONDITIONS}")
    return subset if condition == "own" else f"{subset}{CONDITION_MARK}{condition}"


def split_condition(key: str) -> TaskCondition:
    """Back from a conditioned subset name, or a key that holds one: 'all-t_permuted', a per-image key
    'all-t_permuted/s1_4' or a metric key 'val/all-t_permuted/s1_4/nats_per_token' -> ('all', 'permuted');
    a plain subset ('all', 'all/s1_4') -> ('all', 'own')."""
    parts = key.split("/")
    name = parts[1] if parts[0] == "val" and len(parts) == 4 else parts[0]  # val/<subset>/<width>/<stat>
    subset, mark, condition = name.rpartition(CONDITION_MARK)
    if not mark:
        return TaskCondition(name, "own")
    if condition not in TASK_CONDITIONS[1:]:
        raise ValueError(f"{key!r} names task condition {condition!r}; the conditions are {TASK_CONDITIONS}")
    return TaskCondition(subset, condition)


def permute_tasks(tasks: torch.Tensor) -> torch.Tensor:
    """(N, D) -> (N, D): every image gets another image's t. The images are put in a random order
    (``PERMUTATION_SEED``) and each takes the t of the next one in that order, the last the first's: one
    cycle through all N, so no image keeps its own t, and the same N always gives the same pairing."""
    n = len(tasks)
    if n < 2:
        raise ValueError(f"permuting task vectors needs at least 2 images, got {n}; evaluate a larger subset "
                         "or leave 'permuted' out of eval.task_conditions")
    order = torch.randperm(n, generator=torch.Generator().manual_seed(PERMUTATION_SEED))  # (N,)
    donor = torch.empty_like(order)
    donor[order] = order.roll(-1)  # image order[i] reads the t of image order[i + 1]
    return tasks[donor.to(tasks.device)]


def conditioned_batch(batch: Batch, condition: str, mean_task: torch.Tensor | None = None,
                      overrides: Mapping[int, float] | None = None) -> Batch:
    """``batch`` with its task vectors replaced as ``condition`` says; ``mean_task`` (D,) for "mean", where
    ``overrides`` (the subset's task overrides) are applied on top of it."""
    if condition == "own":
        return batch
    if condition == "permuted":
        return batch._replace(task=permute_tasks(batch.task))
    if condition != "mean":
        raise ValueError(f"task condition {condition!r} is not one of {TASK_CONDITIONS}")
    if mean_task is None:
        raise ValueError("the 'mean' task condition needs mean_task, the training stream's mean t")
    mean = mean_task.to(batch.task.dtype).clone()  # (D,)
    for index, value in (overrides or {}).items():
        mean[int(index)] = float(value)
    return batch._replace(task=mean.expand_as(batch.task).contiguous())


def task_condition_subsets(subsets: Mapping[str, Batch], conditions: tuple[str, ...],
                           mean_task: torch.Tensor | None = None,
                           overrides: Mapping[str, Mapping[int, float]] | None = None) -> dict[str, Batch]:
    """Every subset under every condition but "own" (evaluated already), keyed by ``condition_subset``;
    ``overrides``: each subset's task overrides (``Subset.overrides``), kept by the "mean" condition."""
    return {
        condition_subset(name, condition): conditioned_batch(batch, condition, mean_task, (overrides or {}).get(name))
        for condition in conditions if condition != "own"
        for name, batch in subsets.items()
    }


@dataclass(frozen=True)
class Subset:
    overrides: Mapping[int, float] = field(default_factory=dict)  # task coordinate -> value (Figure 4)
    labels: tuple[int, ...] | None = None  # digits kept (Table 4); None: all
    # "validation": the reported validation set; "selection": SynthMNIST's selection set, test digits outside
    # it with fresh task vectors, for choosing a protocol without reading the reported numbers
    source: str = "validation"
    size: int | None = None  # images of the selection set (source=selection only)

    def __post_init__(self):
        if self.source not in SUBSET_SOURCES:
            raise ValueError(f"source={self.source!r} is not a subset source; use one of "
                             f"{', '.join(SUBSET_SOURCES)}")
        if self.source == "selection" and (self.size is None or self.size < 1):
            raise ValueError(f"source=selection needs size >= 1 (images of the selection set), "
                             f"got size={self.size}")
        if self.source == "validation" and self.size is not None:
            raise ValueError(f"size={self.size} applies to source=selection only; the validation set's "
                             "size is data.val_size")


@dataclass(frozen=True)
class EvalConfig:
    every: int = 200  # evaluate every this many steps and at the last one
    at_start: bool = True  # and before the first step (a learning curve's first point)
    batch_size: int = 128
    samples: int = 16  # images per sample grid at the end of a run; 0: none
    subsets: Mapping[str, Subset] = field(default_factory=lambda: {"all": Subset()})
    # At the end of a run, the models that read t on every subset under these task conditions (TASK_CONDITIONS;
    # "own" is the reported loss, always evaluated): [own] alone turns the others off
    task_conditions: tuple[str, ...] = TASK_CONDITIONS
    # The "mean" condition's t: the mean over the first ceil(this / train.batch_size) batches of the run's own
    # training stream (~0.0045 SE per coordinate of SynthMNIST's U[0,1] t at 4096)
    task_mean_images: int = 4096

    def __post_init__(self):
        if self.every < 1 or self.batch_size < 1 or self.samples < 0:
            raise ValueError(f"eval.every={self.every} and eval.batch_size={self.batch_size} must be >= 1 and "
                             f"eval.samples={self.samples} >= 0")
        unknown = [c for c in self.task_conditions if c not in TASK_CONDITIONS]
        if unknown or "own" not in self.task_conditions or len(set(self.task_conditions)) != len(self.task_conditions):
            raise ValueError(f"eval.task_conditions={list(self.task_conditions)} must list distinct conditions of "
                             f"{list(TASK_CONDITIONS)}, 'own' among them (the reported loss); e.g. "
                             "eval.task_conditions=[own] to evaluate no other")
        if self.task_mean_images < 1:
            raise ValueError(f"eval.task_mean_images={self.task_mean_images} must be >= 1 (training images "
                             "averaged for the 'mean' task condition)")
        marked = [name for name in self.subsets if CONDITION_MARK in name]
        if marked:
            raise ValueError(f"eval.subsets {marked} contain {CONDITION_MARK!r}, which marks a task condition "
                             f"(<subset>{CONDITION_MARK}permuted); rename them")

    @classmethod
    def from_node(cls, node) -> EvalConfig:
        """From the ``eval`` config section, validating the keys of the section and of every subset."""
        node = to_plain(node)
        subsets = node.pop("subsets", None) or {"all": {}}
        parsed = {}
        for name, sub in subsets.items():
            sub = dict(sub or {})
            sub["overrides"] = {int(k): float(v) for k, v in (sub.get("overrides") or {}).items()}
            if sub.get("labels") is not None:
                sub["labels"] = tuple(int(x) for x in sub["labels"])
            parsed[str(name)] = build_section(Subset, sub, f"eval.subsets.{name}")
        if not parsed:
            raise ConfigError("eval.subsets is empty; name at least one validation subset, e.g. all: {}")
        config = build_section(cls, node, "eval")
        try:
            return cls(**{**config.__dict__, "subsets": parsed})
        except ValueError as err:
            raise ConfigError(f"config section 'eval': {err}") from err


class Loss(NamedTuple):
    nats: float  # mean nats per token over images
    nats_se: float  # its standard error over images
    bpd: float  # bits per dimension (sub-pixel)
    bpd_se: float
    per_image: torch.Tensor  # (N,) nats/token of each image


@torch.no_grad()
def validation_loss(nll: NLLFn, batch: Batch, batch_size: int, tokens_per_image: int, subpixels: int,
                    device: str = "cpu") -> Loss:
    """Mean and standard error over the images of ``batch`` of one model's per-image loss."""
    chunks = []
    for start in range(0, len(batch.tokens), batch_size):
        tokens = batch.tokens[start : start + batch_size].to(device)  # (b, T)
        tasks = batch.task[start : start + batch_size].to(device)  # (b, 18)
        chunks.append(nll(tokens, tasks).float().cpu())
    per_image = torch.cat(chunks)  # (N,)
    stats = mean_and_stderr(per_image)
    to_bpd = lambda x: float(bits_per_dim(x, tokens_per_image, subpixels))
    return Loss(stats.mean, stats.stderr, to_bpd(stats.mean), to_bpd(stats.stderr), per_image)


def evaluate(models: Mapping[str, NLLFn], subsets: Mapping[str, Batch], batch_size: int,
             tokens_per_image: int, subpixels: int, device: str = "cpu") -> dict[str, Loss]:
    """Loss of every model on every subset, keyed ``"<subset>/<model>"``."""
    return {
        f"{subset}/{name}": validation_loss(nll, batch, batch_size, tokens_per_image, subpixels, device)
        for subset, batch in subsets.items()
        for name, nll in models.items()
    }


# ------------------------------------------------------------------------------------------------
# The metric schema: one key per model width, whatever the kind, each with its unit (README, "Metrics").

STAT_KEYS = {"nats": "nats_per_token", "nats_se": "nats_per_token_se", "bpd": "bits_per_dim",
             "bpd_se": "bits_per_dim_se"}


def width_key(width: float) -> str:
    """A model's name in metric keys: its width relative to the width-1 model, 1.0 -> 's1', 0.25 -> 's1_4'.
    M_1/4, M~_1/4 and P_1/4 share it, so MLflow charts them on one axis; a projected run's co-trained
    source shares 's1' with M_1, M~_1 and the control."""
    k = round(1 / float(width))
    if k < 1 or abs(k * float(width) - 1) > 1e-6:
        raise ValueError(f"width={width} is not 1/k for a whole k")
    return "s1" if k == 1 else f"s1_{k}"


def val_key(subset: str, width: float, stat: str = "nats") -> str:
    """``val/<subset>/<width key>/<stat with unit>``, e.g. val/all/s1_4/nats_per_token."""
    return f"val/{subset}/{width_key(width)}/{STAT_KEYS[stat]}"


def train_key(width: float) -> str:
    """The per-token training loss of the model of this width: train/s1_4/nats_per_token."""
    return f"train/{width_key(width)}/nats_per_token"


TRAIN_TOTAL_KEY = "train/eq2_total_nats_per_token"  # a projected run's Eq. 2 objective: sum over its models


def condition_rise(per_image: Mapping[str, Sequence[float] | torch.Tensor], subset: str, model: str,
                   condition: str) -> MeanSE:
    """Loss under a task condition minus the loss with the images' own t: mean and standard error of the
    paired per-image differences, from per-image losses keyed "<subset>/<width key>" (``Loss.per_image`` of
    ``evaluate``, or a run's eval/per_image_nats.json)."""
    own = torch.as_tensor(per_image[f"{subset}/{model}"], dtype=torch.float64)
    other = torch.as_tensor(per_image[f"{condition_subset(subset, condition)}/{model}"], dtype=torch.float64)
    return mean_and_stderr(other - own)


def as_metrics(losses: Mapping[str, Loss]) -> dict[str, float]:
    """{"val/<subset>/<width key>/nats_per_token": ..., "..._se", ".../bits_per_dim", "..._se"} for losses
    keyed "<subset>/<width key>" (``evaluate`` of a trainee's ``nll_fns``)."""
    out = {}
    for key, loss in losses.items():
        for stat, name in STAT_KEYS.items():
            out[f"val/{key}/{name}"] = getattr(loss, stat)
    return out
