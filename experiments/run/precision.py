"""Training precision as an explicit, recorded choice: ``train.precision`` is ``fp32``, ``bf16`` or ``auto``.

``auto`` is resolved once, on the driver, before any run key is computed (``resolve_precision``), so that the
resolved value names the run directory, is logged with the run's params, and runs of different precision
never resume or mix each other. It picks bf16 where the hardware has native bf16 dot products, else fp32:

* CPU: x86 with ``avx512_bf16`` or ``amx_bf16``, as torch's own capability check reports them
  (``torch.cpu.get_capabilities()``). Other CPUs (ARM, Apple silicon, x86 without those units) resolve to fp32:
  bf16 there is emulated (measured ~100x slower on an x86 CPU without avx512_bf16) or untested here.
* CUDA: ``torch.cuda.is_bf16_supported()``.

Asking for bf16 where it is not native is refused with the reason and the ``train.precision=fp32`` way out,
unless ``train.force_precision=true``.

bf16 means ``torch.autocast(dtype=torch.bfloat16)`` around the training step's forward: parameters, optimizer
state and gradients stay fp32. Evaluation always runs in fp32, so validation losses of runs trained in
different precisions compare the trained weights, not the arithmetic of the evaluation.
"""

from __future__ import annotations

import contextlib
import platform
from typing import NamedTuple

import torch

PRECISIONS = ("fp32", "bf16", "auto")


class NativeBF16(NamedTuple):
    native: bool  # bf16 dot products run in hardware on this device
    found: str  # what the check found, for messages and run tags


def native_bf16(device: str) -> NativeBF16:
    """Whether ``device`` ("cpu" or "cuda") has native bf16 dot products, and what the check saw."""
    if device == "cuda":
        if not torch.cuda.is_available():
            return NativeBF16(False, "no CUDA device")
        name = torch.cuda.get_device_name()
        supported = torch.cuda.is_bf16_supported()
        return NativeBF16(supported, f"{name}: torch.cuda.is_bf16_supported() is {supported}")
    capabilities = cpu_capabilities()
    model = capabilities.get("cpu_name") or platform.processor() or "unknown CPU"
    arch = capabilities.get("architecture") or platform.machine()
    units = [unit for unit in ("avx512_bf16", "amx_bf16") if capabilities.get(unit)]
    if units:
        return NativeBF16(True, f"{model} ({arch}) has {' and '.join(units)} (torch.cpu.get_capabilities)")
    return NativeBF16(False, f"{model} ({arch}) has neither avx512_bf16 nor amx_bf16 (torch.cpu.get_capabilities)")


def cpu_capabilities() -> dict:
    """torch's view of this CPU (model name, architecture, instruction sets); {} where torch has none."""
    get = getattr(torch.cpu, "get_capabilities", None)
    try:
        return dict(get()) if get is not None else {}
    except RuntimeError:  # a build without cpuinfo
        return {}


def cpu_description() -> str:
    """The CPU model and the flags that decide its training speed, for run tags and reports."""
    capabilities = cpu_capabilities()
    model = capabilities.get("cpu_name") or platform.processor() or "unknown CPU"
    flags = [flag for flag in ("avx512_bf16", "amx_bf16", "avx512_f", "avx2") if capabilities.get(flag)]
    return f"{model} ({capabilities.get('architecture') or platform.machine()}; {', '.join(flags) or 'no avx2'})"


class Resolved(NamedTuple):
    precision: str  # fp32 or bf16
    reason: str  # why, naming what the check found


def resolve(requested: str, device: str, force: bool = False) -> Resolved:
    """``requested`` (fp32, bf16, auto) -> the precision a run on ``device`` trains in, or ValueError when bf16
    is asked for where it is not native (unless ``force``)."""
    if requested not in PRECISIONS:
        raise ValueError(f"train.precision={requested!r} is not one of {', '.join(PRECISIONS)}")
    if requested == "fp32":
        return Resolved("fp32", "asked for fp32")
    if device == "cuda" and not torch.cuda.is_available():
        # a driver planning GPU trials on a machine without one: each trial checks its own GPU again
        return Resolved("bf16", "device=cuda, no GPU here to check: bf16 assumed, checked again on the trial's GPU")
    check = native_bf16(device)
    if requested == "auto":
        return Resolved("bf16" if check.native else "fp32", f"auto: {check.found}")
    if not check.native and not force:
        raise ValueError(
            f"train.precision=bf16 on {device}, but {check.found}: bf16 would be emulated there (measured ~100x "
            "slower than fp32 on such a CPU). Set train.precision=fp32 (or auto), or train.force_precision=true "
            "to train in bf16 anyway"
        )
    return Resolved("bf16", f"asked for bf16; {check.found}" + ("" if check.native else " (forced)"))


def autocast(precision: str, device: str) -> contextlib.AbstractContextManager:
    """The context of a training step's forward in ``precision`` (a resolved value)."""
    if precision == "auto":
        raise ValueError("train.precision=auto reached a training step unresolved; resolve it on the driver "
                         "(experiments.config.resolve_precision)")
    return torch.autocast(device_type=device, dtype=torch.bfloat16, enabled=precision == "bf16")
