"""The accuracy–cost curve suite's machinery (benchmarks/curves.py, curves_report.py, common.py) on synthetic
records with known numbers: t-intervals, the verdict rule, cost to reach an accuracy, equal-cost differences, the
run order and plan, missing data reported rather than fatal, records without machine paths."""

import json
import math
import re
import statistics
import sys
import threading
import time
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))

import common  # noqa: E402
import curves  # noqa: E402
import curves_report as cr  # noqa: E402

from onceforall.core.devices import device_name  # noqa: E402
from onceforall.measure.evaluator import PROTOCOL  # noqa: E402
from onceforall.run import checkpoint  # noqa: E402
from onceforall.run.checkpoint import save_checkpoint  # noqa: E402
from onceforall.run.config import load_config, to_yaml  # noqa: E402

T = 1e12
DELTA = [-0.2, -0.1, 0.0, 0.1, 0.2]  # per-seed offsets of DεpS's curves (mean 0, sd 0.1581)


def _deps(c: float, s: int) -> float:
    """The synthetic DεpS curve: 70 % at 1T MACs, +4 points per doubling of the cost, plus the seed's offset."""
    return 70 + 4 * math.log2(c / T) + DELTA[s]


def _write(records: Path, method: str, epochs: int, seed: int, macs: float, acc: float, protocol: str | None = PROTOCOL,
           **cost) -> None:
    d = records / f"{method}-e{epochs}-s{seed}"
    (d / "eval").mkdir(parents=True)
    job = curves.Job(method, epochs, seed)  # the settings the suite would train this job with
    (d / "config.yaml").write_text(to_yaml(load_config(job.preset, job.overrides())))
    eval_set = {} if protocol is None else {"protocol": protocol}  # None: written before eval_set named it (e2)
    (d / "eval" / "pareto.json").write_text(json.dumps(
        {"mean_pareto_acc": acc, "smallest": {"acc": acc - 5}, "largest": {"acc": acc + 2}, "eval_set": eval_set}))
    (d / "cost.json").write_text(json.dumps({"train_macs": macs, "wall_seconds": 60 * epochs, **cost}))


BUDGETS = {"deps": (4, 8, 16), "ofa-ps": (9, 18, 35), "bignas": (3, 6, 12), "compofa": (5, 10), "full-only": (4, 8)}
SEEDS = [0, 1, 2, 3, 4]
BIGNAS = [1.0, -1.0, 1.0, -1.0, 0.0]  # deps − bignas per seed: mean 0, a tie


@pytest.fixture()
def out(tmp_path):
    rec = tmp_path / "records"
    for s in SEEDS:
        for e, c in zip(BUDGETS["deps"], (1 * T, 2 * T, 4 * T)):
            _write(rec, "deps", e, s, c, _deps(c, s))
        for e, c in zip(BUDGETS["ofa-ps"], (2 * T, 4 * T, 8 * T)):  # 4 points below DεpS at equal cost
            if (e, s) != (18, 4):  # a missing point: seed 4 of ofa-ps at 18 epochs
                _write(rec, "ofa-ps", e, s, c, 66 + 4 * math.log2(c / T))  # no seed offset: deps − it = 4 + δ
        for e, c in zip(BUDGETS["bignas"], (1.5 * T, 3 * T, 6 * T)):
            _write(rec, "bignas", e, s, c, _deps(c, s) - BIGNAS[s])
        for e, c in zip(BUDGETS["compofa"], (1.2 * T, 2.4 * T)):  # 3 points above DεpS: contradicts "DεpS ahead"
            _write(rec, "compofa", e, s, c, _deps(c, s) + 3)
    for e, c in zip(BUDGETS["full-only"], (1 * T, 2 * T)):  # one seed only, with its CPU seconds
        _write(rec, "full-only", e, 0, c, 60.0, cpu_seconds=90.0 * e)
    # a record from before the MACs accounting, and an unevaluated folder: reported / ignored, never fatal
    _write(rec, "full-only", 4, 1, 0, 61.0)
    json.dump({"wall_seconds": 60}, (rec / "full-only-e4-s1" / "cost.json").open("w"))
    (rec / "full-only-e8-s1").mkdir()
    return tmp_path


def test_t_interval_and_the_verdict_rule():
    m, lo, hi = common.t_interval([1, 2, 3, 4, 5])
    half = 2.776 * statistics.stdev([1, 2, 3, 4, 5]) / math.sqrt(5)
    assert (m, lo, hi) == pytest.approx((3, 3 - half, 3 + half))
    assert common.t_interval([2.5]) == (2.5, None, None)
    assert common.t95(11) == 2.201 and common.t95(40) == 2.042 and common.t95(22) == 2.086  # conservative between
    # the four outcomes
    assert common.verdict(0.1, 0.9, 5) == "holds"
    assert common.verdict(-0.9, -0.1, 5) == "contradicted"
    assert common.verdict(-0.5, 0.5, 5) == "not shown"  # a tie never "does not hold"
    assert common.verdict(0.1, 0.9, 1) == "suggestive"  # one seed: never holds
    assert common.verdict(-0.9, -0.1, 1) == "not shown"
    assert common.verdict(-0.9, -0.1, 3, "<") == "holds" and common.verdict(0.1, 0.9, 3, "<") == "contradicted"
    assert common.verdict(1.2, 2.0, 5, ">", null=1.0) == "holds"
    assert common.verdict(0.5, 1.5, 5, ">", 1.0) == "not shown"
    assert common.verdict(None, None, 0) == "not shown"
    assert common.seed_verdict([0.3, 0.5, 0.4]) == "holds" and common.seed_verdict([0.5]) == "suggestive"
    assert common.seed_verdict([0.5], single=(-0.1, 1.1)) == "not shown"  # its own interval contains 0
    assert common.seed_verdict([]) == "not shown"
    with pytest.raises(ValueError, match="verdict: claim '>=' is not valid; valid: >, <"):
        common.verdict(0, 1, 2, ">=")


def test_interpolation_and_cost_to_reach_are_linear_in_log_cost():
    costs, accs = [1 * T, 2 * T, 4 * T], [70.0, 74.0, 76.0]
    assert cr.interp_log(costs, accs, math.sqrt(2) * T) == pytest.approx(72.0)
    assert cr.interp_log(costs, accs, 2 * math.sqrt(2) * T) == pytest.approx(75.0)
    assert cr.interp_log(costs, accs, 0.5 * T) is None and cr.interp_log(costs, accs, 5 * T) is None
    assert cr.cost_to_reach(costs, accs, 72.0) == pytest.approx(math.sqrt(2) * T)
    assert cr.cost_to_reach(costs, accs, 75.0) == pytest.approx(2 * math.sqrt(2) * T)
    assert cr.cost_to_reach(costs, accs, 70.0) == 1 * T
    assert cr.cost_to_reach(costs, accs, 69.0) == cr.BELOW and cr.cost_to_reach(costs, accs, 77.0) == cr.NOT_REACHED
    # a curve that dips: the first (cheapest) crossing counts
    assert cr.cost_to_reach([1 * T, 2 * T, 4 * T], [70.0, 74.0, 72.0], 73.0) == pytest.approx(2 ** 0.75 * T)


def test_report_on_synthetic_records(out):
    (out / "durations.csv").write_text("run,part,seconds,finished_at\ndeps-e4-s0,eval,300,x\ndeps-e4-s0,train,50,x\n"
                                       "deps-e4-s0,eval,60,x\nbignas-e5-s0,eval,900,x\n")  # the last: no record
    got = cr.write_report(out, BUDGETS, SEEDS, targets=[74.0, 76.0, 90.0])
    curves_, problems = got["curves"], got["problems"]
    targets = cr.default_targets(curves_)  # spanned by every supernet method's mean curve: 74.05 .. 78.0
    assert len(targets) == 5 and 74.05 <= targets[0] < targets[-1] <= 78.0
    # per point: mean and t-interval over seeds
    p = curves_["deps"][0]
    half = 2.776 * statistics.stdev(DELTA) / math.sqrt(5)
    assert p.stat("pareto") == pytest.approx((70.0, 70.0 - half, 70.0 + half))
    assert p.stat("full") == pytest.approx((72.0, 72.0 - half, 72.0 + half))
    # missing data reported, not fatal
    assert "ofa-ps at 18 epochs: missing seed(s) 4" in problems
    assert "full-only at 4 epochs: missing seed(s) 1, 2, 3, 4" in problems
    assert any(x.startswith("full-only-e4-s1: no train_macs") for x in problems)
    assert [pt.seeds for pt in curves_["ofa-ps"]] == [SEEDS, [0, 1, 2, 3], SEEDS]
    # cost to reach 76 %: DεpS at 2·sqrt(2) T on its mean curve, OFA-PS at 4·sqrt(2) T: ratio 2, interval > 1
    reach = {m: rs for m, rs in got["reaches"].items()}
    assert reach["deps"][1].cost == pytest.approx(2 * math.sqrt(2) * T)
    assert reach["ofa-ps"][1].cost == pytest.approx(4 * math.sqrt(2) * T)
    assert reach["deps"][1].lo < reach["deps"][1].cost < reach["deps"][1].hi  # t over seeds: the cost its centre
    assert reach["deps"][1].cost == pytest.approx(math.sqrt(reach["deps"][1].lo * reach["deps"][1].hi))
    assert reach["deps"][2].cost == cr.NOT_REACHED and reach["compofa"][0].cost == cr.BELOW
    ratio = next(r for r in got["ratios"] if r.other == "ofa-ps" and r.target == 76.0)
    assert ratio.ratio == pytest.approx(2.0) and 1 < ratio.lo <= 2.0 <= ratio.hi and ratio.verdict == "holds"
    assert ratio.paper_verdict == ("holds" if ratio.lo > 1.8 else "not shown")  # the paper's 1.8x
    assert cr.Ratio("ofa-ps", 76.0, 1.5, 1.3, 1.7, 5, "holds").paper_verdict == "contradicted"  # below 1.8x
    assert cr.Ratio("ofa-ps", 76.0, 2.0, None, None, 1, "suggestive").paper_verdict == "suggestive"
    assert cr.Ratio("compofa", 76.0, 2.0, 1.5, 2.5, 5, "holds").paper_verdict == "–"  # no claim in the paper
    assert next(r for r in got["ratios"] if r.other == "ofa-ps" and r.target == 90.0).verdict == "not shown"
    # differences at equal cost, at 3 levels inside each overlap, paired by seed
    d = got["diffs"][("deps", "ofa-ps")]
    assert [x.cost for x in d] == pytest.approx([2 * 2 ** (k / 6) * T for k in (1, 3, 5)])  # overlap 2T..4T
    for x in d:  # seed 4's ofa-ps curve skips 18 epochs but still spans the cost: interpolated from its neighbours
        assert x.per_seed == pytest.approx({s: 4.0 + DELTA[s] for s in SEEDS}) and x.missing == []
        assert (x.mean, x.lo, x.hi) == pytest.approx((4.0, 4.0 - half, 4.0 + half)) and x.verdict == "holds"
    b = got["diffs"][("deps", "bignas")]
    assert all(x.per_seed == pytest.approx(dict(zip(SEEDS, BIGNAS))) and x.verdict == "not shown" for x in b)
    c = got["diffs"][("deps", "compofa")]
    assert all(x.mean == pytest.approx(-3.0) and x.verdict == "contradicted" for x in c)
    # the differences do not move with the budget here; the compofa curve never crosses DεpS's
    m, lo, hi, n, v = cr.trend(d)
    assert m == pytest.approx(0.0, abs=1e-9) and n == 5 and v == "not shown"
    assert got["crossings"][("deps", "compofa")] == []
    # one seed: at most suggestive
    one = cr.diff_at(curves_["deps"], curves_["full-only"], 1.5 * T, SEEDS)
    assert list(one.per_seed) == [0] and one.missing == [1, 2, 3, 4] and one.verdict == "suggestive"
    # the smallest subnet and the full model at the same levels; "gain": the smallest subnet's Δ minus mean Pareto's
    pd = got["points"][("deps", "ofa-ps")]
    assert [r.cost for r in pd] == pytest.approx([x.cost for x in d])
    for r, x in zip(pd, d):  # every record's smallest subnet is 5 below its mean Pareto, its full model 2 above
        assert r.smallest.per_seed == pytest.approx(x.per_seed) and r.smallest.verdict == "holds"
        assert r.full.per_seed == pytest.approx(x.per_seed) and r.full.verdict == "holds"
        assert r.gain.per_seed == pytest.approx(dict.fromkeys(SEEDS, 0.0)) and r.gain.verdict == "not shown"
    alone = got["points"][("deps", "full-only")]  # full model only; full-only has seed 0 alone: suggestive
    assert [r.smallest for r in alone] == [None] * 3 and [r.gain for r in alone] == [None] * 3
    for r in alone:
        assert r.full.per_seed == pytest.approx({0: _deps(r.cost, 0) - 60.0}) and r.full.verdict == "suggestive"
    # compute: training wall minutes are 1 per epoch in the synthetic cost.json; evaluations from durations.csv
    compute = {r["method"]: r for r in got["compute"]}
    assert compute["deps"]["runs"] == 15 and compute["deps"]["train_wall_h"] == pytest.approx(5 * 28 / 60)
    assert compute["full-only"]["train_cpu_h"] == pytest.approx((360 + 720) / 3600)
    assert compute["full-only"]["cpu_runs"] == 2 and compute["deps"]["cpu_runs"] == 0
    assert compute["deps"]["eval_wall_h"] == pytest.approx((300 + 60) / 3600) and compute["deps"]["eval_runs"] == 1
    # per run: seconds per epoch as --plan counts them (CPU per thread: full-only's 90; wall where no CPU: deps's 60)
    assert compute["full-only"]["epoch_s"] == pytest.approx(90.0) and compute["deps"]["epoch_s"] == pytest.approx(60)
    assert compute["deps"]["eval_s"] == [300.0, 60.0] and compute["bignas"]["eval_s"] == []  # each evaluation
    assert "| deps | 15 | 2.3 | 0.0 (0) | 0.1 (1) | 60 | 180 [120, 240] |" in (out / "curves.md").read_text()
    assert cr._quartiles([100.0, 200.0, 300.0, 400.0, 500.0]) == "300 [200, 400]" and cr._quartiles([]) == "–"
    # the paper's claims, with the verdicts of every target or level counted
    claims = {c: (m, n, v) for c, m, n, v in got["claims"]}
    assert claims["deps is ahead of ofa-ps at equal training cost (mean Pareto)"][2] == "holds 3"
    assert claims["deps is ahead of bignas at equal training cost (mean Pareto)"][2] == "not shown 3"
    assert claims["deps is ahead of compofa at equal training cost (mean Pareto)"][2] == "contradicted 3"
    gain = claims["the gains over ofa-ps are largest on the smallest subnets (Δ smallest − Δ mean Pareto > 0)"]
    assert gain[1:] == ("5", "not shown 3")
    assert claims["deps's full model is ahead of full-only's at equal training cost"][1:] == ("1", "suggestive 3")
    measured, n, v = claims["the same accuracy at 1.8x less training cost than ofa-ps (Table 2)"]
    # seed 4 of OFA-PS skips 18 epochs but its curve spans 76 % from its neighbours: 5 seeds, paired
    assert "76.0 %: 2.00x [" in measured and n == "5" and v.startswith("> 1: holds 2, not shown 1; > 1.8: ")
    md = (out / "curves.md").read_text()
    assert "## The paper's claims, answered by the curves" in md
    assert "| deps | 15 | 2.3 | 0.0 (0) | 0.1 (1) |" in md and "| all | 56 | 10.4 | 0.3 (2) | 0.1 (1) |" in md
    assert "## The smallest subnet and the full model at equal training cost" in md
    assert "| deps − full-only | 1.12T | 1 | – | – |" in md
    assert "missing seed(s) 4" in md and "| deps − ofa-ps |" in md and "holds" in md and "contradicted" in md
    assert "not reached" in md and common.VERDICT_RULE in md
    # CPU minutes where a record has them (full-only: 1.5 min per epoch), – where none of the seeds does
    assert "| full-only | 8 | 1 | 2T (same) | 8.0 | 12.0 |" in md and "| deps | 4 | 5 | 1T (same) | 4.0 | – |" in md
    rows = (out / "curves.csv").read_text().splitlines()
    assert rows[0].startswith("method,epochs,seeds,missing_seeds,train_macs_mean")
    assert len(rows) == 1 + 3 + 3 + 3 + 2 + 2
    assert (out / "curves.png").stat().st_size > 10000
    # the full model trained alone trains no front: drawn in the full-model panel only
    assert got["plotted"] == {"pareto": list(BUDGETS)[:4], "smallest": list(BUDGETS)[:4], "full": list(BUDGETS)}


def test_each_pair_is_asked_its_cost_ratio_over_the_accuracies_both_its_curves_span(out):
    """The cost-to-reach table uses the accuracies every method spans (here capped by CompOFA's best, 78.05 %, and
    raised by BigNAS's cheapest, 72.34 %); a pair's cost ratio is asked over the range its own two curves share, so
    that their costliest points enter (DεpS and OFA-PS: 70..78 %)."""
    got = cr.write_report(out, BUDGETS, SEEDS)
    by = {m: [r for r in got["ratios"] if r.other == m] for m in ("ofa-ps", "bignas", "compofa")}
    assert [r.target for r in by["ofa-ps"]] == [70.8, 72.4, 74.0, 75.6, 77.2]  # 10..90 % of 70..78
    lo = 70 + 4 * math.log2(1.5)  # BigNAS's cheapest mean: its points lie on DεpS's curve, from 1.5T
    assert [r.target for r in by["bignas"]] == [round(lo + f * (78 - lo), 1) for f in (0.1, 0.3, 0.5, 0.7, 0.9)]
    assert cr.default_targets(got["curves"])[0] > 72.4 and by["ofa-ps"][0].target < 72.0  # wider than the table
    for m, want in (("ofa-ps", 2.0), ("bignas", 1.0), ("compofa", 2 ** -0.75)):  # the synthetic curves' ratios
        assert [r.ratio for r in by[m]] == pytest.approx([want] * 5, rel=1e-6)
        assert all(r.seeds >= 4 for r in by[m])
    assert all(r.lo is not None for r in by["ofa-ps"] + by["compofa"] + by["bignas"][1:])
    assert all(r.lo <= r.ratio <= r.hi for r in got["ratios"] if r.lo is not None)  # a value inside its interval
    # BigNAS's seeds spread by ±1 at its cheapest point: seeds 1 and 3 start above 72.9 %, so no interval
    assert by["bignas"][0].lo is None and by["bignas"][0].outside == [1, 3] and by["bignas"][0].verdict == "not shown"
    assert by["bignas"][0].note == "seed(s) 1, 3: a curve does not span the target"
    assert {r.verdict for r in by["ofa-ps"]} == {"holds"} and {r.verdict for r in by["compofa"]} == {"contradicted"}
    at74 = next(r for r in by["ofa-ps"] if r.target == 74.0)  # DεpS reaches 74 % at 2T, OFA-PS at 4T
    assert at74.costs == pytest.approx((2 * T, 4 * T))
    assert "| ofa-ps | 74.0 % | 2T | 4T | 2.00x [" in (out / "curves.md").read_text()


def test_cost_to_reach_and_cost_ratio_intervals_are_t_intervals_over_seeds(out):
    """A method's cost to reach an accuracy: each seed's cost on its own curve, their geometric mean and a
    t-interval over seeds of the log costs (no interval where a seed's curve does not span the target). The cost
    ratio's interval is a t-interval over seeds of each seed's own log cost ratio, paired by seed (the bootstrap
    covered the true ratio only 84 % of the time at 3 seeds: benchmarks/ratio_coverage.py); a seed still missing
    the point it needs is left out, and a seed whose complete curve misses the target leaves no interval."""
    curves_, _ = cr.load_records(out / "records", BUDGETS, SEEDS)
    two = {m: [cr.Point(p.method, p.epochs, [r for r in p.recs if r.seed in (0, 1)], p.missing) for p in pts]
           for m, pts in curves_.items()}
    deps, ofa = cr.reach(two["deps"], 76.0), cr.reach(two["ofa-ps"], 76.0)
    assert deps.seeds == ofa.seeds == 2 and deps.outside == []
    # per seed, DεpS reaches 76 % at 2^((6 − δ) / 4) T and OFA-PS at 2^2.5 T
    own = [math.log(2 ** ((6 - DELTA[s]) / 4) * T) for s in (0, 1)]
    assert (deps.cost, deps.lo, deps.hi) == pytest.approx(tuple(math.exp(x) for x in common.t_interval(own)))
    assert deps.cost == pytest.approx(2 * math.sqrt(2) * T * 2 ** (0.15 / 4))  # seeds 0, 1: offset −0.15
    assert ofa.cost == pytest.approx(2 ** 2.5 * T) and ofa.lo == pytest.approx(ofa.hi)  # no seed offset
    early = cr.reach(curves_["deps"], 68.0)  # below some seeds' cheapest points: no interval, the mean curve's cost
    assert early.outside and early.lo is None and early.cost == cr.cost_to_reach(*cr.mean_curve(curves_["deps"]), 68.0)
    logs = [math.log(2) * (2.5 - (6 - DELTA[s]) / 4) for s in (0, 1)]
    m, lo, hi = common.t_interval(logs)
    r = cr.cost_ratio(two["deps"], two["ofa-ps"], 76.0)
    assert r.seeds == 2 and r.outside == []
    assert (r.lo, r.hi) == pytest.approx((math.exp(lo), math.exp(hi))) and r.lo > 1  # t with 1 degree of freedom
    # the value is the seeds' geometric mean ratio, the centre of its interval, not the mean curves' cost ratio
    assert r.ratio == pytest.approx(math.exp(m)) and r.ratio == pytest.approx(math.sqrt(r.lo * r.hi))
    assert r.verdict == "holds" and r.paper_verdict == "not shown" and r.lo < 1.8 < r.hi
    assert r.costs == pytest.approx((cr.cost_to_reach(*cr.mean_curve(two["deps"]), 76.0), ofa.cost))  # mean curves'
    one = cr.cost_ratio(*[[cr.Point(p.method, p.epochs, p.recs[:1]) for p in curves_[k]] for k in ("deps", "ofa-ps")],
                        76.0)
    assert one.seeds == 1 and one.lo is None and one.verdict == "suggestive"
    # a costlier point that fewer seeds have reached (a run still to come) does not matter below its accuracy
    late = [*curves_["deps"][:2], cr.Point("deps", 16, curves_["deps"][2].recs[:1], [1, 2, 3, 4])]
    below, above = cr.reach(late, 72.0), cr.reach(late, 76.0)
    assert below.seeds == 5 and below.lo < below.cost < below.hi  # 1T..2T: every seed reaches 72 % by 2T
    assert above.seeds == 1 and above.lo is None and above.outside == []  # 2T..4T: needs the 16-epoch point
    assert cr.cost_ratio(late, curves_["ofa-ps"], 72.0).seeds == 5
    pending = cr.cost_ratio(late, curves_["ofa-ps"], 76.0)  # seeds 1-4 wait for their 16-epoch point: left out
    assert pending.seeds == 1 and pending.outside == [] and pending.verdict == "suggestive"
    # one seed can say: its own ratio (the mean curves mix seed 0's 16-epoch point with every seed's cheaper ones)
    assert pending.ratio == pytest.approx(2 ** (2.5 - (6 - DELTA[0]) / 4))
    assert pending.ratio != pytest.approx(pending.costs[1] / pending.costs[0], rel=1e-3)
    # a complete curve that misses the target: no interval, whatever the other seeds say
    short = [*curves_["deps"][:2]]  # DεpS without its 16-epoch point anywhere: seeds 0, 1 stop at 73.8, 73.9 %
    miss = cr.cost_ratio(short, curves_["ofa-ps"], 73.95)  # the mean curve (74.0 % at 2T) reaches it
    assert miss.ratio is not None and miss.outside == [0, 1] and miss.lo is None
    assert miss.verdict == "not shown" and miss.paper_verdict == "not shown" and miss.note.startswith("seed(s) 0, 1")


def test_curves_cross_where_the_mean_difference_changes_sign(tmp_path):
    rec = tmp_path / "records"
    for s in (0, 1):
        for e, c, a in zip((4, 8, 16), (1 * T, 2 * T, 4 * T), (70.0, 72.0, 74.0)):
            _write(rec, "deps", e, s, c, a + s)
        for e, c, a in zip((3, 6, 12), (1 * T, 2 * T, 4 * T), (71.0, 72.0, 73.0)):  # equal at 2T
            _write(rec, "bignas", e, s, c, a + s)
    got = cr.write_report(tmp_path, {"deps": (4, 8, 16), "bignas": (3, 6, 12)}, [0, 1])
    assert got["crossings"][("deps", "bignas")] == pytest.approx([2 * T], rel=1e-9)
    per_seed = got["seed_crossings"][("deps", "bignas")]
    assert sorted(per_seed) == [0, 1] and all(c == pytest.approx([2 * T], rel=1e-9) for c in per_seed.values())
    assert "| 2T | 2 of 2: seed 0 at 2T; seed 1 at 2T |" in (tmp_path / "curves.md").read_text()
    m, lo, hi, n, v = cr.trend(got["diffs"][("deps", "bignas")])
    # deps − bignas = log2(cost / 1T) − 1: −2/3 at the lowest level (1/6 of the overlap), +2/3 at the highest
    assert [x.mean for x in got["diffs"][("deps", "bignas")]] == pytest.approx([-2 / 3, 0, 2 / 3], abs=1e-9)
    assert m == pytest.approx(4 / 3) and n == 2 and v == "holds"


def test_each_seeds_own_curves_say_whether_they_cross_where_the_mean_curves_mix_seed_counts(tmp_path):
    """While a costly point has some seeds only, the mean curves join means over different seeds: here they cross
    (DεpS's 8T point has seed 0, the lower one; BigNAS's has seed 1, the higher one) although on each seed DεpS is
    1 point ahead wherever both its curves have points."""
    rec = tmp_path / "records"
    for s in (0, 1):
        for e, c, a in zip((4, 8, 16), (1 * T, 2 * T, 4 * T), (70.0, 72.0, 74.0)):
            _write(rec, "deps", e, s, c, a + 4 * s)
            _write(rec, "bignas", e - e // 4, s, c, a + 4 * s - 1)
    _write(rec, "deps", 32, 0, 8 * T, 76.0)
    _write(rec, "bignas", 24, 1, 8 * T, 79.0)
    got = cr.write_report(tmp_path, {"deps": (4, 8, 16, 32), "bignas": (3, 6, 12, 24)}, [0, 1])
    mean_cross = got["crossings"][("deps", "bignas")]
    assert len(mean_cross) == 1 and 4 * T < mean_cross[0] < 8 * T  # mean curves: 76 → 76 against 75 → 79
    assert got["seed_crossings"][("deps", "bignas")] == {0: [], 1: []}  # each seed: 1T..4T, DεpS ahead by 1
    assert f"| {cr._t(mean_cross[0])} | 0 of 2 |" in (tmp_path / "curves.md").read_text()


def test_an_empty_suite_reports_without_crashing(tmp_path):
    got = cr.write_report(tmp_path, BUDGETS, SEEDS)
    assert got["curves"] == {} and len(got["problems"]) == sum(len(e) for e in BUDGETS.values())
    assert "deps at 4 epochs: missing seed(s) 0, 1, 2, 3, 4" in (tmp_path / "curves.md").read_text()


def test_runs_are_seed_major_cheapest_level_first_and_the_plan_estimates_from_durations(tmp_path, capsys,
                                                                                         monkeypatch):
    order = [j.name for j in curves.jobs([0, 1], list(curves.POINTS))]
    assert order[:5] == ["deps-e4-s0", "ofa-ps-e4-s0", "bignas-e3-s0", "compofa-e5-s0", "full-only-e4-s0"]
    assert order[5:10] == ["deps-e8-s0", "ofa-ps-e9-s0", "bignas-e6-s0", "compofa-e10-s0", "full-only-e8-s0"]
    assert order[10:14] == ["deps-e16-s0", "ofa-ps-e18-s0", "bignas-e12-s0", "full-only-e16-s0"]
    # DεpS at 32 and OFA-PS at 35 epochs (beyond every other curve's cost) after every seed of the other points,
    # seed by seed, so that the two that extend the DεpS − OFA-PS comparison come together
    assert order[14] == "deps-e4-s1" and len(order) == 2 * 16
    assert order[-4:] == ["deps-e32-s0", "ofa-ps-e35-s0", "deps-e32-s1", "ofa-ps-e35-s1"]
    assert curves.parse_name("ofa-ps-e35-s3") == curves.Job("ofa-ps", 35, 3) and curves.parse_name("deps-s0") is None
    assert curves.Job("ofa-ps", 9, 0).overrides() == [*common.FMNIST20_R10, "data.train_subset=10000",
                                                      "train.epochs=9", "train.seed=0"]
    (tmp_path / "durations.csv").write_text("run,part,seconds,finished_at\ndeps-e4-s0,train,300,x\n"
                                            "deps-e4-s0,train,100,x\ndeps-e4-s0,eval,200,x\n")
    _write(tmp_path / "records", "deps", 4, 0, T, 70.0, cpu_seconds=180.0, device="CPU x (2 cpus), 1 threads")
    assert curves.estimate(curves.Job("deps", 8, 1), common_durations := curves.read_durations(
        tmp_path / "durations.csv")) == (800.0, 200.0)  # 100 s per epoch (a resumed part's rows summed)
    assert curves.estimate(curves.Job("bignas", 3, 0), common_durations) == (None, None)
    # the median over runs: one paused for a timing (1000 s per epoch here) does not pull the estimate
    paused = {**common_durations, ("deps-e8-s2", "train"): 8000.0, ("deps-e16-s2", "train"): 1600.0}
    assert curves.estimate(curves.Job("deps", 8, 1), paused) == (800.0, 200.0)
    # a method not measured here yet: reproduce.py's quick run of it (BigNAS: 6 epochs there), marked *
    (tmp_path / "reproduce.csv").write_text("run,part,seconds,finished_at\nbignas-s0,train,600,x\n"
                                            "bignas-s0,eval,300,x\ndeps-s0,train,4000,x\n")
    monkeypatch.setattr(curves, "REPRODUCE_DURATIONS", tmp_path / "reproduce.csv")
    curves.main(["--plan", "--out", str(tmp_path), "--seeds", "0", "--only", "deps,bignas"])
    text = capsys.readouterr().out
    assert "6 of 7 runs left" in text and "deps-e4-s0" not in text
    lines = {line.split()[0]: line for line in text.splitlines()[1:]}
    # this suite's own measurements first, a record's training seconds from its cost.json (the training's own
    # total over resumes, which durations.csv misses when a suite was killed): its CPU seconds per thread (45 s per
    # epoch here; the wall seconds, 60 per epoch, count the time other jobs held the cores)
    assert "9 min " in lines["deps-e8-s0"] and "15 min " in lines["deps-e16-s0"]
    assert "10 min*" in lines["bignas-e3-s0"] and "15 min*" in lines["bignas-e6-s0"]  # 100 s/epoch + 300 s
    total = float(text.splitlines()[-1].split("total")[1].split()[0])
    curves.main(["--plan", "--out", str(tmp_path), "--seeds", "0", "--only", "deps,bignas", "--jobs", "2"])
    last = capsys.readouterr().out.splitlines()[-1]  # half the total (both rounded to 0.1 h)
    assert last.startswith("  with 2 runs at a time: about ") and last.endswith(" h")
    assert float(last.split("about ")[1][:-2]) == pytest.approx(total / 2, abs=0.05 + 1e-9)
    cost = tmp_path / "records" / "deps-e4-s0" / "cost.json"
    cost.write_text(cost.read_text().replace("1 threads", "2 threads"))
    assert curves.with_record_seconds(tmp_path, {})[("deps-e4-s0", "train")] == 90.0  # 2 threads: per thread
    assert curves._threads({"device": device_name("cpu", 3)}) == 3  # as the training names its device
    cost.write_text(json.dumps({**json.loads(cost.read_text()), "threads": 4}))  # the field first, then device
    assert curves.with_record_seconds(tmp_path, {})[("deps-e4-s0", "train")] == 45.0
    for cpu in ({"cpu_seconds": None}, {}):  # unknown (an old checkpoint resumed) or not kept: wall
        kept = {k: v for k, v in json.loads(cost.read_text()).items() if k != "cpu_seconds"}
        cost.write_text(json.dumps({**kept, **cpu}))
        assert curves.with_record_seconds(tmp_path, {})[("deps-e4-s0", "train")] == 240.0
    # a training that resumes runs only the epochs its last checkpoint has not done (3 of 8 here: 5/8 of 480 s)
    tr, ev = curves.estimate(curves.Job("deps", 8, 0), curves.with_record_seconds(tmp_path, common_durations))
    assert (tr, ev) == (480.0, 200.0)
    last = tmp_path / "runs" / "deps-e8-s0" / "checkpoints" / "last.pt"
    save_checkpoint(last, {"state": {"step": 30, "steps_per_epoch": 10}})
    line = next(x for x in curves.plan(tmp_path, [curves.Job("deps", 8, 0)]) if "deps-e8-s0" in x)
    assert line.split()[1:4] == ["at", "3/8", "8"]  # (300 + 200) s
    last.write_bytes(b"")  # unreadable (being written, or damaged): counted as nothing done
    line = next(x for x in curves.plan(tmp_path, [curves.Job("deps", 8, 0)]) if "deps-e8-s0" in x)
    assert line.split()[1:4] == ["at", "0/8", "11"]  # (480 + 200) s
    last.write_text("step: 30")  # not a checkpoint at all: the same
    assert curves.epochs_done(last) == 0.0
    save_checkpoint(last, {"state": {"step": 25, "steps_per_epoch": 10}, "model": {"w": torch.zeros(2)}})
    assert checkpoint.peek_state(last) == {"step": 25, "steps_per_epoch": 10} and curves.epochs_done(last) == 2.5
    with pytest.raises(SystemExit, match="--only: unknown method 'nas'; valid: deps, ofa-ps"):
        curves.main(["--plan", "--only", "nas"])


def test_records_keep_no_machine_paths(tmp_path, monkeypatch):
    run = tmp_path / "run"
    (run / "eval").mkdir(parents=True)
    (run / "config.yaml").write_text(f"train:\n  out_dir: {common.REPO}/benchmarks/results/x/runs\n")
    (run / "metrics.jsonl").write_text(json.dumps({"event": "start", "python": sys.executable}) + "\n")
    (run / "eval" / "pareto.json").write_text("{}")
    common.keep_record(run, tmp_path / "records" / "r")
    rec = tmp_path / "records" / "r"
    assert (rec / "config.yaml").read_text() == "train:\n  out_dir: benchmarks/results/x/runs\n"
    assert str(common.REPO) not in (rec / "metrics.jsonl").read_text() and '"python": "python"' in (
        rec / "metrics.jsonl").read_text()
    assert not (rec.parent / "r.partial").exists()


def test_logs_keep_no_machine_paths(tmp_path):
    log = tmp_path / "log.txt"
    common.sh([sys.executable, "-c", f"print('run at {common.REPO}/benchmarks/results/x')"], log)
    text = log.read_text()
    assert str(common.REPO) not in text and sys.executable not in text
    assert "$ python -c" in text and "run at benchmarks/results/x\n" in text
    with pytest.raises(SystemExit, match=r"failed \(3\)"):
        common.sh([sys.executable, "-c", "raise SystemExit(3)"], log)
    common.sh([sys.executable, "-c", "print('a'); print('b')"], log, tag="deps-e4-s0")  # runs sharing the log
    assert log.read_text().endswith("[deps-e4-s0] a\n[deps-e4-s0] b\n")
    assert "\n[deps-e4-s0] $ python -c print('a'); print('b')\n" in log.read_text()


def test_the_suite_skips_recorded_runs_and_trains_the_rest_in_order(tmp_path, monkeypatch):
    calls = []

    def fake_train(name, preset, overrides, out, log, threads, tag=""):
        calls.append(("train", name, preset, threads))
        return out / "runs" / name

    def fake_eval(run, out, name, log, threads, tag=""):
        calls.append(("eval", name))
        job = curves.parse_name(name)
        _write(out / "records", job.method, job.epochs, job.seed, job.epochs * T, 70.0 + job.epochs)

    monkeypatch.setattr(curves, "train_run", fake_train)
    monkeypatch.setattr(curves, "eval_and_record", fake_eval)
    _write(tmp_path / "records", "deps", 4, 0, 4 * T, 74.0)  # recorded in an earlier session: skipped
    curves.main(["--out", str(tmp_path), "--seeds", "0", "--only", "deps,compofa", "--train-only"])
    assert calls == [("train", n, p, 1) for n, p in [("compofa-e5-s0", "fashion-mnist-compofa"),
                                                     ("deps-e8-s0", "fashion-mnist"),
                                                     ("compofa-e10-s0", "fashion-mnist-compofa"),
                                                     ("deps-e16-s0", "fashion-mnist"),
                                                     ("deps-e32-s0", "fashion-mnist")]]
    assert not (tmp_path / "curves.md").exists()  # --train-only: no evaluation, no report
    calls.clear()
    curves.main(["--out", str(tmp_path), "--seeds", "0", "--only", "deps,compofa", "--threads", "2"])
    assert [c[:2] for c in calls] == [("train", "compofa-e5-s0"), ("eval", "compofa-e5-s0"),
                                      ("train", "deps-e8-s0"), ("eval", "deps-e8-s0"),
                                      ("train", "compofa-e10-s0"), ("eval", "compofa-e10-s0"),
                                      ("train", "deps-e16-s0"), ("eval", "deps-e16-s0"),
                                      ("train", "deps-e32-s0"), ("eval", "deps-e32-s0")]
    assert calls[0][3] == 2
    md = (tmp_path / "curves.md").read_text()
    assert "| deps | 16 | 1 | 16T (same) |" in md and "| deps − compofa |" in md
    calls.clear()
    curves.main(["--out", str(tmp_path), "--seeds", "0", "--only", "deps,compofa"])  # everything recorded
    assert calls == []


def test_jobs_run_n_at_a_time_in_order_and_after_a_failure_none_starts(tmp_path, monkeypatch):
    started, lock = [], threading.Lock()
    together = threading.Barrier(2, timeout=20)  # passes only when two trainings run at the same time

    def fake_train(name, preset, overrides, out, log, threads, tag=""):
        with lock:
            started.append((name, tag, threads))
        together.wait()
        return out / "runs" / name

    def fake_eval(run, out, name, log, threads, tag=""):
        job = curves.parse_name(name)
        _write(out / "records", job.method, job.epochs, job.seed, job.epochs * T, 70.0 + job.epochs)

    monkeypatch.setattr(curves, "train_run", fake_train)
    monkeypatch.setattr(curves, "eval_and_record", fake_eval)
    curves.main(["--out", str(tmp_path), "--seeds", "0,1", "--only", "deps", "--jobs", "2", "--train-only"])
    names = [j.name for j in curves.jobs([0, 1], ["deps"])]
    assert sorted(started) == sorted((n, n, 1) for n in names)  # each log line of a run names it
    assert {n for n, *_ in started[:2]} == set(names[:2])  # the first two in the suite's order go first
    started.clear()
    (tmp_path / "records").mkdir()

    def failing_train(name, preset, overrides, out, log, threads, tag=""):
        with lock:
            started.append(name)
        if name == "deps-e8-s0":
            raise SystemExit("failed (1): train")
        time.sleep(0.3)  # still running when the other fails: it finishes, and nothing new starts
        return out / "runs" / name

    monkeypatch.setattr(curves, "train_run", failing_train)
    with pytest.raises(SystemExit, match=r"failed \(1\)"):
        curves.main(["--out", str(tmp_path), "--seeds", "0,1", "--only", "deps", "--jobs", "2"])
    assert sorted(started) == ["deps-e4-s0", "deps-e8-s0"]
    assert (tmp_path / "records" / "deps-e4-s0").is_dir()  # the running one was evaluated and recorded
    with pytest.raises(SystemExit, match="--jobs: 0 is not valid; expected an integer >= 1"):
        curves.main(["--plan", "--jobs", "0"])


def test_a_record_of_another_eval_protocol_is_done_again_and_left_out_of_the_report(tmp_path, monkeypatch):
    """A record measured under an older evaluation protocol is not comparable with the current ones: the suite runs
    the job again (training resumes or skips where the run is kept; eval_and_record evaluates again), and the
    report leaves it out, saying why."""
    calls = []
    monkeypatch.setattr(curves, "train_run", lambda name, *a, **k: calls.append(name) or tmp_path / "runs" / name)
    monkeypatch.setattr(curves, "eval_and_record", lambda *a, **k: None)
    _write(tmp_path / "records", "deps", 4, 0, 4 * T, 74.0, protocol=None)
    _write(tmp_path / "records", "deps", 8, 0, 8 * T, 76.0, protocol="e2")
    _write(tmp_path / "records", "deps", 16, 0, 16 * T, 78.0)
    curves.main(["--out", str(tmp_path), "--seeds", "0", "--only", "deps", "--train-only"])
    assert calls == ["deps-e4-s0", "deps-e8-s0", "deps-e32-s0"]
    curves_, problems = cr.load_records(tmp_path / "records", {"deps": (4, 8, 16)}, [0])
    assert [p.epochs for p in curves_["deps"]] == [16]
    assert f"deps-e4-s0: evaluated under protocol e2, not {PROTOCOL}; left out (not comparable)" in problems
    run = tmp_path / "run"
    (run / "eval").mkdir(parents=True)
    assert common.eval_protocol(run) is None
    (run / "eval" / "pareto.json").write_text(json.dumps({"eval_set": {"protocol": PROTOCOL}}))
    assert common.eval_protocol(run) == PROTOCOL


def test_a_record_or_run_trained_with_other_settings_stops_the_suite(tmp_path, monkeypatch):
    """Older defaults (or an edited preset) must not let an old record stand in for a job, nor an old unfinished
    run resume under the job's name: one line names the first differing setting."""
    monkeypatch.setattr(curves, "train_run", lambda *a: pytest.fail("trained"))
    _write(tmp_path / "records", "deps", 4, 0, 4 * T, 74.0)
    cfg = tmp_path / "records" / "deps-e4-s0" / "config.yaml"
    cfg.write_text(cfg.read_text().replace("bn_momentum: 0.99", "bn_momentum: 0.1"))
    with pytest.raises(SystemExit, match=r"deps-e4-s0: was trained with model.bn_momentum=0.1, this job trains "
                                         r"with model.bn_momentum=0.99; move it away"):
        curves.main(["--out", str(tmp_path), "--seeds", "0", "--only", "deps", "--train-only"])
    # the same check before an unfinished run resumes (common.train_run)
    run = tmp_path / "runs" / "deps-e4-s0"
    (run / "checkpoints").mkdir(parents=True)
    (run / "checkpoints" / "last.pt").write_bytes(b"")
    (run / "config.yaml").write_text(cfg.read_text().replace("epochs: 4", "epochs: 5"))
    monkeypatch.setattr(common, "sh", lambda *a: pytest.fail("resumed"))
    with pytest.raises(SystemExit, match=r"was trained with model.bn_momentum=0.1, .* \(and 1 more\)"):
        common.train_run("deps-e4-s0", "fashion-mnist", curves.Job("deps", 4, 0).overrides(), tmp_path,
                         tmp_path / "log.txt", 1)


def test_committed_results_name_no_machine_folder():
    """Every committed result (records, logs, reports under benchmarks/results; the runs themselves are not
    committed) is free of absolute paths of the machine that made it: they mean nothing on another one."""
    results = Path(__file__).resolve().parents[1] / "benchmarks" / "results"
    absolute = re.compile(r"(?<![\w.~])/(?:work|root|home|tmp|Users|mnt|var|opt|usr/local)/")
    found = []
    for path in sorted(results.rglob("*")):
        if "runs" in path.relative_to(results).parts or path.suffix not in {".csv", ".json", ".jsonl", ".md", ".txt",
                                                                            ".yaml"}:
            continue
        for n, line in enumerate(path.read_text(errors="replace").splitlines(), 1):
            if absolute.search(line):
                found.append(f"{path.relative_to(results)}:{n}: {line[:120]}")
    assert results.is_dir() and not found, "\n".join(found[:10])


def test_the_cost_ratio_interval_covers_the_true_ratio_95_percent_of_the_time():
    """Measuring the instrument: on synthetic curves shaped like the measured ones, where the other method needs
    1.7x DεpS's cost for every accuracy, the paired t-interval of ``cost_ratio`` contains 1.7 in about 95 % of the
    replications with 3 seeds (here 281 of 300; the percentile bootstrap it replaced: 259 of 300 from the same
    generator seed, 84 % in benchmarks/ratio_coverage.py)."""
    import numpy as np
    import ratio_coverage

    covered, given = ratio_coverage.coverage(3, 300, np.random.default_rng(7), bootstrap=False)["paired t"]
    assert given >= 295 and 0.92 <= covered / given <= 0.98


def test_results_md_copies_the_committed_report_and_sync_rewrites_only_the_copies():
    # RESULTS.md's section-3 table and curve claims rows are curves.md's (names displayed): the committed pair agrees
    report = common.REPO / "benchmarks" / "results" / "curves-quick-fmnist20-r10" / "curves.md"
    results = (common.REPO / "benchmarks" / "RESULTS.md").read_text()
    assert cr.sync_results(results, report.read_text()) == results
    md = "\n".join([
        "## Per method and budget", "",
        "| method | epochs | seeds | train MACs | wall | cpu | mean Pareto | smallest | full |", "|---|" * 9,
        "| deps | 4 | 5 | 2.12T (2.1T–2.14T) | 8.9 | 7.4 | 78.36 [77.78, 78.94] | 74.87 | 81.07 |",
        "| full-only | 4 | 5 | 1.53T (same) | 1 | 1 | 68.07 | 20.01 | 82.48 |", "",
        "## The paper's claims, answered by the curves", "", "text", "",
        "| claim | measured | seeds | verdicts |", "|---|" * 4,
        "| 1.8x less cost than ofa-ps | ofa-ps / deps: 79.1 %: 1.72x [1.58x, 1.87x] | 5 | holds 1 |",
        "| deps's full model is ahead of full-only's | 2.5T: -3.08 [-3.58, -2.58] | 5 | contradicted 1 |", "",
        "## Compute", ""])
    old_claims = "| old | x | 5 | holds | 3 |\n| old 2 | y | 5 | holds | 3 |\n"
    before = ("# R\n\n| claim (paper) | measured | seeds | verdict | section |\n|---|---|---|---|---|\n" + old_claims
              + "| ablation | z | 3 | not shown | 4 |\n\n## 3.\n\nprose\n\n| method | epochs | seeds | training MACs "
              "| mean Pareto | smallest subnet | full model |\n|---|---|---|---|---|---|---|\n"
              "| DεpS | 4 | 1 | 2T | 70 | 60 | 80 |\n\nmore prose\n")
    after = cr.sync_results(before, md)
    assert after == before.replace(old_claims, "\n".join([
        "| 1.8× less cost than OFA-PS | OFA-PS / DεpS: 79.1 %: 1.72× [1.58×, 1.87×] | 5 | holds 1 | 3 |",
        "| DεpS's full model is ahead of the full model trained alone | 2.5T: −3.08 [−3.58, −2.58] | 5 "
        "| contradicted 1 | 3 |", ""])).replace("| DεpS | 4 | 1 | 2T | 70 | 60 | 80 |\n", "\n".join([
            "| DεpS | 4 | 5 | 2.12T | 78.36 [77.78, 78.94] | 74.87 | 81.07 |",
            "| full-only | 4 | 5 | 1.53T | 68.07 | 20.01 | 82.48 |", ""]))
    assert cr.sync_results(after, md) == after  # idempotent
    split = before.replace("| old 2 |", "| x | y | 1 | n | 4 |\n| old 2 |")
    with pytest.raises(ValueError, match="RESULTS.md's section 3 claims rows are not one block"):
        cr.sync_results(split, md)
    with pytest.raises(ValueError, match="curves.md has no section '## Per method and budget'"):
        cr.sync_results(before, "# empty\n")
