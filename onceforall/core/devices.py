"""Human-readable names of the devices that costs and latencies are measured on."""

from __future__ import annotations

import os
import platform

import torch

__all__ = ["cpu_name", "device_name"]


def cpu_name() -> str:
    """CPU model and core count, e.g. 'AMD EPYC 7B13 (2 cpus)'."""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.lower().startswith("model name"):
                    return f"{line.split(':', 1)[1].strip()} ({os.cpu_count()} cpus)"
    except OSError:
        pass
    return f"{platform.processor() or platform.machine() or 'unknown CPU'} ({os.cpu_count()} cpus)"


def device_name(device: torch.device | str = "cpu", threads: int | None = None) -> str:
    """The GPU's name, or the CPU's (with the threads in use when given)."""
    device = torch.device(device)
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return f"CPU {cpu_name()}" + (f", {threads} threads" if threads else "")
