import zipfile

import numpy as np
import pytest

from projectable_data.imagenet import (
    TRAIN_FILES,
    VAL_FILE,
    ImageNet64,
    ImageNet64Config,
    LabelSplitConfig,
    decode_rows,
    in_c1,
    read_class_mapping,
    split_dataset,
    task_split,
    write_batch_file,
)


def _fake_release(root, sizes=(30, 20), val=25, seed=0, compressed=False):
    """Files of the official format with random images; returns (train images, train labels) 0-based."""
    rng = np.random.default_rng(seed)
    imgs, labels = [], []
    for i, n in enumerate(sizes):
        x = rng.integers(0, 256, (n, 3, 64, 64), dtype=np.uint8)
        y = rng.integers(0, 1000, n)
        if compressed:
            np.savez_compressed(
                root / TRAIN_FILES[i], data=x.reshape(n, -1), labels=(y + 1).tolist(), mean=np.zeros(12288)
            )
        else:
            write_batch_file(root / TRAIN_FILES[i], x, y, mean=np.zeros(12288))
        imgs.append(x)
        labels.append(y)
    xv = rng.integers(0, 256, (val, 3, 64, 64), dtype=np.uint8)
    write_batch_file(root / VAL_FILE, xv, rng.integers(0, 1000, val))
    return np.concatenate(imgs), np.concatenate(labels)


def test_known_colours_decode_exactly(tmp_path):
    # a hand-built row in the release's layout: 4096 red values, then green, then blue (row-major 64x64)
    red = np.zeros((64, 64), np.uint8)
    red[0, :] = 255  # top row pure red
    green = np.zeros((64, 64), np.uint8)
    green[:, 0] = 200  # left column green
    blue = np.full((64, 64), 7, np.uint8)
    blue[63, 63] = 99
    row = np.concatenate([red.ravel(), green.ravel(), blue.ravel()])[None]  # (1, 12288)
    np.savez(tmp_path / VAL_FILE, data=row, labels=[1])
    ds = ImageNet64(ImageNet64Config(root=str(tmp_path), split="val"))
    img = ds[0]  # (3, 64, 64)
    assert img.shape == (3, 64, 64) and img.dtype == np.uint8
    assert tuple(img[:, 0, 5]) == (255, 0, 7)  # top row: red, no green, blue 7
    assert tuple(img[:, 0, 0]) == (255, 200, 7)  # top-left: red + green column
    assert tuple(img[:, 10, 0]) == (0, 200, 7)  # left column below the top
    assert tuple(img[:, 63, 63]) == (0, 0, 99)  # bottom-right pixel
    assert tuple(img[:, 30, 30]) == (0, 0, 7)
    assert ds.labels.tolist() == [0]  # file label 1 -> 0-based label 0


@pytest.mark.parametrize("compressed", [False, True])
def test_train_split_reads_all_files_in_order(tmp_path, compressed, monkeypatch):
    images, labels = _fake_release(tmp_path, compressed=compressed)
    monkeypatch.setenv("PROJECTABLE_IMAGENET64_ROOT", str(tmp_path))
    ds = ImageNet64(ImageNet64Config(num_train_files=2))
    assert len(ds) == 50
    assert np.array_equal(ds.labels, labels)
    assert np.array_equal(ds[0:50], images)
    idx = np.array([49, 3, 31, 29, 30, 3])  # crosses the file boundary, unsorted, repeated
    assert np.array_equal(ds[idx], images[idx])
    sub = ds.subset([40, 2])
    assert len(sub) == 2 and np.array_equal(sub[0:2], images[[40, 2]])
    assert np.array_equal(sub.labels, labels[[40, 2]])
    if not compressed:
        assert isinstance(ds._files[0].data, np.memmap)  # stored members are memory-mapped


def test_decode_rows_is_channel_planar():
    rows = np.arange(12288, dtype=np.int64)[None] % 251
    img = decode_rows(rows)
    assert img[0, 1, 2, 3] == (4096 + 2 * 64 + 3) % 251


def test_missing_and_corrupt_files_name_path_and_fix(tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        ImageNet64(ImageNet64Config(root=str(tmp_path / "nope")))
    with pytest.raises(FileNotFoundError, match=r"lacks \['val_data.npz'\].*image-net.org"):
        ImageNet64(ImageNet64Config(root=str(tmp_path), split="val"))
    (tmp_path / VAL_FILE).write_bytes(b"not a zip file")
    with pytest.raises(ValueError, match="val_data.npz is not a readable npz.*download"):
        ImageNet64(ImageNet64Config(root=str(tmp_path), split="val"))
    np.savez(tmp_path / VAL_FILE, data=np.zeros((2, 3072), np.uint8), labels=[1, 2])
    with pytest.raises(ValueError, match=r"val_data.npz.*\(N, 12288\) uint8"):
        ImageNet64(ImageNet64Config(root=str(tmp_path), split="val"))
    np.savez(tmp_path / VAL_FILE, data=np.zeros((2, 12288), np.uint8), labels=[0, 2])
    with pytest.raises(ValueError, match="1..1000"):
        ImageNet64(ImageNet64Config(root=str(tmp_path), split="val"))
    np.savez(tmp_path / VAL_FILE, data=np.zeros((2, 12288), np.uint8))
    with pytest.raises(ValueError, match="no 'labels' array"):
        ImageNet64(ImageNet64Config(root=str(tmp_path), split="val"))
    np.savez(tmp_path / VAL_FILE, data=np.zeros((2, 12288), np.uint8), labels=[1, 2, 3])
    with pytest.raises(ValueError, match="2 images but 3 labels"):
        ImageNet64(ImageNet64Config(root=str(tmp_path), split="val"))
    with pytest.raises(ValueError, match="split"):
        ImageNet64Config(split="test")


def test_truncated_file_is_reported(tmp_path):
    write_batch_file(tmp_path / VAL_FILE, np.zeros((4, 3, 64, 64), np.uint8), [0, 1, 2, 3])
    raw = (tmp_path / VAL_FILE).read_bytes()
    (tmp_path / VAL_FILE).write_bytes(raw[: len(raw) // 2])
    with pytest.raises(ValueError, match="val_data.npz"):
        ImageNet64(ImageNet64Config(root=str(tmp_path), split="val"))
    assert not zipfile.is_zipfile(tmp_path / VAL_FILE)


def test_table4_splits_on_zero_based_labels():
    labels = np.arange(1000)
    assert (
        in_c1(labels, "half").sum() == 500 and in_c1(labels, "half")[499] and not in_c1(labels, "half")[500]
    )
    assert in_c1(labels, "mod2").sum() == 500 and in_c1(labels, "mod2")[0] and not in_c1(labels, "mod2")[1]
    with pytest.raises(ValueError, match="0-based"):
        in_c1(np.array([1000]), "half")


def test_task_split_fractions_are_per_class_and_deterministic():
    rng = np.random.default_rng(0)
    labels = np.repeat(np.arange(1000), 16)[rng.permutation(16000)]
    full = task_split(labels, LabelSplitConfig("mod2"))
    assert len(full.c1) == len(full.c2) == 8000
    assert np.all(labels[full.c1] % 2 == 0) and np.all(labels[full.c2] % 2 == 1)
    cfg = LabelSplitConfig.table4("mod2", "c1_eighth", seed=1)
    part = task_split(labels, cfg)
    assert len(part.c1) == 1000 and len(part.c2) == 8000  # 2 of 16 per C1 class, all of C2
    assert np.all(np.bincount(labels[part.c1], minlength=1000)[::2] == 2)
    assert np.array_equal(part.c1, task_split(labels, cfg).c1)  # deterministic
    assert not np.array_equal(part.c1, task_split(labels, LabelSplitConfig("mod2", 0.125, 1.0, seed=2)).c1)
    assert set(part.c1) <= set(full.c1)
    eighth = task_split(labels, LabelSplitConfig.table4("half", "eighth"))
    assert len(eighth.c1) == len(eighth.c2) == 1000
    assert np.all(labels[eighth.c1] < 500)
    with pytest.raises(ValueError, match="c1_fraction"):
        LabelSplitConfig("half", c1_fraction=0.0)
    with pytest.raises(ValueError, match="scheme"):
        LabelSplitConfig("thirds")


def test_split_dataset_views(tmp_path):
    images, labels = _fake_release(tmp_path, sizes=(40,))
    ds = ImageNet64(ImageNet64Config(root=str(tmp_path), num_train_files=1))
    c1, c2 = split_dataset(ds, LabelSplitConfig("half"))
    assert len(c1) + len(c2) == 40
    assert np.all(c1.labels < 500) and np.all(c2.labels >= 500)
    assert np.array_equal(c1[0 : len(c1)], images[labels < 500])


def test_class_mapping(tmp_path):
    lines = [f"n{i:08d} {i + 1} class_{i}" for i in range(1000)]
    (tmp_path / "map.txt").write_text("\n".join(lines[::-1]))
    m = read_class_mapping(tmp_path / "map.txt")
    assert m.wnids[0] == "n00000000" and m.names[999] == "class_999"
    (tmp_path / "short.txt").write_text("\n".join(lines[:10]))
    with pytest.raises(ValueError, match="truncated"):
        read_class_mapping(tmp_path / "short.txt")
    _fake_release(tmp_path, sizes=(5,))
    ds = ImageNet64(
        ImageNet64Config(root=str(tmp_path), num_train_files=1, class_mapping=str(tmp_path / "map.txt"))
    )
    assert ds.class_mapping.names[3] == "class_3"
