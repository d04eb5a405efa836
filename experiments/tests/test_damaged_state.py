"""Damaged state is recognised and named: a checkpoint truncated mid-file is skipped for the newest one that
loads (and the resumed run ends as an uninterrupted one), a write cut short leaves no temporary file, and a
damaged config.json, mlflow_run.json or MLflow store is refused naming the file and how to recover."""

from __future__ import annotations

import errno
import json
import sqlite3

import pytest
import torch

from experiments.config import ConfigError
from experiments.run import checkpoint
from experiments.run.checkpoint import (
    STATE_FILE,
    DamagedCheckpoint,
    latest_checkpoint,
    load_latest_checkpoint,
)
from experiments.tracking.store import check_reachable, check_sqlite, recorded_run_id
from experiments.train import train

COMMON = ["kind=unconditional", "train.steps=6", "train.checkpoint_every=2", "eval.samples=0", "threads=1",
          "tracking.log_models=false", "model.dropout=0.1"]


def truncate(path, keep: float = 0.5) -> None:
    data = path.read_bytes()
    path.write_bytes(data[: int(len(data) * keep)])


def test_a_checkpoint_truncated_mid_file_is_skipped_for_the_previous_one(interrupted, tmp_path, capsys):
    run = interrupted(*COMMON, at=5, name="damaged")  # checkpoints at steps 2 and 4
    newest = latest_checkpoint(tmp_path / "damaged")
    assert newest.name == "step_0000004"
    truncate(newest / STATE_FILE)
    capsys.readouterr()
    train(run.config)
    out = capsys.readouterr().out
    assert "skipping checkpoint step_0000004" in out and "unreadable" in out
    assert "resuming from step_0000002" in out and "at step 2 " in out
    run.assert_ends_as_straight(steps=6)  # as if nothing had been damaged


def test_a_run_whose_every_checkpoint_is_damaged_is_refused_naming_them(tmp_path):
    module = torch.nn.Linear(2, 2)
    optimizer = torch.optim.AdamW(module.parameters())
    for step in (2, 4):
        checkpoint.save_checkpoint(tmp_path, step, module, optimizer, "run")
    truncate(tmp_path / "checkpoints" / "step_0000004" / STATE_FILE)
    (tmp_path / "checkpoints" / "step_0000002" / STATE_FILE).write_bytes(b"not a checkpoint")
    with pytest.raises(DamagedCheckpoint, match=r"every checkpoint of .* is damaged: step_0000004 .*step_0000002 .*"
                                                r"move .*checkpoints away"):
        load_latest_checkpoint(tmp_path, module, optimizer)
    # a checkpoint that reads but holds another step than its folder's name is damaged too
    checkpoint.save_checkpoint(tmp_path, 6, module, optimizer, "run")
    (tmp_path / "checkpoints" / "step_0000006").rename(tmp_path / "checkpoints" / "step_0000008")
    with pytest.raises(DamagedCheckpoint, match="holds step 6"):
        checkpoint.read_state(tmp_path / "checkpoints" / "step_0000008")


def test_a_checkpoint_write_cut_short_leaves_no_temporary_file(tmp_path, monkeypatch):
    module = torch.nn.Linear(2, 2)
    optimizer = torch.optim.AdamW(module.parameters())
    checkpoint.save_checkpoint(tmp_path, 2, module, optimizer, "run")

    def disk_full(state, path):
        path.write_bytes(b"half a checkpoint")
        raise OSError(errno.ENOSPC, "No space left on device", str(path))

    monkeypatch.setattr(checkpoint.torch, "save", disk_full)
    with pytest.raises(OSError, match="No space left"):
        checkpoint.save_checkpoint(tmp_path, 4, module, optimizer, "run")
    assert not list(tmp_path.rglob("*.tmp"))
    assert latest_checkpoint(tmp_path).name == "step_0000002"  # the folder of the cut write holds no state


@pytest.mark.parametrize("content", ["{not json", "[1, 2]", '{"kind": 3}'])
def test_a_damaged_config_json_is_refused_naming_the_file(smoke, tmp_path, content):
    cfg = smoke("kind=unconditional", "train.steps=2", "eval.samples=0", f"run_dir={tmp_path / 'r'}")
    (tmp_path / "r").mkdir()
    (tmp_path / "r" / "config.json").write_text(content)
    with pytest.raises(ConfigError, match=r"r/config.json is damaged .*restore it, or move .* away"):
        train(cfg)


@pytest.mark.parametrize("content", ["", "{}", '{"run_id": 5}', "garbage"])
def test_a_damaged_mlflow_run_json_is_refused_naming_the_file(tmp_path, content):
    (tmp_path / "mlflow_run.json").write_text(content)
    with pytest.raises(ConfigError, match=r"mlflow_run.json is damaged .*Restore it .*or delete it"):
        recorded_run_id(tmp_path)


def test_a_garbage_or_locked_mlflow_db_is_named(tmp_path):
    garbage = tmp_path / "garbage.db"
    garbage.write_bytes(b"this is not a database" * 100)
    with pytest.raises(ConfigError, match=rf"{garbage} is not a SQLite database .*move .* away"):
        check_reachable(f"sqlite:///{garbage}")
    truncated = tmp_path / "truncated.db"
    with sqlite3.connect(truncated) as connection:
        connection.execute("CREATE TABLE t (x)")
        connection.executemany("INSERT INTO t VALUES (?)", [("x" * 1000,)] * 100)
    truncate(truncated, 0.3)
    with pytest.raises(ConfigError, match=rf"{truncated} (is damaged|cannot be used)"):
        check_sqlite(truncated, timeout=1)
    locked = tmp_path / "locked.db"
    holder = sqlite3.connect(locked, isolation_level=None)
    holder.execute("CREATE TABLE t (x)")
    holder.execute("BEGIN EXCLUSIVE")
    try:
        with pytest.raises(ConfigError, match=rf"{locked} stayed locked for 1 s"):
            check_sqlite(locked, timeout=1)
    finally:
        holder.rollback()
        holder.close()
    check_sqlite(locked, timeout=1)  # released: usable
    check_sqlite(tmp_path / "missing.db", timeout=1)  # MLflow creates it


def test_damaged_metrics_json_of_a_finished_run_says_how_to_recover(smoke, tmp_path):
    cfg = smoke("kind=unconditional", "train.steps=2", "eval.samples=0", "tracking.log_models=false",
                f"run_dir={tmp_path / 'r'}")
    train(cfg)
    (tmp_path / "r" / "metrics.json").write_text("{")
    with pytest.raises(ConfigError, match="metrics.json is damaged.*delete it and rerun"):
        train(cfg)
    json.loads((tmp_path / "r" / "config.json").read_text())  # the rest left as it was
