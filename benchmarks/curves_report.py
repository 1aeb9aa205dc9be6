"""The analysis of the accuracy–cost curves (curves.py --report-only), from the records alone.

Cost is each run's training MACs (cost.json ``train_macs``: passes x images x 3, a frozen teacher's forwards
included; validation not). Every interval is a 95 % t-interval over seeds: for per-point means, for paired
differences, for each method's cost to reach an accuracy (each seed's own log cost) and for cost ratios (each
seed's own log cost ratio, paired by seed).
Every claim gets its verdict from the one rule in common.py (:func:`common.verdict`).
"""

from __future__ import annotations

import csv
import json
import math
import re
import statistics
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from common import VERDICT_RULE, result_protocol, t_interval, verdict

from onceforall.measure.evaluator import PROTOCOL

METRICS = {"pareto": "mean Pareto", "smallest": "smallest subnet", "full": "full model"}
BELOW, NOT_REACHED = "below the cheapest budget", "not reached"
PAIRS = (("deps", "ofa-ps"), ("deps", "bignas"), ("deps", "compofa"))
# the paper's "same accuracy at N x less cost" (DεpS vs OFA-PS 1.8x, vs BigNAS 2.5x), for context
PAPER_RATIOS = {"ofa-ps": 1.8, "bignas": 2.5}
LEVELS = (1 / 6, 1 / 2, 5 / 6)  # equal-cost levels: fractions of the curves' overlap, in log cost


@dataclass
class Rec:
    """One recorded run: its training MACs, wall minutes, CPU minutes (None: recorded before cost.json counted
    them) and accuracies (%)."""

    method: str
    epochs: int
    seed: int
    macs: float
    wall_min: float
    acc: dict[str, float]
    cpu_min: float | None = None


@dataclass
class Point:
    """One (method, budget) over its seeds."""

    method: str
    epochs: int
    recs: list[Rec]
    missing: list[int] = field(default_factory=list)

    @property
    def seeds(self) -> list[int]:
        return [r.seed for r in self.recs]

    @property
    def macs(self) -> float:
        return statistics.fmean(r.macs for r in self.recs)

    def stat(self, metric: str) -> tuple[float, float | None, float | None]:
        return t_interval([r.acc[metric] for r in self.recs])


# ---------------------------------------------------------------------------------------------------
# Records
# ---------------------------------------------------------------------------------------------------


def load_records(records: Path, budgets: dict[str, tuple[int, ...]], seeds: list[int]
                 ) -> tuple[dict[str, list[Point]], list[str]]:
    """Each method's points (cheapest first) from <records>/<method>-e<epochs>-s<seed>/, and the problems found
    (missing records, records without training MACs or evaluated under another protocol): reported, never fatal. A
    point without any seed is left out of its curve."""
    from curves import parse_name

    problems: list[str] = []
    found: dict[tuple[str, int, int], Rec] = {}
    for d in sorted(records.iterdir()) if records.is_dir() else []:
        job = parse_name(d.name)
        if job is None or job.method not in budgets or not (d / "eval" / "pareto.json").is_file():
            continue
        cost_file = d / "cost.json"
        cost = json.loads(cost_file.read_text()) if cost_file.is_file() else {}
        if cost.get("train_macs") is None:
            problems.append(f"{d.name}: no train_macs in cost.json (recorded before the MACs accounting); left out")
            continue
        r = json.loads((d / "eval" / "pareto.json").read_text())
        protocol = result_protocol(r)
        if protocol != PROTOCOL:
            problems.append(f"{d.name}: evaluated under protocol {protocol}, not {PROTOCOL}; left out (not comparable)")
            continue
        found[(job.method, job.epochs, job.seed)] = Rec(
            job.method, job.epochs, job.seed, float(cost["train_macs"]), cost.get("wall_seconds", 0.0) / 60,
            {"pareto": r["mean_pareto_acc"], "smallest": r["smallest"]["acc"], "full": r["largest"]["acc"]},
            None if cost.get("cpu_seconds") is None else cost["cpu_seconds"] / 60)
    curves: dict[str, list[Point]] = {}
    for method, epochs_list in budgets.items():
        for e in epochs_list:
            recs = [found[(method, e, s)] for s in seeds if (method, e, s) in found]
            missing = [s for s in seeds if (method, e, s) not in found]
            if missing:
                problems.append(f"{method} at {e} epochs: missing seed(s) {', '.join(map(str, missing))}")
            if recs:
                curves.setdefault(method, []).append(Point(method, e, recs, missing))
        if method in curves:
            curves[method].sort(key=lambda p: p.macs)
    return curves, problems


# ---------------------------------------------------------------------------------------------------
# Interpolation in log cost
# ---------------------------------------------------------------------------------------------------


def interp_log(costs: list[float], accs: list[float], cost: float) -> float | None:
    """Accuracy at ``cost`` on the curve through (costs, accs) (costs ascending), linear in log cost; None outside
    the curve."""
    if not costs or cost < costs[0] * (1 - 1e-12) or cost > costs[-1] * (1 + 1e-12):
        return None
    for (c0, a0), (c1, a1) in zip(zip(costs, accs), zip(costs[1:], accs[1:])):
        if c0 <= cost <= c1:
            t = 0.0 if c1 == c0 else (math.log(cost) - math.log(c0)) / (math.log(c1) - math.log(c0))
            return a0 + t * (a1 - a0)
    return accs[0] if len(costs) == 1 or cost <= costs[0] else accs[-1]


def cost_to_reach(costs: list[float], accs: list[float], target: float) -> float | str:
    """The smallest cost at which the curve (linear in log cost between its points) reaches ``target``; BELOW
    when its cheapest point is already above it, NOT_REACHED when no point reaches it (both outside the curve)."""
    if accs[0] >= target:
        return costs[0] if accs[0] == target else BELOW
    for (c0, a0), (c1, a1) in zip(zip(costs, accs), zip(costs[1:], accs[1:])):
        if a0 < target <= a1:
            t = (target - a0) / (a1 - a0)
            return math.exp(math.log(c0) + t * (math.log(c1) - math.log(c0)))
    return NOT_REACHED


def mean_curve(points: list[Point], metric: str = "pareto") -> tuple[list[float], list[float]]:
    """The over-seed mean curve: (mean training MACs, mean accuracy) per budget point, cheapest first."""
    pts = sorted(points, key=lambda p: p.macs)
    return [p.macs for p in pts], [p.stat(metric)[0] for p in pts]


@dataclass
class Reach:
    """The cost for a method to reach a mean accuracy, with its 95 % t-interval over seeds."""

    method: str
    target: float
    cost: float | str
    lo: float | None
    hi: float | None
    seeds: int
    """The seeds whose own curves can say (a cost, or that they do not span the target)."""
    outside: list[int] = field(default_factory=list)
    """Seeds whose own complete curve does not span the target: no interval."""


def reach(points: list[Point], target: float, metric: str = "pareto") -> Reach:
    """Cost to reach ``target``, as the cost ratios are measured: each seed's cost on its own curve (linear in log
    cost between its budget points); the value is their geometric mean and the interval a t-interval over seeds of
    their log costs (the value its centre). Where a seed's complete curve does not span the target (it starts above
    it, or never reaches it) there is no interval and the value is the over-seed mean curve's cost; a seed still
    missing a point it needs is left out (a costlier point still running does not hold back a cheaper target); one
    seed: its own cost, no interval. (Until 2026-12-07 (23:55) the interval was a percentile bootstrap over seeds, which
    covered the truth less often than 95 % with 3-5 seeds: benchmarks/ratio_coverage.py.)"""
    logs, outside = {}, []
    for s in sorted({s for p in points for s in p.seeds}):
        c = seed_cost(points, s, target, metric)
        if isinstance(c, str):
            outside.append(s)
        elif c is not None:
            logs[s] = math.log(c)
    out = Reach(points[0].method, target, cost_to_reach(*mean_curve(points, metric), target), None, None,
                len(logs) + len(outside), outside)
    if logs and not outside:
        out.cost, out.lo, out.hi = _geometric_t(list(logs.values()))
    return out


def _geometric_t(logs: list[float]) -> tuple[float, float | None, float | None]:
    """The t-interval over seeds of log values, taken back: (geometric mean, low, high); no bounds with one seed."""
    m, lo, hi = t_interval(logs)
    return math.exp(m), None if lo is None else math.exp(lo), None if hi is None else math.exp(hi)


@dataclass
class Ratio:
    """Cost of ``other`` over the reference's to reach the same mean accuracy, with its over-seed interval."""

    other: str
    target: float
    ratio: float | None
    lo: float | None
    hi: float | None
    seeds: int
    verdict: str
    note: str = ""
    outside: list[int] = field(default_factory=list)
    """Seeds whose own complete curve (every budget point recorded) does not span the target: no interval."""
    costs: tuple[float | str, float | str] = (NOT_REACHED, NOT_REACHED)
    """The reference's and ``other``'s cost to reach ``target`` on their mean curves."""

    @property
    def paper_verdict(self) -> str:
        """The verdict on the paper's own claim, "at least N x less cost" (ratio > N), where the paper gives N."""
        n = PAPER_RATIOS.get(self.other)
        if n is None or self.ratio is None:
            return "–"
        if self.lo is not None:
            return verdict(self.lo, self.hi, self.seeds, ">", n)
        # no interval: one seed (at most suggestive), or a seed's curve outside the target
        return "not shown" if self.outside else verdict(self.ratio, self.ratio, 1, ">", n)


def seed_cost(points: list[Point], seed: int, target: float, metric: str = "pareto") -> float | str | None:
    """One seed's cost to reach ``target`` on its own curve; None when the seed cannot say yet (it lacks a budget
    point on the side where its curve stops short of the target, or has no point at all)."""
    costs, accs = seed_curve(points, seed, metric)
    if not costs:
        return None
    c = cost_to_reach(costs, accs, target)
    have = {p.epochs for p in points if seed in p.seeds}
    pending_above = any(p.epochs not in have and p.macs > costs[-1] for p in points)
    pending_below = any(p.epochs not in have and p.macs < costs[0] for p in points)
    if (c == NOT_REACHED and pending_above) or (c == BELOW and pending_below):
        return None
    return c


def cost_ratio(ref: list[Point], other: list[Point], target: float, metric: str = "pareto") -> Ratio:
    """``other`` / ``ref`` cost to reach ``target``; the claim "the reference needs less" is ratio > 1. Each seed's
    own log cost ratio (paired by seed, as the equal-cost differences are: same initial weights and data order)
    gives the value, their mean taken back to a ratio (the geometric mean of the seeds' ratios), and its interval,
    a t-interval over seeds: the value is the centre of its interval. (Until 2026-12-07 22:00 the value was the
    ratio of the two over-seed mean curves' costs, which could fall outside the interval when the seeds that can
    say were fewer than the seeds in the mean curves.) ``costs`` keeps the mean curves' costs; where no seed gives
    a ratio of its own, their ratio is the value. A seed whose complete curve does not span the target leaves no
    interval ("not shown", noted, the value from the mean curves); a seed still missing a point it needs is left
    out (the seeds column counts the rest).
    (A percentile bootstrap over seeds, used before 2026-12-07, covered the true ratio 84 % of the time at 3
    seeds and 91 % at 5: benchmarks/ratio_coverage.py.)"""
    c_ref, c_other = (cost_to_reach(*mean_curve(pts, metric), target) for pts in (ref, other))
    point = c_other / c_ref if isinstance(c_ref, float) and isinstance(c_other, float) else None
    seeds = sorted({s for p in (*ref, *other) for s in p.seeds})
    logs, outside = {}, []
    for s in seeds:
        a, b = seed_cost(ref, s, target, metric), seed_cost(other, s, target, metric)
        if a is None or b is None:
            continue
        if isinstance(a, str) or isinstance(b, str):
            outside.append(s)
        else:
            logs[s] = math.log(b / a)
    out = Ratio(other[0].method, target, point, None, None, len(logs) + len(outside), "not shown", outside=outside,
                costs=(c_ref, c_other))
    if point is None:
        out.note = (f"{ref[0].method} {c_ref if isinstance(c_ref, str) else 'reached'}, "
                    f"{other[0].method} {c_other if isinstance(c_other, str) else 'reached'}")
    elif outside:
        out.note = f"seed(s) {', '.join(map(str, outside))}: a curve does not span the target"
    elif logs:
        out.ratio, out.lo, out.hi = _geometric_t(list(logs.values()))
        lo, hi = (out.ratio, out.ratio) if out.lo is None else (out.lo, out.hi)  # one seed: its own ratio
        out.verdict = verdict(lo, hi, len(logs), ">", 1.0)
    return out


# ---------------------------------------------------------------------------------------------------
# Differences at equal cost
# ---------------------------------------------------------------------------------------------------


def seed_curve(points: list[Point], seed: int, metric: str = "pareto") -> tuple[list[float], list[float]]:
    """One seed's own curve: its (training MACs, accuracy) at the budget points it has, cheapest first."""
    pts = sorted((r.macs, r.acc[metric]) for p in points for r in p.recs if r.seed == seed)
    return [c for c, _ in pts], [a for _, a in pts]


def overlap(a: list[Point], b: list[Point]) -> tuple[float, float] | None:
    """The training costs both over-seed mean curves span; None if they share less than a point."""
    lo, hi = max(a[0].macs, b[0].macs), min(a[-1].macs, b[-1].macs)
    return (lo, hi) if hi > lo else None


@dataclass
class Diff:
    """a − b at one training cost, paired by seed index (same seed: same initial weights and data order)."""

    a: str
    b: str
    cost: float
    per_seed: dict[int, float]
    missing: list[int]
    mean: float | None
    lo: float | None
    hi: float | None
    verdict: str


def _diff_of(per_seed: dict[int, float], cost: float, a: str, b: str, missing: list[int] | None = None) -> Diff:
    """The :class:`Diff` of per-seed differences: their t-interval over seeds and the verdict on "a ahead"."""
    vals = list(per_seed.values())
    if not vals:
        return Diff(a, b, cost, {}, missing or [], None, None, None, "not shown")
    m, lo, hi = t_interval(vals)
    return Diff(a, b, cost, per_seed, missing or [], m, lo, hi,
                verdict(lo, hi, len(vals), ">") if lo is not None else verdict(m, m, 1, ">"))


def diff_at(a: list[Point], b: list[Point], cost: float, seeds: list[int], metric: str = "pareto") -> Diff:
    """a's minus b's accuracy at ``cost``, each seed's curve interpolated in log cost; t-interval over seeds; the
    claim is a > b. A seed whose curve (of either method) does not span ``cost`` is missing."""
    per_seed, missing = {}, []
    for s in seeds:
        va, vb = interp_log(*seed_curve(a, s, metric), cost), interp_log(*seed_curve(b, s, metric), cost)
        if va is None or vb is None:
            missing.append(s)
        else:
            per_seed[s] = round(va - vb, 9)  # float noise of the interpolation is no difference
    return _diff_of(per_seed, cost, a[0].method, b[0].method, missing)


@dataclass
class PointDiff:
    """The smallest subnet's and the full model's difference at one equal cost (``smallest``, ``full``), and the
    paper's "the gains are largest on the smallest subnets": per seed, the smallest subnet's difference minus the
    mean Pareto one (``gain``, claim > 0). ``full`` alone for the pair with the full model trained alone."""

    cost: float
    smallest: Diff | None
    full: Diff
    gain: Diff | None


def point_diffs(a: list[Point], b: list[Point], seeds: list[int]) -> list[PointDiff]:
    """The smallest subnet and the full model at the equal-cost levels of the pair, each paired by seed as
    :func:`diff_at`, and how much larger the smallest subnet's difference is than the mean Pareto one. Against the
    full model trained alone only the full model is compared (its other subnets are not trained)."""
    rows = []
    for cost in equal_cost_levels(a, b):
        full = diff_at(a, b, cost, seeds, "full")
        if b[0].method == "full-only":
            rows.append(PointDiff(cost, None, full, None))
            continue
        small, pareto = diff_at(a, b, cost, seeds, "smallest"), diff_at(a, b, cost, seeds, "pareto")
        gain = {s: round(small.per_seed[s] - pareto.per_seed[s], 9) for s in small.per_seed if s in pareto.per_seed}
        rows.append(PointDiff(cost, small, full, _diff_of(gain, cost, a[0].method, b[0].method)))
    return rows


def equal_cost_levels(a: list[Point], b: list[Point]) -> list[float]:
    """Costs inside the overlap of two curves, evenly spread in log cost (:data:`LEVELS`); none without overlap."""
    ov = overlap(a, b)
    if ov is None:
        return []
    lo, hi = math.log(ov[0]), math.log(ov[1])
    return [math.exp(lo + f * (hi - lo)) for f in LEVELS]


def trend(diffs: list[Diff]) -> tuple[float | None, float | None, float | None, int, str]:
    """How a difference moves with the budget: per seed, the difference at the highest cost level minus at the
    lowest; (mean, lo, hi, seeds, verdict on the claim "it grows")."""
    if len(diffs) < 2:
        return None, None, None, 0, "not shown"
    first, last = diffs[0].per_seed, diffs[-1].per_seed
    vals = [round(last[s] - first[s], 9) for s in first if s in last]
    if not vals:
        return None, None, None, 0, "not shown"
    m, lo, hi = t_interval(vals)
    return m, lo, hi, len(vals), verdict(lo, hi, len(vals), ">") if lo is not None else verdict(m, m, 1, ">")


def crossings(a: list[Point], b: list[Point], metric: str = "pareto", grid: int = 200) -> list[float] | None:
    """Training costs inside the overlap where the over-seed mean curves cross (a − b changes sign), linear in log
    cost; None without overlap."""
    ov = overlap(a, b)
    return None if ov is None else _sign_changes(mean_curve(a, metric), mean_curve(b, metric), ov, grid)


def seed_crossings(a: list[Point], b: list[Point], seeds: list[int], metric: str = "pareto", grid: int = 200
                   ) -> dict[int, list[float]]:
    """Per seed, where its own two curves cross inside the costs both span (the mean curves can mix seed counts
    while a costly point is still arriving; a seed's own curves cannot); seeds whose curves share no cost range
    are left out."""
    out = {}
    for s in seeds:
        ca, cb = seed_curve(a, s, metric), seed_curve(b, s, metric)
        if ca[0] and cb[0] and (lo := max(ca[0][0], cb[0][0])) < (hi := min(ca[0][-1], cb[0][-1])):
            out[s] = _sign_changes(ca, cb, (lo, hi), grid)
    return out


def _sign_changes(ca: tuple[list[float], list[float]], cb: tuple[list[float], list[float]],
                  span: tuple[float, float], grid: int) -> list[float]:
    """Costs inside ``span`` where curve a − curve b changes sign, each linear in log cost, on ``grid`` points."""
    xs = np.exp(np.linspace(math.log(span[0]), math.log(span[1]), grid))
    d = [round(interp_log(*ca, float(x)) - interp_log(*cb, float(x)), 9) for x in xs]
    out = []
    for i in range(grid - 1):
        if d[i] == 0 and (i == 0 or d[i - 1] != 0):
            out.append(float(xs[i]))
        elif d[i] * d[i + 1] < 0:
            t = d[i] / (d[i] - d[i + 1])
            out.append(float(math.exp(math.log(xs[i]) + t * (math.log(xs[i + 1]) - math.log(xs[i])))))
    return out


# ---------------------------------------------------------------------------------------------------
# Report
# ---------------------------------------------------------------------------------------------------


def _t(macs: float | None) -> str:
    return "–" if macs is None else "0" if macs == 0 else "∞" if math.isinf(macs) else f"{macs / 1e12:.3g}T"


def _ci(m: float | None, lo: float | None, hi: float | None, fmt: str = "{:.2f}") -> str:
    if m is None:
        return "missing"
    return fmt.format(m) + ("" if lo is None else f" [{fmt.format(lo)}, {fmt.format(hi)}]")


def spanned_targets(curves: list[list[Point]]) -> list[float]:
    """Five mean Pareto accuracies (at 10, 30, 50, 70, 90 % of the range) that every one of ``curves`` (over-seed
    mean) spans: from the highest cheapest point to the lowest best point; where they share no range, the range
    all of them cover."""
    means = [[p.stat("pareto")[0] for p in pts] for pts in curves if pts]
    if not means:
        return []
    lo, hi = max(v[0] for v in means), min(max(v) for v in means)
    if hi <= lo:
        lo, hi = min(min(v) for v in means), max(max(v) for v in means)
    return sorted({round(lo + f * (hi - lo), 1) for f in (0.1, 0.3, 0.5, 0.7, 0.9)})


def default_targets(curves: dict[str, list[Point]]) -> list[float]:
    """The cost-to-reach table's accuracies: :func:`spanned_targets` of every supernet method (the full model
    trained alone has no front to speak of)."""
    return spanned_targets([pts for m, pts in curves.items() if m != "full-only"])


def pair_ratios(curves: dict[str, list[Point]], targets: list[float] | None = None) -> list[Ratio]:
    """The cost ratio of each :data:`PAIRS` pair at each accuracy of ``targets``, or by default at the pair's own
    :func:`spanned_targets` (each pair asked over the whole accuracy range the two curves share, not only the
    range every method reaches: the costliest points of a pair enter)."""
    out = []
    for a, b in PAIRS:
        if a in curves and b in curves:
            for t in spanned_targets([curves[a], curves[b]]) if targets is None else targets:
                out.append(cost_ratio(curves[a], curves[b], t))
    return out


def cpu_minutes(p: Point) -> float | None:
    """The mean training CPU minutes of the point's seeds that recorded them (None: none did)."""
    cpu = [r.cpu_min for r in p.recs if r.cpu_min is not None]
    return statistics.fmean(cpu) if cpu else None


def point_rows(curves: dict[str, list[Point]]) -> list[dict]:
    rows = []
    for method, pts in curves.items():
        for p in pts:
            macs = [r.macs for r in p.recs]
            row = {"method": method, "epochs": p.epochs, "seeds": " ".join(map(str, p.seeds)),
                   "missing_seeds": " ".join(map(str, p.missing)), "train_macs_mean": p.macs,
                   "train_macs_min": min(macs), "train_macs_max": max(macs),
                   "wall_min_mean": statistics.fmean(r.wall_min for r in p.recs), "cpu_min_mean": cpu_minutes(p)}
            for metric in METRICS:
                m, lo, hi = p.stat(metric)
                row.update({f"{metric}_mean": m, f"{metric}_lo": lo, f"{metric}_hi": hi})
            rows.append(row)
    return rows


def compute_rows(curves: dict[str, list[Point]], durations: Path) -> list[dict]:
    """How long each method's recorded runs took, in hours: training wall time (cost.json, every resume
    included), training CPU time (over the runs that recorded it) and evaluation wall time (durations.csv's eval
    rows of the recorded runs, summed: a resumed or repeated evaluation adds a row). Wall times count pauses and
    neighbours."""
    from curves import with_record_seconds

    each_eval = ([(row["run"], float(row["seconds"])) for row in csv.DictReader(durations.open())
                  if row["part"] == "eval"] if durations.is_file() else [])  # one row per evaluation that finished
    train = with_record_seconds(durations.parent, {})  # what --plan estimates from: CPU s per thread, else wall
    rows = []
    for method, pts in curves.items():
        recs = [r for p in pts for r in p.recs]
        names = [f"{r.method}-e{r.epochs}-s{r.seed}" for r in recs]
        cpu = [r.cpu_min for r in recs if r.cpu_min is not None]
        per_epoch = [train[(n, "train")] / r.epochs for n, r in zip(names, recs) if (n, "train") in train]
        mine = set(names)
        evals = [(run, sec) for run, sec in each_eval if run in mine]
        rows.append({"method": method, "runs": len(recs), "train_wall_h": sum(r.wall_min for r in recs) / 60,
                     "train_cpu_h": sum(cpu) / 60, "cpu_runs": len(cpu),
                     "eval_wall_h": sum(sec for _, sec in evals) / 3600, "eval_runs": len({run for run, _ in evals}),
                     "epoch_s": statistics.median(per_epoch) if per_epoch else None,
                     "eval_s": [sec for _, sec in evals]})
    return rows


def _quartiles(xs: list[float]) -> str:
    """"median [lower quartile, upper quartile]" in whole seconds ("–" for none)."""
    if not xs:
        return "–"
    q = statistics.quantiles(xs, n=4, method="inclusive") if len(xs) > 1 else [xs[0]] * 3
    return f"{q[1]:.0f} [{q[0]:.0f}, {q[2]:.0f}]"


def _compute_markdown(rows: list[dict]) -> str:
    lines = ["", "## Compute", "",
             "Hours spent on the recorded runs: training wall time (cost.json, every resume included), training CPU "
             "time (the runs that recorded it), evaluation wall time (every evaluation of those runs in "
             "durations.csv: re-evaluations under a superseded protocol included, an evaluation killed before it "
             "finished not). Wall times include pauses and the slowdown of running beside another job; CPU time "
             "does not. Per run: a training epoch's seconds (median over the method's runs of its CPU seconds per "
             "thread over its epochs, its wall seconds where CPU was not recorded: what `--plan` estimates from; "
             "training-time validation included) and an evaluation's wall seconds (median [quartiles] over every "
             "evaluation that finished, re-evaluations included).", "",
             "| method | runs | training wall h | training CPU h (runs) | evaluation wall h (runs) | s per epoch | "
             "evaluation s |",
             "|---|---|---|---|---|---|---|"]
    for r in rows:
        epoch = "–" if r["epoch_s"] is None else f"{r['epoch_s']:.0f}"
        lines.append(f"| {r['method']} | {r['runs']} | {r['train_wall_h']:.1f} | {r['train_cpu_h']:.1f} "
                     f"({r['cpu_runs']}) | {r['eval_wall_h']:.1f} ({r['eval_runs']}) | {epoch} | "
                     f"{_quartiles(r['eval_s'])} |")
    if rows:
        total = {k: sum(r[k] for r in rows) for k in ("runs", "train_wall_h", "train_cpu_h", "cpu_runs",
                                                      "eval_wall_h", "eval_runs")}
        lines.append(f"| all | {total['runs']} | {total['train_wall_h']:.1f} | {total['train_cpu_h']:.1f} "
                     f"({total['cpu_runs']}) | {total['eval_wall_h']:.1f} ({total['eval_runs']}) | – | "
                     f"{_quartiles([x for r in rows for x in r['eval_s']])} |")
    return "\n".join(lines) + "\n"


def write_report(out: Path, budgets: dict[str, tuple[int, ...]], seeds: list[int],
                 targets: list[float] | None = None) -> dict:
    """curves.md, curves.csv and curves.png in ``out`` from <out>/records; returns what they show."""
    curves, problems = load_records(out / "records", budgets, seeds)
    rows = point_rows(curves)
    with (out / "curves.csv").open("w", newline="") as f:
        cols = ["method", "epochs", "seeds", "missing_seeds", "train_macs_mean", "train_macs_min", "train_macs_max",
                "wall_min_mean", "cpu_min_mean", *[f"{m}_{k}" for m in METRICS for k in ("mean", "lo", "hi")]]
        w = csv.DictWriter(f, fieldnames=cols)
        w.writeheader()
        w.writerows(rows)
    ratios = pair_ratios(curves, targets)
    targets = default_targets(curves) if targets is None else targets
    reaches = {m: [reach(pts, a) for a in targets] for m, pts in curves.items() if len(pts) >= 1}
    diffs = {(a, b): [diff_at(curves[a], curves[b], c, seeds) for c in equal_cost_levels(curves[a], curves[b])]
             for a, b in PAIRS if a in curves and b in curves}
    cross = {k: crossings(curves[k[0]], curves[k[1]]) for k in diffs}
    seed_cross = {k: seed_crossings(curves[k[0]], curves[k[1]], seeds) for k in diffs}
    points = {(a, b): point_diffs(curves[a], curves[b], seeds) for a, b in (*PAIRS, ("deps", "full-only"))
              if a in curves and b in curves}
    compute = compute_rows(curves, out / "durations.csv")
    claims = claims_rows(ratios, diffs, points)
    md = (_markdown(curves, problems, seeds, targets, reaches, ratios, diffs, cross, seed_cross)
          + _points_markdown(points)
          + _claims_markdown(claims) + _compute_markdown(compute))
    (out / "curves.md").write_text(md)
    drawn = plot(curves, out / "curves.png") if curves else {}
    return {"curves": curves, "problems": problems, "reaches": reaches, "ratios": ratios, "diffs": diffs,
            "crossings": cross, "seed_crossings": seed_cross,
            "points": points, "compute": compute, "claims": claims, "plotted": drawn}


def _verdict_counts(verdicts: list[str]) -> str:
    """``verdicts`` (one per level or target) as counts in a fixed order: "holds 2, not shown 1"."""
    order = ("holds", "suggestive", "not shown", "contradicted", "–")
    return ", ".join(f"{v} {verdicts.count(v)}" for v in order if verdicts.count(v)) or "–"


def claims_rows(ratios: list[Ratio], diffs: dict[tuple[str, str], list[Diff]],
                points: dict[tuple[str, str], list[PointDiff]]) -> list[tuple[str, str, str, str]]:
    """The paper's claims that the curves answer, each as (claim, measured, seeds, verdicts): the values at every
    accuracy target or equal-cost level, and how many of them get each verdict of the one rule."""
    rows = []

    def levels(claim: str, ds: list[Diff]) -> tuple[str, str, str, str]:
        """A claim answered at equal-cost levels: each level's difference, the seeds, the verdict counts."""
        vals = "; ".join(f"{_t(d.cost)}: {_ci(d.mean, d.lo, d.hi, '{:+.2f}')}" for d in ds)
        seeds = ", ".join(sorted({str(len(d.per_seed)) for d in ds})) or "0"
        return claim, vals, seeds, _verdict_counts([d.verdict for d in ds])

    for other, n in PAPER_RATIOS.items():
        rs = [r for r in ratios if r.other == other]
        if rs:
            vals = "; ".join(f"{r.target:.1f} %: " + ("–" if r.ratio is None else _ci(r.ratio, r.lo, r.hi, "{:.2f}x"))
                             for r in rs)
            rows.append((f"the same accuracy at {n}x less training cost than {other} (Table 2)",
                         f"{other} / deps cost to reach: {vals}", ", ".join(sorted({str(r.seeds) for r in rs})),
                         f"> 1: {_verdict_counts([r.verdict for r in rs])}; > {n}: "
                         f"{_verdict_counts([r.paper_verdict for r in rs])}"))
    rows += [levels(f"{a} is ahead of {b} at equal training cost (mean Pareto)", ds)
             for (a, b), ds in diffs.items() if ds]
    rows += [levels(f"the gains over {b} are largest on the smallest subnets (Δ smallest − Δ mean Pareto > 0)",
                    gains) for (_, b), ps in points.items() if (gains := [p.gain for p in ps if p.gain is not None])]
    rows += [levels(f"{a}'s full model is ahead of {b}'s at equal training cost", [p.full for p in ps])
             for (a, b), ps in points.items() if ps]
    return rows


def _claims_markdown(rows: list[tuple[str, str, str, str]]) -> str:
    lines = ["", "## The paper's claims, answered by the curves", "",
             "Every value above that bears on a claim, with how many of its targets or levels get each verdict of "
             "the rule (the paper's \"full model on par\" is read as \"not behind\": only \"contradicted\" "
             "goes against it).", "",
             "| claim | measured | seeds | verdicts |", "|---|---|---|---|"]
    lines += [f"| {c} | {m} | {n} | {v} |" for c, m, n, v in rows]
    return "\n".join(lines) + "\n"


def _points_markdown(points: dict[tuple[str, str], list[PointDiff]]) -> str:
    def cells(d: Diff | None) -> str:
        if d is None:
            return "– | –"
        return f"{_ci(d.mean, d.lo, d.hi, '{:+.2f}')} | {d.verdict}"

    lines = ["", "## The smallest subnet and the full model at equal training cost", "",
             "As above, at the same cost levels (points; claim: DεpS ahead, Δ > 0). \"gain\" is the paper's \"the "
             "gains are largest on the smallest subnets\": per seed, the smallest subnet's Δ minus the mean Pareto "
             "Δ (claim > 0). Against the full model trained alone only the full model is compared.", "",
             "| pair | train MACs | seeds | Δ smallest [95 % t] | verdict | Δ full model [95 % t] | verdict | "
             "gain: Δ smallest − Δ mean Pareto [95 % t] | verdict |", "|---|---|---|---|---|---|---|---|---|"]
    for (a, b), rows in points.items():
        if not rows:
            lines.append(f"| {a} − {b} | no overlap of the two curves' costs | | | | | | | |")
        for r in rows:
            lines.append(f"| {a} − {b} | {_t(r.cost)} | {len(r.full.per_seed)} | {cells(r.smallest)} | "
                         f"{cells(r.full)} | {cells(r.gain)} |")
    return "\n".join(lines) + "\n"


def _markdown(curves, problems, seeds, targets, reaches, ratios, diffs, cross, seed_cross) -> str:
    lines = ["# Accuracy–cost curves", "",
             "Cost = training MACs (cost.json `train_macs`: each pass's arch MACs x the step's images x 3 for "
             "forward + backward, a frozen teacher's forward x 1 included; validation during training not). "
             "Accuracies: top-1 % on the test split after BN recalibration (mean Pareto = area under the bucket "
             f"winners' curve). Intervals: 95 % over seeds ({', '.join(map(str, seeds))} expected). {VERDICT_RULE}",
             ""]
    if problems:
        lines += ["**Missing** (reported, not fatal):", "", *[f"- {p}" for p in problems], ""]
    lines += ["## Per method and budget", "",
              "Wall minutes count the time a training spent paused or beside other jobs; CPU minutes (the training "
              "process's, cost.json `cpu_seconds`; – for records made before it was counted) do not count pauses.",
              "",
              "| method | epochs | seeds | train MACs (mean; same on every seed?) | wall min (mean) | CPU min (mean) | "
              "mean Pareto | smallest subnet | full model |", "|---|---|---|---|---|---|---|---|---|"]
    for method, pts in curves.items():
        for p in pts:
            macs = [r.macs for r in p.recs]
            same = "same" if len(set(macs)) == 1 else f"{_t(min(macs))}–{_t(max(macs))}"
            lines.append(f"| {method} | {p.epochs} | {len(p.recs)} | {_t(p.macs)} ({same}) | "
                         f"{statistics.fmean(r.wall_min for r in p.recs):.1f} | "
                         f"{'–' if (cpu := cpu_minutes(p)) is None else f'{cpu:.1f}'} | "
                         + " | ".join(_ci(*p.stat(m)) for m in METRICS) + " |")
    lines += ["", "![curves](curves.png)", "",
              "The figure: over-seed means with 95 % t-intervals; the full model trained alone in the full-model "
              "panel only (it trains no front).", "", "## Cost to reach a mean Pareto accuracy", "",
              "Each seed's cost on its own curve (linear in log cost between its budget points): the geometric mean "
              "over seeds and its 95 % t-interval over seeds of the log costs (the value is its centre), as the "
              "cost ratios below. Where a seed's curve does not span the target (it starts above it, or stops "
              "below it) there is no interval and the cost is the over-seed mean curve's, marked *; one seed: its "
              "own cost. (Until 2026-12-07 (23:55) a percentile bootstrap over seeds, narrower than 95 % with 3-5 "
              "seeds: `benchmarks/ratio_coverage.py`.)",
              "", "| method | " + " | ".join(f"{a:.1f} %" for a in targets) + " |", "|---|" + "---|" * len(targets)]
    for method, rs in reaches.items():
        cells = [r.cost if isinstance(r.cost, str) else f"{_t(r.cost)}" + (
            "*" if r.outside else "" if r.lo is None else f" [{_t(r.lo)}, {_t(r.hi)}]") for r in rs]
        lines.append(f"| {method} | " + " | ".join(cells) + " |")
    lines += ["", "## Cost ratio to reach the same accuracy (method / deps; claim: DεpS needs less, ratio > 1)", "",
              "Each pair at five accuracies of the range both its mean curves span (10, 30, 50, 70, 90 % of it), so "
              "that a pair's costliest points enter; the table above uses the range every method spans. The ratio: "
              "the geometric mean of each seed's own cost ratio, paired by seed; its interval: a t-interval over "
              "seeds of those log ratios, so the ratio is its centre (the bootstrap used before covered the true "
              "ratio only 84 % of the time at 3 seeds, 91 % at 5: `benchmarks/ratio_coverage.py`). The two costs "
              "are the mean curves'; where a seed's curve does not span the target there is no interval and the "
              "ratio is theirs.", "",
              "| method | accuracy | deps cost | method cost | ratio [95 % t, paired by seed] | seeds | verdict: > 1 | "
              "paper's N | verdict: > N | note |", "|---|---|---|---|---|---|---|---|---|---|"]
    for r in ratios:
        cell = "–" if r.ratio is None else _ci(r.ratio, r.lo, r.hi, "{:.2f}x")
        paper = f"{PAPER_RATIOS[r.other]}x" if r.other in PAPER_RATIOS else "–"
        costs = " | ".join(c if isinstance(c, str) else _t(c) for c in r.costs)
        lines.append(f"| {r.other} | {r.target:.1f} % | {costs} | {cell} | {r.seeds} | {r.verdict} | {paper} | "
                     f"{r.paper_verdict} | {r.note} |")
    lines += ["", "## Differences at equal training cost (mean Pareto, points; claim: DεpS ahead, Δ > 0)", "",
              "Each seed's accuracy interpolated in log cost on its own curve, paired by seed (same seed: same initial "
              "weights and data order); t-interval over seeds.", "",
              "| pair | train MACs | seeds | per seed | Δ [95 % t] | verdict | missing seeds |",
              "|---|---|---|---|---|---|---|"]
    for (a, b), ds in diffs.items():
        if not ds:
            lines.append(f"| {a} − {b} | no overlap of the two curves' costs | | | | not shown | |")
        for d in ds:
            per = ", ".join(f"{v:+.2f}" for v in d.per_seed.values())
            lines.append(f"| {a} − {b} | {_t(d.cost)} | {len(d.per_seed)} | {per} | "
                         f"{_ci(d.mean, d.lo, d.hi, '{:+.2f}')} | {d.verdict} | "
                         f"{' '.join(map(str, d.missing)) or '–'} |")
    lines += ["", "## How the differences move with the budget, and crossings", "",
              "| pair | Δ at highest − lowest level [95 % t] | seeds | verdict (claim: grows) | mean curves cross at | "
              "seeds whose own curves cross (inside the costs both span) |",
              "|---|---|---|---|---|---|"]
    for (a, b), ds in diffs.items():
        m, lo, hi, n, v = trend(ds)
        cr = cross[(a, b)]
        where = "no overlap" if cr is None else ", ".join(_t(c) for c in cr) or "no crossing in the overlap"
        per = seed_cross[(a, b)]
        crossed = {s: c for s, c in per.items() if c}
        own = f"{len(crossed)} of {len(per)}" + ("" if not crossed else ": " + "; ".join(
            f"seed {s} at {', '.join(_t(x) for x in c)}" for s, c in crossed.items()))
        lines.append(f"| {a} − {b} | {_ci(m, lo, hi, '{:+.2f}')} | {n} | {v} | {where} | {own} |")
    return "\n".join(lines) + "\n"


def plot(curves: dict[str, list[Point]], path: Path) -> dict[str, list[str]]:
    """Mean Pareto, smallest subnet and full model vs training MACs (log x), one curve per method with over-seed
    95 % t-interval bars; the full model trained alone in the full-model panel only (it trains no front: its
    subnets' accuracies say nothing and squeezed the other curves). Returns the methods drawn per panel."""
    from onceforall.run.plotting import pyplot

    plt = pyplot()
    fig, axes = plt.subplots(1, 3, figsize=(15, 4.5))
    drawn: dict[str, list[str]] = {}
    for ax, (metric, label) in zip(axes, METRICS.items()):
        drawn[metric] = [m for m in curves if metric == "full" or m != "full-only"]
        for i, (method, pts) in enumerate(curves.items()):
            if method not in drawn[metric]:
                continue
            xs = [p.macs for p in pts]
            stats = [p.stat(metric) for p in pts]
            ys = [s[0] for s in stats]
            err = [[0.0 if s[1] is None else s[0] - s[1] for s in stats],
                   [0.0 if s[2] is None else s[2] - s[0] for s in stats]]
            ax.errorbar(xs, ys, yerr=err, marker="o", capsize=3, color=f"C{i}", label=method)
        ax.set_xscale("log")
        ticks = [t * 1e12 for t in (1, 1.5, 2, 3, 4, 6, 8, 12, 16, 24, 32)]
        ax.set_xticks(ticks, [f"{t / 1e12:g}T" for t in ticks])
        ax.set_xticks([], minor=True)
        ax.set_xlim(min(p.macs for pts in curves.values() for p in pts) / 1.15,
                    max(p.macs for pts in curves.values() for p in pts) * 1.15)
        ax.set_xlabel("training MACs")
        ax.set_ylabel(f"{label} accuracy (%)")
        ax.grid(alpha=0.3, which="both")
    axes[-1].legend(fontsize=8)  # the panel with every method
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return drawn


# ---------------------------------------------------------------------------------------------------
# RESULTS.md's copies of the report (section 3's per-method table, the claims table's curve rows)
# ---------------------------------------------------------------------------------------------------

DISPLAY = {"deps": "DεpS", "ofa-ps": "OFA-PS", "bignas": "BigNAS", "compofa": "CompOFA", "full-only": "full-only"}
RESULTS_POINTS_HEADER = "| method | epochs | seeds | training MACs |"
RESULTS_CLAIMS_HEADER = "| claim (paper) | measured | seeds | verdict | section |"
RESULTS_SECTION = "3"  # the section of RESULTS.md that the curves' claims rows name


def _display(text: str) -> str:
    """curves.md's words as RESULTS.md writes them: the methods' names, "1.8×" for "1.8x", "−0.5" for "-0.5"."""
    text = re.sub(r"\bfull-only's\b", "the full model trained alone", text)
    text = re.sub(r"(?<![\w-])(deps|ofa-ps|bignas|compofa)(?![\w-])", lambda m: DISPLAY[m.group(1)], text)
    text = re.sub(r"(?<=[\s\[(])-(?=\d)", "−", text)
    return re.sub(r"(\d)x\b", r"\1×", text)


def _table_rows(md: str, heading: str) -> list[list[str]]:
    """The cells of the first table under ``heading`` in ``md`` (its header and separator left out)."""
    lines = md.splitlines()
    try:
        start = lines.index(heading)
    except ValueError:
        raise ValueError(f"curves.md has no section {heading!r}: regenerate it (curves.py --report-only)") from None
    rows: list[list[str]] = []
    for line in lines[start + 1:]:
        if line.startswith("## "):
            break
        if line.startswith("|"):
            rows.append([c.strip() for c in line.strip().strip("|").split("|")])
        elif rows:
            break
    return rows[2:]


def results_rows(curves_md: str) -> tuple[list[str], list[str]]:
    """From curves.md: RESULTS.md section 3's per-method rows (method, epochs, seeds, mean training MACs, the three
    accuracies) and the claims table's curve rows (claim, measured, seeds, verdicts, section)."""
    points = []
    for method, epochs, seeds, macs, _wall, _cpu, pareto, smallest, full in _table_rows(
            curves_md, "## Per method and budget"):
        points.append(f"| {DISPLAY.get(method, method)} | {epochs} | {seeds} | {macs.split(' (')[0]} | {pareto} | "
                      f"{smallest} | {full} |")
    claims = [f"| {_display(claim)} | {_display(measured)} | {seeds} | {verdicts} | {RESULTS_SECTION} |"
              for claim, measured, seeds, verdicts in _table_rows(curves_md, "## The paper's claims, answered by "
                                                                             "the curves")]
    return points, claims


def _replace_rows(lines: list[str], header: str, keep, new: list[str], what: str) -> list[str]:
    """``lines`` with the rows of the table under ``header`` for which ``keep(row)`` is false (one contiguous
    block) replaced by ``new``."""
    try:
        h = next(i for i, line in enumerate(lines) if line.startswith(header))
    except StopIteration:
        raise ValueError(f"RESULTS.md has no table starting {header!r} ({what})") from None
    end = h + 2
    while end < len(lines) and lines[end].startswith("|"):
        end += 1
    body = lines[h + 2:end]
    ours = [i for i, row in enumerate(body) if not keep(row)]
    if ours and ours != list(range(ours[0], ours[-1] + 1)):
        raise ValueError(f"RESULTS.md's {what} are not one block: cannot replace them")
    at = ours[0] if ours else 0
    body = body[:at] + new + body[at + len(ours):]
    return lines[:h + 2] + body + lines[end:]


def sync_results(results_md: str, curves_md: str) -> str:
    """RESULTS.md with its copies of curves.md brought up to date: section 3's per-method table and the claims
    table's rows of section 3 (every other row and all prose unchanged: the prose is written by hand)."""
    points, claims = results_rows(curves_md)
    lines = results_md.splitlines()
    lines = _replace_rows(lines, RESULTS_POINTS_HEADER, lambda row: False, points, "per-method rows")
    lines = _replace_rows(lines, RESULTS_CLAIMS_HEADER,
                          lambda row: row.rstrip().rstrip("|").rsplit("|", 1)[-1].strip() != RESULTS_SECTION,
                          claims, f"section {RESULTS_SECTION} claims rows")
    return "\n".join(lines) + ("\n" if results_md.endswith("\n") else "")
