"""What the report tests share: a made-up sweep's provenance, finished trials that log the metric schema's keys
with per-image losses, and the tables of a written report read back as data."""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import pandas as pd
import pytest

from experiments.reporting import toolkit
from experiments.reporting.claims import Verdict

IMAGES = 64  # validation images of every made-up run


def per_image(mean: float, seed: int) -> list[float]:
    """IMAGES per-image losses around ``mean`` (SD 0.01), the same for the same seed."""
    return list(mean + 0.01 * np.random.default_rng(seed).standard_normal(IMAGES))


def trial(cell: str, stage: str, seed: int = 0, **models: float) -> dict:
    """A finished trial logging the metric schema's keys: ``models`` maps width keys ('s1_4') to losses, each
    with its standard error and per-image losses."""
    row = {"cell": cell, "stage": stage, "seed": seed, "status": "FINISHED", "trial": f"{cell}-seed{seed}",
           "run_id": f"{cell}{seed}", "steps": 20, "per_image": {}}
    for model, mean in models.items():
        row[f"val/all/{model}/nats_per_token"], row[f"val/all/{model}/nats_per_token_se"] = mean, 0.002
        row["per_image"][f"all/{model}"] = per_image(mean, sum(map(ord, cell + model)) + seed)
    return row


def md_tables(text: str) -> list[list[list[str]]]:
    """Every markdown table in ``text``, as rows of cells (its header first, the |---| line left out)."""
    tables, current = [], None
    for line in text.splitlines():
        if not line.startswith("|"):
            current = None
            continue
        if set(line) <= set("|-"):
            continue
        if current is None:
            current = []
            tables.append(current)
        current.append([cell.strip() for cell in line.strip().strip("|").split(" | ")])
    return tables


def md_table(text: str, *header: str) -> list[list[str]]:
    """The rows (header left out) of the one table in ``text`` whose header starts with ``header``."""
    found = [table[1:] for table in md_tables(text) if tuple(table[0][:len(header)]) == header]
    assert len(found) == 1, f"{len(found)} tables start with {header}"
    return found[0]


@pytest.fixture
def prov() -> toolkit.Provenance:
    """The provenance of a made-up smoke sweep of Table 1."""
    return toolkit.Provenance(sweep_id="table1-smoke-abcd1234", commit="c0ffee",
                              command="sweep.py experiment=table1", scale="smoke",
                              stage_steps={"stage1": 20, "stage2": 10}, wall_time_s=90.0, machine="test machine",
                              finished="2026-12-01 20:00 UTC", report_commit="beef")


@pytest.fixture
def make_trial():
    """``trial``: a finished trial row with per-image losses."""
    return trial


@pytest.fixture
def tables():
    """``md_table``: a report's table read back as data."""
    return md_table


@pytest.fixture
def image_losses():
    """``per_image``: IMAGES per-image losses around a mean."""
    return per_image


def _number(text: str) -> float:
    return math.nan if text in ("-", "+nan", "nan") else float(text)


def claims_written(md: str, verdicts: Sequence[Verdict], rules_of: Sequence[Verdict] | None = None) -> None:
    """``md`` names the rules of ``rules_of`` (default ``verdicts``) in its claim-rule line, and its verdict
    tables (header 'claim', 'comparison', ...) hold exactly ``verdicts``: each comparison's difference, t·SE
    and verdict (a Holm-corrected table's last column)."""
    assert toolkit.claim_rule_line(verdicts if rules_of is None else rules_of) in md
    written = {}
    for table in md_tables(md):
        header = table[0]
        if header[:2] != ["claim", "comparison"]:
            continue
        t_se = next(i for i, name in enumerate(header) if name.startswith("t·SE"))
        verdict = next(i for i, name in enumerate(header) if name == "verdict" or name.startswith("Holm-Bonferroni"))
        for row in table[1:]:
            written[row[1]] = (_number(row[2]), _number(row[t_se]), row[verdict])
    expected = {v.comparison: (v.difference, v.t_se, v.verdict) for v in verdicts}
    assert written.keys() == expected.keys()
    for comparison, (difference, t_se, verdict) in expected.items():
        assert written[comparison] == (pytest.approx(difference, abs=5e-5, nan_ok=True),
                                       pytest.approx(t_se, abs=5e-5, nan_ok=True), verdict), comparison


@pytest.fixture
def check_claims():
    """``claims_written``: a report's claims checked through its verdict tables."""
    return claims_written


@pytest.fixture
def table1_trials() -> pd.DataFrame:
    """A made-up Table 1 sweep: two seeds of every stage-1 cell, one of every stage-2 cell (stage1 baselines)."""
    KEY = {1: "s1", 2: "s1_2", 4: "s1_4", 8: "s1_8"}
    rows = [trial(f"{c}{k}", "stage1", seed, **{KEY[k]: base + 0.1 * i})
            for c, base in (("M", 0.6), ("Mc", 0.55)) for i, k in enumerate((1, 2, 4, 8)) for seed in (0, 1)]
    rows += [trial(f"P{k}", "stage2", **{KEY[k]: 0.5 + 0.05 * i, "s1": 0.52}) for i, k in enumerate((2, 4, 8))]
    rows.append(trial("Pall", "stage2", s1_2=0.5, s1_4=0.55, s1_8=0.6, s1=0.53))
    rows.append(trial("control", "stage2", s1=0.52))
    for row in rows[-5:]:  # stage 2 continues stage 1's M_1 of its seed
        row["init_cell"] = "M1"
    return pd.DataFrame(rows)
