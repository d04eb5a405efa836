"""train(cfg) at smoke scale for every kind of model, resuming, starting from saved weights, and what a
run leaves in MLflow."""

from __future__ import annotations

import dataclasses
import json
import subprocess
from pathlib import Path

import pytest
import torch
from mlflow.tracking import MlflowClient
from projectable import GPT, ProjectableGPT

from experiments.config import ConfigError, compose
from experiments.run.checkpoint import STATE_FILE, latest_checkpoint
from experiments.run.locks import RUN_LOCK
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
    models = {"M_s": ["s1_2"], "Mc_s": ["s1_4"], "P_s": ["s1", "s1_2"],
              "Pall": ["s1", "s1_2", "s1_4", "s1_8"]}[name]
    for model in models:
        nats = metrics[f"val/all/{model}/nats_per_token"]
        assert 0 < nats < torch.log(torch.tensor(16.0)).item() + 0.5  # palette of 16 at smoke scale
        assert 0 < metrics[f"val/all/{model}/nats_per_token_se"] < 0.1
        assert metrics[f"val/all/{model}/bits_per_dim"] > 0

    run = run_of(store, tmp_path / name)
    assert run.info.status == "FINISHED"
    assert run.info.run_name == name
    assert run.data.params["kind"] == cfg.kind and run.data.params["train.steps"] == "20"
    key = f"val/all/{models[0]}/nats_per_token"
    assert run.data.metrics[key] == pytest.approx(metrics[key])
    history = MlflowClient(store.uri).get_metric_history(run.info.run_id, f"train/{models[-1]}/nats_per_token")
    assert [m.step for m in history] == [1, 5, 10, 15, 20]
    roles = {"M_s": {"s1_2": "M_s"}, "Mc_s": {"s1_4": "M~_s"}, "P_s": {"s1": "source", "s1_2": "P_s"},
             "Pall": {"s1": "source", "s1_2": "P_s", "s1_4": "P_s", "s1_8": "P_s"}}[name]
    assert {k.removeprefix("model/"): v for k, v in run.data.tags.items() if k.startswith("model/")} == roles
    assert ("train/eq2_total_nats_per_token" in run.data.metrics) == name.startswith("P")
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
    steps = {m.step for m in MlflowClient(store.uri).get_metric_history(run_id, "train/eq2_total_nats_per_token")}
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
    assert {"val/all/s1/nats_per_token", "val/odd/s1/nats_per_token", "val/big_scale/s1/nats_per_token"} <= set(metrics)
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


def test_training_lowers_the_loss_below_its_start(smoke, store, tmp_path):
    metrics = train(smoke("kind=conditional", "width=0.5", "eval.samples=0", f"run_dir={tmp_path / 'mc'}"))
    run = run_of(store, tmp_path / "mc")
    first = MlflowClient(store.uri).get_metric_history(run.info.run_id, "train/s1_2/nats_per_token")[0]
    assert first.step == 1
    assert metrics["val/all/s1_2/nats_per_token"] < first.value - 0.02  # 20 steps at smoke scale learn (~0.08 nats)


def test_projected_model_starts_from_the_loaded_source_not_from_noise(smoke, tmp_path):
    """init_from: the small model's own parts are the group averages of the *loaded* source, so P_s before
    any step is the pretrained source with averaged units (its loss equals the derived-parts model's)."""
    from projectable.projected import DerivedParts

    from experiments.config import parse_run
    from experiments.run.datasets import build_data
    from experiments.run.trainees import build_trainee

    train(smoke("kind=unconditional", "eval.samples=0", f"run_dir={tmp_path / 'm1'}"))
    run = parse_run(smoke("kind=projected", "projector.scales=[0.25]", f"run_dir={tmp_path / 'p'}"))
    data = build_data(run.data, run.paths.cache)
    torch.manual_seed(0)
    own = build_trainee("projected", 1.0, run.model, run.projector, data.task_dim, init_from=tmp_path / "m1")
    loaded = GPT.load(tmp_path / "m1" / "final" / "model.safetensors")
    assert torch.equal(own.model.source.parts.wte, loaded.parts.wte)
    small = own.model.parts(0.25)
    averaged = DerivedParts(loaded.parts, small.config, 4)
    for name in ("wte", "wpe", "ln1_w", "ln1_b", "ln2_w", "ln2_b", "lnf_w", "lnf_b", "head"):
        torch.testing.assert_close(getattr(small, name), getattr(averaged, name), rtol=0, atol=0, msg=name)

    torch.manual_seed(0)
    derived_run = dataclasses.replace(run.projector, small_parts="derived")
    derived = build_trainee("projected", 1.0, run.model, derived_run, data.task_dim, init_from=tmp_path / "m1")
    derived.model.generators.load_state_dict(own.model.generators.state_dict())
    batch = data.validation()
    with torch.no_grad():
        a = own.model.sequence_nll(batch.tokens, batch.task, scale=0.25)
        b = derived.model.sequence_nll(batch.tokens, batch.task, scale=0.25)
        fresh = build_trainee("projected", 1.0, run.model, run.projector, data.task_dim)  # the old defect's start
        fresh.model.load_state_dict({**fresh.model.state_dict(),
                                     **{f"source.{k}": v for k, v in loaded.state_dict().items()}})
        noise = fresh.model.sequence_nll(batch.tokens, batch.task, scale=0.25)
    torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-5)
    assert noise.mean() > a.mean() + 0.05  # own parts averaged from a fresh source start far worse


def test_a_run_directory_is_keyed_by_its_config(smoke, tmp_path):
    from experiments.config import parse_run

    runs = tmp_path / "runs"
    smoke_dir = Path(parse_run(smoke("kind=unconditional", f"paths.runs={runs}")).run_dir)
    other = Path(parse_run(smoke("kind=unconditional", "train.lr=0.01", f"paths.runs={runs}")).run_dir)
    assert smoke_dir.parent == other.parent == runs and smoke_dir != other
    assert smoke_dir.name.startswith("unconditional-w1-seed0-")
    cpu = compose(["scale=cpu", f"paths.runs={runs}"])
    assert Path(parse_run(cpu).run_dir) not in (smoke_dir, other)  # the smoke run is never resumed at cpu scale


def test_a_directory_made_with_another_config_is_never_resumed(smoke, tmp_path):
    run_dir = tmp_path / "run"
    train(smoke("kind=unconditional", "eval.samples=0", f"run_dir={run_dir}"))
    before = {p: p.stat().st_mtime_ns for p in run_dir.rglob("*") if p.is_file() and p.name != RUN_LOCK}
    with pytest.raises(ConfigError, match=r"train\.lr: 0\.002 -> 0\.01.*run_dir=<new folder>"):
        train(smoke("kind=unconditional", "eval.samples=0", "train.lr=0.01", f"run_dir={run_dir}"))
    with pytest.raises(ConfigError, match=r"seed: 0 -> 1"):
        train(smoke("kind=unconditional", "eval.samples=0", "seed=1", f"run_dir={run_dir}"))
    # nothing touched but the lock file, which names the last process that held the directory
    assert {p: p.stat().st_mtime_ns for p in run_dir.rglob("*") if p.is_file() and p.name != RUN_LOCK} == before
    # where it goes and how often it logs are not the config of its results: the same run resumes
    train(smoke("kind=unconditional", "eval.samples=0", "train.log_every=2", f"run_dir={run_dir}"))


def test_a_key_added_later_at_its_default_still_resumes(smoke, tmp_path):
    run_dir = tmp_path / "run"
    cfg = smoke("kind=unconditional", "eval.samples=0", "train.steps=4", f"run_dir={run_dir}")
    train(cfg)
    recorded = json.loads((run_dir / "config.json").read_text())
    recorded.pop("train.min_lr_ratio")  # as if written before the key existed (it is at its default)
    recorded.pop("model.dropout")
    (run_dir / "config.json").write_text(json.dumps(recorded))
    train(cfg)  # resumes (nothing left to train)
    recorded["train.steps"] = "3"
    (run_dir / "config.json").write_text(json.dumps(recorded))
    with pytest.raises(ConfigError, match=r"train\.steps: 3 -> 4"):
        train(cfg)


def test_params_are_the_effective_config_only(smoke, store, tmp_path):
    train(smoke("kind=unconditional", "eval.samples=0", "train.steps=2", "+tracking.tags.note=x",
                f"run_dir={tmp_path / 'r'}"))
    params = run_of(store, tmp_path / "r").data.params
    assert params["train.lr"] == "0.002" and params["kind"] == "unconditional"
    assert not [k for k in params if k.startswith(("tracking.", "paths.", "run_dir", "budget."))]
    assert "None" not in params.values()


@pytest.mark.filterwarnings("error:Add type hints:UserWarning")  # our predict is typed: no warning on every run
def test_final_models_load_with_mlflow_and_give_the_logged_per_image_losses(smoke, store, tmp_path):
    import mlflow
    import numpy as np
    import pandas as pd

    from experiments.config import parse_run
    from experiments.run.datasets import build_data

    cfg = smoke("kind=projected", "projector.scales=[0.25]", "eval.samples=0", "tracking.register=p-smoke",
                f"run_dir={tmp_path / 'p'}")
    train(cfg)
    run = run_of(store, tmp_path / "p")
    client = MlflowClient(store.uri)
    models = {m.name: m for m in client.search_logged_models([run.info.experiment_id],
                                                             filter_string=f"source_run_id = '{run.info.run_id}'")}
    assert set(models) == {"source-s1", "projected-s1_4"}
    per_image = json.loads(Path(client.download_artifacts(run.info.run_id, "eval/per_image_nats.json", str(tmp_path)))
                           .read_text())
    batch = build_data(parse_run(cfg).data, parse_run(cfg).paths.cache).validation()
    frame = {"tokens": [t.tolist() for t in batch.tokens], "task": [t.double().tolist() for t in batch.task]}
    mlflow.set_tracking_uri(store.uri)
    for name, key in (("projected-s1_4", "all/s1_4"), ("source-s1", "all/s1")):
        loaded = mlflow.pyfunc.load_model(f"models:/{models[name].model_id}")
        predicted = loaded.predict(pd.DataFrame(frame))["nats_per_token"].to_numpy()
        np.testing.assert_allclose(predicted, per_image[key], atol=1e-5, rtol=0)
        linked = {m.key for m in models[name].metrics}
        assert f"val/{key}/nats_per_token" in linked
    # the run's own artifact folder still resolves (init_from=runs:/<id>/model starts the next stage)
    assert (Path(mlflow.artifacts.download_artifacts(f"runs:/{run.info.run_id}/model", dst_path=str(tmp_path / "d")))
            / "projectable.safetensors").is_file()
    version = client.get_latest_versions("p-smoke")[0]  # the documented option registered P_1/4
    assert version.tags["model_role"] == "P_s" and version.run_id == run.info.run_id  # P_1/4 was registered


def test_a_run_logs_its_data_as_an_mlflow_dataset_with_the_tokenizer_hash(smoke, store, tmp_path):
    cfg = smoke("kind=unconditional", "train.steps=2", "eval.samples=0", f"run_dir={tmp_path / 'r'}")
    train(cfg)
    inputs = run_of(store, tmp_path / "r").inputs.dataset_inputs
    assert len(inputs) == 1 and inputs[0].dataset.name == "SynthMNISTConfig"
    again = smoke("kind=conditional", "train.steps=2", "eval.samples=0", f"run_dir={tmp_path / 'c'}")
    train(again)  # the same data: the same digest
    assert run_of(store, tmp_path / "c").inputs.dataset_inputs[0].dataset.digest == inputs[0].dataset.digest
    assert "palette " in inputs[0].dataset.source  # the tokenizer named in the source (with the data config)
