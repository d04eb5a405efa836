"""The projection (Sec. 2.2) as a ``WeightGenerator``: W_s = P(t) W_1 Q(t), b_s = P(t) b_1.

A thin adapter: the diagonal MLPs are ``projector.DiagonalGenerator`` (same parameters, same state-dict names,
``generators.1_2.qkv_w1`` ...), the weights come from ``project_weight`` / ``project_bias``, the expand route is
``ExpandedLinears`` and ``auto`` is ``choose_route``; all live in ``projector.py`` and are called unchanged.

Parameter count at L layers, per source kind (O, I): the hidden layers (``4 L (r t + r)``, or ``r t + r``
shared) and ``L (O + I)(r + 1)`` for the output layers producing p and q.
"""

from __future__ import annotations

import torch

from projectable.generators.base import DenseWeights, OwnParams, WeightGenerator, hidden_macs, hidden_params
from projectable.gpt import DENSE_KINDS, DenseStack, GPTConfig, Linear
from projectable.projector import (
    DiagonalGenerator,
    ExpandedLinears,
    ProjectorConfig,
    choose_route,
    project_bias,
    project_weight,
)
from projectable.validation import check_scale


class ProjectionGenerator(DiagonalGenerator, WeightGenerator):
    """The MLPs t -> (p, q) of every dense operator of one target scale, projecting the source's weights."""

    name = "projection"
    reads_source = True
    size_knob = "rank"
    unit_layout = "interleaved"
    prefix, label, colour = "P", "P_s (projection)", "tab:orange"
    what = "W_s = P(t) W_1 Q(t) (Sec. 2.2); reads the source and co-trains it (Eq. 2)"

    def __init__(self, source: GPTConfig, config: ProjectorConfig, scale: float):
        super().__init__(source, config, scale)
        self.k, self.source_config = check_scale(scale, source), source

    @classmethod
    def task_map_macs(cls, source: GPTConfig, config: ProjectorConfig, scale: float) -> int:
        """The hidden layers, then the heads to p (o) and q (i) of every operator and layer."""
        L, r = source.n_layer, config.rank
        return hidden_macs(L, config) + sum(L * (o + i) * r for o, i in source.dense_shapes().values())

    @classmethod
    def count_params(cls, source: GPTConfig, config: ProjectorConfig, scale: float) -> OwnParams:
        cls.check(source, config, scale)
        hidden = hidden_params(source.n_layer, config)
        outputs = sum(source.n_layer * (o + i) * (config.rank + 1) for o, i in source.dense_shapes().values())
        return OwnParams(hidden + outputs, 0)

    def weights(self, tasks: torch.Tensor, source: DenseStack | None) -> DenseWeights:
        diag = self(tasks)
        out = {}
        for kind in DENSE_KINDS:
            w, b = source.weights(kind)
            out[kind] = (project_weight(w, diag.p[kind], diag.q[kind], self.k), project_bias(b, diag.p[kind], self.k))
        return out

    def expanded(self, tasks: torch.Tensor, source: DenseStack | None) -> Linear:
        return ExpandedLinears({kind: source.weights(kind) for kind in DENSE_KINDS}, self(tasks), self.k)

    def route(self, route: str, tasks: int, batch: int, seq: int, device: str = "cpu", training: bool = False) -> str:
        return choose_route(route, self.source_config, self.k, tasks, batch, seq, device=device, training=training)
