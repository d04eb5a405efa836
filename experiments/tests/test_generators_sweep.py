"""One end-to-end smoke run of ``experiment=generators`` after a smoke Table 1 (minutes: ``nox -s slow``): the
sweep reuses Table 1's P_s and baselines, trains the nine new cells from Table 1's stage-1 models, and its
notebook writes the report files."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient

from experiments.config import code_root, compose
from experiments.sweep import run_sweep
from experiments.tests.conftest import Store
from experiments.tests.test_generators import NEW, REUSED

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def swept(local_ray, tmp_path_factory):
    store = Store(tmp_path_factory.mktemp("generators_store"))
    common = ["scale=smoke", *store.overrides()]
    table1 = run_sweep(compose(["experiment=table1", *common]))
    return store, table1, run_sweep(compose(["experiment=generators", *common]))


def test_the_sweep_reuses_table1_and_trains_the_new_cells_from_its_stage1_models(swept):
    store, table1, result = swept
    client = MlflowClient(store.uri)
    parent = client.get_run(result.run_id)
    assert parent.info.status == "FINISHED" and parent.data.tags["source_sweep"] == table1.sweep_id
    assert json.loads(parent.data.tags["reused"]) == {cell: cell for cell in REUSED}
    assert sorted(result.trials["stage2"]) == sorted(f"{cell}-seed0" for cell in NEW)  # nothing else trained
    stage1 = {run.data.tags["cell"]: run.info.run_id for run in client.search_runs(
        [parent.info.experiment_id], f"tags.sweep_id = '{table1.sweep_id}' and tags.stage = 'stage1'")}
    runs = client.search_runs([parent.info.experiment_id],
                              f"tags.sweep_id = '{result.sweep_id}' and tags.role != 'sweep'")
    assert len(runs) == len(NEW)
    for run in runs:
        generator, scale = NEW[run.data.tags["cell"]]
        start = "M1" if generator == "blocks" else f"M{round(1 / scale)}"
        assert run.info.status == "FINISHED" and run.data.tags["generator"] == generator
        assert run.data.tags["init_from"] == f"runs:/{stage1[start]}/model"
        assert int(run.data.tags["match/own_total"]) == run.data.metrics[f"num_params/projector_{scale}"]
        widths = {k.split("/")[2] for k in run.data.metrics if k.startswith("val/all/")}
        assert widths == ({"s1", f"s1_{round(1 / scale)}"} if generator == "blocks" else {f"s1_{round(1 / scale)}"})


def test_the_notebook_writes_the_report_and_a_sample_grid_per_generator(swept, tmp_path):
    store, table1, result = swept
    notebook = tmp_path / "generators.ipynb"
    reports = tmp_path / "reports"
    env = {**os.environ, "PROJECTABLE_REPORT_SCALE": "smoke", "PROJECTABLE_REPORT_TRACKING_URI": store.uri,
           "PROJECTABLE_REPORT_REPORTS": str(reports), "PROJECTABLE_REPORT_CACHE": str(store.root / "report_cache")}
    bin_dir = Path(sys.executable).parent
    subprocess.run([bin_dir / "jupytext", "--to", "ipynb", "-o", notebook, code_root() / "analysis/generators.py"],
                   check=True, capture_output=True)
    subprocess.run([bin_dir / "jupyter", "execute", "--inplace", notebook], check=True, env=env, capture_output=True)
    out = reports / "smoke"
    md = (out / "generators.md").read_text()
    assert result.sweep_id in md and table1.sweep_id in md and "Holm-Bonferroni over 18" in md
    assert "| 1/8 |" in md and "## Parameters" in md and "-" not in md.split("| 1/2 |")[1].split("\n")[0]
    assert len((out / "generators.csv").read_text().splitlines()) == 19  # header + 6 columns x 3 s
    assert (out / "generators.png").stat().st_size > 10_000
    for generator in ("projection", "blocks", "low_rank", "linear"):
        assert (out / f"generators_samples_{generator}.png").stat().st_size > 1_000
    logged = {a.path for a in MlflowClient(store.uri).list_artifacts(result.run_id, "reports/smoke")}
    assert {"reports/smoke/generators.md", "reports/smoke/generators_samples_linear.png"} <= logged


def test_the_report_renders_from_the_evidence_files_alone_as_from_the_store(swept, tmp_path):
    """The sweeps' evidence files (the generators' tags and sample rows, Table 1's reused runs and their Figure 3
    rows) give the store's report: the same CSV and sample grids, markdown identical but for who wrote it."""
    import shutil

    store, table1, result = swept
    written = {}
    for source in ("store", "evidence"):
        reports = tmp_path / source
        if source == "evidence":
            shutil.copytree(store.root / "reports" / "smoke" / "evidence", reports / "smoke" / "evidence")
        uri = store.uri if source == "store" else f"sqlite:///{tmp_path}/no-store/mlflow.db"
        env = {**os.environ, "PROJECTABLE_REPORT_SCALE": "smoke", "PROJECTABLE_REPORT_TRACKING_URI": uri,
               "PROJECTABLE_REPORT_REPORTS": str(reports), "PROJECTABLE_REPORT_SOURCE": source,
               "PROJECTABLE_REPORT_CACHE": str(tmp_path / f"cache-{source}"), "MPLBACKEND": "Agg"}
        done = subprocess.run([sys.executable, str(code_root() / "analysis" / "generators.py")], env=env,
                              capture_output=True, text=True, cwd=tmp_path)
        assert done.returncode == 0, done.stderr[-3000:]
        written[source] = reports / "smoke"
    assert not (tmp_path / "no-store").exists()
    store_out, evidence_out = written["store"], written["evidence"]
    assert (evidence_out / "generators.csv").read_text() == (store_out / "generators.csv").read_text()
    lines = lambda path: [line for line in path.read_text().splitlines() if "report written at" not in line]
    assert lines(evidence_out / "generators.md") == lines(store_out / "generators.md")
    for generator in ("projection", "blocks", "low_rank", "linear"):
        name = f"generators_samples_{generator}.png"
        assert (evidence_out / name).read_bytes() == (store_out / name).read_bytes()
