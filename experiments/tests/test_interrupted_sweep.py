"""An interrupted sweep (Ctrl-C, or SIGTERM, which the entry point turns into Ctrl-C) is never recorded as
finished: Tune returns normally from an interrupted ``fit``, so the stage checks that every trial ended; the
sweep's MLflow run ends KILLED, and the command says how to resume and exits 130."""

from __future__ import annotations

import signal
import subprocess
import sys

import pytest
from mlflow.tracking import MlflowClient

from experiments import sweep as sweep_module
from experiments.config import build_section, compose
from experiments.orchestration import ray_tune
from experiments.orchestration.plan import SweepConfig
from experiments.orchestration.ray_tune import StageInterrupted


class InterruptedResults(list):
    """What ``Tuner.fit`` returns after an interrupt: no errors, fewer trials terminated than planned."""

    num_terminated = 1


class InterruptedTuner:
    def __init__(self, *args, **kwargs):
        pass

    @classmethod
    def can_restore(cls, path) -> bool:
        return True

    @classmethod
    def restore(cls, path, **kwargs):
        return cls()

    def fit(self):
        return InterruptedResults([type("Result", (), {"error": None, "path": f"trial{i}"})() for i in range(3)])


def test_a_stage_that_tune_stopped_early_raises_instead_of_returning(monkeypatch, tmp_path):
    from ray import tune

    monkeypatch.setattr(tune, "Tuner", InterruptedTuner)
    monkeypatch.setattr(tune, "with_parameters", lambda trainable, **kw: trainable)  # no Ray object store
    monkeypatch.setattr(tune, "with_resources", lambda trainable, resources: trainable)
    cfg = compose(["experiment=table1", "scale=smoke", f"sweep.storage={tmp_path}"])
    sweep = build_section(SweepConfig, cfg.sweep, "sweep")
    with pytest.raises(StageInterrupted, match="1 of 3 trials finished .* the same command resumes it"):
        ray_tune.run_stage([{"name": "a"}], sweep, "table1-smoke-x-stage1")


def interrupted_stage(specs, sweep, name, **hooks):
    raise StageInterrupted(f"{name}: 0 of {len(specs)} trials finished before the sweep was interrupted")


# A SIGTERM, as a scheduler or a session's end sends it, to a sweep's own process (a fresh one: another test's
# threads and handlers cannot take or change the signal) while a stage runs.
SIGTERM_DURING_STAGE = """
import os, signal, sys, time
from experiments import sweep
from experiments.config import compose

def stage(specs, sweep_cfg, name, **hooks):
    os.kill(os.getpid(), signal.SIGTERM)
    for _ in range(300):  # the SIGINT it becomes interrupts this at the next check of pending signals
        time.sleep(0.1)
    sys.exit("SIGTERM did not interrupt the stage")

sweep.run_stage, sweep.start_ray = stage, lambda cluster: False
sweep.main.__wrapped__(compose(sys.argv[1:]))
"""


def run_in_process(code: str, overrides: list[str]) -> tuple[int, str]:
    proc = subprocess.run([sys.executable, "-c", code, *overrides], capture_output=True, text=True, timeout=300)
    return proc.returncode, proc.stderr


@pytest.mark.parametrize("how, message", [
    ("stage", "sweep interrupted: {id}-stage1: 0 of"),
    ("sigterm", "sweep interrupted before or between its stages; the same command resumes it"),
])
def test_an_interrupted_sweep_ends_killed_and_exits_130(how, message, monkeypatch, store, tmp_path, capsys):
    sweep_id = f"interrupted-{how}"
    overrides = ["experiment=table1", "scale=smoke", f"sweep.id={sweep_id}", *store.overrides(runs=str(tmp_path / "runs"))]
    if how == "sigterm":
        code, err = run_in_process(SIGTERM_DURING_STAGE, overrides)
    else:
        monkeypatch.setattr(sweep_module, "run_stage", interrupted_stage)
        monkeypatch.setattr(sweep_module, "start_ray", lambda cluster: False)
        previous = signal.getsignal(signal.SIGTERM)
        try:
            with pytest.raises(SystemExit) as exit_info:
                sweep_module.main.__wrapped__(compose(overrides))
        finally:
            signal.signal(signal.SIGTERM, previous)
        code, err = exit_info.value.code, capsys.readouterr().err
    assert code == 130, err
    assert message.format(id=sweep_id) in err
    client = MlflowClient(store.uri)
    experiment = client.get_experiment_by_name("projectable")
    parents = client.search_runs([experiment.experiment_id], f"tags.sweep_id = '{sweep_id}' and tags.role = 'sweep'")
    assert [run.info.status for run in parents] == ["KILLED"]
