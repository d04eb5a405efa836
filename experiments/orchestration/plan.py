"""Planning a sweep, as pure functions of the config (tested without Ray or MLflow).

An experiment is a list of stages; each stage is a grid of cells (what to train) times seeds, and a stage
may start its runs from the final weights of a cell of an earlier stage (Table 1: P_s, P~ and the control
start from stage 1's M_1) or of another sweep's (``experiment.sources``: Table 3 starts from Table 1's
stage-1 M_s and reuses the Table 1 cells it shares). ``plan_stage`` turns a stage into one ``TrialSpec``
per cell and seed, each with its full resolved run config; a cell naming a weight generator of App. B gets
its size knob there (``size_generator``: own parameters matched to the projection's, ``experiment.match``).
"""

from __future__ import annotations

import copy
import dataclasses
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, NamedTuple

from omegaconf import DictConfig, OmegaConf, open_dict

from experiments.base.cells import PLANNED_KEYS, ROLES, Cell  # noqa: F401 (the declaration, re-exported)
from experiments.config import (
    SWEEP_SECTIONS,
    ConfigError,
    build_section,
    check_type,
    config_differences,
    config_key,
    parse_run,
    to_container,
    to_plain,
)


@dataclass(frozen=True)
class SweepConfig:
    storage: str  # Tune's experiment folders (trial checkpoints); shared by all nodes of a cluster
    id: str | None = None  # None: <experiment>-<scale>-<hash of the config>, so a rerun resumes
    resources: Mapping[str, float] = field(default_factory=lambda: {"cpu": 1, "gpu": 0})  # per trial
    max_failures: int = 2  # retries of a failed trial, each from its last checkpoint
    reuse_actors: bool = False  # reuse trial processes (saves imports for many short trials)
    verbose: int = 1
    fail_once: Mapping[str, int] = field(default_factory=dict)  # trial -> step: fail there once (tests retries)
    evidence: str | None = None  # reports folder: <it>/<scale>/evidence/<sweep id>.parquet as trials finish; None: none

    def __post_init__(self):
        if self.id is not None:
            check_plain_name(self.id, "sweep.id")
        for kind, amount in dict(self.resources).items():
            if isinstance(amount, bool) or not isinstance(amount, (int, float)) or not amount >= 0:
                raise ValueError(f"resources.{kind}={amount!r} must be a number >= 0 (per trial)")
        if self.max_failures < 0:
            raise ValueError(f"max_failures={self.max_failures} must be >= 0 (retries of a failed trial)")


PLAIN_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,99}")


def check_plain_name(name: str, key: str) -> None:
    """Sweep ids and cell names become folder names (``<paths.runs>/<sweep id>/<cell>-seed<n>``), MLflow
    filter values and Tune experiment names: letters, digits, '_', '.', '-' only, no '..', at most 100."""
    if not isinstance(name, str) or not PLAIN_NAME.fullmatch(name) or ".." in name:
        raise ConfigError(
            f"{key}={name!r} is not a plain name: use letters, digits, '_', '.' and '-' (starting with a letter "
            "or digit, no '..', at most 100 characters); it names folders under paths.runs and MLflow tags"
        )


@dataclass(frozen=True)
class ClusterConfig:
    address: str | None = None  # None: start a local Ray on 127.0.0.1; else join this cluster
    num_cpus: int | None = 2  # of a local Ray
    num_gpus: int | None = 0
    ship_code: bool = False  # upload experiments/ and the library packages to the workers

    def __post_init__(self):
        if self.address == "???":  # cluster=remote leaves it to the command line
            raise ValueError("cluster.address is not set: cluster=remote joins a running Ray cluster; pass "
                             "cluster.address=<head ip>:6379 (or 'auto' on one of its nodes)")


@dataclass(frozen=True)
class Stage:
    steps: int
    cells: Mapping[str, Cell]
    init_from: str | None = None  # cell of an earlier stage whose final weights start every run

    def __post_init__(self):
        if self.steps < 0:
            raise ValueError(f"steps={self.steps} must be >= 0 (0 skips the stage)")


class TrialSpec(dict):
    """What one trial runs: {"name", "stage", "cell", "seed", "config"} (a plain dict for Ray)."""


# ------------------------------------------------------------------------------------------------
# Planning (pure functions of the config; tested without Ray)


def parse_stages(experiment: Any) -> dict[str, Stage]:
    """The experiment's stages, each cell's seeds resolved: its own, else the scale's override for this
    experiment's cell (``experiment.seed_overrides``, from ``budget.seed_overrides.<experiment>``), else for a
    continuation (a matched baseline, the control) the seeds of the cell it continues (seed i continues seed
    i), else the experiment's default count (``experiment.seeds``, the scale's ``budget.seeds``; 1 where the
    experiment declares none)."""
    experiment = to_plain(experiment)
    if not experiment or "stages" not in experiment:
        raise ConfigError("no experiment selected; pass experiment=<name>, e.g. experiment=table1")
    overrides = experiment.get("seed_overrides") or {}
    unknown = sorted(set(overrides) - {c for stage in experiment["stages"].values() for c in stage["cells"]})
    if unknown:
        raise ConfigError(f"budget.seed_overrides.{experiment.get('name')} names cells {unknown} that the experiment "
                          "does not declare; name its cells, or delete those keys")
    stages, resolved = {}, {}  # resolved: cell -> its seeds, for the continuations declared after it
    for name, stage in experiment["stages"].items():
        stage = dict(stage)
        cells = {}
        for cell, spec in stage.pop("cells").items():
            spec = dict(spec)
            if spec.get("seeds") is None:
                source = spec.get("init_from") or stage.get("init_from")
                continues = spec.get("role") in ("matched_baseline", "control") and source in resolved
                spec["seeds"] = overrides.get(cell, resolved[source] if continues else experiment.get("seeds", 1))
            cells[cell] = build_section(Cell, spec, f"experiment.stages.{name}.cells.{cell}")
            resolved[cell] = spec["seeds"]
        stages[name] = build_section(Stage, {**stage, "cells": cells}, f"experiment.stages.{name}")
    check_report_settings(experiment)
    return stages


def check_plan(experiment: Any) -> None:
    """What a sweep's grid must be before anything runs: at least one stage, every stage at least one cell,
    every cell a plain name used by one stage only (its runs are ``<sweep id>/<cell>-seed<n>``: two stages
    with the same cell would train into the same run directories, and their seeds would be counted twice),
    at least one seed per cell (``Cell``). Called on the grid as configured, before cells are reused."""
    stages = parse_stages(experiment)
    if not stages:
        raise ConfigError("experiment.stages is empty: nothing to run; pick an experiment with stages, e.g. "
                          "experiment=table1")
    seen: dict[str, str] = {}
    for name, stage in stages.items():
        check_plain_name(name, "experiment.stages.<name>")
        if not stage.cells:
            raise ConfigError(f"experiment.stages.{name} has no cells: nothing to run; keep one of its cells, or "
                              f"delete the stage with ~experiment.stages.{name}")
        for cell in stage.cells:
            check_plain_name(cell, f"experiment.stages.{name}.cells.<name>")
            if cell in seen:
                raise ConfigError(
                    f"cell {cell} is in experiment.stages.{seen[cell]} and experiment.stages.{name}: its runs "
                    f"({trial_name(cell, 0)}, ...) would be planned twice, into the same run directories; rename "
                    "one of them"
                )
            seen[cell] = name
    subset = seed_subset(experiment)
    if subset is not None:
        for name, stage in stages.items():
            for cell_name, cell in stage.cells.items():
                if not set(subset) & set(cell.seed_list):
                    raise ConfigError(
                        f"experiment.seed_subset={list(subset)} keeps no seed of cell {cell_name} (seeds "
                        f"{list(cell.seed_list)}): the partial sweep would not run it; give seeds it has, or delete the "
                        f"cell with ~experiment.stages.{name}.cells.{cell_name}")


def check_report_settings(experiment: dict) -> None:
    """The report's settings an experiment fixes before its runs, checked before any run rather than by the
    notebook after the sweep: ``margin`` (nats/token, >= 0), ``family_level`` (Holm-Bonferroni, in (0, 1))."""
    ranges = {"margin": (lambda x: x >= 0, "a non-negative margin in nats/token, e.g. 0.01"),
              "family_level": (lambda x: 0 < x < 1, "a family-wise level strictly between 0 and 1, e.g. 0.05")}
    for key, (fits, want) in ranges.items():
        if key in experiment:
            check_type(experiment[key], float, f"experiment.{key}")  # a finite number, not a bool or a string
            if not fits(experiment[key]):
                raise ConfigError(f"experiment.{key}={experiment[key]!r}: set {want}")


def derive_sweep_id(cfg: DictConfig) -> str:
    """<experiment>-<scale>-<config key>: the same command (same config) names the same sweep, and a config
    that trains anything differently names another (``experiments.config.config_key``)."""
    return f"{cfg.experiment.name}-{cfg.budget.name}-{config_key(cfg, sweep=True)}"


def cell_role(cell: Cell, stage: Stage | None = None) -> str:
    """What a cell's runs are, as a tag MLflow can filter by: 'projected' (a source co-trained with P_s),
    'control' (M_1 continued alone from an earlier cell), or 'baseline' (M_s, M~_s: from scratch, or
    continued alone as a step-matched baseline)."""
    if cell.kind == "projected":
        return "projected"
    if cell.role in ("matched_baseline", "control"):
        return "baseline" if cell.role == "matched_baseline" else "control"
    starts = cell.init_from or (stage.init_from if stage is not None else None)
    return "control" if starts is not None else "baseline"


BASELINES = ("matched", "stage1")


def active_stages(experiment: Any) -> dict[str, Stage]:
    """The stages that run: the cells of ``experiment.cell_subset`` where given (``cell_subset``), and with
    ``experiment.baselines=stage1`` without the step-matched baseline cells (the baselines are then stage 1's
    runs, which took fewer steps than the models they are compared with);
    a stage of 0 steps is kept (the sweep skips it, and cells starting from it start from scratch)."""
    stages = parse_stages(experiment)
    baselines = (to_plain(experiment) or {}).get("baselines", "matched")
    if baselines not in BASELINES:
        raise ConfigError(f"experiment.baselines={baselines!r} must be one of {', '.join(BASELINES)}")
    kept = cell_subset(experiment, stages)
    keep = lambda name, cell: (kept is None or name in kept) and (baselines == "matched"
                                                                 or cell.role != "matched_baseline")
    active = {name: Stage(stage.steps, {c: cell for c, cell in stage.cells.items() if keep(c, cell)}, stage.init_from)
              for name, stage in stages.items()}
    return {name: stage for name, stage in active.items() if stage.cells}  # a stage the subset empties is not run


def cell_subset(experiment: Any, stages: Mapping[str, Stage]) -> frozenset[str] | None:
    """``experiment.cell_subset``: the declared cells this sweep runs (a sweep of some cells, e.g. those
    another experiment starts from), or None for all. Every kept cell that starts from a cell of this
    experiment must keep that cell too. Part of the sweep's config, so such a sweep has its own id."""
    subset = (to_plain(experiment) or {}).get("cell_subset")
    if subset is None:
        return None
    check_type(subset, tuple[str, ...], "experiment.cell_subset")
    declared = {cell: stage.init_from if c.init_from is None else c.init_from
                for stage in stages.values() for cell, c in stage.cells.items()}
    unknown = sorted(set(subset) - set(declared))
    if not subset or unknown:
        raise ConfigError(f"experiment.cell_subset={list(subset)} names no cell or cells the experiment does not "
                          f"declare ({unknown}); choose among {', '.join(declared)}")
    orphans = sorted(f"{cell} (starts from {declared[cell]})" for cell in subset
                     if declared[cell] in declared and declared[cell] not in subset)
    if orphans:
        raise ConfigError(f"experiment.cell_subset={list(subset)} keeps {', '.join(orphans)} without the cell it "
                          "starts from; add that cell to the subset")
    return frozenset(subset)


def trial_name(cell: str, seed: int) -> str:
    return f"{cell}-seed{seed}"


# ------------------------------------------------------------------------------------------------
# Generator cells: the size knob that matches the projection's parameters (``experiment.match``)

MATCH_COUNTS = ("task", "total")  # the t-dependent parameters only, or every own parameter
MATCHED_KEYS = ("generator", "generator_rank", "rank", "small_parts", "mlp")  # what match_budget sets


class GeneratorBudget(NamedTuple):
    """The size chosen for a generator cell and the parameter counts behind it (each run's ``match/*`` tags)."""

    generator: str
    count: str  # what was matched: "task" or "total" (``experiment.match``)
    knob: str  # the ProjectorConfig field sized: "rank" (blocks) or "generator_rank" (low_rank, linear)
    size: int
    own_total: int  # every own parameter: t-dependent machinery, base weights, small parts (no source)
    own_task: int  # the t-dependent ones alone
    with_source: int  # own_total plus the co-trained source's parameters (own_total when it reads none)
    source: int  # parameters of the run's source M_1 (co-trained by the projection and blocks only)
    projection_rank: int  # the projection it was matched to: its rank r, and the same counts of it
    projection_total: int
    projection_task: int

    def tags(self) -> dict[str, str]:
        return {f"match/{key}": str(value) for key, value in self._asdict().items()}


class SizedGenerator(NamedTuple):
    config: Any  # the run's ProjectorConfig with the generator and its size set
    budget: GeneratorBudget


def size_generator(model: Any, projector: Any, width: float, generator: str, count: str) -> SizedGenerator:
    """Size ``generator`` by ``projectable.generators.match_budget`` so that its own parameters (``count``:
    all of them, or the t-dependent ones) match the projection configured by ``projector`` (its rank, MLP
    layout and small parts) on the source of width ``width`` of ``model``, at the projector's one scale."""
    import torch
    from projectable import GPT
    from projectable.generators import generator_params, match_budget

    if count not in MATCH_COUNTS:
        raise ConfigError(f"experiment.match={count!r} must be one of {', '.join(MATCH_COUNTS)}")
    (scale,) = projector.scales
    source = dataclasses.replace(model.scaled(width) if width != 1.0 else model, task_dim=0)
    match = match_budget(source, projector, scale, generator, count)
    projection = generator_params(source, dataclasses.replace(projector, generator="projection", generator_rank=0),
                                  scale)
    with torch.device("meta"):  # counted, never allocated (the paper's source is 76.7M)
        source_params = sum(p.numel() for p in GPT(source).parameters())
    read = source_params if match.config.reads_source else 0
    budget = GeneratorBudget(generator, count, match.knob, match.size, match.params.total, match.params.task,
                             match.params.total + read, source_params, projector.rank, projection.total,
                             projection.task)
    return SizedGenerator(match.config, budget)


def sized_cell(run_cfg: DictConfig, cell_name: str, cell: Cell, count: str) -> GeneratorBudget:
    """Set a generator cell's projector keys in ``run_cfg`` to the size ``size_generator`` picks."""
    from projectable import GPTConfig, ProjectorConfig

    model = build_section(GPTConfig, run_cfg.model, "model")
    projector = build_section(ProjectorConfig, run_cfg.projector, "projector")
    try:
        sized = size_generator(model, projector, float(run_cfg.width), cell.generator, count)
    except ValueError as err:
        raise ConfigError(f"cell {cell_name}: cannot size generator {cell.generator!r}: {err}") from err
    for key in MATCHED_KEYS:
        OmegaConf.update(run_cfg, f"projector.{key}", getattr(sized.config, key), merge=False)
    return sized.budget


def seed_subset(experiment: Any) -> tuple[int, ...] | None:
    """``experiment.seed_subset``: the seeds this sweep runs of every cell (a declared partial sweep, e.g. [2]
    after a sweep of seeds 0 and 1; reports merge the partial sweeps' evidence), or None for all of them. Part
    of the sweep's config, so each partial sweep has its own id."""
    subset = to_plain(experiment).get("seed_subset") if experiment is not None else None
    if subset is None:
        return None
    check_type(subset, tuple[int, ...], "experiment.seed_subset")
    if not subset or min(subset) < 0 or len(set(subset)) != len(subset):
        raise ConfigError(f"experiment.seed_subset={list(subset)} must list distinct seeds >= 0, e.g. [2]; "
                          "null runs every seed")
    return tuple(subset)


def source_uri(uris: Mapping[int, str] | Sequence[str], seed: int) -> str:
    """The run seed ``seed`` of a cell starts from: its source cell's run of the same seed (stage 2's seed i
    continues stage 1's seed i), else, where the source has fewer seeds, seed ``seed mod n`` of its n runs."""
    if isinstance(uris, Mapping):
        if seed in uris:
            return uris[seed]
        uris = [uris[s] for s in sorted(uris)]
    return uris[seed % len(uris)]


def plan_stage(cfg: DictConfig, stage_name: str, stage: Stage, sweep_id: str, parent_run_id: str | None,
               init_uris: Mapping[str, Mapping[int, str] | list[str]]) -> list[TrialSpec]:
    """One TrialSpec per cell and seed (the seeds of ``experiment.seed_subset`` where given), each with its full
    resolved run config."""
    specs = []
    planned: set[tuple[str, int]] = set()
    subset = seed_subset(cfg.get("experiment"))
    for cell_name, cell in stage.cells.items():
        source = cell.init_from or stage.init_from
        for seed in (s for s in cell.seed_list if subset is None or s in subset):
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
            if source is not None and not (source in init_uris and init_uris[source] is None):
                uris = init_uris.get(source)  # None: the source's stage has 0 steps, so start from scratch
                if not uris:
                    raise ConfigError(f"cell {cell_name} starts from cell {source}, which no earlier stage ran")
                updates["init_from"] = source_uri(uris, seed)
            for key, value in {**updates, **cell.overrides}.items():
                try:  # struct mode: an unknown key fails here, on the driver
                    OmegaConf.update(run_cfg, key, value, merge=False)
                except Exception as err:
                    raise ConfigError(f"cell {cell_name}: cannot set {key}={value!r}: {err}") from err
            budget = None
            if cell.generator is not None:  # after the overrides: a cell's projector.rank is its reference
                budget = sized_cell(run_cfg, cell_name, cell, str(cfg.experiment.get("match", "task")))
            tags = {
                "role": cell_role(cell, stage),
                "sweep_id": sweep_id,
                "scale": str(cfg.budget.name),
                "experiment": str(cfg.experiment.name),
                "stage": stage_name,
                "cell": cell_name,
                "trial": name,
            }
            if source is not None:
                tags["init_cell"] = source
            if budget is not None:
                tags.update(budget.tags())
            if parent_run_id is not None:
                tags["mlflow.parentRunId"] = parent_run_id
                tags["mlflow.source.name"] = "experiments/sweep.py"  # the trial's entry point, not Ray's worker
            with open_dict(run_cfg):
                OmegaConf.update(run_cfg, "tracking.tags", tags, merge=True)
            if (cell_name, int(run_cfg.seed)) in planned:  # Cell refuses seed overrides; checked here too
                raise ConfigError(f"cell {cell_name}: seed {run_cfg.seed} is planned twice; give each run its own seed")
            planned.add((cell_name, int(run_cfg.seed)))
            plain = to_container(run_cfg)
            for section in SWEEP_SECTIONS:
                plain.pop(section, None)
            parse_run(plain)  # a bad cell fails before any trial starts
            specs.append(TrialSpec(name=name, stage=stage_name, cell=cell_name, seed=seed, config=plain))
    return specs


# ------------------------------------------------------------------------------------------------
# Sources: cells of another sweep (``experiment.sources``)

@dataclass(frozen=True)
class Sources:
    """Cells of another experiment's newest finished sweep at the same scale that this one starts from
    (a cell's ``init_from`` naming one of its cells) or reuses (``reuse``: this cell -> that cell, taken
    instead of trained when every seed's config is identical)."""

    experiment: str  # e.g. table1
    stage: str  # its stage whose cells are started from, e.g. stage1
    reuse: Mapping[str, str] = field(default_factory=dict)


def parse_sources(experiment: Any) -> Sources | None:
    experiment = to_plain(experiment) or {}
    if not experiment.get("sources"):
        return None
    sources = build_section(Sources, {**experiment["sources"], "reuse": experiment.get("reuse") or {}},
                            "experiment.sources")
    cells = {cell for stage in parse_stages(experiment).values() for cell in stage.cells}
    unknown = sorted(set(sources.reuse) - cells)
    if unknown:
        raise ConfigError(f"experiment.reuse names cells {unknown} that no stage of experiment.stages has")
    return sources


class ReuseDecision(NamedTuple):
    reused: dict[str, str]  # this sweep's cell -> the source sweep's cell whose runs it reuses
    retrained: dict[str, list[str]]  # cell -> why it is trained here (keys that differ, seeds missing)


def decide_reuse(reuse: Mapping[str, str], specs: list[TrialSpec], runs_of_cell) -> ReuseDecision:
    """A cell is reused when every seed has a FINISHED run of the named source cell with the same config.
    ``runs_of_cell(cell) -> {seed: params}`` reads the source sweep."""
    reused, retrained = {}, {}
    for cell, source_cell in reuse.items():
        cell_specs = [s for s in specs if s["cell"] == cell]
        if not cell_specs:  # not planned (a matched baseline with experiment.baselines=stage1): nothing to reuse
            continue
        runs = runs_of_cell(source_cell)
        diffs = []
        for spec in cell_specs:
            params = runs.get(spec["seed"])
            diffs += [f"seed {spec['seed']} missing"] if params is None else config_differences(spec["config"], params)
        if diffs:
            retrained[cell] = diffs
        else:
            reused[cell] = source_cell
    return ReuseDecision(reused, retrained)
