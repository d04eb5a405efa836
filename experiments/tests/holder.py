"""A real second process for the concurrency tests: ``python -m experiments.tests.holder train|sweep <overrides>``.

``train``: trains (``experiments.train``'s command line) and, after its first step, prints ``holding <pid>``
and waits for a line on stdin before it goes on. ``sweep``: drives a sweep (``experiments/sweep.py``'s
command line) with Ray and Tune left out: starting Ray prints whether this process holds the sweep's lock
then, and each stage prints ``holding <pid>`` and waits for a line on stdin. The handshake replaces sleeps:
the test starts its second process only once the first has said that it holds the lock.
"""

from __future__ import annotations

import os
import sys


def wait_for_release() -> None:
    print(f"holding {os.getpid()}", flush=True)
    sys.stdin.readline()


def hold_train(overrides: list[str]) -> None:
    from experiments import train as train_module

    class Hold(train_module.TrainHooks):
        def on_step_end(self, step: int) -> None:
            if step == 1:
                wait_for_release()

    def main(cfg) -> None:
        with train_module.refusing_bad_input():
            train_module.train(cfg, hooks=Hold())

    run_entry("train.py", overrides, main)


def hold_sweep(overrides: list[str]) -> None:
    from experiments import sweep as sweep_module
    from experiments.run.locks import SWEEP_LOCK, holder

    given = dict(o.split("=", 1) for o in overrides if "=" in o)  # the tests pin paths.runs and sweep.id

    def start_ray(cluster) -> bool:
        lock = os.path.join(given["paths.runs"], given["sweep.id"], SWEEP_LOCK)
        print(f"ray starts; sweep lock held here: {holder(lock).get('pid') == os.getpid()}", flush=True)
        return False

    def run_stage(specs, sweep, name, **hooks):
        wait_for_release()

    sweep_module.start_ray = start_ray
    sweep_module.run_stage = run_stage
    sweep_module.stage_run_uris = lambda tracking_cfg, sweep_id, cell: {}
    run_entry("sweep.py", overrides, sweep_module.main.__wrapped__)


def run_entry(name: str, overrides: list[str], main) -> None:
    """``main(cfg)`` as the entry point ``name`` runs it: its command line checked, refusals as ``error:``."""
    import hydra

    from experiments.config import CONF_DIR
    from experiments.run.commands import run_hydra_command

    sys.argv = [name, *overrides]
    run_hydra_command(hydra.main(config_path=str(CONF_DIR), config_name="config", version_base="1.3")(main))


if __name__ == "__main__":
    from experiments import telemetry

    telemetry.apply()
    what, *rest = sys.argv[1:]
    {"train": hold_train, "sweep": hold_sweep}[what](rest)
