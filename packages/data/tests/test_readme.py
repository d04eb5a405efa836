"""Executes the ```python blocks of the package README, in order, in one namespace."""

import re
from pathlib import Path

README = Path(__file__).resolve().parents[1] / "README.md"


def test_readme_snippets_run(monkeypatch, tmp_path, mnist_root):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))  # palette cache goes to a fresh user cache
    monkeypatch.delenv("PROJECTABLE_MNIST_ROOT", raising=False)  # found as <repo>/../shared/data/mnist
    blocks = re.findall(r"```python\n(.*?)```", README.read_text(), flags=re.S)
    assert blocks
    namespace = {}
    for block in blocks:
        exec(compile(block, str(README), "exec"), namespace)
    assert namespace["batch"].tokens.shape == (4, 64)
    assert list((tmp_path / "projectable" / "synthmnist").glob("palette-*.npz"))
