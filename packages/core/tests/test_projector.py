"""Equivalences of the structured projection (Sec. 2.2) against dense float64 references."""

import itertools

import pytest
import torch
from projectable import GPT, GPTConfig, ProjectableGPT, ProjectorConfig, projector
from projectable.gpt import DENSE_KINDS
from projectable.projector import _blocks, choose_route, project_bias, project_weight


def dense_p(p: torch.Tensor, k: int) -> torch.Tensor:
    """P (n/k x n) with P_ij = p_j iff i == floor(j/k), built literally from the paper's definition."""
    n = p.numel()
    P = torch.zeros(n // k, n, dtype=p.dtype)
    for j in range(n):
        P[j // k, j] = p[j]
    return P


def dense_q(q: torch.Tensor, k: int) -> torch.Tensor:
    n = q.numel()
    Q = torch.zeros(n, n // k, dtype=q.dtype)
    for i in range(n):
        Q[i, i // k] = q[i]
    return Q


# CPU blocks of the projection (projector.CPU_BLOCK_BYTES) at the tests' shapes (L = 3 layers of 24 x 16, float64:
# one task's P W of one layer is 8 * 24 * 16 / k bytes), at every k: all at once; two tasks with every layer per
# block (5 tasks: blocks of 2, 2 and 1, so dW_1 is written, added to by a block of several tasks and by a block
# of one); one task and one layer per block.
L_TEST, O_TEST, I_TEST, B_TEST = 3, 24, 16, 5
BLOCKS = {"one block": 2**30, "task blocks": 2 * L_TEST, "layer blocks": 1}  # in (task, layer) P Ws


def block_bytes(blocks: str, k: int) -> int:
    return BLOCKS[blocks] * 8 * O_TEST * I_TEST // k


@pytest.mark.parametrize("blocks", BLOCKS)
@pytest.mark.parametrize("k", [1, 2, 4, 8])
def test_structured_projection_equals_dense_reference(k, blocks, monkeypatch):
    monkeypatch.setattr(projector, "CPU_BLOCK_BYTES", block_bytes(blocks, k))
    L, O, I, B = L_TEST, O_TEST, I_TEST, B_TEST  # noqa: E741 (the paper's letters)
    w = torch.randn(L, O, I, dtype=torch.float64)
    b = torch.randn(L, O, dtype=torch.float64)
    p = torch.randn(B, L, O, dtype=torch.float64)
    q = torch.randn(B, L, I, dtype=torch.float64)
    ws, bs = project_weight(w, p, q, k), project_bias(b, p, k)
    assert ws.shape == (B, L, O // k, I // k) and bs.shape == (B, L, O // k)
    for e in range(B):
        for layer in range(L):
            P, Q = dense_p(p[e, layer], k), dense_q(q[e, layer], k)
            torch.testing.assert_close(ws[e, layer], P @ w[layer] @ Q, rtol=1e-12, atol=1e-12)
            torch.testing.assert_close(bs[e, layer], P @ b[layer], rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("blocks", BLOCKS)
@pytest.mark.parametrize("tasks", [1, B_TEST])
@pytest.mark.parametrize("k", [1, 2, 4])
def test_projection_gradients_equal_those_of_the_dense_reference(k, tasks, blocks, monkeypatch):
    """The hand-written backward of ``project_weight`` against autograd through P @ W @ Q (float64), for every
    non-empty subset of inputs that needs a gradient (the source frozen, the projector frozen, both training),
    with a non-contiguous upstream gradient."""
    monkeypatch.setattr(projector, "CPU_BLOCK_BYTES", block_bytes(blocks, k))
    L, O, I = L_TEST, O_TEST, I_TEST  # noqa: E741
    w = torch.randn(L, O, I, dtype=torch.float64)
    p = torch.randn(tasks, L, O, dtype=torch.float64)
    q = torch.randn(tasks, L, I, dtype=torch.float64)
    upstream = torch.randn(tasks, L, I // k, O // k, dtype=torch.float64).transpose(-1, -2)  # non-contiguous

    def dense(w, p, q):
        return torch.stack([torch.stack([dense_p(p[e, layer], k) @ w[layer] @ dense_q(q[e, layer], k)
                                         for layer in range(L)]) for e in range(tasks)])

    for needs in itertools.product([False, True], repeat=3):
        if not any(needs):
            continue
        ours = [x.clone().requires_grad_(need) for x, need in zip((w, p, q), needs)]
        reference = [x.clone().requires_grad_(need) for x, need in zip((w, p, q), needs)]
        (project_weight(*ours, k) * upstream).sum().backward()
        (dense(*reference) * upstream).sum().backward()
        for mine, theirs, need in zip(ours, reference, needs):
            assert (mine.grad is None) == (not need)
            if need:
                torch.testing.assert_close(mine.grad, theirs.grad, rtol=1e-12, atol=1e-12)


def test_projection_under_autocast_runs_in_its_dtype_and_trains_fp32_parameters():
    """As the matmul-like ops it replaced: bf16 inside ``torch.autocast``, fp32 gradients for fp32 inputs."""
    w = torch.randn(2, 8, 12, requires_grad=True)
    p, q = torch.rand(3, 2, 8, requires_grad=True), torch.rand(3, 2, 12, requires_grad=True)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = project_weight(w, p, q, 2)
    assert out.dtype == torch.bfloat16
    out.float().sum().backward()
    assert w.grad.dtype == p.grad.dtype == q.grad.dtype == torch.float32
    torch.testing.assert_close(out.float(), project_weight(w, p, q, 2).detach(), rtol=2e-2, atol=2e-2)


def test_identity_diagonals_at_scale_one_reproduce_source(tiny_source):
    model = ProjectableGPT(tiny_source, ProjectorConfig(task_dim=3, rank=4, scales=(1.0,), small_parts="derived"))
    with torch.no_grad():
        for name, param in model.generators.named_parameters():
            if name.endswith("w2"):
                param.zero_()  # p = q = 1 for every task (the b2 initialisation at k = 1)
    x = torch.randint(0, 16, (3, 12))
    tasks = torch.rand(3, 3)
    for route in ("materialize", "expand"):
        torch.testing.assert_close(model.projected_logits(x, tasks, 1.0, route=route), tiny_source(x))


@pytest.mark.parametrize("route", ["materialize", "expand"])
@pytest.mark.parametrize("small_parts", ["own", "derived"])
def test_batched_per_example_equals_loop(tiny_source, route, small_parts, make_projectable):
    model = make_projectable(tiny_source.double(), small_parts=small_parts).double()
    x = torch.randint(0, 16, (4, 12))
    tasks = torch.rand(4, 3, dtype=torch.float64)
    for scale in (0.5, 0.25):
        batched = model.projected_logits(x, tasks, scale, route=route)
        looped = torch.cat([model.projected_logits(x[i : i + 1], tasks[i], scale, route=route) for i in range(4)])
        torch.testing.assert_close(batched, looped, rtol=1e-10, atol=1e-10)
        assert not torch.allclose(batched[0], model.projected_logits(x[:1], tasks[1], scale, route=route)[0])


def test_routes_agree(tiny_source, make_projectable):
    model = make_projectable(tiny_source.double()).double()
    x = torch.randint(0, 16, (4, 12))
    tasks = torch.rand(4, 3, dtype=torch.float64)
    for scale in (0.5, 0.25):
        torch.testing.assert_close(
            model.projected_logits(x, tasks, scale, route="materialize"),
            model.projected_logits(x, tasks, scale, route="expand"),
            rtol=1e-10, atol=1e-10,
        )


@pytest.mark.parametrize("small_parts", ["own", "derived"])
def test_generated_model_equals_projected_forward(tiny_source, small_parts, make_projectable):
    model = make_projectable(tiny_source, small_parts=small_parts)
    x = torch.randint(0, 16, (5, 12))
    tasks = torch.rand(5, 3)
    for scale in (0.5, 0.25):
        batched = model.projected_logits(x, tasks, scale)  # the training path, one task per sequence
        for i in range(5):
            small = model.generate(tasks[i], scale)
            assert isinstance(small, GPT) and small.config.n_embd == 32 * scale
            assert small.config.task_dim == 0
            torch.testing.assert_close(small(x[i : i + 1]), batched[i : i + 1], rtol=1e-5, atol=1e-5)


def test_generated_model_round_trips_through_file(tmp_path, tiny_source, make_projectable):
    model = make_projectable(tiny_source)
    small = model.generate(torch.rand(3), 0.25)
    small.save(tmp_path / "small.safetensors")
    loaded = GPT.load(tmp_path / "small.safetensors")
    x = torch.randint(0, 16, (2, 12))
    torch.testing.assert_close(loaded(x), small(x))


@pytest.mark.parametrize("mlp", ["per_operator", "shared"])
@pytest.mark.parametrize("small_parts", ["own", "derived"])
def test_cotraining_gradients_reach_source_and_projectors(tiny_source, make_projectable, mlp, small_parts):
    """One backward of Eq. 2 gives a nonzero gradient to every source parameter and to every parameter of
    every diagonal MLP (each dense operator's, at each scale) and of the small models' own parts."""
    model = make_projectable(tiny_source, mlp=mlp, small_parts=small_parts)
    x = torch.randint(0, 16, (4, 12))
    out = model.loss(x, torch.rand(4, 3))
    assert set(out.projected) == {0.5, 0.25}
    torch.testing.assert_close(out.total, sum(out.projected.values()) + out.source)
    out.total.backward()
    params = dict(model.named_parameters())
    for name, param in params.items():
        assert param.grad is not None and param.grad.abs().sum() > 0, name
    # The loop above covers what it must: the whole source and each operator's MLP at every scale.
    assert {f"source.{name}" for name, _ in tiny_source.named_parameters()} <= set(params)
    per_kind = ("w2", "b2") if mlp == "shared" else ("w1", "b1", "w2", "b2")
    for key in ("1_2", "1_4"):
        for kind in DENSE_KINDS:
            for suffix in per_kind:
                assert f"generators.{key}.{kind}_{suffix}" in params
        if mlp == "shared":
            assert {f"generators.{key}.w1", f"generators.{key}.b1"} <= set(params)
        assert any(name.startswith(f"small_parts.{key}.") for name in params) == (small_parts == "own")


def test_projected_loss_alone_trains_source(tiny_source, make_projectable):
    """Even with w_src = 0 the projected loss reaches the source's dense weights through W_s = P W Q."""
    model = make_projectable(tiny_source, source_weight=0.0)
    out = model.loss(torch.randint(0, 16, (2, 12)), torch.rand(2, 3))
    out.total.backward()
    assert model.source.dense.qkv_w.grad.abs().sum() > 0
    assert model.source.parts.wte.grad is None or model.source.parts.wte.grad.abs().sum() == 0


def test_fresh_projector_is_a_sensible_small_model():
    """At initialisation P_s(t) is close to a group-averaged source: its loss is near the source's, not noise."""
    torch.manual_seed(0)
    source = GPT(GPTConfig.tiny(n_embd=64, n_head=2, n_layer=2, vocab_size=16, block_size=12))
    opt = torch.optim.Adam(source.parameters(), lr=1e-2)
    x = torch.arange(12).repeat(8, 1) % 16  # a deterministic pattern that a trained source predicts well
    for _ in range(100):
        opt.zero_grad()
        source.loss(x).backward()
        opt.step()
    model = ProjectableGPT(source, ProjectorConfig(task_dim=3, rank=4, scales=(0.5,)))
    with torch.no_grad():
        src_loss = source.loss(x).item()
        small_loss = model.sequence_nll(x, torch.rand(8, 3), 0.5).mean().item()
    assert src_loss < 0.5
    assert small_loss < 1.5 < torch.log(torch.tensor(16.0)).item()  # far below a uniform guess (2.77 nats)


def test_projector_parameter_count_matches_paper_sizes():
    """Sec. 3.2: 2.4M (s=1/2) .. 1.9M (s=1/8) at r=8; the diagonal MLP output layers alone are ~1.77M."""
    with torch.device("meta"):
        model = ProjectableGPT(GPT(GPTConfig.paper()), ProjectorConfig(task_dim=18, rank=8, scales=(0.5, 0.125)))
    assert round(model.num_projector_params(0.5) / 1e6, 1) == 2.3
    assert round(model.num_projector_params(0.125) / 1e6, 1) == 1.9
    gen = model.generators["1_8"]
    out_layers = sum(getattr(gen, f"{k}_w2").numel() + getattr(gen, f"{k}_b2").numel() for k in DENSE_KINDS)
    assert out_layers == 9 * 196_608


def test_shared_mlp_switch(tiny_source, make_projectable):
    """mlp="shared" is the per-operator MLPs with every operator's (and layer's) hidden layer tied to one: the
    same diagonals and loss as per-operator MLPs holding copies of it, and the shared layer's gradient is the
    sum of the copies' gradients (so it trains from every operator)."""
    per_op = make_projectable(tiny_source, scales=(0.5,))
    shared = make_projectable(tiny_source, scales=(0.5,), mlp="shared")
    assert shared.num_projector_params(0.5) < per_op.num_projector_params(0.5)
    (tied,) = shared.generators.values()
    (copies,) = per_op.generators.values()
    assert not any(name.endswith("_w1") for name, _ in tied.named_parameters())
    n_layer = tiny_source.config.n_layer
    with torch.no_grad():  # per-operator MLPs holding copies of the shared hidden layer, the same output layers
        for kind in DENSE_KINDS:
            getattr(copies, f"{kind}_w1").copy_(tied.w1.expand(n_layer, -1, -1))
            getattr(copies, f"{kind}_b1").copy_(tied.b1.expand(n_layer, -1))
            getattr(copies, f"{kind}_w2").copy_(getattr(tied, f"{kind}_w2"))
            getattr(copies, f"{kind}_b2").copy_(getattr(tied, f"{kind}_b2"))
    tokens, tasks = torch.randint(0, 16, (2, 12)), torch.rand(2, 3)
    a, b = tied(tasks), copies(tasks)
    for kind in DENSE_KINDS:
        torch.testing.assert_close(a.p[kind], b.p[kind])
        torch.testing.assert_close(a.q[kind], b.q[kind])
    loss_shared, loss_copies = shared.loss(tokens, tasks).total, per_op.loss(tokens, tasks).total
    torch.testing.assert_close(loss_shared, loss_copies)
    loss_shared.backward()
    loss_copies.backward()
    for name in ("w1", "b1"):
        grad = getattr(tied, name).grad
        assert grad is not None and torch.isfinite(grad).all() and grad.abs().sum() > 0, name
        summed = sum(getattr(copies, f"{kind}_{name}").grad.sum(0) for kind in DENSE_KINDS)  # over kinds, layers
        torch.testing.assert_close(grad, summed)
    for kind in DENSE_KINDS:
        torch.testing.assert_close(getattr(tied, f"{kind}_w2").grad, getattr(copies, f"{kind}_w2").grad)


def test_checkpoint_round_trip(tmp_path, tiny_source, make_projectable):
    model = make_projectable(tiny_source)
    model.save(tmp_path / "p.safetensors")
    loaded = ProjectableGPT.load(tmp_path / "p.safetensors")
    x, t = torch.randint(0, 16, (2, 12)), torch.rand(2, 3)
    torch.testing.assert_close(loaded.projected_logits(x, t, 0.25), model.projected_logits(x, t, 0.25))
    with pytest.raises(ValueError, match="not a projectable.gpt file"):
        GPT.load(tmp_path / "p.safetensors")


@pytest.mark.parametrize(
    "task, match",
    [
        (torch.rand(2, 4), "expects"),
        (torch.tensor([[0.1, float("nan"), 0.2]] * 2), "NaN"),
        (torch.tensor([[0.1, float("inf"), 0.2]] * 2), "NaN or inf"),
        (torch.rand(3, 3), "one per sequence"),
    ],
)
def test_bad_task_vectors(tiny_source, task, match, make_projectable):
    model = make_projectable(tiny_source)
    with pytest.raises(ValueError, match=match):
        model.projected_logits(torch.randint(0, 16, (2, 12)), task, 0.5)


@pytest.mark.parametrize(
    "scales, match",
    [((1 / 3,),  "1/2\\^k"), ((0.0,), "positive"), ((1 / 32,), "does not divide the source head size")],
)
def test_bad_scales(tiny_source, scales, match):
    with pytest.raises(ValueError, match=match):
        ProjectableGPT(tiny_source, ProjectorConfig(task_dim=3, scales=scales))


def test_scale_must_divide_width():
    source = GPT(GPTConfig.tiny(n_embd=24, n_head=1))
    with pytest.raises(ValueError, match="does not divide the source width"):
        GPTConfig.tiny(n_embd=24, n_head=1).scaled(1 / 16)
    with pytest.raises(ValueError, match="no projector for scale"):
        ProjectableGPT(source, ProjectorConfig(task_dim=3, scales=(0.5,))).generate(torch.rand(3), 0.25)


def test_checkpoint_of_another_shape_is_rejected(tmp_path, tiny_source, make_projectable):
    make_projectable(tiny_source).save(tmp_path / "p.safetensors")
    other = make_projectable(GPT(GPTConfig.tiny(n_embd=64)))
    from projectable.projected import load_state_strict
    from safetensors.torch import load_file

    with pytest.raises(ValueError, match="shape mismatches"):
        load_state_strict(other, load_file(str(tmp_path / "p.safetensors")), "p.safetensors")


@pytest.mark.parametrize("k", [1, 2, 4, 8])
@pytest.mark.parametrize("blocks, sizes", [("one block", [(5, 3)]), ("task blocks", [(2, 3), (2, 3), (1, 3)]),
                                           ("layer blocks", [(1, 1)] * 15)])
def test_projection_blocks_cover_every_task_and_layer_once(blocks, sizes, k, monkeypatch):
    """The blocks the tests above run through are the ones named (so each path is taken at every k), and
    they tile (tasks, layers) exactly."""
    monkeypatch.setattr(projector, "CPU_BLOCK_BYTES", block_bytes(blocks, k))
    weight = torch.zeros(L_TEST, O_TEST, I_TEST, dtype=torch.float64)
    seen = torch.zeros(B_TEST, L_TEST, dtype=torch.int64)
    found = []
    for tasks, layers in _blocks(weight, B_TEST, k):
        seen[tasks, layers] += 1
        found.append(tuple(seen[tasks, layers].shape))
    assert torch.equal(seen, torch.ones(B_TEST, L_TEST, dtype=torch.int64))
    assert found == sizes


def test_no_tasks_give_no_weights_and_a_zero_gradient():
    w = torch.randn(2, 8, 12, requires_grad=True)
    out = project_weight(w, torch.rand(0, 2, 8), torch.rand(0, 2, 12), 2)
    assert out.shape == (0, 2, 4, 6)
    out.sum().backward()
    assert torch.equal(w.grad, torch.zeros_like(w))


# Shapes where benchmarks/projection.py measured one route more than 15% faster on the development CPU (the idle
# run of benchmarks/README.md): (width, layers, tasks = sequences, T, training, scale) -> the faster route. Where
# the two were within 15% (s = 1/2 at T = 64 forward, 1.02; s = 1/4 at T = 32 in training, 1.04) either is right
# and the shape is not listed.
MEASURED_FASTER = [
    (512, 4, 32, 32, False, 0.5, "expand"), (512, 4, 32, 32, False, 0.25, "materialize"),
    (512, 4, 32, 32, False, 0.125, "materialize"),
    (512, 4, 32, 32, True, 0.5, "expand"), (512, 4, 32, 32, True, 0.125, "materialize"),
    (512, 4, 32, 64, False, 0.25, "materialize"), (512, 4, 32, 64, False, 0.125, "materialize"),
    (512, 4, 32, 64, True, 0.5, "expand"), (512, 4, 32, 64, True, 0.25, "materialize"),
    (512, 4, 32, 64, True, 0.125, "materialize"),
    (128, 4, 32, 256, False, 0.5, "materialize"), (128, 4, 32, 256, False, 0.25, "materialize"),
    (128, 4, 32, 256, False, 0.125, "materialize"),
    (128, 4, 32, 256, True, 0.5, "materialize"), (128, 4, 32, 256, True, 0.25, "materialize"),
    (128, 4, 32, 256, True, 0.125, "materialize"),
]


@pytest.mark.parametrize("width, layers, tasks, seq, training, scale, faster", MEASURED_FASTER)
def test_auto_route_picks_the_route_measured_faster(width, layers, tasks, seq, training, scale, faster):
    config = GPTConfig(n_layer=layers, n_head=8, n_embd=width, block_size=1024, vocab_size=512)
    k = round(1 / scale)
    assert choose_route("auto", config, k, tasks, tasks, seq, training=training) == faster
    # one task for every sequence: shared small weights, always materialised
    assert choose_route("auto", config, k, 1, tasks, seq, training=training) == "materialize"


def test_projection_shapes_on_the_meta_device():
    """Shape-only runs (no data, device "meta") go through, autocast or not."""
    w, p, q = torch.empty(2, 8, 12, device="meta"), torch.empty(3, 2, 8, device="meta"), torch.empty(3, 2, 12, device="meta")
    assert project_weight(w, p, q, 2).shape == (3, 2, 4, 6)


# Under bf16 autocast on the CPU (benchmarks/results/cpu-2026-12-06-0935.md, part 2): the shapes where one route was
# more than 15% faster (width, layers, tasks, seq, training, scale, faster); the bf16 rates are fitted to this run.
MEASURED_FASTER_BF16 = [
    (512, 4, 32, 32, False, 0.5, "expand"), (512, 4, 32, 32, True, 0.5, "expand"),
    (512, 4, 32, 32, False, 0.25, "expand"), (512, 4, 32, 32, True, 0.25, "expand"),
    (512, 4, 32, 32, False, 0.125, "expand"), (512, 4, 32, 64, False, 0.5, "expand"),
    (512, 4, 32, 64, True, 0.5, "expand"), (512, 4, 32, 64, False, 0.125, "materialize"),
    (512, 4, 32, 64, True, 0.125, "materialize"),
    *((128, 4, 32, 256, training, scale, "materialize") for training in (False, True) for scale in (0.5, 0.25, 0.125)),
]


@pytest.mark.parametrize("width, layers, tasks, seq, training, scale, faster", MEASURED_FASTER_BF16)
def test_auto_route_under_bf16_autocast_picks_the_route_measured_faster(width, layers, tasks, seq, training, scale,
                                                                       faster):
    config = GPTConfig(n_layer=layers, n_head=8, n_embd=width, block_size=1024, vocab_size=512)
    k = round(1 / scale)
    with torch.autocast("cpu", dtype=torch.bfloat16):  # the precision is read from the autocast state
        assert choose_route("auto", config, k, tasks, tasks, seq, training=training) == faster
    assert choose_route("auto", config, k, tasks, tasks, seq, training=training, precision="bf16") == faster
