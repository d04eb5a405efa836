"""Fetch MNIST from its usual public mirrors into the user cache, verifying the official checksums."""

from __future__ import annotations

import os
import tempfile
import urllib.error
import urllib.request
from collections.abc import Sequence
from pathlib import Path

from tqdm.auto import tqdm

from .mnist import MNIST_MD5, MNISTError, _file_in, default_mnist_root, read_idx_bytes, verify_content

# Tried in turn; each serves the four `<name>.gz` files.
DEFAULT_MIRRORS = (
    "https://ossci-datasets.s3.amazonaws.com/mnist/",
    "https://storage.googleapis.com/cvdf-datasets/mnist/",
    "http://yann.lecun.com/exdb/mnist/",
)


def _is_valid(path: Path, name: str) -> bool:
    try:
        verify_content(path, name, read_idx_bytes(path))
    except MNISTError:
        return False
    return True


def _fetch(url: str, dest: Path, timeout: float, progress: bool) -> None:
    with urllib.request.urlopen(url, timeout=timeout) as response:
        total = int(response.headers.get("Content-Length") or 0) or None
        with (
            open(dest, "wb") as out,
            tqdm(
                total=total,
                unit="B",
                unit_scale=True,
                desc=os.path.basename(url),
                disable=not progress,
                leave=False,
            ) as bar,
        ):
            while chunk := response.read(1 << 16):
                out.write(chunk)
                bar.update(len(chunk))


def download_mnist(
    root: str | os.PathLike | None = None,
    mirrors: Sequence[str] = DEFAULT_MIRRORS,
    progress: bool = True,
    timeout: float = 60.0,
) -> Path:
    """Download the four MNIST `.gz` files into `root` (default: the user cache) and return `root`.

    Each file is tried on every mirror in turn; a download counts only if the MD5 of its decompressed
    content is the official one, and only then is it renamed into place (atomic), so an interrupted or
    corrupt download never leaves a file that looks valid. Files already present and valid are kept.
    """
    root = Path(root).expanduser() if root is not None else default_mnist_root()
    root.mkdir(parents=True, exist_ok=True)
    for name in MNIST_MD5:
        existing = _file_in(root, name)
        if existing is not None and _is_valid(existing, name):
            continue
        final = root / f"{name}.gz"
        failures = []
        for mirror in mirrors:
            url = mirror.rstrip("/") + f"/{name}.gz"
            fd, tmp_name = tempfile.mkstemp(prefix=f".{name}.", suffix=".part", dir=root)
            os.close(fd)
            tmp = Path(tmp_name)
            try:
                _fetch(url, tmp, timeout, progress)
                verify_content(url, name, read_idx_bytes(tmp), hint="")
            except (urllib.error.URLError, OSError, MNISTError) as err:
                tmp.unlink(missing_ok=True)
                failures.append(f"  {url}: {err}")
                continue
            except BaseException:
                tmp.unlink(missing_ok=True)
                raise
            if existing is not None and existing != final:
                existing.unlink()  # an invalid raw file would shadow the fresh .gz
            os.replace(tmp, final)
            break
        else:
            raise MNISTError(
                f"Could not download {name}.gz into {final} (expected MD5 {MNIST_MD5[name]} of its content). "
                "Tried:\n"
                + "\n".join(failures)
                + "\nFix: check the internet connection or pass mirrors=[...] "
                "with a reachable mirror, or copy the four MNIST files there by hand."
            )
    return root
