"""Where the code and the runs live."""

from __future__ import annotations

import os
from pathlib import Path

# experiments/base/paths.py -> the checkout holding the ``experiments`` package
_CHECKOUT = Path(__file__).resolve().parents[2]


def code_root() -> Path:
    """The checkout this package's code comes from (its commit is the provenance of every run and report),
    wherever ``PROJECTABLE_ROOT`` puts the runs."""
    return _CHECKOUT


def project_root() -> Path:
    """The repository: $PROJECTABLE_ROOT, else the folder holding this package (an editable install)."""
    env = os.environ.get("PROJECTABLE_ROOT")
    return Path(env).resolve() if env else _CHECKOUT
