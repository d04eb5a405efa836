"""Sessions: `nox` (tests), `nox -s tests slow`, `nox -s lint`, `nox -s reproduce_table1 -- scale=smoke`,
`nox -s mlflow_ui`.

Every session installs the CPU build of torch first and everything else with `-c constraints.txt` (an
unpinned torch pulls a ~5.5 GB CUDA build), using pip in a plain venv (uv ignores the local torch wheel).
"""

from __future__ import annotations

import os
from pathlib import Path

import nox

ROOT = Path(__file__).resolve().parent
CONSTRAINTS = ("-c", str(ROOT / "constraints.txt"))
TELEMETRY_OFF = {
    "MLFLOW_DISABLE_TELEMETRY": "true",
    "DO_NOT_TRACK": "true",
    "RAY_USAGE_STATS_ENABLED": "0",
    "HF_HUB_OFFLINE": "1",
}
os.environ.update(TELEMETRY_OFF)

nox.options.default_venv_backend = "venv"
nox.options.sessions = ["tests"]
nox.options.reuse_existing_virtualenvs = True
PYTHON = "3.11"


def install(session: nox.Session, *extra: str) -> None:
    """torch first, then the three packages and the experiments editable, all under the constraints."""
    session.install("torch==2.13.0", *CONSTRAINTS)
    session.install(
        *CONSTRAINTS,
        "-e", "packages/core[hf]",
        "-e", "packages/data",
        "-e", "packages/vqvae",
        "-e", ".",
        *extra,
    )


@nox.session(python=PYTHON)
def tests(session: nox.Session) -> None:
    """Fast tests of every package and the experiments (CPU, minutes)."""
    install(session, "pytest")
    session.run("pytest", "packages", "experiments", "-m", "not slow", *session.posargs, env=TELEMETRY_OFF)


@nox.session(python=PYTHON)
def slow(session: nox.Session) -> None:
    """Tests marked slow: a Ray cluster of two nodes with an MLflow server, the paper scale's step..."""
    install(session, "pytest")
    session.run("pytest", "packages", "experiments", "-m", "slow", *session.posargs, env=TELEMETRY_OFF)


@nox.session(python=PYTHON)
def lint(session: nox.Session) -> None:
    session.install("ruff", *CONSTRAINTS)
    session.run("ruff", "check", ".", *session.posargs)


@nox.session(python=PYTHON)
def reproduce_table1(session: nox.Session) -> None:
    """Table 1 end to end: the sweep (Hydra overrides after `--`, default scale=cpu), then the notebook
    writes reports/<scale>/table1.{md,csv,png}."""
    install(session)
    overrides = list(session.posargs)
    if not any(o.startswith("scale=") for o in overrides):
        overrides.append("scale=cpu")
    scale = next(o.split("=", 1)[1] for o in overrides if o.startswith("scale="))
    session.run("python", "experiments/sweep.py", "experiment=table1", *overrides, env=TELEMETRY_OFF)

    notebook = ROOT / "outputs" / "notebooks" / f"table1-{scale}.ipynb"
    notebook.parent.mkdir(parents=True, exist_ok=True)
    env = {**TELEMETRY_OFF, "TABLE1_SCALE": scale}
    for override in overrides:  # the notebook reads the same store the sweep wrote to
        if override.startswith("tracking.uri="):
            env["TABLE1_TRACKING_URI"] = override.split("=", 1)[1]
        if override.startswith("tracking.experiment="):
            env["TABLE1_EXPERIMENT"] = override.split("=", 1)[1]
    session.run("jupytext", "--to", "ipynb", "-o", str(notebook), "analysis/table1.py")
    session.run("jupyter", "execute", "--inplace", str(notebook), env=env)
    session.log(f"report: {ROOT / 'reports' / scale / 'table1.md'}; executed notebook: {notebook}")


@nox.session(python=PYTHON)
def mlflow_ui(session: nox.Session) -> None:
    """Browse the runs: the MLflow UI on http://127.0.0.1:5000 (args after `--` go to experiments.ui)."""
    install(session)
    session.run("python", "-m", "experiments.ui", *session.posargs, env=TELEMETRY_OFF)
