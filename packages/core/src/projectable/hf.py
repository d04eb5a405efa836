"""Export to, and import from, ``transformers``' ``GPT2LMHeadModel`` (issue: "a generated model runs anywhere
GPT-2 runs, and a pretrained GPT-2 can serve as a source"; Sec. 3.3 projects from pretrained models).

Our GPT and GPT-2 share the block layout (pre-LayerNorm, fused qkv, 4x MLP, learned positions, eps 1e-5). Two
differences are bridged here:

* **Start of sequence.** Our position 0 receives a learned start embedding (plus ``wpe[0]``) and predicts
  ``x_0``. GPT-2 has no such vector, so the export appends one token: vocabulary ``V + 1``, token id ``V`` is
  the start token, its ``wte`` row is our start embedding (GPT-2 adds ``wpe[0]`` itself, as we do) and its
  ``lm_head`` row is zero. Then ``hf(cat([V], x[:, :-1])).logits[..., :V] == our_gpt(x)``. The generation
  config suppresses token ``V``, so ``hf.generate`` never emits it.
* **Weights layout.** GPT-2 stores its dense weights as ``Conv1D`` ``(in, out)``; ours are ``(out, in)``.

The head is exported untied (``tie_word_embeddings=False``), as ours is. The activation is exported as
``"gelu"``, which ``transformers`` maps to the exact (erf) GELU we use. Released GPT-2 checkpoints use the tanh
approximation ``"gelu_new"``; importing them needs ``allow_gelu_approximation=True`` and then gives logits that
differ by that approximation (about 1e-3 relative), since our GPT always uses the exact GELU.

``transformers`` is an optional extra (``pip install projectable-core[hf]``), imported only inside functions.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import torch

from projectable.gpt import GPT, GPTConfig

if TYPE_CHECKING:
    from transformers import GPT2LMHeadModel

# GPT-2's names for our dense operators (all Conv1D, weight (in, out)).
_HF_DENSE = {"qkv": "attn.c_attn", "attn": "attn.c_proj", "fc": "mlp.c_fc", "proj": "mlp.c_proj"}
_EXACT_GELU = ("gelu",)
_APPROX_GELU = ("gelu_new", "gelu_pytorch_tanh", "gelu_fast", "gelu_python_tanh")
# Written into the exported config so that ``from_gpt2`` restores our vocabulary (drops the start token row).
VOCAB_KEY = "projectable_vocab_size"


def _transformers():
    try:
        import transformers
    except ImportError as error:  # pragma: no cover - depends on the environment
        raise ImportError(
            "GPT-2 export/import needs the optional dependency `transformers`; "
            "install it with `pip install projectable-core[hf]` (or `pip install transformers`)"
        ) from error
    return transformers


@torch.no_grad()
def to_gpt2(model: GPT) -> GPT2LMHeadModel:
    """A ``GPT2LMHeadModel`` computing the same distribution as ``model`` (unconditional M_s or a generated P_s).

    Vocabulary ``V + 1``: feed token ``V`` first, i.e. ``hf(cat([V], x[:, :-1])).logits[..., :V] == model(x)``.
    """
    transformers = _transformers()
    config = model.config
    if config.conditional:
        raise ValueError(
            f"this GPT is conditional (task_dim={config.task_dim}): its first embedding is a linear map of a task "
            "vector, which GPT-2 cannot express; export an unconditional model instead (a generated P_s(t) is "
            "unconditional: ProjectableGPT.generate(task_vector, scale))"
        )
    V, C, L = config.vocab_size, config.n_embd, config.n_layer
    hf_config = transformers.GPT2Config(
        vocab_size=V + 1,
        n_positions=config.block_size,
        n_embd=C,
        n_layer=L,
        n_head=config.n_head,
        n_inner=config.mlp_width,
        activation_function="gelu",  # exact GELU (F.gelu), as in our blocks
        resid_pdrop=config.dropout,
        embd_pdrop=config.dropout,
        attn_pdrop=config.dropout,
        layer_norm_epsilon=1e-5,
        scale_attn_weights=True,
        scale_attn_by_inverse_layer_idx=False,
        reorder_and_upcast_attn=False,
        tie_word_embeddings=False,
        bos_token_id=V,
        eos_token_id=None,
        **{VOCAB_KEY: V},
    )
    ref = model.parts.wte
    hf = transformers.GPT2LMHeadModel(hf_config).to(device=ref.device, dtype=ref.dtype)
    parts = model.parts
    state = {
        "transformer.wte.weight": torch.cat([parts.wte, parts.start.unsqueeze(0)]),  # (V + 1, C)
        "transformer.wpe.weight": parts.wpe,
        "transformer.ln_f.weight": parts.lnf_w,
        "transformer.ln_f.bias": parts.lnf_b,
        "lm_head.weight": torch.cat([parts.head, parts.head.new_zeros(1, C)]),  # (V + 1, C), start row 0
    }
    for layer in range(L):
        prefix = f"transformer.h.{layer}"
        state[f"{prefix}.ln_1.weight"], state[f"{prefix}.ln_1.bias"] = parts.ln1_w[layer], parts.ln1_b[layer]
        state[f"{prefix}.ln_2.weight"], state[f"{prefix}.ln_2.bias"] = parts.ln2_w[layer], parts.ln2_b[layer]
        for kind, name in _HF_DENSE.items():
            w, b = model.dense.weights(kind)
            state[f"{prefix}.{name}.weight"] = w[layer].t()  # (out, in) -> Conv1D (in, out)
            state[f"{prefix}.{name}.bias"] = b[layer]
    _copy_into(hf, state, "the exported GPT-2")
    hf.generation_config.bos_token_id = V
    hf.generation_config.suppress_tokens = [V]  # the start token is an input only
    return hf.train(model.training)


def save_gpt2(model: GPT, directory: str | Path) -> Path:
    """Export ``model`` (see ``to_gpt2``) and write it with ``save_pretrained`` (config.json, safetensors)."""
    directory = Path(directory)
    to_gpt2(model).save_pretrained(str(directory))
    return directory


def load_gpt2(directory: str | Path) -> GPT2LMHeadModel:
    """A ``GPT2LMHeadModel`` from a local directory (never downloads)."""
    transformers = _transformers()
    directory = Path(directory)
    if not (directory / "config.json").exists():
        raise ValueError(
            f"{directory} holds no GPT-2 model (no config.json); pass a directory written by save_gpt2 or "
            "save_pretrained"
        )
    return transformers.GPT2LMHeadModel.from_pretrained(str(directory), local_files_only=True)


@torch.no_grad()
def from_gpt2(
    hf_model: GPT2LMHeadModel | str | Path,
    start_token_id: int | None = None,
    vocab_size: int | None = None,
    dropout: float | None = None,
    allow_gelu_approximation: bool = False,
) -> GPT:
    """Our GPT from a ``GPT2LMHeadModel`` (or a local directory holding one).

    * ``start_token_id``: the token whose ``wte`` row becomes our start embedding (default ``config.bos_token_id``).
    * ``vocab_size``: keep the first ``vocab_size`` tokens (default: the value ``to_gpt2`` wrote, else the whole
      GPT-2 vocabulary). A model exported by ``to_gpt2`` thus comes back with its own vocabulary.
    * ``dropout``: override, needed only when GPT-2's three dropout rates differ.
    * ``allow_gelu_approximation``: accept a tanh-approximate GELU (released GPT-2 checkpoints); our blocks use the
      exact GELU, so logits then differ slightly.
    """
    if isinstance(hf_model, (str, Path)):
        hf_model = load_gpt2(hf_model)
    hf_config = hf_model.config
    if getattr(hf_config, "model_type", None) != "gpt2" or not hasattr(hf_model, "lm_head"):
        raise ValueError(
            f"expected a transformers GPT2LMHeadModel, got {type(hf_model).__name__}; load it with "
            "GPT2LMHeadModel.from_pretrained(...)"
        )
    _check_gpt2_config(hf_config, allow_gelu_approximation)
    hf_vocab = hf_config.vocab_size
    start_token_id = hf_config.bos_token_id if start_token_id is None else start_token_id
    if start_token_id is None or not 0 <= int(start_token_id) < hf_vocab:
        raise ValueError(
            f"start_token_id={start_token_id} is not a token of this GPT-2 (vocabulary {hf_vocab}); pass the id of "
            "the token that starts every sequence, e.g. start_token_id=hf_model.config.bos_token_id"
        )
    if vocab_size is None:
        vocab_size = getattr(hf_config, VOCAB_KEY, None) or hf_vocab
    if not 0 < vocab_size <= hf_vocab:
        raise ValueError(f"vocab_size={vocab_size} must lie in 1..{hf_vocab} (the GPT-2 vocabulary)")
    rates = {hf_config.resid_pdrop, hf_config.embd_pdrop, hf_config.attn_pdrop}
    if dropout is None:
        if len(rates) != 1:
            raise ValueError(
                f"GPT-2's dropout rates differ (resid/embd/attn = {hf_config.resid_pdrop}/{hf_config.embd_pdrop}/"
                f"{hf_config.attn_pdrop}) but our GPT has one; pass dropout=... to choose it"
            )
        dropout = float(rates.pop())
    C = hf_config.n_embd
    inner = hf_config.n_inner or 4 * C
    config = GPTConfig(
        vocab_size=vocab_size,
        block_size=hf_config.n_positions,
        n_layer=hf_config.n_layer,
        n_head=hf_config.n_head,
        n_embd=C,
        mlp_ratio=inner // C,
        dropout=dropout,
        task_dim=0,
    )
    state = hf_model.state_dict()
    expected = _expected_gpt2_shapes(config, hf_vocab, inner)
    tensors = {name: state[name] for name in state if name in expected}
    missing = sorted(set(expected) - set(tensors))
    if missing:
        raise ValueError(f"the GPT-2 model lacks {missing[:5]}; it is not a standard GPT2LMHeadModel")
    for name, shape in expected.items():
        if tuple(tensors[name].shape) != shape:
            raise ValueError(
                f"GPT-2 tensor {name} has shape {tuple(tensors[name].shape)}, its config implies {shape}; "
                "the checkpoint and its config.json disagree"
            )
    ref = tensors["transformer.wte.weight"]
    model = GPT(config).to(device=ref.device, dtype=ref.dtype)
    wte = tensors["transformer.wte.weight"]
    ours = {
        "wte.weight": wte[:vocab_size],
        "start": wte[int(start_token_id)],
        "wpe.weight": tensors["transformer.wpe.weight"],
        "ln_f.weight": tensors["transformer.ln_f.weight"],
        "ln_f.bias": tensors["transformer.ln_f.bias"],
        "head.weight": tensors["lm_head.weight"][:vocab_size],
    }
    names = {"qkv": "attn.qkv", "attn": "attn.out", "fc": "mlp.fc", "proj": "mlp.proj"}
    for layer in range(config.n_layer):
        prefix = f"transformer.h.{layer}"
        for norm in ("ln_1", "ln_2"):
            for what in ("weight", "bias"):
                ours[f"blocks.{layer}.{norm}.{what}"] = tensors[f"{prefix}.{norm}.{what}"]
        for kind, hf_name in _HF_DENSE.items():
            ours[f"blocks.{layer}.{names[kind]}.weight"] = tensors[f"{prefix}.{hf_name}.weight"].t()  # -> (out, in)
            ours[f"blocks.{layer}.{names[kind]}.bias"] = tensors[f"{prefix}.{hf_name}.bias"]
    model.load_named_tensors(ours, source="the GPT-2 model")
    return model.train(hf_model.training)


def _check_gpt2_config(hf_config, allow_gelu_approximation: bool) -> None:
    """Refuse GPT-2 variants whose computation our blocks do not reproduce."""
    act = hf_config.activation_function
    if act not in _EXACT_GELU and not (allow_gelu_approximation and act in _APPROX_GELU):
        hint = (
            "pass allow_gelu_approximation=True to import it with the exact GELU (logits change slightly)"
            if act in _APPROX_GELU
            else "only GELU models can be imported"
        )
        raise ValueError(f"GPT-2 activation {act!r} differs from our exact GELU; {hint}")
    if not hf_config.scale_attn_weights or hf_config.scale_attn_by_inverse_layer_idx:
        raise ValueError(
            "this GPT-2 scales attention differently (scale_attn_weights=False or scale_attn_by_inverse_layer_idx"
            "=True); only the standard 1/sqrt(head size) scaling can be imported"
        )
    if hf_config.add_cross_attention:
        raise ValueError("this GPT-2 has cross-attention layers, which our decoder lacks; import a plain GPT-2")
    if abs(hf_config.layer_norm_epsilon - 1e-5) > 1e-12:
        raise ValueError(
            f"GPT-2 layer_norm_epsilon={hf_config.layer_norm_epsilon}, our blocks use 1e-5; only eps=1e-5 imports "
            "exactly"
        )
    inner = hf_config.n_inner or 4 * hf_config.n_embd
    if inner % hf_config.n_embd:
        raise ValueError(
            f"GPT-2 n_inner={inner} is not a multiple of n_embd={hf_config.n_embd}; our MLP width is "
            "mlp_ratio * n_embd with an integer ratio"
        )


def _expected_gpt2_shapes(config: GPTConfig, hf_vocab: int, inner: int) -> dict[str, tuple[int, ...]]:
    C = config.n_embd
    shapes = {
        "transformer.wte.weight": (hf_vocab, C),
        "transformer.wpe.weight": (config.block_size, C),
        "transformer.ln_f.weight": (C,),
        "transformer.ln_f.bias": (C,),
        "lm_head.weight": (hf_vocab, C),
    }
    dense = {"attn.c_attn": (C, 3 * C), "attn.c_proj": (C, C), "mlp.c_fc": (C, inner), "mlp.c_proj": (inner, C)}
    for layer in range(config.n_layer):
        prefix = f"transformer.h.{layer}"
        for norm in ("ln_1", "ln_2"):
            shapes[f"{prefix}.{norm}.weight"] = shapes[f"{prefix}.{norm}.bias"] = (C,)
        for name, (in_dim, out_dim) in dense.items():
            shapes[f"{prefix}.{name}.weight"] = (in_dim, out_dim)
            shapes[f"{prefix}.{name}.bias"] = (out_dim,)
    return shapes


def _copy_into(hf_model, state: dict[str, torch.Tensor], what: str) -> None:
    """Copy every tensor by name into ``hf_model``, asserting shapes; every parameter must be covered."""
    params = dict(hf_model.named_parameters())
    uncovered = sorted(set(params) - set(state))
    unknown = sorted(set(state) - set(params))
    if uncovered or unknown:  # a transformers release with another GPT-2 layout
        raise ValueError(
            f"{what}: GPT-2 parameters not covered {uncovered[:5]}, unknown names {unknown[:5]}; this transformers "
            "version lays out GPT2LMHeadModel differently from the one projectable supports"
        )
    for name, tensor in state.items():
        if tuple(params[name].shape) != tuple(tensor.shape):
            raise ValueError(f"{what}: {name} has shape {tuple(params[name].shape)}, got {tuple(tensor.shape)}")
        params[name].copy_(tensor)


__all__ = ["VOCAB_KEY", "from_gpt2", "load_gpt2", "save_gpt2", "to_gpt2"]
