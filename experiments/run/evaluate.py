"""Validation loss of every model a run holds (Table 1's numbers): nats/token and bits/dim, each with its
standard error over validation images. Evaluators return metrics; the driver logs them."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import NamedTuple

import torch
from projectable import bits_per_dim, mean_and_stderr
from projectable_data import Batch

from experiments.base.sections import ConfigError, build_section, to_plain

# (tokens (B, T), tasks (B, 18)) -> (B,) mean nats/token of each sequence
NLLFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


SUBSET_SOURCES = ("validation", "selection")


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

    def __post_init__(self):
        if self.every < 1 or self.batch_size < 1 or self.samples < 0:
            raise ValueError(f"eval.every={self.every} and eval.batch_size={self.batch_size} must be >= 1 and "
                             f"eval.samples={self.samples} >= 0")

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
        return cls(**{**config.__dict__, "subsets": parsed})


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


def as_metrics(losses: Mapping[str, Loss]) -> dict[str, float]:
    """{"val/<subset>/<width key>/nats_per_token": ..., "..._se", ".../bits_per_dim", "..._se"} for losses
    keyed "<subset>/<width key>" (``evaluate`` of a trainee's ``nll_fns``)."""
    out = {}
    for key, loss in losses.items():
        for stat, name in STAT_KEYS.items():
            out[f"val/{key}/{name}"] = getattr(loss, stat)
    return out
