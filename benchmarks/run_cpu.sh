#!/usr/bin/env bash
# Every CPU benchmark in one run, for the numbers of benchmarks/README.md: projection (with the copy-bandwidth
# floor), training step and peak memory against transformers, sampling with the KV cache, the generators.
# Measure on an idle machine: it refuses to start while the 1-minute load average is above MAX_LOAD (default
# 0.5; other work on the cores makes every number a lower bound). Output: benchmarks/results/cpu-<date>.md.
#   usage: benchmarks/run_cpu.sh [--quick]
set -euo pipefail
export MLFLOW_DISABLE_TELEMETRY=true DO_NOT_TRACK=true RAY_USAGE_STATS_ENABLED=0 HF_HUB_OFFLINE=1
cd "$(dirname "$0")/.."
PYTHON="${PYTHON:-.venv/bin/python}"
MAX_LOAD="${MAX_LOAD:-0.5}"
load=$(cut -d' ' -f1 /proc/loadavg)
if awk -v l="$load" -v m="$MAX_LOAD" 'BEGIN { exit !(l > m) }'; then
    echo "run_cpu: load average $load is above $MAX_LOAD; stop other work (or set MAX_LOAD) and rerun" >&2
    exit 2
fi
mkdir -p benchmarks/results
out="benchmarks/results/cpu-$(date +%Y-%m-%d-%H%M).md"
for script in projection train_step precision sampling generators; do
    "$PYTHON" "benchmarks/$script.py" --device cpu --threads 2 "$@" | tee -a "$out"
    echo | tee -a "$out"
done
echo "run_cpu: all results in $out"
