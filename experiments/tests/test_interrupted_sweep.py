"""An interrupted sweep (Ctrl-C, SIGTERM) is never recorded as finished: Tune returns normally from an
interrupted ``fit``, so the stage checks that every trial ended, the sweep's MLflow run ends KILLED, and the
command says how to resume and exits 130."""

from __future__ import annotations

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


def test_an_interrupted_sweep_ends_killed_and_exits_130(monkeypatch, store, tmp_path, capsys):
    def interrupted(specs, sweep, name):
        raise StageInterrupted(f"{name}: 0 of {len(specs)} trials finished before the sweep was interrupted")

    monkeypatch.setattr(sweep_module, "run_stage", interrupted)
    monkeypatch.setattr(sweep_module, "start_ray", lambda cluster: False)
    cfg = compose(["experiment=table1", "scale=smoke", "sweep.id=interrupted-smoke",
                   *store.overrides(runs=str(tmp_path / "runs"))])
    with pytest.raises(SystemExit) as exit_info:
        sweep_module.main.__wrapped__(cfg)
    assert exit_info.value.code == 130
    assert "sweep interrupted: interrupted-smoke-stage1: 0 of" in capsys.readouterr().err
    client = MlflowClient(store.uri)
    experiment = client.get_experiment_by_name("projectable")
    parents = client.search_runs([experiment.experiment_id], "tags.sweep_id = 'interrupted-smoke' and tags.role = 'sweep'")
    assert [run.info.status for run in parents] == ["KILLED"]
