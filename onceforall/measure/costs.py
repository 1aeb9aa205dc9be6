"""The costs of a subnet that search, front and export minimize or report, built in one place
(:func:`cost_functions`): MACs and parameters (the space's counts), latency (a lookup table of this device, built
into the run directory when missing, or OFA's yaml table) and peak activation memory; and the search space a cost
implies (a latency table's resolutions, ``--resolution``)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from ..core.arch import Arch
from ..core.space import Space
from ..run.rundir import LoadedRun
from ..specialize.budgets import BUDGET_UNITS
from ..specialize.latency import LatencyTable, build_latency_table
from ..specialize.memory import DTYPE_BYTES, peak_memory
from ..specialize.ofa_formats import load_ofa_latency_lut

__all__ = ["COSTS", "check_costs", "check_table_usable", "cost_functions", "latency_space", "latency_table_of",
           "pin_resolution"]

COSTS = BUDGET_UNITS
"""The costs a front can minimize, with their units."""


def check_costs(costs: list[str]) -> list[str]:
    bad = [c for c in costs if c not in COSTS]
    if bad or not costs:
        raise ValueError(f"costs: {','.join(bad) or '(none)'} is not valid; valid: {', '.join(COSTS)}")
    return list(dict.fromkeys(costs))


def cost_functions(run: LoadedRun, costs: list[str], *, latency_table: str | None = None,
                   accept_noisy_table: bool = False, memory_dtype: str = "float32",
                   say: Callable[[str], None] = lambda s: None
                   ) -> tuple[dict[str, Callable[[Arch], float]], dict, Space]:
    """The cost functions of ``costs`` for the run's space, what they were computed with, and the space to
    search (the run's, restricted to the latency table's resolutions when it covers only some)."""
    space = run.space
    if "latency" in costs:
        table, where = latency_table_of(run, latency_table, say, accept_noisy_table)
        space = latency_space(space, table, say)
    fns: dict[str, Callable[[Arch], float]] = {}
    info: dict[str, Any] = {}
    for c in check_costs(costs):
        if c == "macs":
            fns[c] = space.macs
        elif c == "params":
            fns[c] = space.params
        elif c == "memory":
            if memory_dtype not in DTYPE_BYTES:
                raise ValueError(f"memory dtype: {memory_dtype!r} is not valid; valid: {', '.join(DTYPE_BYTES)}")
            fns[c] = lambda a: peak_memory(space, a, memory_dtype)
            info["memory_dtype"] = memory_dtype
        else:
            fns[c] = lambda a, table=table: table.predict(space, a)
            info["latency_table"] = where
    return fns, info, space


def latency_table_of(run: LoadedRun, path: str | None, say: Callable[[str], None],
                     accept_noisy: bool = False) -> tuple[LatencyTable, str]:
    """The latency table at ``path``, else the run's default one (torch, 1 thread, batch 1), built and saved
    into the run directory when it is missing; with where it came from. A table whose consistency check failed
    is refused unless ``accept_noisy`` (:func:`check_table_usable`)."""
    if path is None:
        path = str(run.dir.latency_table("torch", 1, 1))
        if not Path(path).exists():
            say("building a latency table for this device (torch, 1 thread, batch 1)")
            build_latency_table(run.space, backend="torch", threads=1, batch=1).save(path)
    if str(path).endswith((".yaml", ".yml")):  # OFA's latency lookup table format
        table = load_ofa_latency_lut(path, run.space)
        say(f"read OFA's latency lookup table {path} (resolutions {', '.join(map(str, table.space['resolutions']))})")
    else:
        table = LatencyTable.load(path)
    check_table_usable(table, str(path), accept_noisy, say)
    return table, str(path)


def latency_space(space: Space, table: LatencyTable, say: Callable[[str], None]) -> Space:
    """``space`` restricted to the resolutions ``table`` was built for (a table for a few deployment resolutions,
    ``latency-table --run RUN --resolutions 160,224``, searches those only); one-line error when it has none."""
    have = [r for r in space.resolutions if r in table.space.get("resolutions", ())]
    if not have:
        raise ValueError(f"latency table: built for resolutions {table.space.get('resolutions')}, none of the "
                         f"space's ({', '.join(map(str, space.resolutions))}); build one with `onceforall "
                         "latency-table --run RUN [--resolutions R,R]`")
    if len(have) == len(space.resolutions):
        return space
    say(f"the latency table covers resolutions {', '.join(map(str, have))}: searching those only")
    return space.restrict(resolutions=have)


def pin_resolution(space: Space, resolution: int | None, say: Callable[[str], None]) -> Space:
    """``space`` restricted to one ``resolution`` (``search --resolution R``), or unchanged when None; one-line
    error naming the valid ones."""
    if resolution is None:
        return space
    if resolution not in space.resolutions:
        raise ValueError(f"--resolution: {resolution} is not valid; the search space has resolutions "
                         f"{', '.join(map(str, space.resolutions))}")
    say(f"searching at resolution {resolution} only")
    return space.restrict(resolutions=[resolution])


def check_table_usable(table: LatencyTable, where: str, accept_noisy: bool, say: Callable[[str], None]) -> None:
    """Refuse a table whose stored consistency check failed (one line naming the file and the first problem),
    unless ``accept_noisy``; then, or for a table without a check, only say so."""
    if table.check is None:
        say(f"latency table {where} has no consistency check (written by an older onceforall); rebuild it with "
            "`onceforall latency-table` to have it checked")
        return
    if not table.failed_check:
        return
    problem = (table.check.get("problems") or ["check failed"])[0]
    if not accept_noisy:
        raise ValueError(f"latency table {where}: failed its consistency check: {problem}; rebuild it with "
                         "`onceforall latency-table` on a quieter machine (or more --repeats), or pass "
                         "--accept-noisy-table to search with it anyway")
    say(f"warning: latency table {where} failed its consistency check ({problem}); using it as asked "
        "(--accept-noisy-table)")
