"""Reading and writing model files: safetensors with a format tag and JSON configs in the metadata."""

from __future__ import annotations

from pathlib import Path

import torch


def write_tensors(path: str | Path, tensors: dict[str, torch.Tensor], fmt: str, **configs: str) -> None:
    from safetensors.torch import save_file

    tensors = {k: v.detach().contiguous().cpu() for k, v in tensors.items()}
    save_file(tensors, str(path), metadata={"format": fmt, **configs})


def read_tensors(path: str | Path, fmt: str, hint: str,
                 map_location: str = "cpu") -> tuple[dict[str, str], dict[str, torch.Tensor]]:
    """(metadata, tensors) of a file written with format tag ``fmt``; ``hint`` says what to do otherwise."""
    from safetensors import SafetensorError, safe_open

    path = Path(path)
    if not path.exists():
        raise ValueError(f"no model file at {path}; {hint}")
    try:
        with safe_open(str(path), framework="pt", device=map_location) as f:
            meta = f.metadata() or {}
            if meta.get("format") != fmt:
                raise ValueError(f"{path} is not a {fmt} file (metadata format={meta.get('format')!r}); {hint}")
            return meta, {k: f.get_tensor(k) for k in f.keys()}
    except (OSError, RuntimeError, SafetensorError) as err:  # truncated or foreign files
        raise ValueError(f"{path} is not a readable safetensors file ({err}); {hint}") from err
