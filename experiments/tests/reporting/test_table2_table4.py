"""Table 2 and Table 4 report logic on made-up trial rows: cells, paper numbers, verdicts. The rows carry
the metric names runs logged before the metric schema ('model', 'source', 'P1_2'), renamed as stores are read
(``tracking.sweeps.schema_metrics``): older stores still report."""

from __future__ import annotations

import numpy as np
import pandas as pd

from experiments.reporting import table2 as report_table2
from experiments.reporting import table4 as report_table4
from experiments.tracking.sweeps import schema_metrics


def row(cell, stage, width=1.0, **metrics):
    """A trial row as ``load_trials`` returns it from a store of pre-schema runs."""
    return {"cell": cell, "stage": stage, "seed": 0, "status": "FINISHED", **schema_metrics(metrics, width)}


def test_table2_cells_and_claims():
    rows = [row(f"Mc{k}", "stage1", 1 / k, **{"val/all/model/nats": 2.0 + 0.1 * i, "val/all/model/nats_se": 0.001})
            for i, k in enumerate((1, 2, 4, 8))]
    rows += [row(f"P{k}", "stage2", **{f"val/all/P1_{k}/nats": 1.9 + 0.05 * i, f"val/all/P1_{k}/nats_se": 0.001,
                                       "val/all/source/nats": 1.8, "val/all/source/nats_se": 0.001})
             for i, k in enumerate((2, 4, 8))]
    rows.append(row("control", "stage2", **{"val/all/model/nats": 1.8, "val/all/model/nats_se": 0.001}))
    table = report_table2.table2_cells(pd.DataFrame(rows))
    assert table.cells[("P", 1.0)].seeds == 3 and table.control.mean == 1.8
    verdicts = {v.comparison: v.held for v in report_table2.table2_verdicts(table, margin=0.01)}
    assert verdicts["P_1/2 < M~_1/2"] and verdicts["gap at 1/8 > gap at 1/4"]
    assert verdicts["source of P_s (mean of all its runs) vs control"]
    frame = report_table2.results_frame(table)
    assert frame.loc[(frame.model == "P_s") & (frame.s == "1/8"), "paper_nats"].item() == 2.297
    assert report_table2._runs_each(table) == "1 run each"
    second = [dict(r, seed=1) for r in rows if r["cell"] in ("P2", "P4")]  # P8 keeps one seed
    assert report_table2._runs_each(report_table2.table2_cells(pd.DataFrame(rows + second))) == "1-2 runs each"


def test_table4_reads_each_cell_on_its_own_split_and_checks_transfer():
    rows = []
    for split in ("half", "mod2"):
        for regime, c1 in (("all", 2.30), ("eighth", 2.40), ("c1_eighth", 2.35)):
            metrics = {f"val/{split}_C1/P1_2/nats": c1, f"val/{split}_C1/P1_2/nats_se": 0.01,
                       f"val/{split}_C2/P1_2/nats": 2.0, f"val/{split}_C2/P1_2/nats_se": 0.01,
                       "val/other_C1/P1_2/nats": 9.0}
            rows.append(row(f"{split}_{regime}", "stage2", **metrics))
    table = report_table4.table4_cells(pd.DataFrame(rows))
    assert len(table.cells) == 12 and table.cells[("mod2", "eighth", "C1")].mean == 2.40
    # a both_<regime> run (equal fractions: one training set for both splits) fills both splits' rows, each
    # read on its own groups; both_c1_eighth is not a thing (1/8/all depends on the split) and is ignored
    both = {f"val/{split}_{group}/P1_2/{stat}": value for split, c1 in (("half", 2.31), ("mod2", 2.32))
            for group, mean in (("C1", c1), ("C2", 2.0)) for stat, value in (("nats", mean), ("nats_se", 0.01))}
    shared = [r for r in rows if r["cell"].split("_", 1)[1] != "all"]
    shared += [row("both_all", "stage2", **both), row("both_c1_eighth", "stage2", **both)]
    table = report_table4.table4_cells(pd.DataFrame(shared))
    assert len(table.cells) == 12
    assert table.cells[("half", "all", "C1")].mean == 2.31 and table.cells[("mod2", "all", "C1")].mean == 2.32
    assert table.cells[("half", "c1_eighth", "C1")].mean == 2.35
    assert report_table4.cell_splits("both_eighth") == (("half", "mod2"), "eighth")
    assert report_table4.cell_splits("both_c1_eighth") is None and report_table4.cell_splits("M1") is None
    assert all(v.held for v in report_table4.table4_verdicts(table))
    per_image = {("half", "c1_eighth", "C1"): np.full(50, 2.35), ("half", "eighth", "C1"): np.full(50, 2.36) + np.linspace(-1e-3, 1e-3, 50)}
    paired = {v.comparison: v.held for v in report_table4.paired_verdicts(per_image)}
    assert paired['"1/2-1/2": C1 at 1/8/all < C1 at 1/8/1/8'] is True
    assert paired['"mod 2": C1 at 1/8/all < C1 at 1/8/1/8'] is None  # cells missing: not tested


def test_table4_reads_the_same_cells_and_per_image_losses_from_its_evidence_as_from_the_store(tmp_path):
    """Every subset a run is evaluated on (each split's C1 and C2) rides in the evidence's image records, so
    Table 4's cells and paired per-image claims read from the evidence equal those read from the store."""
    import json

    from mlflow.tracking import MlflowClient

    from experiments.reporting import toolkit
    from experiments.tracking.evidence import backfill, load_evidence, sweep_run_of, trials_of
    from experiments.tracking.sweeps import attach_per_image, load_trials

    uri, rng = f"sqlite:///{tmp_path}/mlflow.db", np.random.default_rng(0)
    client = MlflowClient(uri)
    exp_id = client.create_experiment("projectable", (tmp_path / "art").as_uri())
    sweep = client.create_run(exp_id, tags={"role": "sweep", "sweep_id": "table4-smoke-x", "scale": "smoke",
                                            "experiment": "table4"}).info.run_id
    for seed in (0, 1):
        for cell, c1 in (("both_all", 2.30), ("both_eighth", 2.40), ("half_c1_eighth", 2.35), ("mod2_c1_eighth", 2.36)):
            tags = {"sweep_id": "table4-smoke-x", "cell": cell, "stage": "stage2", "seed": str(seed),
                    "kind": "projected", "trial": f"{cell}-seed{seed}"}
            run_id = client.create_run(exp_id, tags=tags).info.run_id
            client.log_param(run_id, "train.steps", "5")
            client.log_param(run_id, "projector.scales", "[0.5]")
            per_image = {}
            for split in ("half", "mod2"):
                for group, mean in (("C1", c1), ("C2", 2.0)):
                    losses = (mean + 0.05 * rng.standard_normal(12)).tolist()
                    per_image[f"{split}_{group}/s1_2"] = losses
                    client.log_metric(run_id, f"val/{split}_{group}/s1_2/nats_per_token", float(np.mean(losses)))
                    client.log_metric(run_id, f"val/{split}_{group}/s1_2/nats_per_token_se", 0.01)
            (tmp_path / run_id).mkdir()
            (tmp_path / run_id / "per_image_nats.json").write_text(json.dumps(per_image))
            client.log_artifact(run_id, str(tmp_path / run_id / "per_image_nats.json"), "eval")
            (tmp_path / run_id / "model").mkdir()
            (tmp_path / run_id / "model" / "model.safetensors").write_bytes(b"weights")
            client.log_artifacts(run_id, str(tmp_path / run_id / "model"), "model")
            client.set_terminated(run_id, "FINISHED")
    client.set_terminated(sweep, "FINISHED")
    evidence = load_evidence(backfill(uri, "projectable", "table4-smoke-x", tmp_path / "reports", tmp_path / "cache"))

    store = attach_per_image(load_trials(uri, "projectable", "table4-smoke-x"), uri)
    mine = trials_of(evidence, per_image=True)
    assert toolkit.evidence_of(sweep_run_of(evidence)) is evidence
    ours, theirs = report_table4.table4_cells(mine), report_table4.table4_cells(store)
    assert len(ours.cells) == 12 and ours.cells == theirs.cells
    per_image_ours = report_table4.per_image_losses("sqlite:////nonexistent/mlflow.db", mine)
    per_image_store = report_table4.per_image_losses(uri, store)
    assert sorted(per_image_ours) == sorted(per_image_store) and len(per_image_ours) == 12
    assert all(np.array_equal(per_image_ours[key], per_image_store[key]) for key in per_image_ours)
    verdicts = lambda per_image: [repr(v) for v in report_table4.paired_verdicts(per_image)]  # NaN fields too
    assert verdicts(per_image_ours) == verdicts(per_image_store)
