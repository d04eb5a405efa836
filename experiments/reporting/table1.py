"""Table 1 (Sec. 3.3): M_s, M~_s, P_s and P~ on SynthMNIST from the newest finished Table 1 sweep of a scale;
the paper's claims by the rules of ``claims``; ``reports/<scale>/table1.{md,csv,png}``.
The notebook ``analysis/table1.py`` calls these functions step by step."""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import NamedTuple

import pandas as pd

from experiments.reporting import task_use, toolkit
from experiments.reporting.claims import Cell, Verdict, gap_grows, less_than, no_worse
from experiments.reporting.task_use import TaskUse
from experiments.reporting.toolkit import SCALES, Provenance, ReportFiles, fmt_cell, md_table, section

COLUMN_LABELS = {"M": "M_s", "Mc": "M~_s", "P": "P_s", "Pall": "P~", "control": "M_1 continued (control)"}
COLOURS = {"M": "tab:gray", "Mc": "tab:blue", "P": "tab:orange", "Pall": "tab:green"}

# Table 1 of the paper (nats/token, SynthMNIST 32x32, 512 colours). The s = 1 cells of P_s and P~ are the
# co-trained source's loss (for P_s the mean over all P_s runs, every width and seed).
PAPER_TABLE1: dict[tuple[str, float], float] = {
    ("M", 1.0): 0.45, ("M", 0.5): 0.51, ("M", 0.25): 0.62, ("M", 0.125): 0.82,
    ("Mc", 1.0): 0.39, ("Mc", 0.5): 0.46, ("Mc", 0.25): 0.58, ("Mc", 0.125): 0.78,
    ("P", 1.0): 0.44, ("P", 0.5): 0.39, ("P", 0.25): 0.47, ("P", 0.125): 0.57,
    ("Pall", 1.0): 0.46, ("Pall", 0.5): 0.39, ("Pall", 0.25): 0.45, ("Pall", 0.125): 0.57,
}

# Table 1 cell -> (column, s) of the runs it is made of, s the width of the model read.
CELL_SOURCES = {
    "M1": [("M", 1.0)], "M2": [("M", 0.5)], "M4": [("M", 0.25)],
    "M8": [("M", 0.125)],
    "Mc1": [("Mc", 1.0)], "Mc2": [("Mc", 0.5)], "Mc4": [("Mc", 0.25)],
    "Mc8": [("Mc", 0.125)],
    # the s = 1 cell of P_s is the co-trained source, averaged over the P_s runs of every width and seed (Table 1 caption)
    "P2": [("P", 0.5), ("P", 1.0)],
    "P4": [("P", 0.25), ("P", 1.0)],
    "P8": [("P", 0.125), ("P", 1.0)],
    "Pall": [("Pall", 0.5), ("Pall", 0.25), ("Pall", 0.125), ("Pall", 1.0)],
    "control": [("control", 1.0)],
}


# Step-matched baselines (experiment.baselines=matched): the stage-2 cell that continues each stage-1 one.
MATCHED = {"M1": "control", "M2": "M2m", "M4": "M4m", "M8": "M8m",
           "Mc1": "Mc1m", "Mc2": "Mc2m", "Mc4": "Mc4m", "Mc8": "Mc8m"}


class Table1Cells(NamedTuple):
    cells: dict[tuple[str, float], Cell]  # (column, s) -> cell
    control: Cell | None  # M_1 continued alone for the stage-2 steps
    baselines: str = "stage1"  # 'matched': M_s, M~_s continued for the stage-2 steps as the control


def table1_cells(trials: pd.DataFrame, subset: str = "all", baselines: str = "stage1") -> Table1Cells:
    """Combine the trials (seeds, and the P_s sources of every width) into Table 1's cells; with matched baselines
    M_s and M~_s are read from their stage-2 continuations (M_1's is the control)."""
    sources = toolkit.baseline_sources(CELL_SOURCES, baselines, MATCHED)
    cells = toolkit.gather_cells(trials, sources, subset)
    control = cells.pop(("control", 1.0), None)
    return Table1Cells(cells, control, baselines)


def table1_verdicts(cells: Mapping[tuple[str, float], Cell], control: Cell | None, margin: float) -> list[Verdict]:
    """Every claim of Table 1 against ``cells[(column, s)]`` and the control (M_1 continued alone)."""
    get = cells.get
    name = {s: toolkit.scale_label(s) for s in SCALES}
    out: list[Verdict] = []
    claim = "P_s < M~_s for s <= 1/2"
    for s in SCALES[1:]:
        out.append(less_than(claim, f"P_{name[s]} < M~_{name[s]}", get(("P", s)), get(("Mc", s))))
    claim = "M~_s < M_s at every s"
    for s in SCALES:
        out.append(less_than(claim, f"M~_{name[s]} < M_{name[s]}", get(("Mc", s)), get(("M", s))))
    claim = "the gap M~_s - P_s grows as s shrinks"
    gaps = {s: (get(("Mc", s)), get(("P", s))) for s in SCALES[1:]}
    gaps = {s: (g if None not in g else None) for s, g in gaps.items()}
    for larger, smaller in ((0.5, 0.25), (0.25, 0.125)):
        out.append(gap_grows(claim, f"gap at {name[smaller]} > gap at {name[larger]}", gaps[smaller], gaps[larger]))
    claim = "the co-trained source loses nothing against M_1 continued alone"
    out.append(no_worse(claim, "source of P_s (mean of all its runs) vs control", get(("P", 1.0)), control, margin))
    out.append(no_worse(claim, "source of P~ vs control", get(("Pall", 1.0)), control, margin))
    claim = "co-training all sizes costs nothing"
    for s in SCALES[1:]:
        out.append(no_worse(claim, f"P~_{name[s]} vs P_{name[s]}", get(("Pall", s)), get(("P", s)), margin))
    return out


def verdicts_for(table: Table1Cells, margin: float) -> list[Verdict]:
    return table1_verdicts(table.cells, table.control, margin)


def results_frame(table: Table1Cells) -> pd.DataFrame:
    """Long table: column, s, ours, se, seeds, paper (the CSV)."""
    rows = []
    for column in COLUMN_LABELS:
        for s in SCALES:
            cell = table.control if column == "control" and s == 1.0 else table.cells.get((column, s))
            if column == "control" and s != 1.0:
                continue
            rows.append({
                "model": COLUMN_LABELS[column], "s": toolkit.scale_label(s), "ours_nats": getattr(cell, "mean", math.nan),
                "ours_se": getattr(cell, "se", math.nan), "seeds": getattr(cell, "seeds", 0),
                "paper_nats": PAPER_TABLE1.get((column, s), math.nan),
            })
    return pd.DataFrame(rows)


def task_use_of(trials: pd.DataFrame, baselines: str = "stage1") -> list[TaskUse]:
    """M~_s, P_s and P~'s widths scored under own, permuted and mean t (``reporting.task_use``)."""
    return task_use.of_table(trials, CELL_SOURCES, baselines, MATCHED, {"Mc": "M~", "P": "P", "Pall": "P~"})


def markdown(table: Table1Cells, verdicts: list[Verdict], prov: Provenance, margin: float,
             trials: pd.DataFrame, uses: list[TaskUse] = ()) -> str:
    """reports/<scale>/table1.md."""
    steps1, steps2 = prov.stage_steps.get("stage1", "?"), prov.stage_steps.get("stage2", "?")
    rows = []
    for s in SCALES:
        row = [toolkit.scale_label(s)]
        for column in ("M", "Mc", "P", "Pall"):
            paper = PAPER_TABLE1[(column, s)]
            row += [fmt_cell(table.cells.get((column, s))),
                    f"({paper:.2f})" if s == 1.0 and column[0] == "P" else f"{paper:.2f}"]
        rows.append(row)
    lines = [
        f"# Table 1 at scale `{prov.scale}`: validation loss (nats/token) on SynthMNIST",
        "",
        "Ours: mean ± standard error (n = independent lineages averaged, with the runs where several continue one stage-1 model). Paper: Table 1 of Zhmoginov et al. (32x32 tokens, "
        "512 colours, 24-layer source). The s = 1 cells of P_s and P~ are the co-trained source's loss "
        "(for P_s the mean over all P_s runs, every width and seed).",
        "",
        *md_table(["s", "M_s", "paper", "M~_s", "paper", "P_s", "paper", "P~", "paper"], rows),
        "",
        f"Control, M_1 continued alone for the stage-2 steps: {fmt_cell(table.control)}.",
        "",
        *section(
            "Protocol",
            f"- Stage 1: M_s and M~_s trained from scratch for {steps1} steps at s = 1, 1/2, 1/4, 1/8.",
            f"- Stage 2: every P_s run (s = 1/2, 1/4, 1/8) and the P~ run (all three at once) start from stage 1's "
            f"M_1 and keep tuning it for {steps2} steps (Eq. 2, w_src = 1), so the P runs' source has had "
            f"{steps1} + {steps2} steps. The control continues M_1 alone for the same {steps2} steps; "
            "\"the source loses nothing\" is judged against it, not against stage 1's M_1.",
            toolkit.baselines_line(table.baselines, steps1, steps2),
        ),
        *task_use.claims_and_uses(verdicts, uses, unpaired=True),
        *toolkit.runs_per_cell(trials),
        *toolkit.provenance_lines(prov),
    ]
    return "\n".join(lines)


def curve_specs(baselines: str) -> list[tuple[str, str, list[str], float]]:
    """Table 1's learning curves: per s, P_s beside M~_s and M_s of that width (stage 1 and, with matched
    baselines, its continuation), and at s = 1 the co-trained sources beside M_1 and the control."""
    specs = [("s = 1", "source of P_s", ["P2", "P4", "P8"], 1.0),
             ("s = 1", "source of P~", ["Pall"], 1.0),
             ("s = 1", "M_1, then the control", ["M1", "control"], 1.0)]
    for s, k in ((0.5, 2), (0.25, 4), (0.125, 8)):
        label = toolkit.scale_label(s)
        specs.append((f"s = {label}", f"P_{label}", [f"P{k}"], s))
        for column, name in (("Mc", "M~"), ("M", "M")):
            cells = [f"{column}{k}"] + ([f"{column}{k}m"] if baselines == "matched" else [])
            specs.append((f"s = {label}", f"{name}_{label}", cells, s))
    return specs


def plot(table: Table1Cells, path, title: str):
    """Loss against s for each column, ours with 2-SE bars, the paper's dashed."""
    columns = {column: (COLUMN_LABELS[column], colour) for column, colour in COLOURS.items()}
    return toolkit.plot_ours_beside_paper(table.cells, PAPER_TABLE1, columns, path, title, control=table.control)


def write_report(out_dir, table: Table1Cells, verdicts: list[Verdict], prov: Provenance, margin: float,
                 trials: pd.DataFrame, curves: pd.DataFrame | None = None, uses: list[TaskUse] = ()) -> ReportFiles:
    title = f"Table 1, scale {prov.scale} (sweep {prov.sweep_id})"
    md = markdown(table, verdicts, prov, margin, trials, uses)
    task_use.write_csv(out_dir, "table1", uses)
    md += "\n".join(["", *toolkit.write_curves(out_dir, "table1", curves, f"{title}: learning curves")])
    return toolkit.write_report(out_dir, "table1", md, results_frame(table), lambda path: plot(table, path, title))
