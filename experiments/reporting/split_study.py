"""The budget split study (``experiment=split_study``): P_s's loss on the selection set for each
pre-training fraction f of the total steps N, the rule of ``conf/experiment/split_study.yaml`` applied to
choose f, and ``reports/<scale>/split_study.{md,csv,png}``. Only P's protocol is selected this way."""

from __future__ import annotations

import math
import re
from typing import NamedTuple

import pandas as pd

from experiments.reporting import toolkit
from experiments.reporting.toolkit import Provenance, ReportFiles, md_table, section

WIDTHS = (0.5, 0.25, 0.125)
CELL = re.compile(r"^P(?P<k>[248])_f(?P<f>\d\d)$")  # P4_f25: P_1/4 from a source pre-trained for 0.25 N


class Choice(NamedTuple):
    fraction: float  # the chosen f
    means: dict[float, float]  # f -> mean over s of P_s's selection loss
    tied: list[float]  # the f within the tie margin of the lowest mean
    reason: str


def study_frame(trials: pd.DataFrame, subset: str = "selection") -> pd.DataFrame:
    """One row per finished P_s run: f, s, its final loss on the selection set and on the validation set."""
    rows = []
    for row in trials[trials.status == "FINISHED"].to_dict("records"):
        match = CELL.match(str(row["cell"]))
        if not match:
            continue
        s, f = 1 / int(match["k"]), int(match["f"]) / 100
        selection = toolkit.loss_of(row, subset, s)
        validation = toolkit.loss_of(row, "all", s)
        rows.append({"f": f, "s": s, "P_s": f"P_{toolkit.scale_label(s)}", "run_id": row["run_id"],
                     "selection_nats": selection[0] if selection else math.nan,
                     "selection_se": selection[1] if selection else math.nan,
                     "validation_nats": validation[0] if validation else math.nan})
    return pd.DataFrame(rows).sort_values(["f", "s"], ascending=[True, False]).reset_index(drop=True)


def choose_fraction(frame: pd.DataFrame, tie: float = 0.01) -> Choice:
    """The rule written before the runs: the f with the lowest mean over s of P_s's selection loss; means
    within ``tie`` of the lowest are a tie, which goes to the largest f (the paper's two-stage protocol).
    Every f needs all three s, or it is not compared."""
    complete = frame.groupby("f").filter(lambda g: set(g.s) == set(WIDTHS) and g.selection_nats.notna().all())
    if complete.empty:
        raise ValueError("no fraction has finished runs at every s; finish the split-study sweep first")
    means = complete.groupby("f").selection_nats.mean().to_dict()
    best = min(means.values())
    tied = sorted(f for f, m in means.items() if m - best < tie)
    chosen = max(tied)
    reason = (f"lowest mean {best:.4f} at f = {min(means, key=means.get):g}; " +
              (f"f = {', '.join(f'{f:g}' for f in tied)} are within {tie:g} of it (a tie), so the largest, "
               f"f = {chosen:g}, is chosen" if len(tied) > 1 else f"no other f within {tie:g}: f = {chosen:g}"))
    return Choice(chosen, means, tied, reason)


def markdown(frame: pd.DataFrame, choice: Choice, prov: Provenance, total_steps: int, tie: float) -> str:
    fractions = sorted(frame.f.unique())
    rows = []
    for f in fractions:
        part = frame[frame.f == f].set_index("P_s")
        cells = [toolkit.fmt_mean_se(part.selection_nats.get(f"P_{toolkit.scale_label(s)}", math.nan),
                                     part.selection_se.get(f"P_{toolkit.scale_label(s)}", math.nan)) for s in WIDTHS]
        mean = choice.means.get(f, math.nan)
        rows.append([f"{f:g}", f"{round(f * total_steps)} + {total_steps - round(f * total_steps)}", *cells,
                     "-" if math.isnan(mean) else f"{mean:.4f}", "**chosen**" if f == choice.fraction else ""])
    lines = [
        f"# The budget split at scale `{prov.scale}`: P_s on the selection set by pre-training fraction f",
        "",
        f"Every P_s takes N = {total_steps} optimizer steps: its source M_1 is pre-trained alone for f N steps, "
        "then co-trained with P_s (Eq. 2, w_src = 1) for the rest; f = 0 co-trains from scratch. Loss in "
        "nats/token ± standard error over the selection images, one seed per cell.",
        "",
        *md_table(["f", "steps (pre-train + co-train)", "P_1/2", "P_1/4", "P_1/8", "mean over s", ""], rows),
        "",
        *section(
            "The rule and its result",
            "Written in `experiments/conf/experiment/split_study.yaml` before the runs: choose the f with the "
            "lowest mean over s of P_s's loss on the selection set (512 MNIST test digits outside the reported "
            f"validation images, fresh task vectors, no flips); means within {tie:g} nats/token are a tie, and a "
            "tie goes to the paper's protocol, the largest f.",
            "",
            f"- Result: {choice.reason}.",
            f"- The chosen f = {choice.fraction:g} becomes the scale's `budget.pretrain_fraction`; the others stay "
            "switches (`budget.pretrain_fraction=<f>`).",
            "- Only P's protocol was selected this way; the baselines' is fixed (step-matched). When the rule was "
            "written, a from-scratch co-training prototype's result was known (it put P_1/8 below M~_1/8 at "
            "1000 steps); the rule does not look at M~_s or at the reported validation images.",
        ),
        *toolkit.runs_per_cell(frame.assign(cell=frame.P_s + " f=" + frame.f.astype(str), seed=0)),
        *toolkit.provenance_lines(prov),
    ]
    return "\n".join(lines)


def plot(frame: pd.DataFrame, path, title: str):
    fig, ax = toolkit.new_figure((5.5, 4), "pre-training fraction f of the total steps",
                                 "selection-set loss (nats/token)")
    for s in WIDTHS:
        part = frame[frame.s == s]
        ax.errorbar(part.f, part.selection_nats, yerr=2 * part.selection_se, marker="o", capsize=3,
                    label=f"P_{toolkit.scale_label(s)}")
    ax.legend(fontsize=8)
    return toolkit.save_figure(fig, title, path)


def write_report(out_dir, frame: pd.DataFrame, choice: Choice, prov: Provenance, total_steps: int,
                 tie: float) -> ReportFiles:
    title = f"Budget split, scale {prov.scale} (sweep {prov.sweep_id})"
    return toolkit.write_report(out_dir, "split_study", markdown(frame, choice, prov, total_steps, tie), frame,
                                lambda path: plot(frame, path, title))
