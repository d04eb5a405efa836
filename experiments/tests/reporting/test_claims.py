"""The claim-verdict rules on synthetic Table 1 results: each claim holds on results made to satisfy it and
is "not held" on results that break it; the t(0.975, df) bound and its Welch-Satterthwaite df on hand-worked
contrasts."""

import math

import pytest

from experiments.reporting.claims import (
    Cell,
    combine_runs,
    contrast_error,
    holm_bonferroni,
    holm_verdicts,
    less_than,
    no_worse,
    p_value,
    summarise,
    t_critical,
    welch_df,
)
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


def test_inequality_within_the_t_bound_is_not_held():
    cells = paper_like()
    cells[("Mc", 0.5)] = Cell(0.505, 0.01, 2)  # 0.005 below M_1/2 but t x SE ~ 1.96 x 0.0102 ~ 0.02
    v = verdicts(cells)["M~_1/2 < M_1/2"]
    # no per-image losses and no seed variance: only image terms of unknown N, so df is unlimited
    assert v.df == math.inf and v.critical == pytest.approx(1.959964, abs=1e-6)
    assert v.two_se == pytest.approx(v.critical * math.sqrt(0.01**2 + SE**2))
    assert v.held is False


def test_gap_that_shrinks_is_not_held():
    out = verdicts(paper_like(P_8=0.76))  # gap at 1/8 = 0.02 < gap at 1/4 = 0.11
    assert out["gap at 1/8 > gap at 1/4"].held is False
    assert out["gap at 1/4 > gap at 1/2"].held is True


def test_source_that_loses_more_than_the_margin_is_not_held():
    cells = paper_like(P_1=0.46)
    out = verdicts(cells, control=Cell(0.44, SE, 1))
    assert out["source of P_s (mean of all its runs) vs control"].held is False


def test_noninferiority_fails_when_the_difference_is_small_but_uncertain():
    cells = paper_like(P_1=0.44)
    out = verdicts(cells, control=Cell(0.44, 0.01, 1))  # difference 0, but t x SE ~ 0.02 > margin
    assert out["source of P_s (mean of all its runs) vs control"].held is False


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
    assert v.df == pytest.approx(399) and v.critical == pytest.approx(1.9659, abs=1e-4)  # single runs: N - 1
    assert v.held is True


def test_paired_standard_error_includes_seed_spread():
    images = [[0.5 + 0.01 * i for i in range(50)], [0.6 + 0.01 * i for i in range(50)]]
    seeded = combine_runs([0.745, 0.845], [0.01, 0.01], images)
    assert seeded.seed_var == pytest.approx(0.1**2 / 2 / 2)
    other = combine_runs([0.745], [0.01], [images[0]])
    v = {x.comparison: x for x in table1_verdicts({("P", 0.5): other, ("Mc", 0.5): seeded}, None, 0.01)}
    # the per-image difference is constant (0.05), so the whole paired SE is the seed spread (2 seeds: df 1)
    verdict = v["P_1/2 < M~_1/2"]
    assert verdict.df == pytest.approx(1) and verdict.critical == pytest.approx(12.7062, abs=1e-4)
    assert verdict.two_se == pytest.approx(12.7062 * math.sqrt(seeded.seed_var), rel=1e-5)
    assert verdict.held is False  # 0.05 < 12.7 * 0.05


def test_unequal_per_image_lengths_are_rejected():
    with pytest.raises(ValueError, match="equally long"):
        combine_runs([0.5, 0.6], [0.01, 0.01], [[0.5, 0.5], [0.6]])


def two_seed_cells():
    """Hand-worked: 5 images, two cells of 2 seeds each. Per-image difference of the cell means
    d = 0.1 .. 0.5 (image term var(d)/N = 0.025/5 = 0.005, df 4); run means 0.9, 0.7 (seed term
    0.02/2 = 0.01, df 1) and 0.55, 0.45 (0.005/2 = 0.0025, df 1)."""
    d = [0.1, 0.2, 0.3, 0.4, 0.5]
    higher = [[0.5 + x + shift for x in d] for shift in (0.1, -0.1)]
    lower = [[0.5 + shift] * 5 for shift in (0.05, -0.05)]
    a = combine_runs([sum(run) / 5 for run in higher], [0.01, 0.01], higher)
    b = combine_runs([sum(run) / 5 for run in lower], [0.01, 0.01], lower)
    return a, b


def test_welch_satterthwaite_df_on_a_hand_worked_contrast():
    a, b = two_seed_cells()
    assert (a.seed_var, b.seed_var) == (pytest.approx(0.01), pytest.approx(0.0025))
    paired = contrast_error([(1.0, a), (-1.0, b)])
    assert paired.se == pytest.approx(math.sqrt(0.005 + 0.01 + 0.0025))
    # (0.0175)^2 / (0.005^2 / 4 + 0.01^2 / 1 + 0.0025^2 / 1) = 0.00030625 / 0.0001125
    assert paired.df == pytest.approx(2.72222, abs=1e-5)
    # unpaired: each cell's image part (mean of the runs' se^2 = 0.0001, df N - 1 = 4) and seed part
    unpaired = contrast_error([(1.0, a), (-1.0, b)], paired=False)
    assert unpaired.se == pytest.approx(math.sqrt(0.0001 + 0.01 + 0.0001 + 0.0025))
    assert unpaired.df == pytest.approx(0.0127**2 / (2 * 0.0001**2 / 4 + 0.01**2 + 0.0025**2))  # 1.518
    # zero components are skipped; a single component gives back its own df
    assert welch_df([(0.0, 1), (0.3, 7)]) == pytest.approx(7)
    assert welch_df([]) == math.inf
    with pytest.raises(ValueError, match="df >= 1"):
        welch_df([(0.1, 0)])


def test_single_run_cells_give_df_n_minus_1_and_its_t_value():
    images = [[0.5, 0.7, 0.6, 0.9, 0.8], [0.3, 0.6, 0.4, 0.6, 0.5]]  # difference 0.2, 0.1, 0.2, 0.3, 0.3
    a, b = (combine_runs([sum(p) / 5], [0.05], [p]) for p in images)
    assert a.seed_var == b.seed_var == 0.0  # no seed term
    v = less_than("c", "b < a", b, a)
    assert v.df == pytest.approx(4)
    assert v.critical == pytest.approx(2.7764, abs=1e-4)  # t(0.975, 4) from the tables
    assert v.two_se == pytest.approx(2.7764 * math.sqrt(0.007 / 5), rel=1e-4)  # var(d) = 0.007
    assert v.held is True  # 0.22 > 0.104
    assert t_critical(4) == v.critical and t_critical(math.inf) == pytest.approx(1.959964, abs=1e-6)


def test_few_seeds_make_the_rule_stricter_than_two_standard_errors():
    a, b = two_seed_cells()  # difference 0.3, SE 0.132, df 2.72
    v = less_than("c", "b < a", b, a)
    se = math.sqrt(0.0175)
    assert v.difference == pytest.approx(0.3) and 2 * se < 0.3  # held by the old 2-SE rule
    assert v.critical == pytest.approx(t_critical(2.72222)) and 3.3 < v.critical < 3.5
    assert v.two_se == pytest.approx(v.critical * se) and v.two_se > 0.3
    assert v.verdict == "does not hold"
    # non-inferiority against b shifted by 0.3 (same SE): difference 0 + 2 SE (0.26) < 0.3, + t x SE (0.45) not
    same = no_worse("c", "a vs b + 0.3", a, Cell(b.mean + 0.3, b.se, b.seeds,
                                                 tuple(x + 0.3 for x in b.per_image), b.seed_var), 0.3)
    assert same.difference == pytest.approx(0.0) and 2 * se < 0.3 < same.two_se
    assert same.held is False


def test_holm_bonferroni_on_known_p_values():
    # sorted: 0.005 < 0.05/4, 0.01 < 0.05/3, then 0.03 >= 0.05/2 stops the step-down: 0.03 and 0.04 fail,
    # though each alone is below 0.05
    results = holm_bonferroni([0.01, 0.04, 0.03, 0.005], alpha=0.05)
    assert [r.held for r in results] == [True, False, False, True]
    assert [r.level for r in results] == pytest.approx([0.05 / 3, 0.05, 0.05 / 2, 0.05 / 4])
    assert [r.adjusted for r in results] == pytest.approx([0.03, 0.06, 0.06, 0.02])  # monotone in p
    assert all((r.adjusted < 0.05) == r.held for r in results)
    # an untested comparison counts as p = 1 (the family stays the planned one) and is reported as not tested
    results = holm_bonferroni([0.001, math.nan, 0.02], alpha=0.05)
    assert [r.held for r in results] == [True, None, True] and results[1].level == pytest.approx(0.05)
    assert [r.held for r in holm_bonferroni([0.02, 0.02], alpha=0.05)] == [True, True]  # < 0.05 / 2, then < 0.05
    with pytest.raises(ValueError, match="alpha"):
        holm_bonferroni([0.1], alpha=1.5)


def test_p_value_agrees_with_the_uncorrected_rule_and_holm_is_stricter():
    # unpaired single-run cells: SE = 0.002 sqrt(2), df unlimited, so the bound is 1.96 x 0.00283 = 0.0055
    cells = [Cell(0.50, 0.002, 1), Cell(0.5060, 0.002, 1), Cell(0.520, 0.002, 1), Cell(0.5058, 0.002, 1)]
    verdicts = [less_than("claim", f"a < {i}", cells[0], cell) for i, cell in enumerate(cells[1:])]
    for v in verdicts:  # p < 0.05 exactly when difference > t(0.975, df) x SE
        assert (p_value(v) < 0.05) == v.held
    assert [v.held for v in verdicts] == [True, True, True]
    assert [p_value(v) for v in verdicts] == pytest.approx([0.034, 0.0, 0.040], abs=0.001)
    corrected, results = holm_verdicts(verdicts, alpha=0.05)
    assert [v.held for v in corrected] == [r.held for r in results] == [False, True, False]
    assert corrected[0].rule == "Holm-Bonferroni over 3 comparisons at family level 0.05"
    missing = less_than("claim", "missing", None, cells[0])
    assert math.isnan(p_value(missing)) and holm_verdicts([missing])[0][0].held is None
