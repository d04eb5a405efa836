"""MNIST from the canonical IDX files (raw or gzip), checked against the official MD5 of their content.

The digits are the `d` of SynthMNIST (Sec. 3.1, App. C.3): training tasks overlay digits from the MNIST
training split, validation tasks digits from the MNIST test split.
"""

from __future__ import annotations

import gzip
import hashlib
import math
import os
from functools import lru_cache
from pathlib import Path
from typing import NamedTuple

import numpy as np

from .paths import MNIST_ROOT_ENV, repo_shared_mnist_dir, user_cache_dir

# MD5 of the *decompressed* IDX files as published with MNIST. Mirrors recompress the .gz files, so the
# compressed bytes differ between mirrors; the content does not.
MNIST_MD5 = {
    "train-images-idx3-ubyte": "6bbc9ace898e44ae57da46a324031adb",
    "train-labels-idx1-ubyte": "a25bea736e30d166cdddb491f175f624",
    "t10k-images-idx3-ubyte": "2646ac647ad5339dbf082846283269ea",
    "t10k-labels-idx1-ubyte": "27ae3e4e09519cfbb04c329615203637",
}
SPLIT_FILES = {
    "train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
}
_IDX_MAGIC = {"images": 2051, "labels": 2049}

FIX_HINT = (
    f"Fix: pass mnist_root=<dir with the four MNIST IDX files>, set {MNIST_ROOT_ENV}, or run "
    "`python -c 'import projectable_data; projectable_data.download_mnist()'` (needs internet)."
)


class MNISTError(FileNotFoundError):
    """An MNIST file is missing or its content does not match the official checksum."""


class MNIST(NamedTuple):
    images: np.ndarray  # (N, 28, 28) uint8
    labels: np.ndarray  # (N,) int64


def default_mnist_root() -> Path:
    """The user cache that `download_mnist()` fills: `$XDG_CACHE_HOME/projectable/mnist`."""
    return user_cache_dir("mnist")


def candidate_roots(root: str | os.PathLike | None = None) -> list[Path]:
    """Lookup order: explicit root; else $PROJECTABLE_MNIST_ROOT, `<repo>/../shared/data/mnist`, the user cache."""
    if root is not None:
        return [Path(root).expanduser()]
    roots = []
    if os.environ.get(MNIST_ROOT_ENV):
        roots.append(Path(os.environ[MNIST_ROOT_ENV]).expanduser())
    shared = repo_shared_mnist_dir()
    if shared is not None:
        roots.append(shared)
    roots.append(default_mnist_root())
    return roots


def _file_in(root: Path, name: str) -> Path | None:
    for path in (root / name, root / f"{name}.gz"):
        if path.is_file():
            return path
    return None


def resolve_mnist_root(root: str | os.PathLike | None = None) -> Path:
    """The first candidate root that holds all four MNIST files (raw or .gz)."""
    roots = candidate_roots(root)
    for candidate in roots:
        if all(_file_in(candidate, name) for name in MNIST_MD5):
            return candidate
    looked = "\n".join(
        f"  {r}: missing " + ", ".join(n for n in MNIST_MD5 if not _file_in(r, n)) for r in roots
    )
    raise MNISTError(
        f"MNIST not found. Expected the four IDX files (e.g. train-images-idx3-ubyte or "
        f"train-images-idx3-ubyte.gz) in one of:\n{looked}\n{FIX_HINT}"
    )


def read_idx_bytes(path: Path) -> bytes:
    """Content of an IDX file, decompressed if it is gzip (recognised by its magic bytes, not its name)."""
    data = path.read_bytes()
    if data[:2] != b"\x1f\x8b":
        return data
    try:
        return gzip.decompress(data)
    except (OSError, EOFError) as err:  # truncated or damaged stream
        raise MNISTError(
            f"{path} is not a readable gzip file ({err}). Delete it and fetch it again. {FIX_HINT}"
        ) from err


def verify_content(path: Path | str, name: str, content: bytes, hint: str = FIX_HINT) -> None:
    """Raise MNISTError naming the file, the expected and the actual MD5 if they differ."""
    actual = hashlib.md5(content).hexdigest()
    if actual != MNIST_MD5[name]:
        raise MNISTError(
            f"{path} is corrupt: MD5 of its decompressed content is {actual}, expected {MNIST_MD5[name]} "
            f"(official {name}). Delete it and fetch it again. {hint}".rstrip()
        )


def _parse_idx(content: bytes, kind: str, path: Path) -> np.ndarray:
    header = 16 if kind == "images" else 8
    if len(content) < header:
        raise MNISTError(
            f"{path} is truncated: {len(content)} bytes, shorter than the {header}-byte IDX header. "
            f"Delete it and fetch it again. {FIX_HINT}"
        )
    magic = int.from_bytes(content[:4], "big")
    if magic != _IDX_MAGIC[kind]:
        raise MNISTError(f"{path}: IDX magic {magic}, expected {_IDX_MAGIC[kind]} for {kind}. {FIX_HINT}")
    dims = [int.from_bytes(content[4 + 4 * i : 8 + 4 * i], "big") for i in range(3 if kind == "images" else 1)]
    expected = header + math.prod(dims)
    if len(content) != expected:
        raise MNISTError(
            f"{path} holds {len(content)} bytes but its IDX header {dims} needs {expected}: the file is truncated "
            f"or damaged. Delete it and fetch it again. {FIX_HINT}"
        )
    data = np.frombuffer(content, dtype=np.uint8, offset=header)
    return data.reshape(*dims) if kind == "images" else data.astype(np.int64)


@lru_cache(maxsize=4)
def _load_split(root: str, split: str, verify: bool) -> MNIST:
    arrays = []
    for name, kind in zip(SPLIT_FILES[split], ("images", "labels")):
        path = _file_in(Path(root), name)
        if path is None:
            raise MNISTError(f"{Path(root) / name}[.gz] does not exist. {FIX_HINT}")
        content = read_idx_bytes(path)
        if verify:
            verify_content(path, name, content)
        arrays.append(_parse_idx(content, kind, path))
    images, labels = arrays
    images.setflags(write=False)
    labels.setflags(write=False)
    return MNIST(images, labels)


def load_mnist(split: str = "train", root: str | os.PathLike | None = None, verify: bool = True) -> MNIST:
    """MNIST `split` ("train": 60k, "test": 10k) as uint8 images (N, 28, 28) and int64 labels (N,).

    `root` None searches $PROJECTABLE_MNIST_ROOT, `<repo>/../shared/data/mnist`, then the user cache.
    Files may be raw IDX or `.gz`; the decompressed content must match the official MD5.
    Results are cached in-process (read-only arrays).
    """
    if split not in SPLIT_FILES:
        raise ValueError(f"split={split!r} is not an MNIST split; use 'train' or 'test'.")
    return _load_split(str(resolve_mnist_root(root).resolve()), split, verify)
