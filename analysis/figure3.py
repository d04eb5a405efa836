# ---
# jupyter:
#   jupytext:
#     formats: py:percent
#     text_representation:
#       extension: .py
#       format_name: percent
#   kernelspec:
#     display_name: Python 3
#     language: python
#     name: python3
# ---

# %% [markdown]
# # Figure 3: SynthMNIST task vectors, their images, and samples from P_s(t) and M~_s
#
# For a few validation task vectors t: the data package's renders and their palette-quantised versions, then
# one sample per t from the standalone P_1/2(t), P_1/4(t), P_1/8(t) generated in one shot from the final
# projected runs of the newest finished Table 1 sweep, and one from M~_1/2, M~_1/4, M~_1/8 given the same t.
# Writes `reports/<scale>/figure3.png`. Executed headless by `nox -s reproduce_figure3` and `nox -s reports`;
# parameters: `FIGURE3_SCALE` (default `cpu`), `FIGURE3_TRACKING_URI`, `FIGURE3_EXPERIMENT`, `FIGURE3_REPORTS`,
# `FIGURE3_TASKS` (columns, default 8).

# %%
import os
from pathlib import Path

import torch
from IPython.display import Image, display

from experiments import report, samples_figure
from experiments.config import project_root
from experiments.saved_models import data_of, download_run, load_model, runs_frame
from experiments.tracking import git_commit, machine

torch.set_num_threads(1)
root = project_root()
scale = os.environ.get("FIGURE3_SCALE", "cpu")
tracking_uri = os.environ.get("FIGURE3_TRACKING_URI", f"sqlite:///{root}/mlflow.db")
experiment = os.environ.get("FIGURE3_EXPERIMENT", "projectable")
out_dir = Path(os.environ.get("FIGURE3_REPORTS", root / "reports")) / scale
cache_dir = Path(os.environ.get("FIGURE3_CACHE", root / ".cache" / "reports"))
num_tasks = int(os.environ.get("FIGURE3_TASKS", "8"))
print(f"scale={scale} store={tracking_uri} -> {out_dir}")

# %% [markdown]
# ## Seed-0 runs of P_1/2, P_1/4, P_1/8 and M~_1/2, M~_1/4, M~_1/8

# %%
sweep_run = report.find_sweep(tracking_uri, experiment, scale)
if sweep_run is None:
    raise SystemExit(f"no finished table1 sweep at scale {scale} in {tracking_uri}; "
                     f"run `nox -s reproduce_table1 -- scale={scale}` first")
sweep_id = sweep_run.data.tags["sweep_id"]
trials = report.load_trials(tracking_uri, experiment, sweep_id)
cells = {"P2": 0.5, "P4": 0.25, "P8": 0.125, "Mc2": 0.5, "Mc4": 0.25, "Mc8": 0.125}
runs = runs_frame(trials, list(cells))
runs = runs[runs.seed == 0]
saved = {row.cell: download_run(tracking_uri, row.run_id, cache_dir / "models") for row in runs.itertuples()}
projected = {cells[c]: load_model(s) for c, s in saved.items() if c.startswith("P")}
conditional = {cells[c]: load_model(s) for c, s in saved.items() if c.startswith("Mc")}
runs[["trial", "cell", "run_id"]]

# %% [markdown]
# ## Task vectors (the first validation items) and samples

# %%
data = data_of(next(iter(saved.values())).config, cache_dir / "data")
items = data.validation_items()
tasks = torch.from_numpy(items.task[:num_tasks])  # (N, 18)
rows = samples_figure.sample_rows(projected, conditional, tasks, seed=0)
out = samples_figure.compose_figure(
    data, tasks, items.digit_index[:num_tasks], rows, out_dir / "figure3.png",
    title=f"Figure 3, scale {scale} (sweep {sweep_id})",
)
display(Image(filename=str(out)))

# %%
prov = report.provenance(sweep_run, trials)
samples_figure.write_markdown(out_dir, prov, rows, {"seed": 0, "commit": git_commit(root), "machine": machine()})
