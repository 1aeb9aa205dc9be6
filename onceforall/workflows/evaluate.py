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
2. **Select on one split, report on another.** Candidates are ranked on a fixed subset of the validation split
   (held-out training images, ``data.val_split``; ``selection_images``, cheap); the ``finalists`` best of each
   bucket and the two ends are measured again on the whole validation split and each bucket's winner is chosen
   on that (with ~16 nearly equal candidates per bucket, the best of 2,000 images is often not the best of
   5,000: an accuracy of 80 % on 2,000 images has a standard error of 0.9 points). The smallest subnet, the
   bucket winners and the full model are then measured on the whole test split, and those numbers are
   reported. A run without a held-out split ranks on the test images it reports (optimistic winners); the
   report says so.
3. **Uncertainty.** Mean Pareto accuracy is a weighted sum of the curve's accuracies, so it is the mean over
   test images of a per-image score; a percentile bootstrap over test images gives its 95 % interval, and
   ``compare`` a paired interval of the difference between two runs evaluated on the same images.
"""

from __future__ import annotations

import dataclasses
import json
import random
from collections.abc import Callable

import numpy as np

from ..core.arch import Arch
from ..core.evaluation import evaluate_arch, mask_accuracy
from ..core.pareto import Point, bootstrap_ci, bucket_index, pareto_summary
from ..core.seeds import derive_seed
from ..core.space import Space
from ..core.util import atomic_write
from ..data import EvalBatches, bn_subset
from ..run.rundir import LoadedRun, read_eval_cache
from ..specialize.search import AccuracyPredictor, evolutionary_search, nsga2_search
from .report import write_run_report
from .scores import curve_scores, fingerprint, pack_mask, unpack_mask, write_curve_correct

__all__ = ["SPLITS", "Evaluator", "candidate_archs", "evaluate_run"]

SPLITS = ("selection", "test")
SKEWS = tuple(round(-1.0 + 0.1 * i, 1) for i in range(21))


class Evaluator:
    """Accuracies of archs of a run, measured once and cached in ``<run>/eval/cache.json`` (and, for whole
    test-split measurements, which images each arch got right, in ``eval/correct.json``).

    ``split`` is ``"selection"`` (the validation split: held-out training images, or the test split when the
    run has none) or ``"test"``; ``images=None`` measures the whole split, an integer a fixed random subset of
    that many images (cheap ranking). Cache keys hold the checkpoint step, the set and the number of BN images,
    so a resumed run or another set is measured again.
    """

    def __init__(self, run: LoadedRun, *, bn_images: int | None = None):
        self.run = run
        self.bn_images = bn_images or run.cfg.data.bn_images
        self.path = run.dir.eval_dir / "cache.json"
        self.correct_path = run.dir.eval_dir / "correct.json"
        self.cache: dict[str, float] = read_eval_cache(self.path, "numbers")  # a damaged one: set aside, warned
        self.hits: dict[str, str] = read_eval_cache(self.correct_path, "strings")
        self._subsets: dict[tuple[str, int], EvalBatches] = {}

    def _set(self, split: str) -> tuple[EvalBatches, str]:
        if split not in SPLITS:
            raise ValueError(f"split: '{split}' is not valid; valid: {', '.join(SPLITS)}")
        if split == "selection" and self.run.held_out:
            batches, name = self.run.data.val_full, f"val{self.run.cfg.data.val_split}"
        else:
            batches, name = self.run.data.test, "test"
        return batches, name + ("@r" if batches.per_resolution else "")  # decoded per resolution: other numbers

    def batches(self, split: str, images: int | None = None) -> tuple[EvalBatches, str]:
        """The batches of ``split`` (a fixed subset of ``images`` of them) and their cache name."""
        full, name = self._set(split)
        if images is None or images >= len(full.ds):
            return full, f"{name}|{len(full.ds)}"
        if (name, images) not in self._subsets:
            ds = bn_subset(full.ds, images, seed=derive_seed(0, "selection", images))
            self._subsets[name, images] = EvalBatches(ds, full.batch_size, full.image_size, full.workers,
                                                      full.per_resolution)
        return self._subsets[name, images], f"{name}|{images}"

    def key(self, arch: Arch, split: str, images: int | None = None) -> str:
        bn = f"bn{self.bn_images}" + ("aug" if self.run.cfg.data.bn_augment else "")
        return f"step{self.run.step}|{self.batches(split, images)[1]}|{bn}|{arch}"

    def accuracy(self, archs: list[Arch], split: str = "test", images: int | None = None,
                 progress: Callable[[int, int], None] | None = None) -> list[float]:
        """Top-1 (%) of each arch on ``split`` (measured once, then cached)."""
        batches, _ = self.batches(split, images)
        out = []
        for i, arch in enumerate(archs):
            k = self.key(arch, split, images)
            if k not in self.cache:
                hits = evaluate_arch(self.run.net, arch, self.run.data.bn, batches, bn_images=self.bn_images,
                                     device=self.run.device, memory_format=self.run.memory_format)
                self.cache[k] = round(mask_accuracy(hits), 4)
                if images is None:
                    self.hits[k] = pack_mask(hits.numpy())
                self.save()
            out.append(self.cache[k])
            if progress is not None:
                progress(i + 1, len(archs))
        return out

    def correct(self, arch: Arch, split: str = "test") -> np.ndarray:
        """Which images of the whole ``split`` the subnet of ``arch`` classifies correctly (bool per image)."""
        k = self.key(arch, split)
        if k not in self.hits:
            self.cache.pop(k, None)  # measured before per-image results were kept: measure again
            self.accuracy([arch], split)
        return unpack_mask(self.hits[k], len(self.batches(split)[0].ds))

    def measured(self, split: str = "selection", images: int | None = None) -> dict[Arch, float]:
        """Every cached (arch, accuracy) pair of this checkpoint and set (the predictor's training data)."""
        prefix = self.key(self.run.space.max(), split, images).rsplit("|", 1)[0] + "|"
        out = {}
        for k, v in self.cache.items():
            if k.startswith(prefix):
                try:
                    out[self.run.space.parse(k[len(prefix):])] = v
                except ValueError:  # measured when the run was read with another space: not ours to use
                    continue
        return out

    def save(self) -> None:
        """Write the cache, keeping what another Evaluator of the run wrote meanwhile (``search --front`` and
        a benchmark may hold two; the last writer used to drop the other's measurements)."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        for path, data in ((self.path, self.cache), (self.correct_path, self.hits)):
            if path.exists():
                for k, v in json.loads(path.read_text()).items():
                    data.setdefault(k, v)
            text = json.dumps(data, indent=0, sort_keys=True)
            atomic_write(path, lambda p, text=text: p.write_text(text))


def candidate_archs(space: Space, *, per_bucket: int = 10, uniform: bool = True, buckets: int = 6, seed: int = 0,
                    max_draws: int = 50000) -> list[Arch]:
    """Archs to evaluate: min, max (at every resolution), the uniform archs (every kernel x expand x depth at
    the largest resolution), then random archs until each of the ``buckets`` MACs buckets holds ``per_bucket``
    candidates (the fixed ones count), drawn with skews from -1 to 1 in turn so that every part of the range
    is reached (uniform draws alone rarely reach the top buckets). A bucket that ``max_draws`` draws cannot
    fill (a small restricted space) keeps what they found."""
    rng = random.Random(f"candidates:{seed}")
    archs = [space.min(), space.max()]
    for r in space.resolutions:
        archs += [dataclasses.replace(space.min(), resolution=r), dataclasses.replace(space.max(), resolution=r)]
    if uniform:
        st = next((s for s in space.stages if len(s.depths) > 1), space.stages[0])
        for k in st.kernels:
            for e in st.expands:
                for d in st.depths:
                    archs.append(space.uniform(k, e, d))
    archs = [a for a in dict.fromkeys(archs) if space.contains(a)]
    lo, hi = space.macs_range()
    counts = [0] * buckets
    for a in archs:
        counts[bucket_index(space.macs(a), lo, hi, buckets)] += 1
    seen = set(archs)
    for i in range(max_draws):
        if min(counts) >= per_bucket:
            break
        a = space.sample(rng, SKEWS[i % len(SKEWS)])
        b = bucket_index(space.macs(a), lo, hi, buckets)
        if a not in seen and counts[b] < per_bucket:
            archs.append(a)
            seen.add(a)
            counts[b] += 1
    return archs


def _new_in_bucket(space: Space, results: list, b: int, buckets: int, known: set[Arch], n: int) -> list[Arch]:
    """The first ``n`` archs of ``results`` ((arch, score, cost) rows) in MACs bucket ``b`` that are not ``known``."""
    lo, hi = space.macs_range()
    return [a for a, *_ in results if a not in known and bucket_index(space.macs(a), lo, hi, buckets) == b][:n]


def _search_buckets(space: Space, ev: Evaluator, archs: list[Arch], *, per_bucket: int, selection_images: int | None,
                    buckets: int, seed: int, say: Callable[[str], None]) -> list[Arch]:
    """Per bucket, the best archs that the accuracy predictor finds inside it, other than the sampled
    candidates: the members of the predicted accuracy/MACs front (NSGA-II over the whole range, started from
    the candidates, as ``search --front``) that fall in the bucket, best predicted first, topped up by an
    evolution inside the bucket where the front has fewer. The predictor learns from the sampled candidates
    only, so the result is a function of the run and the seed (a second eval finds the same archs, already
    measured)."""
    pairs = dict(zip(archs, ev.accuracy(archs, "selection", selection_images)))
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
        picked = _new_in_bucket(space, sorted(front, key=lambda r: -r[1]), b, buckets, {*pairs, *found}, per_bucket)
        found += picked
        if len(picked) < per_bucket:
            results = evolutionary_search(space, predictor.predict, space.macs, top, seed=seed + b, population=50,
                                          generations=15, min_cost=edges[b], initial=inside)
            found += _new_in_bucket(space, results, b, buckets, {*pairs, *found}, per_bucket - len(picked))
    return found


def _finalists(points: list[Point], k: int, lo: int, hi: int, buckets: int, ends: set[str]) -> list[str]:
    """The ``k`` best points of each MACs bucket (by their accuracy on the selection subset) and the ``ends``."""
    per: dict[int, list[Point]] = {}
    for p in points:
        per.setdefault(bucket_index(p.macs, lo, hi, buckets), []).append(p)
    best = [p.arch for ps in per.values() for p in sorted(ps, key=lambda p: (-p.acc, p.macs))[:k]]
    return list(dict.fromkeys([*best, *(p.arch for p in points if p.arch in ends)]))


def evaluate_run(run: LoadedRun, *, per_bucket: int = 10, uniform: bool = True, selection_images: int | None = 2000,
                 search_per_bucket: int = 3, search_rounds: int = 2, finalists: int = 3, seed: int = 0,
                 buckets: int = 6,
                 progress: Callable[[str], None] | None = None) -> dict:
    """Evaluate a run's supernet across the MACs range of the space it trained (see the module docstring);
    write eval/pareto.{json,csv}, curve_correct.json, report.md, pareto.png."""
    space = run.space
    ev = Evaluator(run)
    say = progress or (lambda s: None)
    archs = candidate_archs(space, per_bucket=per_bucket, uniform=uniform, buckets=buckets, seed=seed)
    n_sel, n_whole = (len(ev.batches("selection", n)[0].ds) for n in (selection_images, None))
    say(f"evaluating {len(archs)} subnets on {n_sel} images of the {run.selection_split} split")
    tick = lambda i, n: say(f"  {i}/{n}") if i % 10 == 0 else None  # noqa: E731
    ev.accuracy(archs, "selection", selection_images, progress=tick)
    sources = dict.fromkeys(archs, "sampled")
    for round_ in range(search_rounds if search_per_bucket else 0):  # each round's predictor learns from the last's
        searched = _search_buckets(space, ev, list(sources), per_bucket=search_per_bucket,
                                   selection_images=selection_images, buckets=buckets, seed=seed + round_, say=say)
        say(f"measuring {len(searched)} searched subnets (round {round_ + 1} of {search_rounds})")
        ev.accuracy(searched, "selection", selection_images)
        sources.update(dict.fromkeys(searched, "search"))
    cands = list(sources)
    sel = ev.accuracy(cands, "selection", selection_images)
    pts = [Point(str(a), space.macs(a), acc) for a, acc in zip(cands, sel)]
    smallest, largest = str(space.min()), str(space.max())
    whole: dict[str, float] = {}
    if finalists and n_sel < n_whole:
        picked = _finalists(pts, finalists, *space.macs_range(), buckets, {smallest, largest})
        say(f"measuring {len(picked)} finalists (the best {finalists} of each bucket and the ends) on the whole "
            f"{run.selection_split} split")
        whole = dict(zip(picked, ev.accuracy([space.parse(a) for a in picked], "selection")))
    ranked = [Point(p.arch, p.macs, whole[p.arch]) for p in pts if p.arch in whole] if whole else pts
    chosen = pareto_summary(ranked, next(p for p in ranked if p.arch == smallest),
                            next(p for p in ranked if p.arch == largest), buckets)
    final_archs = [space.parse(p["arch"]) for p in chosen["curve"]]
    say(f"measuring {len(final_archs)} bucket winners and ends on the whole test split")
    test = dict(zip(map(str, final_archs), ev.accuracy(final_archs, "test")))
    fpts = [Point(a, space.macs(space.parse(a)), acc) for a, acc in test.items()]
    summary = pareto_summary(fpts, next(p for p in fpts if p.arch == smallest),  # winners: chosen on selection
                             next(p for p in fpts if p.arch == largest), buckets,
                             select={p.arch: p.acc for p in ranked})
    correct = {str(a): ev.correct(a, "test") for a in final_archs}
    lo, hi = summary["macs_range"]
    scores = curve_scores(summary["curve"], correct, lo, hi)
    ci = bootstrap_ci(scores, seed=seed)
    lo_b, hi_b = space.macs_range()
    counts = [0] * buckets
    for p in pts:
        counts[bucket_index(p.macs, lo_b, hi_b, buckets)] += 1
    result = {
        "run": str(run.run_dir),
        "step": run.step,
        "strategy": run.cfg.strategy.name,
        "space": space.identity(),
        "eval_set": {"split": run.report_split, "selection_split": run.selection_split, "held_out": run.held_out,
                     "images": len(run.data.test.ds), "selection_images": n_sel,
                     "search_per_bucket": search_per_bucket, "search_rounds": search_rounds if search_per_bucket else 0,
                     "finalists_per_bucket": finalists if whole else 0,
                     "finalist_images": n_whole if whole else n_sel,
                     "bn_images": ev.bn_images,
                     "bn_augment": run.cfg.data.bn_augment, "per_resolution": run.data.test.per_resolution,
                     "fingerprint": fingerprint(run.data.test)},
        **summary,
        "mean_pareto_ci": [round(ci[0], 4), round(ci[1], 4)],
        "bucket_candidates": counts,
        "evaluated": [
            {"arch": p.arch, "macs": p.macs, "params": space.params(space.parse(p.arch)), "acc_selection": p.acc,
             "acc_selection_whole": whole.get(p.arch), "acc": test.get(p.arch),
             "bucket": bucket_index(p.macs, lo_b, hi_b, buckets),
             "source": sources[space.parse(p.arch)]}
            for p in pts
        ],
    }
    run.dir.eval_dir.mkdir(parents=True, exist_ok=True)
    write_curve_correct(run.dir.eval_dir, correct, result["eval_set"]["fingerprint"])
    write_run_report(run, result)
    return result
