"""How much of P_s is specialisation (``experiment=specialisation``, issue 28 item 2): at s = 1/2, 1/4, 1/8,
P_s(t) - M_s split into inheriting the co-trained source (P_s(const) - M_s) and specialisation by t
(P_s(t) - P_s(const)), each with its SE by the claim rule (``claims``); and whether P_s beats both conditional
baselines, M~_s (t as the first embedding) and M^every_s (t at every position). ``reports/<scale>/
specialisation.{md,csv,png}``; the hypotheses and claims were declared in conf/experiment/specialisation.yaml
before the runs."""

from __future__ import annotations

import math
from typing import NamedTuple

import pandas as pd

from experiments.reporting import task_use, toolkit
from experiments.reporting.claims import Cell, Verdict, contrast_error, less_than, t_critical
from experiments.reporting.declared import declared
from experiments.reporting.toolkit import Provenance, fmt_cell, md_table, scale_label, section


class Row(NamedTuple):
    """The cells of one s: P_s(const) and M^every_s are this sweep's, the others Table 1's (``reference``)."""

    scale: float
    constant: str  # P_s(const): trained and evaluated with the training stream's mean t
    projected: str  # P_s(t), Table 1's
    unconditional: str  # M_s, step-matched
    conditional: str  # M~_s, step-matched (t as the first embedding)
    every: str | None  # M^every_s, step-matched (t at every position, model.task_input=every)


def declared_rows() -> tuple[Row, ...]:
    """One row per P_s(const) cell of the study's declaration (its projected cells, in order), the others found
    by what they train: Table 1's single-scale P_s at that s and the step-matched continuations of its M_s and
    M~_s (``declared("table1")``), and the study's own step-matched conditional baseline of that width
    (M^every_s; None where the study declares none)."""
    own, table1 = declared("specialisation"), declared("table1")

    def first(declaration, column: str, s: float) -> str:
        return next(name for name, width in declaration.single_width(column).items() if width == s)

    rows = []
    for name, cell in own.cells.items():
        if cell.kind != "projected":
            continue
        s = float(cell.scales[0])
        every = next((other for other, c in own.cells.items() if c.role == "matched_baseline"
                      and c.kind == "conditional" and float(c.width) == s), None)
        rows.append(Row(s, name, first(table1, "P", s), table1.matched[first(table1, "M", s)],
                        table1.matched[first(table1, "Mc", s)], every))
    return tuple(rows)


ROWS = declared_rows()
PROJECTED_CELLS = {cell for row in ROWS for cell in (row.constant, row.projected)}
# Table 1's cells the report reads from the source sweep (experiment.reference); the rest are this sweep's
REFERENCE_CELLS = tuple(cell for row in ROWS for cell in (row.projected, row.unconditional, row.conditional))

# The claim families (conf/experiment/specialisation.yaml)
INHERITS = "P_s(const) < M_s: inheriting the co-trained source helps"
SPECIALISES = "P_s(t) < P_s(const): specialisation by t helps"
BEATS = "P_s beats the conditional baselines (M~_s and M^every_s)"


def specialisation_cells(trials: pd.DataFrame, reference: pd.DataFrame) -> dict[str, Cell]:
    """Every cell of ``ROWS``, seeds combined per source lineage: this sweep's ``trials`` and Table 1's
    ``reference`` trials together, so that P_s(const) and P_s(t), which continue the same stage-1 M_1 of each
    seed, are paired by lineage (``toolkit.lineage_ids``; pass Table 1's M1 trials too to name them by run)."""
    sources = {cell: [(cell, row.scale)] for row in ROWS for cell in row[1:] if cell is not None}
    cells = toolkit.gather_cells(pd.concat([trials, reference], ignore_index=True), sources)
    return {cell: value for (cell, _), value in cells.items()}


def specialisation_verdicts(cells: dict[str, Cell]) -> list[Verdict]:
    """Per s, in ``ROWS`` order: inherits, specialises, P_s < M~_s, P_s < M^every_s (a missing cell: not
    tested)."""
    out = []
    for row in ROWS:
        s = scale_label(row.scale)
        p, const = cells.get(row.projected), cells.get(row.constant)
        out += [
            less_than(INHERITS, f"P_{s}(const) < M_{s}", const, cells.get(row.unconditional)),
            less_than(SPECIALISES, f"P_{s}(t) < P_{s}(const)", p, const),
            less_than(BEATS, f"P_{s} < M~_{s}", p, cells.get(row.conditional)),
            less_than(BEATS, f"P_{s} < M^every_{s}", p, cells.get(row.every)),
        ]
    return out


class Part(NamedTuple):
    """One term of the decomposition: ``a - b`` with its SE and df by the claim rule."""

    difference: float
    se: float
    df: float

    @property
    def t_se(self) -> float:
        return math.nan if math.isnan(self.se) else t_critical(self.df) * self.se

    @property
    def interval(self) -> tuple[float, float]:
        """Two one-sided 97.5% bounds on the difference (a 95% interval)."""
        return self.difference - self.t_se, self.difference + self.t_se


def part(a: Cell | None, b: Cell | None) -> Part:
    if a is None or b is None:
        return Part(math.nan, math.nan, math.nan)
    error = contrast_error([(1.0, a), (-1.0, b)])
    return Part(a.mean - b.mean, error.se, error.df)


class Decomposition(NamedTuple):
    total: Part  # P_s(t) - M_s
    inherited: Part  # P_s(const) - M_s
    specialised: Part  # P_s(t) - P_s(const)


def decompose(cells: dict[str, Cell], row: Row) -> Decomposition:
    """P_s(t) - M_s = (P_s(const) - M_s) + (P_s(t) - P_s(const)); the two parts add up to the total exactly
    (their means), their SEs each by the claim rule (the parts share P_s(const), so their SEs do not add)."""
    p, const, m = cells.get(row.projected), cells.get(row.constant), cells.get(row.unconditional)
    return Decomposition(part(p, m), part(const, m), part(p, const))


def _mean(cell: Cell | None) -> float:
    return math.nan if cell is None else cell.mean


def both_beaten(verdicts: list[Verdict], s: str) -> str:
    """P_s beats the conditional baselines at s: holds only if P_s < M~_s and P_s < M^every_s both hold."""
    held = [v.held for v in verdicts if v.claim == BEATS and v.comparison.startswith(f"P_{s} <")]
    if any(h is False for h in held):
        return "does not hold"
    return "holds" if held and all(h is True for h in held) else "not tested"


def results_frame(cells: dict[str, Cell], verdicts: list[Verdict]) -> pd.DataFrame:
    rows = []
    for row in ROWS:
        s = scale_label(row.scale)
        d = decompose(cells, row)
        out = {"s": s, "P_s(t)": _mean(cells.get(row.projected)), "P_s(const)": _mean(cells.get(row.constant)),
               "M_s": _mean(cells.get(row.unconditional)), "M~_s": _mean(cells.get(row.conditional)),
               "M^every_s": _mean(cells.get(row.every))}
        for name, value in d._asdict().items():
            out.update({name: value.difference, f"{name}_se": value.se, f"{name}_df": value.df,
                        f"{name}_t_se": value.t_se})
        by_comparison = {v.comparison: v.verdict for v in verdicts}
        out.update({"inherits": by_comparison[f"P_{s}(const) < M_{s}"],
                    "specialises": by_comparison[f"P_{s}(t) < P_{s}(const)"],
                    "beats M~_s": by_comparison[f"P_{s} < M~_{s}"],
                    "beats M^every_s": by_comparison[f"P_{s} < M^every_{s}"],
                    "beats both": both_beaten(verdicts, s)})
        rows.append(out)
    return pd.DataFrame(rows)


def _num(x: float, fmt: str) -> str:
    return "-" if math.isnan(x) else format(x, fmt)


def _part(p: Part) -> str:
    if math.isnan(p.difference):
        return "-"
    low, high = p.interval
    return f"{p.difference:+.4f} ± {_num(p.se, '.4f')} [{_num(low, '+.4f')}, {_num(high, '+.4f')}]"


def bound_lines(cells: dict[str, Cell]) -> list[str]:
    """What the data allow for each part: a one-sided 97.5% bound where it is resolved (either way), and the
    largest benefit not excluded where it is not -- never "no effect"."""
    lines = []
    for row in ROWS:
        s, d = scale_label(row.scale), decompose(cells, row)
        for name, p, first, second in ((f"specialisation at s = {s}", d.specialised, f"P_{s}(t)", f"P_{s}(const)"),
                                       (f"inheriting at s = {s}", d.inherited, f"P_{s}(const)", f"M_{s}")):
            if math.isnan(p.difference):
                continue
            low, high = p.interval
            if high < 0:
                lines.append(f"- {name}: {first} below {second} by at least {-high:.4f} nats/token (97.5% bound).")
            elif low > 0:
                lines.append(f"- {name}: {first} above {second} (worse) by at least {low:.4f} nats/token "
                             "(97.5% bound).")
            else:
                lines.append(f"- {name}: not resolved; {first} below {second} by at most {-low:.4f} nats/token "
                             f"(97.5% bound: difference {p.difference:+.4f}, t x SE {p.t_se:.4f}, df "
                             f"{toolkit.fmt_df(p.df)}).")
    return lines


USES = {"every": "M^every", "const": "P(const)"}  # the task-use section's columns (task_use.task_use_cells)


def task_uses(trials: pd.DataFrame) -> list[task_use.TaskUse]:
    """M^every_s and P_s(const) of the study's own runs under their own, permuted and mean t (as Table 1's
    section): measured, no claim. P_s(const) is trained and scored with the mean t, so both of its differences
    are 0 by construction, a check that the conditions reach the model."""
    sources = {row.every: [("every", row.scale)] for row in ROWS} | {row.constant: [("const", row.scale)]
                                                                     for row in ROWS}
    return task_use.task_use_cells(trials, sources, USES)


def task_use_lines(uses: list[task_use.TaskUse]) -> list[str]:
    return section(
        "Uses its task vector (measured, no claim)",
        "The study's own conditional models scored at their end on the validation images under their own t, t "
        "permuted across the images and the training distribution's mean t, as in Table 1's section of that name "
        "(where P_s and M~_s are). Differences in nats/token ± t(0.975, df) x SE. No claim was declared for "
        "these models before the runs, so none is judged. P_s(const) is trained and scored with the mean t: its "
        "differences are 0 by construction.",
        "",
        *task_use.table_lines(uses),
    ) if uses else []


def markdown(cells: dict[str, Cell], verdicts: list[Verdict], prov: Provenance, source_sweep: str,
             uses: list[task_use.TaskUse] = ()) -> str:
    records = results_frame(cells, verdicts).to_dict("records")
    table, baselines = [], []
    for row, r in zip(ROWS, records):
        d = decompose(cells, row)
        table.append([r["s"], fmt_cell(cells.get(row.projected)), fmt_cell(cells.get(row.constant)),
                      fmt_cell(cells.get(row.unconditional)), _part(d.total), _part(d.inherited),
                      _part(d.specialised)])
        baselines.append([r["s"], fmt_cell(cells.get(row.projected)), fmt_cell(cells.get(row.conditional)),
                          fmt_cell(cells.get(row.every)), r["beats M~_s"], r["beats M^every_s"], r["beats both"]])
    lines = [
        f"# How much of P_s is specialisation? Scale `{prov.scale}`",
        "",
        "P_s(const) is the projection co-trained with Table 1's stage-1 M_1 exactly as P_s is, but trained and "
        "evaluated with one constant task vector, the training stream's mean t (`train.task_vector=mean`): a "
        "small model inherited from the co-trained source but not specialised. Seed i starts from the M_1 that "
        f"P_s(t) of seed i starts from. P_s(t), M_s and M~_s are Table 1's (sweep `{source_sweep}`), M_s and "
        "M~_s step-matched, all after the same optimizer steps. The hypotheses and claims were committed in "
        "`experiments/conf/experiment/specialisation.yaml` before the runs.",
        "",
        *section("Decomposition",
                 "P_s(t) - M_s = [P_s(const) - M_s] (inheriting the source) + [P_s(t) - P_s(const)] "
                 "(specialisation). Each part: difference ± SE [95% interval: two one-sided 97.5% bounds], "
                 "nats/token; < 0: the first model is better.",
                 "",
                 *md_table(["s", "P_s(t)", "P_s(const)", "M_s", "P_s(t) - M_s", "inheriting: P_s(const) - M_s",
                            "specialisation: P_s(t) - P_s(const)"], table)),
        *section("Against the conditional baselines",
                 "P_s beats the conditional baselines at s only if P_s < M~_s and P_s < M^every_s both hold "
                 "(a missing baseline leaves the claim not tested). If neither M~ uses its task vector at this "
                 "scale (Table 1's section \"uses its task vector\"), P_s < M~_s says that P_s beats a model that "
                 "ignores t, not that reading t helps; the decomposition above says how much of P_s's lead t "
                 "itself gives.",
                 "",
                 *md_table(["s", "P_s(t)", "M~_s", "M^every_s", "P_s < M~_s", "P_s < M^every_s",
                            "beats both"], baselines)),
        *task_use_lines(list(uses)),
        *section("Claims", *toolkit.verdict_lines(verdicts)),
        *section("Bounds", *(bound_lines(cells) or ["- neither part could be computed: no finished P_s(const) runs."])),
        *section("Rule",
                 toolkit.claim_rule_line(verdicts) + " P_s(t) and P_s(const) share source lineages and are paired "
                 "by them. \"P_s beats the conditional baselines\" is an intersection of two one-sided tests, so "
                 "neither needs a correction for the other."),
        *toolkit.provenance_lines(prov, sources=source_sweep),
    ]
    return "\n".join(lines)


def plot(frame: pd.DataFrame, path, title: str):
    fig, ax = toolkit.new_figure((7, 3.8))
    parts = (("total", "P_s(t) - M_s"), ("inherited", "inheriting: P_s(const) - M_s"),
             ("specialised", "specialisation: P_s(t) - P_s(const)"))
    for offset, (name, label) in zip((-0.2, 0.0, 0.2), parts):
        x = [i + offset for i in range(len(frame))]
        ax.errorbar(x, frame[name], yerr=frame[f"{name}_t_se"], fmt="o", capsize=3, label=label)
    ax.axhline(0, color="0.6", linewidth=1)
    ax.set_xticks(range(len(frame)), [f"s = {s}" for s in frame.s])
    ax.set_ylabel("nats/token (< 0: first model better), ± t x SE")
    ax.legend(fontsize=8)
    return toolkit.save_figure(fig, title, path)


# reports/<scale>/specialisation.{md,csv,png}: the markdown, the results frame and its plot (``toolkit.StudyReport``)
REPORT = toolkit.StudyReport("specialisation", "Specialisation", results_frame, markdown, plot)
write_report = REPORT.write
