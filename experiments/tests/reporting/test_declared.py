"""One declaration per cell: a cell added to a copy of an experiment's YAML is planned, tabled and drawn with no
other edit; the derived maps equal the ones Table 1 and 2 were written with."""

from __future__ import annotations

import shutil

import pandas as pd
import pytest
import yaml

from experiments import config
from experiments.orchestration.plan import active_stages, plan_stage
from experiments.reporting import declared as declared_module
from experiments.reporting import table1
from experiments.reporting.declared import declared
from experiments.tests.reporting.conftest import trial


def test_table1_s_declaration_gives_the_maps_its_report_was_written_with():
    table = declared("table1")
    assert table.matched == {"M1": "control", "M2": "M2m", "M4": "M4m", "M8": "M8m",
                             "Mc1": "Mc1m", "Mc2": "Mc2m", "Mc4": "Mc4m", "Mc8": "Mc8m"}
    assert table.needed == ("M1", "M2", "M4", "M8", "Mc1", "Mc2", "Mc4", "Mc8", "P2", "P4", "P8", "Pall", "control")
    assert table.cell_sources["P4"] == [("P", 0.25), ("P", 1.0)]  # P_1/4 and the co-trained source
    assert table.cell_sources["Pall"] == [("Pall", 0.5), ("Pall", 0.25), ("Pall", 0.125), ("Pall", 1.0)]
    matched = table.read_sources("matched")
    assert "Mc4" not in matched and matched["Mc4m"] == [("Mc", 0.25)]  # read from the step-matched one
    assert matched["control"] == [("control", 1.0), ("M", 1.0)]
    assert table.read_sources("stage1")["Mc4"] == [("Mc", 0.25)] and "Mc4m" not in table.read_sources("stage1")
    assert table.widths == (1.0, 0.5, 0.25, 0.125)
    assert table.models(("P", "Mc")) == {"P2": ("P", 0.5), "P4": ("P", 0.25), "P8": ("P", 0.125),
                                         "Mc2": ("M~", 0.5), "Mc4": ("M~", 0.25), "Mc8": ("M~", 0.125),
                                         "Mc2m": ("M~", 0.5), "Mc4m": ("M~", 0.25), "Mc8m": ("M~", 0.125)}
    assert declared("table2").read_sources("matched")["control"] == [("control", 1.0), ("M", 1.0)]


def test_a_cell_whose_column_is_not_declared_is_refused(tmp_path, monkeypatch):
    conf = _copy_conf(tmp_path, monkeypatch)
    _add_cells(conf, {"stage2": {"P8x": {"kind": "projected", "scales": [0.125], "column": "Px"}}}, columns={})
    with pytest.raises(config.ConfigError, match=r"columns \['Px'\] that experiment.columns does not declare"):
        declared("table1")


def test_a_new_cell_is_planned_tabled_and_drawn_with_no_other_edit(tmp_path, monkeypatch, table1_trials, prov):
    conf = _copy_conf(tmp_path, monkeypatch)
    # P_1/8 with rank 32, in a column of its own: the one declaration
    _add_cells(conf, {"stage2": {"P8r32": {"kind": "projected", "scales": [0.125], "column": "Pr",
                                           "overrides": {"projector.rank": 32}}}},
               columns={"Pr": {"label": "P(r=32)_s", "colour": "tab:red"}})

    cfg = config.compose(["experiment=table1", "scale=smoke"])
    stage2 = active_stages(cfg.experiment)["stage2"]
    sources = {cell: [f"runs:/{cell}/model"] for cell in active_stages(cfg.experiment)["stage1"].cells}
    specs = [s for s in plan_stage(cfg, "stage2", stage2, "x", None, sources) if s["cell"] == "P8r32"]
    assert [(s["seed"], s["config"]["projector"]["rank"], s["config"]["projector"]["scales"], s["config"]["init_from"])
            for s in specs] == [(0, 32, [0.125], "runs:/M1/model")]  # the scale's seeds, the stage's source

    trials = pd.concat([table1_trials, pd.DataFrame([{**trial("P8r32", "stage2", s1_8=0.58, s1=0.51),
                                                       "init_cell": "M1"}])], ignore_index=True)
    table = table1.table1_cells(trials)
    assert table.cells[("Pr", 0.125)].mean == pytest.approx(0.58)
    assert table.cells[("Pr", 1.0)].mean == pytest.approx(0.51)  # its co-trained source, as for P_s
    frame = table1.results_frame(table)
    row = frame[(frame.model == "P(r=32)_s") & (frame.s == "1/8")].iloc[0]
    assert row.ours_nats == pytest.approx(0.58) and pd.isna(row.paper_nats)  # no paper number: none invented
    md = table1.markdown(table, table1.verdicts_for(table, 0.01), prov, 0.01, trials)
    assert "| s | M_s | paper | M~_s | paper | P_s | paper | P~ | paper | P(r=32)_s | paper |" in md
    curves = {(panel, label): cells for panel, label, cells, _ in table1.curve_specs("matched")}
    assert curves[("s = 1/8", "P(r=32)_1/8")] == ["P8r32"]
    assert curves[("s = 1", "source of P(r=32)_s")] == ["P8r32"]


def _copy_conf(tmp_path, monkeypatch):
    conf = tmp_path / "conf"
    shutil.copytree(config.CONF_DIR, conf)
    monkeypatch.setattr(config, "CONF_DIR", conf)
    monkeypatch.setattr(declared_module, "CONF_DIR", conf)
    return conf


def _add_cells(conf, cells: dict, columns: dict) -> None:
    path = conf / "experiment" / "table1.yaml"
    text = path.read_text()
    node = yaml.safe_load(text)
    for stage, new in cells.items():
        node["experiment"]["stages"][stage]["cells"].update(new)
    node["experiment"]["columns"].update(columns)
    path.write_text("# @package _global_\n" + yaml.safe_dump(node, sort_keys=False))


@pytest.fixture(autouse=True)
def _fresh_declarations():
    declared.cache_clear()
    yield
    declared.cache_clear()
