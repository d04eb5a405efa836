"""The image tokenizer a model's tokens came from, recorded in its file so that what renders them travels with it.

Two kinds, one per data track:

* **palette** (SynthMNIST): token k is the colour ``centres[k]``, a (K, 3) RGB array in [-1, 1]. A few hundred
  numbers, carried inline in the file's metadata.
* **vqvae** (the ImageNet track): a VQ-VAE (``projectable_vqvae.VQVAE.save``'s file) decodes token grids.
  Megabytes of weights, so the model file points to it: a path relative to the model file's folder (a run's
  ``final/`` folder holds ``vqvae.safetensors`` beside its models) and the file's sha256, checked on use.

``GPT.save(path, tokenizer=...)`` and ``ProjectableGPT.save(path, tokenizer=...)`` write the record under the
metadata key ``image_tokenizer``; ``read_tokenizer(path)`` reads it back without loading any tensor.
``projectable generate`` copies it from the checkpoint to the small model it writes, and ``projectable
export-gpt2`` ships the palette or VQ-VAE it names beside the export (with the model card's render recipe),
so a trained model's export renders with no extra flag.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

METADATA_KEY = "image_tokenizer"


def sha256(path: Path) -> str:
    """The hex SHA-256 of a file's bytes (a VQ-VAE file's identity in the records below)."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


@dataclass(frozen=True)
class ImageTokenizer:
    """A palette (``centres``: (K, 3) in [-1, 1]) or a VQ-VAE file (``vqvae``: its absolute path, ``sha256``)."""

    centres: np.ndarray | None = None
    vqvae: Path | None = None
    sha256: str | None = None

    @property
    def kind(self) -> str:
        return "palette" if self.centres is not None else "vqvae"

    def to_metadata(self, model_path: str | Path) -> dict[str, str]:
        """The metadata entry for a model file written at ``model_path`` (a VQ-VAE path relative to its folder)."""
        if self.centres is not None:
            record = {"kind": "palette", "centres": np.asarray(self.centres, np.float32).tolist()}  # exact float32
        else:
            folder = Path(model_path).absolute().parent
            record = {"kind": "vqvae", "file": os.path.relpath(Path(self.vqvae).absolute(), folder),
                      "sha256": self.sha256}
        return {METADATA_KEY: json.dumps(record)}


def check_palette(centres, vocab_size: int | None = None, what: str = "palette") -> np.ndarray:
    """(K, 3) float32 centres, refused unless finite, within [-1, 1] and (given ``vocab_size``) at least one
    colour per token."""
    centres = np.asarray(centres, dtype=np.float32)
    if centres.ndim != 2 or centres.shape[1] != 3 or len(centres) == 0:
        raise ValueError(f"{what} must be K >= 1 rows of [r, g, b], got shape {centres.shape}")
    if not np.isfinite(centres).all():
        raise ValueError(f"{what} contains NaN or inf; pass colours in [-1, 1]")
    low, high = float(centres.min()), float(centres.max())
    if low < -1 - 1e-6 or high > 1 + 1e-6:
        raise ValueError(
            f"{what} has values in [{low:g}, {high:g}] but colours lie in [-1, 1] (pixel / 127.5 - 1); pass "
            "projectable_data.Palette.centres, or rescale 0..255 colours with c / 127.5 - 1"
        )
    if vocab_size is not None and len(centres) < vocab_size:
        raise ValueError(
            f"{what} has {len(centres)} colours but the model has {vocab_size} tokens (vocab_size): tokens "
            f"{len(centres)}..{vocab_size - 1} would have no colour; pass the palette the model's tokens came from"
        )
    return centres


def palette_tokenizer(centres) -> ImageTokenizer:
    """The record of a palette: (K, 3) RGB centres in [-1, 1] (``projectable_data.Palette.centres``)."""
    return ImageTokenizer(centres=check_palette(centres))


def vqvae_tokenizer(path: str | Path) -> ImageTokenizer:
    """The record of a VQ-VAE file (``projectable_vqvae.VQVAE.save``), which must exist."""
    path = Path(path)
    if not path.is_file():
        raise ValueError(f"no VQ-VAE file at {path}; pass the file projectable_vqvae.VQVAE.save wrote")
    return ImageTokenizer(vqvae=path.absolute(), sha256=sha256(path))


def read_tokenizer(model_path: str | Path) -> ImageTokenizer | None:
    """The tokenizer a model file records, or None (files written without one). A VQ-VAE must still be where
    the record points, unchanged."""
    from safetensors import safe_open

    with safe_open(str(model_path), framework="pt") as f:
        meta = f.metadata() or {}
    if METADATA_KEY not in meta:
        return None
    try:
        record = json.loads(meta[METADATA_KEY])
        kind = record["kind"]
        if kind == "palette":
            return ImageTokenizer(centres=check_palette(record["centres"], what=f"{model_path}'s palette"))
        if kind != "vqvae":
            raise ValueError(f"kind {kind!r}")
        file, recorded = Path(model_path).absolute().parent / record["file"], str(record["sha256"])
    except (KeyError, TypeError, ValueError) as err:
        raise ValueError(f"{model_path}: its {METADATA_KEY!r} metadata is not readable ({err}); the file is damaged, "
                         "pass --palette or --decoder instead") from None
    if not file.is_file():
        raise ValueError(f"{model_path} records its VQ-VAE at {file}, which is missing; keep the VQ-VAE beside the "
                         "model as it was written, or pass --decoder")
    if sha256(file) != recorded:
        raise ValueError(f"{model_path} records a VQ-VAE at {file} that has changed since (sha256 mismatch); pass "
                         "--decoder with the VQ-VAE the model's tokens came from")
    return ImageTokenizer(vqvae=file.resolve(), sha256=recorded)


def tokenizer_metadata(tokenizer: ImageTokenizer | None, model_path: str | Path) -> dict[str, str]:
    """``write_tensors`` metadata for an optional tokenizer."""
    return {} if tokenizer is None else tokenizer.to_metadata(model_path)
