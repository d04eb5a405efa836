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
# # Table 2: M~_s vs P_s on the ImageNet track
#
# Reads the newest complete Table 2 sweep of one scale from MLflow, combines its runs into Table 2's cells,
# checks the claims by the rules of `experiments/claims.py`, states which images the runs saw (ImageNet or
# the SynthMNIST stand-in) and writes `reports/<scale>/table2.md`, `.csv` and `.png`. Executed headless by
# `nox -s reproduce_table2`; parameters come from the environment:
#
# - `TABLE2_SCALE` (default `cpu`), `TABLE2_TRACKING_URI` (default: the repository's `mlflow.db`),
#   `TABLE2_EXPERIMENT` (default `projectable`), `TABLE2_REPORTS` (default: `reports/` in the repository)

# %%
import os
from pathlib import Path

from IPython.display import Image, Markdown, display

from experiments import report, report_table2
from experiments.claims import summarise
from experiments.config import project_root

root = project_root()
scale = os.environ.get("TABLE2_SCALE", "cpu")
tracking_uri = os.environ.get("TABLE2_TRACKING_URI", f"sqlite:///{root}/mlflow.db")
experiment = os.environ.get("TABLE2_EXPERIMENT", "projectable")
out_dir = Path(os.environ.get("TABLE2_REPORTS", root / "reports")) / scale
print(f"scale={scale} store={tracking_uri} -> {out_dir}")

# %% [markdown]
# ## The newest complete sweep of this scale, its runs and its data

# %%
sweep_run = report.find_sweep(tracking_uri, experiment, scale, name="table2")
if sweep_run is None:
    raise SystemExit(f"no finished table2 sweep at scale {scale} in {tracking_uri}; run `nox -s reproduce_table2` first")
trials = report.load_trials(tracking_uri, experiment, sweep_run.data.tags["sweep_id"])
trials = report.attach_per_image(trials, tracking_uri)  # paired standard errors
summary = report_table2.sweep_data_summary(tracking_uri, sweep_run)
print("\n".join(report_table2.data_lines(summary)))
trials[["trial", "stage", "cell", "seed", "status", "steps"]]

# %% [markdown]
# ## Cells (ours beside the paper's) and claims

# %%
table = report_table2.table2_cells(trials)
margin = report.margin_of(sweep_run)
verdicts = report_table2.table2_verdicts(table, margin)
for claim, verdict in summarise(verdicts).items():
    print(f"{claim}: {verdict}")
report_table2.results_frame(table)

# %% [markdown]
# ## Report files

# %%
prov = report.provenance(sweep_run, trials)
files = report_table2.write_report(out_dir, table, verdicts, prov, margin, summary, trials)
display(Markdown(files.markdown.read_text()))
display(Image(filename=str(files.png)))
