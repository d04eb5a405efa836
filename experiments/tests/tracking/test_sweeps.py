"""Finding a sweep to read or start from: the newest finished one that has every cell the reader needs, so
that a sweep of only some cells (Hydra's ``~``) never shadows an older complete one."""

from __future__ import annotations

import pytest
from mlflow.tracking import MlflowClient

from experiments.reporting import toolkit
from experiments.tracking.sweeps import find_sweep


def make_sweep(client: MlflowClient, exp_id: str, sweep_id: str, start: int, cells: dict[str, str],
               status: str = "FINISHED") -> str:
    """A sweep's parent run started at ``start`` (ms) and one trial run per cell, ending with its status."""
    tags = {"role": "sweep", "sweep_id": sweep_id, "scale": "cpu", "experiment": "table1"}
    parent = client.create_run(exp_id, start_time=start, tags=tags, run_name=f"sweep {sweep_id}").info.run_id
    client.set_terminated(parent, status, end_time=start + 10)
    for i, (cell, trial_status) in enumerate(cells.items()):
        trial = client.create_run(exp_id, start_time=start + i + 1,
                                  tags={"sweep_id": sweep_id, "cell": cell, "seed": "0", "role": "trial"})
        client.set_terminated(trial.info.run_id, trial_status, end_time=start + 9)
    return parent


def test_newest_finished_sweep_with_the_needed_cells(tmp_path):
    uri = f"sqlite:///{tmp_path}/mlflow.db"
    client = MlflowClient(uri)
    exp_id = client.create_experiment("projectable", artifact_location=str(tmp_path / "artifacts"))
    complete = make_sweep(client, exp_id, "full", 1_000, {cell: "FINISHED" for cell in toolkit.needed_cells("table1")})
    partial = make_sweep(client, exp_id, "part", 2_000, {"M1": "FINISHED", "P8": "FINISHED", "Mc8": "FAILED"})
    make_sweep(client, exp_id, "running", 3_000, {"M1": "FINISHED"}, status="KILLED")

    def found(cells=()):
        run = find_sweep(uri, "projectable", "cpu", "table1", cells=cells)
        return None if run is None else run.info.run_id

    assert found() == partial  # no cells named: the newest finished sweep, as before
    assert found(["M1", "P8"]) == partial
    assert found(["M1", "Mc8"]) == complete  # the partial sweep's Mc8 failed
    assert found(["M1", "no-such-cell"]) is None
    assert find_sweep(uri, "projectable", "gpu", "table1", cells=["M1"]) is None

    params = toolkit.notebook_params({"PROJECTABLE_REPORT_SCALE": "cpu", "PROJECTABLE_REPORT_TRACKING_URI": uri,
                                      "PROJECTABLE_REPORT_REPORTS": str(tmp_path)}, quiet=True)
    assert toolkit.newest_sweep(params, "table1").info.run_id == complete  # Table 1 needs every cell
    client.delete_run(complete)
    with pytest.raises(toolkit.MissingRuns, match=r"no finished complete table1 sweep \(cells M1, M2, .*control\)"):
        toolkit.newest_sweep(params, "table1")
