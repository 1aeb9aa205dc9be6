"""Opening a finished (or stopped) run directory: config, space, trained supernet, data, cost."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path

import torch

from .checkpoint import CheckpointError, load_checkpoint
from .config import Config, load_config
from .spaces import Space, get_space
from .supernet import Supernet, build_supernet

__all__ = ["LoadedRun", "RunError", "load_run", "read_metrics"]


class RunError(ValueError):
    """A run directory that cannot be used (missing, never trained)."""


@dataclass
class LoadedRun:
    run_dir: Path
    cfg: Config
    space: Space
    """The space with the run's number of classes and input channels."""
    net: Supernet
    step: int
    checkpoint: Path
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))

    @property
    def name(self) -> str:
        return self.run_dir.name

    @property
    def memory_format(self) -> torch.memory_format:
        return torch.channels_last if self.cfg.train.channels_last else torch.contiguous_format

    @property
    def image_size(self) -> int:
        return self.cfg.data.image_size or max(self.space.resolutions)

    @cached_property
    def data(self):
        """TrainData of the run (BN-recalibration subset, validation set)."""
        from .train import build_data

        return build_data(self.cfg, self.image_size)

    @property
    def eval_split(self) -> str:
        return "held-out training images" if self.cfg.data.val_split else "test"

    @cached_property
    def cost(self) -> dict | None:
        path = self.run_dir / "cost.json"
        return json.loads(path.read_text()) if path.exists() else None

    def metrics(self) -> list[dict]:
        return read_metrics(self.run_dir)


def read_metrics(run_dir: str | Path) -> list[dict]:
    """The rows of a run's ``metrics.jsonl`` (one dict per event: step, eval, phase, end, ...), oldest first;
    empty if the run has not logged anything yet."""
    path = Path(run_dir) / "metrics.jsonl"
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def load_run(run_dir: str | Path, device: str | torch.device = "cpu") -> LoadedRun:
    """Rebuild a run's supernet from ``config.yaml`` and ``checkpoints/last.pt``."""
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise RunError(f"run {run_dir} not found")
    if not (run_dir / "config.yaml").is_file():
        raise RunError(f"run {run_dir} has no config.yaml; is it a onceforall run directory?")
    ckpt_path = run_dir / "checkpoints" / "last.pt"
    if not ckpt_path.is_file():
        raise RunError(f"run {run_dir} has no checkpoints/last.pt; train it first")
    cfg = load_config(str(run_dir / "config.yaml"))
    ck = load_checkpoint(ckpt_path)
    sid = ck["space"]
    space = get_space(sid["name"], sid["width_mult"], sid["resolutions"], num_classes=sid["num_classes"],
                      in_channels=sid["in_channels"])
    net = build_supernet(space, dropout=cfg.model.dropout, kernel_transform=cfg.model.kernel_transform)
    try:
        net.load_state_dict(ck["model"])
    except RuntimeError as e:
        raise CheckpointError(f"checkpoint {ckpt_path} does not fit its config: {str(e).splitlines()[0]}") from None
    device = torch.device(device)
    fmt = torch.channels_last if cfg.train.channels_last else torch.contiguous_format
    net = net.to(device=device, memory_format=fmt).eval()
    return LoadedRun(run_dir, cfg, space, net, int(ck["state"]["step"]), ckpt_path, device)
