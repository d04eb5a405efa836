import pytest
import torch
from projectable_vqvae import VQVAE, VQVAEConfig, VQVAETrainConfig, evaluate_reconstruction, train_vqvae


def _blobs(n=64, size=16, seed=0):
    """Smooth coloured images: easy enough that a tiny VQ-VAE improves within a few steps."""
    g = torch.Generator().manual_seed(seed)
    yy, xx = torch.meshgrid(torch.linspace(-1, 1, size), torch.linspace(-1, 1, size), indexing="ij")
    centre = torch.rand(n, 2, 1, 1, generator=g) * 2 - 1
    colour = torch.rand(n, 3, 1, 1, generator=g) * 2 - 1
    mask = ((xx - centre[:, 0:1]) ** 2 + (yy - centre[:, 1:2]) ** 2 < 0.3).float()
    return (colour * mask).clamp(-1, 1)  # (n, 3, size, size)


def test_loss_decreases_on_tiny_data():
    images = _blobs()
    model = VQVAE(VQVAEConfig.tiny())
    before = evaluate_reconstruction(model, images).mse
    metrics = train_vqvae(model, images, VQVAETrainConfig(steps=60, batch_size=16, lr=3e-3, progress=False))
    assert metrics.steps == 60 and len(metrics.losses) == 60
    first = sum(metrics.reconstruction_losses[:5]) / 5
    last = sum(metrics.reconstruction_losses[-5:]) / 5
    assert last < 0.7 * first
    after = evaluate_reconstruction(model, images)
    assert after.mse < before
    assert after.usage.used_codes > 1
    assert metrics.final_psnr > 0


def test_training_is_reproducible_and_accepts_iterables():
    images = _blobs(32)
    cfg = VQVAETrainConfig(steps=5, batch_size=8, lr=1e-3, progress=False, seed=3)
    runs = []
    for _ in range(2):
        torch.manual_seed(0)
        runs.append(train_vqvae(VQVAE(VQVAEConfig.tiny()), images, cfg).losses)
    assert runs[0] == runs[1] and len(runs[0]) == 5
    batches = iter(images.split(8))
    short = train_vqvae(VQVAE(VQVAEConfig.tiny()), batches, VQVAETrainConfig(steps=10, progress=False))
    assert short.steps == 4  # the iterable ran out after 4 batches


def test_train_bad_input():
    with pytest.raises(ValueError, match="non-empty"):
        train_vqvae(VQVAE(VQVAEConfig.tiny()), torch.zeros(0, 3, 16, 16), VQVAETrainConfig(progress=False))
    with pytest.raises(ValueError, match="steps"):
        VQVAETrainConfig(steps=0)
