"""What a run's config builds: its space, data, supernet, optimizer, schedule and strategy.

Training, resuming, evaluating and ``analyze-gradients`` all build these objects here, so a run means the
same thing to each of them.
"""

from __future__ import annotations

import os
import warnings
from dataclasses import dataclass, replace

import torch
from torch import nn

from ..core import optim
from ..core.seeds import derive_seed
from ..core.space import Space
from ..core.strategies import Schedule, Strategy, get_strategy
from ..core.supernet import Supernet, build_supernet
from ..data import (
    Augment,
    Dataset,
    EvalBatches,
    FixedCrops,
    FolderDataset,
    TrainBatches,
    bn_subset,
    default_hflip,
    folder_stats,
    load_dataset,
    split_holdout,
    test_split_name,
    typical_size,
)
from .config import Config, model_space

__all__ = [
    "DATA_SEED",
    "RunParts",
    "TrainData",
    "build_data",
    "build_run",
    "build_net",
    "build_optimizer",
    "build_schedule",
    "build_space",
    "build_strategy",
    "data_defaults",
    "image_size",
    "report_split",
    "selection_split",
    "memory_format",
]

DATA_SEED = 0  # splits and evaluation subsets are the same for every training seed (comparable runs)


@dataclass
class TrainData:
    train: TrainBatches
    bn: EvalBatches | FixedCrops
    """A fixed random subset of training images for BN recalibration (their training crops drawn once with
    data.bn_augment, else their evaluation crops)."""
    val: EvalBatches
    """Per-epoch validation set (held-out training images, or the test split; data.eval_subset of it)."""
    val_full: EvalBatches
    """The whole validation set: subnets are ranked (selected) on it."""
    test: EvalBatches
    """The test split, on which results are reported (the same set as ``val_full`` without a held-out split)."""
    num_classes: int
    in_channels: int
    image_size: int


def build_space(cfg: Config) -> Space:
    """The space of ``cfg.model`` (:func:`~onceforall.run.config.model_space`; with the space's default number of
    classes and input channels: training sets them from the data with :meth:`Space.with_io`)."""
    return model_space(cfg.model)


def image_size(cfg: Config, space: Space) -> int:
    """Side of the training images: data.image_size, or the largest resolution of the space."""
    return cfg.data.image_size or max(space.resolutions)


def memory_format(cfg: Config) -> torch.memory_format:
    """channels_last (train.channels_last, the CPU default) or contiguous."""
    return torch.channels_last if cfg.train.channels_last else torch.contiguous_format


def build_data(cfg: Config, image_size: int, training: bool = True) -> TrainData:
    """The run's batches; ``training=False`` (evaluating a finished or imported run) accepts a training set
    smaller than one batch."""
    d = cfg.data
    train = load_dataset(d.dataset, d.root, "train", image_size)
    test = load_dataset(d.dataset, d.root, "test", image_size)
    if d.test_subset is not None and d.test_subset < len(test):
        test = bn_subset(test, d.test_subset, seed=derive_seed(DATA_SEED, "test_subset"))
    if d.mean is not None:  # the config's normalization (image folders: measured when the run started)
        for ds in (train, test):
            ds.mean, ds.std = tuple(d.mean), tuple(d.std)
    if len(train.mean) != train.in_channels:
        raise ValueError(f"data.mean: {list(train.mean)} is not valid for {d.dataset}; need {train.in_channels} "
                         "value(s), one per input channel")
    holdout = d.val_split if d.val_split is not None else auto_val_split(len(train))
    if holdout:
        train, val = split_holdout(train, holdout, seed=DATA_SEED)
    else:
        val = test
    if d.train_subset is not None and d.train_subset > len(train):
        warnings.warn(f"data.train_subset: {d.train_subset} is more than the {len(train)} training images "
                      f"{d.dataset} has{' after the held-out split' if d.val_split else ''}; using all of them "
                      f"(valid: 1..{len(train)}, or null for all)", stacklevel=2)
    if d.train_subset is not None and d.train_subset < len(train):
        train = bn_subset(train, d.train_subset, seed=derive_seed(DATA_SEED, "train_subset"))
    val_full = val
    if d.eval_subset is not None and d.eval_subset < len(val):
        val = bn_subset(val, d.eval_subset, seed=derive_seed(DATA_SEED, "eval_subset"))
    if d.random_erase and not isinstance(train, FolderDataset):
        raise ValueError(f"data.random_erase: {d.random_erase} is not valid for {d.dataset}; random erasing applies to "
                         "image folders only (0 for in-memory datasets)")
    if d.auto_augment is not None and not isinstance(train, FolderDataset):
        raise ValueError(f"data.auto_augment: {d.auto_augment} is not valid for {d.dataset}; AutoAugment applies to "
                         "image folders only (null for in-memory datasets)")
    if d.train_per_resolution and not isinstance(train, FolderDataset):
        raise ValueError(f"data.train_per_resolution: true is not valid for {d.dataset}; per-resolution crops apply "
                         "to image folders only (false for in-memory datasets)")
    if d.color_jitter is not None and not isinstance(train, FolderDataset):
        raise ValueError(f"data.color_jitter: {d.color_jitter} is not valid for {d.dataset}; colour jitter applies "
                         "to image folders only (null for in-memory datasets)")
    augment = Augment(crop_padding=d.crop_padding, hflip=default_hflip(d.dataset) if d.hflip is None else d.hflip,
                      random_erase=d.random_erase,
                      color_jitter=None if d.color_jitter is None else tuple(d.color_jitter),
                      auto_augment=d.auto_augment == "imagenet", mixup_alpha=d.mixup_alpha,
                      cutmix_alpha=d.cutmix_alpha, mix_prob=d.mix_prob, mix_switch_prob=d.mix_switch_prob)

    workers = data_workers(cfg)

    def batches(ds: Dataset, batch_size: int = d.eval_batch_size) -> EvalBatches:
        return EvalBatches(ds, batch_size, image_size, workers, per_resolution=d.per_resolution)

    bn_set = bn_subset(train, d.bn_images, seed=DATA_SEED)
    # BN recalibration crops: OFA's protocol (crop and flip), no AutoAugment, colour jitter, erasing or mixing
    bn = (FixedCrops(bn_set, d.bn_batch_size, replace(augment, random_erase=0.0, color_jitter=None,
                                                        auto_augment=False, mixup_alpha=0.0, cutmix_alpha=0.0),
                     image_size,
                     workers,
                     seed=derive_seed(DATA_SEED, "bn"),
                     per_resolution=d.per_resolution) if d.bn_augment else batches(bn_set, d.bn_batch_size))
    val_batches = batches(val_full)
    return TrainData(
        train=TrainBatches(train, cfg.train.batch_size, cfg.train.seed, augment, image_size, workers=workers,
                           check_size=training,
                           resolutions=model_space(cfg.model).resolutions if d.train_per_resolution else None),
        bn=bn,
        val=batches(val),
        val_full=val_batches,
        test=val_batches if test is val_full else batches(test),
        num_classes=train.num_classes,
        in_channels=train.in_channels,
        image_size=image_size,
    )


AUTO_VAL_FRACTION = 0.1
AUTO_VAL_MAX = 10_000
AUTO_WORKERS_MAX = 8


def auto_val_split(n_train: int) -> int:
    """``data.val_split: null``: 10 % of the training images, at most 10,000 (0 below 10 images)."""
    return min(AUTO_VAL_MAX, int(n_train * AUTO_VAL_FRACTION))


def data_workers(cfg: Config) -> int:
    """``data.workers``, or when null: min(8, this machine's cores) for image folders, 0 for in-memory data."""
    if cfg.data.workers is not None:
        return cfg.data.workers
    return min(AUTO_WORKERS_MAX, os.cpu_count() or 1) if cfg.data.dataset == "imagefolder" else 0


def resolve_val_split(cfg: Config) -> tuple[Config, list[str]]:
    """``cfg`` with ``data.val_split`` decided from the training set's size when it is null (one note saying so)."""
    d = cfg.data
    if d.val_split is not None:
        return cfg, []
    n = len(load_dataset(d.dataset, d.root, "train", 8))
    k = auto_val_split(n)
    note = (f"data: holding out {k} of the {n} training images as the validation split (10 %, at most "
            f"{AUTO_VAL_MAX}; data.val_split to choose)" if k else
            f"data: no validation split ({n} training images); subnets are selected on the test split")
    return replace(cfg, data=replace(d, val_split=k)), [note]


def data_defaults(cfg: Config) -> tuple[Config, list[str]]:
    """The config a run starts with and what it chose for the data (one line each, printed by ``train``): an image
    folder gets its resolution from its images (median shorter side) unless ``model.resolutions`` is set, and its
    normalization measured on its training images unless ``data.mean`` is set; both are written into the run's
    config.yaml, as is ``data.val_split`` when null (:func:`resolve_val_split`). A preset's resolution that is far
    from the folder's images is pointed out."""
    cfg, notes = resolve_val_split(cfg)
    d = cfg.data
    if d.dataset != "imagefolder" or (d.mean is not None and cfg.model.resolutions is not None):
        return cfg, notes
    train = load_dataset(d.dataset, d.root, "train", 8)
    assert isinstance(train, FolderDataset)
    side = typical_size(train)
    model = cfg.model
    if model.resolutions is None:
        model = replace(model, resolutions=[side])
        notes.append(f"data: training at {side} px, the median shorter side of the folder's images "
                     "(set model.resolutions to choose)")
    elif not min(model.resolutions) / 2 <= side <= max(model.resolutions) * 2:
        notes.append(f"data: the folder's images are about {side} px; the config trains at {model.resolutions} px "
                     "(model.resolutions=null trains at the images' size)")
    if d.mean is None:
        size = d.image_size or max(model_space(model).resolutions)
        mean, std = folder_stats(train, size)
        d = replace(d, mean=list(mean), std=list(std))
        notes.append(f"data: normalization measured on {min(len(train), 1000)} training images: mean "
                     f"{list(mean)}, std {list(std)}")
    if d.hflip is None:
        notes.append("data: no horizontal flips (data.hflip=true if a mirrored image keeps its class)")
    return replace(cfg, data=d, model=model), notes


def selection_split(cfg: Config) -> str:
    """Name of the split subnets are ranked on: the held-out training images, or the test split."""
    if cfg.data.val_split is None:
        return "validation (10 % of the training images, held out)"
    return f"validation ({cfg.data.val_split} held-out training images)" if cfg.data.val_split else report_split(cfg)


def report_split(cfg: Config) -> str:
    """Name of the split results are reported on: always ``test`` ("validation" is the held-out training images
    subnets are selected on); for an image folder it says that its ``val/`` images are that test split."""
    folder = test_split_name(cfg.data.dataset)
    return "test" if folder == "test" else f"test (the folder's {folder}/ images)"


def build_net(cfg: Config, space: Space, seed: int | None = None) -> Supernet:
    """The supernet of ``space`` with the model settings of ``cfg`` (dropout, kernel transforms, BN momentum) and
    its depthwise weight-gradient kernel (``train.depthwise_grad``)."""
    return build_supernet(space, dropout=cfg.model.dropout, kernel_transform=cfg.model.kernel_transform,
                          bn_momentum=cfg.model.bn_momentum, seed=cfg.train.seed if seed is None else seed,
                          depthwise_grad=cfg.train.depthwise_grad)


def build_optimizer(net: nn.Module, cfg: Config) -> torch.optim.SGD:
    """SGD of ``cfg.optim`` (see :func:`onceforall.core.optim.build_optimizer`)."""
    o = cfg.optim
    return optim.build_optimizer(net, lr=o.lr, momentum=o.momentum, nesterov=o.nesterov, weight_decay=o.weight_decay)


def build_schedule(cfg: Config, steps_per_epoch: int) -> Schedule:
    """The run's length and learning-rate schedule (cosine after optim.warmup_epochs of linear warmup)."""
    o = cfg.optim
    return Schedule(cfg.train.epochs, steps_per_epoch, o.lr, int(round(o.warmup_epochs * steps_per_epoch)), o.min_lr)


def build_strategy(cfg: Config, space: Space, schedule: Schedule) -> Strategy:
    """The strategy of ``cfg.strategy`` on ``space``, with the run's seed and label smoothing."""
    return get_strategy(cfg.strategy, space, schedule, cfg.train.seed, label_smoothing=cfg.optim.label_smoothing)


@dataclass
class RunParts:
    """What a run's config builds, each once (:func:`build_run`)."""

    space: Space
    """The supernet's space, with the data's number of classes and input channels."""
    data: TrainData
    net: Supernet
    optimizer: torch.optim.SGD
    schedule: Schedule
    strategy: Strategy

    @property
    def eval_space(self) -> Space:
        """The space the run is validated (and later evaluated) on: the strategy's (e.g. CompOFA's coupled one)."""
        return self.strategy.trained_space()


def build_run(cfg: Config, device: torch.device | str = "cpu") -> RunParts:
    """The space, data, supernet (on ``device``, in the run's memory format), optimizer, schedule and strategy of
    ``cfg``. The space's resolutions size the images; the data then sets its classes and input channels."""
    space = build_space(cfg)
    data = build_data(cfg, image_size(cfg, space))
    space = space.with_io(num_classes=data.num_classes, in_channels=data.in_channels)
    net = build_net(cfg, space).to(device=device, memory_format=memory_format(cfg))
    optimizer = build_optimizer(net, cfg)
    schedule = build_schedule(cfg, data.train.steps_per_epoch)
    return RunParts(space, data, net, optimizer, schedule, build_strategy(cfg, space, schedule))
