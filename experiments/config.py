"""Hydra config tree -> typed, validated configs.

The tree in ``experiments/conf`` mirrors the code: the keys of the ``data``, ``model`` and ``projector``
groups are exactly the constructor kwargs of ``SynthMNISTConfig``, ``GPTConfig`` and ``ProjectorConfig``
(big_vision style), the other groups are the dataclasses of the module that uses them. Everything is
resolved here, at the entry point; deep code receives the dataclass of its own section.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, ListConfig, OmegaConf, open_dict

# The generic pieces live in ``experiments.base`` (which ``run`` and ``tracking`` import); they are re-exported
# here, where the entry points, tests and notebooks have always found them.
from experiments.base.paths import code_root, project_root  # noqa: F401
from experiments.base.sections import ConfigError, build_section, check_type, to_plain  # noqa: F401

CONF_DIR = Path(__file__).resolve().parent / "conf"
KINDS = ("unconditional", "conditional", "projected")
# Sections of the root config that are not part of one run; the sweep reads them.
SWEEP_SECTIONS = ("sweep", "cluster", "experiment", "budget")


def _composition_exception() -> type:
    from hydra.errors import ConfigCompositionException

    return ConfigCompositionException


class UnknownKeyError(ConfigError, _composition_exception()):
    """An override of a key the tree lacks, naming the valid ones: a ConfigError, and still the Hydra
    composition error callers of ``compose`` catch."""


def _label_group(scheme: str, group: int, images: str) -> list[int]:
    from projectable_data.imagenet_tokens import STANDIN_CLASSES, label_group

    return label_group(str(scheme), int(group), STANDIN_CLASSES if images == "standin" else 1000)


def register_resolvers() -> None:
    """The resolvers the tree uses (idempotent; called by ``compose`` and ``parse_run``, not at import)."""
    if not OmegaConf.has_resolver("project_root"):
        OmegaConf.register_new_resolver("project_root", lambda: str(project_root()))
    if not OmegaConf.has_resolver("square"):
        OmegaConf.register_new_resolver("square", lambda x: int(x) * int(x))
    if not OmegaConf.has_resolver("steps_share"):  # ${steps_share:1000,0.6} -> 600: stage 1 of a budget split
        OmegaConf.register_new_resolver("steps_share", lambda total, fraction: int(round(int(total) * float(fraction))))
    if not OmegaConf.has_resolver("minus"):
        OmegaConf.register_new_resolver("minus", lambda a, b: int(a) - int(b))
    if not OmegaConf.has_resolver("label_group"):  # Table 4: ${label_group:half,1,${data.images}} -> C1's labels
        OmegaConf.register_new_resolver("label_group", _label_group)


def compose(overrides: list[str] | tuple[str, ...] = (), config_name: str = "config") -> DictConfig:
    """Compose the tree with Hydra's compose API (tests, notebooks, the sweep's per-trial configs)."""
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra
    from hydra.errors import ConfigCompositionException

    register_resolvers()
    GlobalHydra.instance().clear()  # compose may run after @hydra.main or another compose
    try:
        with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
            return hydra_compose(config_name=config_name, overrides=list(overrides))
    except ConfigCompositionException as err:
        better = unknown_key_error(overrides, config_name)
        if better is None:
            raise
        raise better from err


def unknown_key_error(overrides, config_name: str = "config") -> UnknownKeyError | None:
    """An error naming the valid keys for each ``section.key=value`` override whose key the tree lacks
    (Hydra's own message suggests ``+section.key=value``, which would add the misspelt key), or None when
    every key exists. Composes the tree with the overrides that name no nested key (groups such as
    ``scale=smoke``), so a group's keys count. Entry points that catch Hydra's composition error can call it
    with their overrides for the same message."""
    import difflib

    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra

    plain = [o for o in overrides if "=" in o and o[0] not in "+~"]
    nested = [o for o in plain if "." in o.split("=", 1)[0]]
    GlobalHydra.instance().clear()
    try:
        with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
            tree = hydra_compose(config_name=config_name, overrides=[o for o in overrides if o not in nested])
    except Exception:  # noqa: BLE001 - another problem than a key: Hydra's own message stands
        return None
    missing = object()
    problems = []
    for override in nested:
        key = override.split("=", 1)[0]
        if OmegaConf.select(tree, key, default=missing) is not missing:
            continue
        section, _, name = key.rpartition(".")
        node = OmegaConf.select(tree, section, default=None)
        if not OmegaConf.is_dict(node):
            top = ", ".join(sorted(str(k) for k in tree.keys()))
            problems.append(f"{key}: there is no section '{section}' (sections and keys: {top})")
            continue
        valid = sorted(str(k) for k in node.keys())
        close = difflib.get_close_matches(name, valid, n=1)
        hint = f"did you mean {section}.{close[0]}? " if close else ""
        problems.append(f"{key} is not a key of '{section}'; {hint}its keys are {', '.join(valid)}")
    return UnknownKeyError("; ".join(problems)) if problems else None


def to_container(cfg: DictConfig) -> dict:
    """Resolved plain dict (Ray's param_space and MLflow need plain values)."""
    return OmegaConf.to_container(cfg, resolve=True, throw_on_missing=True)


# ------------------------------------------------------------------------------------------------
# Typed sections


@dataclass(frozen=True)
class PathsConfig:
    root: str  # the repository
    runs: str  # run directories
    cache: str  # palettes and token pools


@dataclass(frozen=True)
class RunConfig:
    """Everything one call of ``train`` needs, typed. Built from the root config by ``parse_run``."""

    kind: str
    width: float
    seed: int
    threads: int
    device: str
    init_from: str | None
    run_dir: str
    data: Any  # projectable_data.SynthMNISTConfig
    model: Any  # projectable.GPTConfig (width 1, task_dim set per kind by the driver)
    projector: Any  # projectable.ProjectorConfig
    train: Any  # experiments.run.optim.TrainConfig
    eval: Any  # experiments.run.evaluate.EvalConfig
    paths: PathsConfig
    tracking: Any  # experiments.tracking.store.TrackingConfig


def check_root_keys(cfg: DictConfig) -> None:
    """Reject unknown top-level keys (e.g. a typo added with ``+kynd=...``)."""
    known = {f.name for f in dataclasses.fields(RunConfig)} | set(SWEEP_SECTIONS)
    unknown = sorted(set(cfg.keys()) - known)
    if unknown:
        raise ConfigError(
            f"unknown top-level key(s): {', '.join(unknown)}; valid keys: {', '.join(sorted(known))}"
        )


def parse_run(cfg: DictConfig | dict) -> RunConfig:
    """Validate the root config of one run and build every section's dataclass."""
    # imported here: importing this module stays light (no torch, no MLflow) for what only composes configs
    from projectable import GPTConfig, ProjectorConfig

    from experiments.run.datasets import data_config_class
    from experiments.run.evaluate import EvalConfig
    from experiments.run.optim import TrainConfig
    from experiments.tracking.store import TrackingConfig

    register_resolvers()
    if not isinstance(cfg, DictConfig):
        cfg = OmegaConf.create(cfg)
    check_root_keys(cfg)
    cfg, _ = resolve_precision(cfg)
    if cfg.kind not in KINDS:
        raise ConfigError(f"kind={cfg.kind!r} is not one of {KINDS}; set kind=unconditional|conditional|projected")
    width = float(cfg.width)
    if cfg.kind != "projected" and width not in (1.0, 0.5, 0.25, 0.125):
        raise ConfigError(f"width={width} must be one of 1, 0.5, 0.25, 0.125 (M_s widths of Sec. 2)")
    if cfg.device not in ("cpu", "cuda"):
        raise ConfigError(f"device={cfg.device!r} must be 'cpu' or 'cuda'")
    for key, hint in (("seed", int), ("threads", int), ("width", float)):
        check_type(cfg[key], hint, key)
    if not 0 <= cfg.seed < 2**32:  # numpy's generators take seeds below 2**32
        raise ConfigError(f"seed={cfg.seed} must be >= 0 and < 2**32 = {2**32}")
    if cfg.threads < 1:
        raise ConfigError(f"threads={cfg.threads} must be >= 1 (torch threads of this run)")
    if cfg.kind == "unconditional" and cfg.train.get("task_vector", "own") != "own":
        raise ConfigError(f"train.task_vector={cfg.train.task_vector!r} fixes the t a model reads, but kind=unconditional "
                          "reads none; set kind=projected or conditional, or leave train.task_vector=own")
    model = build_section(GPTConfig, cfg.model, "model")
    projector = build_section(ProjectorConfig, cfg.projector, "projector")
    init_from = None if cfg.init_from is None else str(cfg.init_from)
    if model.task_input != "first" and cfg.kind != "conditional":
        raise ConfigError(
            f"model.task_input={model.task_input!r} says where a conditional GPT (M~_s) reads t, but kind={cfg.kind} "
            "trains none; set kind=conditional, or leave model.task_input=first"
        )
    if cfg.kind == "projected":
        check_generator(model, projector, width, init_from)
    return RunConfig(
        kind=str(cfg.kind),
        width=width,
        seed=int(cfg.seed),
        threads=int(cfg.threads),
        device=str(cfg.device),
        init_from=init_from,
        run_dir=str(Path(cfg.run_dir if cfg.run_dir is not None else default_run_dir(cfg)).resolve()),
        data=build_section(data_config_class(cfg.data), cfg.data, "data"),
        model=model,
        projector=projector,
        train=build_section(TrainConfig, cfg.train, "train"),
        eval=EvalConfig.from_node(cfg.eval),
        paths=build_section(PathsConfig, cfg.paths, "paths"),
        tracking=build_section(TrackingConfig, cfg.tracking, "tracking"),
    )


def check_generator(model: Any, projector: Any, width: float, init_from: str | None) -> None:
    """A projected run's generator fits its source (width ``width`` of ``model``) at every scale: the scale
    divides the source's widths (and, for ``blocks``, its head size), ``generator_rank`` fits the small model.
    A source-free generator (low_rank, linear) started from saved weights starts from one M_s, so it has one
    scale."""
    from projectable.generators import generator_class

    try:
        source = model.scaled(width) if width != 1.0 else model
        for scale in projector.scales:
            generator_class(projector.generator).check(source, projector, scale)
    except ValueError as err:
        raise ConfigError(f"projector.generator={projector.generator!r} with width={width:g}: {err}") from err
    if not projector.reads_source and init_from is not None and len(projector.scales) != 1:
        raise ConfigError(
            f"init_from={init_from} starts the {projector.generator!r} generator's base weights from one M_s, but "
            f"projector.scales={list(projector.scales)} has {len(projector.scales)} scales; give one scale, or "
            "leave init_from unset"
        )


def default_run_dir(cfg: DictConfig) -> str:
    """``<paths.runs>/<kind>-w<width>-seed<seed>-<config key>``: readable, and keyed by everything that
    changes the run's results, so that another config never lands in the same directory."""
    return f"{cfg.paths.runs}/{cfg.kind}-w{float(cfg.width):g}-seed{cfg.seed}-{config_key(cfg)}"


def flatten(tree: Any, prefix: str = "") -> dict[str, str]:
    """Nested config -> {"a.b.c": "value"} (MLflow params)."""
    if isinstance(tree, (DictConfig, ListConfig)):
        tree = OmegaConf.to_container(tree, resolve=True)
    out: dict[str, str] = {}
    if isinstance(tree, dict):
        for key, value in tree.items():
            out.update(flatten(value, f"{prefix}{key}."))
    else:
        out[prefix.rstrip(".")] = str(tree)
    return out


# ------------------------------------------------------------------------------------------------
# "The same config": one definition for the run directory's key, the refusal to resume a directory made
# with another config, the sweep id, Table 3's reuse of Table 1 cells and the params logged to MLflow.

# What does not change a run's results: where its files go, how it is tracked and scheduled, how often it
# logs and checkpoints (a resumed run equals an uninterrupted one), and the MNIST folder (its files are
# checked against their MD5 sums wherever they are).
NOT_RESULTS = ("run_dir", "paths.", "tracking.", "sweep.", "cluster.", "data.mnist_root", "train.log_every",
               "train.checkpoint_every", "train.force_precision", "train.memory_check")


@functools.lru_cache(maxsize=1)
def _section_defaults() -> dict[str, Any]:
    """Flattened dataclass defaults of every section ("train.lr" -> 2e-3): a key at its default counts as
    absent, so a key that a newer version adds (at its default) leaves the key of older configs unchanged."""
    from projectable import GPTConfig, ProjectorConfig
    from projectable_data import SynthMNISTConfig
    from projectable_data.imagenet_tokens import ImageNetTokensConfig

    from experiments.run.evaluate import EvalConfig
    from experiments.run.optim import TrainConfig

    out: dict[str, Any] = {}
    for section, classes in (("data", (SynthMNISTConfig, ImageNetTokensConfig)), ("model", (GPTConfig,)),
                             ("projector", (ProjectorConfig,)), ("train", (TrainConfig,)), ("eval", (EvalConfig,))):
        for cls in classes:
            for f in dataclasses.fields(cls):
                if f.default is not dataclasses.MISSING and not isinstance(f.default, (dict, list)):
                    out.setdefault(f"{section}.{f.name}", f.default)
    return out


def _canonical(value: Any) -> str:
    """One spelling per value: 1 and 1.0, (1, 2) and [1, 2], None and null compare equal."""
    if isinstance(value, bool) or value is None:
        return str(value).lower() if value is not None else "null"
    if isinstance(value, (int, float)):
        return repr(float(value))
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(_canonical(v) for v in value) + "]"
    if isinstance(value, str):
        try:  # params read back from MLflow are strings
            return _canonical(json.loads(value.replace("'", '"').replace("None", "null").replace("True", "true")
                                         .replace("False", "false").replace("(", "[").replace(")", "]")))
        except (ValueError, TypeError):
            return value
    return str(value)


def effective_config(cfg: Any, sweep: bool = False) -> dict[str, str]:
    """The flattened keys of a run's config (with ``sweep``, of a sweep's: its experiment and budget too)
    that change its results (None values without a default left out). This is what "the same config" means
    everywhere: the params logged to MLflow, and through ``config_key`` and ``config_differences`` the run
    directory's key, the refusal to resume another config's directory, the sweep id and Table 3's reuse.
    Only the config's own keys count: params a run's store holds besides them (MLflow logs a logged model's
    ``model_config`` as run params, e.g. ``scale`` in runs made before it moved to an artifact) are left out."""
    flat = _without_legacy_keys(flatten(to_plain(cfg) if not isinstance(cfg, dict) else cfg))
    skipped = NOT_RESULTS + (() if sweep else tuple(f"{s}." for s in SWEEP_SECTIONS))
    roots = {f.name for f in dataclasses.fields(RunConfig)} | (set(SWEEP_SECTIONS) if sweep else set())
    defaults = _section_defaults()
    return {key: value for key, value in flat.items()
            if key.split(".", 1)[0] in roots and not key.startswith(skipped)
            and not (_canonical(value) == "null" and defaults.get(key) is None)}


def _without_legacy_keys(flat: dict[str, Any]) -> dict[str, Any]:
    """Params of runs made before ``train.precision`` replaced ``train.bf16`` read as today's keys."""
    if "train.bf16" in flat:
        flat = dict(flat)
        legacy = _canonical(flat.pop("train.bf16"))
        flat.setdefault("train.precision", "bf16" if legacy == "true" else "fp32")
    return flat


def resolve_precision(cfg: DictConfig) -> tuple[DictConfig, str]:
    """``cfg`` with ``train.precision=auto`` replaced by what it means on ``cfg.device`` (experiments.run
    .precision), and why. Drivers call it before any run key is made, so the resolved value names run
    directories and sweeps; bf16 asked for where it is emulated is refused here, before any work."""
    from experiments.run.precision import resolve

    if not isinstance(cfg, DictConfig):
        cfg = OmegaConf.create(cfg)
    requested = str(OmegaConf.select(cfg, "train.precision", default="fp32"))
    force = bool(OmegaConf.select(cfg, "train.force_precision", default=False))
    try:
        resolved = resolve(requested, str(cfg.device), force)
    except ValueError as err:
        raise ConfigError(str(err)) from err
    if resolved.precision != requested:
        cfg = cfg.copy()
        with open_dict(cfg):
            cfg.train.precision = resolved.precision
    return cfg, resolved.reason


def _identity(cfg: Any, sweep: bool) -> dict[str, str]:
    """``effective_config`` in canonical spelling without the keys at their default, so that a key a newer
    version adds (at its default) leaves older configs the same."""
    defaults = {k: _canonical(v) for k, v in _section_defaults().items()}
    canonical = {k: _canonical(v) for k, v in effective_config(cfg, sweep).items()}
    # A sweep's budget acts only through what it sets in the experiment's stages and the runs' sections, both
    # compared already; a budget key read by another experiment (the ImageNet track's encoder sizes) must
    # not make Table 1 another sweep.
    # How a report labels and groups the cells (``experiment.columns``, a cell's ``column``) trains nothing.
    presentation = lambda k: k.startswith("experiment.columns.") or (k.startswith("experiment.stages.")
                                                                      and k.endswith(".column"))
    return {k: v for k, v in canonical.items()
            if defaults.get(k, "null") != v and not k.startswith("budget.") and not presentation(k)}


def config_key(cfg: Any, sweep: bool = False) -> str:
    """Short hash of the config's identity: names run directories and sweeps."""
    text = json.dumps(_identity(cfg, sweep), sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()[:8]


def config_differences(requested: Any, recorded: Any, sweep: bool = False) -> list[str]:
    """``key: recorded -> requested`` for every key where the two configs' identities differ ([] = the same
    config). Either side may be a config or flattened params read back from MLflow."""
    mine, theirs = _identity(requested, sweep), _identity(recorded, sweep)
    shown_theirs, shown_mine = effective_config(recorded, sweep), effective_config(requested, sweep)
    defaults = _section_defaults()

    def shown(values: dict, key: str) -> str:
        if key in values:
            return str(values[key])
        return f"{defaults[key]} (default)" if key in defaults else "unset"

    return [f"{k}: {shown(shown_theirs, k)} -> {shown(shown_mine, k)}"
            for k in sorted(set(mine) | set(theirs)) if mine.get(k) != theirs.get(k)]
