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
# # Table 3: projecting from sources of different sizes
#
# Reads the newest finished Table 3 sweep of one scale from MLflow (and the Table 1 runs it reused), scores
# every final P_s on a fixed draw of the training stream (the paper's Table 3 shows training losses), checks
# "at equal r a larger source projects better" by the rules of `experiments/claims.py`, and writes
# `reports/<scale>/table3.md` and `.csv`. Executed headless by `nox -s reproduce_table3` and `nox -s reports`;
# parameters come from the environment:
#
# - `TABLE3_SCALE` (default `cpu`), `TABLE3_TRACKING_URI` (default: the repository's `mlflow.db`),
#   `TABLE3_EXPERIMENT` (default `projectable`), `TABLE3_REPORTS` (default: `reports/` in the repository)

# %%
import os
import time
from pathlib import Path

from IPython.display import Markdown, display

from experiments import report, report_source_size
from experiments.claims import summarise
from experiments.config import project_root

root = project_root()
scale = os.environ.get("TABLE3_SCALE", "cpu")
tracking_uri = os.environ.get("TABLE3_TRACKING_URI", f"sqlite:///{root}/mlflow.db")
experiment = os.environ.get("TABLE3_EXPERIMENT", "projectable")
out_dir = Path(os.environ.get("TABLE3_REPORTS", root / "reports")) / scale
cache_dir = Path(os.environ.get("TABLE3_CACHE", root / ".cache" / "reports"))
print(f"scale={scale} store={tracking_uri} -> {out_dir}")

# %% [markdown]
# ## The sweep, its runs and the reused Table 1 runs

# %%
sweep_run, trials = report_source_size.load_runs(tracking_uri, experiment, scale)
trials[["trial", "cell", "seed", "status", "steps", "target", "source", "scale", "rank", "reused_from"]]

# %% [markdown]
# ## Training losses of the final models (fixed draw of the training stream)

# %%
tick = time.time()
train = report_source_size.training_losses(trials[trials.status == "FINISHED"], tracking_uri, cache_dir)
images = int(sweep_run.data.params.get("data.val_size", 0))
evaluation = report_source_size.evaluation_provenance(root, images, tick)
train.drop(columns="train_per_image")

# %% [markdown]
# ## Cells (ours beside the paper's)

# %%
trials = report.attach_per_image(trials, tracking_uri)  # validation per-image losses: paired SEs
table = report_source_size.table3_cells(trials, train)
table.frame

# %% [markdown]
# ## Claims

# %%
verdicts = (report_source_size.source_size_verdicts(table.train, "training")
            + report_source_size.source_size_verdicts(table.val, "validation"))
for claim, verdict in summarise(verdicts).items():
    print(f"{claim}: {verdict}")
matched = report_source_size.matched_size_frame(table)
report.verdicts_frame(verdicts)

# %% [markdown]
# ## Report files

# %%
prov = report.provenance(sweep_run, trials[trials.reused_from == ""])
files = report_source_size.write_report(out_dir, table, verdicts, matched, prov, sweep_run, evaluation)
display(Markdown(files.markdown.read_text()))
