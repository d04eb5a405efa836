"""Sweeps in the MLflow store: the parent run that records a sweep's provenance, finding the newest finished
sweep of an experiment and scale, its trial runs as a table, their per-image losses and final weights."""

from __future__ import annotations

import json
import os
import sys
import tempfile
from collections.abc import Iterable, Mapping
from pathlib import Path

import pandas as pd
from omegaconf import DictConfig, OmegaConf

from experiments.config import ConfigError, code_root, config_differences, effective_config, parse_run
from experiments.run.evaluate import STAT_KEYS, val_key, width_key
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


def stage_run_uris(tracking_cfg, sweep_id: str, cell: str) -> dict[int, str]:
    """seed -> runs:/<id>/model of every finished seed of a cell of this sweep."""
    by_seed = finished_runs(tracking_cfg, sweep_id, cell)
    return {seed: f"runs:/{by_seed[seed].info.run_id}/model" for seed in sorted(by_seed)}


def finished_runs_of_cell(tracking_cfg, sweep_id: str, cell: str) -> dict[int, dict[str, str]]:
    """seed -> params of the FINISHED runs of one cell of a sweep."""
    return {seed: dict(run.data.params) for seed, run in finished_runs(tracking_cfg, sweep_id, cell).items()}


def is_partial(params: Mapping[str, str]) -> bool:
    """Whether a sweep's recorded params make it a partial sweep of some seeds (``experiment.seed_subset``)."""
    return params.get("experiment.seed_subset") not in (None, "None", "null")


def find_sweep(tracking_uri: str, experiment: str, scale: str, name: str = "table1", cells=(),
               seeds: Mapping[str, Iterable[int]] | None = None, sweep_ids: Iterable[str] = (),
               whole: bool = False):
    """The newest FINISHED sweep run of ``name`` at ``scale`` that has a FINISHED run of every cell in ``cells``
    (None if there is none). A sweep made with some of its experiment's cells (Hydra's ``~`` deletes the
    others) then never shadows an older complete one for a reader that needs the cells it lacks. ``seeds``
    (cell -> seeds) asks for FINISHED runs of those seeds too: a partial sweep of other seeds
    (``experiment.seed_subset``) is skipped; ``whole`` skips every partial sweep of seeds. ``sweep_ids``: only
    among these sweeps."""
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
        max_results=1 if not (cells or seeds or sweep_ids or whole) else 1000,
    )
    wanted = {(cell, int(seed)) for cell, cell_seeds in (seeds or {}).items() for seed in cell_seeds}
    for run in runs:
        if sweep_ids and run.data.tags["sweep_id"] not in set(sweep_ids):
            continue
        if whole and is_partial(run.data.params):
            continue
        have = finished_cell_seeds(client, exp_id, run.data.tags["sweep_id"])
        if set(cells) <= {cell for cell, _ in have} and wanted <= have:
            return run
    return None


def finished_cell_seeds(client, exp_id: str, sweep_id: str) -> set[tuple[str, int]]:
    """(cell, seed) of every FINISHED trial run of a sweep."""
    trials = client.search_runs([exp_id], f"tags.sweep_id = '{sweep_id}' and attributes.status = 'FINISHED'",
                                max_results=10000)
    return {(run.data.tags["cell"], int(run.data.tags.get("seed", 0))) for run in trials if "cell" in run.data.tags}


# ------------------------------------------------------------------------------------------------
# Runs logged before the metric schema (``experiments.run.evaluate``): their model names are mapped to the
# schema's width keys here, where stores are read, so that no report code knows the old names.
# 'model' is the run's own model (its ``width`` tag), 'source' a projected run's co-trained source (s1),
# 'P1_<k>' its P_1/k; the stats were 'nats', 'nats_se', 'bpd', 'bpd_se' (``STAT_KEYS``' keys).


def legacy_width(name: str, width: float) -> float | None:
    """The width a pre-schema model name stands for in a run of ``width``; None for a schema name."""
    if name == "model":
        return width
    if name == "source":
        return 1.0
    if name.startswith("P1_") and name[3:].isdigit():
        return 1 / int(name[3:])
    return None


def schema_metrics(metrics: Mapping[str, float], width: float) -> dict[str, float]:
    """A run's metrics with every pre-schema ``val/<subset>/<model>/<stat>`` renamed to its schema key
    (dropped where the run also logged the schema key)."""
    out, renamed = {}, {}
    for key, value in metrics.items():
        parts = key.split("/")
        old = len(parts) == 4 and parts[0] == "val" and parts[3] in STAT_KEYS
        model_width = legacy_width(parts[2], width) if old else None
        if model_width is None:
            out[key] = value
        else:
            renamed[val_key(parts[1], model_width, parts[3])] = value
    return {**renamed, **out}


def schema_per_image(losses: Mapping[str, list] | None, width: float) -> dict[str, list] | None:
    """Per-image losses keyed ``<subset>/<width key>``: pre-schema ``<subset>/<model>`` keys renamed."""
    if losses is None:
        return None
    out, renamed = {}, {}
    for key, values in losses.items():
        subset, _, name = key.rpartition("/")
        model_width = legacy_width(name, width)
        if model_width is None:
            out[key] = values
        else:
            renamed[f"{subset}/{width_key(model_width)}"] = values
    return {**renamed, **out}


def legacy_keys(key: str, width: float) -> list[str]:
    """The pre-schema names a run of ``width`` logged a schema key ``val/<subset>/<width key>/<stat>`` under."""
    parts = key.split("/")
    stats = {name: stat for stat, name in STAT_KEYS.items()}
    if len(parts) != 4 or parts[0] != "val" or parts[3] not in stats:
        return []
    names = ["model"] * (parts[2] == width_key(width)) + ["source"] * (parts[2] == "s1")
    names += [f"P1_{parts[2][3:]}"] * parts[2].startswith("s1_")
    return [f"val/{parts[1]}/{name}/{stats[parts[3]]}" for name in names]


def run_width(run) -> float:
    """A run's width (its ``width`` tag, else its param; 1 for a projected run's source)."""
    return float(run.data.tags.get("width") or run.data.params.get("width") or 1.0)


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
            "init_cell": tags.get("init_cell"), "init_from": tags.get("init_from") or run.data.params.get("init_from"),
            "run_id": run.info.run_id, "steps": int(float(run.data.params.get("train.steps", "nan"))),
            "start": run.info.start_time, "end": run.info.end_time,
            **schema_metrics(run.data.metrics, run_width(run)),
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
                width = run_width(client.get_run(row["run_id"]))
                loaded.append(schema_per_image(json.loads(Path(path).read_text()), width))
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
    """Every logged value of ``keys`` (schema keys) for each run: columns run_id, key, step, value; a run
    from before the schema is read under its old names (``legacy_keys``)."""
    client = MlflowClient(tracking_uri)
    rows = []
    for run_id in run_ids:
        width = None
        for key in keys:
            history = client.get_metric_history(run_id, key)
            if not history:
                width = run_width(client.get_run(run_id)) if width is None else width
                history = next((h for old in legacy_keys(key, width) if (h := client.get_metric_history(run_id, old))), [])
            rows += [{"run_id": run_id, "key": key, "step": m.step, "value": m.value} for m in history]
    return pd.DataFrame(rows, columns=["run_id", "key", "step", "value"])
