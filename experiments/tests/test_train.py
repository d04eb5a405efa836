"""train(cfg) at smoke scale for every kind of model, resuming, starting from saved weights, and what a
run leaves in MLflow."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest
import torch
from mlflow.tracking import MlflowClient
from projectable import GPT, ProjectableGPT

from experiments.run.checkpoint import STATE_FILE, latest_checkpoint
from experiments.tracking.store import git_commit, recorded_run_id
from experiments.train import TrainHooks, train

KINDS = {
    "M_s": ["kind=unconditional", "width=0.5"],
    "Mc_s": ["kind=conditional", "width=0.25"],
    "P_s": ["kind=projected", "projector.scales=[0.5]"],
    "Pall": ["kind=projected", "projector.scales=[0.5,0.25,0.125]"],
}


def run_of(store, run_dir):
    return MlflowClient(store.uri).get_run(recorded_run_id(run_dir))


@pytest.mark.parametrize("name", list(KINDS))
def test_each_kind_trains_evaluates_and_logs(name, smoke, store, tmp_path):
    cfg = smoke(*KINDS[name], f"run_dir={tmp_path / name}")
    metrics = train(cfg)
    models = {"M_s": ["model"], "Mc_s": ["model"], "P_s": ["source", "P1_2"],
              "Pall": ["source", "P1_2", "P1_4", "P1_8"]}[name]
    for model in models:
        nats = metrics[f"val/all/{model}/nats"]
        assert 0 < nats < torch.log(torch.tensor(16.0)).item() + 0.5  # palette of 16 at smoke scale
        assert 0 < metrics[f"val/all/{model}/nats_se"] < 0.1
        assert metrics[f"val/all/{model}/bpd"] > 0

    run = run_of(store, tmp_path / name)
    assert run.info.status == "FINISHED"
    assert run.info.run_name == name
    assert run.data.params["kind"] == cfg.kind and run.data.params["train.steps"] == "20"
    assert run.data.metrics[f"val/all/{models[0]}/nats"] == pytest.approx(metrics[f"val/all/{models[0]}/nats"])
    history = MlflowClient(store.uri).get_metric_history(run.info.run_id, "train/loss")
    assert [m.step for m in history] == [1, 5, 10, 15, 20]
    artifacts = {a.path for a in MlflowClient(store.uri).list_artifacts(run.info.run_id)}
    assert {"config", "model", "samples", "eval"} <= artifacts
    samples = {Path(a.path).name for a in MlflowClient(store.uri).list_artifacts(run.info.run_id, "samples")}
    assert samples == {f"{m}.png" for m in models}
    # the final weights load for a later evaluation
    final = tmp_path / name / "final"
    if name.startswith("P"):
        loaded = ProjectableGPT.load(final / "projectable.safetensors")
        assert loaded.config.scales == tuple(cfg.projector.scales)
    else:
        assert GPT.load(final / "model.safetensors").config.n_embd == int(32 * cfg.width)


class Interrupt(Exception):
    pass


class InterruptAt(TrainHooks):
    def __init__(self, step: int):
        self.step = step

    def on_step_end(self, step: int) -> None:
        if step == self.step:
            raise Interrupt(f"interrupted after step {step}")


def final_state(run_dir: Path) -> dict:
    return torch.load(latest_checkpoint(run_dir) / STATE_FILE, weights_only=True)


def assert_same_state(a, b):
    if isinstance(a, dict):
        assert a.keys() == b.keys()
        for key in a:
            assert_same_state(a[key], b[key])
    elif isinstance(a, (list, tuple)):
        assert len(a) == len(b)
        for x, y in zip(a, b):
            assert_same_state(x, y)
    elif isinstance(a, torch.Tensor):
        assert torch.equal(a, b)
    else:
        assert a == b


def test_resume_after_interruption_equals_an_uninterrupted_run(smoke, store, tmp_path):
    # dropout on: the restored RNG state must give the same masks as the uninterrupted run
    common = ["kind=projected", "projector.scales=[0.5,0.25]", "model.dropout=0.1", "threads=1"]
    straight = smoke(*common, f"run_dir={tmp_path / 'straight'}")
    train(straight)

    interrupted = smoke(*common, f"run_dir={tmp_path / 'resumed'}")
    with pytest.raises(Interrupt):
        train(interrupted, hooks=InterruptAt(13))  # checkpoint at 10, three steps lost
    run_id = recorded_run_id(tmp_path / "resumed")
    assert MlflowClient(store.uri).get_run(run_id).info.status == "FAILED"
    train(interrupted)

    a, b = final_state(tmp_path / "straight"), final_state(tmp_path / "resumed")
    assert a["step"] == b["step"] == 20
    assert_same_state(a["module"], b["module"])
    assert_same_state(a["optimizer"], b["optimizer"])
    # the same MLflow run continued and finished; the loss curve reaches the last step
    assert recorded_run_id(tmp_path / "resumed") == run_id == b["run_id"]
    run = MlflowClient(store.uri).get_run(run_id)
    assert run.info.status == "FINISHED"
    steps = {m.step for m in MlflowClient(store.uri).get_metric_history(run_id, "train/loss")}
    assert steps == {1, 5, 10, 15, 20}
    straight_metrics = json.loads((tmp_path / "straight" / "metrics.json").read_text())
    resumed_metrics = json.loads((tmp_path / "resumed" / "metrics.json").read_text())
    assert straight_metrics == resumed_metrics


def test_projected_source_starts_from_saved_weights(smoke, tmp_path):
    train(smoke("kind=unconditional", f"run_dir={tmp_path / 'm1'}"))
    saved = GPT.load(tmp_path / "m1" / "final" / "model.safetensors")
    cfg = smoke("kind=projected", f"init_from={tmp_path / 'm1'}", "train.steps=1", "train.lr=1e-12",
                f"run_dir={tmp_path / 'p'}")
    train(cfg)
    source = GPT.load(tmp_path / "p" / "final" / "model.safetensors")
    for (name, a), (_, b) in zip(saved.state_dict().items(), source.state_dict().items()):
        assert torch.allclose(a, b, atol=1e-6), name  # one step at lr ~ 0 leaves the source as loaded


def test_starting_from_a_model_of_another_size_is_refused(smoke, tmp_path):
    train(smoke("kind=unconditional", "width=0.5", f"run_dir={tmp_path / 'half'}"))
    cfg = smoke("kind=projected", f"init_from={tmp_path / 'half'}", f"run_dir={tmp_path / 'p'}")
    with pytest.raises(ValueError, match="differs from this run's in .*n_embd"):
        train(cfg)


def test_training_subsets_and_named_validation_subsets(smoke, tmp_path):
    cfg = smoke("train.train_labels=[0,1,2]", "train.steps=2", "eval.samples=0",
                "+eval.subsets.odd={overrides: {}, labels: [1, 3, 5, 7, 9]}",
                "+eval.subsets.big_scale={overrides: {1: 1.5}, labels: null}",
                f"run_dir={tmp_path / 'sub'}")
    metrics = train(cfg)
    assert {"val/all/model/nats", "val/odd/model/nats", "val/big_scale/model/nats"} <= set(metrics)
    with pytest.raises(ValueError, match="train_pool_size"):
        train(smoke("train.train_fraction=0.5", f"run_dir={tmp_path / 'frac'}"))


def test_commit_tag_is_dirty_for_code_changes_but_not_for_report_outputs(tmp_path):
    def git(*args):
        subprocess.run(["git", "-C", str(tmp_path), *args], check=True, capture_output=True)

    git("init", "-q")
    (tmp_path / "reports").mkdir()
    (tmp_path / "reports" / "table1.md").write_text("old\n")
    (tmp_path / "train.py").write_text("x = 1\n")
    git("add", ".")
    git("-c", "user.name=t", "-c", "user.email=t@example.invalid", "commit", "-qm", "init")
    head = git_commit(tmp_path)
    assert len(head) == 40 and not head.endswith("-dirty")
    (tmp_path / "reports" / "table1.md").write_text("rewritten by a notebook\n")
    assert git_commit(tmp_path) == head
    (tmp_path / "train.py").write_text("x = 2\n")
    assert git_commit(tmp_path) == head + "-dirty"
    assert git_commit(tmp_path / "no-repo-here") == "unknown"
