import gzip
import shutil

import numpy as np
import pytest

from projectable_data import MNIST_MD5, MNISTError, load_mnist, resolve_mnist_root
from projectable_data.mnist import candidate_roots


def test_loads_official_splits(mnist_root):
    train, test = load_mnist("train", mnist_root), load_mnist("test", mnist_root)
    assert train.images.shape == (60000, 28, 28) and train.images.dtype == np.uint8
    assert test.images.shape == (10000, 28, 28) and test.labels.shape == (10000,)
    assert set(np.unique(train.labels)) == set(range(10))
    assert train.images.max() == 255 and train.images.min() == 0


def _copy_mnist(src, dst, raw=()):
    """Copy the four files; names in `raw` are written decompressed."""
    dst.mkdir(exist_ok=True)
    for name in MNIST_MD5:
        if name in raw:
            (dst / name).write_bytes(gzip.decompress((src / f"{name}.gz").read_bytes()))
        else:
            shutil.copy(src / f"{name}.gz", dst / f"{name}.gz")


def test_raw_idx_files_load_like_gz(mnist_root, tmp_path):
    _copy_mnist(mnist_root, tmp_path, raw=("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"))
    raw, gz = load_mnist("test", tmp_path), load_mnist("test", mnist_root)
    np.testing.assert_array_equal(raw.images, gz.images)
    np.testing.assert_array_equal(raw.labels, gz.labels)


def test_missing_file_error_names_path_and_fix(mnist_root, tmp_path):
    _copy_mnist(mnist_root, tmp_path)
    (tmp_path / "t10k-labels-idx1-ubyte.gz").unlink()
    with pytest.raises(MNISTError) as err:
        load_mnist("test", tmp_path)
    message = str(err.value)
    assert str(tmp_path) in message and "t10k-labels-idx1-ubyte" in message
    assert "PROJECTABLE_MNIST_ROOT" in message and "download_mnist" in message


def test_checksum_failure_names_path_and_expected_md5(mnist_root, tmp_path):
    _copy_mnist(mnist_root, tmp_path)
    content = bytearray(gzip.decompress((mnist_root / "t10k-labels-idx1-ubyte.gz").read_bytes()))
    content[100] = (content[100] + 1) % 10  # one wrong label
    (tmp_path / "t10k-labels-idx1-ubyte.gz").write_bytes(gzip.compress(bytes(content)))
    with pytest.raises(MNISTError) as err:
        load_mnist("test", tmp_path)
    message = str(err.value)
    assert "t10k-labels-idx1-ubyte.gz" in message and MNIST_MD5["t10k-labels-idx1-ubyte"] in message
    assert "Delete it" in message


def test_truncated_gzip_is_reported(mnist_root, tmp_path):
    _copy_mnist(mnist_root, tmp_path)
    path = tmp_path / "t10k-images-idx3-ubyte.gz"
    path.write_bytes(path.read_bytes()[:1000])
    with pytest.raises(MNISTError, match="t10k-images-idx3-ubyte.gz"):
        load_mnist("test", tmp_path)


def test_root_lookup_order(mnist_root, tmp_path, monkeypatch):
    monkeypatch.setenv("PROJECTABLE_MNIST_ROOT", str(tmp_path / "env"))
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    roots = candidate_roots()
    assert roots[0] == tmp_path / "env"
    assert roots[1].resolve() == mnist_root.resolve()  # <repo>/../shared/data/mnist
    assert roots[-1] == tmp_path / "cache" / "projectable" / "mnist"
    assert resolve_mnist_root().resolve() == mnist_root.resolve()  # env folder is empty: falls through
    _copy_mnist(mnist_root, tmp_path / "env")
    assert resolve_mnist_root() == tmp_path / "env"


def test_bad_split_is_a_value_error(mnist_root):
    with pytest.raises(ValueError, match="'train' or 'test'"):
        load_mnist("validation", mnist_root)
