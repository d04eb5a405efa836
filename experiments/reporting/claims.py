"""The generic claim rules every report judges by, fixed before the runs (each table's claims and paper
numbers live in its own module, e.g. ``reporting.table1``). ``claims.md`` beside this file explains them once,
and every report links to it (``toolkit.claim_rule_line``):

* an inequality holds when ``difference > t(0.975, df) x SE`` (``less_than``, ``gap_grows``), a one-sided test at
  2.5%; non-inferiority when ``difference + t(0.975, df) x SE < margin`` (``no_worse``), equivalence when
  ``|difference| + t(0.975, df) x SE < margin`` (``equivalent``);
* a cell averages its runs per source lineage (``combine_runs``); a contrast's SE is paired over the validation
  images and, for cells that share lineages, by lineage (``contrast_error``);
* df: with a seed term the smallest df among the seed terms and the non-zero image terms (``SEED_DF``), else
  Welch-Satterthwaite's over the image terms (``error_from_components``);
* a family of inequalities is corrected by Holm-Bonferroni's step-down (``holm_verdicts``).
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Hashable, Sequence
from dataclasses import dataclass
from typing import NamedTuple

import numpy as np
from scipy.stats import t as student_t

SEED_DF_RULES = ("smallest", "welch")
SEED_DF = "smallest"  # the remedy every report uses (``claims.md``); "welch" only for comparison


@dataclass(frozen=True)
class Cell:
    mean: float  # nats/token: mean over lineages of each lineage's mean run loss
    se: float  # standard error (validation images and seeds)
    seeds: int  # independent lineages averaged: the k of the seed term (runs sharing a source count once)
    per_image: tuple[float, ...] | None = None  # per-image loss, mean over lineages (for paired contrasts)
    seed_var: float = 0.0  # var(lineage means) / lineages: the seed part of se^2
    lineages: tuple[tuple[Hashable, float], ...] | None = None  # (lineage, its mean) to pair cells; None: shares none
    runs: int | None = None  # runs averaged (None: one per lineage)

    @property
    def run_count(self) -> int:
        return self.seeds if self.runs is None else self.runs


def combine_runs(means: Sequence[float], ses: Sequence[float],
                 per_images: Sequence[Sequence[float]] | None = None,
                 lineages: Sequence[Hashable] | None = None) -> Cell:
    """One cell from runs (``claims.md``): runs of one lineage averaged first, then the mean of the k
    lineage means; ``se^2 = mean_r(se_r^2) + var_l(lineage means) / k``.

    ``per_images``: each run's per-image losses on the shared validation images (enables paired SEs).
    ``lineages``: each run's lineage (the stage-1 run it descends from, ``toolkit.lineage_ids``); None: every
    run is its own lineage, shared with no other cell.
    """
    n = len(means)
    if n == 0 or len(ses) != n:
        raise ValueError(f"need one standard error per run, got {n} means and {len(ses)} standard errors")
    if lineages is not None and len(lineages) != n:
        raise ValueError(f"need one lineage per run, got {n} runs and {len(lineages)} lineages; pass "
                         "lineages=None when the runs share no source")
    if per_images is not None and (len(per_images) != n or len({len(p) for p in per_images}) != 1):
        raise ValueError("per_images needs one equally long list of per-image losses per run")
    groups: dict[Hashable, list[int]] = {}
    for r, lineage in enumerate(range(n) if lineages is None else lineages):
        groups.setdefault(lineage, []).append(r)
    lineage_means = {lineage: sum(means[r] for r in rs) / len(rs) for lineage, rs in groups.items()}
    k = len(groups)
    mean = sum(lineage_means.values()) / k
    within = sum(se * se for se in ses) / n
    between = sum((m - mean) ** 2 for m in lineage_means.values()) / (k - 1) if k > 1 else 0.0
    per_image = None
    if per_images is not None:
        per_lineage = [np.mean([per_images[r] for r in rs], axis=0) for rs in groups.values()]
        per_image = tuple(float(x) for x in np.mean(per_lineage, axis=0))
    shared = None if lineages is None else tuple(lineage_means.items())
    return Cell(mean, math.sqrt(within + between / k), k, per_image, between / k, shared, n)


@dataclass(frozen=True)
class Verdict:
    claim: str  # the claim family, e.g. "P_s < M~_s for s <= 1/2"
    comparison: str  # the instance, e.g. "P_1/4 < M~_1/4"
    difference: float  # the tested margin (see `rule`)
    t_se: float  # t(0.975, df) x SE of the difference (paired where possible)
    rule: str  # the decision rule in words
    held: bool | None  # None: a cell is missing, not tested
    t_se_unpaired: float = math.nan  # t x SE treating the cells' image errors as independent (its own df)
    df: float = math.nan  # degrees of freedom of the SE behind `t_se` (``SEED_DF`` rule)
    critical: float = math.nan  # t(0.975, df)

    @property
    def verdict(self) -> str:
        return {True: "holds", False: "does not hold", None: "not tested"}[self.held]

    @property
    def se(self) -> float:
        """The standard error behind ``t_se``."""
        return self.t_se / self.critical if self.critical and not math.isnan(self.critical) else math.nan


class ContrastError(NamedTuple):
    se: float  # standard error of the contrast
    df: float  # degrees of freedom under the seed-df rule (inf: every component's df is unlimited or SE = 0)


def welch_df(components: Sequence[tuple[float, float]]) -> float:
    """Welch-Satterthwaite: ``(sum_i v_i)^2 / sum_i (v_i^2 / df_i)`` over ``(v_i, df_i)``; zero components
    are skipped, and with none left (SE = 0) the df is unlimited."""
    components = [(v, df) for v, df in components if v > 0]
    if any(df <= 0 for _, df in components):
        raise ValueError(f"a non-zero variance component needs df >= 1, got {components}")
    total = sum(v for v, _ in components)
    denominator = sum(v * v / df for v, df in components)
    return total * total / denominator if denominator > 0 else math.inf


def error_from_components(variances, dfs, is_seed, seed_df: str = SEED_DF) -> tuple[np.ndarray, np.ndarray]:
    """SE and df from variance components, vectorised over leading axes: ``variances`` (..., m) with their
    ``dfs`` (m,) and ``is_seed`` (m,) marking the seed terms. ``seed_df="smallest"``: with any seed term the
    df is the smallest df among the seed terms and the non-zero image terms (``claims.md``); otherwise, and
    with ``"welch"``, Welch-Satterthwaite over the non-zero components. Used by ``contrast_error`` and by the
    calibration simulation alike."""
    if seed_df not in SEED_DF_RULES:
        raise ValueError(f"seed_df={seed_df!r}; choose one of {SEED_DF_RULES}")
    variances = np.asarray(variances, dtype=float)
    dfs = np.broadcast_to(np.asarray(dfs, dtype=float), variances.shape[-1:])
    is_seed = np.broadcast_to(np.asarray(is_seed, dtype=bool), variances.shape[-1:])
    if np.any(dfs <= 0):
        raise ValueError(f"every variance component needs df >= 1, got {dfs.tolist()}")
    total = variances.sum(-1)
    denominator = np.where(variances > 0, variances**2 / dfs, 0.0).sum(-1)
    with np.errstate(divide="ignore", invalid="ignore"):
        df = np.where(denominator > 0, total**2 / np.where(denominator > 0, denominator, 1.0), np.inf)
    if seed_df == "smallest" and is_seed.any():
        counted = np.where(is_seed | (variances > 0), dfs, np.inf)
        df = counted.min(-1)
    return np.sqrt(total), df


def t_critical(df):
    """``t(0.975, df)``, the one-sided 2.5% (two-sided 95%) critical value (1.96 as df -> inf)."""
    value = student_t.ppf(0.975, df)
    return float(value) if np.ndim(value) == 0 else value


def merge_terms(terms: Sequence[tuple[float, Cell]]) -> list[tuple[float, Cell]]:
    """The contrast's coefficients summed per cell (the same object), cells whose coefficients cancel dropped."""
    merged: dict[int, list] = {}
    for c, cell in terms:
        merged.setdefault(id(cell), [0.0, cell])[0] += c
    return [(c, cell) for c, cell in merged.values() if abs(c) > 1e-12]


def _lineage_groups(terms: Sequence[tuple[float, Cell]]) -> list[list[tuple[float, Cell]]]:
    """Cells with lineages, grouped when they share one (transitively)."""
    groups: list[tuple[set, list]] = []
    for c, cell in terms:
        ids = {lineage for lineage, _ in cell.lineages}
        joined = [g for g in groups if g[0] & ids]
        for g in joined:
            groups.remove(g)
            ids |= g[0]
        groups.append((ids, [t for g in joined for t in g[1]] + [(c, cell)]))
    return [members for _, members in groups]


def seed_components(terms: Sequence[tuple[float, Cell]]) -> list[tuple[float, float]]:
    """The seed terms ``(variance, df)`` of a merged contrast (``claims.md``): one per cell that shares no
    lineage, one per group of cells paired by lineage; single-lineage cells add none."""
    out = []
    independent = [(c, cell) for c, cell in terms if cell.lineages is None]
    for members in _lineage_groups([(c, cell) for c, cell in terms if cell.lineages is not None]):
        shared = set.intersection(*({lineage for lineage, _ in cell.lineages} for _, cell in members))
        if len(members) == 1 or len(shared) < 2:
            independent += members
            continue
        order = sorted(shared, key=repr)
        means = [dict(cell.lineages) for _, cell in members]
        d = np.array([sum(c * m[lineage] for (c, _), m in zip(members, means)) for lineage in order])
        out.append((float(d.var(ddof=1)) / len(d), len(d) - 1))
    out += [(c * c * cell.seed_var, cell.seeds - 1) for c, cell in independent if cell.seeds > 1]
    return out


def contrast_error(terms: Sequence[tuple[float, Cell]], paired: bool = True, seed_df: str = SEED_DF) -> ContrastError:
    """Standard error and df of ``sum_j c_j * cell_j`` (``claims.md``): coefficients merged per cell, the
    image term paired over images when every cell has per-image losses of the same length (and ``paired``),
    else from independent cells; the seed terms paired by lineage; df by the ``seed_df`` rule."""
    terms = merge_terms(terms)
    seeds = seed_components(terms)
    images = [cell.per_image for _, cell in terms]
    if not terms:
        return ContrastError(0.0, math.inf)
    if paired and all(p is not None for p in images) and len({len(p) for p in images}) == 1 and len(images[0]) > 1:
        values = np.sum([c * np.asarray(p) for (c, _), p in zip(terms, images)], axis=0)
        image = [(float(values.var(ddof=1)) / len(values), len(values) - 1)]
    else:
        image = []
        for (c, cell), p in zip(terms, images):
            image_df = len(p) - 1 if p is not None and len(p) > 1 else math.inf
            image.append((c * c * max(cell.se**2 - cell.seed_var, 0.0), image_df))
    components = [*image, *seeds]
    se, df = error_from_components([v for v, _ in components], [d for _, d in components],
                                   [False] * len(image) + [True] * len(seeds), seed_df)
    return ContrastError(float(se), float(df))


def contrast_se(terms: Sequence[tuple[float, Cell]], paired: bool = True) -> float:
    """Standard error of ``sum_j c_j * cell_j`` (``contrast_error`` without the df)."""
    return contrast_error(terms, paired).se


class _Bound(NamedTuple):
    bound: float  # t(0.975, df) x SE, paired where possible
    unpaired: float  # the same treating the cells as independent
    df: float
    critical: float


def _bound(terms: Sequence[tuple[float, Cell]]) -> _Bound:
    paired, unpaired = contrast_error(terms), contrast_error(terms, paired=False)
    critical = t_critical(paired.df)
    return _Bound(critical * paired.se, t_critical(unpaired.df) * unpaired.se, paired.df, critical)


INEQUALITY_RULE = "difference > t(0.975, df) x SE"



def _inequality(claim: str, comparison: str, terms: Sequence[tuple[float, Cell]]) -> Verdict:
    diff, b = sum(c * cell.mean for c, cell in terms), _bound(terms)
    return Verdict(claim, comparison, diff, b.bound, INEQUALITY_RULE, diff > b.bound, b.unpaired, b.df, b.critical)


def less_than(claim: str, comparison: str, smaller: Cell | None, larger: Cell | None) -> Verdict:
    """``smaller < larger`` holds when larger - smaller > t(0.975, df) x SE."""
    if smaller is None or larger is None:
        return Verdict(claim, comparison, math.nan, math.nan, INEQUALITY_RULE, None)
    return _inequality(claim, comparison, [(1.0, larger), (-1.0, smaller)])


def _within_margin(claim: str, comparison: str, candidate: Cell | None, reference: Cell | None, margin: float,
                   both_sides: bool) -> Verdict:
    """(candidate - reference) + t(0.975, df) x SE < margin; with ``both_sides`` |candidate - reference| too."""
    rule = f"{'|difference|' if both_sides else 'difference'} + t(0.975, df) x SE < {margin:g}"
    if candidate is None or reference is None:
        return Verdict(claim, comparison, math.nan, math.nan, rule, None)
    terms = [(1.0, candidate), (-1.0, reference)]
    diff, b = candidate.mean - reference.mean, _bound(terms)
    held = (abs(diff) if both_sides else diff) + b.bound < margin
    return Verdict(claim, comparison, diff, b.bound, rule, held, b.unpaired, b.df, b.critical)


def no_worse(claim: str, comparison: str, candidate: Cell | None, reference: Cell | None,
             margin: float) -> Verdict:
    """``candidate`` loses nothing against ``reference``: (candidate - reference) + t(0.975, df) x SE < margin."""
    return _within_margin(claim, comparison, candidate, reference, margin, both_sides=False)


def equivalent(claim: str, comparison: str, candidate: Cell | None, reference: Cell | None,
               margin: float) -> Verdict:
    """``candidate`` and ``reference`` are equivalent: |candidate - reference| + t(0.975, df) x SE < margin
    (``no_worse`` in both directions: the two one-sided 97.5% bounds on the difference lie inside the margin)."""
    return _within_margin(claim, comparison, candidate, reference, margin, both_sides=True)


def gap_grows(claim: str, comparison: str, gap_small: tuple[Cell, Cell] | None,
              gap_large: tuple[Cell, Cell] | None) -> Verdict:
    """(M~ - P) at the smaller s exceeds (M~ - P) at the larger s by more than t(0.975, df) x SE."""
    if gap_small is None or gap_large is None:
        return Verdict(claim, comparison, math.nan, math.nan, INEQUALITY_RULE, None)
    return _inequality(claim, comparison,
                       [(1.0, gap_small[0]), (-1.0, gap_small[1]), (-1.0, gap_large[0]), (1.0, gap_large[1])])


def summarise(verdicts: Sequence[Verdict]) -> dict[str, str]:
    """Claim family -> "holds" (every instance holds), "does not hold" (one fails), or "partly tested"."""
    families: dict[str, list[bool | None]] = {}
    for v in verdicts:
        families.setdefault(v.claim, []).append(v.held)
    out = {}
    for claim, held in families.items():
        if any(h is False for h in held):
            out[claim] = f"does not hold ({sum(h is True for h in held)} of {len(held)} instances hold)"
        elif all(h is True for h in held):
            out[claim] = "holds"
        else:
            out[claim] = "not tested (missing cells)"
    return out


# ------------------------------------------------------------------------------------------------
# A family of comparisons: Holm-Bonferroni


def p_value(verdict: Verdict) -> float:
    """Twice the one-sided p of an inequality verdict, ``2 P(T_df > difference / SE)``, capped at 1: below 0.05
    exactly when its one-sided 2.5% rule (difference > t(0.975, df) x SE) holds. NaN when it was not tested."""
    if verdict.held is None or math.isnan(verdict.critical):
        return math.nan
    se = verdict.se
    if se == 0:
        return 0.0 if verdict.difference > 0 else 1.0
    return min(1.0, 2.0 * float(student_t.sf(verdict.difference / se, verdict.df)))


class HolmResult(NamedTuple):
    p: float  # the comparison's own p value (NaN: not tested)
    adjusted: float  # Holm-adjusted p: the smallest family level at which it would hold
    level: float  # alpha / (m - i): what its p had to stay below at its place i in the step-down
    held: bool | None  # None: not tested


def holm_bonferroni(p_values: Sequence[float], alpha: float = 0.05) -> list[HolmResult]:
    """Holm's step-down over a family of m comparisons, in the order given: the i-th smallest p (i = 0, 1,
    ...) holds when it and every smaller one lie below ``alpha / (m - i)``; an untested one (NaN) counts as
    p = 1 and is reported as not tested. Keeps the chance of any false "holds" in the family below alpha."""
    if not 0 < alpha < 1:
        raise ValueError(f"alpha={alpha} must lie in (0, 1)")
    m = len(p_values)
    effective = [1.0 if math.isnan(p) else float(p) for p in p_values]
    order = sorted(range(m), key=lambda i: (effective[i], i))
    out: list[HolmResult | None] = [None] * m
    adjusted, holding = 0.0, True
    for rank, i in enumerate(order):
        level = alpha / (m - rank)
        adjusted = max(adjusted, min(1.0, (m - rank) * effective[i]))
        holding = holding and effective[i] < level
        out[i] = HolmResult(p_values[i], adjusted, level, None if math.isnan(p_values[i]) else holding)
    return out


def holm_verdicts(verdicts: Sequence[Verdict], alpha: float = 0.05) -> tuple[list[Verdict], list[HolmResult]]:
    """The family's verdicts with Holm-Bonferroni's decision in place of each one's own (and its rule in
    words), beside the per-comparison results."""
    results = holm_bonferroni([p_value(v) for v in verdicts], alpha)
    rule = f"Holm-Bonferroni over {len(verdicts)} comparisons at family level {alpha:g}"
    corrected = [dataclasses.replace(v, rule=rule, held=h.held) for v, h in zip(verdicts, results)]
    return corrected, results
