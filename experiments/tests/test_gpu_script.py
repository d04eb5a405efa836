"""``benchmarks/gpu_core.py``, the one script for the GPU numbers, runs end to end at its smoke size on the CPU
(the GPU machine is lent rarely; this keeps the script working until it is)."""

import os
import subprocess
import sys

from experiments.config import code_root


def test_the_gpu_script_runs_at_its_smoke_size_on_the_cpu(tmp_path):
    script = code_root() / "benchmarks" / "gpu_core.py"
    done = subprocess.run([sys.executable, str(script), "--smoke", "--device", "cpu"], capture_output=True,
                          text=True, timeout=600, cwd=tmp_path,
                          env={**os.environ, "XDG_CACHE_HOME": str(tmp_path / "cache")})
    assert done.returncode == 0, done.stderr[-3000:]
    for heading in ("### Training steps", "| M_1 + P~ (1/2, 1/4, 1/8) eager |", "### A shortened pair",
                    "| P_1/4 | 3 |"):
        assert heading in done.stdout, done.stdout[-3000:]
