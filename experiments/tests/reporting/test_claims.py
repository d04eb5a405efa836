"""The claim-verdict rules on synthetic Table 1 results: each claim holds on results made to satisfy it and
is "not held" on results that break it."""

import math

import pytest

from experiments.reporting.claims import Cell, combine_runs, summarise
from experiments.reporting.table1 import PAPER_TABLE1, table1_verdicts
from experiments.reporting.toolkit import SCALES

SE = 0.002


def paper_like(**changes) -> dict:
    """Cells equal to the paper's numbers with a small SE; ``changes`` maps (column, s) -> mean."""
    cells = {key: Cell(mean, SE, 1) for key, mean in PAPER_TABLE1.items()}
    # the paper's own P~ / P_s and source numbers differ by more than a 0.01 margin; make them agree
    for s in SCALES:
        cells[("Pall", s)] = Cell(cells[("P", s)].mean, SE, 1)
    for key, mean in changes.items():
        column, s = key.rsplit("_", 1)
        cells[(column, {"1": 1.0, "2": 0.5, "4": 0.25, "8": 0.125}[s])] = Cell(mean, SE, 1)
    return cells


def verdicts(cells, control=None, margin=0.01):
    control = control or Cell(cells[("P", 1.0)].mean, SE, 1)
    return {v.comparison: v for v in table1_verdicts(cells, control, margin)}


def test_all_claims_hold_on_results_made_to_satisfy_them():
    cells = paper_like(P_1=0.44, Pall_1=0.44)
    summary = summarise(list(verdicts(cells).values()))
    assert set(summary.values()) == {"holds"}, summary


def test_projected_not_below_conditional_is_not_held():
    out = verdicts(paper_like(P_4=0.58))  # P_1/4 == M~_1/4
    assert out["P_1/4 < M~_1/4"].held is False
    assert out["P_1/2 < M~_1/2"].held is True


def test_inequality_within_two_standard_errors_is_not_held():
    cells = paper_like()
    cells[("Mc", 0.5)] = Cell(0.505, 0.01, 2)  # 0.005 below M_1/2 but 2 SE ~ 0.02
    assert verdicts(cells)["M~_1/2 < M_1/2"].held is False


def test_gap_that_shrinks_is_not_held():
    out = verdicts(paper_like(P_8=0.76))  # gap at 1/8 = 0.02 < gap at 1/4 = 0.11
    assert out["gap at 1/8 > gap at 1/4"].held is False
    assert out["gap at 1/4 > gap at 1/2"].held is True


def test_source_that_loses_more_than_the_margin_is_not_held():
    cells = paper_like(P_1=0.46)
    out = verdicts(cells, control=Cell(0.44, SE, 1))
    assert out["source of P_s (mean of 3 runs) vs control"].held is False


def test_noninferiority_fails_when_the_difference_is_small_but_uncertain():
    cells = paper_like(P_1=0.44)
    out = verdicts(cells, control=Cell(0.44, 0.01, 1))  # difference 0, but 2 SE = 0.02 > margin
    assert out["source of P_s (mean of 3 runs) vs control"].held is False


def test_cotraining_that_costs_is_not_held():
    out = verdicts(paper_like(Pall_8=0.60))
    assert out["P~_1/8 vs P_1/8"].held is False
    assert out["P~_1/2 vs P_1/2"].held is True


def test_missing_cells_are_not_tested():
    cells = paper_like()
    del cells[("P", 0.25)]
    out = verdicts(cells)
    assert out["P_1/4 < M~_1/4"].held is None
    assert "not tested" in summarise([out["P_1/4 < M~_1/4"]])["P_s < M~_s for s <= 1/2"]


def test_combined_standard_error_includes_the_seed_spread():
    one = combine_runs([0.50], [0.01])
    assert (one.mean, one.se, one.seeds) == (0.50, 0.01, 1)
    two = combine_runs([0.46, 0.54], [0.01, 0.01])
    assert two.mean == pytest.approx(0.50)
    # image error 0.01 (shared validation images) plus the spread of the seeds (sd 0.0566 / sqrt 2)
    assert two.se == pytest.approx(math.sqrt(0.01**2 + 0.0032 / 2))
    with pytest.raises(ValueError, match="one standard error per run"):
        combine_runs([0.5], [])


def test_paired_standard_error_removes_shared_image_difficulty():
    """Two models on the same images: image difficulty varies a lot, the per-image difference little."""
    difficulty = [0.2 + 0.05 * (i % 20) for i in range(400)]  # spread ~0.3 between images
    better = [d - 0.01 + 0.002 * ((i * 7) % 5 - 2) for i, d in enumerate(difficulty)]
    a = combine_runs([sum(better) / 400], [0.0145], [better])
    b = combine_runs([sum(difficulty) / 400], [0.0145], [difficulty])
    verdict = {v.comparison: v for v in table1_verdicts({("P", 0.5): a, ("Mc", 0.5): b}, None, 0.01)}
    v = verdict["P_1/2 < M~_1/2"]
    assert v.two_se < 0.001 < v.two_se_unpaired  # paired: tiny; independent: ~0.04
    assert v.held is True


def test_paired_standard_error_includes_seed_spread():
    images = [[0.5 + 0.01 * i for i in range(50)], [0.6 + 0.01 * i for i in range(50)]]
    seeded = combine_runs([0.745, 0.845], [0.01, 0.01], images)
    assert seeded.seed_var == pytest.approx(0.1**2 / 2 / 2)
    other = combine_runs([0.745], [0.01], [images[0]])
    v = {x.comparison: x for x in table1_verdicts({("P", 0.5): other, ("Mc", 0.5): seeded}, None, 0.01)}
    # the per-image difference is constant (0.05), so the whole paired SE is the seed spread
    assert v["P_1/2 < M~_1/2"].two_se == pytest.approx(2 * math.sqrt(seeded.seed_var))
    assert v["P_1/2 < M~_1/2"].held is False  # 0.05 < 2 * 0.035


def test_unequal_per_image_lengths_are_rejected():
    with pytest.raises(ValueError, match="equally long"):
        combine_runs([0.5, 0.6], [0.01, 0.01], [[0.5, 0.5], [0.6]])
