"""What a run trains, behind one small interface: the loss of a batch, the per-image NLL of every model it
holds, samples, and the files of its final weights.

* ``GPTTrainee``: M_s (unconditional) or M~_s (conditional: t is mapped to the first embedding).
* ``ProjectedTrainee``: the source M_1 co-trained with P_s for every s in its projector (Eq. 2); one
  scale is a P_s run, several are P~ (Sec. 3.3.3).
Both wrap the core's classes; no model code lives here.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import NamedTuple

import torch
from projectable import GPT, GPTConfig, ProjectableGPT, ProjectorConfig, sample

from experiments.run.evaluate import NLLFn, width_key

MODEL_FILE = "model.safetensors"  # the GPT (M_s, M~_s, or the source of a projected run)
PROJECTABLE_FILE = "projectable.safetensors"  # source and projectors together


def projected_name(scale: float) -> str:
    """The metric name P_s of a projected run had before the metric schema keyed models by width
    (0.25 -> 'P1_4'); reports read it from older stores."""
    return f"P1_{round(1 / scale)}"


class StepLoss(NamedTuple):
    total: torch.Tensor  # scalar that is back-propagated (Eq. 2's sum for a projected run)
    parts: dict[str, torch.Tensor]  # per-token loss of each model, keyed by its width key ('s1_4')


class GPTTrainee:
    """M_s or M~_s: one GPT of width ``width`` (of the width-1 model), named by it in metrics."""

    def __init__(self, model: GPT, width: float = 1.0):
        self.model = model
        self.width = width
        self.name = width_key(width)
        self.module: torch.nn.Module = model  # what the optimizer updates and the checkpoint saves

    def roles(self) -> dict[str, str]:
        """Width key -> what the model is (tags ``model/<key>``)."""
        return {self.name: "M~_s" if self.model.config.conditional else "M_s"}

    def _task(self, tasks: torch.Tensor) -> torch.Tensor | None:
        return tasks if self.model.config.conditional else None

    def loss(self, tokens: torch.Tensor, tasks: torch.Tensor) -> StepLoss:
        loss = self.model.loss(tokens, self._task(tasks))
        return StepLoss(loss, {self.name: loss})

    def nll_fns(self) -> dict[str, NLLFn]:
        return {self.name: lambda tokens, tasks: self.model.sequence_nll(tokens, self._task(tasks))}

    def samples(self, n: int, tasks: torch.Tensor, generator: torch.Generator) -> dict[str, torch.Tensor]:
        """(n, T) tokens; a conditional model draws sample i for task i."""
        task = self._task(tasks[:n])
        return {self.name: sample(self.model, n, task=task, generator=generator)}

    def source(self) -> GPT:
        return self.model

    def save(self, folder: Path) -> list[Path]:
        folder.mkdir(parents=True, exist_ok=True)
        self.model.save(folder / MODEL_FILE)
        return [folder / MODEL_FILE]


class ProjectedTrainee:
    """The source (width ``width`` of the width-1 model; M_1 in Table 1) and its projectors P_s (Eq. 2: sum
    of projected losses + w_src * source loss). P_s is named by its own width, ``width * s``."""

    def __init__(self, model: ProjectableGPT, width: float = 1.0):
        self.model = model
        self.width = width
        self.name = width_key(width)  # the source's
        self.module: torch.nn.Module = model

    def projected_key(self, scale: float) -> str:
        return width_key(self.width * scale)

    def roles(self) -> dict[str, str]:
        return {self.name: "source", **{self.projected_key(s): "P_s" for s in self.model.config.scales}}

    def loss(self, tokens: torch.Tensor, tasks: torch.Tensor) -> StepLoss:
        out = self.model.loss(tokens, tasks)
        parts = {self.name: out.source, **{self.projected_key(s): v for s, v in out.projected.items()}}
        return StepLoss(out.total, parts)

    def nll_fns(self) -> dict[str, NLLFn]:
        source = self.model.source
        source_task = (lambda t: t) if source.config.conditional else (lambda t: None)
        fns: dict[str, NLLFn] = {self.name: lambda tokens, tasks: source.sequence_nll(tokens, source_task(tasks))}
        for scale in self.model.config.scales:
            fns[self.projected_key(scale)] = (
                lambda tokens, tasks, s=scale: self.model.sequence_nll(tokens, tasks, scale=s)
            )
        return fns

    def samples(self, n: int, tasks: torch.Tensor, generator: torch.Generator) -> dict[str, torch.Tensor]:
        """Source samples, and for each P_s a few generated models (one per task) sampled in turn."""
        source = self.model.source
        out = {self.name: sample(source, n, task=tasks[:n] if source.config.conditional else None,
                                 generator=generator)}
        rows = max(1, int(n**0.5))
        for scale in self.model.config.scales:
            per_task = []
            for i in range(rows):
                small = self.model.generate(tasks[i], scale)  # standalone GPT of width s*d for task i
                per_task.append(sample(small, max(1, n // rows), generator=generator))
            out[self.projected_key(scale)] = torch.cat(per_task)
        return out

    def source(self) -> GPT:
        return self.model.source

    def save(self, folder: Path) -> list[Path]:
        folder.mkdir(parents=True, exist_ok=True)
        self.model.save(folder / PROJECTABLE_FILE)
        self.model.source.save(folder / MODEL_FILE)
        return [folder / PROJECTABLE_FILE, folder / MODEL_FILE]


def build_trainee(kind: str, width: float, model: GPTConfig, projector: ProjectorConfig, task_dim: int,
                  device: str = "cpu", init_from: str | Path | None = None) -> GPTTrainee | ProjectedTrainee:
    """The models of one run. ``model`` is the width-1 config; ``width`` picks M_s (or a smaller source).

    ``init_from`` (a GPT file or a folder holding one) starts the run's GPT, or a projected run's source,
    from saved weights. A projected run's projectors are built after the source is loaded, so that the small
    model's own parts (``small_parts="own"``) start as the group averages of the *loaded* source, exactly as
    they would of a fresh one: P_s then starts as the pretrained source with averaged units."""
    base = model.scaled(width) if width != 1.0 else model
    if kind not in ("unconditional", "conditional", "projected"):
        raise ValueError(f"kind={kind!r} is not one of unconditional, conditional, projected")
    if kind == "projected" and projector.task_dim != task_dim:
        raise ValueError(
            f"projector.task_dim={projector.task_dim} but the data's task vectors have {task_dim} "
            f"coordinates; set projector.task_dim={task_dim}"
        )
    gpt = GPT(dataclasses.replace(base, task_dim=task_dim if kind == "conditional" else 0))
    if init_from is not None:
        load_weights(gpt, init_from)
    if kind == "projected":
        trainee = ProjectedTrainee(ProjectableGPT(gpt, projector), width)
    else:
        trainee = GPTTrainee(gpt, width)
    trainee.module.to(device)
    return trainee


def resolve_weights_file(path: str | Path) -> Path:
    """A GPT file, or a folder holding one (a run directory's ``final/``, or the folder itself)."""
    path = Path(path)
    for candidate in (path, path / MODEL_FILE, path / "final" / MODEL_FILE, path / "model" / MODEL_FILE):
        if candidate.is_file():
            return candidate
    raise ValueError(
        f"no {MODEL_FILE} at {path}; pass a file written by GPT.save, a run directory, or runs:/<id>/model"
    )


@torch.no_grad()
def load_weights(target: GPT, path: str | Path) -> None:
    """Load saved GPT weights into ``target``; their configs must agree."""
    loaded = GPT.load(resolve_weights_file(path))
    # min_head_size only changes smaller widths' head counts: a source saved without it (or with another)
    # is the same model when everything else, its own head count included, agrees
    if dataclasses.replace(loaded.config, min_head_size=target.config.min_head_size) != target.config:
        diff = {
            f.name: (getattr(loaded.config, f.name), getattr(target.config, f.name))
            for f in dataclasses.fields(GPTConfig)
            if getattr(loaded.config, f.name) != getattr(target.config, f.name)
        }
        raise ValueError(
            f"init_from={path} holds a model whose config differs from this run's in {diff} "
            "(loaded, expected); start from a model of the same size and kind"
        )
    target.load_state_dict(loaded.state_dict(), strict=True)
