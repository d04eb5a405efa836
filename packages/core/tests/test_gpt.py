import pytest
import torch
from projectable import GPT, GPTConfig
from projectable.gpt import DENSE_KINDS


def test_paper_presets_match_parameter_counts():
    """Sec. 3.2: 76.7M, 19.5M, 5.0M, 1.3M trainable parameters; built on the meta device, nothing allocated."""
    expected = {1.0: 76.7, 0.5: 19.5, 0.25: 5.0, 0.125: 1.3}
    for scale, millions in expected.items():
        with torch.device("meta"):
            model = GPT(GPTConfig.paper(scale))
        assert round(model.num_params() / 1e6, 1) == millions
        assert model.config.n_layer == 24 and model.config.n_head == 8
        assert model.config.n_embd == 512 * scale


def graph_nodes(root) -> list[str]:
    """Names of every autograd node the backward from ``root`` visits."""
    seen, stack, names = set(), [root], []
    while stack:
        node = stack.pop()
        if node is None or node in seen:
            continue
        seen.add(node)
        names.append(type(node).__name__)
        stack.extend(next_node for next_node, _ in node.next_functions)
    return names


@pytest.mark.parametrize("route", [None, "materialize", "expand"])
def test_backward_stacks_each_layer_gradient_once(tiny_source, make_projectable, route):
    """Stacked weights reach each layer through one ``unbind`` (gpt.layer_views), not one index per layer,
    whose backward would zero-fill a gradient of the whole stack for every layer (L^2 work per step)."""
    x = torch.randint(0, 16, (2, 12))
    if route is None:
        loss = tiny_source.loss(x)
    else:
        model = make_projectable(tiny_source)
        loss = model.projected_logits(x, torch.rand(2, 3), 0.5, route=route).logsumexp(-1).mean()
    nodes = graph_nodes(loss.grad_fn)
    assert "SelectBackward0" not in nodes
    assert nodes.count("UnbindBackward0") >= 4 + 2 * len(DENSE_KINDS)  # the four norm stacks, every weight and bias


def test_causal_and_shapes(tiny_source):
    x = torch.randint(0, 16, (3, 12))
    logits = tiny_source(x)
    assert logits.shape == (3, 12, 16)
    y = x.clone()
    y[:, 7] = (y[:, 7] + 1) % 16
    changed = tiny_source(y)
    # token 7 is the input at position 8: positions 0..7 must not see it, position 8 must.
    torch.testing.assert_close(changed[:, :8], logits[:, :8])
    assert not torch.allclose(changed[:, 8], logits[:, 8])


def test_conditional_start_embedding_depends_on_task():
    model = GPT(GPTConfig.tiny(task_dim=3))
    x = torch.randint(0, 16, (2, 12))
    a = model(x, torch.zeros(2, 3))
    b = model(x, torch.ones(2, 3))
    assert not torch.allclose(a[:, 0], b[:, 0])
    with pytest.raises(ValueError, match="conditional"):
        model(x)


def test_sequence_nll_matches_cross_entropy(tiny_source):
    x = torch.randint(0, 16, (4, 12))
    logits = tiny_source(x).double()
    ref = -torch.log_softmax(logits, -1).gather(-1, x.unsqueeze(-1)).squeeze(-1).mean(1)
    torch.testing.assert_close(tiny_source.sequence_nll(x).double(), ref, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(tiny_source.loss(x).double(), ref.mean(), rtol=1e-5, atol=1e-5)


def test_kv_cache_step_matches_full_forward(tiny_source):
    from projectable import KVCache

    x = torch.randint(0, 16, (2, 12))
    full = tiny_source(x)
    cache = KVCache(tiny_source.config.n_layer)
    steps = [tiny_source.step(torch.zeros(2, 1, dtype=torch.long), cache)]
    for i in range(1, 12):
        steps.append(tiny_source.step(x[:, i - 1 : i], cache))
    torch.testing.assert_close(torch.stack(steps, 1), full, rtol=1e-5, atol=1e-5)


def test_save_load_round_trip(tmp_path, tiny_source):
    path = tmp_path / "m.safetensors"
    tiny_source.save(path)
    loaded = GPT.load(path)
    assert loaded.config == tiny_source.config
    x = torch.randint(0, 16, (2, 12))
    torch.testing.assert_close(loaded(x), tiny_source(x))
    from safetensors import safe_open

    with safe_open(str(path), framework="pt") as f:
        assert "blocks.1.attn.qkv.weight" in f.keys()  # per-layer names


def test_load_rejects_other_shapes(tmp_path, tiny_source):
    path = tmp_path / "m.safetensors"
    tiny_source.save(path)
    other = GPT(GPTConfig.tiny(n_embd=64))
    from safetensors import safe_open

    with safe_open(str(path), framework="pt") as f:
        tensors = {k: f.get_tensor(k) for k in f.keys()}
    with pytest.raises(ValueError, match="another model size"):
        other.load_named_tensors(tensors)
    with pytest.raises(ValueError, match="missing"):
        other.load_named_tensors({k: v for k, v in tensors.items() if k != "start"})
    with pytest.raises(ValueError, match="no model file"):
        GPT.load(tmp_path / "absent.safetensors")


@pytest.mark.parametrize(
    "tokens, match",
    [
        (torch.full((1, 12), 16), "vocabulary"),
        (torch.full((1, 12), -1), "vocabulary"),
        (torch.zeros(1, 13, dtype=torch.long), "exceeds"),
        (torch.zeros(1, 12), "integer tensor"),
    ],
)
def test_bad_tokens(tiny_source, tokens, match):
    with pytest.raises(ValueError, match=match):
        tiny_source(tokens)


@pytest.mark.parametrize(
    "kwargs, match",
    [(dict(n_embd=30, n_head=4), "divisible"), (dict(dropout=1.0), "dropout"), (dict(task_dim=-1), "task_dim"),
     (dict(task_dim=3, task_input="all"), "task_input='all' is not one of")],
)
def test_bad_config(kwargs, match):
    with pytest.raises(ValueError, match=match):
        GPTConfig.tiny(**kwargs)


def test_dropout_only_in_training():
    model = GPT(GPTConfig.tiny(dropout=0.5))
    x = torch.randint(0, 16, (2, 12))
    model.eval()
    torch.testing.assert_close(model(x), model(x))
    model.train()
    assert not torch.allclose(model(x), model(x))


def test_corrupt_file_gives_clear_error(tmp_path):
    path = tmp_path / "broken.safetensors"
    path.write_bytes(b"\x00\x01 not a safetensors file")
    with pytest.raises(ValueError, match="not a readable safetensors file"):
        GPT.load(path)


def test_min_head_size_gives_fewer_larger_heads_at_small_widths_only():
    config = GPTConfig(n_embd=128, n_head=4, n_layer=2, block_size=8, vocab_size=16, min_head_size=8)
    assert [(config.scaled(s).n_head, config.scaled(s).head_size) for s in (0.5, 0.25, 0.125)] == [
        (4, 16), (4, 8), (2, 8)]
    assert GPTConfig(n_embd=128, n_head=4, n_layer=2, block_size=8, vocab_size=16).scaled(0.125).n_head == 4
    with pytest.raises(ValueError, match="min_head_size must be an int >= 0"):
        GPTConfig(min_head_size=-1)


def test_a_generated_model_with_fewer_heads_equals_the_projected_forward():
    from projectable import ProjectableGPT, ProjectorConfig

    torch.manual_seed(0)
    source = GPT(GPTConfig(n_embd=64, n_head=4, n_layer=2, block_size=16, vocab_size=16, min_head_size=8))
    tokens, tasks = torch.randint(0, 16, (3, 16)), torch.rand(3, 18)
    for route in ("materialize", "expand"):
        model = ProjectableGPT(source, ProjectorConfig(task_dim=18, scales=(0.125,), route=route)).eval()
        assert model.small_config(0.125).n_head == 1  # width 8: one head of 8 instead of four of 2
        batched = model.sequence_nll(tokens, tasks, scale=0.125)
        alone = torch.stack([model.generate(tasks[i], 0.125).sequence_nll(tokens[i : i + 1], None)[0]
                             for i in range(3)])
        torch.testing.assert_close(batched, alone, rtol=1e-5, atol=1e-5)


# ------------------------------------------------------------------------------------------------
# task_input: where a conditional model reads t ("first": the paper's M~_s; "every": every position)


def _conditional(task_input: str, **kw) -> GPT:
    return GPT(GPTConfig.tiny(task_dim=3, task_input=task_input, **kw)).eval()


def test_first_position_task_input_is_the_default_and_feeds_t_as_the_first_embedding_only():
    from projectable.gpt import embed, transformer_forward

    assert GPTConfig.tiny(task_dim=3).task_input == "first"
    model = _conditional("first")
    parts = model.parts
    x, t = torch.randint(0, 16, (2, 12)), torch.rand(2, 3)
    # the paper's M~_s spelled out: [task_proj(t), wte(x_0..x_{T-2})] + positions, bit for bit
    inputs = torch.cat([parts.task_proj(t).unsqueeze(1), parts.wte[x[:, :-1]]], dim=1) + parts.wpe
    assert torch.equal(model(x, t), transformer_forward(parts, model.linears(), inputs))
    changed = embed(parts, x, t) - embed(parts, x, torch.rand(2, 3))
    assert changed[:, 0].abs().min() > 0 and torch.equal(changed[:, 1:], torch.zeros_like(changed[:, 1:]))


def test_every_position_task_input_adds_t_to_every_input():
    from projectable.gpt import embed

    model = _conditional("every")
    x, t, u = torch.randint(0, 16, (2, 12)), torch.rand(2, 3), torch.rand(2, 3)
    changed = embed(model.parts, x, t) - embed(model.parts, x, u)  # (B, T, C)
    shift = (model.parts.task_proj(t) - model.parts.task_proj(u)).unsqueeze(1).expand_as(changed)
    torch.testing.assert_close(changed, shift)  # the same map of t at every position, the first included
    assert changed.abs().amax(-1).min() > 0


@torch.no_grad()
def test_every_position_model_with_a_constant_task_map_is_an_unconditional_model_with_shifted_positions():
    """task_proj = 0 t + b: the start embedding is b and every later input gains b, which an unconditional
    model expresses as start = b and wpe[i] + b for i >= 1."""
    every = _conditional("every")
    every.parts.task_proj.weight.zero_()
    every.parts.task_proj.bias.normal_(0, 0.5)
    bias = every.parts.task_proj.bias
    state = {k: v for k, v in every.state_dict().items() if not k.startswith("parts.task_proj")}
    state["parts.start"] = bias.clone()
    state["parts.wpe"] = torch.cat([state["parts.wpe"][:1], state["parts.wpe"][1:] + bias])
    plain = GPT(GPTConfig.tiny()).eval()
    plain.load_state_dict(state, strict=True)
    x = torch.randint(0, 16, (3, 12))
    torch.testing.assert_close(every(x, torch.rand(3, 3)), plain(x))
    first = _conditional("first")
    first.load_state_dict(every.state_dict(), strict=True)
    assert not torch.allclose(first(x, torch.rand(3, 3)), plain(x))  # the shift of later positions matters


def test_every_position_kv_cache_and_sampling_match_the_full_forward():
    from projectable import KVCache, sample

    model = _conditional("every")
    x, t = torch.randint(0, 16, (2, 12)), torch.rand(2, 3)
    cache = KVCache(model.config.n_layer)
    steps = [model.step(torch.zeros(2, 1, dtype=torch.long), cache, t)]
    steps += [model.step(x[:, i - 1 : i], cache, t) for i in range(1, 12)]
    torch.testing.assert_close(torch.stack(steps, 1), model(x, t), rtol=1e-5, atol=1e-5)
    cached = sample(model, 2, task=t, generator=torch.Generator().manual_seed(1))
    uncached = sample(model, 2, task=t, generator=torch.Generator().manual_seed(1), use_cache=False)
    assert torch.equal(cached, uncached)


def test_task_input_survives_save_and_load_and_first_position_files_do_not_name_it(tmp_path):
    import json

    from safetensors import safe_open

    x, t = torch.randint(0, 16, (2, 12)), torch.rand(2, 3)
    for task_input in ("first", "every"):
        model = _conditional(task_input)
        path = tmp_path / f"{task_input}.safetensors"
        model.save(path)
        loaded = GPT.load(path).eval()
        assert loaded.config == model.config and loaded.config.task_input == task_input
        assert torch.equal(loaded(x, t), model(x, t))
        with safe_open(str(path), framework="pt") as f:
            saved = json.loads(f.metadata()["config"])
        # a first-position model's file is what it was before the switch existed
        assert ("task_input" in saved) == (task_input == "every")


def test_a_source_reading_t_at_every_position_is_refused_by_the_projector():
    from projectable import ProjectableGPT, ProjectorConfig

    with pytest.raises(ValueError, match="task_input='every'"):
        ProjectableGPT(_conditional("every", n_embd=32), ProjectorConfig(task_dim=3, scales=(0.5,)))


def test_cpu_bf16_autocast_runs_attention_in_fp32_and_the_rest_in_bf16(monkeypatch):
    """gpt.CPU_ATTENTION_IN_FP32: the attention kernel sees fp32 heads under CPU bf16 autocast, the dense layers
    stay bf16, and the logits stay close to the fp32 model's; switched off, attention runs in bf16."""
    import torch.nn.functional as F
    from projectable import gpt

    seen = []
    sdpa = F.scaled_dot_product_attention

    def recording(q, k, v, **kwargs):
        seen.append(q.dtype)
        return sdpa(q, k, v, **kwargs)

    monkeypatch.setattr(F, "scaled_dot_product_attention", recording)
    torch.manual_seed(0)
    model = GPT(GPTConfig(vocab_size=16, block_size=8, n_layer=2, n_head=2, n_embd=16))
    tokens = torch.randint(0, 16, (3, 8))
    reference = model(tokens)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        logits = model(tokens)
    assert seen[-2:] == [torch.float32, torch.float32] and logits.dtype == torch.bfloat16
    assert (logits.float() - reference).abs().max() < 0.05
    monkeypatch.setattr(gpt, "CPU_ATTENTION_IN_FP32", False)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        model(tokens)
    assert seen[-2:] == [torch.bfloat16, torch.bfloat16]
