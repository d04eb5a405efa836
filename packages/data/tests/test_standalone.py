"""projectable_data installs and runs on its own: no module imports projectable_vqvae, even lazily, and every
module imports where projectable_vqvae cannot be imported."""

from __future__ import annotations

import ast
import re
import subprocess
import sys
from pathlib import Path

import projectable_data

PACKAGE = Path(projectable_data.__file__).resolve().parent
README = Path(__file__).resolve().parents[1] / "README.md"

# A finder ahead of every other one refuses projectable_vqvae and its submodules; then every module of the
# package is imported (but __main__, which runs the command line).
IMPORT_ALL_WITHOUT_VQVAE = """
import importlib, importlib.abc, pkgutil, sys

class Blocked(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.partition(".")[0] == "projectable_vqvae":
            raise ImportError(f"{name} is blocked in this test")
        return None

sys.meta_path.insert(0, Blocked())
try:
    import projectable_vqvae
except ImportError:
    pass
else:
    raise SystemExit("the finder let projectable_vqvae through")
import projectable_data

names = [m.name for m in pkgutil.walk_packages(projectable_data.__path__, "projectable_data.")]
for name in names:
    if name != "projectable_data.__main__":
        importlib.import_module(name)
print(" ".join(sorted(names)))
"""


def imported_names(tree: ast.AST) -> set[str]:
    """Top-level names of every import statement anywhere in the tree (function bodies included)."""
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names |= {alias.name.partition(".")[0] for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names.add(node.module.partition(".")[0])
    return names


def test_no_module_or_readme_snippet_imports_projectable_vqvae():
    sources = {path.name: path.read_text() for path in sorted(PACKAGE.glob("*.py"))}
    assert "imagenet_tokens.py" in sources and "encoders.py" in sources
    blocks = re.findall(r"```python\n(.*?)```", README.read_text(), flags=re.S)
    sources |= {f"README block {i}": block for i, block in enumerate(blocks)}
    importing = sorted(name for name, text in sources.items() if "projectable_vqvae" in imported_names(ast.parse(text)))
    assert importing == []
    # the check itself sees a lazy import inside a function
    assert "projectable_vqvae" in imported_names(ast.parse("def f():\n    from projectable_vqvae import VQVAE\n"))


def test_every_module_imports_without_projectable_vqvae():
    result = subprocess.run([sys.executable, "-c", IMPORT_ALL_WITHOUT_VQVAE], capture_output=True, text=True,
                            timeout=300)
    assert result.returncode == 0, result.stderr
    imported = set(result.stdout.split())
    assert {"projectable_data.imagenet_tokens", "projectable_data.encoders", "projectable_data.imagenet"} <= imported
