"""Reading and writing model files: safetensors with a format tag and JSON configs in the metadata."""

from __future__ import annotations

import json
import os
import secrets
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

import torch

T = TypeVar("T")


def write_tensors(path: str | Path, tensors: dict[str, torch.Tensor], fmt: str, **configs: str) -> None:
    """Write through a temporary file beside ``path``: an interrupted save never replaces a good file."""
    from safetensors.torch import save_file

    tensors = {k: v.detach().contiguous().cpu() for k, v in tensors.items()}
    write_atomically(path, lambda tmp: save_file(tensors, str(tmp), metadata={"format": fmt, **configs}))


def write_atomically(path: str | Path, write: Callable[[Path], object]) -> Path:
    """``write(tmp)`` to a temporary name beside ``path``, then rename it to ``path``; on any failure the
    temporary file is removed and an existing ``path`` is left as it was."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.{os.getpid()}-{secrets.token_hex(4)}.partial")
    try:
        write(tmp)
        if not tmp.is_file():
            raise ValueError(f"writing {path} failed: nothing was written")
        respect_umask(tmp)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return path


def respect_umask(path: str | Path) -> None:
    """Give a written file the mode a plain ``open`` would (0666 less the umask): safetensors creates its
    files 0600 whatever the umask, which hides a run's models from the group that shares the store."""
    mask = os.umask(0)  # the only portable way to read the umask; restored at once
    os.umask(mask)
    os.chmod(path, 0o666 & ~mask)


def read_tensors(path: str | Path, fmt: str, hint: str,
                 map_location: str = "cpu") -> tuple[dict[str, str], dict[str, torch.Tensor]]:
    """(metadata, tensors) of a file written with format tag ``fmt``; ``hint`` says what to do otherwise."""
    from safetensors import SafetensorError, safe_open

    path = Path(path)
    if not path.exists():
        raise ValueError(f"no model file at {path}; {hint}")
    if not path.is_file():
        raise ValueError(f"{path} is a folder, not a model file; {hint}")
    try:
        with safe_open(str(path), framework="pt", device=map_location) as f:
            meta = f.metadata() or {}
            if meta.get("format") != fmt:
                raise ValueError(f"{path} is not a {fmt} file (metadata format={meta.get('format')!r}); {hint}")
            return meta, {k: f.get_tensor(k) for k in f.keys()}
    except (OSError, RuntimeError, SafetensorError) as err:  # truncated or foreign files
        raise ValueError(f"{path} is not a readable safetensors file ({err}); {hint}") from err


def config_from_metadata(meta: dict[str, str], key: str, path: str | Path, build: Callable[[dict], T]) -> T:
    """``build(json.loads(meta[key]))``; a missing, malformed or invalid config is an error naming the file."""
    if key not in meta:
        raise ValueError(f"{path} lacks its {key!r} metadata; the file is damaged or was not written by projectable")
    try:
        return build(json.loads(meta[key]))
    except (KeyError, TypeError, ValueError) as err:  # json.JSONDecodeError is a ValueError
        raise ValueError(f"{path}: its {key!r} metadata is not a valid config ({err}); the file is damaged") from err
