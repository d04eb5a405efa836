"""The modular generator (App. B.2, "Connection to Modular Networks"): W_s = sum_{a,c} r_ac(t) W_1[block a, c].

With k = 1/s, every dense weight of the source is cut into k x k blocks of size (O/k, I/k) and the small
model's weight is a t-weighted sum of them, the blocks acting as modules. The k^2 coefficients r_ac(t) of
every operator and layer come from an MLP of t, t -> Linear(r) -> swish -> Linear, one per dense kind and
layer (``mlp="per_operator"``; ``"shared"`` shares the hidden layer), r = ``ProjectorConfig.rank``.

How blocks are cut, so that every small unit is made of source units of the same role:

* **qkv** is three tiles (q, k and v, each d rows), each with its own k x k coefficients: a block of the
  small model's keys is made of the source's keys. Rows follow the heads: row block a of a tile is the a-th
  1/k slice of *every* head (source rows ``h*D + a*D/k + j``, D the source head size), placed at small row
  ``h*(D/k) + j``. The small model keeps the head count (``GPTConfig.scaled``), so small head h is built
  from source head h only: small key head h = sum_{a,c} r^key_ac (slice a of source key head h, columns of
  block c). (With ``min_head_size`` the small model has fewer, larger heads; each then spans the slices of
  several consecutive source heads, with the same tensor layout.)
* **attn_out** reads the concatenated heads, so its column block c is likewise the c-th slice of every head
  (source columns ``h*D + c*D/k + j`` -> small column ``h*(D/k) + j``), matching the small heads of v.
* Every other axis (the residual stream, the MLP hidden units) is cut into k contiguous blocks: block a is
  units ``a*n/k .. (a+1)*n/k - 1``.

k must divide the source's head size (``check_scale`` refuses other scales), since blocks are head slices.

Biases are mixed by coefficients of their own: b_s = sum_a rho_a(t) b_1[block a], rows cut as the weight's
(per tile for qkv), k more outputs of the same MLP per tile.

Initialisation: every r_ac = rho_a = 1/k, plus small t-dependent noise as in the projection: W_s averages the
k row blocks and sums the k column blocks (biases average). With the small model's parts taken as block
averages of the source's (residual unit c of the small model stands for source units a*d/k + c, the
``"blocked"`` unit layout), a fresh generator is the source folded onto its blocks: the analogue of the
projection's group averages (p = 1/k, q = 1), a sensible small model rather than noise.

Parameter count at scale s = 1/k, L layers, per kind with n tiles (3 for qkv, else 1): the hidden layers
(``4 L (r t + r)``, or ``r t + r`` shared) plus ``L n (k^2 + k)(r + 1)`` output weights and biases.

Letter legend: B tasks, T time, L layers, n tiles, h heads, a row block, c column block, j unit inside a
head slice, o/i small out/in, r hidden width, t task dimension.
"""

from __future__ import annotations

import math

import torch
import torch.nn as nn
from einops import rearrange

from projectable.generators.base import (
    DenseWeights,
    OwnParams,
    TaskMLPGenerator,
    dense_macs,
    hidden_macs,
    hidden_params,
    small_config,
)
from projectable.gpt import DENSE_KINDS, DenseStack, GPTConfig, layer_views
from projectable.projector import ProjectorConfig

TILES = {"qkv": 3, "attn_out": 1, "fc": 1, "mlp_down": 1}  # qkv is the fused q, k, v
# One layer's weight (O, I) -> its blocks (n, a, c, o, i), and its bias (O,) -> (n, a, o), per kind.
WEIGHT_BLOCKS = {
    "qkv": "(n h a j) (c i) -> n a c (h j) i",
    "attn_out": "(a o) (h c j) -> 1 a c o (h j)",
    "fc": "(a o) (c i) -> 1 a c o i",
    "mlp_down": "(a o) (c i) -> 1 a c o i",
}
BIAS_BLOCKS = {"qkv": "(n h a j) -> n a (h j)", "attn_out": "(a o) -> 1 a o", "fc": "(a o) -> 1 a o",
               "mlp_down": "(a o) -> 1 a o"}


def _lengths(pattern: str, k: int, heads: int) -> dict[str, int]:
    """The axis lengths a pattern needs: k blocks per side, 3 tiles, the source's heads."""
    axes = set(pattern.split("->")[0].replace("(", " ").replace(")", " ").split())
    return {name: size for name, size in {"a": k, "c": k, "n": 3, "h": heads}.items() if name in axes}


def _stacked(pattern: str) -> str:
    """The same pattern over a leading layer axis."""
    left, right = pattern.split("->")
    return f"l {left.strip()} -> l {right.strip()}"


def weight_blocks(weight: torch.Tensor, kind: str, k: int, heads: int) -> torch.Tensor:
    """Blocks of one layer's weight (O, I) -> (n, a, c, o, i), or of stacked weights (L, O, I) -> (L, n, a, c, o, i)."""
    pattern = WEIGHT_BLOCKS[kind]
    pattern = _stacked(pattern) if weight.dim() == 3 else pattern
    return rearrange(weight, pattern, **_lengths(WEIGHT_BLOCKS[kind], k, heads))


def bias_blocks(bias: torch.Tensor, kind: str, k: int, heads: int) -> torch.Tensor:
    """Blocks of one layer's bias (O,) -> (n, a, o), or of stacked biases (L, O) -> (L, n, a, o)."""
    pattern = BIAS_BLOCKS[kind]
    pattern = _stacked(pattern) if bias.dim() == 2 else pattern
    return rearrange(bias, pattern, **_lengths(BIAS_BLOCKS[kind], k, heads))


class BlockGenerator(TaskMLPGenerator):
    """The MLPs t -> (r_ac, rho_a) of every dense operator of one target scale, mixing the source's blocks."""

    name = "blocks"
    reads_source = True
    size_knob = "rank"
    unit_layout = "blocked"
    prefix, label, colour = "B", "blocks", "tab:green"
    what = "a t-weighted sum of the source's k x k blocks (App. B.2); reads the source and co-trains it"

    def __init__(self, source: GPTConfig, config: ProjectorConfig, scale: float):
        super().__init__()
        k = self.check(source, config, scale)
        self.k, self.heads, self.n_layer = k, source.n_head, source.n_layer
        self.source_shapes = source.dense_shapes()
        self.small_shapes = small_config(source, scale).dense_shapes()
        self._init_hidden(source.n_layer, config)
        L, r = source.n_layer, config.rank
        for kind in DENSE_KINDS:
            outputs = TILES[kind] * (k * k + k)  # (n a c) weight coefficients, then (n a) bias coefficients
            base = torch.full((outputs,), 1.0 / k)
            setattr(self, f"{kind}_b2", nn.Parameter(base.repeat(L, 1)))  # (L, n (k^2 + k))
            noise = torch.randn(L, outputs, r) * (0.02 / math.sqrt(r))
            setattr(self, f"{kind}_w2", nn.Parameter(noise * base[:, None]))  # (L, n (k^2 + k), r)

    @classmethod
    def task_map_macs(cls, source: GPTConfig, config: ProjectorConfig, scale: float) -> int:
        """The hidden layers, then the heads to every tile's k x k weight and k bias coefficients."""
        k, L, r = cls.check(source, config, scale), source.n_layer, config.rank
        return hidden_macs(L, config) + sum(L * TILES[kind] * (k * k + k) * r for kind in DENSE_KINDS)

    @classmethod
    def count_params(cls, source: GPTConfig, config: ProjectorConfig, scale: float) -> OwnParams:
        k = cls.check(source, config, scale)
        outputs = sum(TILES[kind] * (k * k + k) for kind in DENSE_KINDS)
        task = hidden_params(source.n_layer, config) + source.n_layer * outputs * (config.rank + 1)
        return OwnParams(task, 0)

    def coefficients(self, tasks: torch.Tensor) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
        """tasks (B, t) -> kind -> (r (B, L, n, a, c) weight coefficients, rho (B, L, n, a) bias coefficients)."""
        hidden = self.hidden(tasks, self.n_layer)
        out = {}
        for kind in DENSE_KINDS:
            w2, b2 = getattr(self, f"{kind}_w2"), getattr(self, f"{kind}_b2")
            coeff = torch.einsum("blr,lxr->blx", hidden[kind], w2) + b2  # (B, L, n (k^2 + k))
            n, k = TILES[kind], self.k
            out[kind] = (rearrange(coeff[..., : n * k * k], "b l (n a c) -> b l n a c", n=n, a=k),
                         rearrange(coeff[..., n * k * k :], "b l (n a) -> b l n a", n=n))
        return out

    def weights(self, tasks: torch.Tensor, source: DenseStack | None) -> DenseWeights:
        out = {}
        for kind, (r, rho) in self.coefficients(tasks).items():
            w, b = source.weights(kind)
            ws = torch.einsum("lnacoi,blnac->blnoi", weight_blocks(w, kind, self.k, self.heads), r)
            bs = torch.einsum("lnao,blna->blno", bias_blocks(b, kind, self.k, self.heads), rho)
            out[kind] = (rearrange(ws, "b l n o i -> b l (n o) i"), rearrange(bs, "b l n o -> b l (n o)"))
        return out

    def expanded(self, tasks: torch.Tensor, source: DenseStack | None) -> BlockLinears:
        return BlockLinears(source, self.coefficients(tasks), self.k, self.heads)

    def route(self, route: str, tasks: int, batch: int, seq: int, device: str = "cpu", training: bool = False) -> str:
        """``auto`` always materialises: the expand route's weighted inputs (B, T, n, k, k, i) hold k^2 copies of
        every input and autograd keeps them, so unlike the projection's it never saves memory (at the paper
        size, B = 32, T = 1024, s = 1/2: ~29 GB against 2.4 GB of per-task weights). Ask for it by name."""
        return "materialize" if route == "auto" else route

    def cost(self, tasks: int, batch: int, seq: int) -> tuple[float, float, float]:
        dense, small = dense_macs(self.source_shapes, self.n_layer), dense_macs(self.small_shapes, self.n_layer)
        # materialise: every source weight enters one weighted sum per task; then the small model runs.
        return tasks * dense + batch * seq * small, batch * seq * dense, 4.0 * tasks * small


class BlockLinears:
    """The expand route of the blocks: y_s = sum_{a,c} r_ac W_1[a, c] x_s + sum_a rho_a b_1[a], never forming
    W_s: the input, weighted per (a, c), meets the source's blocks in one contraction. Source FLOPs per token."""

    def __init__(self, source: DenseStack, coefficients: dict, k: int, heads: int):
        self.k, self.heads = k, heads
        # per-layer views once (gpt.layer_views): source weight, bias, r and rho of every layer
        self.layers = {kind: (*(layer_views(t) for t in source.weights(kind)),
                              *(layer_views(c, 1) for c in coefficients[kind])) for kind in coefficients}

    def __call__(self, kind: str, layer: int, x: torch.Tensor) -> torch.Tensor:
        w, b, r, rho = (views[layer] for views in self.layers[kind])  # r (B, n, a, c), rho (B, n, a)
        weighted = torch.einsum("bti,bnac->btnaci", x, r)  # (B, T, n, a, c, i)
        y = torch.einsum("btnaci,nacoi->btno", weighted, weight_blocks(w, kind, self.k, self.heads))
        y = y + torch.einsum("nao,bna->bno", bias_blocks(b, kind, self.k, self.heads), rho).unsqueeze(1)
        return rearrange(y, "b t n o -> b t (n o)")
