"""Checkpoints: atomic writes, ``torch.load(weights_only=True)`` reads, clear errors; the one loader that
resuming a run and opening a finished one share.

A checkpoint holds only tensors and plain Python values (dicts, lists, numbers, strings), so it loads
without unpickling arbitrary objects. Its ``space`` entry is the space's identity (:meth:`Space.identity`)
and its ``config`` entry the run's resolved config: together they say which network the weights belong to.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from torch import nn

from ..core.space import Space
from ..core.util import atomic_write, first_line

__all__ = ["CheckpointError", "load_checkpoint", "load_model_state", "save_checkpoint"]

FORMAT = 1


class CheckpointError(ValueError):
    """A checkpoint that cannot be used (missing, truncated, from another space or run)."""


def save_checkpoint(path: str | Path, state: dict[str, Any]) -> None:
    """Write ``state`` to ``path`` atomically: a temporary file in the same folder, fsync, rename."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write(path, lambda tmp: torch.save({"format": FORMAT, **state}, tmp))


def load_checkpoint(path: str | Path, map_location: str | torch.device = "cpu", *,
                    space: Space | None = None) -> dict[str, Any]:
    """Load a checkpoint written by :func:`save_checkpoint` (weights_only: nothing is unpickled); with
    ``space``, refuse one that was trained on another space."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint {path} not found")
    try:
        state = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as e:  # truncated zip, bad magic, disallowed global, ...
        raise CheckpointError(f"checkpoint {path} is unreadable (truncated or not a onceforall checkpoint): "
                              f"{first_line(e)}") from None
    if not isinstance(state, dict) or state.get("format") != FORMAT:
        raise CheckpointError(f"checkpoint {path} is not a onceforall training checkpoint (format {FORMAT})")
    if space is not None and state.get("space") != space.identity():
        raise CheckpointError(f"checkpoint {path} was trained on space {state.get('space')}; this run builds "
                              f"{space.identity()}")
    return state


def load_model_state(net: nn.Module, state: dict[str, torch.Tensor], path: str | Path) -> None:
    """``net.load_state_dict(state)`` (strict) with a one-line error naming the checkpoint."""
    try:
        net.load_state_dict(state)
    except RuntimeError as e:
        raise CheckpointError(f"checkpoint {path} does not fit this supernet: {first_line(e)}") from None
