"""Bad input fails before any work with a message naming the input, the value and the fix; a damaged cache
is rebuilt or named. The catalogue is in the README under "Bad input"."""

import json
import warnings

import numpy as np
import pytest
import torch
from projectable_vqvae import (
    VQVAE,
    CorruptCacheError,
    VQVAEConfig,
    VQVAETrainConfig,
    evaluate_reconstruction,
    load_token_cache,
    tokenize_dataset,
    train_vqvae,
)
from safetensors.torch import save_file


@pytest.fixture
def model():
    m = VQVAE(VQVAEConfig.tiny())
    m.encode(torch.rand(8, 3, 16, 16) * 2 - 1)  # k-means init so later encodes are pure functions
    return m


def images(n=8):
    return torch.rand(n, 3, 16, 16, generator=torch.Generator().manual_seed(1)) * 2 - 1


# ---- images ---------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("bad, match", [
    (images().index_fill(0, torch.tensor([2]), float("nan")), r"images contain 768 NaN or inf values; float images must be finite"),
    (images().index_fill(2, torch.tensor([0]), float("inf")), r"images contain 384 NaN or inf values"),
    (images() * 127.5 + 127.5, r"float images must lie in \[-1, 1\], got values in \[.*\]; they look like \[0, 255\] pixels"),
    (images() * 1.5, r"float images must lie in \[-1, 1\], got values in \[-1.\d*, 1.\d*\]; rescale them"),
    (torch.rand(2, 1, 16, 16), r"images must have shape \(B, 3, H, W\), got \(2, 1, 16, 16\)"),
    (torch.rand(2, 16, 16, 3), r"channel-last arrays need images.permute\(0, 3, 1, 2\)"),
    (torch.zeros(0, 3, 16, 16), r"images have shape \(0, 3, 16, 16\): an empty batch"),
    (torch.zeros(2, 3, 16, 16, dtype=torch.complex64), "got dtype torch.complex64"),
    (torch.zeros(2, 3, 16, 16, dtype=torch.bool), "got dtype torch.bool"),
    (np.zeros((2, 3, 16, 16), np.float32), "images must be a torch.Tensor of shape"),
], ids=["nan", "inf", "0-255 floats", "1.5x", "channels", "channel-last", "empty", "complex", "bool", "numpy"])
def test_bad_images_are_refused_before_any_work(model, bad, match):
    before = {k: v.clone() for k, v in model.state_dict().items()}
    for call in (lambda: model.encode(bad), lambda: model(bad), lambda: model.reconstruct(bad),
                 lambda: evaluate_reconstruction(model, bad)):
        with pytest.raises(ValueError, match=match):
            call()
    if torch.is_tensor(bad) and bad.ndim == 4 and bad.shape[0]:
        with pytest.raises(ValueError, match=match):
            train_vqvae(model, bad, VQVAETrainConfig(steps=1, batch_size=2, progress=False))
    for k, v in model.state_dict().items():
        assert torch.equal(before[k], v), k  # the codebook saw nothing


def test_images_at_the_ends_of_the_range_pass(model):
    edges = torch.tensor([-1.0, 1.0]).repeat(3 * 16 * 16).reshape(2, 3, 16, 16)
    assert model.encode(edges).shape == (2, 8, 8)
    u8 = torch.tensor([0, 255], dtype=torch.uint8).repeat(3 * 16 * 16).reshape(2, 3, 16, 16)
    assert torch.equal(model.encode(u8), model.encode(edges))
    assert model.encode((edges.half() * 1.00005).float()).shape == (2, 8, 8)  # rounding within the tolerance


# ---- VQ-VAE files ---------------------------------------------------------------------------------------------


def test_damaged_vqvae_files_are_named(tmp_path, model):
    path = tmp_path / "vq.safetensors"
    model.save(path)
    data = path.read_bytes()
    damaged = {
        "truncated.safetensors": data[: len(data) // 2],
        "header.safetensors": data[:8],
        "text.safetensors": b"not a checkpoint",
    }
    for name, content in damaged.items():
        (tmp_path / name).write_bytes(content)
        with pytest.raises(ValueError, match=rf"VQ-VAE checkpoint {tmp_path / name} is not a readable safetensors "
                                             r"file .*delete it, then train and save the VQ-VAE again"):
            VQVAE.load(tmp_path / name)
    state = {k: v.contiguous() for k, v in model.state_dict().items()}
    bad_config = tmp_path / "config.safetensors"
    save_file(state, str(bad_config), metadata={"kind": "projectable_vqvae.VQVAE", "config": "{oops"})
    with pytest.raises(ValueError, match=rf"VQ-VAE checkpoint {bad_config} has an invalid config"):
        VQVAE.load(bad_config)
    save_file(state, str(bad_config), metadata={"kind": "projectable_vqvae.VQVAE", "config": '{"colour": 1}'})
    with pytest.raises(ValueError, match=r"unknown VQVAEConfig fields \['colour'\]"):
        VQVAE.load(bad_config)
    with pytest.raises(FileNotFoundError, match=f"no VQ-VAE checkpoint at {tmp_path / 'absent'}"):
        VQVAE.load(tmp_path / "absent")
    with pytest.raises(FileNotFoundError, match="no VQ-VAE checkpoint"):
        VQVAE.load(tmp_path)  # a folder


# ---- token cache ----------------------------------------------------------------------------------------------


def uint8_images(n=20):
    return np.random.default_rng(0).integers(0, 256, (n, 3, 16, 16), dtype=np.uint8)


def build(model, cache_dir, **kw):
    return tokenize_dataset(model, uint8_images(), cache_dir, chunk_size=8, progress=False, **kw)


@pytest.mark.parametrize("damage", [
    lambda d: (d / "tokens.npy").write_bytes((d / "tokens.npy").read_bytes()[:200]),
    lambda d: (d / "tokens.npy").write_bytes(b"garbage"),
    lambda d: np.save(d / "tokens.npy", np.zeros((3, 8, 8), np.uint16)),
    lambda d: (d / "progress.json").write_text("{ half"),
    lambda d: (d / "progress.json").write_text('{"done_chunks": [0, 99], "complete": true, "chunk_size": 8}'),
    lambda d: (d / "progress.json").write_text("[]"),
], ids=["truncated-npy", "garbage-npy", "wrong-shape-npy", "garbage-progress", "bad-chunks", "progress-not-a-dict"])
def test_a_damaged_cache_is_named_on_load_and_rebuilt(tmp_path, model, damage):
    expected = build(model, tmp_path).get(slice(None))
    damage(tmp_path)
    with pytest.raises(CorruptCacheError, match=rf"token cache {tmp_path} is damaged: {tmp_path}/\S+ .*"
                                                r"rebuild it with tokenize_dataset\(model, images, cache_dir, overwrite=True\)"):
        load_token_cache(tmp_path)
    with pytest.warns(UserWarning, match=rf"rebuilding token cache {tmp_path}: {tmp_path}/(tokens.npy|progress.json)"):
        rebuilt = build(model, tmp_path)  # the same model and images: a damaged cache is rebuilt
    assert torch.equal(rebuilt.get(slice(None)), expected)
    assert torch.equal(load_token_cache(tmp_path).get(slice(None)), expected)


@pytest.mark.parametrize("content", ["{ not json", "[1, 2]", "\udcff"], ids=["garbage", "a-list", "binary"])
def test_a_damaged_meta_json_is_named_and_rebuilt_only_with_overwrite(tmp_path, model, content):
    expected = build(model, tmp_path).get(slice(None))
    meta = tmp_path / "meta.json"
    meta.write_bytes(content.encode("utf-8", "surrogateescape"))
    with pytest.raises(CorruptCacheError, match=rf"token cache {tmp_path} is damaged: {meta} .*overwrite=True"):
        load_token_cache(tmp_path)
    with pytest.raises(CorruptCacheError, match=rf"{meta} .*pass overwrite=True to rebuild it, or delete {tmp_path}"):
        build(model, tmp_path)
    assert meta.read_bytes() == content.encode("utf-8", "surrogateescape")  # nothing was removed
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        rebuilt = build(model, tmp_path, overwrite=True)
    assert torch.equal(rebuilt.get(slice(None)), expected)
    assert json.loads(meta.read_text())["fingerprint"] == rebuilt.fingerprint
