#!/usr/bin/env bash
# GPU smoke check of the `gpu` scale, shortened: M_1 and the co-trained P~ for a few hundred steps each on
# one GPU (bf16 autocast, eager). Prints losses and tokens/s; exits non-zero when a validation loss is not
# finite or did not fall below the first training loss divided by FACTOR. Finishes in under 4 minutes.
#   usage: benchmarks/gpu_check.sh [extra Hydra overrides]
set -euo pipefail
export MLFLOW_DISABLE_TELEMETRY=true DO_NOT_TRACK=true RAY_USAGE_STATS_ENABLED=0 HF_HUB_OFFLINE=1
cd "$(dirname "$0")/.."
PYTHON="${PYTHON:-python}"
STEPS="${STEPS:-300}"
FACTOR="${FACTOR:-1.5}"   # the loss must drop from ~ln(256) = 5.5 to below 5.5 / 1.5 = 3.7 nats/token
WORK="$(mktemp -d)"
trap 'rm -rf "$WORK"' EXIT

"$PYTHON" - "$WORK" "$STEPS" "$FACTOR" "$@" <<'PY'
import math
import os
import sys
import time

import mlflow
import torch

from experiments.config import compose
from experiments.train import train

work, steps, factor, extra = sys.argv[1], int(sys.argv[2]), float(sys.argv[3]), sys.argv[4:]
if not torch.cuda.is_available() and not os.environ.get("GPU_CHECK_ON_CPU"):  # the CPU run checks the script
    sys.exit("gpu_check: no CUDA device")
print(f"device: {torch.cuda.get_device_name(0) if torch.cuda.is_available() else 'cpu'}; {steps} steps per run; factor {factor}")
failed = False
for name, kind in {"M1": ["kind=unconditional"], "Pall": ["kind=projected", "projector.scales=[0.5,0.25,0.125]"]}.items():
    cfg = compose(["scale=gpu", *kind, f"train.steps={steps}", "train.warmup_steps=50", "train.compile=false",
                   f"eval.every={steps}", "eval.samples=4", "data.val_size=256", f"run_dir={work}/{name}",
                   f"paths.cache={work}/cache", f"paths.runs={work}/runs", f"tracking.uri=sqlite:///{work}/mlflow.db",
                   f"tracking.artifacts={work}/artifacts", *extra])
    start = time.perf_counter()
    metrics = train(cfg)
    wall = time.perf_counter() - start
    client = mlflow.tracking.MlflowClient(f"sqlite:///{work}/mlflow.db")
    run = client.search_runs(client.get_experiment_by_name("projectable").experiment_id,
                             f"attributes.run_name = '{name}'")[0]
    first = {m: client.get_metric_history(run.info.run_id, f"train/{m}")[0].value for m in ("model", "source",
             "P1_2", "P1_4", "P1_8") if client.get_metric_history(run.info.run_id, f"train/{m}")}
    rates = [m.value for m in client.get_metric_history(run.info.run_id, "train/tokens_per_s")]
    rate = sorted(rates)[len(rates) // 2]
    losses = {k.split("/")[2]: v for k, v in metrics.items() if k.endswith("/nats")}
    print(f"{name}: median {rate:,.0f} tokens/s, {wall:.0f} s; loss at step 1 -> validation loss at the end: "
          + ", ".join(f"{m} {first[m]:.3f} -> {v:.3f}" for m, v in losses.items()))
    for model, value in losses.items():
        if not math.isfinite(value) or value > first[model] / factor:
            print(f"FAIL {name}/{model}: {value} is not finite or not below {first[model]:.3f} / {factor}")
            failed = True
sys.exit(1 if failed else 0)
PY
