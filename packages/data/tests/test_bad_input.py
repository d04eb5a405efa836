"""Damaged cache and input files are named in the error, with the fix. The catalogue is in the README under
"Bad input"."""

import gzip
import pickle
import zipfile

import numpy as np
import pytest
import torch

from projectable_data import SynthMNISTTokens, TaskVectorConfig, load_mnist, task_vectors
from projectable_data.encoders import load_precomputed_embeddings, save_embeddings
from projectable_data.mnist import MNIST_MD5, MNISTError
from projectable_data.palette import Palette, PaletteFileError


def damaged_copies(good: bytes, tmp_path) -> dict:
    """name -> path of a truncated, garbage or foreign version of the .npz file ``good``."""
    np.save(tmp_path / "one-array.npy", np.zeros(3))
    member_damaged = bytearray(good)
    start = good.index(b"\x93NUMPY") + 200  # inside the first array's data (savez stores it uncompressed)
    member_damaged[start : start + 8] = b"XXXXXXXX"
    contents = {
        "truncated": good[: len(good) // 2],
        "truncated-tail": good[:-30],
        "empty": b"",
        "garbage": b"hello, not an archive",
        "pickle": pickle.dumps({"centres": [1, 2, 3]}),
        "one-array": (tmp_path / "one-array.npy").read_bytes(),
        "bad-crc": bytes(member_damaged),
    }
    paths = {}
    for name, content in contents.items():
        paths[name] = tmp_path / f"{name}.npz"
        paths[name].write_bytes(content)
    return paths


# ---- palette cache --------------------------------------------------------------------------------------------


def test_damaged_palette_files_are_named(tmp_path):
    good = Palette(np.random.default_rng(1).uniform(-1, 1, (64, 3))).save(tmp_path / "good.npz").read_bytes()
    for path in damaged_copies(good, tmp_path).values():
        with pytest.raises(PaletteFileError, match=rf"palette file {path} is truncated, damaged or not a palette "
                                                   r".*It is a cache: delete it to refit"):
            Palette.load(path)
    np.savez(tmp_path / "no-meta.npz", centres=np.zeros((4, 3), np.float32))
    with pytest.raises(PaletteFileError, match=rf"palette file {tmp_path / 'no-meta.npz'} .*KeyError"):
        Palette.load(tmp_path / "no-meta.npz")
    np.savez(tmp_path / "nan.npz", centres=np.full((4, 3), np.nan, np.float32), meta=np.array('{"hash": "x"}'))
    with pytest.raises(PaletteFileError, match=rf"palette file {tmp_path / 'nan.npz'} .*NaN or inf"):
        Palette.load(tmp_path / "nan.npz")
    with pytest.raises(FileNotFoundError, match=f"no palette file at {tmp_path / 'absent.npz'}"):
        Palette.load(tmp_path / "absent.npz")


def test_a_damaged_palette_cache_is_named_and_refitted_when_the_dataset_loads_it(tiny_config, tiny_data, tmp_path):
    path = tmp_path / tiny_data._palette_path().name  # where a dataset with this cache_dir looks
    path.write_bytes(tiny_data._palette_path().read_bytes()[:100])
    with pytest.warns(UserWarning, match=rf"palette file {path} is truncated.*refitting it"):
        refitted = SynthMNISTTokens(tiny_config, cache_dir=tmp_path)
    assert refitted.palette.hash == tiny_data.palette.hash  # the fit is deterministic: the same palette
    assert Palette.load(path).hash == tiny_data.palette.hash  # and the cache is whole again


def test_non_finite_images_and_centres_are_refused():
    palette = Palette(np.linspace(-1, 1, 12).reshape(4, 3))
    images = torch.zeros(2, 3, 4, 4)
    images[1, 0, 2, 2] = float("nan")
    with pytest.raises(ValueError, match="encode got images with 1 NaN or inf values"):
        palette.encode(images)
    with pytest.raises(ValueError, match="palette centres contain NaN or inf"):
        Palette(np.full((4, 3), np.inf))


# ---- precomputed embeddings (task vectors) --------------------------------------------------------------------


def test_damaged_embeddings_files_are_named(tmp_path):
    save_embeddings(tmp_path / "good.npz", np.arange(64), np.ones((64, 16), np.float32))
    good = (tmp_path / "good.npz").read_bytes()
    for path in damaged_copies(good, tmp_path).values():
        with pytest.raises(ValueError, match=rf"embeddings file {path} (is not a readable .npz|is damaged|holds one "
                                             r"array of shape \(3,\)).*save_embeddings\(path, ids, embeddings\)"):
            load_precomputed_embeddings(path)
        with pytest.raises(ValueError, match=rf"embeddings file {path} "):
            task_vectors(TaskVectorConfig(kind="precomputed", path=str(path)), np.zeros((4, 3, 8, 8), np.uint8),
                         tmp_path / "cache")


def test_the_damaged_member_case_is_really_damaged(tmp_path):
    save_embeddings(tmp_path / "good.npz", np.arange(64), np.ones((64, 16), np.float32))
    path = damaged_copies((tmp_path / "good.npz").read_bytes(), tmp_path)["bad-crc"]
    with zipfile.ZipFile(path) as archive:
        assert archive.testzip() is not None  # the fixture above damages a member, not the directory


# ---- MNIST files ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("cut", [10, 1000, -1], ids=["inside-header", "inside-data", "one-byte-short"])
def test_truncated_raw_mnist_files_are_named_even_unverified(mnist_root, tmp_path, cut):
    for name in MNIST_MD5:
        content = gzip.decompress((mnist_root / f"{name}.gz").read_bytes())
        if name == "t10k-images-idx3-ubyte":
            content = content[:cut]
        (tmp_path / name).write_bytes(content)
    path = tmp_path / "t10k-images-idx3-ubyte"
    with pytest.raises(MNISTError, match=rf"{path} (is truncated|holds \d+ bytes but its IDX header).*Delete it"):
        load_mnist("test", tmp_path, verify=False)
    with pytest.raises(MNISTError, match=rf"{path} is corrupt: MD5"):
        load_mnist("test", tmp_path, verify=True)
