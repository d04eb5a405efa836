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
# "at equal r a larger source projects better" by the rules of `experiments/reporting/claims.py`, and writes
# `reports/<scale>/table3.md` and `.csv` (`experiments/reporting/table3.py`).
# Executed headless by `nox -s reproduce_table3` and `nox -s reports`; parameters come from the environment,
# shared by every notebook (`experiments.reporting.toolkit.notebook_params`): `PROJECTABLE_REPORT_SCALE`
# (default `cpu`), `_TRACKING_URI` (default: the repository's `mlflow.db`), `_EXPERIMENT` (default
# `projectable`), `_REPORTS` (default `reports/`), `_CACHE` (default `.cache/reports`).

# %%
from experiments import telemetry

telemetry.apply()  # before MLflow is imported

import time

from experiments.reporting import table3, toolkit
from experiments.tracking.sweeps import attach_per_image

params = toolkit.notebook_params()

# %% [markdown]
# ## The sweep, its runs and the reused Table 1 runs

# %%
sweep_run, trials = table3.load_runs(params.tracking_uri, params.experiment, params.scale)
trials[["trial", "cell", "seed", "status", "steps", "target", "source", "scale", "rank", "reused_from"]]

# %% [markdown]
# ## Training losses of the final models (fixed draw of the training stream)

# %%
tick = time.time()
train = table3.training_losses(trials[trials.status == "FINISHED"], params.tracking_uri, params.cache)
evaluation = toolkit.evaluation_provenance(tick, images=int(sweep_run.data.params.get("data.val_size", 0)))
train.drop(columns="train_per_image")

# %% [markdown]
# ## Cells (ours beside the paper's) and claims

# %%
trials = attach_per_image(trials, params.tracking_uri)  # validation per-image losses: paired SEs
table = table3.table3_cells(trials, train)
verdicts = table3.source_size_verdicts(table.train, "training") + table3.source_size_verdicts(table.val, "validation")
matched = table3.matched_size_frame(table)
toolkit.verdicts_frame(verdicts)

# %% [markdown]
# ## Report files

# %%
prov = toolkit.provenance(sweep_run, trials[trials.reused_from == ""])
toolkit.publish_report(params, sweep_run, table3.write_report, table, verdicts, matched, prov, sweep_run,
                       evaluation)
