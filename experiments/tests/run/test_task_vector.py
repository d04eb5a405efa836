"""``train.task_vector``: with ``mean`` every t a model reads, in training, evaluation and sampling, is the one
constant (the training stream's mean t); with ``own`` (the default) nothing changes, run keys included."""

from __future__ import annotations

import pytest
import torch
from projectable import GPT, ProjectableGPT

from experiments.config import ConfigError, compose, config_key, parse_run
from experiments.run.datasets import TrainStream, build_data, training_task_mean, validation_subsets
from experiments.run.task_vector import MEAN_TASK_IMAGES, ConstantTaskStream, apply_task_vector
from experiments.train import train

STEPS = 4
KINDS = {"P_s": ["kind=projected", "projector.scales=[0.5]"], "Mc_s": ["kind=conditional", "width=0.5"]}


@pytest.fixture
def seen_tasks(monkeypatch) -> list[torch.Tensor]:
    """Every task vector a model reads, recorded where it enters: a projected model's generators (training,
    evaluation and ``generate`` all pass through ``ProjectableGPT._tasks``) and a conditional GPT's forward."""
    seen: list[torch.Tensor] = []
    tasks_of, forward = ProjectableGPT._tasks, GPT.forward

    def recording_tasks(self, tasks, batch=None):
        seen.append(tasks.detach().reshape(-1, tasks.shape[-1]).clone())
        return tasks_of(self, tasks, batch)

    def recording_forward(self, tokens, task=None):
        if task is not None:
            seen.append(task.detach().reshape(-1, task.shape[-1]).clone())
        return forward(self, tokens, task)

    monkeypatch.setattr(ProjectableGPT, "_tasks", recording_tasks)
    monkeypatch.setattr(GPT, "forward", recording_forward)
    return seen


def run_once(smoke, tmp_path, name: str, task_vector: str):
    cfg = smoke(*KINDS[name], f"train.task_vector={task_vector}", f"train.steps={STEPS}", "eval.every=2",
                "tracking.log_models=false", f"run_dir={tmp_path / f'{name}-{task_vector}'}")
    train(cfg)
    return cfg


@pytest.mark.parametrize("name", list(KINDS))
def test_mean_feeds_one_constant_t_to_every_sequence_in_training_evaluation_and_samples(name, smoke, tmp_path,
                                                                                         seen_tasks):
    cfg = run_once(smoke, tmp_path, name, "mean")
    run = parse_run(cfg)
    data = build_data(run.data, run.paths.cache)
    expected = training_task_mean(TrainStream(data, run.train.batch_size), MEAN_TASK_IMAGES)  # (D,)
    rows = torch.cat(seen_tasks)  # (every sequence the models read, D)
    # training (STEPS batches of B) and the evaluations (at the start, every 2 steps: 3 of the validation set)
    # all passed through the recorders
    assert len(rows) >= STEPS * run.train.batch_size + 3 * run.data.val_size
    assert torch.equal(rows, expected.expand_as(rows)), "a sequence was read with a t other than the mean"
    # the constant is the training distribution's mean (t ~ U[0, 1]^18 on SynthMNIST), not an image's own t
    assert torch.allclose(expected, torch.full_like(expected, 0.5), atol=0.03)
    own = validation_subsets(data, run.eval.subsets)["all"].task
    assert not (own == expected).all(dim=1).any()


@pytest.mark.parametrize("name", list(KINDS))
def test_own_feeds_each_image_its_own_t(name, smoke, tmp_path, seen_tasks):
    """The control for the test above: the recorders do see the images' own, varied task vectors."""
    cfg = run_once(smoke, tmp_path, name, "own")
    run = parse_run(cfg)
    data = build_data(run.data, run.paths.cache)
    rows = torch.cat(seen_tasks)
    own = validation_subsets(data, run.eval.subsets)["all"].task
    first = data.train_batch(0, run.train.batch_size).task
    assert len(torch.unique(rows, dim=0)) > run.data.val_size  # validation and training images, all different
    assert any(torch.equal(r[: len(own)], own) for r in seen_tasks if len(r) >= len(own))
    assert any(torch.equal(r, first) for r in seen_tasks if len(r) == len(first))


def test_the_mean_is_one_fixed_vector_and_subset_overrides_stay_on_top(smoke):
    run = parse_run(smoke("kind=projected", "projector.scales=[0.5]"))
    data = build_data(run.data, run.paths.cache)
    stream = TrainStream(data, run.train.batch_size)
    subsets = validation_subsets(data, {"all": run.eval.subsets["all"], "big": run.eval.subsets["all"]})
    applied = apply_task_vector("mean", stream, subsets, {"big": {1: 1.5}})
    assert isinstance(applied.stream, ConstantTaskStream)
    for step in (0, 7):  # every step's batch: the same images, the constant t
        batch, original = applied.stream.batch(step), stream.batch(step)
        assert torch.equal(batch.tokens, original.tokens) and torch.equal(batch.label, original.label)
        assert torch.equal(batch.task, applied.task.expand_as(original.task))
        assert torch.equal(applied.stream.tasks(step), batch.task)
    assert torch.equal(applied.subsets["all"].task, applied.task.expand_as(subsets["all"].task))
    big = applied.subsets["big"].task
    assert (big[:, 1] == 1.5).all() and torch.equal(big[:, 0], applied.task[0].expand(len(big)))
    assert torch.equal(applied.subsets["all"].tokens, subsets["all"].tokens)
    # a fixed function of the data and the batch size: computed again, the same vector
    assert torch.equal(training_task_mean(TrainStream(data, run.train.batch_size), MEAN_TASK_IMAGES), applied.task)
    own = apply_task_vector("own", stream, subsets)
    assert own.stream is stream and own.task is None and own.subsets["all"] is subsets["all"]


def test_own_is_the_default_and_leaves_run_keys_unchanged_mean_makes_another_run():
    base = compose(["scale=smoke", "kind=projected", "projector.scales=[0.5]"])
    assert parse_run(base).train.task_vector == "own"
    own = compose(["scale=smoke", "kind=projected", "projector.scales=[0.5]", "train.task_vector=own"])
    mean = compose(["scale=smoke", "kind=projected", "projector.scales=[0.5]", "train.task_vector=mean"])
    older = compose(["scale=smoke", "kind=projected", "projector.scales=[0.5]", "~train.task_vector"])  # before the key
    assert config_key(own) == config_key(base) == config_key(older) != config_key(mean)


@pytest.mark.parametrize("overrides, message", [
    (["kind=unconditional", "train.task_vector=mean"], r"kind=unconditional reads none"),
    (["kind=projected", "train.task_vector=first"], r"train\.task_vector='first' must be 'own'.*or 'mean'"),
])
def test_bad_task_vector_settings_are_refused_naming_the_fix(overrides, message):
    with pytest.raises(ConfigError, match=message):
        parse_run(compose(["scale=smoke", *overrides]))
