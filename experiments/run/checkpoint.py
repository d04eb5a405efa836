"""Resumable checkpoints inside a run directory.

``<run_dir>/checkpoints/step_000250/state.pt`` holds the module and optimizer states, the RNG states, the
step and the MLflow run id, so that a restarted ``train`` continues the same run and ends with the same
parameters and optimizer state as an uninterrupted one (CPU, fixed thread count).
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import NamedTuple

import torch

STATE_FILE = "state.pt"
KEEP = 2  # checkpoints kept per run


class Resumed(NamedTuple):
    step: int  # optimizer steps already taken
    run_id: str | None  # MLflow run to continue


def checkpoint_dir(run_dir: str | Path, step: int) -> Path:
    return Path(run_dir) / "checkpoints" / f"step_{step:07d}"


def latest_checkpoint(run_dir: str | Path) -> Path | None:
    """Newest complete checkpoint folder (the state file is written last, atomically)."""
    root = Path(run_dir) / "checkpoints"
    done = sorted(p for p in root.glob("step_*") if (p / STATE_FILE).is_file()) if root.is_dir() else []
    return done[-1] if done else None


def save_checkpoint(run_dir: str | Path, step: int, module: torch.nn.Module, optimizer: torch.optim.Optimizer,
                    run_id: str | None) -> Path:
    folder = checkpoint_dir(run_dir, step)
    folder.mkdir(parents=True, exist_ok=True)
    state = {
        "step": step,
        "run_id": run_id,
        "module": module.state_dict(),
        "optimizer": optimizer.state_dict(),
        "torch_rng": torch.get_rng_state(),
        "cuda_rng": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
    }
    tmp = folder / f".{STATE_FILE}.tmp"
    torch.save(state, tmp)
    os.replace(tmp, folder / STATE_FILE)
    for old in sorted((Path(run_dir) / "checkpoints").glob("step_*"))[:-KEEP]:
        shutil.rmtree(old, ignore_errors=True)
    return folder


def load_checkpoint(folder: str | Path, module: torch.nn.Module, optimizer: torch.optim.Optimizer) -> Resumed:
    state = torch.load(Path(folder) / STATE_FILE, map_location="cpu", weights_only=True)
    module.load_state_dict(state["module"], strict=True)
    optimizer.load_state_dict(state["optimizer"])
    torch.set_rng_state(state["torch_rng"])
    if state["cuda_rng"] and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda_rng"])
    return Resumed(int(state["step"]), state["run_id"])


def read_run_id(folder: str | Path) -> str | None:
    """MLflow run id recorded in a checkpoint, without loading the weights into a model."""
    return torch.load(Path(folder) / STATE_FILE, map_location="cpu", weights_only=True)["run_id"]
