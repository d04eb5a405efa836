"""Table 2 (ImageNet track) from tracked runs: M~_s vs P_s at s = 1, 1/2, 1/4, 1/8 beside the paper's numbers,
claim verdicts by the rules of ``experiments.reporting.claims``, what data the runs saw (the stand-in or ImageNet) and
what running on ImageNet takes; writes ``reports/<scale>/table2.{md,csv,png}``. ``analysis/table2.py``
calls these functions step by step."""

from __future__ import annotations

import math
from typing import NamedTuple

import pandas as pd

from experiments.reporting import task_use, toolkit
from experiments.reporting.claims import Cell, Verdict, gap_grows, less_than, no_worse
from experiments.reporting.declared import Declared, declared
from experiments.reporting.task_use import TaskUse
from experiments.reporting.toolkit import SCALES, Provenance, ReportFiles, fmt_cell, md_table, section

# Table 2 of the paper, ImageNet validation loss (nats/token; statistical error ~0.001 for M~_s, ~0.002 for P_s).
PAPER_TABLE2: dict[tuple[str, float], float] = {
    ("Mc", 1.0): 2.176, ("Mc", 0.5): 2.211, ("Mc", 0.25): 2.264, ("Mc", 0.125): 2.332,
    ("P", 0.5): 2.210, ("P", 0.25): 2.246, ("P", 0.125): 2.297,
}
IMAGENET_REQUIREMENTS = """\
Running Table 2 on ImageNet itself takes:
- the official "Downsampled ImageNet 64x64" npz release (`train_data_batch_1.npz` .. `train_data_batch_10.npz`,
  `val_data.npz`, ~12 GB) from image-net.org, in one directory;
- task vectors for its 1.28M + 50k images: EfficientNet-Lite0 at 112 px costs ~74 ms/image one image at a
  time on 2 CPU cores, and ~9 ms/image batched (the stand-in's 3,584 images took about half a minute of the
  71 s data preparation), so ~3-4 hours on 2 cores (extrapolated); on one GPU minutes (estimated, not
  measured here); or SimCLRv2
  embeddings made elsewhere, given as `data.encoder=precomputed data.encoder_path=<dir with train.npz and
  val.npz>` (ids = image positions, float32 rows; format in projectable_data.encoders);
- the VQ-VAE (App. C.2, 512 codes) trained on ImageNet and every image tokenised once (~2.6 GB of tokens);
- the GPT runs: the paper's 24-layer source runs at 55-71 ms/step on an H200 (bf16, B=32, T=1024;
  measured separately, not in this report's runs), so
  200k steps are 3-4 GPU-hours per source run and the whole table (5 stage-1 and 4 stage-2 runs) roughly
  1-2 GPU-days; the `gpu` scale (8 layers, width 256, 2k + 1k steps) is estimated at about an hour of one
  H100/H200 including the data preparation.
Command: `nox -s reproduce_table2 -- scale=gpu data.images=imagenet64 data.imagenet_root=/path/to/imagenet64
data.train_size=null data.palette_fit_images=100000 data.tokenizer_steps=20000
data.encoder_device=cuda` (on a GPU machine; the tokenizer settings there are a suggestion, not tuned)."""


class Table2Cells(NamedTuple):
    cells: dict[tuple[str, float], Cell]  # (column, s) -> cell; columns M (M_1), Mc (M~_s), P (P_s)
    control: Cell | None  # M_1 continued alone for the stage-2 steps
    baselines: str = "stage1"  # 'matched': M~_s continued for the stage-2 steps as the control


CURVE_COLUMNS = ("P", "Mc", "M")  # the learning curves' order; at s = 1 also M_1 (then the control) and M~_1


def spec() -> Declared:
    """Table 2's cells as experiment=table2 declares them (conf/experiment/table2.yaml)."""
    return declared("table2")


def table2_cells(trials: pd.DataFrame, subset: str = "all", baselines: str = "stage1") -> Table2Cells:
    """Combine the finished trials (seeds, and the P_s sources of every width for s = 1) into Table 2's cells."""
    cells = toolkit.gather_cells(trials, spec().read_sources(baselines), subset)
    return Table2Cells(cells, cells.pop(("control", 1.0), None), baselines)


def table2_verdicts(table: Table2Cells, margin: float) -> list[Verdict]:
    """The paper's claims that Table 2 bears on: P_s < M~_s for s <= 1/2, the gap grows as s shrinks, and the
    co-trained source loses nothing against M_1 continued alone."""
    get, name = table.cells.get, {s: toolkit.scale_label(s) for s in SCALES}
    out = [less_than("P_s < M~_s for s <= 1/2", f"P_{name[s]} < M~_{name[s]}", get(("P", s)), get(("Mc", s)))
           for s in SCALES[1:]]
    gaps = {s: (get(("Mc", s)), get(("P", s))) for s in SCALES[1:]}
    gaps = {s: (g if None not in g else None) for s, g in gaps.items()}
    for larger, smaller in ((0.5, 0.25), (0.25, 0.125)):
        out.append(gap_grows("the gap M~_s - P_s grows as s shrinks",
                             f"gap at {name[smaller]} > gap at {name[larger]}", gaps[smaller], gaps[larger]))
    out.append(no_worse("the co-trained source loses nothing against M_1 continued alone",
                        "source of P_s (mean of all its runs) vs control", get(("P", 1.0)), table.control, margin))
    return out


def results_frame(table: Table2Cells) -> pd.DataFrame:
    """Long table (the CSV): model, s, ours, se, runs, paper."""
    rows = []
    for column, label in (("Mc", "M~_s"), ("P", "P_s"), ("M", "M_s"), ("control", "M_1 continued (control)")):
        for s in SCALES:
            cell = table.control if column == "control" else table.cells.get((column, s))
            if column in ("M", "control") and s != 1.0:
                continue
            rows.append({"model": label, "s": toolkit.scale_label(s), "ours_nats": getattr(cell, "mean", math.nan),
                         "ours_se": getattr(cell, "se", math.nan), "runs": getattr(cell, "seeds", 0),
                         "paper_nats": PAPER_TABLE2.get((column, s), math.nan)})
    return pd.DataFrame(rows)


def _runs_each(table: Table2Cells) -> str:
    """How many runs each P_s cell averages, as the protocol line says it: "2 runs each", "1-2 runs each"."""
    runs = sorted({cell.seeds for s in SCALES[1:] if (cell := table.cells.get(("P", s))) is not None}) or [0]
    count = str(runs[0]) if len(runs) == 1 else f"{runs[0]}-{runs[-1]}"
    return f"{count} run{'' if count == '1' else 's'} each"


def task_use_of(trials: pd.DataFrame, baselines: str = "stage1") -> list[TaskUse]:
    """M~_s and P_s scored under own, permuted and mean t (``reporting.task_use``)."""
    return task_use.of_table(trials, spec(), baselines)


def markdown(table: Table2Cells, verdicts: list[Verdict], prov: Provenance, margin: float, summary: dict | None,
             trials: pd.DataFrame, uses: list[TaskUse] = ()) -> str:
    stand_in = bool(summary and summary.get("stand_in"))
    title = "ImageNet STAND-IN (SynthMNIST renders)" if stand_in else "ImageNet 64x64"
    rows = []
    for s in SCALES:
        paper_p = PAPER_TABLE2.get(("P", s))
        rows.append([toolkit.scale_label(s), fmt_cell(table.cells.get(("Mc", s))), f"{PAPER_TABLE2[('Mc', s)]:.3f}",
                     fmt_cell(table.cells.get(("P", s))), "-" if paper_p is None else f"{paper_p:.3f}"])
    lines = [
        f"# Table 2 at scale `{prov.scale}`: validation loss (nats/token), {title}",
        "",
        "Ours: mean ± standard error (n = independent lineages averaged, with the runs where several continue one stage-1 model). Paper: Table 2 of Zhmoginov et al. (ImageNet 64x64, "
        "32x32 tokens of 512 codes, SimCLRv2 task vectors, 24-layer source; statistical error ~0.001 for M~_s, "
        "~0.002 for P_s). The s = 1 cell of P_s is the co-trained source (mean over all P_s runs, every width and seed).",
        "",
        *md_table(["s", "M~_s", "paper", "P_s", "paper"], rows),
        "",
        f"Unconditional M_1 (stage 1, the source every P_s starts from): {fmt_cell(table.cells.get(('M', 1.0)))}. "
        f"Control, M_1 continued alone for the stage-2 steps: {fmt_cell(table.control)}.",
        "",
        *section("Data", *toolkit.data_lines(summary)),
        *section(
            "Protocol",
            f"- Stage 1: M~_s from scratch at s = 1, 1/2, 1/4, 1/8 and the unconditional M_1, "
            f"{prov.stage_steps.get('stage1', '?')} steps.",
            f"- Stage 2: P_1/2, P_1/4, P_1/8 ({_runs_each(table)}) start from stage 1's M_1 and keep tuning it for "
            f"{prov.stage_steps.get('stage2', '?')} steps (Eq. 2, w_src = 1); the control continues M_1 alone as long.",
            toolkit.baselines_line(table.baselines, prov.stage_steps.get("stage1", "?"), prov.stage_steps.get("stage2", "?")),
        ),
        *task_use.claims_and_uses(verdicts, uses),
        *section("Running on ImageNet", IMAGENET_REQUIREMENTS),
        *toolkit.runs_per_cell(trials),
        *toolkit.provenance_lines(prov),
    ]
    return "\n".join(lines)


def plot(table: Table2Cells, path, title: str):
    """Loss against s: ours (±2 SE) and the paper's, M~_s and P_s."""
    columns = {column: (c.label, c.colour) for column, c in spec().columns.items() if column in ("Mc", "P")}
    return toolkit.plot_ours_beside_paper(table.cells, PAPER_TABLE2, columns, path, title,
                                          paper_title="paper (ImageNet)")


def curve_specs(baselines: str) -> list[tuple[str, str, list[str], float]]:
    """Table 2's learning curves: per s, P_s beside M~_s; at s = 1 the co-trained source beside M_1 and the
    control, and M~_1 (``Declared.curves``)."""
    return spec().curves(baselines, CURVE_COLUMNS, at_full=("M", "Mc"))


def write_report(out_dir, table: Table2Cells, verdicts: list[Verdict], prov: Provenance, margin: float,
                 summary: dict | None, trials: pd.DataFrame, curves: pd.DataFrame | None = None,
                 uses: list[TaskUse] = ()) -> ReportFiles:
    stand_in = " (stand-in data)" if summary and summary.get("stand_in") else ""
    title = f"Table 2{stand_in}, scale {prov.scale} (sweep {prov.sweep_id})"
    md = markdown(table, verdicts, prov, margin, summary, trials, uses)
    task_use.write_csv(out_dir, "table2", uses)
    md += "\n".join(["", *toolkit.write_curves(out_dir, "table2", curves, f"{title}: learning curves")])
    return toolkit.write_report(out_dir, "table2", md, results_frame(table), lambda path: plot(table, path, title))
