"""Human-readable names of the devices that costs and latencies are measured on."""

from __future__ import annotations

import os
import platform

import torch

__all__ = ["cpu_name", "device_name"]


def cpu_name() -> str:
    """CPU model, core count and the vector instructions torch's kernels use on it, e.g. 'AMD EPYC 7B13 (2 cpus,
    AVX2)': two CPUs that share a model name may differ there (and so in speed, and in the digits a seed gives)."""
    model = platform.processor() or platform.machine() or "unknown CPU"
    try:
        with open("/proc/cpuinfo") as f:
            model = next((line.split(":", 1)[1].strip() for line in f if line.lower().startswith("model name")), model)
    except OSError:
        pass
    return f"{model} ({os.cpu_count()} cpus{_capability()})"


def _capability() -> str:
    """', AVX512' (torch's CPU capability: DEFAULT, AVX2, AVX512, ...), or '' where torch cannot say."""
    try:
        return f", {torch.backends.cpu.get_cpu_capability()}"
    except (AttributeError, RuntimeError):
        return ""


def device_name(device: torch.device | str = "cpu", threads: int | None = None) -> str:
    """The GPU's name, or the CPU's (with the threads in use when given)."""
    device = torch.device(device)
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return f"CPU {cpu_name()}" + (f", {threads} threads" if threads else "")
