"""The ImageNet track on its stand-in at smoke scale: its data composes the VQ-VAE with the data package
(tokens are the VQ-VAE's codes, every cache is built once and found again under the same keys), Table 2 and
Table 4 grids plan the right cells, the Table 4 subsets hold the right labels, ``train(cfg)`` trains M~_s and
P_s on encoder task vectors."""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import pytest
import torch
from mlflow.tracking import MlflowClient
from projectable_data import write_batch_file
from projectable_data.imagenet_tokens import ImageNetTokensConfig, dataset_directory, images_key

from experiments.config import compose, parse_run, to_container
from experiments.orchestration.plan import parse_stages, plan_stage
from experiments.prepare_data import data_configs
from experiments.run import image_tokens
from experiments.run.datasets import build_data, validation_subsets
from experiments.run.evaluate import split_condition
from experiments.tracking.store import recorded_run_id
from experiments.train import train

# Tiny tokenizer and the random conv encoder (smoke tests only): seconds instead of minutes.
TINY = ["data.tokenizer=tiny", "data.tokenizer_steps=10", "data.encoder=random_conv_for_tests", "data.task_dim=16"]


def tiny_config(**changes) -> ImageNetTokensConfig:
    return ImageNetTokensConfig(resolution=8, palette_size=16, train_size=160, val_size=32, palette_fit_images=160,
                                tokenizer="tiny", tokenizer_steps=5, encoder="random_conv_for_tests", task_dim=12,
                                **changes)


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    return tmp_path_factory.mktemp("imagenet_track_cache")


@pytest.fixture(scope="module")
def tiny(cache):
    torch.set_num_threads(1)
    return build_data(tiny_config(), cache)


def test_tokens_are_the_vqvae_codes_of_the_images(tiny):
    index = tiny.train_positions(2, 8)
    codes = tiny.tokenizer.encode(tiny.images("train", index))  # (8, 8, 8)
    assert torch.equal(tiny.train_batch(2, 8).tokens, codes.reshape(8, 64))
    val = tiny.validation()
    assert torch.equal(val.tokens, tiny.tokenizer.encode(tiny.images("val", np.arange(32))).reshape(32, 64))
    assert tiny.decode(val.tokens[:4]).shape == (4, 3, 16, 16)


def test_the_summary_reports_the_vqvae_and_the_embeddings(tiny, cache):
    summary = tiny.summary
    assert summary["stand_in"] is True and (summary["train_images"], summary["val_images"]) == (160, 32)
    assert summary["vqvae_codes"] == 16 and summary["vqvae_params"] == tiny.tokenizer.num_params()
    assert math.isfinite(summary["vqvae_val_psnr"]) and 1.0 <= summary["vqvae_val_perplexity"] <= 16.0
    assert 0 <= summary["vqvae_val_dead_codes"] < 16 and summary["vqvae_train"]["steps"] == 5
    assert summary["encoder"] == "random_conv_for_tests" and summary["embedding_dim"] == 32
    assert image_tokens.read_summary(tiny.config, cache) == summary


def test_a_second_build_finds_every_cache_and_trains_nothing(tiny, cache, monkeypatch):
    directory = dataset_directory(tiny.config, cache)
    key = image_tokens.vqvae_key(tiny.config)
    built = [directory / "images.npz", directory / f"vqvae-{key}.safetensors", directory / f"summary-{key}.json",
             *directory.glob(f"tokens-{key}/*/tokens.npy"), *directory.glob("embeddings-*/*/embeddings.npy")]
    assert len(built) == 7 and all(p.is_file() for p in built)
    stamps = [p.stat().st_mtime_ns for p in built]
    calls = []
    monkeypatch.setattr(image_tokens, "train_vqvae", lambda *args, **kwargs: calls.append(args))
    monkeypatch.setattr(image_tokens, "evaluate_reconstruction", lambda *args, **kwargs: calls.append(args))
    again = build_data(tiny.config, cache)
    assert calls == [] and [p.stat().st_mtime_ns for p in built] == stamps
    for step in (0, 30):  # 30 * 8 > 160: past the first epoch
        assert all(torch.equal(x, y) for x, y in zip(tiny.train_batch(step, 8), again.train_batch(step, 8)))
    assert again.summary == tiny.summary
    # a split of the same images reuses the VQ-VAE and its tokens; only its training pool differs
    split = build_data(dataclasses.replace(tiny.config, split="half", c1_fraction=0.125), cache)
    assert calls == [] and [p.stat().st_mtime_ns for p in built] == stamps
    assert len(split.pool) < len(tiny.pool)
    # another tokenizer setting trains its own VQ-VAE beside the first
    monkeypatch.undo()
    build_data(dataclasses.replace(tiny.config, tokenizer_steps=3), cache)
    assert len(list(directory.glob("vqvae-*.safetensors"))) == 2 and [p.stat().st_mtime_ns for p in built] == stamps


def test_cache_keys_are_those_existing_caches_were_built_under():
    """Caches under paths.cache are found only while these keys stay: the smoke config's, as built before."""
    run = parse_run(compose(["scale=smoke", "data=imagenet"]))
    assert (images_key(run.data), image_tokens.vqvae_key(run.data)) == ("c4c4c5bb027e3168", "13f857d347ddb9f5")


def test_imagenet64_files_go_through_the_same_composition(tmp_path):
    rng = np.random.default_rng(0)
    root = tmp_path / "imagenet64"
    root.mkdir()
    for name, n in [(f"train_data_batch_{i}.npz", 24) for i in range(1, 11)] + [("val_data.npz", 16)]:
        write_batch_file(root / name, rng.integers(0, 256, (n, 3, 64, 64), dtype=np.uint8), rng.integers(0, 1000, n))
    cfg = ImageNetTokensConfig(images="imagenet64", imagenet_root=str(root), resolution=32, palette_size=8,
                               train_size=None, val_size=16, palette_fit_images=32, tokenizer="tiny",
                               tokenizer_steps=2, encoder="random_conv_for_tests", task_dim=4, split="mod2")
    data = build_data(cfg, tmp_path / "cache")
    batch = data.train_batch(0, 4)
    assert batch.tokens.shape == (4, 1024) and batch.task.shape == (4, 4)
    assert len(data.train_labels) == 240 and data.summary["stand_in"] is False
    assert data.summary["image_side"] == 64 and data.summary["vqvae_codes"] == 8


def plan(cfg) -> dict[str, list[dict]]:
    """Trial configs of every stage, earlier cells standing in as init sources."""
    out, uris = {}, {}
    for name, stage in parse_stages(cfg.experiment).items():
        out[name] = plan_stage(cfg, name, stage, "sweep", None, uris)
        uris.update({cell: ["runs:/run/model"] for cell in stage.cells})
    return out


@pytest.mark.parametrize("scale", ["smoke", "cpu"])
def test_table2_plans_conditional_baselines_then_projections_from_m1(scale):
    stages = plan(compose(["experiment=table2", f"scale={scale}"]))
    stage1 = {(s["config"]["kind"], s["config"]["width"]) for s in stages["stage1"]}
    assert stage1 == {("unconditional", 1.0), *(("conditional", w) for w in (1.0, 0.5, 0.25, 0.125))}
    stage2 = {s["cell"]: s["config"] for s in stages["stage2"]}
    assert {c: v["projector"]["scales"] for c, v in stage2.items() if v["kind"] == "projected"} == {
        "P2": [0.5], "P4": [0.25], "P8": [0.125]}
    assert stage2["control"]["kind"] == "unconditional"
    for spec in stages["stage1"] + stages["stage2"]:
        config = spec["config"]
        assert "images" in config["data"] and config["data"]["encoder"] == "simclr"
        assert config["projector"]["task_dim"] == config["data"]["task_dim"]
        assert config["model"]["vocab_size"] == config["data"]["palette_size"]
    assert all(s["config"]["init_from"] == "runs:/run/model" for s in stages["stage2"])


@pytest.mark.parametrize("scale, sizes", [("smoke", (16, 1, 64, 0.5)), ("cpu", (32, 10, 256, 0.5))])
def test_simclr_is_the_default_encoder_sized_by_the_scale_and_efficientnet_a_switch(scale, sizes):
    run = parse_run(compose(["experiment=table2", f"scale={scale}"]))
    data = run.data
    assert data.encoder == "simclr"
    assert (data.simclr_width, data.simclr_epochs, data.simclr_batch_size, data.simclr_temperature) == sizes
    assert 4 * data.simclr_width >= data.task_dim  # t is the embedding, PCA-whitened to task_dim
    switched = parse_run(compose(["experiment=table2", f"scale={scale}", "data.encoder=efficientnet_lite0"]))
    assert switched.data.encoder == "efficientnet_lite0"
    # the encoder's sizes are the ImageNet track's: SynthMNIST's data section never sees them
    assert not hasattr(parse_run(compose([f"scale={scale}"])).data, "simclr_width")


def test_a_simclr_build_trains_on_the_training_images_and_the_summary_names_it(cache):
    config = dataclasses.replace(tiny_config(), encoder="simclr", simclr_width=4, simclr_epochs=2,
                                 simclr_batch_size=32)
    data = build_data(config, cache)
    summary = data.summary
    assert summary["encoder"] == "simclr" and summary["embedding_dim"] == 16
    encoder = summary["encoder_config"]
    assert (encoder["config"]["width"], encoder["config"]["epochs"], encoder["config"]["batch_size"]) == (4, 2, 32)
    assert encoder["train"]["train_images"] == 160 and encoder["train"]["steps"] == 2 * (160 // 32)
    directory = dataset_directory(config, cache)
    assert len(list(directory.glob("simclr-*.safetensors"))) == 1
    assert data.train_batch(0, 8).task.shape == (8, 12) and data.validation().task.shape == (32, 12)
    # the validation embeddings are those of the SimCLR trained on the training images (loaded, not retrained)
    from projectable_data.imagenet_tokens import simclr_encoder

    encoder = simclr_encoder(config, data._train_set.images, directory, progress=False)
    val_images = torch.from_numpy(np.ascontiguousarray(data._val_set.images))
    np.testing.assert_allclose(np.asarray(data._raw_val.embeddings), encoder(val_images).numpy(), rtol=1e-5,
                               atol=1e-5)
    again = build_data(config, cache)
    assert again.summary == summary and len(list(directory.glob("simclr-*.safetensors"))) == 1


def test_table2_at_gpu_scale_needs_imagenet_files_and_plans_with_them():
    with pytest.raises(Exception, match="images=imagenet64"):
        plan(compose(["experiment=table2", "scale=gpu"]))
    stages = plan(compose(["experiment=table2", "scale=gpu", "data.images=imagenet64", "data.train_size=null"]))
    assert stages["stage2"][0]["config"]["model"]["block_size"] == 32 * 32


def test_table4_plans_four_projected_cells_from_an_m1_on_the_common_eighth():
    stages = plan(compose(["experiment=table4", "scale=smoke"]))
    (m1,) = stages["stage1"]
    assert (m1["config"]["data"]["c1_fraction"], m1["config"]["data"]["c2_fraction"]) == (0.125, 0.125)
    cells = {s["cell"]: s["config"] for s in stages["stage2"]}
    regimes = {"all": (1.0, 1.0), "eighth": (0.125, 0.125), "c1_eighth": (0.125, 1.0)}
    # equal fractions train one run for both splits; 1/8/all depends on the split
    assert set(cells) == {"both_all", "both_eighth", "half_c1_eighth", "mod2_c1_eighth"}
    for name, config in cells.items():
        split, regime = name.split("_", 1)
        data = config["data"]
        assert (data["c1_fraction"], data["c2_fraction"]) == regimes[regime]
        assert split == "both" or data["split"] == split
        assert config["kind"] == "projected" and config["projector"]["scales"] == [0.5]
        assert config["init_from"] == "runs:/run/model"


def test_equal_fractions_keep_the_same_training_images_whatever_the_split(smoke, tmp_path):
    """What lets one both_<regime> run serve both splits' rows of Table 4."""
    for fraction in (1.0, 0.125):
        pools = []
        for split in ("half", "mod2"):
            cfg = smoke("experiment=table4", *TINY, f"data.split={split}", f"data.c1_fraction={fraction}",
                        f"data.c2_fraction={fraction}")
            run = parse_run(cfg)
            pools.append(build_data(run.data, run.paths.cache).pool)
        assert np.array_equal(*pools)
    uneven = []  # 1/8/all: which half is whole depends on the split
    for split in ("half", "mod2"):
        run = parse_run(smoke("experiment=table4", *TINY, f"data.split={split}", "data.c1_fraction=0.125",
                              "data.c2_fraction=1.0"))
        uneven.append(set(build_data(run.data, run.paths.cache).pool.tolist()))
    assert uneven[0] != uneven[1]


def test_table4_subsets_route_digits_into_c1_and_c2():
    subsets = to_container(compose(["experiment=table4", "scale=smoke"]))["eval"]["subsets"]
    assert subsets["half_C1"]["labels"] == [0, 1, 2, 3, 4] and subsets["half_C2"]["labels"] == [5, 6, 7, 8, 9]
    assert subsets["mod2_C1"]["labels"] == [0, 2, 4, 6, 8] and subsets["mod2_C2"]["labels"] == [1, 3, 5, 7, 9]
    imagenet = to_container(compose(["experiment=table4", "scale=paper", "data.images=imagenet64"]))["eval"]["subsets"]
    assert imagenet["half_C1"]["labels"] == list(range(500)) and imagenet["mod2_C2"]["labels"] == list(range(1, 1000, 2))


def test_prepare_lists_each_distinct_data_config_once():
    configs = data_configs(compose(["experiment=table4", "scale=smoke"]))
    keys = [(c.split, c.c1_fraction, c.c2_fraction) for c in configs]
    # the root's (no split); half 1/8-1/8 (stage 1's M_1 and both_eighth); half all (both_all); half 1/8-all;
    # mod2 1/8-all
    assert len(keys) == len(set(keys)) == 5


def test_train_and_validation_subsets_hold_only_their_split(smoke, tmp_path):
    cfg = smoke("experiment=table4", *TINY, "data.split=mod2", "data.c1_fraction=0.125", "data.c2_fraction=1.0")
    run = parse_run(cfg)
    data = build_data(run.data, run.paths.cache)
    labels = torch.from_numpy(data.train_labels[data.pool])
    even, odd = int((labels % 2 == 0).sum()), int((labels % 2 == 1).sum())
    assert 0 < even < odd / 4  # C1 (even digits) at 1/8, C2 (odd) whole
    subsets = validation_subsets(data, run.eval.subsets)
    assert set(subsets["mod2_C1"].label.tolist()) <= {0, 2, 4, 6, 8}
    assert set(subsets["half_C2"].label.tolist()) <= {5, 6, 7, 8, 9}
    assert len(subsets["half_C1"].label) + len(subsets["half_C2"].label) == len(subsets["all"].label)


@pytest.mark.parametrize("kind", [["kind=conditional", "width=0.25"], ["kind=projected", "projector.scales=[0.5]"]])
def test_train_on_the_standin_with_encoder_task_vectors(kind, smoke, store, tmp_path):
    cfg = smoke("experiment=table2", *TINY, *kind, f"run_dir={tmp_path / 'run'}")
    metrics = train(cfg)
    # own task vectors: the learning curve's keys (permuted and mean t are scored at the end only)
    names = [k for k in metrics if k.endswith("/nats_per_token") and split_condition(k).condition == "own"]
    assert names
    uniform = math.log(cfg.model.vocab_size)  # nats/token of guessing every VQ-VAE code alike
    client, run_id = MlflowClient(store.uri), recorded_run_id(tmp_path / "run")
    for key in names:
        start = {m.step: m.value for m in client.get_metric_history(run_id, key)}[0]  # before the first step
        assert 0 < metrics[key] < uniform, (key, metrics[key], uniform)
        assert metrics[key] < start, (key, metrics[key], start)
    assert (tmp_path / "run" / "final").is_dir() and (tmp_path / "run" / "samples").is_dir()
    # the final models point to the VQ-VAE saved beside them, so their exports ship it with no flag
    from projectable.tokenizer import read_tokenizer

    final = tmp_path / "run" / "final"
    for file in set(final.glob("*.safetensors")) - {final / "vqvae.safetensors"}:
        assert read_tokenizer(file).vqvae == (final / "vqvae.safetensors").resolve(), file
