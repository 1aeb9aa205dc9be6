"""Where a training job runs and when it stops: the run-directory decision (a torchrun restart continues the
directory its job chose), the run's lock for the whole job, and the stop conditions between steps (a signal,
``train.stop_after_steps``, an orphaned torchrun worker)."""

from __future__ import annotations

import contextlib
import os
import signal
import threading
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from types import FrameType, TracebackType

from ..core import distributed
from ..core.util import atomic_write, remove_stale_tmp
from .config import Config
from .lock import AgentWatch, RunLock, RunLockError
from .rundir import RunDir

__all__ = ["ORPHANED", "StopFlag", "decide_run_dir", "default_run_name", "elastic_restart", "hold_run",
           "stop_reason"]

ORPHANED = "torchrun agent gone"


def default_run_name(cfg: Config) -> str:
    return f"{cfg.name}-{datetime.now().strftime('%Y%m%d-%H%M%S')}"


def elastic_restart() -> tuple[str, int] | None:
    """(job key, restart number) when launched by ``torchrun`` (torchelastic), else None. The key is the same on
    every restart of one job: the rendezvous id, or, without one (``none``), this node's agent process."""
    if "TORCHELASTIC_RESTART_COUNT" not in os.environ:
        return None
    run_id = os.environ.get("TORCHELASTIC_RUN_ID", "none")
    key = run_id if run_id not in ("", "none") else f"agent-{os.getppid()}"
    return key, int(os.environ["TORCHELASTIC_RESTART_COUNT"])


def decide_run_dir(cfg: Config, run_dir: Path | None, d: distributed.Dist) -> tuple[Path, bool]:
    """The run directory and whether this start continues an earlier one of the same job: a torchrun restart
    (``--max-restarts``) uses the directory its job chose at its first start, named or not, and resumes from its
    checkpoint when there is one. Decided by rank 0, the same on every rank."""
    job = elastic_restart()
    chosen = str(run_dir) if run_dir is not None else ""
    if d.is_main:
        if job is not None:
            marker = RunDir.job_file(Path(cfg.train.out_dir), job[0])
            if job[1] > 0 and marker.is_file():
                chosen = marker.read_text().strip()
            if not chosen:
                chosen = str(Path(cfg.train.out_dir) / default_run_name(cfg))
            marker.parent.mkdir(parents=True, exist_ok=True)
            atomic_write(marker, lambda tmp: tmp.write_text(chosen + "\n"))
        elif not chosen:
            chosen = str(Path(cfg.train.out_dir) / default_run_name(cfg))
    chosen = d.broadcast_str(chosen)
    restarted = job is not None and job[1] > 0
    return Path(chosen), restarted and RunDir(chosen).last_checkpoint.is_file()


@contextlib.contextmanager
def hold_run(run_dir: Path, d: distributed.Dist) -> Iterator[RunLock]:
    """Rank 0 holds the run's lock (:class:`~onceforall.run.lock.RunLock`) for the whole job; a refusal is raised
    on every rank. A torchrun restart of the same job takes over the lock of its earlier attempt. Leftover
    temporary files of writes that a kill interrupted are removed once the lock is ours."""
    job = elastic_restart()
    lock = RunLock(run_dir, "train", job=job[0] if job else None)
    created = not run_dir.exists()
    refused = ""
    if d.is_main:
        try:
            lock.acquire()
            for folder in (run_dir, RunDir(run_dir).checkpoints):
                remove_stale_tmp(folder)
        except (RunLockError, OSError) as e:
            if not d.enabled:
                raise
            refused = f"{type(e).__name__}: {e}"
    refused = d.broadcast_str(refused)
    if refused:
        raise RunLockError(refused.split(": ", 1)[1])
    try:
        yield lock
    finally:
        lock.release()
        if created and d.is_main:  # a start that failed before writing anything leaves no empty run directory
            with contextlib.suppress(OSError):
                run_dir.rmdir()


class StopFlag:
    """SIGINT/SIGTERM set a flag; the loop checkpoints between steps and stops cleanly."""

    def __init__(self) -> None:
        self.raised: int | None = None
        self._old: dict[int, object] = {}

    def __enter__(self) -> StopFlag:
        if threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGINT, signal.SIGTERM):
                self._old[sig] = signal.signal(sig, self._handle)
        return self

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        self.raised = signum

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        for sig, old in self._old.items():
            signal.signal(sig, old)


def stop_reason(signum: int | None, agent: AgentWatch, t: int, stop_after: int | None,
                d: distributed.Dist) -> str | None:
    """Why the loop stops after step ``t`` (None: it goes on): a signal, ``train.stop_after_steps``, or the
    torchrun agent's death (an orphaned worker). Under torchrun every rank stops at the same step if any must."""
    reason = (f"signal {signum}" if signum is not None else ORPHANED if agent.gone() else
              "train.stop_after_steps" if stop_after is not None and t >= stop_after else None)
    if d.enabled and d.any(reason is not None) and reason is None:
        reason = "another rank stopped"
    return reason
