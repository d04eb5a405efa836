"""Fixtures: an isolated store per test session (MLflow sqlite, artifacts, runs, Ray storage, data cache),
one local Ray for the sweep tests, and a free port for the UI servers they start."""

from __future__ import annotations

import socket
from pathlib import Path
from typing import NamedTuple

import pytest

from experiments import telemetry

telemetry.apply()  # before MLflow and Ray are imported by the tests

from experiments.config import compose


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
