"""The linear generator (App. B.1, Eq. 4): theta(t) = theta(0) + S t, with S restricted to a subspace.

The small model has base dense weights and biases of its own (theta(0): a ``DenseStack`` of its width, trained
jointly, or loaded from a standalone M_s with ``ProjectableGPT.load_base``); it reads no source. A full S holds
dim theta x dim t numbers, far more than the model. Here every operator and layer restricts its slice of S to
the m^2-dimensional subspace of matrices U X V^T, with learned bases U (o, m) and V (i + 1, m),
m = ``ProjectorConfig.generator_rank``:

    delta [W | b](t) = U C(t) V^T,    C(t) = reshape(A t, (m, m)),    A (m^2, t).

delta is exactly linear in t, as Eq. 4 asks: S_tau = U C_tau V^T for the tau-th coordinate of t. The core is
a full m x m matrix, not a diagonal (U diag(A t) V^T would tie each direction u_j v_j^T to one linear function
of t): every pair (u_j, v_l) gets its own linear function of t, so S, seen as an (o (i + 1)) x t matrix, has
rank up to min(m^2, t) rather than min(m, t); from m = 5 on, S can use all 18 directions of a SynthMNIST t.
V has one row more than the weight has inputs: the row that meets the constant 1 of [x; 1], which gives the
bias its delta, ``b(t) = b + U C(t) V[i]^T``, in the same subspace.

Initialisation: A = 0, so a fresh generator is its base model for every t; U and V start with random columns of
unit norm, so that gradients reach A.

Parameter count at L layers, per kind of small shape (o, i): ``L (m (o + i + 1) + m^2 t)`` for U, V, A, and
the base ``L (o i + o)``. ``rank`` (an MLP width) is unused: the generator has no MLP.

Letter legend: B tasks, T time, L layers, o/i small out/in, m (and n, the core's second axis) subspace rank,
t task dimension.
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
    dense_macs,
    small_config,
)
from projectable.gpt import DENSE_KINDS, DenseStack, GPTConfig
from projectable.projector import ProjectorConfig


class LinearGenerator(SourceFreeGenerator):
    """Base dense weights of the small model plus, per dense operator, the subspace map t -> U C(t) V^T."""

    name = "linear"
    has_mlp = False
    prefix, label, colour = "Lin", "linear", "tab:purple"
    what = "its own base weights + U C(t) V^T with C linear in t (Eq. 4); reads no source, base from M_s"

    def __init__(self, source: GPTConfig, config: ProjectorConfig, scale: float):
        super().__init__()
        small = self._init_base(source, config, scale)
        L, m, t = small.n_layer, config.generator_rank, config.task_dim
        for kind, (out_dim, in_dim) in self.shapes.items():
            setattr(self, f"{kind}_u", nn.Parameter(torch.randn(L, out_dim, m) / math.sqrt(out_dim)))
            setattr(self, f"{kind}_v", nn.Parameter(torch.randn(L, in_dim + 1, m) / math.sqrt(in_dim + 1)))
            setattr(self, f"{kind}_a", nn.Parameter(torch.zeros(L, m * m, t)))  # S = 0: the base model

    @classmethod
    def task_map_macs(cls, source: GPTConfig, config: ProjectorConfig, scale: float) -> int:
        """The coefficient map C(t) = A t (m x m from t) of every operator and layer."""
        shapes, L, m = small_config(source, scale).dense_shapes(), source.n_layer, config.generator_rank
        return sum(L * m * m * config.task_dim for _ in shapes)

    @classmethod
    def count_params(cls, source: GPTConfig, config: ProjectorConfig, scale: float) -> OwnParams:
        cls.check(source, config, scale)
        shapes, L = small_config(source, scale).dense_shapes(), source.n_layer
        m, t = config.generator_rank, config.task_dim
        task = sum(L * (m * (o + i + 1) + m * m * t) for o, i in shapes.values())
        return OwnParams(task, cls.base_params(shapes, L))

    def cores(self, tasks: torch.Tensor) -> dict[str, torch.Tensor]:
        """tasks (B, t) -> kind -> C(t) (B, L, m, m), linear in t."""
        return {kind: rearrange(torch.einsum("bt,lxt->blx", tasks, getattr(self, f"{kind}_a")),
                                "b l (m n) -> b l m n", m=self.rank) for kind in DENSE_KINDS}

    def weights(self, tasks: torch.Tensor, source: DenseStack | None) -> DenseWeights:
        out = {}
        for kind, core in self.cores(tasks).items():
            w, b = self.base.weights(kind)
            u, v = getattr(self, f"{kind}_u"), getattr(self, f"{kind}_v")  # (L, o, m), (L, i + 1, m)
            delta = torch.matmul(torch.matmul(u, core), v.transpose(1, 2))  # (B, L, o, i + 1): U C V^T
            out[kind] = (w + delta[..., :-1], b + delta[..., -1])
        return out

    def expanded(self, tasks: torch.Tensor, source: DenseStack | None) -> FactoredLinears:
        left = {kind: getattr(self, f"{kind}_u").unsqueeze(0) for kind in DENSE_KINDS}  # (1, L, o, m)
        right = {kind: getattr(self, f"{kind}_v").transpose(1, 2).unsqueeze(0) for kind in DENSE_KINDS}
        return FactoredLinears(self.base, left, right, self.cores(tasks))

    def cost(self, tasks: int, batch: int, seq: int) -> tuple[float, float, float]:
        small, m = dense_macs(self.shapes, self.n_layer), self.rank
        delta = sum(o * m * (m + i + 1) for o, i in self.shapes.values()) * self.n_layer  # per task: (U C) V^T
        per_token = sum(m * (o + i + 1) + m * m for o, i in self.shapes.values()) * self.n_layer
        return tasks * delta + batch * seq * small, batch * seq * (small + per_token), 4.0 * tasks * small
