import random

import numpy as np
import pytest

from onceforall.core.pareto import (
    Point,
    bootstrap_ci,
    bucket_index,
    bucket_winners,
    curve_weights,
    mean_pareto_accuracy,
    non_dominated,
    pareto_summary,
    window_weights,
)


def test_bucket_assignment_by_hand():
    # range [10, 70]: width 10 per bucket
    assert [bucket_index(m, 10, 70) for m in (10, 19.99, 20, 45, 59.9, 60, 70)] == [0, 0, 1, 3, 4, 5, 5]
    with pytest.raises(ValueError, match="outside the space's range"):
        bucket_index(71, 10, 70)
    assert bucket_index(5, 5, 5) == 0


def test_bucket_winners_prefer_accuracy_then_fewer_macs():
    pts = [Point("a", 12, 50.0), Point("b", 15, 55.0), Point("c", 18, 55.0), Point("d", 41, 60.0), Point("e", 69, 70.0)]
    w = bucket_winners(pts, 10, 70)
    assert [x.arch if x else None for x in w] == ["b", None, None, "d", None, "e"]


def test_mean_pareto_accuracy_by_hand():
    # curve (0, 50) -> (0.5, 70) -> (1, 80): area = 0.5*(50+70)/2 + 0.5*(70+80)/2 = 30 + 37.5 = 67.5
    curve = [Point("s", 100, 50.0), Point("m", 200, 70.0), Point("l", 300, 80.0)]
    assert mean_pareto_accuracy(curve, 100, 300) == pytest.approx(67.5)
    assert mean_pareto_accuracy(list(reversed(curve)), 100, 300) == pytest.approx(67.5)  # order does not matter
    flat = [Point("s", 100, 42.0), Point("l", 300, 42.0)]
    assert mean_pareto_accuracy(flat, 100, 300) == pytest.approx(42.0)  # a flat curve's mean is its value


def test_summary_by_hand():
    smallest, largest = Point("min", 0, 40.0), Point("max", 60, 90.0)
    pts = [Point("a", 5, 60.0), Point("b", 8, 50.0), Point("c", 25, 70.0), Point("d", 35, 65.0), Point("e", 55, 85.0)]
    s = pareto_summary(pts, smallest, largest)
    assert [b["arch"] for b in s["buckets"]] == ["a", None, "c", "d", None, "max"]
    assert [p["arch"] for p in s["curve"]] == ["min", "a", "c", "d", "max"]
    xs = [0, 5 / 60, 25 / 60, 35 / 60, 1]
    ys = [40, 60, 70, 65, 90]
    expected = sum((xs[i + 1] - xs[i]) * (ys[i] + ys[i + 1]) / 2 for i in range(4))
    assert s["mean_pareto_acc"] == pytest.approx(expected)
    assert [p["arch"] for p in s["front"]] == ["min", "a", "c", "e", "max"]  # d is dominated by c


def test_front_is_non_dominated_on_random_points():
    rng = random.Random(0)
    pts = [Point(str(i), rng.randrange(1000), round(rng.uniform(0, 100), 1)) for i in range(300)]
    front = non_dominated(pts)
    for p in front:
        assert not any((q.macs <= p.macs and q.acc >= p.acc) and (q.macs < p.macs or q.acc > p.acc) for q in pts)
    for q in pts:  # every point off the front is dominated by a front point
        if q not in front:
            assert any(p.macs <= q.macs and p.acc >= q.acc for p in front)
    assert [p.macs for p in front] == sorted(p.macs for p in front)
    assert [p.acc for p in front] == sorted(p.acc for p in front)


def test_curve_weights_make_mean_pareto_accuracy_a_weighted_sum():
    rng = random.Random(0)
    for _ in range(20):
        n = rng.randint(1, 8)
        pts = [Point(str(i), rng.randint(100, 1000), rng.uniform(50, 90)) for i in range(n)]
        lo, hi = min(p.macs for p in pts), max(p.macs for p in pts)
        w = curve_weights([p.macs for p in pts], lo, hi)
        assert sum(wi * p.acc for wi, p in zip(w, pts)) == pytest.approx(mean_pareto_accuracy(pts, lo, hi))
        assert sum(w) == pytest.approx(1.0) and min(w) >= 0


def test_window_weights_average_the_piecewise_linear_curve_over_a_macs_window():
    rng = random.Random(1)
    for _ in range(20):
        n = rng.randint(2, 8)
        pts = [Point(str(i), m, rng.uniform(50, 90)) for i, m in enumerate(rng.sample(range(100, 1000), n))]
        lo, hi = min(p.macs for p in pts), max(p.macs for p in pts)
        macs = [p.macs for p in pts]
        # over the whole span: mean Pareto accuracy
        assert window_weights(macs, lo, hi) == pytest.approx(curve_weights(macs, lo, hi))
        # inside: the mean of the interpolated curve, by dense numerical integration
        a, b = sorted(rng.uniform(lo, hi) for _ in range(2))
        w = window_weights(macs, a, b)
        order = sorted(pts, key=lambda p: p.macs)
        grid = np.linspace(a, b, 200001)
        dense = np.interp(grid, [p.macs for p in order], [p.acc for p in order]).mean()
        assert sum(wi * p.acc for wi, p in zip(w, pts)) == pytest.approx(dense, abs=1e-3)
        assert sum(w) == pytest.approx(1.0) and min(w) >= 0
    with pytest.raises(ValueError, match=r"window \[50, 300\] is not inside the curve's MACs span \[100, 400\]"):
        window_weights([100, 400], 50, 300)


def test_bootstrap_interval_covers_the_mean_and_shrinks_with_more_images():
    rng = np.random.default_rng(1)
    small, large = rng.random(400) < 0.8, rng.random(40000) < 0.8
    lo_s, hi_s = bootstrap_ci(small * 100.0, resamples=500)
    lo_l, hi_l = bootstrap_ci(large * 100.0, resamples=500)
    assert lo_s < small.mean() * 100 < hi_s and lo_l < large.mean() * 100 < hi_l
    # binomial standard error: 95 % half-width ~ 1.96 * sqrt(p(1-p)/n) * 100
    assert (hi_s - lo_s) / 2 == pytest.approx(1.96 * (0.16 / 400) ** 0.5 * 100, rel=0.2)
    assert (hi_l - lo_l) < (hi_s - lo_s) / 5
    assert bootstrap_ci(small * 100.0, resamples=500) == (lo_s, hi_s)  # seeded
    assert bootstrap_ci(np.full(50, 7.0)) == (7.0, 7.0)
