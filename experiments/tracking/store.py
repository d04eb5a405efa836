"""MLflow plumbing: the store (an absolute sqlite file and an artifact folder in the repo by default, or a
tracking server), experiments with absolute artifact locations, and runs that always end FINISHED or
FAILED."""

from __future__ import annotations

import json
import os
import platform
import subprocess
import sys
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

import mlflow
from mlflow.tracking import MlflowClient

from experiments.base.paths import code_root
from experiments.base.sections import ConfigError

RUN_FILE = "mlflow_run.json"  # in the run directory: which MLflow run this directory continues


@dataclass(frozen=True)
class TrackingConfig:
    uri: str  # sqlite:////abs/mlflow.db (embedded) or http://host:port (server)
    artifacts: str  # artifact folder of experiments created against a sqlite store
    experiment: str = "projectable"
    run_name: str | None = None
    tags: Mapping[str, str] = field(default_factory=dict)
    log_models: bool = True  # every final model as an MLflow model (pyfunc), linked to its metrics
    register: str | None = None  # register the run's projected model (or its only model) under this name

    def __post_init__(self):
        if self.uri.startswith("sqlite:") and not self.uri.startswith("sqlite:////"):
            raise ValueError(
                f"tracking.uri={self.uri} is a relative sqlite path, which moves with the working directory; "
                "use an absolute one, sqlite:////abs/path/mlflow.db"
            )
        if not self.experiment.strip():
            raise ValueError("tracking.experiment is empty; name the MLflow experiment, e.g. tracking.experiment=projectable")
        if not isinstance(self.tags, Mapping) or not all(
                isinstance(v, (str, int, float, bool)) for v in self.tags.values()):
            raise ValueError(f"tracking.tags={self.tags!r} must map tag names to plain values, e.g. "
                             "tracking.tags={owner: me}")
        if self.uri.startswith("file:") or "://" not in self.uri:
            raise ValueError(
                f"tracking.uri={self.uri}: MLflow 3 refuses plain file stores; use sqlite:////abs/mlflow.db "
                "or a server's http://host:port"
            )


def is_local_store(uri: str) -> bool:
    return uri.startswith("sqlite:")


def check_reachable(uri: str, timeout: float = 10.0) -> None:
    """A tracking server must answer its health check within ``timeout`` seconds (MLflow's own client
    retries for minutes); a sqlite store needs its folder to exist or be creatable."""
    if uri.startswith("sqlite:"):
        folder = Path(uri.removeprefix("sqlite:///")).parent
        try:
            folder.mkdir(parents=True, exist_ok=True)
        except OSError as err:
            raise ConfigError(f"tracking.uri={uri}: cannot create its folder {folder} ({err})") from err
        check_sqlite(Path(uri.removeprefix("sqlite:///")), timeout)
        return
    import urllib.request

    try:
        with urllib.request.urlopen(f"{uri.rstrip('/')}/health", timeout=timeout) as response:
            if response.status == 200:
                return
    except OSError as err:
        raise ConfigError(f"tracking.uri={uri}: no MLflow server answered within {timeout:.0f} s ({err}); start it "
                          "(nox -s mlflow_ui, or `mlflow server ...`) or point tracking.uri at one that runs") from err
    raise ConfigError(f"tracking.uri={uri}: the server's health check did not answer 200")


SQLITE_HEADER = b"SQLite format 3\x00"


def check_sqlite(path: Path, timeout: float) -> None:
    """An existing store file must be a SQLite database that can be read and written within ``timeout``
    seconds; otherwise SQLAlchemy's tracebacks never name the file. A missing one is created by MLflow."""
    import sqlite3

    if not path.exists():
        return
    fix = (f"move {path} away (MLflow then starts an empty store there) or point tracking.uri at another "
           "store; restore it from a backup to keep its runs")
    if not path.is_file():
        raise ConfigError(f"tracking.uri=sqlite:///{path}: {path} is a folder, not a SQLite file; {fix}")
    try:
        with path.open("rb") as file:
            header = file.read(len(SQLITE_HEADER))
    except OSError as err:
        raise ConfigError(f"tracking.uri=sqlite:///{path}: cannot read {path} ({err.strerror}); {fix}") from err
    if header and header != SQLITE_HEADER:
        raise ConfigError(f"tracking.uri=sqlite:///{path}: {path} is not a SQLite database (damaged or another "
                          f"kind of file); {fix}")
    try:
        connection = sqlite3.connect(str(path), timeout=timeout)
        try:  # a read of the schema and a write transaction: what every run needs
            connection.execute("SELECT count(*) FROM sqlite_master").fetchall()
            connection.execute("BEGIN IMMEDIATE")
            connection.rollback()
        finally:
            connection.close()
    except sqlite3.OperationalError as err:
        if "locked" in str(err):
            raise ConfigError(
                f"tracking.uri=sqlite:///{path}: {path} stayed locked for {timeout:.0f} s (another process holds a "
                "write transaction on it: a stuck run, a `sqlite3` shell, a copy program); end that process and "
                "rerun") from err
        raise ConfigError(f"tracking.uri=sqlite:///{path}: {path} cannot be used ({err}); {fix}") from err
    except sqlite3.DatabaseError as err:
        raise ConfigError(f"tracking.uri=sqlite:///{path}: {path} is damaged ({err}); {fix}") from err


def experiment_id(config: TrackingConfig) -> str:
    """Id of ``config.experiment``, created with an absolute artifact location if missing."""
    mlflow.set_tracking_uri(config.uri)
    client = MlflowClient(config.uri)
    found = client.get_experiment_by_name(config.experiment)
    if found is not None:
        return found.experiment_id
    location = Path(config.artifacts).resolve().as_uri() if is_local_store(config.uri) else None
    try:
        return client.create_experiment(config.experiment, artifact_location=location)
    except mlflow.exceptions.MlflowException:  # created meanwhile by a concurrent trial
        return client.get_experiment_by_name(config.experiment).experiment_id


def recorded_run_id(run_dir: str | Path) -> str | None:
    """The MLflow run a run directory continues (``mlflow_run.json``), None if it has none; a damaged file
    is refused naming it and how to recover."""
    path = Path(run_dir) / RUN_FILE
    if not path.is_file():
        return None
    try:
        run_id = json.loads(path.read_text())["run_id"]
    except (OSError, UnicodeDecodeError, ValueError, KeyError, TypeError) as err:
        run_id = err
    if not isinstance(run_id, str) or not run_id:
        raise ConfigError(
            f"{path} is damaged (not {{\"run_id\": \"<MLflow run id>\", ...}}: {run_id!r}); nothing was changed. "
            "Restore it (the run's id is the mlflow.runName tag's run in the MLflow UI), or delete it: the same "
            "command then continues from the checkpoint's own record of the run, or starts a new MLflow run"
        )
    return run_id


def run_status(uri: str, run_id: str) -> str | None:
    """FINISHED, RUNNING, FAILED, KILLED, or None if the store has no such run."""
    try:
        return MlflowClient(uri).get_run(run_id).info.status
    except mlflow.exceptions.MlflowException:
        return None


def start_run(config: TrackingConfig, run_dir: str | Path, run_id: str | None, run_name: str,
              tags: Mapping[str, str]) -> str:
    """Continue ``run_id`` (a resumed run directory) or start a new run; records the id in the run dir."""
    exp_id = experiment_id(config)
    client = MlflowClient(config.uri)
    if run_id is not None:
        try:
            client.get_run(run_id)
        except mlflow.exceptions.MlflowException:
            print(f"run {run_id} recorded in {run_dir} is not in {config.uri}; starting a new MLflow run")
            run_id = None
    if run_id is None:
        run = mlflow.start_run(experiment_id=exp_id, run_name=run_name, tags=dict(tags))
    else:
        run = mlflow.start_run(run_id=run_id)
        mlflow.set_tags(dict(tags))
    Path(run_dir).mkdir(parents=True, exist_ok=True)
    (Path(run_dir) / RUN_FILE).write_text(json.dumps({"run_id": run.info.run_id, "uri": config.uri}))
    return run.info.run_id


def ui_url(config: TrackingConfig) -> str:
    """Where the run pages of this store are served: the server itself, or for a sqlite store the address
    ``nox -s mlflow_ui`` serves it at."""
    return config.uri.rstrip("/") if config.uri.startswith("http") else "http://127.0.0.1:5000"


def server_answers(url: str, timeout: float = 0.5) -> bool:
    """Whether an MLflow server answers its health check at ``url`` (a short wait: printed lines ask it)."""
    import urllib.error
    import urllib.request

    try:
        with urllib.request.urlopen(f"{url}/health", timeout=timeout) as response:
            return response.status == 200
    except (OSError, urllib.error.URLError, ValueError):
        return False


def where(config: TrackingConfig, run_id: str, answers=server_answers) -> str:
    """One line naming a run's MLflow id and its page in the UI: the link only when a server answers there,
    else the command that starts one (a link to nothing would send the user to a browser error)."""
    exp_id = experiment_id(config)
    page = f"{ui_url(config)}/#/experiments/{exp_id}/runs/{run_id}"
    if answers(ui_url(config)):
        return f"MLflow run {run_id} in {config.uri}: {page}"
    return (f"MLflow run {run_id} in {config.uri}; no MLflow UI answers at {ui_url(config)}: start one with "
            f"`nox -s mlflow_ui` (or `python -m experiments.tracking.ui`), then open {page}")


def end_run(failed: bool) -> None:
    mlflow.end_run(status="FAILED" if failed else "FINISHED")


def log_params(params: Mapping[str, str]) -> None:
    """Params in chunks (the REST API takes at most 100 per call); values are capped at MLflow's limit."""
    items = [(k, v if len(v) <= 6000 else v[:5997] + "...") for k, v in params.items()]
    for start in range(0, len(items), 100):
        mlflow.log_params(dict(items[start : start + 100]))


def source_tags(entry_point: str) -> dict[str, str]:
    """MLflow's own provenance tags: the commit of the code's checkout and the entry point that ran (not
    Ray's worker), so the UI's Source and Version columns name them."""
    commit = git_commit(code_root())
    return {"mlflow.source.git.commit": commit.removesuffix("-dirty"), "mlflow.source.name": entry_point,
            "mlflow.source.type": "LOCAL", "git_dirty": str(commit.endswith("-dirty")).lower()}


def git_commit(root: str | Path) -> str:
    """HEAD of the repository, with '-dirty' when tracked files changed; 'unknown' outside git. Changes
    under reports/ do not count: they are this code's outputs (a notebook run rewrites them one by one)."""
    try:
        head = subprocess.run(["git", "-C", str(root), "rev-parse", "HEAD"], capture_output=True, text=True,
                              check=True).stdout.strip()
        dirty = subprocess.run(["git", "-C", str(root), "status", "--porcelain", "--untracked-files=no", "--",
                                ".", ":(exclude)reports"],
                               capture_output=True, text=True, check=True).stdout.strip()
        return head + ("-dirty" if dirty else "")
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def machine() -> str:
    """One line describing where this ran (provenance)."""
    import torch

    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "no GPU"
    return (f"{platform.node()} | {platform.platform()} | {os.cpu_count()} CPUs | {gpu} | "
            f"python {sys.version.split()[0]} | torch {torch.__version__}")


def cpu_tags() -> dict[str, str]:
    """The CPU a run trains on: ``cpu_model`` and ``cpu_flags`` (/proc/cpuinfo's model name and flags, where
    there is one; e.g. avx512_bf16 and amx_bf16 decide how fast bf16 runs), tags of every run."""
    fields = {}
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            key, _, value = line.partition(":")
            fields.setdefault(key.strip(), value.strip())
    except OSError:
        pass
    return {"cpu_model": fields.get("model name") or platform.processor() or platform.machine() or "unknown",
            "cpu_flags": fields.get("flags", "")[:5000]}  # MLflow's tag values stop at 8000 characters
