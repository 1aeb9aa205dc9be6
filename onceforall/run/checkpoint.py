"""Checkpoints: atomic writes, ``torch.load(weights_only=True)`` reads, integrity checks, clear errors; the one
loader that resuming a run and opening a finished one share.

A checkpoint holds only tensors and plain Python values (dicts, lists, numbers, strings), so it loads
without unpickling arbitrary objects. Its ``space`` entry is the space's identity (:meth:`Space.identity`)
and its ``config`` entry the run's resolved config: together they say which network the weights belong to.

Integrity: a checkpoint carries ``checksum``, a SHA-256 of its whole contents (every tensor's dtype, shape and
bytes, every value) computed when it is written and verified when it is read, so a file damaged on disk (a flipped
block, a bad copy) is refused with a one-line error instead of loading a NaN or a silently wrong weight. Loading
also refuses non-finite model weights. Writing keeps the previous ``last.pt`` as ``previous.pt`` (a hard link, so
no extra space until the next write), the older checkpoint an error message points to.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import zipfile
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ..core.space import Space
from ..core.util import atomic_torch_save, first_line, nonfinite_keys

__all__ = ["CheckpointError", "content_checksum", "load_checkpoint", "load_model_state", "peek_config", "peek_state",
           "previous_checkpoint", "save_checkpoint"]

FORMAT = 2
"""2: with ``checksum`` (format 1, without it, still loads, unverified)."""


class CheckpointError(ValueError):
    """A checkpoint that cannot be used (missing, truncated, damaged, from another space or run)."""


def content_checksum(obj: Any) -> str:
    """SHA-256 (hex) of a checkpoint's contents: tensors by dtype, shape and bytes; dicts with their keys in a fixed
    order; lists and tuples alike (a round trip through ``torch.save`` may turn one into the other); other values by
    ``repr``. Equal for a state and the same state loaded back."""
    h = hashlib.sha256()
    _feed(h, obj)
    return h.hexdigest()


def _feed(h: Any, obj: Any) -> None:
    if isinstance(obj, torch.Tensor):
        t = obj.detach().to("cpu").contiguous()
        h.update(f"T{t.dtype}{tuple(t.shape)}".encode())
        h.update(t.reshape(-1).view(torch.uint8).numpy())
    elif isinstance(obj, dict):
        h.update(f"D{len(obj)}".encode())
        for k in sorted(obj, key=repr):
            _feed(h, k)
            _feed(h, obj[k])
    elif isinstance(obj, (list, tuple)):
        h.update(f"L{len(obj)}".encode())
        for v in obj:
            _feed(h, v)
    else:
        h.update(f"V{obj!r}".encode())


def previous_checkpoint(path: str | Path) -> Path:
    """Where :func:`save_checkpoint` keeps the checkpoint that ``path`` replaced."""
    path = Path(path)
    return path.with_name(f"previous{path.suffix}") if path.stem == "last" else path.with_name(
        f"{path.stem}.previous{path.suffix}")


def save_checkpoint(path: str | Path, state: dict[str, Any], *, keep_previous: bool = True) -> None:
    """Write ``state`` and its checksum to ``path`` atomically (a temporary file in the same folder, fsync,
    rename); with ``keep_previous`` the file it replaces stays as :func:`previous_checkpoint`."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    payload = {"format": FORMAT, **state}
    payload["checksum"] = content_checksum(payload)
    if keep_previous and path.is_file():
        prev = previous_checkpoint(path)
        tmp = prev.with_name(f".{prev.name}.link")
        tmp.unlink(missing_ok=True)
        try:
            os.link(path, tmp)  # no copy: the old inode lives on under the new name
        except OSError:
            shutil.copy2(path, tmp)
        os.replace(tmp, prev)
    try:
        atomic_torch_save(path, payload)
    except RuntimeError as e:  # torch's writer failing on its own (the file's errors come back as OSError)
        raise OSError(f"cannot write checkpoint {path}: {first_line(e)}") from None


def _older(path: Path) -> str:
    """A hint naming the newest older checkpoint of the same run that verifies, if any."""
    candidates = [previous_checkpoint(path)]
    candidates += sorted(path.parent.glob("epoch-*.pt"), reverse=True)
    for c in candidates:
        if c.is_file() and c != path:
            try:
                st = _read(c, "cpu")
            except CheckpointError:
                continue
            step = st.get("state", {}).get("step") if isinstance(st.get("state"), dict) else None
            at = f" (step {step})" if step is not None else ""
            return f"; the older {c}{at} is intact: move it to {path} to continue from it"
    return "; no intact older checkpoint of this run was found"


def _read(path: Path, map_location: str | torch.device) -> dict[str, Any]:
    """Load and verify one file (no hint)."""
    if path.stat().st_size == 0:
        raise CheckpointError(f"checkpoint {path} is empty (0 bytes): not a checkpoint, or its write never happened")
    if not zipfile.is_zipfile(path):  # torch's own message would suggest weights_only=False: never for our files
        raise CheckpointError(f"checkpoint {path} is unreadable (truncated, or not a torch checkpoint at all: a "
                              "text file or another format)")
    try:
        state = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as e:  # truncated zip, bad magic, disallowed global, ...
        why = "it holds objects other than tensors and plain values" if "weights_only" in str(e) else first_line(e)
        raise CheckpointError(f"checkpoint {path} is unreadable (truncated or not a onceforall checkpoint): "
                              f"{why}") from None
    if not isinstance(state, dict) or state.get("format") not in (1, FORMAT):
        raise CheckpointError(f"checkpoint {path} is not a onceforall training checkpoint (format {FORMAT})")
    if state["format"] == FORMAT:
        stored = state.pop("checksum", None)
        if stored != content_checksum(state):
            raise CheckpointError(f"checkpoint {path} is damaged (its contents do not match the checksum written "
                                  "with it)")
    for key in ("model", "teacher"):
        bad = nonfinite_keys(state.get(key) or {})
        if bad:
            raise CheckpointError(f"checkpoint {path} holds non-finite weights ({key} {bad[0]}"
                                  f"{f' and {len(bad) - 1} more' if len(bad) > 1 else ''})")
    return state


def load_checkpoint(path: str | Path, map_location: str | torch.device = "cpu", *,
                    space: Space | None = None) -> dict[str, Any]:
    """Load a checkpoint written by :func:`save_checkpoint` (weights_only: nothing is unpickled), verify its
    checksum and that its weights are finite; with ``space``, refuse one that was trained on another space.
    A damaged file's error names the newest intact older checkpoint of the run."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint {path} not found")
    try:
        state = _read(path, map_location)
    except CheckpointError as e:
        raise CheckpointError(f"{e}{_older(path)}") from None
    if space is not None and state.get("space") != space.identity():
        raise CheckpointError(f"checkpoint {path} was trained on space {state.get('space')}; this run builds "
                              f"{space.identity()}")
    return state


def _peek(path: str | Path, key: str) -> dict[str, Any] | None:
    """One dict entry of a checkpoint, read cheaply (tensors memory-mapped, nothing verified); None when the file
    cannot be read that way or has no such dict (the full load, which verifies, then says why)."""
    try:
        state = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
    except Exception:  # noqa: BLE001 - load_checkpoint reports it properly
        return None
    entry = state.get(key) if isinstance(state, dict) else None
    return entry if isinstance(entry, dict) else None


def peek_config(path: str | Path) -> dict[str, Any] | None:
    """The ``config`` entry of a checkpoint, read cheaply (not verified) so that a resume can be refused before any
    data is read; None when the file cannot be read that way."""
    return _peek(path, "config")


def peek_state(path: str | Path) -> dict[str, Any] | None:
    """The ``state`` entry of a checkpoint (step, steps_per_epoch, ...), read cheaply (not verified: for progress
    reports such as ``curves.py --plan``, never to resume from); None when the file cannot be read that way."""
    return _peek(path, "state")


def load_model_state(net: nn.Module, state: dict[str, torch.Tensor], path: str | Path) -> None:
    """``net.load_state_dict(state)`` (strict) with a one-line error naming the checkpoint."""
    try:
        net.load_state_dict(state)
    except RuntimeError as e:
        raise CheckpointError(f"checkpoint {path} does not fit this supernet: {first_line(e)}") from None
