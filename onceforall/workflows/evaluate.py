"""Evaluating a run across its MACs range (``onceforall eval RUN``): cached accuracies of its subnets,
candidates in every MACs bucket, the Pareto summary and its report."""

from __future__ import annotations

import dataclasses
import json
import random
from collections.abc import Callable

from ..core.arch import Arch
from ..core.evaluation import evaluate_arch
from ..core.pareto import Point, bucket_index, pareto_summary
from ..core.seeds import derive_seed
from ..core.space import Space
from ..core.util import atomic_write
from ..data import EvalBatches, bn_subset
from ..run.rundir import LoadedRun
from .report import write_run_report

__all__ = ["Evaluator", "candidate_archs", "evaluate_run"]


class Evaluator:
    """Accuracies of archs of a run, measured once and cached in ``<run>/eval/cache.json``.

    ``images=None`` measures on the whole validation set (the test split unless the run held out training
    images); an integer measures on a fixed random subset of that many images (for cheap selection).
    Cache keys hold the checkpoint step, the set and the number of BN images, so a resumed run or another
    set is measured again.
    """

    def __init__(self, run: LoadedRun, *, bn_images: int | None = None):
        self.run = run
        self.bn_images = bn_images or run.cfg.data.bn_images
        self.path = run.dir.eval_dir / "cache.json"
        self.cache: dict[str, float] = json.loads(self.path.read_text()) if self.path.exists() else {}
        self._subsets: dict[int, EvalBatches] = {}

    def _batches(self, images: int | None):
        val = self.run.data.val_full
        if images is None or images >= len(val.ds):
            return val, len(val.ds)
        if images not in self._subsets:
            ds = bn_subset(val.ds, images, seed=derive_seed(0, "selection", images))
            self._subsets[images] = EvalBatches(ds, val.batch_size, val.image_size, val.workers)
        return self._subsets[images], images

    def key(self, arch: Arch, images: int | None) -> str:
        n = self._batches(images)[1]
        return f"step{self.run.step}|{self.run.eval_split}|{n}|bn{self.bn_images}|{arch}"

    def accuracy(self, archs: list[Arch], images: int | None = None,
                 progress: Callable[[int, int], None] | None = None) -> list[float]:
        batches, _ = self._batches(images)
        out = []
        for i, arch in enumerate(archs):
            k = self.key(arch, images)
            if k not in self.cache:
                self.cache[k] = round(evaluate_arch(
                    self.run.net, arch, self.run.data.bn, batches, bn_images=self.bn_images,
                    device=self.run.device, memory_format=self.run.memory_format), 4)
                self.save()
            out.append(self.cache[k])
            if progress is not None:
                progress(i + 1, len(archs))
        return out

    def measured(self, images: int | None = None) -> dict[Arch, float]:
        """Every cached (arch, accuracy) pair of this checkpoint and set (the predictor's training data)."""
        prefix = self.key(self.run.space.max(), images).rsplit("|", 1)[0] + "|"
        return {self.run.space.parse(k[len(prefix):]): v for k, v in self.cache.items() if k.startswith(prefix)}

    def save(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        text = json.dumps(self.cache, indent=0, sort_keys=True)
        atomic_write(self.path, lambda p: p.write_text(text))


def candidate_archs(space: Space, *, per_bucket: int = 5, uniform: bool = True, buckets: int = 6, seed: int = 0,
                    pool: int = 20000) -> list[Arch]:
    """Archs to evaluate: min, max, the uniform archs (every kernel x expand x depth at the largest resolution,
    and min/max at every resolution), and ``per_bucket`` random archs from each MACs bucket (stratified:
    uniform sampling alone rarely reaches the ends of the range)."""
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
    lo, hi = space.macs_range()
    by_bucket: list[list[Arch]] = [[] for _ in range(buckets)]
    seen = set(archs)
    for _ in range(pool):
        a = space.sample(rng)
        b = bucket_index(space.macs(a), lo, hi, buckets)
        if a not in seen and len(by_bucket[b]) < per_bucket:
            by_bucket[b].append(a)
            seen.add(a)
        if all(len(x) >= per_bucket for x in by_bucket):
            break
    archs += [a for bucket in by_bucket for a in bucket]
    return [a for a in dict.fromkeys(archs) if space.contains(a)]


def evaluate_run(run: LoadedRun, *, per_bucket: int = 5, uniform: bool = True, selection_images: int | None = 2000,
                 seed: int = 0, progress: Callable[[str], None] | None = None) -> dict:
    """Evaluate a run's supernet across the MACs range; write eval/pareto.{json,csv}, report.md, pareto.png.

    Candidates are ranked on ``selection_images`` validation images (None: all); the smallest subnet, the
    full model and the bucket winners are then measured on the whole validation set, and the reported
    numbers (accuracies, mean Pareto accuracy) are those."""
    space = run.space
    ev = Evaluator(run)
    archs = candidate_archs(space, per_bucket=per_bucket, uniform=uniform, seed=seed)
    say = progress or (lambda s: None)
    say(f"evaluating {len(archs)} subnets on {selection_images or 'all'} {run.eval_split} images")
    sel = ev.accuracy(archs, selection_images, progress=lambda i, n: say(f"  {i}/{n}") if i % 10 == 0 else None)
    pts = [Point(str(a), space.macs(a), acc) for a, acc in zip(archs, sel)]
    smallest, largest = str(space.min()), str(space.max())
    chosen = pareto_summary(pts, next(p for p in pts if p.arch == smallest), next(p for p in pts if p.arch == largest))
    final_archs = [space.parse(p["arch"]) for p in chosen["curve"]]
    say(f"measuring {len(final_archs)} bucket winners and ends on the whole {run.eval_split} set")
    full = dict(zip(map(str, final_archs), ev.accuracy(final_archs, None)))
    fpts = [Point(a, space.macs(space.parse(a)), acc) for a, acc in full.items()]
    summary = pareto_summary(fpts, next(p for p in fpts if p.arch == smallest),
                             next(p for p in fpts if p.arch == largest))
    result = {
        "run": str(run.run_dir),
        "step": run.step,
        "strategy": run.cfg.strategy.name,
        "space": space.identity(),
        "eval_set": {"split": run.eval_split, "images": len(run.data.val_full.ds), "selection_images":
                     selection_images if selection_images and selection_images < len(run.data.val_full.ds) else None,
                     "bn_images": ev.bn_images},
        **summary,
        "evaluated": [
            {"arch": p.arch, "macs": p.macs, "params": space.params(space.parse(p.arch)), "acc_selection": p.acc,
             "acc": full.get(p.arch), "bucket": bucket_index(p.macs, *space.macs_range())}
            for p in pts
        ],
    }
    write_run_report(run, result)
    return result
