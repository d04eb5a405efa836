import pytest
import torch
from projectable_vqvae import VQVAE, VQVAEConfig, codebook_usage, evaluate_reconstruction, psnr


def test_paper_shapes_64_to_32x32_tokens():
    model = VQVAE(VQVAEConfig.paper())
    x = torch.rand(2, 3, 64, 64) * 2 - 1
    out = model(x)
    assert out.reconstruction.shape == (2, 3, 64, 64)
    assert out.tokens.shape == (2, 32, 32) and out.tokens.dtype == torch.int64
    tokens = model.encode(x)
    assert tokens.shape == (2, 32, 32) and tokens.dtype == torch.int64
    assert 0 <= tokens.min() and tokens.max() < 512
    images = model.decode(tokens)
    assert images.shape == (2, 3, 64, 64)
    assert images.min() >= -1 and images.max() <= 1


def test_paper_layers_follow_app_c2():
    model = VQVAE(VQVAEConfig.paper())
    convs = [m for m in model.encoder.modules() if isinstance(m, torch.nn.Conv2d)]
    assert [(c.out_channels, c.kernel_size, c.stride) for c in convs] == [
        (32, (3, 3), (2, 2)),
        (64, (3, 3), (1, 1)),
        (64, (3, 3), (1, 1)),
    ]
    tconvs = [m for m in model.decoder.modules() if isinstance(m, torch.nn.ConvTranspose2d)]
    assert [(c.out_channels, c.kernel_size[0], c.stride[0]) for c in tconvs] == [
        (64, 3, 2),
        (64, 3, 1),
        (32, 3, 1),
        (3, 1, 1),
    ]
    assert model.quantizer.codebook.shape == (512, 64)
    assert model.quantizer.commitment_weight == 0.2
    # the output layer is linear by default, tanh on request
    assert not isinstance(list(model.decoder.net)[-1], torch.nn.Tanh)
    tanh = VQVAE(VQVAEConfig(output_activation="tanh"))
    assert isinstance(list(tanh.decoder.net)[-1], torch.nn.Tanh)


def test_32px_images_give_16x16_tokens_and_uint8_matches_float():
    model = VQVAE(VQVAEConfig.tiny())
    u8 = torch.randint(0, 256, (3, 3, 32, 32), dtype=torch.uint8)
    t_u8 = model.encode(u8)
    assert t_u8.shape == (3, 16, 16)
    assert torch.equal(t_u8, model.encode(u8.float() / 127.5 - 1))


def test_encode_is_deterministic_and_does_not_touch_codebook():
    model = VQVAE(VQVAEConfig.tiny())
    x = torch.rand(4, 3, 16, 16) * 2 - 1
    model.encode(x)  # k-means initialisation happens on the first batch
    before = {k: v.clone() for k, v in model.state_dict().items()}
    t1, t2 = model.encode(x), model.encode(x)
    assert torch.equal(t1, t2)
    for k, v in model.state_dict().items():
        assert torch.equal(before[k], v), k


def test_decode_equals_decoder_of_codebook_vectors():
    model = VQVAE(VQVAEConfig.tiny()).eval()
    tokens = torch.randint(0, 32, (2, 4, 4))
    codes = model.quantizer.codebook[tokens].permute(0, 3, 1, 2)  # (B, D, h, w)
    expected = model.decoder(codes).clamp(-1, 1)
    torch.testing.assert_close(model.decode(tokens), expected)


def test_save_load_round_trip(tmp_path):
    cfg = VQVAEConfig.tiny()
    model = VQVAE(cfg)
    x = torch.rand(4, 3, 16, 16) * 2 - 1
    tokens = model.encode(x)
    model.save(tmp_path / "vq.safetensors")
    loaded = VQVAE.load(tmp_path / "vq.safetensors")
    assert loaded.cfg == cfg
    for (k1, v1), (k2, v2) in zip(model.state_dict().items(), loaded.state_dict().items()):
        assert k1 == k2 and torch.equal(v1, v2)
    assert torch.equal(loaded.encode(x), tokens)
    torch.testing.assert_close(loaded.decode(tokens), model.decode(tokens))


def test_saved_files_follow_the_umask(tmp_path):
    import os

    previous = os.umask(0o027)
    try:
        VQVAE(VQVAEConfig.tiny()).save(tmp_path / "vq.safetensors")
    finally:
        os.umask(previous)
    assert (tmp_path / "vq.safetensors").stat().st_mode & 0o777 == 0o640  # safetensors alone writes 0600


def test_load_rejects_mismatched_state(tmp_path):
    from safetensors.torch import load_file, save_file

    model = VQVAE(VQVAEConfig.tiny())
    path = tmp_path / "vq.safetensors"
    model.save(path)
    from safetensors import safe_open

    with safe_open(str(path), framework="pt") as f:
        meta = f.metadata()
    state = load_file(str(path))
    state["decoder.net.0.bias"] = torch.zeros(5)
    save_file(state, str(tmp_path / "bad_shape.safetensors"), metadata=meta)
    with pytest.raises(ValueError, match="decoder.net.0.bias has shape"):
        VQVAE.load(tmp_path / "bad_shape.safetensors")
    del state["decoder.net.0.bias"]
    save_file(state, str(tmp_path / "missing.safetensors"), metadata=meta)
    with pytest.raises(ValueError, match="missing"):
        VQVAE.load(tmp_path / "missing.safetensors")
    save_file(load_file(str(path)), str(tmp_path / "nometa.safetensors"))
    with pytest.raises(ValueError, match="not a projectable_vqvae checkpoint"):
        VQVAE.load(tmp_path / "nometa.safetensors")
    with pytest.raises(FileNotFoundError, match="no VQ-VAE checkpoint"):
        VQVAE.load(tmp_path / "absent.safetensors")


@pytest.mark.parametrize(
    "bad, match",
    [
        (torch.rand(3, 16, 16), r"shape \(B, 3, H, W\)"),
        (torch.rand(2, 16, 16, 3), r"shape \(B, 3, H, W\)"),
        (torch.rand(2, 3, 15, 16), "not divisible"),
        (torch.zeros(2, 3, 16, 16, dtype=torch.int32), "uint8"),
    ],
)
def test_bad_images_raise(bad, match):
    with pytest.raises(ValueError, match=match):
        VQVAE(VQVAEConfig.tiny()).encode(bad)


def test_bad_tokens_raise():
    model = VQVAE(VQVAEConfig.tiny())
    with pytest.raises(ValueError, match=r"\[0, 32\)"):
        model.decode(torch.full((1, 4, 4), 32))
    with pytest.raises(ValueError, match="integers"):
        model.decode(torch.zeros(1, 4, 4))
    with pytest.raises(ValueError, match=r"\(B, h, w\)"):
        model.decode(torch.zeros(16, dtype=torch.long))


def test_bad_config_raises():
    with pytest.raises(ValueError, match="equal"):
        VQVAEConfig(decoder_layers=((64, 3, 1), (3, 1, 1)))
    with pytest.raises(ValueError, match="in_channels"):
        VQVAEConfig(decoder_layers=((64, 3, 2), (4, 1, 1)))
    with pytest.raises(ValueError, match="output_activation"):
        VQVAEConfig(output_activation="sigmoid")


def test_codebook_usage_and_psnr():
    usage = codebook_usage(torch.tensor([0, 1, 2, 3]), 8)
    assert usage.used_codes == 4 and usage.dead_codes == 4
    assert usage.perplexity == pytest.approx(4.0)
    assert codebook_usage(torch.zeros(10, dtype=torch.long), 8).perplexity == pytest.approx(1.0)
    assert psnr(4.0) == pytest.approx(0.0) and psnr(0.04) == pytest.approx(20.0)
    with pytest.raises(ValueError, match="codebook_size"):
        codebook_usage(torch.tensor([9]), 8)


def test_evaluate_reconstruction_matches_manual():
    model = VQVAE(VQVAEConfig.tiny())
    x = torch.rand(5, 3, 16, 16) * 2 - 1
    m = evaluate_reconstruction(model, x, batch_size=2)
    recon = model.decode(model.encode(x))
    mse = (recon - x).pow(2).mean().item()
    assert m.num_images == 5 and m.mse == pytest.approx(mse, rel=1e-5)
    assert m.psnr == pytest.approx(psnr(mse), rel=1e-5)
    assert m.usage.counts.sum() == 5 * 8 * 8
