"""Table 3 (App. D.1): ``python experiments/sweep_source_size.py [scale=cpu] [cluster.address=...] ...``.

The user's entry point for ``experiment=table3``: P_1/4 and P_1/8 projected from Table 1's stage-1 M_1,
M_1/2 and M_1/4 at ranks r = 8, 16, 32. It is the one sweep driver (``experiments.sweep``) with that
experiment: ``experiment.sources`` in ``conf/experiment/table3.yaml`` names the Table 1 sweep the cells
start from and the two cells it reuses when their configs match.
"""

from __future__ import annotations

import sys

if __name__ == "__main__":
    if not any(arg.lstrip("+").startswith("experiment=") for arg in sys.argv[1:]):
        sys.argv.append("experiment=table3")  # this script's experiment unless another is named
    from experiments.run.commands import run_hydra_command
    from experiments.sweep import main

    run_hydra_command(main)
