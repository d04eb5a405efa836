"""Table 3's grid: the nine cells of the paper with their source widths, scales and ranks, the two reused from
Table 1, and a projected run whose source is narrower than the width-1 model, trained by ``train``."""

from __future__ import annotations

import dataclasses
import math
from typing import NamedTuple

import pytest
import torch
from mlflow.tracking import MlflowClient
from omegaconf import open_dict
from projectable import GPT, GPTConfig, ProjectorConfig

from experiments.config import ConfigError, build_section, compose, flatten, parse_run
from experiments.orchestration.plan import decide_reuse, parse_sources, parse_stages, plan_stage
from experiments.run.trainees import build_trainee
from experiments.sweep import run_sweep
from experiments.tracking.store import recorded_run_id
from experiments.train import train

STAGE = "stage2"  # Table 3's one stage

# (target width, source width, rank) of the paper's Table 3
PAPER_CELLS = {(0.25, 1.0, 8), (0.25, 0.5, 8), (0.25, 0.5, 16), (0.125, 1.0, 8), (0.125, 0.5, 8),
               (0.125, 0.5, 16), (0.125, 0.25, 8), (0.125, 0.25, 16), (0.125, 0.25, 32)}
SOURCE_CELLS = {1.0: "M1", 0.5: "M2", 0.25: "M4"}


@pytest.fixture
def table3(store, tmp_path):
    return compose(["experiment=table3", "scale=smoke", *store.overrides(runs=str(tmp_path / "runs"))])


class Table3Cell(NamedTuple):
    name: str
    target: float  # width of P_target (of the width-1 model)
    source: float  # width of the source M_source
    scale: float  # the core's scale: target / source
    rank: int
    source_cell: str


def table3_cells(cfg) -> list[Table3Cell]:
    """The cells as configured: every one projected, one scale, started from a source cell."""
    cells = []
    for name, cell in parse_stages(cfg.experiment)[STAGE].cells.items():
        assert cell.kind == "projected" and cell.scales is not None and len(cell.scales) == 1, name
        rank = int(cell.overrides.get("projector.rank", cfg.projector.rank))
        cells.append(Table3Cell(name, cell.width * cell.scales[0], cell.width, cell.scales[0], rank, cell.init_from))
    return cells


def test_plan_has_exactly_the_papers_nine_cells(table3):
    cells = table3_cells(table3)
    assert {(c.target, c.source, c.rank) for c in cells} == PAPER_CELLS and len(cells) == 9
    for cell in cells:
        assert cell.source_cell == SOURCE_CELLS[cell.source]
    sources = parse_sources(table3.experiment)
    by_name = {c.name: c for c in cells}
    reused = {(by_name[c].target, by_name[c].source, by_name[c].rank): t1 for c, t1 in sources.reuse.items()}
    assert reused == {(0.25, 1.0, 8): "P4", (0.125, 1.0, 8): "P8"}  # Table 1's P_1/4 and P_1/8 (r = 8)
    assert (sources.experiment, sources.stage) == ("table1", "stage1")


def test_planned_trials_start_from_their_sources_with_their_rank(table3):
    sources = {cell: [f"runs:/{cell}-run/model"] for cell in SOURCE_CELLS.values()}
    stage = parse_stages(table3.experiment)[STAGE]
    specs = {s["cell"]: s for s in plan_stage(table3, STAGE, stage, "sweep", None, sources)}
    assert len(specs) == 9
    for cell in table3_cells(table3):
        run = parse_run(specs[cell.name]["config"])
        assert run.kind == "projected" and run.width == cell.source
        assert run.projector.scales == (cell.scale,) and run.projector.rank == cell.rank
        assert run.init_from == f"runs:/{cell.source_cell}-run/model"
        assert run.train.steps == table3.budget.stage2_steps  # Table 1's stage-2 budget


def test_reuse_only_when_table1_ran_the_same_config(table3):
    reuse = parse_sources(table3.experiment).reuse
    sources = {cell: [f"runs:/{cell}-run/model"] for cell in SOURCE_CELLS.values()}
    specs = plan_stage(table3, STAGE, parse_stages(table3.experiment)[STAGE], "sweep", None, sources)
    as_params = {s["cell"]: flatten(s["config"]) for s in specs}
    same = {"P4": {0: as_params["P4_M1_r8"]}, "P8": {0: as_params["P8_M1_r8"]}}
    decision = decide_reuse(reuse, specs, lambda cell: same[cell])
    assert decision.reused == {"P4_M1_r8": "P4", "P8_M1_r8": "P8"} and not decision.retrained

    longer = {**as_params["P8_M1_r8"], "train.steps": "999"}
    decision = decide_reuse(reuse, specs, lambda cell: {"P4": same["P4"], "P8": {0: longer}}[cell])
    assert decision.reused == {"P4_M1_r8": "P4"} and decision.retrained == {"P8_M1_r8": ["train.steps: 999 -> 10"]}
    decision = decide_reuse(reuse, specs, lambda cell: {})
    assert not decision.reused and set(decision.retrained) == {"P4_M1_r8", "P8_M1_r8"}


def test_reuse_of_a_cell_no_stage_has_is_refused(table3):
    with open_dict(table3):
        table3.experiment.reuse = {"P2_M1_r8": "P2"}
    with pytest.raises(ConfigError, match="P2_M1_r8"):
        parse_sources(table3.experiment)


def test_projected_trainee_accepts_a_narrower_source(tmp_path):
    base = build_section(GPTConfig, compose(["scale=smoke"]).model, "model")
    source = GPT(dataclasses.replace(base.scaled(0.5), task_dim=0))  # M_1/2
    source.save(tmp_path / "model.safetensors")
    trainee = build_trainee("projected", 0.5, base, ProjectorConfig(task_dim=18, scales=(0.5,)), 18, init_from=tmp_path)
    small = trainee.model.generate(torch.rand(18), 0.5)
    assert small.config.n_embd == base.n_embd // 4  # P_1/4 of the width-1 model, from M_1/2
    assert torch.equal(trainee.source().parts.wte, source.parts.wte)


def test_train_runs_p_1_4_from_m_1_2(smoke, store, tmp_path):
    source_dir = tmp_path / "M2"
    m_2 = train(smoke("kind=unconditional", "width=0.5", "train.steps=5", "eval.samples=0", f"run_dir={source_dir}"))
    cfg = smoke("kind=projected", "width=0.5", "projector.scales=[0.5]", "train.steps=5", "eval.samples=0",
                f"init_from={source_dir}", f"run_dir={tmp_path / 'P4_from_M2'}")
    metrics = train(cfg)
    client, run_id = MlflowClient(store.uri), recorded_run_id(tmp_path / "P4_from_M2")

    def start(key: str) -> float:  # before the run's first step
        return {m.step: m.value for m in client.get_metric_history(run_id, key)}[0]

    source, projected = "val/all/s1_2/nats_per_token", "val/all/s1_4/nats_per_token"  # M_1/2, P_1/4
    # the source starts as the saved M_1/2 itself: its starting loss is M_1/2's final one
    assert start(source) == pytest.approx(m_2[source], abs=1e-5)
    # P_1/4 starts as the group averages of that source: a model of the images, better than uniform guessing
    uniform = math.log(cfg.model.vocab_size)
    assert 0 < start(projected) < uniform and 0 < metrics[projected] < uniform
    assert metrics[source] < uniform


def test_without_a_table1_sweep_it_says_to_run_table1_first(tmp_path):
    cfg = compose(["experiment=table3", "scale=smoke", f"paths.root={tmp_path}"])  # an empty store
    with pytest.raises(ConfigError, match="nox -s reproduce_table1 -- scale=smoke"):
        run_sweep(cfg)
