"""The claim-verdict rules on synthetic Table 1 results: each claim holds on results made to satisfy it and
is "not held" on results that break it; the t(0.975, df) bound and its Welch-Satterthwaite df on hand-worked
contrasts."""

import dataclasses
import math
import re
from pathlib import Path

import pandas as pd
import pytest

from experiments.config import code_root
from experiments.reporting import claims, toolkit
from experiments.reporting.claims import (
    Cell,
    combine_runs,
    contrast_error,
    equivalent,
    error_from_components,
    gap_grows,
    holm_bonferroni,
    holm_verdicts,
    less_than,
    merge_terms,
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


@pytest.mark.parametrize(("changes", "broken", "intact"), [
    ({"P_4": 0.58}, "P_1/4 < M~_1/4", "P_1/2 < M~_1/2"),  # P_1/4 == M~_1/4
    ({"P_8": 0.76}, "gap at 1/8 > gap at 1/4", "gap at 1/4 > gap at 1/2"),  # gap at 1/8 = 0.02 < gap at 1/4 = 0.11
    ({"Pall_8": 0.60}, "P~_1/8 vs P_1/8", "P~_1/2 vs P_1/2"),  # co-training all sizes costs P~_1/8 0.03
])
def test_a_claim_the_results_break_is_not_held_and_its_neighbour_still_is(changes, broken, intact):
    out = verdicts(paper_like(**changes))
    assert out[broken].held is False
    assert out[intact].held is True


def test_inequality_within_the_t_bound_is_not_held():
    cells = paper_like()
    cells[("Mc", 0.5)] = Cell(0.505, 0.01, 1)  # 0.005 below M_1/2 but t x SE ~ 1.96 x 0.0102 ~ 0.02
    v = verdicts(cells)["M~_1/2 < M_1/2"]
    # no per-image losses and no seed variance: only image terms of unknown N, so df is unlimited
    assert v.df == math.inf and v.critical == pytest.approx(1.959964, abs=1e-6)
    assert v.t_se == pytest.approx(v.critical * math.sqrt(0.01**2 + SE**2))
    assert v.held is False


def test_source_that_loses_more_than_the_margin_is_not_held():
    cells = paper_like(P_1=0.46)
    out = verdicts(cells, control=Cell(0.44, SE, 1))
    assert out["source of P_s (mean of all its runs) vs control"].held is False


def test_noninferiority_fails_when_the_difference_is_small_but_uncertain():
    cells = paper_like(P_1=0.44)
    out = verdicts(cells, control=Cell(0.44, 0.01, 1))  # difference 0, but t x SE ~ 0.02 > margin
    assert out["source of P_s (mean of all its runs) vs control"].held is False


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
    assert v.t_se < 0.001 < v.t_se_unpaired  # paired: tiny; independent: ~0.04
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
    assert verdict.t_se == pytest.approx(12.7062 * math.sqrt(seeded.seed_var), rel=1e-5)
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
    # Welch-Satterthwaite would give (0.0175)^2 / (0.005^2 / 4 + 0.01^2 / 1 + 0.0025^2 / 1) = 2.72
    # the rule: a seed term cannot claim more certainty than its seeds give, so df is the seed terms' 1
    assert paired.df == 1 and contrast_error([(1.0, a), (-1.0, b)]).df == 1
    paired = contrast_error([(1.0, a), (-1.0, b)], seed_df="welch")
    assert paired.df == pytest.approx(2.72222, abs=1e-5)  # Welch-Satterthwaite, for comparison
    # unpaired: each cell's image part (mean of the runs' se^2 = 0.0001, df N - 1 = 4) and seed part
    unpaired = contrast_error([(1.0, a), (-1.0, b)], paired=False, seed_df="welch")
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
    assert v.t_se == pytest.approx(2.7764 * math.sqrt(0.007 / 5), rel=1e-4)  # var(d) = 0.007
    assert v.held is True  # 0.22 > 0.104
    assert t_critical(4) == v.critical and t_critical(math.inf) == pytest.approx(1.959964, abs=1e-6)


def test_few_seeds_make_the_rule_stricter_than_two_standard_errors():
    a, b = two_seed_cells()  # difference 0.3, SE 0.132, two seeds a cell: df 1
    v = less_than("c", "b < a", b, a)
    se = math.sqrt(0.0175)
    assert v.difference == pytest.approx(0.3) and 2 * se < 0.3  # held by the old 2-SE rule
    assert v.df == 1 and v.critical == pytest.approx(12.7062, abs=1e-4)
    assert v.t_se == pytest.approx(v.critical * se) and v.t_se > 0.3 and v.se == pytest.approx(se)
    assert v.verdict == "does not hold"
    # non-inferiority against b shifted by 0.3 (same SE): difference 0 + 2 SE (0.26) < 0.3, + t x SE (0.45) not
    same = no_worse("c", "a vs b + 0.3", a, Cell(b.mean + 0.3, b.se, b.seeds,
                                                 tuple(x + 0.3 for x in b.per_image), b.seed_var), 0.3)
    assert same.difference == pytest.approx(0.0) and 2 * se < 0.3 < same.t_se
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


# ------------------------------------------------------------------------------------------------
# The independent unit (lineages), merged coefficients, and the seed-df rule


def lineage_cell(means_by_lineage: dict[str, list[float]], images: int = 40, offset: float = 0.0) -> Cell:
    """A cell of runs grouped by lineage; each run's per-image losses are its mean plus a fixed image profile."""
    profile = [0.3 * ((i * 7) % 11) / 11 for i in range(images)]
    means, lineages = [], []
    for lineage, values in means_by_lineage.items():
        means += values
        lineages += [lineage] * len(values)
    per_images = [[m + offset + p - sum(profile) / images for p in profile] for m in means]
    return combine_runs([m + offset for m in means], [0.01] * len(means), per_images, lineages)


def test_runs_sharing_a_source_are_averaged_per_lineage_and_count_once():
    # the source of P_s: three runs (P_1/2, P_1/4, P_1/8) from each of two stage-1 M_1 seeds
    source = combine_runs([1.0, 1.2, 1.1, 2.0, 2.4, 2.2], [0.01] * 6, lineages=["a"] * 3 + ["b"] * 3)
    assert (source.seeds, source.run_count) == (2, 6)
    assert source.mean == pytest.approx(1.65)  # mean of the lineage means 1.1 and 2.2
    assert source.seed_var == pytest.approx((1.1 - 2.2) ** 2 / 2 / 2)  # var of 2 lineage means / 2, not of 6 runs
    assert dict(source.lineages) == pytest.approx({"a": 1.1, "b": 2.2})
    assert combine_runs([1.0, 2.0], [0.01, 0.01]).lineages is None  # no lineages given: shares none
    with pytest.raises(ValueError, match="one lineage per run"):
        combine_runs([1.0, 2.0], [0.01, 0.01], lineages=["a"])


def test_cells_that_share_lineages_are_paired_by_lineage():
    """The source and the control continue the same M_1 seeds: each lineage's luck (+-0.2) is shared, the
    per-lineage difference is 0.02 +- 0.001, so the seed term is that spread, not the lineages'."""
    source = lineage_cell({"a": [1.22], "b": [0.821], "c": [1.02]})
    control = lineage_cell({"a": [1.2], "b": [0.8], "c": [1.0]})
    paired = contrast_error([(1.0, source), (-1.0, control)])
    d = [0.02, 0.021, 0.02]
    expected = sum((x - sum(d) / 3) ** 2 for x in d) / 2 / 3
    assert paired.se == pytest.approx(math.sqrt(expected), rel=1e-6) and paired.df == 2  # image term cancels
    independent = contrast_error([(1.0, dataclasses.replace(source, lineages=None)),
                                  (-1.0, dataclasses.replace(control, lineages=None))])
    assert independent.se > 20 * paired.se  # as independent cells, the lineages' spread counts twice
    # a lineage-sharing group that shares fewer than two lineages falls back to independent seed terms
    lone = lineage_cell({"a": [1.1], "z": [1.3]})
    fallback = contrast_error([(1.0, lone), (-1.0, control)])
    assert fallback.se == pytest.approx(math.sqrt(lone.seed_var + control.seed_var), rel=1e-6)


def test_a_cell_on_both_sides_of_a_contrast_cancels():
    """The ablations' "rank": (M~_1/8 - P_r32) - (M~_1/8 - P_8) with the same M~_1/8 cell on both sides is
    P_8 - P_r32; its seed spread (large here) must cancel, not count twice."""
    mc = lineage_cell({"m0": [2.30], "m1": [2.45]})  # noisy: seed var 0.005625
    p8 = lineage_cell({"s0": [2.20], "s1": [2.21]})
    p_r32 = lineage_cell({"s0": [2.19], "s1": [2.205]}, offset=0.0)
    v = gap_grows("c", "rank", (mc, p_r32), (mc, p8))
    direct = less_than("c", "r32 < 8", p_r32, p8)
    assert v.difference == pytest.approx(direct.difference)
    assert (v.t_se, v.df) == (pytest.approx(direct.t_se), direct.df)
    copy = dataclasses.replace(mc, lineages=None)  # equal values but other, independent runs: no cancelling
    assert gap_grows("c", "rank", (copy, p_r32), (mc, p8)).t_se > 10 * v.t_se
    assert merge_terms([(1.0, mc), (-1.0, mc), (2.0, p8)]) == [(2.0, p8)]


def test_two_seeds_that_agree_by_chance_keep_their_one_degree_of_freedom():
    """The runaway case of the cpu reports: a seed term estimated as zero made df jump to N - 1."""
    images = 200
    a = lineage_cell({"a0": [1.0], "a1": [1.0]}, images)  # two seeds agree exactly
    b = lineage_cell({"b0": [0.9], "b1": [0.9]}, images, offset=0.0)
    b = dataclasses.replace(b, per_image=tuple(x + 0.001 * math.sin(i) for i, x in enumerate(b.per_image)))
    assert a.seed_var == b.seed_var == 0.0
    assert contrast_error([(1.0, a), (-1.0, b)]).df == 1
    assert contrast_error([(1.0, a), (-1.0, b)], seed_df="welch").df == pytest.approx(images - 1)
    with pytest.raises(ValueError, match="seed_df"):
        contrast_error([(1.0, a), (-1.0, b)], seed_df="pooled")
    # df = the smallest seed df: 2 lineages beside 3 give 1; single-lineage cells add no seed term
    c = lineage_cell({"c0": [1.0], "c1": [1.1], "c2": [0.9]}, images)
    assert contrast_error([(1.0, c), (-1.0, b)]).df == 1
    single = lineage_cell({"d0": [1.0, 1.05]}, images)  # two runs, one lineage: no seed spread measured
    assert single.seeds == 1 and single.seed_var == 0.0
    assert contrast_error([(1.0, c), (-1.0, single)]).df == 2
    se, df = error_from_components([[0.0, 0.01], [0.0, 0.0]], [511, 1], [False, True])
    assert df.tolist() == [1.0, 1.0] and se.tolist() == pytest.approx([0.1, 0.0])


def test_lineages_follow_init_from_back_to_the_stage1_run():
    trials = pd.DataFrame([
        {"cell": "M1", "seed": 0, "run_id": "m1a"}, {"cell": "M1", "seed": 1, "run_id": "m1b"},
        {"cell": "P2", "seed": 0, "run_id": "p2a", "init_from": "runs:/m1a/model", "init_cell": "M1"},
        {"cell": "P2", "seed": 1, "run_id": "p2b", "init_from": "runs:/m1b/model", "init_cell": "M1"},
        # seed 2 of a cell whose source ran 2 seeds continues seed 2 mod 2 = 0 (the plan's rule)
        {"cell": "P4", "seed": 2, "run_id": "p4c", "init_from": "runs:/m1a/model", "init_cell": "M1"},
        {"cell": "X", "seed": 0, "run_id": "x", "init_from": "runs:/p2b/model"},  # a continuation's continuation
        {"cell": "Y", "seed": 0, "run_id": "y", "init_from": "runs:/elsewhere/model"},  # another sweep's run
        {"cell": "Mc2m", "seed": 1, "run_id": "c", "init_cell": "Mc2"},  # no init_from: the tag and the seed
        {"cell": "Q", "seed": 3, "init_cell": "M8"},  # neither the source nor a run id among the trials
    ])
    assert toolkit.lineage_ids(trials) == ["m1a", "m1b", "m1a", "m1b", "m1a", "m1b", "elsewhere", "Mc2/seed1",
                                           "M8/seed3"]


def test_the_claim_rule_line_names_each_rule_once_and_links_the_one_explanation():
    a, b = Cell(0.5, 0.01, 1), Cell(0.6, 0.01, 1)
    used = [less_than("c", "x", a, b), no_worse("c", "y", a, b, 0.03), less_than("c", "z", b, a),
            equivalent("d", "w", a, None, 0.03)]
    line = toolkit.claim_rule_line(used)
    assert line.count("`difference > t(0.975, df) x SE`") == 1  # two verdicts, one rule
    assert "`difference + t(0.975, df) x SE < 0.03`" in line and "`|difference| + t(0.975, df) x SE < 0.03`" in line
    assert "0.01" not in line  # the margin the verdicts used, not a default
    family, _ = holm_verdicts(used[:3], alpha=0.1)
    assert "`Holm-Bonferroni over 3 comparisons at family level 0.1`" in toolkit.claim_rule_line(family)
    # the link works from every report, reports/<scale>/<name>.md, to claims.md beside claims.py
    [target] = re.findall(r"\]\(([^)]+)\)", line)
    assert (code_root() / "reports" / "smoke" / target).resolve() == (code_root() / toolkit.CLAIM_RULE_DOC).resolve()
    assert (code_root() / toolkit.CLAIM_RULE_DOC).is_file()
    assert Path(claims.__file__).with_suffix(".md") == code_root() / toolkit.CLAIM_RULE_DOC
    with pytest.raises(ValueError, match="no verdicts"):
        toolkit.claim_rule_line([])


def test_claims_md_writes_every_rule_as_the_verdicts_do_and_quotes_t_as_the_code_computes_it():
    doc = (code_root() / toolkit.CLAIM_RULE_DOC).read_text().replace("\\|", "|")
    margin, alpha, a = 0.0625, 0.375, Cell(0.5, 0.01, 1)
    family, _ = holm_verdicts([less_than("c", "x", a, None)] * 7, alpha)
    rules = [less_than("c", "x", a, None).rule, gap_grows("c", "x", None, None).rule,
             no_worse("c", "x", a, None, margin).rule.replace(f"{margin:g}", "m"),
             equivalent("c", "x", a, None, margin).rule.replace(f"{margin:g}", "m"),
             family[0].rule.replace(f"{alpha:g}", "a").replace("7", "K")]
    for rule in rules:
        assert f"| `{rule}` |" in doc, rule
    [header, values] = [line for line in doc.splitlines() if line.startswith(("| df |", "| t(0.975, df) |"))]
    for df, quoted in zip(header.split("|")[2:-1], values.split("|")[2:-1]):
        df = math.inf if df.strip() == "unlimited" else int(df)
        assert float(quoted) == pytest.approx(t_critical(df), abs=5e-4), df
    for df, quoted in re.findall(r"t\(0\.975, (\d+)\) = ([\d.]+)", doc):
        assert float(quoted) == pytest.approx(t_critical(int(df)), abs=0.05), df
    assert claims.SEED_DF == "smallest" and '`SEED_DF = "smallest"`' in doc
