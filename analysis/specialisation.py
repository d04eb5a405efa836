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
# # How much of P_s is specialisation?
#
# Reads the newest finished specialisation sweep of one scale (P_s trained and evaluated with the training
# stream's mean t, and the every-position conditional baseline) and the Table 1 sweep it started from (P_s(t),
# the step-matched M_s and M~_s), splits P_s(t) - M_s into inheriting the source and specialisation
# (`experiments/reporting/specialisation.py`), and writes `reports/<scale>/specialisation.{md,csv,png}`.
# Executed headless by `nox -s reproduce_specialisation` and `nox -s reports`; parameters:
# `PROJECTABLE_REPORT_SCALE`, `_TRACKING_URI`, `_EXPERIMENT`, `_REPORTS`, `_CACHE`.

# %%
from experiments import telemetry

telemetry.apply()  # before MLflow is imported

from experiments.reporting import specialisation, task_use, toolkit

# %% [markdown]
# ## The specialisation runs and Table 1's reference cells

# %%
params, sweep_run, trials, prov = toolkit.report_inputs("specialisation", per_image=True)
source_sweep = sweep_run.data.tags["source_sweep"]
reference = toolkit.reference_trials(params, sweep_run, specialisation.REFERENCE_CELLS)
cells = specialisation.specialisation_cells(trials, reference)
verdicts = specialisation.specialisation_verdicts(cells)
specialisation.results_frame(cells, verdicts)

# %% [markdown]
# ## Report files

# %%
uses = specialisation.task_uses(trials)  # M^every_s and P_s(const) under permuted and mean t: measured
task_use.write_csv(params.out_dir, "specialisation", uses)
toolkit.publish_report(params, sweep_run, specialisation.write_report, cells, verdicts, prov, source_sweep, uses)
