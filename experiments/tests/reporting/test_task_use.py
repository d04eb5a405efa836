"""Table 1's section "Uses its task vector" from made-up runs: a model whose loss rises under permuted t by
more than its bound is said to use t, one whose loss does not rise is not, models that read no t get no row."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from experiments.reporting import table1, task_use

IMAGES = 64


def scored(row: dict, model: str, mean: float, rises: dict[str, float], seed: int) -> None:
    """Log a model's final loss under own t and, for each condition in ``rises``, that loss plus its rise."""
    rng = np.random.default_rng(seed)
    own = mean + 0.05 * rng.standard_normal(IMAGES)  # images differ in difficulty: cancels when paired
    for condition, rise in {"": 0.0, **{f"-t_{c}": r for c, r in rises.items()}}.items():
        images = own + rise + 0.002 * rng.standard_normal(IMAGES)
        row[f"val/all{condition}/{model}/nats_per_token"] = float(images.mean())
        row[f"val/all{condition}/{model}/nats_per_token_se"] = float(images.std(ddof=1) / np.sqrt(IMAGES))
        row["per_image"][f"all{condition}/{model}"] = list(images)


@pytest.fixture
def trials(make_trial) -> pd.DataFrame:
    """Three seeds: P_1/4 loses 0.3 nats under permuted t and 0.1 under mean t; M~_1/4 is indifferent to t;
    the co-trained source and M_1/4 read no t."""
    rows = []
    for seed in range(3):
        for cell, stage in (("M1", "stage1"), ("M4", "stage1"), ("Mc4", "stage1"), ("P4", "stage2")):
            row = dict(make_trial(cell, stage, seed), init_cell="M1" if cell == "P4" else None)
            if cell == "P4":
                scored(row, "s1_4", 1.0 + 0.01 * seed, {"permuted": 0.3, "mean": 0.1}, seed)
                scored(row, "s1", 0.9, {}, seed + 10)
            elif cell == "Mc4":
                scored(row, "s1_4", 1.2 + 0.01 * seed, {"permuted": 0.0, "mean": 0.0}, seed + 20)
            else:
                scored(row, "s1" if cell == "M1" else "s1_4", 1.1, {}, seed + 30)
            rows.append(row)
    return pd.DataFrame(rows)


def test_a_model_uses_t_when_its_loss_rises_under_permutation_beyond_the_bound(tmp_path, trials, prov, check_claims):
    uses = table1.task_use_of(trials)
    assert [use.label for use in uses] == ["M~_1/4", "P_1/4"]  # M_1/4 and the source read no t
    verdicts = {v.comparison: v for v in task_use.verdicts(uses)}
    p, mc = verdicts["P_1/4: own t < permuted t"], verdicts["M~_1/4: own t < permuted t"]
    assert p.held and p.difference == pytest.approx(0.3, abs=0.01) and p.df == pytest.approx(2)
    assert mc.held is False and abs(mc.difference) < 0.01
    frame = task_use.frame(uses).set_index("model")
    assert frame.loc["P_1/4", "mean_minus_own"] == pytest.approx(0.1, abs=0.01)
    table = table1.table1_cells(trials)
    claims = table1.verdicts_for(table, 0.01)
    files = table1.write_report(tmp_path, table, claims, prov, 0.01, trials, uses=uses)
    md = files.markdown.read_text()
    assert "## Uses its task vector" in md
    assert "- **P_s uses t**: holds" in md and "- **M~_s uses t**: does not hold" in md
    check_claims(md, [*claims, *verdicts.values()])  # Table 1's claims and the task-use claims, one rule line
    written = pd.read_csv(tmp_path / "table1_task_use.csv")
    assert written.model.tolist() == ["M~_1/4", "P_1/4"]

