"""Table 1 (Sec. 3.3): M_s, M~_s, P_s and P~ on SynthMNIST from the newest finished Table 1 sweep of a scale;
the paper's claims by the rules of ``claims``; ``reports/<scale>/table1.{md,csv,png}``.
The notebook ``analysis/table1.py`` calls these functions step by step."""

from __future__ import annotations

import pandas as pd

from experiments.reporting import paper_table
from experiments.reporting.claims import Verdict, less_than, no_worse
from experiments.reporting.paper_table import NAME, PaperTable, TableCells, Written
from experiments.reporting.task_use import TaskUse
from experiments.reporting.toolkit import (
    SCALES,
    Provenance,
    ReportFiles,
    baselines_line,
    fmt_cell,
    scale_label,
)

# Table 1 of the paper (nats/token, SynthMNIST 32x32, 512 colours), by the columns experiment=table1 declares
# (conf/experiment/table1.yaml: its cells, their columns and labels). The s = 1 cells of P_s and P~ are the
# co-trained source's loss (for P_s the mean over all P_s runs, every width and seed).
PAPER_TABLE1: dict[tuple[str, float], float] = {
    ("M", 1.0): 0.45, ("M", 0.5): 0.51, ("M", 0.25): 0.62, ("M", 0.125): 0.82,
    ("Mc", 1.0): 0.39, ("Mc", 0.5): 0.46, ("Mc", 0.25): 0.58, ("Mc", 0.125): 0.78,
    ("P", 1.0): 0.44, ("P", 0.5): 0.39, ("P", 0.25): 0.47, ("P", 0.125): 0.57,
    ("Pall", 1.0): 0.46, ("Pall", 0.5): 0.39, ("Pall", 0.25): 0.45, ("Pall", 0.125): 0.57,
}

Table1Cells = TableCells


def table1_verdicts(cells, control, margin: float) -> list[Verdict]:
    """Every claim of Table 1 against ``cells[(column, s)]`` and the control (M_1 continued alone)."""
    get, table = cells.get, TableCells(dict(cells), control)
    return [
        *paper_table.p_beats_mc(get),
        *(less_than("M~_s < M_s at every s", f"M~_{NAME[s]} < M_{NAME[s]}", get(("Mc", s)), get(("M", s)))
          for s in SCALES),
        *paper_table.gap_grows_claims(get),
        *paper_table.source_claims(table, margin, {"P": "source of P_s (mean of all its runs) vs control",
                                                   "Pall": "source of P~ vs control"}),
        *(no_worse("co-training all sizes costs nothing", f"P~_{NAME[s]} vs P_{NAME[s]}", get(("Pall", s)),
                   get(("P", s)), margin) for s in SCALES[1:]),
    ]


# The table as data: its declared cells, the paper's numbers, what it shows and claims. The learning curves: at
# s = 1 the co-trained sources beside M_1 and the control; at each smaller s, P_s beside M~_s and M_s.
SPEC = PaperTable("table1", PAPER_TABLE1, claims=lambda table, margin: table1_verdicts(table.cells, table.control,
                                                                                       margin))

table1_cells, results_frame, curve_specs, plot = SPEC.cells, SPEC.results_frame, SPEC.curve_specs, SPEC.plot
task_use_of, verdicts_for = SPEC.task_use, SPEC.verdicts


def markdown_parts(table: TableCells, prov: Provenance) -> tuple[str, list[str], list[str]]:
    """reports/<scale>/table1.md's heading, the lines above the table and its protocol below it."""
    steps1, steps2 = paper_table.stage_steps(prov)
    intro = [
        f"{paper_table.OURS} Paper: Table 1 of Zhmoginov et al. (32x32 tokens, 512 colours, 24-layer source). The s = 1 "
        "cells of P_s and P~ are the co-trained source's loss (for P_s the mean over all P_s runs, every width and "
        "seed).",
    ]
    sections = [
        f"Control, M_1 continued alone for the stage-2 steps: {fmt_cell(table.control)}.",
        "",
        "## Protocol",
        "",
        f"- Stage 1: M_s and M~_s trained from scratch for {steps1} steps at s = "
        f"{', '.join(scale_label(s) for s in SPEC.declaration.widths)}.",
        f"- Stage 2: every P_s run (s = 1/2, 1/4, 1/8) and the P~ run (all three at once) start from stage 1's "
        f"M_1 and keep tuning it for {steps2} steps (Eq. 2, w_src = 1), so the P runs' source has had "
        f"{steps1} + {steps2} steps. The control continues M_1 alone for the same {steps2} steps; "
        "\"the source loses nothing\" is judged against it, not against stage 1's M_1.",
        baselines_line(table.baselines, steps1, steps2),
        "",
    ]
    return f"# Table 1 at scale `{prov.scale}`: validation loss (nats/token) on SynthMNIST", intro, sections


def markdown(table: TableCells, verdicts: list[Verdict], prov: Provenance, margin: float, trials: pd.DataFrame,
             uses: list[TaskUse] = ()) -> str:
    """reports/<scale>/table1.md, without its learning curves."""
    heading, intro, sections = markdown_parts(table, prov)
    return paper_table.markdown(SPEC, table, heading, intro, sections, Written(verdicts, prov, trials, uses=uses),
                                unpaired=True)


def write_report(out_dir, table: TableCells, verdicts: list[Verdict], prov: Provenance, margin: float,
                 trials: pd.DataFrame, curves: pd.DataFrame | None = None, uses: list[TaskUse] = ()) -> ReportFiles:
    """table1.md, .csv, .png, table1_task_use.csv and table1_curves.{png,csv}."""
    return paper_table.render(SPEC, out_dir, table, markdown(table, verdicts, prov, margin, trials, uses),
                              Written(verdicts, prov, trials, curves, uses),
                              f"Table 1, scale {prov.scale} (sweep {prov.sweep_id})")
