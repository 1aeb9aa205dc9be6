"""onceforall eval / compare on tiny real runs."""

import csv
import json
import random
import shutil

import pytest
import torch

import onceforall.workflows.evaluate as evaluate_mod
from onceforall.cli import main
from onceforall.core.pareto import Point, mean_pareto_accuracy, window_weights
from onceforall.measure.evaluator import Evaluator, ranking_evaluator
from onceforall.measure.scores import curve_scores, read_curve_correct
from onceforall.run.checkpoint import load_checkpoint
from onceforall.run.config import load_config
from onceforall.run.rundir import RunError, load_run
from onceforall.run.setup import build_schedule, build_strategy
from onceforall.specialize.timing import torch_threads
from onceforall.workflows.gradients import replay_steps
from onceforall.workflows.report import compare_runs, write_run_report
from onceforall.workflows.train import train

from .helpers import needs_fashion

pytestmark = needs_fashion

TINY = [
    "data.train_subset=256", "data.eval_subset=64", "data.bn_images=64", "data.eval_batch_size=128",
    "data.image_size=16", "model.width_mult=0.25", "model.resolutions=[16]", "train.batch_size=32",
    "train.epochs=2", "train.threads=1", "data.val_split=300", "train.keep_checkpoints=true", "data.test_subset=2000",
]


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    root = tmp_path_factory.mktemp("runs")
    train(load_config("fashion-mnist-quick", TINY), root / "deps")
    bignas = load_config("fashion-mnist-quick", TINY + ["strategy.name=bignas", "strategy.num_subnets=3"])
    train(bignas, root / "bignas")
    return root


def test_eval_writes_a_consistent_front_and_caches(runs, monkeypatch, capsys):
    assert main(["eval", str(runs / "deps"), "--per-bucket", "2", "--no-uniform", "--selection-images", "100",
                 "--quiet"]) == 0
    out = runs / "deps" / "eval"
    r = json.loads((out / "pareto.json").read_text())
    assert len(r["buckets"]) == 6 and r["eval_set"]["images"] == 2000 and r["eval_set"]["selection_images"] == 100
    assert r["eval_set"]["split"] == "test" and r["eval_set"]["held_out"]
    assert r["eval_set"]["selection_split"] == "validation (300 held-out training images)"
    # every bucket holds the candidates asked for, the top ones included (uniform sampling never reaches them)
    assert len(r["bucket_candidates"]) == 6 and min(r["bucket_candidates"]) >= 2
    assert all(b["arch"] is not None for b in r["buckets"])
    assert any(e["source"] == "search" for e in r["evaluated"])
    run = load_run(runs / "deps")
    lo, hi = run.space.macs_range()
    assert r["macs_range"] == [lo, hi]
    assert r["curve"][0]["arch"] == str(run.space.min()) and r["curve"][-1]["arch"] == str(run.space.max())
    curve = [Point(p["arch"], p["macs"], p["acc"]) for p in r["curve"]]
    assert r["mean_pareto_acc"] == pytest.approx(mean_pareto_accuracy(curve, lo, hi))
    # the bootstrap resamples per-image scores whose mean is exactly mean Pareto accuracy
    correct = read_curve_correct(runs / "deps")
    assert correct["images"] == 2000 and set(correct["correct"]) == {p["arch"] for p in r["curve"]}
    for p in r["curve"]:
        assert 100 * correct["correct"][p["arch"]].mean() == pytest.approx(p["acc"], abs=1e-3)
    scores = curve_scores(r["curve"], correct["correct"], lo, hi)
    assert scores.mean() == pytest.approx(r["mean_pareto_acc"], abs=1e-6)
    ci = r["mean_pareto_ci"]
    assert ci[0] < r["mean_pareto_acc"] < ci[1] and 0.1 < ci[1] - ci[0] < 5
    assert "95 % bootstrap interval" in (out / "report.md").read_text()
    for b in r["buckets"]:
        if b["arch"] is not None:
            assert b["lo"] <= b["macs"] <= b["hi"]
    rows = list(csv.DictReader((out / "pareto.csv").open()))
    assert len(rows) == len(r["evaluated"]) >= 8
    assert {p["arch"] for p in r["curve"]} <= {row["arch"] for row in rows if row["bucket_winner"] == "True"} | {
        r["smallest"]["arch"], r["largest"]["arch"]}
    assert "Mean Pareto accuracy" in (out / "report.md").read_text()
    # winners: the best of each bucket's 3 finalists (its best on the 100-image subset) on all 300 images
    assert r["eval_set"]["finalists_per_bucket"] == 3 and r["eval_set"]["finalist_images"] == 300
    ends = {r["smallest"]["arch"], r["largest"]["arch"]}
    for b in r["buckets"]:
        inside = [e for e in r["evaluated"] if e["bucket"] == b["bucket"]]
        final = [e for e in inside if e["acc_selection_whole"] is not None]
        rest = [e for e in inside if e["acc_selection_whole"] is None]
        assert len([e for e in final if e["arch"] not in ends]) <= 3 and len(final) >= min(3, len(inside))
        assert all(e["acc_selection"] <= min(f["acc_selection"] for f in final if f["arch"] not in ends)
                   for e in rest if final)
        assert b["arch"] == max(final, key=lambda e: (e["acc_selection_whole"], -e["macs"]))["arch"]
    whole = Evaluator(load_run(runs / "deps")).accuracy([load_run(runs / "deps").space.parse(b["arch"])
                                                         for b in r["buckets"]], "selection")
    assert whole == [next(e["acc_selection_whole"] for e in r["evaluated"] if e["arch"] == b["arch"])
                     for b in r["buckets"]]
    assert "measured again on 300" in (out / "report.md").read_text()
    assert (out / "pareto.png").stat().st_size > 1000
    assert "mean Pareto accuracy" in capsys.readouterr().out
    # second run: everything comes from eval/cache.json
    calls = []
    real = Evaluator._forward
    monkeypatch.setattr(Evaluator, "_forward", lambda *a, **k: calls.append(1) or real(*a, **k))
    again = evaluate_mod.evaluate_run(load_run(runs / "deps"), per_bucket=2, uniform=False, selection_images=100)
    assert calls == [] and again.mean_pareto_acc == r["mean_pareto_acc"]
    assert json.dumps(again.to_json(), indent=2) + "\n" == (out / "pareto.json").read_text()  # the file, exactly


def _evaluate(run, **kw):
    """``onceforall eval`` without the CLI: evaluate, then write the report (pareto.json and the rest)."""
    result = evaluate_mod.evaluate_run(run, **kw)
    write_run_report(run, result)
    return result


def _copy_run(src, dst):
    """A run directory without its eval/ folder (config, metrics, cost, last checkpoint)."""
    (dst / "checkpoints").mkdir(parents=True)
    for f in ("config.yaml", "metrics.jsonl", "cost.json"):
        shutil.copy2(src / f, dst / f)
    shutil.copy2(src / "checkpoints" / "last.pt", dst / "checkpoints" / "last.pt")
    return dst


def test_reevaluation_is_byte_identical_whatever_the_cache_held(runs, tmp_path):
    """The result is a function of the weights, the config and the arguments: a fresh cache, a cache full of other
    measurements (other weights, an older protocol, archs this evaluation never measures) and no cache at all give
    the same pareto.json byte for byte; a cached value is reused only where it is this evaluation's measurement."""
    run_dir = _copy_run(runs / "deps", tmp_path / "deps")
    kw = dict(per_bucket=2, uniform=False, selection_images=100, finalists=2)
    first = _evaluate(load_run(run_dir), **kw)
    pareto = (run_dir / "eval" / "pareto.json").read_bytes()
    run = load_run(run_dir)
    ev = Evaluator(run)
    mine = {e["arch"] for e in first.evaluated}
    cache = json.loads((run_dir / "eval" / "cache.json").read_text())
    junk = {}
    for k, v in cache.items():  # the same archs, measured under other weights or an older protocol: other values
        protocol, weights, rest = k.split("|", 2)
        junk[f"{protocol}|wdeadbeefdeadbeef|{rest}"] = 100.0 - v
        junk["step123|" + rest] = 0.0
    rng = random.Random(0)
    others = [a for a in (run.space.sample(rng) for _ in range(200)) if str(a) not in mine][:30]
    for a in others:  # this run's weights and sets, archs the evaluation does not measure: the predictor ignores them
        junk[ev.key(a, "selection", 100)] = 99.0 if run.space.macs(a) < sum(run.space.macs_range()) / 2 else 1.0
    (run_dir / "eval" / "cache.json").write_text(json.dumps({**cache, **junk}))
    (run_dir / "eval" / "pareto.json").unlink()
    again = Evaluator(load_run(run_dir))
    _evaluate(again.run, evaluator=again, **kw)
    assert (run_dir / "eval" / "pareto.json").read_bytes() == pareto
    assert dict(again.images) == {}  # every measurement was this evaluation's own, found in the cache
    shutil.rmtree(run_dir / "eval")  # no cache at all: measured again, the same bytes
    _evaluate(load_run(run_dir), **kw)
    assert (run_dir / "eval" / "pareto.json").read_bytes() == pareto


def test_whole_split_completed_from_a_subset_and_bn_statistics_reused(runs, tmp_path):
    """Measuring the whole split after a subset of it measures only the other images, and gives the per-image
    results of a direct measurement; each arch's BN statistics are recalibrated once per Evaluator."""
    run_dir = _copy_run(runs / "deps", tmp_path / "deps")
    run = load_run(run_dir)
    archs = [run.space.min(), run.space.max(), run.space.sample(torch.Generator().manual_seed(3))]
    ev = Evaluator(run)
    ev.accuracy(archs, "selection", 100)
    bn_images = ev.images["BN recalibration"]
    assert bn_images == 3 * 64
    larger = ev.accuracy(archs, "selection", 200, complete=100)  # subsets are nested: 100 more images each
    completed = ev.accuracy(archs, "selection", complete=200)
    name, name200 = ev.batches("selection")[1], ev.batches("selection", 200)[1]
    assert ev.images[f"forward {name200} (beyond 100)"] == 3 * 100 and ev.images[f"forward {name} (beyond 200)"] \
        == 3 * 100 and ev.images.get(f"forward {name}", 0) == 0
    assert ev.images["BN recalibration"] == bn_images  # kept from the subset's measurement
    direct = Evaluator(load_run(_copy_run(runs / "deps", tmp_path / "direct")))
    assert direct.accuracy(archs, "selection") == completed
    assert direct.accuracy(archs, "selection", 200) == larger
    for a in archs:
        assert (direct.correct(a, "selection") == ev.correct(a, "selection")).all()
    # the kept BN statistics are the recalibrated ones: the same logits as a fresh recalibration
    x = next(iter(run.data.test))[0][:8]
    with torch.no_grad():
        assert torch.equal(ev.subnet(archs[2])(x), direct.subnet(archs[2])(x))


def test_two_evaluators_of_a_run_keep_each_others_measurements(runs):
    run = load_run(runs / "deps")
    first, second = Evaluator(run), Evaluator(run)  # both read the cache before either measured
    small, full = run.space.min(), run.space.max()
    first.accuracy([small], "selection", 50)
    second.accuracy([full], "selection", 50)  # its save must not drop what the first one wrote
    fresh = Evaluator(run)
    assert {fresh.key(small, "selection", 50), fresh.key(full, "selection", 50)} <= set(fresh.cache)
    assert fresh.measured("selection", 50) == {small: first.cache[first.key(small, "selection", 50)],
                                               full: second.cache[second.key(full, "selection", 50)]}


def test_ranking_evaluator_shares_the_cache_and_inputs_and_keeps_its_own_bn(runs, tmp_path, monkeypatch):
    """The ranking Evaluator beside the reported one (fewer BN images) reads no cache file and prepares no input
    again: what either measures is the other's at once; its measurements are those of an Evaluator of its own."""
    run = load_run(_copy_run(runs / "deps", tmp_path / "deps"))
    ev = Evaluator(run)
    small, full = run.space.min(), run.space.max()
    ev.accuracy([full], "selection", 50)
    reads = []
    monkeypatch.setattr("onceforall.measure.evaluator.read_eval_cache", lambda *a: reads.append(a) or {})
    ranker = ranking_evaluator(ev, 32)
    ranker.accuracy([small, full], "selection", 50)
    assert [r[1] for r in reads] == ["numbers", "strings"]  # its save merges the files; it never read them to start
    assert ranker.bn_images == 32 and ranker.cache is ev.cache and ranker._inputs is ev._inputs
    assert full in ev._bn_state and ranker._bn_state.keys() == {small, full}  # BN statistics: each its own
    ev.bn_images = 32  # another BN subset: the statistics kept for 64 images are dropped
    assert ev._bn_state == {} and full in ranker._bn_state
    ev.bn_images = 64
    assert ranker.images["BN recalibration"] == 64 + 2 * 32  # one account of the time
    assert ev.key(full, "selection", 50) != ranker.key(full, "selection", 50)  # both kept: their keys name the BN
    assert {ev.key(full, "selection", 50), ranker.key(full, "selection", 50)} <= set(ev.cache)
    assert ranking_evaluator(ev, None) is ev and ranking_evaluator(ev, 10**6) is ev
    monkeypatch.undo()
    alone = Evaluator(load_run(_copy_run(runs / "deps", tmp_path / "alone")), bn_images=32)
    assert alone.accuracy([small, full], "selection", 50) == ranker.accuracy([small, full], "selection", 50)


def test_compare_table_and_plots(runs, tmp_path):
    for name in ("deps", "bignas"):
        if not (runs / name / "eval" / "pareto.json").exists():
            _evaluate(load_run(runs / name), per_bucket=2, uniform=False, selection_images=100)
    rows = compare_runs([runs / "bignas", runs / "deps"], tmp_path / "cmp")
    by = {r["strategy"]: r for r in rows}
    assert by["deps"]["cost_ratio"] == pytest.approx(1.0)  # the DεpS run is the reference
    assert by["bignas"]["cost_ratio"] == pytest.approx(by["bignas"]["device_hours"] / by["deps"]["device_hours"])
    # the MACs cost ratio: cost.json's train_macs over the reference's, exact
    macs = {n: json.loads((runs / n / "cost.json").read_text())["train_macs"] for n in ("deps", "bignas")}
    assert by["bignas"]["train_macs"] == macs["bignas"] > 0 and by["deps"]["macs_cost_ratio"] == 1.0
    assert by["bignas"]["macs_cost_ratio"] == macs["bignas"] / macs["deps"]
    assert by["deps"]["diff_vs_ref"] == 0 and by["deps"]["diff_ci_lo"] == by["deps"]["diff_ci_hi"] == 0
    # paired: the difference's interval is centred on the difference of the two mean Pareto accuracies
    d = by["bignas"]
    assert d["diff_vs_ref"] == pytest.approx(d["mean_pareto_acc"] - by["deps"]["mean_pareto_acc"], abs=1e-6)
    assert d["diff_ci_lo"] <= d["diff_vs_ref"] <= d["diff_ci_hi"]
    # pairing removes the shared noise of the test images: narrower than the unpaired intervals combined
    width = lambda r: r["mean_pareto_ci_hi"] - r["mean_pareto_ci_lo"]  # noqa: E731
    assert d["diff_ci_hi"] - d["diff_ci_lo"] < width(d) + width(by["deps"])
    md = (tmp_path / "cmp" / "compare.md").read_text()
    assert "| deps | deps |" in md and "| bignas | bignas |" in md and "mean Pareto acc" in md
    table = list(csv.DictReader((tmp_path / "cmp" / "compare.csv").open()))
    assert [t["method"] for t in table] == ["bignas", "deps"]
    assert float(table[0]["macs_cost_ratio"]) == pytest.approx(macs["bignas"] / macs["deps"])
    assert f"{macs['bignas'] / macs['deps']:.2f}x" in md and "MACs ratio" in md
    assert (tmp_path / "cmp" / "fronts.png").stat().st_size > 1000
    assert (tmp_path / "cmp" / "training.png").stat().st_size > 1000
    # per point (smallest, bucket winners, largest): the paired difference is the two reported accuracies' one
    points = list(csv.DictReader((tmp_path / "cmp" / "compare_points.csv").open()))
    results = {n: json.loads((runs / n / "eval" / "pareto.json").read_text()) for n in ("deps", "bignas")}
    assert [p["point"] for p in points if p["method"] == "bignas"] == ["smallest", *[f"bucket {i}" for i in
                                                                                     range(1, 7)], "largest"]
    for p in points:
        if p["point"] == "smallest":
            assert float(p["acc"]) == results[p["method"]]["smallest"]["acc"]
            assert float(p["ref_acc"]) == results["deps"]["smallest"]["acc"]
        if p["diff"] == "":
            assert "" in (p["arch"], p["ref_arch"])  # an empty bucket has no difference
            continue
        assert float(p["diff"]) == pytest.approx(float(p["acc"]) - float(p["ref_acc"]), abs=2e-3)
        assert float(p["diff_ci_lo"]) <= float(p["diff"]) <= float(p["diff_ci_hi"])
        if p["method"] == "deps":
            assert float(p["diff"]) == float(p["diff_ci_lo"]) == float(p["diff_ci_hi"]) == 0
    assert "## Per point of the curve" in (tmp_path / "cmp" / "compare.md").read_text()
    # a run whose space spans a narrower MACs range (as CompOFA's) is compared over the range both share
    narrow = tmp_path / "narrow"
    shutil.copytree(runs / "deps", narrow, ignore=shutil.ignore_patterns("checkpoints"))
    r = json.loads((narrow / "eval" / "pareto.json").read_text())
    r["curve"] = [p for i, p in enumerate(r["curve"][1:-1]) if i != 1]  # another curve inside the window too
    r["macs_range"] = [r["curve"][0]["macs"], r["curve"][-1]["macs"]]
    (narrow / "eval" / "pareto.json").write_text(json.dumps(r))
    rows = compare_runs([runs / "deps", narrow], tmp_path / "cmp2")
    n = rows[1]
    assert [n["diff_macs_lo"], n["diff_macs_hi"]] == r["macs_range"] and rows[0]["diff_macs_lo"] is None
    full = json.loads((runs / "deps" / "eval" / "pareto.json").read_text())["curve"]
    mean = lambda c: sum(w * p["acc"] for w, p in zip(window_weights([p["macs"] for p in c], *r["macs_range"]), c))  # noqa: E731
    assert n["diff_vs_ref"] == pytest.approx(mean(r["curve"]) - mean(full), abs=1e-3)
    assert n["diff_ci_lo"] <= n["diff_vs_ref"] <= n["diff_ci_hi"]
    assert "(over " in (tmp_path / "cmp2" / "compare.md").read_text()
    # its buckets are other MACs intervals: no per-point differences for it
    assert {p["method"] for p in csv.DictReader((tmp_path / "cmp2" / "compare_points.csv").open())} == {"deps"}


def test_missing_runs_and_evals_are_one_line_errors(tmp_path, capsys):
    with pytest.raises(RunError, match="run .*nope not found"):
        load_run(tmp_path / "nope")
    assert main(["eval", str(tmp_path / "nope")]) == 2
    assert "not found" in capsys.readouterr().err
    (tmp_path / "half").mkdir()
    (tmp_path / "half" / "config.yaml").write_text("name: x\n")
    assert main(["eval", str(tmp_path / "half")]) == 2
    assert "has no checkpoints/last.pt; train it first" in capsys.readouterr().err
    assert main(["compare", str(tmp_path / "half"), "--out", str(tmp_path / "c")]) == 2
    assert "has no eval/pareto.json; run `onceforall eval" in capsys.readouterr().err


def test_search_and_front_learn_from_evals_ranking_measurements_without_measuring_them_again(runs, tmp_path,
                                                                                              monkeypatch):
    """search's and front's predictors learn from the subnets eval ranked (by default the same images and BN
    images as eval's): after an eval, a search measures only its candidates, on the whole validation and test
    splits with data.bn_images; no predictor subnet is measured again."""
    from onceforall.workflows.front import FrontArgs, build_front
    from onceforall.workflows.search import SearchArgs, run_search

    for cls in (SearchArgs, FrontArgs):  # the defaults are eval's, so the reuse holds out of the box
        assert (cls.selection_images, cls.ranking_bn_images) == (evaluate_mod.EvalArgs.selection_images,
                                                                 evaluate_mod.EvalArgs.ranking_bn_images)
    run_dir = _copy_run(runs / "deps", tmp_path / "deps")
    r = _evaluate(load_run(run_dir), per_bucket=2, uniform=False, selection_images=100, ranking_bn_images=32)
    ranked = len(r.evaluated)
    forwards = []
    real = Evaluator._forward
    monkeypatch.setattr(Evaluator, "_forward",
                        lambda self, arch, b, name: forwards.append(self.bn_images) or real(self, arch, b, name))
    run = load_run(run_dir)
    lo, hi = run.space.macs_range()
    res = run_search(run, SearchArgs(top=2, samples=ranked, selection_images=100, ranking_bn_images=32),
                     macs=lo + 0.5 * (hi - lo))
    assert res.predictor["pairs"] == ranked and res.eval_set["predictor_bn_images"] == 32
    assert forwards and set(forwards) == {64}  # the candidates only, with data.bn_images (64)
    assert len(forwards) <= 2 * len(res.candidates)  # whole validation and test, at most once each
    forwards.clear()
    fr = build_front(run, ["macs"], samples=ranked, selection_images=100, ranking_bn_images=32, measure=2,
                     population=16, generations=3)
    assert fr.predictor["pairs"] == ranked and set(forwards) <= {64}
    # a search with other ranking BN images measures its own predictor subnets (ranked with 64 BN images)
    forwards.clear()
    run_search(run, SearchArgs(top=1, samples=4, selection_images=100, ranking_bn_images=0), macs=hi)
    assert forwards.count(64) >= 4


def test_search_cli_respects_the_budget_and_measures(runs, capsys):
    run = load_run(runs / "deps")
    lo, hi = run.space.macs_range()
    budget = lo + 0.4 * (hi - lo)
    assert main(["search", str(runs / "deps"), "--macs", str(int(budget)), "--samples", "12", "--top", "2",
                 "--selection-images", "100", "--quiet"]) == 0
    out = capsys.readouterr().out
    assert "predictor trained on" in out
    found = json.loads(next((runs / "deps" / "search").glob("macs-*.json")).read_text())
    assert 2 <= len(found["candidates"]) <= 3 and found["predictor"]["pairs"] >= 12
    assert found["eval_set"]["selection_split"].startswith("validation") and found["eval_set"]["split"] == "test"
    for c in found["candidates"]:
        assert c["macs"] <= budget and run.space.macs(run.space.parse(c["arch"])) == c["macs"]
        assert 0 <= c["measured_acc"] <= 100 and 0 <= c["selection_acc"] <= 100
    # the chosen arch is the best on the selection split, not on the test split it reports
    assert found["best"] == max(found["candidates"], key=lambda c: (c["selection_acc"], -c["macs"]))["arch"]
    # a budget the full model fits: the full model competes (it is the most trained subnet)
    assert main(["search", str(runs / "deps"), "--macs", "1e20", "--samples", "12", "--top", "1",
                 "--selection-images", "100", "--quiet"]) == 0
    capsys.readouterr()
    huge = max((json.loads(f.read_text()) for f in (runs / "deps" / "search").glob("macs-*.json")),
               key=lambda r: r["budget"])
    full = [c for c in huge["candidates"] if c["arch"] == str(run.space.max())]
    assert full and full[0]["source"] in ("full model", "search", "measured")
    assert main(["search", str(runs / "deps"), "--macs", "1k"]) == 2
    err = capsys.readouterr().err
    assert "is below the smallest subnet (" in err and err.count("\n") == 1
    assert main(["search", str(runs / "deps"), "--macs", "lots"]) == 2
    assert "--macs: 'lots' is not valid; expected positive numbers separated by commas" in capsys.readouterr().err
    assert main(["search", str(runs / "deps")]) == 2
    assert "give a budget (--macs 20M, --latency-ms 1.5, several: 5M,10M) or --front" in capsys.readouterr().err
    assert main(["search", str(runs / "deps"), "--memory", "300k"]) == 2
    assert "are read off a front; add --front" in capsys.readouterr().err


def test_search_front_reads_budgets_and_exports_a_family(runs, tmp_path, capsys):
    from onceforall.core.pareto import dominates
    from onceforall.measure.evaluator import RANKING_BN_IMAGES
    from onceforall.measure.results import FrontResult
    from onceforall.specialize.budgets import parse_budgets
    from onceforall.specialize.export import load_subnet, read_sidecar
    from onceforall.specialize.memory import peak_memory
    from onceforall.workflows.front import FrontArgs, load_front, read_budgets, why_search_again

    run = load_run(runs / "deps")
    space = run.space
    lo, hi = space.macs_range()
    b1, b2 = int(lo + 0.3 * (hi - lo)), int(lo + 0.7 * (hi - lo))
    assert main(["search", str(runs / "deps"), "--front", "--costs", "macs,memory", "--macs", f"{b1},{b2}",
                 "--samples", "12", "--selection-images", "100", "--measure", "4", "--quiet"]) == 0
    out = capsys.readouterr().out
    front = load_front(runs / "deps" / "search" / "front.json")
    members = front.members
    assert front.costs == ["macs", "memory"] and front.info == {"memory_dtype": "float32"} and len(members) >= 4
    assert json.dumps(front.to_json(), indent=1) + "\n" == (runs / "deps" / "search" / "front.json").read_text()
    for m in members:  # costs are recomputed, and no member dominates another on (predicted accuracy, costs)
        arch = space.parse(m["arch"])
        assert m["costs"] == {"macs": space.macs(arch), "memory": peak_memory(space, arch)}
    pts = [(-m["predicted_acc"], m["costs"]["macs"], m["costs"]["memory"]) for m in members]
    assert not any(dominates(p, q) for p in pts for q in pts)
    measured = [m for m in members if m["measured_acc"] is not None]
    assert len(measured) == 4 and members[0] in measured and members[-1] in measured  # both ends
    assert all(0 <= m["selection_acc"] <= 100 for m in measured)
    rows = (runs / "deps" / "search" / "front.csv").read_text().splitlines()
    assert len(rows) == len(members) + 1 and (runs / "deps" / "search" / "front.png").stat().st_size > 1000
    answers = {}
    for b in (b1, b2):
        found = json.loads(next((runs / "deps" / "search").glob(f"macs-{b / 1e6:.2f}M.json")).read_text())
        assert all(c["macs"] <= b for c in found["candidates"])
        assert found["best"] == max(found["candidates"], key=lambda c: (c["selection_acc"], -c["macs"]))["arch"]
        answers[b] = found["best"]
        assert found["best"] in out
    # a memory budget is read off the same front: no new search
    stamp = (runs / "deps" / "search" / "front.json").stat().st_mtime_ns
    memory_budget = sorted(m["costs"]["memory"] for m in members)[len(members) // 2]
    assert main(["search", str(runs / "deps"), "--front", "--memory", str(memory_budget), "--quiet"]) == 0
    assert (runs / "deps" / "search" / "front.json").stat().st_mtime_ns == stamp
    capsys.readouterr()
    # the front keeps the settings it was searched with; a request that asks for other values searches again
    bn = min(RANKING_BN_IMAGES, run.cfg.data.bn_images)
    assert front.search == {"samples": 12, "selection_images": 100, "ranking_bn_images": bn,
                            "measure": 4, "population": 100, "generations": 40, "seed": 0}
    asked = FrontArgs(samples=12, selection_images=100, measure=4)
    assert why_search_again(front, run, ["macs"], asked, asked=["samples", "selection_images", "measure"]) is None
    assert why_search_again(front, run, ["macs"], FrontArgs(), asked=[]) is None  # not asked: the front's
    assert why_search_again(front, run, ["macs"], FrontArgs(seed=1), asked=["seed"]) == \
        "it was searched with seed=0; asked: seed=1"
    assert why_search_again(front, run, ["macs"], FrontArgs(selection_images=0), asked=["selection_images"]) == \
        "it was searched with selection_images=100; asked: selection_images=None"
    assert why_search_again(front, run, ["macs", "params"], FrontArgs()) == \
        "it minimizes macs, memory; asked: macs, params"
    assert why_search_again(front, run, ["memory", "macs"], FrontArgs(), exact_costs=True) == \
        "it minimizes macs, memory; asked: memory, macs"
    assert why_search_again(front, run, ["macs"], FrontArgs(memory_dtype="int8"), asked=["memory_dtype"]) is None
    assert why_search_again(front, run, ["macs", "memory"], FrontArgs(memory_dtype="int8"),
                            asked=["memory_dtype"]) == "its memory cost counts float32; asked: int8"
    data = front.to_json()
    del data["search"]  # a front.json written before the settings were kept
    old = FrontResult.from_json(data)
    assert old.search == {} and old.members == front.members
    assert why_search_again(old, run, ["macs"], FrontArgs(seed=0), asked=["seed"]).startswith(
        "it does not record its seed")
    with pytest.raises(ValueError, match="has no latency cost .* rebuild it with --front --costs macs,memory,latency"):
        read_budgets(run, front, parse_budgets(latency_ms="3"))
    with pytest.raises(ValueError, match="no subnet of the front fits"):
        read_budgets(run, front, parse_budgets(macs="1k"))
    with pytest.raises(ValueError, match="lists of 2, 3 values do not pair up"):
        parse_budgets(macs="5M,6M", memory="1k,2k,3k")
    # export a family: one subnet per budget, each with MACs, params and peak memory in its sidecar
    assert main(["export", str(runs / "deps"), "--from-front", str(runs / "deps" / "search" / "front.json"),
                 "--budgets", f"{b1},{b2}", "--out", str(tmp_path / "family"), "--quiet"]) == 0
    for b in (b1, b2):
        sidecars = list((tmp_path / "family" / f"macs-{b / 1e6:.2f}M").glob("*.json"))
        assert len(sidecars) == 1
        meta = read_sidecar(sidecars[0])
        arch = space.parse(meta["arch"])
        assert str(arch) == answers[b] and meta["macs"] <= b
        assert meta["peak_memory"]["bytes"] == peak_memory(space, arch) and meta["peak_memory"]["batch"] == 1
        load_subnet(sidecars[0])  # verifies MACs, params and peak memory against the arch
        meta["peak_memory"]["bytes"] += 1
        sidecars[0].write_text(json.dumps(meta))
        with pytest.raises(ValueError, match="field 'peak_memory' is"):
            load_subnet(sidecars[0], verify=True)
    # asked for its own values, the front answers; asked for another value, it is searched again, saying why
    capsys.readouterr()
    assert main(["search", str(runs / "deps"), "--front", "--memory", str(memory_budget), "--samples", "12",
                 "--selection-images", "100", "--measure", "4", "--quiet"]) == 0
    assert (runs / "deps" / "search" / "front.json").stat().st_mtime_ns == stamp
    assert main(["search", str(runs / "deps"), "--front", "--memory", str(memory_budget), "--samples", "12",
                 "--selection-images", "100", "--measure", "2"]) == 0
    said = capsys.readouterr()
    assert "searching the front again: " in said.err + said.out
    assert "(it was searched with measure=4; asked: measure=2)" in said.err + said.out
    rebuilt = load_front(runs / "deps" / "search" / "front.json")
    assert rebuilt.search["measure"] == 2 and sum(m["measured_acc"] is not None for m in rebuilt.members) == 2


def test_export_cli_round_trip(runs, tmp_path, capsys):
    import torch

    from onceforall.core.evaluation import accuracy
    from onceforall.specialize.export import load_subnet, read_sidecar

    assert main(["export", str(runs / "deps"), "--arch", "max", "--out", str(tmp_path), "--onnx"]) == 0
    capsys.readouterr()
    run = load_run(runs / "deps")
    full = run.space.max()
    side = read_sidecar(tmp_path / f"{full}.json")
    assert side["macs"] == run.space.macs(full) and side["source"]["step"] == run.step
    assert side["latency"]["backend"] == "torch" and side["latency"]["ms"] > 0
    # the sidecar states the BN-recalibrated accuracy, which the supernet's running statistics would not give
    stale = accuracy(run.net.extract(full), run.data.test, torch.device("cpu"))
    assert side["accuracy"]["top1"] == pytest.approx(Evaluator(run).accuracy([full], "test")[0])
    assert side["accuracy"]["top1"] != pytest.approx(stale, abs=1.0)
    sub = load_subnet(tmp_path / f"{full}.safetensors")
    # the exported module is the BN-recalibrated subnet whose accuracy the sidecar states
    assert accuracy(sub, run.data.test, torch.device("cpu")) == pytest.approx(side["accuracy"]["top1"], abs=1e-3)
    assert (tmp_path / f"{full}.onnx").exists()
    # the sidecar's recipe turns raw 28 x 28 test images into exactly what evaluation fed the network
    from onceforall.data import load_dataset
    from onceforall.specialize.export import load_preprocess

    recipe = side["preprocessing"]
    assert recipe["steps"] == [{"op": "resize", "size": 16, "antialias": True}] and recipe["color"] == "L"
    assert recipe["normalization"] == side["normalization"]
    from onceforall.core.seeds import derive_seed
    from onceforall.data import bn_subset
    from onceforall.run.setup import DATA_SEED

    # 28 px: the files' own images; the run reports on a fixed subset of them (data.test_subset)
    raw = bn_subset(load_dataset("fashion-mnist", None, "test", 28), run.cfg.data.test_subset,
                    seed=derive_seed(DATA_SEED, "test_subset"))
    prep = load_preprocess(tmp_path / f"{full}.json")
    x = torch.stack([prep(raw.images[i, 0].numpy()) for i in range(len(raw))])
    with torch.no_grad():
        pred = torch.cat([sub(x[i: i + 1000]).argmax(1) for i in range(0, len(x), 1000)])
    acc = 100 * (pred == raw.labels).double().mean().item()
    assert acc == pytest.approx(side["accuracy"]["top1"], abs=0.02)
    assert main(["export", str(runs / "deps"), "--arch", "r16_k9e3", "--out", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert "arch 'r16_k9e3'" in err and err.count("\n") == 1
    assert main(["export", str(runs / "deps")]) == 2
    assert "give --arch" in capsys.readouterr().err


def test_latency_table_cli(runs, tmp_path, capsys):
    out = tmp_path / "lat.json"
    assert main(["latency-table", "--run", str(runs / "deps"), "--out", str(out), "--check", "2", "--quiet"]) == 0
    text = capsys.readouterr().out
    assert "mean abs error" in text and out.exists()
    assert main(["latency-table", "--space", "mbv3-cifar", "--backend", "tpu", "--out", str(out)]) == 2
    assert "tpu" in capsys.readouterr().err


def test_analyze_gradients(runs, tmp_path, capsys):
    assert main(["analyze-gradients", str(runs / "deps"), "--checkpoint", "epoch-001", "--batches", "2",
                 "--steps", "4", "--out", str(tmp_path / "g")]) == 0
    assert "mean cos(G_noShrink, G_Shrink(ε))" in capsys.readouterr().out
    layers = list(csv.DictReader((tmp_path / "g" / "layers.csv").open()))
    assert len(layers) > 20
    for r in layers:  # ε = 1e-3: the ε-shrinking gradient is the full model's, up to 0.1 % of the subnets'
        assert float(r["cos_shrink_eps"]) > 0.99
        assert float(r["norm_shrink_eps"]) == pytest.approx(float(r["norm_no_shrink"]), rel=0.02)
    assert sum(float(r["cos_shrink"]) for r in layers) < sum(float(r["cos_shrink_eps"]) for r in layers)
    steps = list(csv.DictReader((tmp_path / "g" / "steps.csv").open()))
    eps_rows = [r for r in steps if r["variant"] == "eps_shrinking"]
    no_eps = [r for r in steps if r["variant"] == "no_eps"]
    assert len(eps_rows) == len(no_eps) == 4
    assert all(float(r["eps"]) == 1.0 for r in no_eps)
    assert [float(r["eps"]) for r in eps_rows] == sorted(float(r["eps"]) for r in eps_rows)
    assert (tmp_path / "g" / "layers.png").exists() and (tmp_path / "g" / "steps.png").exists()
    assert main(["analyze-gradients", str(runs / "deps")]) == 2  # last.pt: nothing left to trace
    assert "is at the end of the run; pass --checkpoint epoch-NNN" in capsys.readouterr().err


def test_replayed_steps_equal_the_training_steps(runs):
    """analyze-gradients takes its steps through the training step itself: replaying epoch 2 of the DεpS run from
    its epoch-001 checkpoint (the shrink start) ends bit for bit at the run's final weights, so plan actions,
    learning rate and dropout seeds are the same in both."""
    run = load_run(runs / "deps")
    start, end = load_checkpoint(run.dir.checkpoint("epoch-001")), load_checkpoint(run.checkpoint)
    strategy = build_strategy(run.cfg, run.space, build_schedule(run.cfg, run.data.train.steps_per_epoch))
    first, stop = start["state"]["step"], end["state"]["step"]
    assert strategy.plan(first).phase == "shrinking" and stop > first
    with torch_threads(run.cfg.train.threads):  # the run trained with train.threads
        model = replay_steps(run, start, strategy, first, stop)
    state = model.state_dict()
    assert state.keys() == end["model"].keys()
    for key, value in end["model"].items():
        assert torch.equal(state[key], value), key


def test_report_says_when_selection_and_report_share_images(tmp_path):
    """Without a held-out split the winners are chosen on the images they are reported on: the report says so."""
    from types import SimpleNamespace

    from onceforall.measure.results import EvalResult
    from onceforall.run.rundir import RunDir
    from onceforall.workflows.report import write_run_report

    pts = [Point("a", 10, 70.0), Point("b", 20, 75.0), Point("c", 30, 80.0)]
    summary = evaluate_mod.pareto_summary(pts[1:2], pts[0], pts[2])
    result = EvalResult.from_json({
              "run": "r", "step": 5, "strategy": "deps", "space": {"name": "mbv3-cifar", "width_mult": 0.25},
              "eval_set": {"split": "test", "selection_split": "test", "held_out": False, "images": 100,
                           "selection_images": 100, "bn_images": 10},
              **summary, "mean_pareto_ci": [74.0, 76.0], "bucket_candidates": [1, 0, 0, 1, 0, 1],
              "evaluated": [{"arch": p.arch, "macs": p.macs, "params": 1, "acc_selection": p.acc, "acc": p.acc,
                             "bucket": 0, "source": "sampled"} for p in pts]})
    run = SimpleNamespace(dir=RunDir(tmp_path / "r"), name="r", cost=None)
    write_run_report(run, result)
    text = (tmp_path / "r" / "eval" / "report.md").read_text()
    assert "**No held-out split**" in text and "optimistically biased" in text
    result.eval_set.update(held_out=True, selection_split="validation (300 held-out training images)")
    write_run_report(run, result)
    text = (tmp_path / "r" / "eval" / "report.md").read_text()
    assert "No held-out split" not in text and "played no part in choosing them" in text


def test_training_macs_are_shown_with_an_si_prefix():
    from onceforall.workflows.report import big_number

    assert [big_number(x) for x in (2.5e17, 1.234e12, 9.99e9, 5e6, 12)] == ["250P", "1.234T", "9.99G", "5M", "12"]
