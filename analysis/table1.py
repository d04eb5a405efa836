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
# # Table 1: M_s, M~_s, P_s and P~ on SynthMNIST
#
# Reads the newest complete Table 1 sweep of one scale from MLflow, combines its runs into the cells of
# Table 1, checks the paper's qualitative claims by the rules fixed in `experiments/claims.py`, and writes
# `reports/<scale>/table1.md`, `.csv` and `.png`. Executed headless by `nox -s reproduce_table1`;
# parameters come from the environment:
#
# - `TABLE1_SCALE` (default `cpu`): which scale's sweep to report
# - `TABLE1_TRACKING_URI` (default: the repository's `mlflow.db`), `TABLE1_EXPERIMENT` (default `projectable`)
# - `TABLE1_REPORTS` (default: `reports/` in the repository)

# %%
import os
from pathlib import Path

from IPython.display import Image, Markdown, display

from experiments import report
from experiments.claims import summarise
from experiments.config import project_root

root = project_root()
scale = os.environ.get("TABLE1_SCALE", "cpu")
tracking_uri = os.environ.get("TABLE1_TRACKING_URI", f"sqlite:///{root}/mlflow.db")
experiment = os.environ.get("TABLE1_EXPERIMENT", "projectable")
out_dir = Path(os.environ.get("TABLE1_REPORTS", root / "reports")) / scale
print(f"scale={scale} store={tracking_uri} -> {out_dir}")

# %% [markdown]
# ## The newest complete sweep of this scale and its runs

# %%
sweep_run = report.find_sweep(tracking_uri, experiment, scale)
if sweep_run is None:
    raise SystemExit(
        f"no finished table1 sweep at scale {scale} in {tracking_uri}; "
        f"run `python experiments/sweep.py experiment=table1 scale={scale}` first"
    )
sweep_id = sweep_run.data.tags["sweep_id"]
trials = report.load_trials(tracking_uri, experiment, sweep_id)
trials = report.attach_per_image(trials, tracking_uri)  # per-image losses: paired standard errors
trials[["trial", "stage", "cell", "seed", "status", "steps"]]

# %% [markdown]
# ## Cells of Table 1 (ours beside the paper's)

# %%
table = report.table1_cells(trials)
report.results_frame(table)

# %% [markdown]
# ## Claims

# %%
margin = report.margin_of(sweep_run)
verdicts = report.verdicts_for(table, margin)
for claim, verdict in summarise(verdicts).items():
    print(f"{claim}: {verdict}")
report.verdicts_frame(verdicts)

# %% [markdown]
# ## Report files

# %%
prov = report.provenance(sweep_run, trials)
files = report.write_report(out_dir, table, verdicts, prov, margin, trials)
display(Markdown(files.markdown.read_text()))
display(Image(filename=str(files.png)))
