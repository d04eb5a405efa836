"""train(cfg) at smoke scale for every kind of model, resuming, starting from saved weights, and what a
run leaves in MLflow."""

from __future__ import annotations

import dataclasses
import json
import math
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from mlflow.tracking import MlflowClient
from projectable import GPT, ProjectableGPT

from experiments import train as train_module
from experiments.config import ConfigError, compose, register_resolvers
from experiments.run.locks import RUN_LOCK
from experiments.tracking.store import git_commit, recorded_run_id
from experiments.train import train

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
    run = run_of(store, tmp_path / name)
    uniform = math.log(cfg.model.vocab_size)  # nats/token of guessing every colour of the palette alike
    for model in models:
        nats = metrics[f"val/all/{model}/nats_per_token"]
        history = MlflowClient(store.uri).get_metric_history(run.info.run_id, f"val/all/{model}/nats_per_token")
        start = {m.step: m.value for m in history}[0]  # before the first step (eval.at_start)
        assert 0 < nats < uniform, (model, nats, uniform)
        assert nats < start, (model, nats, start)  # 20 smoke steps learn
        assert 0 < metrics[f"val/all/{model}/nats_per_token_se"] < 0.1
        assert metrics[f"val/all/{model}/bits_per_dim"] > 0

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
    # every final model file records the palette its tokens came from, so its export renders alone
    from projectable.tokenizer import read_tokenizer

    for file in final.glob("*.safetensors"):
        assert read_tokenizer(file).centres.shape == (16, 3), file


def test_main_prints_the_final_validation_losses(store, tmp_path, monkeypatch, capsys):
    """The command line (``python -m experiments.train ...``) ends with every final validation loss."""
    run_dir = tmp_path / "cli"
    overrides = ["scale=smoke", *store.overrides(runs=str(tmp_path / "runs")), "kind=projected",
                 "projector.scales=[0.5]", "+eval.subsets.odd={overrides: {}, labels: [1, 3, 5, 7, 9]}",
                 f"run_dir={run_dir}", f"hydra.run.dir={tmp_path / 'hydra'}"]
    monkeypatch.setattr(sys, "argv", ["experiments/train.py", *overrides])
    register_resolvers()
    train_module.main()
    printed = {match[1]: (float(match[2]), float(match[3])) for match in
               re.finditer(r"^(val/\S+): ([\d.]+) \+- ([\d.]+)$", capsys.readouterr().out, re.MULTILINE)}
    metrics = json.loads((run_dir / "metrics.json").read_text())
    # every final loss: each subset's, and P_1/2's under permuted and mean task vectors (the source reads no t)
    assert set(printed) == {f"val/{subset}{condition}/{model}/nats_per_token" for subset in ("all", "odd")
                            for condition, models in (("", ("s1", "s1_2")), ("-t_permuted", ("s1_2",)),
                                                      ("-t_mean", ("s1_2",))) for model in models}
    for key, (loss, se) in printed.items():
        assert loss == pytest.approx(metrics[key], abs=5e-5)
        assert se == pytest.approx(metrics[f"{key}_se"], abs=5e-5)


def test_final_losses_pairs_each_loss_with_its_own_standard_error():
    metrics = {"val/all/s1_4/nats_per_token": 1.5, "val/all/s1_4/nats_per_token_se": 0.25,
               "val/all/s1_4/bits_per_dim": 9.0, "val/odd/s1/nats_per_token": 2.0,
               "val/odd/s1/nats_per_token_se": 0.125, "train/s1/nats_per_token": 7.0}
    assert train_module.final_losses(metrics).splitlines() == [
        "val/all/s1_4/nats_per_token: 1.5000 +- 0.2500", "val/odd/s1/nats_per_token: 2.0000 +- 0.1250"]


def test_resume_after_interruption_equals_an_uninterrupted_run(interrupted, store, tmp_path):
    # dropout on: the restored RNG state must give the same masks as the uninterrupted run
    resumed = interrupted("kind=projected", "projector.scales=[0.5,0.25]", "model.dropout=0.1", "threads=1",
                          at=13)  # checkpoint at 10, three steps lost
    run_id = recorded_run_id(tmp_path / "resumed")
    assert MlflowClient(store.uri).get_run(run_id).info.status == "FAILED"
    train(resumed.config)
    b = resumed.assert_ends_as_straight(steps=20)
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
    for key in ("train.min_lr_ratio", "model.dropout", "model.task_input", "eval.task_conditions",
                "eval.task_mean_images"):
        recorded.pop(key)  # as if written before the key existed (it is at its default)
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
def test_final_models_load_with_mlflow_and_give_the_logged_per_image_losses(smoke, store, tmp_path, capfd):
    import mlflow
    import numpy as np
    import pandas as pd

    from experiments.config import parse_run
    from experiments.run.datasets import build_data

    cfg = smoke("kind=projected", "projector.scales=[0.25]", "eval.samples=0", "tracking.register=p-smoke",
                f"run_dir={tmp_path / 'p'}")
    capfd.readouterr()
    train(cfg)
    err = capfd.readouterr().err
    assert "Downloading artifacts" not in err, err[-2000:]  # logging models downloads them: no bar per artifact
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
    # logits, samples and the generated small model P_1/4(t) from the logged model alone
    loaded = mlflow.pyfunc.load_model(f"models:/{models['projected-s1_4'].model_id}")
    two = pd.DataFrame({"tokens": frame["tokens"][:2], "task": frame["task"][:2]})
    logits = loaded.predict(two, params={"output": "logits"})["logits"]
    small = loaded.unwrap_python_model().generate(frame["task"][0])
    with torch.no_grad():
        expected = small(torch.tensor([frame["tokens"][0]]))[0]
    np.testing.assert_allclose(np.asarray(logits[0]), expected.double().numpy(), atol=1e-5)
    drawn = loaded.predict(two, params={"output": "samples", "n": 3, "seed": 1})["tokens"]
    assert [np.asarray(row).shape for row in drawn] == [(3, len(frame["tokens"][0]))] * 2
    with pytest.raises(Exception, match="not one of"):
        loaded.predict(two, params={"output": "weights"})
    # it loads where projectable is not installed: the package travels with the model as a code path
    folder = Path(mlflow.artifacts.download_artifacts(f"models:/{models['projected-s1_4'].model_id}",
                                                      dst_path=str(tmp_path / "logged")))
    requirements = (folder / "requirements.txt").read_text()
    assert "projectable" not in requirements and "torch>=2.4" in requirements
    script = (
        "import sys\n"
        "sys.path = [p for p in sys.path if not p.rstrip('/').endswith('/src')]  # the packages' editable installs\n"
        "sys.meta_path = [f for f in sys.meta_path if 'editable' not in type(f).__module__.lower()]\n"
        "try:\n    import projectable\nexcept ImportError:\n    pass\n"
        "else:\n    raise SystemExit('projectable is importable: ' + projectable.__file__)\n"
        "import mlflow, pandas as pd\n"
        +
        f"model = mlflow.pyfunc.load_model({str(folder)!r})\n"
        f"frame = pd.DataFrame({{'tokens': [{frame['tokens'][0]!r}], 'task': [{frame['task'][0]!r}]}})\n"
        "print(float(model.predict(frame)['nats_per_token'][0]))\n"
        "import projectable; assert projectable.__file__.startswith(" + repr(str(folder)) + "), projectable.__file__\n"
    )
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    done = subprocess.run([sys.executable, "-c", script], cwd=tmp_path, env=env, capture_output=True, text=True,
                          timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    assert float(done.stdout.split()[-1]) == pytest.approx(per_image["all/s1_4"][0], abs=1e-5)
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


def per_image_keys(store, run_dir: Path, tmp_path: Path) -> set[str]:
    client = MlflowClient(store.uri)
    folder = tmp_path / "downloads" / run_dir.name
    folder.mkdir(parents=True)
    path = client.download_artifacts(recorded_run_id(run_dir), "eval/per_image_nats.json", str(folder))
    return set(json.loads(Path(path).read_text()))


def test_models_that_read_t_are_evaluated_at_the_end_under_permuted_and_mean_t(smoke, store, tmp_path):
    common = ["train.steps=2", "eval.samples=0", "tracking.log_models=false"]
    conditional = train(smoke("kind=conditional", "width=0.25", *common, f"run_dir={tmp_path / 'c'}"))
    for condition in ("permuted", "mean"):
        for stat in ("nats_per_token", "nats_per_token_se", "bits_per_dim", "bits_per_dim_se"):
            key = f"val/all-t_{condition}/s1_4/{stat}"
            assert run_of(store, tmp_path / "c").data.metrics[key] == pytest.approx(conditional[key])
    assert per_image_keys(store, tmp_path / "c", tmp_path) == {"all/s1_4", "all-t_permuted/s1_4", "all-t_mean/s1_4"}
    # P_s reads t, the co-trained source does not
    train(smoke("kind=projected", "projector.scales=[0.5]", *common, f"run_dir={tmp_path / 'p'}"))
    assert per_image_keys(store, tmp_path / "p", tmp_path) == {"all/s1", "all/s1_2", "all-t_permuted/s1_2",
                                                                "all-t_mean/s1_2"}
    unconditional = train(smoke("kind=unconditional", *common, f"run_dir={tmp_path / 'm'}"))
    assert not [key for key in unconditional if "-t_" in key]
    # the switch: own t alone, and the own-t loss is the same either way
    own = train(smoke("kind=conditional", "width=0.25", *common, "eval.task_conditions=[own]",
                      f"run_dir={tmp_path / 'own'}"))
    assert own == {key: value for key, value in conditional.items() if "-t_" not in key}


def test_a_conditional_baseline_reading_t_at_every_position_trains_and_continues_like_m_tilde(smoke, tmp_path):
    from experiments.config import config_key, parse_run

    every = ["kind=conditional", "width=0.5", "model.task_input=every", "eval.samples=0", "tracking.log_models=false"]
    assert config_key(smoke(*every)) != config_key(smoke("kind=conditional", "width=0.5", "eval.samples=0"))
    train(smoke(*every, "train.steps=2", f"run_dir={tmp_path / 'stage1'}"))
    assert GPT.load(tmp_path / "stage1" / "final" / "model.safetensors").config.task_input == "every"
    # the step-matched continuation starts from its own stage 1, never from a first-position M~_s
    train(smoke(*every, "train.steps=1", f"init_from={tmp_path / 'stage1'}", f"run_dir={tmp_path / 'stage2'}"))
    with pytest.raises(ValueError, match="differs from this run's in .*task_input"):
        train(smoke("kind=conditional", "width=0.5", "train.steps=1", f"init_from={tmp_path / 'stage1'}",
                    f"run_dir={tmp_path / 'first'}"))
    with pytest.raises(ConfigError, match="model.task_input='every' .* kind=unconditional"):
        parse_run(smoke("kind=unconditional", "model.task_input=every"))
    with pytest.raises(ConfigError, match="task_input='all' is not one of"):
        parse_run(smoke("kind=conditional", "model.task_input=all"))
