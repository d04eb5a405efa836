"""The ImageNet-track token dataset: deterministic, resumable batches of the tokens a tokenizer passed in made;
task vectors are the encoder's embeddings of the images (never the stand-in's true t); label splits; caches
reused; ImageNet64 files."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch

from projectable_data import LabelSplitConfig, task_split, write_batch_file
from projectable_data.imagenet_tokens import (
    ImageNetTokens,
    ImageNetTokensConfig,
    RandomConvEncoderForTests,
    TokenizedSplit,
    dataset_directory,
    embed,
    file_lock,
    fit_task_transform,
    label_group,
    load_image_sets,
    render_standin,
    split_positions,
)


class GreyTokenizer:
    """A stand-in tokenizer: the grey level of each 2x2 patch in `codes` levels, decoded as flat grey."""

    def __init__(self, codes: int):
        self.codes = codes

    def encode(self, images: torch.Tensor) -> torch.Tensor:
        grey = images.float().mean(1, keepdim=True)  # (B, 1, H, W) in [0, 255]
        patches = torch.nn.functional.avg_pool2d(grey, 2)[:, 0]  # (B, h, w)
        return (patches * self.codes / 256).long().clamp(0, self.codes - 1)

    def decode(self, tokens: torch.Tensor) -> torch.Tensor:
        grey = (tokens.float() + 0.5) * 2 / self.codes - 1  # (B, h, w) in [-1, 1]
        return grey.repeat_interleave(2, 1).repeat_interleave(2, 2)[:, None].expand(-1, 3, -1, -1)


def encode_all(tokenizer: GreyTokenizer, images) -> np.ndarray:
    return tokenizer.encode(torch.from_numpy(np.ascontiguousarray(images[:]))).numpy()  # (N, h, w)


def build(cfg: ImageNetTokensConfig, cache, tokens_as=None, **kwargs) -> ImageNetTokens:
    """Images and embeddings from the package's caches, tokens from the grey tokenizer."""
    tokenizer = GreyTokenizer(cfg.palette_size)
    directory = dataset_directory(cfg, cache)
    with file_lock(directory / ".lock"):
        sets = load_image_sets(cfg, directory)
        splits = [
            TokenizedSplit(images, (tokens_as or encode_all)(tokenizer, images.images),
                           embed(cfg, images.images, split, directory))
            for split, images in zip(("train", "val"), sets)
        ]
    return ImageNetTokens(cfg, *splits, tokenizer, **kwargs)


@pytest.fixture(scope="module")
def tiny(mnist_root):
    return ImageNetTokensConfig(
        resolution=8, palette_size=16, mnist_root=str(mnist_root), train_size=192, val_size=48,
        palette_fit_images=192, tokenizer="tiny", tokenizer_steps=5, encoder="random_conv_for_tests", task_dim=12,
    )


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    return tmp_path_factory.mktemp("imagenet_tokens")


@pytest.fixture(scope="module")
def data(tiny, cache):
    torch.set_num_threads(1)
    return build(tiny, cache)


def test_shapes_follow_the_config(data, tiny):
    batch = data.train_batch(0, 8)
    assert batch.tokens.shape == (8, 64) and batch.tokens.dtype == torch.int64
    assert int(batch.tokens.max()) < tiny.palette_size
    assert batch.task.shape == (8, 12) and batch.task.dtype == torch.float32
    assert (data.task_dim, data.vocab_size, data.seq_len, data.image_shape) == (12, 16, 64, (3, 16, 16))
    assert data.decode(batch.tokens).shape == (8, 3, 16, 16)
    assert data.summary is None  # provenance is the tokenizer builder's to give


def test_tokens_are_the_tokenizers_codes_of_the_same_images(data, tiny):
    index = data.train_positions(3, 8)
    images = data.images("train", index)
    assert torch.equal(data.train_batch(3, 8).tokens, GreyTokenizer(16).encode(images).reshape(8, 64))
    val = data.validation()
    assert torch.equal(val.tokens, GreyTokenizer(16).encode(data.images("val", np.arange(48))).reshape(48, 64))


def test_memory_mapped_tokens_give_the_same_batches(data, tiny, cache, tmp_path):
    def memory_map(tokenizer, images):  # a read-only uint16 cache on disk, as token caches are
        path = tmp_path / f"tokens-{len(images)}.npy"
        np.save(path, encode_all(tokenizer, images).astype(np.uint16))
        return np.load(path, mmap_mode="r")

    mapped = build(tiny, cache, tokens_as=memory_map)
    for step in (0, 7):
        assert all(torch.equal(x, y) for x, y in zip(data.train_batch(step, 8), mapped.train_batch(step, 8)))
    assert torch.equal(data.validation().tokens, mapped.validation().tokens)


def test_batches_are_a_function_of_the_step_and_survive_a_restart(data, tiny, cache):
    directory = dataset_directory(tiny, cache)
    cached = sorted(p for p in directory.rglob("*") if p.is_file() and p.name != ".lock")
    assert {p.name for p in cached} >= {"images.npz", "embeddings.npy"}
    stamps = [p.stat().st_mtime_ns for p in cached]
    again = build(tiny, cache)  # a resumed run: renders and embeddings from the cache
    assert [p.stat().st_mtime_ns for p in cached] == stamps
    for step in (0, 5, 40):  # 40 * 8 > 192: past the first epoch
        a, b = data.train_batch(step, 8), again.train_batch(step, 8)
        assert all(torch.equal(x, y) for x, y in zip(a, b))
    assert not torch.equal(data.train_batch(1, 8).tokens, data.train_batch(2, 8).tokens)
    assert all(torch.equal(x, y) for x, y in zip(data.validation(), again.validation()))
    # one epoch visits every training image once
    seen = np.concatenate([data.train_positions(s, 8) for s in range(192 // 8)])
    assert sorted(seen.tolist()) == list(range(192))


def test_task_vectors_are_encoder_embeddings_not_the_true_t(data, tiny):
    train, _ = render_standin(tiny)
    index = data.train_positions(3, 8)
    raw = RandomConvEncoderForTests(seed=tiny.seed)(torch.from_numpy(train.images[index])).numpy()
    expected = data.transform(raw)
    assert np.allclose(data.train_batch(3, 8).task.numpy(), expected, atol=1e-4)
    assert torch.equal(data.train_batch(3, 8).label, torch.from_numpy(train.labels[index]))


def test_validation_overrides_set_task_coordinates(data):
    moved = data.validation(overrides={2: 1.5})
    assert torch.all(moved.task[:, 2] == 1.5)
    assert torch.equal(moved.task[:, 3], data.validation().task[:, 3])
    with pytest.raises(ValueError, match="task coordinate"):
        data.validation(overrides={99: 0.0})


def test_tokens_and_embeddings_must_cover_every_image(data, tiny, cache):
    directory = dataset_directory(tiny, cache)
    train, val = load_image_sets(tiny, directory)
    tokens = encode_all(GreyTokenizer(16), train.images)
    embeddings = embed(tiny, train.images, "train", directory)
    good_val = TokenizedSplit(val, encode_all(GreyTokenizer(16), val.images), embed(tiny, val.images, "val", directory))
    with pytest.raises(ValueError, match="tokenise every image"):
        ImageNetTokens(tiny, TokenizedSplit(train, tokens[:-1], embeddings), good_val, GreyTokenizer(16))
    with pytest.raises(ValueError, match="tokenise every image"):  # a 4x4 grid where the config says 8x8
        ImageNetTokens(tiny, TokenizedSplit(train, tokens[:, ::2, ::2], embeddings), good_val, GreyTokenizer(16))
    with pytest.raises(ValueError, match="embed every image"):
        ImageNetTokens(tiny, good_val, TokenizedSplit(val, good_val.tokens, embeddings), GreyTokenizer(16))


def test_split_pool_keeps_each_side_at_its_fraction(tiny, cache):
    data = build(dataclasses.replace(tiny, split="half", c1_fraction=0.125), cache)
    labels = data.train_labels[data.pool]
    full = np.bincount(data.train_labels, minlength=10)
    kept = np.bincount(labels, minlength=10)
    assert np.array_equal(kept[5:], full[5:])
    assert np.array_equal(kept[:5], np.ceil(full[:5] / 8).astype(int))


def test_label_groups_and_split_match_the_imagenet_splits():
    assert label_group("half", 1, 10) == [0, 1, 2, 3, 4] and label_group("mod2", 2, 10) == [1, 3, 5, 7, 9]
    labels = np.random.default_rng(0).integers(0, 1000, 5000)
    for scheme in ("half", "mod2"):
        ours = split_positions(labels, scheme, 1000, 0.125, 1.0, seed=3)
        theirs = task_split(labels, LabelSplitConfig(scheme, 0.125, 1.0, seed=3))
        assert np.array_equal(ours[0], theirs.c1) and np.array_equal(ours[1], theirs.c2)


def test_task_transform_standardises_and_whitens():
    raw = np.random.default_rng(0).normal(size=(500, 6)) @ np.diag([5, 3, 1, 1, 0.5, 0.1]) + 7
    full = fit_task_transform(raw, 6)(raw)
    assert np.allclose(full.mean(0), 0, atol=1e-5) and np.allclose(full.std(0), 1, atol=1e-3)
    pca = fit_task_transform(raw, 3)(raw)
    assert pca.shape == (500, 3) and np.allclose(np.cov(pca.T, bias=True), np.eye(3), atol=1e-3)
    with pytest.raises(ValueError, match="task_dim"):
        fit_task_transform(raw, 7)


def test_bad_configs_name_the_fix():
    with pytest.raises(ValueError, match="resolution 16, 8 or 4"):
        ImageNetTokensConfig(resolution=32)
    with pytest.raises(ValueError, match="resolution=32"):
        ImageNetTokensConfig(images="imagenet64", resolution=16)
    with pytest.raises(ValueError, match="split"):
        ImageNetTokensConfig(c1_fraction=0.5)
    with pytest.raises(ValueError, match="encoder_path"):
        ImageNetTokensConfig(encoder="precomputed")


def test_imagenet64_files_go_through_the_same_pipeline(tmp_path):
    rng = np.random.default_rng(0)
    root = tmp_path / "imagenet64"
    root.mkdir()
    for name, n in [(f"train_data_batch_{i}.npz", 24) for i in range(1, 11)] + [("val_data.npz", 16)]:
        write_batch_file(root / name, rng.integers(0, 256, (n, 3, 64, 64), dtype=np.uint8), rng.integers(0, 1000, n))
    cfg = ImageNetTokensConfig(images="imagenet64", imagenet_root=str(root), resolution=32, palette_size=8,
                               train_size=None, val_size=16, palette_fit_images=32, tokenizer="tiny",
                               tokenizer_steps=2, encoder="random_conv_for_tests", task_dim=4, split="mod2")
    data = build(cfg, tmp_path / "cache")
    batch = data.train_batch(0, 4)
    assert batch.tokens.shape == (4, 1024) and batch.task.shape == (4, 4)
    assert len(data.train_labels) == 240 and not (dataset_directory(cfg, tmp_path / "cache") / "images.npz").exists()
    assert label_group("half", 1, 1000) == list(range(500))
