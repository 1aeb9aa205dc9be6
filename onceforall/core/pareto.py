"""Pareto fronts of evaluated subnets (DESIGN.md "Evaluation", paper §5.1).

- **Buckets**: the space's MACs range [min, max] split into ``n`` (default 6) equal-width intervals; the
  last one is closed. The most accurate subnet of each bucket is its winner.
- **Mean Pareto accuracy**: the area under accuracy vs normalized MACs (0 = the smallest subnet, 1 = the
  full model) of the piecewise-linear curve through the smallest subnet, the bucket winners and the full
  model (trapezoids), i.e. the curve's mean accuracy over the whole range.
- **Front**: the non-dominated subnets (no other subnet has fewer-or-equal MACs and higher-or-equal
  accuracy with one of the two strict).
- **Several objectives** (NSGA-II, the accuracy/cost front of ``search --front``): :func:`dominates`,
  :func:`non_dominated_sort` and :func:`crowding_distance` on objective vectors, all minimized. This module is the
  one Pareto primitive of the package.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from .arch import Arch

__all__ = [
    "Point",
    "bootstrap_ci",
    "bucket_index",
    "bucket_winners",
    "crowding_distance",
    "dominates",
    "curve_weights",
    "window_weights",
    "mean_pareto_accuracy",
    "non_dominated",
    "non_dominated_sort",
    "pareto_summary",
]


@dataclass(frozen=True)
class Point:
    """One evaluated subnet (reports write its arch as the arch's string)."""

    arch: Arch
    macs: int
    acc: float


def bucket_index(macs: float, lo: float, hi: float, n: int = 6) -> int:
    """Bucket of ``macs`` among ``n`` equal-width intervals of [lo, hi] (values at hi go to the last one)."""
    if hi <= lo:
        return 0
    if not lo <= macs <= hi:
        raise ValueError(f"macs {macs} is outside the space's range [{lo}, {hi}]")
    return min(n - 1, int((macs - lo) / (hi - lo) * n))


def bucket_winners(points: Sequence[Point], lo: float, hi: float, n: int = 6,
                   select: Mapping[Arch, float] | None = None) -> list[Point | None]:
    """The most accurate point of each bucket (None for an empty bucket); ties go to fewer MACs. With
    ``select`` (arch -> accuracy on another split), winners are chosen by those accuracies instead."""
    key = (lambda p: (p.acc, -p.macs)) if select is None else (lambda p: (select[p.arch], -p.macs))
    winners: list[Point | None] = [None] * n
    for p in points:
        b = bucket_index(p.macs, lo, hi, n)
        w = winners[b]
        if w is None or key(p) > key(w):
            winners[b] = p
    return winners


def non_dominated(points: Sequence[Point]) -> list[Point]:
    """The Pareto front (fewer MACs and higher accuracy are better), sorted by MACs."""
    front: list[Point] = []
    best = float("-inf")
    for p in sorted(points, key=lambda q: (q.macs, -q.acc)):
        if p.acc > best:
            front.append(p)
            best = p.acc
    return front


def mean_pareto_accuracy(curve: Sequence[Point], lo: float, hi: float) -> float:
    """Trapezoidal area under accuracy vs (macs - lo) / (hi - lo) of ``curve`` sorted by MACs, divided by the
    normalized MACs it spans (1 when the curve runs from the smallest subnet to the full model)."""
    pts = sorted(curve, key=lambda p: p.macs)
    if not pts:
        raise ValueError("mean_pareto_accuracy: no points")
    if len(pts) == 1 or hi <= lo:
        return pts[0].acc
    xs = [(p.macs - lo) / (hi - lo) for p in pts]
    area = sum((xs[i + 1] - xs[i]) * (pts[i].acc + pts[i + 1].acc) / 2 for i in range(len(pts) - 1))
    span = xs[-1] - xs[0]
    return area / span if span > 0 else sum(p.acc for p in pts) / len(pts)


def window_weights(macs: Sequence[float], a: float, b: float) -> list[float]:
    """Weights ``w`` with ``sum(w_i * acc_i)`` the mean, over MACs in ``[a, b]``, of the piecewise-linear curve
    through the points at ``macs`` (``[a, b]`` inside their span). Over the curve's whole span this is mean Pareto
    accuracy; over the MACs range two runs share, it compares runs whose spaces span different ranges (CompOFA's
    coupled space against DεpS's). Linear in the accuracies, so per-image scores and paired bootstraps apply."""
    order = sorted(range(len(macs)), key=lambda i: macs[i])
    xs = [float(macs[i]) for i in order]
    if not xs[0] <= a < b <= xs[-1]:
        raise ValueError(f"window [{a:g}, {b:g}] is not inside the curve's MACs span [{xs[0]:g}, {xs[-1]:g}]")
    w = [0.0] * len(macs)
    for k in range(len(xs) - 1):
        lo, hi = max(a, xs[k]), min(b, xs[k + 1])
        if hi <= lo:
            continue
        t = ((lo + hi) / 2 - xs[k]) / (xs[k + 1] - xs[k])  # the segment's mean is its value at the middle
        w[order[k]] += (hi - lo) * (1 - t) / (b - a)
        w[order[k + 1]] += (hi - lo) * t / (b - a)
    return w


def curve_weights(macs: Sequence[float], lo: float, hi: float) -> list[float]:
    """Weights ``w`` with ``mean_pareto_accuracy(curve) == sum(w_i * acc_i)`` for the curve points at ``macs``
    (in that order): mean Pareto accuracy is linear in the accuracies, so it is also the mean over images of
    the per-image score ``sum(w_i * correct_i)`` (which the bootstrap resamples)."""
    order = sorted(range(len(macs)), key=lambda i: macs[i])
    w = [0.0] * len(macs)
    if len(macs) == 1 or hi <= lo:  # as mean_pareto_accuracy: the accuracy of the cheapest point
        w[order[0]] = 1.0
        return w
    first, last = macs[order[0]], macs[order[-1]]
    if last <= first:
        return [1.0 / len(macs)] * len(macs)
    return window_weights(macs, first, last)  # the trapezoid over the span the curve covers


def bootstrap_ci(scores: np.ndarray, *, resamples: int = 2000, level: float = 0.95, seed: int = 0,
                 chunk: int = 200) -> tuple[float, float]:
    """Percentile bootstrap interval of the mean of ``scores`` (one value per test image): resample the images
    with replacement ``resamples`` times (deterministic for ``seed``)."""
    scores = np.asarray(scores, dtype=np.float64)
    n = len(scores)
    if n == 0:
        raise ValueError("bootstrap_ci: no scores")
    rng = np.random.default_rng(seed)
    means = []
    for start in range(0, resamples, chunk):
        idx = rng.integers(0, n, size=(min(chunk, resamples - start), n))
        means.append(scores[idx].mean(axis=1))
    means = np.concatenate(means)
    alpha = (1.0 - level) / 2
    return float(np.quantile(means, alpha)), float(np.quantile(means, 1.0 - alpha))


def pareto_summary(points: Sequence[Point], smallest: Point, largest: Point, n: int = 6,
                   select: Mapping[Arch, float] | None = None) -> dict:
    """Everything the reports need: bucket edges and winners, the curve, the front, mean Pareto accuracy.
    ``select`` chooses the winners by accuracies measured on another split (see :func:`bucket_winners`)."""
    lo, hi = smallest.macs, largest.macs
    every = list(points) + [smallest, largest]
    winners = bucket_winners(every, lo, hi, n, select)
    curve = {p.arch: p for p in [smallest, *[w for w in winners if w is not None], largest]}
    edges = [lo + (hi - lo) * i / n for i in range(n + 1)]
    return {
        "macs_range": [lo, hi],
        "bucket_edges": edges,
        "buckets": [
            {"bucket": i, "lo": edges[i], "hi": edges[i + 1], **({"arch": str(w.arch), "macs": w.macs, "acc": w.acc}
                                                              if w is not None else {"arch": None})}
            for i, w in enumerate(winners)
        ],
        "curve": [_row(p) for p in sorted(curve.values(), key=lambda p: p.macs)],
        "front": [_row(p) for p in non_dominated(every)],
        "mean_pareto_acc": mean_pareto_accuracy(list(curve.values()), lo, hi),
        "smallest": _row(smallest),
        "largest": _row(largest),
    }


def _row(p: Point) -> dict:
    """A point as a report writes it: its arch's string, MACs, accuracy."""
    return {"arch": str(p.arch), "macs": p.macs, "acc": p.acc}


def dominates(a: Sequence[float], b: Sequence[float]) -> bool:
    """Whether objective vector ``a`` dominates ``b`` (all objectives minimized): no worse in every one and
    better in at least one."""
    return all(x <= y for x, y in zip(a, b)) and any(x < y for x, y in zip(a, b))


def non_dominated_sort(points: Sequence[Sequence[float]]) -> list[list[int]]:
    """Deb's fast non-dominated sort: indices of ``points`` (objectives minimized) by front, best front first,
    each front in index order. The domination matrix is computed with numpy in row blocks (NSGA-II sorts
    every arch it scored at the end: thousands of points)."""
    pts = np.asarray(points, dtype=np.float64)
    n = len(pts)
    if n == 0:
        return []
    pts = pts.reshape(n, -1)
    dom = np.empty((n, n), dtype=bool)  # dom[i, j]: i dominates j (as `dominates`)
    for start in range(0, n, 256):
        a = pts[start:start + 256, None, :]
        dom[start:start + 256] = (a <= pts[None]).all(-1) & (a < pts[None]).any(-1)
    count = dom.sum(axis=0)  # how many points dominate each point
    fronts = []
    current = np.flatnonzero(count == 0)
    while current.size:
        fronts.append(current.tolist())
        count = count - dom[current].sum(axis=0)
        count[current] = -1  # placed
        current = np.flatnonzero(count == 0)
    return fronts


def crowding_distance(points: Sequence[Sequence[float]]) -> list[float]:
    """NSGA-II's crowding distance of each point of one front: the sum over objectives of the normalized gap
    between its two neighbours (infinite at the extremes), so that spread-out members survive."""
    n = len(points)
    dist = [0.0] * n
    if n == 0:
        return dist
    for m in range(len(points[0])):
        order = sorted(range(n), key=lambda i: (points[i][m], i))
        lo, hi = points[order[0]][m], points[order[-1]][m]
        dist[order[0]] = dist[order[-1]] = math.inf
        if hi == lo:
            continue
        for k in range(1, n - 1):
            dist[order[k]] += (points[order[k + 1]][m] - points[order[k - 1]][m]) / (hi - lo)
    return dist
