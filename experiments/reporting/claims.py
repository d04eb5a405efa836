"""The generic claim rules every report judges by, fixed before the runs (each table's claims and paper
numbers live in its own module, e.g. ``reporting.table1``).

* An inequality ("P_s < M~_s", "M~_s < M_s", "the gap grows as s shrinks") holds when its margin exceeds
  ``t(0.975, df) x SE`` of the difference.
* A non-inferiority claim ("the co-trained source loses nothing", "co-training all sizes costs nothing")
  holds when ``difference + t(0.975, df) x SE`` stays below a margin fixed in the config
  (``experiment.margin``, default 0.01 nats/token).

A cell's standard error combines the error over validation images with the spread over seeds:
``se^2 = mean_i(se_i^2) + var_i(mean_i) / k`` for k seeds. The validation images are the same for every
seed, so their error does not shrink with k; the seed spread does.

The standard error of a difference (or of the gap contrast) between cells is *paired* when every cell
carries its per-image losses (``Cell.per_image``, mean over the cell's runs, same images in the same order):
``se^2 = var_n(sum_j c_j x_jn) / N + sum_j c_j^2 seed_var_j``, the error of the mean per-image contrast plus
each cell's seed spread. Every model is evaluated on the same fixed validation images, so the images' own
spread in difficulty (large on SynthMNIST: a plain texture is far easier than a fine warped one) cancels in
the contrast; treating cells as independent would count it twice over. Without per-image losses the cells
are treated as independent, ``se(a - b)^2 = se(a)^2 + se(b)^2`` (conservative). Reports show both.

Why ``t(0.975, df)`` and not 2: the rule was "margin > 2 SE", the normal 95% two-sided bound, which is
right only when the SE itself is known well. A seed term comes from k = 2 or 3 runs per cell, i.e. 1 or 2
degrees of freedom, and with so few a 2-SE bound is far too narrow (t(0.975, 1) = 12.7, t(0.975, 2) = 4.3).
So every SE is a sum of variance components ``v_i``, each with its own degrees of freedom ``df_i``:

* the image term: paired, ``var_n(sum_j c_j x_jn) / N`` with ``N - 1``; unpaired, each cell's
  ``c_j^2 (se_j^2 - seed_var_j)`` with ``N_j - 1`` (``N_j = len(per_image)``; a cell without per-image losses
  has an unknown N, counted as unlimited df: N is in the hundreds in every report, where t(0.975, N - 1) is
  within 1.5% of 1.96);
* each cell's seed term ``c_j^2 seed_var_j`` with ``k_j - 1``. A single-run cell has no seed term: its SE
  is the image term alone (and the spread over seeds is not measured at all).

The contrast's df is Welch-Satterthwaite's, ``df = (sum_i v_i)^2 / sum_i (v_i^2 / df_i)`` over the non-zero
components, and the critical value is ``t(0.975, df)``. With many images and single-run cells df ~ N - 1 and
t ~ 1.96, the old rule; a seed term with 1-2 df pulls df down and the rule gets stricter. ``Verdict.two_se``
keeps its name but holds ``t(0.975, df) x SE``.

Many comparisons at once (``holm_bonferroni``): a report that judges a family of m inequalities, each by the
rule above, would see about one in 20 false "holds" among true nulls. Each inequality's rule is a test at
level 0.05 with ``p = 2 P(T_df > difference / SE)`` (``p_value``; p < 0.05 exactly when difference >
t(0.975, df) x SE), and Holm's step-down keeps the family's level: order the p values, the i-th smallest
(i = 0, 1, ...) holds when it and every smaller one lie below ``alpha / (m - i)``. An untested comparison
counts with p = 1, so the family is what the report plans, not what happened to finish.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import NamedTuple

from scipy.stats import t as student_t


@dataclass(frozen=True)
class Cell:
    mean: float  # nats/token
    se: float  # standard error (validation images and seeds)
    seeds: int  # runs averaged
    per_image: tuple[float, ...] | None = None  # per-image loss, mean over the runs (for paired contrasts)
    seed_var: float = 0.0  # var(run means) / runs: the seed part of se^2


def combine_runs(means: Sequence[float], ses: Sequence[float],
                 per_images: Sequence[Sequence[float]] | None = None) -> Cell:
    """One cell from k runs (seeds): mean of means; se^2 = mean(se_i^2) + var(means) / k.

    ``per_images``: each run's per-image losses on the shared validation images (enables paired SEs).
    """
    k = len(means)
    if k == 0 or len(ses) != k:
        raise ValueError(f"need one standard error per run, got {k} means and {len(ses)} standard errors")
    mean = sum(means) / k
    within = sum(se * se for se in ses) / k
    between = sum((m - mean) ** 2 for m in means) / (k - 1) if k > 1 else 0.0
    per_image = None
    if per_images is not None:
        if len(per_images) != k or len({len(p) for p in per_images}) != 1:
            raise ValueError("per_images needs one equally long list of per-image losses per run")
        per_image = tuple(sum(values) / k for values in zip(*per_images))
    return Cell(mean, math.sqrt(within + between / k), k, per_image, between / k)


@dataclass(frozen=True)
class Verdict:
    claim: str  # the claim family, e.g. "P_s < M~_s for s <= 1/2"
    comparison: str  # the instance, e.g. "P_1/4 < M~_1/4"
    difference: float  # the tested margin (see `rule`)
    two_se: float  # t(0.975, df) x SE of the difference (the name predates the t rule)
    rule: str  # the decision rule in words
    held: bool | None  # None: a cell is missing, not tested
    two_se_unpaired: float = math.nan  # t x SE treating the cells as independent (its own df; for comparison)
    df: float = math.nan  # Welch-Satterthwaite degrees of freedom of the SE behind `two_se`
    critical: float = math.nan  # t(0.975, df)

    @property
    def verdict(self) -> str:
        return {True: "holds", False: "does not hold", None: "not tested"}[self.held]


class ContrastError(NamedTuple):
    se: float  # standard error of the contrast
    df: float  # Welch-Satterthwaite degrees of freedom (inf: every component's df is unlimited or SE = 0)


def welch_df(components: Sequence[tuple[float, float]]) -> float:
    """Welch-Satterthwaite: ``(sum_i v_i)^2 / sum_i (v_i^2 / df_i)`` over ``(v_i, df_i)``; zero components
    are skipped, and with none left (SE = 0) the df is unlimited."""
    components = [(v, df) for v, df in components if v > 0]
    if any(df <= 0 for _, df in components):
        raise ValueError(f"a non-zero variance component needs df >= 1, got {components}")
    total = sum(v for v, _ in components)
    denominator = sum(v * v / df for v, df in components)
    return total * total / denominator if denominator > 0 else math.inf


def t_critical(df: float) -> float:
    """``t(0.975, df)``, the two-sided 95% critical value (1.96 as df -> inf)."""
    return float(student_t.ppf(0.975, df))


def _seed_component(c: float, cell: Cell) -> tuple[float, float]:
    # a single-run cell has seed_var 0: no seed term, skipped by welch_df
    return c * c * cell.seed_var, cell.seeds - 1


def contrast_error(terms: Sequence[tuple[float, Cell]], paired: bool = True) -> ContrastError:
    """Standard error and Welch-Satterthwaite df of ``sum_j c_j * cell_j`` (module docstring): paired over
    images when every cell has per-image losses of the same length (and ``paired``), else from independent
    cells."""
    images = [cell.per_image for _, cell in terms]
    seeds = [_seed_component(c, cell) for c, cell in terms]
    if paired and all(p is not None for p in images) and len({len(p) for p in images}) == 1 and len(images[0]) > 1:
        n = len(images[0])
        values = [sum(c * p[i] for (c, _), p in zip(terms, images)) for i in range(n)]
        mean = sum(values) / n
        components = [(sum((v - mean) ** 2 for v in values) / (n - 1) / n, n - 1), *seeds]
    else:
        components = list(seeds)
        for (c, cell), p in zip(terms, images):
            image_df = len(p) - 1 if p is not None and len(p) > 1 else math.inf
            components.append((c * c * max(cell.se**2 - cell.seed_var, 0.0), image_df))
    return ContrastError(math.sqrt(sum(v for v, _ in components)), welch_df(components))


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


def no_worse(claim: str, comparison: str, candidate: Cell | None, reference: Cell | None,
             margin: float) -> Verdict:
    """``candidate`` loses nothing against ``reference``: (candidate - reference) + t(0.975, df) x SE < margin."""
    rule = f"difference + t(0.975, df) x SE < {margin:g}"
    if candidate is None or reference is None:
        return Verdict(claim, comparison, math.nan, math.nan, rule, None)
    terms = [(1.0, candidate), (-1.0, reference)]
    diff, b = candidate.mean - reference.mean, _bound(terms)
    return Verdict(claim, comparison, diff, b.bound, rule, diff + b.bound < margin, b.unpaired, b.df, b.critical)


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
    """``2 P(T_df > difference / SE)`` of an inequality verdict, capped at 1: below 0.05 exactly when its
    rule (difference > t(0.975, df) x SE) holds. NaN when it was not tested."""
    if verdict.held is None or math.isnan(verdict.critical):
        return math.nan
    se = verdict.two_se / verdict.critical
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
