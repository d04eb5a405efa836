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
# # Table 4: cross-task transfer on the ImageNet track
#
# Reads the newest complete Table 4 sweep of one scale from MLflow: P_1/2 co-trained on label groups C1 and C2
# ("1/2-1/2" and "mod 2" splits; C1/C2 training sets all/all, 1/8/1/8, 1/8/all). Reports each cell's loss on
# its split's C1 and C2 beside the paper's, checks "extra C2 data helps C1" by the 2-SE rule, and writes
# `reports/<scale>/table4.md` and `.csv`. Executed headless by `nox -s reproduce_table4`; parameters:
# `TABLE4_SCALE` (default `cpu`), `TABLE4_TRACKING_URI`, `TABLE4_EXPERIMENT`, `TABLE4_REPORTS`.

# %%
import os
from pathlib import Path

from IPython.display import Markdown, display

from experiments import report, report_table2, report_table4
from experiments.claims import summarise
from experiments.config import project_root

root = project_root()
scale = os.environ.get("TABLE4_SCALE", "cpu")
tracking_uri = os.environ.get("TABLE4_TRACKING_URI", f"sqlite:///{root}/mlflow.db")
experiment = os.environ.get("TABLE4_EXPERIMENT", "projectable")
out_dir = Path(os.environ.get("TABLE4_REPORTS", root / "reports")) / scale
print(f"scale={scale} store={tracking_uri} -> {out_dir}")

# %% [markdown]
# ## The newest complete sweep of this scale, its runs and its data

# %%
sweep_run = report.find_sweep(tracking_uri, experiment, scale, name="table4")
if sweep_run is None:
    raise SystemExit(f"no finished table4 sweep at scale {scale} in {tracking_uri}; run `nox -s reproduce_table4` first")
trials = report.load_trials(tracking_uri, experiment, sweep_run.data.tags["sweep_id"])
summary = report_table2.sweep_data_summary(tracking_uri, sweep_run)
trials[["trial", "stage", "cell", "seed", "status", "steps"]]

# %% [markdown]
# ## C1 and C2 losses (ours beside the paper's) and the claim

# %%
table = report_table4.table4_cells(trials)
verdicts = report_table4.table4_verdicts(table)
verdicts += report_table4.paired_verdicts(report_table4.per_image_losses(tracking_uri, trials))
for claim, verdict in summarise(verdicts).items():
    print(f"{claim}: {verdict}")
report_table4.results_frame(table)

# %% [markdown]
# ## Report files

# %%
prov = report.provenance(sweep_run, trials)
files = report_table4.write_report(out_dir, table, verdicts, prov, summary, trials)
display(Markdown(files.markdown.read_text()))
