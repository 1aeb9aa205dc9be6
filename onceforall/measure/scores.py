"""Per-image results of a run's Pareto curve: which test images each curve point got right (kept in
``eval/curve_correct.json``), the per-image scores whose mean is mean Pareto accuracy, and the fingerprint
that tells whether two runs were evaluated on the same images (paired comparisons)."""

from __future__ import annotations

import base64
import hashlib
import json
from pathlib import Path

import numpy as np

from ..core.pareto import curve_weights, window_weights
from ..core.util import JSONFileError, atomic_write, first_line, is_int, read_json
from ..data import EvalBatches
from ..run.rundir import RunDir

__all__ = ["curve_scores", "fingerprint", "pack_mask", "read_curve_correct", "unpack_mask", "write_curve_correct"]


def pack_mask(mask: np.ndarray) -> str:
    return base64.b64encode(np.packbits(mask.astype(bool)).tobytes()).decode()


def unpack_mask(text: str, n: int) -> np.ndarray:
    raw = base64.b64decode(text, validate=True)  # binascii.Error (a ValueError) on damaged text
    if len(raw) != (n + 7) // 8:
        raise ValueError(f"a mask of {len(raw)} bytes for {n} images")
    return np.unpackbits(np.frombuffer(raw, dtype=np.uint8), count=n).astype(bool)


def fingerprint(batches: EvalBatches) -> str:
    """Identifies the images of a split (its labels, or its files, in order): paired comparisons need it."""
    ds = batches.ds
    h = hashlib.sha256(f"{ds.name}|{len(ds)}|".encode())
    if hasattr(ds, "labels"):
        h.update(ds.labels.numpy().tobytes())
    else:
        h.update(repr(ds.samples).encode())
    return h.hexdigest()[:16]


def curve_scores(curve: list[dict], correct: dict[str, np.ndarray], lo: float, hi: float,
                 window: tuple[float, float] | None = None) -> np.ndarray:
    """Per test image, the weighted sum (%) of the curve points' correctness whose mean is mean Pareto accuracy
    (with ``window``: the curve's mean over those MACs, :func:`window_weights`)."""
    macs = [p["macs"] for p in curve]
    weights = curve_weights(macs, lo, hi) if window is None else window_weights(macs, *window)
    return 100.0 * sum(w * correct[p["arch"]].astype(np.float64) for w, p in zip(weights, curve))


def read_curve_correct(run_dir: str | Path) -> dict | None:
    """``eval/curve_correct.json`` of an evaluated run: the test images each curve point got right."""
    path = RunDir(run_dir).curve_correct
    if not path.is_file():
        return None
    data = read_json(path, "eval per-image results", fix=f"run `onceforall eval {run_dir}` again")
    if not is_int(data.get("images")) or not isinstance(data.get("correct"), dict) or \
            not all(isinstance(v, str) for v in data["correct"].values()):
        raise JSONFileError(f"eval per-image results {path} lack 'images' (an integer) or 'correct' (arch -> packed "
                            f"mask): run `onceforall eval {run_dir}` again", path)
    try:
        data["correct"] = {a: unpack_mask(b, data["images"]) for a, b in data["correct"].items()}
    except ValueError as e:
        raise JSONFileError(f"eval per-image results {path}: a mask does not unpack ({first_line(e)}): run "
                            f"`onceforall eval {run_dir}` again", path) from None
    return data


def write_curve_correct(path: Path, correct: dict[str, np.ndarray], fingerprint: str) -> None:
    """Write ``eval/curve_correct.json`` (``RunDir.curve_correct``: packed bits per curve arch)."""
    images = len(next(iter(correct.values())))
    text = json.dumps({"images": images, "fingerprint": fingerprint,
                       "correct": {a: pack_mask(m) for a, m in correct.items()}}, indent=0)
    atomic_write(path, lambda p: p.write_text(text))
