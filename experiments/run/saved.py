"""Final weights of a run, loaded for evaluation without training (Table 3's training losses, Figures 3
and 4): a run's config, its data, and each model it holds as an NLL function or a model to sample from.

A ``SavedRun`` is a folder of final weights with the run's config: a run directory's ``final/`` here, or
the ``model/`` artifact of a tracked run (``experiments.tracking.sweeps.download_run``).
"""

from __future__ import annotations

from pathlib import Path
from typing import NamedTuple

import torch
from projectable import GPT, ProjectableGPT

from experiments.config import RunConfig
from experiments.run.datasets import build_data
from experiments.run.evaluate import NLLFn
from experiments.run.trainees import (
    MODEL_FILE,
    PROJECTABLE_FILE,
    GPTTrainee,
    ProjectedTrainee,
)


class SavedRun(NamedTuple):
    run_id: str
    config: RunConfig  # the run's resolved config
    folder: Path  # its final weights (model.safetensors, and projectable.safetensors for projected runs)


def saved_folder(folder: str | Path, config: RunConfig, run_id: str = "local") -> SavedRun:
    """A run directory's ``final/`` folder (no MLflow) as a SavedRun."""
    return SavedRun(run_id, config, Path(folder))


def load_model(saved: SavedRun) -> GPT | ProjectableGPT:
    """The GPT (M_s, M~_s) or the ProjectableGPT (source and projectors) the run trained, in eval mode."""
    if saved.config.kind == "projected":
        model = ProjectableGPT.load(saved.folder / PROJECTABLE_FILE)
    else:
        model = GPT.load(saved.folder / MODEL_FILE)
    return model.eval()


def nll_fn(model: GPT | ProjectableGPT, scale: float | None = None) -> NLLFn:
    """Per-sequence loss of M_s / M~_s (``scale`` None) or of P_scale of a projected model, each under the
    task of its sequence (the same functions the training driver evaluates)."""
    if isinstance(model, ProjectableGPT):
        if scale is None:
            raise ValueError("a projected model holds one P_s per scale; pass scale= (e.g. 0.5)")
        trainee = ProjectedTrainee(model)  # width 1: P_scale is keyed by the scale itself
        return trainee.nll_fns()[trainee.projected_key(scale)]
    trainee = GPTTrainee(model)
    return trainee.nll_fns()[trainee.name]


def data_of(config: RunConfig, cache_dir: str | Path | None = None):
    """The run's dataset (same palette: it is fitted deterministically and cached by content hash)."""
    cache = Path(cache_dir) if cache_dir is not None else Path(config.paths.cache)
    return build_data(config.data, cache)


def pick_device(device: str | None = None) -> str:
    return device or ("cuda" if torch.cuda.is_available() else "cpu")
