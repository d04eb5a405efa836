"""The plan of ``experiment=specialisation``: P_s(const) cells that differ from Table 1's P_s only in the task
vector they train and evaluate with, start from the same stage-1 M_1 seed by seed, take 3 seeds, and are the
cells the report reads."""

from __future__ import annotations

import pytest

from experiments.config import compose, config_differences, parse_run
from experiments.orchestration.plan import active_stages, derive_sweep_id, parse_sources, plan_stage
from experiments.reporting import specialisation

NEW = {"P2_mean": 0.5, "P4_mean": 0.25, "P8_mean": 0.125}
SEEDS = 3


def planned(experiment: str, scale: str) -> dict[tuple[str, int], dict]:
    """(cell, seed) -> TrialSpec of every stage-2 run, Table 1's stage-1 cells standing in as fake URIs (seed i
    of a cell -> runs:/<cell>-seed<i>/model)."""
    cfg = compose([f"experiment={experiment}", f"scale={scale}"])
    uris = {cell: [f"runs:/{cell}-seed{i}/model" for i in range(SEEDS)]
            for cell in ("M1", "M2", "M4", "M8", "Mc1", "Mc2", "Mc4", "Mc8")}
    stages = active_stages(cfg.experiment)
    specs = []
    for name, stage in stages.items():
        specs += plan_stage(cfg, name, stage, derive_sweep_id(cfg), None, uris)
        uris.update({cell: [f"runs:/{cell}-seed{i}/model" for i in range(SEEDS)] for cell in stage.cells})
    return {(s["cell"], s["seed"]): s for s in specs}


def test_sources_and_reference_are_table1_cells():
    cfg = compose(["experiment=specialisation", "scale=smoke"])
    sources = parse_sources(cfg.experiment)
    assert (sources.experiment, sources.stage) == ("table1", "stage1") and not sources.reuse
    table1 = {cell for stage in active_stages(compose(["experiment=table1", "scale=smoke"]).experiment).values()
              for cell in stage.cells}
    reference = dict(cfg.experiment.reference)
    assert set(reference.values()) <= table1
    assert set(reference.values()) == set(specialisation.REFERENCE_CELLS)  # what the report reads
    assert cfg.experiment.baselines == "matched" and all(c.endswith("m") for c in reference if c.startswith("M"))


@pytest.mark.parametrize("scale", ["smoke", "cpu"])
def test_p_s_const_is_table1_p_s_with_the_mean_task_vector_from_the_same_m1(scale):
    ours, table1 = planned("specialisation", scale), planned("table1", scale)
    cells = {cell for cell, _ in ours}
    assert set(NEW) <= cells
    assert {row.constant for row in specialisation.ROWS} == set(NEW)
    for row in specialisation.ROWS:
        for seed in range(SEEDS):
            spec = ours[(row.constant, seed)]
            run = parse_run(spec["config"])
            assert run.kind == "projected" and run.projector.scales == (row.scale,)
            assert run.train.task_vector == "mean"
            assert run.init_from == f"runs:/M1-seed{seed}/model" and spec["config"]["tracking"]["tags"]["init_cell"] == "M1"
            # Table 1's P_s of the same seed, where it has one (its seeds are the budget's): the same run but for t
            reference = table1.get((row.projected, seed))
            if reference is not None:
                assert parse_run(reference["config"]).init_from == run.init_from
                assert config_differences(spec["config"], reference["config"]) == [
                    "train.task_vector: own -> mean"]


def test_every_new_cell_takes_three_seeds_and_table1_s_stage2_steps_at_the_cpu_scale():
    cfg = compose(["experiment=specialisation", "scale=cpu"])
    (stage,) = (s for name, s in active_stages(cfg.experiment).items() if name == "stage2")
    assert stage.steps == cfg.budget.stage2_steps == 750
    for cell in NEW:
        assert stage.cells[cell].seeds == SEEDS
    assert {s for s in planned("specialisation", "cpu") if s[0] in NEW} == {(c, i) for c in NEW for i in range(SEEDS)}


EVERY = {0.5: ("Mc2_every", "Mc2m_every", "Mc2m"), 0.25: ("Mc4_every", "Mc4m_every", "Mc4m"),
         0.125: ("Mc8_every", "Mc8m_every", "Mc8m")}


def test_every_position_baseline_is_trained_exactly_like_m_tilde_s_but_for_where_it_reads_t():
    """Stage 1 from scratch, then the step-matched continuation of seed i from seed i, at the widths of M~_s;
    each continuation differs from Table 1's matched M~_s of its width only in model.task_input (and the
    stage-1 run it continues). Needs model.task_input (GPTConfig); the cells are marked in the YAML."""
    cfg = compose(["experiment=specialisation", "scale=cpu"])
    stages = active_stages(cfg.experiment)
    assert list(stages) == ["stage1", "stage2"] and stages["stage1"].steps == cfg.budget.stage1_steps
    ours, table1 = planned("specialisation", "cpu"), planned("table1", "cpu")
    assert {row.every for row in specialisation.ROWS} == {continued for _, continued, _ in EVERY.values()}
    for width, (first, continued, matched) in EVERY.items():
        assert stages["stage1"].cells[first].seeds == stages["stage2"].cells[continued].seeds == SEEDS
        assert stages["stage2"].cells[continued].role == "matched_baseline"
        for seed in range(SEEDS):
            start = parse_run(ours[(first, seed)]["config"])
            assert (start.kind, start.width, start.init_from) == ("conditional", width, None)
            assert start.model.task_input == "every" and start.train.steps == stages["stage1"].steps
            run = parse_run(ours[(continued, seed)]["config"])
            assert run.init_from == f"runs:/{first}-seed{seed}/model" and run.model.task_input == "every"
            reference = table1.get((matched, seed))
            if reference is not None:
                assert parse_run(reference["config"]).train.steps == run.train.steps
                differences = config_differences(ours[(continued, seed)]["config"], reference["config"])
                assert [d.split(":")[0] for d in differences] == ["init_from", "model.task_input"]


@pytest.mark.parametrize("subset", [None, [0, 1], [2]])
def test_the_source_sweep_asked_for_holds_the_seeds_this_sweep_continues(monkeypatch, subset):
    """A partial sweep asks for a Table 1 sweep holding its own seeds of M_1 (which every P_s(const) continues)
    and of the reference cells it is compared with; a whole sweep for a whole Table 1 sweep. Cells trained in
    the sweep's own stage 1 (the every-position baselines) are never asked of the source."""
    from types import SimpleNamespace

    import experiments.sweep as driver
    from experiments.config import build_section
    from experiments.tracking.store import TrackingConfig

    asked = {}

    def find_sweep(uri, experiment, scale, name, cells=(), seeds=None, sweep_ids=(), whole=False):
        asked.update(name=name, cells=set(cells), seeds={c: set(s) for c, s in (seeds or {}).items()}, whole=whole)
        return SimpleNamespace(data=SimpleNamespace(tags={"sweep_id": "table1-cpu-part"}))

    monkeypatch.setattr(driver, "find_sweep", find_sweep)
    monkeypatch.setattr(driver, "stage_run_uris", lambda cfg, sweep_id, cell: {s: f"runs:/{cell}-{s}/model"
                                                                                for s in range(SEEDS)})
    overrides = [] if subset is None else [f"experiment.seed_subset={subset}"]
    cfg = compose(["experiment=specialisation", "scale=cpu", *overrides])
    uris = driver.resolve_sources(cfg, build_section(TrackingConfig, cfg.tracking, "tracking"))
    reference = set(specialisation.REFERENCE_CELLS)
    assert list(uris) == ["M1"] and asked["name"] == "table1" and asked["cells"] == {"M1"} | reference
    assert asked["whole"] is (subset is None)
    if subset is None:
        assert asked["seeds"] == {}
    else:
        assert asked["seeds"] == {cell: set(subset) for cell in {"M1"} | reference}
    assert cfg.experiment.source_sweep == "table1-cpu-part"
