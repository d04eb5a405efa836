"""SimCLR encoder: NT-Xent against a float64 loop of Eq. 1, seeded views, training lowers the loss, strict
weights files, the weights and embedding caches, and errors that name the problem."""

import dataclasses
import json
import math

import numpy as np
import pytest
import torch

from projectable_data.encoders import embed_dataset
from projectable_data.simclr import (
    SimCLR,
    SimCLRAugment,
    SimCLRConfig,
    SimCLREncoder,
    init_simclr,
    load_or_train_simclr,
    nt_xent_loss,
    to_unit,
    train_simclr,
)


@pytest.fixture(autouse=True)
def _threads():
    torch.set_num_threads(1)


def blobs(n=48, side=16, seed=0) -> np.ndarray:
    """(n, 3, side, side) uint8: a bright square on a coloured ground, varied per image (cheap, structured)."""
    rng = np.random.default_rng(seed)
    images = np.zeros((n, 3, side, side), dtype=np.uint8)
    for i in range(n):
        images[i] = rng.integers(0, 120, 3, dtype=np.uint8)[:, None, None]
        y, x, size = rng.integers(0, side // 2, 2).tolist() + [int(rng.integers(3, side // 2))]
        images[i, :, y : y + size, x : x + size] = rng.integers(150, 256, 3, dtype=np.uint8)[:, None, None]
    return images


def reference_nt_xent(z1: np.ndarray, z2: np.ndarray, tau: float) -> float:
    """Eq. 1 of Chen et al. 2020, one anchor at a time, in float64."""
    z = np.concatenate([z1, z2]).astype(np.float64)
    z /= np.linalg.norm(z, axis=1, keepdims=True)
    n, total = len(z1), 0.0
    for i in range(2 * n):
        j = (i + n) % (2 * n)
        others = [k for k in range(2 * n) if k != i]
        denominator = sum(math.exp(z[i] @ z[k] / tau) for k in others)
        total += -math.log(math.exp(z[i] @ z[j] / tau) / denominator)
    return total / (2 * n)


@pytest.mark.parametrize("tau", [0.1, 0.5, 1.0])
def test_nt_xent_matches_a_float64_loop_of_eq1(tau):
    g = torch.Generator().manual_seed(int(tau * 10))
    z1, z2 = torch.randn(5, 7, generator=g, dtype=torch.float64), torch.randn(5, 7, generator=g, dtype=torch.float64)
    expected = reference_nt_xent(z1.numpy(), z2.numpy(), tau)
    assert nt_xent_loss(z1, z2, tau).item() == pytest.approx(expected, rel=1e-10)
    assert nt_xent_loss(z1.float(), z2.float(), tau).item() == pytest.approx(expected, rel=1e-5)
    # identical views score lower than unrelated ones: the loss rewards agreement
    assert nt_xent_loss(z1, z1, tau) < nt_xent_loss(z1, z2, tau)


def test_nt_xent_rejects_mismatched_projections():
    with pytest.raises(ValueError, match="equal shape"):
        nt_xent_loss(torch.randn(4, 8), torch.randn(3, 8), 0.5)


def test_the_two_views_differ_and_are_a_function_of_the_seed():
    unit = to_unit(torch.from_numpy(blobs(8)))
    augment = SimCLRAugment(SimCLRConfig.tiny(), side=16)
    a, b, c = augment(unit, seed=3), augment(unit, seed=3), augment(unit, seed=4)
    assert a.first.shape == a.second.shape == unit.shape
    assert torch.equal(a.first, b.first) and torch.equal(a.second, b.second)
    assert not torch.equal(a.first, c.first)
    per_image = (a.first - a.second).abs().flatten(1).amax(1)  # (8,)
    assert bool((per_image > 0.05).all())  # every image's two views differ
    assert 0.0 <= float(a.first.min()) and float(a.first.max()) <= 1.0
    # the augmentation leaves the global generator where it was
    torch.manual_seed(0)
    before = torch.rand(1)
    torch.manual_seed(0)
    augment(unit, seed=5)
    assert torch.equal(torch.rand(1), before)


def held_out_loss(model: SimCLR, images: np.ndarray) -> float:
    """NT-Xent of the model on fixed views of fixed images (a seed no training step uses)."""
    unit = to_unit(torch.from_numpy(images))
    views = SimCLRAugment(model.cfg, unit.shape[-1])(unit, seed=12345)
    model.train()  # BatchNorm on batch statistics, as in training
    with torch.no_grad():
        loss = nt_xent_loss(model(views.first * 2 - 1).projection, model(views.second * 2 - 1).projection,
                            model.cfg.temperature)
    model.eval()
    return float(loss)


def test_a_few_steps_of_training_lower_the_loss():
    images = blobs(64)
    cfg = SimCLRConfig(width=8, projection_dim=16, epochs=20, batch_size=32, lr=3e-3, temperature=0.2, seed=2)
    model = init_simclr(cfg)
    before = held_out_loss(model, blobs(32, seed=7))
    log = train_simclr(model, images, progress=False)
    assert log.steps == 40 and len(log.losses) == 40 and not model.training
    after = held_out_loss(model, blobs(32, seed=7))
    assert after < before - 0.3, (before, after)  # on images it never saw
    assert np.mean(log.losses[-5:]) < np.mean(log.losses[:5])


def test_weights_round_trip_strictly_and_other_files_are_refused(tmp_path):
    model = init_simclr(SimCLRConfig.tiny())
    path = tmp_path / "simclr.safetensors"
    model.save(path)
    again = SimCLR.load(path)
    assert again.cfg == model.cfg
    images = torch.from_numpy(blobs(4))
    torch.testing.assert_close(again.embed(images), model.embed(images), rtol=0, atol=0)
    # a file written by another model is named as such
    from safetensors.torch import save_file

    save_file({"w": torch.zeros(2)}, str(tmp_path / "other.safetensors"), metadata={"kind": "projectable_vqvae.VQVAE"})
    with pytest.raises(ValueError, match="not a SimCLR checkpoint.*projectable_vqvae.VQVAE"):
        SimCLR.load(tmp_path / "other.safetensors")
    # a tensor of the wrong shape is named
    state = {k: v.contiguous() for k, v in model.state_dict().items()}
    state["head.3.weight"] = torch.zeros(3, 3)
    meta = {"kind": "projectable_data.SimCLR", "format_version": "1", "config": json.dumps(model.cfg.to_dict())}
    save_file(state, str(tmp_path / "bad.safetensors"), metadata=meta)
    with pytest.raises(ValueError, match=r"head.3.weight has shape \(3, 3\), expected \(8, 16\)"):
        SimCLR.load(tmp_path / "bad.safetensors")


def test_trained_weights_are_cached_by_config_and_images(tmp_path, monkeypatch):
    images, cfg = blobs(32), SimCLRConfig.tiny()
    first = load_or_train_simclr(cfg, images, tmp_path, progress=False)
    assert first.path.is_file() and first.log["steps"] == 2 and first.log["train_images"] == 32
    import projectable_data.simclr as simclr

    monkeypatch.setattr(simclr, "train_simclr", lambda *a, **k: pytest.fail("trained again"))
    again = load_or_train_simclr(cfg, images, tmp_path, progress=False)
    assert again.path == first.path and again.log == first.log
    torch.testing.assert_close(again.model.embed(images), first.model.embed(images), rtol=0, atol=0)
    monkeypatch.undo()
    changed = images.copy()
    changed[0, 0, 0, 0] ^= 1
    other = load_or_train_simclr(cfg, changed, tmp_path, progress=False)  # other images: other weights
    longer = load_or_train_simclr(dataclasses.replace(cfg, epochs=2), images, tmp_path, progress=False)
    assert len({first.path, other.path, longer.path}) == 3


class Interrupting:
    """Images that raise after `fail_after` slice reads, as an interrupted run would stop."""

    def __init__(self, data, fail_after=None):
        self.data, self.fail_after, self.reads = data, fail_after, 0

    def __len__(self):
        return len(self.data)

    def __getitem__(self, index):
        if isinstance(index, slice):
            if self.fail_after is not None and self.reads >= self.fail_after:
                raise KeyboardInterrupt("simulated interruption")
            self.reads += 1
        return self.data[index]


def test_an_interrupted_embedding_cache_resumes_to_the_uninterrupted_one(tmp_path):
    images = blobs(40)
    encoder = SimCLREncoder(init_simclr(SimCLRConfig.tiny()))
    whole = embed_dataset(encoder, images, tmp_path / "whole", batch_size=4, chunk_size=8, progress=False)
    with pytest.raises(KeyboardInterrupt):
        embed_dataset(encoder, Interrupting(images, fail_after=5), tmp_path / "cut", batch_size=4, chunk_size=8,
                      progress=False)
    (directory,) = (tmp_path / "cut").iterdir()
    progress = json.loads((directory / "progress.json").read_text())
    assert progress["done_chunks"] == [0, 1] and not progress["complete"]
    resumed_source = Interrupting(images)
    resumed = embed_dataset(encoder, resumed_source, tmp_path / "cut", batch_size=4, chunk_size=8, progress=False)
    assert resumed_source.reads == 6  # only the three unfinished chunks (two batches each) were embedded
    assert resumed.fingerprint == whole.fingerprint
    np.testing.assert_array_equal(np.asarray(resumed.embeddings), np.asarray(whole.embeddings))
    assert json.loads((directory / "progress.json").read_text())["complete"]


def test_a_cache_of_another_encoder_is_refused(tmp_path):
    images = blobs(8)
    first = SimCLREncoder(init_simclr(SimCLRConfig.tiny()))
    table = embed_dataset(first, images, tmp_path, progress=False)
    (directory,) = tmp_path.iterdir()
    meta = json.loads((directory / "meta.json").read_text())
    meta["encoder"] = "f" * 64  # what another encoder would have written there
    (directory / "meta.json").write_text(json.dumps(meta))
    with pytest.raises(ValueError, match="written by another encoder"):
        embed_dataset(first, images, tmp_path, progress=False)
    assert table.dim == 16


@pytest.mark.parametrize("images, problem", [
    (torch.zeros(2, 16, 16, 3, dtype=torch.uint8), r"\(B, 3, H, W\), got \(\d, 16, 16, 3\)"),
    (torch.zeros(2, 3, 16, 12, dtype=torch.uint8), "square"),
    (torch.zeros(2, 3, 4, 4, dtype=torch.uint8), "side >= 8"),
    (torch.full((2, 3, 16, 16), 255.0), r"float images must lie in \[-1, 1\], got values in \[255, 255\]"),
    (torch.zeros(2, 3, 16, 16, dtype=torch.int32), "dtype torch.int32"),
])
def test_bad_images_are_named(images, problem):
    model = init_simclr(SimCLRConfig.tiny())
    with pytest.raises(ValueError, match=problem):
        model.embed(images)
    with pytest.raises(ValueError, match=problem):
        train_simclr(model, images, progress=False)


def test_bad_configs_are_named():
    with pytest.raises(ValueError, match="temperature=0"):
        SimCLRConfig(temperature=0)
    with pytest.raises(ValueError, match="batch_size=1 must be >= 2"):
        SimCLRConfig(batch_size=1)
    with pytest.raises(ValueError, match="crop_scale"):
        SimCLRConfig(crop_scale=(0.5, 0.2))


def test_embeddings_are_the_backbone_features_and_depend_on_the_image():
    model = init_simclr(SimCLRConfig.tiny())
    images = torch.from_numpy(blobs(6))
    h = model.embed(images)
    assert h.shape == (6, 16) and h.dtype == torch.float32
    # uint8 pixels and the same pixels in [-1, 1] embed alike
    torch.testing.assert_close(model.embed(images.float() / 127.5 - 1.0), h, rtol=1e-5, atol=1e-5)
    assert not torch.allclose(h[0], h[1])
    # the seeded initialisation is reproducible
    torch.testing.assert_close(init_simclr(SimCLRConfig.tiny()).embed(images), h, rtol=0, atol=0)
