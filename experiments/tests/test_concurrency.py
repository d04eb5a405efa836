"""One writer per run directory and per sweep, with two real processes: the second command is started once
the first has said that it holds the lock (a stdin/stdout handshake, no sleeps), is refused at once with
``error:``, exit 2 and the holder's pid, and changes nothing; the first then finishes as if alone."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient

from experiments.config import CONF_DIR, ConfigError
from experiments.run.locks import RUN_LOCK, Busy, exclusive, holder, run_dir_lock
from experiments.tracking.store import recorded_run_id
from experiments.train import train

REPO = CONF_DIR.parent.parent


def start_holder(what: str, overrides: list[str], env: dict, log: Path) -> tuple[subprocess.Popen, list[str]]:
    """Start ``experiments.tests.holder`` and read its stdout up to ``holding <pid>``; (process, lines read)."""
    process = subprocess.Popen([sys.executable, "-m", "experiments.tests.holder", what, *overrides], cwd=REPO,
                               env=env, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=log.open("w"),
                               text=True)
    lines = []
    for line in process.stdout:
        lines.append(line.strip())
        if line.startswith("holding "):
            assert line.split()[1] == str(process.pid)
            return process, lines
    process.wait(timeout=60)
    raise AssertionError(f"the first process ended before holding the lock: {lines} {log.read_text()[-3000:]}")


def files(folder: Path) -> dict[str, int]:
    return {str(p): p.stat().st_mtime_ns for p in folder.rglob("*") if p.is_file() and p.name != RUN_LOCK}


def release(process: subprocess.Popen) -> str:
    out, _ = process.communicate("\n", timeout=600)
    return out


def refused(done: subprocess.CompletedProcess, pid: int) -> str:
    assert done.returncode == 2, done.stderr[-3000:]
    last = done.stderr.strip().splitlines()[-1]
    assert last.startswith("error: ") and "Traceback" not in done.stderr
    assert f"process {pid} " in last
    return last


def test_a_second_train_on_a_run_directory_in_use_is_refused_and_changes_nothing(store, tmp_path):
    run_dir = tmp_path / f"race-{tmp_path.name}"
    overrides = ["scale=smoke", *store.overrides(runs=str(tmp_path / "runs")), "kind=unconditional",
                 "train.steps=4", "eval.samples=0", "tracking.log_models=false", f"run_dir={run_dir}"]
    env = {**os.environ, "PROJECTABLE_ROOT": str(tmp_path)}
    first, _ = start_holder("train", overrides, env, tmp_path / "first.log")
    try:
        run_id = recorded_run_id(run_dir)
        before = files(run_dir)
        second = subprocess.run([sys.executable, "-m", "experiments.train", *overrides], cwd=REPO, env=env,
                                capture_output=True, text=True, timeout=300)
        message = refused(second, first.pid)
        assert f"run directory {run_dir} is in use" in message and f"kill {first.pid}" in message
        assert recorded_run_id(run_dir) == run_id  # the second never opened an MLflow run of its own
        assert files(run_dir) == before  # nothing written (the lock file aside, which names its holder)
    finally:
        out = release(first)
    assert first.returncode == 0, (tmp_path / "first.log").read_text()[-3000:]
    assert f"finished {run_dir}" in out
    client = MlflowClient(store.uri)
    experiment = client.get_experiment_by_name("projectable").experiment_id
    claims = client.search_runs([experiment], f"attributes.run_name = '{run_dir.name}'")
    assert [(r.info.run_id, r.info.status) for r in claims] == [(run_id, "FINISHED")]


def test_rerunning_a_finished_run_leaves_its_mlflow_run_untouched(smoke, store, tmp_path):
    cfg = smoke("kind=unconditional", "train.steps=3", "eval.samples=0", f"run_dir={tmp_path / 'done'}")
    metrics = train(cfg)
    client = MlflowClient(store.uri)
    run_id = recorded_run_id(tmp_path / "done")

    def snapshot():
        run = client.get_run(run_id)
        history = {key: len(client.get_metric_history(run_id, key)) for key in run.data.metrics}
        models = client.search_logged_models([run.info.experiment_id], filter_string=f"source_run_id = '{run_id}'")
        artifacts = sorted(a.path for a in client.list_artifacts(run_id, "model"))
        return run.info.status, run.info.end_time, history, len(models), artifacts

    before = snapshot()
    assert before[0] == "FINISHED" and before[3] >= 1 and before[4]  # a model logged, its files in "model"
    assert train(cfg) == metrics
    assert snapshot() == before  # no second model log, no metric logged again, the end time kept


def test_a_sweep_in_progress_is_never_resumed_or_ended_by_a_second_command(store, tmp_path):
    sweep_id = f"race-{tmp_path.name}"[:60]
    overrides = ["experiment=table1", "scale=smoke", "~experiment.stages.stage2", f"sweep.id={sweep_id}",
                 *store.overrides(runs=str(tmp_path / "runs"))]
    env = {**os.environ, "PROJECTABLE_ROOT": str(tmp_path)}
    first, lines = start_holder("sweep", overrides, env, tmp_path / "first.log")
    try:
        assert "ray starts; sweep lock held here: True" in lines  # the lock is taken before Ray starts
        second = subprocess.run([sys.executable, "-m", "experiments.tests.holder", "sweep", *overrides], cwd=REPO,
                                env=env, capture_output=True, text=True, timeout=300)
        message = refused(second, first.pid)
        assert f"sweep {sweep_id} is in use" in message
        assert "ray starts" not in second.stdout  # refused before Ray
    finally:
        release(first)
    assert first.returncode == 0, (tmp_path / "first.log").read_text()[-3000:]
    client = MlflowClient(store.uri)
    experiment = client.get_experiment_by_name("projectable").experiment_id
    parents = client.search_runs([experiment], f"tags.sweep_id = '{sweep_id}' and tags.role = 'sweep'")
    assert [run.info.status for run in parents] == ["FINISHED"]  # one sweep run, never marked FAILED


def test_a_lock_names_its_holder_and_is_released_with_its_process(tmp_path):
    path = tmp_path / "x.lock"
    with exclusive(path, "thing x", "stop {pid}") as held:
        assert holder(held)["pid"] == os.getpid()
        with pytest.raises(Busy, match=rf"thing x is in use by process {os.getpid()} .*stop {os.getpid()}"):
            with exclusive(path, "thing x", "stop {pid}"):
                pass
    # a process killed with SIGKILL leaves no lock behind: the kernel drops it with the process
    code = ("import os, sys; from experiments.run.locks import exclusive; "
            f"c = exclusive({str(path)!r}, 'x', ''); c.__enter__(); print('held', flush=True); "
            "os.kill(os.getpid(), 9)")
    done = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert done.stdout.strip() == "held" and done.returncode == -9
    with exclusive(path, "thing x", ""):
        pass


def test_a_run_directory_that_is_a_file_is_refused(tmp_path):
    (tmp_path / "run").write_text("")
    with pytest.raises(ConfigError, match="run_dir=.* is a file"):
        with run_dir_lock(tmp_path / "run"):
            pass
    assert not (tmp_path / RUN_LOCK).exists()
