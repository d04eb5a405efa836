"""Calibration of the claim rule (``claims``) by simulation: how often an inequality "holds" when the compared
cells have equal means (its false-positive rate, nominal 2.5% per one-sided claim), and how often it holds at
the effect sizes the cpu reports observed (its power), for 2 and 3 seeds; ``reports/<scale>/calibration.md``.

The model behind each simulated contrast ``sum_j c_j cell_j`` (all losses in nats/token):

* images: the paired per-image contrast has SD ``image_sd`` over N images, so its mean is off by
  ``N(0, image_sd^2 / N)`` and the rule's image term is ``image_sd^2 chi2_{N-1} / ((N - 1) N)`` (exactly what
  ``var_n`` of N normal per-image contrasts gives);
* seeds: cell j's run r of lineage l is off by ``seed_sd_j (sqrt(shared) z_gl + sqrt(1 - shared) w_jlr)``, with
  ``z_gl`` the lineage's own luck, common to every cell of lineage group g (the runs that continue the same
  stage-1 model), and ``w_jlr`` the run's; a cell without a group has lineages of its own. Seed SDs differ
  between cells.

The rule is then applied exactly as ``claims.contrast_error`` applies it (runs averaged per lineage, cells of
one group paired by lineage, ``claims.error_from_components`` for SE and df), vectorised over simulations;
``experiments/tests/reporting/test_calibration.py`` checks that equivalence draw by draw against
``claims.combine_runs`` and ``claims.contrast_error`` on full per-image losses. Simulation only: no run is
read, and the magnitudes come from the committed ``reports/cpu/*.csv`` (``magnitudes``).

``python -m experiments.reporting.calibration [reports/cpu]`` writes the report.
"""

from __future__ import annotations

import math
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import NamedTuple

import numpy as np
import pandas as pd

from experiments.reporting import claims
from experiments.reporting.toolkit import md_table

NOMINAL = 0.025  # one-sided level of every inequality claim (t(0.975, df))
SIMULATIONS = 20_000  # per scenario and number of seeds
IMAGES = 512  # validation images of the cpu reports (df 511 in table1.md)


@dataclass(frozen=True)
class SimCell:
    coefficient: float  # c_j of the contrast (cells merged already: one entry per cell)
    seed_sd: float  # SD of a run's mean loss over seeds (initialisations)
    group: str | None = None  # cells of one group continue the same stage-1 models (lineages); None: its own
    runs_per_lineage: int = 1  # e.g. 3 for the source of P_s (P_1/2, P_1/4, P_1/8 from one M_1)


@dataclass(frozen=True)
class Scenario:
    name: str
    cells: tuple[SimCell, ...]
    image_sd: float  # SD over images of the paired per-image contrast
    shared: float = 0.5  # fraction of a run's seed variance its lineage shares with its group
    images: int = IMAGES
    note: str = field(default="", compare=False)


class Draws(NamedTuple):
    runs: list[np.ndarray]  # per cell: (sims, lineages, runs_per_lineage) seed offsets of its runs
    image_mean: np.ndarray  # (sims,) error of the mean paired per-image contrast
    image_var: np.ndarray  # (sims,) the rule's image term var_n(contrast) / N


def draw(scenario: Scenario, lineages: int, sims: int, rng: np.random.Generator) -> Draws:
    """Seed and image errors of ``sims`` replications of the scenario with ``lineages`` seeds per cell."""
    luck = {g: rng.standard_normal((sims, lineages, 1)) for g in {c.group for c in scenario.cells} - {None}}
    runs = []
    for cell in scenario.cells:
        own = rng.standard_normal((sims, lineages, cell.runs_per_lineage))
        if cell.group is None:
            runs.append(cell.seed_sd * own)
        else:
            runs.append(cell.seed_sd * (math.sqrt(scenario.shared) * luck[cell.group]
                                        + math.sqrt(1 - scenario.shared) * own))
    n = scenario.images
    image_mean = scenario.image_sd / math.sqrt(n) * rng.standard_normal(sims)
    image_var = scenario.image_sd**2 * rng.chisquare(n - 1, sims) / (n - 1) / n
    return Draws(runs, image_mean, image_var)


class Judged(NamedTuple):
    difference: np.ndarray  # (sims,) estimated contrast
    se: np.ndarray
    df: np.ndarray
    critical: np.ndarray


def judge(scenario: Scenario, draws: Draws, effect: float = 0.0, seed_df: str = claims.SEED_DF) -> Judged:
    """The rule's difference, SE and df for each draw (``claims.contrast_error``'s steps, vectorised), with
    the true contrast equal to ``effect``."""
    lineage_means = [r.mean(-1) for r in draws.runs]  # (sims, L) per cell
    difference = effect + draws.image_mean + sum(c.coefficient * m.mean(-1)
                                                 for c, m in zip(scenario.cells, lineage_means))
    count = lineage_means[0].shape[1]
    groups: dict[object, list[int]] = {}
    for j, cell in enumerate(scenario.cells):
        groups.setdefault(cell.group if cell.group is not None else ("own", j), []).append(j)
    variances, dfs, is_seed = [draws.image_var], [scenario.images - 1], [False]
    if count > 1:
        for members in groups.values():  # one group paired by lineage, or one cell alone
            d = sum(scenario.cells[j].coefficient * lineage_means[j] for j in members)  # (sims, L)
            variances.append(d.var(axis=1, ddof=1) / count)
            dfs.append(count - 1)
            is_seed.append(True)
    se, df = claims.error_from_components(np.stack(variances, axis=-1), dfs, is_seed, seed_df)
    return Judged(difference, se, df, claims.t_critical(df))


def held_rate(scenario: Scenario, lineages: int, sims: int = SIMULATIONS, effect: float = 0.0,
              seed_df: str = claims.SEED_DF, seed: int = 0, rule: str = "inequality",
              margin: float = 0.01) -> float:
    """Share of simulations in which the claim holds: ``rule="inequality"`` (difference > t x SE; the
    false-positive rate at ``effect=0``, the power at ``effect > 0``) or ``"no_worse"`` (difference + t x SE <
    ``margin``, with the true difference ``effect``)."""
    judged = judge(scenario, draw(scenario, lineages, sims, np.random.default_rng(seed)), effect, seed_df)
    bound = judged.critical * judged.se
    held = judged.difference > bound if rule == "inequality" else judged.difference + bound < margin
    return float(np.mean(held))


def monte_carlo_se(rate: float, sims: int = SIMULATIONS) -> float:
    return math.sqrt(rate * (1 - rate) / sims)


# ------------------------------------------------------------------------------------------------
# Magnitudes from the committed cpu reports


class Magnitudes(NamedTuple):
    image_sd_cross: float  # paired per-image SD of a contrast between different models (kinds or widths)
    image_sd_near: float  # ... between close relatives (P~_s and P_s, a source and the control)
    seed_sd: dict[tuple[str, str], float]  # (model, s) of table1.csv -> SD of a run's mean over seeds
    image_se: float  # the image part of a cell's SE assumed for every cell (the smallest cell SE)
    image_sd_source: str = ""  # where the per-image SDs come from


# From reports/cpu/table1.md (the committed verdict table): "P_1/4 < M~_1/4" has t x SE 0.0206 at df 511.2,
# i.e. a paired SE of 0.0105 with no seed term to speak of; "P~_1/8 vs P_1/8" has t x SE 0.0041 at df 6.6,
# a paired SE of at most 0.0017 including its seed terms. Times sqrt(512) images: the per-image SDs.
IMAGE_SD_CROSS = 0.0206 / 1.9647 * math.sqrt(IMAGES)
IMAGE_SD_NEAR = 0.0041 / 2.4 * math.sqrt(IMAGES)
EARLIER_SOURCE = ("an earlier table1.md (P_1/4 < M~_1/4: t x SE 0.0206 at df 511.2; P~_1/8 vs P_1/8: t x SE 0.0041 "
                  "at df 6.6, an upper bound)")


# The contrasts whose per-image SDs stand for "different models" and "close relatives": (cell, width) pairs of
# Table 1 (P_1/4 against the step-matched M~_1/4; P~'s 1/8 model against P_1/8)
CROSS_PAIR, NEAR_PAIR = (("P4", 0.25), ("Mc4m", 0.25)), (("Pall", 0.125), ("P8", 0.125))


def image_sds(evidence_dir: str | Path) -> tuple[float, float, str] | None:
    """(cross, near, where): the SD over validation images of the paired contrasts ``CROSS_PAIR`` and
    ``NEAR_PAIR``, each cell's per-image losses averaged over its runs first (as ``claims.combine_runs`` does),
    from the committed evidence of the scale's finished Table 1 sweeps (merged); None without any."""
    from experiments.reporting.toolkit import per_image_of
    from experiments.tracking.evidence import load_evidence, merge_evidence, trials_of

    parts = [e for e in map(load_evidence, sorted(Path(evidence_dir).glob("table1-*.parquet")))
             if e.finished and e.sweeps[0]["tags"].get("experiment") == "table1"]
    if not parts:
        return None
    evidence = merge_evidence(parts)
    trials = trials_of(evidence, per_image=True)

    def mean_losses(cell: str, width: float) -> np.ndarray:
        rows = trials[(trials.cell == cell) & (trials.status == "FINISHED")].to_dict("records")
        return np.mean([per_image_of(row, "all", width) for row in rows], axis=0)

    sd = lambda pair: float(np.std(mean_losses(*pair[0]) - mean_losses(*pair[1]), ddof=1))
    return sd(CROSS_PAIR), sd(NEAR_PAIR), f"the evidence of {' + '.join(evidence.sweep_ids)}"


def magnitudes(table1_csv: str | Path) -> Magnitudes:
    """Seed SDs per Table 1 cell from the committed ``table1.csv``: ``se^2 = image part + var(runs) / runs``,
    with the image part taken as the smallest cell SE of the table (an assumption: the cells' image parts
    differ a little), so ``seed_sd = sqrt(runs (se^2 - min se^2))``; the per-image SDs from the Table 1
    evidence beside it (``image_sds``), else the constants read off an earlier table1.md."""
    frame = pd.read_csv(table1_csv)
    image_se = float(frame.ours_se.min())
    seed_sd = {(row.model, str(row.s)): math.sqrt(max(row.ours_se**2 - image_se**2, 0.0) * row.seeds)
               for row in frame.itertuples()}
    measured = image_sds(Path(table1_csv).parent / "evidence")
    cross, near, where = measured or (IMAGE_SD_CROSS, IMAGE_SD_NEAR, EARLIER_SOURCE)
    return Magnitudes(cross, near, seed_sd, image_se, where)


def calibration_scenarios(m: Magnitudes | None = None) -> list[Scenario]:
    """Equal-means scenarios spanning the cpu reports' contrasts: independent cells, cells paired by lineage
    (the source and the control, P~_s and P_s, an ablation's P_1/8 and the reference's), the gap contrast,
    unequal seed SDs (0.003 to 0.05: the cpu cells' range, ``magnitudes``) and seed terms from negligible
    beside the image term to dominant."""
    cross = IMAGE_SD_CROSS if m is None else m.image_sd_cross
    near = IMAGE_SD_NEAR if m is None else m.image_sd_near
    return [
        Scenario("P_s vs M~_s, image term dominant", (SimCell(1, 0.003), SimCell(-1, 0.006)), cross),
        Scenario("P_s vs M~_s, seed and image terms alike", (SimCell(1, 0.01), SimCell(-1, 0.012)), cross),
        Scenario("M~_s vs M_s, seed term dominant", (SimCell(1, 0.05), SimCell(-1, 0.005)), cross),
        Scenario("source of P_s (3 runs a lineage) vs control", (SimCell(1, 0.015, "M1", 3),
                                                                   SimCell(-1, 0.005, "M1")), near, shared=0.5),
        Scenario("P~_s vs P_s, lineages shared strongly", (SimCell(1, 0.003, "M1"), SimCell(-1, 0.012, "M1")),
                 near, shared=0.9),
        Scenario("P~_s vs P_s, lineages not shared", (SimCell(1, 0.003, "M1"), SimCell(-1, 0.012, "M1")),
                 near, shared=0.0),
        Scenario("gap grows: (M~ - P) at 1/4 minus at 1/2", (SimCell(1, 0.02), SimCell(-1, 0.003, "M1"),
                                                              SimCell(-1, 0.01), SimCell(1, 0.015, "M1")),
                 cross, shared=0.5),
        Scenario("ablation: P_1/8 changed vs P_1/8 (the M~_1/8 cancels)",
                 (SimCell(1, 0.005, "M1"), SimCell(-1, 0.02, "M1")), near, shared=0.5),
    ]


def false_positive_frame(scenarios: Sequence[Scenario], seeds: Sequence[int] = (2, 3),
                         sims: int = SIMULATIONS, rules: Sequence[str] = claims.SEED_DF_RULES) -> pd.DataFrame:
    """Rate of "holds" at equal means per scenario, number of seeds and seed-df rule, with its MC SE."""
    rows = []
    for i, scenario in enumerate(scenarios):
        for k in seeds:
            for rule in rules:
                rate = held_rate(scenario, k, sims, 0.0, rule, seed=1000 * i + k)
                rows.append({"scenario": scenario.name, "seeds": k, "rule": rule, "false_positive_rate": rate,
                             "mc_se": monte_carlo_se(rate, sims), "simulations": sims})
    return pd.DataFrame(rows)


# ------------------------------------------------------------------------------------------------
# Power at the observed effect sizes


class Observed(NamedTuple):
    comparison: str
    rule: str  # "inequality" or "no_worse"
    effect: float  # observed difference (the claim's direction: > 0 favours it)
    scenario: Scenario


def observed_comparisons(table1_csv: str | Path, margin: float = 0.01) -> list[Observed]:
    """Table 1's comparisons at their committed differences (``table1.csv``), each as a scenario with the
    cells' seed SDs from ``magnitudes`` and lineage sharing 0.5 where the cells continue the same M_1."""
    m = magnitudes(table1_csv)
    frame = pd.read_csv(table1_csv)
    mean = {(row.model, str(row.s)): row.ours_nats for row in frame.itertuples()}
    sd = m.seed_sd
    out = []
    for s in ("1/2", "1/4", "1/8"):
        cells = (SimCell(1, sd[("M~_s", s)]), SimCell(-1, sd[("P_s", s)], "M1"))
        out.append(Observed(f"P_{s} < M~_{s}", "inequality", mean[("M~_s", s)] - mean[("P_s", s)],
                            Scenario(f"P_{s} < M~_{s}", cells, m.image_sd_cross)))
    for s in ("1", "1/2", "1/4", "1/8"):
        cells = (SimCell(1, sd[("M_s", s)]), SimCell(-1, sd[("M~_s", s)]))
        out.append(Observed(f"M~_{s} < M_{s}", "inequality", mean[("M_s", s)] - mean[("M~_s", s)],
                            Scenario(f"M~_{s} < M_{s}", cells, m.image_sd_cross)))
    for larger, smaller in (("1/2", "1/4"), ("1/4", "1/8")):
        gap = lambda s: mean[("M~_s", s)] - mean[("P_s", s)]  # noqa: E731
        cells = (SimCell(1, sd[("M~_s", smaller)]), SimCell(-1, sd[("P_s", smaller)], "M1"),
                 SimCell(-1, sd[("M~_s", larger)]), SimCell(1, sd[("P_s", larger)], "M1"))
        out.append(Observed(f"gap at {smaller} > gap at {larger}", "inequality", gap(smaller) - gap(larger),
                            Scenario("gap", cells, m.image_sd_cross)))
    control = ("M_1 continued (control)", "1")
    for name, key, runs in (("source of P_s", ("P_s", "1"), 3), ("source of P~", ("P~", "1"), 1)):
        cells = (SimCell(1, sd[key], "M1", runs), SimCell(-1, sd[control], "M1"))
        out.append(Observed(f"{name} vs control (margin {margin:g})", "no_worse", mean[key] - mean[control],
                            Scenario(name, cells, m.image_sd_near)))
    for s in ("1/2", "1/4", "1/8"):
        cells = (SimCell(1, sd[("P~", s)], "M1"), SimCell(-1, sd[("P_s", s)], "M1"))
        out.append(Observed(f"P~_{s} vs P_{s} (margin {margin:g})", "no_worse", mean[("P~", s)] - mean[("P_s", s)],
                            Scenario(f"P~_{s} vs P_{s}", cells, m.image_sd_near)))
    return out


def power_frame(observed: Sequence[Observed], seeds: Sequence[int] = (2, 3), sims: int = SIMULATIONS,
                margin: float = 0.01) -> pd.DataFrame:
    """Chance that each claim holds under the rule when the truth is the observed difference."""
    rows = []
    for i, o in enumerate(observed):
        row = {"comparison": o.comparison, "observed": o.effect}
        for k in seeds:
            row[f"holds, {k} seeds"] = held_rate(o.scenario, k, sims, o.effect, claims.SEED_DF, seed=7000 + 10 * i + k,
                                                 rule=o.rule, margin=margin)
        rows.append(row)
    return pd.DataFrame(rows)


# ------------------------------------------------------------------------------------------------
# The report


def _pct(x: float) -> str:
    return f"{100 * x:.2f}%"


def markdown(fpr: pd.DataFrame, power: pd.DataFrame, m: Magnitudes, commit: str, command: str) -> str:
    wide = fpr.pivot_table(index=["scenario", "seeds"], columns="rule", values="false_positive_rate", sort=False)
    allowed = NOMINAL + 3 * monte_carlo_se(NOMINAL, SIMULATIONS)
    fpr_rows = [[scenario, k, _pct(r["smallest"]), _pct(r["welch"])] for (scenario, k), r in wide.iterrows()]
    holds = [c for c in power.columns if c.startswith("holds")]
    power_rows = [[r["comparison"], f"{r['observed']:+.4f}", *(_pct(r[c]) for c in holds)]
                  for r in power.to_dict("records")]

    seed_sds = ", ".join(f"{model} {s}: {v:.3f}" for (model, s), v in m.seed_sd.items())
    return "\n".join([
        "# Calibration of the claim rule (simulation only)",
        "",
        "**Simulation only: no model was trained or evaluated for this page.** It checks the rule of "
        "`experiments/reporting/claims.py` (runs averaged per source lineage, cells that share lineages paired, a "
        "contrast's coefficients merged per cell, df = the smallest df among its seed terms) on simulated "
        "contrasts whose image and seed variances and lineage sharing are taken from the committed cpu reports.",
        "",
        f"- command: `{command}`",
        f"- commit: `{commit}`",
        f"- {SIMULATIONS:,} seeded simulations per row and number of seeds; {IMAGES} validation images; "
        "model: `experiments/reporting/calibration.py` (module docstring).",
        "",
        "## Inputs, from the committed reports",
        "",
        f"- paired per-image SD of a contrast between different models: {m.image_sd_cross:.3f} nats/token "
        f"(P_1/4 vs M~_1/4); between close relatives: {m.image_sd_near:.3f} (P~_1/8 vs P_1/8); each cell's runs "
        f"averaged per image first; from {m.image_sd_source or EARLIER_SOURCE}.",
        f"- seed SD of a run per Table 1 cell, sqrt(runs (se^2 - {m.image_se:.5f}^2)) from table1.csv (the "
        f"smallest cell SE taken as every cell's image part): {seed_sds}.",
        "- lineage sharing: the fraction of a run's seed variance that its stage-1 source shares with the other "
        "cells continuing it is not measured by any committed report; the scenarios use 0, 0.5 and 0.9.",
        "",
        "## False-positive rate at equal means (nominal 2.5% per one-sided claim)",
        "",
        f"A rate at or below {_pct(allowed)} (2.5% + 3 Monte Carlo SEs) is calibrated. `smallest` is the rule; "
        "`welch` (Welch-Satterthwaite df over the estimated components) is the rule the committed cpu verdicts "
        "were made under, shown for comparison.",
        "",
        *md_table(["scenario", "seeds", "rule (smallest df)", "Welch-Satterthwaite df"], fpr_rows),
        "",
        "## Power at the observed effect sizes",
        "",
        "Chance that each claim of Table 1 holds under the rule if the true difference were the one the committed "
        "`reports/cpu/table1.csv` shows (> 0 favours the claim; for the non-inferiority rows the claim holds when "
        "the difference + t x SE stays below the margin), with the seed SDs above and lineage sharing 0.5.",
        "",
        *md_table(["comparison", "observed difference", *holds], power_rows),
        "",
        "## Reading",
        "",
        "The rule's rate stays at or below its level in every scenario, and far below it where the image term "
        "dominates: that is the price of never letting a seed term claim more df than its seeds give. With two "
        "seeds a contrast with a seed term is judged at t(0.975, 1) = 12.7 SE, so most claims cannot hold with "
        "two seeds whatever the truth; with three (t(0.975, 2) = 4.3) the power is the last column. A claim "
        "whose observed difference lies on the wrong side of zero has no power at any number of seeds.",
        "",
    ])


def write(out_dir: str | Path, sims: int = SIMULATIONS) -> Path:
    """``<out_dir>/calibration.md`` from ``<out_dir>/table1.csv``."""
    from experiments.config import code_root
    from experiments.tracking.store import git_commit

    out_dir = Path(out_dir)
    m = magnitudes(out_dir / "table1.csv")
    fpr = false_positive_frame(calibration_scenarios(m), sims=sims)
    power = power_frame(observed_comparisons(out_dir / "table1.csv"), sims=sims)
    command = f"python -m experiments.reporting.calibration {out_dir}"
    path = out_dir / "calibration.md"
    path.write_text(markdown(fpr, power, m, git_commit(code_root()), command))
    return path


def main(argv: Sequence[str]) -> int:
    out_dir = argv[0] if argv else "reports/cpu"
    print(write(out_dir))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

