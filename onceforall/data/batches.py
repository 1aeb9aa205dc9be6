"""Deterministic minibatches: :class:`TrainBatches` (shuffled, augmented) and :class:`EvalBatches` (fixed order).

Design:

* In-memory datasets (:class:`~.base.ImageDataset`) are augmented (random crop with zero padding, horizontal flip)
  on a whole batch at once with tensor ops: the batch is padded once and every crop, flipped or not, is gathered
  with two ``torch.gather`` ops from per-sample row/column index tables (no per-image Python loop). On a 2-core
  machine a data loader whose worker processes compete with the model for the CPU is the bottleneck; the batched
  gather costs about a millisecond for 256 images and needs no worker process (``benchmarks/data_speed.py``).
* Image folders (:class:`~.base.FolderDataset`) are decoded and augmented one image at a time, in this process or
  in ``torch.utils.data.DataLoader`` workers (``workers``); both give the same batches.
* Everything random is a pure function of ``(seed, epoch, index)`` (seeds derived with SHA-256, never from
  torch's or Python's global RNG): the epoch permutation from ``(seed, epoch)``, the augmentation of a global
  batch from ``(seed, epoch, index)``. A resumed run therefore sees exactly the batches it would have seen, and
  every rank can materialise only its own rows of the same global batch (``rows``), which concatenate to the
  global batch bit for bit.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from ..core.seeds import derive_seed
from .augment import auto_augment, color_jitter, mix_batch, random_erase
from .base import Dataset, FolderDataset, ImageDataset, data_error, resize_uint8, seeded_generator

__all__ = ["Augment", "EvalBatches", "FixedCrops", "MultiResolution", "TrainBatches"]


@dataclass(frozen=True)
class Augment:
    """Augmentation of the training batches (image folders always use RandomResizedCrop; ``hflip`` applies)."""

    crop_padding: int = 4
    """Random crop with this zero padding (in-memory datasets); 0 disables."""
    hflip: bool = True
    """Random horizontal flip."""
    random_erase: float = 0.0
    """Image folders: probability of random erasing per training image (:func:`~.augment.random_erase`)."""
    color_jitter: tuple[float, float, float, float] | None = None
    """Image folders: (brightness, contrast, saturation, hue) of :func:`~.augment.color_jitter`; None: off."""
    auto_augment: bool = False
    """Image folders: AutoAugment's ImageNet policy (:func:`~.augment.auto_augment`)."""
    mixup_alpha: float = 0.0
    """Mixup of whole batches, lambda ~ Beta(alpha, alpha) (:func:`~.augment.mix_batch`); 0: off."""
    cutmix_alpha: float = 0.0
    """CutMix of whole batches, lambda ~ Beta(alpha, alpha); 0: off. With both on, one of the two per batch."""
    mix_prob: float = 1.0
    """Probability that a batch is mixed when mixup or CutMix is on."""
    mix_switch_prob: float = 0.5
    """Probability of CutMix rather than mixup when both are on."""

    @property
    def mixes(self) -> bool:
        """Whether batches are mixed (labels are then distributions (b, num_classes), float32)."""
        return self.mixup_alpha > 0 or self.cutmix_alpha > 0


def _normalize(x: torch.Tensor, mean: Sequence[float], std: Sequence[float]) -> torch.Tensor:
    """uint8 (b, C, H, W) -> float32 ((x / 255 - mean) / std), channels_last."""
    x = x.contiguous(memory_format=torch.channels_last)
    c = x.shape[1]
    scale = torch.tensor([1.0 / (255.0 * s) for s in std], dtype=torch.float32).view(1, c, 1, 1)
    bias = torch.tensor([-m / s for m, s in zip(mean, std)], dtype=torch.float32).view(1, c, 1, 1)
    out = x.to(torch.float32)
    return out.mul_(scale).add_(bias).contiguous(memory_format=torch.channels_last)


class MultiResolution:
    """One training batch cropped at several resolutions (:class:`TrainBatches` with ``resolutions``): the same
    images, crop boxes, flips and augmentation draws, each resized directly to its side. A pass of a step takes
    :meth:`at` its arch's resolution (:func:`onceforall.core.evaluation.at_resolution`); ``to``, ``contiguous``,
    ``chunk`` and ``shape`` (the largest's) act as on a tensor, so the training loop moves it like one."""

    def __init__(self, by_resolution: dict[int, torch.Tensor]):
        if not by_resolution:
            raise ValueError("MultiResolution: no resolutions")
        self.by_resolution = dict(sorted(by_resolution.items()))

    def at(self, resolution: int) -> torch.Tensor:
        if resolution not in self.by_resolution:
            raise ValueError(f"training batch: resolution {resolution} is not valid; the batch was cropped at "
                             f"{', '.join(map(str, self.by_resolution))} (data.train_per_resolution crops the "
                             "space's resolutions)")
        return self.by_resolution[resolution]

    @property
    def shape(self) -> torch.Size:
        return self.by_resolution[max(self.by_resolution)].shape

    def to(self, *args, **kwargs) -> MultiResolution:
        return MultiResolution({r: x.to(*args, **kwargs) for r, x in self.by_resolution.items()})

    def contiguous(self, *args, **kwargs) -> MultiResolution:
        return MultiResolution({r: x.contiguous(*args, **kwargs) for r, x in self.by_resolution.items()})

    def chunk(self, chunks: int) -> list[MultiResolution]:
        parts = {r: x.chunk(chunks) for r, x in self.by_resolution.items()}
        return [MultiResolution({r: p[k] for r, p in parts.items()}) for k in range(len(next(iter(parts.values()))))]


def _collate(items: list[tuple]) -> tuple:
    """Stacked images (a dict per resolution when the items are dicts) and int64 labels."""
    first = items[0][0] if items else None
    y = torch.tensor([y for _, y in items], dtype=torch.int64)
    if isinstance(first, dict):
        return {r: torch.stack([x[r] for x, _ in items]) for r in first}, y
    return torch.stack([x for x, _ in items]), y


class _FolderTrainItems(torch.utils.data.Dataset):
    """Position ``pos`` of epoch ``epoch``: image perm[pos], augmented from a generator seeded (seed, epoch, pos)."""

    def __init__(self, ds: FolderDataset, perm: list[int], seed: int, epoch: int, image_size: int, hflip: bool,
                 random_erase: float = 0.0, jitter: tuple[float, float, float, float] | None = None,
                 auto_aug: bool = False, resolutions: tuple[int, ...] | None = None):
        self.ds, self.perm, self.seed, self.epoch = ds, perm, seed, epoch
        self.image_size, self.hflip, self.random_erase, self.jitter = image_size, hflip, random_erase, jitter
        self.auto_aug, self.resolutions = auto_aug, resolutions
        self.fill = [int(round(255 * m)) for m in ds.mean]  # normalizes to 0, as torchvision's erasing value

    def __len__(self) -> int:
        return len(self.perm)

    def __getitem__(self, pos: int) -> tuple[torch.Tensor | dict[int, torch.Tensor], int]:
        i = self.perm[pos]
        g = seeded_generator(self.seed, self.epoch, "sample", pos)
        if self.resolutions is None:
            return self._augment(self.ds.load(i, self.image_size, True, g, hflip=self.hflip), g), self.ds.samples[i][1]
        crops = self.ds.load_crops(i, self.resolutions, g, hflip=self.hflip)
        state = g.get_state()
        out = {}
        for r, x in crops.items():  # the same augmentation draws at every resolution
            g.set_state(state)
            out[r] = self._augment(x, g)
        return out, self.ds.samples[i][1]

    def _augment(self, x: torch.Tensor, g: torch.Generator) -> torch.Tensor:
        if self.auto_aug:  # DεpS's order: crop, flip, AutoAugment, colour, (normalize), erase
            x = auto_augment(x, g)
        if self.jitter is not None:
            x = color_jitter(x, self.jitter, g)
        if self.random_erase:  # after the crop and flip, from the same generator (DεpS: after normalization)
            x = random_erase(x, self.random_erase, g, self.fill)
        return x


class _FolderEvalItems(torch.utils.data.Dataset):
    def __init__(self, ds: FolderDataset, image_size: int):
        self.ds, self.image_size = ds, image_size

    def __len__(self) -> int:
        return len(self.ds)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int]:
        return self.ds.load(i, self.image_size, False), self.ds.samples[i][1]


def _check_rows(rows: slice | None) -> slice:
    if rows is None:
        return slice(None)
    if not isinstance(rows, slice) or (rows.step is not None and rows.step < 1):
        raise ValueError(f"rows: {rows!r} is not valid; must be None or a slice with a positive step")
    return rows


class TrainBatches:
    """Deterministic global minibatches. Everything random is a pure function of (seed, epoch, index), so a resumed
    run sees exactly the same batches, and every rank can take its own rows of the same global batch."""

    def __init__(self, ds: Dataset, batch_size: int, seed: int, augment: Augment, image_size: int,
                 drop_last: bool = True, workers: int = 0, check_size: bool = True,
                 resolutions: Sequence[int] | None = None):
        if batch_size < 1:
            raise ValueError(f"batch_size: {batch_size} is not valid; must be >= 1")
        n = len(ds)
        if n == 0:
            raise data_error(f"{ds.name}: the training set is empty")
        if drop_last and n < batch_size and check_size:  # off where nothing trains (eval of an imported run)
            raise data_error(f"batch_size: {batch_size} is larger than the {n} training images of {ds.name}; lower "
                             "batch_size (or use more training images)")
        if augment.crop_padding < 0:
            raise ValueError(f"crop_padding: {augment.crop_padding} is not valid; must be >= 0")
        self.ds = ds
        self.batch_size = batch_size
        self.seed = seed
        self.augment = augment
        self.image_size = image_size
        self.drop_last = drop_last
        self.workers = workers
        # Image folders only: crop every batch at each of these resolutions (MultiResolution), OFA's
        # MyRandomResizedCrop cropping the active size directly; in-memory datasets keep one size.
        self.resolutions = (tuple(sorted(set(resolutions))) if resolutions and isinstance(ds, FolderDataset)
                            else None)
        self.steps_per_epoch = n // batch_size if drop_last else -(-n // batch_size)
        self._perm_cache: tuple[int, torch.Tensor] | None = None

    def __len__(self) -> int:
        return self.steps_per_epoch

    def permutation(self, epoch: int) -> torch.Tensor:
        """The order of the images in epoch ``epoch`` (randperm seeded from (seed, epoch))."""
        if self._perm_cache is None or self._perm_cache[0] != epoch:
            g = seeded_generator(self.seed, "perm", epoch)
            self._perm_cache = (epoch, torch.randperm(len(self.ds), generator=g))
        return self._perm_cache[1]

    def _positions(self, index: int) -> tuple[int, int]:
        if not 0 <= index < self.steps_per_epoch:
            raise IndexError(f"batch index {index} is out of range 0..{self.steps_per_epoch - 1}")
        start = index * self.batch_size
        return start, min(start + self.batch_size, len(self.ds))

    def batch(self, epoch: int, index: int, rows: slice | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """The ``index``-th global batch of epoch ``epoch`` (only ``rows`` of it; None: all): x float32 normalised,
        (b, C, image_size, image_size), channels_last (a :class:`MultiResolution` of such tensors with
        ``resolutions``); y int64 (b,), or float32 distributions (b, num_classes) when the augmentation mixes."""
        rows = _check_rows(rows)
        start, stop = self._positions(index)
        if isinstance(self.ds, ImageDataset):
            return self._mix(self._memory_batch(epoch, index, start, stop, rows), epoch, index, rows)
        positions = list(range(start, stop))[rows]
        if self.workers > 0 and positions:
            return self._mix(next(iter(self._folder_loader(epoch, [positions]))), epoch, index, rows)
        items = _FolderTrainItems(self.ds, self.permutation(epoch).tolist(), self.seed, epoch, self.image_size,
                                  self.augment.hflip, self.augment.random_erase,
                                  self.augment.color_jitter, self.augment.auto_augment, self.resolutions)
        xy = self._finish_folder(_collate([items[p] for p in positions]) if positions else self._empty())
        return self._mix(xy, epoch, index, rows)

    def _mix(self, xy: tuple[torch.Tensor, torch.Tensor], epoch: int, index: int,
             rows: slice) -> tuple[torch.Tensor, torch.Tensor]:
        """Mixup/CutMix of these rows of batch ``index`` (:func:`~.augment.mix_batch`), from a generator seeded
        with (seed, epoch, index, first row): each rank mixes its own rows with its own draws, as the official
        DεpS code mixes each GPU's batch in its collate function. Off: ``xy`` unchanged (integer labels)."""
        if not self.augment.mixes:
            return xy
        a = self.augment
        seed = derive_seed(self.seed, "mix", epoch, index, rows.start or 0)

        def mix(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
            x, y, _ = mix_batch(x, xy[1], self.ds.num_classes, np.random.default_rng(seed),
                                mixup_alpha=a.mixup_alpha, cutmix_alpha=a.cutmix_alpha, prob=a.mix_prob,
                                switch_prob=a.mix_switch_prob)
            return x.contiguous(memory_format=torch.channels_last), y

        if isinstance(xy[0], MultiResolution):  # the same draws at every resolution; CutMix's box scales with
            mixed = {r: mix(x) for r, x in xy[0].by_resolution.items()}  # it, the labels follow the largest's
            return MultiResolution({r: x for r, (x, _) in mixed.items()}), mixed[max(mixed)][1]
        return mix(xy[0])

    def _empty(self) -> tuple:
        c = self.ds.in_channels
        y = torch.empty((0,), dtype=torch.int64)
        if self.resolutions is not None:
            return {s: torch.empty((0, c, s, s), dtype=torch.uint8) for s in self.resolutions}, y
        s = self.image_size
        return torch.empty((0, c, s, s), dtype=torch.uint8), y

    def _finish_folder(self, xy: tuple) -> tuple:
        x, y = xy
        if isinstance(x, dict):
            return MultiResolution({r: _normalize(v, self.ds.mean, self.ds.std) for r, v in x.items()}), y
        return _normalize(x, self.ds.mean, self.ds.std), y

    def _folder_loader(self, epoch: int, batches: list[list[int]]) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        items = _FolderTrainItems(self.ds, self.permutation(epoch).tolist(), self.seed, epoch, self.image_size,
                                  self.augment.hflip, self.augment.random_erase,
                                  self.augment.color_jitter, self.augment.auto_augment, self.resolutions)
        loader = torch.utils.data.DataLoader(items, batch_sampler=batches, num_workers=self.workers,
                                             collate_fn=_collate)
        for xy in loader:
            yield self._finish_folder(xy)

    def _memory_batch(self, epoch: int, index: int, start: int, stop: int,
                      rows: slice) -> tuple[torch.Tensor, torch.Tensor]:
        ds = self.ds
        idx = self.permutation(epoch)[start:stop]
        b = idx.shape[0]
        p = self.augment.crop_padding
        # All randomness of the global batch, drawn in a fixed order whatever ``rows`` is.
        g = seeded_generator(self.seed, epoch, index)
        offsets = torch.randint(0, 2 * p + 1, (b, 2), generator=g) if p > 0 else torch.zeros((b, 2), dtype=torch.int64)
        flips = torch.rand(b, generator=g) < 0.5 if self.augment.hflip else torch.zeros(b, dtype=torch.bool)
        idx, offsets, flips = idx[rows], offsets[rows], flips[rows]
        x = ds.images[idx]  # (b, C, H, W) uint8
        labels = ds.labels[idx]
        if p > 0 or bool(flips.any()):
            h, w = x.shape[-2:]
            xp = F.pad(x, (p, p, p, p)) if p > 0 else x
            n, ch, _, wp = xp.shape
            r = offsets[:, 0:1] + torch.arange(h)  # (n, h) source rows in the padded images
            c = offsets[:, 1:2] + torch.arange(w)  # (n, w) source columns; a flip reads them backwards
            c = torch.where(flips[:, None], c.flip(1), c)
            # Two gathers (rows, then columns) with per-sample index tables: faster than 4-d advanced indexing.
            x = torch.gather(xp, 2, r[:, None, :, None].expand(n, ch, h, wp))
            x = torch.gather(x, 3, c[:, None, None, :].expand(n, ch, h, w))
        if x.shape[-1] != self.image_size or x.shape[-2] != self.image_size:
            x = resize_uint8(x, self.image_size)
        return _normalize(x, ds.mean, ds.std), labels

    def epoch_batches(self, epoch: int, start: int = 0,
                      rows: slice | None = None) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """Batches ``start``..steps_per_epoch-1 of epoch ``epoch`` (image folders: prefetched by the DataLoader)."""
        rows = _check_rows(rows)
        if isinstance(self.ds, FolderDataset) and self.workers > 0:
            batches = [list(range(*self._positions(i)))[rows] for i in range(start, self.steps_per_epoch)]
            indices = [i for i, b in zip(range(start, self.steps_per_epoch), batches) if b]
            for i, xy in zip(indices, self._folder_loader(epoch, [b for b in batches if b])):
                yield self._mix(xy, epoch, i, rows)
            return
        for i in range(start, self.steps_per_epoch):
            yield self.batch(epoch, i, rows)


class EvalBatches:
    """Fixed-order, un-augmented batches (validation/test, and the BN-recalibration subset).

    ``per_resolution``: an image folder is decoded again at each arch's resolution r (:meth:`at`: shorter side
    ceil(r / 0.875), center crop r, OFA's ImageNet protocol) instead of being cropped once at ``image_size`` and
    resized by the network. In-memory datasets are stored at one size and always resized by the network.
    """

    def __init__(self, ds: Dataset, batch_size: int, image_size: int, workers: int = 0,
                 per_resolution: bool = False):
        if batch_size < 1:
            raise ValueError(f"batch_size: {batch_size} is not valid; must be >= 1")
        self.ds = ds
        self.batch_size = batch_size
        self.image_size = image_size
        self.workers = workers
        self.per_resolution = per_resolution and isinstance(ds, FolderDataset)

    def at(self, resolution: int) -> EvalBatches:
        """These batches as a subnet at ``resolution`` is evaluated on (self unless :attr:`per_resolution`)."""
        if not self.per_resolution or resolution == self.image_size:
            return self
        return EvalBatches(self.ds, self.batch_size, resolution, self.workers, per_resolution=True)

    def __len__(self) -> int:
        return -(-len(self.ds) // self.batch_size)

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        ds = self.ds
        if isinstance(ds, ImageDataset):
            for s in range(0, len(ds), self.batch_size):
                x = resize_uint8(ds.images[s: s + self.batch_size], self.image_size)
                yield _normalize(x, ds.mean, ds.std), ds.labels[s: s + self.batch_size]
            return
        items = _FolderEvalItems(ds, self.image_size)
        if self.workers > 0:
            loader = torch.utils.data.DataLoader(items, batch_size=self.batch_size, shuffle=False,
                                                 num_workers=self.workers, collate_fn=_collate)
            for x, y in loader:
                yield _normalize(x, ds.mean, ds.std), y
            return
        for s in range(0, len(ds), self.batch_size):
            x, y = _collate([items[i] for i in range(s, min(s + self.batch_size, len(ds)))])
            yield _normalize(x, ds.mean, ds.std), y


class FixedCrops:
    """Training crops of a fixed set of images, drawn once from ``seed`` and the same at every pass: BN
    recalibration on augmented images, as OFA's ``build_sub_train_loader`` does (RandomResizedCrop and flips for
    image folders, padded random crops and flips for in-memory datasets; :class:`Augment`).

    With ``per_resolution``, :meth:`at` crops an image folder at the arch's resolution directly (OFA's
    RandomResizedCrop at the active size); otherwise at ``image_size``, resized by the network.
    """

    def __init__(self, ds: Dataset, batch_size: int, augment: Augment, image_size: int, workers: int = 0,
                 seed: int = 0, per_resolution: bool = False):
        self._batches = TrainBatches(ds, batch_size, seed, augment, image_size, drop_last=False, workers=workers)
        self.ds, self.batch_size, self.image_size, self.augment = ds, batch_size, image_size, augment
        self.workers, self.seed = workers, seed
        self.per_resolution = per_resolution and isinstance(ds, FolderDataset)

    def __len__(self) -> int:
        return len(self._batches)

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        yield from self._batches.epoch_batches(0)

    def at(self, resolution: int) -> FixedCrops:
        """These crops as a subnet at ``resolution`` is recalibrated on (self unless :attr:`per_resolution`)."""
        if not self.per_resolution or resolution == self.image_size:
            return self
        return FixedCrops(self.ds, self.batch_size, self.augment, resolution, self.workers, self.seed, True)
