"""ImageGPT-style decoder (Sec. 2, App. B): the source M_1, the baselines M_s / M~_s and every generated model.

Written bottom-up. The dense operators of all layers are stored *stacked per kind* as ``(L, out, in)``
tensors, so that the projector (``projector.py``) can map all layers of a kind with one tensor op
(a per-tensor Python loop over the paper-size source's 290 tensors took ~55 ms forward+backward on an
H200 against ~2.5 ms stacked). The transformer body
is a function of "parts" (embeddings, norms, head) and a ``linear`` callable, so the very same code runs

* a plain GPT (shared dense weights),
* the projected model P_s(t) with per-example generated weights (``(B, L, out, in)``), and
* the "expand" route that never materialises small weights (see ``projector.ExpandedLinears``).

Sequence convention: a sequence of ``T = block_size`` tokens ``x_0..x_{T-1}`` is modelled autoregressively;
position 0 receives a start embedding (a learned vector for unconditional M_s, a linear map of the task
vector for conditional M~_s, the paper's conditional baseline) and predicts ``x_0``; position i receives ``x_{i-1}``.
A conditional model with ``task_input="every"`` also adds that map of t to the input of every later position.

Letter legend for shape comments: B batch, T time, C width, H heads, D head size, L layers, V vocabulary.
"""

from __future__ import annotations

import json
import math
import numbers
from collections.abc import Callable
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import torch
import torch.nn as nn
import torch.nn.functional as F

from projectable.io import config_from_metadata, read_tensors, write_tensors
from projectable.tokenizer import ImageTokenizer, tokenizer_metadata
from projectable.validation import as_scale, check_scale, check_task, check_tokens

# The four dense operators of a block, in forward order: fused query/key/value, attention output, MLP
# up-projection (GPT-2's c_fc), MLP down-projection.
DENSE_KINDS = ("qkv", "attn_out", "fc", "mlp_down")
# Legacy kind names, still accepted when loading files and state dicts that use them.
LEGACY_KINDS = {"attn": "attn_out", "proj": "mlp_down"}
# Per-layer tensor names in GPT.save files, GPT-2-like: blocks.{layer}.<name>.weight / .bias.
FILE_NAMES = {"qkv": "attn.qkv", "attn_out": "attn.out", "fc": "mlp.fc", "mlp_down": "mlp.down"}
LEGACY_FILE_NAMES = {"mlp.proj": "mlp.down"}
FILE_FORMAT = "projectable.gpt"  # the metadata format tag of GPT.save files
# How a conditional model reads its task vector t (GPTConfig.task_input):
#   "first": the paper's M~_s: t's linear map is the first embedding, later positions see t only through attention;
#   "every": the same map is also added to the embedding of every later token, so every position reads t directly
#            (the fairest conditional baseline: same parameters as "first", t at every position like P_s(t)).
TASK_INPUTS = ("first", "every")


def rename_legacy_kinds(state: dict, prefix: str, suffixes: tuple[str, ...]) -> dict:
    """Rename, in place, parameters ``{prefix}{old}_{suffix}`` of a legacy kind to today's kind names.

    Used by the modules that name parameters after a kind (``DenseStack``, ``DiagonalGenerator``), so that
    ``load_state_dict`` and the strict file loaders accept state that uses the legacy names.
    """
    for old, new in LEGACY_KINDS.items():
        for suffix in suffixes:
            key = f"{prefix}{old}_{suffix}"
            if key in state:
                renamed = f"{prefix}{new}_{suffix}"
                if renamed in state:
                    raise ValueError(f"state holds both {key} (legacy name) and {renamed}; keep one of them")
                state[renamed] = state.pop(key)
    return state


def upgrade_legacy_names(module: nn.Module, state: dict) -> dict:
    """``state`` (a copy) with every legacy kind name of ``module``'s kind-named submodules renamed."""
    state = dict(state)
    for name, sub in module.named_modules():
        suffixes = getattr(sub, "KIND_PARAM_SUFFIXES", None)
        if suffixes:
            rename_legacy_kinds(state, f"{name}." if name else "", suffixes)
    return state


@dataclass(frozen=True)
class GPTConfig:
    vocab_size: int = 512  # palette colours (SynthMNIST) or VQ-VAE codes (ImageNet)
    block_size: int = 1024  # tokens per image = positions; 32x32 tokens in the paper
    n_layer: int = 24  # paper: 24 for every size
    n_head: int = 8  # paper: 8 for every size; head size shrinks with the width
    n_embd: int = 512  # width d of M_1; M_s has s*d
    mlp_ratio: int = 4  # MLP hidden = mlp_ratio * n_embd, GPT-2 layout
    dropout: float = 0.0  # paper trains with 0.1 (App. C.1); 0 keeps tests exact
    task_dim: int = 0  # 0: unconditional M_s (learned start token); >0: conditional M~_s, t -> first embedding
    # where a conditional model reads t (TASK_INPUTS): "first" (the paper's M~_s) or "every" position; the same
    # task map either way. Unconditional models (task_dim=0) read no t and ignore it.
    task_input: str = "first"
    # 0: every width keeps n_head (the paper: head size shrinks with the width); >0: a scaled model whose heads
    # would be smaller than this gets n_embd // min_head_size heads instead (at least 1; an ablation switch)
    min_head_size: int = 0

    def __post_init__(self):
        for name in ("vocab_size", "block_size", "n_layer", "n_head", "n_embd", "mlp_ratio", "task_dim", "min_head_size"):
            value = getattr(self, name)
            if isinstance(value, numbers.Integral) and not isinstance(value, bool):
                object.__setattr__(self, name, int(value))  # numpy integers; the config is saved as JSON
        for name in ("vocab_size", "block_size", "n_layer", "n_head", "n_embd", "mlp_ratio"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
                raise ValueError(f"GPTConfig.{name} must be a positive int, got {value!r}")
        if self.n_embd % self.n_head:
            raise ValueError(
                f"GPTConfig.n_embd={self.n_embd} is not divisible by n_head={self.n_head}; "
                "choose a width that is a multiple of the head count"
            )
        if isinstance(self.dropout, bool) or not isinstance(self.dropout, numbers.Real) or not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"GPTConfig.dropout must lie in [0, 1), got {self.dropout!r}")
        if not isinstance(self.min_head_size, int) or isinstance(self.min_head_size, bool) or self.min_head_size < 0:
            raise ValueError(f"GPTConfig.min_head_size must be an int >= 0 (0: keep the head count), got {self.min_head_size!r}")
        if not isinstance(self.task_dim, int) or isinstance(self.task_dim, bool) or self.task_dim < 0:
            raise ValueError(f"GPTConfig.task_dim must be an int >= 0 (0 = unconditional), got {self.task_dim!r}")
        if self.task_input not in TASK_INPUTS:
            raise ValueError(
                f"GPTConfig.task_input={self.task_input!r} is not one of {TASK_INPUTS}; use 'first' (t's map is the "
                "first embedding, the paper's M~_s) or 'every' (it is also added to every later token's embedding)"
            )

    @property
    def head_size(self) -> int:
        return self.n_embd // self.n_head

    @property
    def mlp_width(self) -> int:
        return self.mlp_ratio * self.n_embd

    @property
    def conditional(self) -> bool:
        return self.task_dim > 0

    @property
    def task_at_every_position(self) -> bool:
        return self.conditional and self.task_input == "every"

    def to_json(self) -> str:
        """The config as saved in files. ``task_input`` is written only when it is not "first", so that a
        first-position model's file is byte for byte what it was before the switch existed (its hash names
        reused weights); a file without it loads as "first"."""
        fields = asdict(self)
        if fields["task_input"] == "first":
            del fields["task_input"]
        return json.dumps(fields)

    def dense_shapes(self) -> dict[str, tuple[int, int]]:
        """(out, in) of each dense operator kind."""
        C, M = self.n_embd, self.mlp_width
        return {"qkv": (3 * C, C), "attn_out": (C, C), "fc": (M, C), "mlp_down": (C, M)}

    def scaled(self, scale: float) -> GPTConfig:
        """The same architecture at width ``scale * n_embd`` (M_s, Sec. 2); depth unchanged, heads unchanged
        unless ``min_head_size`` asks for fewer, larger heads at small widths."""
        check_scale(scale, self)
        width = round(self.n_embd * as_scale(scale))
        heads = self.n_head
        if self.min_head_size and width // heads < self.min_head_size:
            heads = max(1, width // self.min_head_size)
        return replace(self, n_embd=width, n_head=heads)

    @classmethod
    def paper(cls, scale: float = 1.0, **overrides) -> GPTConfig:
        """The paper's M_1 (24 layers, 8 heads, d=512, 1024 tokens, 512 codes); ``scale`` gives M_s."""
        return cls(**overrides).scaled(scale) if scale != 1.0 else cls(**overrides)

    @classmethod
    def tiny(cls, **overrides) -> GPTConfig:
        """A debug variant that runs in milliseconds on a CPU (tests, smoke runs)."""
        base = dict(vocab_size=16, block_size=12, n_layer=2, n_head=2, n_embd=32, mlp_ratio=4)
        base.update(overrides)
        return cls(**base)


# ----------------------------------------------------------------------------------------------------
# Parts: everything except the dense operators. A projected model has its own parts and generated dense
# weights; a GPT has parts plus a DenseStack.


class GPTParts(nn.Module):
    """Token/position embeddings, start embedding, layer norms (stacked per layer) and the untied head."""

    def __init__(self, config: GPTConfig):
        super().__init__()
        self.config = config
        C, L = config.n_embd, config.n_layer
        self.wte = nn.Parameter(torch.randn(config.vocab_size, C) * 0.02)  # (V, C)
        self.wpe = nn.Parameter(torch.randn(config.block_size, C) * 0.02)  # (T, C)
        if config.conditional:
            # M~_s: the task vector, linearly mapped, is the first embedding of the sequence (with
            # task_input="every" also added to every later token's embedding).
            self.task_proj = nn.Linear(config.task_dim, C)
            nn.init.normal_(self.task_proj.weight, std=0.02)
            nn.init.zeros_(self.task_proj.bias)
        else:
            self.start = nn.Parameter(torch.randn(C) * 0.02)  # (C,)
        self.ln1_w = nn.Parameter(torch.ones(L, C))
        self.ln1_b = nn.Parameter(torch.zeros(L, C))
        self.ln2_w = nn.Parameter(torch.ones(L, C))
        self.ln2_b = nn.Parameter(torch.zeros(L, C))
        self.lnf_w = nn.Parameter(torch.ones(C))
        self.lnf_b = nn.Parameter(torch.zeros(C))
        self.head = nn.Parameter(torch.randn(config.vocab_size, C) * 0.02)  # (V, C), no bias

    def start_embedding(self, batch: int, task: torch.Tensor | None) -> torch.Tensor:
        """(B, 1, C) embedding fed at position 0."""
        if self.config.conditional:
            if task is None:
                raise ValueError(
                    "this model is conditional (task_dim="
                    f"{self.config.task_dim}) and needs a task vector; pass task=(B, {self.config.task_dim})"
                )
            return self.task_proj(task).unsqueeze(1)
        refuse_task(task)
        return self.start.expand(batch, 1, -1)


def refuse_task(task) -> None:
    """An unconditional model (M_s, a generated P_s) is refused a task vector rather than ignoring it: a task
    passed to the wrong model would otherwise be silently dropped, and its samples or losses would look
    conditional while they are not. Callers that hold models of both kinds pass ``task if
    model.config.conditional else None`` (``experiments.run.trainees``, ``ProjectableGPT``)."""
    if task is not None:
        raise ValueError(
            "this model is unconditional (task_dim=0) and takes no task vector; pass task=None (a projected "
            "model's task acts through ProjectableGPT.generate(task, scale), not through the generated model)"
        )


class DenseStack(nn.Module):
    """All dense operators, stacked per kind: weight (L, out, in), bias (L, out)."""

    KIND_PARAM_SUFFIXES = ("w", "b")  # parameters are named {kind}_w, {kind}_b

    def __init__(self, config: GPTConfig):
        super().__init__()
        L = config.n_layer
        for kind, (out_dim, in_dim) in config.dense_shapes().items():
            # GPT-2 residual scaling: the two operators that write into the residual stream start smaller.
            std = 0.02 / math.sqrt(2 * L) if kind in ("attn_out", "mlp_down") else 0.02
            setattr(self, f"{kind}_w", nn.Parameter(torch.randn(L, out_dim, in_dim) * std))
            setattr(self, f"{kind}_b", nn.Parameter(torch.zeros(L, out_dim)))

    def weights(self, kind: str) -> tuple[torch.Tensor, torch.Tensor]:
        if kind not in DENSE_KINDS:
            hint = f" (renamed to {LEGACY_KINDS[kind]!r})" if kind in LEGACY_KINDS else ""
            raise ValueError(f"no dense operator kind {kind!r}{hint}; the kinds are {DENSE_KINDS}")
        return getattr(self, f"{kind}_w"), getattr(self, f"{kind}_b")

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs):
        rename_legacy_kinds(state_dict, prefix, self.KIND_PARAM_SUFFIXES)  # state dicts with legacy names
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)


# A ``Linear`` maps (kind, layer, x) -> y; x (B, T, in) -> (B, T, out).
Linear = Callable[[str, int, torch.Tensor], torch.Tensor]


def layer_views(tensor: torch.Tensor, dim: int = 0) -> tuple[torch.Tensor, ...]:
    """The per-layer slices of a stacked tensor (layers along ``dim``), made once per forward.

    Indexing a stacked tensor once per layer (``w[layer]``) gives each slice a backward that zero-fills a
    gradient of the whole stack: L fresh full-size tensors per step, summed, that is L^2 slices of work (at the
    paper's 24 layers, ~7 GB written per step for the 302 MB of dense weights). ``unbind`` has one backward
    that stacks the layers' gradients into a single tensor."""
    return tensor.unbind(dim)


class StackedLinears:
    """Applies stacked weights ``(L, out, in)`` shared by the batch, or per-example ``(B, L, out, in)``."""

    def __init__(self, weights: dict[str, tuple[torch.Tensor, torch.Tensor]]):
        # layers are dim 0 of shared weights and dim 1 of per-example ones
        self.layers = {kind: (layer_views(w, w.dim() - 3), layer_views(b, b.dim() - 2))
                       for kind, (w, b) in weights.items()}

    def __call__(self, kind: str, layer: int, x: torch.Tensor) -> torch.Tensor:
        weights, biases = self.layers[kind]
        w, b = weights[layer], biases[layer]
        if w.dim() == 2:  # shared: (out, in)
            return F.linear(x, w, b)
        # per example: w (B, out, in), b (B, out); x (B, T, in)
        return torch.baddbmm(b.unsqueeze(1), x, w.transpose(1, 2))


class KVCache:
    """Keys and values of past positions for every layer, for incremental sampling."""

    def __init__(self, n_layer: int):
        self.keys: list[torch.Tensor | None] = [None] * n_layer
        self.values: list[torch.Tensor | None] = [None] * n_layer
        self.length = 0

    def update(self, layer: int, k: torch.Tensor, v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        # k, v: (B, H, T_new, D) -> concatenated with the past along time
        if self.keys[layer] is not None:
            k = torch.cat([self.keys[layer], k], dim=2)
            v = torch.cat([self.values[layer], v], dim=2)
        self.keys[layer], self.values[layer] = k, v
        return k, v


# Under bf16 autocast on a CPU, attention runs in fp32: torch's CPU flash-attention kernel is slower in bf16
# than in fp32 at head sizes 4-32 (backward ~1.7x at the cpu scale's T = 256; benchmarks/README.md, "Precision"),
# while the dense layers gain from bf16. GPUs keep bf16 attention. False: attention in the autocast dtype.
CPU_ATTENTION_IN_FP32 = True


def attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, causal: bool, dropout: float) -> torch.Tensor:
    """Scaled dot-product attention over (B, H, T, D) heads (Sec. 2's Transformer blocks)."""
    if CPU_ATTENTION_IN_FP32 and q.device.type == "cpu" and q.dtype == torch.bfloat16 and torch.is_autocast_enabled("cpu"):
        return F.scaled_dot_product_attention(q.float(), k.float(), v.float(), is_causal=causal,
                                              dropout_p=dropout).to(q.dtype)
    return F.scaled_dot_product_attention(q, k, v, is_causal=causal, dropout_p=dropout)


def transformer_forward(
    parts: GPTParts,
    linear: Linear,
    inputs: torch.Tensor,
    cache: KVCache | None = None,
) -> torch.Tensor:
    """Pre-LayerNorm GPT-2 blocks, final norm and head on already-embedded ``inputs`` (B, T, C) -> logits."""
    config = parts.config
    B, T, C = inputs.shape
    H, D = config.n_head, config.head_size
    drop = config.dropout if parts.training else 0.0
    x = F.dropout(inputs, drop, parts.training)
    ln1_w, ln1_b, ln2_w, ln2_b = (layer_views(t) for t in (parts.ln1_w, parts.ln1_b, parts.ln2_w, parts.ln2_b))
    for layer in range(config.n_layer):
        h = F.layer_norm(x, (C,), ln1_w[layer], ln1_b[layer])
        qkv = linear("qkv", layer, h)  # (B, T, 3C)
        q, k, v = qkv.view(B, T, 3, H, D).permute(2, 0, 3, 1, 4)  # each (B, H, T, D)
        if cache is not None:
            k, v = cache.update(layer, k, v)
        # With a cache holding the past, the new queries see every cached key: causal only within the chunk.
        causal = cache is None or cache.length == 0
        if not causal and T > 1:
            raise ValueError("a KV cache with a non-empty past accepts one new position at a time")
        y = attention(q, k, v, causal and T > 1, drop)  # (B, H, T, D)
        y = y.transpose(1, 2).reshape(B, T, C)  # (B, T, C)
        x = x + F.dropout(linear("attn_out", layer, y), drop, parts.training)
        h = F.layer_norm(x, (C,), ln2_w[layer], ln2_b[layer])
        h = F.gelu(linear("fc", layer, h))  # (B, T, mlp)
        x = x + F.dropout(linear("mlp_down", layer, h), drop, parts.training)
    if cache is not None:
        cache.length += T
    x = F.layer_norm(x, (C,), parts.lnf_w, parts.lnf_b)
    return F.linear(x, parts.head)  # (B, T, V)


def embed(parts: GPTParts, tokens: torch.Tensor, task: torch.Tensor | None, offset: int = 0) -> torch.Tensor:
    """Inputs for predicting ``tokens``: start embedding then tokens shifted right by one, plus positions.

    With ``offset > 0`` (incremental sampling) ``tokens`` are the *inputs* at positions offset.. directly.
    """
    B, T = tokens.shape
    x = parts.wte[tokens[:, :-1]] if offset == 0 else parts.wte[tokens]  # (B, T or T-1, C)
    start = parts.start_embedding(B, task) if offset == 0 or parts.config.task_at_every_position else None
    if parts.config.task_at_every_position:  # t's map on every token's embedding too, not only as the start
        x = x + start  # (B, 1, C) broadcast over positions
    if offset == 0:
        x = torch.cat([start, x], dim=1)  # (B, T, C)
    return x + parts.wpe[offset : offset + T]


def sequence_nll_from_logits(logits: torch.Tensor, tokens: torch.Tensor) -> torch.Tensor:
    """(B,) mean negative log-likelihood in nats per token of each sequence."""
    nll = F.cross_entropy(logits.transpose(1, 2).float(), tokens, reduction="none")  # (B, T)
    return nll.mean(dim=1)


class GPT(nn.Module):
    """M_s / M~_s (and every generated P_s(t) once it is standalone)."""

    def __init__(self, config: GPTConfig):
        super().__init__()
        self.config = config
        self.parts = GPTParts(config)
        self.dense = DenseStack(config)

    def linears(self) -> StackedLinears:
        return StackedLinears({kind: self.dense.weights(kind) for kind in DENSE_KINDS})

    def forward(self, tokens: torch.Tensor, task: torch.Tensor | None = None) -> torch.Tensor:
        """tokens (B, T) int64, task (B, task_dim) or (task_dim,) for conditional models (an unconditional
        one refuses a task: ``refuse_task``) -> logits (B, T, V)."""
        check_tokens(tokens, self.config)
        if self.config.conditional:
            if task is None:
                raise ValueError(
                    f"this model is conditional (task_dim={self.config.task_dim}) and needs a task vector; "
                    f"pass task=(B, {self.config.task_dim})"
                )
            task = check_task(task, self.config.task_dim, batch=tokens.shape[0], like=self.parts.wte)
            task = task.expand(tokens.shape[0], -1) if task.dim() == 1 else task  # one task for every sequence
        return transformer_forward(self.parts, self.linears(), embed(self.parts, tokens, task))

    def sequence_nll(self, tokens: torch.Tensor, task: torch.Tensor | None = None) -> torch.Tensor:
        """(B,) mean nats per token of each sequence."""
        return sequence_nll_from_logits(self(tokens, task), tokens)

    def loss(self, tokens: torch.Tensor, task: torch.Tensor | None = None) -> torch.Tensor:
        """Mean nats per token over the batch (the autoregressive objective)."""
        return self.sequence_nll(tokens, task).mean()

    def step(
        self, inputs: torch.Tensor, cache: KVCache, task: torch.Tensor | None = None
    ) -> torch.Tensor:
        """One incremental position: ``inputs`` (B, 1) is the token fed at position ``cache.length``
        (ignored at position 0, where the start embedding is fed). Returns logits (B, V)."""
        pos = cache.length
        if pos == 0:
            x = self.parts.start_embedding(inputs.shape[0], task) + self.parts.wpe[:1]
        else:  # a model reading t at every position gets it here too
            x = embed(self.parts, inputs, task, offset=pos)
        return transformer_forward(self.parts, self.linears(), x, cache)[:, -1]

    def num_params(self) -> int:
        return sum(p.numel() for p in self.parameters() if p.requires_grad)

    # ---------------------------------------------------------------------------------------------
    # Serialisation: safetensors with per-layer tensor names and the config as JSON metadata.

    def named_tensors(self) -> dict[str, torch.Tensor]:
        """Per-layer names (``blocks.{l}.attn.qkv.weight``...) for files other tools can read."""
        p, c = self.parts, self.config
        out = {"wte.weight": p.wte, "wpe.weight": p.wpe, "ln_f.weight": p.lnf_w, "ln_f.bias": p.lnf_b,
               "head.weight": p.head}
        if c.conditional:
            out["task_proj.weight"], out["task_proj.bias"] = p.task_proj.weight, p.task_proj.bias
        else:
            out["start"] = p.start
        for layer in range(c.n_layer):
            out[f"blocks.{layer}.ln_1.weight"] = p.ln1_w[layer]
            out[f"blocks.{layer}.ln_1.bias"] = p.ln1_b[layer]
            out[f"blocks.{layer}.ln_2.weight"] = p.ln2_w[layer]
            out[f"blocks.{layer}.ln_2.bias"] = p.ln2_b[layer]
            for kind, name in FILE_NAMES.items():
                w, b = self.dense.weights(kind)
                out[f"blocks.{layer}.{name}.weight"] = w[layer]
                out[f"blocks.{layer}.{name}.bias"] = b[layer]
        return {k: v.detach().contiguous().cpu() for k, v in out.items()}

    def save(self, path: str | Path, tokenizer: ImageTokenizer | None = None) -> None:
        """``tokenizer``: the palette or VQ-VAE the tokens came from, recorded so exports render alone."""
        write_tensors(path, self.named_tensors(), FILE_FORMAT, config=self.config.to_json(),
                      **tokenizer_metadata(tokenizer, path))

    @classmethod
    def load(cls, path: str | Path, map_location: str = "cpu") -> GPT:
        """Strict load: every tensor present, no extra tensor, every shape equal to the config's."""
        meta, tensors = read_tensors(
            path, FILE_FORMAT, "write it with GPT.save, or import GPT-2 weights with projectable.hf.from_gpt2",
            map_location,
        )
        model = cls(config_from_metadata(meta, "config", path, lambda c: GPTConfig(**c)))
        model.load_named_tensors(tensors, source=str(path))
        return model

    @torch.no_grad()
    def load_named_tensors(self, tensors: dict[str, torch.Tensor], source: str = "tensors") -> None:
        tensors = upgrade_legacy_file_names(tensors)
        expected = self.named_tensors()
        missing, extra = sorted(set(expected) - set(tensors)), sorted(set(tensors) - set(expected))
        if missing or extra:
            raise ValueError(
                f"{source} does not match this GPTConfig: missing {missing[:5]}, unexpected {extra[:5]}; "
                "load it with the config it was saved with"
            )
        for name, ref in expected.items():
            if tuple(tensors[name].shape) != tuple(ref.shape):
                raise ValueError(
                    f"{source}: tensor {name} has shape {tuple(tensors[name].shape)}, this config expects "
                    f"{tuple(ref.shape)}; the checkpoint was made for another model size"
                )
        p = self.parts
        p.wte.copy_(tensors["wte.weight"])
        p.wpe.copy_(tensors["wpe.weight"])
        p.lnf_w.copy_(tensors["ln_f.weight"])
        p.lnf_b.copy_(tensors["ln_f.bias"])
        p.head.copy_(tensors["head.weight"])
        if self.config.conditional:
            p.task_proj.weight.copy_(tensors["task_proj.weight"])
            p.task_proj.bias.copy_(tensors["task_proj.bias"])
        else:
            p.start.copy_(tensors["start"])
        for layer in range(self.config.n_layer):
            p.ln1_w[layer].copy_(tensors[f"blocks.{layer}.ln_1.weight"])
            p.ln1_b[layer].copy_(tensors[f"blocks.{layer}.ln_1.bias"])
            p.ln2_w[layer].copy_(tensors[f"blocks.{layer}.ln_2.weight"])
            p.ln2_b[layer].copy_(tensors[f"blocks.{layer}.ln_2.bias"])
            for kind, name in FILE_NAMES.items():
                w, b = self.dense.weights(kind)
                w[layer].copy_(tensors[f"blocks.{layer}.{name}.weight"])
                b[layer].copy_(tensors[f"blocks.{layer}.{name}.bias"])


def upgrade_legacy_file_names(tensors: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """GPT.save tensors with legacy names (``blocks.{l}.mlp.proj.*``) under today's names."""
    out = {}
    for name, tensor in tensors.items():
        parts = name.split(".")
        if len(parts) == 5 and parts[0] == "blocks" and ".".join(parts[2:4]) in LEGACY_FILE_NAMES:
            name = ".".join([*parts[:2], LEGACY_FILE_NAMES[".".join(parts[2:4])], parts[4]])
            if name in tensors:
                raise ValueError(f"tensors hold both {name} and its legacy name; keep one of them")
        out[name] = tensor
    return out
