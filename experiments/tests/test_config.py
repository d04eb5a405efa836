"""Every config composes and instantiates; bad configs fail with a message naming the key and the fix."""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Mapping
from pathlib import Path

import pytest
import torch
from hydra.errors import ConfigCompositionException, MissingConfigException
from omegaconf import OmegaConf
from projectable import GPTConfig

from experiments.config import CONF_DIR, ConfigError, compose, parse_run
from experiments.orchestration.plan import (
    ClusterConfig,
    SweepConfig,
    active_stages,
    derive_sweep_id,
    parse_stages,
    plan_stage,
)
from experiments.orchestration.ray_tune import check_cluster
from experiments.run.trainees import build_trainee
from experiments.tracking.store import TrackingConfig

GROUPS = ("data", "model", "projector", "train", "scale", "experiment", "sweep", "cluster")


def options(group: str) -> list[str]:
    return sorted(p.stem for p in (CONF_DIR / group).glob("*.yaml"))


def own_values(path: Path, section: str | None = None) -> dict:
    """The plain values a YAML file of the tree sets itself (of ``section`` only, when given), read with
    OmegaConf alone: no defaults list, no interpolations, no ``???``."""
    node = OmegaConf.load(path)
    if section is not None:
        node = node.get(section) or {}
    values = OmegaConf.to_container(node, resolve=False) if not isinstance(node, dict) else node
    return {key: value for key, value in values.items() if key != "defaults" and not
            (isinstance(value, str) and (value.startswith("${") or value == "???"))}


def plain(value):
    """A dataclass field's value as YAML spells it (tuples as lists, mappings as dicts)."""
    if isinstance(value, tuple):
        return [plain(v) for v in value]
    if isinstance(value, Mapping):
        return {k: plain(v) for k, v in value.items()}
    return value


def gpt_params(config: GPTConfig) -> int:
    """Parameters of a GPT with ``config``, counted from its layout (GPT-2's, untied head): token and
    position embeddings, the start vector or task projection, per layer qkv, attention out, MLP up and down
    with biases and two layer norms, the final norm and the head."""
    V, T, C, L, M = config.vocab_size, config.block_size, config.n_embd, config.n_layer, config.mlp_ratio * config.n_embd
    start = config.task_dim * C + C if config.task_dim else C
    layer = (3 * C * C + 3 * C) + (C * C + C) + (M * C + M) + (C * M + C) + 4 * C
    return V * C + T * C + start + L * layer + 2 * C + V * C


def test_every_group_has_options_and_each_scale_names_itself():
    for group in GROUPS:
        assert options(group), group
    for scale in options("scale"):
        cfg = compose([f"scale={scale}"])
        assert cfg.budget.name == scale  # reports/<scale> and the runs' tags follow it


@pytest.mark.parametrize("scale", options("scale"))
@pytest.mark.parametrize("kind", ["unconditional", "conditional", "projected"])
def test_every_scale_and_kind_builds_its_models_on_the_meta_device(scale, kind):
    run = parse_run(compose([f"scale={scale}", f"kind={kind}", "width=1.0"]))
    with torch.device("meta"):
        trainee = build_trainee(run.kind, run.width, run.model, run.projector, 18, device="meta")
    n = sum(p.numel() for p in trainee.module.parameters())
    model = dataclasses.replace(run.model, task_dim=18 if kind == "conditional" else 0)
    expected = gpt_params(model)
    if kind == "projected":  # the source M_1 and every P_s's own parameters
        expected += sum(trainee.model.num_projector_params(s) for s in run.projector.scales)
        assert expected > gpt_params(model)
    assert n == expected
    if scale == "paper" and kind == "unconditional":
        assert 76e6 < n < 78e6  # the paper's M_1: 76.7M trainable parameters (Sec. 2)


def expected_values(group: str, option: str, scale: str) -> dict:
    """What ``group=option`` at ``scale`` should hold, read from the YAML files rather than through the
    composition under test: the option's own values, and over them the scale's values for that group."""
    return {**own_values(CONF_DIR / group / f"{option}.yaml"), **own_values(CONF_DIR / "scale" / f"{scale}.yaml", group)}


@pytest.mark.parametrize("group", ["data", "model", "projector", "train"])
def test_every_option_of_the_run_groups_instantiates_with_its_values(group):
    for option in options(group):
        # scale files pick their own model; the option must still build (at the default scale, cpu)
        scale = "cpu" if group == "model" else "smoke"
        section = getattr(parse_run(compose([f"scale={scale}", f"{group}={option}"])), group)
        fields = {f.name for f in dataclasses.fields(section)}
        # the scale's keys of another data option (SynthMNIST's resolution for the ImageNet track) aside
        expected = {key: value for key, value in expected_values(group, option, scale).items() if key in fields}
        assert expected, option
        assert {key: plain(getattr(section, key)) for key in expected} == expected, option


@pytest.mark.parametrize("option", options("sweep"))
def test_sweep_and_cluster_options_instantiate_with_their_values(option):
    cfg = compose([f"sweep={option}"])  # at the default scale, cpu
    sweep = SweepConfig(**OmegaConf.to_container(cfg.sweep, resolve=True))
    expected = expected_values("sweep", option, "cpu")
    assert expected and {key: plain(getattr(sweep, key)) for key in expected} == expected
    assert sweep.storage == f"{cfg.paths.root}/ray_results"  # the one interpolated key, resolved
    for cluster in options("cluster"):
        node = compose([f"cluster={cluster}", "cluster.address=127.0.0.1:6379"]).cluster
        built = ClusterConfig(**OmegaConf.to_container(node, resolve=True))
        expected = {**expected_values("cluster", cluster, "cpu"), "address": "127.0.0.1:6379"}
        assert {key: plain(getattr(built, key)) for key in expected} == expected, cluster


@pytest.mark.parametrize("scale", options("scale"))
def test_table1_plans_both_stages_at_every_scale(scale):
    cfg = compose(["experiment=table1", f"scale={scale}"])
    stages = parse_stages(cfg.experiment)
    assert list(stages) == ["stage1", "stage2"]
    sweep_id = derive_sweep_id(cfg)
    assert sweep_id.startswith(f"table1-{scale}-")
    stage1 = plan_stage(cfg, "stage1", stages["stage1"], sweep_id, None, {})
    cells1 = {spec["cell"] for spec in stage1}
    uris = {cell: [f"runs:/{cell}-seed{i}/model" for i in range(2)] for cell in cells1}
    stage2 = plan_stage(cfg, "stage2", stages["stage2"], sweep_id, "parent", uris)
    assert cells1 == {"M1", "M2", "M4", "M8", "Mc1", "Mc2", "Mc4", "Mc8"}
    matched = {"M2m", "M4m", "M8m", "Mc1m", "Mc2m", "Mc4m", "Mc8m"}  # experiment.baselines=matched (default)
    assert {spec["cell"] for spec in stage2} == {"P2", "P4", "P8", "Pall", "control"} | matched
    for spec in stage2:
        starts = spec["cell"].removesuffix("m") if spec["cell"] in matched else "M1"
        assert spec["config"]["init_from"] == f"runs:/{starts}-seed{spec['seed'] % 2}/model"  # seed i from seed i
        role = spec["config"]["tracking"]["tags"]["role"]
        assert role == {"control": "control"}.get(spec["cell"], "baseline" if spec["cell"] in matched else "projected")
        assert spec["config"]["train"]["steps"] == cfg.budget.stage2_steps
        assert spec["config"]["tracking"]["tags"]["mlflow.parentRunId"] == "parent"
    pall = next(s for s in stage2 if s["cell"] == "Pall")["config"]
    assert pall["kind"] == "projected" and pall["projector"]["scales"] == [0.5, 0.25, 0.125]
    control = next(s for s in stage2 if s["cell"] == "control")["config"]
    assert control["kind"] == "unconditional" and control["width"] == 1.0
    for spec in stage1 + stage2:  # each trial's config is a valid run config without the sweep sections
        parse_run(spec["config"])
    names = [spec["name"] for spec in stage1 + stage2]
    assert len(names) == len(set(names))
    stage1_only = active_stages(compose(["experiment=table1", f"scale={scale}", "experiment.baselines=stage1"]).experiment)
    assert set(stage1_only["stage2"].cells) == {"P2", "P4", "P8", "Pall", "control"}


def test_a_stage_of_zero_steps_is_skipped_and_its_followers_start_from_scratch():
    cfg = compose(["experiment=table1", "scale=smoke", "budget.pretrain_fraction=0"])
    stages = active_stages(cfg.experiment)
    assert stages["stage1"].steps == 0 and stages["stage2"].steps == cfg.budget.total_steps == 30
    skipped = {cell: None for cell in stages["stage1"].cells}  # what the sweep records for a skipped stage
    for spec in plan_stage(cfg, "stage2", stages["stage2"], "sweep", None, skipped):
        assert spec["config"]["init_from"] is None and spec["config"]["train"]["steps"] == 30


def test_same_config_same_sweep_id_and_a_change_makes_a_new_one():
    a = derive_sweep_id(compose(["experiment=table1", "scale=smoke"]))
    assert a == derive_sweep_id(compose(["experiment=table1", "scale=smoke", "sweep.id=null"]))
    assert a != derive_sweep_id(compose(["experiment=table1", "scale=smoke", "train.lr=0.01"]))


@pytest.mark.parametrize("budget", [[], ["budget.total_steps=2000", "budget.pretrain_fraction=0.6"]])
def test_table4_keeps_the_steps_and_seeds_of_its_committed_run_whatever_the_budget(budget):
    cfg = compose(["experiment=table4", "scale=cpu", *budget])
    stages = active_stages(cfg.experiment)
    assert [stage.steps for stage in stages.values()] == [400, 400]  # budget.table4_steps
    assert {cell.seeds for stage in stages.values() for cell in stage.cells.values()} == {1}
    table1 = active_stages(compose(["experiment=table1", "scale=cpu", *budget]).experiment)
    assert table1["stage2"].steps == (750 if not budget else 800)  # Table 1's budget does move


def test_a_sweep_of_some_cells_plans_only_them_under_its_own_id():
    """``experiment.cell_subset`` keeps the cells it names (README, "Some cells of an experiment"), as Hydra's
    ``~`` deleting every other cell would; the subset changes the id."""
    kept = {"stage1": {"M1", "Mc8"}, "stage2": {"P8", "Mc8m"}}
    full = compose(["experiment=table1", "scale=smoke"])
    cfg = compose(["experiment=table1", "scale=smoke", "experiment.cell_subset=[M1,Mc8,P8,Mc8m]"])
    stages = active_stages(cfg.experiment)
    assert {name: set(stage.cells) for name, stage in stages.items()} == kept
    dropped = [f"~experiment.stages.{name}.cells.{cell}" for name, stage in active_stages(full.experiment).items()
               for cell in stage.cells if cell not in kept[name]]
    deleted = active_stages(compose(["experiment=table1", "scale=smoke", *dropped]).experiment)
    assert {name: set(stage.cells) for name, stage in deleted.items()} == kept
    assert len({derive_sweep_id(cfg), derive_sweep_id(full)}) == 2
    uris = {"M1": ["runs:/m1/model"], "Mc8": ["runs:/mc8/model"]}
    planned = {spec["cell"]: spec["config"]["init_from"] for spec in plan_stage(cfg, "stage2", stages["stage2"], "x",
                                                                                 None, uris)}
    assert planned == {"P8": "runs:/m1/model", "Mc8m": "runs:/mc8/model"}
    only_stage1 = active_stages(compose(["experiment=table1", "scale=smoke", "experiment.cell_subset=[M4]"]).experiment)
    assert {name: set(stage.cells) for name, stage in only_stage1.items()} == {"stage1": {"M4"}}


def test_a_conditional_baseline_reading_t_at_every_position_plans_as_a_cell_like_m_tilde():
    """model.task_input=every as a cell's override: stage 1 from scratch, then the step-matched continuation
    from its own stage-1 runs, as Table 1's Mc8 and Mc8m."""
    every = "{model.task_input: every}"
    cfg = compose(["experiment=table1", "scale=smoke",
                   f"+experiment.stages.stage1.cells.Mce8={{kind: conditional, width: 0.125, seeds: 1, overrides: {every}}}",
                   "+experiment.stages.stage2.cells.Mce8m={kind: conditional, width: 0.125, init_from: Mce8, seeds: 1, "
                   f"role: matched_baseline, overrides: {every}}}"])
    stages = active_stages(cfg.experiment)
    stage1 = {spec["cell"]: spec for spec in plan_stage(cfg, "stage1", stages["stage1"], "x", None, {})}
    uris = {cell: [f"runs:/{cell}/model"] for cell in stage1}
    stage2 = {spec["cell"]: spec for spec in plan_stage(cfg, "stage2", stages["stage2"], "x", None, uris)}
    for spec, reference in ((stage1["Mce8"], stage1["Mc8"]), (stage2["Mce8m"], stage2["Mc8m"])):
        run = parse_run(spec["config"])
        assert run.model.task_input == "every" and parse_run(reference["config"]).model.task_input == "first"
        differs = {k for k in spec["config"] if spec["config"][k] != reference["config"][k]}
        assert differs <= {"model", "run_dir", "tracking", "init_from"}  # the same kind, width, steps, schedule
        assert spec["config"]["train"] == reference["config"]["train"]
        model, reference_model = spec["config"]["model"], reference["config"]["model"]
        assert {k for k in model if model[k] != reference_model[k]} == {"task_input"}
    assert stage2["Mce8m"]["config"]["init_from"] == "runs:/Mce8/model"


# -- bad configs ---------------------------------------------------------------------------------------


def test_unknown_group_option_names_the_valid_choices():
    with pytest.raises(MissingConfigException) as err:
        compose(["scale=tiny"])
    message = str(err.value)
    assert "scale/tiny" in message and all(s in message for s in ("cpu", "gpu", "paper", "smoke"))


def test_unknown_key_override_is_refused_naming_the_valid_keys():
    with pytest.raises(ConfigCompositionException) as err:  # still Hydra's error type, and a ConfigError
        compose(["model.n_layr=3"])
    message = str(err.value)
    assert isinstance(err.value, ConfigError) and "+model" not in message  # not Hydra's advice to add the key
    assert "model.n_layr is not a key of 'model'; did you mean model.n_layer?" in message and "n_embd" in message
    with pytest.raises(ConfigError, match="train.stepz is not a key of 'train'; did you mean train.steps"):
        compose(["scale=smoke", "train.stepz=3"])  # a group's keys count
    with pytest.raises(ConfigError, match="there is no section 'trian'"):
        compose(["trian.steps=3"])


def test_added_unknown_key_names_the_valid_keys():
    with pytest.raises(ConfigError) as err:
        parse_run(compose(["+model.n_layr=3"]))
    message = str(err.value)
    assert "model.n_layr" in message and "n_layer" in message and "GPTConfig" in message


def test_sweep_without_experiment_says_how_to_pick_one():
    with pytest.raises(ConfigError, match="experiment=table1"):
        parse_stages(compose([]).get("experiment"))


def test_bad_cell_override_fails_on_the_driver():
    cfg = compose(["experiment=table1", "scale=smoke", "+experiment.stages.stage1.cells.M1.overrides={model.n_layr: 3}"])
    stages = parse_stages(cfg.experiment)
    with pytest.raises(ConfigError, match="cell M1.*model.n_layr"):
        plan_stage(cfg, "stage1", stages["stage1"], "x", None, {})


def test_cluster_refuses_a_sqlite_store_and_says_why():
    tracking = TrackingConfig(uri="sqlite:////tmp/mlflow.db", artifacts="/tmp/a")
    with pytest.raises(ConfigError, match="cannot write to the sqlite.*mlflow server.*tracking.uri=http"):
        check_cluster(ClusterConfig(address="127.0.0.1:6379"), tracking.uri)
    check_cluster(ClusterConfig(address=None), tracking.uri)  # local Ray: fine
    check_cluster(ClusterConfig(address="127.0.0.1:6379"), "http://127.0.0.1:5000")


@pytest.mark.parametrize("experiment", options("experiment"))
@pytest.mark.parametrize("scale", options("scale"))
def test_every_experiment_at_every_scale_plans_every_stage(experiment, scale):
    """Each experiment option composes with each scale and every stage plans runs that parse (sources of an
    earlier stage, or of the sweep ``experiment.sources`` names, stand in as fake URIs)."""
    from experiments.orchestration.plan import parse_sources

    # the stand-in renders go up to 16x16 tokens: at 32x32 the ImageNet track needs its files (README)
    imagenet = ["data.images=imagenet64", "data.imagenet_root=/data/imagenet64"] if (
        experiment in ("table2", "table4") and scale in ("gpu", "paper")) else []
    cfg = compose([f"experiment={experiment}", f"scale={scale}", *imagenet])
    stages = active_stages(cfg.experiment)
    sources = parse_sources(cfg.experiment)
    cells = {cell for stage in stages.values() for cell in stage.cells}
    starts = {c.init_from or s.init_from for s in stages.values() for c in s.cells.values()} - {None}
    uris = {cell: ["runs:/fake/model"] * 3 for cell in starts - cells} if sources else {}
    sweep_id = derive_sweep_id(cfg)
    assert sweep_id.startswith(f"{experiment}-{scale}-")
    for name, stage in stages.items():
        specs = plan_stage(cfg, name, stage, sweep_id, None, uris)
        assert specs
        for spec in specs:  # a cell's own train.steps (e.g. the split study's f N) overrides its stage's
            steps = int(stage.cells[spec["cell"]].overrides.get("train.steps", stage.steps))
            assert parse_run(spec["config"]).train.steps == steps >= 1
        uris.update({cell: ["runs:/fake/model"] * 3 for cell in stage.cells})


@pytest.mark.parametrize("experiment, override, message", [
    ("generators", "experiment.family_level=0", r"experiment\.family_level=0.*strictly between 0 and 1"),
    ("generators", "experiment.family_level=1.5", r"experiment\.family_level=1\.5"),
    ("generators", "experiment.family_level=x", r"experiment\.family_level='x'"),
    ("table1", "experiment.margin=-0.01", r"experiment\.margin=-0\.01: set a non-negative margin"),
    ("table1", "experiment.margin=nan", r"experiment\.margin=.*nan"),
])
def test_report_settings_fail_at_parse_before_any_run(experiment, override, message):
    with pytest.raises(ConfigError, match=message):
        active_stages(compose([f"experiment={experiment}", "scale=smoke", override]).experiment)


SMOKE, PROJECTED = ("scale=smoke",), ("scale=smoke", "kind=projected")


@pytest.mark.parametrize("overrides, message", [
    (("+kynd=projected",), "unknown top-level key.*kynd.*valid keys"),
    (("kind=big",), "kind='big'.*unconditional"),
    (("width=0.3",), "width=0.3"),
    (("projector.mlp=dense",), "projector.*mlp"),
    (("train.grad_accum=5",), "grad_accum"),
    (("+eval.subsets.c1.digits=[1,2]",), "eval.subsets.c1.*valid keys"),
    (("tracking.uri=sqlite:///mlflow.db",), "relative sqlite"),
    ((*SMOKE, "train.steps=abc"), r"train\.steps='abc' is not a whole number"),
    ((*SMOKE, "train.steps=10.5"), r"train\.steps=10\.5 is not a whole number"),
    ((*SMOKE, "train.grad_clip=-1"), r"train\.grad_clip=-1.* must be >= 0 .*flip the gradients"),
    ((*SMOKE, "train.grad_accum=0"), r"train\.grad_accum=0 must be >= 1"),
    ((*SMOKE, "train.grad_accum=3"), r"train\.batch_size=8 is not divisible by train\.grad_accum=3"),
    ((*SMOKE, "train.lr=0"), r"train\.lr=0.* must be > 0"),
    ((*SMOKE, "train.lr=inf"), r"train\.lr=inf is not a finite number"),
    ((*SMOKE, "eval.every=0"), r"eval\.every=0 .*must be >= 1"),
    ((*SMOKE, "projector.source_weight=nan"), r"projector\.source_weight=nan is not a finite number"),
    ((*SMOKE, "seed=-1"), r"seed=-1 must be >= 0"),
    ((*SMOKE, "threads=0"), r"threads=0 must be >= 1"),
    ((*SMOKE, "device=tpu"), r"device='tpu' must be 'cpu' or 'cuda'"),
    # values that used to get generic messages
    ((*PROJECTED, "train.betas=[0.9]"), r"train\.betas=\[0\.9\] must be two numbers in \[0, 1\)"),
    ((*PROJECTED, "train.betas=[0.9,2]"), r"train\.betas=\[0\.9, 2\] must be two numbers"),
    ((*PROJECTED, "tracking.tags=5"), r"tracking\.tags=5 must map tag names to plain values"),
    ((*PROJECTED, "tracking.experiment=''"), r"tracking\.experiment is empty"),
    ((*PROJECTED, "projector.scales=0.5"),
     r"projector\.scales=0\.5 is not a list; set projector\.scales=\[0\.5\]"),
    ((*PROJECTED, "seed=123456789012345678901"), r"seed=123456789012345678901 must be >= 0 and < 2\*\*32"),
])
def test_bad_values_fail_at_parse_naming_key_value_and_fix(overrides, message):
    with pytest.raises(ConfigError, match=message):
        parse_run(compose(list(overrides)))


@pytest.mark.parametrize("command, message", [
    (["-m", "experiments.train", "kind=unconditional", "scale=smoke", "train.lr=-1"], "train.lr=-1 must be > 0"),
    (["experiments/sweep.py", "experiment=generators", "scale=smoke"], "run `nox -s reproduce_table1 -- scale=smoke` first"),
])
def test_an_entry_point_refuses_bad_input_with_its_message_not_a_traceback(command, message, tmp_path):
    import subprocess
    import sys

    env = {**os.environ, "PROJECTABLE_ROOT": str(tmp_path)}
    done = subprocess.run([sys.executable, *command], cwd=CONF_DIR.parent.parent, env=env, capture_output=True,
                          text=True, timeout=300)
    assert done.returncode == 2, done.stderr[-2000:]
    assert "Traceback" not in done.stderr and done.stderr.strip().splitlines()[-1].startswith("error: ")
    assert message in done.stderr
    assert not (tmp_path / "runs").exists() and not (tmp_path / "ray_results").exists()  # refused before any work


def test_an_unreachable_tracking_server_fails_fast_naming_the_uri(smoke, tmp_path):
    import socket
    import time

    from experiments.train import train

    with socket.socket() as s:  # a port nothing listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    tick = time.monotonic()
    with pytest.raises(ConfigError, match=rf"tracking\.uri=http://127\.0\.0\.1:{port}: no MLflow server answered"):
        train(smoke(f"tracking.uri=http://127.0.0.1:{port}", f"run_dir={tmp_path / 'r'}"))
    assert time.monotonic() - tick < 30
    assert not (tmp_path / "r").exists()  # refused before any work: no run directory


def test_a_cuda_run_on_a_machine_without_one_is_refused_before_work(smoke, tmp_path):
    import torch

    from experiments.train import train

    if torch.cuda.is_available():
        pytest.skip("this machine has a CUDA device")
    with pytest.raises(ConfigError, match="device=cuda but this machine has no CUDA device"):
        train(smoke("device=cuda", f"run_dir={tmp_path / 'r'}"))
    assert not (tmp_path / "r").exists()


def test_a_partial_sweep_of_some_seeds_plans_them_alone_and_starts_each_from_its_own_seed():
    """experiment.seed_subset: stage 2's seed i starts from stage 1's seed i of this (partial) sweep, found by
    seed, not by position; the subset is part of the sweep's identity; a subset that keeps no seed of a cell
    is refused before anything runs."""
    from experiments.orchestration.plan import check_plan, source_uri

    full = compose(["experiment=table1", "scale=cpu"])
    cfg = compose(["experiment=table1", "scale=cpu", "experiment.seed_subset=[1]"])
    assert derive_sweep_id(cfg) != derive_sweep_id(full)
    stages = parse_stages(cfg.experiment)
    stage1 = plan_stage(cfg, "stage1", stages["stage1"], "part", None, {})
    assert {spec["seed"] for spec in stage1} == {1} and len(stage1) == 8
    uris = {cell: {1: f"runs:/{cell}-seed1/model"} for cell in {spec["cell"] for spec in stage1}}
    for spec in plan_stage(cfg, "stage2", stages["stage2"], "part", None, uris):
        assert spec["seed"] == 1 and spec["config"]["init_from"].endswith("-seed1/model")
    assert source_uri({0: "a", 2: "c"}, 2) == "c" and source_uri({0: "a", 2: "c"}, 3) == "c"  # 3 mod 2 -> 2nd
    assert source_uri(["a", "b"], 3) == "b"
    with pytest.raises(ConfigError, match="keeps no seed of cell M1"):
        check_plan(compose(["experiment=table1", "scale=cpu", "experiment.seed_subset=[5]"]).experiment)
    with pytest.raises(ConfigError, match="distinct seeds"):
        check_plan(compose(["experiment=table1", "scale=cpu", "experiment.seed_subset=[1,1]"]).experiment)
