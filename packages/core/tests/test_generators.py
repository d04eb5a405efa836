"""The weight generators of App. B (projection, blocks, low_rank, linear) behind one interface: exact block
selection, zero deltas that reproduce the base model, batched == looped, generate == forward, files, GPT-2."""

import json
import os
from dataclasses import replace

import pytest
import torch
from einops import rearrange
from projectable import GPT, GPTConfig, ProjectableGPT, ProjectorConfig
from projectable.cli import main
from projectable.generators import (
    GENERATOR_CLASSES,
    GENERATORS,
    RANKED_GENERATORS,
    SOURCE_FREE_GENERATORS,
    LowRankGenerator,
    ProjectionGenerator,
    WeightGenerator,
    generator_params,
    match_budget,
    max_rank,
    register,
    unregister,
)
from projectable.gpt import DENSE_KINDS
from projectable.projected import DerivedParts
from projectable.projector import route_cost, scale_key
from safetensors import safe_open
from safetensors.torch import save_file

ALL = ("projection", "blocks", "low_rank", "linear")
SOURCE_FREE = ("low_rank", "linear")
RANKS = {"low_rank": 2, "linear": 3}  # generator_rank of the tiny test models
# (generator, mlp) pairs that exist: the linear generator has no MLP to share.
WITH_MLP = [(g, mlp) for g in ALL for mlp in ("per_operator", "shared") if (g, mlp) != ("linear", "shared")]
# (generator, mlp, small_parts) triples that exist: source-free generators have no source to derive parts from.
VALID = [(g, mlp, parts) for g, mlp in WITH_MLP for parts in ("own", "derived") if (g, parts) not in
         {("low_rank", "derived"), ("linear", "derived")}]


def config(generator: str, scales=(0.5, 0.25), **kw) -> ProjectorConfig:
    return ProjectorConfig(task_dim=3, rank=4, scales=scales, generator=generator,
                           generator_rank=RANKS.get(generator, 0), **kw)


def projectable(source: GPT, projector: ProjectorConfig) -> ProjectableGPT:
    """The source for generators that read it, its config for those that do not."""
    return ProjectableGPT(source if projector.reads_source else source.config, projector)


def build(source: GPT, generator: str, scales=(0.5, 0.25), spread=0.3, **kw) -> ProjectableGPT:
    """A model whose generator really depends on t: every t-dependent parameter is perturbed (the deltas of
    low_rank and linear start at zero), base weights and small parts are left as built."""
    model = projectable(source, config(generator, scales, **kw)).to(source.parts.wte.dtype)
    with torch.no_grad():
        for name, param in model.generators.named_parameters():
            if ".base." not in name:
                param.add_(torch.randn_like(param) * spread)
    return model


def random_small(model: ProjectableGPT, scale: float) -> GPT:
    """A standalone GPT of the target width with every parameter away from its initialisation."""
    small = GPT(model.small_config(scale)).to(model._reference.dtype)
    with torch.no_grad():
        for param in small.parameters():
            param.add_(torch.randn_like(param) * 0.1)
    return small.eval()


def test_every_config_choice_has_a_generator():
    assert tuple(GENERATOR_CLASSES) == GENERATORS == ALL
    assert RANKED_GENERATORS == SOURCE_FREE_GENERATORS == SOURCE_FREE
    for name, cls in GENERATOR_CLASSES.items():
        assert cls.name == name
        assert cls.reads_source == config(name).reads_source == (name not in SOURCE_FREE)
        assert cls.size_knob == ("generator_rank" if name in SOURCE_FREE else "rank")
    prefixes = [cls.prefix for cls in GENERATOR_CLASSES.values()]
    assert prefixes == ["P", "B", "LR", "Lin"]  # the cells of experiment=generators: P2, B4, LR8, Lin2, ...


# ---- one declaration: a generator defined and registered here reaches every list, config and budget ---------

# (the built-in generator it reuses the maths of, whether it reads no source and is sized by generator_rank)
DECLARED = [(ProjectionGenerator, False), (LowRankGenerator, True)]


@pytest.fixture(params=DECLARED, ids=lambda param: param[0].name)
def declared(request):
    """A generator declared only in this test: a built-in one's maths under a name, cell prefix, label, colour
    and description of its own; registered for the test, removed after it."""
    maths, _ = request.param
    cls = type(f"Declared{maths.__name__}", (maths,), {
        "name": f"declared_{maths.name}", "prefix": f"D{maths.prefix}", "label": f"declared {maths.name}",
        "colour": "tab:brown", "what": f"{maths.name}'s maths under another name"})
    register(cls)
    yield cls, maths, request.param[1]
    unregister(cls.name)


def test_a_generator_declared_once_is_in_every_list_config_and_budget(declared, tiny_source):
    cls, maths, source_free = declared
    name = cls.name
    assert GENERATORS == (*ALL, name) and GENERATOR_CLASSES[name] is cls
    assert (name in SOURCE_FREE_GENERATORS, name in RANKED_GENERATORS) == (source_free, source_free)
    size = {"generator_rank": 2} if source_free else {}
    assert ProjectorConfig(task_dim=3, generator=name, **size).reads_source is not source_free
    with pytest.raises(ValueError, match="needs generator_rank >= 1" if source_free else
                       f"applies to low_rank and linear only; the '{name}' generator is sized by rank"):
        ProjectorConfig(task_dim=3, generator=name, generator_rank=0 if source_free else 2)
    if source_free:
        with pytest.raises(ValueError, match=f"needs a source, which the '{name}' generator does not read"):
            ProjectorConfig(task_dim=3, generator=name, generator_rank=2, small_parts="derived")
    # sized by its own knob, to what the built-in maths it shares is sized to, with the settings it needs
    reference = ProjectorConfig(task_dim=3, rank=4, scales=(0.5,), small_parts="derived")
    match, theirs = (match_budget(tiny_source.config, reference, 0.5, g) for g in (name, maths.name))
    assert (match.config.generator, match.knob, match.size) == (name, cls.size_knob, theirs.size)
    assert match.params.total == theirs.params.total and match.config.small_parts == theirs.config.small_parts
    # and it builds: the same module as the maths it shares, from the same seed
    models = []
    for config_of in (match.config, theirs.config):
        torch.manual_seed(0)
        models.append(projectable(tiny_source, config_of))
    tasks, tokens = torch.rand(2, 3), torch.randint(0, 16, (2, 12))
    mine, built_in = (model.projected_logits(tokens, tasks, 0.5) for model in models)
    assert isinstance(models[0].generators["1_2"], cls) and torch.equal(mine, built_in)


def test_after_unregister_a_declared_generator_is_gone_everywhere():
    cls = type("Declared", (ProjectionGenerator,), {"name": "declared", "prefix": "D", "label": "declared",
                                                      "colour": "tab:brown", "what": "the projection again"})
    register(cls)
    assert "declared" in GENERATORS and ProjectorConfig(task_dim=3, generator="declared").reads_source
    assert unregister("declared") is cls
    assert GENERATORS == ALL
    with pytest.raises(ValueError, match="generator='declared' is not one of"):
        ProjectorConfig(task_dim=3, generator="declared")


@pytest.mark.parametrize("attributes, match", [
    ({"size_knob": "width"}, "size_knob='width' is not one of"),
    ({"reads_source": 1}, "reads_source and .has_mlp must be True or False"),
    ({"name": "blocks"}, "but BlockGenerator already has name='blocks'.*a name and a cell prefix of its own"),
    ({"prefix": "LR"}, "but LowRankGenerator already has .*prefix='LR'"),
])
def test_a_declaration_that_does_not_fit_is_refused(attributes, match):
    declaration = {"name": "declared", "prefix": "D", "label": "declared", "colour": "tab:brown",
                   "what": "the projection again", **attributes}
    with pytest.raises(ValueError, match=match):
        register(type("DeclaredBadly", (ProjectionGenerator,), declaration))
    assert GENERATORS == ALL


def test_a_declaration_must_say_everything_and_be_a_generator():
    undeclared = type("Undeclared", (WeightGenerator,), {"name": "undeclared", "reads_source": True,
                                                         "size_knob": "rank", "label": "undeclared"})
    with pytest.raises(ValueError, match="Undeclared does not declare prefix, colour, what; set them as class"):
        register(undeclared)
    with pytest.raises(TypeError, match="takes a WeightGenerator subclass"):
        register(ProjectorConfig)
    assert GENERATORS == ALL


# ---- blocks: one-hot coefficients select one block, aligned with heads ---------------------------------


@pytest.mark.parametrize("scale", [0.5, 0.25])
def test_blocks_with_one_hot_coefficients_reproduce_one_block(tiny_source, scale):
    """With r_ac = [a == alpha][c == beta] and rho_a = [a == alpha] every small weight is block (alpha, beta)
    of the source's and every bias block alpha, exactly; q, k, v blocks are slices of the same head."""
    model = build(tiny_source.double(), "blocks", scales=(scale,)).double()
    gen, k = model.generators[scale_key(scale)], round(1 / scale)
    alpha, beta = k - 1, k // 2
    with torch.no_grad():
        for kind in DENSE_KINDS:
            n = 3 if kind == "qkv" else 1
            getattr(gen, f"{kind}_w2").zero_()  # no t-dependence: the coefficients are the biases b2
            b2 = getattr(gen, f"{kind}_b2")
            r = torch.zeros(b2.shape[0], n, k, k, dtype=b2.dtype)
            r[:, :, alpha, beta] = 1
            rho = torch.zeros(b2.shape[0], n, k, dtype=b2.dtype)
            rho[:, :, alpha] = 1
            b2.copy_(torch.cat([rearrange(r, "l n a c -> l (n a c)"), rearrange(rho, "l n a -> l (n a)")], 1))
    small = model.generate(torch.rand(3, dtype=torch.float64), scale)
    C, H = tiny_source.config.n_embd, tiny_source.config.n_head
    D, c, d = C // H, C // k, C // H // k  # source head size, small width, small head size
    for layer in range(tiny_source.config.n_layer):
        w1, b1 = (t[layer] for t in tiny_source.dense.weights("qkv"))
        ws, bs = (t[layer] for t in small.dense.weights("qkv"))
        for tile in range(3):  # q, k, v
            for h in range(H):  # small head h is slice alpha of source head h, columns of block beta
                rows = slice(tile * C + h * D + alpha * d, tile * C + h * D + (alpha + 1) * d)
                small_rows = slice(tile * c + h * d, tile * c + (h + 1) * d)
                assert torch.equal(ws[small_rows], w1[rows, beta * c : (beta + 1) * c])
                assert torch.equal(bs[small_rows], b1[rows])
        w1, b1 = (t[layer] for t in tiny_source.dense.weights("attn_out"))
        ws, bs = (t[layer] for t in small.dense.weights("attn_out"))
        for h in range(H):  # the columns read head h's slice beta
            cols = slice(h * D + beta * d, h * D + (beta + 1) * d)
            assert torch.equal(ws[:, h * d : (h + 1) * d], w1[alpha * c : (alpha + 1) * c, cols])
        assert torch.equal(bs, b1[alpha * c : (alpha + 1) * c])
        for kind in ("fc", "mlp_down"):
            w1, b1 = (t[layer] for t in tiny_source.dense.weights(kind))
            ws, bs = (t[layer] for t in small.dense.weights(kind))
            o, i = ws.shape
            assert torch.equal(ws, w1[alpha * o : (alpha + 1) * o, beta * i : (beta + 1) * i])
            assert torch.equal(bs, b1[alpha * o : (alpha + 1) * o])

    # Through the attention's own head split: the small model's key head h equals slice alpha of source key
    # head h when the source sees the small input in residual block beta and zeros elsewhere.
    x = torch.randn(2, 5, c, dtype=torch.float64)
    x_source = torch.zeros(2, 5, C, dtype=torch.float64)
    x_source[..., beta * c : (beta + 1) * c] = x
    w1, b1 = (t[0] for t in tiny_source.dense.weights("qkv"))
    ws, bs = (t[0] for t in small.dense.weights("qkv"))
    keys_small = torch.nn.functional.linear(x, ws, bs).view(2, 5, 3, H, d)[:, :, 1]  # (B, T, H, d)
    keys_source = torch.nn.functional.linear(x_source, w1, b1).view(2, 5, 3, H, D)[:, :, 1]  # (B, T, H, D)
    torch.testing.assert_close(keys_small, keys_source[..., alpha * d : (alpha + 1) * d], rtol=1e-12, atol=1e-12)


def test_fresh_blocks_generator_is_a_sensible_small_model():
    """At initialisation (every r_ac = rho_a = 1/k) the small model, with parts that are block averages of the
    source's, has a loss near the trained source's, far below a uniform guess."""
    torch.manual_seed(0)
    source = GPT(GPTConfig.tiny(n_embd=64, n_head=2, n_layer=2, vocab_size=16, block_size=12))
    opt = torch.optim.Adam(source.parameters(), lr=1e-2)
    x = torch.arange(12).repeat(8, 1) % 16
    for _ in range(100):
        opt.zero_grad()
        source.loss(x).backward()
        opt.step()
    model = ProjectableGPT(source, ProjectorConfig(task_dim=3, rank=4, scales=(0.5,), generator="blocks"))
    derived = DerivedParts(source.parts, model.small_config(0.5), 2, layout="blocked")
    wte = source.parts.wte
    torch.testing.assert_close(model.small_parts["1_2"].wte, (wte[:, :32] + wte[:, 32:]) / 2)  # blocks, not pairs
    assert torch.equal(model.small_parts["1_2"].head, derived.head)
    with torch.no_grad():
        src_loss = source.loss(x).item()
        small_loss = model.sequence_nll(x, torch.rand(8, 3), 0.5).mean().item()
    assert src_loss < 0.5
    assert small_loss < 1.5 < torch.log(torch.tensor(16.0)).item()


# ---- low_rank and linear: a zero delta is the base model ---------------------------------------------


@pytest.mark.parametrize("generator", SOURCE_FREE)
def test_zero_delta_reproduces_the_base_model(tiny_source, generator):
    """low_rank with L = 0 and linear with S = 0 (every other parameter random) are their base model, exactly,
    whatever t; a fresh generator has L = 0 / S = 0 already."""
    zero = {"low_rank": ("_left_w", "_left_b"), "linear": ("_a",)}[generator]
    fresh = projectable(tiny_source, config(generator))
    for name, param in fresh.generators.named_parameters():
        assert not name.endswith(zero) or not param.any(), name
    one, other = fresh.generate(torch.rand(3), 0.5), fresh.generate(torch.rand(3), 0.5)
    for name, tensor in one.named_tensors().items():
        assert torch.equal(other.named_tensors()[name], tensor), name
    model = build(tiny_source.double(), generator).double()
    x, tasks = torch.randint(0, 16, (3, 12)), torch.rand(3, 3, dtype=torch.float64)
    for scale in (0.5, 0.25):
        base = random_small(model, scale)
        model.load_base(scale, base)
        key = "1_2" if scale == 0.5 else "1_4"
        assert not torch.allclose(model.projected_logits(x, tasks, scale), base(x))  # the delta is live
        with torch.no_grad():
            for name, param in model.generators[key].named_parameters():
                if name.endswith(zero):
                    param.zero_()
        expected = base(x)
        torch.testing.assert_close(model.projected_logits(x, tasks, scale, route="materialize"), expected,
                                   rtol=1e-12, atol=1e-12)
        assert torch.equal(model.projected_logits(x, tasks, scale, route="expand"), expected)
        generated = model.generate(tasks[1], scale)
        for name, tensor in base.named_tensors().items():
            assert torch.equal(generated.named_tensors()[name], tensor), name


@pytest.mark.parametrize("generator", SOURCE_FREE)
def test_source_free_generators_hold_no_source(tiny_source, generator):
    """No source module, parameters or loss term; every parameter belongs to a generator or the small parts,
    and one backward reaches each of them."""
    model = build(tiny_source, generator)
    assert model.source is None and not model.reads_source
    assert model.source_config == tiny_source.config
    params = dict(model.named_parameters())
    assert not any(name.startswith("source.") for name in params)
    assert sum(p.numel() for p in params.values()) == sum(model.num_projector_params(s) for s in (0.5, 0.25))
    out = model.loss(torch.randint(0, 16, (4, 12)), torch.rand(4, 3))
    assert out.source is None
    torch.testing.assert_close(out.total, sum(out.projected.values()))
    out.total.backward()
    for name, param in params.items():
        assert param.grad is not None and param.grad.abs().sum() > 0, name
    from_config = ProjectableGPT(tiny_source.config, config(generator))
    assert from_config.source is None and from_config.state_dict().keys() == model.state_dict().keys()


def test_blocks_cotrain_the_source(tiny_source):
    model = build(tiny_source, "blocks")
    assert model.reads_source and model.source is tiny_source
    out = model.loss(torch.randint(0, 16, (4, 12)), torch.rand(4, 3))
    torch.testing.assert_close(out.total, sum(out.projected.values()) + out.source)
    out.total.backward()
    for name, param in model.named_parameters():
        assert param.grad is not None and param.grad.abs().sum() > 0, name


# ---- every generator: batched per-example == loop, routes agree, generate == forward ------------------


@pytest.mark.parametrize("generator, mlp", WITH_MLP)
def test_batched_per_example_equals_loop_on_both_routes(tiny_source, generator, mlp):
    model = build(tiny_source.double(), generator, mlp=mlp).double()
    x = torch.randint(0, 16, (4, 12))
    tasks = torch.rand(4, 3, dtype=torch.float64)
    for scale in (0.5, 0.25):
        batched = model.projected_logits(x, tasks, scale, route="materialize")
        for route in ("materialize", "expand"):
            looped = torch.cat([model.projected_logits(x[i : i + 1], tasks[i], scale, route=route) for i in range(4)])
            torch.testing.assert_close(batched, looped, rtol=1e-10, atol=1e-10)
            torch.testing.assert_close(model.projected_logits(x, tasks, scale, route=route), batched,
                                       rtol=1e-10, atol=1e-10)
        assert not torch.allclose(batched[0], model.projected_logits(x[:1], tasks[1], scale)[0])


@pytest.mark.parametrize("generator", ALL)
def test_generated_model_equals_batched_forward(tiny_source, generator):
    model = build(tiny_source, generator)
    x, tasks = torch.randint(0, 16, (4, 12)), torch.rand(4, 3)
    for scale in (0.5, 0.25):
        batched = model.projected_logits(x, tasks, scale)
        for i in range(4):
            small = model.generate(tasks[i], scale)
            assert isinstance(small, GPT) and small.config == model.small_config(scale)
            assert small.config.n_head == tiny_source.config.n_head and not small.config.conditional
            torch.testing.assert_close(small(x[i : i + 1]), batched[i : i + 1], rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("generator", ALL)
def test_generate_writes_every_tensor_of_the_small_model(tiny_source, generator, monkeypatch):
    """generate() gives the small GPT uninitialised storage (``to_empty``) and overwrites it: storage filled
    with NaN here must leave no NaN behind, so no parameter keeps what the allocator happened to hold."""
    model = build(tiny_source, generator)
    to_empty = torch.nn.Module.to_empty

    def poisoned(module, *args, **kwargs):
        module = to_empty(module, *args, **kwargs)
        with torch.no_grad():
            for tensor in [*module.parameters(), *module.buffers()]:
                tensor.fill_(float("nan"))
        return module

    monkeypatch.setattr(torch.nn.Module, "to_empty", poisoned)
    x, task = torch.randint(0, 16, (1, 12)), torch.rand(3)
    small = model.generate(task, 0.25)
    assert not [name for name, p in small.state_dict().items() if p.isnan().any()]
    torch.testing.assert_close(small(x), model.projected_logits(x, task[None], 0.25), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("generator", ALL)
def test_auto_route_follows_the_cost_and_the_memory_limit(tiny_source, generator):
    model = build(tiny_source, generator)
    gen = model.generators["1_2"]
    if generator == "blocks":  # its expand route holds k^2 copies of every input: never the memory saver
        assert gen.route("auto", 1, 2, 12) == gen.route("auto", 10**6, 10**6, 12) == "materialize"
    else:
        if generator == "projection":  # its cost model is the projector's own (projector.route_cost)
            materialize, expand = route_cost(tiny_source.config, 2, 1, 2, 12)[3:]
        else:
            materialize, expand, _ = gen.cost(1, 2, 12)
        assert gen.route("auto", 1, 2, 12) == ("materialize" if materialize <= expand else "expand")
        assert gen.route("auto", 10**6, 10**6, 12) == "expand"  # 10^6 tasks' weights exceed the memory limit
    x, tasks = torch.randint(0, 16, (2, 12)), torch.rand(2, 3)
    torch.testing.assert_close(model.projected_logits(x, tasks, 0.5),
                               model.projected_logits(x, tasks, 0.5, route="materialize"))


def test_the_projection_route_is_costed_for_the_device_and_for_training(tiny_source, monkeypatch):
    """``auto`` asks the cost model whether gradients are taken (a training step weighs the routes differently
    from a generation-like forward) and on which device the tasks are (only "cpu" can be checked without a GPU)."""
    from projectable.generators import projection

    asked = []

    def recording(route, *args, device, training, **kw):
        asked.append((device, training))
        return "materialize"

    monkeypatch.setattr(projection, "choose_route", recording)
    model = build(tiny_source, "projection")
    x, tasks = torch.randint(0, 16, (2, 12)), torch.rand(2, 3)
    with torch.no_grad():
        model.projected_logits(x, tasks, 0.5)
    model.projected_logits(x, tasks, 0.5)
    assert asked == [("cpu", False), ("cpu", True)]


# ---- files: checkpoints, old configs, GPT-2 ------------------------------------------------------------


@pytest.mark.parametrize("generator", ALL)
def test_checkpoint_round_trip(tmp_path, tiny_source, generator):
    model = build(tiny_source, generator)
    model.save(tmp_path / "p.safetensors")
    with safe_open(str(tmp_path / "p.safetensors"), framework="pt") as f:
        names = set(f.keys())
    assert any(name.startswith("source.") for name in names) == model.reads_source
    loaded = ProjectableGPT.load(tmp_path / "p.safetensors")
    assert loaded.config == model.config and loaded.source_config == model.source_config
    assert loaded.state_dict().keys() == model.state_dict().keys()
    for name, tensor in model.state_dict().items():
        assert torch.equal(loaded.state_dict()[name], tensor), name
    x, tasks = torch.randint(0, 16, (2, 12)), torch.rand(2, 3)
    for scale in (0.5, 0.25):
        assert torch.equal(loaded.projected_logits(x, tasks, scale), model.projected_logits(x, tasks, scale))


def test_checkpoint_without_generator_keys_loads_as_the_projection(tmp_path, tiny_source, make_projectable):
    """Files saved before generators could be chosen have no generator keys in their projector config."""
    model = make_projectable(tiny_source)
    model.save(tmp_path / "new.safetensors")
    with safe_open(str(tmp_path / "new.safetensors"), framework="pt") as f:
        meta, tensors = f.metadata(), {k: f.get_tensor(k) for k in f.keys()}
    old = json.loads(meta["projector_config"])
    del old["generator"], old["generator_rank"]
    save_file(tensors, str(tmp_path / "old.safetensors"), metadata={**meta, "projector_config": json.dumps(old)})
    assert "generators.1_2.qkv_w1" in tensors and "generators.1_4.mlp_down_b2" in tensors
    loaded = ProjectableGPT.load(tmp_path / "old.safetensors")
    assert loaded.config.generator == "projection" and loaded.config == model.config
    x, tasks = torch.randint(0, 16, (2, 12)), torch.rand(2, 3)
    assert torch.equal(loaded.projected_logits(x, tasks, 0.25), model.projected_logits(x, tasks, 0.25))


@pytest.mark.parametrize("generator", ALL)
def test_gpt2_export_round_trip(tiny_source, generator):
    pytest.importorskip("transformers", reason="GPT-2 export needs the optional extra projectable-core[hf]")
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    from projectable.hf import from_gpt2, to_gpt2

    model = build(tiny_source.double(), generator).double()
    task = torch.tensor([0.3, -1.0, 2.0], dtype=torch.float64)
    small = model.generate(task, 0.5)
    hf = to_gpt2(small)
    tokens = torch.randint(0, 16, (2, 12))
    start = torch.full_like(tokens[:, :1], 16)
    with torch.no_grad():
        ours = small(tokens)
        torch.testing.assert_close(hf(torch.cat([start, tokens[:, :-1]], 1)).logits[..., :16], ours)
        torch.testing.assert_close(from_gpt2(hf)(tokens), ours)
        torch.testing.assert_close(ours, model.projected_logits(tokens, task, 0.5))


@pytest.mark.parametrize("generator", SOURCE_FREE)
def test_cli_generates_and_describes_a_source_free_checkpoint(tmp_path, tiny_source, generator, capsys):
    model = build(tiny_source, generator).eval()
    path = tmp_path / "p.safetensors"
    model.save(path)
    out = tmp_path / "small.safetensors"
    assert main(["generate", "--checkpoint", str(path), "--task", "0.5,-1,2", "--scale", "1/4", "--out", str(out)]) == 0
    small, expected = GPT.load(out), model.generate(torch.tensor([0.5, -1.0, 2.0]), 0.25)
    for name, tensor in expected.named_tensors().items():
        assert torch.equal(small.named_tensors()[name], tensor), name
    capsys.readouterr()
    assert main(["info", str(path)]) == 0
    printed = capsys.readouterr().out
    assert f"generator: {generator}" in printed and "source parameters: none" in printed
    assert f"projector parameters {model.num_projector_params(0.25):,}" in printed


# ---- sizes: counts without building, budgets matched to the projection -------------------------------


@pytest.mark.parametrize("generator, mlp, small_parts", VALID)
def test_parameter_counts_equal_the_built_generators(tiny_source, generator, mlp, small_parts):
    cfg = config(generator, mlp=mlp, small_parts=small_parts)
    model = projectable(tiny_source, cfg)
    for scale, key in ((0.5, "1_2"), (0.25, "1_4")):
        count = generator_params(tiny_source.config, cfg, scale)
        assert count.total == model.num_projector_params(scale) == count.task + count.base + count.parts
        base = model.generators[key].base if generator in SOURCE_FREE else None
        assert count.base == (0 if base is None else sum(p.numel() for p in base.parameters()))


def test_projection_counts_keep_the_paper_sizes():
    paper = GPTConfig.paper()
    config_8 = ProjectorConfig(task_dim=18, rank=8)
    assert round(generator_params(paper, config_8, 0.5).total / 1e6, 1) == 2.3
    assert round(generator_params(paper, config_8, 0.125).total / 1e6, 1) == 1.9
    assert generator_params(paper, config_8, 0.125).task == 9 * 196_608 + 4 * 24 * (8 * 18 + 8)


@pytest.mark.parametrize("count", ["total", "task"])
@pytest.mark.parametrize("generator", ALL)
def test_match_budget_finds_the_closest_size(generator, count):
    paper = GPTConfig.paper()
    reference = ProjectorConfig(task_dim=18, rank=8)
    for scale in (0.5, 0.125):
        match = match_budget(paper, reference, scale, generator, count)
        assert match.config.generator == generator and getattr(match.config, match.knob) == match.size
        assert match.params == generator_params(paper, match.config, scale)
        assert match.target == getattr(generator_params(paper, reference, scale), count)
        gap = abs(getattr(match.params, count) - match.target)
        limit = max_rank(paper, scale) if generator in SOURCE_FREE else 10**6
        for other in (match.size - 1, match.size + 1):
            if 1 <= other <= limit:
                other_params = generator_params(paper, replace(match.config, **{match.knob: other}), scale)
                assert abs(getattr(other_params, count) - match.target) >= gap
        if generator == "projection":
            assert match.size == 8 and gap == 0
    with torch.device("meta"):  # the matched config builds, and counts what was promised
        built = ProjectableGPT(paper, replace(match.config, scales=(0.125,)))
    assert built.num_projector_params(0.125) == match.params.total


def test_budget_of_a_base_larger_than_the_projection_is_the_smallest_rank():
    """At s = 1/2 of the paper's source a low_rank base M_1/2 alone (19M) outweighs the projection (2.3M)."""
    match = match_budget(GPTConfig.paper(), ProjectorConfig(task_dim=18, rank=8), 0.5, "low_rank")
    assert match.size == 1 and match.params.base > match.target


# ---- bad input ----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(generator="lora"), "generator='lora' is not one of"),
        (dict(generator="low_rank"), "needs generator_rank >= 1"),
        (dict(generator="linear", generator_rank=0), "needs generator_rank >= 1"),
        (dict(generator="projection", generator_rank=4), "applies to low_rank and linear only"),
        (dict(generator="blocks", generator_rank=4), "applies to low_rank and linear only"),
        (dict(generator="low_rank", generator_rank=-1), "generator_rank must be an int >= 0"),
        (dict(generator="low_rank", generator_rank=True), "generator_rank must be an int >= 0"),
        (dict(generator="linear", generator_rank=2, mlp="shared"), "no meaning for the linear generator"),
        (dict(generator="low_rank", generator_rank=2, small_parts="derived"), "needs a source"),
    ],
)
def test_bad_generator_configs(kwargs, match):
    with pytest.raises(ValueError, match=match):
        ProjectorConfig(task_dim=3, **kwargs)


@pytest.mark.parametrize("generator", SOURCE_FREE)
def test_a_rank_that_does_not_fit_the_small_model_is_refused(tiny_source, generator, monkeypatch):
    cfg = ProjectorConfig(task_dim=3, scales=(0.5, 0.25), generator=generator, generator_rank=9)
    cls = GENERATOR_CLASSES[generator]

    def build_nothing(*args):
        raise AssertionError("a generator was built before every scale was checked")

    with monkeypatch.context() as patch:
        patch.setattr(cls, "__init__", build_nothing)
        with pytest.raises(ValueError, match=r"generator_rank=9 does not fit .* scale 1/4.*generator_rank in 1\.\.8"):
            projectable(tiny_source, cfg)  # fits 1/2 (rank up to 16), not 1/4 (8)
    projectable(tiny_source, ProjectorConfig(task_dim=3, scales=(0.25,), generator=generator, generator_rank=8))


@pytest.mark.parametrize("scales, match", [((1 / 32,), "does not divide the source head size"),
                                           ((1 / 3,), "1/2\\^k"), ((0.5, 0.0), "positive")])
def test_a_block_count_that_does_not_fit_is_refused(tiny_source, scales, match):
    with pytest.raises(ValueError, match=match):
        ProjectableGPT(tiny_source, ProjectorConfig(task_dim=3, scales=scales, generator="blocks"))


def test_a_source_given_to_a_generator_that_reads_none_is_refused_not_dropped(tiny_source):
    with pytest.raises(ValueError, match="reads no source.*load_base"):
        ProjectableGPT(tiny_source, config("low_rank"))


def test_load_base_refuses_what_does_not_fit(tiny_source):
    model = ProjectableGPT(tiny_source.config, config("low_rank"))
    with pytest.raises(ValueError, match="needs a GPT with .*'n_embd': 16.*got .*'n_embd': 32"):
        model.load_base(0.5, tiny_source)
    with pytest.raises(ValueError, match="unconditional"):
        model.load_base(0.5, GPT(GPTConfig.tiny(n_embd=16, n_head=2, vocab_size=16, block_size=12, task_dim=3)))
    with pytest.raises(ValueError, match="no projector for scale=0.125"):
        model.load_base(0.125, tiny_source)
    with pytest.raises(ValueError, match="takes a GPT"):
        model.load_base(0.5, model.small_config(0.5))
    with pytest.raises(ValueError, match="reads no source|derives its weights from the source"):
        ProjectableGPT(tiny_source, config("blocks")).load_base(0.5, GPT(model.small_config(0.5)))


def test_other_bad_input(tiny_source):
    with pytest.raises(ValueError, match="source must be a GPT or a GPTConfig"):
        ProjectableGPT("gpt.safetensors", config("projection"))
    with pytest.raises(ValueError, match="belong to the projection"):
        ProjectableGPT(tiny_source, config("blocks")).diagonals(torch.rand(3), 0.5)
    with pytest.raises(ValueError, match="generator='lora' is not one of"):
        match_budget(tiny_source.config, config("projection"), 0.5, "lora")
    with pytest.raises(ValueError, match="count='params' is not one of"):
        match_budget(tiny_source.config, config("projection"), 0.5, "blocks", count="params")
    with pytest.raises(ValueError, match="1/2\\^k"):
        generator_params(tiny_source.config, config("blocks"), 0.3)


# ---- the t-map's cost, declared by each class ------------------------------------------------------------

# Each built-in generator's t-map: t -> the coefficients it builds or applies the weights from.
T_MAPS = {"projection": lambda gen, tasks: gen(tasks), "blocks": lambda gen, tasks: gen.coefficients(tasks),
          "low_rank": lambda gen, tasks: gen.factors(tasks), "linear": lambda gen, tasks: gen.cores(tasks)}


@pytest.mark.parametrize(("generator", "mlp"), WITH_MLP)
@pytest.mark.parametrize("scale", [0.5, 0.25])
def test_each_generator_declares_the_multiply_adds_of_its_t_map(tiny_source, generator, mlp, scale):
    """``task_map_macs`` (what the benchmark counts) equals the multiply-adds torch counts when the built
    generator maps one task vector to its coefficients."""
    from torch.utils.flop_counter import FlopCounterMode

    projector = config(generator, scales=(scale,), mlp=mlp)
    gen = projectable(tiny_source, projector).generators[scale_key(scale)]
    with FlopCounterMode(display=False) as counter:
        T_MAPS[generator](gen, torch.rand(1, projector.task_dim))
    declared = type(gen).task_map_macs(tiny_source.config, projector, scale)
    assert declared > 0 and 2 * declared == counter.get_total_flops()


def test_a_generator_without_a_declared_t_map_cost_is_refused_by_name(tiny_source):
    """A new generator's cost is never taken from another's formula."""
    undeclared = type("Undeclared", (WeightGenerator,), {"name": "undeclared"})
    with pytest.raises(NotImplementedError, match="'undeclared' declares no task_map_macs"):
        undeclared.task_map_macs(tiny_source.config, config("projection"), 0.5)
