"""Bad input fails before any work, with a message naming the input, the value and what is allowed; outputs
are never lost or reported without being written. The catalogue is in the README under "Bad input"."""

import os

import numpy as np
import pytest
import torch
from projectable import GPT, GPTConfig, ProjectableGPT, ProjectorConfig, sample, scale_name
from projectable.cli import main
from safetensors.torch import save_file

TASK = [0.5, -1.0, 2.0]  # exactly representable in every dtype below
INT_TASK = [1, -1, 2]
CONVERTIBLE = [torch.int64, torch.float64, torch.float16, torch.bfloat16]


@pytest.fixture
def projectable(tiny_source, make_projectable) -> ProjectableGPT:
    return make_projectable(tiny_source).eval()


@pytest.fixture
def conditional() -> GPT:
    return GPT(GPTConfig.tiny(task_dim=3)).eval()


def tokens(batch=2):
    return torch.randint(0, 16, (batch, 12), generator=torch.Generator().manual_seed(5))


def task_in(dtype):
    """The task vector in ``dtype`` and the float32 vector of the same values."""
    values = INT_TASK if dtype == torch.int64 else TASK
    return torch.tensor(values, dtype=dtype), torch.tensor(values, dtype=torch.float32)


# ---- task vectors: dtypes are converted to the model's, or refused naming the dtype ------------------------


@pytest.mark.parametrize("dtype", CONVERTIBLE, ids=str)
def test_task_dtypes_are_converted_in_projectable_gpt(projectable, dtype):
    task, reference = task_in(dtype)
    x = tokens()
    with torch.no_grad():
        small, expected = projectable.generate(task, 0.25), projectable.generate(reference, 0.25)
        for name, tensor in expected.named_tensors().items():
            assert torch.equal(small.named_tensors()[name], tensor), name
        assert torch.equal(projectable.projected_logits(x, task, 0.5), projectable.projected_logits(x, reference, 0.5))
        assert torch.equal(projectable.sequence_nll(x, task, 0.5), projectable.sequence_nll(x, reference, 0.5))
        batch = task.expand(2, -1)
        assert torch.equal(projectable.loss(x, batch).total, projectable.loss(x, reference.expand(2, -1)).total)


@pytest.mark.parametrize("dtype", CONVERTIBLE, ids=str)
def test_task_dtypes_are_converted_in_the_conditional_gpt(conditional, dtype):
    task, reference = task_in(dtype)
    x = tokens()
    with torch.no_grad():
        assert torch.equal(conditional(x, task), conditional(x, reference))
        assert torch.equal(conditional.loss(x, task), conditional.loss(x, reference))
    g = lambda: torch.Generator().manual_seed(3)
    assert torch.equal(sample(conditional, 3, task=task, generator=g()), sample(conditional, 3, task=reference, generator=g()))


def test_tasks_take_the_dtype_of_a_float64_model(tiny_source, make_projectable):
    model = make_projectable(tiny_source).double().eval()
    task = torch.tensor(TASK)
    small = model.generate(task, 0.5)
    assert small.parts.wte.dtype == torch.float64
    for name, tensor in model.generate(task.double(), 0.5).named_tensors().items():
        assert torch.equal(small.named_tensors()[name], tensor), name
    conditional = GPT(GPTConfig.tiny(task_dim=3)).double()
    assert conditional(tokens(), task).dtype == torch.float64


@pytest.mark.parametrize("task, dtype", [(torch.tensor(TASK, dtype=torch.complex64), "complex64"),
                                         (torch.tensor([True, False, True]), "bool"),
                                         (np.array(TASK, dtype=np.complex128), "complex128")])
def test_complex_and_bool_tasks_are_refused_naming_the_dtype(projectable, conditional, task, dtype):
    for call in (lambda: projectable.generate(task, 0.5),
                 lambda: projectable.sequence_nll(tokens(), task, 0.5),
                 lambda: projectable.loss(tokens(), task),
                 lambda: conditional(tokens(), task),
                 lambda: sample(conditional, 2, task=task)):
        with pytest.raises(ValueError, match=f"dtype torch.{dtype}"):
            call()


@pytest.mark.parametrize("task", [torch.ones(2), torch.ones(4), torch.ones(2, 3, 3), torch.ones(())], ids=repr)
def test_tasks_of_the_wrong_length_name_task_dim(projectable, conditional, task):
    for call in (lambda: projectable.generate(task, 0.5),
                 lambda: projectable.projected_logits(tokens(), task, 0.5),
                 lambda: conditional(tokens(), task),
                 lambda: sample(conditional, 2, task=task)):
        with pytest.raises(ValueError, match=r"task_dim=3"):
            call()


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), -float("inf")])
def test_non_finite_tasks_are_refused_naming_task_dim(projectable, conditional, bad):
    task = torch.tensor([0.5, bad, 1.0])
    for call in (lambda: projectable.generate(task, 0.5),
                 lambda: projectable.loss(tokens(), task),
                 lambda: conditional(tokens(), task),
                 lambda: sample(conditional, 2, task=task)):
        with pytest.raises(ValueError, match=r"NaN or inf \(task_dim=3\)"):
            call()


def test_an_unconditional_model_refuses_a_task_vector_instead_of_ignoring_it(projectable):
    unconditional = GPT(GPTConfig.tiny()).eval()
    generated = projectable.generate(torch.tensor(TASK), projectable.config.scales[0])  # P_s(t): unconditional
    for model in (unconditional, generated):
        for call in (lambda m: m(tokens(), torch.tensor(TASK)), lambda m: m.loss(tokens(), torch.tensor(TASK)),
                     lambda m: sample(m, 2, task=torch.tensor(TASK)),
                     lambda m: sample(m, 2, task=torch.tensor(TASK), use_cache=False)):
            with pytest.raises(ValueError, match=r"unconditional \(task_dim=0\) and takes no task vector.*task=None"):
                call(model)
        assert model(tokens()).shape == (2, 12, 16)  # without one it runs
        assert sample(model, 2, length=3).shape == (2, 3)


def test_a_tiny_temperature_samples_greedily_and_nan_weights_are_named():
    model = GPT(GPTConfig.tiny()).eval()
    greedy = sample(model, 2, temperature=1e-30, length=4, use_cache=False)
    tokens = torch.zeros(2, 0, dtype=torch.long)
    for _ in range(4):  # the argmax at every step, as temperature -> 0
        logits = model(torch.cat([tokens, tokens.new_zeros(2, 1)], dim=1))[:, -1]
        tokens = torch.cat([tokens, logits.argmax(-1, keepdim=True)], dim=1)
    assert torch.equal(greedy, tokens)
    with torch.no_grad():
        model.parts.head.fill_(float("nan"))
    with pytest.raises(ValueError, match="logits contain NaN or inf: its weights are damaged"):
        sample(model, 2, length=3)


def test_a_task_that_overflows_the_model_dtype_is_refused(tiny_source, make_projectable):
    model = make_projectable(tiny_source).half()
    with pytest.raises(ValueError, match="overflow the model's dtype torch.float16"):
        model.generate(torch.tensor([1e6, 0.0, 0.0]), 0.5)


# ---- numbers: numpy scalars pass wherever numbers do ----------------------------------------------------------


@pytest.mark.parametrize("scale", [np.float32(0.25), np.float64(0.25), 0.25], ids=repr)
def test_numpy_scales_are_accepted(projectable, scale):
    task = torch.tensor(TASK)
    small = projectable.generate(task, scale)
    assert small.config.n_embd == 8 and isinstance(small.config.n_embd, int)
    expected = projectable.generate(task, 0.25)
    for name, tensor in expected.named_tensors().items():
        assert torch.equal(small.named_tensors()[name], tensor), name
    with torch.no_grad():
        assert torch.equal(projectable.sequence_nll(tokens(), task, scale), projectable.sequence_nll(tokens(), task, 0.25))
    assert scale_name(scale) == "1/4"
    assert projectable.num_projector_params(scale) == projectable.num_projector_params(0.25)


def test_numpy_numbers_are_accepted_by_scale_name_sample_and_configs(tiny_source):
    assert scale_name(np.int64(1)) == "1" and scale_name(np.float32(0.125)) == "1/8"
    g = lambda: torch.Generator().manual_seed(4)
    expected = sample(tiny_source, 3, temperature=0.25, top_k=3, length=5, generator=g())
    got = sample(tiny_source, np.int64(3), temperature=np.float32(0.25), top_k=np.int64(3), length=np.int64(5),
                 generator=g())
    assert torch.equal(got, expected)
    assert torch.equal(sample(tiny_source, 3, temperature=np.float64(0.25), top_k=3, length=5, generator=g()), expected)
    config = GPTConfig.tiny(n_embd=np.int64(32), task_dim=np.int64(3))
    assert config == GPTConfig.tiny(n_embd=32, task_dim=3) and type(config.n_embd) is int
    projector = ProjectorConfig(task_dim=np.int64(3), rank=np.int32(4), scales=(np.float32(0.5),))
    assert projector == ProjectorConfig(task_dim=3, rank=4, scales=(0.5,))


@pytest.mark.parametrize("kwargs, match", [
    ({"temperature": float("nan")}, "temperature must be a finite number > 0, got nan"),
    ({"temperature": float("inf")}, "temperature must be a finite number > 0, got inf"),
    ({"temperature": 0.0}, "temperature must be a finite number > 0, got 0.0"),
    ({"temperature": -1}, "temperature must be a finite number > 0, got -1.0"),
    ({"temperature": "hot"}, "temperature must be a number, got 'hot'"),
    ({"top_k": 0}, "top_k must be None .* or an int >= 1, got 0"),
    ({"top_k": np.int64(-2)}, "top_k must be None .* or an int >= 1, got -2"),
    ({"top_k": 2.5}, "top_k must be a whole number, got 2.5"),
    ({"n": 0}, "n must be a positive number of samples, got 0"),
    ({"n": 1.5}, r"n \(the number of samples\) must be a whole number, got 1.5"),
    ({"length": 0}, "length 0 must lie in 1..block_size=12; an empty sequence"),
    ({"length": 13}, "length 13 must lie in 1..block_size=12"),
])
def test_sampling_arguments_are_checked(tiny_source, kwargs, match):
    with pytest.raises(ValueError, match=match):
        sample(tiny_source, **{"n": 2, **kwargs})


@pytest.mark.parametrize("shape", [(2, 0), (0, 12)])
def test_empty_token_batches_are_refused(projectable, conditional, shape):
    empty = torch.zeros(shape, dtype=torch.long)
    task = torch.tensor(TASK)
    for call in (lambda: conditional(empty, task), lambda: projectable.sequence_nll(empty, task, 0.5),
                 lambda: projectable.loss(empty, task)):
        with pytest.raises(ValueError, match=rf"tokens have shape \({shape[0]}, {shape[1]}\): no sequences"):
            call()


@pytest.mark.parametrize("scale, match", [
    (0.125, r"no projector for scale=0.125; the available scales are 1/2, 1/4"),
    (np.float32(1.0), r"no projector for scale=1; the available scales are 1/2, 1/4"),
    (0.3, r"scale=0.3 is not of the form 1/2\^k"),
    ("1/2", r"scale must be a positive number 1/2\^k .*got '1/2'"),
    (float("nan"), r"scale must be a positive number 1/2\^k .*got nan"),
])
def test_scales_without_a_projector_name_the_available_ones(projectable, scale, match):
    task = torch.tensor(TASK)
    for call in (lambda: projectable.generate(task, scale), lambda: projectable.sequence_nll(tokens(), task, scale)):
        with pytest.raises(ValueError, match=match):
            call()


# ---- the command line -----------------------------------------------------------------------------------------


@pytest.fixture
def files(tmp_path, tiny_source, make_projectable):
    """A ProjectableGPT checkpoint (scales 1/2, 1/4, task_dim 3) and a GPT file."""
    model = make_projectable(tiny_source)
    checkpoint, gpt = tmp_path / "projectable.safetensors", tmp_path / "small.safetensors"
    model.save(checkpoint)
    model.generate(torch.tensor(TASK), 0.5).save(gpt)
    return checkpoint, gpt


def run_error(argv, capsys) -> str:
    """``main`` on bad input: exit status 2, one line on stderr naming the problem, nothing on stdout."""
    capsys.readouterr()
    assert main([str(a) for a in argv]) == 2
    captured = capsys.readouterr()
    assert captured.err.startswith("projectable: error: ") and captured.err.count("\n") == 1, captured.err
    assert "Traceback" not in captured.err and captured.out == "", captured
    return captured.err


def leftovers(folder):
    return sorted(p.name for p in folder.rglob("*") if p.name.endswith((".partial", ".old")) or "probe" in p.name)


def commands(files, out_dir):
    checkpoint, gpt = files
    return {
        "generate": (["generate", "--checkpoint", checkpoint, "--task", "0.5,-1,2", "--scale", "1/2", "--out",
                      out_dir / "out.safetensors"], out_dir / "out.safetensors"),
        "sample": (["sample", gpt, "--n", "2", "--out", out_dir / "out.npy"], out_dir / "out.npy"),
    }


@pytest.mark.parametrize("command", ["generate", "sample"])
def test_an_existing_output_is_refused_unless_overwrite(files, tmp_path, capsys, command):
    argv, out = commands(files, tmp_path)[command]
    out.write_bytes(b"keep me")
    err = run_error(argv, capsys)
    assert f"--out {out} already exists; pass --overwrite" in err
    assert out.read_bytes() == b"keep me"
    assert main([str(a) for a in argv] + ["--overwrite"]) == 0
    assert out.read_bytes() != b"keep me" and out.stat().st_size > 0
    assert leftovers(tmp_path) == []


def test_export_refuses_a_non_empty_folder_unless_overwrite(files, tmp_path, capsys):
    pytest.importorskip("transformers", reason="export-gpt2 needs the optional extra projectable-core[hf]")
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    _, gpt = files
    outdir = tmp_path / "gpt2"
    outdir.mkdir()
    (outdir / "notes.txt").write_text("mine")
    assert f"outdir {outdir} already exists and is not empty; pass --overwrite" in run_error(
        ["export-gpt2", gpt, outdir], capsys)
    assert sorted(p.name for p in outdir.iterdir()) == ["notes.txt"]
    assert main(["export-gpt2", str(gpt), str(outdir), "--overwrite"]) == 0
    assert (outdir / "config.json").is_file() and (outdir / "model.safetensors").is_file()
    assert leftovers(tmp_path) == []
    empty = tmp_path / "empty"
    empty.mkdir()
    assert main(["export-gpt2", str(gpt), str(empty)]) == 0  # an empty folder holds nothing to lose
    file = tmp_path / "a-file"
    file.write_text("x")
    assert f"outdir {file} is a file, not a folder" in run_error(["export-gpt2", gpt, file], capsys)


@pytest.mark.parametrize("command", ["generate", "sample"])
def test_a_missing_parent_folder_is_created(files, tmp_path, capsys, command):
    argv, out = commands(files, tmp_path / "new" / "deeper")[command]
    assert main([str(a) for a in argv]) == 0
    assert out.is_file() and str(out) in capsys.readouterr().out


@pytest.mark.parametrize("command", ["generate", "sample"])
def test_unwritable_outputs_are_refused_before_any_work(files, tmp_path, capsys, command):
    blocker = tmp_path / "a-file"
    blocker.write_text("x")
    argv, out = commands(files, blocker / "sub")[command]
    assert f"cannot write --out {out}: {blocker} is a file, not a folder" in run_error(argv, capsys)
    argv, out = commands(files, tmp_path)[command]
    out.mkdir()
    assert f"--out {out} is a folder" in run_error(argv, capsys)


@pytest.mark.parametrize("command", ["generate", "sample"])
def test_a_read_only_folder_is_refused(files, tmp_path, capsys, command):
    locked = tmp_path / "locked"
    locked.mkdir()
    locked.chmod(0o500)
    try:
        if os.access(locked, os.W_OK):  # root ignores permission bits
            pytest.skip("this user can write into a read-only folder")
        argv, out = commands(files, locked / "sub")[command]
        assert f"cannot write --out {out}: the folder {locked} is not writable" in run_error(argv, capsys)
        assert not (locked / "sub").exists()
    finally:
        locked.chmod(0o700)


def test_a_failed_write_keeps_the_old_file_and_leaves_nothing_behind(files, tmp_path, capsys, monkeypatch):
    argv, out = commands(files, tmp_path)["generate"]
    out.write_bytes(b"keep me")

    def failing_save(self, path, tokenizer=None):
        with open(path, "wb") as f:
            f.write(b"half a file")
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(GPT, "save", failing_save)
    assert "No space left on device" in run_error([str(a) for a in argv] + ["--overwrite"], capsys)
    assert out.read_bytes() == b"keep me" and leftovers(tmp_path) == []


def test_success_is_never_reported_without_the_file(files, tmp_path, capsys, monkeypatch):
    argv, out = commands(files, tmp_path)["generate"]
    monkeypatch.setattr(GPT, "save", lambda self, path, tokenizer=None: None)  # writes nothing
    assert f"writing {out} failed" in run_error(argv, capsys)
    assert not out.exists()


def damaged_inputs(tmp_path, good):
    """name -> a path that is not a readable file of the kind ``good`` is."""
    data = good.read_bytes()
    (tmp_path / "truncated.safetensors").write_bytes(data[: len(data) // 2])
    (tmp_path / "header-only.safetensors").write_bytes(data[:8])
    (tmp_path / "text.safetensors").write_text("hello, not a model\n")
    np.save(tmp_path / "array.npy", np.zeros(3))
    save_file({"x": torch.zeros(2)}, str(tmp_path / "foreign.safetensors"))
    (tmp_path / "a-folder").mkdir()
    return {name: tmp_path / name for name in ("truncated.safetensors", "header-only.safetensors", "text.safetensors",
                                               "array.npy", "foreign.safetensors", "missing.safetensors",
                                               "a-folder")}


@pytest.mark.parametrize("command", ["generate", "sample", "info", "export-gpt2"])
def test_unreadable_inputs_are_named_in_a_one_line_error(files, tmp_path, capsys, command):
    checkpoint, gpt = files
    bad_dir = tmp_path / "bad"
    bad_dir.mkdir()
    for name, path in damaged_inputs(bad_dir, checkpoint if command == "generate" else gpt).items():
        out = tmp_path / "out" / ("out.npy" if command == "sample" else "out.safetensors")
        argv = {
            "generate": ["generate", "--checkpoint", path, "--task", "1,2,3", "--scale", "1/2", "--out", out],
            "sample": ["sample", path, "--out", out],
            "info": ["info", path],
            "export-gpt2": ["export-gpt2", path, tmp_path / "out" / "gpt2"],
        }[command]
        err = run_error(argv, capsys)
        assert str(path) in err, (name, err)
        assert not (tmp_path / "out").exists(), name  # nothing is created for a run that fails


def test_damaged_config_metadata_is_named(tmp_path, capsys):
    path = tmp_path / "damaged.safetensors"
    save_file({"x": torch.zeros(2)}, str(path), metadata={"format": "projectable.gpt", "config": "{not json"})
    with pytest.raises(ValueError, match=f"{path}: its 'config' metadata is not a valid config"):
        GPT.load(path)
    assert f"{path}: its 'config' metadata is not a valid config" in run_error(["info", path], capsys)
    save_file({"x": torch.zeros(2)}, str(path), metadata={"format": "projectable.gpt"})
    assert f"{path} lacks its 'config' metadata" in run_error(["info", path], capsys)
    save_file({"x": torch.zeros(2)}, str(path), metadata={"format": "projectable.gpt", "config": '{"colour": 1}'})
    assert "unexpected keyword argument 'colour'" in run_error(["info", path], capsys)


@pytest.mark.parametrize("name, content, match", [
    ("task.npy", b"\x93NUMPY garbage", "is not a readable .npy file of numbers"),
    ("task.pt", b"garbage", "is not a readable .pt file of numbers"),
    ("task.txt", b"0.1, zero, 0.3\n", "holds something other than rows of numbers"),
    ("task.txt", b"\xff\xfe\x00binary", "holds something other than rows of numbers"),
    ("task.txt", b"\n\n", "is empty"),
])
def test_garbage_task_files_are_named(files, tmp_path, capsys, name, content, match):
    checkpoint, _ = files
    task_file = tmp_path / name
    task_file.write_bytes(content)
    out = tmp_path / "generated.safetensors"
    err = run_error(["generate", "--checkpoint", checkpoint, "--task-file", task_file, "--scale", "1/2",
                     "--out", out], capsys)
    assert f"--task-file {task_file}" in err and match in err, err
    assert not out.exists()


def test_task_files_of_other_dtypes(files, tmp_path, capsys):
    checkpoint, _ = files
    model = ProjectableGPT.load(checkpoint)
    np.save(tmp_path / "int.npy", np.array(INT_TASK, dtype=np.int64))
    out = tmp_path / "generated.safetensors"
    assert main(["generate", "--checkpoint", str(checkpoint), "--task-file", str(tmp_path / "int.npy"),
                 "--scale", "1/2", "--out", str(out)]) == 0
    expected = model.generate(torch.tensor(INT_TASK, dtype=torch.float32), 0.5)
    for name, tensor in expected.named_tensors().items():
        assert torch.equal(GPT.load(out).named_tensors()[name], tensor), name
    np.save(tmp_path / "complex.npy", np.array(TASK, dtype=np.complex64))
    err = run_error(["generate", "--checkpoint", checkpoint, "--task-file", tmp_path / "complex.npy", "--scale", "1/2",
                     "--out", tmp_path / "other.safetensors"], capsys)
    assert "dtype torch.complex64" in err


@pytest.mark.parametrize("flags, match", [
    (["--temperature", "nan"], "temperature must be a finite number > 0, got nan"),
    (["--temperature", "0"], "temperature must be a finite number > 0, got 0.0"),
    (["--top-k", "0"], "top_k must be None (no truncation) or an int >= 1, got 0"),
    (["--n", "0"], "n must be a positive number of samples, got 0"),
    (["--length", "0"], "length 0 must lie in 1..block_size=12"),
    (["--n", "1000000000000"], "GiB (their KV cache), but this machine has"),
])
def test_cli_sampling_arguments_fail_before_anything_is_written(files, tmp_path, capsys, flags, match):
    _, gpt = files
    out = tmp_path / "new" / "tokens.npy"
    assert match in run_error(["sample", gpt, *flags, "--out", out], capsys)
    assert not out.parent.exists()


def test_cli_scale_without_a_projector_names_the_available_ones(files, tmp_path, capsys):
    checkpoint, _ = files
    err = run_error(["generate", "--checkpoint", checkpoint, "--task", "1,2,3", "--scale", "1/8",
                     "--out", tmp_path / "generated.safetensors"], capsys)
    assert "no projector for scale=0.125; the available scales are 1/2, 1/4" in err
