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
# # Table 2: M~_s and P_s on the ImageNet track (ImageNet 64x64, or its SynthMNIST stand-in)
#
# Reads the newest finished Table 2 sweep of one scale from MLflow and the data summary its config names,
# combines the runs into Table 2's cells, checks the claims by the rules of `experiments/reporting/claims.py`,
# and writes `reports/<scale>/table2.md`, `.csv` and `.png` (`experiments/reporting/table2.py`).
# Executed headless by `nox -s reproduce_table2` and `nox -s reports`; parameters come from the environment,
# shared by every notebook (`experiments.reporting.toolkit.notebook_params`): `PROJECTABLE_REPORT_SCALE`
# (default `cpu`), `_TRACKING_URI` (default: the repository's `mlflow.db`), `_EXPERIMENT` (default
# `projectable`), `_REPORTS` (default `reports/`), `_CACHE` (default `.cache/reports`).

# %%
from experiments import telemetry

telemetry.apply()  # before MLflow is imported

from experiments.reporting import table2, toolkit

# %% [markdown]
# ## The newest complete sweep of this scale, its runs and its data

# %%
params, sweep_run, trials, prov = toolkit.report_inputs("table2", per_image=True)
summary = toolkit.sweep_data_summary(params.tracking_uri, sweep_run)
print("\n".join(toolkit.data_lines(summary)))
trials[["trial", "stage", "cell", "seed", "status", "steps"]]

# %% [markdown]
# ## Cells (ours beside the paper's) and claims

# %%
table = table2.table2_cells(trials, baselines=toolkit.baselines_of(sweep_run))
margin = toolkit.margin_of(sweep_run)
verdicts = table2.table2_verdicts(table, margin)
toolkit.verdicts_frame(verdicts)

# %% [markdown]
# ## Report files

# %%
curves, uses = table2.SPEC.curves_and_uses(params, sweep_run, trials, table, prov)
toolkit.publish_report(params, sweep_run, table2.write_report, table, verdicts, prov, margin, summary, trials, curves,
                       uses, extra=[params.out_dir / "table2_curves.png"])
