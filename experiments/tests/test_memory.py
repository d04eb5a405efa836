"""A run's memory is estimated from its config before anything is allocated: the estimate stays within 2x of
the peak of live tensor bytes measured over real training steps, and a run that cannot fit is refused
before a weight is allocated, naming the estimate, the free memory and the override."""

from __future__ import annotations

import weakref
from types import SimpleNamespace

import pytest
import torch
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_flatten

from experiments.config import ConfigError, compose, parse_run
from experiments.run import memory
from experiments.run.optim import build_optimizer
from experiments.run.trainees import build_trainee
from experiments.train import train, train_step


class PeakTensorMemory(TorchDispatchMode):
    """Peak bytes of live tensor storages while active: every storage an op returns is counted until it is
    freed (a weak reference's finalizer), plus the ``existing`` tensors (the parameters)."""

    def __init__(self, existing=()):
        super().__init__()
        self.live: dict[int, int] = {}
        self.current = self.peak = 0
        for tensor in existing:
            self.track(tensor)

    def track(self, tensor) -> None:
        if not isinstance(tensor, torch.Tensor) or tensor.device.type == "meta":
            return
        storage = tensor.untyped_storage()
        key = storage.data_ptr()
        if key in self.live or storage.nbytes() == 0:
            return
        self.live[key] = storage.nbytes()
        self.current += storage.nbytes()
        self.peak = max(self.peak, self.current)
        weakref.finalize(storage, self.free, key)

    def free(self, key: int) -> None:
        self.current -= self.live.pop(key, 0)

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        for tensor in tree_flatten(out)[0]:
            self.track(tensor)
        return out


def measured_peak(run) -> int:
    """Peak live tensor bytes over two training steps of ``run`` (the first creates AdamW's moments)."""
    trainee = build_trainee(run.kind, run.width, run.model, run.projector, 18)
    optimizer = build_optimizer(trainee.module, run.train)
    generator = torch.Generator().manual_seed(0)
    batch = SimpleNamespace(tokens=torch.randint(0, run.model.vocab_size, (run.train.batch_size, run.model.block_size),
                                                 generator=generator),
                            task=torch.randn(run.train.batch_size, 18, generator=generator))
    with PeakTensorMemory(trainee.module.parameters()) as tracker:
        for step in range(2):
            train_step(trainee, trainee.loss, optimizer, batch, step, run.train, "cpu")
    return tracker.peak


def test_the_tracker_counts_what_is_alive():
    x = torch.randn(256, 256, requires_grad=True)  # 256 KiB
    with PeakTensorMemory([x]) as tracker:
        (x @ x).relu().sum().backward()
    assert tracker.current == 2 * x.numel() * 4  # x and its gradient
    assert 3 * x.numel() * 4 <= tracker.peak <= 6 * x.numel() * 4


@pytest.mark.parametrize("overrides", [
    ["kind=unconditional"],
    ["kind=conditional", "width=0.5"],
    ["kind=projected", "projector.scales=[0.5,0.25,0.125]"],
    ["kind=projected", "projector.scales=[0.5]", "projector.generator=low_rank", "projector.generator_rank=4"],
    ["kind=unconditional", "data.resolution=16", "model.dropout=0.1", "train.grad_accum=2"],  # the math attention
])
def test_the_estimate_is_within_2x_of_the_measured_peak(overrides):
    run = parse_run(compose(["scale=smoke", "threads=1", *overrides]))
    rng = torch.get_rng_state()
    estimate = memory.estimate_run(run, 18).total
    assert torch.equal(rng, torch.get_rng_state())  # estimating draws nothing: a run's initial weights stay as they were
    peak = measured_peak(run)
    assert peak / 2 <= estimate <= 2 * peak, (estimate, peak)


def test_a_run_that_cannot_fit_is_refused_before_anything_is_allocated(smoke, tmp_path, monkeypatch):
    cfg = smoke("kind=unconditional", "train.batch_size=4096", f"run_dir={tmp_path / 'r'}")
    run = parse_run(cfg)
    needed = memory.estimate_run(run, 18).total
    monkeypatch.setattr(memory, "available_memory", lambda device: needed // 2)  # a machine of half the need
    allocated = []
    monkeypatch.setattr("experiments.train.build_trainee", lambda *a, **k: allocated.append(1))
    with pytest.raises(ConfigError, match=r"needs about .* GiB \(weights .*activations .*\), but this machine has "
                                          r".* GiB free; lower train.batch_size .*train.memory_check=false"):
        train(cfg)
    assert not allocated
    run_off = parse_run(smoke("kind=unconditional", "train.batch_size=4096", "train.memory_check=false"))
    assert memory.check_fits(run_off, 18).total == needed  # the override lets it try
    assert parse_run(smoke("train.memory_check=false")).run_dir == parse_run(smoke()).run_dir  # not a result key
