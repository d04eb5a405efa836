"""Table 3 (App. D.1): ``python experiments/sweep_source_size.py [scale=cpu] [cluster.address=...] ...``.

Projects P_1/4 and P_1/8 from sources of different widths with different projector ranks r: nine cells, each
starting from a pretrained M_s of stage 1 of the newest finished Table 1 sweep of the same scale and keeping
tuning it for Table 1's stage-2 steps (Eq. 2). The two cells that are Table 1 cells already (P_1/4 and P_1/8
from M_1 at r = 8) reuse Table 1's runs when their configs match exactly; the others run as one stage of a
Ray Tune sweep (``experiments.sweep.run_sweep``), so retries, resuming and MLflow tracking are the same as
Table 1's. Without a finished Table 1 sweep of the scale it stops and says to run
``nox -s reproduce_table1 -- scale=<scale>`` first (Table 1's stage 2 is needed anyway, for the reused cells).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import NamedTuple

import hydra
from omegaconf import DictConfig, OmegaConf, open_dict

from experiments.config import (
    CONF_DIR,
    ConfigError,
    build_section,
    check_root_keys,
    flatten,
    to_plain,
)

# Importing the sweep module also turns telemetry off and keeps trials in the driver's working directory.
from experiments.sweep import Stage, TrialSpec, parse_stages, plan_stage, run_sweep, stage_run_uris

STAGE = "stage2"  # Table 3's one stage; its runs continue a source like Table 1's stage 2
# Config keys that make two runs the same experiment (paths, names and tags may differ).
IDENTITY_PREFIXES = ("kind", "width", "data.", "model.", "projector.", "train.")


class SourceSizeCell(NamedTuple):
    """One cell of Table 3: P_target projected from M_source with rank r."""

    name: str
    target: float  # width of the projected model P_target (of the width-1 model)
    source: float  # width of the source M_source
    scale: float  # core API scale = target / source
    rank: int
    source_cell: str  # stage-1 cell of the Table 1 sweep the runs start from
    reuse: str | None  # Table 1 stage-2 cell whose runs this cell reuses, if identical


class SourceSizePlan(NamedTuple):
    cells: list[SourceSizeCell]
    sources_experiment: str  # the sweep the sources (and reused cells) come from, e.g. table1
    sources_stage: str


def plan_cells(cfg: DictConfig) -> SourceSizePlan:
    """Table 3's cells as configured (pure; no MLflow, no Ray)."""
    experiment = to_plain(cfg.experiment)
    stage = parse_stages(cfg.experiment)[STAGE]
    reuse = experiment.get("reuse") or {}
    unknown = sorted(set(reuse) - set(stage.cells))
    if unknown:
        raise ConfigError(f"experiment.reuse names cells {unknown} that experiment.stages.{STAGE} does not have")
    cells = []
    for name, cell in stage.cells.items():
        if cell.kind != "projected" or cell.scales is None or len(cell.scales) != 1 or cell.init_from is None:
            raise ConfigError(f"Table 3 cell {name} must be a projected cell with one scale and an init_from cell")
        rank = int(cell.overrides.get("projector.rank", cfg.projector.rank))
        cells.append(SourceSizeCell(name, cell.width * cell.scales[0], cell.width, cell.scales[0], rank,
                                    cell.init_from, reuse.get(name)))
    sources = experiment["sources"]
    return SourceSizePlan(cells, str(sources["experiment"]), str(sources["stage"]))


def identity(config: Mapping) -> dict[str, str]:
    """The flattened config keys that decide whether two runs train the same thing."""
    return {k: v for k, v in flatten(dict(config)).items() if k.startswith(IDENTITY_PREFIXES)}


def reusable(spec: TrialSpec, params: Mapping[str, str]) -> list[str]:
    """Keys where a tracked run's params differ from what this trial would train ([] = identical)."""
    mine, theirs = identity(spec["config"]), identity(params)
    return sorted(k for k in set(mine) | set(theirs) if mine.get(k) != theirs.get(k))


class ReuseDecision(NamedTuple):
    reused: dict[str, str]  # Table 3 cell -> Table 1 cell whose runs it reuses
    retrained: dict[str, list[str]]  # Table 3 cell -> keys that differ (so it is trained here)


def decide_reuse(plan: SourceSizePlan, specs: list[TrialSpec], runs_of_cell) -> ReuseDecision:
    """A cell is reused when every seed has a FINISHED run of the named Table 1 cell with the same config.
    ``runs_of_cell(cell) -> {seed: params}`` reads the Table 1 sweep."""
    reused, retrained = {}, {}
    for cell in plan.cells:
        if cell.reuse is None:
            continue
        runs = runs_of_cell(cell.reuse)
        diffs = []
        for spec in (s for s in specs if s["cell"] == cell.name):
            params = runs.get(spec["seed"])
            diffs += [f"seed {spec['seed']} missing"] if params is None else reusable(spec, params)
        if diffs:
            retrained[cell.name] = diffs
        else:
            reused[cell.name] = cell.reuse
    return ReuseDecision(reused, retrained)


# ------------------------------------------------------------------------------------------------
# MLflow side


def find_source_sweep(tracking_cfg, scale: str, name: str):
    """The newest finished sweep of ``name`` at ``scale``, or a ConfigError saying how to make one."""
    from experiments.report import find_sweep

    found = find_sweep(tracking_cfg.uri, tracking_cfg.experiment, scale, name)
    if found is None:
        raise ConfigError(
            f"Table 3 starts from the stage-1 models of a finished {name} sweep at scale {scale}, and there is "
            f"none in {tracking_cfg.uri} (experiment {tracking_cfg.experiment}); run "
            f"`nox -s reproduce_{name} -- scale={scale}` first (with the same tracking/paths overrides)"
        )
    return found


def finished_runs_of_cell(tracking_cfg, sweep_id: str, cell: str) -> dict[int, dict[str, str]]:
    """seed -> params of the FINISHED runs of one cell of a sweep."""
    from mlflow.tracking import MlflowClient

    from experiments import tracking

    client = MlflowClient(tracking_cfg.uri)
    runs = client.search_runs(
        [tracking.experiment_id(tracking_cfg)],
        f"tags.sweep_id = '{sweep_id}' and tags.cell = '{cell}' and attributes.status = 'FINISHED'",
    )
    return {int(r.data.tags["seed"]): dict(r.data.params) for r in runs}


def run_source_size(cfg: DictConfig):
    """Find the sources, decide which cells Table 1 already ran, run the rest; returns the SweepResult."""
    from mlflow.tracking import MlflowClient

    from experiments.tracking import TrackingConfig

    check_root_keys(cfg)
    tracking_cfg = build_section(TrackingConfig, cfg.tracking, "tracking")
    plan = plan_cells(cfg)
    source_run = find_source_sweep(tracking_cfg, str(cfg.budget.name), plan.sources_experiment)
    source_id = source_run.data.tags["sweep_id"]
    sources = {}
    for cell in sorted({c.source_cell for c in plan.cells}):
        sources[cell] = stage_run_uris(tracking_cfg, source_id, cell)
        if not sources[cell]:
            raise ConfigError(f"sweep {source_id} has no finished run of cell {cell}; rerun it to finish")
    if cfg.data.mnist_root is None:  # as run_sweep does: the reuse check compares resolved configs
        from projectable_data import resolve_mnist_root

        OmegaConf.update(cfg, "data.mnist_root", str(resolve_mnist_root()))

    stage: Stage = parse_stages(cfg.experiment)[STAGE]
    specs = plan_stage(cfg, STAGE, stage, "planning", None, sources)
    decision = decide_reuse(plan, specs, lambda cell: finished_runs_of_cell(tracking_cfg, source_id, cell))
    for name, diffs in decision.retrained.items():
        print(f"{name}: not reusing {plan_cell(plan, name).reuse} of {source_id} ({', '.join(diffs[:5])}); training it")
    with open_dict(cfg):  # recorded in the sweep's config, and part of its id: new sources, new sweep
        cfg.experiment.source_sweep = source_id
        cfg.experiment.reused = dict(decision.reused)
        for name in decision.reused:
            del cfg.experiment.stages[STAGE].cells[name]
    print(f"sources: {plan.sources_experiment} sweep {source_id}; reused cells: {decision.reused or 'none'}")
    result = run_sweep(cfg, sources)
    client = MlflowClient(tracking_cfg.uri)
    client.set_tag(result.run_id, "source_sweep", source_id)
    client.set_tag(result.run_id, "reused", json.dumps(decision.reused))
    return result


def plan_cell(plan: SourceSizePlan, name: str) -> SourceSizeCell:
    return next(c for c in plan.cells if c.name == name)


@hydra.main(config_path=str(CONF_DIR), config_name="config", version_base="1.3")
def main(cfg: DictConfig) -> None:
    result = run_source_size(cfg)
    print(f"sweep {result.sweep_id} finished in {result.wall_time_s:.0f} s; MLflow run {result.run_id}")


if __name__ == "__main__":
    import sys

    if not any(arg.lstrip("+").startswith("experiment=") for arg in sys.argv[1:]):
        sys.argv.append("experiment=table3")  # this script's experiment unless another is named
    # Import by package name so that Ray pickles run_trial by reference, not as __main__.
    from experiments.sweep_source_size import main as _main

    _main()
