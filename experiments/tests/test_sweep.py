"""Table 1's smoke sweep through Ray Tune into MLflow: every trial FINISHED with metrics, a failed trial
retried from its checkpoint, a rerun resumes without retraining, the report and the UI read the runs."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from mlflow.tracking import MlflowClient

from experiments.config import code_root, compose
from experiments.reporting import table1
from experiments.sweep import run_sweep
from experiments.tracking import ui
from experiments.tracking.store import git_commit
from experiments.tracking.sweeps import load_trials

TABLE1_TRIALS = 20  # 8 in stage 1; 12 in stage 2: P_1/2, P_1/4, P_1/8, P~, the control and 7 step-matched baselines


def trial_runs(uri: str, sweep_id: str):
    client = MlflowClient(uri)
    exp = client.get_experiment_by_name("projectable")
    runs = client.search_runs([exp.experiment_id], f"tags.sweep_id = '{sweep_id}'")
    return [r for r in runs if r.data.tags.get("role") != "sweep"], [r for r in runs if r.data.tags.get("role") == "sweep"]


@pytest.fixture(scope="module")
def smoke_sweep(local_ray, store):
    cfg = compose(["experiment=table1", "scale=smoke", "++sweep.fail_once={M2-seed0: 15}",
                   *store.overrides(runs="sweep_runs")])
    return cfg, run_sweep(cfg)


def test_smoke_sweep_lands_finished_runs_with_metrics(smoke_sweep, store):
    cfg, result = smoke_sweep
    trials, sweeps = trial_runs(store.uri, result.sweep_id)
    assert len(sweeps) == 1 and sweeps[0].info.status == "FINISHED"
    assert sweeps[0].data.tags["scale"] == "smoke" and sweeps[0].data.tags["commit"]
    assert len(trials) == TABLE1_TRIALS
    for run in trials:
        assert run.info.status == "FINISHED", run.info.run_name
        assert run.info.run_name == run.data.tags["trial"]
        assert run.data.tags["sweep_id"] == result.sweep_id and run.data.tags["scale"] == "smoke"
        assert run.data.tags["mlflow.parentRunId"] == result.run_id
        assert any(k.startswith("val/all/") and k.endswith("/nats_per_token") for k in run.data.metrics)
        if run.data.tags["stage"] == "stage2":
            assert run.data.tags["init_from"].startswith("runs:/")
            assert run.data.params["train.steps"] == str(cfg.budget.stage2_steps)


def test_the_sweeps_wall_time_is_kept_as_each_trial_ends(smoke_sweep, store):
    """A sitting killed outright (SIGKILL) cannot log at its end: the wall time so far is logged as each
    trial finishes, so that a resumed sweep adds to it rather than starting from 0."""
    _, result = smoke_sweep
    history = [m.value for m in MlflowClient(store.uri).get_metric_history(result.run_id, "wall_time_s")]
    assert len(history) == TABLE1_TRIALS + 1  # one per finished trial, and the sweep's end
    assert history == sorted(history) and history[0] > 0
    assert history[-1] == pytest.approx(result.wall_time_s)


def test_a_failed_trial_is_retried_from_its_checkpoint(smoke_sweep, store):
    _, result = smoke_sweep
    run_dir = store.root / "sweep_runs" / result.sweep_id / "M2-seed0"
    assert (run_dir / ".failed_once").exists()  # it did fail once
    trials, _ = trial_runs(store.uri, result.sweep_id)
    (run,) = [r for r in trials if r.info.run_name == "M2-seed0"]  # and the retry continued the same run
    assert run.info.status == "FINISHED"
    history = MlflowClient(store.uri).get_metric_history(run.info.run_id, "train/s1_2/nats_per_token")
    assert max(m.step for m in history) == 20


def test_rerunning_the_sweep_resumes_without_retraining(smoke_sweep, store):
    cfg, result = smoke_sweep
    before = {r.info.run_id: r.info.end_time for r in trial_runs(store.uri, result.sweep_id)[0]}
    again = run_sweep(cfg)
    assert again.sweep_id == result.sweep_id and again.run_id == result.run_id
    after = {r.info.run_id: r.info.end_time for r in trial_runs(store.uri, result.sweep_id)[0]}
    assert after == before


def test_report_notebook_writes_table1_from_the_sweep(smoke_sweep, store, tmp_path):
    notebook = tmp_path / "table1.ipynb"
    env = {**os.environ, "PROJECTABLE_REPORT_SCALE": "smoke", "PROJECTABLE_REPORT_TRACKING_URI": store.uri,
           "PROJECTABLE_REPORT_REPORTS": str(tmp_path / "reports")}
    bin_dir = Path(sys.executable).parent
    subprocess.run([bin_dir / "jupytext", "--to", "ipynb", "-o", notebook, code_root() / "analysis/table1.py"],
                   check=True, capture_output=True)
    subprocess.run([bin_dir / "jupyter", "execute", "--inplace", notebook], check=True, env=env,
                   capture_output=True)
    md = (tmp_path / "reports" / "smoke" / "table1.md").read_text()
    assert smoke_sweep[1].sweep_id in md and "| 1/8 |" in md and "## Claims" in md
    # both the training commit (a sweep tag) and the checkout that wrote the report are named
    written_at = git_commit(code_root())
    assert f"(training); report written at `{written_at}`" in md
    assert (tmp_path / "reports" / "smoke" / "table1.png").stat().st_size > 10_000
    logged = {a.path for a in MlflowClient(store.uri).list_artifacts(smoke_sweep[1].run_id, "reports/smoke")}
    assert {"reports/smoke/table1.md", "reports/smoke/table1.csv", "reports/smoke/table1.png"} <= logged
    csv = (tmp_path / "reports" / "smoke" / "table1.csv").read_text()
    assert csv.count("\n") == 18  # header + 16 cells + control


def test_figure3_from_the_evidence_draws_the_samples_the_stored_weights_draw(smoke_sweep, store, tmp_path):
    """The rows the sweep's driver sampled into the evidence as each run finished are, token for token, the
    rows the figure samples again from the stored final weights."""
    from experiments.reporting import evidence as report_evidence
    from experiments.reporting import figure3
    from experiments.tracking.evidence import evidence_path, load_evidence

    sweep_id = smoke_sweep[1].sweep_id
    trials = load_trials(store.uri, "projectable", sweep_id)
    models = figure3.load_table1_models(trials, store.uri, tmp_path / "cache")
    tasks = torch.from_numpy(models.data.validation_items().task[: figure3.NUM_TASKS])
    stored = figure3.sample_rows(models.projected, models.conditional, tasks)
    drawn = report_evidence.figure3_rows(load_evidence(evidence_path(store.root / "reports", "smoke", sweep_id)), trials)
    assert [row.label for row in drawn.rows] == [row.label for row in stored] == [
        "P_1/2(t)", "P_1/4(t)", "P_1/8(t)", "M~_1/2 | t", "M~_1/4 | t", "M~_1/8 | t"]
    for ours, theirs in zip(drawn.rows, stored):
        assert torch.equal(ours.tokens, theirs.tokens), ours.label
    assert drawn.baselines == models.baselines == "matched" and drawn.evaluation["seed"] == figure3.SEED


def test_report_cells_combine_the_three_projected_sources(smoke_sweep, store):
    trials = load_trials(store.uri, "projectable", smoke_sweep[1].sweep_id)
    table = table1.table1_cells(trials)
    source = table.cells[("P", 1.0)]  # P_1/2, P_1/4, P_1/8 runs' sources, all continuing M_1's seed 0
    assert (source.seeds, source.run_count) == (1, 3)  # one lineage (init_from read back from the store)
    m1 = trials.loc[trials.cell == "M1", "run_id"].item()
    assert dict(source.lineages).keys() == {m1} and dict(table.control.lineages).keys() == {m1}
    assert table.control is not None and len(table.cells) == 16


def test_mlflow_ui_answers_runs_search_with_the_sweep(smoke_sweep, store, free_port):
    port = free_port
    server = ui.start_server(store.uri, store.root / "mlartifacts", port=port, log=store.root / "ui.log")
    try:
        exp = MlflowClient(store.uri).get_experiment_by_name("projectable")
        runs = ui.search_runs(f"http://127.0.0.1:{port}", [exp.experiment_id],
                              f"tags.sweep_id = '{smoke_sweep[1].sweep_id}'")
        assert len(runs) == TABLE1_TRIALS + 1
        assert {r["info"]["status"] for r in runs} == {"FINISHED"}
    finally:
        ui.stop_server(server)
    assert server.poll() is not None


def listening(port: int) -> bool:
    with socket.socket() as s:
        return s.connect_ex(("127.0.0.1", port)) == 0


def wait_for(condition, seconds: float) -> bool:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.5)
    return condition()


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="the parent-death signal is Linux's")
def test_mlflow_ui_stops_when_the_session_that_started_it_is_killed(tmp_path, free_port):
    """``kill <nox pid>`` ends nox without passing SIGTERM on; the UI must still stop its server."""
    port = free_port
    command = [sys.executable, "-m", "experiments.tracking.ui", "--port", str(port),
               "--backend-store-uri", f"sqlite:///{tmp_path}/mlflow.db", "--artifacts", str(tmp_path / "art")]
    session = subprocess.Popen([sys.executable, "-c", f"import subprocess, time; subprocess.Popen({command!r}); "
                                "time.sleep(600)"], cwd=code_root(), start_new_session=True)
    try:
        assert wait_for(lambda: listening(port), 90), "the UI never started"
        session.terminate()
        session.wait(10)
        assert wait_for(lambda: not listening(port), 30), "the server outlived its session"
    finally:
        session.kill()


def test_tune_results_carry_each_trials_hyperparameters(smoke_sweep, store):
    from ray.tune import ExperimentAnalysis

    _, result = smoke_sweep
    frame = ExperimentAnalysis(str(store.root / "ray_results" / f"{result.sweep_id}-stage2")).dataframe()
    by_name = frame.set_index("config/trial/name")
    assert by_name.loc["P4-seed0", "config/trial/kind"] == "projected"
    assert by_name.loc["P4-seed0", "config/trial/scales"] == "0.25" and by_name.loc["P4-seed0", "config/trial/rank"] == 8
    assert set(frame["config/trial/stage"]) == {"stage2"} and (frame["config/trial/steps"] == 10).all()


def test_runs_name_their_source_and_commit_as_mlflow_does(smoke_sweep, store):
    trials, sweeps = trial_runs(store.uri, smoke_sweep[1].sweep_id)
    for run in [*trials, *sweeps]:
        assert run.data.tags["mlflow.source.name"] == "experiments/sweep.py"
        assert len(run.data.tags["mlflow.source.git.commit"]) in (40, len("unknown"))


def test_a_pinned_sweep_id_with_another_config_is_refused(smoke_sweep, store):
    from experiments.config import ConfigError

    cfg, result = smoke_sweep
    changed = compose(["experiment=table1", "scale=smoke", f"sweep.id={result.sweep_id}", "train.lr=0.01",
                       *store.overrides(runs="sweep_runs")])
    with pytest.raises(ConfigError, match=r"was started with another config.*train\.lr"):
        run_sweep(changed)


def test_the_readmes_experiment_analysis_snippet_runs_on_the_sweep(smoke_sweep, store):
    import re

    readme = (code_root() / "README.md").read_text()
    snippet = next(block for block in re.findall(r"```python\n(.*?)```", readme, re.S) if "ExperimentAnalysis" in block)
    folder = store.root / "ray_results" / f"{smoke_sweep[1].sweep_id}-stage2"
    namespace: dict = {}
    exec(snippet.replace('"ray_results/<sweep id>-stage2"', repr(str(folder))), namespace)  # noqa: S102
    grouped = namespace["frame"].groupby(["config/trial/kind", "config/trial/scales"])["val/all/s1/nats_per_token"]
    assert set(grouped.mean().index) >= {("projected", "0.5"), ("projected", "0.5,0.25,0.125"), ("unconditional", "")}
