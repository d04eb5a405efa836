"""Tokenizer quality: codebook usage and reconstruction PSNR (App. C.2 VQ-VAE)."""

from __future__ import annotations

import math
from collections.abc import Iterable
from typing import NamedTuple

import torch

from .vqvae import VQVAE, check_images, to_model_range


class CodebookUsage(NamedTuple):
    perplexity: float  # exp(entropy of the token histogram); codebook_size when all codes are equally used
    used_codes: int  # codes that occur at least once
    dead_codes: int  # codes that never occur
    counts: torch.Tensor  # (codebook_size,) int64 histogram


class ReconstructionMetrics(NamedTuple):
    mse: float  # mean squared error per subpixel, pixels in [-1, 1]
    psnr: float  # dB, peak-to-peak 2 (the [-1, 1] range); = PSNR of the same images in [0, 255]
    usage: CodebookUsage
    num_images: int


def codebook_usage(tokens: torch.Tensor, codebook_size: int) -> CodebookUsage:
    """Histogram statistics of integer tokens of any shape."""
    if tokens.is_floating_point():
        raise ValueError(f"tokens must be integers, got dtype {tokens.dtype}; use tokens.long()")
    flat = tokens.reshape(-1).long().cpu()
    if flat.numel() and (flat.min() < 0 or flat.max() >= codebook_size):
        raise ValueError(
            f"tokens outside [0, {codebook_size}): range [{int(flat.min())}, {int(flat.max())}]; "
            "pass the codebook_size of the model that produced them"
        )
    counts = torch.bincount(flat, minlength=codebook_size)
    return _usage_from_counts(counts)


def _usage_from_counts(counts: torch.Tensor) -> CodebookUsage:
    total = counts.sum().item()
    if total == 0:
        return CodebookUsage(0.0, 0, int(counts.numel()), counts)
    p = counts.double() / total
    nz = p[p > 0]
    entropy = -(nz * nz.log()).sum().item()
    used = int((counts > 0).sum())
    return CodebookUsage(math.exp(entropy), used, int(counts.numel()) - used, counts)


def psnr(mse: float, peak_to_peak: float = 2.0) -> float:
    """Peak signal-to-noise ratio in dB for a mean squared error on signals spanning peak_to_peak."""
    if mse <= 0:
        return math.inf
    return 10.0 * math.log10(peak_to_peak**2 / mse)


@torch.no_grad()
def evaluate_reconstruction(
    model: VQVAE, images: torch.Tensor | Iterable[torch.Tensor], batch_size: int = 256
) -> ReconstructionMetrics:
    """Encode and decode every image; PSNR of the pooled MSE and the codebook usage over all tokens.

    `images` is a (N, C, H, W) tensor (uint8 or float in [-1, 1]) or an iterable of such batches.
    """
    if isinstance(images, torch.Tensor):
        check_images(images, model.cfg.in_channels)  # all of it, before the first batch
        batches = images.split(batch_size)
    else:
        batches = images
    counts = torch.zeros(model.cfg.codebook_size, dtype=torch.long)
    sq_err, n_sub, n_img = 0.0, 0, 0
    for batch in batches:
        x = to_model_range(batch, model.cfg.in_channels).to(model.device)
        tokens = model.encode(x)  # (B, h, w)
        recon = model.decode(tokens)  # (B, C, H, W)
        sq_err += (recon - x.clamp(-1, 1)).pow(2).sum().item()
        n_sub += x.numel()
        n_img += x.shape[0]
        counts += torch.bincount(tokens.reshape(-1).cpu(), minlength=model.cfg.codebook_size)
    if n_img == 0:
        raise ValueError("evaluate_reconstruction got no images; pass a non-empty tensor or iterable")
    mse = sq_err / n_sub
    return ReconstructionMetrics(mse, psnr(mse), _usage_from_counts(counts), n_img)
