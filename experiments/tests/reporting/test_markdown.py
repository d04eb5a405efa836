"""Every report's files rendered from made-up runs (no MLflow): the shared toolkit's sections, the paper's
numbers beside ours, and Table 3's logic on synthetic rows."""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import pandas as pd
import pytest

from experiments.reporting import figure3, figure4, generators, table1, table2, table3, table4, toolkit
from experiments.reporting.claims import Cell, contrast_se
from experiments.run.evaluate import width_key
from experiments.tests.reporting.conftest import trial

EVALUATION = {"commit": "beef", "machine": "test machine", "wall_time_s": 3.0, "images": 64, "seed": 0}
KEY = {1: "s1", 2: "s1_2", 4: "s1_4", 8: "s1_8"}


def test_table1_files_from_synthetic_runs(table1_trials, tmp_path, prov, tables, check_claims):
    table = table1.table1_cells(table1_trials)
    assert table.cells[("M", 0.5)].seeds == 2
    # the three P_s runs' sources continue the same M_1 (seed 0): one lineage, three runs
    source = table.cells[("P", 1.0)]
    assert (source.seeds, source.run_count) == (1, 3) and dict(source.lineages) == {"M10": pytest.approx(0.52)}
    margin = 0.02
    verdicts = table1.verdicts_for(table, margin)
    files = table1.write_report(tmp_path, table, verdicts, prov, margin, table1_trials)
    md = files.markdown.read_text()
    assert md.startswith("# Table 1 at scale `smoke`")
    by_s = {row[0]: row[1:] for row in tables(md, "s", "M_s", "paper")}
    assert by_s["1/8"][:2] == ["0.900 ± 0.002 (n=2)", "0.82"]  # ours beside the paper's
    assert by_s["1"][4:6] == ["0.520 ± 0.002 (n=1, 3 runs)", "(0.44)"]  # lineages counted, runs shown
    check_claims(md, verdicts)  # every verdict in the table, the rules named once with the margin
    assert f"`difference + t(0.975, df) x SE < {margin:g}`" in toolkit.claim_rule_line(verdicts)
    assert "- **P_s < M~_s for s <= 1/2**: holds" in md
    assert "## Runs per cell\n\nM1: 2, M2: 2" in md
    assert "- sweep: `table1-smoke-abcd1234`" in md and "report written at `beef`" in md
    assert "- scale: `smoke`; steps: stage1 20, stage2 10" in md
    paper = pd.read_csv(files.csv).set_index(["model", "s"]).paper_nats
    assert len(paper) == 17 and paper[("P_s", "1/4")] == 0.47 and files.png.stat().st_size > 10_000


def test_table2_and_table4_files_from_synthetic_runs(tmp_path, prov, make_trial, tables, check_claims):
    trial = make_trial
    rows = [trial(f"Mc{k}", "stage1", **{KEY[k]: 2.0 + 0.1 * i}) for i, k in enumerate((1, 2, 4, 8))]
    rows += [trial("M1", "stage1", s1=2.1), trial("control", "stage2", s1=2.0)]
    rows += [trial(f"P{k}", "stage2", **{KEY[k]: 1.9 + 0.05 * i, "s1": 2.0}) for i, k in enumerate((2, 4, 8))]
    trials = pd.DataFrame(rows)
    summary = {"stand_in": True, "image_side": 32, "train_images": 100, "val_images": 64, "vqvae_params": 1000,
               "vqvae_codes": 64, "vqvae_val_psnr": 15.0, "vqvae_val_perplexity": 20.0, "vqvae_val_dead_codes": 3,
               "encoder": "simclr", "embedding_dim": 128}
    table = table2.table2_cells(trials)
    verdicts = table2.table2_verdicts(table, 0.01)
    files = table2.write_report(tmp_path, table, verdicts, prov, 0.01, summary, trials)
    md = files.markdown.read_text()
    assert "ImageNet STAND-IN" in md and "**These numbers are NOT ImageNet.**" in md
    assert ["1/2", "2.100 ± 0.002 (n=1)", "2.211", "1.900 ± 0.002 (n=1)", "2.210"] in tables(md, "s", "M~_s")
    check_claims(md, verdicts)
    assert "`simclr` embeddings" in md and "## Running on ImageNet" in md and "## Provenance" in md
    assert files.png is not None and files.csv is not None

    rows4 = [{"cell": f"{split}_{regime}", "stage": "stage2", "seed": 0, "status": "FINISHED",
              f"val/{split}_C1/s1_2/nats_per_token": c1, f"val/{split}_C1/s1_2/nats_per_token_se": 0.01,
              f"val/{split}_C2/s1_2/nats_per_token": 2.0, f"val/{split}_C2/s1_2/nats_per_token_se": 0.01}
             for split in ("half", "mod2") for regime, c1 in (("all", 2.3), ("eighth", 2.4), ("c1_eighth", 2.35))]
    trials4 = pd.DataFrame(rows4)
    table = table4.table4_cells(trials4)
    verdicts = table4.table4_verdicts(table)
    files = table4.write_report(tmp_path, table, verdicts, prov, summary, trials4)
    md = files.markdown.read_text()
    assert ['"1/2-1/2"', "1/8 / all", "2.350 ± 0.010 (n=1)", "2.392"] in [row[:4] for row in tables(md, "split")]
    check_claims(md, verdicts)
    assert "## What the stand-in can and cannot show" in md and files.png is None


@pytest.fixture
def table3_runs(image_losses) -> tuple[pd.DataFrame, pd.DataFrame]:
    """One finished run per paper cell: a larger source projects better by 0.05 at equal rank."""
    per_image = image_losses
    rows, train = [], []
    for target, source, rank in table3.PAPER_TABLE3:
        scale = target / source
        loss = 0.5 + 0.3 * (1 - source) + (0.2 if target == 0.125 else 0.0) - 0.001 * rank
        name = width_key(target)
        run_id = f"{target}-{source}-{rank}"
        rows.append({"cell": run_id, "trial": run_id, "seed": 0, "status": "FINISHED", "run_id": run_id,
                     "target": target, "source": source, "scale": scale, "rank": rank, "reused_from": "",
                     f"val/all/{name}/nats_per_token": loss + 0.01, f"val/all/{name}/nats_per_token_se": 0.002,
                     f"num_params/projector_{scale}": 1000 * rank,
                     "per_image": {f"all/{name}": per_image(loss + 0.01, rank)}})
        train.append({"run_id": run_id, "train_nats": loss, "train_se": 0.002, "train_per_image": per_image(loss, rank)})
    return pd.DataFrame(rows), pd.DataFrame(train)


def test_table3_cells_verdicts_and_files_from_synthetic_rows(tmp_path, prov, table3_runs, tables, check_claims):
    trials, train = table3_runs
    table = table3.table3_cells(trials, train)
    assert len(table.frame) == 9 and set(table.frame.seeds) == {1}
    assert table.train[(0.125, 0.25, 32)].mean == pytest.approx(0.5 + 0.225 + 0.2 - 0.032)
    verdicts = table3.source_size_verdicts(table.train, "training")
    assert len(verdicts) == len(table3.equal_rank_pairs()) == 4 and all(v.held for v in verdicts)
    matched = table3.matched_size_frame(table)
    assert set(matched.loss) == {"train", "validation"} and len(matched) == 4
    row = matched[(matched.loss == "train") & matched.comparison.str.contains("M_1/4")].iloc[0]
    assert row.difference == pytest.approx(0.225 - 0.024) and row.paper == pytest.approx(0.10)
    # single-run cells scored on the same images: a paired image term alone, df = images - 1
    assert row.df == pytest.approx(len(table.train[(0.125, 0.25, 32)].per_image) - 1)
    assert row.t_se > 1.96 * contrast_se([(1.0, table.train[(0.125, 0.25, 32)]), (-1.0, table.train[(0.125, 1.0, 8)])])

    class SweepRun:
        class data:
            tags = {"source_sweep": "table1-smoke-abcd1234", "reused": '{"P4_M1_r8": "P4"}'}

    files = table3.write_report(tmp_path, table, verdicts, matched, prov, SweepRun, EVALUATION)
    md = files.markdown.read_text()
    assert ["P_1/8", "M_1/4", "32", "32,000"] in [row[:4] for row in tables(md, "target")]
    assert "P4_M1_r8 is Table 1's cell P4" in md
    check_claims(md, verdicts)
    assert "sources and reused runs from `table1-smoke-abcd1234`" in md
    assert "evaluation of the saved models: commit `beef`" in md
    assert pd.read_csv(files.csv).paper_train_nats.notna().all()


def test_figure4_files_from_synthetic_losses(tmp_path, prov, image_losses, tables, check_claims):
    frames = []
    for model, family, s, slope in (("P_1/2", "P", 0.5, 0.1), ("M~_1/2", "M~", 0.5, 0.3)):
        for t1 in figure4.T1_GRID:
            frames.append(pd.DataFrame({"model": model, "family": family, "s": s, "seed": 0, "run_id": model,
                                        "t1": t1, "image": np.arange(64),
                                        "nats": np.array(image_losses(0.5 + slope * max(0.0, t1 - 1), int(t1 * 10)))}))
    frame = pd.concat(frames, ignore_index=True)
    verdicts = figure4.zero_shot_verdicts(frame, s=0.5)
    assert verdicts[0].held and verdicts[1].held
    summary, ranges = figure4.zero_shot_summary(frame), figure4.range_frame(frame)
    files = figure4.write_report(tmp_path, frame, summary, verdicts, ranges, prov, EVALUATION)
    md = files.markdown.read_text()
    assert [row[0] for row in tables(md, "t1")][-1] == "2 (past training)"
    assert "- **P_1/2 generalises past the training range better than M~_1/2**: holds at this scale" in md
    check_claims(md, verdicts)
    assert files.png.stat().st_size > 10_000 and len(pd.read_csv(files.csv)) == 2 * len(figure4.T1_GRID)


def test_figure3_markdown_and_toolkit_pieces(tmp_path, prov):
    rows = [figure3.SampleRow("P_1/2(t)", None), figure3.SampleRow("M~_1/2 | t", None)]
    md = figure3.write_markdown(tmp_path, prov, rows, EVALUATION).read_text()
    assert "![figure 3](figure3.png)" in md and "P_1/2(t), M~_1/2 | t" in md and "## Provenance" in md
    assert toolkit.scale_label(0.125) == "1/8" and toolkit.scale_label(1.0) == "1"
    assert toolkit.fmt_cell(None) == "-" and toolkit.fmt_cell(Cell(0.5, 0.01, 2)) == "0.500 ± 0.010 (n=2)"
    assert toolkit.fmt_mean_se(math.nan, 0.1) == "-"
    assert toolkit.md_table(["a", "b"], [[1, 2]]) == ["| a | b |", "|---|---|", "| 1 | 2 |"]


def test_notebook_params_share_one_prefix(monkeypatch, tmp_path):
    env = {"PROJECTABLE_REPORT_SCALE": "smoke", "PROJECTABLE_REPORT_TRACKING_URI": "sqlite:////x/mlflow.db",
           "PROJECTABLE_REPORT_REPORTS": str(tmp_path), "PROJECTABLE_REPORT_CACHE": str(tmp_path / "c")}
    params = toolkit.notebook_params(env)
    assert params.scale == "smoke" and params.out_dir == tmp_path / "smoke" and params.experiment == "projectable"
    assert params.tracking_uri == "sqlite:////x/mlflow.db" and params.cache == tmp_path / "c"
    assert toolkit.make_command("figure4", "smoke") == "nox -s reproduce_table1 -- scale=smoke"
    empty = params._replace(tracking_uri=f"sqlite:///{tmp_path}/empty.db")
    with pytest.raises(toolkit.MissingRuns, match="run `nox -s reproduce_table3 -- scale=smoke` first"):
        toolkit.newest_sweep(empty, "table3")


def test_split_study_rule_picks_the_lowest_mean_and_breaks_ties_to_the_largest_f(tmp_path, prov):
    from experiments.reporting import split_study

    def frame(means: dict[float, float]) -> pd.DataFrame:
        return pd.DataFrame([{"f": f, "s": s, "P_s": f"P_{toolkit.scale_label(s)}", "run_id": f"{f}-{s}",
                              "selection_nats": m + 0.1 * i, "selection_se": 0.002, "validation_nats": m}
                             for f, m in means.items() for i, s in enumerate(split_study.WIDTHS)])

    clear = split_study.choose_fraction(frame({0.0: 0.50, 0.25: 0.55, 0.5: 0.56, 0.6: 0.58}))
    assert clear.fraction == 0.0 and clear.tied == [0.0]
    tie = split_study.choose_fraction(frame({0.0: 0.50, 0.25: 0.505, 0.5: 0.509, 0.6: 0.52}))
    assert tie.fraction == 0.5 and tie.tied == [0.0, 0.25, 0.5]  # within 0.01 of the best: the largest f
    incomplete = frame({0.0: 0.40, 0.6: 0.50})
    incomplete = incomplete[~((incomplete.f == 0.0) & (incomplete.s == 0.125))]  # f = 0 lacks P_1/8
    assert split_study.choose_fraction(incomplete).fraction == 0.6
    files = split_study.write_report(tmp_path, frame({0.0: 0.5, 0.6: 0.52}), tie, prov, 1000, 0.01)
    md = files.markdown.read_text()
    assert "| 0.6 | 600 + 400 |" in md and "a tie goes to the paper's protocol, the largest f" in md


def make_generator_trials(new: dict[str, float] | None = None) -> pd.DataFrame:
    """Three seeds per cell (with two, every seeded contrast has df 1 and no p value can pass Holm's 0.05 / 18):
    the projection best, blocks close behind, low_rank and linear between it and M~_s, and the cells of ``new``
    (prefix -> loss at s = 1/2); generator cells carry the match/* tags their plan gave them (as
    ``generators.load_runs`` reads them)."""
    rows = []
    reused = ("P", "Mm", "Mcm")  # Table 1's cells
    for i, k in enumerate((2, 4, 8)):
        s = 1 / k
        losses = {"P": 0.50, "B": 0.5005, "LR": 0.56, "Lin": 0.58, "Mm": 0.70, "Mcm": 0.65, **(new or {})}
        for prefix, loss in losses.items():
            cell = f"{prefix[:-1]}{k}m" if prefix.endswith("m") else f"{prefix}{k}"
            for seed in (0, 1, 2):
                row = trial(cell, "stage2", seed, **{KEY[k]: loss + 0.1 * i + 0.001 * seed})
                row["reused_from"] = "table1-smoke-abcd1234/" + cell if prefix in reused else ""
                row[f"num_params/projector_{s}"] = 1000 + k
                if prefix == "LR":  # logged by the new cells only (reused Table 1 runs may predate the metric)
                    row[f"num_params/generated_{s}"] = 300 // k
                if prefix not in reused:
                    row.update(match_count="task", match_knob="rank" if prefix == "B" else "generator_rank",
                               match_size=str(10 * k), match_own_total=str(5000 + k), match_own_task=str(1010 + k),
                               match_with_source=str(9000 + k if prefix == "B" else 5000 + k), match_source="4000",
                               match_projection_rank="8", match_projection_total=str(1000 + k),
                               match_projection_task="1000")
                rows.append(row)
    return pd.DataFrame(rows)


@pytest.fixture
def generator_trials() -> pd.DataFrame:
    return make_generator_trials()


def test_generators_files_from_synthetic_runs(tmp_path, prov, generator_trials, tables, check_claims):
    trials = generator_trials
    table = generators.generator_cells(trials, "matched")
    assert table.cells[("low_rank", 0.25)].seeds == 3 and table.cells[("M", 0.125)].mean == pytest.approx(0.901)
    claims = generators.judge(table.cells, alpha=0.05)
    assert len(claims.corrected) == 18
    held = {v.comparison: v.held for v in claims.corrected}
    assert held["P_1/2 < low_rank_1/2"] and held["linear_1/8 < M~_1/8"]
    assert not held["P_1/2 < blocks_1/2"]  # 0.0005 apart: within the bound
    params = generators.params_frame(trials)
    row = params[(params.generator == "low_rank") & (params.s == "1/4")].iloc[0]
    assert (row.knob, row["size"], row.own_task, row.projection_task) == ("generator_rank", 40, 1014, 1000)
    assert row.relative_difference == pytest.approx(0.014) and row.logged_own_total == 1004
    assert set(params[params.s == "1/4"].generated) == {75}  # every generator's, from any run at s
    projection = params[(params.generator == "projection") & (params.s == "1/8")].iloc[0]
    assert (projection.knob, projection["size"], projection.with_source) == ("rank", 8, 1008 + 4000)

    class SweepRun:
        class data:
            tags = {"sweep_id": "generators-smoke-0123abcd", "source_sweep": "table1-smoke-abcd1234",
                    "reused": '{"P2": "P2", "M2m": "M2m"}'}

    runs = generators.GeneratorRuns(SweepRun, trials, "table1-smoke-abcd1234", 20)
    sample = tmp_path / "generators_samples_blocks.png"
    files = generators.write_report(tmp_path, table, claims, params, prov, runs, samples=[sample])
    md = files.markdown.read_text()
    assert md.startswith("# Weight generators at scale `smoke`")
    assert ["1/4", "0.801 ± 0.002 (n=3)", "0.751 ± 0.002 (n=3)", "0.601 ± 0.002 (n=3)",
            "0.602 ± 0.002 (n=3)"] in [row[:5] for row in tables(md, "s", "M_s", "M~_s")]
    assert ["low_rank", "1/4", "generator_rank = 40", "1,014", "1,000", "+1.4%", "5,004", "1,014", "5,004", "1,004",
            "75"] in tables(md, "generator", "s", "size knob")
    assert "`experiment.match=task`" in md
    # after Holm's correction over the 18 comparisons, the rule named with its family
    check_claims(md, claims.corrected, rules_of=[*claims.uncorrected, *claims.corrected])
    assert "`Holm-Bonferroni over 18 comparisons at family level 0.05`" in md
    assert "- **the projection beats low_rank**: holds (Holm-Bonferroni over 18)" in md
    assert "Reused from Table 1 (same config, not retrained): P2, M2m." in md
    assert "![generators_samples_blocks](generators_samples_blocks.png)" in md
    assert "sources and reused runs from `table1-smoke-abcd1234`" in md and "## Provenance" in md
    sizes = pd.read_csv(files.csv).set_index(["model", "s"])["size"]
    assert len(sizes) == 18 and sizes[("linear", "1/2")] == 20 and files.png.stat().st_size > 10_000


@pytest.fixture
def declared_generator():
    """A generator declared only in this test (the projection's maths under a name, cell prefix, label, colour
    and description of its own), registered for the test and removed after it."""
    from projectable.generators import ProjectionGenerator, register, unregister

    class Declared(ProjectionGenerator):
        name, prefix, label, colour = "declared", "D", "declared (test)", "tab:brown"
        what = "the projection's maths under another name"

    register(Declared)
    yield Declared
    unregister(Declared.name)


def test_a_generator_declared_once_is_a_column_of_the_generators_report(declared_generator, tmp_path, monkeypatch,
                                                                      prov):
    """Its declaration alone gives it a column, cells, claims, a table column, a CSV row per s and a line in
    the figure, in its colour and under its label."""
    shown = generators.columns()
    assert list(shown) == ["M", "Mc", "projection", "blocks", "low_rank", "linear", "declared"]
    assert shown["declared"] == ("D", "declared (test)", "tab:brown")
    assert generators.cell_sources()["D4"] == [("declared", 0.25)]
    trials = make_generator_trials({"D": 0.53})
    table = generators.generator_cells(trials, "matched")
    assert table.cells[("declared", 0.25)].mean == pytest.approx(0.631) and table.cells[("declared", 0.5)].seeds == 3
    claims = generators.judge(table.cells)
    assert len(claims.corrected) == 24  # 4 others x 3 widths x 2 claims
    held = {v.comparison: v.held for v in claims.uncorrected}
    assert held["P_1/2 < declared_1/2"] and held["declared_1/8 < M~_1/8"]

    class SweepRun:
        class data:
            tags = {"sweep_id": "generators-smoke-0123abcd", "source_sweep": "table1-smoke-abcd1234", "reused": "{}"}

    runs = generators.GeneratorRuns(SweepRun, trials, "table1-smoke-abcd1234", 20)
    drawn = {}
    save = toolkit.save_figure

    def record(fig, title, path):  # what the figure draws: each line's colour under its label
        handles, labels = fig.axes[0].get_legend_handles_labels()
        drawn.update({label: handle.lines[0].get_color() for handle, label in zip(handles, labels)})
        return save(fig, title, path)

    monkeypatch.setattr(toolkit, "save_figure", record)
    params = generators.params_frame(trials)
    assert params[params.generator == "declared"].s.tolist() == ["1/2", "1/4", "1/8"]
    files = generators.write_report(tmp_path, table, claims, params, prov, runs)
    assert drawn["declared (test)"] == "tab:brown" and drawn["P_s (projection)"] == "tab:orange" and len(drawn) == 7
    md = files.markdown.read_text()
    assert "| s | M_s | M~_s | P_s (projection) | blocks | low_rank | linear | declared (test) |" in md
    (row,) = [line for line in md.splitlines() if line.startswith("| 1/4 | 0.801")]
    assert row.endswith("| 0.681 ± 0.002 (n=3) | 0.631 ± 0.002 (n=3) |")  # linear's column, then its own
    assert "- `declared`: the projection's maths under another name." in md
    assert "read the source (blocks and declared)" in md
    frame = pd.read_csv(files.csv)
    assert frame.loc[frame.model == "declared (test)", "ours_nats"].round(3).tolist() == [0.531, 0.631, 0.731]


def test_ablation_cells_verdicts_and_files_from_synthetic_runs(tmp_path, prov, make_trial, tables):
    """Each change against Table 1's P8 and Mc8m: a change that lowers P_1/8 alone (parts) counts, one that
    moves P_1/8 and M~_1/8 alike (longer) does not, and a change without runs is not tested."""
    from experiments.reporting import ablations

    def runs(cell: str, model: str, mean: float) -> list[dict]:
        return [make_trial(cell, "stage2", seed, **{model: mean + 0.003 * seed}) for seed in (0, 1)]

    reference = pd.DataFrame(runs("P8", "s1_8", 2.30) + runs("Mc8m", "s1_8", 2.36))
    trials = pd.DataFrame(runs("P8_derived", "s1_8", 2.20) + runs("P8_long", "s1_8", 2.25)
                          + runs("Mc8m_long", "s1_8", 2.31) + runs("P8_heads", "s1_8", 2.30)
                          + runs("Mc8m_heads", "s1_8", 2.36))
    cells = ablations.ablation_cells(trials, reference)
    assert cells["P8"].seeds == 2 and cells["Mc8m_long"].seeds == 2 and "P8_r32" not in cells
    verdicts = {v.comparison: v for v in ablations.ablation_verdicts(cells)}
    assert verdicts["parts"].held is True and verdicts["parts"].difference == pytest.approx(0.10, abs=1e-9)
    assert verdicts["longer"].held is False and verdicts["heads"].held is False
    assert verdicts["rank"].held is None  # no P8_r32 runs
    files = ablations.write_report(tmp_path, cells, list(verdicts.values()), prov, "table1-smoke-abcd1234")
    md = files.markdown.read_text()
    assert "gap P_1/8 - M~_1/8 = -0.0600 nats/token" in md and "Each change below, 2 seeds (source lineages)" in md
    changes = {row[0]: row[1:] for row in tables(md, "change")}
    assert changes["parts"][:5] == ["small model's parts derived from the source (small_parts=derived)",
                                    "2.202 ± 0.003 (n=2)", "2.361 ± 0.003 (n=2)", "-0.1600", "-0.1000"]
    assert changes["rank"] == ["projector rank 32 instead of 8", "-", "2.361 ± 0.003 (n=2)", *["-"] * 5, "not tested"]
    assert toolkit.claim_rule_line(verdicts.values()) in md
    frame = pd.read_csv(files.csv)
    assert list(frame.change) == list(ablations.CHANGES) and frame.loc[0, "se"] > 0 and frame.loc[0, "df"] >= 1
    assert files.png.stat().st_size > 10_000 and "sources and reused runs from `table1-smoke-abcd1234`" in md


def test_table1_pairs_the_source_with_the_control_by_lineage(make_trial):
    """Each stage-1 M_1 seed's luck (+-0.1) carries into every run that continues it: the source of P_s (three
    runs a lineage) and the control differ by ~0.001 within each lineage, so "loses nothing" holds when they are
    paired by lineage, and would not if the two cells' lineages were independent."""
    trial, luck = make_trial, {0: 0.1, 1: -0.1}
    rows = [dict(trial("M1", "stage1", seed, s1=0.6 + luck[seed]), run_id=f"m1-{seed}") for seed in (0, 1)]
    for seed in (0, 1):
        start = {"init_from": f"runs:/m1-{seed}/model", "init_cell": "M1"}
        rows += [dict(trial(f"P{k}", "stage2", seed, **{KEY[k]: 0.7, "s1": 0.52 + luck[seed] + 0.001 * i}), **start)
                 for i, k in enumerate((2, 4, 8))]
        rows.append(dict(trial("control", "stage2", seed, s1=0.52 + luck[seed]), **start))
    table = table1.table1_cells(pd.DataFrame(rows))
    source = table.cells[("P", 1.0)]
    assert (source.seeds, source.run_count) == (2, 6) and dict(source.lineages).keys() == {"m1-0", "m1-1"}
    margin = 0.05  # two lineages: df 1, t = 12.7 times the paired image SE (~0.001)
    v = {x.comparison: x for x in table1.verdicts_for(table, margin)}["source of P_s (mean of all its runs) vs control"]
    assert v.df == 1 and v.held is True and v.t_se < 0.03
    unpaired = dataclasses.replace(source, lineages=None), dataclasses.replace(table.control, lineages=None)
    alone = table1.table1_verdicts({("P", 1.0): unpaired[0]}, unpaired[1], margin)
    assert [x.held for x in alone if x.comparison.startswith("source of P_s")] == [False]
