"""Evidence files: written from a store as trials finish, read back as the store's own readers return the
runs, merged only when the sweeps are one experiment in one precision and config."""

from __future__ import annotations

import hashlib
import json

import pandas as pd
import pytest
from mlflow.tracking import MlflowClient

from experiments.tracking import evidence as ev
from experiments.tracking.sweeps import attach_per_image, load_trials, metric_histories


def make_store(tmp_path, sweep_id="table1-smoke-aaaa", bf16="False", steps="20", lr="0.002"):
    """A sweep run and two finished trial runs (a stage-1 M1 and a P2 started from it) with metrics, curve
    points, final weights and per-image losses under the own and the permuted t."""
    uri = f"sqlite:///{tmp_path}/mlflow.db"
    client = MlflowClient(uri)
    exp = client.get_experiment_by_name("projectable")
    exp_id = exp.experiment_id if exp else client.create_experiment("projectable", (tmp_path / "art").as_uri())
    tags = {"role": "sweep", "sweep_id": sweep_id, "scale": "smoke", "experiment": "table1", "commit": "abc"}
    parent = client.create_run(exp_id, run_name=f"sweep {sweep_id}", tags=tags, start_time=1_000).info.run_id
    client.log_param(parent, "experiment.stages.stage1.steps", "20")
    client.log_metric(parent, "wall_time_s", 12.5)
    runs = {}
    for i, (cell, stage, kind) in enumerate((("M1", "stage1", "unconditional"), ("P2", "stage2", "projected"))):
        run_tags = {"sweep_id": sweep_id, "cell": cell, "stage": stage, "seed": "0", "kind": kind,
                    "trial": f"{stage}-{cell}-seed0", "cpu_model": "Test CPU", "cpu_flags": "avx2 avx512_bf16",
                    "mlflow.source.git.commit": "abc", "git_dirty": "false"}
        if cell == "P2":
            run_tags |= {"init_from": f"runs:/{runs['M1']}/model", "init_cell": "M1"}
        run_id = client.create_run(exp_id, run_name=run_tags["trial"], tags=run_tags, start_time=2_000 + i).info.run_id
        for key, value in {"train.steps": steps, "train.bf16": bf16, "train.lr": lr, "seed": "0",
                           "kind": kind}.items():
            client.log_param(run_id, key, value)
        for step in (0, 10, 20):
            client.log_metric(run_id, "val/all/s1/nats_per_token", 2.0 - step / 20 - i, step=step)
        client.log_metric(run_id, "train/s1/nats_per_token", 1.5, step=20)
        folder = tmp_path / run_id
        (folder / "model").mkdir(parents=True)
        (folder / "model" / "model.safetensors").write_bytes(f"weights of {cell}".encode())
        client.log_artifacts(run_id, str(folder / "model"), "model")
        per_image = {"all/s1": [1.0 + i, 2.0, 3.25], "all-t_permuted/s1": [4.0, 5.0, 6.5]}
        (folder / "per_image_nats.json").write_text(json.dumps(per_image))
        client.log_artifact(run_id, str(folder / "per_image_nats.json"), "eval")
        client.set_terminated(run_id, "FINISHED", end_time=9_000 + i)
        runs[cell] = run_id
    return uri, parent, runs


def write(tmp_path, uri, sweep_id="table1-smoke-aaaa", finish=True):
    path = ev.evidence_path(tmp_path / "reports", "smoke", sweep_id)
    writer = ev.EvidenceWriter(uri, "projectable", sweep_id, path, tmp_path / "cache")
    writer.start()
    writer.trial_done("stage1-M1-seed0")  # as the trial finishes
    if finish:
        MlflowClient(uri).set_terminated(
            MlflowClient(uri).search_runs(["1"], f"tags.sweep_id = '{sweep_id}' and tags.role = 'sweep'")[0].info.run_id,
            "FINISHED", end_time=10_000)
        writer.finish()  # the rest, and the sweep's final record
    return path


def test_written_as_trials_finish_and_read_back_as_the_store_returns_them(tmp_path):
    uri, parent, runs = make_store(tmp_path)
    path = ev.evidence_path(tmp_path / "reports", "smoke", "table1-smoke-aaaa")
    writer = ev.EvidenceWriter(uri, "projectable", "table1-smoke-aaaa", path, tmp_path / "cache")
    writer.start()
    writer.trial_done("stage1-M1-seed0")
    partial = ev.load_evidence(path)
    assert list(partial.runs.cell) == ["M1"] and not partial.finished  # the sweep still runs
    writer.trial_done("stage1-M1-seed0")  # written again: replaced, not doubled
    assert len(ev.load_evidence(path).runs) == 1
    MlflowClient(uri).set_terminated(parent, "FINISHED", end_time=10_000)
    writer.finish()
    evidence = ev.load_evidence(path)
    assert evidence.finished and sorted(evidence.runs.cell) == ["M1", "P2"]
    assert path.stat().st_size < 2e6

    run = evidence.runs.set_index("cell")
    assert run.loc["M1", "weights_sha256"] == f"model.safetensors:{hashlib.sha256(b'weights of M1').hexdigest()}"
    assert run.loc["P2", "source_run"] == runs["M1"] and run.loc["P2", "source_cell"] == "M1"
    assert run.loc["M1", "source_run"] == "" and run.loc["M1", "precision"] == "fp32"
    assert run.loc["P2", "cpu_model"] == "Test CPU" and "avx512_bf16" in run.loc["P2", "cpu_flags"]
    assert run.loc["M1", "steps"] == 20 and run.loc["M1", "wall_time_s"] == pytest.approx(7.0)
    assert len(run.loc["M1", "cell_config"]) == 8 and run.loc["M1", "cell_config"] != run.loc["P2", "cell_config"]

    images = evidence.images[evidence.images.run_id == runs["M1"]]
    assert set(zip(images.key, images.subset, images.condition, images.model)) == {
        ("all/s1", "all", "own", "s1"), ("all-t_permuted/s1", "all", "permuted", "s1")}

    # the store's readers and the evidence give the same trials, per-image losses and curves
    store = attach_per_image(load_trials(uri, "projectable", "table1-smoke-aaaa"), uri)
    mine = ev.trials_of(evidence, per_image=True)
    shared = [c for c in store.columns if c != "per_image"]
    pd.testing.assert_frame_equal(mine[shared], store[shared], check_like=True, check_dtype=False)
    assert mine.per_image.tolist() == store.per_image.tolist()
    keys = ["val/all/s1/nats_per_token"]
    pd.testing.assert_frame_equal(
        ev.histories_of(evidence, list(runs.values()), keys).sort_values(["run_id", "step"]).reset_index(drop=True),
        metric_histories(uri, list(runs.values()), keys).sort_values(["run_id", "step"]).reset_index(drop=True))
    # the backfill command's writer, from the store afterwards, writes the same records
    again = ev.load_evidence(ev.backfill(uri, "projectable", "table1-smoke-aaaa", tmp_path / "again", tmp_path / "cache"))
    for field in ("runs", "metrics", "curves", "images"):
        order = lambda frame: frame.sort_values(list(frame.columns[:3])).reset_index(drop=True)
        pd.testing.assert_frame_equal(order(getattr(again, field)), order(getattr(evidence, field)))
    stand_in = ev.sweep_run_of(evidence)
    assert stand_in.data.tags["sweep_id"] == "table1-smoke-aaaa" and stand_in.info.end_time == 10_000
    assert stand_in.data.metrics["wall_time_s"] == 12.5


def test_image_keys_name_their_condition():
    assert ev.parse_image_key("all/s1_4") == ("all", "own", "s1_4")
    assert ev.parse_image_key("held_out-t_mean/s1") == ("held_out", "mean", "s1")
    with pytest.raises(ev.EvidenceError, match="not '<subset>/<model>'"):
        ev.parse_image_key("s1")


def test_precision_from_the_params():
    assert ev.precision_of({"train.precision": "bf16", "train.bf16": "False"}) == "bf16"
    assert ev.precision_of({"train.bf16": "True"}) == "bf16"
    assert ev.precision_of({}) == "fp32"


def test_merge_refuses_other_precisions_configs_and_doubled_seeds(tmp_path):
    base = ev.load_evidence(write(tmp_path, make_store(tmp_path, "s-a")[0], "s-a"))

    def another(sweep_id: str, **runs) -> ev.Evidence:
        """The same sweep's evidence under another sweep id, its runs' columns changed as given."""
        sweep = {**base.sweeps[0], "tags": {**base.sweeps[0]["tags"], "sweep_id": sweep_id}}
        return base._replace(sweeps=[sweep], runs=base.runs.assign(**runs))

    # a precision read from the params: a bf16 run of the same store would say so
    assert ev.precision_of({"train.bf16": "True"}) == "bf16"
    with pytest.raises(ev.EvidenceError, match="different precisions"):
        ev.merge_evidence([base, another("s-b", precision="bf16", seed=1)])
    with pytest.raises(ev.EvidenceError, match="same cell with different configs"):
        ev.merge_evidence([base, another("s-c", cell_config="0ther", seed=1)])
    with pytest.raises(ev.EvidenceError, match=r"both hold cell and seed \[\('M1', 0\), \('P2', 0\)\]"):
        ev.merge_evidence([base, another("s-d")])
    other_margin = another("s-e", seed=1)
    other_margin.sweeps[0]["params"] = {**base.sweeps[0]["params"], "experiment.stages.stage1.steps": "40"}
    with pytest.raises(ev.EvidenceError, match="differ in experiment.stages.stage1.steps"):
        ev.merge_evidence([base, other_margin])
    # seed 1 of the same cells, from a partial sweep: merged, both listed
    merged = ev.merge_evidence([base, another("s-d", seed=1)])
    assert sorted(merged.runs.seed) == [0, 0, 1, 1] and merged.sweep_ids == ["s-a", "s-d"]
    assert ev.sweep_run_of(merged).data.tags["sweep_id"] == "s-a + s-d"
    assert ev.sweep_run_of(merged).data.metrics["wall_time_s"] == 25.0  # both sweeps' wall time


def test_unreadable_or_newer_files_are_refused(tmp_path):
    bad = tmp_path / "x.parquet"
    bad.write_text("not parquet")
    with pytest.raises(ev.EvidenceError, match="not a readable evidence file"):
        ev.load_evidence(bad)
    with pytest.raises(ev.EvidenceError, match="no such evidence file"):
        ev.load_evidence(tmp_path / "missing.parquet")
    import pyarrow as pa
    import pyarrow.parquet as pq

    pq.write_table(pa.table({"record": ["sweep"]}).replace_schema_metadata({ev.SCHEMA_KEY: b"99"}), bad)
    with pytest.raises(ev.EvidenceError, match="evidence schema 99, this code reads 1"):
        ev.load_evidence(bad)
    with pytest.raises(ev.EvidenceError, match="columns outside the schema"):
        ev.write_rows(tmp_path / "y.parquet", pd.DataFrame([{"record": "run", "colour": "red"}]))


def test_the_reports_readme_documents_every_column():
    from experiments.config import code_root

    text = (code_root() / "reports" / "README.md").read_text()
    missing = [name for name, (kind, _) in ev.COLUMNS.items() if f"| `{name}` | {kind} |" not in text]
    assert not missing, f"reports/README.md lacks the evidence columns {missing}"
    assert f"`projectable.evidence.schema`, now {ev.SCHEMA_VERSION}" in text


def test_pre_schema_metric_names_are_renamed_where_stores_are_read():
    from experiments.tracking.sweeps import legacy_keys, schema_metrics, schema_per_image

    logged = {"val/all/model/nats": 2.0, "val/all/model/nats_se": 0.1, "val/all/source/bpd": 3.0,
              "val/held_out/P1_4/nats": 1.5, "train/s1/nats_per_token": 1.0}
    assert schema_metrics(logged, 0.5) == {
        "val/all/s1_2/nats_per_token": 2.0, "val/all/s1_2/nats_per_token_se": 0.1, "val/all/s1/bits_per_dim": 3.0,
        "val/held_out/s1_4/nats_per_token": 1.5, "train/s1/nats_per_token": 1.0}
    # a run that logged both keeps its schema value
    assert schema_metrics({"val/all/model/nats": 9.0, "val/all/s1/nats_per_token": 2.0}, 1.0) == {
        "val/all/s1/nats_per_token": 2.0}
    assert schema_per_image({"all/P1_8": [1.0], "all-t_mean/model": [2.0]}, 0.25) == {
        "all/s1_8": [1.0], "all-t_mean/s1_4": [2.0]}
    assert legacy_keys("val/all/s1/nats_per_token", 1.0) == ["val/all/model/nats", "val/all/source/nats"]
    assert legacy_keys("val/all/s1_4/nats_per_token_se", 1.0) == ["val/all/P1_4/nats_se"]
    assert legacy_keys("train/s1/nats_per_token", 1.0) == []


def test_extras_added_after_the_sweep_ran_are_appended_once_and_leave_the_rest_as_it_was(tmp_path):
    uri, _, runs = make_store(tmp_path)
    path = write(tmp_path, uri)
    before = ev.load_evidence(path)
    called = []

    def p_only(tracking_uri, run, cache):  # an extra written for the projected run only
        called.append(run.info.run_id)
        if run.data.tags["cell"] != "P2":
            return pd.DataFrame()
        return pd.DataFrame([{"record": "extra", "run_id": run.info.run_id, "key": "new/thing", "detail": "{}"}])

    p_only.keys = ("new/thing",)
    assert ev.add_missing_extras(uri, path, tmp_path / "cache", [p_only]) == ["new/thing"]
    after = ev.load_evidence(path)
    assert list(after.extras.run_id) == [runs["P2"]] and sorted(called) == sorted(runs.values())
    for field in ("runs", "metrics", "curves", "images"):
        pd.testing.assert_frame_equal(getattr(after, field), getattr(before, field))
    assert after.sweeps == before.sweeps
    called.clear()
    assert ev.add_missing_extras(uri, path, tmp_path / "cache", [p_only]) == []  # P2 has it now
    assert called == [runs["M1"]] and len(ev.load_evidence(path).extras) == 1


def test_partial_sweeps_name_the_seeds_their_declaration_asks_for_and_they_lack():
    """A report of partial sweeps (experiment.seed_subset) is refused until every part is there: a cell's
    declared seeds come from its own count or list, else the cell it continues, else the experiment's count."""
    from experiments.config import code_root

    (path,) = sorted((code_root() / "reports" / "smoke" / "evidence").glob("table1-*.parquet"))
    smoke = ev.load_evidence(path)  # one whole sweep of seed 0 in every cell
    assert ev.missing_seeds(smoke) == {}

    def partial(**params):
        sweep = {**smoke.sweeps[0], "params": {**smoke.sweeps[0]["params"], "experiment.seed_subset": "[0]", **params}}
        return ev.missing_seeds(smoke._replace(sweeps=[sweep]))

    cells = set(smoke.runs.cell)
    assert partial() == {}  # the smoke scale declares one seed: seed 0 is all of it
    declared_two = partial(**{"experiment.seeds": "2", "experiment.stages.stage1.cells.M2.seeds": "1",
                              "experiment.stages.stage1.cells.M4.seeds": "[0]"})
    assert set(declared_two) == cells - {"M2", "M2m", "M4", "M4m"}  # M2m continues M2, M4m continues M4
    assert all(missing == [1] for missing in declared_two.values())
