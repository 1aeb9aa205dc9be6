"""Does the cost-ratio interval of curves_report cover the true ratio 95 % of the time? (measuring the instrument)

    python benchmarks/ratio_coverage.py > benchmarks/results/ratio_coverage.txt

Synthetic curves shaped like the measured ones (section 3 of RESULTS.md): accuracy = 78.5 + 4.5 x log2(cost / 1T)
+ a seed effect (sd 0.8, half shared between the two methods of a seed: same initial weights and data order) +
point noise (sd 0.6), DεpS at 2.1 / 4.2 / 8.5T, the other method at R = 1.7x those costs and needing 1.7x DεpS's
cost for every accuracy; the target is the middle of both curves. For each replication: curves_report's interval
before 2026-12-07 (percentile bootstrap over seeds, each point's seeds resampled independently; 500 resamples) and, for
comparison, the report's interval since 2026-12-07 (``cost_ratio``): a t-interval over seeds of each seed's own log
cost ratio, paired by seed as the equal-cost differences are. Prints each one's share of intervals that contain R,
and the share of the report's intervals for DεpS's own cost to reach the target (``reach``: a t-interval over seeds
of each seed's log cost, since 2026-12-07 23:55) that contain that cost.
"""
from __future__ import annotations

import math
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import curves_report as cr  # noqa: E402

T = 1e12
R = 1.7
REPS = 1000


def curve(method: str, costs: list[float], n: int, seed_fx: np.ndarray, rng: np.random.Generator,
          scale: float = 1.0) -> list[cr.Point]:
    """A synthetic curve: accuracy 78.5 + 4.5 x log2(cost / scale / 1T) + the seed's effect + point noise (sd 0.6)."""
    pts = []
    for i, c in enumerate(costs):
        recs = [cr.Rec(method, i, s, c, 0.0, {"pareto": 78.5 + 4.5 * math.log2(c / scale / T) + seed_fx[s]
                                                + rng.normal(0, 0.6)}) for s in range(n)]
        pts.append(cr.Point(method, i, recs))
    return pts


def bootstrap_costs(points: list[cr.Point], target: float, rng: np.random.Generator, n: int = 500) -> np.ndarray:
    """The bootstrap that curves_report used until 2026-12-07 (23:55) for a method's cost to reach ``target``: ``n``
    resampled mean curves (each point's seeds resampled with replacement, independently of the other points; the
    points past the first that every seed puts at or above the target left out), each one's cost to reach the
    target (0: below the curve, inf: not reached)."""
    pts = sorted(points, key=lambda p: p.macs)
    last = next((i for i, p in enumerate(pts) if min(r.acc["pareto"] for r in p.recs) >= target), len(pts) - 1)
    xs, ys = [], []
    for p in pts[:last + 1]:
        idx = rng.integers(0, len(p.recs), (n, len(p.recs)))
        xs.append(np.array([r.macs for r in p.recs])[idx].mean(axis=1))
        ys.append(np.array([r.acc["pareto"] for r in p.recs])[idx].mean(axis=1))
    out = []
    for x, y in zip(np.stack(xs, axis=1), np.stack(ys, axis=1)):
        order = np.argsort(x)
        c = cr.cost_to_reach(x[order].tolist(), y[order].tolist(), target)
        out.append(0.0 if c == cr.BELOW else math.inf if c == cr.NOT_REACHED else float(c))
    return np.array(out)


def bootstrap_ratio(d: list[cr.Point], o: list[cr.Point], target: float, rng: np.random.Generator
                    ) -> tuple[float, float] | None:
    """The interval curves_report gave before 2026-12-07: the 2.5 / 97.5 % quantiles of the ratio of the two
    curves' bootstrap costs (each point's seeds resampled independently); None when over 2.5 % of the resamples
    leave a curve."""
    b = bootstrap_costs(d, target, rng)
    a = bootstrap_costs(o, target, rng)
    ok = np.isfinite(a) & np.isfinite(b) & (a > 0) & (b > 0)
    if ok.mean() < 0.975:
        return None
    r = a[ok] / b[ok]
    return float(np.quantile(r, 0.025)), float(np.quantile(r, 0.975))


def coverage(n: int, reps: int, rng: np.random.Generator, bootstrap: bool = True) -> dict[str, tuple[int, int]]:
    """(intervals containing the truth, intervals given) over ``reps`` replications with ``n`` seeds: for the cost
    ratio R, the paired t-interval (``cost_ratio``) and, with ``bootstrap``, the old percentile bootstrap; for
    DεpS's own cost to reach the target (4.2T), the t-interval over seeds of ``reach``."""
    cover_b = cover_t = done_b = done_t = cover_c = done_c = 0
    for _ in range(reps):
        fx_d = rng.normal(0, 0.8, n)
        fx_o = fx_d * 0.5 + rng.normal(0, 0.8, n)  # seeds partly shared (same init and data order)
        d = curve("deps", [2.1 * T, 4.2 * T, 8.5 * T], n, fx_d, rng)
        o = curve("ofa-ps", [2.1 * R * T, 4.2 * R * T, 8.5 * R * T], n, fx_o, rng, scale=R)
        target = 78.5 + 4.5 * math.log2(4.2)  # the middle of both curves
        b = bootstrap_ratio(d, o, target, rng) if bootstrap else None
        if b is not None:
            done_b += 1
            cover_b += b[0] <= R <= b[1]
        t = cr.cost_ratio(d, o, target)  # the report's interval now: paired by seed
        if t.lo is not None:
            done_t += 1
            cover_t += t.lo <= R <= t.hi
        c = cr.reach(d, target)  # DεpS's cost to reach the target: 4.2T without seed effects or noise
        if c.lo is not None:
            done_c += 1
            cover_c += c.lo <= 4.2 * T <= c.hi
    return {"bootstrap": (cover_b, done_b), "paired t": (cover_t, done_t), "cost t": (cover_c, done_c)}


def main() -> None:
    rng = np.random.default_rng(1)
    for n in (3, 5):
        c = coverage(n, REPS, rng)
        (cb, db), (ct, dt), (cc, dc) = c["bootstrap"], c["paired t"], c["cost t"]
        print(f"{n} seeds, {REPS} replications: ratio: bootstrap covers {cb}/{db} = {cb / max(db, 1):.2f}; "
              f"paired t {ct}/{dt} = {ct / max(dt, 1):.2f}; DεpS's own cost to reach: t {cc}/{dc} = "
              f"{cc / max(dc, 1):.2f}")


if __name__ == "__main__":
    main()
