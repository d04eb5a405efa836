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
# # Figure 3: SynthMNIST task vectors, their images, and samples from P_s(t) and M~_s
#
# For a few validation task vectors t: the data package's renders and their palette-quantised versions, then
# one sample per t from the standalone P_1/2(t), P_1/4(t), P_1/8(t) generated in one shot from the final
# projected runs of the newest finished Table 1 sweep, and one from M~_1/2, M~_1/4, M~_1/8 given the same t.
# Writes `reports/<scale>/figure3.png` and `.md` (`experiments/reporting/figure3.py`).
# Executed headless by `nox -s reproduce_figure3` and `nox -s reports`; parameters come from the environment,
# shared by every notebook (`experiments.reporting.toolkit.notebook_params`): `PROJECTABLE_REPORT_SCALE`
# (default `cpu`), `_TRACKING_URI` (default: the repository's `mlflow.db`), `_EXPERIMENT` (default
# `projectable`), `_REPORTS` (default `reports/`), `_CACHE` (default `.cache/reports`).

# %%
from experiments import telemetry

telemetry.apply()  # before MLflow is imported

import time

import torch
from IPython.display import Image, display

from experiments.reporting import figure3, toolkit

torch.set_num_threads(1)

# %% [markdown]
# ## Seed-0 runs of P_1/2, P_1/4, P_1/8 and M~_1/2, M~_1/4, M~_1/8

# %%
params, sweep_run, trials, prov = toolkit.report_inputs("figure3")
models = figure3.load_table1_models(trials, params.tracking_uri, params.cache)
models.runs[["trial", "cell", "run_id"]]

# %% [markdown]
# ## Task vectors (the first validation items) and samples

# %%
tick = time.time()
items = models.data.validation_items()
tasks = torch.from_numpy(items.task[: figure3.NUM_TASKS])  # (N, 18)
rows = figure3.sample_rows(models.projected, models.conditional, tasks, seed=0)
title = f"Figure 3, scale {params.scale} (sweep {sweep_run.data.tags['sweep_id']})"
out = figure3.compose_figure(models.data, tasks, items.digit_index[: figure3.NUM_TASKS], rows,
                             params.out_dir / "figure3.png", title=title)
display(Image(filename=str(out)))

# %%
evaluation = toolkit.evaluation_provenance(tick, seed=0)
figure3.write_markdown(params.out_dir, prov, rows, evaluation, models.baselines)
toolkit.log_to_sweep(params, sweep_run, toolkit.ReportFiles(params.out_dir / "figure3.md", None, out))
