"""The command line, called in-process: generate, export-gpt2, sample, info, and its one-line errors."""

import importlib.util
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


def cli(argv) -> int:
    return main([str(a) for a in argv])


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
    assert run_error(["sample", path, "--task", "1", "--out", out], capsys).endswith("drop --task\n")
    (tmp_path / "task.txt").write_text("1\n")
    assert run_error(["sample", path, "--task-file", tmp_path / "task.txt", "--out", out],
                     capsys).endswith("drop --task-file\n")
    hint = run_error(["sample", ckpt, "--out", out], capsys)  # a checkpoint: generate a small model first
    assert "is a ProjectableGPT checkpoint" in hint and "projectable generate --checkpoint" in hint
    assert "standalone GPT already" in run_error(["generate", "--checkpoint", path, "--task", "1", "--out",
                                                  tmp_path / "s.safetensors"], capsys)
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


# Runs a script in a fresh interpreter in which `projectable` (and its sibling packages) cannot be imported.
BLOCK_PROJECTABLE = """\
import importlib.abc, sys
class Block(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0].startswith("projectable"):
            raise ImportError(f"{name} is blocked: the recipe must run without projectable")
sys.meta_path.insert(0, Block())
try:
    import projectable
except ImportError:
    pass
else:
    raise SystemExit("projectable is still importable")
"""


def run_without_projectable(script: str, cwd: Path):
    import subprocess
    import sys

    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    return subprocess.run([sys.executable, "-c", BLOCK_PROJECTABLE + script], cwd=cwd, env={**env, "HF_HUB_OFFLINE": "1"},
                          capture_output=True, text=True, timeout=300)


def test_a_trained_models_export_renders_alone(tmp_path):
    """A checkpoint saved with its palette -> `generate` -> `export-gpt2` with no flag: the folder ships
    palette.json and the card's recipe renders readable samples with transformers, numpy and Pillow only."""
    import json

    import numpy as np

    pytest.importorskip("transformers", reason="the GPT-2 export needs the hf extra")
    Image = pytest.importorskip("PIL.Image", reason="PNG writing needs Pillow")
    from projectable.hf import RENDER_RECIPE
    from projectable.tokenizer import palette_tokenizer, read_tokenizer

    torch.manual_seed(0)
    source = GPT(GPTConfig.tiny(vocab_size=8, block_size=16, n_embd=32, n_head=2))
    centres = np.linspace(-1, 1, 24, dtype=np.float32).reshape(8, 3)
    checkpoint = tmp_path / "run" / "projectable.safetensors"
    checkpoint.parent.mkdir()
    ProjectableGPT(source, ProjectorConfig(task_dim=3, scales=(0.5,))).save(checkpoint, palette_tokenizer(centres))
    assert cli(["generate", "--checkpoint", checkpoint, "--task", "0.5,-1,2", "--out", tmp_path / "s.safetensors"]) == 0
    np.testing.assert_array_equal(read_tokenizer(tmp_path / "s.safetensors").centres, centres)
    assert cli(["export-gpt2", str(tmp_path / "s.safetensors"), str(tmp_path / "gpt2")]) == 0
    assert np.allclose(json.loads((tmp_path / "gpt2" / "palette.json").read_text()), centres)
    card = (tmp_path / "gpt2" / "README.md").read_text()
    assert "## No tokenizer" in card and not (tmp_path / "gpt2" / "tokenizer.json").exists()
    recipe = card.split("With transformers, numpy and Pillow only:\n\n```python\n")[1].split("```")[0]
    assert recipe == RENDER_RECIPE
    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    assert RENDER_RECIPE.strip() in readme  # the README shows the same lines
    done = run_without_projectable(recipe.replace('"path/to/this/folder"', repr(str(tmp_path / "gpt2"))), tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]
    rendered = np.asarray(Image.open(tmp_path / "samples.png"))
    assert rendered.shape == (128, 4 * 128, 3)  # four 4 x 4 images, each 128 px high
    colours = {tuple(c) for c in ((centres + 1) * 127.5).round().astype(np.uint8)}
    assert {tuple(p) for p in rendered.reshape(-1, 3)} <= colours  # every pixel is a palette colour


def test_sample_png_draws_the_palettes_colours(tmp_path):
    import json

    import numpy as np

    Image = pytest.importorskip("PIL.Image", reason="PNG writing needs Pillow")
    model = GPT(GPTConfig.tiny(vocab_size=8, block_size=16))
    model.save(tmp_path / "m.safetensors")
    centres = np.linspace(-1, 1, 24).reshape(8, 3)
    (tmp_path / "palette.json").write_text(json.dumps(centres.tolist()))
    assert cli(["sample", str(tmp_path / "m.safetensors"), "--n", "4", "--out", str(tmp_path / "t.npy"),
                 "--png", str(tmp_path / "grid.png"), "--palette", str(tmp_path / "palette.json")]) == 0
    tokens = np.load(tmp_path / "t.npy")
    grid = np.asarray(Image.open(tmp_path / "grid.png"))
    assert grid.shape == (2 * 4 * 32, 2 * 4 * 32, 3)  # 2 x 2 images of 4 x 4, upscaled to 128 px each
    first = ((centres[tokens[0]] + 1) * 127.5).round().astype(np.uint8).reshape(4, 4, 3)
    assert (grid[:128:32, :128:32] == first).all()  # the first sample's pixels are its tokens' colours


def test_palettes_too_small_or_outside_the_colour_range_are_refused(tmp_path, capsys):
    import json

    import numpy as np
    from projectable.tokenizer import check_palette, palette_tokenizer

    model = GPT(GPTConfig.tiny(vocab_size=8, block_size=16))
    model.save(tmp_path / "m.safetensors")
    (tmp_path / "few.json").write_text(json.dumps([[0, 0, 0]] * 5))
    (tmp_path / "bytes.json").write_text(json.dumps([[0, 128, 255]] * 8))  # 0..255, not [-1, 1]
    err = run_error(["sample", tmp_path / "m.safetensors", "--out", tmp_path / "t.npy", "--png", tmp_path / "g.png",
                     "--palette", tmp_path / "few.json"], capsys)
    assert "has 5 colours but the model has 8 tokens" in err and not (tmp_path / "t.npy").exists()
    err = run_error(["export-gpt2", tmp_path / "m.safetensors", tmp_path / "e", "--palette", tmp_path / "bytes.json"],
                    capsys)
    assert "values in [0, 255] but colours lie in [-1, 1]" in err and not (tmp_path / "e").exists()
    assert "records no palette or VQ-VAE" in run_error(
        ["sample", tmp_path / "m.safetensors", "--out", tmp_path / "t.npy", "--png", tmp_path / "g.png"], capsys)
    with pytest.raises(ValueError, match="NaN or inf"):
        palette_tokenizer([[0, float("nan"), 0]])
    assert check_palette(np.zeros((9, 3)), vocab_size=8).shape == (9, 3)  # more colours than tokens is fine


def test_save_gpt2_writes_the_recipe_for_a_palette_argument_whatever_its_source(tmp_path):
    import numpy as np

    pytest.importorskip("transformers", reason="the GPT-2 export needs the hf extra")
    from projectable.hf import RENDER_RECIPE, save_gpt2

    model = GPT(GPTConfig.tiny(vocab_size=8, block_size=16))
    centres = np.linspace(-1, 1, 24).reshape(8, 3)
    np.savez(tmp_path / "cache-palette.npz", centres=centres)
    for palette in (centres, tmp_path / "cache-palette.npz"):
        folder = save_gpt2(model, tmp_path / f"e{len(str(palette))}", palette=palette)
        assert RENDER_RECIPE in (folder / "README.md").read_text() and (folder / "palette.json").is_file()
    with pytest.raises(ValueError, match="pass palette="):
        save_gpt2(model, tmp_path / "x", extra_files={"palette.json": b"[]"})
    with pytest.raises(ValueError, match="has 4 colours but the model has 8 tokens"):
        save_gpt2(model, tmp_path / "y", palette=centres[:4])


def test_generate_writes_one_file_per_task_vector(checkpoint, tmp_path, capsys):
    model, path = checkpoint
    tasks = tmp_path / "tasks.txt"
    tasks.write_text("0.5,-1,2\n1,0,0\n0,0,1\n")
    assert cli(["generate", "--checkpoint", path, "--task-file", tasks, "--scale", "1/2",
                 "--out", tmp_path / "small.safetensors"]) == 0
    assert capsys.readouterr().out.count("wrote") == 3
    tokens = torch.randint(0, 16, (2, 12))
    for i, row in enumerate(([0.5, -1, 2], [1, 0, 0], [0, 0, 1])):
        small = GPT.load(tmp_path / f"small-{i}.safetensors")
        with torch.no_grad():
            torch.testing.assert_close(small(tokens), model.generate(torch.tensor(row), 0.5)(tokens))
    assert not (tmp_path / "small.safetensors").exists()
    # every output is checked before any is written
    (tmp_path / "again-2.safetensors").write_bytes(b"x")
    assert "again-2.safetensors already exists" in run_error(
        ["generate", "--checkpoint", path, "--task-file", tasks, "--scale", "1/2", "--out",
         tmp_path / "again.safetensors"], capsys)
    assert not (tmp_path / "again-0.safetensors").exists()


def test_output_suffixes_are_checked_and_files_follow_the_umask(checkpoint, tmp_path, capsys):
    _, path = checkpoint
    err = run_error(["generate", "--checkpoint", path, "--task", "0.5,-1,2", "--scale", "1/2", "--out",
                     tmp_path / "y.pt"], capsys)
    assert "--out" in err and "must end in .safetensors" in err and not (tmp_path / "y.pt").exists()
    GPT(GPTConfig.tiny()).save(tmp_path / "m.safetensors")
    assert "g.jpg must end in .png" in run_error(
        ["sample", tmp_path / "m.safetensors", "--out", tmp_path / "t.npy", "--png", tmp_path / "g.jpg"], capsys)
    previous = os.umask(0o022)
    try:
        assert cli(["generate", "--checkpoint", path, "--task", "0.5,-1,2", "--scale", "1/2", "--out",
                     tmp_path / "s.safetensors"]) == 0
        GPT(GPTConfig.tiny()).save(tmp_path / "g.safetensors")
        exported = importlib.util.find_spec("transformers") is not None  # the export needs the hf extra
        if exported:
            assert cli(["export-gpt2", tmp_path / "g.safetensors", tmp_path / "e"]) == 0
    finally:
        os.umask(previous)
    if exported:  # transformers' save_pretrained writes model.safetensors through safetensors too
        assert (tmp_path / "e" / "model.safetensors").stat().st_mode & 0o777 == 0o644
    for name in ("s.safetensors", "g.safetensors"):
        assert (tmp_path / name).stat().st_mode & 0o777 == 0o644, name  # safetensors alone writes 0600


def test_help_has_examples_defaults_and_no_markup(capsys):
    from projectable.cli import build_parser

    parser = build_parser()
    top = parser.format_help()
    assert "``" not in top and "examples:" in top
    commands = parser._subparsers._group_actions[0].choices
    assert set(commands) == {"generate", "export-gpt2", "import-gpt2", "sample", "info"}
    for name, sub in commands.items():
        text = sub.format_help()
        assert f"example:\n  projectable {name}" in text, name
        for action in sub._actions:
            if action.option_strings and action.dest != "help":
                assert action.help, (name, action.dest)
                assert "default" in action.help or action.required, (name, action.dest)


def test_a_closed_pipe_stops_quietly(checkpoint, tmp_path):
    import subprocess
    import sys

    _, path = checkpoint
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    done = subprocess.run(f"{sys.executable} -m projectable info {path} | head -c 10", shell=True, env=env,
                          capture_output=True, text=True, timeout=120)
    assert done.stdout == "Projectabl" and done.stderr == "", done.stderr


def test_import_gpt2_and_every_command_reads_an_export_folder(checkpoint, tmp_path, capsys):
    import json

    import numpy as np

    pytest.importorskip("transformers", reason="import/export needs the hf extra")
    from projectable.tokenizer import read_tokenizer

    model = GPT(GPTConfig.tiny(vocab_size=8, block_size=16)).eval()
    centres = np.linspace(-1, 1, 24).reshape(8, 3)
    (tmp_path / "p.json").write_text(json.dumps(centres.tolist()))
    model.save(tmp_path / "m.safetensors")
    assert cli(["export-gpt2", tmp_path / "m.safetensors", tmp_path / "gpt2", "--palette", tmp_path / "p.json"]) == 0
    assert cli(["import-gpt2", tmp_path / "gpt2", tmp_path / "back.safetensors"]) == 0
    back = GPT.load(tmp_path / "back.safetensors")
    tokens = torch.randint(0, 8, (2, 16))
    with torch.no_grad():
        torch.testing.assert_close(back(tokens), model(tokens), atol=1e-4, rtol=1e-4)
    assert np.allclose(read_tokenizer(tmp_path / "back.safetensors").centres, centres)  # the palette came along
    assert cli(["sample", tmp_path / "gpt2", "--n", "2", "--out", tmp_path / "t.npy"]) == 0
    assert cli(["export-gpt2", tmp_path / "gpt2", tmp_path / "gpt2-again"]) == 0
    assert (tmp_path / "gpt2-again" / "palette.json").is_file()
    capsys.readouterr()
    assert cli(["info", tmp_path / "gpt2"]) == 0
    assert "a palette of 8 colours" in capsys.readouterr().out
    assert "not a GPT-2 folder" in run_error(["import-gpt2", tmp_path, tmp_path / "x.safetensors"], capsys)
    (tmp_path / "palette.npz").write_bytes(b"PK\x03\x04")
    assert "a numpy archive (e.g. a palette), not a model file" in run_error(["info", tmp_path / "palette.npz"], capsys)
