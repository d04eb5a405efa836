"""The layers import one way: the library packages pull in none of the orchestration stack, the run layer
neither tracking nor reporting, reporting never the trainer. Each import runs in a fresh interpreter."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

ORCHESTRATION = ("hydra", "omegaconf", "ray", "mlflow", "experiments")


def imported_after(statement: str) -> set[str]:
    """Top-level names of the modules a fresh interpreter holds after ``statement``."""
    code = f"import sys; {statement}; print(' '.join(sorted({{m.split('.')[0] for m in sys.modules}})))"
    out = subprocess.run([sys.executable, "-c", code], check=True, capture_output=True, text=True).stdout
    return set(out.split())


def imported_modules(statement: str) -> set[str]:
    code = f"import sys; {statement}; print(' '.join(sorted(sys.modules)))"
    return set(subprocess.run([sys.executable, "-c", code], check=True, capture_output=True, text=True).stdout.split())


@pytest.mark.parametrize("package", ["projectable", "projectable_data", "projectable_vqvae"])
def test_library_packages_import_no_orchestration(package):
    modules = imported_after(f"import {package}")
    assert package in modules
    assert not modules & set(ORCHESTRATION), sorted(modules & set(ORCHESTRATION))


def test_run_layer_imports_neither_tracking_nor_reporting():
    modules = imported_modules("import experiments.run.trainees, experiments.run.datasets, "
                               "experiments.run.evaluate, experiments.run.optim, experiments.run.checkpoint, "
                               "experiments.run.grids, experiments.run.saved")
    assert not {m for m in modules if m.startswith(("experiments.tracking", "experiments.reporting",
                                                    "experiments.orchestration", "experiments.train"))}
    assert not {m.split(".")[0] for m in modules} & {"mlflow", "ray"}


def test_reporting_reads_tracking_never_the_trainer():
    modules = imported_modules("import experiments.reporting.table1, experiments.reporting.table2, "
                               "experiments.reporting.table3, experiments.reporting.table4, "
                               "experiments.reporting.figure3, experiments.reporting.figure4, "
                               "experiments.reporting.generators")
    assert "experiments.tracking.sweeps" in modules
    assert not {m for m in modules if m.startswith(("experiments.train", "experiments.orchestration",
                                                    "experiments.sweep"))}
    assert "ray" not in {m.split(".")[0] for m in modules}


def test_importing_the_toolkit_sets_no_environment():
    code = ("import os; before = dict(os.environ); import experiments.reporting.toolkit, experiments.config, "
            "experiments.tracking.store; print(sorted(set(os.environ.items()) - set(before.items())))")
    # telemetry stays off in the child (importing MLflow would start its client otherwise); the one variable
    # left unset is the one ``experiments.telemetry.apply`` would add, so a module that applied it at import
    # would show up
    env = {k: v for k, v in os.environ.items() if k != "RAY_CHDIR_TO_TRIAL_DIR"}
    out = subprocess.run([sys.executable, "-c", code], check=True, capture_output=True, text=True, env=env).stdout
    assert out.strip() == "[]"


def test_at_most_eight_modules_at_the_top_of_experiments():
    from pathlib import Path

    import experiments

    top = sorted(p.name for p in Path(experiments.__file__).parent.glob("*.py"))
    assert len(top) <= 8, top
