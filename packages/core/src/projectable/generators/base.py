"""The weight-generator interface (App. B): task vectors -> the small model's dense weights and biases.

A generator serves one target scale s. Given a batch of task vectors (B, t), one per sequence, it produces
the dense weights and biases of every operator kind of every layer for each task at once, stacked as the
``DenseStack`` stores them: W (B, L, o, i), b (B, L, o). There is no loop over examples: every generator maps
all tasks (and all layers of a kind) with batched tensor ops.

Two ways to apply them, both exact (``route``):

* ``materialize``: build the per-task weights, then one batched matmul per operator (``StackedLinears``);
* ``expand``: never build per-task weights; each generator applies its structure to the activations instead
  (the projection expands inputs by Q through W_1, the blocks feed per-block weighted inputs through the
  source's blocks, the low-rank and linear generators add a factored delta to their base operator).

``auto`` picks the one with fewer multiply-adds unless per-task weights would exceed a memory limit.

Generators that read the source (``reads_source``: projection, blocks) get its ``DenseStack`` and are trained
with it (Eq. 2); the others (low_rank, linear) hold base weights of their own and get ``None``.

Letter legend: B tasks (1 when one task serves the whole batch), T time, L layers, o/i target out/in,
r hidden width of the MLPs, m rank of a delta, t task dimension.
"""

from __future__ import annotations

import math
from dataclasses import replace
from typing import ClassVar, NamedTuple

import torch
import torch.nn as nn
import torch.nn.functional as F

from projectable.gpt import DENSE_KINDS, DenseStack, GPTConfig, Linear, StackedLinears, layer_views
from projectable.projector import ProjectorConfig, scale_name
from projectable.validation import check_scale

# Weights and biases of every dense kind: kind -> (W (B, L, o, i), b (B, L, o)).
DenseWeights = dict[str, tuple[torch.Tensor, torch.Tensor]]
# Per-task weights above this many bytes make ``auto`` take the expand route.
MEMORY_LIMIT_BYTES = 2e9
# The ProjectorConfig fields a generator can be sized by: the MLPs' hidden width, or a delta rank of its own.
SIZE_KNOBS = ("rank", "generator_rank")


class OwnParams(NamedTuple):
    """A generator's trained parameters at one scale, the source not counted."""

    task: int  # the t-dependent machinery: MLPs, coefficient maps, subspace bases
    base: int  # its own base dense weights and biases (low_rank, linear); 0 for generators reading the source


class WeightGenerator(nn.Module):
    """t -> the small model's dense weights at one scale. Subclasses set the class attributes below and
    implement ``weights``, ``expanded``, ``cost``, ``count_params`` and ``task_map_macs``."""

    name: ClassVar[str]  # the ``ProjectorConfig.generator`` value that selects it
    reads_source: ClassVar[bool]  # whether it reads the source's dense weights (then the source is co-trained)
    size_knob: ClassVar[str]  # the ProjectorConfig field that sizes it: "rank" or "generator_rank" (SIZE_KNOBS)
    has_mlp: ClassVar[bool] = True  # whether ``ProjectorConfig.mlp`` means anything to it (its t-map is an MLP)
    # How reports name and draw it (experiments/reporting/generators.py): the prefix of its cells in an
    # experiment's config (prefix + 1/s: "LR4" is low_rank at s = 1/4), its label and matplotlib colour in tables
    # and figures, and one line on what it computes.
    prefix: ClassVar[str]
    label: ClassVar[str]
    colour: ClassVar[str]
    what: ClassVar[str]
    # How a small model's residual unit c stands for source units when the small parts are derived from the
    # source: "interleaved" c <-> c*k .. c*k+k-1 (the projection's groups), "blocked" c <-> a*C/k + c.
    unit_layout: ClassVar[str] = "interleaved"

    @classmethod
    def check(cls, source: GPTConfig, config: ProjectorConfig, scale: float) -> int:
        """Validate ``scale`` (and the size knob) for ``source`` before any work; return the group size k."""
        return check_scale(scale, source)

    @classmethod
    def count_params(cls, source: GPTConfig, config: ProjectorConfig, scale: float) -> OwnParams:
        """The parameter count of a generator built with these arguments, without building it."""
        raise NotImplementedError

    @classmethod
    def task_map_macs(cls, source: GPTConfig, config: ProjectorConfig, scale: float) -> int:
        """Multiply-adds of its t-map for one task: what turns t into its coefficients (the MLPs' hidden layers
        and output heads, a coefficient map), before any weight is built or applied (``benchmarks/generators.py``
        adds the cost of building or applying the weights)."""
        raise NotImplementedError(f"generator {cls.name!r} declares no task_map_macs: give its class one (the "
                                  "multiply-adds of its t-map for one task)")

    def weights(self, tasks: torch.Tensor, source: DenseStack | None) -> DenseWeights:
        """tasks (B, t) -> kind -> (W (B, L, o, i), b (B, L, o)) for every dense kind."""
        raise NotImplementedError

    def expanded(self, tasks: torch.Tensor, source: DenseStack | None) -> Linear:
        """The expand route: a ``Linear`` applying the generated operators without building W_s per task."""
        raise NotImplementedError

    def cost(self, tasks: int, batch: int, seq: int) -> tuple[float, float, float]:
        """(materialize multiply-adds, expand multiply-adds, bytes of per-task weights) of one forward."""
        raise NotImplementedError

    def route(self, route: str, tasks: int, batch: int, seq: int, device: str = "cpu", training: bool = False) -> str:
        """``auto``: the route with fewer multiply-adds, unless per-task weights would exceed the memory limit
        (the projection's cost model also weighs bytes, by ``device`` and whether gradients are taken)."""
        if route != "auto":
            return route
        materialize, expand, memory = self.cost(tasks, batch, seq)
        if memory > MEMORY_LIMIT_BYTES:
            return "expand"
        return "materialize" if materialize <= expand else "expand"

    def linears(self, tasks: torch.Tensor, source: DenseStack | None, route: str, batch: int, seq: int) -> Linear:
        """The ``Linear`` of the small models for ``tasks`` (B or 1, t) on ``batch`` sequences of ``seq`` tokens."""
        if self.route(route, tasks.shape[0], batch, seq, tasks.device.type, torch.is_grad_enabled()) == "expand":
            return self.expanded(tasks, source)
        weights = self.weights(tasks, source)
        if tasks.shape[0] == 1:  # one task for the whole batch: plain shared weights
            weights = {kind: (w[0], b[0]) for kind, (w, b) in weights.items()}
        return StackedLinears(weights)

    @torch.no_grad()
    def load_base(self, dense: DenseStack) -> None:
        """Copy a standalone small model's dense weights into the base (source-free generators only)."""
        raise ValueError(
            f"the {self.name!r} generator reads the source's weights and has no base weights of its own; load "
            "the source instead (ProjectableGPT(source, config))"
        )


class SourceFreeGenerator(WeightGenerator):
    """A generator that reads no source: base dense weights of the target width, trained (and started from a
    standalone M_s by ``load_base``), plus a t-dependent delta sized by ``generator_rank``."""

    reads_source = False
    size_knob = "generator_rank"

    def _init_base(self, source: GPTConfig, config: ProjectorConfig, scale: float) -> GPTConfig:
        """Validate, build the base of the small model's width; return the small model's config."""
        self.check(source, config, scale)
        small = small_config(source, scale)
        self.shapes, self.n_layer, self.rank = small.dense_shapes(), small.n_layer, config.generator_rank
        self.base = DenseStack(small)
        return small

    @classmethod
    def check(cls, source: GPTConfig, config: ProjectorConfig, scale: float) -> int:
        k = check_scale(scale, source)
        check_rank(cls.name, source, config, scale)
        return k

    @staticmethod
    def base_params(shapes: dict[str, tuple[int, int]], n_layer: int) -> int:
        """The base's dense weights and biases."""
        return sum(n_layer * (o * i + o) for o, i in shapes.values())

    @torch.no_grad()
    def load_base(self, dense: DenseStack) -> None:
        copy_dense(self.base, dense)


class TaskMLPGenerator(WeightGenerator):
    """A generator whose t-dependence starts with the paper's hidden layer, t -> Linear(r) -> swish, one per
    dense kind and layer (``mlp="per_operator"``, parameters ``{kind}_w1`` (L, r, t), ``{kind}_b1`` (L, r)) or
    one shared by all (``mlp="shared"``, ``w1`` (r, t), ``b1`` (r,)), as in ``DiagonalGenerator``."""

    def _init_hidden(self, n_layer: int, config: ProjectorConfig) -> None:
        self.shared = config.mlp == "shared"
        L, r, t = n_layer, config.rank, config.task_dim
        if self.shared:
            self.w1 = nn.Parameter(torch.randn(r, t) / math.sqrt(t))
            self.b1 = nn.Parameter(torch.zeros(r))
            return
        for kind in DENSE_KINDS:
            setattr(self, f"{kind}_w1", nn.Parameter(torch.randn(L, r, t) / math.sqrt(t)))
            setattr(self, f"{kind}_b1", nn.Parameter(torch.zeros(L, r)))

    def hidden(self, tasks: torch.Tensor, n_layer: int) -> dict[str, torch.Tensor]:
        """tasks (B, t) -> kind -> swish hidden activations (B, L, r)."""
        if self.shared:
            h = F.silu(F.linear(tasks, self.w1, self.b1))  # (B, r)
            return dict.fromkeys(DENSE_KINDS, h.unsqueeze(1).expand(-1, n_layer, -1))
        return {kind: F.silu(torch.einsum("bt,lrt->blr", tasks, getattr(self, f"{kind}_w1"))
                             + getattr(self, f"{kind}_b1")) for kind in DENSE_KINDS}


def hidden_params(n_layer: int, config: ProjectorConfig) -> int:
    """Parameters of the hidden layers t -> Linear(r) -> swish: per kind and layer, or one shared."""
    per_layer = config.rank * config.task_dim + config.rank
    return per_layer if config.mlp == "shared" else len(DENSE_KINDS) * n_layer * per_layer


def hidden_macs(n_layer: int, config: ProjectorConfig) -> int:
    """Multiply-adds of the hidden layers t -> Linear(r) for one task: per kind and layer, or one shared."""
    per_layer = config.rank * config.task_dim
    return per_layer if config.mlp == "shared" else len(DENSE_KINDS) * n_layer * per_layer


class FactoredLinears:
    """The expand route of the source-free generators: y = W x + b + left (core (right [x; 1])).

    ``left`` (B or 1, L, o, m), ``core`` (B or 1, L, m, m) or None (the identity), ``right`` (B or 1, L, m,
    i + 1), whose last column multiplies the constant 1 and so carries the bias delta. Exact, because
    (W + left core right_W) x + (b + left core right_b) is the materialised operator; it costs m (o + i + 1)
    (+ m^2) multiply-adds per token instead of o i per task.
    """

    def __init__(self, base: DenseStack, left: dict, right: dict, core: dict | None = None):
        # per-layer views once (gpt.layer_views): base weight, bias, left, right and core of every layer
        self.layers = {kind: (*(layer_views(t) for t in base.weights(kind)), layer_views(left[kind], 1),
                              layer_views(right[kind], 1), layer_views(core[kind], 1) if core is not None else None)
                       for kind in left}

    def __call__(self, kind: str, layer: int, x: torch.Tensor) -> torch.Tensor:
        weights, biases, lefts, rights, cores = self.layers[kind]
        right = rights[layer]  # (B, m, i + 1)
        z = torch.matmul(x, right[..., :-1].transpose(1, 2)) + right[..., -1].unsqueeze(1)  # (B, T, m)
        if cores is not None:
            z = torch.matmul(z, cores[layer].transpose(1, 2))  # (B, T, m)
        return F.linear(x, weights[layer], biases[layer]) + torch.matmul(z, lefts[layer].transpose(1, 2))


def small_config(source: GPTConfig, scale: float) -> GPTConfig:
    """The generated model's config: the source's at width scale*d, unconditional (t acts via the generator)."""
    return replace(source.scaled(scale), task_dim=0, task_input="first")


def max_rank(source: GPTConfig, scale: float) -> int:
    """The largest useful delta rank at ``scale``: the smaller side of the small model's smallest operator."""
    return min(min(shape) for shape in small_config(source, scale).dense_shapes().values())


def check_rank(generator: str, source: GPTConfig, config: ProjectorConfig, scale: float) -> None:
    """``generator_rank`` must lie in 1..max_rank: a larger delta rank exceeds what the small weights hold."""
    limit = max_rank(source, scale)
    if not 1 <= config.generator_rank <= limit:
        raise ValueError(
            f"generator_rank={config.generator_rank} does not fit the {generator!r} generator at scale "
            f"{scale_name(scale)}: the small model's smallest dense weight has rank {limit} there; choose "
            f"generator_rank in 1..{limit}"
        )


def dense_macs(shapes: dict[str, tuple[int, int]], n_layer: int) -> int:
    """Multiply-adds of one token through the dense operators ``shapes`` of every layer (= their weights)."""
    return sum(o * i for o, i in shapes.values()) * n_layer


def copy_dense(target: DenseStack, source: DenseStack) -> None:
    """Copy every dense kind's stacked weight and bias; every shape is checked before anything is copied."""
    pairs = [pair for kind in DENSE_KINDS for pair in zip(target.weights(kind), source.weights(kind), strict=True)]
    for mine, theirs in pairs:
        if mine.shape != theirs.shape:
            raise ValueError(
                f"a dense weight has shape {tuple(theirs.shape)}, the base expects {tuple(mine.shape)}; load a "
                "model of the target width"
            )
    for mine, theirs in pairs:
        mine.copy_(theirs)
