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
# # Ablations at s = 1/8: what the gap P_1/8 - M~_1/8 depends on
#
# Reads the newest finished ablation sweep of one scale and the Table 1 sweep it started from, judges each
# declared change by its effect on P_1/8 - M~_1/8 (`experiments/reporting/ablations.py`), and writes
# `reports/<scale>/ablations.{md,csv,png}`. Executed headless by `nox -s reproduce_ablations` and
# `nox -s reports`; parameters: `PROJECTABLE_REPORT_SCALE`, `_TRACKING_URI`, `_EXPERIMENT`, `_REPORTS`, `_CACHE`.

# %%
from experiments import telemetry

telemetry.apply()  # before MLflow is imported

from experiments.reporting import ablations, toolkit

# %% [markdown]
# ## The ablation runs and Table 1's reference cells

# %%
params, sweep_run, trials, prov = toolkit.report_inputs("ablations", per_image=True)
source_sweep = sweep_run.data.tags["source_sweep"]
cells = ablations.ablation_cells(trials, toolkit.reference_trials(params, sweep_run, ablations.REFERENCE_CELLS))
verdicts = ablations.ablation_verdicts(cells)
ablations.results_frame(cells, verdicts)

# %% [markdown]
# ## Report files

# %%
toolkit.publish_report(params, sweep_run, ablations.write_report, cells, verdicts, prov, source_sweep)
