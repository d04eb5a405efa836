"""The ImageNet track's data: VQ-VAE tokens (projectable_vqvae) of the images (projectable_data) with encoder
embeddings as task vectors.

``build_image_tokens(config, cache_dir)`` composes the two libraries under the dataset's file lock: the image
sets (``projectable_data.imagenet_tokens.load_image_sets``), the App. C.2 VQ-VAE trained on the first
``palette_fit_images`` training images (or loaded), every image tokenised into a resumable memory-mapped
token cache, the encoder embeddings (``embed``), and a summary of what was built (stand-in or not, VQ-VAE
PSNR, codebook perplexity and dead codes on the validation images, embeddings). A second build with the same
config finds everything in the cache and only loads it.

Cache layout under ``dataset_directory(config, cache_dir)`` (the images key), beside the data package's
``images.npz`` and ``embeddings-{train,val}/``:
  vqvae-<key>.safetensors          the trained VQ-VAE; vqvae-<key>-train.json its training log
  summary-<key>.json               the summary
  tokens-<key>/{train,val}/        projectable_vqvae token caches (resume if interrupted)
where <key> = ``vqvae_key(config)``: the VQ-VAE layout and its training settings.
"""

from __future__ import annotations

import dataclasses
import json
import os
from pathlib import Path

import numpy as np
import torch
from projectable_data.imagenet_tokens import (
    ImageNetTokens,
    ImageNetTokensConfig,
    ImageSet,
    TokenizedSplit,
    dataset_directory,
    digest,
    embed,
    encoder_summary,
    file_lock,
    load_image_sets,
)
from projectable_vqvae import (
    VQVAE,
    VQVAEConfig,
    VQVAETrainConfig,
    evaluate_reconstruction,
    tokenize_dataset,
    train_vqvae,
)


def vqvae_config(config: ImageNetTokensConfig) -> VQVAEConfig:
    """The VQ-VAE layout of ``config.tokenizer`` ("paper": App. C.2, "tiny": tests) with palette_size codes."""
    base = VQVAEConfig.paper() if config.tokenizer == "paper" else VQVAEConfig.tiny()
    return dataclasses.replace(base, codebook_size=config.palette_size)


def vqvae_key(config: ImageNetTokensConfig) -> str:
    """What the tokenizer depends on besides the images: its layout and training settings."""
    return digest(model=vqvae_config(config).to_dict(), steps=config.tokenizer_steps,
                  batch=config.tokenizer_batch_size, lr=config.tokenizer_lr, seed=config.seed,
                  fit_images=config.palette_fit_images)


def load_or_train_vqvae(config: ImageNetTokensConfig, train: ImageSet, directory: Path) -> VQVAE:
    """The VQ-VAE of ``vqvae_key(config)``: loaded from ``directory``, else trained on the first
    ``palette_fit_images`` training images and saved there with its training log."""
    key = vqvae_key(config)
    path = directory / f"vqvae-{key}.safetensors"
    if path.is_file():
        return VQVAE.load(path)
    fit = torch.from_numpy(np.ascontiguousarray(train.images[: config.palette_fit_images]))  # (n, 3, H, W)
    torch.manual_seed(config.seed)
    model = VQVAE(vqvae_config(config))
    metrics = train_vqvae(model, fit, VQVAETrainConfig(steps=config.tokenizer_steps,
                                                       batch_size=config.tokenizer_batch_size,
                                                       lr=config.tokenizer_lr, seed=config.seed, progress=True))
    model.save(path)
    (directory / f"vqvae-{key}-train.json").write_text(json.dumps(
        {"steps": metrics.steps, "final_psnr": metrics.final_psnr, "first_loss": metrics.losses[0],
         "last_loss": metrics.losses[-1]}, indent=1))
    return model.eval()


def summary_path(config: ImageNetTokensConfig, cache_dir: str | os.PathLike) -> Path:
    return dataset_directory(config, cache_dir) / f"summary-{vqvae_key(config)}.json"


def read_summary(config: ImageNetTokensConfig, cache_dir: str | os.PathLike) -> dict | None:
    """The summary a built dataset left in the cache (stand-in or not, VQ-VAE metrics, encoder), or None."""
    path = summary_path(config, cache_dir)
    return json.loads(path.read_text()) if path.is_file() else None


def load_or_write_summary(config: ImageNetTokensConfig, cache_dir: str | os.PathLike, vqvae: VQVAE,
                          train: TokenizedSplit, val: TokenizedSplit) -> dict:
    """The summary of this VQ-VAE and these embeddings; recomputed (PSNR and codebook use on the validation
    images) when missing or written for another encoder."""
    summary = read_summary(config, cache_dir)
    if summary and (summary.get("encoder"), summary.get("embeddings_val")) == (config.encoder,
                                                                              val.embeddings.fingerprint):
        return summary
    val_images = torch.from_numpy(np.ascontiguousarray(val.images.images[:]))  # (N, 3, H, W) uint8
    recon = evaluate_reconstruction(vqvae, val_images, batch_size=256)
    train_log = dataset_directory(config, cache_dir) / f"vqvae-{vqvae_key(config)}-train.json"
    summary = {
        "images": config.images,
        "stand_in": config.images == "standin",
        "image_side": config.image_side,
        "train_images": len(train.images.labels),
        "val_images": len(val.images.labels),
        "vqvae_codes": config.palette_size,
        "vqvae_params": vqvae.num_params(),
        "vqvae_val_psnr": recon.psnr,
        "vqvae_val_perplexity": recon.usage.perplexity,
        "vqvae_val_dead_codes": recon.usage.dead_codes,
        "vqvae_train": json.loads(train_log.read_text()) if train_log.is_file() else None,
        "encoder": config.encoder,
        "encoder_config": encoder_summary(config, train.images.images, dataset_directory(config, cache_dir)),
        "embedding_dim": train.embeddings.dim,
        "embeddings_train": train.embeddings.fingerprint,
        "embeddings_val": val.embeddings.fingerprint,
    }
    summary_path(config, cache_dir).write_text(json.dumps(summary, indent=1))
    return summary


def tokenize(config: ImageNetTokensConfig, vqvae: VQVAE, images: ImageSet, directory: Path, split: str) -> np.ndarray:
    """(N, h, w) uint16 read-only memory map: every image of the split through the VQ-VAE encoder, cached in
    ``directory/tokens-<key>/<split>`` (an interrupted run resumes)."""
    cache = tokenize_dataset(vqvae, images.images, directory / f"tokens-{vqvae_key(config)}" / split,
                             dataset_id=f"{config.images}/{split}", chunk_size=4096, batch_size=256, progress=False)
    return cache.tokens


def build_image_tokens(config: ImageNetTokensConfig, cache_dir: str | os.PathLike,
                       train_fraction: float = 1.0) -> ImageNetTokens:
    """The ImageNet-track dataset (Sec. 3.1, Tables 2 and 4): built once into ``cache_dir``, loaded after."""
    directory = dataset_directory(config, cache_dir)
    with file_lock(directory / ".lock"):
        train_set, val_set = load_image_sets(config, directory)
        vqvae = load_or_train_vqvae(config, train_set, directory)
        train_tokens = tokenize(config, vqvae, train_set, directory, "train")
        val_tokens = tokenize(config, vqvae, val_set, directory, "val")
        train = TokenizedSplit(train_set, train_tokens, embed(config, train_set.images, "train", directory))
        # a trained encoder (SimCLR) learns from the training images only, never the validation ones
        val = TokenizedSplit(val_set, val_tokens, embed(config, val_set.images, "val", directory,
                                                        train_images=train_set.images))
        summary = load_or_write_summary(config, cache_dir, vqvae, train, val)
    return ImageNetTokens(config, train, val, vqvae, train_fraction=train_fraction, summary=summary)
