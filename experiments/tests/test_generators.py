"""The generators experiment: the config switch (parse-time checks, run keys unchanged at the defaults), the
plan of ``experiment=generators`` (cells, sources, reuse, knobs sized by match_budget), a source-free trainee
started from a stage-1 M_s, and a source-free run's MLflow record."""

from __future__ import annotations

import dataclasses

import mlflow
import pandas as pd
import pytest
import torch
from mlflow.tracking import MlflowClient
from omegaconf import OmegaConf, open_dict
from projectable import GPT, GPTConfig, ProjectableGPT, ProjectorConfig
from projectable.generators import generator_params, match_budget

from experiments.config import ConfigError, build_section, compose, config_key, flatten, parse_run
from experiments.orchestration import plan
from experiments.run.datasets import build_data
from experiments.run.trainees import MODEL_FILE, PROJECTABLE_FILE, build_trainee
from experiments.tracking.store import recorded_run_id
from experiments.train import train

STAGE1 = ("M1", "M2", "M4", "M8", "Mc1", "Mc2", "Mc4", "Mc8")
NEW = {f"{prefix}{k}": (generator, 1 / k) for prefix, generator in (("B", "blocks"), ("LR", "low_rank"),
                                                                     ("Lin", "linear")) for k in (2, 4, 8)}
REUSED = {"P2", "P4", "P8", "M2m", "M4m", "M8m", "Mc2m", "Mc4m", "Mc8m"}


def planned(cfg) -> dict[str, dict]:
    """Seed-0 TrialSpec of every cell, the stage-1 cells standing in as fake URIs (seed i -> seed i)."""
    uris = {cell: [f"runs:/{cell}-seed{i}/model" for i in range(2)] for cell in STAGE1}
    (stage,) = plan.active_stages(cfg.experiment).values()
    specs = plan.plan_stage(cfg, "stage2", stage, plan.derive_sweep_id(cfg), None, uris)
    return {s["cell"]: s for s in specs if s["seed"] == 0}


def width_1(cfg) -> GPTConfig:
    return dataclasses.replace(build_section(GPTConfig, cfg.model, "model"), task_dim=0)


# -- the plan ------------------------------------------------------------------------------------------


def built_counts(source: GPTConfig, projector: ProjectorConfig, scale: float) -> tuple[int, int]:
    """(t-dependent, all own) parameters of the generator ``projector`` at ``scale``, counted on the built
    module (on the meta device) rather than by the formulas the planner sizes with: the generator's
    parameters less its base weights, and with them its base and the small model's own parts."""
    with torch.device("meta"):
        model = ProjectableGPT(source, dataclasses.replace(projector, scales=(scale,)))
    (generator,) = model.generators.values()
    base = getattr(generator, "base", None)
    base_params = 0 if base is None else sum(p.numel() for p in base.parameters())
    own = sum(p.numel() for p in generator.parameters())
    parts = sum(p.numel() for p in model.small_parts.parameters())
    return own - base_params, own + parts


def test_plan_at_smoke_has_the_new_cells_their_starts_sources_reuse_and_knobs():
    cfg = compose(["experiment=generators", "scale=smoke"])
    sources = plan.parse_sources(cfg.experiment)
    assert (sources.experiment, sources.stage) == ("table1", "stage1")
    assert dict(sources.reuse) == {cell: cell for cell in REUSED}  # Table 1's cells under their own names
    specs = planned(cfg)
    assert set(specs) == set(NEW) | REUSED
    source = width_1(cfg)
    configured = build_section(ProjectorConfig, cfg.projector, "projector")
    with torch.device("meta"):
        source_params = GPT(source).num_params()
    for cell, (generator, scale) in NEW.items():
        config, tags = specs[cell]["config"], specs[cell]["config"]["tracking"]["tags"]
        run = parse_run(config)
        # blocks co-trains Table 1's M_1, as P_s does; low_rank and linear start from the M_s of their width
        start = "M1" if generator == "blocks" else f"M{round(1 / scale)}"
        assert run.init_from == f"runs:/{start}-seed0/model" and tags["init_cell"] == start
        assert run.kind == "projected" and run.width == 1.0 and run.projector.scales == (scale,)
        assert run.projector.generator == generator and run.train.steps == cfg.budget.stage2_steps
        # the knob: the block rank for blocks, the delta's rank for low_rank and linear; the rest of the
        # projector as configured, but for what a source-free generator needs (its own small parts; linear
        # has no shared MLP)
        knob, size = ("rank", run.projector.rank) if generator == "blocks" else ("generator_rank",
                                                                                 run.projector.generator_rank)
        assert tags["match/knob"] == knob and int(tags["match/size"]) == size >= 1
        expected = dataclasses.replace(
            configured, task_dim=run.projector.task_dim, scales=(scale,), generator=generator,
            rank=size if knob == "rank" else configured.rank, generator_rank=size if knob == "generator_rank" else 0,
            small_parts="own" if generator != "blocks" else configured.small_parts,
            mlp="per_operator" if generator == "linear" else configured.mlp)
        assert run.projector == expected
        # the counts, taken from the built modules: the generator's own, the projection's at its rank r
        own_task, own_total = built_counts(source, run.projector, scale)
        reference = dataclasses.replace(configured, task_dim=run.projector.task_dim, generator="projection",
                                        generator_rank=0)
        projection_task, projection_total = built_counts(source, reference, scale)
        assert tags["match/count"] == "task" and int(tags["match/own_task"]) == own_task
        assert int(tags["match/own_total"]) == own_total
        assert (int(tags["match/projection_task"]), int(tags["match/projection_total"])) == (projection_task,
                                                                                              projection_total)
        assert int(tags["match/with_source"]) == own_total + (source_params if generator == "blocks" else 0)
        assert int(tags["match/source"]) == source_params and tags["role"] == "projected"
        # the size matches the projection's t-dependent parameters: no neighbouring size comes closer
        gap = abs(own_task - projection_task)
        for other in (size - 1, size + 1):
            try:
                other_task, _ = built_counts(source, dataclasses.replace(run.projector, **{knob: other}), scale)
            except ValueError:  # a rank of 0, or too large for the small model
                continue
            assert abs(other_task - projection_task) >= gap, (cell, size, other)
    for cell in ("P2", "P4", "P8"):  # the reused projection cells: Table 1's config, no sizing
        run = parse_run(specs[cell]["config"])
        assert run.projector.generator == "projection" and run.init_from == "runs:/M1-seed0/model"
        assert not any(k.startswith("match/") for k in specs[cell]["config"]["tracking"]["tags"])


def test_the_new_cells_take_the_seeds_of_the_p_s_they_are_compared_with():
    cfg = compose(["experiment=generators", "scale=cpu"])
    (stage,) = plan.active_stages(cfg.experiment).values()
    for cell, (_, scale) in NEW.items():
        assert stage.cells[cell].seeds == stage.cells[f"P{round(1 / scale)}"].seeds == cfg.budget.seeds >= 2


def test_match_total_is_a_switch_and_makes_another_sweep():
    task, total = (compose(["experiment=generators", "scale=smoke", f"experiment.match={m}"])
                   for m in plan.MATCH_COUNTS)
    assert plan.derive_sweep_id(task) != plan.derive_sweep_id(total)
    specs = planned(total)
    source = width_1(total)
    for cell, (generator, scale) in NEW.items():
        reference = ProjectorConfig(task_dim=18, scales=(scale,))
        assert int(specs[cell]["config"]["tracking"]["tags"]["match/size"]) == match_budget(
            source, reference, scale, generator, "total").size
    with open_dict(total):
        total.experiment.match = "all"
    with pytest.raises(ConfigError, match="experiment.match='all' must be one of task, total"):
        planned(total)


def test_size_generator_counts_the_source_only_for_generators_that_read_it():
    model = GPTConfig.tiny(block_size=16, n_embd=32, n_head=2)
    projector = ProjectorConfig(task_dim=18, scales=(0.25,))
    blocks = plan.size_generator(model, projector, 1.0, "blocks", "task").budget
    low_rank = plan.size_generator(model, projector, 1.0, "low_rank", "task").budget
    assert blocks.with_source == blocks.own_total + blocks.source and low_rank.with_source == low_rank.own_total


def test_a_generator_cell_must_be_a_projected_cell_of_one_scale():
    cfg = compose(["experiment=generators", "scale=smoke",
                   "experiment.stages.stage2.cells.B2.scales=[0.5,0.25]"])
    with pytest.raises(ConfigError, match="generator='blocks' sizes a projected cell of one scale"):
        plan.active_stages(cfg.experiment)


def test_reuse_skips_a_cell_that_is_not_planned():
    cfg = compose(["experiment=generators", "scale=smoke", "experiment.baselines=stage1"])
    specs = list(planned(cfg).values())
    assert not {s["cell"] for s in specs} & {"M2m", "Mc8m"}  # the matched baselines are dropped
    # a Table 1 run made before a logged model's config moved to an artifact holds a ``scale`` param
    # besides its config's keys (MLflow logs a model_config as run params): that does not make it another config
    params = {s["cell"]: {0: {**flatten(s["config"]), "scale": "0.5"}} for s in specs}
    reuse = plan.parse_sources(cfg.experiment).reuse
    decision = plan.decide_reuse(reuse, specs, lambda cell: params.get(cell, {}))
    assert decision.reused == {"P2": "P2", "P4": "P4", "P8": "P8"} and not decision.retrained


# -- the config switch ---------------------------------------------------------------------------------


def test_the_generator_keys_at_their_defaults_leave_run_keys_unchanged():
    for overrides in (["scale=smoke", "kind=projected"], ["scale=cpu", "kind=unconditional", "width=0.5"]):
        cfg = compose(overrides)
        assert cfg.projector.generator == "projection" and cfg.projector.generator_rank == 0
        without = OmegaConf.to_container(cfg, resolve=True)
        del without["projector"]["generator"], without["projector"]["generator_rank"]
        assert config_key(cfg) == config_key(without)
        assert config_key(compose([*overrides, "projector.generator=blocks"])) != config_key(cfg)


@pytest.mark.parametrize("overrides, message", [
    (["projector.generator=lora"], r"projector.*generator='lora' is not one of"),
    (["projector.generator=low_rank"], r"needs generator_rank >= 1"),
    (["projector.generator_rank=2"], r"generator_rank=2 applies to low_rank and linear only"),
    (["projector.generator=linear", "projector.generator_rank=99", "projector.scales=[0.25]"],
     r"generator_rank=99 does not fit the 'linear' generator at scale 1/4.*1\.\.8"),
    (["projector.generator=linear", "projector.generator_rank=1", "projector.mlp=shared"], r"mlp='shared'"),
    (["projector.generator=low_rank", "projector.generator_rank=1", "projector.scales=[0.5,0.25]",
      "init_from=/some/M_s"], r"init_from=/some/M_s starts the 'low_rank' generator's base weights from one M_s"),
    (["projector.generator=blocks", "width=0.25", "projector.scales=[0.125]"],
     r"with width=0.25: .*does not divide the source head size"),
])
def test_bad_generator_settings_fail_at_parse(overrides, message):
    with pytest.raises(ConfigError, match=message):
        parse_run(compose(["scale=smoke", "kind=projected", *overrides]))


# -- source-free trainees ------------------------------------------------------------------------------


@pytest.fixture
def smoke_model() -> GPTConfig:
    return dataclasses.replace(build_section(GPTConfig, compose(["scale=smoke"]).model, "model"), task_dim=0)


@pytest.mark.parametrize("generator, rank", [("low_rank", 2), ("linear", 3)])
def test_a_source_free_trainee_from_m_s_is_that_m_s_before_training(generator, rank, smoke_model, tmp_path):
    torch.manual_seed(0)
    m_s = GPT(smoke_model.scaled(0.25)).eval()  # M_1/4, e.g. Table 1's stage-1 M4
    m_s.save(tmp_path / MODEL_FILE)
    projector = ProjectorConfig(task_dim=18, scales=(0.25,), generator=generator, generator_rank=rank)
    trainee = build_trainee("projected", 1.0, smoke_model, projector, 18, init_from=tmp_path)
    model = trainee.model.eval()
    assert model.source is None and trainee.source() is None
    tokens = torch.randint(0, smoke_model.vocab_size, (4, smoke_model.block_size))
    tasks = torch.rand(4, 18)
    with torch.no_grad():
        torch.testing.assert_close(model.projected_logits(tokens, tasks, 0.25), m_s(tokens), rtol=1e-5, atol=1e-5)
    assert trainee.roles() == {"s1_4": "P_s"}  # no source role, metric or file
    assert set(trainee.nll_fns()) == {"s1_4"}
    step = trainee.loss(tokens, tasks)
    assert set(step.parts) == {0.25} and torch.allclose(step.total, step.parts[0.25])
    assert [p.name for p in trainee.save(tmp_path / "final")] == [PROJECTABLE_FILE]
    assert ProjectableGPT.load(tmp_path / "final" / PROJECTABLE_FILE).config.generator == generator


def test_a_source_free_trainee_refuses_an_m_s_of_another_width(smoke_model, tmp_path):
    GPT(smoke_model.scaled(0.5)).save(tmp_path / MODEL_FILE)  # M_1/2 for a P_1/4
    projector = ProjectorConfig(task_dim=18, scales=(0.25,), generator="low_rank", generator_rank=1)
    with pytest.raises(ValueError, match=r"holds a model of width 16, .*generates width 8: start it from the M_s of "
                                         r"width 8 \(Table 1's stage-1 cell M4"):
        build_trainee("projected", 1.0, smoke_model, projector, 18, init_from=tmp_path)
    GPT(dataclasses.replace(smoke_model.scaled(0.25), task_dim=18)).save(tmp_path / MODEL_FILE)  # an M~_1/4
    with pytest.raises(ValueError, match="holds a conditional model"):
        build_trainee("projected", 1.0, smoke_model, projector, 18, init_from=tmp_path)


def test_a_source_free_run_logs_no_source_and_names_its_generator(smoke, store, tmp_path):
    train(smoke("kind=unconditional", "width=0.25", "train.steps=2", "eval.samples=0", f"run_dir={tmp_path / 'M4'}"))
    cfg = smoke("kind=projected", "projector.scales=[0.25]", "projector.generator=linear", "projector.generator_rank=2",
                "train.steps=3", "eval.samples=4", f"init_from={tmp_path / 'M4'}", f"run_dir={tmp_path / 'Lin4'}")
    metrics = train(cfg)
    assert {k.split("/")[2] for k in metrics} == {"s1_4"}  # val/all/s1_4/... only: no source metric
    client = MlflowClient(store.uri)
    run = client.get_run(recorded_run_id(tmp_path / "Lin4"))
    assert run.data.tags["generator"] == "linear" and run.data.params["projector.generator"] == "linear"
    assert "scale" not in run.data.params  # the logged model's config is an artifact, not run params
    assert {k: v for k, v in run.data.tags.items() if k.startswith("model/")} == {"model/s1_4": "P_s"}
    assert "train/s1/nats_per_token" not in run.data.metrics and "train/eq2_total_nats_per_token" in run.data.metrics
    parsed = parse_run(cfg)
    own = generator_params(dataclasses.replace(parsed.model, task_dim=0), parsed.projector, 0.25)
    assert run.data.metrics["num_params/projector_0.25"] == own.total == run.data.metrics["num_params/trained"]
    assert run.data.metrics["num_params/generator_task_0.25"] == own.task
    small = ProjectableGPT(dataclasses.replace(parsed.model, task_dim=0), parsed.projector).generate(
        torch.zeros(parsed.projector.task_dim), 0.25)  # the standalone model a generated P_1/4 is
    assert run.data.metrics["num_params/generated_0.25"] == small.num_params() < own.total
    models = client.search_logged_models([run.info.experiment_id], filter_string=f"source_run_id = '{run.info.run_id}'")
    assert [(m.name, m.tags["generator"]) for m in models] == [("projected-s1_4", "linear")]
    mlflow.set_tracking_uri(store.uri)  # the logged model predicts the run's own per-image losses
    per_image = mlflow.artifacts.load_dict(f"runs:/{run.info.run_id}/eval/per_image_nats.json")["all/s1_4"]
    batch = build_data(parsed.data, parsed.paths.cache).validation()
    frame = pd.DataFrame({"tokens": [t.tolist() for t in batch.tokens[:3]],
                          "task": [t.double().tolist() for t in batch.task[:3]]})
    predicted = mlflow.pyfunc.load_model(f"models:/{models[0].model_id}").predict(frame)["nats_per_token"]
    assert predicted.tolist() == pytest.approx(per_image[:3], abs=1e-5)
    samples = {a.path.split("/")[-1] for a in client.list_artifacts(run.info.run_id, "samples")}
    assert samples == {"s1_4.png"}
    final = {p.name for p in (tmp_path / "Lin4" / "final").iterdir()}
    assert final == {PROJECTABLE_FILE}
