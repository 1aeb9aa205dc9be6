"""Accuracy predictors as files: ``search`` saves the predictor it fitted (``<run>/search/predictor.pt``) and
``search --predictor FILE`` reuses one, ours or OFA's ``acc_predictor.pth``, without measuring subnets to fit it.

Our file (``torch.save``, read with ``weights_only=True``)::

    {"format": "onceforall-predictor", "version": 1,
     "space": the identity of the space it was fitted for (Space.identity()),
     "state": AccuracyPredictor.state_dict() (net.* tensors, base_acc, scale, hidden, layers, feature_dim, encoding),
     "fit": what fit() reported (pairs, held-out RMSE, Kendall tau, top-10 % hit rate),
     "info": where its measurements came from (run, step, split, images per subnet)}
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any, Protocol

import torch

from ..core.arch import Arch
from ..core.space import Space
from ..core.util import atomic_write, load_weights_only
from .ofa_formats import load_ofa_acc_predictor
from .search import AccuracyPredictor

__all__ = ["FORMAT", "Predictor", "load_predictor", "save_predictor"]

FORMAT = "onceforall-predictor"
VERSION = 1
_IDENTITY = ("name", "width_mult", "num_classes", "in_channels")


class Predictor(Protocol):
    def predict(self, archs: list[Arch]) -> list[float]: ...


def save_predictor(path: str | Path, predictor: AccuracyPredictor, *, fit: Mapping[str, Any],
                   info: Mapping[str, Any] | None = None) -> Path:
    """Write ``predictor`` (fitted) with its space's identity, its fit statistics and ``info`` (atomically)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    data = {"format": FORMAT, "version": VERSION, "space": predictor.space.identity(),
            "state": predictor.state_dict(), "fit": dict(fit), "info": dict(info or {})}
    atomic_write(path, lambda p: torch.save(data, p))
    return path


def load_predictor(path: str | Path, space: Space) -> tuple[Predictor, dict[str, Any]]:
    """The predictor in ``path`` for archs of ``space`` and its report (the file's fit statistics, ``source``,
    ``kind``: ``onceforall`` or ``ofa``). Our files must have been fitted for a space of the same identity and
    encoding; anything else is OFA's accuracy-predictor format or a one-line ValueError naming the file."""
    data = load_weights_only(path, "predictor")
    if not (isinstance(data, Mapping) and data.get("format") == FORMAT):
        try:
            ofa = load_ofa_acc_predictor(path, space)
        except ValueError as e:
            if "expected OFA's AccuracyPredictor" not in str(e):
                raise
            raise ValueError(f"predictor {path}: neither an onceforall predictor (search/predictor.pt) nor OFA's "
                             "accuracy predictor (acc_predictor.pth)") from None
        return ofa, {"kind": "ofa", "source": str(path), "pairs": None, "heldout_rmse": None,
                     "heldout_kendall_tau": None, "heldout_top10": None}
    if data.get("version") != VERSION:
        raise ValueError(f"predictor {path}: version {data.get('version')!r}; this onceforall reads {VERSION}")
    ident = data.get("space") or {}
    for key in _IDENTITY:
        if ident.get(key) != getattr(space, key):
            raise ValueError(f"predictor {path}: fitted for space {key}={ident.get(key)!r}, but this space has "
                             f"{key}={getattr(space, key)!r}")
    predictor = AccuracyPredictor(space)
    try:
        predictor.load_state_dict(data["state"])
    except ValueError as e:
        raise ValueError(f"predictor {path}: {e}") from None
    return predictor, {**data.get("fit", {}), **data.get("info", {}), "kind": "onceforall", "source": str(path)}
