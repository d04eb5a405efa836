"""Finding a sweep to read or start from: the newest finished one that has every cell the reader needs, so
that a sweep of only some cells (Hydra's ``~``) never shadows an older complete one."""

from __future__ import annotations

import pytest
from mlflow.tracking import MlflowClient

from experiments.reporting import toolkit
from experiments.tracking.sweeps import find_sweep


def make_sweep(client: MlflowClient, exp_id: str, sweep_id: str, start: int, cells: dict[str, str],
               status: str = "FINISHED", seeds=(0,)) -> str:
    """A sweep's parent run started at ``start`` (ms) and one trial run per cell and seed, ending with the
    cell's status."""
    tags = {"role": "sweep", "sweep_id": sweep_id, "scale": "cpu", "experiment": "table1"}
    parent = client.create_run(exp_id, start_time=start, tags=tags, run_name=f"sweep {sweep_id}").info.run_id
    client.set_terminated(parent, status, end_time=start + 10)
    for i, (cell, trial_status) in enumerate(cells.items()):
        for seed in seeds:
            trial = client.create_run(exp_id, start_time=start + i + 1,
                                      tags={"sweep_id": sweep_id, "cell": cell, "seed": str(seed), "role": "trial"})
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


def test_a_partial_sweep_of_other_seeds_is_never_the_source_of_these_seeds(tmp_path):
    """Part A (seeds 0, 1) then part B (seed 2) of one Table 1: a sweep continuing seeds 0 and 1 must start
    from part A's, though part B is newer (else seed 0 would continue seed 2's M_1, another lineage)."""
    uri = f"sqlite:///{tmp_path}/mlflow.db"
    client = MlflowClient(uri)
    exp_id = client.create_experiment("projectable", artifact_location=str(tmp_path / "artifacts"))
    part_a = make_sweep(client, exp_id, "part-a", 1_000, {"M1": "FINISHED", "P8": "FINISHED"}, seeds=(0, 1))
    part_b = make_sweep(client, exp_id, "part-b", 2_000, {"M1": "FINISHED", "P8": "FINISHED"}, seeds=(2,))

    def found(seeds):
        run = find_sweep(uri, "projectable", "cpu", "table1", cells=["M1"], seeds=seeds)
        return None if run is None else run.info.run_id

    assert found(None) == part_b  # no seeds asked: the newest, as before
    assert found({"M1": [2]}) == part_b
    assert found({"M1": [0, 1], "P8": [0, 1]}) == part_a
    assert found({"M1": [0, 2]}) is None  # no one sweep holds both lineages
    picked = find_sweep(uri, "projectable", "cpu", "table1", sweep_ids=["part-a"])
    assert picked.info.run_id == part_a  # PROJECTABLE_REPORT_SWEEPS: one named sweep, though not the newest
    assert find_sweep(uri, "projectable", "cpu", "table1", sweep_ids=["part-c"]) is None
