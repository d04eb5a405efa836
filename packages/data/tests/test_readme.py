"""Executes the ```python blocks of the package README, in order, in one namespace, with projectable_vqvae
unimportable (the package stands alone)."""

import importlib.abc
import re
import sys
from pathlib import Path

README = Path(__file__).resolve().parents[1] / "README.md"


class BlockVQVAE(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.partition(".")[0] == "projectable_vqvae":
            raise ImportError(f"{name} is blocked: the README's snippets run without it")
        return None


def test_readme_snippets_run(monkeypatch, tmp_path, mnist_root):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))  # palette cache goes to a fresh user cache
    monkeypatch.delenv("PROJECTABLE_MNIST_ROOT", raising=False)  # found as <repo>/../shared/data/mnist
    monkeypatch.setattr(sys, "meta_path", [BlockVQVAE(), *sys.meta_path])
    for name in [n for n in sys.modules if n.partition(".")[0] == "projectable_vqvae"]:
        monkeypatch.delitem(sys.modules, name)
    blocks = re.findall(r"```python\n(.*?)```", README.read_text(), flags=re.S)
    assert blocks
    namespace = {}
    for block in blocks:
        exec(compile(block, str(README), "exec"), namespace)
    assert namespace["batch"].tokens.shape == (4, 64)
    assert namespace["track_batch"].tokens.shape == (4, 64) and namespace["track_batch"].task.shape == (4, 8)
    assert list((tmp_path / "projectable" / "imagenet-tokens-example").glob("imagenet-tokens/*/embeddings-train/*"))
    assert list((tmp_path / "projectable" / "synthmnist").glob("palette-*.npz"))
