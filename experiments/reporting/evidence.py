"""What the reports need in a sweep's evidence file beyond its runs' metrics (``experiments.tracking.evidence``):
the results only the final weights can give, computed by the sweep's driver as each run finishes, and read
back in place of evaluating the saved models.

``EXTRAS[experiment]`` lists them per experiment. Covered: Figure 4's per-image losses over its t1 grid and
Figure 3's sample tokens (Table 1's sweep), Tables 2 and 4's data summary, Table 3's losses on a training draw
(its own runs' and those of the Table 1 runs it may reuse), the generators' tags and sample tokens (their
reused P_s rows are Table 1's Figure 3 samples, drawn alike). Table 4 needs none: its C1 and C2 subsets are
evaluations of every run, in the per-image records.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import NamedTuple

import pandas as pd

from experiments.reporting import figure3, figure4, generators, table3, toolkit
from experiments.reporting.figure3 import FIGURE3_EVALUATION, FIGURE3_SAMPLES
from experiments.reporting.table3 import TABLE3_RUN, TABLE3_TRAIN
from experiments.reporting.toolkit import ADD_EXTRAS, DATA_SUMMARY, evaluations
from experiments.tracking.evidence import Evidence, ExtraEvidence

FIGURE4_LOSSES = "figure4/t1"  # extra key: per-image losses over figure4.T1_GRID (model, t1, image, value)
FIGURE4_EVALUATION = "figure4/evaluation"  # extra key: who evaluated them (detail: commit, machine, wall time)


def detail_row(run, key: str, detail: dict) -> pd.DataFrame:
    """One extra record of ``run`` under ``key`` whose ``detail`` is JSON (sorted keys: the same bytes each time)."""
    return pd.DataFrame([{"record": "extra", "run_id": run.info.run_id, "key": key,
                          "detail": json.dumps(detail, sort_keys=True)}])


def one_scale(run) -> float | None:
    """The scale of a projected run that trains one P_s (``projector.scales`` of one entry); None for any other."""
    scales = json.loads(run.data.params.get("projector.scales", "[]"))
    return float(scales[0]) if run.data.tags.get("kind") == "projected" and len(scales) == 1 else None


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
    return pd.concat([rows, detail_row(run, FIGURE4_EVALUATION, toolkit.evaluation_provenance(tick))],
                     ignore_index=True)


def figure3_samples(tracking_uri: str, run, cache: Path) -> pd.DataFrame:
    """Figure 3's row of one finished Table 1 run of a cell it may draw (``figure3.figure_cells``), seed
    ``figure3.SEED`` only (``sample_rows``)."""
    cell, models = run.data.tags.get("cell"), figure3.figure_cells()
    if cell not in models or int(run.data.tags.get("seed", 0)) != figure3.SEED:
        return pd.DataFrame()
    return sample_rows(tracking_uri, run, cache, *models[cell])


def sample_rows(tracking_uri: str, run, cache: Path, family: str, s: float) -> pd.DataFrame:
    """One run's sample row, as Figure 3 and the generators' grids draw it: one sample per task vector of the
    figure (``figure3.model_samples``: seed ``figure3.SEED``, on the CPU as from the store), as extra evidence
    rows (image: the task vector's index; detail: the sample's tokens as JSON), and who drew them."""
    import torch
    from projectable import scale_name

    from experiments.run.saved import data_of, load_model
    from experiments.tracking.sweeps import download_run

    tick = time.time()
    saved = download_run(tracking_uri, run.info.run_id, Path(cache) / "models")
    data = data_of(saved.config, Path(cache) / "data")
    tasks = torch.from_numpy(data.validation_items().task[: figure3.NUM_TASKS])
    tokens = figure3.model_samples(load_model(saved).to("cpu"), family, s, tasks)
    rows = pd.DataFrame({"record": "extra", "run_id": run.info.run_id, "key": FIGURE3_SAMPLES,
                         "model": f"{family}_{scale_name(s)}", "image": range(len(tokens)),
                         "detail": [json.dumps(sample.tolist()) for sample in tokens]})
    evaluation = toolkit.evaluation_provenance(tick, seed=figure3.SEED)
    return pd.concat([rows, detail_row(run, FIGURE3_EVALUATION, evaluation)], ignore_index=True)


def generator_run(tracking_uri: str, run, cache: Path) -> pd.DataFrame:
    """The generators report's evidence of one finished run of its sweep: its ``generator`` and ``match/*``
    tags, and for seed ``figure3.SEED`` of a generated P_s (one scale) its sample row (``sample_rows``)."""
    tags = run.data.tags
    detail = {"generator": tags.get("generator"),
              **{f"match/{key}": tags.get(f"match/{key}") for key in generators.MATCH_FIELDS}}
    frames = [detail_row(run, generators.GENERATOR_TAGS, detail)]
    if (s := one_scale(run)) is not None and int(tags.get("seed", 0)) == figure3.SEED:
        frames.append(sample_rows(tracking_uri, run, cache, "P", s))
    return pd.concat(frames, ignore_index=True)


class Figure3Evidence(NamedTuple):
    rows: list  # figure3.SampleRow of each model drawn, in the figure's order
    evaluation: dict  # who drew the samples: commit, machine, wall time, seed
    baselines: str  # 'matched' when M~_s is read from its step-matched continuation


def figure3_rows(evidence: Evidence, trials: pd.DataFrame) -> Figure3Evidence:
    """Figure 3's sample rows from the evidence the sweep's driver wrote: seed ``figure3.SEED`` of the cells
    the figure reads (M~_s from its step-matched continuation wherever ``trials`` hold it, as from the store)."""
    import torch

    read = figure3.cells_read(trials)
    runs = evidence.runs[evidence.runs.cell.isin(list(read.cells)) & (evidence.runs.seed == figure3.SEED)]
    extras = evidence.extras[evidence.extras.run_id.isin(runs.run_id)]
    samples = extras[extras.key == FIGURE3_SAMPLES]
    lacking = sorted(set(read.cells) - set(runs.cell[runs.run_id.isin(samples.run_id)]))
    if lacking:
        raise toolkit.MissingRuns(f"figure3: the evidence of {', '.join(evidence.sweep_ids)} holds no Figure 3 "
                                  f"samples of seed {figure3.SEED} of cells {', '.join(lacking)}; {ADD_EXTRAS}")
    models, cell_of = figure3.figure_cells(), runs.set_index("run_id").cell
    rows = {models[cell_of[run_id]]: torch.tensor([json.loads(d) for d in group.sort_values("image").detail])
            for run_id, group in samples.groupby("run_id")}
    evaluation = {**evaluations(extras[extras.key == FIGURE3_EVALUATION]), "seed": figure3.SEED}
    return Figure3Evidence(figure3.ordered_rows(rows), evaluation, read.baselines)


def figure3_data(params: toolkit.NotebookParams, sweep_run):
    """The dataset the figure's runs saw, rebuilt from this checkout's config of the scale (the evidence holds
    no data): refused, naming the keys, where the sweep's data config differs from it (keys at their defaults
    count as the same, as everywhere a config is compared: ``config.config_differences``)."""
    from experiments.config import build_section, compose, config_differences, effective_config
    from experiments.run.datasets import build_data, data_config_class, resolve_mnist_root

    cfg = compose(["experiment=table1", f"scale={params.scale}"])
    data_only = lambda config: {k: v for k, v in config.items() if k.startswith("data.")}
    differ = config_differences(data_only(effective_config(cfg, sweep=True)), data_only(sweep_run.data.params))
    if differ:
        raise toolkit.MissingRuns(f"figure3: the sweep's data config differs from this checkout's scale "
                                  f"{params.scale} ({'; '.join(differ)}); render Figure 3 from the store "
                                  "(PROJECTABLE_REPORT_SOURCE=store)")
    resolve_mnist_root(cfg)
    return build_data(build_section(data_config_class(cfg.data), cfg.data, "data"), Path(params.cache) / "data")


def table3_training(tracking_uri: str, run, cache: Path) -> pd.DataFrame:
    """Table 3's training loss of one finished projected run of a single scale (``table3.training_loss``):
    its per-image losses and, in one more row, its shape, loss and SE and who scored them. Table 3's own runs
    and Table 1's (P_1/4 and P_1/8 from M_1 at r = 8 are cells Table 3 reuses)."""
    from experiments.run.saved import pick_device
    from experiments.tracking.sweeps import download_run

    if one_scale(run) is None:
        return pd.DataFrame()
    tick, shape = time.time(), table3.run_shape(run.data.params)
    saved = download_run(tracking_uri, run.info.run_id, Path(cache) / "models")
    loss = table3.training_loss(saved, shape["scale"], cache, device=pick_device(None))
    rows = pd.DataFrame({"record": "extra", "run_id": run.info.run_id, "key": TABLE3_TRAIN,
                         "image": range(len(loss.per_image)), "value": loss.per_image.double().numpy()})
    detail = {**shape, "train_nats": loss.nats, "train_se": loss.nats_se, "images": len(loss.per_image),
              **toolkit.evaluation_provenance(tick)}
    return pd.concat([rows, detail_row(run, TABLE3_RUN, detail)], ignore_index=True)


def data_summary(tracking_uri: str, run, cache: Path) -> pd.DataFrame:
    """Tables 2 and 4's "Data" section: the summary of the sweep's data (the stand-in or ImageNet, the VQ-VAE's
    reconstruction, the encoder; ``toolkit.sweep_data_summary`` from the store), one extra row per run (every
    run of a sweep carries the same), so that the reports render without the store or the data caches."""
    from experiments.tracking.store import MlflowClient

    sweep_run = MlflowClient(tracking_uri).get_run(run.data.tags["mlflow.parentRunId"])
    summary = toolkit.sweep_data_summary(tracking_uri, sweep_run)
    if summary is None:
        return pd.DataFrame()
    return detail_row(run, DATA_SUMMARY, summary)


figure4_losses.keys = (FIGURE4_LOSSES, FIGURE4_EVALUATION)
figure3_samples.keys = (FIGURE3_SAMPLES, FIGURE3_EVALUATION)
data_summary.keys = (DATA_SUMMARY,)
table3_training.keys = (TABLE3_TRAIN, TABLE3_RUN)
generator_run.keys = (generators.GENERATOR_TAGS,)

EXTRAS: dict[str, list[ExtraEvidence]] = {"table1": [figure4_losses, figure3_samples, table3_training],
                                          "table2": [data_summary], "table3": [table3_training],
                                          "generators": [generator_run],
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
                                  f"losses; {ADD_EXTRAS}")
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
    evaluation = {**evaluations(extras[(extras.key == FIGURE4_EVALUATION) & extras.run_id.isin(runs_read)]),
                  "images": int(frame.image.max()) + 1}
    return Figure4Evidence(frame, evaluation, read.baselines)
