"""The consistency check a latency lookup table stores (``LatencyTable.check``): monotonicity of its entries (a
larger op of the same slot must not measure faster beyond noise) and its sums against whole-network timings."""

from __future__ import annotations

import re
from collections.abc import Iterable
from typing import Any

__all__ = ["ERROR_THRESHOLD_PCT", "MONOTONE_FLOOR_MS", "MONOTONE_TOLERANCE", "consistency_check",
           "monotone_violations"]

MONOTONE_TOLERANCE = 0.2
"""A larger layer may measure this fraction faster than a smaller one before the table is called inconsistent."""
MONOTONE_FLOOR_MS = 0.002
"""...plus this many milliseconds (timer resolution on tiny layers)."""
ERROR_THRESHOLD_PCT = 25.0
"""Largest mean absolute error (%) of the table's sums against whole-network timings that passes the check."""

_BLOCK_KEY = re.compile(r"^r(\d+):s(\d+)b(\d+):k(\d+)e([0-9.]+)$")
_FIXED_KEY = re.compile(r"^r(\d+):(stem|first|head)$")


def _parse_key(key: str) -> tuple[int, str, tuple[int, float]] | None:
    """(resolution, slot, (kernel, expand)) of a layer key; slot is 's2b1' or 'stem'/'first'/'head' (size (0, 0))."""
    m = _BLOCK_KEY.match(key)
    if m:
        return int(m[1]), f"s{m[2]}b{m[3]}", (int(m[4]), float(m[5]))
    m = _FIXED_KEY.match(key)
    return (int(m[1]), m[2], (0, 0.0)) if m else None


def _ordered_pairs(keys: Iterable[str]) -> list[tuple[str, str]]:
    """(smaller, larger) pairs of layers of the same slot: the larger has kernel, expand and resolution all >=,
    one of them >. A larger op does more work on the same input, so it must not be faster."""
    by_slot: dict[str, list[tuple[int, tuple[int, float], str]]] = {}
    for key in keys:
        parsed = _parse_key(key)
        if parsed is not None:
            r, slot, size = parsed
            by_slot.setdefault(slot, []).append((r, size, key))
    pairs = []
    for items in by_slot.values():
        for r1, (k1, e1), a in items:
            for r2, (k2, e2), b in items:
                if a != b and r1 <= r2 and k1 <= k2 and e1 <= e2:
                    pairs.append((a, b))
    return pairs


def monotone_violations(entries: dict[str, float], *, tolerance: float = MONOTONE_TOLERANCE,
                        floor_ms: float = MONOTONE_FLOOR_MS) -> list[dict[str, Any]]:
    """Pairs of layers where the larger op (more expand, larger kernel or resolution, same slot) is faster than
    the smaller one beyond noise (``tolerance`` x the smaller's time + ``floor_ms``), worst first:
    ``[{smaller, larger, smaller_ms, larger_ms, faster_pct}]``."""
    out = []
    for a, b in _ordered_pairs(entries):
        small, large = entries[a], entries[b]
        if large < small * (1.0 - tolerance) - floor_ms:
            out.append({"smaller": a, "larger": b, "smaller_ms": small, "larger_ms": large,
                        "faster_pct": round(100.0 * (small - large) / small, 1)})
    return sorted(out, key=lambda v: -v["faster_pct"])


def consistency_check(entries: dict[str, float], whole_net: dict[str, Any] | None = None, *,
                      tolerance: float = MONOTONE_TOLERANCE, floor_ms: float = MONOTONE_FLOOR_MS,
                      max_error_pct: float = ERROR_THRESHOLD_PCT) -> dict[str, Any]:
    """The check a table stores (``table.check``): monotonicity of its entries and, given a
    :func:`latency_error` report, its sums against whole networks.

    Returns ``{"ok", "problems": [one line each], "monotone": {pairs, violations (the worst 20), count,
    tolerance, floor_ms}, "whole_net": {archs, mean_abs_error_pct, max_abs_error_pct, threshold_pct} or None}``.
    """
    violations = monotone_violations(entries, tolerance=tolerance, floor_ms=floor_ms)
    problems = []
    if violations:
        v = violations[0]
        problems.append(f"{len(violations)} larger layer(s) measured faster than smaller ones beyond "
                        f"{100 * tolerance:g}% (worst: {v['larger']} {v['larger_ms']:.4g} ms < {v['smaller']} "
                        f"{v['smaller_ms']:.4g} ms)")
    net = None
    if whole_net is not None:
        net = {"archs": len(whole_net["archs"]), "mean_abs_error_pct": round(whole_net["mean_abs_error_pct"], 2),
               "max_abs_error_pct": round(whole_net["max_abs_error_pct"], 2), "threshold_pct": max_error_pct}
        if whole_net["mean_abs_error_pct"] > max_error_pct:
            problems.append(f"the table's sums are {whole_net['mean_abs_error_pct']:.1f}% off whole-network "
                            f"timings on average (threshold {max_error_pct:g}%)")
    return {"ok": not problems, "problems": problems,
            "monotone": {"pairs": len(_ordered_pairs(entries)), "violations": violations[:20],
                         "count": len(violations), "tolerance": tolerance, "floor_ms": floor_ms},
            "whole_net": net}
