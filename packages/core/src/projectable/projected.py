"""A source GPT with task-conditioned projectors to smaller widths, trained jointly (Eq. 2, Sec. 3.3).

``ProjectableGPT`` holds the source M_1 and, per target scale s, a weight generator (by default the projection's
``DiagonalGenerator``, the MLPs producing p(t), q(t); ``ProjectorConfig.generator`` selects another of App. B,
see ``projectable.generators``) plus, by default, the small model's own embeddings, norms and head. A batch
may carry one task vector per sequence, so one forward evaluates many generated models at once, without a loop
over examples. ``generate(t, s)`` returns a standalone ``GPT`` whose logits equal the projected forward for t.

Generators that read no source (``low_rank``, ``linear``: ``reads_source`` is False) keep only the source's
config, which sets the shapes: there is no source module, no source parameters for an optimizer, no source
term in ``loss``, and no ``source.*`` tensors in saved files. Their base weights and own parts start from a
standalone GPT of the target width with ``load_base(scale, gpt)``.
"""

from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path
from typing import NamedTuple

import torch
import torch.nn as nn
from einops import rearrange

from projectable.generators import ProjectionGenerator, generator_class
from projectable.generators.base import small_config
from projectable.gpt import (
    GPT,
    DenseStack,
    GPTConfig,
    GPTParts,
    embed,
    sequence_nll_from_logits,
    transformer_forward,
    upgrade_legacy_names,
)
from projectable.io import config_from_metadata, read_tensors, write_tensors
from projectable.projector import ProjectorConfig, scale_key, scale_name
from projectable.tokenizer import ImageTokenizer, tokenizer_metadata
from projectable.validation import as_scale, check_scale, check_task, check_tokens

FILE_FORMAT = "projectable.projectable_gpt"  # the metadata format tag of ProjectableGPT.save files


# The small model's parameters besides the dense operators (the start vector is handled on its own).
PART_NAMES = ("wte", "wpe", "ln1_w", "ln1_b", "ln2_w", "ln2_b", "lnf_w", "lnf_b", "head")


class CoTrainLoss(NamedTuple):
    """Eq. 2: ``total = sum_s projected[s] + w_src * source`` (each a mean nats/token). ``source`` is None
    for a generator that reads no source: then ``total = sum_s projected[s]``."""

    total: torch.Tensor
    source: torch.Tensor | None
    projected: dict[float, torch.Tensor]


# How the k source units standing for one small unit lie along a width axis (``WeightGenerator.unit_layout``):
# "interleaved" c <-> c*k .. c*k+k-1 (the projection's groups), "blocked" c <-> a*C/k + c (the blocks').
_GROUPS = {"interleaved": "... (c a) -> ... c a", "blocked": "... (a c) -> ... c a"}


def _group_mean(x: torch.Tensor, k: int, layout: str = "interleaved") -> torch.Tensor:
    """Average the groups of k along the last (width) axis: (..., C) -> (..., C/k)."""
    return rearrange(x, _GROUPS[layout], a=k).mean(-1)


def _group_sum(x: torch.Tensor, k: int, layout: str = "interleaved") -> torch.Tensor:
    return rearrange(x, _GROUPS[layout], a=k).sum(-1)


class DerivedParts:
    """The small model's embeddings, norms and head as group averages of the live source's (``small_parts=
    'derived'``). Embeddings and norm parameters average the k source units of a group; the head sums them,
    matching q = 1 on a residual stream whose units repeat k times. Gradients flow into the source. ``layout``
    says which source units form a group (the generator's ``unit_layout``)."""

    def __init__(self, source: GPTParts, config: GPTConfig, k: int, layout: str = "interleaved"):
        self.config, self.training = config, source.training
        self.wte, self.wpe = _group_mean(source.wte, k, layout), _group_mean(source.wpe, k, layout)
        if source.config.conditional:  # the generated model is unconditional: start from the map's bias
            self._start = _group_mean(source.task_proj.bias, k, layout)
        else:
            self._start = _group_mean(source.start, k, layout)
        for name in ("ln1_w", "ln1_b", "ln2_w", "ln2_b", "lnf_w", "lnf_b"):
            setattr(self, name, _group_mean(getattr(source, name), k, layout))
        self.head = _group_sum(source.head, k, layout)

    def start_embedding(self, batch: int, task: torch.Tensor | None) -> torch.Tensor:
        return self._start.expand(batch, 1, -1)


@torch.no_grad()
def copy_parts(target: GPTParts, parts: GPTParts | DerivedParts) -> None:
    """Copy embeddings, start vector, norms and head of ``parts`` into ``target`` (same width)."""
    for name in PART_NAMES:
        getattr(target, name).copy_(getattr(parts, name))
    target.start.copy_(parts.start if isinstance(parts, GPTParts) else parts._start)


class ProjectableGPT(nn.Module):
    """Source M_1 + projectors P_s for every s in ``config.scales`` (one scale: P_s; several: P~).

    ``source`` is the source GPT, or only its config: a generator that reads the source gets a fresh
    ``GPT(source)`` from a config; one that reads none (``low_rank``, ``linear``) keeps the config alone, for
    shapes, also when given a GPT.
    """

    def __init__(self, source: GPT | GPTConfig, config: ProjectorConfig):
        super().__init__()
        if not isinstance(source, (GPT, GPTConfig)):
            raise ValueError(f"source must be a GPT or a GPTConfig, got {type(source).__name__}")
        source_config = source if isinstance(source, GPTConfig) else source.config
        generator = generator_class(config.generator)
        for scale in config.scales:  # every scale and size knob is checked before anything is built
            generator.check(source_config, config, scale)
        if config.reads_source and source_config.conditional and source_config.task_dim != config.task_dim:
            raise ValueError(
                f"the source is conditional on task_dim={source_config.task_dim} but the projector expects "
                f"task_dim={config.task_dim}; build both for the same task vectors"
            )
        if config.reads_source and source_config.task_at_every_position:
            raise ValueError(
                "the source reads t at every position (task_input='every'), which the generated models' parts "
                "(derived from a start embedding) cannot carry; project from a source with task_input='first' or "
                "an unconditional one"
            )
        self.source_config = source_config
        if config.reads_source:
            self.source = source if isinstance(source, GPT) else GPT(source)
        elif isinstance(source, GPT):
            raise ValueError(
                f"generator={config.generator!r} reads no source, so the weights of the GPT passed here would be "
                "dropped; pass its config (model.config) and start the base from a trained model of the target "
                "width with load_base(scale, gpt)"
            )
        else:
            self.source = None  # only the config: no source parameters, compute or optimizer state
        self.config = config
        self.generators = nn.ModuleDict()
        self.small_parts = nn.ModuleDict()
        for scale in config.scales:
            k = check_scale(scale, source_config)
            self.generators[scale_key(scale)] = generator(source_config, config, scale)
            if config.small_parts == "own":
                parts = GPTParts(self.small_config(scale))
                if config.reads_source:  # start as the group average of the source's parts
                    copy_parts(parts, DerivedParts(self.source.parts, parts.config, k, generator.unit_layout))
                self.small_parts[scale_key(scale)] = parts

    # ---------------------------------------------------------------------------------------------

    @property
    def reads_source(self) -> bool:
        """Whether the generator reads the source (then it is co-trained and ``loss`` has a source term)."""
        return self.config.reads_source

    def small_config(self, scale: float) -> GPTConfig:
        """Config of the generated model: the source's at width scale*d, unconditional (t acts via the generator)."""
        return small_config(self.source_config, scale)

    def check_scale(self, scale: float) -> int:
        """Group size k of ``scale``; a scale without a projector here is an error naming the available ones."""
        if scale_key(scale) not in self.generators:
            available = ", ".join(scale_name(s) for s in self.config.scales)
            raise ValueError(
                f"no projector for scale={as_scale(scale):g}; the available scales are {available} "
                f"(this model was built with scales={self.config.scales})"
            )
        return check_scale(scale, self.source_config)

    @property
    def _reference(self) -> torch.Tensor:
        """A parameter whose dtype and device task vectors are converted to."""
        if self.source is not None:
            return self.source.parts.wte
        return next(self.generators.parameters())

    @property
    def _source_dense(self) -> DenseStack | None:
        return None if self.source is None else self.source.dense

    def parts(self, scale: float) -> GPTParts | DerivedParts:
        k = self.check_scale(scale)
        if self.config.small_parts == "own":
            return self.small_parts[scale_key(scale)]
        layout = self.generators[scale_key(scale)].unit_layout
        return DerivedParts(self.source.parts, self.small_config(scale), k, layout)

    def diagonals(self, tasks: torch.Tensor, scale: float):
        """p(t), q(t) for every dense operator; tasks (B, t) or (t,) -> (B or 1, L, ...). Projection only."""
        self.check_scale(scale)
        if not isinstance(self.generators[scale_key(scale)], ProjectionGenerator):
            raise ValueError(
                f"diagonals p(t), q(t) belong to the projection; this model's generator is {self.config.generator!r} "
                "(use projected_weights for the generated weights)"
            )
        return self.generators[scale_key(scale)](self._tasks(tasks))

    def _tasks(self, tasks: torch.Tensor, batch: int | None = None) -> torch.Tensor:
        """Checked task vectors as (B or 1, t) in the model's dtype and device."""
        tasks = check_task(tasks, self.config.task_dim, batch=batch, like=self._reference)
        return tasks.unsqueeze(0) if tasks.dim() == 1 else tasks

    def projected_weights(self, tasks: torch.Tensor, scale: float) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
        """Per-task small dense weights: kind -> (W_s (B, L, o, i), b_s (B, L, o))."""
        self.check_scale(scale)
        return self.generators[scale_key(scale)].weights(self._tasks(tasks), self._source_dense)

    def projected_logits(self, tokens: torch.Tensor, tasks: torch.Tensor, scale: float,
                         route: str | None = None) -> torch.Tensor:
        """Logits of P_s(t) on ``tokens`` (B, T); ``tasks`` (B, t) one per sequence, or (t,) for all."""
        self.check_scale(scale)
        check_tokens(tokens, self.source_config)
        tasks = self._tasks(tasks, batch=tokens.shape[0])
        B, T = tokens.shape
        generator = self.generators[scale_key(scale)]
        linears = generator.linears(tasks, self._source_dense, route or self.config.route, B, T)
        parts = self.parts(scale)
        return transformer_forward(parts, linears, embed(parts, tokens, None))

    def sequence_nll(self, tokens: torch.Tensor, tasks: torch.Tensor, scale: float) -> torch.Tensor:
        """(B,) mean nats per token of each sequence under its own generated model P_s(t)."""
        return sequence_nll_from_logits(self.projected_logits(tokens, tasks, scale), tokens)

    def loss(self, tokens: torch.Tensor, tasks: torch.Tensor) -> CoTrainLoss:
        """Eq. 2 on one batch: projected losses of every scale + w_src * loss of the source (no source term
        when the generator reads no source)."""
        if not self.reads_source:
            projected = {s: self.sequence_nll(tokens, tasks, s).mean() for s in self.config.scales}
            return CoTrainLoss(sum(projected.values()), None, projected)
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
        ref = self._reference
        # Built on the meta device and given uninitialised storage: every tensor is overwritten below, and a
        # random initialisation of the small GPT would cost most of a generation at the paper size.
        with torch.device("meta"):
            small = GPT(self.small_config(scale))
        small = small.to_empty(device=ref.device).to(dtype=ref.dtype)
        copy_parts(small.parts, self.parts(scale))
        for kind, (w, b) in weights.items():
            small_w, small_b = small.dense.weights(kind)
            small_w.copy_(w[0])
            small_b.copy_(b[0])
        return small.eval()

    @torch.no_grad()
    def load_base(self, scale: float, gpt: GPT) -> None:
        """Start a source-free generator at ``scale`` from a standalone unconditional GPT of the target width
        (e.g. stage 1's trained M_s): its dense weights become the base, its embeddings, norms and head the
        small model's own parts. The generator's t-dependent parameters are left as they are."""
        self.check_scale(scale)
        if self.reads_source:
            raise ValueError(
                f"load_base is for generators that read no source; the {self.config.generator!r} generator "
                "derives its weights from the source, so load the source instead (ProjectableGPT(source, config))"
            )
        expected = self.small_config(scale)
        if not isinstance(gpt, GPT):
            raise ValueError(f"load_base takes a GPT of width {expected.n_embd}, got {type(gpt).__name__}")
        if gpt.config.conditional:
            raise ValueError(
                f"load_base takes an unconditional GPT (the generated model's start is a learned vector), got one "
                f"conditional on task_dim={gpt.config.task_dim}"
            )
        fields = ("vocab_size", "block_size", "n_layer", "n_head", "n_embd", "mlp_ratio")
        theirs, ours = ({f: getattr(c, f) for f in fields} for c in (gpt.config, expected))
        if theirs != ours:
            raise ValueError(
                f"load_base at scale {scale_name(scale)} needs a GPT with {ours}, got {theirs}; pass the M_s of "
                "this source's width scale*d"
            )
        self.generators[scale_key(scale)].load_base(gpt.dense)
        copy_parts(self.small_parts[scale_key(scale)], gpt.parts)

    def num_projector_params(self, scale: float) -> int:
        """Projector size as the paper counts it: the generator (the diagonal MLPs for the projection; with its
        base weights for low_rank and linear) plus the small model's own parameters."""
        self.check_scale(scale)
        key = scale_key(scale)
        count = sum(p.numel() for p in self.generators[key].parameters())
        if self.config.small_parts == "own":
            count += sum(p.numel() for p in self.small_parts[key].parameters())
        return count

    # ---------------------------------------------------------------------------------------------

    def save(self, path: str | Path, tokenizer: ImageTokenizer | None = None) -> None:
        """Everything (source, if read, and projectors) in one safetensors file with both configs as metadata;
        ``tokenizer``: the palette or VQ-VAE the tokens came from (``projectable generate`` passes it on)."""
        write_tensors(path, self.state_dict(), FILE_FORMAT,
                      source_config=self.source_config.to_json(),
                      projector_config=json.dumps(asdict(self.config)), **tokenizer_metadata(tokenizer, path))

    @classmethod
    def load(cls, path: str | Path, map_location: str = "cpu") -> ProjectableGPT:
        meta, tensors = read_tensors(
            path, FILE_FORMAT,
            "pass a file written by ProjectableGPT.save (a plain model file loads with GPT.load)", map_location,
        )
        projector = config_from_metadata(meta, "projector_config", path, projector_config_from_dict)
        source = config_from_metadata(meta, "source_config", path, lambda c: GPTConfig(**c))
        model = cls(source, projector)
        load_state_strict(model, tensors, str(path))
        return model


def projector_config_from_dict(config: dict) -> ProjectorConfig:
    """The ProjectorConfig of a checkpoint's JSON metadata (scales come back as a list). A config saved before
    generators could be chosen has no ``generator`` key and is the projection."""
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
