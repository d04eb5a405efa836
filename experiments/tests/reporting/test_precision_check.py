"""The bf16-vs-fp32 equivalence rule (claims.equivalent) and its report, from synthetic evidence whose answer is
known: a shift far inside the margin with seeds that agree passes, a shift beyond it or seeds that disagree
fail, and the cpu-scale experiment declares the pairs the report reads."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from experiments.config import compose
from experiments.reporting import claims, precision_check, toolkit
from experiments.run.evaluate import val_key, width_key
from experiments.tracking.evidence import RUN_COLUMNS, Evidence

PAIRS = {"P4": {"label": "P_1/4", "fp32": "P4", "bf16": "P4_bf16", "width": 0.25}}
IMAGES = 64


def synthetic(shift: float, seed_noise: float) -> Evidence:
    """Three seeds of P4 in fp32 and bf16; bf16's loss is fp32's plus ``shift`` plus per-seed noise."""
    rng = np.random.default_rng(0)
    difficulty = rng.normal(2.0, 0.3, IMAGES)  # shared by every run: cancels in the paired SE
    runs, metrics, images = [], [], []
    for seed in range(3):
        base = difficulty + rng.normal(0, 0.01)  # seed i's luck, shared by both precisions
        for cell, precision, offset in (("P4", "fp32", 0.0), ("P4_bf16", "bf16", shift + rng.normal(0, seed_noise))):
            run_id = f"{cell}-{seed}"
            losses = base + offset + rng.normal(0, 0.002, IMAGES)
            runs.append({**dict.fromkeys(RUN_COLUMNS, ""), "run_id": run_id, "cell": cell, "seed": seed,
                         "precision": precision, "status": "FINISHED", "steps": 750, "wall_time_s": 600.0,
                         "cpu_model": "AMD EPYC", "cpu_flags": "avx2 avx512_bf16", "commit": "abc"})
            metrics += [{"run_id": run_id, "key": val_key("all", 0.25), "value": losses.mean()},
                        {"run_id": run_id, "key": val_key("all", 0.25, "nats_se"),
                         "value": losses.std(ddof=1) / np.sqrt(IMAGES)}]
            images += [{"run_id": run_id, "key": f"all/{width_key(0.25)}", "subset": "all", "condition": "own",
                        "model": width_key(0.25), "image": i, "value": v} for i, v in enumerate(losses)]
    sweep = {"tags": {"sweep_id": "precision_check-cpu-x", "scale": "cpu"}, "status": "FINISHED",
             "metrics": {"wall_time_s": 3600.0}}
    return Evidence([sweep], pd.DataFrame(runs), pd.DataFrame(metrics), pd.DataFrame(), pd.DataFrame(images),
                    pd.DataFrame())


@pytest.mark.parametrize(("shift", "seed_noise", "equivalent"),
                         [(0.001, 0.0005, True), (0.02, 0.0005, False), (0.0, 0.01, False)])
def test_equivalence_needs_the_difference_and_its_bound_inside_the_margin(shift, seed_noise, equivalent):
    evidence = synthetic(shift, seed_noise)
    [verdict] = precision_check.verdicts(evidence, PAIRS, 0.01)
    assert verdict.held is equivalent
    assert verdict.df == pytest.approx(2)  # three seeds, paired: the seed term's 2 df (claims.SEED_DF)
    assert verdict.difference == pytest.approx(shift, abs=3 * seed_noise + 1e-3)


def test_the_report_says_whether_bf16_is_adopted(tmp_path):
    evidence = synthetic(0.001, 0.0005)
    results = precision_check.verdicts(evidence, PAIRS, 0.01)
    table = precision_check.frame(results, PAIRS, evidence, 0.01)
    text = precision_check.markdown(table, precision_check.step_times(evidence), evidence, tmp_path / "x.parquet",
                                    results)
    assert "bf16 is adopted" in text and "AMD EPYC (avx512_bf16)" in text
    assert table.equivalent.tolist() == [True]
    assert toolkit.claim_rule_line(results) in text.splitlines()
    assert "`|difference| + t(0.975, df) x SE < 0.01`" in toolkit.claim_rule_line(results)  # the declared margin
    failing = synthetic(0.02, 0.0005)
    results = precision_check.verdicts(failing, PAIRS, 0.01)
    table = precision_check.frame(results, PAIRS, failing, 0.01)
    assert "keeps fp32" in precision_check.markdown(table, precision_check.step_times(failing), failing,
                                                    tmp_path / "x.parquet", results)


def test_equivalent_is_no_worse_in_both_directions():
    a = claims.combine_runs([1.0, 1.01, 0.99], [0.001] * 3, lineages=["s0", "s1", "s2"])
    b = claims.combine_runs([1.0, 1.01, 0.99], [0.001] * 3, lineages=["s0", "s1", "s2"])
    shifted = claims.combine_runs([1.02, 1.03, 1.01], [0.001] * 3, lineages=["s0", "s1", "s2"])
    assert claims.equivalent("c", "x", a, b, 0.01).held
    assert not claims.equivalent("c", "x", shifted, a, 0.01).held  # +0.02 beyond the margin
    assert not claims.equivalent("c", "x", a, shifted, 0.01).held  # -0.02 too: both directions count
    assert claims.equivalent("c", "x", None, a, 0.01).held is None


def test_the_experiment_declares_both_precisions_of_every_compared_cell():
    cfg = compose(["experiment=precision_check", "scale=cpu"])
    cells = {**cfg.experiment.stages.stage1.cells, **cfg.experiment.stages.stage2.cells}
    for pair in cfg.experiment.pairs.values():
        assert cells[pair.fp32].overrides["train.precision"] == "fp32"
        assert cells[pair.bf16].overrides["train.precision"] == "bf16"
        assert cells[pair.fp32].seeds == cells[pair.bf16].seeds == 3
    assert precision_check.declared("cpu")[1] == 0.01
