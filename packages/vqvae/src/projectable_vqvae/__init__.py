"""VQ-VAE image tokenizer of App. C.2 of "Projectable Models" (64x64 RGB -> 32x32 tokens, 512 codes)."""

from .metrics import CodebookUsage, ReconstructionMetrics, codebook_usage, evaluate_reconstruction, psnr
from .token_cache import CorruptCacheError, TokenCache, load_token_cache, model_fingerprint, tokenize_dataset
from .train import TrainMetrics, VQVAETrainConfig, train_vqvae
from .vqvae import (
    VQVAE,
    Decoder,
    Encoder,
    VQVAEConfig,
    VQVAEOutput,
    check_images,
    load_state_strict,
    to_model_range,
)

__all__ = [
    "VQVAE",
    "CodebookUsage",
    "CorruptCacheError",
    "Decoder",
    "Encoder",
    "ReconstructionMetrics",
    "TokenCache",
    "TrainMetrics",
    "VQVAEConfig",
    "VQVAEOutput",
    "VQVAETrainConfig",
    "check_images",
    "codebook_usage",
    "evaluate_reconstruction",
    "load_state_strict",
    "load_token_cache",
    "model_fingerprint",
    "psnr",
    "to_model_range",
    "tokenize_dataset",
    "train_vqvae",
]
