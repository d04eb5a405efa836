"""Does a model use t? The task conditions of the final evaluation (own, permuted, mean t): their names, the
derangement, the training stream's mean t, and that a trained conditional model's loss rises under another
image's t exactly when its data depend on t."""

from __future__ import annotations

import pytest
import torch
from projectable import GPT, GPTConfig
from projectable_data import Batch
from scipy.stats import t as student_t

from experiments.config import ConfigError, parse_run
from experiments.run.datasets import TrainStream, build_data, training_task_mean
from experiments.run.evaluate import (
    TASK_CONDITIONS,
    EvalConfig,
    condition_rise,
    condition_subset,
    evaluate,
    permute_tasks,
    split_condition,
    task_condition_subsets,
)
from experiments.run.trainees import GPTTrainee


@pytest.fixture
def one_thread():
    """Tiny models train fastest on one thread, and the machine is shared."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def test_condition_names_round_trip_through_every_key_layout():
    assert [condition_subset("all", c) for c in TASK_CONDITIONS] == ["all", "all-t_permuted", "all-t_mean"]
    for condition in TASK_CONDITIONS:
        name = condition_subset("half_C1", condition)
        for key in (name, f"{name}/s1_4", f"val/{name}/s1_4/nats_per_token_se"):
            assert split_condition(key) == ("half_C1", condition)
    with pytest.raises(ValueError, match="'shuffled' is not one of"):
        condition_subset("all", "shuffled")
    with pytest.raises(ValueError, match="names task condition 'shuffled'"):
        split_condition("val/all-t_shuffled/s1/nats_per_token")


@pytest.mark.parametrize("n", [2, 3, 64, 257])
def test_permuted_tasks_give_every_image_another_images_t_the_same_whatever_the_global_seed(n):
    tasks = torch.arange(n, dtype=torch.float32)[:, None].expand(n, 3)  # t_i = (i, i, i): row i is image i
    torch.manual_seed(123)
    permuted = permute_tasks(tasks)
    torch.manual_seed(456)
    assert torch.equal(permute_tasks(tasks), permuted)  # fixed, not drawn from the run's seed
    donors = permuted[:, 0].long()
    assert sorted(donors.tolist()) == list(range(n))  # a permutation of the images' own t
    assert (donors != torch.arange(n)).all()  # no image keeps its own
    with pytest.raises(ValueError, match="at least 2 images"):
        permute_tasks(tasks[:1])


def test_the_mean_condition_is_one_t_for_every_image_with_the_subsets_overrides_kept():
    batch = Batch(torch.zeros(4, 2, dtype=torch.long), torch.rand(4, 3), torch.zeros(4, dtype=torch.long))
    subsets = {"all": batch, "big": batch}
    varied = task_condition_subsets(subsets, ("own", "mean"), torch.tensor([0.1, 0.2, 0.3]), {"big": {1: 1.5}})
    assert set(varied) == {"all-t_mean", "big-t_mean"}  # own is the reported evaluation, not repeated
    assert torch.equal(varied["all-t_mean"].task, torch.tensor([[0.1, 0.2, 0.3]]).expand(4, 3))
    assert torch.equal(varied["big-t_mean"].task, torch.tensor([[0.1, 1.5, 0.3]]).expand(4, 3))
    assert torch.equal(varied["all-t_mean"].tokens, batch.tokens)


def test_the_training_mean_t_averages_the_first_batches_of_the_runs_own_stream(smoke):
    run = parse_run(smoke())
    data = build_data(run.data, run.paths.cache)
    stream = TrainStream(data, 8)
    for step in (0, 3):  # the items' tasks are the rendered batch's
        assert torch.equal(stream.tasks(step), stream.batch(step).task)
    mean = training_task_mean(stream, 20)  # ceil(20 / 8) = 3 batches
    torch.testing.assert_close(mean, torch.cat([stream.batch(k).task for k in range(3)]).mean(0))
    assert mean.shape == (data.task_dim,)
    default = training_task_mean(stream, EvalConfig().task_mean_images)  # t ~ U[0, 1]^18: SE ~0.0045
    assert ((default - 0.5).abs() < 0.03).all()
    labelled = TrainStream(data, 8, labels=(1, 7))  # a label filter: the filtered batches' t
    torch.testing.assert_close(training_task_mean(labelled, 8), labelled.batch(0).task.mean(0))


@pytest.mark.parametrize("node, message", [
    ({"task_conditions": ["own", "shuffled"]}, "must list distinct conditions"),
    ({"task_conditions": ["permuted"]}, "'own' among them"),
    ({"task_mean_images": 0}, "task_mean_images=0"),
    ({"subsets": {"all-t_x": {}}}, "marks a task condition"),
])
def test_bad_task_condition_settings_are_refused(node, message):
    with pytest.raises(ConfigError, match=message):
        EvalConfig.from_node(node)


# ------------------------------------------------------------------------------------------------
# A conditional model trained on data that depend on t, or not (tiny synthetic data, the project's GPT and loss)

POSITIONS = TASK_DIM = 6


def synthetic(n: int, generator: torch.Generator, depends_on_t: bool) -> Batch:
    """t ~ N(0, I); token i is the sign bit of t_i (a function of t), or a coin of p = 0.3 (independent of t).
    Earlier tokens say nothing of later ones either way: only t can."""
    tasks = torch.randn(n, TASK_DIM, generator=generator)
    if depends_on_t:
        tokens = (tasks[:, :POSITIONS] > 0).long()
    else:
        tokens = (torch.rand(n, POSITIONS, generator=generator) < 0.3).long()
    return Batch(tokens, tasks, torch.zeros(n, dtype=torch.long))


def trained_rise(depends_on_t: bool, steps: int, task_input: str = "first"):
    """A conditional GPT trained on the synthetic data; the paired rise of its validation loss under
    permuted t, the t quantile for its one-sided test, and its loss with its own t."""
    torch.manual_seed(0)
    config = GPTConfig.tiny(vocab_size=2, block_size=POSITIONS, task_dim=TASK_DIM, task_input=task_input)
    trainee = GPTTrainee(GPT(config))
    optimizer = torch.optim.AdamW(trainee.module.parameters(), lr=3e-3)
    stream = torch.Generator().manual_seed(1)
    for _ in range(steps):
        batch = synthetic(64, stream, depends_on_t)
        optimizer.zero_grad()
        trainee.loss(batch.tokens, batch.task).total.backward()
        optimizer.step()
    trainee.module.eval()
    subsets = {"all": synthetic(256, torch.Generator().manual_seed(2), depends_on_t)}
    subsets |= task_condition_subsets(subsets, ("permuted",))
    losses = evaluate(trainee.nll_fns(), subsets, 128, POSITIONS, POSITIONS)
    per_image = {key: loss.per_image for key, loss in losses.items()}
    rise = condition_rise(per_image, "all", trainee.name, "permuted")
    return rise, float(student_t.ppf(0.975, rise.n - 1)), losses["all/s1"].nats


@pytest.mark.parametrize("task_input", ["first", "every"])
def test_a_model_whose_data_depend_on_t_loses_more_than_half_a_nat_under_another_images_t(one_thread, task_input):
    rise, t_quantile, own = trained_rise(depends_on_t=True, steps=200, task_input=task_input)
    assert own < 0.3  # it learned to read t: log 2 = 0.69 per token without it
    assert rise.mean > max(0.5, t_quantile * rise.stderr)


def test_a_model_whose_data_do_not_depend_on_t_loses_nothing_beyond_t_se_under_another_images_t(one_thread):
    rise, t_quantile, own = trained_rise(depends_on_t=False, steps=100)
    assert own < 0.7  # it learned the coins (entropy 0.61), whatever t says
    assert rise.mean <= t_quantile * rise.stderr
