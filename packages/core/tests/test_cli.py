"""The command line, called in-process: generate, export-gpt2, sample, info, and its one-line errors."""

import os
from pathlib import Path

import pytest
import torch
from projectable import GPT, GPTConfig, ProjectableGPT, ProjectorConfig, sample
from projectable.cli import main, parse_scale

TASK = [0.5, -1.0, 2.0]


@pytest.fixture()
def checkpoint(tmp_path):
    torch.manual_seed(0)
    model = ProjectableGPT(GPT(GPTConfig.tiny(n_embd=64)), ProjectorConfig(task_dim=3, scales=(0.5, 0.25)))
    path = tmp_path / "projectable.safetensors"
    model.save(path)
    return model.eval(), path


def run_error(argv, capsys) -> str:
    """Run ``main`` expecting bad input: exit code 2 and exactly one line on stderr."""
    capsys.readouterr()  # drop earlier output (progress bars of transformers)
    assert main([str(a) for a in argv]) == 2
    err = capsys.readouterr().err
    assert err.startswith("projectable: error: ") and err.count("\n") == 1, err
    return err


def test_generate_matches_library(checkpoint, tmp_path, capsys):
    model, path = checkpoint
    out = tmp_path / "small.safetensors"
    assert main(["generate", "--checkpoint", str(path), "--task", "0.5,-1,2", "--scale", "1/4", "--out", str(out)]) == 0
    assert "width 16" in capsys.readouterr().out
    small = GPT.load(out)
    expected = model.generate(torch.tensor(TASK), 0.25)
    tokens = torch.randint(0, 16, (2, 12))
    with torch.no_grad():
        torch.testing.assert_close(small(tokens), expected(tokens))


@pytest.mark.parametrize("suffix", [".txt", ".npy", ".pt"])
def test_generate_from_task_file(checkpoint, tmp_path, suffix):
    model, path = checkpoint
    task_file = tmp_path / f"task{suffix}"
    if suffix == ".txt":
        task_file.write_text("0.5, -1.0, 2.0\n")
    elif suffix == ".npy":
        import numpy as np
        np.save(task_file, np.array(TASK, dtype=np.float32))
    else:
        torch.save(torch.tensor(TASK), task_file)
    out = tmp_path / "small.safetensors"
    assert main(["generate", "--checkpoint", str(path), "--task-file", str(task_file), "--scale", "0.5",
                 "--out", str(out)]) == 0
    expected = model.generate(torch.tensor(TASK), 0.5)
    for name, tensor in expected.named_tensors().items():
        torch.testing.assert_close(GPT.load(out).named_tensors()[name], tensor)


def test_generate_bad_input(checkpoint, tmp_path, capsys):
    _, path = checkpoint
    out = tmp_path / "small.safetensors"
    base = ["generate", "--checkpoint", path, "--out", out]
    assert "several scales" in run_error(base + ["--task", "1,2,3"], capsys)
    assert "task vector has shape (2,)" in run_error(base + ["--task", "1,2", "--scale", "1/2"], capsys)
    assert "1/2^k" in run_error(base + ["--task", "1,2,3", "--scale", "1/3"], capsys)
    assert "not a number" in run_error(base + ["--task", "1,2,3", "--scale", "half"], capsys)
    assert "no projector for scale" in run_error(base + ["--task", "1,2,3", "--scale", "1/8"], capsys)
    assert "NaN" in run_error(base + ["--task", "1,nan,3", "--scale", "1/2"], capsys)
    assert "needs a task vector" in run_error(base + ["--scale", "1/2"], capsys)
    assert "no checkpoint" in run_error(["generate", "--checkpoint", tmp_path / "missing", "--task", "1,2,3",
                                         "--out", out], capsys)
    garbage = tmp_path / "garbage.safetensors"
    garbage.write_bytes(b"not a safetensors file at all")
    assert "not a readable safetensors file" in run_error(["generate", "--checkpoint", garbage, "--task", "1,2,3",
                                                  "--out", out], capsys)
    assert not out.exists()


def test_parse_scale():
    assert parse_scale("1/8") == parse_scale("0.125") == 0.125
    assert parse_scale("1") == 1.0
    with pytest.raises(ValueError, match="1/2\\^k"):
        parse_scale("0.3")


def test_sample_is_reproducible_and_matches_library(tmp_path, capsys):
    torch.manual_seed(1)
    model = GPT(GPTConfig.tiny())
    path = tmp_path / "model.safetensors"
    model.save(path)
    out = tmp_path / "tokens.pt"
    argv = ["sample", str(path), "--n", "5", "--temperature", "0.8", "--top-k", "4", "--seed", "3", "--out", str(out)]
    assert main(argv) == 0
    assert "(5, 12)" in capsys.readouterr().out
    tokens = torch.load(out)
    expected = sample(model, n=5, temperature=0.8, top_k=4, generator=torch.Generator().manual_seed(3))
    assert torch.equal(tokens, expected)


def test_sample_npy_and_conditional(tmp_path, capsys):
    import numpy as np
    model = GPT(GPTConfig.tiny(task_dim=3))
    path = tmp_path / "conditional.safetensors"
    model.save(path)
    out = tmp_path / "tokens.npy"
    assert main(["sample", str(path), "--n", "3", "--length", "7", "--task", "1,2,3", "--out", str(out)]) == 0
    assert np.load(out).shape == (3, 7)
    assert "needs a task vector" in run_error(["sample", path, "--out", out], capsys)
    assert "length" in run_error(["sample", path, "--task", "1,2,3", "--length", "13", "--out", out], capsys)
    assert ".npy or .pt" in run_error(["sample", path, "--task", "1,2,3", "--out", tmp_path / "t.csv"], capsys)


def test_sample_refuses_task_for_unconditional_and_checkpoints(checkpoint, tmp_path, capsys):
    _, ckpt = checkpoint
    path = tmp_path / "model.safetensors"
    GPT(GPTConfig.tiny()).save(path)
    out = tmp_path / "tokens.npy"
    assert "unconditional" in run_error(["sample", path, "--task", "1", "--out", out], capsys)
    assert "not a projectable.gpt file" in run_error(["sample", ckpt, "--out", out], capsys)
    assert "no model file" in run_error(["sample", tmp_path / "missing.safetensors", "--out", out], capsys)


def test_export_gpt2(checkpoint, tmp_path, capsys):
    pytest.importorskip("transformers", reason="export-gpt2 needs the optional extra projectable-core[hf]")
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    from projectable.hf import from_gpt2

    model, path = checkpoint
    small_path = tmp_path / "small.safetensors"
    assert main(["generate", "--checkpoint", str(path), "--task", "0.5,-1,2", "--scale", "1/2",
                 "--out", str(small_path)]) == 0
    assert main(["export-gpt2", str(small_path), str(tmp_path / "gpt2")]) == 0
    assert "vocabulary 17" in capsys.readouterr().out
    back = from_gpt2(tmp_path / "gpt2")
    small = GPT.load(small_path)
    tokens = torch.randint(0, 16, (2, 12))
    with torch.no_grad():
        torch.testing.assert_close(back(tokens), small(tokens))
    conditional = tmp_path / "conditional.safetensors"
    GPT(GPTConfig.tiny(task_dim=3)).save(conditional)
    assert "conditional" in run_error(["export-gpt2", conditional, tmp_path / "gpt2c"], capsys)


def test_info(checkpoint, tmp_path, capsys):
    model, path = checkpoint
    assert main(["info", str(path)]) == 0
    out = capsys.readouterr().out
    assert f"source parameters: {model.source.num_params():,}" in out
    assert f"projector parameters {model.num_projector_params(0.25):,}" in out
    small = model.generate(torch.tensor(TASK), 0.25)
    assert f"(width 16) {small.num_params():,} parameters" in out
    small_path = tmp_path / "small.safetensors"
    small.save(small_path)
    assert main(["info", str(small_path)]) == 0
    assert f"parameters: {small.num_params():,}" in capsys.readouterr().out
    other = tmp_path / "other.safetensors"
    from safetensors.torch import save_file

    save_file({"x": torch.zeros(2)}, str(other))
    assert "neither" in run_error(["info", other], capsys)
    assert "no file" in run_error(["info", tmp_path / "missing"], capsys)


def test_console_script_is_declared():
    from importlib.metadata import entry_points

    scripts = {ep.name: ep.value for ep in entry_points(group="console_scripts")}
    assert scripts.get("projectable") == "projectable.cli:main"


def test_version(capsys):
    from importlib.metadata import version

    import projectable

    with pytest.raises(SystemExit) as exit_:
        main(["--version"])
    assert exit_.value.code == 0
    assert capsys.readouterr().out == f"projectable {projectable.__version__}\n"
    assert version("projectable-core") == projectable.__version__  # the package metadata reads the same


def test_python_dash_m_runs_the_cli(tmp_path):
    import subprocess
    import sys

    import projectable

    run = lambda *argv: subprocess.run([sys.executable, "-m", "projectable", *argv], capture_output=True, text=True)
    shown = run("--version")
    assert shown.returncode == 0 and shown.stdout == f"projectable {projectable.__version__}\n", shown.stderr
    failed = run("info", str(tmp_path / "missing"))
    assert failed.returncode == 2 and failed.stderr.startswith("projectable: error: no file"), failed.stderr


def test_sample_png_and_an_export_that_renders_with_transformers_numpy_and_pillow_only(tmp_path):
    """`projectable sample --png` writes an image grid; `export-gpt2 --palette` ships palette.json, and the
    recipe in the model card (and the README) renders samples from the folder alone."""
    import json

    import numpy as np
    import pytest

    pytest.importorskip("transformers", reason="the GPT-2 export needs the hf extra")
    Image = pytest.importorskip("PIL.Image", reason="PNG writing needs Pillow")
    from projectable import GPT, GPTConfig
    from projectable.cli import main
    from projectable.hf import RENDER_RECIPE

    torch.manual_seed(0)
    model = GPT(GPTConfig.tiny(vocab_size=8, block_size=16))
    model.save(tmp_path / "m.safetensors")
    centres = np.linspace(-1, 1, 24).reshape(8, 3)
    (tmp_path / "palette.json").write_text(json.dumps(centres.tolist()))
    main(["sample", str(tmp_path / "m.safetensors"), "--n", "4", "--out", str(tmp_path / "t.npy"),
          "--png", str(tmp_path / "grid.png"), "--palette", str(tmp_path / "palette.json")])
    tokens = np.load(tmp_path / "t.npy")
    grid = np.asarray(Image.open(tmp_path / "grid.png"))
    assert grid.shape == (2 * 4 * 4, 2 * 4 * 4, 3)  # 2 x 2 images of 4 x 4, upscaled 4x
    first = ((centres[tokens[0]] + 1) * 127.5).round().astype(np.uint8).reshape(4, 4, 3)
    assert (grid[:16:4, :16:4] == first).all()  # the first sample's pixels are its tokens' colours

    main(["export-gpt2", str(tmp_path / "m.safetensors"), str(tmp_path / "gpt2"),
          "--palette", str(tmp_path / "palette.json")])
    card = (tmp_path / "gpt2" / "README.md").read_text()
    assert RENDER_RECIPE.splitlines()[0] in card and "palette.json" in card
    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    assert RENDER_RECIPE.strip() in readme  # the README shows the same lines
    script = RENDER_RECIPE.replace('"path/to/this/folder"', repr(str(tmp_path / "gpt2")))
    script = script.replace('save("samples.png")', f'save({str(tmp_path / "samples.png")!r})')
    exec(compile(script, "recipe", "exec"), {})  # noqa: S102
    rendered = np.asarray(Image.open(tmp_path / "samples.png"))
    assert rendered.shape == (4 * 4, 4 * 4 * 4, 3)


def test_sample_png_refuses_a_palette_of_another_size(tmp_path):
    import json

    from projectable import GPT, GPTConfig
    from projectable.cli import main

    GPT(GPTConfig.tiny(vocab_size=8, block_size=16)).save(tmp_path / "m.safetensors")
    (tmp_path / "p.json").write_text(json.dumps([[0, 0, 0]] * 5))
    code = main(["sample", str(tmp_path / "m.safetensors"), "--out", str(tmp_path / "t.npy"),
                 "--png", str(tmp_path / "g.png"), "--palette", str(tmp_path / "p.json")])
    assert code == 2 and not (tmp_path / "t.npy").exists()  # refused before sampling
    assert main(["sample", str(tmp_path / "m.safetensors"), "--out", str(tmp_path / "t.npy"),
                 "--png", str(tmp_path / "g.png")]) == 2  # --png without a palette
