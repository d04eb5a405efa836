"""The README's python snippets are part of the API contract: run them."""

import re
from pathlib import Path

import pytest

README = Path(__file__).resolve().parents[1] / "README.md"
EXAMPLE = Path(__file__).resolve().parents[3] / "examples" / "tutorial.py"  # absent from an installed package


def python_blocks() -> list[str]:
    return re.findall(r"```python\n(.*?)```", README.read_text(), flags=re.S)


def tutorial() -> str:
    (block,) = [b for b in python_blocks() if "projectable_data" in b]
    return block


def test_readme_python_snippets_run(tmp_path, monkeypatch):
    blocks = [b for b in python_blocks() if "projectable_data" not in b]  # the tutorial: below
    assert blocks, "README has no python snippet"
    monkeypatch.chdir(tmp_path)
    for block in blocks:
        exec(compile(block, str(README), "exec"), {})
    assert (tmp_path / "small.safetensors").exists()


def test_the_tutorial_trains_generates_renders_and_exports(tmp_path, monkeypatch):
    """The README's tutorial at 30 steps instead of 300 (a few seconds): every step of it runs, and it leaves
    a PNG of 4 x 4 samples, a model file that records its palette and an export that ships it."""
    pytest.importorskip("projectable_data", reason="the tutorial's data: pip install packages/data")
    pytest.importorskip("transformers", reason="the tutorial exports: the hf extra")
    Image = pytest.importorskip("PIL.Image", reason="the tutorial writes a PNG: the png extra")
    from projectable.tokenizer import read_tokenizer

    block = tutorial()
    assert "steps = 300\n" in block
    monkeypatch.chdir(tmp_path)
    exec(compile(block.replace("steps = 300\n", "steps = 30\n"), str(README), "exec"), {})  # noqa: S102
    assert Image.open(tmp_path / "samples.png").size == (4 * 8 * 16, 4 * 8 * 16)  # 4 x 4 images of 8 px, x16
    assert read_tokenizer(tmp_path / "small.safetensors").centres.shape == (16, 3)
    assert (tmp_path / "small-gpt2" / "palette.json").is_file()


@pytest.mark.skipif(not EXAMPLE.exists(), reason="examples/ is in the repository, not in the package")
def test_the_example_script_is_the_tutorial():
    script = EXAMPLE.read_text()
    for line in tutorial().splitlines():
        if line != "steps = 300":  # the script's --steps sets it
            assert line in script.splitlines(), line
