"""Building a latency lookup table for this device (``onceforall latency-table``), for a run's space (kept
in the run directory, where ``search --latency-ms`` finds it) or for any registered space."""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from ..core.space import Space
from ..run.rundir import RunDir
from ..specialize.latency import LatencyTable, build_latency_table, latency_error

__all__ = ["LatencyTableResult", "default_table_path", "make_latency_table"]


@dataclass
class LatencyTableResult:
    table: LatencyTable
    path: Path
    check: dict | None
    """:func:`~onceforall.specialize.latency.latency_error` on random archs, or None."""


def default_table_path(space: Space, backend: str, threads: int, batch: int, run_dir: str | Path | None) -> Path:
    """A run's table lives in the run directory; a space's in the current folder, named by its settings."""
    if run_dir is not None:
        return RunDir(run_dir).latency_table(backend, threads, batch)
    return Path(f"latency-{space.name}-w{space.width_mult:g}-{backend}-t{threads}-b{batch}.json")


def make_latency_table(space: Space, *, backend: str = "torch", threads: int = 1, batch: int = 1,
                       out: str | Path | None = None, run_dir: str | Path | None = None, check: int = 10,
                       seed: int = 0, progress: Callable[[str], None] | None = None) -> LatencyTableResult:
    """Measure, save (``out``, default :func:`default_table_path`) and, with ``check`` > 0, report the table's
    error on that many random archs timed as whole networks."""
    table = build_latency_table(space, backend=backend, threads=threads, batch=batch, progress=progress)
    path = table.save(out or default_table_path(space, backend, threads, batch, run_dir))
    report = None
    if check:
        rng = random.Random(seed)
        report = latency_error(table, space, [space.sample(rng) for _ in range(check)])
    return LatencyTableResult(table, path, report)
