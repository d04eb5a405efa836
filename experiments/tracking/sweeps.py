"""Sweeps in the MLflow store: the parent run that records a sweep's provenance, finding the newest finished
sweep of an experiment and scale, its trial runs as a table, their per-image losses and final weights."""

from __future__ import annotations

import json
import os
import sys
import tempfile
from pathlib import Path

import pandas as pd
from omegaconf import DictConfig, OmegaConf

from experiments.config import ConfigError, code_root, config_differences, effective_config, parse_run
from experiments.run.saved import SavedRun
from experiments.tracking import store as tracking
from experiments.tracking.store import MlflowClient


def start_sweep_run(tracking_cfg, sweep_id: str, cfg: DictConfig) -> str:
    """Create, or reopen on a resumed sweep, the parent run that records the sweep's provenance."""
    exp_id = tracking.experiment_id(tracking_cfg)
    client = MlflowClient(tracking_cfg.uri)
    found = client.search_runs([exp_id], f"tags.sweep_id = '{sweep_id}' and tags.role = 'sweep'")
    if found:
        run_id = found[0].info.run_id
        differences = config_differences(cfg, found[0].data.params, sweep=True)
        if differences:
            raise ConfigError(
                f"sweep {sweep_id} (MLflow run {run_id}) was started with another config; it differs in "
                f"{'; '.join(differences[:10])}. Nothing was changed. Either drop sweep.id (a sweep's default id "
                f"is keyed by its config) or pass a new one, or rerun with the sweep's own config "
                f"(its config/config.yaml artifact)"
            )
        client.update_run(run_id, status="RUNNING")
        return run_id
    tags = {
        **tracking.source_tags("experiments/sweep.py"),
        "role": "sweep",
        "sweep_id": sweep_id,
        "scale": str(cfg.budget.name),
        "experiment": str(cfg.experiment.name),
        "commit": tracking.git_commit(code_root()),  # the code's repository, wherever paths.root points
        "command": " ".join([Path(sys.argv[0]).name, *sys.argv[1:]]),
        "machine": tracking.machine(),
    }
    run = client.create_run(exp_id, run_name=f"sweep {sweep_id}", tags=tags)
    params = tracking_params(cfg)
    for start in range(0, len(params), 100):
        chunk = list(params.items())[start : start + 100]
        client.log_batch(run.info.run_id, params=[_param(k, v) for k, v in chunk])
    client.log_text(run.info.run_id, OmegaConf.to_yaml(cfg, resolve=True), "config/config.yaml")
    return run.info.run_id


def tracking_params(cfg: DictConfig) -> dict[str, str]:
    """The sweep's effective config (what changes its results, ``experiments.config.effective_config``)."""
    return {k: (v if len(v) <= 6000 else v[:5997] + "...") for k, v in effective_config(cfg, sweep=True).items()}


def _param(key: str, value: str):
    from mlflow.entities import Param

    return Param(key, value)


def finished_runs(tracking_cfg, sweep_id: str, cell: str) -> dict[int, object]:
    """seed -> the FINISHED MLflow run of one cell of a sweep."""
    client = MlflowClient(tracking_cfg.uri)
    runs = client.search_runs(
        [tracking.experiment_id(tracking_cfg)],
        f"tags.sweep_id = '{sweep_id}' and tags.cell = '{cell}' and attributes.status = 'FINISHED'",
    )
    return {int(r.data.tags["seed"]): r for r in runs}


def stage_run_uris(tracking_cfg, sweep_id: str, cell: str) -> list[str]:
    """runs:/<id>/model of every seed of a finished cell of this sweep, in seed order."""
    by_seed = finished_runs(tracking_cfg, sweep_id, cell)
    return [f"runs:/{by_seed[s].info.run_id}/model" for s in sorted(by_seed)]


def finished_runs_of_cell(tracking_cfg, sweep_id: str, cell: str) -> dict[int, dict[str, str]]:
    """seed -> params of the FINISHED runs of one cell of a sweep."""
    return {seed: dict(run.data.params) for seed, run in finished_runs(tracking_cfg, sweep_id, cell).items()}


def find_sweep(tracking_uri: str, experiment: str, scale: str, name: str = "table1", cells=()):
    """The newest FINISHED sweep run of ``name`` at ``scale`` that has a FINISHED run of every cell in ``cells``
    (None if there is none). A sweep made with some of its experiment's cells (Hydra's ``~`` deletes the
    others) then never shadows an older complete one for a reader that needs the cells it lacks."""
    client = MlflowClient(tracking_uri)
    found = client.get_experiment_by_name(experiment)
    if found is None:
        return None
    exp_id = found.experiment_id
    runs = client.search_runs(
        [exp_id],
        f"tags.role = 'sweep' and tags.scale = '{scale}' and tags.experiment = '{name}' "
        "and attributes.status = 'FINISHED'",
        order_by=["attributes.start_time DESC"],
        max_results=1 if not cells else 1000,
    )
    for run in runs:
        if not cells or set(cells) <= finished_cells(client, exp_id, run.data.tags["sweep_id"]):
            return run
    return None


def finished_cells(client, exp_id: str, sweep_id: str) -> set[str]:
    """The cells of a sweep with at least one FINISHED trial run."""
    trials = client.search_runs([exp_id], f"tags.sweep_id = '{sweep_id}' and attributes.status = 'FINISHED'",
                                max_results=10000)
    return {run.data.tags["cell"] for run in trials if "cell" in run.data.tags}


def load_trials(tracking_uri: str, experiment: str, sweep_id: str) -> pd.DataFrame:
    """One row per trial run of the sweep: tags, status, final metrics."""
    client = MlflowClient(tracking_uri)
    exp_id = client.get_experiment_by_name(experiment).experiment_id
    rows = []
    for run in client.search_runs([exp_id], f"tags.sweep_id = '{sweep_id}'", max_results=10000):
        tags = run.data.tags
        if tags.get("role") == "sweep":
            continue
        rows.append({
            "trial": run.info.run_name, "stage": tags.get("stage"), "cell": tags.get("cell"),
            "seed": int(tags.get("seed", 0)), "kind": tags.get("kind"), "status": run.info.status,
            # what the run started from (its lineage, ``reporting.toolkit.lineage_ids``)
            "init_cell": tags.get("init_cell"), "init_from": run.data.params.get("init_from"),
            "run_id": run.info.run_id, "steps": int(float(run.data.params.get("train.steps", "nan"))),
            "start": run.info.start_time, "end": run.info.end_time, **run.data.metrics,
        })
    return pd.DataFrame(rows).sort_values(["stage", "cell", "seed"]).reset_index(drop=True)


def attach_per_image(trials: pd.DataFrame, tracking_uri: str) -> pd.DataFrame:
    """Add a ``per_image`` column: each finished run's per-image validation losses
    (``eval/per_image_nats.json``, keyed "<subset>/<model>"), or None where the artifact is missing."""
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")  # one bar per run is noise here
    client = MlflowClient(tracking_uri)
    loaded = []
    with tempfile.TemporaryDirectory() as tmp:
        for row in trials.to_dict("records"):
            try:
                path = client.download_artifacts(row["run_id"], "eval/per_image_nats.json", tmp)
                loaded.append(json.loads(Path(path).read_text()))
            except Exception:  # noqa: BLE001 - an older run without the artifact: unpaired SEs for it
                loaded.append(None)
    return trials.assign(per_image=loaded)


def download_run(tracking_uri: str, run_id: str, cache_dir: str | Path) -> SavedRun:
    """Fetch a run's final weights and config into ``cache_dir/<run id>`` (once; later calls reuse them)."""
    import mlflow

    target = Path(cache_dir) / run_id
    model, config = target / "model", target / "config" / "config.yaml"
    if not (model.is_dir() and config.is_file()):
        target.mkdir(parents=True, exist_ok=True)
        for artifact in ("model", "config"):  # folders: they land under their own names
            mlflow.artifacts.download_artifacts(run_id=run_id, artifact_path=artifact, dst_path=str(target),
                                                tracking_uri=tracking_uri)
    return SavedRun(run_id, parse_run(OmegaConf.load(config)), model)


def runs_frame(trials: pd.DataFrame, cells: list[str]) -> pd.DataFrame:
    """The FINISHED trials of ``cells`` (rows of ``load_trials``), in cell and seed order."""
    kept = trials[trials.cell.isin(cells) & (trials.status == "FINISHED")]
    return kept.sort_values(["cell", "seed"]).reset_index(drop=True)


def metric_histories(tracking_uri: str, run_ids: list[str], keys: list[str]) -> pd.DataFrame:
    """Every logged value of ``keys`` for each run: columns run_id, key, step, value."""
    client = MlflowClient(tracking_uri)
    rows = [{"run_id": run_id, "key": key, "step": m.step, "value": m.value}
            for run_id in run_ids for key in keys for m in client.get_metric_history(run_id, key)]
    return pd.DataFrame(rows, columns=["run_id", "key", "step", "value"])
