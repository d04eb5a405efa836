"""The cells an experiment declares (``experiments/conf/experiment/<name>.yaml``), as its reports read them.

Each cell is declared once, with what it trains (kind, width, scales, generator), where it starts
(``init_from``, or its stage's), its role (a step-matched baseline or the control: the continuation of the
cell it starts from) and its report column; the experiment declares each column's label and colour
(``experiment.columns``). Everything a report derives from cells comes from here:

* ``cell_sources``: trial cell -> the (column, s) entries its runs are read into. A projected cell is read at
  each of its scales and, as its co-trained source, at its own width (Table 1's s = 1 cells of P_s and P~
  average the sources of every run of the column); any other cell at its width.
* ``matched``: stage-1 cell -> the cell that continues it alone (its step-matched baseline), read in its
  place with ``experiment.baselines=matched``; such a cell is read into the column of the cell it continues.
* ``needed``: the cells every sweep a report reads must hold (all but the step-matched baselines, which
  ``experiment.baselines=stage1`` drops).

The declaration is read from the repository's YAML without Hydra (no interpolation is resolved: the fields
read here are literal), so a sweep's driver may call it while Hydra holds its own config.
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Mapping
from dataclasses import dataclass
from typing import NamedTuple

from omegaconf import OmegaConf
from projectable import scale_name

from experiments.base.cells import Cell
from experiments.config import CONF_DIR, ConfigError, build_section

READ_FIELDS = ("kind", "width", "scales", "init_from", "role", "column", "generator")  # what reports read


class Column(NamedTuple):
    label: str  # e.g. "M~_s"
    colour: str  # a matplotlib colour

    @property
    def family(self) -> str:
        """The label without its ``_s`` (``M~_s`` -> ``M~``): a model at width s is ``<family>_<s>``."""
        return self.label.removesuffix("_s")


@dataclass(frozen=True)
class Declared:
    name: str  # the experiment
    cells: Mapping[str, Cell]  # every stage's cells, in declaration order
    starts: Mapping[str, str | None]  # cell -> the cell it starts from (its own init_from, else its stage's)
    columns: Mapping[str, Column]  # the report's columns in order
    reference: Mapping[str, str] = dataclasses.field(default_factory=dict)  # experiment.reference: role -> the
    # cell of the experiment it starts from (``experiment.sources``) that a report compares with

    @functools.cached_property
    def matched(self) -> dict[str, str]:
        """Stage-1 cell -> the cell that continues it alone for the later stage's steps (its step-matched
        baseline; M_1's is the control)."""
        return {self.starts[name]: name for name, cell in self.cells.items() if cell.continues}

    @property
    def needed(self) -> tuple[str, ...]:
        """The cells a sweep must have finished for the report (in either ``experiment.baselines`` mode)."""
        return tuple(name for name, cell in self.cells.items() if cell.role != "matched_baseline")

    def column_of(self, name: str) -> str | None:
        """A cell's column: its own, or (a continuation without one) that of the cell it continues."""
        cell = self.cells[name]
        if cell.column is None and cell.continues and self.starts[name] in self.cells:
            return self.column_of(self.starts[name])
        return cell.column

    @functools.cached_property
    def cell_sources(self) -> dict[str, list[tuple[str, float]]]:
        """Trial cell -> the (column, s) entries its runs are read into; the continuations are not listed
        here (``read_sources`` moves their source cells' entries to them)."""
        out = {}
        for name, cell in self.cells.items():
            if cell.column is None or cell.role == "matched_baseline":
                continue
            widths = [*cell.scales, cell.width] if cell.kind == "projected" else [cell.width]
            out[name] = [(cell.column, float(s)) for s in widths]
        return out

    def read_sources(self, baselines: str) -> dict[str, list[tuple[str, float]]]:
        """``cell_sources`` as a report of a sweep with ``experiment.baselines`` reads them: with matched
        baselines each stage-1 cell with a continuation is read from that continuation instead."""
        return baseline_sources(self.cell_sources, baselines, self.matched)

    @property
    def widths(self) -> tuple[float, ...]:
        """Every s a column reads, largest first (Table 1: 1, 1/2, 1/4, 1/8)."""
        return tuple(sorted({s for entries in self.cell_sources.values() for _, s in entries}, reverse=True))

    def single_width(self, column: str) -> dict[str, float]:
        """Cell -> s of the column's cells that train one model of one width (P_s: one scale; M_s, M~_s), the
        models a figure draws one per s."""
        out = {}
        for name, cell in self.cells.items():
            if cell.column != column:
                continue
            if cell.kind != "projected":
                out[name] = float(cell.width)
            elif len(cell.scales) == 1:
                out[name] = float(cell.scales[0])
        return out

    def projected(self, column: str) -> bool:
        """Whether the column holds projected cells (its s = 1 entry is then the co-trained source)."""
        return any(cell.kind == "projected" for cell in self.cells.values() if cell.column == column)

    def models(self, columns: tuple[str, ...]) -> dict[str, tuple[str, float]]:
        """Cell -> (family, s) of the single-width models of ``columns`` below s = 1 (what Figures 3 and 4
        draw), each stage-1 cell's continuation beside it (``toolkit.matched_cells`` picks which is read)."""
        out = {cell: (self.columns[column].family, s) for column in columns
               for cell, s in self.single_width(column).items() if s < 1.0}
        return {**out, **{self.matched[cell]: model for cell, model in out.items() if cell in self.matched}}

    def curves(self, baselines: str, order: tuple[str, ...], at_full: tuple[str, ...] = ("M",)) -> list[tuple]:
        """Learning-curve specs (panel, label, cells, s) for ``toolkit.learning_curves``: at s = 1 the
        co-trained source of each projected column, then the s = 1 models of the ``at_full`` columns; at each
        smaller s the single-width models of each column. Columns in ``order`` first, the others after; a
        stage-1 cell's curve goes on through its continuation (the control always, a step-matched baseline
        with ``experiment.baselines=matched``)."""
        ordered = [*order, *(c for c in self.columns if c not in order)]

        def continued(cell: str) -> list[str]:
            after = self.matched.get(cell)
            keep = after is not None and (baselines == "matched" or self.cells[after].role == "control")
            return [cell, after] if keep else [cell]

        def named(column: str, cell: str, s: float) -> str:
            after = self.matched.get(cell)
            control = after is not None and self.cells[after].role == "control"
            return f"{self.label(column, s)}, then the control" if control else self.label(column, s)

        specs = [("s = 1", f"source of {self.label(column)}", cells, 1.0) for column in ordered
                 if self.projected(column) and (cells := [n for n, c in self.cells.items() if c.column == column])]
        specs += [("s = 1", named(column, cell, 1.0), continued(cell), 1.0) for column in at_full
                  for cell, s in self.single_width(column).items() if s == 1.0]
        for s in self.widths[1:]:
            panel = f"s = {scale_name(s)}"
            specs += [(panel, self.label(column, s), continued(cell), s) for column in ordered
                      for cell, width in self.single_width(column).items() if width == s]
        return specs

    def label(self, column: str, s: float | None = None) -> str:
        """``M~_s`` (the column), or ``M~_1/4`` (its model at width ``s``)."""
        column_ = self.columns[column]
        return column_.label if s is None else f"{column_.family}_{scale_name(float(s))}"


def baseline_sources(cell_sources: Mapping[str, list], baselines: str, matched: Mapping[str, str]) -> dict:
    """The cell sources a table reads: with matched baselines each stage-1 baseline cell in ``matched`` is
    read from the stage-2 cell that continues it (stage-1 cell -> continuing cell)."""
    if baselines == "stage1":
        return dict(cell_sources)
    out = {cell: list(sources) for cell, sources in cell_sources.items() if cell not in matched}
    for stage1, continued in matched.items():
        out[continued] = out.get(continued, []) + list(cell_sources.get(stage1, []))
    return out


@functools.cache
def declared(experiment: str) -> Declared:
    """The declaration of ``experiment`` (its YAML's stages and columns)."""
    path = CONF_DIR / "experiment" / f"{experiment}.yaml"
    if not path.is_file():
        raise ConfigError(f"no experiment {experiment!r}: {path} does not exist")
    node = OmegaConf.to_container(OmegaConf.load(path), resolve=False)["experiment"]
    cells, starts = {}, {}
    for stage_name, stage in node["stages"].items():
        for name, spec in stage["cells"].items():
            fields = {key: spec[key] for key in READ_FIELDS if key in spec}
            cells[name] = build_section(Cell, fields, f"experiment.stages.{stage_name}.cells.{name}")
            starts[name] = spec.get("init_from") or stage.get("init_from")
    columns = {name: Column(str(c["label"]), str(c["colour"])) for name, c in (node.get("columns") or {}).items()}
    undeclared = sorted({c.column for c in cells.values() if c.column is not None} - set(columns))
    if undeclared:
        raise ConfigError(f"{path}: cells read into columns {undeclared} that experiment.columns does not declare; "
                          "give each a label and a colour there")
    reference = {str(role): str(cell) for role, cell in (node.get("reference") or {}).items()}
    return Declared(experiment, cells, starts, columns, reference)
