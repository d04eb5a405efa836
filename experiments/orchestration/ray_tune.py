"""The Ray Tune side of a sweep: a local Ray on 127.0.0.1 or an existing cluster, one trainable that calls
``train`` in the trial's run directory, and one Tune experiment per stage (retries from the last
checkpoint, ``Tuner.restore`` on a rerun)."""

from __future__ import annotations

import os
import shutil
import sys
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from omegaconf import OmegaConf

from experiments import telemetry
from experiments.config import ConfigError
from experiments.orchestration.plan import ClusterConfig, SweepConfig, TrialSpec


def check_cluster(cluster: ClusterConfig, tracking_uri: str) -> None:
    if cluster.address and tracking_uri.startswith("sqlite:"):
        raise ConfigError(
            f"cluster.address={cluster.address} runs trials on other machines, which cannot write to the sqlite "
            f"file {tracking_uri} on this one (and sqlite must not be shared over a network file system). Start "
            "a server every node reaches, e.g. `mlflow server --backend-store-uri sqlite:////abs/mlflow.db "
            "--artifacts-destination /abs/mlartifacts --host <ip> --port 5000 --workers 1`, and pass "
            "tracking.uri=http://<ip>:5000"
        )


def local_resources(cluster: ClusterConfig) -> dict[str, float]:
    """What a local Ray started with ``cluster`` offers (``num_cpus``/``num_gpus`` null: the machine's)."""
    import torch

    cpus = cluster.num_cpus if cluster.num_cpus is not None else os.cpu_count() or 1
    gpus = cluster.num_gpus if cluster.num_gpus is not None else torch.cuda.device_count()
    return {"CPU": float(cpus), "GPU": float(gpus)}


RAY_NAMES = {"cpu": "CPU", "gpu": "GPU"}  # Tune's resource names -> Ray's


def check_placeable(sweep: SweepConfig, cluster: ClusterConfig, available: Mapping[str, float] | None = None) -> None:
    """Refuse trial resources (``sweep.resources``) that no node can give, before Tune starts: Tune would wait
    for them forever. ``available``: a joined cluster's (``ray.cluster_resources()``); by default a local
    Ray's (checked before Ray starts; a joined cluster is checked once joined)."""
    if available is None:
        if cluster.address:
            return
        available = local_resources(cluster)
    where = f"the cluster at {cluster.address}" if cluster.address else "the local Ray (cluster.num_cpus, num_gpus)"
    for name, amount in dict(sweep.resources).items():
        have = float(available.get(RAY_NAMES.get(name, name), 0.0))
        if amount > have:
            raise ConfigError(
                f"sweep.resources={{{name}: {amount:g}}} per trial, but {where} has {have:g} {name}: no trial could "
                f"ever start; ask for at most {have:g} (sweep.resources.{name}={have:g}) or give Ray more"
                + (f" (cluster.num_{name}s=...)" if name in ("cpu", "gpu") and not cluster.address else "")
            )


def runtime_env(cluster: ClusterConfig) -> dict:
    """Environment of every trial: telemetry off, no chdir, and (on clusters) the project's code."""
    env_vars = dict(telemetry.ENVIRONMENT)
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
        check_answers(cluster.address)
        try:
            ray.init(address=cluster.address, runtime_env=runtime_env(cluster), log_to_driver=True)
        except (ConnectionError, RuntimeError, ValueError) as err:
            raise ConfigError(f"cluster.address={cluster.address}: cannot join the Ray cluster ({err}); start it "
                              "(`ray start --head` on its head node) or correct cluster.address") from err
    else:
        ray.init(num_cpus=cluster.num_cpus, num_gpus=cluster.num_gpus, include_dashboard=False,
                 _node_ip_address="127.0.0.1", runtime_env=runtime_env(cluster))
    return True


def check_answers(address: str, timeout: float = 10.0) -> None:
    """A cluster's ``host:port`` must accept a connection within ``timeout`` seconds (``ray.init`` retries
    for minutes); "auto" and addresses without a port are left to Ray."""
    import socket

    host, _, port = address.rpartition(":")
    if not host or not port.isdigit():
        return
    try:
        socket.create_connection((host, int(port)), timeout=timeout).close()
    except OSError as err:
        raise ConfigError(f"cluster.address={address}: nothing answered there within {timeout:.0f} s ({err}); "
                          "start the cluster (`ray start --head --port ...` on its head node) or correct "
                          "cluster.address") from err


def _restore_tune_checkpoint(run_dir: Path) -> None:
    """On a retry, put Tune's last checkpoint into the run directory if it is newer than what is there
    (a retry may land on a node that never saw this run). Called under the run directory's lock."""
    from ray import tune

    from experiments.run.checkpoint import DamagedCheckpoint, checkpoint_dir, latest_checkpoint, read_state

    checkpoint = tune.get_checkpoint()
    if checkpoint is None:
        return
    with checkpoint.as_directory() as folder:
        try:
            step = int(read_state(folder, named=False)["step"])  # Tune's copy has a name of its own
        except DamagedCheckpoint as err:
            print(f"not restoring Tune's checkpoint: {err}")
            return
        local = latest_checkpoint(run_dir)
        if local is None or int(local.name.split("_")[1]) < step:
            target = checkpoint_dir(run_dir, step)
            shutil.copytree(folder, target, dirs_exist_ok=True)


class InjectedFailure(RuntimeError):
    """Raised once at a configured step (``sweep.fail_once``) to exercise the retry path."""


def run_trial(config: dict, specs: Mapping[str, TrialSpec], fail_once: Mapping[str, int]) -> None:
    """Ray Tune trainable: one cell and seed (``config["trial"]["name"]`` names it), trained by ``train`` in its
    own run directory."""
    import ray
    from ray import tune

    from experiments.train import TrainHooks, train

    name = config["trial"]["name"]
    cfg = OmegaConf.create(specs[name]["config"])
    cfg.tracking.tags["ray_node"] = ray.get_runtime_context().get_node_id()
    marker = Path(cfg.run_dir) / ".failed_once"

    class ReportToTune(TrainHooks):
        def on_checkpoint(self, step, folder, metrics):
            tune.report({"step": step, **metrics}, checkpoint=tune.Checkpoint.from_directory(str(folder)))

        def on_claimed(self, run_dir):
            _restore_tune_checkpoint(run_dir)

        def on_step_end(self, step):
            if fail_once.get(name) == step and not marker.exists():
                marker.touch()
                raise InjectedFailure(f"{name}: failure injected after step {step} (sweep.fail_once)")

    metrics = train(cfg, hooks=ReportToTune())
    tune.report({"step": int(cfg.train.steps), **metrics, "done": 1})


def hyperparameters(spec: TrialSpec) -> dict[str, Any]:
    """What Tune's readers group a trial by (``ExperimentAnalysis(...).dataframe()``'s ``config/trial/*``):
    its name, stage and cell, and the hyperparameters that tell its runs apart."""
    cfg, projector = spec["config"], spec["config"]["projector"]
    scales = projector["scales"] if cfg["kind"] == "projected" else None
    return {"name": spec["name"], "stage": spec["stage"], "cell": spec["cell"], "kind": cfg["kind"],
            "width": float(cfg["width"]), "scales": ",".join(str(s) for s in scales) if scales else "",
            "rank": int(projector["rank"]) if scales else 0,
            "generator": projector.get("generator", "projection") if scales else "",
            "generator_rank": int(projector.get("generator_rank", 0)) if scales else 0, "seed": int(cfg["seed"]),
            "steps": int(cfg["train"]["steps"])}


def trial_callback(on_trial_done: Callable[[str], None]):
    """A Tune callback (on the driver) that calls ``on_trial_done(trial name)`` as each trial finishes; an
    error there is printed, not raised, so that the sweep goes on (its end catches up, ``EvidenceWriter.finish``)."""
    from ray import tune

    class TrialDone(tune.Callback):
        def on_trial_complete(self, iteration, trials, trial, **info):
            try:
                on_trial_done(trial.config["trial"]["name"])
            except Exception as err:  # noqa: BLE001 - the trial's results are safe in the store
                print(f"{trial.config['trial']['name']}: its end-of-trial records (evidence, the sweep's wall time) "
                      f"were not written now ({err!r}); the sweep's end writes them", file=sys.stderr)

    return TrialDone()


def run_stage(specs: list[TrialSpec], sweep: SweepConfig, experiment_name: str,
              on_trial_done: Callable[[str], None] | None = None):
    """Run (or resume) one stage as a Tune experiment, calling ``on_trial_done(trial name)`` on the driver as
    each trial finishes; raise if a trial failed for good."""
    from ray import tune

    # The param space holds each trial's name and hyperparameters (Tune's tables group by them); the full
    # configs travel once through the object store.
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
            param_space={"trial": tune.grid_search([hyperparameters(spec) for spec in specs])},
            tune_config=tune.TuneConfig(
                trial_name_creator=lambda trial: trial.config["trial"]["name"],
                trial_dirname_creator=lambda trial: trial.config["trial"]["name"],
                reuse_actors=sweep.reuse_actors,
            ),
            run_config=tune.RunConfig(
                name=experiment_name,
                storage_path=str(Path(sweep.storage).resolve()),
                failure_config=tune.FailureConfig(max_failures=sweep.max_failures),
                # Tune snapshots the experiment state whenever a trial has checkpointed num_to_keep times since
                # the last snapshot; with 1, every checkpoint forced one and short trials warned about it.
                checkpoint_config=tune.CheckpointConfig(num_to_keep=2),
                verbose=sweep.verbose,
                callbacks=[trial_callback(on_trial_done)] if on_trial_done is not None else None,
            ),
        )
    results = tuner.fit()
    failed = [r.path for r in results if r.error is not None]
    if failed:
        raise RuntimeError(f"{len(failed)} trial(s) of {experiment_name} failed after retries: {failed}")
    # Tune returns normally when it was interrupted (SIGINT; the sweep's entry point turns SIGTERM into one)
    if results.num_terminated < len(results):
        raise StageInterrupted(f"{experiment_name}: {results.num_terminated} of {len(results)} trials finished "
                               "before the sweep was interrupted; its state is saved, and the same command resumes it")
    return results


class StageInterrupted(RuntimeError):
    """A stage whose Tune experiment stopped before every trial finished (its state saved for a resume)."""


# ------------------------------------------------------------------------------------------------
