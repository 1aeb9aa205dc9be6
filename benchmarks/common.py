"""Helpers shared by the benchmark scripts."""

from __future__ import annotations

import json
import resource
import subprocess
import sys

# The benchmark setting with a capacity signal (capacity.py, reproduce.py's default): the fashion-mnist presets
# with elastic resolution {10, 15, 20}, images stored at 20 px and resized by the network.
FMNIST20_R10 = ["data.image_size=20", "model.resolutions=[10,15,20]"]
# reproduce.py's --quick size
QUICK = {"epochs": 4, "train_subset": 10000}
QUICK_OVERRIDES = [f"data.train_subset={QUICK['train_subset']}", f"train.epochs={QUICK['epochs']}"]


def peak_rss_mib() -> float:
    """Peak resident memory of this process image (VmHWM; unlike ru_maxrss it is not inherited across exec)."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def run_child(script: str, args: list[str]) -> dict:
    """Run ``script`` with ``args`` in a fresh interpreter; it prints one JSON object as its last line."""
    out = subprocess.run([sys.executable, script, *args], check=True, capture_output=True, text=True).stdout
    return json.loads(out.strip().splitlines()[-1])
