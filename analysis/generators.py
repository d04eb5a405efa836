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
# # The weight generators of App. B side by side
#
# Reads the newest finished generators sweep of one scale from MLflow and the Table 1 runs it reused (P_s,
# the step-matched M_s and M~_s), puts the projection, the blocks, low_rank and linear generators beside the
# baselines at s = 1/2, 1/4, 1/8 with each generator's size knob and parameter counts, judges "the projection
# beats generator X" and "generator X beats M~_s" by Table 1's rule with Holm-Bonferroni over the family
# (`experiments/reporting/claims.py`), draws one sample grid per generator, and writes
# `reports/<scale>/generators.{md,csv,png}` and `generators_samples_<generator>.png`
# (`experiments/reporting/generators.py`). Executed headless by `nox -s reproduce_generators` and
# `nox -s reports`; parameters: `PROJECTABLE_REPORT_SCALE`, `_TRACKING_URI`, `_EXPERIMENT`, `_REPORTS`, `_CACHE`,
# `_SOURCE` (store, evidence or auto: from the committed evidence files the sweep wrote, with the samples its
# driver drew as each run finished), `_SWEEPS`.

# %%
from experiments import telemetry

telemetry.apply()  # before MLflow is imported

import torch
from IPython.display import Image, display

from experiments.reporting import evidence as report_evidence
from experiments.reporting import figure3, generators, toolkit

torch.set_num_threads(1)
params = toolkit.notebook_params()

# %% [markdown]
# ## The sweep, its runs and the reused Table 1 runs

# %%
runs = generators.generator_runs(params)
trials = runs.trials  # with per-image losses: paired SEs
trials[["trial", "cell", "seed", "status", "steps", "generator", "match_knob", "match_size", "reused_from"]]

# %% [markdown]
# ## Cells, parameter counts and claims

# %%
table = generators.generator_cells(trials, toolkit.baselines_of(runs.sweep_run))
alpha = float(runs.sweep_run.data.params.get("experiment.family_level", 0.05))
claims = generators.judge(table.cells, alpha)
counts = generators.params_frame(trials)
display(counts)
toolkit.verdicts_frame(claims.corrected)

# %% [markdown]
# ## Samples per generator (seed 0, the first validation task vectors)

# %%
evidence = toolkit.evidence_of(runs.sweep_run)
if evidence is None:  # the store: sample the saved models again
    models = generators.load_sample_models(trials, params.tracking_uri, params.cache)
    data = models.data
else:  # the rows the sweep's driver drew; the data rebuilt from this checkout's config of the scale
    data = report_evidence.figure3_data(params, runs.sweep_run)
items = data.validation_items()
tasks = torch.from_numpy(items.task[: figure3.NUM_TASKS])  # (N, 18)
rows = generators.model_rows(models, tasks) if evidence is None else generators.evidence_rows(runs)
title = f"scale {params.scale}"
samples = generators.sample_grids(rows, data, tasks, items.digit_index[: figure3.NUM_TASKS], params.out_dir, title)
for path in samples:
    display(Image(filename=str(path)))

# %% [markdown]
# ## Report files

# %%
prov = toolkit.provenance(runs.sweep_run, trials[trials.reused_from == ""])
toolkit.publish_report(params, runs.sweep_run, generators.write_report, table, claims, counts, prov, runs,
                       samples, extra=samples)
