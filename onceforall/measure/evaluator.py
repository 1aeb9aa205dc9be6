"""The cached measurements of a run's subnets that eval, search, front and export share (:class:`Evaluator`), and
the description of the images they were measured on (:func:`eval_set`).

A subnet's accuracy is measured once per definition (protocol, weights, images, BN images) and kept in
``<run>/eval/cache.json``, with which images it got right in ``eval/correct.json``; every command reads the same
cache, so a subnet ``eval`` measured costs ``search`` nothing.
"""

from __future__ import annotations

import copy
import json
import time
from collections import defaultdict
from collections.abc import Callable
from typing import Any

import numpy as np
import torch

from ..core.arch import Arch
from ..core.bn import recalibrate_bn
from ..core.evaluation import at_resolution, correct_mask, mask_accuracy
from ..core.seeds import derive_seed
from ..core.subnet import fold_batchnorm
from ..core.util import atomic_write
from ..data import EvalBatches, subset_order
from ..run.rundir import LoadedRun, read_eval_cache
from .scores import pack_mask, unpack_mask

__all__ = ["KEEP_INPUTS_BYTES", "PROTOCOL", "RANKING_BN_IMAGES", "RANKING_IMAGES", "SPLITS", "SUBSET_SEED", "Evaluator",
           "eval_set", "ranking_evaluator"]

SPLITS = ("selection", "test")


# Part of every cache key: a measurement made under another definition (another protocol version, other weights,
# images or BN subset) is never reused. e2: keys name the weights (LoadedRun.weights_digest) instead of the step.
# e3: BN folded into the convs for the measured forwards, BN recalibrated in batches of data.bn_batch_size (named
# in the key) instead of data.eval_batch_size.
PROTOCOL = "e3"
# In-memory evaluation sets are kept as ready input tensors up to this size (bytes), instead of being resized
# and normalized again for every subnet.
KEEP_INPUTS_BYTES = 512 * 2**20
# One random order of a split's images for every subset size: a smaller subset lies inside a larger one, so a
# measurement can be completed to a larger subset or the whole split by measuring only the images it lacks.
SUBSET_SEED = derive_seed(0, "selection")
# The ranking measurements' definition, shared by eval's candidates and search's and front's predictor subnets so
# that a search reuses what eval measured (and the reverse): validation images per subnet, BN-recalibration images.
RANKING_IMAGES = 1000
RANKING_BN_IMAGES = 250


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
        self.path = run.dir.eval_cache
        self.correct_path = run.dir.eval_correct
        self.cache: dict[str, float] = read_eval_cache(self.path, "numbers")  # a damaged one: set aside, warned
        self.hits: dict[str, str] = read_eval_cache(self.correct_path, "strings")
        self.seconds: dict[str, float] = defaultdict(float)
        self.images: dict[str, int] = defaultdict(int)
        self.macs: dict[str, int] = defaultdict(int)
        self._subsets: dict[tuple[str, int, int], EvalBatches] = {}
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
        d = self.run.cfg.data
        bn = f"bn{self.bn_images}x{d.bn_batch_size}" + ("aug" if d.bn_augment else "")
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
        run = self.run
        # BN folded into the convs (protocol e3): the same subnet up to float rounding, 1.3-2x faster on CPU
        sub = fold_batchnorm(self.subnet(arch), inplace=True).to(memory_format=run.memory_format)
        mid = time.perf_counter()
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

    def with_bn_images(self, bn_images: int) -> Evaluator:
        """An Evaluator of the same run that recalibrates BN on ``bn_images``, sharing this one's cache (the keys
        name the BN images, so the two never mix), split subsets, ready input tensors and account of the time; the
        cache files are not read again and the inputs not prepared again. Its BN statistics are its own."""
        other = copy.copy(self)
        other.bn_images = bn_images  # the setter gives it BN statistics of its own
        return other

    @property
    def bn_images(self) -> int:
        """BN-recalibration images per subnet. Setting it drops the BN statistics kept for the old value."""
        return self._bn_images

    @bn_images.setter
    def bn_images(self, n: int) -> None:
        self._bn_images = n
        self._bn_state: dict[Arch, dict[str, torch.Tensor]] = {}  # a new dict: a copy's are never its original's

    def save(self) -> None:
        """Write the cache, keeping what another Evaluator of the run wrote meanwhile (``search --front`` and
        a benchmark may hold two; the last writer used to drop the other's measurements)."""
        if not self._unsaved:
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        for path, data, values in ((self.path, self.cache, "numbers"), (self.correct_path, self.hits, "strings")):
            for k, v in read_eval_cache(path, values).items():  # damaged by the other writer: set aside, warned
                data.setdefault(k, v)
            text = json.dumps(data, indent=0, sort_keys=True)
            atomic_write(path, lambda p, text=text: p.write_text(text))
        self._unsaved = 0


def ranking_bn_images(requested: int | None, bn_images: int) -> int:
    """The BN-recalibration images of ranking measurements asked as ``requested`` beside reported ones recalibrated
    on ``bn_images``: at most those; 0 or None: those."""
    return min(requested or bn_images, bn_images)


def ranking_evaluator(ev: Evaluator, bn_images: int | None) -> Evaluator:
    """The Evaluator of ranking measurements beside ``ev`` (the reported ones): BN recalibrated on ``bn_images``
    (:func:`ranking_bn_images`; ``ev`` itself when that is ``ev``'s), with one account of the time (``seconds``,
    ``images``, ``macs``) and one cache (:meth:`Evaluator.with_bn_images`)."""
    n = ranking_bn_images(bn_images, ev.bn_images)
    return ev if n == ev.bn_images else ev.with_bn_images(n)


def eval_set(run: LoadedRun, **extra: Any) -> dict[str, Any]:
    """The ``eval_set`` record of a result (eval, search, front): the measurement protocol, the split reported on, the
    split chosen on, whether it is held out and the test split's size, then ``extra`` (what the command adds), in
    that order."""
    return {"protocol": PROTOCOL, "split": run.report_split, "selection_split": run.selection_split,
            "held_out": run.held_out, "images": len(run.data.test.ds), **extra}
