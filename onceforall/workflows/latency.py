"""Building a latency lookup table for this device (``onceforall latency-table``), for a run's space (kept
in the run directory, where ``search --latency-ms`` finds it) or for any registered space."""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from ..core.space import Space
from ..run.rundir import RunDir
from ..specialize.latency import (
    ERROR_THRESHOLD_PCT,
    LatencyTable,
    build_latency_table,
    consistency_check,
    latency_error,
)

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
                       seed: int = 0, repeats: int = 20, min_seconds: float = 0.5,
                       max_error_pct: float = ERROR_THRESHOLD_PCT,
                       progress: Callable[[str], None] | None = None) -> LatencyTableResult:
    """Measure and save (``out``, default :func:`default_table_path`) the table with its consistency check:
    monotonicity, and with ``check`` > 0 its error on that many random archs (plus the smallest and largest)
    timed as whole networks, which fails above ``max_error_pct`` mean absolute error."""
    table = build_latency_table(space, backend=backend, threads=threads, batch=batch, repeats=repeats,
                                min_seconds=min_seconds, progress=progress)
    report = None
    if check:
        rng = random.Random(seed)
        archs = list(dict.fromkeys([space.min(), space.max(), *(space.sample(rng) for _ in range(check))]))
        report = latency_error(table, space, archs)
        table.check = consistency_check(table.entries, report, max_error_pct=max_error_pct)
    path = table.save(out or default_table_path(space, backend, threads, batch, run_dir))
    return LatencyTableResult(table, path, report)
