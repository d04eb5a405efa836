"""Run an experiment's grid as Ray Tune trials: ``python experiments/sweep.py experiment=table1 scale=cpu``.

An experiment is a list of stages; each stage is a grid of cells (what to train) times seeds, and a stage
may start its runs from the final weights of a cell of an earlier stage (Table 1: P_s, P~ and the control
start from stage 1's M_1). Every trial calls ``train`` in its own run directory and is one MLflow run,
named after the trial, nested under one MLflow run for the sweep that records its provenance.

* Local Ray on 127.0.0.1 by default; ``cluster.address`` joins an existing cluster (then the MLflow store
  must be a server every node reaches, and ``sweep.storage`` a path every node shares).
* A failed trial is retried from its last checkpoint (``sweep.max_failures``).
* Rerunning the same command resumes the same sweep (``Tuner.restore``); finished trials are not rerun.
"""

from __future__ import annotations

import copy
import dataclasses
import hashlib
import os
import shutil
import sys
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import hydra
from omegaconf import DictConfig, OmegaConf, open_dict

from experiments.config import (
    CONF_DIR,
    SWEEP_SECTIONS,
    TELEMETRY_OFF,
    ConfigError,
    build_section,
    check_root_keys,
    parse_run,
    project_root,
    to_container,
    to_plain,
)

for _key, _value in TELEMETRY_OFF.items():
    os.environ.setdefault(_key, _value)
# Trials write only to absolute paths; keep them in the driver's working directory.
os.environ.setdefault("RAY_CHDIR_TO_TRIAL_DIR", "0")


@dataclass(frozen=True)
class SweepConfig:
    storage: str  # Tune's experiment folders (trial checkpoints); shared by all nodes of a cluster
    id: str | None = None  # None: <experiment>-<scale>-<hash of the config>, so a rerun resumes
    resources: Mapping[str, float] = field(default_factory=lambda: {"cpu": 1, "gpu": 0})  # per trial
    max_failures: int = 2  # retries of a failed trial, each from its last checkpoint
    reuse_actors: bool = False  # reuse trial processes (saves imports for many short trials)
    verbose: int = 1
    fail_once: Mapping[str, int] = field(default_factory=dict)  # trial -> step: fail there once (tests retries)


@dataclass(frozen=True)
class ClusterConfig:
    address: str | None = None  # None: start a local Ray on 127.0.0.1; else join this cluster
    num_cpus: int | None = 2  # of a local Ray
    num_gpus: int | None = 0
    ship_code: bool = False  # upload experiments/ and the library packages to the workers


@dataclass(frozen=True)
class Cell:
    kind: str  # unconditional | conditional | projected
    width: float = 1.0
    seeds: int = 1  # runs of this cell, seeds 0..seeds-1
    scales: tuple[float, ...] | None = None  # projector.scales of a projected cell
    init_from: str | None = None  # cell of an earlier stage to start from (default: the stage's)
    overrides: Mapping[str, Any] = field(default_factory=dict)  # dotted config key -> value


@dataclass(frozen=True)
class Stage:
    steps: int
    cells: Mapping[str, Cell]
    init_from: str | None = None  # cell of an earlier stage whose final weights start every run


class TrialSpec(dict):
    """What one trial runs: {"name", "stage", "cell", "seed", "config"} (a plain dict for Ray)."""


# ------------------------------------------------------------------------------------------------
# Planning (pure functions of the config; tested without Ray)


def parse_stages(experiment: Any) -> dict[str, Stage]:
    experiment = to_plain(experiment)
    if not experiment or "stages" not in experiment:
        raise ConfigError("no experiment selected; pass experiment=<name>, e.g. experiment=table1")
    stages = {}
    for name, stage in experiment["stages"].items():
        stage = dict(stage)
        cells = {cell: build_section(Cell, spec, f"experiment.stages.{name}.cells.{cell}")
                 for cell, spec in stage.pop("cells").items()}
        stages[name] = build_section(Stage, {**stage, "cells": cells}, f"experiment.stages.{name}")
    return stages


def derive_sweep_id(cfg: DictConfig) -> str:
    """<experiment>-<scale>-<hash>: the same command (same config) names the same sweep."""
    plain = to_container(cfg)
    plain["sweep"] = {k: v for k, v in plain["sweep"].items() if k != "id"}
    digest = hashlib.sha256(OmegaConf.to_yaml(OmegaConf.create(plain)).encode()).hexdigest()[:8]
    return f"{cfg.experiment.name}-{cfg.budget.name}-{digest}"


def trial_name(cell: str, seed: int) -> str:
    return f"{cell}-seed{seed}"


def plan_stage(cfg: DictConfig, stage_name: str, stage: Stage, sweep_id: str, parent_run_id: str | None,
               init_uris: Mapping[str, list[str]]) -> list[TrialSpec]:
    """One TrialSpec per cell and seed, each with its full resolved run config."""
    specs = []
    for cell_name, cell in stage.cells.items():
        source = cell.init_from or stage.init_from
        for seed in range(cell.seeds):
            name = trial_name(cell_name, seed)
            run_cfg = copy.deepcopy(cfg)
            updates = {
                "kind": cell.kind,
                "width": cell.width,
                "seed": seed,
                "train.steps": stage.steps,
                "run_dir": f"{cfg.paths.runs}/{sweep_id}/{name}",
                "tracking.run_name": name,
            }
            if cell.scales is not None:
                updates["projector.scales"] = list(cell.scales)
            if source is not None:
                uris = init_uris.get(source)
                if not uris:
                    raise ConfigError(f"cell {cell_name} starts from cell {source}, which no earlier stage ran")
                updates["init_from"] = uris[seed % len(uris)]
            for key, value in {**updates, **cell.overrides}.items():
                try:  # struct mode: an unknown key fails here, on the driver
                    OmegaConf.update(run_cfg, key, value, merge=False)
                except Exception as err:
                    raise ConfigError(f"cell {cell_name}: cannot set {key}={value!r}: {err}") from err
            tags = {
                "sweep_id": sweep_id,
                "scale": str(cfg.budget.name),
                "experiment": str(cfg.experiment.name),
                "stage": stage_name,
                "cell": cell_name,
                "trial": name,
            }
            if source is not None:
                tags["init_cell"] = source
            if parent_run_id is not None:
                tags["mlflow.parentRunId"] = parent_run_id
            with open_dict(run_cfg):
                OmegaConf.update(run_cfg, "tracking.tags", tags, merge=True)
            plain = to_container(run_cfg)
            for section in SWEEP_SECTIONS:
                plain.pop(section, None)
            parse_run(plain)  # a bad cell fails before any trial starts
            specs.append(TrialSpec(name=name, stage=stage_name, cell=cell_name, seed=seed, config=plain))
    return specs


def check_cluster(cluster: ClusterConfig, tracking_uri: str) -> None:
    if cluster.address and tracking_uri.startswith("sqlite:"):
        raise ConfigError(
            f"cluster.address={cluster.address} runs trials on other machines, which cannot write to the sqlite "
            f"file {tracking_uri} on this one (and sqlite must not be shared over a network file system). Start "
            "a server every node reaches, e.g. `mlflow server --backend-store-uri sqlite:////abs/mlflow.db "
            "--artifacts-destination /abs/mlartifacts --host <ip> --port 5000 --workers 1`, and pass "
            "tracking.uri=http://<ip>:5000"
        )


def runtime_env(cluster: ClusterConfig) -> dict:
    """Environment of every trial: telemetry off, no chdir, and (on clusters) the project's code."""
    env_vars = {**TELEMETRY_OFF, "RAY_CHDIR_TO_TRIAL_DIR": "0"}
    if "PROJECTABLE_MNIST_ROOT" in os.environ:
        env_vars["PROJECTABLE_MNIST_ROOT"] = os.environ["PROJECTABLE_MNIST_ROOT"]
    env: dict[str, Any] = {"env_vars": env_vars}
    if cluster.ship_code:
        import projectable
        import projectable_data

        import experiments

        modules = [Path(m.__file__).parent for m in (experiments, projectable, projectable_data)]
        env["py_modules"] = [str(m) for m in modules]
    return env


# ------------------------------------------------------------------------------------------------
# Ray side


LOOPBACK = ("127.0.0.1", "localhost")


def keep_loopback() -> None:
    """Make Ray keep 127.0.0.1 as this node's address. Ray replaces a loopback address by the machine's
    outward one (ray-project/ray#59110) unless it runs in its single-machine mode, which this switch
    selects; that mode only refuses to start *worker nodes* (``ray start --address``), not drivers."""
    os.environ["RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"] = "0"
    if "ray" in sys.modules:  # read at import time; set it where Ray already looked
        import ray._private.ray_constants as ray_constants

        ray_constants.ENABLE_RAY_CLUSTER = False


def start_ray(cluster: ClusterConfig) -> bool:
    """Start (or join) Ray unless this process already did; True if it was started here."""
    if not cluster.address or cluster.address.split(":")[0] in LOOPBACK:
        keep_loopback()
    import ray

    if ray.is_initialized():
        return False
    if cluster.address:
        ray.init(address=cluster.address, runtime_env=runtime_env(cluster), log_to_driver=True)
    else:
        ray.init(num_cpus=cluster.num_cpus, num_gpus=cluster.num_gpus, include_dashboard=False,
                 _node_ip_address="127.0.0.1", runtime_env=runtime_env(cluster))
    return True


def _restore_tune_checkpoint(run_dir: Path) -> None:
    """On a retry, put Tune's last checkpoint into the run directory if it is newer than what is there
    (a retry may land on a node that never saw this run)."""
    import torch
    from ray import tune

    from experiments.checkpoint import STATE_FILE, checkpoint_dir, latest_checkpoint

    checkpoint = tune.get_checkpoint()
    if checkpoint is None:
        return
    with checkpoint.as_directory() as folder:
        step = torch.load(Path(folder) / STATE_FILE, map_location="cpu", weights_only=True)["step"]
        local = latest_checkpoint(run_dir)
        if local is None or int(local.name.split("_")[1]) < step:
            target = checkpoint_dir(run_dir, step)
            shutil.copytree(folder, target, dirs_exist_ok=True)


class InjectedFailure(RuntimeError):
    """Raised once at a configured step (``sweep.fail_once``) to exercise the retry path."""


def run_trial(config: dict, specs: Mapping[str, TrialSpec], fail_once: Mapping[str, int]) -> None:
    """Ray Tune trainable: one cell and seed (``config["trial"]`` names it), trained by ``train`` in its
    own run directory."""
    import ray
    from ray import tune

    from experiments.train import TrainHooks, train

    name = config["trial"]
    cfg = OmegaConf.create(specs[name]["config"])
    cfg.tracking.tags["ray_node"] = ray.get_runtime_context().get_node_id()
    marker = Path(cfg.run_dir) / ".failed_once"

    class ReportToTune(TrainHooks):
        def on_checkpoint(self, step, folder, metrics):
            tune.report({"step": step, **metrics}, checkpoint=tune.Checkpoint.from_directory(str(folder)))

        def on_step_end(self, step):
            if fail_once.get(name) == step and not marker.exists():
                marker.touch()
                raise InjectedFailure(f"{name}: failure injected after step {step} (sweep.fail_once)")

    _restore_tune_checkpoint(Path(cfg.run_dir))
    metrics = train(cfg, hooks=ReportToTune())
    tune.report({"step": int(cfg.train.steps), **metrics, "done": 1})


def run_stage(specs: list[TrialSpec], sweep: SweepConfig, experiment_name: str):
    """Run (or resume) one stage as a Tune experiment; raise if a trial failed for good."""
    from ray import tune

    # The param space holds only trial names (Tune's tables stay readable); the configs travel once
    # through the object store.
    trainable = tune.with_resources(
        tune.with_parameters(run_trial, specs={spec["name"]: spec for spec in specs}, fail_once=dict(sweep.fail_once)),
        dict(sweep.resources),
    )
    path = Path(sweep.storage) / experiment_name
    if tune.Tuner.can_restore(path):
        print(f"resuming {path}")
        tuner = tune.Tuner.restore(str(path), trainable=trainable, resume_errored=True)
    else:
        tuner = tune.Tuner(
            trainable,
            param_space={"trial": tune.grid_search([spec["name"] for spec in specs])},
            tune_config=tune.TuneConfig(
                trial_name_creator=lambda trial: trial.config["trial"],
                trial_dirname_creator=lambda trial: trial.config["trial"],
                reuse_actors=sweep.reuse_actors,
            ),
            run_config=tune.RunConfig(
                name=experiment_name,
                storage_path=str(Path(sweep.storage).resolve()),
                failure_config=tune.FailureConfig(max_failures=sweep.max_failures),
                checkpoint_config=tune.CheckpointConfig(num_to_keep=1),
                verbose=sweep.verbose,
            ),
        )
    results = tuner.fit()
    failed = [r.path for r in results if r.error is not None]
    if failed:
        raise RuntimeError(f"{len(failed)} trial(s) of {experiment_name} failed after retries: {failed}")
    return results


# ------------------------------------------------------------------------------------------------
# MLflow side: one parent run per sweep


def start_sweep_run(tracking_cfg, sweep_id: str, cfg: DictConfig) -> str:
    """Create, or reopen on a resumed sweep, the parent run that records the sweep's provenance."""
    from mlflow.tracking import MlflowClient

    from experiments import tracking

    exp_id = tracking.experiment_id(tracking_cfg)
    client = MlflowClient(tracking_cfg.uri)
    found = client.search_runs([exp_id], f"tags.sweep_id = '{sweep_id}' and tags.role = 'sweep'")
    if found:
        run_id = found[0].info.run_id
        client.update_run(run_id, status="RUNNING")
        return run_id
    tags = {
        "role": "sweep",
        "sweep_id": sweep_id,
        "scale": str(cfg.budget.name),
        "experiment": str(cfg.experiment.name),
        "commit": tracking.git_commit(project_root()),  # the code's repository, wherever paths.root points
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
    from experiments.config import flatten

    return {k: (v if len(v) <= 6000 else v[:5997] + "...") for k, v in flatten(cfg).items()}


def _param(key: str, value: str):
    from mlflow.entities import Param

    return Param(key, value)


def stage_run_uris(tracking_cfg, sweep_id: str, cell: str) -> list[str]:
    """runs:/<id>/model of every seed of a finished cell of this sweep, in seed order."""
    from mlflow.tracking import MlflowClient

    from experiments import tracking

    client = MlflowClient(tracking_cfg.uri)
    runs = client.search_runs(
        [tracking.experiment_id(tracking_cfg)],
        f"tags.sweep_id = '{sweep_id}' and tags.cell = '{cell}' and attributes.status = 'FINISHED'",
    )
    by_seed = {int(r.data.tags["seed"]): r.info.run_id for r in runs}
    return [f"runs:/{by_seed[s]}/model" for s in sorted(by_seed)]


# ------------------------------------------------------------------------------------------------


@dataclass
class SweepResult:
    sweep_id: str
    run_id: str  # the sweep's MLflow run
    trials: dict[str, list[str]] = dataclasses.field(default_factory=dict)  # stage -> trial names
    wall_time_s: float = 0.0


def run_sweep(cfg: DictConfig, sources: Mapping[str, list[str]] | None = None) -> SweepResult:
    """Plan and run every stage of ``cfg.experiment`` on Ray Tune; the sweep's MLflow run ends FINISHED
    only if every trial finished. ``sources`` maps cells of another sweep to their final weights
    (``runs:/<id>/model`` per seed), which a stage may start from like from an earlier stage's cell
    (Table 3 starts from Table 1's stage-1 M_s)."""
    from mlflow.tracking import MlflowClient

    from experiments.tracking import TrackingConfig

    check_root_keys(cfg)
    sweep = build_section(SweepConfig, cfg.sweep, "sweep")
    cluster = build_section(ClusterConfig, cfg.cluster, "cluster")
    tracking_cfg = build_section(TrackingConfig, cfg.tracking, "tracking")
    check_cluster(cluster, tracking_cfg.uri)
    stages = parse_stages(cfg.get("experiment"))
    if cfg.data.mnist_root is None:  # resolve here: trials may run where the repo's ../shared is unknown
        from projectable_data import resolve_mnist_root

        OmegaConf.update(cfg, "data.mnist_root", str(resolve_mnist_root()))
    sweep_id = sweep.id or derive_sweep_id(cfg)
    client = MlflowClient(tracking_cfg.uri)
    parent = start_sweep_run(tracking_cfg, sweep_id, cfg)
    previous = client.get_run(parent).data.metrics.get("wall_time_s", 0.0)
    result = SweepResult(sweep_id, parent)
    started_ray = start_ray(cluster)
    tick = time.time()
    status = "FAILED"
    try:
        init_uris: dict[str, list[str]] = dict(sources or {})
        for index, (stage_name, stage) in enumerate(stages.items()):
            specs = plan_stage(cfg, stage_name, stage, sweep_id, parent, init_uris)
            print(f"[{sweep_id}] {stage_name}: {len(specs)} trials, {stage.steps} steps each")
            run_stage(specs, sweep, f"{sweep_id}-{stage_name}")
            result.trials[stage_name] = [s["name"] for s in specs]
            for cell in stage.cells:
                init_uris[cell] = stage_run_uris(tracking_cfg, sweep_id, cell)
            client.log_metric(parent, "stages_done", index + 1)
        status = "FINISHED"
    finally:
        result.wall_time_s = previous + time.time() - tick
        client.log_metric(parent, "wall_time_s", result.wall_time_s)
        client.set_terminated(parent, status=status)
        if started_ray:
            import ray

            ray.shutdown()
    return result


@hydra.main(config_path=str(CONF_DIR), config_name="config", version_base="1.3")
def main(cfg: DictConfig) -> None:
    result = run_sweep(cfg)
    print(f"sweep {result.sweep_id} finished in {result.wall_time_s:.0f} s; MLflow run {result.run_id}")


if __name__ == "__main__":
    # Import by package name so that Ray pickles run_trial by reference, not as __main__.
    from experiments.sweep import main as _main

    _main()
