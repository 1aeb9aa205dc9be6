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
import json
import random
import time
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from ..core.arch import Arch
from ..core.bn import recalibrate_bn
from ..core.evaluation import at_resolution, correct_mask, mask_accuracy
from ..core.pareto import Point, bootstrap_ci, bucket_index, pareto_summary
from ..core.seeds import derive_seed
from ..core.space import Space
from ..core.util import atomic_write
from ..data import EvalBatches, subset_order
from ..run.rundir import LoadedRun, read_eval_cache
from ..specialize.search import AccuracyPredictor, evolutionary_search, nsga2_search
from .report import write_run_report
from .scores import curve_scores, fingerprint, pack_mask, unpack_mask, write_curve_correct

__all__ = ["SPLITS", "EvalArgs", "Evaluator", "candidate_archs", "evaluate_run"]

SPLITS = ("selection", "test")
SKEWS = tuple(round(-1.0 + 0.1 * i, 1) for i in range(21))


# Part of every cache key: a measurement made under another definition (another protocol version, other weights,
# images or BN subset) is never reused. e2: keys name the weights (LoadedRun.weights_digest) instead of the step.
PROTOCOL = "e2"
# In-memory evaluation sets are kept as ready input tensors up to this size (bytes), instead of being resized
# and normalized again for every subnet.
KEEP_INPUTS_BYTES = 512 * 2**20
# One random order of a split's images for every subset size: a smaller subset lies inside a larger one, so a
# measurement can be completed to a larger subset or the whole split by measuring only the images it lacks.
SUBSET_SEED = derive_seed(0, "selection")


class Evaluator:
    """Accuracies of archs of a run, measured once and cached in ``<run>/eval/cache.json``, with which images each
    measurement got right in ``eval/correct.json``.

    ``split`` is ``"selection"`` (the validation split: held-out training images, or the test split when the
    run has none) or ``"test"``; ``images=None`` measures the whole split, an integer a fixed random subset of
    that many images (cheap ranking). A cache key names the protocol, the weights (a digest of the supernet's
    state), the set and the BN images, so a cached value is exactly the measurement that would be made again.

    Within one Evaluator, each arch's BN statistics are recalibrated once and kept (the finalists and the test
    measurement reuse them), and measuring the whole split after a subset of it measures only the images beyond
    the subset (``complete``). ``seconds``, ``images`` and ``macs`` (the subnets' MACs x images forwarded) say where
    the time went (``benchmarks/eval_speed.py``).
    """

    def __init__(self, run: LoadedRun, *, bn_images: int | None = None):
        self.run = run
        self.bn_images = bn_images or run.cfg.data.bn_images
        self.path = run.dir.eval_dir / "cache.json"
        self.correct_path = run.dir.eval_dir / "correct.json"
        self.cache: dict[str, float] = read_eval_cache(self.path, "numbers")  # a damaged one: set aside, warned
        self.hits: dict[str, str] = read_eval_cache(self.correct_path, "strings")
        self.seconds: dict[str, float] = defaultdict(float)
        self.images: dict[str, int] = defaultdict(int)
        self.macs: dict[str, int] = defaultdict(int)
        self._subsets: dict[tuple[str, int, int], EvalBatches] = {}
        self._bn_state: dict[Arch, dict[str, torch.Tensor]] = {}
        self._inputs: dict[int, list] = {}
        self._unsaved = 0

    def _set(self, split: str) -> tuple[EvalBatches, str]:
        if split not in SPLITS:
            raise ValueError(f"split: '{split}' is not valid; valid: {', '.join(SPLITS)}")
        if split == "selection" and self.run.held_out:
            batches, name = self.run.data.val_full, f"val{self.run.cfg.data.val_split}"
        else:
            batches, name = self.run.data.test, "test"
        return batches, name + ("@r" if batches.per_resolution else "")  # decoded per resolution: other numbers

    def _slice(self, split: str, a: int, b: int) -> EvalBatches:
        """Images ``a`` to ``b`` of the split's fixed random order as batches (images 0..k are its k-image subset)."""
        full, name = self._set(split)
        if (name, a, b) not in self._subsets:
            order = subset_order(len(full.ds), SUBSET_SEED)
            self._subsets[name, a, b] = EvalBatches(full.ds.subset(order[a:b]), full.batch_size, full.image_size,
                                                    full.workers, full.per_resolution)
        return self._subsets[name, a, b]

    def batches(self, split: str, images: int | None = None) -> tuple[EvalBatches, str]:
        """The batches of ``split`` (a fixed subset of ``images`` of them) and their cache name."""
        full, name = self._set(split)
        if images is None or images >= len(full.ds):
            return full, f"{name}|{len(full.ds)}"
        return self._slice(split, 0, images), f"{name}|{images}"

    def key(self, arch: Arch, split: str, images: int | None = None) -> str:
        bn = f"bn{self.bn_images}" + ("aug" if self.run.cfg.data.bn_augment else "")
        return f"{PROTOCOL}|w{self.run.weights_digest}|{self.batches(split, images)[1]}|{bn}|{arch}"

    def accuracy(self, archs: list[Arch], split: str = "test", images: int | None = None,
                 progress: Callable[[int, int], None] | None = None, complete: int | None = None) -> list[float]:
        """Top-1 (%) of each arch on ``split`` (measured once, then cached). With ``complete`` (a smaller subset's
        size), an arch already measured on that subset is measured on the other images only."""
        out = []
        for i, arch in enumerate(archs):
            k = self.key(arch, split, images)
            if k not in self.cache:
                mask = self._measure(arch, split, images, complete)
                self.cache[k] = round(mask_accuracy(torch.from_numpy(mask)), 4)
                self.hits[k] = pack_mask(mask)
                self._unsaved += 1
                if self._unsaved >= 10:
                    self.save()
            out.append(self.cache[k])
            if progress is not None:
                progress(i + 1, len(archs))
        self.save()
        return out

    def _measure(self, arch: Arch, split: str, images: int | None, complete: int | None) -> np.ndarray:
        """Which images of the set the subnet of ``arch`` gets right (bool per image, in the set's order). With
        ``complete`` < the set's size and that subset already measured, only the images beyond it are forwarded."""
        batches, name = self.batches(split, images)
        n, total = len(batches.ds), len(self._set(split)[0].ds)
        part = self.key(arch, split, complete) if complete else None
        if part is None or complete >= n or part not in self.hits:
            return self._forward(arch, batches, name)
        known = unpack_mask(self.hits[part], complete)
        new = self._forward(arch, self._slice(split, complete, n), f"{name} (beyond {complete})")
        if n < total:  # a subset: its images in the fixed random order, the smaller subset first
            return np.concatenate([known, new])
        order = subset_order(total, SUBSET_SEED).numpy()  # the whole split, in its own order
        mask = np.empty(total, dtype=bool)
        mask[order[:complete]] = known
        mask[order[complete:]] = new
        return mask

    def _forward(self, arch: Arch, batches: EvalBatches, name: str) -> np.ndarray:
        tic = time.perf_counter()
        sub = self.subnet(arch)
        mid = time.perf_counter()
        run = self.run
        hits = correct_mask(sub, self._ready(at_resolution(batches, arch.resolution)), run.device, run.memory_format)
        self.seconds["subnets (extract + BN)"] += mid - tic
        self.seconds[f"forward {name}"] += time.perf_counter() - mid
        self.images[f"forward {name}"] += len(hits)
        self.macs[f"forward {name}"] += self.run.space.macs(arch) * len(hits)
        return hits.numpy()

    def subnet(self, arch: Arch) -> torch.nn.Module:
        """The subnet of ``arch`` with its BN statistics recalibrated (once per arch in this Evaluator)."""
        run = self.run
        sub = run.net.extract(arch).to(device=run.device, memory_format=run.memory_format)
        if arch in self._bn_state:
            sub.load_state_dict(self._bn_state[arch], strict=False)
            return sub.eval()
        recalibrate_bn(sub, self._ready(at_resolution(run.data.bn, arch.resolution)), num_images=self.bn_images,
                       device=run.device, memory_format=run.memory_format)
        self.images["BN recalibration"] += self.bn_images
        self.macs["BN recalibration"] += self.run.space.macs(arch) * self.bn_images
        self._bn_state[arch] = {k: v.clone() for k, v in sub.state_dict().items()
                                if k.endswith(("running_mean", "running_var", "num_batches_tracked"))}
        return sub

    def _ready(self, batches):
        """In-memory batches as ready input tensors, kept for the next subnet (resizing and normalizing them again
        for every subnet costs time); image folders are decoded as they come."""
        ds = getattr(batches, "ds", None)
        if not hasattr(ds, "images") or ds.images.numel() * 4 > KEEP_INPUTS_BYTES:
            return batches
        if id(batches) not in self._inputs:
            self._inputs[id(batches)] = (batches, list(batches))  # the batches object kept alive: ids stay unique
        return self._inputs[id(batches)][1]

    def correct(self, arch: Arch, split: str = "test") -> np.ndarray:
        """Which images of the whole ``split`` the subnet of ``arch`` classifies correctly (bool per image)."""
        k = self.key(arch, split)
        if k not in self.hits:
            self.cache.pop(k, None)
            self.accuracy([arch], split)
        return unpack_mask(self.hits[k], len(self.batches(split)[0].ds))

    def measured(self, split: str = "selection", images: int | None = None) -> dict[Arch, float]:
        """Every cached (arch, accuracy) pair of these weights and this set (``search``'s predictor data; an
        evaluation uses only its own measurements)."""
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
        if not self._unsaved:
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        for path, data in ((self.path, self.cache), (self.correct_path, self.hits)):
            if path.exists():
                for k, v in json.loads(path.read_text()).items():
                    data.setdefault(k, v)
            text = json.dumps(data, indent=0, sort_keys=True)
            atomic_write(path, lambda p, text=text: p.write_text(text))
        self._unsaved = 0


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


def _top(sel: dict[Arch, float], k: int, space: Space, buckets: int) -> list[Arch]:
    """The ``k`` best archs of each MACs bucket by their ranking accuracy (what the finalists would be)."""
    pts = [Point(str(a), space.macs(a), acc) for a, acc in sel.items()]
    return _finalists(pts, k, *space.macs_range(), buckets, set())


@dataclass(frozen=True)
class EvalArgs:
    """The arguments of an evaluation; ``onceforall eval``'s options are made from these fields (one default and
    one help text each)."""

    per_bucket: int = 10
    """Measured candidates per MACs bucket, drawn with skewed samplers so that every bucket is reached."""
    uniform: bool = True
    """Also measure the uniform archs (every kernel x expand x depth at the largest resolution)."""
    selection_images: int | None = 1000
    """Validation-split images every candidate is ranked on (0 or None: all)."""
    ranking_bn_images: int | None = 500
    """BN-recalibration images of the ranking measurements (candidates, searched subnets, finalists), at most
    data.bn_images; 0 or None: data.bn_images. The reported test measurement always uses data.bn_images."""
    search_per_bucket: int = 3
    """Subnets per bucket found by the accuracy predictor and NSGA-II (and an evolution in the bucket); 0: off."""
    search_rounds: int = 2
    """Rounds of that search, each predictor fitted on everything measured before; a round that moves no bucket's
    finalists ends the search."""
    finalists: int = 3
    """The best N of each bucket (and the two ends) are measured again on finalist_images images and the winner is
    chosen on that; 0: choose on the ranking subset."""
    finalist_images: int | None = None
    """Validation-split images the finalists are measured on (the ranking subset completed); 0 or None: all."""
    seed: int = 0
    """Seed of the candidate draws and the search."""
    buckets: int = 6
    """MACs buckets over the space's range."""


def evaluate_run(run: LoadedRun, args: EvalArgs | None = None, *, progress: Callable[[str], None] | None = None,
                 evaluator: Evaluator | None = None, **overrides: Any) -> dict:
    """Evaluate a run's supernet across the MACs range of the space it trained (see the module docstring) with
    ``args`` (default :class:`EvalArgs`; ``overrides`` replace single fields); write eval/pareto.{json,csv},
    curve_correct.json, report.md, pareto.png. The result depends on the weights, the config and the arguments
    alone (not on what the cache held before); ``evaluator`` (default: a new one) lets a caller read where the
    time went."""
    a = dataclasses.replace(args or EvalArgs(), **overrides)
    per_bucket, uniform, search_per_bucket, search_rounds = (a.per_bucket, a.uniform, a.search_per_bucket,
                                                             a.search_rounds)
    selection_images, finalist_images = a.selection_images or None, a.finalist_images or None
    finalists, seed, buckets = a.finalists, a.seed, a.buckets
    space = run.space
    ev = evaluator or Evaluator(run)
    ranking_bn = min(a.ranking_bn_images or ev.bn_images, ev.bn_images)
    ranker = ev if ranking_bn == ev.bn_images else Evaluator(run, bn_images=ranking_bn)
    ranker.seconds, ranker.images, ranker.macs = ev.seconds, ev.images, ev.macs  # one account of the time
    say = progress or (lambda s: None)
    archs = candidate_archs(space, per_bucket=per_bucket, uniform=uniform, buckets=buckets, seed=seed)
    n_sel, n_whole = (len(ev.batches("selection", n)[0].ds) for n in (selection_images, finalist_images))
    say(f"evaluating {len(archs)} subnets on {n_sel} images of the {run.selection_split} split")
    tick = lambda i, n: say(f"  {i}/{n}") if i % 10 == 0 else None  # noqa: E731
    sel = dict(zip(archs, ranker.accuracy(archs, "selection", selection_images, progress=tick)))
    sources = dict.fromkeys(archs, "sampled")
    rounds = search_rounds if search_per_bucket else 0
    rounds_run = 0
    for round_ in range(rounds):  # each round's predictor learns from the subnets the rounds before it measured
        searched = _search_buckets(space, list(sel.items()), per_bucket=search_per_bucket, buckets=buckets,
                                   seed=seed + round_, say=say)
        say(f"measuring {len(searched)} searched subnets (round {round_ + 1} of {rounds})")
        before = set(_top(sel, finalists or 1, space, buckets))
        sel.update(zip(searched, ranker.accuracy(searched, "selection", selection_images)))
        sources.update(dict.fromkeys(searched, "search"))
        rounds_run += 1
        if round_ < rounds - 1 and set(_top(sel, finalists or 1, space, buckets)) == before:
            say("no searched subnet reached a bucket's finalists: the front stopped moving, no further round")
            break
    pts = [Point(str(a), space.macs(a), sel[a]) for a in sources]
    smallest, largest = str(space.min()), str(space.max())
    whole: dict[str, float] = {}
    if finalists and n_sel < n_whole:
        picked = _finalists(pts, finalists, *space.macs_range(), buckets, {smallest, largest})
        say(f"measuring {len(picked)} finalists (the best {finalists} of each bucket and the ends) on {n_whole} "
            f"images of the {run.selection_split} split")
        whole = dict(zip(picked, ranker.accuracy([space.parse(a) for a in picked], "selection",
                                                 None if n_whole >= len(ev.batches("selection")[0].ds)
                                                 else n_whole, complete=selection_images)))
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
                     "search_per_bucket": search_per_bucket, "search_rounds": rounds, "search_rounds_run": rounds_run,
                     "ranking_bn_images": ranker.bn_images,
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
