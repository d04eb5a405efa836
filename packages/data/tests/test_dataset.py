import dataclasses

import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader

from projectable_data import (
    Batch,
    SynthMNISTConfig,
    SynthMNISTStream,
    SynthMNISTTokens,
    load_mnist,
    render_synthmnist,
)
from projectable_data.tasks import train_items


def assert_batches_equal(a: Batch, b: Batch):
    for x, y in zip(a, b):
        assert torch.equal(x, y)


def test_properties_and_batch_layout(tiny_data):
    assert (tiny_data.task_dim, tiny_data.vocab_size, tiny_data.seq_len) == (18, 32, 256)
    assert tiny_data.image_shape == (3, 16, 16)
    batch = tiny_data.train_batch(step=0, batch_size=8)
    assert batch.tokens.shape == (8, 256) and batch.tokens.dtype == torch.int64
    assert batch.task.shape == (8, 18) and batch.task.dtype == torch.float32
    assert batch.label.shape == (8,) and batch.label.dtype == torch.int64
    assert 0 <= batch.tokens.min() and batch.tokens.max() < 32
    assert 0 <= batch.task.min() and batch.task.max() < 1
    images = tiny_data.decode(batch.tokens)
    assert images.shape == (8, 3, 16, 16) and images.min() >= -1 and images.max() <= 1


def test_train_batch_is_a_function_of_seed_step_and_batch_size(tiny_data, tiny_config, synth_cache):
    again = SynthMNISTTokens(tiny_config, cache_dir=synth_cache)  # a restarted run: palette from the cache
    assert again.palette.hash == tiny_data.palette.hash
    assert_batches_equal(tiny_data.train_batch(7, 8), again.train_batch(7, 8))
    assert not torch.equal(tiny_data.train_batch(7, 8).task, tiny_data.train_batch(8, 8).task)
    other_seed = SynthMNISTTokens(dataclasses.replace(tiny_config, seed=1), cache_dir=synth_cache)
    assert not torch.equal(other_seed.train_batch(7, 8).task, tiny_data.train_batch(7, 8).task)


def test_tokens_are_the_rendered_items_encoded(tiny_data):
    items = tiny_data.train_items(3, 4)
    batch = tiny_data.train_batch(3, 4)
    assert torch.equal(batch.tokens, tiny_data.palette.encode(tiny_data.render(items, "train")))
    digits = load_mnist("train", tiny_data.config.mnist_root)
    assert torch.equal(batch.label, torch.from_numpy(digits.labels[items.digit_index]))


def test_flips_only_in_training(tiny_data):
    train_flips = np.concatenate([tiny_data.train_items(s, 64).flip for s in range(8)])
    assert 0.4 < train_flips.mean() < 0.6
    assert not tiny_data.validation_items().flip.any()


def test_validation_is_fixed_and_overridable(tiny_data):
    v = tiny_data.validation()
    assert v.tokens.shape == (64, 256)
    assert_batches_equal(v, tiny_data.validation())
    swept = tiny_data.validation(overrides={1: 1.5})  # Figure 4: scale coordinate beyond the training range
    assert torch.all(swept.task[:, 1] == 1.5)
    others = [i for i in range(18) if i != 1]
    assert torch.equal(swept.task[:, others], v.task[:, others]) and torch.equal(swept.label, v.label)
    assert (swept.tokens != v.tokens).float().mean() > 0.2
    with pytest.raises(ValueError, match="0..17"):
        tiny_data.validation(overrides={18: 0.5})


def test_train_overrides_fix_coordinates(tiny_data):
    batch = tiny_data.train_batch(2, 16, overrides={0: 0.0, 10: 1.0})
    plain = tiny_data.train_batch(2, 16)
    assert torch.all(batch.task[:, 0] == 0) and torch.all(batch.task[:, 10] == 1)
    assert torch.equal(batch.task[:, 1:10], plain.task[:, 1:10]) and torch.equal(batch.label, plain.label)


def test_train_and_validation_are_disjoint(tiny_data, mnist_root):
    v_items = tiny_data.validation_items()
    t_items = [tiny_data.train_items(s, 64) for s in range(20)]
    train_tasks = {tuple(row) for items in t_items for row in items.task.tolist()}
    assert not train_tasks & {tuple(row) for row in v_items.task.tolist()}
    # validation digits are MNIST test images, training digits MNIST training images
    assert len(set(v_items.digit_index.tolist())) == len(v_items.digit_index)  # distinct
    test_digits = load_mnist("test", mnist_root).images[v_items.digit_index]
    direct = render_synthmnist(v_items.task, test_digits, resolution=16)
    assert torch.equal(tiny_data.validation().tokens, tiny_data.palette.encode(direct))
    items = t_items[0]
    train_digits = load_mnist("train", mnist_root).images[items.digit_index]
    direct = render_synthmnist(items.task, train_digits, items.flip, resolution=16)
    assert torch.equal(tiny_data.train_batch(0, 64).tokens, tiny_data.palette.encode(direct))


def test_dataloader_workers_reproduce_the_step_order(tiny_data):
    stream = SynthMNISTStream(tiny_data, batch_size=4, start_step=5, num_steps=6)
    expected = [tiny_data.train_batch(step, 4) for step in range(5, 11)]
    for workers in (0, 2):
        got = list(DataLoader(stream, batch_size=None, num_workers=workers))
        assert len(got) == 6
        for a, b in zip(got, expected):
            assert isinstance(a, Batch)
            assert_batches_equal(a, b)


def test_finite_pool_is_cached_and_sampled_deterministically(tiny_config, synth_cache):
    config = dataclasses.replace(tiny_config, train_pool_size=40)
    data = SynthMNISTTokens(config, cache_dir=synth_cache)
    pools = list(synth_cache.glob("pool-*.npz"))
    assert len(pools) == 1 and data.palette.hash in pools[0].name
    again = SynthMNISTTokens(config, cache_dir=synth_cache)
    assert_batches_equal(data.train_batch(3, 16), again.train_batch(3, 16))
    # one epoch of 40 items in batches of 8 visits every pool item exactly once
    epoch = torch.cat([data.train_batch(s, 8).task for s in range(5)])
    assert len({tuple(row) for row in epoch.tolist()}) == 40
    assert (
        len({tuple(row) for row in torch.cat([data.train_batch(s, 8).task for s in range(20)]).tolist()})
        == 40
    )
    items = data.train_items(3, 16)
    assert torch.equal(data.train_batch(3, 16).tokens, data.palette.encode(data.render(items, "train")))


def test_bad_config_is_a_value_error(tiny_config):
    with pytest.raises(ValueError, match="resolution"):
        SynthMNISTConfig(resolution=20)
    with pytest.raises(ValueError, match="train_pool_size"):
        dataclasses.replace(tiny_config, train_pool_size=0)
    with pytest.raises(ValueError, match="batch_size"):
        train_items(0, step=0, batch_size=0, num_digits=10)


def test_selection_digits_are_test_digits_outside_validation(tiny_data, mnist_root):
    v_items = tiny_data.validation_items()
    s_items = tiny_data.selection_items(200)
    assert len(set(s_items.digit_index.tolist())) == 200  # distinct
    assert not set(s_items.digit_index.tolist()) & set(v_items.digit_index.tolist())
    # the batch is those test digits rendered without flips under the selection's own task vectors
    test = load_mnist("test", mnist_root)
    selection = tiny_data.selection(200)
    assert not s_items.flip.any()
    direct = render_synthmnist(s_items.task, test.images[s_items.digit_index], resolution=16)
    assert torch.equal(selection.tokens, tiny_data.palette.encode(direct))
    assert torch.equal(selection.label, torch.from_numpy(test.labels[s_items.digit_index]))
    assert torch.equal(selection.task, torch.from_numpy(s_items.task))


def test_selection_can_take_every_test_digit_validation_leaves(tiny_config, synth_cache, mnist_root):
    # val_size=9990 leaves 10 test digits: the selection set is exactly those, and one more is refused
    data = SynthMNISTTokens(dataclasses.replace(tiny_config, val_size=9990), cache_dir=synth_cache)
    left = np.setdiff1d(np.arange(10000), data.validation_items().digit_index)
    assert len(left) == 10
    assert np.array_equal(data.selection_items(10).digit_index, left)
    with pytest.raises(ValueError, match=r"size=11 must be in 1\.\.10.*val_size=9990"):
        data.selection(11)


def test_selection_size_out_of_range_is_a_value_error(tiny_data):
    with pytest.raises(ValueError, match=r"size=9937 must be in 1\.\.9936"):
        tiny_data.selection(10000 - 64 + 1)
    with pytest.raises(ValueError, match=r"size=0 must be in 1\.\."):
        tiny_data.selection(0)


def test_selection_task_vectors_are_their_own_stream(tiny_data, tiny_config, synth_cache):
    s_tasks = {tuple(row) for row in tiny_data.selection_items(64).task.tolist()}
    assert len(s_tasks) == 64
    v_tasks = {tuple(row) for row in tiny_data.validation_items().task.tolist()}  # also 64 items, same seed
    assert not s_tasks & v_tasks
    train_tasks = {tuple(row) for s in range(20) for row in tiny_data.train_items(s, 64).task.tolist()}
    assert not s_tasks & train_tasks
    other_seed = SynthMNISTTokens(dataclasses.replace(tiny_config, seed=1), cache_dir=synth_cache)
    assert not s_tasks & {tuple(row) for row in other_seed.selection_items(64).task.tolist()}


def test_selection_is_fixed_and_overridable(tiny_data, tiny_config, synth_cache):
    selection = tiny_data.selection(48)
    assert selection.tokens.shape == (48, 256)
    assert tiny_data.selection(48) is selection  # kept after the first call, as validation is
    assert_batches_equal(selection, SynthMNISTTokens(tiny_config, cache_dir=synth_cache).selection(48))
    swept = tiny_data.selection(48, overrides={1: 1.5})
    assert torch.all(swept.task[:, 1] == 1.5) and torch.equal(swept.label, selection.label)
    others = [i for i in range(18) if i != 1]
    assert torch.equal(swept.task[:, others], selection.task[:, others])
    assert (swept.tokens != selection.tokens).float().mean() > 0.2
    assert_batches_equal(tiny_data.selection(48), selection)  # an override leaves the kept batch alone
