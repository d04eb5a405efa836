"""Does a model use its task vector? Every conditional model of a run is scored at its end under its own t, t
permuted across the validation images and the training distribution's mean t (``experiments.run.evaluate
.TASK_CONDITIONS``); this section of Tables 1 and 2 sets the three side by side.

Claims, declared before the runs that report them (``conf/experiment/table1.yaml``, ``table2.yaml``):
"P_s uses t" and "M~_s uses t" hold at width s when loss(permuted) - loss(own) > t(0.975, df) x SE, the SE paired
over images and by lineage (``claims``: the same runs under two conditions). loss(mean) - loss(own) is shown
beside it with its t x SE, as a measurement: a model that reads t can still do as well with the mean.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import NamedTuple

import pandas as pd

from experiments.reporting import toolkit
from experiments.reporting.claims import Cell, Verdict, contrast_error, less_than, t_critical
from experiments.run.evaluate import condition_subset

CLAIMS = {"P": "P_s uses t", "Mc": "M~_s uses t"}  # column -> claim family; other columns are measured only


class TaskUse(NamedTuple):
    column: str  # the report's column (P, Mc, Pall, ...)
    label: str  # e.g. P_1/4
    s: float
    own: Cell
    permuted: Cell | None
    mean: Cell | None


def task_use_cells(trials: pd.DataFrame, sources: Mapping[str, list[tuple[str, float]]],
                   labels: Mapping[str, str], subset: str = "all") -> list[TaskUse]:
    """Each (column, s) of ``sources`` whose runs were scored under permuted or mean t (the models that read
    t), in ``labels``' column order and by decreasing s."""
    cells = {condition: toolkit.gather_cells(trials, sources, condition_subset(subset, condition))
             for condition in ("own", "permuted", "mean")}
    out = []
    for column, label in labels.items():
        for s in sorted({s for c, s in cells["own"] if c == column}, reverse=True):
            permuted, mean = cells["permuted"].get((column, s)), cells["mean"].get((column, s))
            if permuted is None and mean is None:  # a model that reads no t (M_s, an unconditional source)
                continue
            out.append(TaskUse(column, f"{label}_{toolkit.scale_label(s)}", s, cells["own"][(column, s)], permuted,
                               mean))
    return out


def of_table(trials: pd.DataFrame, declaration, baselines: str) -> list[TaskUse]:
    """``task_use_cells`` of a table's declared cells (``reporting.declared``), its baselines read as the table
    reads them (step-matched or stage 1)."""
    labels = {column: c.family for column, c in declaration.columns.items()}
    return task_use_cells(trials, declaration.read_sources(baselines), labels)


def write_csv(out_dir, name: str, uses: Sequence[TaskUse]) -> Path | None:
    """``<out_dir>/<name>_task_use.csv``: the section's numbers as data beside the table's."""
    if not uses:
        return None
    path = Path(out_dir) / f"{name}_task_use.csv"
    path.parent.mkdir(parents=True, exist_ok=True)
    frame(uses).to_csv(path, index=False, float_format="%.5f")
    return path


def verdicts(uses: Sequence[TaskUse]) -> list[Verdict]:
    """"<family> uses t" at every width of the claimed columns: loss(own) < loss(permuted)."""
    return [less_than(CLAIMS[use.column], f"{use.label}: own t < permuted t", use.own, use.permuted)
            for use in uses if use.column in CLAIMS]


def difference(other: Cell | None, own: Cell) -> tuple[float, float]:
    """other - own and its t(0.975, df) x SE (paired), NaN where ``other`` is missing."""
    if other is None:
        return math.nan, math.nan
    error = contrast_error([(1.0, other), (-1.0, own)])
    return other.mean - own.mean, t_critical(error.df) * error.se if error.se > 0 else 0.0


def frame(uses: Sequence[TaskUse]) -> pd.DataFrame:
    rows = []
    for use in uses:
        permuted, permuted_bound = difference(use.permuted, use.own)
        mean, mean_bound = difference(use.mean, use.own)
        rows.append({"model": use.label, "own_nats": use.own.mean, "own_se": use.own.se, "seeds": use.own.seeds,
                     "permuted_minus_own": permuted, "permuted_t_se": permuted_bound,
                     "mean_minus_own": mean, "mean_t_se": mean_bound})
    return pd.DataFrame(rows)


def table_lines(uses: Sequence[TaskUse]) -> list[str]:
    """The section's table: each model's own-t loss and the rises under permuted and mean t, ± t x SE."""
    rows = [[r.model, f"{r.own_nats:.3f} ± {r.own_se:.3f} (n={r.seeds})",
             f"{r.permuted_minus_own:+.4f} ± {r.permuted_t_se:.4f}", f"{r.mean_minus_own:+.4f} ± {r.mean_t_se:.4f}"]
            for r in frame(uses).itertuples()]
    return toolkit.md_table(["model", "own t", "permuted - own", "mean - own"], rows)


def section_lines(uses: Sequence[TaskUse]) -> list[str]:
    """The report's section "Uses its task vector"."""
    return toolkit.section(
        "Uses its task vector",
        "Each conditional model scored at its end on the validation images under its own t, under t permuted "
        "across the images (each image gets another image's t, a fixed derangement) and under the training "
        "distribution's mean t. Differences in nats/token ± t(0.975, df) x SE. Declared before the runs: "
        "\"P_s uses t\" and \"M~_s uses t\" hold when loss(permuted) - loss(own) exceeds its t x SE "
        "(`experiments/reporting/task_use.py`).",
        "",
        *table_lines(uses),
        "",
        *toolkit.verdict_lines(verdicts(uses)),
    ) if uses else []


def claims_and_uses(claims: Sequence[Verdict], uses: Sequence[TaskUse], unpaired: bool = False) -> list[str]:
    """A table's section "Claims" (the claim-rule line of its verdicts and of the task-use claims, then its
    verdict table, with ``unpaired`` the unpaired t·SE beside the paired), then "Uses its task vector"."""
    return [*toolkit.section("Claims", toolkit.claim_rule_line([*claims, *verdicts(uses)]), "",
                             *toolkit.verdict_lines(claims, unpaired=unpaired)),
            *section_lines(uses)]
