"""GPT-2 export and import: equal logits both ways, exact round trips, refused variants."""

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # never download: every GPT-2 here is built from a config

import pytest
import torch

transformers = pytest.importorskip(
    "transformers", reason="the GPT-2 export/import needs the optional extra projectable-core[hf] (transformers)"
)

from projectable import GPT, GPTConfig, ProjectableGPT, ProjectorConfig  # noqa: E402
from projectable.hf import (  # noqa: E402
    START_LOGIT,
    ModelCard,
    exclude_start_token,
    from_gpt2,
    load_gpt2,
    save_gpt2,
    to_gpt2,
)


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
    torch.testing.assert_close(theirs[..., V], torch.full_like(theirs[..., V], START_LOGIT), rtol=1e-10, atol=1e-8)


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


def test_round_trip_ours_hf_ours():
    """Exact for every tensor but the final norm and head, which the export rewrites (equal logits)."""
    model = random_gpt()
    back = from_gpt2(to_gpt2(model))
    assert back.config == model.config
    rewritten = {"ln_f.weight", "ln_f.bias", "head.weight"}
    for name, tensor in model.named_tensors().items():
        assert name in rewritten or torch.equal(back.named_tensors()[name], tensor), name
    tokens = torch.randint(0, 16, (3, 12))
    with torch.no_grad():
        torch.testing.assert_close(back(tokens), model(tokens), rtol=1e-10, atol=1e-10)


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
    assert (path / "config.json").exists() and (path / "README.md").exists()
    hf = load_gpt2(path)
    assert hf.generation_config.suppress_tokens == [16]
    assert hf.generation_config.bos_token_id == hf.generation_config.decoder_start_token_id == 16
    assert hf.generation_config.max_length == 13
    assert hf.generate().shape == (1, 13)
    back = from_gpt2(tmp_path / "gpt2")
    tokens = torch.randint(0, 16, (2, 12))
    with torch.no_grad():
        torch.testing.assert_close(back(tokens), model(tokens))
        torch.testing.assert_close(hf(with_start(tokens, 16)).logits[..., :16], model(tokens))


def test_hf_generate_never_emits_start_token():
    model = random_gpt(seed=6).float()
    hf = to_gpt2(model)
    hf.generation_config.suppress_tokens = None  # the weights alone exclude it
    out = hf.generate(torch.full((64, 1), 16), max_new_tokens=12, do_sample=True, top_k=0, temperature=3.0)
    assert out.shape == (64, 13)
    assert (out[:, 1:] < 16).all()


def perturbed_norms(model: GPT, case: str) -> GPT:
    """Final-norm weights that stress the export's construction."""
    with torch.no_grad():
        if case == "fresh":  # b = 0: sum(b / g) = 0, the start row cannot use b alone
            model.parts.lnf_w.fill_(1.0)
            model.parts.lnf_b.zero_()
        elif case == "zero_channel":
            model.parts.lnf_w[3] = 0.0
        elif case == "signs_and_small":
            model.parts.lnf_w.mul_(torch.where(torch.arange(model.config.n_embd) % 2 == 0, -1.0, 1.0))
            model.parts.lnf_w[5] = 1e-3
    return model


def generated_model(dtype=torch.float32) -> GPT:
    torch.manual_seed(11)
    source = random_gpt(seed=11, n_embd=64).to(dtype)
    projectable = ProjectableGPT(source, ProjectorConfig(task_dim=3, scales=(0.5,))).to(dtype).eval()
    with torch.no_grad():
        for name, param in projectable.generators.named_parameters():
            if name.endswith("w2"):
                param.normal_(0, 0.3)
    return projectable.generate(torch.tensor([0.3, -1.0, 2.0], dtype=dtype), scale=0.5)


@pytest.mark.parametrize("case", ["trained", "fresh", "zero_channel", "signs_and_small", "generated"])
def test_exported_log_softmax_equals_ours_and_start_is_excluded(case):
    """transformers' own softmax over all V + 1 tokens equals ours over V, in float32, on random tokens."""
    if case == "generated":
        model = generated_model()
    else:
        model = perturbed_norms(random_gpt(seed=8).float(), case)
    V, T = model.config.vocab_size, model.config.block_size
    hf = to_gpt2(model)
    tokens = torch.randint(0, V, (64, T), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        ours = torch.log_softmax(model(tokens), -1)
        theirs = hf(with_start(tokens, V)).logits
    assert theirs.dtype == torch.float32
    assert (theirs[..., V] <= -1e4).all()
    torch.testing.assert_close(torch.log_softmax(theirs, -1)[..., :V], ours, rtol=0, atol=1e-5)


@pytest.mark.parametrize("case", ["trained", "fresh", "zero_channel", "signs_and_small"])
def test_exclude_start_token_keeps_image_logits_for_any_hidden_state(case):
    """The construction, on raw residual vectors of any scale: image logits kept, start logit constant."""
    model = perturbed_norms(random_gpt(seed=9), case)
    p = model.parts
    final = exclude_start_token(p.lnf_w, p.lnf_b, p.head)
    scales = torch.logspace(-3, 3, 256, dtype=torch.float64)[:, None]  # residual streams small and large
    x = torch.randn(256, model.config.n_embd, dtype=torch.float64) * scales
    C = (model.config.n_embd,)
    ours = torch.nn.functional.layer_norm(x, C, p.lnf_w, p.lnf_b) @ p.head.T
    h = torch.nn.functional.layer_norm(x, C, final.norm_weight, final.norm_bias)
    torch.testing.assert_close(h @ final.head.T, ours, rtol=1e-9, atol=1e-9)
    torch.testing.assert_close(h @ final.start_row, torch.full((256,), START_LOGIT, dtype=torch.float64))


def test_exclude_start_token_leaves_a_usual_norm_alone():
    """With |sum(b / g)| >= 1 only the start row is added: the export's image logits are ours bit for bit."""
    model = random_gpt(seed=13).float()
    p = model.parts
    with torch.no_grad():
        p.lnf_b.add_(0.5)
    assert abs(float((p.lnf_b / p.lnf_w).sum().detach())) >= 1
    final = exclude_start_token(p.lnf_w, p.lnf_b, p.head)
    assert torch.equal(final.norm_weight, p.lnf_w) and torch.equal(final.norm_bias, p.lnf_b)
    assert torch.equal(final.head, p.head)


def test_generate_without_arguments_makes_one_image():
    model = random_gpt(seed=10).float()
    V, T = model.config.vocab_size, model.config.block_size
    hf = to_gpt2(model)
    torch.manual_seed(0)
    one = hf.generate()
    assert one.shape == (1, T + 1) and one[0, 0] == V and (one[0, 1:] < V).all()
    many = hf.generate(num_return_sequences=5)
    assert many.shape == (5, T + 1) and (many[:, 1:] < V).all()
    assert len({tuple(row.tolist()) for row in many}) > 1  # sampled, not greedy
    # A prompt of the start token and some image tokens completes the image; max_new_tokens up to the end too.
    prompt = torch.cat([torch.full((2, 1), V), torch.randint(0, V, (2, 4))], dim=1)
    assert hf.generate(prompt).shape == (2, T + 1)
    assert hf.generate(prompt, max_new_tokens=T - 4).shape == (2, T + 1)


def test_conditional_model_cannot_be_exported():
    with pytest.raises(ValueError, match="conditional"):
        to_gpt2(GPT(GPTConfig.tiny(task_dim=3)))
    with pytest.raises(ValueError, match="added to every token's embedding"):
        to_gpt2(GPT(GPTConfig.tiny(task_dim=3, task_input="every")))


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


def test_model_card_and_extra_files(tmp_path):
    small = generated_model()
    palette = tmp_path / "palette.npz"
    palette.write_bytes(b"centres")
    card = ModelCard(task_vector=[0.3, -1.0, 2.0], scale=0.5, source_run="runs/m1-cpu", commit="abc1234")
    path = save_gpt2(small, tmp_path / "gpt2", card=card,
                     extra_files={"palette.npz": palette, "decoder.safetensors": b"weights"})
    assert (path / "palette.npz").read_bytes() == b"centres"
    assert (path / "decoder.safetensors").read_bytes() == b"weights"
    text = (path / "README.md").read_text()
    assert text.startswith("---\nlibrary_name: transformers\n")
    for expected in ("P_s(t) at scale 1/2", "[0.3, -1.0, 2.0]", "runs/m1-cpu", "abc1234", "`palette.npz`",
                     "vocabulary | 16 image tokens (0..15) + start token 16", f"{small.num_params():,} parameters",
                     "model.generate(num_return_sequences=16)[:, 1:]"):
        assert expected in text, expected
    plain = (save_gpt2(random_gpt(seed=12).float(), tmp_path / "plain") / "README.md").read_text()
    assert "task vector" not in plain and "commit" not in plain
    for bad in ("../escape.bin", "sub/file.bin", "config.json", "README.md"):
        with pytest.raises(ValueError, match="plain file name"):
            save_gpt2(small, tmp_path / "bad", extra_files={bad: b"x"})
