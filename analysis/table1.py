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
# Reads the newest complete Table 1 sweep of one scale from MLflow (or, without it, from the sweep's evidence
# files in `reports/<scale>/evidence`, `_SOURCE` below), combines its runs into the cells of
# Table 1, checks the paper's qualitative claims by the rules fixed in `experiments/reporting/claims.py`, and
# writes `reports/<scale>/table1.md`, `.csv` and `.png` (`experiments/reporting/table1.py`).
# Executed headless by `nox -s reproduce_table1` and `nox -s reports`; parameters come from the environment,
# shared by every notebook (`experiments.reporting.toolkit.notebook_params`): `PROJECTABLE_REPORT_SCALE`
# (default `cpu`), `_TRACKING_URI` (default: the repository's `mlflow.db`), `_EXPERIMENT` (default
# `projectable`), `_REPORTS` (default `reports/`), `_CACHE` (default `.cache/reports`), `_SOURCE` (`auto`: the
# store when it has the sweep, else its evidence files; `store`; `evidence`), `_SWEEPS` (evidence: which sweeps).

# %%
from experiments import telemetry

telemetry.apply()  # before MLflow is imported

from experiments.reporting import table1, toolkit

# %% [markdown]
# ## The newest complete sweep of this scale and its runs

# %%
params, sweep_run, trials, prov = toolkit.report_inputs("table1", per_image=True)  # per-image: paired SEs
trials[["trial", "stage", "cell", "seed", "status", "steps"]]

# %% [markdown]
# ## Cells of Table 1 (ours beside the paper's)

# %%
table = table1.table1_cells(trials, baselines=toolkit.baselines_of(sweep_run))
table1.results_frame(table)

# %% [markdown]
# ## Claims

# %%
margin = toolkit.margin_of(sweep_run)
verdicts = table1.verdicts_for(table, margin)
toolkit.verdicts_frame(verdicts)

# %% [markdown]
# ## Report files (with the learning curves and own, permuted and mean t of every model that reads t)

# %%
curves, uses = table1.SPEC.curves_and_uses(params, sweep_run, trials, table, prov)
toolkit.publish_report(params, sweep_run, table1.write_report, table, verdicts, prov, margin, trials, curves, uses,
                       extra=[params.out_dir / "table1_curves.png"])
