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
# # The budget split study: which pre-training fraction f of the total steps P_s gets
#
# Reads the newest finished split-study sweep of one scale, applies the rule written in
# `experiments/conf/experiment/split_study.yaml` before the runs (lowest mean selection-set loss over s; ties
# within 0.01 go to the largest f), and writes `reports/<scale>/split_study.{md,csv,png}`
# (`experiments/reporting/split_study.py`). Executed headless by `nox -s reproduce_split_study` and
# `nox -s reports`; parameters: `PROJECTABLE_REPORT_SCALE`, `_TRACKING_URI`, `_EXPERIMENT`, `_REPORTS`, `_CACHE`.

# %%
from experiments import telemetry

telemetry.apply()  # before MLflow is imported

from experiments.reporting import split_study, toolkit

# %% [markdown]
# ## The sweep and its P_s runs

# %%
params, sweep_run, trials, prov = toolkit.report_inputs("split_study")
frame = split_study.study_frame(trials)
frame

# %% [markdown]
# ## The rule

# %%
tie = float(sweep_run.data.params.get("experiment.selection.tie", 0.01))
choice = split_study.choose_fraction(frame, tie)
print(choice.reason)

# %% [markdown]
# ## Report files

# %%
total = int(float(sweep_run.data.params.get("budget.total_steps", 0)))
toolkit.publish_report(params, sweep_run, split_study.write_report, frame, choice, prov, total, tie)
