"""Table 3 from evidence: the training-draw losses its sweep writes beside each projected run (its own and the
Table 1 runs it reuses) give, without the store, the same trials, training losses and cells as the store path
that scores the saved weights again."""

from __future__ import annotations

import json

import pandas as pd
import pytest
from mlflow.tracking import MlflowClient

from experiments.reporting import table3, toolkit
from experiments.reporting.evidence import TABLE3_RUN, TABLE3_TRAIN, table3_training
from experiments.tracking.evidence import backfill, evidence_path, load_evidence, write_rows
from experiments.tracking.store import recorded_run_id
from experiments.train import train

SOURCE, SWEEP = "table1-smoke-t3source", "table3-smoke-t3"


def as_trial(client: MlflowClient, run_dir, sweep_id: str, cell: str, stage: str, kind: str) -> str:
    """Tag a trained run as a sweep's trial (what a sweep's driver sets), return its run id."""
    run_id = recorded_run_id(run_dir)
    for key, value in {"sweep_id": sweep_id, "cell": cell, "stage": stage, "seed": "0", "kind": kind,
                       "trial": f"{stage}-{cell}-seed0"}.items():
        client.set_tag(run_id, key, value)
    return run_id


def sweep(client: MlflowClient, exp_id: str, sweep_id: str, experiment: str, **tags: str) -> None:
    run = client.create_run(exp_id, run_name=f"sweep {sweep_id}", tags={
        "role": "sweep", "sweep_id": sweep_id, "scale": "smoke", "experiment": experiment, **tags})
    client.log_param(run.info.run_id, "data.val_size", "16")
    client.set_terminated(run.info.run_id, "FINISHED")


@pytest.fixture(scope="module")
def made(tmp_path_factory):
    """A Table 1 sweep (M_1 and P_1/4 from it) and a Table 3 sweep (P_1/8 from that M_1 at r = 4) reusing its
    P_1/4 as cell P4_M1_r8, in one store, with both evidence files written from it (``backfill``)."""
    from experiments.config import compose

    root = tmp_path_factory.mktemp("table3")
    uri = f"sqlite:///{root}/mlflow.db"
    base = ["scale=smoke", f"paths.runs={root / 'runs'}", f"paths.cache={root / 'cache'}", f"tracking.uri={uri}",
            f"tracking.artifacts={root / 'mlartifacts'}", "train.steps=3", "eval.samples=0", "data.val_size=16"]
    dirs = {name: root / name for name in ("M1", "P4", "P8")}
    train(compose([*base, "kind=unconditional", f"run_dir={dirs['M1']}"]))
    for name, scale, rank in (("P4", 0.25, 8), ("P8", 0.125, 4)):
        train(compose([*base, "kind=projected", f"projector.scales=[{scale}]", f"projector.rank={rank}",
                       f"init_from={dirs['M1']}", f"run_dir={dirs[name]}"]))
    client = MlflowClient(uri)
    exp_id = client.get_experiment_by_name("projectable").experiment_id
    runs = {"M1": as_trial(client, dirs["M1"], SOURCE, "M1", "stage1", "unconditional"),
            "P4": as_trial(client, dirs["P4"], SOURCE, "P4", "stage2", "projected"),
            "P8": as_trial(client, dirs["P8"], SWEEP, "P8_M1_r4", "stage2", "projected")}
    sweep(client, exp_id, SOURCE, "table1")
    sweep(client, exp_id, SWEEP, "table3", reused=json.dumps({"P4_M1_r8": "P4"}), source_sweep=SOURCE)
    extras = {"table1": [table3_training], "table3": [table3_training]}
    for sweep_id in (SOURCE, SWEEP):
        backfill(uri, "projectable", sweep_id, root / "reports", root / "cache", extras)
    env = {"PROJECTABLE_REPORT_SCALE": "smoke", "PROJECTABLE_REPORT_REPORTS": str(root / "reports"),
           "PROJECTABLE_REPORT_TRACKING_URI": uri, "PROJECTABLE_REPORT_CACHE": str(root / "cache")}
    params = toolkit.notebook_params(env, quiet=True)
    return params, runs


def test_only_projected_runs_of_one_scale_carry_a_training_draw(made):
    params, runs = made
    evidence = load_evidence(evidence_path(params.out_dir.parent, "smoke", SOURCE))
    described = evidence.extras[evidence.extras.key == TABLE3_RUN]
    assert list(described.run_id) == [runs["P4"]]  # not M_1
    detail = json.loads(described.detail.iloc[0])
    assert (detail["source"], detail["scale"], detail["rank"], detail["images"]) == (1.0, 0.25, 8, 16)
    images = evidence.extras[evidence.extras.key == TABLE3_TRAIN]
    assert sorted(images.image) == list(range(16))
    assert images.value.mean() == pytest.approx(detail["train_nats"], rel=1e-6)


def test_evidence_gives_the_stores_trials_training_losses_and_cells(made):
    params, runs = made
    store = table3.table3_runs(params._replace(source="store"))
    mine = table3.table3_runs(params._replace(source="evidence", tracking_uri="sqlite:////nonexistent/mlflow.db"))
    columns = ["run_id", "cell", "seed", "status", "source", "scale", "target", "rank", "reused_from"]
    pd.testing.assert_frame_equal(mine.trials[columns].reset_index(drop=True),
                                  store.trials[columns].reset_index(drop=True), check_dtype=False)
    assert list(mine.trials.cell) == ["P4_M1_r8", "P8_M1_r4"]  # the reused P_1/4 under Table 3's name
    assert list(mine.trials.reused_from) == [f"{SOURCE}/P4", ""]
    assert mine.trials.per_image.tolist() == store.trials.per_image.tolist()
    pd.testing.assert_frame_equal(mine.train.reset_index(drop=True), store.train.reset_index(drop=True))
    assert mine.evaluation["images"] == store.evaluation["images"] == 16
    pd.testing.assert_frame_equal(table3.table3_cells(mine.trials, mine.train).frame,
                                  table3.table3_cells(store.trials, store.train).frame)


def test_a_run_without_its_training_draw_is_named_with_the_command_that_adds_it(made, tmp_path):
    params, runs = made
    reports = tmp_path / "reports"
    for sweep_id in (SOURCE, SWEEP):
        evidence = evidence_path(params.out_dir.parent, "smoke", sweep_id)
        frame = pd.read_parquet(evidence)
        kept = frame[~((frame.record == "extra") & (frame.run_id == runs["P4"]))]  # the reused run's
        write_rows(evidence_path(reports, "smoke", sweep_id), kept)
    lacking = params._replace(source="evidence", out_dir=reports / "smoke")
    with pytest.raises(toolkit.MissingRuns, match=r"training-draw losses of cells P4_M1_r8; .*extras <sweep id>"):
        table3.table3_runs(lacking)
