"""Validation loss of every model a run holds (Table 1's numbers): nats/token and bits/dim, each with its
standard error over validation images. Evaluators return metrics; the driver logs them."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import NamedTuple

import torch
from projectable import bits_per_dim, mean_and_stderr
from projectable_data import Batch

# (tokens (B, T), tasks (B, 18)) -> (B,) mean nats/token of each sequence
NLLFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


@dataclass(frozen=True)
class Subset:
    overrides: Mapping[int, float] = field(default_factory=dict)  # task coordinate -> value (Figure 4)
    labels: tuple[int, ...] | None = None  # digits kept (Table 4); None: all


@dataclass(frozen=True)
class EvalConfig:
    every: int = 200  # evaluate every this many steps and at the last one
    batch_size: int = 128
    samples: int = 16  # images per sample grid at the end of a run; 0: none
    subsets: Mapping[str, Subset] = field(default_factory=lambda: {"all": Subset()})

    @classmethod
    def from_node(cls, node) -> EvalConfig:
        """From the ``eval`` config section, validating the keys of the section and of every subset."""
        from experiments.config import ConfigError, build_section, to_plain

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


def as_metrics(losses: Mapping[str, Loss]) -> dict[str, float]:
    """{"val/<subset>/<model>/nats": ..., ".../nats_se", ".../bpd", ".../bpd_se"}."""
    out = {}
    for key, loss in losses.items():
        for stat in ("nats", "nats_se", "bpd", "bpd_se"):
            out[f"val/{key}/{stat}"] = getattr(loss, stat)
    return out
