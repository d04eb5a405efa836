"""A table of the paper as data, and the one renderer of such tables (Tables 1 and 2).

A ``PaperTable`` names the experiment whose declared cells it reads (``reporting.declared``: cells, columns,
labels, colours, step-matched baselines), the paper's numbers by (column, s), the columns its markdown table
and plot show, how its learning curves are laid out, and its claims. ``render`` writes every file of it:
``<name>.md`` (the table, what the spec adds, the claims with the task-use section, runs per cell, provenance,
curves), ``<name>.csv`` (every declared column at every s, ours beside the paper's), ``<name>.png`` (ours
beside the paper's), ``<name>_task_use.csv`` and ``<name>_curves.{png,csv}``. A new table is one spec (and
one notebook calling it).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import NamedTuple

import pandas as pd

from experiments.reporting import task_use, toolkit
from experiments.reporting.claims import Cell, Verdict, gap_grows, less_than, no_worse
from experiments.reporting.declared import Declared, declared
from experiments.reporting.task_use import TaskUse
from experiments.reporting.toolkit import Provenance, ReportFiles, fmt_cell, md_table

# How every paper table's cells read, the first words of its introduction
OURS = ("Ours: mean ± standard error (n = independent lineages averaged, with the runs where several continue one "
        "stage-1 model).")


def stage_steps(prov: Provenance) -> tuple:
    """(stage-1 steps, stage-2 steps) of the sweep, '?' where unknown."""
    return prov.stage_steps.get("stage1", "?"), prov.stage_steps.get("stage2", "?")


class TableCells(NamedTuple):
    cells: dict[tuple[str, float], Cell]  # (column, s) -> cell
    control: Cell | None  # M_1 continued alone for the stage-2 steps
    baselines: str = "stage1"  # 'matched': the baselines read from their step-matched continuations


@dataclass(frozen=True)
class PaperTable:
    name: str  # the experiment (its declared cells) and the report's file stem, e.g. table1
    paper: Mapping[tuple[str, float], float]  # the paper's numbers by (column, s)
    claims: Callable[[TableCells, float], list[Verdict]]  # (cells, margin) -> the table's verdicts
    shown: tuple[str, ...] | None = None  # the markdown table's and plot's columns; None: every one but the control
    digits: int = 2  # decimals of the paper's numbers as the paper prints them
    curve_order: tuple[str, ...] = ("P", "Mc", "M")  # the learning curves' column order
    curves_at_full: tuple[str, ...] = ("M",)  # the columns whose s = 1 model has a curve
    count_column: str = "seeds"  # the CSV's name for the lineages a cell averages
    paper_title: str = "paper"  # the plot's right panel

    @property
    def declaration(self) -> Declared:
        return declared(self.name)

    @property
    def columns(self) -> tuple[str, ...]:
        """The columns the markdown table and the plot show, in order."""
        return self.shown or tuple(c for c in self.declaration.columns if c != "control")

    def cells(self, trials: pd.DataFrame, subset: str = "all", baselines: str = "stage1") -> TableCells:
        """Combine the trials (seeds, and the P_s sources of every width) into the table's cells; with matched
        baselines every stage-1 baseline is read from its stage-2 continuation (M_1's is the control)."""
        cells = toolkit.gather_cells(trials, self.declaration.read_sources(baselines), subset)
        return TableCells(cells, cells.pop(("control", 1.0), None), baselines)

    def verdicts(self, table: TableCells, margin: float) -> list[Verdict]:
        return self.claims(table, margin)

    def results_frame(self, table: TableCells) -> pd.DataFrame:
        """The CSV: every declared column at every s it reads, ours beside the paper's."""
        declaration, rows = self.declaration, []
        for column in declaration.columns:
            widths = {s for entries in declaration.cell_sources.values() for c, s in entries if c == column}
            for s in sorted(widths, reverse=True):
                cell = table.control if column == "control" else table.cells.get((column, s))
                rows.append({"model": declaration.label(column), "s": toolkit.scale_label(s),
                             "ours_nats": getattr(cell, "mean", math.nan), "ours_se": getattr(cell, "se", math.nan),
                             self.count_column: getattr(cell, "seeds", 0),
                             "paper_nats": self.paper.get((column, s), math.nan)})
        return pd.DataFrame(rows)

    def grid(self, table: TableCells) -> list[str]:
        """The markdown table: per s, each shown column's cell beside the paper's number (in parentheses where
        it is the co-trained source's loss, '-' where the paper has none)."""
        declaration, rows = self.declaration, []
        for s in declaration.widths:
            row = [toolkit.scale_label(s)]
            for column in self.columns:
                paper = self.paper.get((column, s))
                number = "-" if paper is None else f"{paper:.{self.digits}f}"
                source = s == 1.0 and declaration.projected(column) and paper is not None
                row += [fmt_cell(table.cells.get((column, s))), f"({number})" if source else number]
            rows.append(row)
        header = ["s", *(name for column in self.columns for name in (declaration.label(column), "paper"))]
        return md_table(header, rows)

    def curve_specs(self, baselines: str) -> list[tuple[str, str, list[str], float]]:
        """The learning curves (``Declared.curves``)."""
        return self.declaration.curves(baselines, self.curve_order, at_full=self.curves_at_full)

    def task_use(self, trials: pd.DataFrame, baselines: str = "stage1") -> list[TaskUse]:
        """Every model that reads t, scored under own, permuted and mean t (``reporting.task_use``)."""
        return task_use.of_table(trials, self.declaration, baselines)

    def curves_and_uses(self, params, sweep_run, trials: pd.DataFrame, table: TableCells,
                        prov: Provenance) -> tuple[pd.DataFrame, list[TaskUse]]:
        """What the notebook adds to the cells: the learning curves (from the store or the sweep's evidence,
        ``toolkit.metric_source``) and the task-use section's cells."""
        source = toolkit.metric_source(params, sweep_run)
        curves = toolkit.learning_curves(trials, source, self.curve_specs(table.baselines), prov.stage_steps)
        return curves, self.task_use(trials, table.baselines)

    def plot(self, table: TableCells, path, title: str):
        """Loss against s for each shown column, ours with 2-SE bars, the paper's dashed; the control (where
        the table shows M_s) as a square at s = 1."""
        columns = {column: (c.label, c.colour) for column, c in self.declaration.columns.items() if column in self.columns}
        control = table.control if "M" in self.columns else None
        return toolkit.plot_ours_beside_paper(table.cells, self.paper, columns, path, title, control=control,
                                              paper_title=self.paper_title)


# ------------------------------------------------------------------------------------------------
# The claims Tables 1 and 2 share, each at the paper's widths (``toolkit.SCALES``)

NAME = {s: toolkit.scale_label(s) for s in toolkit.SCALES}


def p_beats_mc(get) -> list[Verdict]:
    """"P_s < M~_s for s <= 1/2" (``get``: (column, s) -> cell)."""
    return [less_than("P_s < M~_s for s <= 1/2", f"P_{NAME[s]} < M~_{NAME[s]}", get(("P", s)), get(("Mc", s)))
            for s in toolkit.SCALES[1:]]


def gap_grows_claims(get) -> list[Verdict]:
    """"the gap M~_s - P_s grows as s shrinks", between neighbouring widths."""
    gaps = {s: (get(("Mc", s)), get(("P", s))) for s in toolkit.SCALES[1:]}
    gaps = {s: (g if None not in g else None) for s, g in gaps.items()}
    return [gap_grows("the gap M~_s - P_s grows as s shrinks", f"gap at {NAME[smaller]} > gap at {NAME[larger]}",
                      gaps[smaller], gaps[larger]) for larger, smaller in ((0.5, 0.25), (0.25, 0.125))]


def source_claims(table: TableCells, margin: float, sources: Mapping[str, str]) -> list[Verdict]:
    """"the co-trained source loses nothing against M_1 continued alone": each (column -> comparison) of
    ``sources``' s = 1 cell against the control, non-inferior within ``margin``."""
    claim = "the co-trained source loses nothing against M_1 continued alone"
    return [no_worse(claim, comparison, table.cells.get((column, 1.0)), table.control, margin)
            for column, comparison in sources.items()]


class Written(NamedTuple):
    """What a notebook hands the renderer besides the cells."""

    verdicts: list[Verdict]
    prov: Provenance
    trials: pd.DataFrame
    curves: pd.DataFrame | None = None
    uses: Sequence[TaskUse] = ()


def markdown(spec: PaperTable, table: TableCells, heading: str, intro: Sequence[str], sections: Sequence[str],
             written: Written, unpaired: bool = False, closing: Sequence[str] = ()) -> str:
    """``heading``, ``intro`` lines, the table, ``sections`` (the spec's own: protocol, data ...), the claims
    and task-use section, ``closing`` lines, runs per cell and provenance (the learning curves' section follows
    in ``render``)."""
    return "\n".join([
        heading, "", *intro, "", *spec.grid(table), "", *sections,
        *task_use.claims_and_uses(written.verdicts, written.uses, unpaired=unpaired), *closing,
        *toolkit.runs_per_cell(written.trials),
        *toolkit.provenance_lines(written.prov),
    ])


def render(spec: PaperTable, out_dir, table: TableCells, md: str, written: Written, title: str) -> ReportFiles:
    """Every file of a paper table: the markdown ``md`` with the learning curves' section, the CSVs (the
    table, the task-use section's numbers, the curves) and the PNGs (ours beside the paper's, the curves)."""
    task_use.write_csv(out_dir, spec.name, written.uses)
    md += "\n".join(["", *toolkit.write_curves(out_dir, spec.name, written.curves, f"{title}: learning curves")])
    return toolkit.write_report(out_dir, spec.name, md, spec.results_frame(table),
                                lambda path: spec.plot(table, path, title))
