"""Training loop of the App. C.2 VQ-VAE: Adam on L2 reconstruction + beta * commitment, EMA codebook."""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import NamedTuple

import torch
from tqdm.auto import tqdm

from .metrics import CodebookUsage, codebook_usage, psnr
from .vqvae import VQVAE, check_images


@dataclass(frozen=True)
class VQVAETrainConfig:
    steps: int = 1000  # optimiser steps
    batch_size: int = 64  # images per step when sampling from a tensor (ignored for an iterable of batches)
    lr: float = 3e-4  # Adam; the paper does not give the VQ-VAE's optimiser settings
    weight_decay: float = 0.0
    seed: int = 0  # batch sampling order and k-means initialisation
    log_every: int = 50  # progress-bar refresh interval, in steps
    progress: bool = True  # tqdm bar

    def __post_init__(self) -> None:
        if self.steps < 1 or self.batch_size < 1 or self.log_every < 1:
            raise ValueError(
                f"steps, batch_size and log_every must be >= 1, got {self.steps}, "
                f"{self.batch_size}, {self.log_every}"
            )
        if self.lr <= 0:
            raise ValueError(f"lr must be positive, got {self.lr}")


class TrainMetrics(NamedTuple):
    steps: int  # steps actually taken (fewer than asked if an iterable ran out)
    losses: list[float]  # total loss per step
    reconstruction_losses: list[float]  # MSE per step, pixels in [-1, 1]
    final_psnr: float  # PSNR (dB) of the mean MSE over the last min(50, steps) steps
    usage: CodebookUsage  # token histogram over the last min(50, steps) training batches


def _batches(
    images: torch.Tensor | Iterable[torch.Tensor], cfg: VQVAETrainConfig, generator: torch.Generator
) -> Iterator[torch.Tensor]:
    if isinstance(images, torch.Tensor):
        if images.ndim != 4 or images.shape[0] == 0:
            raise ValueError(
                f"images must be a non-empty (N, C, H, W) tensor, got shape {tuple(images.shape)}"
            )
        n = images.shape[0]
        while True:
            idx = torch.randint(0, n, (min(cfg.batch_size, n),), generator=generator)
            yield images[idx]
    else:
        yield from images


def train_vqvae(
    model: VQVAE, images: torch.Tensor | Iterable[torch.Tensor], cfg: VQVAETrainConfig
) -> TrainMetrics:
    """Train `model` in place.

    `images`: a (N, C, H, W) tensor (uint8, or float in [-1, 1]) sampled uniformly with replacement by
    a generator seeded with cfg.seed, or an iterable yielding such batches (stops early if it runs out).
    """
    if isinstance(images, torch.Tensor):  # all of it, before the first step changes the model
        if images.ndim != 4 or images.shape[0] == 0:
            raise ValueError(
                f"images must be a non-empty (N, C, H, W) tensor, got shape {tuple(images.shape)}"
            )
        check_images(images, model.cfg.in_channels)
    torch.manual_seed(cfg.seed)  # k-means init and dead-code replacement draw from the global generator
    generator = torch.Generator().manual_seed(cfg.seed)
    opt = torch.optim.Adam(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    model.train()
    losses: list[float] = []
    recon_losses: list[float] = []
    recent_tokens: list[torch.Tensor] = []
    window = min(50, cfg.steps)
    bar = tqdm(total=cfg.steps, disable=not cfg.progress, desc="vqvae", leave=False)
    try:
        for step, batch in enumerate(_batches(images, cfg, generator)):
            if step >= cfg.steps:
                break
            out = model(batch)
            opt.zero_grad(set_to_none=True)
            out.loss.backward()
            opt.step()
            losses.append(out.loss.item())
            recon_losses.append(out.reconstruction_loss.item())
            recent_tokens.append(out.tokens.detach().cpu())
            recent_tokens = recent_tokens[-window:]
            bar.update(1)
            if (step + 1) % cfg.log_every == 0 or step == 0:
                bar.set_postfix(loss=f"{losses[-1]:.4f}", psnr=f"{psnr(recon_losses[-1]):.2f}")
    finally:
        bar.close()
    if not losses:
        raise ValueError("train_vqvae got no batches; pass a non-empty tensor or iterable of images")
    tail = recon_losses[-window:]
    usage = codebook_usage(torch.cat([t.reshape(-1) for t in recent_tokens]), model.cfg.codebook_size)
    return TrainMetrics(len(losses), losses, recon_losses, psnr(sum(tail) / len(tail)), usage)
