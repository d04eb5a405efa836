"""Where data lives: the user cache and the MNIST root lookup order."""

from __future__ import annotations

import os
from pathlib import Path

MNIST_ROOT_ENV = "PROJECTABLE_MNIST_ROOT"


def user_cache_dir(*parts: str) -> Path:
    """`$XDG_CACHE_HOME/projectable/...`, or `~/.cache/projectable/...` when XDG_CACHE_HOME is unset."""
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base, "projectable", *parts)


def find_repo_root(start: str | os.PathLike) -> Path | None:
    """First ancestor of `start` that looks like the project checkout (holds `packages/data`)."""
    here = Path(start).resolve()
    for candidate in [here, *here.parents]:
        if (candidate / "packages" / "data" / "pyproject.toml").is_file():
            return candidate
    return None


def repo_shared_mnist_dir(start: str | os.PathLike = __file__) -> Path | None:
    """`<repo>/../shared/data/mnist`, where the project's tests and CI keep MNIST, if the checkout has one."""
    root = find_repo_root(start)
    if root is None:
        return None
    return root.parent / "shared" / "data" / "mnist"
