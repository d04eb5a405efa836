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


def complete_checkpoints(run_dir: str | Path) -> list[Path]:
    """Checkpoint folders holding their state file, newest first. The state file is renamed into place
    once written, so a folder without one is a write that was cut short (and is ignored); a folder with one
    may still be damaged since (a disk error, a copy cut short): ``read_state`` checks it."""
    root = Path(run_dir) / "checkpoints"
    done = sorted(p for p in root.glob("step_*") if (p / STATE_FILE).is_file()) if root.is_dir() else []
    return done[::-1]


def latest_checkpoint(run_dir: str | Path) -> Path | None:
    """Newest checkpoint folder holding a state file (not read: ``load_latest_checkpoint`` checks it)."""
    done = complete_checkpoints(run_dir)
    return done[0] if done else None


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
    try:
        torch.save(state, tmp)
        os.replace(tmp, folder / STATE_FILE)
    except BaseException:  # a full disk, an interrupt: no partial file is left behind
        tmp.unlink(missing_ok=True)
        raise
    for old in sorted((Path(run_dir) / "checkpoints").glob("step_*"))[:-KEEP]:
        shutil.rmtree(old, ignore_errors=True)
    return folder


class DamagedCheckpoint(ValueError):
    """A checkpoint whose state file cannot be read or does not hold a whole state."""


STATE_KEYS = ("step", "run_id", "module", "optimizer", "torch_rng", "cuda_rng")


def read_state(folder: str | Path, named: bool = True) -> dict:
    """The state saved in a checkpoint folder, checked: readable to its end, every key present, and (if
    ``named``) the step the folder is named after."""
    path = Path(folder) / STATE_FILE
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # noqa: BLE001 - truncated zip, foreign pickle, I/O error: all mean "unreadable"
        raise DamagedCheckpoint(f"{path} is unreadable ({type(err).__name__}: {' '.join(str(err).split())[:200]})") from err
    if not isinstance(state, dict) or set(STATE_KEYS) - set(state):
        raise DamagedCheckpoint(f"{path} does not hold a training state (keys {sorted(state)[:8]})"
                                if isinstance(state, dict) else f"{path} does not hold a training state")
    if named and Path(folder).name != checkpoint_dir("", int(state["step"])).name:
        raise DamagedCheckpoint(f"{path} holds step {state['step']}, not the step its folder is named after")
    return state


def load_latest_checkpoint(run_dir: str | Path, module: torch.nn.Module,
                           optimizer: torch.optim.Optimizer) -> Resumed | None:
    """Load the newest checkpoint that reads and loads whole, saying which newer ones were skipped and why;
    None if the run has none. A run whose every checkpoint is damaged is refused (``ValueError``) rather
    than silently restarted."""
    skipped = []
    for folder in complete_checkpoints(run_dir):
        try:
            state = read_state(folder)
            module.load_state_dict(state["module"], strict=True)
            optimizer.load_state_dict(state["optimizer"])
        except (DamagedCheckpoint, RuntimeError, ValueError, KeyError) as err:
            print(f"skipping checkpoint {folder.name} of {run_dir}: {err}")
            skipped.append(f"{folder.name} ({err})")
            continue
        if skipped:
            print(f"resuming from {folder.name}, the newest checkpoint that loads; skipped {len(skipped)} newer one(s)")
        torch.set_rng_state(state["torch_rng"])
        if state["cuda_rng"] and torch.cuda.is_available():
            torch.cuda.set_rng_state_all(state["cuda_rng"])
        return Resumed(int(state["step"]), state["run_id"])
    if skipped:
        raise DamagedCheckpoint(
            f"every checkpoint of {run_dir} is damaged: {'; '.join(skipped)}. Nothing was changed. To train the "
            f"run again from its start, move {Path(run_dir) / 'checkpoints'} away and rerun the same command"
        )
    return None


def read_run_id(folder: str | Path) -> str | None:
    """MLflow run id recorded in a checkpoint, without loading the weights into a model."""
    return read_state(folder)["run_id"]
