"""Evaluating a run across its MACs range (``onceforall eval RUN``): cached accuracies of its subnets,
candidates in every MACs bucket, the Pareto summary with its uncertainty, and the report.

The protocol (DESIGN.md "Evaluation"):

1. **Candidates in every bucket.** The smallest subnet, the full model, the uniform archs, and random archs
   drawn with skewed samplers (:meth:`Space.sample` with ``skew`` from -1 to 1) until each of the 6 MACs
   buckets holds ``per_bucket`` candidates: OFA's uniform sampler alone almost never reaches the top buckets.
   Then the accuracy predictor and NSGA-II of ``onceforall search --front`` look for better archs along the
   whole range, and per bucket the ``search_per_bucket`` best predicted members of that front inside the
   bucket are measured (an evolution inside the bucket tops up a bucket the front barely touches). That is done
   ``search_rounds`` times, each round's predictor learning from every subnet measured before it, so that a
   bucket winner is as good as what a search under the same budget finds (``benchmarks/search_vs_random.py``
   checks).
2. **Select on one split, report on another.** Ranking measurements (cheap: ``ranking_bn_images`` BN images)
   rank every candidate on a fixed subset of ``selection_images`` images of the validation split (held-out
   training images, ``data.val_split``); the ``finalists`` best of each bucket and the two ends are measured
   again on ``finalist_images`` images of it (the subsets are nested, so only the images beyond the ranking
   subset are forwarded) and each bucket's winner is chosen on that: among nearly equal candidates the best of a
   small subset is often not the best of a larger one. The smallest subnet, the bucket winners and the full model
   are then measured on the whole test split with BN recalibrated on ``data.bn_images`` images, and those numbers
   are reported. A run without a held-out split ranks on the test images it reports (optimistic winners); the
   report says so. ``benchmarks/eval_speed.py`` says where an evaluation's time goes and how it compares with
   the training's.
3. **Uncertainty.** Mean Pareto accuracy is a weighted sum of the curve's accuracies, so it is the mean over
   test images of a per-image score; a percentile bootstrap over test images gives its 95 % interval, and
   ``compare`` a paired interval of the difference between two runs evaluated on the same images.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from ..core.arch import Arch
from ..core.pareto import Point, bootstrap_ci, bucket_index, pareto_summary
from ..core.space import Space
from ..measure.candidates import candidate_archs, new_in_bucket
from ..measure.evaluator import RANKING_BN_IMAGES, RANKING_IMAGES, Evaluator, eval_set, ranking_evaluator
from ..measure.results import EvalResult
from ..measure.scores import curve_scores, fingerprint, write_curve_correct
from ..run.rundir import LoadedRun
from ..specialize.evolution import evolutionary_search, nsga2_search
from ..specialize.predictor import AccuracyPredictor

__all__ = ["EvalArgs", "EvalResult", "evaluate_run"]


def _search_buckets(space: Space, measured: list[tuple[Arch, float]], *, per_bucket: int, buckets: int, seed: int,
                    say: Callable[[str], None]) -> list[Arch]:
    """Per bucket, the best archs that the accuracy predictor finds inside it, other than those ``measured``: the
    members of the predicted accuracy/MACs front (NSGA-II over the whole range, started from the measured archs,
    as ``search --front``) that fall in the bucket, best predicted first, topped up by an evolution inside the
    bucket where the front has fewer. The predictor learns from this evaluation's own measurements only, so the
    result is a function of the weights and the seed, whatever the cache holds."""
    pairs = dict(measured)
    archs = list(pairs)
    if len(pairs) < 8:
        return []
    predictor = AccuracyPredictor(space, seed=seed)
    fit = predictor.fit(list(pairs), list(pairs.values()), seed=seed)
    tau = fit.get("heldout_kendall_tau")
    say(f"predictor on {fit['pairs']} measured subnets (held-out Kendall tau "
        f"{'n/a' if tau is None else f'{tau:.2f}'}); searching the front and each bucket")
    lo, hi = space.macs_range()
    edges = [lo + (hi - lo) * i / buckets for i in range(buckets + 1)]
    # one front for the whole range: a good structure found at one cost carries over to the others
    front = nsga2_search(space, predictor.predict, [space.macs], seed=seed, initial=list(pairs))
    found: list[Arch] = []
    for b in range(buckets):
        top = edges[b + 1] if b == buckets - 1 else edges[b + 1] - 1e-6  # MACs are integers; edges belong above
        inside = [a for a in archs if bucket_index(space.macs(a), lo, hi, buckets) == b]
        if not inside or top < lo:
            continue
        picked = new_in_bucket(space, sorted(front, key=lambda r: -r[1]), b, buckets, {*pairs, *found}, per_bucket)
        found += picked
        if len(picked) < per_bucket:
            results = evolutionary_search(space, predictor.predict, space.macs, top, seed=seed + b, population=50,
                                          generations=15, min_cost=edges[b], initial=inside)
            found += new_in_bucket(space, results, b, buckets, {*pairs, *found}, per_bucket - len(picked))
    return found


def _finalists(points: list[Point], k: int, lo: int, hi: int, buckets: int, ends: set[Arch]) -> list[Arch]:
    """The ``k`` best points of each MACs bucket (by their accuracy on the selection subset) and the ``ends``."""
    per: dict[int, list[Point]] = {}
    for p in points:
        per.setdefault(bucket_index(p.macs, lo, hi, buckets), []).append(p)
    best = [p.arch for ps in per.values() for p in sorted(ps, key=lambda p: (-p.acc, p.macs))[:k]]
    return list(dict.fromkeys([*best, *(p.arch for p in points if p.arch in ends)]))


def _top(sel: dict[Arch, float], k: int, space: Space, buckets: int) -> list[Arch]:
    """The ``k`` best archs of each MACs bucket by their ranking accuracy (what the finalists would be)."""
    pts = [Point(a, space.macs(a), acc) for a, acc in sel.items()]
    return _finalists(pts, k, *space.macs_range(), buckets, set())


@dataclass(frozen=True)
class EvalArgs:
    """The arguments of an evaluation; ``onceforall eval``'s options are made from these fields (one default and
    one help text each)."""

    per_bucket: int = 10
    """Measured candidates per MACs bucket, drawn with skewed samplers so that every bucket is reached (4 cost the
    full-only run 2.3 points of mean Pareto accuracy: its small subnets need many draws to find a good one)."""
    uniform: bool = True
    """Also measure the uniform archs (every kernel x expand x depth at the largest resolution)."""
    selection_images: int | None = RANKING_IMAGES
    """Validation-split images every candidate is ranked on (0 or None: all)."""
    ranking_bn_images: int | None = RANKING_BN_IMAGES
    """BN-recalibration images of the ranking measurements (candidates, searched subnets, finalists), at most
    data.bn_images; 0 or None: data.bn_images. The reported test measurement always uses data.bn_images. (250
    since protocol e3, with finalist_images 2500: 1.7x less time, mean Pareto accuracy a tie on the quick
    benchmark's DεpS and full-only runs, benchmarks/RESULTS.md section 2.2.)"""
    search_per_bucket: int = 3
    """Subnets per bucket found by the accuracy predictor and NSGA-II (and an evolution in the bucket); 0: off."""
    search_rounds: int = 2
    """Rounds of that search, each predictor fitted on everything measured before; a round that moves no bucket's
    finalists ends the search."""
    finalists: int = 3
    """The best N of each bucket (and the two ends) are measured again on finalist_images images and the winner is
    chosen on that; 0: choose on the ranking subset."""
    finalist_images: int | None = 2500
    """Validation-split images the finalists are measured on (the ranking subset completed); 0 or None: all."""
    seed: int = 0
    """Seed of the candidate draws and the search."""
    buckets: int = 6
    """MACs buckets over the space's range."""


def evaluate_run(run: LoadedRun, args: EvalArgs | None = None, *, progress: Callable[[str], None] | None = None,
                 evaluator: Evaluator | None = None, **overrides: Any) -> EvalResult:
    """Evaluate a run's supernet across the MACs range of the space it trained (see the module docstring) with
    ``args`` (default :class:`EvalArgs`; ``overrides`` replace single fields); write eval/curve_correct.json and
    return the result (:class:`EvalResult`; the caller writes eval/pareto.{json,csv}, report.md and pareto.png:
    ``report.write_run_report``). The result depends on the weights, the config and the arguments alone (not on
    what the cache held before); ``evaluator`` (default: a new one) lets a caller read where the time went."""
    a = dataclasses.replace(args or EvalArgs(), **overrides)
    say = progress or (lambda s: None)
    space = run.space
    ev = evaluator or Evaluator(run)
    ranker = ranking_evaluator(ev, a.ranking_bn_images)
    selection_images, finalist_images = a.selection_images or None, a.finalist_images or None
    n_sel, n_whole = (len(ev.batches("selection", n)[0].ds) for n in (selection_images, finalist_images))
    sel, sources, rounds, rounds_run = _rank_candidates(run, a, ranker, n_sel, say)
    pts = [Point(arch, space.macs(arch), sel[arch]) for arch in sources]
    smallest, largest = space.min(), space.max()
    whole: dict[Arch, float] = {}
    if a.finalists and n_sel < n_whole:
        picked = _finalists(pts, a.finalists, *space.macs_range(), a.buckets, {smallest, largest})
        say(f"measuring {len(picked)} finalists (the best {a.finalists} of each bucket and the ends) on {n_whole} "
            f"images of the {run.selection_split} split")
        whole = dict(zip(picked, ranker.accuracy(picked, "selection",
                                                 None if n_whole >= len(ev.batches("selection")[0].ds)
                                                 else n_whole, complete=selection_images)))
    ranked = [Point(p.arch, p.macs, whole[p.arch]) for p in pts if p.arch in whole] if whole else pts
    summary, test, correct = _test_winners(run, ev, ranked, a, say)
    lo, hi = summary["macs_range"]
    ci = bootstrap_ci(curve_scores(summary["curve"], correct, lo, hi), seed=a.seed)
    lo_b, hi_b = space.macs_range()
    counts = [0] * a.buckets
    for p in pts:
        counts[bucket_index(p.macs, lo_b, hi_b, a.buckets)] += 1
    result = EvalResult(
        run=str(run.run_dir),
        step=run.step,
        strategy=run.cfg.strategy.name,
        space=space.identity(),
        eval_set=eval_set(run, selection_images=n_sel, search_per_bucket=a.search_per_bucket,
                             search_rounds=rounds, search_rounds_run=rounds_run, ranking_bn_images=ranker.bn_images,
                             finalists_per_bucket=a.finalists if whole else 0,
                             finalist_images=n_whole if whole else n_sel, bn_images=ev.bn_images,
                             bn_batch_size=run.cfg.data.bn_batch_size,
                             bn_augment=run.cfg.data.bn_augment, per_resolution=run.data.test.per_resolution,
                             fingerprint=fingerprint(run.data.test)),
        **summary,
        mean_pareto_ci=[round(ci[0], 4), round(ci[1], 4)],
        bucket_candidates=counts,
        evaluated=[
            {"arch": str(p.arch), "macs": p.macs, "params": space.params(p.arch), "acc_selection": p.acc,
             "acc_selection_whole": whole.get(p.arch), "acc": test.get(p.arch),
             "bucket": bucket_index(p.macs, lo_b, hi_b, a.buckets),
             "source": sources[p.arch]}
            for p in pts
        ],
    )
    run.dir.eval_dir.mkdir(parents=True, exist_ok=True)
    write_curve_correct(run.dir.curve_correct, correct, result.eval_set["fingerprint"])
    return result


def _rank_candidates(run: LoadedRun, a: EvalArgs, ranker: Evaluator, n_sel: int, say: Callable[[str], None]
                     ) -> tuple[dict[Arch, float], dict[Arch, str], int, int]:
    """Ranking accuracies of the candidates and of the subnets the search rounds add: (accuracy per arch, where
    each came from, rounds asked, rounds run)."""
    space, buckets, k = run.space, a.buckets, a.finalists or 1
    archs = candidate_archs(space, per_bucket=a.per_bucket, uniform=a.uniform, buckets=buckets, seed=a.seed)
    selection_images = a.selection_images or None
    say(f"evaluating {len(archs)} subnets on {n_sel} images of the {run.selection_split} split")
    tick = lambda i, n: say(f"  {i}/{n}") if i % 10 == 0 else None  # noqa: E731
    sel = dict(zip(archs, ranker.accuracy(archs, "selection", selection_images, progress=tick)))
    sources = dict.fromkeys(archs, "sampled")
    rounds = a.search_rounds if a.search_per_bucket else 0
    rounds_run = 0
    for round_ in range(rounds):  # each round's predictor learns from the subnets the rounds before it measured
        searched = _search_buckets(space, list(sel.items()), per_bucket=a.search_per_bucket, buckets=buckets,
                                   seed=a.seed + round_, say=say)
        say(f"measuring {len(searched)} searched subnets (round {round_ + 1} of {rounds})")
        before = set(_top(sel, k, space, buckets))
        sel.update(zip(searched, ranker.accuracy(searched, "selection", selection_images)))
        sources.update(dict.fromkeys(searched, "search"))
        rounds_run += 1
        if round_ < rounds - 1 and set(_top(sel, k, space, buckets)) == before:
            say("no searched subnet reached a bucket's finalists: the front stopped moving, no further round")
            break
    return sel, sources, rounds, rounds_run


def _test_winners(run: LoadedRun, ev: Evaluator, ranked: list[Point], a: EvalArgs, say: Callable[[str], None]
                  ) -> tuple[dict, dict[Arch, float], dict]:
    """The Pareto summary of the bucket winners chosen on ``ranked`` and the two ends, measured on the whole test
    split: (summary, test accuracy per arch, which test images each got right)."""
    space, buckets = run.space, a.buckets
    smallest, largest = space.min(), space.max()
    chosen = pareto_summary(ranked, next(p for p in ranked if p.arch == smallest),
                            next(p for p in ranked if p.arch == largest), buckets)
    final_archs = [space.parse(p["arch"]) for p in chosen["curve"]]
    say(f"measuring {len(final_archs)} bucket winners and ends on the whole test split")
    test = dict(zip(final_archs, ev.accuracy(final_archs, "test")))
    fpts = [Point(arch, space.macs(arch), acc) for arch, acc in test.items()]
    summary = pareto_summary(fpts, next(p for p in fpts if p.arch == smallest),  # winners: chosen on selection
                             next(p for p in fpts if p.arch == largest), buckets,
                             select={p.arch: p.acc for p in ranked})
    correct = {str(arch): ev.correct(arch, "test") for arch in final_archs}
    return summary, test, correct
