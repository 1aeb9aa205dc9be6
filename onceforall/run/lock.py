"""One writer per run: a lock file that names its holder.

``train`` holds ``<run>/.lock`` for the whole run (under torchrun: rank 0, for the whole job); ``eval`` and
``search`` hold ``<run>/eval/.lock`` and ``<run>/search/.lock`` while they write their caches. The file holds the
holder's pid, host, start time and (under torchrun) its job key, so a second writer is refused in one line that
names who holds it. Reading a run that is being trained is allowed: checkpoints are replaced atomically.

A lock left by a process that died (SIGKILL, power cut) on this host is detected (that pid is gone, or now belongs
to a process that started later) and taken over with a one-line note. A torchrun restart of the same job (the same
job key) takes over the lock its killed first attempt left. A lock from another host cannot be checked: it is
refused, and the message says which file to delete once that process is known to be gone.
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import sys
import time
from datetime import datetime
from pathlib import Path
from types import TracebackType

from ..core.util import first_line

__all__ = ["LOCK_NAME", "AgentWatch", "RunLock", "RunLockError", "lock_holder"]

LOCK_NAME = ".lock"


class RunLockError(ValueError):
    """Another live process writes this run (or this part of it)."""


def _proc_start(pid: int) -> int | None:
    """When ``pid`` started (clock ticks since boot, Linux), to tell a reused pid from the holder; None elsewhere."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        return int(fields[19])
    except (OSError, IndexError, ValueError):
        return None


def _alive(pid: int, started: int | None) -> bool:
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, another user's
        pass
    now = _proc_start(pid)
    return started is None or now is None or now == started


def lock_holder(path: str | Path, _retry: bool = False) -> dict | None:
    """The contents of lock file ``path`` (pid, host, started, what, job), or None if there is none; a file that
    cannot be parsed (a writer killed between creating and writing it) reads as a dead holder."""
    path = Path(path)
    try:
        text = path.read_text()
    except FileNotFoundError:
        return None
    try:
        info = json.loads(text)
        if not isinstance(info, dict) or not isinstance(info.get("pid"), int):
            raise ValueError("not a lock record")
    except ValueError:  # empty or cut: a writer between creating and writing it, or one killed right there
        if time.time() - path.stat().st_mtime < 2 and not _retry:
            time.sleep(0.2)
            return lock_holder(path, _retry=True)
        return {"pid": -1, "host": socket.gethostname(), "started": "?", "what": "?", "unreadable": True}
    return info


def _describe(info: dict) -> str:
    return f"{info.get('what', '?')} (pid {info.get('pid')} on {info.get('host')}, since {info.get('started')})"


class RunLock:
    """Hold lock file ``folder/.lock`` as ``what`` (``train``, ``eval``, ...) until :meth:`release` or the end
    of a ``with`` block. ``job``: the torchrun job key; a lock of the same job is taken over (its restart)."""

    def __init__(self, folder: str | Path, what: str, *, job: str | None = None):
        self.folder = Path(folder)
        self.path = self.folder / LOCK_NAME
        self.what = what
        self.job = job
        self.held = False
        self.note: str | None = None
        """The one-line note when a stale lock was taken over (also printed on stderr)."""

    def _record(self) -> str:
        pid = os.getpid()
        return json.dumps({"pid": pid, "host": socket.gethostname(), "proc_start": _proc_start(pid),
                           "started": datetime.now().isoformat(timespec="seconds"), "what": self.what,
                           "job": self.job}) + "\n"

    def _create(self) -> bool:
        """Write the lock file if there is none (O_EXCL: of two racing writers exactly one succeeds)."""
        try:
            fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
        except FileExistsError:
            return False
        try:
            os.write(fd, self._record().encode())
        finally:
            os.close(fd)
        return True

    def acquire(self) -> RunLock:
        self.folder.mkdir(parents=True, exist_ok=True)
        for _ in range(3):  # a racing writer may remove a stale lock between our tries
            if self._create():
                self.held = True
                return self
            info = lock_holder(self.path)
            if info is None:
                continue
            same_job = self.job is not None and info.get("job") == self.job
            local = info.get("host") == socket.gethostname()
            if info.get("pid") == os.getpid() and local:
                raise RunLockError(f"{self.path}: this process already holds it")
            if not same_job and (not local or _alive(int(info["pid"]), info.get("proc_start"))):
                hint = ("" if local else f"; if that process is gone, delete {self.path}")
                raise RunLockError(f"{self.folder} is in use by {_describe(info)}: one writer per run; wait for "
                                   f"it to finish or stop it{hint}")
            note = (f"{self.folder}: taking over the lock of the same torchrun job's earlier attempt "
                    f"({_describe(info)})" if same_job else
                    f"{self.folder}: taking over a stale lock of {_describe(info)}, which is no longer running")
            if self._move_aside(info):
                self.note = note
                print(note, file=sys.stderr, flush=True)
        raise RunLockError(f"{self.path}: could not take the lock (other writers keep taking it); try again")

    def _move_aside(self, stale: dict) -> bool:
        """Move the stale lock away; False if another writer got there first (and then put back what we moved
        if it was that writer's fresh lock: ``os.link`` fails rather than overwrite a lock created meanwhile)."""
        aside = self.path.with_name(f"{LOCK_NAME}.stale-{os.getpid()}")
        try:
            os.replace(self.path, aside)
        except FileNotFoundError:
            return False
        except OSError as e:
            raise RunLockError(f"cannot take over the lock {self.path}: {first_line(e)}") from None
        moved = lock_holder(aside)
        try:
            if moved != stale:
                with contextlib.suppress(FileExistsError):
                    os.link(aside, self.path)
                return False
            return True
        finally:
            aside.unlink(missing_ok=True)

    def release(self) -> None:
        """Remove the lock file if it is still ours."""
        if not self.held:
            return
        self.held = False
        info = lock_holder(self.path)
        if info is not None and info.get("pid") == os.getpid():
            self.path.unlink(missing_ok=True)

    def __enter__(self) -> RunLock:
        return self if self.held else self.acquire()

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.release()



class AgentWatch:
    """Tells a torchrun worker that its agent died: the worker's parent process changed (it was re-parented to
    init or a subreaper). Such an orphan would train on unsupervised, and a relaunch would make two writers."""

    def __init__(self, under_torchrun: bool):
        self.parent = os.getppid() if under_torchrun else None

    def gone(self) -> bool:
        return self.parent is not None and os.getppid() != self.parent
