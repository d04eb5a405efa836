"""What a run trains, behind one small interface: the loss of a batch, the per-image NLL of every model it
holds, samples, and the files of its final weights.

* ``GPTTrainee``: M_s (unconditional) or M~_s (conditional: t is mapped to the first embedding).
* ``ProjectedTrainee``: the source M_1 co-trained with P_s for every s in its projector (Eq. 2); one
  scale is a P_s run, several are P~ (Sec. 3.3.3). With a generator that reads no source (``low_rank``,
  ``linear``, App. B) it holds only the generator and its own base weights: no source loss, metric or file.
Both wrap the core's classes; no model code lives here.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import NamedTuple

import torch
from projectable import GPT, GPTConfig, ProjectableGPT, ProjectorConfig, sample, scale_name
from projectable.tokenizer import ImageTokenizer

from experiments.run.evaluate import NLLFn, width_key

MODEL_FILE = "model.safetensors"  # the GPT (M_s, M~_s, or the source of a projected run)
PROJECTABLE_FILE = "projectable.safetensors"  # source and projectors together


class StepLoss(NamedTuple):
    total: torch.Tensor  # scalar that is back-propagated (Eq. 2's sum for a projected run)
    parts: dict[float, torch.Tensor]  # per-token loss of each model, keyed by its width (0.25: logged as s1_4)


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
        return StepLoss(loss, {self.width: loss})

    def nll_fns(self) -> dict[str, NLLFn]:
        return {self.name: lambda tokens, tasks: self.model.sequence_nll(tokens, self._task(tasks))}

    def task_readers(self) -> tuple[str, ...]:
        """Width keys of the models whose loss depends on t: M~_s, not M_s."""
        return (self.name,) if self.model.config.conditional else ()

    def samples(self, n: int, tasks: torch.Tensor, generator: torch.Generator) -> dict[str, torch.Tensor]:
        """(n, T) tokens; a conditional model draws sample i for task i."""
        task = self._task(tasks[:n])
        return {self.name: sample(self.model, n, task=task, generator=generator)}

    def source(self) -> GPT:
        return self.model

    def save(self, folder: Path, tokenizer: ImageTokenizer | None = None) -> list[Path]:
        """The model file; ``tokenizer`` (the data's palette or VQ-VAE) is recorded in it so exports render."""
        folder.mkdir(parents=True, exist_ok=True)
        self.model.save(folder / MODEL_FILE, tokenizer=tokenizer)
        return [folder / MODEL_FILE]


class ProjectedTrainee:
    """The source (width ``width`` of the width-1 model; M_1 in Table 1) and its projectors P_s (Eq. 2: sum
    of projected losses + w_src * source loss). P_s is named by its own width, ``width * s``. A generator
    that reads no source leaves only the P_s: ``roles``, ``loss``, ``nll_fns``, ``samples`` and ``save``
    then have no source entry."""

    def __init__(self, model: ProjectableGPT, width: float = 1.0):
        self.model = model
        self.width = width
        self.name = width_key(width)  # the source's
        self.module: torch.nn.Module = model

    @property
    def reads_source(self) -> bool:
        return self.model.reads_source

    def projected_key(self, scale: float) -> str:
        return width_key(self.width * scale)

    def roles(self) -> dict[str, str]:
        source = {self.name: "source"} if self.reads_source else {}
        return {**source, **{self.projected_key(s): "P_s" for s in self.model.config.scales}}

    def loss(self, tokens: torch.Tensor, tasks: torch.Tensor) -> StepLoss:
        out = self.model.loss(tokens, tasks)
        source = {self.width: out.source} if out.source is not None else {}
        return StepLoss(out.total, {**source, **{self.width * s: v for s, v in out.projected.items()}})

    def nll_fns(self) -> dict[str, NLLFn]:
        fns: dict[str, NLLFn] = {}
        if self.reads_source:
            source = self.model.source
            source_task = (lambda t: t) if source.config.conditional else (lambda t: None)
            fns[self.name] = lambda tokens, tasks: source.sequence_nll(tokens, source_task(tasks))
        for scale in self.model.config.scales:
            fns[self.projected_key(scale)] = (
                lambda tokens, tasks, s=scale: self.model.sequence_nll(tokens, tasks, scale=s)
            )
        return fns

    def task_readers(self) -> tuple[str, ...]:
        """Width keys of the models whose loss depends on t: every P_s, the source only if conditional."""
        source = (self.name,) if self.reads_source and self.model.source.config.conditional else ()
        return source + tuple(self.projected_key(s) for s in self.model.config.scales)

    def samples(self, n: int, tasks: torch.Tensor, generator: torch.Generator) -> dict[str, torch.Tensor]:
        """Source samples (when there is a source), and for each P_s a few generated models (one per task)
        sampled in turn."""
        out = {}
        if self.reads_source:
            source = self.model.source
            out[self.name] = sample(source, n, task=tasks[:n] if source.config.conditional else None,
                                    generator=generator)
        rows = max(1, int(n**0.5))
        for scale in self.model.config.scales:
            per_task = []
            for i in range(rows):
                small = self.model.generate(tasks[i], scale)  # standalone GPT of width s*d for task i
                per_task.append(sample(small, max(1, n // rows), generator=generator))
            out[self.projected_key(scale)] = torch.cat(per_task)
        return out

    def source(self) -> GPT | None:
        return self.model.source

    def save(self, folder: Path, tokenizer: ImageTokenizer | None = None) -> list[Path]:
        """Source and projectors, and the source alone; each records ``tokenizer`` (see GPTTrainee.save)."""
        folder.mkdir(parents=True, exist_ok=True)
        self.model.save(folder / PROJECTABLE_FILE, tokenizer=tokenizer)
        if not self.reads_source:
            return [folder / PROJECTABLE_FILE]
        self.model.source.save(folder / MODEL_FILE, tokenizer=tokenizer)
        return [folder / PROJECTABLE_FILE, folder / MODEL_FILE]


def build_trainee(kind: str, width: float, model: GPTConfig, projector: ProjectorConfig, task_dim: int,
                  device: str = "cpu", init_from: str | Path | None = None) -> GPTTrainee | ProjectedTrainee:
    """The models of one run. ``model`` is the width-1 config; ``width`` picks M_s (or a smaller source).

    ``init_from`` (a GPT file or a folder holding one) starts the run's GPT, or a projected run's source,
    from saved weights. A projected run's projectors are built after the source is loaded, so that the small
    model's own parts (``small_parts="own"``) start as the group averages of the *loaded* source, exactly as
    they would of a fresh one: P_s then starts as the pretrained source with averaged units.

    A generator that reads no source (``low_rank``, ``linear``) has only the source's config, for shapes;
    its ``init_from`` is a standalone M_s of the generated width (e.g. Table 1's stage-1 M_s), which becomes
    its base weights and small parts (``ProjectableGPT.load_base``), so that it starts as that M_s for every
    t. A model of another width is refused before any training."""
    base = model.scaled(width) if width != 1.0 else model
    if kind not in ("unconditional", "conditional", "projected"):
        raise ValueError(f"kind={kind!r} is not one of unconditional, conditional, projected")
    if kind == "projected" and projector.task_dim != task_dim:
        raise ValueError(
            f"projector.task_dim={projector.task_dim} but the data's task vectors have {task_dim} "
            f"coordinates; set projector.task_dim={task_dim}"
        )
    source_config = dataclasses.replace(base, task_dim=task_dim if kind == "conditional" else 0)
    if kind == "projected" and not projector.reads_source:
        trainee = ProjectedTrainee(ProjectableGPT(source_config, projector), width)
        if init_from is not None:
            load_base_weights(trainee.model, init_from)
        trainee.module.to(device)
        return trainee
    gpt = GPT(source_config)
    if init_from is not None:
        load_weights(gpt, init_from)
    if kind == "projected":
        trainee = ProjectedTrainee(ProjectableGPT(gpt, projector), width)
    else:
        trainee = GPTTrainee(gpt, width)
    trainee.module.to(device)
    return trainee


@torch.no_grad()
def load_base_weights(model: ProjectableGPT, path: str | Path) -> None:
    """Start a source-free generator's base weights and small parts from the saved M_s at ``path``; it must
    be an unconditional GPT of the generated width (the scale of a one-scale projector)."""
    if len(model.config.scales) != 1:  # parse_run refuses this config; direct callers get the same message
        raise ValueError(f"init_from starts a source-free generator's base from one M_s, but this projector has "
                         f"scales={model.config.scales}; give one scale")
    (scale,) = model.config.scales
    expected = model.small_config(scale)
    loaded = GPT.load(resolve_weights_file(path))
    generator = model.config.generator
    if loaded.config.n_embd != expected.n_embd:
        raise ValueError(
            f"init_from={path} holds a model of width {loaded.config.n_embd}, but the {generator!r} generator at "
            f"scale {scale_name(scale)} of this width-{model.source_config.n_embd} source generates width "
            f"{expected.n_embd}: start it from the M_s of width {expected.n_embd} (Table 1's stage-1 cell "
            f"M{round(1 / scale)} for a width-1 source)"
        )
    if loaded.config.conditional:
        raise ValueError(
            f"init_from={path} holds a conditional model (task_dim={loaded.config.task_dim}); the {generator!r} "
            "generator's base is an unconditional M_s (t acts through the generator): start it from M_s, not M~_s"
        )
    try:
        model.load_base(scale, loaded)
    except ValueError as err:
        raise ValueError(f"init_from={path}: {err}") from err


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
