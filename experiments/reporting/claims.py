"""The generic claim rules every report judges by, fixed before the runs (each table's claims and paper
numbers live in its own module, e.g. ``reporting.table1``).

* An inequality ("P_s < M~_s", "M~_s < M_s", "the gap grows as s shrinks") holds when its margin exceeds
  2 standard errors of the difference.
* A non-inferiority claim ("the co-trained source loses nothing", "co-training all sizes costs nothing")
  holds when the loss difference plus 2 standard errors stays below a margin fixed in the config
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
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass


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
    two_se: float  # 2 standard errors of the difference
    rule: str  # the decision rule in words
    held: bool | None  # None: a cell is missing, not tested
    two_se_unpaired: float = math.nan  # 2 SE treating the cells as independent (shown for comparison)

    @property
    def verdict(self) -> str:
        return {True: "holds", False: "does not hold", None: "not tested"}[self.held]


def contrast_se(terms: Sequence[tuple[float, Cell]], paired: bool = True) -> float:
    """Standard error of ``sum_j c_j * cell_j``: paired over images when every cell has per-image losses
    of the same length (and ``paired``), else from independent cells."""
    images = [cell.per_image for _, cell in terms]
    if paired and all(p is not None for p in images) and len({len(p) for p in images}) == 1 and len(images[0]) > 1:
        n = len(images[0])
        values = [sum(c * p[i] for (c, _), p in zip(terms, images)) for i in range(n)]
        mean = sum(values) / n
        var = sum((v - mean) ** 2 for v in values) / (n - 1)
        return math.sqrt(var / n + sum(c * c * cell.seed_var for c, cell in terms))
    return math.sqrt(sum(c * c * cell.se**2 for c, cell in terms))


def unpaired_two_se(verdict_terms: Sequence[tuple[float, Cell]]) -> float:
    return 2 * contrast_se(verdict_terms, paired=False)


def less_than(claim: str, comparison: str, smaller: Cell | None, larger: Cell | None) -> Verdict:
    """``smaller < larger`` holds when larger - smaller > 2 SE."""
    rule = "difference > 2 SE"
    if smaller is None or larger is None:
        return Verdict(claim, comparison, math.nan, math.nan, rule, None)
    terms = [(1.0, larger), (-1.0, smaller)]
    diff, two_se = larger.mean - smaller.mean, 2 * contrast_se(terms)
    return Verdict(claim, comparison, diff, two_se, rule, diff > two_se, unpaired_two_se(terms))


def no_worse(claim: str, comparison: str, candidate: Cell | None, reference: Cell | None,
             margin: float) -> Verdict:
    """``candidate`` loses nothing against ``reference``: (candidate - reference) + 2 SE < margin."""
    rule = f"difference + 2 SE < {margin:g}"
    if candidate is None or reference is None:
        return Verdict(claim, comparison, math.nan, math.nan, rule, None)
    terms = [(1.0, candidate), (-1.0, reference)]
    diff, two_se = candidate.mean - reference.mean, 2 * contrast_se(terms)
    return Verdict(claim, comparison, diff, two_se, rule, diff + two_se < margin, unpaired_two_se(terms))


def gap_grows(claim: str, comparison: str, gap_small: tuple[Cell, Cell] | None,
              gap_large: tuple[Cell, Cell] | None) -> Verdict:
    """(M~ - P) at the smaller s exceeds (M~ - P) at the larger s by more than 2 SE."""
    rule = "difference > 2 SE"
    if gap_small is None or gap_large is None:
        return Verdict(claim, comparison, math.nan, math.nan, rule, None)
    terms = [(1.0, gap_small[0]), (-1.0, gap_small[1]), (-1.0, gap_large[0]), (1.0, gap_large[1])]
    diff = sum(c * cell.mean for c, cell in terms)
    two_se = 2 * contrast_se(terms)
    return Verdict(claim, comparison, diff, two_se, rule, diff > two_se, unpaired_two_se(terms))


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
