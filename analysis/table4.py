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
# # Table 4: cross-task transfer between label groups C1 and C2 (ImageNet track or its stand-in)
#
# Reads the newest finished Table 4 sweep of one scale, reads each P_1/2 run on its split's C1 and C2, checks
# "extra C2 data helps C1" by the rules of `experiments/reporting/claims.py`, and writes
# `reports/<scale>/table4.md` and `.csv` (`experiments/reporting/table4.py`).
# Executed headless by `nox -s reproduce_table4` and `nox -s reports`; parameters come from the environment,
# shared by every notebook (`experiments.reporting.toolkit.notebook_params`): `PROJECTABLE_REPORT_SCALE`
# (default `cpu`), `_TRACKING_URI` (default: the repository's `mlflow.db`), `_EXPERIMENT` (default
# `projectable`), `_REPORTS` (default `reports/`), `_CACHE` (default `.cache/reports`).

# %%
from experiments import telemetry

telemetry.apply()  # before MLflow is imported

from experiments.reporting import table4, toolkit

# %% [markdown]
# ## The newest complete sweep of this scale, its runs and its data

# %%
params, sweep_run, trials, prov = toolkit.report_inputs("table4", per_image=True)
summary = toolkit.sweep_data_summary(params.tracking_uri, sweep_run)
trials[["trial", "stage", "cell", "seed", "status", "steps"]]

# %% [markdown]
# ## C1 and C2 losses (ours beside the paper's) and the claim

# %%
table = table4.table4_cells(trials)
verdicts = table4.table4_verdicts(table) + table4.paired_verdicts(table4.per_image_losses(params.tracking_uri, trials))
toolkit.verdicts_frame(verdicts)

# %% [markdown]
# ## Report files

# %%
toolkit.publish_report(params, sweep_run, table4.write_report, table, verdicts, prov, summary, trials)
