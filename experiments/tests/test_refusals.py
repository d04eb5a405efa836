"""Refused before anything runs, delivered the same way by every entry point: a sweep plan that cannot be
right (empty grids, no seeds, a run planned twice, ids that are not plain names), trial resources no node
gives, an unreachable cluster (its sweep run ends FAILED), and ``error: ...`` with exit 2 for the errors the
project raises on purpose wherever they are raised, Hydra's and the library's included."""

from __future__ import annotations

import os
import re
import socket
import subprocess
import sys

import pytest
from mlflow.tracking import MlflowClient

from experiments import sweep as sweep_module
from experiments.config import CONF_DIR, ConfigError, build_section, compose
from experiments.orchestration.plan import ClusterConfig, SweepConfig, active_stages, check_plan, plan_stage
from experiments.orchestration.ray_tune import check_placeable
from experiments.run.commands import refusing_bad_input

REPO = CONF_DIR.parent.parent


def table1(*overrides: str):
    return compose(["experiment=table1", "scale=smoke", *overrides])


def m1_seeds(seeds: str) -> list[str]:
    """The override declaring Table 1's cell M1 with ``seeds`` (a count or a list)."""
    return [f"+experiment.stages.stage1.cells.M1.seeds={seeds}"]


# -- the plan ------------------------------------------------------------------------------------------


@pytest.mark.parametrize("overrides, message", [
    ({"name": "x", "stages": {}}, r"experiment\.stages is empty"),
    ({"name": "x", "stages": {"stage1": {"steps": 5, "cells": {}}}},
     r"experiment\.stages\.stage1 has no cells.*~experiment\.stages\.stage1"),
    (m1_seeds("0"), r"seeds=0 must be >= 1"),
    (m1_seeds("-2"), r"seeds=-2 must be >= 1"),
    (["budget.seeds=0"], r"seeds=0 must be >= 1"),
    (m1_seeds("[1,1]"), r"seeds=\[1, 1\] must list distinct seeds"),
    (m1_seeds("[]"), r"seeds=\[\] must list distinct seeds"),
    (m1_seeds("two"), r"seeds='two' fits none of its types"),
    (["+budget.seed_overrides.table1={M9: 2}"], r"seed_overrides\.table1 names cells \['M9'\]"),
    (["experiment.stages.stage1.steps=-1"], r"steps=-1 must be >= 0"),
    (["+experiment.stages.stage2.cells.M1={kind: unconditional}"],
     r"cell M1 is in experiment\.stages\.stage1 and experiment\.stages\.stage2.*same run directories"),
    (["+experiment.stages.stage1.cells.M1.overrides={seed: 0}"], r"overrides set \['seed'\]"),
    ({"name": "x", "stages": {"stage1": {"steps": 5, "cells": {"a/../b": {"kind": "unconditional"}}}}},
     r"'a/\.\./b' is not a plain name"),
])
def test_a_plan_that_cannot_be_right_is_refused_before_it_runs(overrides, message):
    experiment = overrides if isinstance(overrides, dict) else table1(*overrides).experiment
    with pytest.raises(ConfigError, match=message):
        check_plan(experiment)


@pytest.mark.parametrize("subset, message", [
    ("[P8]", r"keeps P8 \(starts from M1\) without the cell it starts from"),
    ("[Mc8m,M1]", r"keeps Mc8m \(starts from Mc8\) without"),
    ("[M9]", r"does not declare \(\['M9'\]\)"),
    ("[]", r"names no cell"),
])
def test_a_cell_subset_that_cannot_run_is_refused(subset, message):
    with pytest.raises(ConfigError, match=message):
        active_stages(table1(f"experiment.cell_subset={subset}").experiment)


@pytest.mark.parametrize("sweep_id", ["../../x", "a'b", 'a"b', "a b", "", "-x", "x" * 101, "a/b"])
def test_a_sweep_id_that_is_not_a_plain_name_is_refused(sweep_id):
    with pytest.raises(ConfigError, match="sweep.id=.* is not a plain name"):
        build_section(SweepConfig, {"storage": "/tmp", "id": sweep_id}, "sweep")
    assert build_section(SweepConfig, {"storage": "/tmp", "id": "table1-cpu.2_x"}, "sweep").id == "table1-cpu.2_x"


def test_a_run_planned_twice_in_one_stage_is_refused():
    cfg = table1()
    stage = active_stages(cfg.experiment)["stage1"]
    cell = stage.cells["M1"]
    object.__setattr__(cell, "overrides", {"seed": 0})  # past Cell's own check: the planner checks again
    object.__setattr__(cell, "seeds", 2)
    with pytest.raises(ConfigError, match="cell M1: seed 0 is planned twice"):
        plan_stage(cfg, "stage1", stage, "x", None, {})


# -- resources and the cluster ----------------------------------------------------------------------


def test_trial_resources_no_node_gives_are_refused_before_tune_starts():
    sweep = build_section(SweepConfig, {"storage": "/tmp", "resources": {"cpu": 64}}, "sweep")
    with pytest.raises(ConfigError, match=r"sweep.resources=\{cpu: 64\} per trial, but the local Ray .* has 2 cpu"):
        check_placeable(sweep, ClusterConfig(num_cpus=2))
    gpu = build_section(SweepConfig, {"storage": "/tmp", "resources": {"cpu": 1, "gpu": 1}}, "sweep")
    with pytest.raises(ConfigError, match="has 0 gpu"):
        check_placeable(gpu, ClusterConfig(num_cpus=2, num_gpus=0))
    with pytest.raises(ConfigError, match="the cluster at x:1 has 0 big"):
        check_placeable(build_section(SweepConfig, {"storage": "/tmp", "resources": {"big": 1}}, "sweep"),
                        ClusterConfig(address="x:1"), {"CPU": 8.0})
    check_placeable(build_section(SweepConfig, {"storage": "/tmp", "resources": {"cpu": 2}}, "sweep"),
                    ClusterConfig(num_cpus=2))
    with pytest.raises(ConfigError, match=r"resources.cpu=-1 must be a number >= 0"):
        build_section(SweepConfig, {"storage": "/tmp", "resources": {"cpu": -1}}, "sweep")


def test_cluster_remote_without_an_address_says_so():
    with pytest.raises(ConfigError, match=r"cluster.address is not set: .*cluster.address=<head ip>:6379"):
        build_section(ClusterConfig, compose(["cluster=remote"]).cluster, "cluster")


def test_an_unreachable_cluster_ends_its_sweep_run_failed_with_a_clear_message(store, tmp_path, monkeypatch):
    with socket.socket() as s:  # a port nothing listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    sweep_id = f"unreachable-{tmp_path.name}"[:60]
    monkeypatch.setattr(sweep_module, "check_cluster", lambda cluster, uri: None)  # a sqlite store, for the test
    cfg = table1(f"sweep.id={sweep_id}", "cluster=remote", f"cluster.address=127.0.0.1:{port}",
                 *store.overrides(runs=str(tmp_path / "runs")))
    with pytest.raises(ConfigError, match=rf"cluster.address=127.0.0.1:{port}: nothing answered there"):
        sweep_module.run_sweep(cfg)
    client = MlflowClient(store.uri)
    experiment = client.get_experiment_by_name("projectable").experiment_id
    parents = client.search_runs([experiment], f"tags.sweep_id = '{sweep_id}' and tags.role = 'sweep'")
    assert [run.info.status for run in parents] == ["FAILED"]


# -- delivery ---------------------------------------------------------------------------------------


def delivered(capsys, call) -> str:
    """What an entry point prints for a refusal raised by ``call``: the ``error:`` line (exit status 2)."""
    with pytest.raises(SystemExit) as exit_info:
        with refusing_bad_input():
            call()
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err and err.startswith("error: ") and len(err.strip().splitlines()) == 1
    return err


@pytest.mark.parametrize("overrides, setup, message", [
    (["train.train_fraction=0.5"], None, "data: .*train_pool_size"),
    (["+eval.subsets.none={overrides: {}, labels: [42]}"], None, "eval.subsets: validation subset 'none' keeps no image"),
    (["init_from={tmp}/garbage.safetensors"], "garbage", r"init_from=.*garbage.safetensors.* not a readable safetensors"),
    (["init_from={tmp}/missing"], None, r"init_from=.*missing"),
    ([], "config", r"config.json is damaged"),
])
def test_errors_raised_inside_train_are_delivered_as_error_and_exit_2(overrides, setup, message, smoke, tmp_path,
                                                                      capsys):
    from experiments.train import train

    if setup == "garbage":
        (tmp_path / "garbage.safetensors").write_bytes(b"\x00" * 64)
    if setup == "config":
        (tmp_path / "r").mkdir()
        (tmp_path / "r" / "config.json").write_text("{")
    cfg = smoke("kind=unconditional", "train.steps=2", "eval.samples=0", f"run_dir={tmp_path / 'r'}",
                *(o.replace("{tmp}", str(tmp_path)) for o in overrides))
    err = delivered(capsys, lambda: train(cfg))
    assert re.search(message, err), err


def test_hydra_errors_are_delivered_naming_the_valid_keys(capsys, monkeypatch):
    from experiments.run.commands import check_overrides

    err = delivered(capsys, lambda: check_overrides(["model.n_layr=3"]))
    assert "model.n_layr is not a key of 'model'; did you mean model.n_layer?" in err and "n_head" in err
    err = delivered(capsys, lambda: check_overrides(["kynd=projected"]))
    assert "unknown key kynd: valid keys of '<root>':" in err and "kind" in err
    err = delivered(capsys, lambda: check_overrides(["scale=tiny"]))
    assert "scale/tiny" in err and "smoke" in err
    err = delivered(capsys, lambda: check_overrides(["kind=unconditional", "seed=1=2"]))
    assert "cannot parse the override 'seed=1=2'" in err


def test_the_machines_state_is_a_refusal_and_a_bug_keeps_its_traceback(capsys):
    import errno

    from experiments.run.commands import refusal

    full = OSError(errno.ENOSPC, "No space left on device", "/runs/x/state.pt")
    assert refusal(full) == ("No space left on device: /runs/x/state.pt; free space there, or point paths.* at "
                             "another disk, and rerun the same command")
    assert "writable folder" in refusal(PermissionError(errno.EACCES, "Permission denied", "/ro"))
    assert refusal(OSError(errno.EIO, "Input/output error")) is None
    assert refusal(KeyError("x")) is None and refusal(ValueError("a bug")) is None
    with pytest.raises(KeyError):
        with refusing_bad_input():
            raise KeyError("a bug")


@pytest.mark.parametrize("command, message", [
    (["-m", "experiments.train", "model.n_layr=3"], "model.n_layr is not a key of 'model'; did you mean model.n_layer"),
    (["experiments/sweep.py", "experiment=table1", "scale=smoke", "sweep.id=../../x"],
     "sweep.id='../../x' is not a plain name"),
    (["experiments/sweep_source_size.py", "scale=smoke", "sweep.resources={cpu: 64}"],
     "sweep.resources={cpu: 64} per trial"),
    (["-m", "experiments.prepare_data", "data.palette_sise=4"], "data.palette_sise is not a key of 'data'"),
    (["-m", "experiments.reporting", "missing", "tabel1"], "no report named tabel1; choose from table1"),
])
def test_every_entry_point_refuses_with_error_and_exit_2(command, message, tmp_path):
    env = {**os.environ, "PROJECTABLE_ROOT": str(tmp_path)}
    done = subprocess.run([sys.executable, *command], cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 2, done.stderr[-2000:]
    assert "Traceback" not in done.stderr and done.stderr.strip().splitlines()[-1].startswith("error: ")
    assert message in done.stderr
    assert not (tmp_path / "runs").exists() and not (tmp_path / "ray_results").exists()
