"""A source GPT with task-conditioned projectors to smaller widths, trained jointly (Eq. 2, Sec. 3.3).

``ProjectableGPT`` holds the source M_1 and, per target scale s, a ``DiagonalGenerator`` (the MLPs producing
p(t), q(t)) plus, by default, the small model's own embeddings, norms and head. A batch may carry one task
vector per sequence, so one forward evaluates many generated models at once, without a loop over examples.
``generate(t, s)`` returns a standalone ``GPT`` whose logits equal the projected forward for that t.
"""

from __future__ import annotations

import json
from dataclasses import asdict, replace
from pathlib import Path
from typing import NamedTuple

import torch
import torch.nn as nn
from einops import rearrange

from projectable.gpt import (
    DENSE_KINDS,
    GPT,
    GPTConfig,
    GPTParts,
    StackedLinears,
    embed,
    sequence_nll_from_logits,
    transformer_forward,
    upgrade_legacy_names,
)
from projectable.io import config_from_metadata, read_tensors, write_tensors
from projectable.projector import (
    DiagonalGenerator,
    ExpandedLinears,
    ProjectorConfig,
    choose_route,
    project_bias,
    project_weight,
    scale_key,
    scale_name,
)
from projectable.validation import as_scale, check_scale, check_task, check_tokens

FILE_FORMAT = "projectable.projectable_gpt"  # the metadata format tag of ProjectableGPT.save files


class CoTrainLoss(NamedTuple):
    """Eq. 2: ``total = sum_s projected[s] + w_src * source`` (each a mean nats/token)."""

    total: torch.Tensor
    source: torch.Tensor
    projected: dict[float, torch.Tensor]


def _group_mean(x: torch.Tensor, k: int) -> torch.Tensor:
    """Average consecutive groups of k along the last (width) axis: (..., C) -> (..., C/k)."""
    return rearrange(x, "... (c a) -> ... c a", a=k).mean(-1)


def _group_sum(x: torch.Tensor, k: int) -> torch.Tensor:
    return rearrange(x, "... (c a) -> ... c a", a=k).sum(-1)


class DerivedParts:
    """The small model's embeddings, norms and head as group averages of the live source's (``small_parts=
    'derived'``). Embeddings and norm parameters average the k source units of a group; the head sums them,
    matching q = 1 on a residual stream whose units repeat k times. Gradients flow into the source."""

    def __init__(self, source: GPTParts, config: GPTConfig, k: int):
        self.config, self.training = config, source.training
        self.wte, self.wpe = _group_mean(source.wte, k), _group_mean(source.wpe, k)
        if source.config.conditional:  # the generated model is unconditional: start from the map's bias
            self._start = _group_mean(source.task_proj.bias, k)
        else:
            self._start = _group_mean(source.start, k)
        for name in ("ln1_w", "ln1_b", "ln2_w", "ln2_b", "lnf_w", "lnf_b"):
            setattr(self, name, _group_mean(getattr(source, name), k))
        self.head = _group_sum(source.head, k)

    def start_embedding(self, batch: int, task: torch.Tensor | None) -> torch.Tensor:
        return self._start.expand(batch, 1, -1)


class ProjectableGPT(nn.Module):
    """Source M_1 + projectors P_s for every s in ``config.scales`` (one scale: P_s; several: P~)."""

    def __init__(self, source: GPT, config: ProjectorConfig):
        super().__init__()
        if source.config.conditional and source.config.task_dim != config.task_dim:
            raise ValueError(
                f"the source is conditional on task_dim={source.config.task_dim} but the projector expects "
                f"task_dim={config.task_dim}; build both for the same task vectors"
            )
        self.source = source
        self.config = config
        self.generators = nn.ModuleDict()
        self.small_parts = nn.ModuleDict()
        for scale in config.scales:
            k = check_scale(scale, source.config)
            self.generators[scale_key(scale)] = DiagonalGenerator(source.config, config, scale)
            if config.small_parts == "own":
                parts = GPTParts(self.small_config(scale))
                with torch.no_grad():  # start as the group average of the source's parts
                    derived = DerivedParts(source.parts, parts.config, k)
                    for name in ("wte", "wpe", "ln1_w", "ln1_b", "ln2_w", "ln2_b", "lnf_w", "lnf_b", "head"):
                        getattr(parts, name).copy_(getattr(derived, name))
                    parts.start.copy_(derived._start)
                self.small_parts[scale_key(scale)] = parts

    # ---------------------------------------------------------------------------------------------

    def small_config(self, scale: float) -> GPTConfig:
        """Config of the generated model: the source's at width scale*d, unconditional (t acts via P, Q)."""
        return replace(self.source.config.scaled(scale), task_dim=0)

    def check_scale(self, scale: float) -> int:
        """Group size k of ``scale``; a scale without a projector here is an error naming the available ones."""
        if scale_key(scale) not in self.generators:
            available = ", ".join(scale_name(s) for s in self.config.scales)
            raise ValueError(
                f"no projector for scale={as_scale(scale):g}; the available scales are {available} "
                f"(this model was built with scales={self.config.scales})"
            )
        return check_scale(scale, self.source.config)

    @property
    def _reference(self) -> torch.Tensor:
        """A parameter whose dtype and device task vectors are converted to."""
        return self.source.parts.wte

    def parts(self, scale: float) -> GPTParts | DerivedParts:
        k = self.check_scale(scale)
        if self.config.small_parts == "own":
            return self.small_parts[scale_key(scale)]
        return DerivedParts(self.source.parts, self.small_config(scale), k)

    def diagonals(self, tasks: torch.Tensor, scale: float):
        """p(t), q(t) for every dense operator; tasks (B, t) or (t,) -> (B or 1, L, ...)."""
        self.check_scale(scale)
        tasks = check_task(tasks, self.config.task_dim, like=self._reference)
        if tasks.dim() == 1:
            tasks = tasks.unsqueeze(0)
        return self.generators[scale_key(scale)](tasks)

    def projected_weights(self, tasks: torch.Tensor, scale: float) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
        """Per-task small dense weights: kind -> (W_s (B, L, o, i), b_s (B, L, o))."""
        k = self.check_scale(scale)
        diag = self.diagonals(tasks, scale)
        out = {}
        for kind in DENSE_KINDS:
            w, b = self.source.dense.weights(kind)
            out[kind] = (project_weight(w, diag.p[kind], diag.q[kind], k), project_bias(b, diag.p[kind], k))
        return out

    def projected_logits(self, tokens: torch.Tensor, tasks: torch.Tensor, scale: float,
                         route: str | None = None) -> torch.Tensor:
        """Logits of P_s(t) on ``tokens`` (B, T); ``tasks`` (B, t) one per sequence, or (t,) for all."""
        k = self.check_scale(scale)
        check_tokens(tokens, self.source.config)
        tasks = check_task(tasks, self.config.task_dim, batch=tokens.shape[0], like=self._reference)
        n_tasks = 1 if tasks.dim() == 1 else tasks.shape[0]
        B, T = tokens.shape
        route = choose_route(route or self.config.route, self.source.config, k, n_tasks, B, T)
        if route == "materialize":
            weights = self.projected_weights(tasks, scale)
            if n_tasks == 1:  # one task for the whole batch: plain shared weights
                weights = {kind: (w[0], b[0]) for kind, (w, b) in weights.items()}
            linears = StackedLinears(weights)
        else:
            src = {kind: self.source.dense.weights(kind) for kind in DENSE_KINDS}
            linears = ExpandedLinears(src, self.diagonals(tasks, scale), k)
        parts = self.parts(scale)
        return transformer_forward(parts, linears, embed(parts, tokens, None))

    def sequence_nll(self, tokens: torch.Tensor, tasks: torch.Tensor, scale: float) -> torch.Tensor:
        """(B,) mean nats per token of each sequence under its own generated model P_s(t)."""
        return sequence_nll_from_logits(self.projected_logits(tokens, tasks, scale), tokens)

    def loss(self, tokens: torch.Tensor, tasks: torch.Tensor) -> CoTrainLoss:
        """Eq. 2 on one batch: projected losses of every scale + w_src * loss of the source."""
        source_task = tasks if self.source.config.conditional else None
        source = self.source.loss(tokens, source_task)
        projected = {s: self.sequence_nll(tokens, tasks, s).mean() for s in self.config.scales}
        total = sum(projected.values()) + self.config.source_weight * source
        return CoTrainLoss(total, source, projected)

    # ---------------------------------------------------------------------------------------------

    @torch.no_grad()
    def generate(self, task_vector: torch.Tensor, scale: float) -> GPT:
        """One-shot generation: a standalone GPT of width scale*d for task ``task_vector`` (t,)."""
        task_vector = check_task(task_vector, self.config.task_dim, like=self._reference)
        if task_vector.dim() != 1:
            raise ValueError(
                f"generate takes one task vector ({self.config.task_dim},), got {tuple(task_vector.shape)}; "
                "call it once per task"
            )
        weights = self.projected_weights(task_vector, scale)
        parts = self.parts(scale)
        ref = self.source.parts.wte
        small = GPT(self.small_config(scale)).to(device=ref.device, dtype=ref.dtype)
        for name in ("wte", "wpe", "ln1_w", "ln1_b", "ln2_w", "ln2_b", "lnf_w", "lnf_b", "head"):
            getattr(small.parts, name).copy_(getattr(parts, name))
        small.parts.start.copy_(parts.start if isinstance(parts, GPTParts) else parts._start)
        for kind, (w, b) in weights.items():
            small_w, small_b = small.dense.weights(kind)
            small_w.copy_(w[0])
            small_b.copy_(b[0])
        return small.eval()

    def num_projector_params(self, scale: float) -> int:
        """Projector size as the paper counts it: the diagonal MLPs plus the small model's own parameters."""
        self.check_scale(scale)
        key = scale_key(scale)
        count = sum(p.numel() for p in self.generators[key].parameters())
        if self.config.small_parts == "own":
            count += sum(p.numel() for p in self.small_parts[key].parameters())
        return count

    # ---------------------------------------------------------------------------------------------

    def save(self, path: str | Path) -> None:
        """Everything (source and projectors) in one safetensors file with both configs as metadata."""
        write_tensors(path, self.state_dict(), FILE_FORMAT,
                      source_config=json.dumps(asdict(self.source.config)),
                      projector_config=json.dumps(asdict(self.config)))

    @classmethod
    def load(cls, path: str | Path, map_location: str = "cpu") -> ProjectableGPT:
        meta, tensors = read_tensors(
            path, FILE_FORMAT,
            "pass a file written by ProjectableGPT.save (a plain model file loads with GPT.load)", map_location,
        )
        projector = config_from_metadata(meta, "projector_config", path, projector_config_from_dict)
        source = config_from_metadata(meta, "source_config", path, lambda c: GPTConfig(**c))
        model = cls(GPT(source), projector)
        load_state_strict(model, tensors, str(path))
        return model


def projector_config_from_dict(config: dict) -> ProjectorConfig:
    """The ProjectorConfig of a checkpoint's JSON metadata (scales come back as a list)."""
    return ProjectorConfig(**{**config, "scales": tuple(config["scales"])})


def load_state_strict(module: nn.Module, tensors: dict[str, torch.Tensor], source: str) -> None:
    """``load_state_dict`` that names every missing/unexpected key and every shape mismatch; legacy kind
    names (``source.dense.attn_w``, ``generators.1_2.proj_w1``...) load under today's names."""
    tensors = upgrade_legacy_names(module, tensors)
    expected = module.state_dict()
    missing, extra = sorted(set(expected) - set(tensors)), sorted(set(tensors) - set(expected))
    bad = [f"{k}: {tuple(tensors[k].shape)} vs {tuple(v.shape)}" for k, v in expected.items()
           if k in tensors and tensors[k].shape != v.shape]
    if missing or extra or bad:
        raise ValueError(
            f"{source} does not fit this model: missing {missing[:5]}, unexpected {extra[:5]}, "
            f"shape mismatches {bad[:5]}; load it with the configs it was saved with"
        )
    module.load_state_dict(tensors, strict=True)
