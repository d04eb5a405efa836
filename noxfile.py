"""Sessions: `nox -s dev` (the environment), `nox` (tests), `nox -s tests slow core_alone`, `nox -s lint`,
`nox -s reproduce_table1 -- scale=smoke`, `nox -s reproduce_table2|3|4`, `nox -s reproduce_figure3|4`,
`nox -s reproduce_split_study`, `nox -s reproduce_ablations`, `nox -s reproduce_generators`,
`nox -s reproduce_specialisation`,
`nox -s reproduce_table1_long`, `nox -s reproduce_encoders`, `nox -s reports`, `nox -s mlflow_ui`.

One environment, `.venv` in the repository, serves every session, the README's hand commands and the
notebooks: the first session that needs it builds it (pip in a plain venv, never uv: uv ignores the local
torch wheel), installing the CPU build of torch first and then the three packages and `experiments`
editable, all under `-c constraints.txt` (an unpinned torch pulls a ~5.5 GB CUDA build). It is rebuilt
only when a package's metadata or the constraints change. `core_alone` builds its own on purpose: it tests
the core package installed alone.
"""

from __future__ import annotations

import ast
import hashlib
import os
import sys
from pathlib import Path

import nox

ROOT = Path(__file__).resolve().parent
CONSTRAINTS = ("-c", str(ROOT / "constraints.txt"))
VENV = ROOT / ".venv"
BIN = VENV / "bin"


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
# What makes the shared environment: a change to any of these rebuilds it.
ENV_FILES = ("constraints.txt", "pyproject.toml", "packages/core/pyproject.toml", "packages/data/pyproject.toml",
             "packages/vqvae/pyproject.toml")
EDITABLE = ("packages/core[hf]", "packages/data[efficientnet,simclr]", "packages/vqvae", ".")
TOOLS = ("pytest", "ruff")


def _env_digest() -> str:
    text = "".join((ROOT / f).read_text() for f in ENV_FILES) + " ".join(EDITABLE + TOOLS)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def shared_env(session: nox.Session) -> Path:
    """Build `.venv` once (or again when its inputs changed) and return its bin folder."""
    marker = VENV / ".projectable-env"
    if marker.is_file() and marker.read_text() == _env_digest():
        return BIN
    session.log(f"building the shared environment {VENV} (a few minutes, once)")
    session.run(sys.executable, "-m", "venv", str(VENV), external=True)
    pip = (str(BIN / "python"), "-m", "pip", "install", "--quiet")
    session.run(*pip, "torch==2.13.0", *CONSTRAINTS, external=True)
    editable = [arg for path in EDITABLE for arg in ("-e", path)]
    session.run(*pip, *CONSTRAINTS, *editable, *TOOLS, external=True)
    marker.write_text(_env_digest())
    return BIN


def run(session: nox.Session, program: str, *args: str, env: dict | None = None) -> None:
    """Run a program of the shared environment."""
    session.run(str(shared_env(session) / program), *args, env={**TELEMETRY_OFF, **(env or {})}, external=True)


@nox.session(venv_backend="none")
def dev(session: nox.Session) -> None:
    """The shared environment `.venv` for hand runs (`.venv/bin/python -m experiments.train ...`)."""
    shared_env(session)
    session.log(f"ready: {BIN / 'python'} (or `source {BIN / 'activate'}`)")


@nox.session(venv_backend="none")
def tests(session: nox.Session) -> None:
    """Fast tests of every package and the experiments (CPU, minutes)."""
    run(session, "pytest", "packages", "experiments", "-m", "not slow", *session.posargs)


@nox.session(venv_backend="none")
def slow(session: nox.Session) -> None:
    """Tests marked slow: a Ray cluster of two nodes with an MLflow server, the paper scale's step..."""
    run(session, "pytest", "packages", "experiments", "-m", "slow", *session.posargs)


@nox.session(python=PYTHON)
def core_alone(session: nox.Session) -> None:
    """The core package in a virtualenv of its own, without the `hf` extra: its declared dependencies
    suffice to build, save and load models; the transformers tests skip."""
    session.install("torch==2.13.0", *CONSTRAINTS)
    session.install(*CONSTRAINTS, "packages/core", "pytest")
    session.run("pytest", "packages/core", "-rs", *session.posargs, env=TELEMETRY_OFF)


@nox.session(venv_backend="none")
def lint(session: nox.Session) -> None:
    run(session, "ruff", "check", ".", *session.posargs)


# analysis/<name>.py -> reports/<scale>/<name>.*; every notebook reads PROJECTABLE_REPORT_{SCALE, TRACKING_URI,
# EXPERIMENT, REPORTS, CACHE} (experiments.reporting.toolkit.notebook_params)
NOTEBOOKS = tuple(sorted(path.stem for path in (ROOT / "analysis").glob("*.py")))


def with_scale(posargs, default: str = "cpu") -> tuple[list[str], str]:
    """Hydra overrides from `--` with scale=<default> added when missing, and the scale."""
    overrides = list(posargs)
    if not any(o.startswith("scale=") for o in overrides):
        overrides.append(f"scale={default}")
    return overrides, next(o.split("=", 1)[1] for o in overrides if o.startswith("scale="))


def notebook_env(scale: str, overrides: list[str]) -> dict[str, str]:
    """The notebooks' parameters for the store the overrides name (tracking.uri, or the mlflow.db under
    paths.root; with paths.root the reports go to <paths.root>/reports too)."""
    values = dict(o.split("=", 1) for o in overrides if "=" in o)
    prefix = "PROJECTABLE_REPORT"
    env = {f"{prefix}_SCALE": scale}
    if "paths.root" in values:
        root = Path(values["paths.root"]).resolve()
        env[f"{prefix}_TRACKING_URI"] = f"sqlite:///{root}/mlflow.db"
        env[f"{prefix}_REPORTS"] = str(root / "reports")
        env[f"{prefix}_CACHE"] = str(root / ".cache" / "reports")
    if "tracking.uri" in values:
        env[f"{prefix}_TRACKING_URI"] = values["tracking.uri"]
    if "tracking.experiment" in values:
        env[f"{prefix}_EXPERIMENT"] = values["tracking.experiment"]
    return env


def run_notebook(session: nox.Session, name: str, scale: str, overrides: list[str]) -> None:
    """Execute analysis/<name>.py headless; a notebook whose runs are missing stops the session with the
    command that makes them as its last line."""
    env = notebook_env(scale, overrides)
    missing = missing_reports(session, [name], env)
    if missing:
        session.error(missing[name])
    notebook = ROOT / "outputs" / "notebooks" / f"{name}-{scale}.ipynb"
    notebook.parent.mkdir(parents=True, exist_ok=True)
    run(session, "jupytext", "--quiet", "--to", "ipynb", "-o", str(notebook), f"analysis/{name}.py")
    try:
        run(session, "jupyter", "execute", "--inplace", str(notebook), env=env)
    except nox.command.CommandFailed:
        session.error(f"{name}: the notebook failed (its traceback is above); executed copy: {notebook}")
    # where the notebook wrote: toolkit.notebook_params' default is <project_root()>/reports, $PROJECTABLE_ROOT's
    reports = env.get("PROJECTABLE_REPORT_REPORTS") or str(Path(os.environ.get("PROJECTABLE_ROOT") or ROOT) / "reports")
    session.log(f"{name}: reports in {reports}/{scale}; notebook {notebook}")


def missing_reports(session: nox.Session, names: list[str], env: dict[str, str]) -> dict[str, str]:
    """name -> why it cannot be made (and the command that would make its runs), for those whose sweep is
    not in the store (``python -m experiments.reporting missing``)."""
    out = session.run(str(shared_env(session) / "python"), "-m", "experiments.reporting", "missing", *names,
                      env={**TELEMETRY_OFF, **env}, external=True, silent=True)
    return dict(line.split("\t", 1) for line in (out or "").splitlines() if "\t" in line)


@nox.session(venv_backend="none")
def reproduce_table1(session: nox.Session) -> None:
    """Table 1 end to end: the sweep (Hydra overrides after `--`, default scale=cpu), then the notebook
    writes reports/<scale>/table1.{md,csv,png}."""
    overrides, scale = with_scale(session.posargs)
    run(session, "python", "experiments/sweep.py", "experiment=table1", *overrides)
    run_notebook(session, "table1", scale, overrides)  # reads the store the sweep wrote to (paths.root, tracking.*)


@nox.session(venv_backend="none")
def reproduce_table3(session: nox.Session) -> None:
    """Table 3 (sources of different sizes): the sweep (Hydra overrides after `--`, default scale=cpu; needs a
    finished Table 1 sweep of the scale), then reports/<scale>/table3.{md,csv}."""
    overrides, scale = with_scale(session.posargs)
    run(session, "python", "experiments/sweep_source_size.py", *overrides)
    run_notebook(session, "table3", scale, overrides)


@nox.session(venv_backend="none")
def reproduce_split_study(session: nox.Session) -> None:
    """The budget split study (P_s from sources pre-trained for f of the total steps; the rule in
    conf/experiment/split_study.yaml picks f): the sweep, then reports/<scale>/split_study.{md,csv,png}."""
    overrides, scale = with_scale(session.posargs)
    run(session, "python", "experiments/sweep.py", "experiment=split_study", *overrides)
    run_notebook(session, "split_study", scale, overrides)


@nox.session(venv_backend="none")
def reproduce_ablations(session: nox.Session) -> None:
    """The s = 1/8 ablation (conf/experiment/ablations.yaml; needs a finished Table 1 sweep of the scale): the
    sweep, then reports/<scale>/ablations.{md,csv,png}."""
    overrides, scale = with_scale(session.posargs)
    run(session, "python", "experiments/sweep.py", "experiment=ablations", *overrides)
    run_notebook(session, "ablations", scale, overrides)


@nox.session(venv_backend="none")
def reproduce_specialisation(session: nox.Session) -> None:
    """How much of P_s is specialisation (conf/experiment/specialisation.yaml; needs a finished Table 1 sweep of
    the scale, whose stage-1 M_1 its P_s(const) cells start from and whose P_s, M_s, M~_s it compares with):
    the sweep, then reports/<scale>/specialisation.{md,csv,png}."""
    overrides, scale = with_scale(session.posargs)
    run(session, "python", "experiments/sweep.py", "experiment=specialisation", *overrides)
    run_notebook(session, "specialisation", scale, overrides)


@nox.session(venv_backend="none")
def reproduce_generators(session: nox.Session) -> None:
    """The weight generators of App. B side by side (conf/experiment/generators.yaml; needs a finished Table 1
    sweep of the scale, whose stage-1 models its cells start from and whose P_s and baselines it reuses): the
    sweep, then reports/<scale>/generators.{md,csv,png} and one sample grid per generator."""
    overrides, scale = with_scale(session.posargs)
    # without a Table 1 sweep holding the cells it starts from, the sweep refuses before any work and names
    # the command to run first (a complete Table 1, or one of only those cells)
    run(session, "python", "experiments/sweep.py", "experiment=generators", *overrides)
    run_notebook(session, "generators", scale, overrides)


@nox.session(venv_backend="none")
def reproduce_table1_long(session: nox.Session) -> None:
    """Table 1 at the cpu-long scale (twice the steps, 2 seeds everywhere; hours): a pinned sweep id, so the
    same command resumes it after any interruption; then reports/cpu-long/table1.*."""
    overrides, _ = with_scale(session.posargs, default="cpu-long")
    if not any(o.startswith("sweep.id=") for o in overrides):
        overrides.append("sweep.id=table1-cpu-long")
    scale = next(o.split("=", 1)[1] for o in overrides if o.startswith("scale="))
    run(session, "python", "experiments/sweep.py", "experiment=table1", *overrides)
    run_notebook(session, "table1", scale, [o for o in overrides if not o.startswith("sweep.id=")])


@nox.session(venv_backend="none")
def reproduce_encoders(session: nox.Session) -> None:
    """The ImageNet track's task-vector encoders compared by linear probes (SimCLR, EfficientNet-Lite0, an
    untrained SimCLR): reports/<scale>/encoders.{md,csv}."""
    overrides, _ = with_scale(session.posargs)
    run(session, "python", "-m", "experiments.encoder_probe", *overrides)


@nox.session(venv_backend="none")
def reproduce_figure3(session: nox.Session) -> None:
    """Figure 3 from Table 1's saved models (no training): reports/<scale>/figure3.{png,md}."""
    overrides, scale = with_scale(session.posargs)
    run_notebook(session, "figure3", scale, overrides)


@nox.session(venv_backend="none")
def reproduce_figure4(session: nox.Session) -> None:
    """Figure 4 from Table 1's saved models evaluated over t1 in 0..2 (no training):
    reports/<scale>/figure4.{png,csv,md}."""
    overrides, scale = with_scale(session.posargs)
    run_notebook(session, "figure4", scale, overrides)


def reproduce_imagenet_track(session: nox.Session, experiment: str) -> None:
    """Data caches once on the driver (tokenizer, tokens, embeddings), the sweep, then the notebook."""
    overrides, scale = with_scale(session.posargs)
    run(session, "python", "-m", "experiments.prepare_data", f"experiment={experiment}", *overrides)
    run(session, "python", "experiments/sweep.py", f"experiment={experiment}", *overrides)
    run_notebook(session, experiment, scale, overrides)


@nox.session(venv_backend="none")
def reproduce_table2(session: nox.Session) -> None:
    """Table 2 (M~_s vs P_s, ImageNet track; the SynthMNIST stand-in unless data.images=imagenet64): data
    caches, the sweep (Hydra overrides after `--`, default scale=cpu), then reports/<scale>/table2.{md,csv,png}."""
    reproduce_imagenet_track(session, "table2")


@nox.session(venv_backend="none")
def reproduce_table4(session: nox.Session) -> None:
    """Table 4 (cross-task transfer between label groups, ImageNet track or its stand-in): data caches, the
    sweep (default scale=cpu), then reports/<scale>/table4.{md,csv}."""
    reproduce_imagenet_track(session, "table4")


@nox.session(venv_backend="none")
def reports(session: nox.Session) -> None:
    """Every report whose runs exist, re-made without training from MLflow or, where the store lacks them, from
    the sweeps' evidence files in reports/<scale>/evidence (`-- scale=<scale>`, default cpu;
    `only=table1,figure4` picks some); then the list of those skipped, each with the command that makes its
    runs. Fails only when a notebook breaks for another reason."""
    overrides, scale = with_scale(session.posargs)
    only = next((o.split("=", 1)[1].split(",") for o in overrides if o.startswith("only=")), NOTEBOOKS)
    overrides = [o for o in overrides if not o.startswith("only=")]
    unknown = sorted(set(only) - set(NOTEBOOKS))
    if unknown:
        session.error(f"only={','.join(unknown)}: no such notebook; choose from {', '.join(NOTEBOOKS)}")
    names = [n for n in NOTEBOOKS if n in only]
    skipped = missing_reports(session, names, notebook_env(scale, overrides))
    failed = []
    for name in (n for n in names if n not in skipped):
        try:
            run_notebook(session, name, scale, overrides)
        except nox.sessions._SessionQuit:
            failed.append(name)
    made = [n for n in names if n not in skipped and n not in failed]
    session.log(f"made at scale {scale}: {', '.join(made) or 'none'}")
    for why in skipped.values():
        session.log(f"skipped {why}")
    if failed:
        session.error(f"notebooks failed at scale {scale}: {', '.join(failed)} (tracebacks above)")


@nox.session(venv_backend="none")
def mlflow_ui(session: nox.Session) -> None:
    """Browse the runs: the MLflow UI on http://127.0.0.1:5000 (args after `--` go to experiments.tracking.ui)."""
    run(session, "python", "-m", "experiments.tracking.ui", *session.posargs)
