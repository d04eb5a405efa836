"""Export to, and import from, ``transformers``' ``GPT2LMHeadModel`` (issue: "a generated model runs anywhere
GPT-2 runs, and a pretrained GPT-2 can serve as a source"; Sec. 3.3 projects from pretrained models).

Our GPT and GPT-2 share the block layout (pre-LayerNorm, fused qkv, 4x MLP, learned positions, eps 1e-5). Two
differences are bridged here:

* **Start of sequence.** Our position 0 receives a learned start embedding (plus ``wpe[0]``) and predicts
  ``x_0``. GPT-2 has no such vector, so the export appends one token: vocabulary ``V + 1``, token id ``V`` is
  the start token, its ``wte`` row is our start embedding (GPT-2 adds ``wpe[0]`` itself, as we do). Then
  ``hf(cat([V], x[:, :-1])).logits[..., :V] == our_gpt(x)``, and the start token's logit is ``START_LOGIT``
  (-2e4) for every input, so transformers' own softmax over all ``V + 1`` tokens is ours: the exported model
  stands alone, whatever sampler runs it (``exclude_start_token`` shows how the final norm and head do it).
* **Weights layout.** GPT-2 stores its dense weights as ``Conv1D`` ``(in, out)``; ours are ``(out, in)``.

The head is exported untied (``tie_word_embeddings=False``), as ours is. The activation is exported as
``"gelu"``, which ``transformers`` maps to the exact (erf) GELU we use. Released GPT-2 checkpoints use the tanh
approximation ``"gelu_new"``; importing them needs ``allow_gelu_approximation=True`` and then gives logits that
differ by that approximation (about 1e-3 relative), since our GPT always uses the exact GELU.

``transformers`` is an optional extra (``pip install projectable-core[hf]``), imported only inside functions.
"""

from __future__ import annotations

import json
import math
import shutil
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, NamedTuple

import torch

from projectable.gpt import FILE_NAMES, GPT, GPTConfig
from projectable.io import respect_umask

if TYPE_CHECKING:
    from transformers import GPT2LMHeadModel

# GPT-2's names for our dense operators (all Conv1D, weight (in, out)).
_HF_DENSE = {"qkv": "attn.c_attn", "attn_out": "attn.c_proj", "fc": "mlp.c_fc", "mlp_down": "mlp.c_proj"}
_EXACT_GELU = ("gelu",)
_APPROX_GELU = ("gelu_new", "gelu_pytorch_tanh", "gelu_fast", "gelu_python_tanh")
# Written into the exported config so that ``from_gpt2`` restores our vocabulary (drops the start token row).
VOCAB_KEY = "projectable_vocab_size"
# The start token's logit in every exported forward: exp(-2e4) is 0 in every float format, and -2e4 (unlike
# -inf) is finite in float16 and survives temperature scaling without NaNs.
START_LOGIT = -2e4
# Files save_pretrained and the model card write; extra_files may not replace them.
_EXPORT_FILES = ("config.json", "generation_config.json", "model.safetensors", "README.md")


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

    Vocabulary ``V + 1``: feed token ``V`` first, i.e. ``hf(cat([V], x[:, :-1])).logits[..., :V] == model(x)``;
    the logit of token ``V`` is ``START_LOGIT`` for every input.
    """
    transformers = _transformers()
    config = model.config
    if config.conditional:
        reads = ("its first embedding is a linear map of a task vector" if config.task_input == "first" else
                 "a linear map of a task vector is its first embedding and is added to every token's embedding "
                 f"(task_input={config.task_input!r})")
        raise ValueError(
            f"this GPT is conditional (task_dim={config.task_dim}): {reads}, which GPT-2 cannot express; export an "
            "unconditional model instead (a generated P_s(t) is unconditional: ProjectableGPT.generate(task_vector, "
            "scale))"
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
    final = exclude_start_token(parts.lnf_w, parts.lnf_b, parts.head)
    state = {
        "transformer.wte.weight": torch.cat([parts.wte, parts.start.unsqueeze(0)]),  # (V + 1, C)
        "transformer.wpe.weight": parts.wpe,
        "transformer.ln_f.weight": final.norm_weight,
        "transformer.ln_f.bias": final.norm_bias,
        "lm_head.weight": torch.cat([final.head, final.start_row.unsqueeze(0)]),  # (V + 1, C)
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
    generation = hf.generation_config
    generation.bos_token_id = generation.decoder_start_token_id = V  # generate() with no input starts here
    # One whole image: the start token and block_size image tokens. Sampling as ``projectable.sample`` does
    # by default (temperature 1, no top-k); a caller's arguments override these.
    generation.max_length = config.block_size + 1
    generation.do_sample, generation.top_k = True, 0
    generation.suppress_tokens = [V]  # redundant with START_LOGIT; kept for samplers that read the config
    return hf.train(model.training)


class FinalNormAndHead(NamedTuple):
    """The export's final LayerNorm (weight, bias: (C,)), image-token head rows (V, C) and start row (C,)."""

    norm_weight: torch.Tensor
    norm_bias: torch.Tensor
    head: torch.Tensor
    start_row: torch.Tensor


@torch.no_grad()
def exclude_start_token(weight: torch.Tensor, bias: torch.Tensor, head: torch.Tensor) -> FinalNormAndHead:
    """A final norm and head whose image-token logits equal ``head @ LN(x)`` and whose start row gives
    ``START_LOGIT`` for every x, in exact arithmetic, for any trained weights.

    The final norm's output is ``h = g * z + b`` where ``z = (x - mean) / sqrt(var + eps)`` sums to zero for
    every x. A head row ``r = c / g`` therefore gives ``c * sum(z) + c * S = c * S`` with ``S = sum(b / g)``,
    whatever x is: the start row is ``(START_LOGIT / S) / g``.

    * A channel with ``g_i = 0`` is constant (``h_i = b_i``): its bias becomes 1 with ``b_i`` folded into the
      head column, and the start row reads only such channels.
    * ``|S| >= 1`` (the usual trained model): norm and image rows stay as they are, so the export's image
      logits are bit-identical to ours.
    * ``|S| < 1`` (e.g. an untrained ``b = 0``) would need a huge start row, so the bias is shifted to
      ``b + e g`` with ``e = (±1 - S) / C``, making ``S = ±1``. The shift adds ``e (H_v . g)`` to image
      logit v; subtracting ``e (H_v . g) / S`` times ``1 / g`` from head row v removes it (``1/g * g = 1``
      meets z in ``sum(z) = 0``, and the shifted bias in exactly ``S``). Float32 rounding then costs
      1e-6..1e-5 in a logit.
    """
    dtype = head.dtype
    g, b, H = weight.double(), bias.double(), head.double()  # (C,), (C,), (V, C)
    zero = g == 0
    if zero.any():
        b = torch.where(zero, torch.ones_like(b), b)
        H = torch.where(zero, head.double() * bias.double(), H)  # column i reads the constant channel b_i = 1
        start = zero.double() * (START_LOGIT / int(zero.sum()))
        return FinalNormAndHead(*(t.to(dtype) for t in (g, b, H, start)))
    inverse = 1.0 / g
    total = float(inverse @ b)  # S
    if abs(total) < 1.0:
        target = 1.0 if total >= 0 else -1.0
        shift = (target - total) / g.numel()
        H = H - shift * (H @ g)[:, None] / target * inverse[None, :]
        b, total = b + shift * g, target
    start = START_LOGIT / total * inverse
    return FinalNormAndHead(*(t.to(dtype) for t in (g, b, H, start)))


@dataclass(frozen=True)
class ModelCard:
    """Optional provenance written into the export's README.md; every field may be left out."""

    task_vector: Sequence[float] | None = None  # t of a generated P_s(t)
    scale: float | None = None  # s of a generated P_s (width relative to its source)
    source_run: str | None = None  # e.g. an MLflow run id or run directory of the source / projector
    commit: str | None = None  # the code's git commit
    title: str | None = None  # the card's heading; by default it names the kind of model

    def render(self, config: GPTConfig, num_params: int, extra_files: Sequence[str] = ()) -> str:
        """The README.md of an export of a model with ``config``."""
        V, T = config.vocab_size, config.block_size
        side = math.isqrt(T)
        grid = f"{side} x {side} tokens in raster order" if side * side == T else f"{T} tokens"
        reshape = f"Reshape each sequence to a {side} x {side} grid" if side * side == T else "Lay out the tokens"
        if self.title:
            title = self.title
        elif self.task_vector is not None:
            scale = "" if self.scale is None else f" at scale {_fraction(self.scale)}"
            title = f"Projectable Models: a generated small GPT P_s(t){scale}"
        else:
            title = "Projectable Models: an image-token GPT"
        provenance = [("task vector t", json.dumps([float(v) for v in self.task_vector]))
                      if self.task_vector is not None else None,
                      ("scale s", _fraction(self.scale)) if self.scale is not None else None,
                      ("source run", self.source_run) if self.source_run else None,
                      ("commit", self.commit) if self.commit else None]
        provenance = [row for row in provenance if row]
        lines = [
            "---", "library_name: transformers", "tags:", "- gpt2", "- projectable-models", "---", "",
            f"# {title}", "",
            "An autoregressive image-token Transformer from *Projectable Models: One-Shot Generation of Small "
            "Specialized Transformers from Large Ones* (Zhmoginov, Lee, Sandler, 2024), exported from the "
            "`projectable` package as a plain `transformers` GPT-2 (`GPT2LMHeadModel`). "
            + ("It was generated in one shot from a large source model for the task vector below (Sec. 2.2): "
               "it needs neither the source nor the task vector to run."
               if self.task_vector is not None else ""),
            "",
            "| | |", "|---|---|",
            f"| image | {grid} (`block_size` = {T}) |",
            f"| vocabulary | {V} image tokens (0..{V - 1}) + start token {V} |",
            f"| size | width {config.n_embd}, {config.n_layer} layers, {config.n_head} heads, "
            f"{num_params:,} parameters |",
            *[f"| {name} | {value} |" for name, value in provenance],
            "",
            "## Sample",
            "",
            "```python",
            "from transformers import GPT2LMHeadModel",
            "",
            'model = GPT2LMHeadModel.from_pretrained("path/to/this/folder")',
            f"tokens = model.generate(num_return_sequences=16)[:, 1:]   # (16, {T}): drop the start token",
            "```",
            "",
            f"`generation_config.json` starts every sequence with token {V} and stops after one whole image "
            f"({T} tokens), sampling at temperature 1 without top-k; `generate`'s arguments (temperature, top_k, "
            f"a prompt of the start token and the first image tokens) override these. The start token's logit "
            f"is {START_LOGIT:g} for every input, so no sampler draws it. GPT-2's positions end at {T}: asking "
            f"for more tokens than complete the image (`max_new_tokens` beyond {T} minus the prompt's image "
            "tokens) runs past them and fails with an IndexError.",
            "",
            "## Render",
            "",
            f"{reshape} and map each token to its colour (a SynthMNIST palette, "
            "`projectable_data.Palette.load(...).decode(tokens)`) or decode the grid with the VQ-VAE the "
            "model was trained on (`projectable_vqvae`).",
        ]
        if extra_files:
            shipped = ", ".join(f"`{name}`" for name in extra_files)
            lines += ["", f"Files shipped with the model: {shipped}."]
        if "palette.json" not in extra_files and "vqvae.safetensors" not in extra_files:
            lines += ["", "Neither the palette nor the VQ-VAE the tokens came from ships with this export; export "
                      "again with them (`projectable export-gpt2` finds them in a trained model's file, or "
                      "pass `--palette` / `--decoder`) to get a recipe that renders the tokens."]
        if "palette.json" in extra_files:
            lines += ["", "With transformers, numpy and Pillow only:", "", "```python", *RENDER_RECIPE.splitlines(), "```"]
        if "vqvae.safetensors" in extra_files:
            lines += ["", "`vqvae.safetensors` is the VQ-VAE the tokens come from (its decoder turns a token grid into "
                      "an image; `vqvae.json` gives the grid and image shape). With `projectable_vqvae` (the "
                      "repository's `packages/vqvae`), transformers and Pillow:", "", "```python",
                      *VQVAE_RENDER_RECIPE.splitlines(), "```"]
        lines += [
            "",
            "## No tokenizer",
            "",
            "No `transformers` tokenizer ships, on purpose: the tokens are image tokens (palette colours or VQ-VAE "
            "codes), not text, so there is no text to encode. Pass token ids to the model directly and render "
            "them as above; `AutoTokenizer.from_pretrained` on this folder would build an empty GPT-2 text "
            "tokenizer that matches nothing here.",
            "",
            "## Exactness",
            "",
            f"For tokens `x` of one image, `model(cat([{V}], x[:-1])).logits[..., :{V}]` equals the `projectable` "
            "model's logits (float rounding aside); the final LayerNorm and head are built so that the start "
            "token's logit is constant without changing any image token's (`projectable.hf.exclude_start_token`). "
            "`projectable.hf.from_gpt2` reads the folder back into a `projectable.GPT`.",
            "",
        ]
        return "\n".join(lines)


# Renders samples of an export that ships palette.json (the same lines stand in packages/core/README.md).
RENDER_RECIPE = """\
import json
import numpy as np
from PIL import Image
from transformers import GPT2LMHeadModel

folder = "path/to/this/folder"
model = GPT2LMHeadModel.from_pretrained(folder)
tokens = model.generate(num_return_sequences=4)[:, 1:].numpy()      # (4, T): drop the start token
centres = np.asarray(json.load(open(f"{folder}/palette.json")))    # (K, 3) RGB in [-1, 1]
side = int(len(tokens[0]) ** 0.5)
pixels = ((centres[tokens] + 1) * 127.5).round().astype(np.uint8)  # (4, T, 3)
row = np.concatenate(pixels.reshape(-1, side, side, 3), axis=1)    # the 4 images side by side
zoom = max(1, 128 // side)                                         # each image about 128 px high
Image.fromarray(row).resize((row.shape[1] * zoom, side * zoom), Image.NEAREST).save("samples.png")
"""


# Renders samples of an export that ships its VQ-VAE (``projectable.vqvae_render``; also in packages/core/README.md).
VQVAE_RENDER_RECIPE = """\
import json
import numpy as np
from PIL import Image
from projectable_vqvae import VQVAE
from transformers import GPT2LMHeadModel

folder = "path/to/this/folder"
model = GPT2LMHeadModel.from_pretrained(folder)
h, w = json.load(open(f"{folder}/vqvae.json"))["token_grid"]
tokens = model.generate(num_return_sequences=4)[:, 1:]           # (4, h * w): drop the start token
vqvae = VQVAE.load(f"{folder}/vqvae.safetensors")
images = vqvae.decode(tokens.reshape(4, h, w))                    # (4, 3, H, W) in [-1, 1], raster order
pixels = ((images + 1) * 127.5).round().clamp(0, 255).byte().permute(0, 2, 3, 1).numpy()  # (4, H, W, 3)
row = np.concatenate(list(pixels), axis=1)                         # the 4 images side by side
zoom = max(1, 128 // row.shape[0])                                 # each image about 128 px high
Image.fromarray(row).resize((row.shape[1] * zoom, row.shape[0] * zoom), Image.NEAREST).save("samples.png")
"""


def _fraction(scale: float) -> str:
    return f"1/{round(1 / scale)}" if scale < 1 and abs(1 / scale - round(1 / scale)) < 1e-9 else f"{scale:g}"


def save_gpt2(
    model: GPT,
    directory: str | Path,
    card: ModelCard | None = None,
    extra_files: Mapping[str, bytes | Path] | None = None,
    palette=None,
    decoder=None,
) -> Path:
    """Export ``model`` (see ``to_gpt2``) into a folder: ``save_pretrained``'s config.json,
    generation_config.json and model.safetensors, a model card README.md (provenance from ``card``) and what
    turns its tokens into pixels, with the card's recipe that renders them:

    * ``palette``: (K, 3) RGB centres in [-1, 1] (``projectable_data.Palette.centres``) or a palette file
      (``palette.json``, a data cache's ``.npz``), written as ``palette.json``; the recipe needs transformers,
      numpy and Pillow only. At least one colour per token, else refused.
    * ``decoder``: a VQ-VAE file, an export folder holding one, or a ``vqvae_render.TokenDecoder``, shipped as
      ``vqvae.safetensors`` with ``vqvae.json``; its recipe also needs ``projectable_vqvae``.

    ``extra_files``: any other files, name -> bytes or a file to copy."""
    from projectable.render import PALETTE_FILE, load_palette, palette_json
    from projectable.tokenizer import check_palette
    from projectable.vqvae_render import VQVAE_FILE, VQVAE_INFO, TokenDecoder, export_files, load_decoder

    if palette is not None and decoder is not None:
        raise ValueError("pass palette (palette tokens) or decoder (VQ-VAE tokens), not both")
    extra_files = dict(extra_files or {})
    reserved = {PALETTE_FILE: "palette=", VQVAE_FILE: "decoder=", VQVAE_INFO: "decoder="}
    for name in extra_files:
        if Path(name).name != name or name in ("", ".", "..") or name in _EXPORT_FILES:
            raise ValueError(
                f"extra_files name {name!r} must be a plain file name other than {', '.join(_EXPORT_FILES)}"
            )
        if name in reserved:
            raise ValueError(f"extra_files name {name!r} is written by save_gpt2 itself: pass {reserved[name]}... "
                             "instead, which also writes the model card's render recipe")
    if palette is not None:
        centres = load_palette(palette) if isinstance(palette, (str, Path)) else palette
        centres = check_palette(centres, model.config.vocab_size)
        extra_files[PALETTE_FILE] = palette_json(centres)
    if decoder is not None:
        decoder = decoder if isinstance(decoder, TokenDecoder) else load_decoder(decoder)
        extra_files.update(export_files(decoder, model.config))  # refuses a decoder that does not fit the model
    directory = Path(directory)
    to_gpt2(model).save_pretrained(str(directory))
    for name, content in extra_files.items():
        if isinstance(content, (bytes, bytearray)):
            (directory / name).write_bytes(content)
        else:
            shutil.copyfile(content, directory / name)
    card = card or ModelCard()
    (directory / "README.md").write_text(card.render(model.config, model.num_params(), sorted(extra_files)))
    for file in directory.iterdir():
        respect_umask(file)  # safetensors writes model.safetensors 0600 whatever the umask
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
    for layer in range(config.n_layer):
        prefix = f"transformer.h.{layer}"
        for norm in ("ln_1", "ln_2"):
            for what in ("weight", "bias"):
                ours[f"blocks.{layer}.{norm}.{what}"] = tensors[f"{prefix}.{norm}.{what}"]
        for kind, hf_name in _HF_DENSE.items():
            ours[f"blocks.{layer}.{FILE_NAMES[kind]}.weight"] = tensors[f"{prefix}.{hf_name}.weight"].t()  # -> (out, in)
            ours[f"blocks.{layer}.{FILE_NAMES[kind]}.bias"] = tensors[f"{prefix}.{hf_name}.bias"]
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


__all__ = [
    "START_LOGIT",
    "VOCAB_KEY",
    "FinalNormAndHead",
    "ModelCard",
    "exclude_start_token",
    "from_gpt2",
    "load_gpt2",
    "save_gpt2",
    "to_gpt2",
]
