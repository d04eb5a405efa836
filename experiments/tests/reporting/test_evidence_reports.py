"""The committed smoke reports render again from the committed smoke evidence alone (no MLflow store): the
same CSV, and markdown identical but for the line naming the commit that wrote it."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from experiments.config import code_root
from experiments.reporting import toolkit

SMOKE = code_root() / "reports" / "smoke"
WRITTEN_AT = "report written at"  # the provenance line that names the checkout writing the report


def render(name: str, reports: Path, source: str = "evidence") -> subprocess.CompletedProcess:
    """Run the notebook analysis/<name>.py as a script, with the notebooks' parameters."""
    env = {**os.environ, "PROJECTABLE_REPORT_SCALE": "smoke", "PROJECTABLE_REPORT_REPORTS": str(reports),
           "PROJECTABLE_REPORT_SOURCE": source, "PROJECTABLE_REPORT_CACHE": str(reports / "cache"),
           "PROJECTABLE_REPORT_TRACKING_URI": f"sqlite:///{reports}/no-store/mlflow.db", "MPLBACKEND": "Agg"}
    return subprocess.run([sys.executable, str(code_root() / "analysis" / f"{name}.py")], env=env,
                          capture_output=True, text=True, cwd=reports)


def without_written_at(text: str) -> list[str]:
    return [line for line in text.splitlines() if WRITTEN_AT not in line]


@pytest.fixture(scope="module")
def rendered(tmp_path_factory) -> Path:
    reports = tmp_path_factory.mktemp("reports")
    shutil.copytree(SMOKE / "evidence", reports / "smoke" / "evidence")
    for name in ("table1", "figure4", "figure3"):
        done = render(name, reports)
        assert done.returncode == 0, done.stderr[-3000:]
    assert not (reports / "no-store").exists()  # nothing looked for a store, nothing created one
    return reports / "smoke"


@pytest.mark.parametrize("name", ["table1", "table1_curves", "table1_task_use", "figure4"])
def test_the_csv_is_the_committed_one(rendered, name):
    assert (rendered / f"{name}.csv").read_text() == (SMOKE / f"{name}.csv").read_text()


@pytest.mark.parametrize("name", ["table1", "figure4", "figure3"])
def test_the_markdown_is_the_committed_one_but_for_who_wrote_it(rendered, name):
    mine, committed = (rendered / f"{name}.md").read_text(), (SMOKE / f"{name}.md").read_text()
    assert sum(WRITTEN_AT in line for line in committed.splitlines()) == 1
    assert without_written_at(mine) == without_written_at(committed)


@pytest.fixture
def smoke_params(tmp_path) -> toolkit.NotebookParams:
    """The notebooks' parameters over a copy of the committed smoke evidence, with no store."""
    shutil.copytree(SMOKE / "evidence", tmp_path / "smoke" / "evidence")
    return toolkit.notebook_params({"PROJECTABLE_REPORT_SCALE": "smoke", "PROJECTABLE_REPORT_REPORTS": str(tmp_path),
                                    "PROJECTABLE_REPORT_TRACKING_URI": f"sqlite:///{tmp_path}/none/mlflow.db"},
                                   quiet=True)


def test_reports_without_evidence_say_what_makes_their_runs(smoke_params, tmp_path):
    params = smoke_params
    assert toolkit.check_runs(params, "table1") == "evidence"
    assert toolkit.check_runs(params, "figure3") == "evidence"  # its samples ride in the evidence
    with pytest.raises(toolkit.MissingRuns, match=r"generators: no finished generators sweep .* nor an evidence "
                                                   r"file of one .* run `nox -s reproduce_generators -- scale=smoke`"):
        toolkit.check_runs(params, "generators")
    with pytest.raises(toolkit.MissingRuns, match="nor an evidence file of one"):
        toolkit.check_runs(params, "split_study")
    only_store = params._replace(source="store")
    with pytest.raises(toolkit.MissingRuns, match="no finished complete table1 sweep"):
        toolkit.check_runs(only_store, "table1")
    other = params._replace(sweeps=("table1-smoke-other",))
    with pytest.raises(toolkit.MissingRuns, match="nor an evidence file"):
        toolkit.check_runs(other, "table1")
    assert not (tmp_path / "none").exists()


def test_a_study_read_from_evidence_reads_its_table1_cells_from_the_evidence_of_its_source_sweeps(smoke_params,
                                                                                                   tmp_path):
    """An ablation or specialisation sweep read from evidence: its reference cells come from the committed
    evidence of the Table 1 sweeps its parts started from (``source_sweep``), with per-image losses, the same
    trials the Table 1 report reads; a source whose evidence is not committed is named, never guessed."""
    from types import SimpleNamespace

    from experiments.tracking.evidence import load_evidence, trials_of

    params = smoke_params
    (table1_file,) = sorted((tmp_path / "smoke" / "evidence").glob("table1-*.parquet"))
    table1 = load_evidence(table1_file)

    def study(*sources):
        sweeps = [{"tags": {"sweep_id": f"ablations-smoke-{i}", "source_sweep": source}} for i, source in
                  enumerate(sources)]
        return SimpleNamespace(evidence=table1._replace(sweeps=sweeps))

    reference = toolkit.reference_trials(params, study(table1.sweep_ids[0]), ["P8", "Mc8m"])
    expected = trials_of(table1, per_image=True)
    expected = expected[expected.cell.isin(["P8", "Mc8m"])]
    assert sorted(reference.run_id) == sorted(expected.run_id) and len(reference) > 0
    assert all(isinstance(losses, dict) and losses for losses in reference.per_image)
    with pytest.raises(toolkit.MissingRuns, match=r"table1-smoke-gone\.parquet"):
        toolkit.reference_trials(params, study(table1.sweep_ids[0], "table1-smoke-gone"), ["P8"])
    assert not (tmp_path / "none").exists()


def test_tables_2_and_4_read_their_data_summary_from_the_evidence(tmp_path, monkeypatch):
    """The data section of Tables 2 and 4 (stand-in or ImageNet, the VQ-VAE's reconstruction, the encoder):
    each finished run's extra records carry the sweep's summary, and a report read from evidence takes it from
    there, never from a store or a data cache."""
    from types import SimpleNamespace

    from mlflow.tracking import MlflowClient

    from experiments.reporting import evidence as report_evidence
    from experiments.tracking.evidence import load_evidence

    uri = f"sqlite:///{tmp_path}/mlflow.db"
    client = MlflowClient(uri)
    exp_id = client.create_experiment("projectable", artifact_location=str(tmp_path / "artifacts"))
    sweep = client.create_run(exp_id, tags={"role": "sweep", "sweep_id": "table2-smoke-0"}).info.run_id
    summary = {"images": "standin", "stand_in": True, "vqvae_val_psnr": 23.5, "encoder": "simclr"}
    asked = []

    def from_store(tracking_uri, sweep_run, cache_dir=None):
        asked.append(sweep_run.info.run_id)
        return summary

    monkeypatch.setattr(report_evidence.toolkit, "sweep_data_summary", from_store)
    run = SimpleNamespace(info=SimpleNamespace(run_id="trial-1"), data=SimpleNamespace(tags={"mlflow.parentRunId": sweep}))
    rows = report_evidence.data_summary(uri, run, tmp_path)
    assert asked == [sweep] and list(rows.key) == [toolkit.DATA_SUMMARY] and list(rows.run_id) == ["trial-1"]
    monkeypatch.undo()

    (table1_file,) = sorted((SMOKE / "evidence").glob("table1-*.parquet"))
    evidence = load_evidence(table1_file)
    stand_in = SimpleNamespace(evidence=evidence)
    with pytest.raises(toolkit.MissingRuns, match=r"holds no data summary .*`python -m experiments.reporting extras"):
        toolkit.sweep_data_summary("sqlite:///nowhere.db", stand_in)  # never a report without its data section
    with_summary = evidence._replace(extras=pd.concat([evidence.extras, rows, rows], ignore_index=True))
    assert toolkit.sweep_data_summary("sqlite:///nowhere.db", SimpleNamespace(evidence=with_summary)) == summary
    other = rows.assign(detail=json.dumps({**summary, "vqvae_val_psnr": 20.0}, sort_keys=True))
    mixed = evidence._replace(extras=pd.concat([evidence.extras, rows, other], ignore_index=True))
    with pytest.raises(toolkit.MissingRuns, match="2 different data summaries"):
        toolkit.sweep_data_summary("sqlite:///nowhere.db", SimpleNamespace(evidence=mixed))
