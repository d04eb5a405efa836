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
# every final P_s on a fixed draw of the training stream (the paper's Table 3 shows training losses), or reads
# both from the committed evidence files of its sweeps (where the sweep wrote those scores as runs finished), checks
# "at equal r a larger source projects better" by the rules of `experiments/reporting/claims.py`, and writes
# `reports/<scale>/table3.md` and `.csv` (`experiments/reporting/table3.py`).
# Executed headless by `nox -s reproduce_table3` and `nox -s reports`; parameters come from the environment,
# shared by every notebook (`experiments.reporting.toolkit.notebook_params`): `PROJECTABLE_REPORT_SCALE`
# (default `cpu`), `_TRACKING_URI` (default: the repository's `mlflow.db`), `_EXPERIMENT` (default
# `projectable`), `_REPORTS` (default `reports/`), `_CACHE` (default `.cache/reports`), `_SOURCE` (store,
# evidence or auto), `_SWEEPS`.

# %%
from experiments import telemetry

telemetry.apply()  # before MLflow is imported

from experiments.reporting import table3, toolkit

params = toolkit.notebook_params()

# %% [markdown]
# ## The sweep, its runs and the reused Table 1 runs; training losses of the final models
# (a fixed draw of the training stream)

# %%
sweep_run, trials, train, evaluation = table3.table3_runs(params)
trials[["trial", "cell", "seed", "status", "steps", "target", "source", "scale", "rank", "reused_from"]]

# %%
train.drop(columns="train_per_image")

# %% [markdown]
# ## Cells (ours beside the paper's) and claims

# %%
table = table3.table3_cells(trials, train)  # per-image losses on both draws: paired SEs
verdicts = table3.source_size_verdicts(table.train, "training") + table3.source_size_verdicts(table.val, "validation")
matched = table3.matched_size_frame(table)
toolkit.verdicts_frame(verdicts)

# %% [markdown]
# ## Report files

# %%
prov = toolkit.provenance(sweep_run, trials[trials.reused_from == ""])
toolkit.publish_report(params, sweep_run, table3.write_report, table, verdicts, matched, prov, sweep_run,
                       evaluation)
