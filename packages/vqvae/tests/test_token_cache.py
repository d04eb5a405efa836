import json

import numpy as np
import pytest
import torch
from projectable_vqvae import VQVAE, VQVAEConfig, load_token_cache, tokenize_dataset


class CountingImages:
    """uint8 (N, 3, 16, 16) images that count slice reads and can fail after a number of them."""

    def __init__(self, n=50, fail_after=None, seed=0):
        rng = np.random.default_rng(seed)
        self.data = rng.integers(0, 256, (n, 3, 16, 16), dtype=np.uint8)
        self.fail_after = fail_after
        self.reads = []

    def __len__(self):
        return len(self.data)

    def __getitem__(self, index):
        if index.start != 0 or index.stop != 1:  # the shape probe is not a chunk read
            if self.fail_after is not None and len(self.reads) >= self.fail_after:
                raise KeyboardInterrupt("simulated interruption")
            self.reads.append((index.start, index.stop))
        return self.data[index]


@pytest.fixture
def model():
    m = VQVAE(VQVAEConfig.tiny())
    m.encode(torch.rand(8, 3, 16, 16) * 2 - 1)  # k-means init so later encodes are pure functions
    return m


def test_cache_matches_direct_encoding(tmp_path, model):
    images = CountingImages()
    cache = tokenize_dataset(model, images, tmp_path, chunk_size=16, batch_size=7, progress=False)
    assert cache.tokens.shape == (50, 8, 8) and cache.tokens.dtype == np.uint16
    direct = model.encode(torch.from_numpy(images.data))
    assert torch.equal(cache.get(slice(None)), direct)
    assert cache.get([3, 1]).dtype == torch.int64
    assert np.array_equal(np.load(tmp_path / "tokens.npy"), direct.numpy())  # plain npy on disk
    assert load_token_cache(tmp_path).fingerprint == cache.fingerprint


def test_resume_after_interruption(tmp_path, model):
    interrupted = CountingImages(fail_after=2)
    with pytest.raises(KeyboardInterrupt):
        tokenize_dataset(model, interrupted, tmp_path, chunk_size=16, progress=False)
    progress = json.loads((tmp_path / "progress.json").read_text())
    assert progress == {"done_chunks": [0, 1], "complete": False, "chunk_size": 16}
    with pytest.raises(ValueError, match="unfinished"):
        load_token_cache(tmp_path)
    resumed = CountingImages()
    # a different chunk_size on resume keeps the original chunking
    cache = tokenize_dataset(model, resumed, tmp_path, chunk_size=5, progress=False)
    assert resumed.reads == [(32, 48), (48, 50)]  # only the unfinished chunks were read
    assert torch.equal(cache.get(slice(None)), model.encode(torch.from_numpy(resumed.data)))
    again = CountingImages()
    tokenize_dataset(model, again, tmp_path, chunk_size=16, progress=False)
    assert again.reads == []  # a finished cache is not recomputed


def test_different_model_is_refused_or_rebuilt(tmp_path, model):
    tokenize_dataset(model, CountingImages(), tmp_path, chunk_size=16, progress=False)
    other = VQVAE(VQVAEConfig.tiny())
    other.encode(torch.rand(8, 3, 16, 16))
    with pytest.raises(ValueError, match="model_fingerprint.*overwrite=True"):
        tokenize_dataset(other, CountingImages(), tmp_path, chunk_size=16, progress=False)
    with pytest.raises(ValueError, match="num_images"):
        tokenize_dataset(model, CountingImages(n=40), tmp_path, chunk_size=16, progress=False)
    images = CountingImages()
    cache = tokenize_dataset(other, images, tmp_path, chunk_size=16, overwrite=True, progress=False)
    assert torch.equal(cache.get(slice(None)), other.encode(torch.from_numpy(images.data)))


def test_cache_bad_input(tmp_path, model):
    with pytest.raises(ValueError, match="empty"):
        tokenize_dataset(model, np.zeros((0, 3, 16, 16), np.uint8), tmp_path, progress=False)
    with pytest.raises(ValueError, match=r"\(1, C, H, W\)"):
        tokenize_dataset(model, np.zeros((4, 16, 16), np.uint8), tmp_path, progress=False)
    with pytest.raises(FileNotFoundError, match="tokenize_dataset"):
        load_token_cache(tmp_path / "nothing")
