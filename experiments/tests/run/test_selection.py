"""The selection set as an eval subset: ``source: selection`` builds it from ``data.selection(size)``, logs
``val/<name>/...`` beside ``val/all/...``, and bad sources or sizes fail naming what is allowed."""

from __future__ import annotations

import pytest
import torch
from projectable_data.imagenet_tokens import ImageNetTokensConfig

from experiments.config import ConfigError, parse_run
from experiments.run.datasets import build_data, validation_subsets
from experiments.run.evaluate import EvalConfig, Subset
from experiments.train import train


def test_selection_subset_is_built_from_the_selection_set(smoke):
    run = parse_run(smoke("+eval.subsets.selection={source: selection, size: 32}",
                          "+eval.subsets.sel_odd={source: selection, size: 32, labels: [1, 3, 5, 7, 9]}"))
    assert run.eval.subsets["selection"] == Subset(source="selection", size=32)
    data = build_data(run.data, run.paths.cache)
    subsets = validation_subsets(data, run.eval.subsets)
    for name, batch in [("selection", subsets["selection"]), ("all", subsets["all"])]:
        expected = data.selection(32) if name == "selection" else data.validation()
        assert all(torch.equal(x, y) for x, y in zip(batch, expected))
    odd = subsets["sel_odd"]
    assert set(odd.label.tolist()) <= {1, 3, 5, 7, 9} and 0 < len(odd.label) < 32
    assert not set(data.selection_items(32).digit_index.tolist()) & set(data.validation_items().digit_index.tolist())


def test_train_logs_the_selection_subset_beside_validation(smoke, tmp_path):
    metrics = train(smoke("eval.samples=0", "+eval.subsets.selection={source: selection, size: 32}",
                          f"run_dir={tmp_path / 'r'}"))
    assert {"val/all/s1/nats_per_token", "val/selection/s1/nats_per_token"} <= set(metrics)
    assert metrics["val/selection/s1/nats_per_token"] != metrics["val/all/s1/nats_per_token"]


@pytest.mark.parametrize("subset, message", [
    ({"source": "test"}, "source='test' is not a subset source; use one of validation, selection"),
    ({"source": "selection"}, "source=selection needs size >= 1"),
    ({"source": "selection", "size": 0}, "source=selection needs size >= 1"),
    ({"size": 32}, "size=32 applies to source=selection only"),
])
def test_bad_subset_source_or_size_is_refused(subset, message):
    with pytest.raises(ConfigError, match=f"eval.subsets.bad.*{message}"):
        EvalConfig.from_node({"subsets": {"bad": subset}})


def test_a_selection_larger_than_the_test_digits_left_is_refused(smoke):
    run = parse_run(smoke("+eval.subsets.selection={source: selection, size: 100000}"))
    with pytest.raises(ValueError, match=r"eval.subsets.selection: selection size=100000 must be in 1\.\."):
        validation_subsets(build_data(run.data, run.paths.cache), run.eval.subsets)


def test_the_imagenet_track_has_no_selection_set(tmp_path):
    torch.set_num_threads(1)
    config = ImageNetTokensConfig(resolution=8, palette_size=16, train_size=160, val_size=32,
                                  palette_fit_images=160, tokenizer="tiny", tokenizer_steps=5,
                                  encoder="random_conv_for_tests", task_dim=12)
    data = build_data(config, tmp_path / "cache")
    subsets = {"all": Subset(), "selection": Subset(source="selection", size=8)}
    with pytest.raises(ValueError, match="eval.subsets.selection: source=selection exists for SynthMNIST only"):
        validation_subsets(data, subsets)
    assert len(validation_subsets(data, {"all": Subset()})["all"].label) == 32
