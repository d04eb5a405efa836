"""The specialisation report from made-up runs (no MLflow): the decomposition adds up, P_s(t) and P_s(const)
are paired by the stage-1 M_1 they both continue (across the two sweeps' trials), a claim that the data do not
resolve gets a bound, and "P_s beats the conditional baselines" needs both baselines."""

from __future__ import annotations

import math
import zlib

import numpy as np
import pandas as pd
import pytest

from experiments.reporting import specialisation, toolkit
from experiments.reporting.claims import contrast_error
from experiments.run.evaluate import width_key

PROV = toolkit.Provenance(sweep_id="specialisation-smoke-abcd1234", commit="c0ffee",
                          command="sweep.py experiment=specialisation", scale="smoke",
                          stage_steps={"stage2": 10}, wall_time_s=90.0, machine="test machine",
                          finished="2026-12-01 20:00 UTC", report_commit="beef")
IMAGES, SEEDS = 64, 3
DIFFICULTY = np.random.default_rng(0).standard_normal(IMAGES) * 0.3  # each image's own difficulty, shared
LINEAGE = (-0.03, 0.0, 0.03)  # the luck of stage-1 M_1 of seed i, inherited by everything that continues it


def run(cell: str, seed: int, width: float, mean: float, parent: str | None = None) -> dict:
    """A finished trial of ``cell`` whose model of ``width`` has loss ``mean`` on average over the images; its
    ``parent`` (a stage-1 run id) is logged as ``init_from`` as a sweep logs it."""
    noise = np.random.default_rng([zlib.crc32(cell.encode()), seed]).standard_normal(IMAGES) * 0.005  # same every run
    images = mean + DIFFICULTY + noise
    images = images - images.mean() + mean
    key = width_key(width)
    return {"cell": cell, "stage": "stage2" if parent else "stage1", "seed": seed, "status": "FINISHED",
            "run_id": f"{cell}-{seed}", "init_from": f"runs:/{parent}/model" if parent else None,
            f"val/all/{key}/nats_per_token": mean, f"val/all/{key}/nats_per_token_se": 0.3 / math.sqrt(IMAGES),
            "per_image": {f"all/{key}": list(images)}}


# s -> (P_s(t), P_s(const), M_s, M~_s, M^every_s or None: no runs)
MEANS = {0.5: (1.66, 1.70, 1.82, 1.80, 1.79), 0.25: (1.78, 1.78, 2.20, 2.19, 2.18),
         0.125: (2.30, 2.33, 2.37, 2.45, None)}


def synthetic() -> tuple[pd.DataFrame, pd.DataFrame]:
    """(this sweep's trials, Table 1's trials): P_s(t) and P_s(const) of seed i both continue M1 of seed i and
    share its luck; M_s and M~_s continue their own stage-1 runs."""
    table1, ours = [], []
    for seed in range(SEEDS):
        table1.append(run("M1", seed, 1.0, 1.66))
        for row in specialisation.ROWS:
            p, const, m, mc, every = MEANS[row.scale]
            luck = LINEAGE[seed]
            k = round(1 / row.scale)
            table1 += [run(row.projected, seed, row.scale, p + luck, f"M1-{seed}"),
                       run(f"M{k}", seed, row.scale, m + 0.1), run(f"Mc{k}", seed, row.scale, mc + 0.1),
                       run(row.unconditional, seed, row.scale, m + 0.01 * (seed - 1), f"M{k}-{seed}"),
                       run(row.conditional, seed, row.scale, mc - 0.01 * (seed - 1), f"Mc{k}-{seed}")]
            ours.append(run(row.constant, seed, row.scale, const + luck, f"M1-{seed}"))
            if every is not None:
                ours += [run(f"Mc{k}_every", seed, row.scale, every + 0.1),
                         run(row.every, seed, row.scale, every + 0.005 * (seed - 1), f"Mc{k}_every-{seed}")]
    return pd.DataFrame(ours), pd.DataFrame(table1)


@pytest.fixture
def report():
    trials, reference = synthetic()
    cells = specialisation.specialisation_cells(trials, reference)
    return cells, specialisation.specialisation_verdicts(cells)


def test_the_parts_add_up_and_p_s_t_and_const_are_paired_by_their_m1(report):
    cells, _ = report
    for row in specialisation.ROWS:
        p, const, m = (MEANS[row.scale][i] for i in range(3))
        d = specialisation.decompose(cells, row)
        assert d.total.difference == pytest.approx(d.inherited.difference + d.specialised.difference, abs=1e-12)
        assert d.inherited.difference == pytest.approx(const - m, abs=1e-9)
        assert d.specialised.difference == pytest.approx(p - const, abs=1e-9)
        # the M_1 lineage's luck (±0.03) is in both P_s(t) and P_s(const) and cancels in their difference ...
        assert cells[row.projected].seeds == cells[row.constant].seeds == SEEDS
        assert d.specialised.se < 0.005 and d.specialised.df == SEEDS - 1
        # ... but not in P_s(const) - M_s, whose cells descend from different stage-1 runs
        unpaired = contrast_error([(1.0, cells[row.constant]), (-1.0, cells[row.unconditional])])
        assert d.inherited.se == pytest.approx(unpaired.se) and d.inherited.se > 0.015


def test_claims_hold_only_where_the_data_resolve_them_and_both_baselines_are_needed(report):
    _, verdicts = report
    held = {v.comparison: v.held for v in verdicts}
    assert held["P_1/2(const) < M_1/2"] and held["P_1/2(t) < P_1/2(const)"]
    assert held["P_1/4(const) < M_1/4"] and held["P_1/4(t) < P_1/4(const)"] is False  # no specialisation at 1/4
    assert held["P_1/2 < M~_1/2"] and held["P_1/2 < M^every_1/2"]
    assert held["P_1/8 < M^every_1/8"] is None  # no every-position runs at 1/8
    assert [specialisation.both_beaten(verdicts, s) for s in ("1/2", "1/4", "1/8")] == ["holds", "holds",
                                                                                        "not tested"]
    summary = toolkit.summarise(verdicts)
    assert summary[specialisation.SPECIALISES].startswith("does not hold (2 of 3")
    assert summary[specialisation.BEATS] == "not tested (missing cells)"  # never "holds" with a baseline missing


def test_one_failed_baseline_comparison_fails_the_claim_at_that_s():
    trials, reference = synthetic()
    trials.loc[trials.cell == "Mc2m_every", "val/all/s1_2/nats_per_token"] = 1.60  # M^every_1/2 beats P_1/2
    cells = specialisation.specialisation_cells(trials, reference)
    verdicts = specialisation.specialisation_verdicts(cells)
    assert specialisation.both_beaten(verdicts, "1/2") == "does not hold"


def test_the_report_files_render_with_bounds_instead_of_no_effect(report, tmp_path, check_claims):
    cells, verdicts = report
    files = specialisation.write_report(tmp_path, cells, verdicts, PROV, "table1-smoke-abcd1234")
    md = files.markdown.read_text()
    assert md.startswith("# How much of P_s is specialisation? Scale `smoke`")
    check_claims(md, verdicts)
    d = specialisation.decompose(cells, specialisation.ROWS[0])
    low, high = d.specialised.interval
    assert (f"| 1/2 | {toolkit.fmt_cell(cells['P2'])} | {toolkit.fmt_cell(cells['P2_mean'])} | "
            f"{toolkit.fmt_cell(cells['M2m'])} | {d.total.difference:+.4f} ± {d.total.se:.4f}") in md
    assert f"{d.specialised.difference:+.4f} ± {d.specialised.se:.4f} [{low:+.4f}, {high:+.4f}]" in md
    assert f"- specialisation at s = 1/2: P_1/2(t) below P_1/2(const) by at least {-high:.4f}" in md
    quarter = specialisation.decompose(cells, specialisation.ROWS[1]).specialised
    assert (f"- specialisation at s = 1/4: not resolved; P_1/4(t) below P_1/4(const) by at most "
            f"{-quarter.interval[0]:.4f} nats/token") in md
    assert "no effect" not in md and "ignores t, not that reading t helps" in md
    assert "| 1/8 | " in md and "| not tested |" in md
    assert "sources and reused runs from `table1-smoke-abcd1234`" in md and "## Provenance" in md
    frame = pd.read_csv(files.csv)
    assert list(frame.s) == ["1/2", "1/4", "1/8"] and list(frame["beats both"]) == ["holds", "holds", "not tested"]
    assert frame.loc[0, "specialised"] == pytest.approx(-0.04, abs=1e-5) and math.isnan(frame.loc[2, "M^every_s"])
    assert files.png.stat().st_size > 10_000


def test_without_runs_of_this_sweep_every_claim_is_not_tested(tmp_path):
    _, reference = synthetic()
    cells = specialisation.specialisation_cells(pd.DataFrame(columns=reference.columns), reference)
    verdicts = specialisation.specialisation_verdicts(cells)
    assert all(v.held is None for v in verdicts if v.claim != specialisation.BEATS or "M~" not in v.comparison)
    md = specialisation.write_report(tmp_path, cells, verdicts, PROV, "t1").markdown.read_text()
    assert "- neither part could be computed: no finished P_s(const) runs." in md
    total = specialisation.decompose(cells, specialisation.ROWS[0]).total  # Table 1's P_s(t) - M_s is still there
    assert f"| {toolkit.fmt_cell(cells['M2m'])} | {total.difference:+.4f} ± {total.se:.4f}" in md


def test_a_part_resolved_the_other_way_is_said_so(monkeypatch):
    """P_1/4(t) worse than P_1/4(const): the bound says so instead of calling specialisation unresolved."""
    monkeypatch.setitem(MEANS, 0.25, (1.78, 1.70, 2.20, 2.19, 2.18))
    trials, reference = synthetic()
    cells = specialisation.specialisation_cells(trials, reference)
    low = specialisation.decompose(cells, specialisation.ROWS[1]).specialised.interval[0]
    assert low > 0
    assert (f"- specialisation at s = 1/4: P_1/4(t) above P_1/4(const) (worse) by at least {low:.4f}"
            in "\n".join(specialisation.bound_lines(cells)))


def test_task_use_of_the_studys_own_conditional_models_is_measured_beside_the_report():
    """M^every_s scored under permuted and mean t: the section gives each rise over its own t; P_s(const), trained
    and scored with the mean t, shows none; no claim is judged for either."""
    rows = []
    for seed in range(SEEDS):
        for row in specialisation.ROWS:
            key = width_key(row.scale)
            every = run(row.every, seed, row.scale, 2.0, f"Mc{round(1 / row.scale)}_every-{seed}")
            const = run(row.constant, seed, row.scale, 1.8, f"M1-{seed}")
            for condition, rise in (("permuted", 0.1), ("mean", 0.04)):
                own = np.asarray(every["per_image"][f"all/{key}"])
                every["per_image"][f"all-t_{condition}/{key}"] = list(own + rise)
                every[f"val/all-t_{condition}/{key}/nats_per_token"] = float(own.mean() + rise)
                every[f"val/all-t_{condition}/{key}/nats_per_token_se"] = 0.3 / math.sqrt(IMAGES)
                const["per_image"][f"all-t_{condition}/{key}"] = list(const["per_image"][f"all/{key}"])
                const[f"val/all-t_{condition}/{key}/nats_per_token"] = 1.8
                const[f"val/all-t_{condition}/{key}/nats_per_token_se"] = 0.3 / math.sqrt(IMAGES)
            rows += [every, const]
    uses = specialisation.task_uses(pd.DataFrame(rows))
    assert [u.label for u in uses] == ["M^every_1/2", "M^every_1/4", "M^every_1/8", "P(const)_1/2",
                                       "P(const)_1/4", "P(const)_1/8"]
    from experiments.reporting import task_use

    frame = task_use.frame(uses).set_index("model")
    assert frame.loc["M^every_1/4", "permuted_minus_own"] == pytest.approx(0.1)
    assert frame.loc["M^every_1/4", "mean_minus_own"] == pytest.approx(0.04)
    assert frame.loc["P(const)_1/8", "permuted_minus_own"] == 0.0
    lines = "\n".join(specialisation.task_use_lines(uses))
    assert "| M^every_1/2 | 2.000" in lines and "+0.1000 ±" in lines and "holds" not in lines
