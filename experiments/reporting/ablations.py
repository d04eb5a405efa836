"""The s = 1/8 ablation (``experiment=ablations``): each declared change's effect on the gap P_1/8 - M~_1/8
against the new Table 1's cells, with its t-bound (``claims.gap_grows``: P_1/8 gains on M~_1/8 from the change
when (M~_X - P_X) - (M~_ref - P_ref) exceeds t(0.975, df) x SE); ``reports/<scale>/ablations.{md,csv,png}``."""

from __future__ import annotations

import math

import pandas as pd

from experiments.reporting import toolkit
from experiments.reporting.claims import Cell, Verdict, gap_grows
from experiments.reporting.declared import declared
from experiments.reporting.toolkit import Provenance, fmt_cell, md_table, section

WIDTH = 0.125
# Table 1's cells each change is compared with (conf/experiment/ablations.yaml, experiment.reference)
REFERENCE_P, REFERENCE_MC = declared("ablations").reference["P"], declared("ablations").reference["Mc"]
REFERENCE_CELLS = (REFERENCE_P, REFERENCE_MC)
# change -> (its P_1/8 cell, its M~_1/8 cell; None: the reference's), and what it changes
CHANGES = {
    "heads": ("P8_heads", "Mc8m_heads", "2 heads of 8 instead of 4 heads of 4 (model.min_head_size=8), M~_1/8 too"),
    "rank": ("P8_r32", None, "projector rank 32 instead of 8"),
    "parts": ("P8_derived", None, "small model's parts derived from the source (small_parts=derived)"),
    "longer": ("P8_long", "Mc8m_long", "stage 2 three times longer, the matched M~_1/8 continued as long"),
}


def ablation_cells(trials: pd.DataFrame, reference: pd.DataFrame) -> dict[str, Cell]:
    """Each ablation cell (this sweep) and the reference P_1/8 and M~_1/8 (Table 1's sweep), seeds combined."""
    sources = {cell: [(cell, WIDTH)] for cell in [*REFERENCE_CELLS, *(c for pair in CHANGES.values() for c in pair[:2] if c)]}
    cells = toolkit.gather_cells(pd.concat([trials, reference], ignore_index=True), sources)
    return {cell: value for (cell, _), value in cells.items()}


def ablation_verdicts(cells: dict[str, Cell]) -> list[Verdict]:
    reference = (cells.get(REFERENCE_MC), cells.get(REFERENCE_P))
    out = []
    for change, (p_cell, mc_cell, _) in CHANGES.items():
        changed = (cells.get(mc_cell or REFERENCE_MC), cells.get(p_cell))
        out.append(gap_grows("the change lowers P_1/8 - M~_1/8", change,
                             changed if None not in changed else None, reference if None not in reference else None))
    return out


def _gap(p: Cell | None, mc: Cell | None) -> float:
    return math.nan if p is None or mc is None else p.mean - mc.mean


def _num(x: float, fmt: str) -> str:
    return "-" if math.isnan(x) else format(x, fmt)


def results_frame(cells: dict[str, Cell], verdicts: list[Verdict]) -> pd.DataFrame:
    rows = []
    for (change, (p_cell, mc_cell, what)), v in zip(CHANGES.items(), verdicts):
        p, mc = cells.get(p_cell), cells.get(mc_cell or REFERENCE_MC)
        rows.append({"change": change, "what": what, "P_1/8": getattr(p, "mean", math.nan),
                     "M~_1/8": getattr(mc, "mean", math.nan), "gap": _gap(p, mc), "gap change": -v.difference,
                     "se": v.se, "df": v.df, "t x SE": v.t_se, "runs": getattr(p, "seeds", 0),
                     "P gains on M~": v.verdict})
    return pd.DataFrame(rows)


def markdown(cells: dict[str, Cell], verdicts: list[Verdict], prov: Provenance, source_sweep: str) -> str:
    ref_p, ref_mc = cells.get(REFERENCE_P), cells.get(REFERENCE_MC)
    rows = [[r.change, r.what, fmt_cell(cells.get(CHANGES[r.change][0])),
             fmt_cell(cells.get(CHANGES[r.change][1] or REFERENCE_MC)), _num(r.gap, "+.4f"), _num(r["gap change"], "+.4f"),
             _num(r.se, ".4f"), _num(r.df, ".1f"), _num(r["t x SE"], ".4f"), r["P gains on M~"]]
            for _, r in results_frame(cells, verdicts).iterrows()]
    counts = sorted({cells[name].seeds for p, mc, _ in CHANGES.values() for name in (p, mc) if name in cells})
    seeds = " or ".join(map(str, counts)) or "no"  # the changed cells' source lineages
    lines = [
        f"# Ablations at scale `{prov.scale}`: what P_1/8 - M~_1/8 depends on",
        "",
        f"Reference (Table 1 sweep `{source_sweep}`): P_1/8 {fmt_cell(ref_p)}, M~_1/8 (step-matched) "
        f"{fmt_cell(ref_mc)}, gap P_1/8 - M~_1/8 = {_num(_gap(ref_p, ref_mc), '+.4f')} nats/token (< 0: P_1/8 is "
        f"better). Each change below, {seeds} seeds (source lineages) a cell, starts from the same stage-1 "
        "models (a change to M~_1/8 retrains it); the hypotheses were committed in `experiments/conf/experiment/ablations.yaml` before the runs. Each "
        "says the change lowers P_1/8 - M~_1/8: P_1/8 gains more from it than M~_1/8 does.",
        "",
        *md_table(["change", "what", "P_1/8", "M~_1/8", "P_1/8 - M~_1/8", "change in it", "SE", "df", "t x SE",
                   "P_1/8 gains on M~_1/8"], rows),
        "",
        *section("Rule", "P_1/8 gains on M~_1/8 from a change when P_1/8 - M~_1/8 falls by more than t(0.975, df) x "
                 "SE of the difference of gaps (the reference M~_1/8, on both sides for a change to P_1/8 alone, "
                 "cancels); a change that moves P_1/8 and M~_1/8 alike does not count. No result here becomes a "
                 "default without a new selection study by the split study's rule.",
                 "", toolkit.claim_rule_line(verdicts)),
        *toolkit.provenance_lines(prov, sources=source_sweep),
    ]
    return "\n".join(lines)


def plot(frame: pd.DataFrame, path, title: str):
    fig, ax = toolkit.new_figure((6, 3.5))
    ax.errorbar(frame["gap change"], range(len(frame)), xerr=frame["t x SE"], fmt="o", capsize=3)
    ax.axvline(0, color="0.6", linewidth=1)
    ax.set_yticks(range(len(frame)), frame.change)
    ax.set_xlabel("change in P_1/8 - M~_1/8 (nats/token), ± t x SE\n< 0: P_1/8 gains on M~_1/8")
    return toolkit.save_figure(fig, title, path)


# reports/<scale>/ablations.{md,csv,png}: the markdown, the results frame and its plot (``toolkit.StudyReport``)
REPORT = toolkit.StudyReport("ablations", "Ablations at s = 1/8", results_frame, markdown, plot)
write_report = REPORT.write
