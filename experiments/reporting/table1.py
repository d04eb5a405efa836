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
from experiments.reporting.declared import Declared, declared
from experiments.reporting.task_use import TaskUse
from experiments.reporting.toolkit import SCALES, Provenance, ReportFiles, fmt_cell, md_table, section

# Table 1 of the paper (nats/token, SynthMNIST 32x32, 512 colours), by the columns experiment=table1 declares
# (conf/experiment/table1.yaml: its cells, their columns and labels). The s = 1 cells of P_s and P~ are the
# co-trained source's loss (for P_s the mean over all P_s runs, every width and seed).
PAPER_TABLE1: dict[tuple[str, float], float] = {
    ("M", 1.0): 0.45, ("M", 0.5): 0.51, ("M", 0.25): 0.62, ("M", 0.125): 0.82,
    ("Mc", 1.0): 0.39, ("Mc", 0.5): 0.46, ("Mc", 0.25): 0.58, ("Mc", 0.125): 0.78,
    ("P", 1.0): 0.44, ("P", 0.5): 0.39, ("P", 0.25): 0.47, ("P", 0.125): 0.57,
    ("Pall", 1.0): 0.46, ("Pall", 0.5): 0.39, ("Pall", 0.25): 0.45, ("Pall", 0.125): 0.57,
}
# The learning curves' panels: at s = 1 the co-trained sources beside M_1 and its continuation (the control);
# at each smaller s the models of that width, in this column order (columns not listed follow).
CURVE_COLUMNS = ("P", "Mc", "M")


def spec() -> Declared:
    """Table 1's cells as experiment=table1 declares them."""
    return declared("table1")


class Table1Cells(NamedTuple):
    cells: dict[tuple[str, float], Cell]  # (column, s) -> cell
    control: Cell | None  # M_1 continued alone for the stage-2 steps
    baselines: str = "stage1"  # 'matched': M_s, M~_s continued for the stage-2 steps as the control


def table1_cells(trials: pd.DataFrame, subset: str = "all", baselines: str = "stage1") -> Table1Cells:
    """Combine the trials (seeds, and the P_s sources of every width) into Table 1's cells; with matched baselines
    M_s and M~_s are read from their stage-2 continuations (M_1's is the control)."""
    cells = toolkit.gather_cells(trials, spec().read_sources(baselines), subset)
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
    declaration, rows = spec(), []
    for column in declaration.columns:
        widths = sorted({s for entries in declaration.cell_sources.values() for c, s in entries if c == column},
                        reverse=True)
        for s in widths:
            cell = table.control if column == "control" else table.cells.get((column, s))
            rows.append({
                "model": declaration.label(column), "s": toolkit.scale_label(s),
                "ours_nats": getattr(cell, "mean", math.nan), "ours_se": getattr(cell, "se", math.nan),
                "seeds": getattr(cell, "seeds", 0), "paper_nats": PAPER_TABLE1.get((column, s), math.nan),
            })
    return pd.DataFrame(rows)


def task_use_of(trials: pd.DataFrame, baselines: str = "stage1") -> list[TaskUse]:
    """M~_s, P_s and P~'s widths scored under own, permuted and mean t (``reporting.task_use``)."""
    return task_use.of_table(trials, spec(), baselines)


def markdown(table: Table1Cells, verdicts: list[Verdict], prov: Provenance, margin: float,
             trials: pd.DataFrame, uses: list[TaskUse] = ()) -> str:
    """reports/<scale>/table1.md."""
    steps1, steps2 = prov.stage_steps.get("stage1", "?"), prov.stage_steps.get("stage2", "?")
    declaration = spec()
    columns = [column for column in declaration.columns if column != "control"]
    rows = []
    for s in declaration.widths:
        row = [toolkit.scale_label(s)]
        for column in columns:
            paper = PAPER_TABLE1.get((column, s))
            source = s == 1.0 and declaration.projected(column)  # the co-trained source's loss
            row += [fmt_cell(table.cells.get((column, s))),
                    "-" if paper is None else f"({paper:.2f})" if source else f"{paper:.2f}"]
        rows.append(row)
    header = ["s", *(name for column in columns for name in (declaration.label(column), "paper"))]
    lines = [
        f"# Table 1 at scale `{prov.scale}`: validation loss (nats/token) on SynthMNIST",
        "",
        "Ours: mean ± standard error (n = independent lineages averaged, with the runs where several continue one stage-1 model). Paper: Table 1 of Zhmoginov et al. (32x32 tokens, "
        "512 colours, 24-layer source). The s = 1 cells of P_s and P~ are the co-trained source's loss "
        "(for P_s the mean over all P_s runs, every width and seed).",
        "",
        *md_table(header, rows),
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
    """Table 1's learning curves: at s = 1 the co-trained sources beside M_1 and the control; at each smaller
    s, P_s beside M~_s and M_s (``Declared.curves``)."""
    return spec().curves(baselines, CURVE_COLUMNS, at_full=("M",))


def plot(table: Table1Cells, path, title: str):
    """Loss against s for each column, ours with 2-SE bars, the paper's dashed."""
    columns = {column: (c.label, c.colour) for column, c in spec().columns.items() if column != "control"}
    return toolkit.plot_ours_beside_paper(table.cells, PAPER_TABLE1, columns, path, title, control=table.control)


def write_report(out_dir, table: Table1Cells, verdicts: list[Verdict], prov: Provenance, margin: float,
                 trials: pd.DataFrame, curves: pd.DataFrame | None = None, uses: list[TaskUse] = ()) -> ReportFiles:
    title = f"Table 1, scale {prov.scale} (sweep {prov.sweep_id})"
    md = markdown(table, verdicts, prov, margin, trials, uses)
    task_use.write_csv(out_dir, "table1", uses)
    md += "\n".join(["", *toolkit.write_curves(out_dir, "table1", curves, f"{title}: learning curves")])
    return toolkit.write_report(out_dir, "table1", md, results_frame(table), lambda path: plot(table, path, title))
