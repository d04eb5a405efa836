"""What the reports need in a sweep's evidence file beyond its runs' metrics (``experiments.tracking.evidence``):
the results only the final weights can give, computed by the sweep's driver as each run finishes, and read
back in place of evaluating the saved models.

``EXTRAS[experiment]`` lists them per experiment. Covered: Figure 4's per-image losses over its t1 grid
(Table 1's sweep), Tables 2 and 4's data summary. Not yet covered, so these reports still need the store:
Figure 3's and the generators' sample tokens, Table 3's losses on a training draw and Table 4's subsets.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import NamedTuple

import pandas as pd

from experiments.reporting import figure4, toolkit
from experiments.tracking.evidence import DATA_SUMMARY, Evidence, ExtraEvidence

FIGURE4_LOSSES = "figure4/t1"  # extra key: per-image losses over figure4.T1_GRID (model, t1, image, value)
FIGURE4_EVALUATION = "figure4/evaluation"  # extra key: who evaluated them (detail: commit, machine, wall time)


def figure4_losses(tracking_uri: str, run, cache: Path) -> pd.DataFrame:
    """Figure 4's evaluation of one finished Table 1 run of a cell it plots (``figure4.table1_cells``):
    the per-image loss of its P_s or M~_s at every t1 of the grid, as extra evidence rows."""
    from experiments.run.saved import data_of, load_model, nll_fn, pick_device
    from experiments.tracking.sweeps import download_run

    cell, models = run.data.tags.get("cell"), figure4.table1_cells()
    if cell not in models:
        return pd.DataFrame()
    tick = time.time()
    family, s = models[cell]
    device = pick_device(None)
    saved = download_run(tracking_uri, run.info.run_id, Path(cache) / "models")
    model = load_model(saved).to(device)
    zero_shot = figure4.ZeroShotModel(family, s, int(run.data.tags.get("seed", 0)), run.info.run_id,
                                      nll_fn(model, s if family == "P" else None))
    frame = figure4.evaluate_zero_shot([zero_shot], data_of(saved.config, Path(cache) / "data"), figure4.T1_GRID,
                                       device=device)
    rows = pd.DataFrame({"record": "extra", "run_id": run.info.run_id, "key": FIGURE4_LOSSES, "model": frame.model,
                         "t1": frame.t1, "image": frame.image, "value": frame.nats.astype(float)})
    evaluation = toolkit.evaluation_provenance(tick)
    provenance = pd.DataFrame([{"record": "extra", "run_id": run.info.run_id, "key": FIGURE4_EVALUATION,
                                "detail": json.dumps(evaluation, sort_keys=True)}])
    return pd.concat([rows, provenance], ignore_index=True)


def data_summary(tracking_uri: str, run, cache: Path) -> pd.DataFrame:
    """Tables 2 and 4's "Data" section: the summary of the sweep's data (the stand-in or ImageNet, the VQ-VAE's
    reconstruction, the encoder; ``toolkit.sweep_data_summary`` from the store), one extra row per run (every
    run of a sweep carries the same), so that the reports render without the store or the data caches."""
    from experiments.tracking.store import MlflowClient

    sweep_run = MlflowClient(tracking_uri).get_run(run.data.tags["mlflow.parentRunId"])
    summary = toolkit.sweep_data_summary(tracking_uri, sweep_run)
    if summary is None:
        return pd.DataFrame()
    return pd.DataFrame([{"record": "extra", "run_id": run.info.run_id, "key": DATA_SUMMARY,
                          "detail": json.dumps(summary, sort_keys=True)}])


EXTRAS: dict[str, list[ExtraEvidence]] = {"table1": [figure4_losses], "table2": [data_summary],
                                          "table4": [data_summary]}


class Figure4Evidence(NamedTuple):
    frame: pd.DataFrame  # figure4.evaluate_zero_shot's: model, family, s, seed, run_id, t1, image, nats
    evaluation: dict  # toolkit.evaluation_provenance: commit, machine, wall time, images
    baselines: str  # 'matched' when M~_s is read from its step-matched continuation (toolkit.matched_cells)


def figure4_frame(evidence: Evidence, trials: pd.DataFrame) -> Figure4Evidence:
    """Figure 4's per-image losses over the t1 grid and their evaluation's provenance, from the evidence the
    sweep's driver wrote, for the cells the figure reads: M~_s from its step-matched continuation whenever
    ``trials`` hold finished runs of it (``toolkit.matched_cells``), as from the store."""
    from experiments.reporting.declared import declared

    read = toolkit.matched_cells(trials, figure4.stage1_cells(), declared("table1").matched)
    extras = evidence.extras
    runs_read = set(evidence.runs.run_id[evidence.runs.cell.isin(list(read.cells))])
    losses = extras[(extras.key == FIGURE4_LOSSES) & extras.run_id.isin(runs_read)]
    if losses.empty:
        raise toolkit.MissingRuns(f"figure4: the evidence of {', '.join(evidence.sweep_ids)} holds no Figure 4 "
                                  "losses; write it again from the store with `python -m experiments.reporting "
                                  "backfill <sweep id>`")
    runs = evidence.runs.set_index("run_id")
    cells, models = runs.cell.loc[losses.run_id], figure4.table1_cells()
    frame = pd.DataFrame({
        "model": losses.model.to_numpy(),
        "family": [models[c][0] for c in cells],
        "s": [models[c][1] for c in cells],
        "seed": runs.seed.loc[losses.run_id].astype(int).to_numpy(),
        "run_id": losses.run_id.to_numpy(),
        "t1": losses.t1.astype(float).to_numpy(),
        "image": losses.image.astype(int).to_numpy(),
        "nats": losses.value.astype("float32").to_numpy(),  # evaluate_zero_shot's dtype: the same sums
    }).sort_values(["t1", "model", "seed", "image"], kind="stable").reset_index(drop=True)
    details = [json.loads(d) for d in extras.loc[(extras.key == FIGURE4_EVALUATION) & extras.run_id.isin(runs_read),
                                                 "detail"]]
    joined = lambda field: " + ".join(dict.fromkeys(str(d[field]) for d in details)) or "?"
    evaluation = {"commit": joined("commit"), "machine": joined("machine"),
                  "wall_time_s": sum(d["wall_time_s"] for d in details), "images": int(frame.image.max()) + 1}
    return Figure4Evidence(frame, evaluation, read.baselines)
