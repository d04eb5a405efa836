"""Where a cpu-scale trial's time goes: one ``experiments.train.train`` call at ``scale=cpu`` (a P_1/4 run, the
most common trial of a cpu Table 1, from scratch) under cProfile, its wall time split into the driver's named
steps: start (config, data, model, MLflow run), training steps (and within them the data stream), evaluations
(the learning curve's points), the final task-vector conditions, checkpoints, samples, final weights and MLflow
models. Ray's share is not in it: a sweep's trial adds Ray's worker start and Tune's bookkeeping, read from a
sweep's evidence (each run's MLflow wall time against the sweep's).

    python benchmarks/trial_profile.py --steps 200 --precision fp32      # ~4-5 min on one thread
"""

from __future__ import annotations

import argparse
import cProfile
import pstats
import tempfile
import time
from pathlib import Path

from common import load_average, table

from experiments import telemetry

# the driver's named steps, by (file suffix, function name) -> the row they count in
STEPS = {
    ("experiments/train.py", "train_step"): "training steps (forward, backward, AdamW)",
    ("experiments/run/datasets.py", "batch"): "  of which: the training data stream",
    ("experiments/train.py", "run_evaluation"): "evaluations (every eval.every steps and at 0)",
    ("experiments/train.py", "run_task_conditions"): "final evaluation under permuted and mean t",
    ("experiments/run/checkpoint.py", "save_checkpoint"): "checkpoints",
    ("experiments/train.py", "log_samples"): "sample grids",
    ("experiments/train.py", "log_final"): "final weights and MLflow models",
    ("experiments/run/datasets.py", "build_data"): "data (palette, validation set)",
    ("experiments/train.py", "log_start"): "MLflow params and counts at start",
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--steps", type=int, default=200)
    parser.add_argument("--precision", default="fp32", choices=("fp32", "bf16"))
    parser.add_argument("--scales", default="0.25")
    args = parser.parse_args()
    telemetry.apply()
    from experiments.config import compose
    from experiments.train import train

    with tempfile.TemporaryDirectory() as root:
        overrides = ["scale=cpu", "kind=projected", f"projector.scales=[{args.scales}]",
                     f"train.steps={args.steps}", f"train.precision={args.precision}",
                     f"paths.root={root}", f"tracking.uri=sqlite:///{root}/mlflow.db",
                     f"tracking.artifacts={root}/mlartifacts", f"paths.cache={Path(root) / 'cache'}"]
        cfg = compose(overrides)
        print(f"## One cpu-scale trial under cProfile (benchmarks/trial_profile.py)\n\n- overrides: "
              f"`{' '.join(overrides[:5])}`\n- load average at start: {load_average()}\n")
        profiler = cProfile.Profile()
        tick = time.perf_counter()
        profiler.enable()
        train(cfg)
        profiler.disable()
        total = time.perf_counter() - tick
    stats = pstats.Stats(profiler).stats
    rows = []
    for (suffix, name), label in STEPS.items():
        seconds = sum(entry[3] for (file, _, function), entry in stats.items()
                      if function == name and file.endswith(suffix))
        rows.append([label, f"{seconds:.1f}", f"{seconds / total:.1%}"])
    counted = sum(float(r[1]) for r in rows if not r[0].startswith("  "))
    rows.append(["the rest (imports, MLflow run start and end, tracking writes)", f"{total - counted:.1f}",
                 f"{(total - counted) / total:.1%}"])
    print(table(["step of train()", "s", "share of the trial"], rows))
    print(f"\nWall time of train(): {total:.1f} s for {args.steps} steps. Load average at the end: {load_average()}.")


if __name__ == "__main__":
    main()
