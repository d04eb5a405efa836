"""Table 3 from tracked runs: the newest finished Table 3 sweep of a scale (or the committed evidence of its
partial sweeps), plus the Table 1 runs it reused; validation losses (logged by the runs) and training losses
(the final models evaluated on a fixed draw of the training stream: from the store by ``training_losses``, or
written into the evidence as each run finished, ``reporting.evidence.table3_training``); the claim "at equal r
a larger source projects better" by the rules of ``experiments.reporting.claims``;
``reports/<scale>/table3.{md,csv}``. The notebook ``analysis/table3.py`` calls ``table3_runs`` and these.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Mapping
from pathlib import Path
from typing import NamedTuple

import pandas as pd

from experiments.reporting import toolkit
from experiments.reporting.claims import Cell, Verdict, combine_runs, contrast_error, less_than, t_critical
from experiments.reporting.toolkit import (
    Provenance,
    ReportFiles,
    fmt_df,
    fmt_mean_se,
    md_table,
    scale_label,
    section,
)
from experiments.run.evaluate import validation_loss
from experiments.run.saved import data_of, load_model, nll_fn, pick_device
from experiments.tracking.store import MlflowClient
from experiments.tracking.sweeps import attach_per_image, download_run, load_trials

# Table 3 of the paper (training losses, nats/token): (target width, source width, rank) -> loss.
PAPER_TABLE3 = {
    (0.25, 1.0, 8): 0.47, (0.25, 0.5, 8): 0.50, (0.25, 0.5, 16): 0.49,
    (0.125, 1.0, 8): 0.57, (0.125, 0.5, 8): 0.59, (0.125, 0.5, 16): 0.57,
    (0.125, 0.25, 8): 0.71, (0.125, 0.25, 16): 0.70, (0.125, 0.25, 32): 0.67,
}
# Same projector size (~rank x source width) in the paper: M_1 at r=8, M_1/2 at r=16, M_1/4 at r=32 -> P_1/8.
MATCHED = ((0.125, 1.0, 8), (0.125, 0.5, 16), (0.125, 0.25, 32))
TRAIN_SAMPLE_STEP = 0  # the training-stream draw the final models are scored on (see training_losses)
# extra evidence keys (``reporting.evidence.table3_training``): a P_s's per-image losses on the training draw
# (image, value), and its shape (``run_shape``), training-draw loss and SE, the draw's size and who scored it
TABLE3_TRAIN, TABLE3_RUN = "table3/train", "table3/run"


def label(target: float, source: float, rank: int) -> str:
    return f"P_{scale_label(target)} from M_{scale_label(source)}, r={rank}"


def run_shape(params: Mapping[str, str]) -> dict:
    """A projected run's shape from its logged params: its source's width, its one scale (target / source
    width), the target width and the projector rank."""
    source, scales = float(params["width"]), json.loads(params["projector.scales"])
    return {"source": source, "scale": float(scales[0]), "target": source * float(scales[0]),
            "rank": int(params["projector.rank"])}


ORDER = (["target", "source", "rank", "seed"], [False, False, True, True])  # the table's rows, as both paths sort


def load_runs(tracking_uri: str, experiment: str, scale: str, sweeps=()):
    """(sweep run, trials) of the newest finished Table 3 sweep of ``scale`` (of ``sweeps`` where given);
    trials include the Table 1 runs it reused (``reused_from`` names them) and each run's target, source width,
    scale and rank."""
    sweep_run = toolkit.store_sweep(tracking_uri, experiment, scale, "table3", sweeps)
    trials = load_trials(tracking_uri, experiment, sweep_run.data.tags["sweep_id"])
    trials["reused_from"] = ""
    reused = json.loads(sweep_run.data.tags.get("reused", "{}"))
    source_sweep = sweep_run.data.tags.get("source_sweep")
    if reused and source_sweep:
        source = load_trials(tracking_uri, experiment, source_sweep)
        trials = pd.concat([trials, _reused(source, reused, source_sweep)], ignore_index=True)
    client = MlflowClient(tracking_uri)
    shapes = pd.DataFrame([run_shape(client.get_run(run_id).data.params) for run_id in trials.run_id])
    trials = pd.concat([trials, shapes], axis=1)
    return sweep_run, trials.sort_values(ORDER[0], ascending=ORDER[1])


def _reused(source: pd.DataFrame, reused: Mapping[str, str], source_sweep: str) -> pd.DataFrame:
    """The runs of the Table 1 cells a Table 3 sweep reused (``reused``: its cell -> Table 1's), under its names."""
    by_cell = {t1: t3 for t3, t1 in reused.items()}
    source = source[source.cell.isin(list(by_cell))].copy()
    source["reused_from"] = source_sweep + "/" + source.cell
    source["cell"] = source.cell.map(by_cell)
    return source


def training_loss(saved, scale: float, cache_dir: str | Path, images: int | None = None, batch_size: int = 64,
                  device: str = "cpu", data_cache: dict | None = None):
    """One saved run's P_scale scored on a fixed draw of the training stream: ``train_batch(step=0,
    batch_size=N)`` with N = the run's validation size (or ``images``). The stream is seeded by the batch size
    too, so this is a fresh draw of the training distribution (MNIST training digits, flips), the same for
    every run of one data config (``data_cache`` keeps it across runs). An ``evaluate.Loss``."""
    data_cache = {} if data_cache is None else data_cache
    key = repr(saved.config.data)
    if key not in data_cache:
        data = data_of(saved.config, Path(cache_dir) / "data")
        data_cache[key] = (data, data.train_batch(TRAIN_SAMPLE_STEP, images or saved.config.data.val_size))
    data, batch = data_cache[key]
    c, h, w = data.image_shape
    model = load_model(saved).to(device)
    return validation_loss(nll_fn(model, scale), batch, batch_size, data.seq_len, c * h * w, device)


def training_losses(trials: pd.DataFrame, tracking_uri: str, cache_dir: str | Path, images: int | None = None,
                    batch_size: int = 64, device: str | None = None) -> pd.DataFrame:
    """``training_loss`` of each run of ``trials``, from the store. One row per run: run_id, train_nats,
    train_se, train_per_image."""
    device, rows, data_cache = pick_device(device), [], {}
    for row in trials.itertuples():
        saved = download_run(tracking_uri, row.run_id, Path(cache_dir) / "models")
        loss = training_loss(saved, row.scale, cache_dir, images, batch_size, device, data_cache)
        rows.append({"run_id": row.run_id, "train_nats": loss.nats, "train_se": loss.nats_se,
                     "train_per_image": loss.per_image.tolist()})
    return pd.DataFrame(rows)


class Table3Runs(NamedTuple):
    sweep_run: object  # the sweep's MLflow run, or its stand-in read from evidence files
    trials: pd.DataFrame  # its runs and the reused Table 1 runs, with shapes and per-image validation losses
    train: pd.DataFrame  # training_losses' rows of the finished runs
    evaluation: dict  # who scored the training draw: commit, machine, wall time, images


def table3_runs(params: toolkit.NotebookParams) -> Table3Runs:
    """What the report reads, from the store (scoring the training draw now) or from the evidence files
    (``toolkit.check_runs``), with the same numbers either way."""
    if toolkit.check_runs(params, "table3") == "evidence":
        return evidence_runs(params, *toolkit.sweep_and_trials(params, "table3", per_image=True))
    sweep_run, trials = load_runs(params.tracking_uri, params.experiment, params.scale, params.sweeps)
    tick = time.time()
    train = training_losses(trials[trials.status == "FINISHED"], params.tracking_uri, params.cache)
    evaluation = toolkit.evaluation_provenance(tick, images=int(sweep_run.data.params.get("data.val_size", 0)))
    return Table3Runs(sweep_run, attach_per_image(trials, params.tracking_uri), train, evaluation)


def evidence_runs(params: toolkit.NotebookParams, sweep_run, trials: pd.DataFrame) -> Table3Runs:
    """``table3_runs`` from evidence: the reused Table 1 runs from the committed evidence of the Table 1 sweep
    each part started from (``source_sweep``), shapes and training-draw losses from the extra records each run
    carries (``reporting.evidence.table3_training``); a run without them is named, with the command that adds them."""
    evidence, frames = toolkit.evidence_of(sweep_run), [trials.assign(reused_from="")]
    extras = [evidence.extras]
    for sweep, source in zip(evidence.sweeps, toolkit.part_sources(params, evidence)):
        reused = json.loads(sweep["tags"].get("reused", "{}"))
        if reused and source is not None:
            frames.append(_reused(source.runs, reused, source.sweep_id))
            extras.append(source.evidence.extras)
    trials = pd.concat(frames, ignore_index=True)
    extras = pd.concat(extras, ignore_index=True)
    extras = extras[extras.run_id.isin(trials.run_id)]
    if lacking := toolkit.lacking_extra(trials, trials.run_id[trials.status == "FINISHED"], extras, TABLE3_RUN):
        raise toolkit.MissingRuns(f"table3: the evidence of {', '.join(evidence.sweep_ids)} holds no training-draw "
                                  f"losses of cells {', '.join(lacking)}; {toolkit.ADD_EXTRAS}")
    described = extras[extras.key == TABLE3_RUN].drop_duplicates("run_id").set_index("run_id")
    detail = described.detail.map(json.loads)
    shapes = pd.DataFrame([{field: detail[run_id][field] for field in ("source", "scale", "target", "rank")}
                           for run_id in trials.run_id])
    trials = pd.concat([trials, shapes], axis=1).sort_values(ORDER[0], ascending=ORDER[1])
    images = extras[extras.key == TABLE3_TRAIN].sort_values("image")
    per_image = images.groupby("run_id").value.apply(list)
    train = pd.DataFrame([{"run_id": run_id, "train_nats": detail[run_id]["train_nats"],
                           "train_se": detail[run_id]["train_se"], "train_per_image": per_image[run_id]}
                          for run_id in trials.run_id[trials.status == "FINISHED"]])
    evaluation = {**toolkit.evaluations(described.reset_index()), "images": int(detail.iloc[0]["images"])}
    return Table3Runs(sweep_run, trials, train, evaluation)


class Table3(NamedTuple):
    frame: pd.DataFrame  # one row per cell (the CSV)
    train: dict[tuple[float, float, int], Cell]  # (target, source, rank) -> training loss cell
    val: dict[tuple[float, float, int], Cell]


def table3_cells(trials: pd.DataFrame, train: pd.DataFrame) -> Table3:
    """Combine seeds into cells (``claims.combine_runs``) and put the paper's numbers beside them."""
    merged = trials.merge(train, on="run_id", how="left")
    rows, train_cells, val_cells = [], {}, {}
    for (target, source, rank), group in merged.groupby(["target", "source", "rank"], sort=False):
        done = group[group.status == "FINISHED"]
        key = (target, source, int(rank))
        if len(done):
            runs = done.to_dict("records")
            losses = [toolkit.loss_of(run, "all", target) for run in runs]
            # Per-image losses on the same images make the SE of a difference between cells paired (claims.py).
            val_images = [toolkit.per_image_of(run, "all", target) for run in runs]
            if all(loss is not None for loss in losses):
                val_cells[key] = combine_runs([m for m, _ in losses], [se for _, se in losses],
                                              val_images if all(v is not None for v in val_images) else None)
            if done.train_nats.notna().all():
                train_images = done.get("train_per_image")
                train_images = None if train_images is None or train_images.isna().any() else train_images.tolist()
                train_cells[key] = combine_runs(done.train_nats.tolist(), done.train_se.tolist(), train_images)
        params_key = f"num_params/projector_{group.scale.iloc[0]}"
        rows.append({
            "cell": group.cell.iloc[0], "target": scale_label(target), "source": scale_label(source),
            "rank": int(rank), "scale": group.scale.iloc[0],
            "projector_params": _count(group.get(params_key)),
            "train_nats": getattr(train_cells.get(key), "mean", math.nan),
            "train_se": getattr(train_cells.get(key), "se", math.nan),
            "val_nats": getattr(val_cells.get(key), "mean", math.nan),
            "val_se": getattr(val_cells.get(key), "se", math.nan),
            "seeds": len(done), "paper_train_nats": PAPER_TABLE3.get(key, math.nan),
            "reused_from": ", ".join(sorted(set(group.reused_from) - {""})),
        })
    return Table3(pd.DataFrame(rows), train_cells, val_cells)


def equal_rank_pairs() -> list[tuple[tuple, tuple]]:
    """(larger source, smaller source) at the same target and rank, every pair Table 3 holds."""
    keys = list(PAPER_TABLE3)
    return [(a, b) for a in keys for b in keys
            if a[0] == b[0] and a[2] == b[2] and a[1] == 2 * b[1]]


def source_size_verdicts(cells: dict[tuple, Cell], loss: str) -> list[Verdict]:
    """"At equal r a larger source projects better": loss(larger source) < loss(smaller source) by more than
    t(0.975, df) x SE (``claims.less_than``)."""
    claim = f"at equal r a larger source projects better ({loss} loss)"
    return [less_than(claim, f"{label(*a)} < {label(*b)}", cells.get(a), cells.get(b)) for a, b in equal_rank_pairs()]


def matched_size_frame(table: Table3) -> pd.DataFrame:
    """P_1/8 at matched projector size (M_1 r=8, M_1/2 r=16, M_1/4 r=32): differences, no claim."""
    rows = []
    for losses, name in ((table.train, "train"), (table.val, "validation")):
        for other in MATCHED[1:]:
            a, b = losses.get(MATCHED[0]), losses.get(other)
            if a is None or b is None:
                continue
            error = contrast_error([(1.0, b), (-1.0, a)])  # as the claims' bound: t(0.975, df) x SE
            rows.append({"loss": name, "comparison": f"{label(*other)} minus {label(*MATCHED[0])}",
                         "difference": b.mean - a.mean, "t_se": t_critical(error.df) * error.se, "df": error.df,
                         "paper": PAPER_TABLE3[other] - PAPER_TABLE3[MATCHED[0]] if name == "train" else math.nan})
    return pd.DataFrame(rows)


def paper_verdicts() -> dict[str, bool]:
    """The claim on the paper's own numbers (no errors given: a plain comparison)."""
    return {f"{label(*a)} < {label(*b)}": PAPER_TABLE3[a] < PAPER_TABLE3[b] for a, b in equal_rank_pairs()}


def _count(column) -> int:
    """A logged parameter count, -1 when the run did not log it."""
    return -1 if column is None or column.isna().all() else int(column.dropna().iloc[0])


def markdown(table: Table3, verdicts: list[Verdict], matched: pd.DataFrame, prov: Provenance, sweep_run,
             evaluation: dict) -> str:
    """reports/<scale>/table3.md."""
    tags = sweep_run.data.tags
    steps = prov.stage_steps.get("stage2", "?")
    rows = []
    for row in table.frame.itertuples():
        reused = f" (Table 1 run {row.reused_from})" if row.reused_from else ""
        rows.append([f"P_{row.target}", f"M_{row.source}", row.rank, f"{row.projector_params:,}",
                     fmt_mean_se(row.train_nats, row.train_se), f"{row.paper_train_nats:.2f}",
                     fmt_mean_se(row.val_nats, row.val_se), f"{row.seeds}{reused}"])
    reused = json.loads(tags.get("reused", "{}"))
    matched_rows = [[row.loss, row.comparison, f"{row.difference:+.4f}", f"{row.t_se:.4f}", fmt_df(row.df),
                     "-" if math.isnan(row.paper) else f"{row.paper:+.2f}"] for row in matched.itertuples()]
    lines = [
        f"# Table 3 at scale `{prov.scale}`: projecting from sources of different sizes (SynthMNIST)",
        "",
        "P_1/4 and P_1/8 projected from M_1, M_1/2 and M_1/4 with projector rank r. Ours: mean ± standard error "
        "over images (and seeds where a cell has several). The paper's Table 3 reports training losses.",
        "",
        *md_table(["target", "source", "r", "projector params", "training loss (ours)", "paper",
                   "validation loss (ours)", "runs"], rows),
        "",
        *section(
            "Protocol",
            f"- Sources: stage 1's M_1, M_1/2, M_1/4 of Table 1 sweep `{tags.get('source_sweep', '?')}` (trained "
            "from scratch for its stage-1 steps). Every cell starts from one and keeps tuning it while the projector "
            f"learns (Eq. 2, w_src = 1) for {steps} steps, Table 1's stage-2 budget. In the core's terms a cell's "
            "scale is target width / source width (P_1/8 from M_1/4 is scale 1/2 of that source).",
            "- Reused: " + (", ".join(f"{k} is Table 1's cell {v} (same config: steps, rank, scale, source)"
                                       for k, v in reused.items()) or "none") + ".",
            f"- Training loss: every final P_s scored on one fixed draw of {evaluation['images']} items of the "
            f"training stream (`train_batch(step={TRAIN_SAMPLE_STEP}, batch_size={evaluation['images']})`: MNIST "
            "training digits, flips, fresh task vectors; the same items for every cell). Each step trains on fresh "
            "items, so this is the training distribution's loss, not a memorised batch. Validation loss: the runs' "
            "own final evaluation on the fixed validation set (MNIST test digits).",
            "- Projector params: the diagonal MLPs plus the small model's own embeddings, norms and head "
            "(`ProjectableGPT.num_projector_params`).",
        ),
        *section(
            "Claims",
            toolkit.claim_rule_line(verdicts) + " The claim is judged on training losses as in the paper; "
            "validation losses are shown as a check.",
            "",
            *toolkit.verdict_lines(verdicts, rule=False, paper=paper_verdicts()),
        ),
        *section(
            "Matched projector size (reported, no claim)",
            "The paper matches projector sizes across sources (M_1 at r = 8, M_1/2 at r = 16, M_1/4 at r = 32, "
            "projector size ~ r x source width) and its own P_1/8 cells tie for M_1 and M_1/2 (0.57, 0.57) with "
            "M_1/4 behind (0.67); we report the same differences without a verdict.",
            "",
            *md_table(["loss", "comparison", "difference", "t·SE", "df", "paper"], matched_rows),
        ),
        *toolkit.provenance_lines(
            prov, sources=tags.get("source_sweep", "?"),
            wall_time_note=" for the new cells (the reused ones were timed in Table 1)", evaluation=evaluation),
    ]
    return "\n".join(lines)


def write_report(out_dir, table: Table3, verdicts: list[Verdict], matched: pd.DataFrame, prov, sweep_run,
                 evaluation: dict) -> ReportFiles:
    return toolkit.write_report(out_dir, "table3", markdown(table, verdicts, matched, prov, sweep_run, evaluation),
                                table.frame)
