"""Token sequences to pictures for VQ-VAE tokens (the ImageNet track, Sec. 3.1 and App. C.2): a sequence of
T = h * w tokens is an h x w grid of codebook indices in raster order (as ``projectable_data.ImageNetTokens``
flattens the grids), which the VQ-VAE's decoder turns into a (3, d * h, d * w) image, d its downsampling.

A GPT-2 export ships the VQ-VAE beside the model: ``vqvae.safetensors`` is the file ``VQVAE.save`` wrote,
byte for byte (the tokenizer the model's tokens came from; its encoder comes along, so images can also be
tokenised, e.g. into prompts), and ``vqvae.json`` records what the model card's recipe and ``load_decoder``
need without loading it: codebook size, token grid, image shape, the VQ-VAE config and the file's sha256.

``projectable_vqvae`` (the repository's ``packages/vqvae``) is imported inside functions only: the core package
installs and runs without it.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import torch
from einops import rearrange

from projectable.gpt import GPTConfig
from projectable.tokenizer import sha256

VQVAE_FILE = "vqvae.safetensors"  # beside a GPT-2 export
VQVAE_INFO = "vqvae.json"
INFO_FORMAT = "projectable.vqvae_decoder"
_HINT = "pass a VQ-VAE file (projectable_vqvae.VQVAE.save) or a folder written by export-gpt2 --decoder"


class TokenDecoder(NamedTuple):
    """A VQ-VAE read for decoding, where it was read from, and the token grid an export recorded for it."""

    vqvae: Any  # projectable_vqvae.VQVAE, in eval mode
    file: Path  # the VQ-VAE file
    grid: tuple[int, int] | None  # (h, w) from an export's vqvae.json; None for a bare VQ-VAE file


def _vqvae_package():
    try:
        import projectable_vqvae
    except ImportError as error:
        raise ImportError(
            "decoding VQ-VAE tokens needs the package projectable-vqvae (packages/vqvae of the Projectable Models "
            "repository: pip install packages/vqvae)"
        ) from error
    return projectable_vqvae


def _read_info(info: Path, file: Path) -> tuple[int, int]:
    """The token grid of an export's vqvae.json, after checking that it describes ``file``."""
    try:
        meta = json.loads(info.read_text())
        grid = tuple(int(v) for v in meta["token_grid"])
        recorded = str(meta["sha256"])
        if meta.get("format") != INFO_FORMAT or len(grid) != 2 or min(grid) < 1:
            raise ValueError(f"format {meta.get('format')!r}, token_grid {meta['token_grid']}")
    except (OSError, UnicodeDecodeError, ValueError, KeyError, TypeError) as err:
        raise ValueError(
            f"decoder description {info} is not readable ({type(err).__name__}: {err}); export the model again "
            f"with export-gpt2 --decoder, or pass the VQ-VAE file itself"
        ) from None
    if sha256(file) != recorded:
        raise ValueError(
            f"decoder file {file} differs from the one {info} describes (sha256 mismatch): it was replaced or "
            "damaged; export the model again with export-gpt2 --decoder"
        )
    return grid


def load_decoder(path: str | Path) -> TokenDecoder:
    """The VQ-VAE of a file written by ``VQVAE.save`` or of an export folder (its vqvae.safetensors, checked
    against its vqvae.json)."""
    path = Path(path)
    if path.is_dir():
        file, info = path / VQVAE_FILE, path / VQVAE_INFO
        if not file.is_file():
            raise ValueError(f"decoder folder {path} holds no {VQVAE_FILE}; {_HINT}")
        grid = _read_info(info, file) if info.exists() else None
    elif path.is_file():
        file, grid = path, None
    else:
        raise ValueError(f"no decoder file at {path}; {_HINT}")
    VQVAE = _vqvae_package().VQVAE
    vqvae = VQVAE.load(file)  # a damaged or foreign file: a ValueError naming it
    return TokenDecoder(vqvae.eval(), file, grid)


def fit_grid(decoder: TokenDecoder, config: GPTConfig) -> tuple[int, int]:
    """The (h, w) token grid of the model's sequences, after checking that the decoder fits the model: its
    codebook is the model's vocabulary and its grid (an export's, else the square one) holds block_size tokens."""
    codes, V, T = decoder.vqvae.cfg.codebook_size, config.vocab_size, config.block_size
    if codes != V:
        raise ValueError(
            f"the VQ-VAE in {decoder.file} has {codes} codes but the model has {V} tokens (vocab_size): they differ "
            "by tokenizer; pass the VQ-VAE the model's training tokens came from"
        )
    if decoder.grid is not None:
        h, w = decoder.grid
        if h * w != T:
            raise ValueError(
                f"the VQ-VAE in {decoder.file} decodes {h} x {w} token grids ({h * w} tokens, per its {VQVAE_INFO}) "
                f"but the model's sequences hold {T} tokens (block_size); pass the decoder exported with this model"
            )
        return h, w
    side = math.isqrt(T)
    if side * side != T:
        raise ValueError(
            f"the model's sequences hold {T} tokens (block_size), not a square grid; the VQ-VAE decodes "
            "side x side grids in raster order"
        )
    return side, side


def export_files(decoder: TokenDecoder, config: GPTConfig) -> dict[str, bytes | Path]:
    """``save_gpt2``'s ``extra_files`` that ship the decoder: the VQ-VAE file and its vqvae.json."""
    h, w = fit_grid(decoder, config)
    cfg = decoder.vqvae.cfg
    d = cfg.downsampling
    info = {
        "format": INFO_FORMAT,
        "file": VQVAE_FILE,
        "package": "projectable-vqvae",
        "codebook_size": cfg.codebook_size,
        "token_grid": [h, w],  # a sequence of h * w tokens, raster order
        "image_shape": [cfg.in_channels, d * h, d * w],
        "pixel_range": [-1.0, 1.0],
        "sha256": sha256(decoder.file),
        "vqvae_config": cfg.to_dict(),
    }
    return {VQVAE_FILE: decoder.file, VQVAE_INFO: (json.dumps(info, indent=1) + "\n").encode()}


def decode_images(decoder: TokenDecoder, tokens, grid: tuple[int, int]) -> np.ndarray:
    """(N, h * w) tokens -> (N, H, W, 3) uint8 pixels through the VQ-VAE decoder."""
    tokens = torch.as_tensor(np.asarray(tokens), dtype=torch.long)
    h, w = grid
    if tokens.ndim != 2 or tokens.shape[1] != h * w:
        raise ValueError(f"tokens of shape {tuple(tokens.shape)} are not (N, {h * w}) sequences of {h} x {w} grids")
    images = decoder.vqvae.decode(rearrange(tokens, "n (h w) -> n h w", h=h, w=w))  # (N, C, H, W) in [-1, 1]
    pixels = ((images.float().cpu() + 1) * 127.5).round().clamp(0, 255).to(torch.uint8)
    return rearrange(pixels, "n c h w -> n h w c").numpy()
