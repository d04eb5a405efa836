"""Task-conditioned projector (Sec. 2.2, 3.2): W_s = P(t) W_1 Q(t), b_s = P(t) b_1, never materialising P or Q.

P is (s*n_out x n_out) with P_ij = p_j(t) iff i == floor(s*j); Q is (n_in x s*n_in) with Q_ij = q_i(t) iff
j == floor(s*i). With group size k = 1/s, target row o is the p-weighted sum of source rows o*k..o*k+k-1 and
target column i the q-weighted sum of source columns i*k..i*k+k-1: a reshape and a weighted sum.

The diagonals p(t), q(t) of every dense operator come from "a set of MLPs": t -> Linear(r) -> swish -> Linear
-> (p, q). By default one MLP per operator (``mlp="per_operator"``), evaluated for all layers of a kind with one
batched einsum; ``mlp="shared"`` shares the hidden layer across all operators (output layers stay per operator).

Letter legend: B tasks (1 when one task serves the whole batch), L layers, O/I source out/in, o/i target
out/in (= O/k, I/k), a/c position inside a group of k, r rank, t task dimension.
"""

from __future__ import annotations

import dataclasses
import math
import numbers
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, NamedTuple

import torch
import torch.nn as nn
import torch.nn.functional as F
from einops import rearrange, repeat

from projectable.gpt import DENSE_KINDS, GPTConfig, layer_views, rename_legacy_kinds
from projectable.validation import check_scale, group_size

if TYPE_CHECKING:
    from projectable.generators.base import WeightGenerator

# The weight generators of App. B by name, the choices of ``ProjectorConfig.generator``: name -> the class that
# builds it, whose attributes declare all the rest of the code needs to know of it (``WeightGenerator``). Kept
# here, beside the config that names them, and filled by ``projectable.generators.registry.register``, with
# which ``projectable.generators`` registers its own (imported with ``projectable``): the generator classes
# take a ProjectorConfig, so this module cannot import them.
GENERATOR_CLASSES: dict[str, type[WeightGenerator]] = {}


class GeneratorNames(Sequence[str]):
    """The names of the registered generators that ``keep`` selects, in registration order, read from
    ``GENERATOR_CLASSES`` on every use: a generator registered later is in every list that selects it."""

    def __init__(self, keep: Callable[[type[WeightGenerator]], bool]):
        self._keep = keep

    def _names(self) -> tuple[str, ...]:
        return tuple(name for name, cls in GENERATOR_CLASSES.items() if self._keep(cls))

    def __getitem__(self, index):
        return self._names()[index]

    def __len__(self) -> int:
        return len(self._names())

    def __iter__(self) -> Iterator[str]:
        return iter(self._names())

    def __eq__(self, other) -> bool:
        if not isinstance(other, Sequence) or isinstance(other, str):
            return NotImplemented
        return self._names() == tuple(other)

    __hash__ = None  # equal to a tuple whose hash it cannot share: the names change as generators register

    def __repr__(self) -> str:
        return repr(self._names())  # messages list the choices as a tuple


GENERATORS = GeneratorNames(lambda cls: True)
# Sized by a delta rank of their own (``generator_rank``); the others by the MLPs' width (``rank``).
RANKED_GENERATORS = GeneratorNames(lambda cls: cls.size_knob == "generator_rank")
# Never read the source: they hold base weights of their own and train no source.
SOURCE_FREE_GENERATORS = GeneratorNames(lambda cls: not cls.reads_source)


def generator_class(name: str) -> type[WeightGenerator]:
    """The class of generator ``name``; an unknown name is an error naming the choices."""
    if name not in GENERATOR_CLASSES:
        raise ValueError(f"generator={name!r} is not one of {GENERATORS}")
    return GENERATOR_CLASSES[name]


@dataclass(frozen=True)
class ProjectorConfig:
    task_dim: int  # size of t: 18 for SynthMNIST, the embedding size for ImageNet
    rank: int = 8  # r, hidden width of the diagonal MLPs (of every generator's MLPs); the paper uses 4..32, 8
    scales: tuple[float, ...] = (0.5,)  # target width / source width, each 1/2^k; several = co-trained P~
    mlp: str = "per_operator"  # "per_operator": one MLP per dense operator (the paper's "set of MLPs"); "shared"
    small_parts: str = "own"  # "own": the small model has its own embeddings, norms, head (trained, not
    #                           conditioned on t; matches the paper's projector sizes); "derived": group
    #                           averages of the source's, recomputed from the live source every step
    source_weight: float = 1.0  # w_src in Eq. 2; 0 trains the projectors against a frozen-loss source
    route: str = "auto"  # "materialize" per-example small weights, "expand" inputs by Q through W_1 (other
    #                      generators: their own route without per-example weights), or "auto"
    generator: str = "projection"  # how W_s comes from t (GENERATORS); a config without it is the projection
    generator_rank: int = 0  # rank of L(t) R(t) (low_rank) or subspace size (linear); 0 (unused) for the others

    def __post_init__(self):
        for name in ("task_dim", "rank", "generator_rank"):
            value = getattr(self, name)
            if isinstance(value, numbers.Integral) and not isinstance(value, bool):
                object.__setattr__(self, name, int(value))  # numpy integers; the config is saved as JSON
        if not isinstance(self.task_dim, int) or self.task_dim <= 0:
            raise ValueError(f"ProjectorConfig.task_dim must be a positive int (size of t), got {self.task_dim!r}")
        if not isinstance(self.rank, int) or self.rank <= 0:
            raise ValueError(f"ProjectorConfig.rank must be a positive int (paper: 4..32), got {self.rank!r}")
        object.__setattr__(self, "scales", tuple(float(s) for s in self.scales))
        if not self.scales:
            raise ValueError("ProjectorConfig.scales is empty; give at least one target scale such as (0.5,)")
        for s in self.scales:
            group_size(s)
        if len(set(self.scales)) != len(self.scales):
            raise ValueError(f"ProjectorConfig.scales has duplicates: {self.scales}")
        choices = {"mlp": ("per_operator", "shared"), "small_parts": ("own", "derived"),
                   "route": ("auto", "materialize", "expand"), "generator": GENERATORS}
        for name, allowed in choices.items():
            if getattr(self, name) not in allowed:
                raise ValueError(f"ProjectorConfig.{name}={getattr(self, name)!r} is not one of {allowed}")
        if self.source_weight < 0:
            raise ValueError(f"ProjectorConfig.source_weight (w_src) must be >= 0, got {self.source_weight}")
        self._check_generator()

    def _check_generator(self):
        """The settings the chosen generator's class declares it needs (``WeightGenerator``'s attributes)."""
        rank, generator = self.generator_rank, self.generator
        declared = generator_class(generator)
        if not isinstance(rank, int) or isinstance(rank, bool) or rank < 0:
            raise ValueError(f"ProjectorConfig.generator_rank must be an int >= 0, got {rank!r}")
        ranked = declared.size_knob == "generator_rank"
        if ranked and rank == 0:
            raise ValueError(
                f"ProjectorConfig.generator={generator!r} needs generator_rank >= 1 (the rank of its t-dependent "
                "delta); pick one, e.g. with projectable.generators.match_budget"
            )
        if not ranked and rank != 0:
            raise ValueError(
                f"ProjectorConfig.generator_rank={rank} applies to {' and '.join(RANKED_GENERATORS)} "
                f"only; the {generator!r} generator is sized by rank, so leave generator_rank at 0"
            )
        if not declared.has_mlp and self.mlp != "per_operator":
            raise ValueError(
                f"ProjectorConfig.mlp={self.mlp!r} has no meaning for the {generator} generator (it has no MLP); "
                "leave mlp at 'per_operator'"
            )
        if not declared.reads_source and self.small_parts != "own":
            raise ValueError(
                f"ProjectorConfig.small_parts={self.small_parts!r} needs a source, which the {generator!r} "
                "generator does not read; use small_parts='own'"
            )

    @property
    def reads_source(self) -> bool:
        """Whether the generator reads the source's weights (then the source is co-trained, Eq. 2)."""
        return generator_class(self.generator).reads_source


def scale_key(scale: float) -> str:
    """Module-dict key for a scale: 0.125 -> '1_8'."""
    return f"1_{group_size(scale)}"


def scale_name(scale: float) -> str:
    """Human name: 0.125 -> '1/8', 1.0 -> '1'."""
    k = group_size(scale)
    return "1" if k == 1 else f"1/{k}"


class Diagonals(NamedTuple):
    """p(t) and q(t) of every dense operator: p[kind] (B, L, O), q[kind] (B, L, I)."""

    p: dict[str, torch.Tensor]
    q: dict[str, torch.Tensor]


class DiagonalGenerator(nn.Module):
    """The MLPs t -> (p, q) for every dense operator of one target scale (Sec. 2.2)."""

    KIND_PARAM_SUFFIXES = ("w1", "b1", "w2", "b2")  # per-operator parameters are named {kind}_w1, ...

    def __init__(self, source: GPTConfig, config: ProjectorConfig, scale: float):
        super().__init__()
        self.shapes = source.dense_shapes()
        self.shared = config.mlp == "shared"
        k = check_scale(scale, source)
        L, r, t = source.n_layer, config.rank, config.task_dim
        if self.shared:
            self.w1 = nn.Parameter(torch.randn(r, t) / math.sqrt(t))
            self.b1 = nn.Parameter(torch.zeros(r))
        for kind, (out_dim, in_dim) in self.shapes.items():
            if not self.shared:
                setattr(self, f"{kind}_w1", nn.Parameter(torch.randn(L, r, t) / math.sqrt(t)))
                setattr(self, f"{kind}_b1", nn.Parameter(torch.zeros(L, r)))
            # Start at group averages: p = 1/k averages the k source rows of a group, q = 1 sums the k source
            # columns that an input repeated k times would hit. A fresh projector is then a sensible small model
            # (the source with averaged units), varying with t only by small noise.
            base = torch.cat([torch.full((out_dim,), 1.0 / k), torch.ones(in_dim)])  # (O + I,)
            setattr(self, f"{kind}_b2", nn.Parameter(base.repeat(L, 1)))  # (L, O + I)
            noise = torch.randn(L, out_dim + in_dim, r) * (0.02 / math.sqrt(r))
            setattr(self, f"{kind}_w2", nn.Parameter(noise * base[:, None]))  # (L, O + I, r)

    def forward(self, task: torch.Tensor) -> Diagonals:
        """task (B, t) -> Diagonals with p (B, L, O), q (B, L, I) for every kind."""
        if self.shared:
            hidden_shared = F.silu(F.linear(task, self.w1, self.b1))  # (B, r)
        p, q = {}, {}
        for kind, (out_dim, _) in self.shapes.items():
            if self.shared:
                hidden = hidden_shared.unsqueeze(1)  # (B, 1, r), broadcast over layers
            else:
                w1, b1 = getattr(self, f"{kind}_w1"), getattr(self, f"{kind}_b1")
                hidden = F.silu(torch.einsum("bt,lrt->blr", task, w1) + b1)  # (B, L, r)
            w2, b2 = getattr(self, f"{kind}_w2"), getattr(self, f"{kind}_b2")
            diag = torch.einsum("blr,ldr->bld", hidden.expand(-1, w2.shape[0], -1), w2) + b2  # (B, L, O + I)
            p[kind], q[kind] = diag[..., :out_dim], diag[..., out_dim:]
        return Diagonals(p, q)

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs):
        rename_legacy_kinds(state_dict, prefix, self.KIND_PARAM_SUFFIXES)  # state dicts with legacy names
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)


def _row_groups(weight: torch.Tensor, p: torch.Tensor, k: int) -> torch.Tensor:
    """sum_a p[.., o, a] W[l, o*k + a, :]: weight (L, O, I), p (B, L, O) -> (B, L, o, I).

    One multiply-add per position a over contiguous rows (k passes): this reads W once and keeps the
    per-element work vectorised, where an einsum over the size-k axis lowers to k-wide matrix products."""
    w = rearrange(weight, "l (o a) i -> l o a i", a=k)
    p = rearrange(p, "b l (o a) -> b l o a", a=k).unsqueeze(-1)  # (B, L, o, k, 1)
    out = w[:, :, 0] * p[:, :, :, 0]
    for a in range(1, k):
        out.addcmul_(w[:, :, a], p[:, :, :, a])
    return out


def _column_groups(x: torch.Tensor, k: int, out: torch.Tensor) -> torch.Tensor:
    """Sum each group of k adjacent columns into ``out``: (..., I) -> (..., I/k), as k strided adds (a reduction
    over a trailing axis of size k is several times slower on CPU)."""
    if k == 1:
        return out.copy_(x)
    x = rearrange(x, "... (i c) -> ... i c", c=k)
    out = torch.add(x[..., 0], x[..., 1], out=out)
    for c in range(2, k):
        out += x[..., c]
    return out


# On CPU the projection runs over blocks of tasks and layers whose temporary P W (the largest, n/k floats per
# task) stays under this many bytes: a fresh allocation of hundreds of MB costs a page fault per 4 KiB page on
# first touch (14x a reused buffer's write on the development machine), and blocks this size are served again
# from the heap. GPUs have a caching allocator: one block.
CPU_BLOCK_BYTES = 8 * 2**20


def _blocks(weight: torch.Tensor, tasks: int, k: int) -> list[tuple[slice, slice]]:
    """(tasks, layers) slices covering a projection, each with a P W under ``CPU_BLOCK_BYTES`` on CPU."""
    L, O, I = weight.shape  # noqa: E741
    if weight.device.type != "cpu":
        return [(slice(None), slice(None))]
    per_layer = weight.element_size() * O * I // k  # P W of one task and one layer
    if per_layer * L <= CPU_BLOCK_BYTES:  # whole stacks: blocks of tasks
        task_step, layer_step = max(1, CPU_BLOCK_BYTES // (per_layer * L)), L
    else:  # one task at a time: blocks of layers
        task_step, layer_step = 1, max(1, CPU_BLOCK_BYTES // per_layer)
    return [(slice(b, b + task_step), slice(layer, layer + layer_step))
            for b in range(0, tasks, task_step) for layer in range(0, L, layer_step)]


def _project(weight: torch.Tensor, p: torch.Tensor, q: torch.Tensor, k: int) -> torch.Tensor:
    """P W Q without autograd, block by block (``_blocks``)."""
    B, L = p.shape[:2]
    O, I = weight.shape[1:]  # noqa: E741
    out = weight.new_empty(B, L, O // k, I // k)
    for tasks, layers in _blocks(weight, B, k):
        pw = _row_groups(weight[layers], p[tasks, layers], k).mul_(q[tasks, layers].unsqueeze(2))
        _column_groups(pw, k, out=out[tasks, layers])
    return out


class _ProjectWeight(torch.autograd.Function):
    """W_s = P W Q with hand-written forward and backward passes (``project_weight``). Autograd through the
    reshapes and strided sums would write zero-filled full-size gradients for every slice; here each block of
    tasks and layers reads its slice of W_1 once per pass (on CPU a block holds one task at the paper size,
    so W_1 is read once per task). Gradients, with G = dL/dW_s (B, L, o, i) and Gq[b, l, o, i*k + c] = G[b, l, o, i] q[b, l, i*k + c]:
    dW_1[l, o*k + a, :] = sum_b p[b, l, o*k + a] Gq[b, l, o, :], dp[b, l, o*k + a] = <W_1[l, o*k + a, :], Gq[b, l, o, :]>,
    dq[b, l, i*k + c] = sum_o (P W_1)[b, l, o, i*k + c] G[b, l, o, i]."""

    @staticmethod
    def forward(ctx, weight, p, q, k: int):
        ctx.save_for_backward(weight, p, q)
        ctx.k = k
        return _project(weight, p, q, k)

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad):
        weight, p, q = ctx.saved_tensors
        k = ctx.k
        need_w, need_p, need_q, _ = ctx.needs_input_grad
        # every block writes its slice of dW_1; with no tasks there is no block, and the gradient is zero
        d_weight = (torch.empty_like(weight) if p.shape[0] else torch.zeros_like(weight)) if need_w else None
        d_p = torch.empty_like(p) if need_p else None
        d_q = torch.empty_like(q) if need_q else None
        for tasks, layers in _blocks(weight, p.shape[0], k):
            g = grad[tasks, layers].unsqueeze(-1)  # (b, l, o, i, 1): G over the k columns of a group, broadcast
            if need_w or need_p:
                gq = rearrange(g * rearrange(q[tasks, layers], "b l (i c) -> b l 1 i c", c=k),
                               "b l o i c -> b l o (i c)")  # (b, l, o, I)
                if need_p:
                    w = rearrange(weight[layers], "l (o a) i -> l o a i", a=k)
                    d_p[tasks, layers] = rearrange(torch.einsum("loai,bloi->bloa", w, gq), "b l o a -> b l (o a)")
                if need_w:
                    p4 = rearrange(p[tasks, layers], "b l (o a) -> b l o a", a=k)
                    target = rearrange(d_weight[layers], "l (o a) i -> l o a i", a=k)
                    first = tasks.start in (None, 0)
                    if p4.shape[0] == 1:  # an outer product, written (or added) in place
                        outer = p4[0].unsqueeze(-1), gq[0].unsqueeze(2)
                        if first:
                            torch.mul(*outer, out=target)
                        else:
                            target.addcmul_(*outer)
                    elif first:
                        target.copy_(torch.einsum("bloa,bloi->loai", p4, gq))
                    else:
                        target.add_(torch.einsum("bloa,bloi->loai", p4, gq))
            if need_q:
                pw = rearrange(_row_groups(weight[layers], p[tasks, layers], k), "b l o (i c) -> b l o i c", c=k)
                d_q[tasks, layers] = rearrange(pw.mul_(g).sum(2), "b l i c -> b l (i c)")
        return d_weight, d_p, d_q, None


def project_weight(weight: torch.Tensor, p: torch.Tensor, q: torch.Tensor, k: int) -> torch.Tensor:
    """W_s = P W Q for stacked weights: weight (L, O, I), p (B, L, O), q (B, L, I) -> (B, L, O/k, I/k).

    Target row o is the p-weighted sum of source rows o*k..o*k+k-1 and target column i the q-weighted sum of
    source columns i*k..i*k+k-1; ``benchmarks/projection.py`` times it against the bytes floor and a dense
    P @ W @ Q reference, which the tests match in float64. Under autocast it runs in the autocast dtype (bf16
    on the gpu scale), as the matmul-like ops it replaces did; the gradients reach fp32 parameters in fp32."""
    device = weight.device.type
    if torch.amp.is_autocast_available(device) and torch.is_autocast_enabled(device):  # not on "meta"
        dtype = torch.get_autocast_dtype(device)
        weight, p, q = weight.to(dtype), p.to(dtype), q.to(dtype)
    return _ProjectWeight.apply(weight, p, q, k)


def project_bias(bias: torch.Tensor, p: torch.Tensor, k: int) -> torch.Tensor:
    """b_s = P b: bias (L, O), p (B, L, O) -> (B, L, O/k)."""
    return rearrange(bias * p, "b l (o a) -> b l o a", a=k).sum(-1)


class ExpandedLinears:
    """The "expand" route: y_s = P (W_1 (Q x_s) + b_1), never forming W_s.

    FLOPs per token are those of the source operator; memory holds no per-example weights. Exact, like the
    materialised route, because P(W Q x + b) = (P W Q) x + P b.
    """

    def __init__(self, source_weights: dict[str, tuple[torch.Tensor, torch.Tensor]], diagonals: Diagonals, k: int):
        self.k = k
        self.layers = {kind: (*(layer_views(t) for t in source_weights[kind]),
                              layer_views(diagonals.p[kind], 1), layer_views(diagonals.q[kind], 1))
                       for kind in source_weights}  # per-layer views once (gpt.layer_views)

    def __call__(self, kind: str, layer: int, x: torch.Tensor) -> torch.Tensor:
        w, b, p, q = (views[layer] for views in self.layers[kind])  # (O, I), (O,), p (B, O), q (B, I)
        x_big = repeat(x, "b t i -> b t (i c)", c=self.k) * q.unsqueeze(1)  # (B, T, I): Q x_s
        y = F.linear(x_big, w, b) * p.unsqueeze(1)  # (B, T, O)
        return rearrange(y, "b t (o a) -> b t o a", a=self.k).sum(-1)  # (B, T, O/k): contract by P


class RouteCost(NamedTuple):
    materialize_flops: float  # multiply-adds
    expand_flops: float
    materialize_bytes: float  # the largest kind's P W temporary over all tasks (4 * tasks * L * O * I / k), the
    #                           memory-limit check's measure of what materialising would hold
    materialize_seconds: float  # the cost model's estimate on the device (RouteCalibration)
    expand_seconds: float


@dataclass(frozen=True)
class RouteCalibration:
    """Rates of one device type for the cost model of ``choose_route``, forward or training (fwd+bwd).

    The expand route is a GEMM with the source's weights (2 * tokens * n FLOPs at ``matmul_flops``) plus
    elementwise passes over the expanded activations (``activation_bytes`` per second over 4 * tokens * A bytes,
    A = sum over layers and operators of 3 * in + 4 * out). The materialised route is the projection kernel,
    ``tasks * n * (per_weight + per_weight_k / k + per_weight_k2 / k**2)`` seconds for n source weights (it reads
    W_1 and writes temporaries of n/k and n/k^2 floats per task), plus the small GEMMs (2 * tokens * n / k^2
    FLOPs). A training step runs each GEMM three times. Bytes are counted as fp32."""

    matmul_flops: float
    activation_bytes: float
    per_weight: float
    per_weight_k: float
    per_weight_k2: float
    gemm_passes: int = 1


# CPU: fitted to both routes' times at the shapes of benchmarks/projection.py part 2 on the development CPU
# (2 cores, fp32, torch 2.13, a loaded run); benchmarks/README.md has an idle run of the same shapes. Forward
# 1.2 ns / k per task and source weight, training 3.65 / k + 7.25 / k^2 ns.
# cuda: not measured. An H200's bf16 GEMM throughput (4e14 FLOP/s) and HBM bandwidth (4 TB/s = 2e12 bf16
# elements/s); the kernel moves about n (3 + 2/k + 1/k^2) elements per task (W_1 once, 2k - 1 passes over the
# n/k temporary P W, the q scaling and the column sums), three times that in training; the expand route's
# activations are bf16, i.e. twice the bandwidth in the model's fp32-counted bytes.
HBM = 2e12  # bf16 elements per second
ROUTE_CALIBRATION = {
    ("cpu", False): RouteCalibration(1.7e11, 1.6e10, 0.0, 1.2e-9, 0.0),
    ("cpu", True): RouteCalibration(1.7e11, 4.8e9, 0.0, 3.65e-9, 7.25e-9, gemm_passes=3),
    ("cuda", False): RouteCalibration(4e14, 8e12, 3 / HBM, 2 / HBM, 1 / HBM),
    ("cuda", True): RouteCalibration(4e14, 8e12 / 3, 9 / HBM, 6 / HBM, 3 / HBM, gemm_passes=3),
}
# CPU under bf16 autocast: the fp32 rates scaled by factors fitted (a grid over 0.25-4x per rate, minimising the
# worst auto/best) to benchmarks/projection.py part 2 in bf16 on an idle AMD EPYC with avx512_bf16 (2026-12-06,
# benchmarks/results/cpu-2026-12-06-0935.md): GEMMs run twice as fast, the materialising kernel's per-weight pass
# twice as fast, the expanded activations' elementwise passes and the k^2 term as in fp32. In sample, the worst
# auto/best over its 18 cells is 1.13. The GPU rates above are bf16 already.
CPU_BF16_SCALING = {"matmul_flops": 2.0, "activation_bytes": 1.0, "per_weight_k": 2.0, "per_weight_k2": 1.0}
ROUTE_CALIBRATION_BF16 = {
    ("cpu", training): dataclasses.replace(
        rates, **{field: getattr(rates, field) * factor for field, factor in CPU_BF16_SCALING.items()})
    for (device, training), rates in ROUTE_CALIBRATION.items() if device == "cpu"
}


def autocast_precision(device: str) -> str:
    """"bf16" inside ``torch.autocast(device, dtype=torch.bfloat16)``, else "fp32" (the rates ``route_cost`` uses)."""
    if device in ("cpu", "cuda") and torch.is_autocast_enabled(device):
        return "bf16" if torch.get_autocast_dtype(device) == torch.bfloat16 else "fp32"
    return "fp32"


def route_cost(source: GPTConfig, k: int, tasks: int, batch: int, seq: int, device: str = "cpu",
               training: bool = False, precision: str = "fp32") -> RouteCost:
    """Multiply-adds and bytes of both exact routes for one projected forward of ``tasks`` distinct tasks over
    ``batch`` sequences of ``seq`` tokens, and the seconds the cost model estimates on ``device`` ("cpu" or
    "cuda"; others use the cpu rates) for a forward or, with ``training``, a training step, in ``precision``
    ("fp32", or "bf16" under autocast)."""
    shapes = source.dense_shapes().values()
    dense = sum(o * i for o, i in shapes) * source.n_layer  # source dense weights
    small = dense / (k * k)
    tokens = batch * seq
    # materialise: contract p over groups of rows (tasks * dense), then q (tasks * dense / k); then run small.
    materialize = tasks * (dense + dense / k) + tokens * small
    expand = tokens * dense
    largest = max(o * i for o, i in shapes) * source.n_layer
    table = ROUTE_CALIBRATION_BF16 if precision == "bf16" and device != "cuda" else ROUTE_CALIBRATION
    rates = table.get((device, training), table["cpu", training])
    activations = 4.0 * tokens * source.n_layer * sum(3 * i + 4 * o for o, i in shapes)
    gemm = 2.0 * tokens * rates.gemm_passes / rates.matmul_flops
    per_weight = rates.per_weight + rates.per_weight_k / k + rates.per_weight_k2 / k**2
    materialize_seconds = tasks * dense * per_weight + gemm * small
    expand_seconds = gemm * dense + activations / rates.activation_bytes
    return RouteCost(materialize, expand, 4.0 * tasks * largest / k, materialize_seconds, expand_seconds)


def choose_route(route: str, source: GPTConfig, k: int, tasks: int, batch: int, seq: int,
                 memory_limit_bytes: float = 2e9, device: str = "cpu", training: bool = False,
                 precision: str | None = None) -> str:
    """``auto``: the route the cost model (``route_cost``) says is faster on ``device`` in ``precision`` (None:
    the autocast state of ``device``), unless per-example weights would exceed the memory limit."""
    if route != "auto":
        return route
    precision = precision or autocast_precision(device)
    cost = route_cost(source, k, tasks, batch, seq, device, training, precision)
    if cost.materialize_bytes > memory_limit_bytes:
        return "expand"
    return "materialize" if cost.materialize_seconds <= cost.expand_seconds else "expand"


def identity_diagonals(source: GPTConfig, batch: int = 1) -> Diagonals:
    """p = q = 1 everywhere: at scale 1 this reproduces the source exactly (a test invariant)."""
    L = source.n_layer
    p = {kind: torch.ones(batch, L, o) for kind, (o, _) in source.dense_shapes().items()}
    q = {kind: torch.ones(batch, L, i) for kind, (_, i) in source.dense_shapes().items()}
    return Diagonals(p, q)


__all__ = [
    "DENSE_KINDS",
    "GENERATORS",
    "GENERATOR_CLASSES",
    "RANKED_GENERATORS",
    "SOURCE_FREE_GENERATORS",
    "Diagonals",
    "DiagonalGenerator",
    "ExpandedLinears",
    "ProjectorConfig",
    "ROUTE_CALIBRATION",
    "ROUTE_CALIBRATION_BF16",
    "RouteCalibration",
    "autocast_precision",
    "choose_route",
    "generator_class",
    "identity_diagonals",
    "project_bias",
    "project_weight",
    "route_cost",
    "scale_key",
    "scale_name",
]
