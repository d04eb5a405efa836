"""Table 1 from tracked runs: find the newest complete sweep of a scale in MLflow, gather its cells, check
the claims (``experiments.claims``) and write ``reports/<scale>/table1.{md,csv,png}``.
The notebook ``analysis/table1.py`` calls these functions step by step."""

from __future__ import annotations

import math
from collections.abc import Mapping
from datetime import datetime, timezone
from pathlib import Path
from typing import NamedTuple

import pandas as pd

from experiments.claims import (
    COLUMN_LABELS,
    PAPER_TABLE1,
    SCALE_LABELS,
    SCALES,
    Cell,
    Verdict,
    combine_runs,
    summarise,
    table1_verdicts,
)
from experiments.tracking import MlflowClient, git_commit

# Table 1 cell -> (column, s, model metric name) of the runs it is made of.
CELL_SOURCES = {
    "M1": [("M", 1.0, "model")], "M2": [("M", 0.5, "model")], "M4": [("M", 0.25, "model")],
    "M8": [("M", 0.125, "model")],
    "Mc1": [("Mc", 1.0, "model")], "Mc2": [("Mc", 0.5, "model")], "Mc4": [("Mc", 0.25, "model")],
    "Mc8": [("Mc", 0.125, "model")],
    # the s = 1 cell of P_s is the co-trained source, averaged over the three P_s runs (Table 1 caption)
    "P2": [("P", 0.5, "P1_2"), ("P", 1.0, "source")],
    "P4": [("P", 0.25, "P1_4"), ("P", 1.0, "source")],
    "P8": [("P", 0.125, "P1_8"), ("P", 1.0, "source")],
    "Pall": [("Pall", 0.5, "P1_2"), ("Pall", 0.25, "P1_4"), ("Pall", 0.125, "P1_8"), ("Pall", 1.0, "source")],
    "control": [("control", 1.0, "model")],
}


def find_sweep(tracking_uri: str, experiment: str, scale: str, name: str = "table1"):
    """The newest FINISHED sweep run of ``name`` at ``scale`` (None if there is none)."""
    client = MlflowClient(tracking_uri)
    found = client.get_experiment_by_name(experiment)
    if found is None:
        return None
    runs = client.search_runs(
        [found.experiment_id],
        f"tags.role = 'sweep' and tags.scale = '{scale}' and tags.experiment = '{name}' "
        "and attributes.status = 'FINISHED'",
        order_by=["attributes.start_time DESC"],
        max_results=1,
    )
    return runs[0] if runs else None


def load_trials(tracking_uri: str, experiment: str, sweep_id: str) -> pd.DataFrame:
    """One row per trial run of the sweep: tags, status, final metrics."""
    client = MlflowClient(tracking_uri)
    exp_id = client.get_experiment_by_name(experiment).experiment_id
    rows = []
    for run in client.search_runs([exp_id], f"tags.sweep_id = '{sweep_id}'", max_results=10000):
        tags = run.data.tags
        if tags.get("role") == "sweep":
            continue
        rows.append({
            "trial": run.info.run_name, "stage": tags.get("stage"), "cell": tags.get("cell"),
            "seed": int(tags.get("seed", 0)), "kind": tags.get("kind"), "status": run.info.status,
            "run_id": run.info.run_id, "steps": int(float(run.data.params.get("train.steps", "nan"))),
            "start": run.info.start_time, "end": run.info.end_time, **run.data.metrics,
        })
    return pd.DataFrame(rows).sort_values(["stage", "cell", "seed"]).reset_index(drop=True)


def attach_per_image(trials: pd.DataFrame, tracking_uri: str) -> pd.DataFrame:
    """Add a ``per_image`` column: each finished run's per-image validation losses
    (``eval/per_image_nats.json``, keyed "<subset>/<model>"), or None where the artifact is missing."""
    import json
    import os
    import tempfile

    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")  # one bar per run is noise here
    client = MlflowClient(tracking_uri)
    loaded = []
    with tempfile.TemporaryDirectory() as tmp:
        for row in trials.to_dict("records"):
            try:
                path = client.download_artifacts(row["run_id"], "eval/per_image_nats.json", tmp)
                loaded.append(json.loads(Path(path).read_text()))
            except Exception:  # noqa: BLE001 - an older run without the artifact: unpaired SEs for it
                loaded.append(None)
    return trials.assign(per_image=loaded)


class Table1Cells(NamedTuple):
    cells: dict[tuple[str, float], Cell]  # (column, s) -> cell
    control: Cell | None  # M_1 continued alone for the stage-2 steps


def gather_cells(trials: pd.DataFrame, cell_sources: Mapping[str, list[tuple[str, float, str]]],
                 subset: str = "all") -> dict[tuple[str, float], Cell]:
    """Combine finished trials into table cells: ``cell_sources[trial cell]`` lists the (column, s, model
    metric) entries a trial contributes to. Per-image losses (``attach_per_image``) make the cells' standard
    errors of differences paired."""
    pools: dict[tuple[str, float], tuple[list[float], list[float], list]] = {}
    for row in trials.to_dict("records"):
        if row["status"] != "FINISHED":
            continue
        for column, s, model in cell_sources.get(row["cell"], []):
            mean, se = row.get(f"val/{subset}/{model}/nats"), row.get(f"val/{subset}/{model}/nats_se")
            if mean is None or (isinstance(mean, float) and math.isnan(mean)):
                continue
            means, ses, images = pools.setdefault((column, s), ([], [], []))
            means.append(float(mean))
            ses.append(float(se))
            images.append((row.get("per_image") or {}).get(f"{subset}/{model}"))
    return {
        key: combine_runs(means, ses, images if all(i is not None for i in images) else None)
        for key, (means, ses, images) in pools.items()
    }


def table1_cells(trials: pd.DataFrame, subset: str = "all") -> Table1Cells:
    """Combine the trials (seeds, and the three P_s sources) into Table 1's cells."""
    cells = gather_cells(trials, CELL_SOURCES, subset)
    control = cells.pop(("control", 1.0), None)
    return Table1Cells(cells, control)


def results_frame(table: Table1Cells) -> pd.DataFrame:
    """Long table: column, s, ours, se, seeds, paper (the CSV)."""
    rows = []
    for column in (*COLUMN_LABELS,):
        for s in SCALES:
            cell = table.control if column == "control" and s == 1.0 else table.cells.get((column, s))
            if column == "control" and s != 1.0:
                continue
            rows.append({
                "model": COLUMN_LABELS[column], "s": SCALE_LABELS[s], "ours_nats": getattr(cell, "mean", math.nan),
                "ours_se": getattr(cell, "se", math.nan), "seeds": getattr(cell, "seeds", 0),
                "paper_nats": PAPER_TABLE1.get((column, s), math.nan),
            })
    return pd.DataFrame(rows)


def verdicts_frame(verdicts: list[Verdict]) -> pd.DataFrame:
    return pd.DataFrame([{
        "claim": v.claim, "comparison": v.comparison, "difference": v.difference, "2 SE": v.two_se,
        "2 SE (unpaired)": v.two_se_unpaired, "rule": v.rule, "verdict": v.verdict,
    } for v in verdicts])


class Provenance(NamedTuple):
    sweep_id: str
    commit: str
    command: str
    scale: str
    stage_steps: dict[str, int]
    wall_time_s: float
    machine: str
    finished: str
    report_commit: str  # the checkout that wrote the report (the notebook may run after later commits)


def provenance(sweep_run, trials: pd.DataFrame) -> Provenance:
    tags, params = sweep_run.data.tags, sweep_run.data.params
    steps = {}
    for stage in sorted(trials["stage"].dropna().unique()):
        key = f"experiment.stages.{stage}.steps"
        steps[stage] = int(params[key]) if key in params else int(trials[trials.stage == stage].steps.max())
    end = sweep_run.info.end_time or sweep_run.info.start_time
    return Provenance(
        sweep_id=tags.get("sweep_id", "?"), commit=tags.get("commit", "unknown"), command=tags.get("command", "?"),
        scale=tags.get("scale", "?"), stage_steps=steps,
        wall_time_s=float(sweep_run.data.metrics.get("wall_time_s", math.nan)), machine=tags.get("machine", "?"),
        finished=datetime.fromtimestamp(end / 1000, tz=timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        report_commit=git_commit(Path(__file__).resolve().parents[1]),
    )


def _fmt(cell: Cell | None) -> str:
    return "-" if cell is None else f"{cell.mean:.3f} ± {cell.se:.3f} (n={cell.seeds})"


def markdown(table: Table1Cells, verdicts: list[Verdict], prov: Provenance, margin: float,
             trials: pd.DataFrame) -> str:
    """reports/<scale>/table1.md."""
    steps1, steps2 = prov.stage_steps.get("stage1", "?"), prov.stage_steps.get("stage2", "?")
    lines = [
        f"# Table 1 at scale `{prov.scale}`: validation loss (nats/token) on SynthMNIST",
        "",
        "Ours: mean ± standard error (n = runs averaged). Paper: Table 1 of Zhmoginov et al. (32x32 tokens, "
        "512 colours, 24-layer source). The s = 1 cells of P_s and P~ are the co-trained source's loss "
        "(for P_s the mean over the three P_s runs).",
        "",
        "| s | M_s | paper | M~_s | paper | P_s | paper | P~ | paper |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for s in SCALES:
        row = [SCALE_LABELS[s]]
        for column in ("M", "Mc", "P", "Pall"):
            paper = PAPER_TABLE1[(column, s)]
            row += [_fmt(table.cells.get((column, s))), f"({paper:.2f})" if s == 1.0 and column[0] == "P" else f"{paper:.2f}"]
        lines.append("| " + " | ".join(row) + " |")
    lines += [
        "",
        f"Control, M_1 continued alone for the stage-2 steps: {_fmt(table.control)}.",
        "",
        "## Protocol",
        "",
        f"- Stage 1: M_s and M~_s trained from scratch for {steps1} steps at s = 1, 1/2, 1/4, 1/8.",
        f"- Stage 2: every P_s run (s = 1/2, 1/4, 1/8) and the P~ run (all three at once) start from stage 1's "
        f"M_1 and keep tuning it for {steps2} steps (Eq. 2, w_src = 1), so the P runs' source has had "
        f"{steps1} + {steps2} steps. The control continues M_1 alone for the same {steps2} steps; "
        "\"the source loses nothing\" is judged against it, not against stage 1's M_1.",
        "- Seeds vary the initialisation; every run sees the same data stream and the same validation images.",
        "",
        "## Claims",
        "",
        f"An inequality holds when its margin exceeds 2 standard errors; a non-inferiority claim holds when the "
        f"difference plus 2 standard errors stays below {margin:g} nats/token (fixed in the config before the "
        "run). A cell's standard error combines the error over validation images with the spread over seeds "
        "(se² = mean of the runs' se² + variance of the run means / runs). Every model is evaluated on the same "
        "validation images, so the standard error of a difference is paired: the error of the mean per-image "
        "difference plus each cell's seed spread (`experiments/claims.py`); the unpaired value, which treats "
        "the cells as independent and counts the images' spread in difficulty twice, is shown beside it.",
        "",
    ]
    for claim, verdict in summarise(verdicts).items():
        lines.append(f"- **{claim}**: {verdict}")
    lines += ["", "| claim | comparison | difference | 2 SE (paired) | 2 SE (unpaired) | rule | verdict |",
              "|---|---|---|---|---|---|---|"]
    for v in verdicts:
        lines.append(f"| {v.claim} | {v.comparison} | {v.difference:+.4f} | {v.two_se:.4f} | "
                     f"{v.two_se_unpaired:.4f} | {v.rule} | {v.verdict} |")
    seeds = trials.groupby("cell").seed.nunique().to_dict()
    lines += [
        "",
        "## Runs per cell",
        "",
        ", ".join(f"{cell}: {n}" for cell, n in sorted(seeds.items())),
        "",
        "## Provenance",
        "",
        f"- sweep: `{prov.sweep_id}` (MLflow, finished {prov.finished})",
        f"- commit: `{prov.commit}` (training); report written at `{prov.report_commit}`",
        f"- command: `{prov.command}`",
        f"- scale: `{prov.scale}`; steps: stage 1 {steps1}, stage 2 {steps2}",
        f"- wall time: {prov.wall_time_s / 60:.1f} min",
        f"- machine: {prov.machine}",
        "",
    ]
    return "\n".join(lines)


def plot(table: Table1Cells, path: str | Path, title: str) -> Path:
    """Loss against s for each column, ours with 2-SE bars, the paper's dashed."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(10, 4), sharex=True)
    xs = [1 / s for s in SCALES]
    colours = {"M": "tab:gray", "Mc": "tab:blue", "P": "tab:orange", "Pall": "tab:green"}
    for column, colour in colours.items():
        cells = [table.cells.get((column, s)) for s in SCALES]
        pts = [(x, c.mean, 2 * c.se) for x, c in zip(xs, cells) if c is not None]
        if pts:
            x, y, e = zip(*pts)
            axes[0].errorbar(x, y, yerr=e, marker="o", capsize=3, color=colour, label=COLUMN_LABELS[column])
        axes[1].plot(xs, [PAPER_TABLE1[(column, s)] for s in SCALES], "--o", color=colour,
                     label=COLUMN_LABELS[column])
    if table.control is not None:
        axes[0].errorbar([1], [table.control.mean], yerr=[2 * table.control.se], marker="s", color="black",
                         linestyle="none", capsize=3, label="M_1 continued")
    for ax, name in zip(axes, ("ours (±2 SE)", "paper")):
        ax.set_xscale("log", base=2)
        ax.set_xticks(xs, [SCALE_LABELS[s] for s in SCALES])
        ax.set_xlabel("s (width / source width)")
        ax.set_ylabel("validation loss (nats/token)")
        ax.set_title(name)
        ax.legend(fontsize=8)
    return save_figure(fig, title, path)


def save_figure(fig, title: str, path: str | Path) -> Path:
    """Title, tight layout, PNG at 120 dpi; the figure is closed."""
    import matplotlib.pyplot as plt

    fig.suptitle(title)
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


class ReportFiles(NamedTuple):
    markdown: Path
    csv: Path
    png: Path | None = None


def write_report(out_dir: str | Path, table: Table1Cells, verdicts: list[Verdict], prov: Provenance,
                 margin: float, trials: pd.DataFrame) -> ReportFiles:
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    md = out_dir / "table1.md"
    md.write_text(markdown(table, verdicts, prov, margin, trials))
    csv = out_dir / "table1.csv"
    results_frame(table).to_csv(csv, index=False, float_format="%.5f")
    png = plot(table, out_dir / "table1.png", f"Table 1, scale {prov.scale} (sweep {prov.sweep_id})")
    return ReportFiles(md, csv, png)


def verdicts_for(table: Table1Cells, margin: float) -> list[Verdict]:
    return table1_verdicts(table.cells, table.control, margin)


def margin_of(sweep_run, default: float = 0.01) -> float:
    params: Mapping[str, str] = sweep_run.data.params
    return float(params.get("experiment.margin", default))
