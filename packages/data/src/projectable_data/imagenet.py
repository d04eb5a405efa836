"""Downsampled ImageNet 64x64 (Chrabaszcz et al., 2017), the ImageNet data of Sec. 3.1, and the label
splits of Table 4 (App. D).

Files of the official release, all in one directory:
  train_data_batch_1.npz .. train_data_batch_10.npz, val_data.npz
Each holds `data`, (N, 12288) uint8, one image per row, channel-planar: 4096 red values (64x64, row-major),
then 4096 green, then 4096 blue; and `labels`, (N,) integers in 1..1000. Train batches also hold `mean`
(the mean image), which this loader does not need and ignores.

Labels: this module works with 0-based labels, label = file label - 1, in 0..999. The Table 4 splits are
defined on them: "1/2-1/2" puts labels < 500 in C1 (500 classes) and >= 500 in C2 (500 classes); "mod 2"
puts even labels in C1 and odd ones in C2 (even 0-based labels are odd 1-based file labels).

Images are returned as (n, 3, 64, 64) uint8 arrays, the layout the VQ-VAE takes. Uncompressed npz
members (the official files are written by np.savez) are memory-mapped, so the 16 GB training set is
not read into memory; compressed members are read on first use, one file at a time.

Letters in shape comments: N images, C=3 channels, H=W=64.
"""

from __future__ import annotations

import os
import zipfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

import numpy as np

TRAIN_FILES = tuple(f"train_data_batch_{i}.npz" for i in range(1, 11))
VAL_FILE = "val_data.npz"
IMAGE_SIDE = 64
NUM_CLASSES = 1000
ROOT_ENV = "PROJECTABLE_IMAGENET64_ROOT"
_FIX = (
    "download the 'Downsampled ImageNet 64x64' npz release from image-net.org (Imagenet64_train_part1/2, "
    "Imagenet64_val) and put its files in one directory"
)


@dataclass(frozen=True)
class ImageNet64Config:
    root: str | None = None  # directory holding the npz files; None -> $PROJECTABLE_IMAGENET64_ROOT
    split: str = "train"  # "train" (10 batches, 1,281,167 images) or "val" (50,000 images)
    num_train_files: int = 10  # read only the first k train batches (smoke runs on part of the data)
    class_mapping: str | None = (
        None  # optional "wnid label name" text file (map_clsloc.txt); see read_class_mapping
    )

    def __post_init__(self) -> None:
        if self.split not in ("train", "val"):
            raise ValueError(f"split must be 'train' or 'val', got {self.split!r}")
        if not 1 <= self.num_train_files <= len(TRAIN_FILES):
            raise ValueError(f"num_train_files must be in 1..10, got {self.num_train_files}")


class ClassMapping(NamedTuple):
    wnids: tuple[str, ...]  # WordNet ids, indexed by 0-based label
    names: tuple[str, ...]  # human-readable names, indexed by 0-based label


def read_class_mapping(path: str | Path) -> ClassMapping:
    """Read a class-mapping file: one line per class, "wnid label name" with 1-based labels 1..1000
    (the format of map_clsloc.txt shipped with the downsampled release)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(
            f"class mapping {path} not found; pass the map_clsloc.txt of the release or None"
        )
    entries: dict[int, tuple[str, str]] = {}
    for lineno, line in enumerate(path.read_text().splitlines(), 1):
        if not line.strip():
            continue
        parts = line.split(maxsplit=2)
        if len(parts) < 2 or not parts[1].isdigit():
            raise ValueError(f"{path}:{lineno}: expected 'wnid label name', got {line!r}")
        label = int(parts[1]) - 1
        if not 0 <= label < NUM_CLASSES or label in entries:
            raise ValueError(f"{path}:{lineno}: label {parts[1]} is outside 1..1000 or repeated")
        entries[label] = (parts[0], parts[2] if len(parts) > 2 else parts[0])
    if len(entries) != NUM_CLASSES:
        raise ValueError(f"{path} maps {len(entries)} classes, expected {NUM_CLASSES}; the file is truncated")
    return ClassMapping(
        tuple(entries[i][0] for i in range(NUM_CLASSES)), tuple(entries[i][1] for i in range(NUM_CLASSES))
    )


def _npz_member(path: Path, name: str) -> np.ndarray:
    """Array `name` of an npz file, memory-mapped when stored uncompressed, else read into memory."""
    try:
        with zipfile.ZipFile(path) as zf:
            try:
                info = zf.getinfo(f"{name}.npy")
            except KeyError:
                raise ValueError(
                    f"{path} has no '{name}' array (has {sorted(n[:-4] for n in zf.namelist())}); it is not a "
                    f"downsampled-ImageNet batch: {_FIX}"
                ) from None
            if info.compress_type != zipfile.ZIP_STORED:
                with zf.open(info) as f:
                    return np.lib.format.read_array(f, allow_pickle=False)
            header_offset = info.header_offset
        with open(path, "rb") as f:
            # local file header: 30 fixed bytes, then the file name and an extra field of given lengths
            f.seek(header_offset + 26)
            name_len, extra_len = np.frombuffer(f.read(4), dtype="<u2")
            f.seek(header_offset + 30 + int(name_len) + int(extra_len))
            version = np.lib.format.read_magic(f)
            if version == (1, 0):
                shape, fortran, dtype = np.lib.format.read_array_header_1_0(f)
            elif version == (2, 0):
                shape, fortran, dtype = np.lib.format.read_array_header_2_0(f)
            else:  # a header format without a public reader: read the member the slow way
                with zipfile.ZipFile(path) as zf, zf.open(f"{name}.npy") as member:
                    return np.lib.format.read_array(member, allow_pickle=False)
            offset = f.tell()
        if dtype.hasobject:
            raise ValueError(f"{path}: '{name}' holds Python objects; {_FIX}")
        return np.memmap(
            path, dtype=dtype, mode="r", offset=offset, shape=shape, order="F" if fortran else "C"
        )
    except (zipfile.BadZipFile, OSError, EOFError) as err:
        raise ValueError(
            f"{path} is not a readable npz file ({err}); it is corrupt or truncated: {_FIX}"
        ) from err


@dataclass
class _File:
    path: Path
    start: int  # global index of its first image
    labels: np.ndarray  # (n,) int64, 0-based
    _data: np.ndarray | None = None

    @property
    def data(self) -> np.ndarray:  # (n, 12288) uint8
        if self._data is None:
            self._data = _npz_member(self.path, "data")
        return self._data


def _open_file(path: Path, start: int) -> _File:
    if not path.is_file():
        raise FileNotFoundError(
            f"{path} not found; {_FIX}, then pass that directory as root or set ${ROOT_ENV}"
        )
    labels = np.asarray(_npz_member(path, "labels")).reshape(-1)
    data = _npz_member(path, "data")
    if data.ndim != 2 or data.shape[1] != 3 * IMAGE_SIDE * IMAGE_SIDE or data.dtype != np.uint8:
        raise ValueError(
            f"{path}: 'data' has shape {data.shape} and dtype {data.dtype}, expected (N, 12288) uint8 "
            f"(64x64 images; the 32x32 or 16x16 releases do not fit): {_FIX}"
        )
    if data.shape[0] != labels.shape[0]:
        raise ValueError(
            f"{path}: {data.shape[0]} images but {labels.shape[0]} labels; the file is corrupt: {_FIX}"
        )
    if labels.size and (labels.min() < 1 or labels.max() > NUM_CLASSES):
        raise ValueError(
            f"{path}: labels span {labels.min()}..{labels.max()}, expected 1..1000 (the release's 1-based "
            f"labels): {_FIX}"
        )
    return _File(path, start, labels.astype(np.int64) - 1, data if isinstance(data, np.memmap) else None)


def decode_rows(rows: np.ndarray) -> np.ndarray:
    """(n, 12288) channel-planar rows -> (n, 3, 64, 64) images: red plane, green plane, blue plane."""
    rows = np.asarray(rows)
    # a C-order view: each row is [c][h][w] with w fastest, exactly the release's planar layout
    return rows.reshape(rows.shape[0], 3, IMAGE_SIDE, IMAGE_SIDE)


def encode_rows(images: np.ndarray) -> np.ndarray:
    """Inverse of decode_rows: (n, 3, 64, 64) uint8 -> (n, 12288) channel-planar rows."""
    images = np.asarray(images, dtype=np.uint8)
    if images.ndim != 4 or images.shape[1:] != (3, IMAGE_SIDE, IMAGE_SIDE):
        raise ValueError(f"images must have shape (n, 3, 64, 64), got {images.shape}")
    return np.ascontiguousarray(images).reshape(images.shape[0], -1)  # (n, 12288), planar


def write_batch_file(
    path: str | Path, images: np.ndarray, labels: Sequence[int] | np.ndarray, mean: np.ndarray | None = None
) -> None:
    """Write (n, 3, 64, 64) uint8 images and 0-based labels as a file of the official format (labels + 1,
    channel-planar rows, np.savez). For fixtures and for repackaging subsets."""
    labels = np.asarray(labels, dtype=np.int64)
    if labels.size and (labels.min() < 0 or labels.max() >= NUM_CLASSES):
        raise ValueError(f"labels must be 0-based in 0..999, got {labels.min()}..{labels.max()}")
    arrays = {"data": encode_rows(images), "labels": (labels + 1).tolist()}
    if mean is not None:
        arrays["mean"] = np.asarray(mean, dtype=np.float64)
    np.savez(path, **arrays)


def resolve_root(root: str | os.PathLike | None) -> Path:
    if root is None:
        env = os.environ.get(ROOT_ENV)
        if not env:
            raise FileNotFoundError(
                f"no ImageNet64 directory given: pass root=... or set ${ROOT_ENV}; {_FIX}"
            )
        root = env
    root = Path(root).expanduser()
    if not root.is_dir():
        raise FileNotFoundError(f"ImageNet64 directory {root} does not exist; {_FIX}")
    return root


class ImageNet64:
    """One split of downsampled ImageNet 64x64 as an indexable image set.

    dataset[i], dataset[a:b], dataset[index_array] -> (n, 3, 64, 64) uint8 images (int -> (3, 64, 64));
    dataset.labels -> (N,) int64 0-based labels; dataset.subset(indices) -> a view of some images.
    """

    def __init__(self, cfg: ImageNet64Config):
        self.cfg = cfg
        root = resolve_root(cfg.root)
        names = TRAIN_FILES[: cfg.num_train_files] if cfg.split == "train" else (VAL_FILE,)
        missing = [n for n in names if not (root / n).is_file()]
        if missing:
            raise FileNotFoundError(f"{root} lacks {missing}; {_FIX}")
        self._files: list[_File] = []
        start = 0
        for n in names:
            f = _open_file(root / n, start)
            self._files.append(f)
            start += len(f.labels)
        self._starts = np.array([f.start for f in self._files] + [start])  # (files + 1,)
        self._all_labels = np.concatenate([f.labels for f in self._files])
        self._index = np.arange(start)  # global rows this view shows, in order
        self.class_mapping = read_class_mapping(cfg.class_mapping) if cfg.class_mapping else None

    @property
    def labels(self) -> np.ndarray:
        return self._all_labels[self._index]  # (N,) int64, 0-based

    def __len__(self) -> int:
        return len(self._index)

    def subset(self, indices: np.ndarray | Sequence[int]) -> ImageNet64:
        """View of this dataset restricted to `indices` (positions in this view), in the given order."""
        indices = np.asarray(indices, dtype=np.int64)
        if indices.size and (indices.min() < 0 or indices.max() >= len(self)):
            raise IndexError(
                f"subset indices must lie in [0, {len(self)}), got {indices.min()}..{indices.max()}"
            )
        view = object.__new__(ImageNet64)
        view.__dict__.update(self.__dict__)
        view._index = self._index[indices]
        return view

    def __getitem__(self, index: int | slice | np.ndarray | Sequence[int]) -> np.ndarray:
        if isinstance(index, (int, np.integer)):
            return self[np.array([index])][0]
        rows = self._index[index]  # (n,) global rows
        out = np.empty((len(rows), 3 * IMAGE_SIDE * IMAGE_SIDE), dtype=np.uint8)
        file_of = np.searchsorted(self._starts, rows, side="right") - 1
        for k in np.unique(file_of):
            sel = file_of == k
            f = self._files[k]
            local = rows[sel] - f.start
            order = np.argsort(local, kind="stable")  # sorted reads are sequential on a memory map
            gathered = np.empty((len(local), out.shape[1]), dtype=np.uint8)
            gathered[order] = f.data[local[order]]
            out[sel] = gathered
        return decode_rows(out)  # (n, 3, 64, 64)

    def class_counts(self) -> np.ndarray:
        return np.bincount(self.labels, minlength=NUM_CLASSES)  # (1000,)


# ---- Table 4 task splits ------------------------------------------------------------------------------


@dataclass(frozen=True)
class LabelSplitConfig:
    scheme: str = "half"  # "half" = the paper's "1/2-1/2" (labels < 500 | >= 500); "mod2" (even | odd)
    c1_fraction: float = 1.0  # share of each C1 class's training images kept (Table 4: 1 or 1/8)
    c2_fraction: float = 1.0  # share of each C2 class's training images kept
    seed: int = 0  # subsampling seed; the same seed keeps the same images

    def __post_init__(self) -> None:
        if self.scheme not in ("half", "mod2"):
            raise ValueError(f"scheme must be 'half' (the paper's 1/2-1/2) or 'mod2', got {self.scheme!r}")
        for name in ("c1_fraction", "c2_fraction"):
            v = getattr(self, name)
            if not 0.0 < v <= 1.0:
                raise ValueError(f"{name} must be in (0, 1], got {v}")

    @classmethod
    def table4(cls, scheme: str, column: str, seed: int = 0) -> LabelSplitConfig:
        """Table 4 cells: column "all" (all/all), "eighth" (1/8 / 1/8), "c1_eighth" (1/8 / all)."""
        fractions = {"all": (1.0, 1.0), "eighth": (0.125, 0.125), "c1_eighth": (0.125, 1.0)}
        if column not in fractions:
            raise ValueError(f"column must be one of {sorted(fractions)}, got {column!r}")
        return cls(scheme, *fractions[column], seed=seed)


class TaskSplit(NamedTuple):
    c1: np.ndarray  # (n1,) sorted dataset positions of kept C1 images
    c2: np.ndarray  # (n2,) sorted dataset positions of kept C2 images

    @property
    def all(self) -> np.ndarray:
        return np.sort(np.concatenate([self.c1, self.c2]))


def in_c1(labels: np.ndarray, scheme: str) -> np.ndarray:
    """(N,) bool: whether each 0-based label belongs to C1 under `scheme` (Table 4)."""
    labels = np.asarray(labels)
    if labels.size and (labels.min() < 0 or labels.max() >= NUM_CLASSES):
        raise ValueError(
            f"labels must be 0-based in 0..999, got {labels.min()}..{labels.max()}; "
            "subtract 1 from the release's file labels"
        )
    if scheme == "half":
        return labels < NUM_CLASSES // 2
    if scheme == "mod2":
        return labels % 2 == 0
    raise ValueError(f"scheme must be 'half' or 'mod2', got {scheme!r}")


def _subsample(positions: np.ndarray, labels: np.ndarray, fraction: float, seed: int) -> np.ndarray:
    """Keep ceil(fraction * count) images of every class, chosen by a per-class seeded permutation, so a
    class's choice does not depend on which other classes are present."""
    if fraction >= 1.0:
        return positions
    kept = []
    for label in np.unique(labels[positions]):
        members = positions[labels[positions] == label]
        rng = np.random.default_rng([seed, int(label)])
        k = int(np.ceil(fraction * len(members)))
        kept.append(np.sort(rng.permutation(members)[:k]))
    return np.sort(np.concatenate(kept)) if kept else positions[:0]


def task_split(labels: np.ndarray, cfg: LabelSplitConfig) -> TaskSplit:
    """Table 4 partition of a dataset by its 0-based labels, each side subsampled per class."""
    labels = np.asarray(labels, dtype=np.int64)
    mask = in_c1(labels, cfg.scheme)
    positions = np.arange(len(labels))
    return TaskSplit(
        _subsample(positions[mask], labels, cfg.c1_fraction, cfg.seed),
        _subsample(positions[~mask], labels, cfg.c2_fraction, cfg.seed),
    )


def split_dataset(dataset: ImageNet64, cfg: LabelSplitConfig) -> tuple[ImageNet64, ImageNet64]:
    """(C1 view, C2 view) of `dataset` under `cfg`."""
    parts = task_split(dataset.labels, cfg)
    return dataset.subset(parts.c1), dataset.subset(parts.c2)
