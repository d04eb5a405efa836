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

from experiments.reporting import evidence as report_evidence
from experiments.reporting import figure3, toolkit

torch.set_num_threads(1)

# %% [markdown]
# ## Seed-0 runs of P_1/2, P_1/4, P_1/8 and M~_1/2, M~_1/4, M~_1/8, and their samples
#
# From the store: the runs' final weights, each row sampled here for the first validation task vectors. From
# evidence files: the rows the sweep's driver sampled the same way as each run finished
# (`experiments/reporting/evidence.py`), and the dataset rebuilt from this checkout's config of the scale.

# %%
params, sweep_run, trials, prov = toolkit.report_inputs("figure3")
evidence = toolkit.evidence_of(sweep_run)
tick = time.time()
if evidence is None:
    models = figure3.load_table1_models(trials, params.tracking_uri, params.cache)
    data, baselines = models.data, models.baselines
    tasks = torch.from_numpy(data.validation_items().task[: figure3.NUM_TASKS])  # (N, 18)
    rows = figure3.sample_rows(models.projected, models.conditional, tasks)
    evaluation = toolkit.evaluation_provenance(tick, seed=figure3.SEED)
else:
    drawn = report_evidence.figure3_rows(evidence, trials)
    rows, evaluation, baselines = drawn.rows, drawn.evaluation, drawn.baselines
    data = report_evidence.figure3_data(params, sweep_run)
[row.label for row in rows]

# %% [markdown]
# ## The figure

# %%
items = data.validation_items()
tasks = torch.from_numpy(items.task[: figure3.NUM_TASKS])
title = f"Figure 3, scale {params.scale} (sweep {sweep_run.data.tags['sweep_id']})"
out = figure3.compose_figure(data, tasks, items.digit_index[: figure3.NUM_TASKS], rows,
                             params.out_dir / "figure3.png", title=title)
display(Image(filename=str(out)))

# %%
figure3.write_markdown(params.out_dir, prov, rows, evaluation, baselines)
toolkit.log_to_sweep(params, sweep_run, toolkit.ReportFiles(params.out_dir / "figure3.md", None, out))
