"""The low-rank generator (App. B.1, Eq. 6): W_s(t) = W_s + L(t) R(t), a base model plus a rank-m delta.

The small model has base dense weights and biases of its own (a ``DenseStack`` of its width, trained jointly
with the generator, or loaded from a standalone M_s with ``ProjectableGPT.load_base``); it reads no source.
For every dense operator and layer, a shallow MLP of t, t -> Linear(r) -> swish (r = ``ProjectorConfig.rank``;
``mlp="shared"`` shares this hidden layer across operators), feeds two linear heads producing all components
of L(t) (o, m) and R(t) (m, i + 1), m = ``ProjectorConfig.generator_rank``.

Biases: R has one column more than the weight has inputs, the column that meets the constant 1 of an input
augmented as [x; 1]. The delta is thus a rank-m update of the augmented matrix [W | b]:
``W_s(t) = W_s + L R[:, :i]``, ``b_s(t) = b_s + L R[:, i]``.

Initialisation: L's output layer is zero (weights and biases), so a fresh generator is its base model for
every t (as LoRA starts its B at zero); R starts as random rows of unit norm, so that gradients reach L.

Parameter count at L layers, per kind of small shape (o, i): the hidden layers (``4 L (r t + r)``, or
``r t + r`` shared), ``L m (o + i + 1)(r + 1)`` for the heads of L and R, and the base ``L (o i + o)``.

Letter legend: B tasks, T time, L layers, o/i small out/in, m delta rank, r hidden width, t task dimension.
"""

from __future__ import annotations

import math

import torch
import torch.nn as nn
from einops import rearrange

from projectable.generators.base import (
    DenseWeights,
    FactoredLinears,
    OwnParams,
    SourceFreeGenerator,
    TaskMLPGenerator,
    dense_macs,
    hidden_macs,
    hidden_params,
    small_config,
)
from projectable.gpt import DENSE_KINDS, DenseStack, GPTConfig
from projectable.projector import ProjectorConfig


class LowRankGenerator(SourceFreeGenerator, TaskMLPGenerator):
    """Base dense weights of the small model plus the MLPs t -> (L(t), R(t)) of every dense operator."""

    name = "low_rank"
    prefix, label, colour = "LR", "low_rank", "tab:red"
    what = "its own base weights + L(t) R(t) (Eq. 6); reads no source, base from stage 1's M_s"

    def __init__(self, source: GPTConfig, config: ProjectorConfig, scale: float):
        super().__init__()
        small = self._init_base(source, config, scale)
        self._init_hidden(small.n_layer, config)
        L, r, m = small.n_layer, config.rank, config.generator_rank
        for kind, (out_dim, in_dim) in self.shapes.items():
            setattr(self, f"{kind}_left_w", nn.Parameter(torch.zeros(L, out_dim * m, r)))  # (L, o m, r)
            setattr(self, f"{kind}_left_b", nn.Parameter(torch.zeros(L, out_dim * m)))
            scale_in = 1.0 / math.sqrt(in_dim + 1)  # unit-norm rows of R; its t-dependence starts smaller
            setattr(self, f"{kind}_right_w",
                    nn.Parameter(torch.randn(L, m * (in_dim + 1), r) * scale_in / math.sqrt(r)))  # (L, m (i+1), r)
            setattr(self, f"{kind}_right_b", nn.Parameter(torch.randn(L, m * (in_dim + 1)) * scale_in))

    @classmethod
    def task_map_macs(cls, source: GPTConfig, config: ProjectorConfig, scale: float) -> int:
        """The hidden layers, then the heads to the factors L (o x m) and R (m x (i + 1)) of the small model."""
        shapes, L, m = small_config(source, scale).dense_shapes(), source.n_layer, config.generator_rank
        return hidden_macs(L, config) + sum(L * m * (o + i + 1) * config.rank for o, i in shapes.values())

    @classmethod
    def count_params(cls, source: GPTConfig, config: ProjectorConfig, scale: float) -> OwnParams:
        cls.check(source, config, scale)
        shapes, L = small_config(source, scale).dense_shapes(), source.n_layer
        m, r = config.generator_rank, config.rank
        task = hidden_params(L, config) + sum(L * m * (o + i + 1) * (r + 1) for o, i in shapes.values())
        return OwnParams(task, cls.base_params(shapes, L))

    def factors(self, tasks: torch.Tensor) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
        """tasks (B, t) -> (kind -> L (B, L, o, m), kind -> R (B, L, m, i + 1))."""
        hidden = self.hidden(tasks, self.n_layer)
        left, right = {}, {}
        for kind in DENSE_KINDS:
            h = hidden[kind]  # (B, L, r)
            lw, lb = getattr(self, f"{kind}_left_w"), getattr(self, f"{kind}_left_b")
            rw, rb = getattr(self, f"{kind}_right_w"), getattr(self, f"{kind}_right_b")
            left[kind] = rearrange(torch.einsum("blr,lxr->blx", h, lw) + lb, "b l (o m) -> b l o m", m=self.rank)
            right[kind] = rearrange(torch.einsum("blr,lxr->blx", h, rw) + rb, "b l (m i) -> b l m i", m=self.rank)
        return left, right

    def weights(self, tasks: torch.Tensor, source: DenseStack | None) -> DenseWeights:
        left, right = self.factors(tasks)
        out = {}
        for kind in DENSE_KINDS:
            w, b = self.base.weights(kind)
            delta = torch.matmul(left[kind], right[kind])  # (B, L, o, i + 1): the update of [W | b]
            out[kind] = (w + delta[..., :-1], b + delta[..., -1])
        return out

    def expanded(self, tasks: torch.Tensor, source: DenseStack | None) -> FactoredLinears:
        left, right = self.factors(tasks)
        return FactoredLinears(self.base, left, right)

    def cost(self, tasks: int, batch: int, seq: int) -> tuple[float, float, float]:
        small = dense_macs(self.shapes, self.n_layer)
        delta = sum(o + i + 1 for o, i in self.shapes.values()) * self.n_layer * self.rank  # per token
        return tasks * self.rank * small + batch * seq * small, batch * seq * (small + delta), 4.0 * tasks * small

