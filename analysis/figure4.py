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
# Loads the final P_1/2, P_1/4, P_1/8 and M~_1/2, M~_1/4, M~_1/8 of the newest finished Table 1 sweep of one
# scale from MLflow and evaluates them, without training, on the validation images re-rendered with the scale
# coordinate t1 set to 0, 0.2, ..., 2 (training range 0..1). The claim "P_1/2 generalises past the training
# range better than M~_1/2" is decided by the rule fixed in `experiments/zero_shot.py`. Writes
# `reports/<scale>/figure4.{png,csv,md}`. Executed headless by `nox -s reproduce_figure4` and `nox -s reports`;
# parameters: `FIGURE4_SCALE` (default `cpu`), `FIGURE4_TRACKING_URI`, `FIGURE4_EXPERIMENT`, `FIGURE4_REPORTS`,
# `FIGURE4_IMAGES` (validation images per point; default all).

# %%
import os
import time
from pathlib import Path

from IPython.display import Image, Markdown, display

from experiments import report, zero_shot
from experiments.claims import summarise
from experiments.config import project_root
from experiments.tracking import git_commit, machine

root = project_root()
scale = os.environ.get("FIGURE4_SCALE", "cpu")
tracking_uri = os.environ.get("FIGURE4_TRACKING_URI", f"sqlite:///{root}/mlflow.db")
experiment = os.environ.get("FIGURE4_EXPERIMENT", "projectable")
out_dir = Path(os.environ.get("FIGURE4_REPORTS", root / "reports")) / scale
cache_dir = Path(os.environ.get("FIGURE4_CACHE", root / ".cache" / "reports"))
images = int(os.environ["FIGURE4_IMAGES"]) if os.environ.get("FIGURE4_IMAGES") else None
print(f"scale={scale} store={tracking_uri} -> {out_dir}")

# %% [markdown]
# ## The saved models of the newest finished Table 1 sweep

# %%
sweep_run = report.find_sweep(tracking_uri, experiment, scale)
if sweep_run is None:
    raise SystemExit(f"no finished table1 sweep at scale {scale} in {tracking_uri}; "
                     f"run `nox -s reproduce_table1 -- scale={scale}` first")
trials = report.load_trials(tracking_uri, experiment, sweep_run.data.tags["sweep_id"])
loaded = zero_shot.load_table1_models(trials, tracking_uri, cache_dir)
[(m.name, m.seed, m.run_id) for m in loaded.models]

# %% [markdown]
# ## Losses over the t1 grid (per image)

# %%
tick = time.time()
frame = zero_shot.evaluate_zero_shot(loaded.models, loaded.data, zero_shot.T1_GRID, device=loaded.device,
                                     images=images)
wall_time_s = time.time() - tick
summary = zero_shot.zero_shot_summary(frame)
summary.pivot(index="t1", columns="model", values="nats")

# %% [markdown]
# ## The claim, decided by the rule fixed before the run

# %%
verdicts = zero_shot.zero_shot_verdicts(frame, s=0.5)
for claim, verdict in summarise(verdicts).items():
    print(f"{claim}: {verdict}")
ranges = zero_shot.range_frame(frame)
report.verdicts_frame(verdicts)

# %% [markdown]
# ## Report files

# %%
prov = report.provenance(sweep_run, trials)
evaluation = {"commit": git_commit(root), "machine": machine(), "wall_time_s": wall_time_s,
              "images": int(frame.image.max()) + 1}
files = zero_shot.write_report(out_dir, frame, summary, verdicts, ranges, prov, evaluation)
display(Markdown(files.markdown.read_text()))
display(Image(filename=str(files.png)))
