"""Figure 3 with samples: the data package's grid (renders for task vectors t and their palette-quantised
versions, ``projectable_data.figures.figure3``) with, below it, samples for the same t from the standalone
models P_s(t) generated in one shot (``ProjectableGPT.generate``) and from the conditional M~_s given t.
Column i of every row belongs to task vector i."""

from __future__ import annotations

import tempfile
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import NamedTuple

import numpy as np
import torch
from PIL import Image
from projectable import GPT, ProjectableGPT, sample

from experiments.reporting import toolkit
from experiments.reporting.declared import declared
from experiments.reporting.toolkit import Provenance, scale_label

UPSCALE, GAP = 4, 2  # the data package's figure3 layout, so that columns line up
NUM_TASKS = 8  # columns: the first validation task vectors
SEED = 0  # the seed of the runs drawn, and of each row's own sampling generator
# Table 1 columns sampled (seed 0 of each single-width cell below s = 1, ``reporting.declared``): P_s of the
# single-size projected runs and the conditional M~_s (read from its step-matched continuation where the sweep
# has one).
COLUMNS = ("P", "Mc")
FIGURE3_SAMPLES = "figure3/samples"  # extra key: a seed-0 sample per task vector (image: its index; detail: tokens)
FIGURE3_EVALUATION = "figure3/evaluation"  # extra key: who drew them (detail: commit, machine, wall time, seed)


class SampleRow(NamedTuple):
    label: str  # e.g. "P_1/2(t)" or "M~_1/2 | t"
    tokens: torch.Tensor  # (N, T): sample i for task vector i


@torch.no_grad()
def projected_samples(model: ProjectableGPT, scale: float, tasks: torch.Tensor, generator: torch.Generator,
                      temperature: float = 1.0) -> torch.Tensor:
    """One sample per task vector from the standalone GPT generated for it: tasks (N, 18) -> (N, T)."""
    return torch.cat([
        sample(model.generate(task, scale), 1, temperature=temperature, generator=generator) for task in tasks
    ])


@torch.no_grad()
def conditional_samples(model: GPT, tasks: torch.Tensor, generator: torch.Generator,
                        temperature: float = 1.0) -> torch.Tensor:
    """Sample i from M~_s given task vector i: tasks (N, 18) -> (N, T)."""
    return sample(model, len(tasks), task=tasks, temperature=temperature, generator=generator)


def row_label(family: str, s: float) -> str:
    """A sample row's label: ``P_1/2(t)`` (generated for t) or ``M~_1/2 | t`` (given t)."""
    return f"{family}_{scale_label(s)}(t)" if family == "P" else f"{family}_{scale_label(s)} | t"


@torch.no_grad()
def model_samples(model: ProjectableGPT | GPT, family: str, s: float, tasks: torch.Tensor, seed: int = SEED,
                  temperature: float = 1.0) -> torch.Tensor:
    """One model's row: sample i for task vector i, from a generator of its own seeded with ``seed``, so that a
    row depends on its model alone (the sweep's driver draws it into the evidence as each run finishes,
    ``reporting.evidence.figure3_samples``; from the store the same row is drawn again)."""
    generator = torch.Generator().manual_seed(seed)
    if family == "P":
        return projected_samples(model, s, tasks, generator, temperature)
    return conditional_samples(model, tasks, generator, temperature)


def _tiles(images: torch.Tensor, size: int) -> list[Image.Image]:
    """(N, 3, H, W) in [-1, 1] -> N upscaled PIL tiles (nearest neighbour, as the data figure)."""
    from projectable_data.figures import to_uint8

    return [Image.fromarray(pixels).resize((size, size), Image.NEAREST) for pixels in to_uint8(images)]


def tile_box(row: int, column: int, size: int) -> tuple[int, int, int, int]:
    """(left, top, right, bottom) of the tile of ``row`` (0, 1: the data rows; 2...: the sample rows) and
    ``column`` (task vector) in the canvas, tiles ``size`` pixels square."""
    left, top = GAP + column * (size + GAP), GAP + row * (size + GAP)
    return left, top, left + size, top + size


def compose_canvas(data, tasks: torch.Tensor, digit_indices: Sequence[int], rows: Sequence[SampleRow]) -> Image.Image:
    """The figure's pixels: the data package's two rows (render, quantised) then one row per SampleRow, tile
    (r, c) at ``tile_box(r, c, size)``: sample c of the row decoded by ``data.decode``."""
    from projectable_data.figures import figure3

    with tempfile.TemporaryDirectory() as tmp:
        top = Image.open(figure3(data, tasks.numpy(), Path(tmp) / "data.png", digit_indices=list(digit_indices),
                                 upscale=UPSCALE, gap=GAP)).convert("RGB")
    size = data.config.resolution * UPSCALE
    canvas = Image.new("RGB", (top.width, GAP + (2 + len(rows)) * (size + GAP)), (255, 255, 255))
    canvas.paste(top, (0, 0))
    for r, row in enumerate(rows):
        for c, tile in enumerate(_tiles(data.decode(row.tokens.cpu()), size)):
            canvas.paste(tile, tile_box(2 + r, c, size)[:2])
    return canvas


def compose_figure(data, tasks: torch.Tensor, digit_indices: Sequence[int], rows: Sequence[SampleRow],
                   out: str | Path, title: str = "") -> Path:
    """Write the PNG: ``compose_canvas`` with each row labelled."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    canvas = compose_canvas(data, tasks, digit_indices, rows)
    size = data.config.resolution * UPSCALE
    labels = ["render", "quantised", *[row.label for row in rows]]
    centres = [GAP + r * (size + GAP) + size / 2 for r in range(len(labels))]
    height, width = canvas.height / 100, canvas.width / 100
    fig, ax = plt.subplots(figsize=(width + 1.6, height + (0.4 if title else 0.1)), dpi=100)
    ax.imshow(np.asarray(canvas), interpolation="nearest")
    ax.set_yticks(centres, labels, fontsize=9)
    ax.set_xticks([])
    for spine in ax.spines.values():
        spine.set_visible(False)
    if title:
        ax.set_title(title, fontsize=9)
    fig.tight_layout()
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out)
    plt.close(fig)
    return out


def sample_rows(projected: Mapping[float, ProjectableGPT], conditional: Mapping[float, GPT], tasks: torch.Tensor,
                seed: int = SEED, temperature: float = 1.0) -> list[SampleRow]:
    """P_s(t) rows (largest s first), then M~_s rows, all for the same task vectors (N, 18)."""
    return [SampleRow(row_label(family, s), model_samples(model, family, s, tasks, seed, temperature))
            for family, models in (("P", projected), ("M~", conditional))
            for s, model in sorted(models.items(), reverse=True)]


def ordered_rows(rows: Mapping[tuple[str, float], torch.Tensor]) -> list[SampleRow]:
    """(family, s) -> tokens as ``sample_rows`` orders them: P_s(t) largest s first, then M~_s."""
    order = sorted(rows, key=lambda key: (key[0] != "P", -key[1]))
    return [SampleRow(row_label(family, s), rows[family, s]) for family, s in order]


class Figure3Models(NamedTuple):
    runs: object  # the seed-0 trials loaded (pandas rows: trial, cell, run_id, ...)
    projected: dict[float, ProjectableGPT]  # s -> the projected run's model (source and projectors)
    conditional: dict[float, GPT]  # s -> M~_s
    data: object  # the runs' dataset
    baselines: str = "stage1"  # 'matched': M~_s is the step-matched continuation (toolkit.matched_cells)


def figure_cells() -> dict[str, tuple[str, float]]:
    """Cell -> (family, s) of every Table 1 cell the figure may draw (the stage-1 cells and their step-matched
    continuations; ``cells_read`` picks which)."""
    return declared("table1").models(COLUMNS)


def cells_read(trials) -> toolkit.CellsRead:
    """The cells drawn: Table 1's P_s and M~_s, M~_s from its step-matched continuation wherever ``trials``
    hold finished runs of it (``toolkit.matched_cells``)."""
    declaration = declared("table1")
    first = [cell for cell in figure_cells() if not declaration.cells[cell].continues]
    return toolkit.matched_cells(trials, first, declaration.matched)


def load_table1_models(trials, tracking_uri: str, cache_dir: str | Path) -> Figure3Models:
    """Seed 0 of Table 1's P_1/2, P_1/4, P_1/8 and M~_1/2, M~_1/4, M~_1/8 (step-matched where the sweep has
    them), from MLflow."""
    declaration = declared("table1")
    models = figure_cells()
    read = cells_read(trials)
    saved = toolkit.load_saved_models(trials, list(read.cells), tracking_uri, cache_dir, seed=SEED, device="cpu")
    by_cell = {read.cells[c]: m for c, m in zip(saved.runs.cell, saved.models)}
    projected = {models[c][1]: m for c, m in by_cell.items() if declaration.cells[c].kind == "projected"}
    conditional = {models[c][1]: m for c, m in by_cell.items() if declaration.cells[c].kind == "conditional"}
    return Figure3Models(saved.runs, projected, conditional, saved.data, read.baselines)


def write_markdown(out_dir: str | Path, prov: Provenance, rows: Sequence[SampleRow], evaluation: dict,
                   baselines: str = "stage1") -> Path:
    """reports/<scale>/figure3.md: what the figure shows and where its models came from (no claim: the
    paper's Figure 3 illustrates the data)."""
    lines = [
        f"# Figure 3 at scale `{prov.scale}`: task vectors, images and samples",
        "",
        "![figure 3](figure3.png)",
        "",
        "Columns: the first validation task vectors t. Rows: the data package's render for t with that item's "
        "MNIST test digit, its palette-quantised version (what the models see), then one sample per t from "
        + ", ".join(row.label for row in rows)
        + ". P_s(t) is the standalone GPT generated in one shot for t (`ProjectableGPT.generate`); M~_s is the "
        "conditional baseline given t. The digit is not part of t, so samples carry their own digits. The "
        "paper's Figure 3 shows renders only; the figure makes no claim and none is tested.",
        "",
        "Models: seed 0 of each cell of Table 1's sweep; M~_s is "
        + ("the step-matched continuation (as many optimizer steps as P_s's source)" if baselines == "matched"
           else "stage 1's run (fewer optimizer steps than P_s's source; the sweep has no step-matched one)")
        + f". Sampling: temperature 1; each row from a generator of its own seeded with {evaluation['seed']}.",
        "",
        *toolkit.provenance_lines(prov, evaluation=evaluation),
    ]
    return toolkit.write_report(out_dir, "figure3", "\n".join(lines)).markdown
