"""Figures 3 and 4 from tiny saved models: the zero-shot evaluator's frame, the Figure 4 verdict on synthetic
losses that break (and keep) the claim, the values each figure draws (Figure 3's tiles are the decoded samples,
Figure 4's lines are its CSV), and the step-matched baselines both read."""

from __future__ import annotations

import dataclasses

import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image
from projectable import GPT, ProjectableGPT, ProjectorConfig

from experiments.config import compose, parse_run
from experiments.reporting.figure3 import (
    UPSCALE,
    _tiles,
    compose_canvas,
    compose_figure,
    sample_rows,
    tile_box,
)
from experiments.reporting.figure4 import (
    ZeroShotModel,
    draw,
    evaluate_zero_shot,
    range_frame,
    write_report,
    zero_shot_summary,
    zero_shot_verdicts,
)
from experiments.reporting.toolkit import Provenance
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


def test_figure3_draws_each_sample_where_its_row_and_task_vector_say(tiny, tmp_path):
    data, conditional, projected = tiny
    items = data.validation_items()
    tasks = torch.from_numpy(items.task[:3])
    rows = sample_rows({0.5: projected}, {0.5: conditional}, tasks, seed=0)
    assert [r.label for r in rows] == ["P_1/2(t)", "M~_1/2 | t"]
    assert all(r.tokens.shape == (3, data.seq_len) for r in rows)
    canvas = compose_canvas(data, tasks, items.digit_index[:3], rows)
    size = data.config.resolution * UPSCALE
    for r, row in enumerate(rows):  # tile (row, task vector) is that sample, decoded
        images = data.decode(row.tokens)
        for c in range(3):
            expected = np.asarray(_tiles(images[c : c + 1], size)[0])
            assert np.array_equal(np.asarray(canvas.crop(tile_box(2 + r, c, size))), expected), (row.label, c)
    other = np.asarray(_tiles(data.decode(rows[1].tokens[:1]), size)[0])
    assert not np.array_equal(np.asarray(canvas.crop(tile_box(2, 0, size))), other)  # rows differ
    out = compose_figure(data, tasks, items.digit_index[:3], rows, tmp_path / "figure3.png", title="smoke")
    with Image.open(out) as image:
        assert image.width >= canvas.width and image.height >= canvas.height


def test_figure4_plots_the_values_of_its_csv(tmp_path):
    frame = synthetic(p_beyond=1.2, m_beyond=1.5)
    summary = zero_shot_summary(frame)
    prov = Provenance("table1-smoke-0", "c0ffee", "sweep.py", "smoke", {"stage1": 2, "stage2": 2}, 1.0, "m",
                      "2026-12-01 00:00 UTC", "beef")
    files = write_report(tmp_path, frame, summary, zero_shot_verdicts(frame), range_frame(frame), prov,
                         {"commit": "beef", "machine": "m", "wall_time_s": 1.0, "images": 200}, baselines="matched")
    csv = pd.read_csv(files.csv)
    lines = {line.get_label(): line for ax in draw(summary).axes for line in ax.get_lines()}
    assert set(lines) == set(csv.model) == {"P_1/2", "M~_1/2"}
    for model, rows in csv.groupby("model"):
        rows = rows.sort_values("t1")
        x, y = lines[model].get_data()
        assert np.allclose(x, rows.t1) and np.allclose(y, rows.nats, atol=1e-5)
    # past the training range M~_1/2 is drawn ~0.3 above P_1/2, inside it the two coincide
    past = csv[csv.t1 > 1].pivot(index="t1", columns="model", values="nats")
    assert np.allclose(past["M~_1/2"] - past["P_1/2"], 0.3, atol=0.02)
    assert "step-matched" in files.markdown.read_text() and files.png.stat().st_size > 10_000


def trial_rows(cells: list[str]) -> pd.DataFrame:
    return pd.DataFrame([{"cell": cell, "seed": seed, "status": "FINISHED", "run_id": f"{cell}{seed}",
                          "trial": f"{cell}-seed{seed}"} for cell in cells for seed in (0, 1)])


@pytest.mark.parametrize("figure", ["figure3", "figure4"])
def test_figures_read_the_step_matched_baselines_when_the_sweep_has_them(figure, monkeypatch):
    """A figure that reads a stage-1 M~_s while the sweep holds its step-matched continuation fails here."""
    import experiments.run.saved
    from experiments.reporting import figure3, figure4, toolkit
    from experiments.reporting.declared import declared

    module = {"figure3": figure3, "figure4": figure4}[figure]
    read: list[list[str]] = []

    def fake_load(trials, cells, tracking_uri, cache_dir, seed=None, device=None):
        read.append(list(cells))
        runs = trials[trials.cell.isin(cells) & ((trials.seed == seed) if seed is not None else True)]
        return toolkit.SavedModels(runs.reset_index(drop=True), [object()] * len(runs), "data", "cpu")

    monkeypatch.setattr(toolkit, "load_saved_models", fake_load)
    monkeypatch.setattr(experiments.run.saved, "nll_fn", lambda model, scale=None: None)
    stage1 = ["P2", "P4", "P8", "Mc2", "Mc4", "Mc8"]
    loaded = module.load_table1_models(trial_rows(stage1 + ["Mc2m", "Mc4m", "Mc8m"]), "sqlite://", "/tmp")
    assert sorted(read[-1]) == ["Mc2m", "Mc4m", "Mc8m", "P2", "P4", "P8"] and loaded.baselines == "matched"
    assert not set(read[-1]) & {stage for stage in declared("table1").matched if stage != "M1"}  # no stage-1 one
    if figure == "figure3":
        assert sorted(loaded.conditional) == [0.125, 0.25, 0.5]
    else:
        assert sorted((m.family, m.s) for m in loaded.models if m.family == "M~") == sorted(
            [("M~", s) for s in (0.125, 0.25, 0.5)] * 2)
    # a sweep made before the continuations existed falls back to stage 1's runs, and says so
    loaded = module.load_table1_models(trial_rows(stage1), "sqlite://", "/tmp")
    assert "Mc2" in read[-1] and loaded.baselines == "stage1"
