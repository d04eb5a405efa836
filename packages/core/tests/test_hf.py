"""GPT-2 export and import: equal logits both ways, exact round trips, refused variants."""

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # never download: every GPT-2 here is built from a config

import pytest
import torch

transformers = pytest.importorskip("transformers")

from projectable import GPT, GPTConfig, ProjectableGPT, ProjectorConfig  # noqa: E402
from projectable.hf import from_gpt2, load_gpt2, save_gpt2, to_gpt2  # noqa: E402


def random_gpt(seed=0, **overrides) -> GPT:
    """A tiny GPT in float64 with every parameter perturbed (norms and biases away from 1 and 0)."""
    torch.manual_seed(seed)
    model = GPT(GPTConfig.tiny(**overrides)).double().eval()
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.1)
    return model


def tiny_gpt2(seed=0, **overrides):
    torch.manual_seed(seed)
    kwargs = dict(vocab_size=20, n_positions=12, n_embd=32, n_layer=2, n_head=4, activation_function="gelu",
                  resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0, tie_word_embeddings=False, bos_token_id=19,
                  eos_token_id=19)
    kwargs.update(overrides)
    model = transformers.GPT2LMHeadModel(transformers.GPT2Config(**kwargs)).double().eval()
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.1)
    return model


def with_start(tokens, start_id):
    """GPT-2 input for predicting ``tokens``: the start token, then tokens shifted right by one."""
    return torch.cat([torch.full_like(tokens[:, :1], start_id), tokens[:, :-1]], dim=1)


def test_export_logits_equal():
    model = random_gpt()
    V = model.config.vocab_size
    hf = to_gpt2(model)
    assert hf.config.vocab_size == V + 1 and hf.config.n_positions == model.config.block_size
    assert not hf.config.tie_word_embeddings
    assert hf.lm_head.weight.data_ptr() != hf.transformer.wte.weight.data_ptr()
    tokens = torch.randint(0, V, (3, model.config.block_size))
    with torch.no_grad():
        ours = model(tokens)
        theirs = hf(with_start(tokens, V)).logits
    torch.testing.assert_close(theirs[..., :V], ours, rtol=1e-10, atol=1e-10)
    assert torch.all(theirs[..., V] == 0)  # the start token's head row is zero


def test_exported_activation_is_exact_gelu():
    from transformers.activations import ACT2FN

    x = torch.linspace(-4, 4, 101, dtype=torch.float64)
    assert torch.equal(ACT2FN["gelu"](x), torch.nn.functional.gelu(x))


def test_export_generated_model():
    torch.manual_seed(1)
    source = GPT(GPTConfig.tiny(n_embd=64))
    projectable = ProjectableGPT(source, ProjectorConfig(task_dim=3, scales=(0.5,))).double().eval()
    small = projectable.generate(torch.tensor([0.3, -1.0, 2.0], dtype=torch.float64), scale=0.5)
    hf = to_gpt2(small)
    tokens = torch.randint(0, 16, (2, 12))
    with torch.no_grad():
        torch.testing.assert_close(hf(with_start(tokens, 16)).logits[..., :16], small(tokens))


def test_round_trip_ours_hf_ours_is_exact():
    model = random_gpt()
    back = from_gpt2(to_gpt2(model))
    assert back.config == model.config
    for name, tensor in model.named_tensors().items():
        assert torch.equal(back.named_tensors()[name], tensor), name


def test_import_logits_equal():
    hf = tiny_gpt2()
    model = from_gpt2(hf)  # start token: config.bos_token_id = 19
    assert model.config.vocab_size == 20 and model.config.n_head == 4 and model.config.mlp_ratio == 4
    tokens = torch.randint(0, 20, (3, 12))
    with torch.no_grad():
        torch.testing.assert_close(model(tokens), hf(with_start(tokens, 19)).logits, rtol=1e-10, atol=1e-10)


def test_import_tied_gpt2_with_explicit_start_token():
    hf = tiny_gpt2(seed=2, tie_word_embeddings=True, n_inner=64)
    assert hf.lm_head.weight.data_ptr() == hf.transformer.wte.weight.data_ptr()
    model = from_gpt2(hf, start_token_id=3)
    assert model.config.mlp_ratio == 2
    tokens = torch.randint(0, 20, (2, 12))
    with torch.no_grad():
        torch.testing.assert_close(model(tokens), hf(with_start(tokens, 3)).logits)


def test_round_trip_hf_ours_hf():
    hf = tiny_gpt2(seed=3)
    again = to_gpt2(from_gpt2(hf))
    tokens = torch.randint(0, 20, (2, 12))
    with torch.no_grad():
        torch.testing.assert_close(again(with_start(tokens, 20)).logits[..., :20], hf(with_start(tokens, 19)).logits)


def test_imported_gpt2_serves_as_source():
    source = from_gpt2(tiny_gpt2(seed=4)).float()
    projectable = ProjectableGPT(source, ProjectorConfig(task_dim=2, scales=(0.25,)))
    tokens = torch.randint(0, 20, (2, 12))
    loss = projectable.loss(tokens, torch.randn(2, 2))
    loss.total.backward()
    assert torch.isfinite(loss.total)
    assert source.dense.qkv_w.grad is not None


def test_save_and_load_directory(tmp_path):
    model = random_gpt(seed=5).float()
    path = save_gpt2(model, tmp_path / "gpt2")
    assert (path / "config.json").exists()
    hf = load_gpt2(path)
    assert hf.generation_config.suppress_tokens == [16]
    back = from_gpt2(tmp_path / "gpt2")
    tokens = torch.randint(0, 16, (2, 12))
    with torch.no_grad():
        torch.testing.assert_close(back(tokens), model(tokens))
        torch.testing.assert_close(hf(with_start(tokens, 16)).logits[..., :16], model(tokens))


def test_hf_generate_never_emits_start_token():
    model = random_gpt(seed=6).float()
    hf = to_gpt2(model)
    # Its logit is 0 among small random logits: unsuppressed, 44 draws would almost surely hit it.
    out = hf.generate(torch.full((4, 1), 16), max_new_tokens=11, do_sample=True, top_k=0, pad_token_id=0)
    assert out.shape == (4, 12)
    assert (out[:, 1:] < 16).all()


def test_conditional_model_cannot_be_exported():
    with pytest.raises(ValueError, match="conditional"):
        to_gpt2(GPT(GPTConfig.tiny(task_dim=3)))


def test_refused_gpt2_variants():
    with pytest.raises(ValueError, match="allow_gelu_approximation"):
        from_gpt2(tiny_gpt2(activation_function="gelu_new"))
    with pytest.raises(ValueError, match="activation"):
        from_gpt2(tiny_gpt2(activation_function="relu"))
    with pytest.raises(ValueError, match="scales attention"):
        from_gpt2(tiny_gpt2(scale_attn_by_inverse_layer_idx=True))
    with pytest.raises(ValueError, match="start_token_id"):
        from_gpt2(tiny_gpt2(), start_token_id=20)
    with pytest.raises(ValueError, match="start_token_id"):
        from_gpt2(tiny_gpt2(bos_token_id=None))
    with pytest.raises(ValueError, match="dropout"):
        from_gpt2(tiny_gpt2(resid_pdrop=0.1))
    with pytest.raises(ValueError, match="no GPT-2 model"):
        load_gpt2("/nonexistent/gpt2")


def test_gelu_approximation_import_is_close():
    hf = tiny_gpt2(seed=7, activation_function="gelu_new")
    model = from_gpt2(hf, allow_gelu_approximation=True)
    tokens = torch.randint(0, 20, (2, 12))
    with torch.no_grad():
        ours, theirs = model(tokens), hf(with_start(tokens, 19)).logits
    assert not torch.equal(ours, theirs)
    torch.testing.assert_close(ours, theirs, rtol=0, atol=1e-2)


def test_mismatched_checkpoint_shape_is_refused():
    hf = tiny_gpt2()
    with torch.no_grad():
        hf.transformer.wpe.weight = torch.nn.Parameter(torch.zeros(11, 32, dtype=torch.float64))
    with pytest.raises(ValueError, match="shape"):
        from_gpt2(hf)
