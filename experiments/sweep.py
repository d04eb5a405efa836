"""Run an experiment's grid as Ray Tune trials: ``python experiments/sweep.py experiment=table1 scale=cpu``.

An experiment is a list of stages; each stage is a grid of cells (what to train) times seeds, and a stage
may start its runs from the final weights of a cell of an earlier stage (Table 1: P_s, P~ and the control
start from stage 1's M_1), or of another experiment's newest finished sweep (``experiment.sources``: Table 3
starts from Table 1's stage-1 M_s and reuses the two Table 1 cells it shares when their configs match).
Every trial calls ``train`` in its own run directory and is one MLflow run, named after the trial, nested
under one MLflow run for the sweep that records its provenance.

* Local Ray on 127.0.0.1 by default; ``cluster.address`` joins an existing cluster (then the MLflow store
  must be a server every node reaches, and ``sweep.storage`` a path every node shares).
* A failed trial is retried from its last checkpoint (``sweep.max_failures``).
* Rerunning the same command resumes the same sweep (``Tuner.restore``); finished trials are not rerun.

Layers: planning in ``experiments.orchestration.plan`` (pure), Ray Tune in ``orchestration.ray_tune``, the
MLflow side in ``experiments.tracking.sweeps``.
"""

from __future__ import annotations

from experiments import telemetry

telemetry.apply()  # an entry point: before MLflow and Ray are imported

import dataclasses
import json
import signal
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import hydra
from omegaconf import DictConfig, open_dict

from experiments.config import (
    CONF_DIR,
    ConfigError,
    build_section,
    check_root_keys,
    resolve_precision,
    to_plain,
)
from experiments.orchestration.plan import (
    ClusterConfig,
    SweepConfig,
    active_stages,
    check_plan,
    decide_reuse,
    derive_sweep_id,
    parse_sources,
    plan_stage,
    seed_subset,
)
from experiments.orchestration.ray_tune import (
    StageInterrupted,
    check_cluster,
    check_placeable,
    run_stage,
    start_ray,
)
from experiments.reporting.evidence import EXTRAS
from experiments.run.commands import refusing_bad_input
from experiments.run.datasets import resolve_mnist_root
from experiments.run.locks import sweep_lock
from experiments.tracking.evidence import EvidenceWriter, evidence_path
from experiments.tracking.store import MlflowClient, TrackingConfig, check_reachable
from experiments.tracking.sweeps import find_sweep, finished_runs_of_cell, stage_run_uris, start_sweep_run


@dataclass
class SweepResult:
    sweep_id: str
    run_id: str  # the sweep's MLflow run
    trials: dict[str, list[str]] = dataclasses.field(default_factory=dict)  # stage -> trial names
    wall_time_s: float = 0.0


def resolve_sources(cfg: DictConfig, tracking_cfg: TrackingConfig) -> dict[str, dict[int, str]]:
    """Final weights (``runs:/<id>/model`` per seed) of every cell of the source sweep that a cell starts
    from; the cells reused from it are removed from ``cfg``'s stages and recorded in ``cfg.experiment``
    (``source_sweep``, ``reused``), so that new sources make a new sweep id."""
    sources = parse_sources(cfg.experiment)
    if sources is None:
        return {}
    scale = str(cfg.budget.name)
    stages = active_stages(cfg.experiment)
    subset = seed_subset(cfg.experiment)
    starts, earlier = [], set()  # the source sweep's cells that a cell starts from
    seeds: dict[str, set[int]] = {}  # with a seed subset: the seeds of each that this sweep's cells continue
    for stage in stages.values():
        for cell in stage.cells.values():
            start = cell.init_from or stage.init_from
            if start is not None and start not in earlier:
                starts += [start] if start not in starts else []
                if subset is not None:
                    seeds.setdefault(start, set()).update(s for s in cell.seed_list if s in subset)
        earlier |= set(stage.cells)
    references = [v for v in (cfg.experiment.get("reference") or {}).values() if v not in starts]
    needed = [*starts, *references]
    if subset is not None:
        # A declared partial sweep continues the same seeds of its source (seed i from seed i, never i mod n)
        # and is compared with the same seeds of the reference: the source sweep must hold them all.
        seeds.update({cell: set(subset) for cell in references})
    # A whole sweep starts only from a whole source sweep (every declared seed: seed i from seed i, or i mod n
    # where the source declares fewer); a partial one from a source sweep holding its seeds, partial or not.
    found = find_sweep(tracking_cfg.uri, tracking_cfg.experiment, scale, sources.experiment, cells=needed,
                       seeds=seeds, whole=subset is None)
    if found is None:
        which = f" and seeds {list(subset)}" if subset is not None else " of every declared seed (not a partial one)"
        raise ConfigError(
            f"experiment {cfg.experiment.name} starts from the {sources.stage} models of a finished "
            f"{sources.experiment} sweep at scale {scale} with finished runs of cells {needed}{which}, and there "
            f"is none in {tracking_cfg.uri} (experiment {tracking_cfg.experiment}); run "
            f"`nox -s reproduce_{sources.experiment} -- scale={scale}` first (with the same tracking/paths "
            "overrides and seed subset), or a sweep of only those cells (see the README's \"Some cells of an "
            "experiment\")"
        )
    source_id = found.data.tags["sweep_id"]
    uris: dict[str, dict[int, str]] = {start: stage_run_uris(tracking_cfg, source_id, start) for start in starts}
    planning: dict = dict(uris)  # this sweep's own earlier cells stand in as placeholders
    specs = []
    for name, stage in stages.items():
        specs += plan_stage(cfg, name, stage, "planning", None, planning)
        planning.update({cell: [f"runs:/planning-{cell}/model"] for cell in stage.cells})
    decision = decide_reuse(sources.reuse, specs, lambda cell: finished_runs_of_cell(tracking_cfg, source_id, cell))
    for name, diffs in decision.retrained.items():
        print(f"{name}: not reusing {sources.reuse[name]} of {source_id} ({', '.join(diffs[:5])}); training it")
    with open_dict(cfg):
        cfg.experiment.source_sweep = source_id
        cfg.experiment.reused = dict(decision.reused)
        for stage in cfg.experiment.stages.values():
            for name in decision.reused:
                stage.cells.pop(name, None)
    print(f"sources: {sources.experiment} sweep {source_id}; reused cells: {decision.reused or 'none'}")
    return uris


def run_sweep(cfg: DictConfig) -> SweepResult:
    """Plan and run every stage of ``cfg.experiment`` on Ray Tune; the sweep's MLflow run ends FINISHED
    only if every trial finished. With ``experiment.sources`` the stages may start from (and reuse) the
    cells of another experiment's newest finished sweep of the same scale (``resolve_sources``)."""
    check_root_keys(cfg)
    cfg, why = resolve_precision(cfg)  # on the driver: every trial trains in the precision the sweep id names
    print(f"precision: {cfg.train.precision} ({why})")
    sweep = build_section(SweepConfig, cfg.sweep, "sweep")
    cluster = build_section(ClusterConfig, cfg.cluster, "cluster")
    tracking_cfg = build_section(TrackingConfig, cfg.tracking, "tracking")
    check_cluster(cluster, tracking_cfg.uri)
    check_placeable(sweep, cluster)
    check_reachable(tracking_cfg.uri)
    check_plan(cfg.get("experiment"))  # no experiment selected, an empty grid: say so before anything starts
    resolve_mnist_root(cfg)  # before the reuse check, which compares resolved configs
    init_uris: dict = dict(resolve_sources(cfg, tracking_cfg))
    stages = active_stages(cfg.experiment)
    sweep_id = sweep.id or derive_sweep_id(cfg)
    # One driver per sweep: taken before the sweep's MLflow run is opened and before Ray starts, held until
    # that run has ended, so that a second command never resumes, trains or ends another's sweep.
    with sweep_lock(to_plain(cfg.paths)["runs"], sweep_id):
        return drive_sweep(cfg, sweep, cluster, tracking_cfg, sweep_id, stages, init_uris)


def drive_sweep(cfg: DictConfig, sweep: SweepConfig, cluster: ClusterConfig, tracking_cfg: TrackingConfig,
                sweep_id: str, stages: dict, init_uris: dict) -> SweepResult:
    """The stages of a sweep this process holds, under its MLflow run, which ends FINISHED, KILLED
    (interrupted: rerunning resumes it) or FAILED (a trial that failed for good, or a cluster out of reach)."""
    client = MlflowClient(tracking_cfg.uri)
    parent = start_sweep_run(tracking_cfg, sweep_id, cfg)
    if "source_sweep" in cfg.experiment:
        client.set_tag(parent, "source_sweep", cfg.experiment.source_sweep)
        client.set_tag(parent, "reused", json.dumps(to_plain(cfg.experiment.reused)))
    previous = client.get_run(parent).data.metrics.get("wall_time_s", 0.0)
    result = SweepResult(sweep_id, parent)
    evidence = evidence_writer(cfg, sweep, tracking_cfg, sweep_id)
    if evidence is not None:
        evidence.start()
    started_ray = False
    tick = time.time()
    status = "FAILED"

    def trial_done(trial: str) -> None:
        if evidence is not None:
            evidence.trial_done(trial)
        # the sweep's wall time so far, kept as each trial ends: a sitting killed outright (SIGKILL, a session's
        # end) still counts up to its last finished trial when the same command resumes the sweep
        client.log_metric(parent, "wall_time_s", previous + time.time() - tick)

    try:
        started_ray = start_ray(cluster)
        if cluster.address:  # a joined cluster's resources are known once joined
            import ray

            check_placeable(sweep, cluster, ray.cluster_resources())
        for index, (stage_name, stage) in enumerate(stages.items()):
            if stage.steps == 0:  # e.g. pretrain_fraction=0: its cells' followers start from scratch
                print(f"[{sweep_id}] {stage_name}: 0 steps, skipped")
                init_uris.update({cell: None for cell in stage.cells})
                continue
            specs = plan_stage(cfg, stage_name, stage, sweep_id, parent, init_uris)
            print(f"[{sweep_id}] {stage_name}: {len(specs)} trials, {stage.steps} steps each")
            if specs:
                run_stage(specs, sweep, f"{sweep_id}-{stage_name}", on_trial_done=trial_done)
            result.trials[stage_name] = [s["name"] for s in specs]
            for cell in stage.cells:
                init_uris[cell] = stage_run_uris(tracking_cfg, sweep_id, cell)
            client.log_metric(parent, "stages_done", index + 1)
        status = "FINISHED"
    except (StageInterrupted, KeyboardInterrupt):
        status = "KILLED"  # MLflow's status for a run stopped from outside; rerunning resumes it
        raise
    finally:
        result.wall_time_s = previous + time.time() - tick
        client.log_metric(parent, "wall_time_s", result.wall_time_s)
        client.set_terminated(parent, status=status)
        if started_ray:
            import ray

            ray.shutdown()
    if evidence is not None:  # after the sweep's run is FINISHED: its record says so
        print(f"[{sweep_id}] evidence: {evidence.finish()}")
    return result


def evidence_writer(cfg: DictConfig, sweep: SweepConfig, tracking_cfg: TrackingConfig,
                    sweep_id: str) -> EvidenceWriter | None:
    """The writer of the sweep's evidence file (``sweep.evidence``: the reports folder; None writes none),
    with what the experiment's reports compute from the final weights (``reporting.evidence.EXTRAS``)."""
    if sweep.evidence is None:
        return None
    scale = str(cfg.budget.name)
    return EvidenceWriter(tracking_cfg.uri, tracking_cfg.experiment, sweep_id,
                          evidence_path(sweep.evidence, scale, sweep_id), Path(cfg.paths.cache) / "reports",
                          EXTRAS.get(str(cfg.experiment.name), ()))


@hydra.main(config_path=str(CONF_DIR), config_name="config", version_base="1.3")
def main(cfg: DictConfig) -> None:
    # SIGTERM (a scheduler's or a session's end) as Ctrl-C: Tune catches SIGINT alone, saving its state
    # (raised in this thread, the main one, where Python runs handlers: a process-wide kill may be delivered to
    # another thread and wait there)
    signal.signal(signal.SIGTERM, lambda signum, frame: signal.raise_signal(signal.SIGINT))
    try:
        with refusing_bad_input():
            result = run_sweep(cfg)
    except StageInterrupted as interrupted:
        print(f"sweep interrupted: {interrupted}", file=sys.stderr)
        sys.exit(130)
    except KeyboardInterrupt:
        print("sweep interrupted before or between its stages; the same command resumes it", file=sys.stderr)
        sys.exit(130)
    print(f"sweep {result.sweep_id} finished in {result.wall_time_s:.0f} s; MLflow run {result.run_id}")


if __name__ == "__main__":
    # Import by package name so that Ray pickles run_trial by reference, not as __main__.
    from experiments.run.commands import run_hydra_command
    from experiments.sweep import main as _main

    run_hydra_command(_main)
