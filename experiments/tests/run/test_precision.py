"""train.precision: what auto resolves to on each kind of CPU, the refusal of emulated bf16, and that the
resolved value names the run (key, params) while fp32 runs keep the keys they had before the switch."""

from __future__ import annotations

import pytest
import torch

from experiments.config import (
    ConfigError,
    compose,
    config_differences,
    config_key,
    parse_run,
    resolve_precision,
)
from experiments.run import precision
from experiments.run.optim import TrainConfig

AMD_BF16 = {"cpu_name": "AMD EPYC", "architecture": "x86_64", "avx512_bf16": True, "amx_bf16": False,
            "avx512_f": True, "avx2": True}
XEON_AMX = {"cpu_name": "Intel Xeon", "architecture": "x86_64", "avx512_bf16": False, "amx_bf16": True}
XEON_OLD = {"cpu_name": "Intel Xeon", "architecture": "x86_64", "avx512_bf16": False, "amx_bf16": False,
            "avx512_f": True, "avx2": True}
ARM = {"cpu_name": "Apple M2", "architecture": "arm64"}


@pytest.fixture
def cpu(monkeypatch):
    """Pretend to be a given CPU, as torch's capability check describes it."""

    def pretend(capabilities: dict) -> None:
        monkeypatch.setattr(torch.cpu, "get_capabilities", lambda: dict(capabilities))

    return pretend


@pytest.mark.parametrize(("capabilities", "expected"), [(AMD_BF16, "bf16"), (XEON_AMX, "bf16"),
                                                        (XEON_OLD, "fp32"), (ARM, "fp32")])
def test_auto_is_bf16_only_where_the_cpu_has_native_bf16_dot_products(cpu, capabilities, expected):
    cpu(capabilities)
    resolved = precision.resolve("auto", "cpu")
    assert resolved.precision == expected
    assert capabilities["cpu_name"] in resolved.reason  # the check names what it found


def test_bf16_where_it_is_emulated_is_refused_with_the_way_out_unless_forced(cpu):
    cpu(XEON_OLD)
    with pytest.raises(ValueError, match=r"train\.precision=fp32.*force_precision=true"):
        precision.resolve("bf16", "cpu")
    assert precision.resolve("bf16", "cpu", force=True).precision == "bf16"
    assert precision.resolve("fp32", "cpu").precision == "fp32"
    with pytest.raises(ValueError, match="not one of"):
        precision.resolve("fp16", "cpu")


def test_autocast_runs_matmuls_in_the_resolved_precision_and_refuses_an_unresolved_one():
    a, b = torch.randn(4, 8), torch.randn(8, 4)
    with precision.autocast("bf16", "cpu"):
        assert (a @ b).dtype == torch.bfloat16
    with precision.autocast("fp32", "cpu"):
        assert (a @ b).dtype == torch.float32
    with pytest.raises(ValueError, match="unresolved"):
        precision.autocast("auto", "cpu")


def test_train_config_refuses_an_unknown_precision():
    with pytest.raises(ValueError, match="train.precision='half'"):
        TrainConfig(precision="half")


def test_the_driver_resolves_auto_into_the_config_so_the_key_names_the_precision(cpu):
    cpu(AMD_BF16)
    cfg, reason = resolve_precision(compose(["scale=smoke", "train.precision=auto"]))
    assert cfg.train.precision == "bf16" and "avx512_bf16" in reason
    fp32, _ = resolve_precision(compose(["scale=smoke", "train.precision=fp32"]))
    assert config_key(cfg) != config_key(fp32)  # runs of another precision never share a directory
    assert parse_run(compose(["scale=smoke", "train.precision=auto"])).train.precision == "bf16"
    cpu(XEON_OLD)
    assert resolve_precision(compose(["scale=smoke", "train.precision=auto"]))[0].train.precision == "fp32"
    with pytest.raises(ConfigError, match="train.precision=fp32"):
        parse_run(compose(["scale=smoke", "train.precision=bf16"]))


def test_fp32_runs_keep_their_keys_and_read_runs_logged_with_train_bf16():
    fp32 = compose(["scale=smoke"])
    assert fp32.train.precision == "fp32"
    # params of a run logged before the switch: train.bf16 instead of train.precision
    from experiments.config import effective_config

    legacy = {k: v for k, v in effective_config(fp32).items() if k != "train.precision"}
    assert config_differences(fp32, {**legacy, "train.bf16": "False"}) == []
    assert config_differences(fp32, {**legacy, "train.bf16": "True"}) == ["train.precision: bf16 -> fp32"]
    forced = compose(["scale=smoke", "train.force_precision=true"])
    assert config_key(forced) == config_key(fp32)  # forcing changes nothing about the results


def test_a_driver_without_a_gpu_plans_bf16_for_cuda_trials(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert precision.resolve("auto", "cuda").precision == "bf16"
    assert precision.resolve("bf16", "cuda").precision == "bf16"
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda *a: "Tesla V100")
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a: False)
    assert precision.resolve("auto", "cuda").precision == "fp32"
    with pytest.raises(ValueError, match="V100"):
        precision.resolve("bf16", "cuda")
