"""Fixtures: an isolated store per test session (MLflow sqlite, artifacts, runs, Ray storage, data cache),
one local Ray for the sweep tests, a free port for the UI servers they start, and a smoke run interrupted
beside the same run trained straight through (the resume tests)."""

from __future__ import annotations

import socket
from pathlib import Path
from typing import NamedTuple

import pytest
import torch

from experiments import telemetry

telemetry.apply()  # before MLflow and Ray are imported by the tests

from omegaconf import DictConfig

from experiments.config import compose
from experiments.run.checkpoint import STATE_FILE, latest_checkpoint
from experiments.train import TrainHooks, train


class Store(NamedTuple):
    root: Path

    @property
    def uri(self) -> str:
        return f"sqlite:///{self.root / 'mlflow.db'}"

    def overrides(self, runs: str = "runs") -> list[str]:
        """Point every output of a run or sweep into this store (the palette cache is shared)."""
        return [
            f"paths.runs={self.root / runs}",
            f"paths.cache={self.root / 'cache'}",
            f"tracking.uri={self.uri}",
            f"tracking.artifacts={self.root / 'mlartifacts'}",
            f"sweep.storage={self.root / 'ray_results'}",
            f"sweep.evidence={self.root / 'reports'}",
        ]


@pytest.fixture(scope="session")
def store(tmp_path_factory) -> Store:
    return Store(tmp_path_factory.mktemp("store"))


@pytest.fixture
def smoke(store, tmp_path):
    """compose(scale=smoke + overrides) with this test's own run directories."""

    def make(*overrides: str):
        return compose(["scale=smoke", *store.overrides(runs=str(tmp_path / "runs")), *overrides])

    return make


@pytest.fixture
def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on (for a UI server a test starts)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="session")
def local_ray():
    """One local Ray (127.0.0.1, 2 CPUs, no dashboard) shared by the sweep tests of the session."""
    import ray

    from experiments.orchestration.plan import ClusterConfig
    from experiments.orchestration.ray_tune import start_ray

    started = start_ray(ClusterConfig(num_cpus=2, num_gpus=0))
    yield
    if started:
        ray.shutdown()


# ------------------------------------------------------------------------------------------------
# A run interrupted beside the same run trained straight through


class Interrupt(Exception):
    """Stands in for a kill between two steps."""


class InterruptAt(TrainHooks):
    def __init__(self, step: int):
        self.step = step

    def on_step_end(self, step: int) -> None:
        if step == self.step:
            raise Interrupt(f"interrupted after step {step}")


def final_state(run_dir: Path) -> dict:
    """The newest checkpoint of a run directory, as saved."""
    return torch.load(latest_checkpoint(run_dir) / STATE_FILE, weights_only=True)


def assert_same_state(a, b):
    """Nested dicts, lists and tensors equal exactly."""
    if isinstance(a, dict):
        assert a.keys() == b.keys()
        for key in a:
            assert_same_state(a[key], b[key])
    elif isinstance(a, (list, tuple)):
        assert len(a) == len(b)
        for x, y in zip(a, b):
            assert_same_state(x, y)
    elif isinstance(a, torch.Tensor):
        assert torch.equal(a, b)
    else:
        assert a == b


class Interrupted(NamedTuple):
    config: DictConfig  # the interrupted run's: train(config) resumes it
    run_dir: Path
    straight: Path  # the run directory of the same config trained without interruption

    def assert_ends_as_straight(self, steps: int) -> dict:
        """After the resume: the final checkpoint is the uninterrupted run's, at ``steps``, its weights and
        optimizer state exactly; returns it."""
        a, b = final_state(self.straight), final_state(self.run_dir)
        assert a["step"] == b["step"] == steps
        assert_same_state(a["module"], b["module"])
        assert_same_state(a["optimizer"], b["optimizer"])
        return b


@pytest.fixture
def interrupted(smoke, tmp_path):
    """``make(*overrides, at=step, name=...)``: the smoke run with ``overrides`` trained to its end in
    ``tmp_path/straight``, then again in ``tmp_path/<name>`` until it is interrupted after step ``at``."""

    def make(*overrides: str, at: int, name: str = "resumed") -> Interrupted:
        train(smoke(*overrides, f"run_dir={tmp_path / 'straight'}"))
        config = smoke(*overrides, f"run_dir={tmp_path / name}")
        with pytest.raises(Interrupt):
            train(config, hooks=InterruptAt(at))
        return Interrupted(config, tmp_path / name, tmp_path / "straight")

    return make
