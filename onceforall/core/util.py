"""Small helpers every layer shares: atomic file writes, one-line error texts, strict integer checks."""

from __future__ import annotations

import contextlib
import json
import numbers
import os
import re
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

__all__ = ["atomic_torch_save", "atomic_write", "ensure_writable", "first_line", "is_int", "is_number",
           "load_weights_only", "nonfinite_keys", "os_error_text", "read_json", "remove_stale_tmp", "JSONFileError"]


class JSONFileError(ValueError):
    """A JSON file that cannot be used (not JSON, cut short, or of the wrong shape); the message names it."""

    def __init__(self, message: str, path: Path):
        super().__init__(message)
        self.path = path


def read_json(path: str | Path, what: str, *, expect: type | tuple[type, ...] | None = dict, fix: str = "") -> Any:
    """The JSON value in file ``path`` (``what`` it is, e.g. "eval cache"), or a one-line :class:`JSONFileError`
    naming the file when it is not JSON (cut by a crash, not a JSON file at all) or not an ``expect`` (dict: an
    object, list: an array); ``fix`` (e.g. "run onceforall eval again") ends the message. OS errors propagate."""
    path = Path(path)
    try:
        data = json.loads(path.read_bytes().decode("utf-8"))
    except (ValueError, UnicodeDecodeError) as e:
        raise JSONFileError(f"{what} {path} is not valid JSON ({first_line(e)}): cut short by a crash or a full "
                            f"disk, or not a {what} file{'; ' + fix if fix else ''}", path) from None
    if expect is not None and not isinstance(data, expect):
        want = {dict: "an object", list: "an array"}.get(expect, str(expect)) if isinstance(expect, type) else \
            " or ".join({dict: "an object", list: "an array"}.get(t, t.__name__) for t in expect)
        raise JSONFileError(f"{what} {path} holds {_kind(data)}, not {want}: not a {what} file"
                            f"{'; ' + fix if fix else ''}", path)
    return data


def load_weights_only(path: str | Path, what: str) -> Any:
    """``torch.load(path, weights_only=True)`` on the CPU; a missing or unreadable file raises a one-line ValueError
    naming ``what`` and the file (never torch's advice to unpickle it)."""
    import torch

    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise ValueError(f"{what} {path}: not found") from None
    except Exception as e:  # noqa: BLE001 -- any unreadable file is the same one-line error
        raise ValueError(f"{what} {path}: not a weights-only torch file: {first_line(e)}") from None


def _kind(v: Any) -> str:
    return {dict: "an object", list: "an array", str: "a string", type(None): "null", bool: "a boolean"}.get(
        type(v), "a number")


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
    """An integer that is not a bool: a Python int or a numpy integer (OFA's tools may hand those over); not
    ``3.0`` (a JSON field or OFA config that says 3.0 is refused, as elsewhere an int field is: int(3.5) would
    truncate silently) and not ``True``."""
    return isinstance(v, numbers.Integral) and not isinstance(v, bool)


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
    # the writer's pid in the name: remove_stale_tmp can tell a killed writer's leftover from a live one's file
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.p{os.getpid()}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        write(Path(tmp))
        with open(tmp, "rb+") as f:
            os.fsync(f.fileno())
        os.chmod(tmp, 0o666 & ~_UMASK)  # mkstemp's 0600 would make shared files unreadable to others
        os.replace(tmp, path)
    except OSError as e:
        Path(tmp).unlink(missing_ok=True)
        if e.filename is None:  # a failed write() (a full disk) names no file: name the one being written
            raise OSError(e.errno, e.strerror or first_line(e), str(path)) from None
        raise
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def atomic_torch_save(path: str | Path, obj: Any) -> None:
    """``torch.save(obj)`` to ``path`` through :func:`atomic_write`, into the open file rather than by name: torch
    names a zip archive's root folder after the file it is given, and the temporary name (a pid, a random suffix)
    made identical contents differ byte for byte; through a file object the root is always ``archive``."""
    import torch

    def write(tmp: Path) -> None:
        with open(tmp, "wb") as f:
            out = _WriteErrors(f)
            try:
                torch.save(obj, out)
            except RuntimeError:
                # torch's zip writer swallows the file's OSError (a full disk) and fails later with a bare
                # RuntimeError ("unexpected pos ..."): raise the OSError itself, which atomic_write names
                if out.error is not None:
                    raise out.error from None
                raise

    atomic_write(path, write)


class _WriteErrors:
    """A binary file that keeps the OSError its ``write`` raised (everything else is the file's own)."""

    def __init__(self, f: Any) -> None:
        self._f = f
        self.error: OSError | None = None

    def write(self, data: Any) -> int:
        try:
            return self._f.write(data)
        except OSError as e:
            self.error = e
            raise

    def __getattr__(self, name: str) -> Any:
        return getattr(self._f, name)


_TMP = re.compile(r"^\..+\.p(\d+)\.[^.]+\.tmp$")


def remove_stale_tmp(folder: str | Path) -> list[Path]:
    """Remove the temporary files that :func:`atomic_write` calls left in ``folder`` when they were killed (their
    writer's pid, in the name, is no longer running); returns the files removed. Files of live writers stay."""
    folder = Path(folder)
    removed = []
    if not folder.is_dir():
        return removed
    for p in folder.glob(".*.tmp"):
        m = _TMP.match(p.name)
        if m is None or _pid_running(int(m.group(1))):
            continue
        with contextlib.suppress(FileNotFoundError):
            p.unlink()
            removed.append(p)
    return removed


def _pid_running(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
