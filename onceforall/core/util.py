"""Small helpers every layer shares: atomic file writes, one-line error texts, strict integer checks."""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

__all__ = ["atomic_write", "ensure_writable", "first_line", "is_int", "is_number", "nonfinite_keys", "os_error_text"]


def first_line(e: BaseException) -> str:
    """The first line of an exception's message (its type name if it has none): errors stay one line."""
    text = str(e).strip()
    return text.splitlines()[0] if text else type(e).__name__


def os_error_text(e: OSError) -> str:
    """One line for an OS error: what failed and on which path (``cannot write /x/y: Permission denied``)."""
    what = e.strerror or first_line(e)
    paths = [p for p in (e.filename, e.filename2) if p is not None]
    return f"{what}: {' -> '.join(str(p) for p in paths)}" if paths else what


def ensure_writable(folder: str | Path) -> Path:
    """Create ``folder`` (and its parents) and prove a file can be written in it, so that a command fails in its
    first second with the OS's error, not after hours of work."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    fd, probe = tempfile.mkstemp(prefix=".write-probe-", dir=folder)
    os.close(fd)
    os.unlink(probe)
    return folder


def nonfinite_keys(state: Any) -> list[str]:
    """Names of the floating-point tensors of ``state`` (a name -> tensor mapping) holding a NaN or an infinity:
    weights that must not be loaded, saved as a result, or deployed."""
    import torch

    return [k for k, v in state.items()
            if isinstance(v, torch.Tensor) and v.is_floating_point() and not bool(torch.isfinite(v).all())]


def is_int(v: Any) -> bool:
    """An int that is not a bool."""
    return isinstance(v, int) and not isinstance(v, bool)


def is_number(v: Any) -> bool:
    """An int or float that is not a bool."""
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def _current_umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


_UMASK = _current_umask()


def atomic_write(path: str | Path, write: Callable[[Path], None]) -> None:
    """Call ``write(tmp)`` for a temporary file next to ``path``, fsync it, then rename it over ``path``:
    readers see the old file or the new one, never a half-written one."""
    path = Path(path)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        write(Path(tmp))
        with open(tmp, "rb+") as f:
            os.fsync(f.fileno())
        os.chmod(tmp, 0o666 & ~_UMASK)  # mkstemp's 0600 would make shared files unreadable to others
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
