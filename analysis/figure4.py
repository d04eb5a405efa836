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
# # Figure 4: zero-shot generalisation past the training range of t1
#
# Evaluates the final P_s and M~_s of the newest finished Table 1 sweep, without training, on the validation
# images re-rendered with the scale coordinate t1 over 0..2 (training range 0..1), decides the paper's claim
# by the rule fixed in `experiments/reporting/figure4.py`, and writes `reports/<scale>/figure4.png`, `.csv`
# and `.md`.
# Executed headless by `nox -s reproduce_figure4` and `nox -s reports`; parameters come from the environment,
# shared by every notebook (`experiments.reporting.toolkit.notebook_params`): `PROJECTABLE_REPORT_SCALE`
# (default `cpu`), `_TRACKING_URI` (default: the repository's `mlflow.db`), `_EXPERIMENT` (default
# `projectable`), `_REPORTS` (default `reports/`), `_CACHE` (default `.cache/reports`).

# %%
from experiments import telemetry

telemetry.apply()  # before MLflow is imported

import time

from experiments.reporting import evidence as report_evidence
from experiments.reporting import figure4, toolkit

# %% [markdown]
# ## Losses over the t1 grid (per image)
#
# From the store: the saved models of the newest finished Table 1 sweep, evaluated here. From the sweep's
# evidence file: the same evaluation, made by the sweep's driver as each run finished.

# %%
params, sweep_run, trials, prov = toolkit.report_inputs("figure4")
evidence = toolkit.evidence_of(sweep_run)
if evidence is None:
    loaded = figure4.load_table1_models(trials, params.tracking_uri, params.cache)
    tick = time.time()
    frame = figure4.evaluate_zero_shot(loaded.models, loaded.data, figure4.T1_GRID, device=loaded.device)
    evaluation = toolkit.evaluation_provenance(tick, images=int(frame.image.max()) + 1)
    baselines = loaded.baselines
else:
    frame, evaluation, baselines = report_evidence.figure4_frame(evidence, trials)
summary = figure4.zero_shot_summary(frame)
summary.pivot(index="t1", columns="model", values="nats")

# %% [markdown]
# ## The claim, decided by the rule fixed before the run

# %%
verdicts = figure4.zero_shot_verdicts(frame, s=0.5)
ranges = figure4.range_frame(frame)
toolkit.verdicts_frame(verdicts)

# %% [markdown]
# ## Report files

# %%
toolkit.publish_report(params, sweep_run, figure4.write_report, frame, summary, verdicts, ranges, prov,
                       evaluation, baselines)
