"""Figures 3 and 4 from tiny saved models: the zero-shot evaluator's frame, the Figure 4 verdict on synthetic
losses that break (and keep) the claim, and a smoke render of Figure 3 with samples."""

from __future__ import annotations

import dataclasses

import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image
from projectable import GPT, ProjectableGPT, ProjectorConfig

from experiments.config import compose, parse_run
from experiments.reporting.figure3 import compose_figure, sample_rows
from experiments.reporting.figure4 import (
    ZeroShotModel,
    evaluate_zero_shot,
    zero_shot_summary,
    zero_shot_verdicts,
)
from experiments.run.datasets import build_data
from experiments.run.saved import load_model, nll_fn, saved_folder


@pytest.fixture(scope="module")
def tiny(store, tmp_path_factory):
    """Smoke data, and an untrained M~_1/2 and projected M_1 (P_1/2) saved and loaded as runs are."""
    torch.manual_seed(0)
    folder = tmp_path_factory.mktemp("saved")
    conditional = parse_run(compose(["scale=smoke", "kind=conditional", "width=0.5", *store.overrides()]))
    projected = parse_run(compose(["scale=smoke", "kind=projected", *store.overrides()]))
    data = build_data(projected.data, store.root / "cache")
    for name in ("c", "p"):
        (folder / name).mkdir()
    GPT(dataclasses.replace(conditional.model.scaled(0.5), task_dim=data.task_dim)).save(folder / "c" / "model.safetensors")
    ProjectableGPT(GPT(projected.model), ProjectorConfig(task_dim=18, scales=(0.5,))).save(
        folder / "p" / "projectable.safetensors")
    return data, load_model(saved_folder(folder / "c", conditional)), load_model(saved_folder(folder / "p", projected))


def test_zero_shot_frame_has_a_row_per_model_t1_and_image(tiny):
    data, conditional, projected = tiny
    models = [ZeroShotModel("P", 0.5, 0, "p-run", nll_fn(projected, 0.5)),
              ZeroShotModel("M~", 0.5, 0, "c-run", nll_fn(conditional))]
    frame = evaluate_zero_shot(models, data, t1_values=(0.0, 1.5), batch_size=4, images=6)
    assert frame.shape == (2 * 2 * 6, 8)
    assert set(frame.columns) == {"model", "family", "s", "seed", "run_id", "t1", "image", "nats"}
    assert set(frame.model) == {"P_1/2", "M~_1/2"} and np.isfinite(frame.nats).all()
    p = frame[frame.model == "P_1/2"].pivot(index="image", columns="t1", values="nats")
    assert not np.allclose(p[0.0], p[1.5])  # t1 reaches the projector
    summary = zero_shot_summary(frame)
    assert len(summary) == 4 and (summary.se > 0).all()


def synthetic(p_beyond: float, m_beyond: float, images: int = 200) -> pd.DataFrame:
    """Per-image losses of P_1/2 and M~_1/2 (2 seeds) equal inside the training range, given means past it."""
    rng = np.random.default_rng(0)
    rows = []
    for model, family, beyond in (("P_1/2", "P", p_beyond), ("M~_1/2", "M~", m_beyond)):
        for seed in (0, 1):
            for t1 in (0.0, 0.5, 1.0, 1.5, 2.0):
                mean = 1.0 if t1 <= 1.0 else beyond
                rows.append(pd.DataFrame({"model": model, "family": family, "s": 0.5, "seed": seed,
                                          "run_id": f"{model}{seed}", "t1": t1, "image": np.arange(images),
                                          "nats": mean + 0.05 * rng.standard_normal(images)}))
    return pd.concat(rows, ignore_index=True)


def test_figure4_verdict_is_not_held_when_p_generalises_worse():
    broken = zero_shot_verdicts(synthetic(p_beyond=1.5, m_beyond=1.2))
    assert [v.verdict for v in broken] == ["does not hold", "does not hold"]
    tie = zero_shot_verdicts(synthetic(p_beyond=1.2, m_beyond=1.2))
    assert tie[0].verdict == "does not hold"  # within 2 SE is not "better"
    kept = zero_shot_verdicts(synthetic(p_beyond=1.2, m_beyond=1.5))
    assert [v.verdict for v in kept] == ["holds", "holds"]


def test_figure3_renders_data_rows_and_sample_rows(tiny, tmp_path):
    data, conditional, projected = tiny
    items = data.validation_items()
    tasks = torch.from_numpy(items.task[:3])
    rows = sample_rows({0.5: projected}, {0.5: conditional}, tasks, seed=0)
    assert [r.label for r in rows] == ["P_1/2(t)", "M~_1/2 | t"]
    assert all(r.tokens.shape == (3, data.seq_len) for r in rows)
    out = compose_figure(data, tasks, items.digit_index[:3], rows, tmp_path / "figure3.png", title="smoke")
    with Image.open(out) as image:
        assert image.width > 100 and image.height > 100
