"""What a run's config builds: its space, data, supernet, optimizer, schedule and strategy.

Training, resuming, evaluating and ``analyze-gradients`` all build these objects here, so a run means the
same thing to each of them.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from ..core import optim
from ..core.seeds import derive_seed
from ..core.space import Space
from ..core.strategies import Schedule, Strategy, get_strategy
from ..core.supernet import Supernet, build_supernet
from ..data import Augment, EvalBatches, TrainBatches, bn_subset, load_dataset, split_holdout
from .config import Config, model_space

__all__ = [
    "DATA_SEED",
    "TrainData",
    "build_data",
    "build_net",
    "build_optimizer",
    "build_schedule",
    "build_space",
    "build_strategy",
    "image_size",
    "selection_split",
    "memory_format",
]

DATA_SEED = 0  # splits and evaluation subsets are the same for every training seed (comparable runs)


@dataclass
class TrainData:
    train: TrainBatches
    bn: EvalBatches
    """A fixed random subset of training images, un-augmented, for BN recalibration."""
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


def build_data(cfg: Config, image_size: int) -> TrainData:
    d = cfg.data
    train = load_dataset(d.dataset, d.root, "train", image_size)
    test = load_dataset(d.dataset, d.root, "test", image_size)
    if d.val_split:
        train, val = split_holdout(train, d.val_split, seed=DATA_SEED)
    else:
        val = test
    if d.train_subset is not None and d.train_subset < len(train):
        train = bn_subset(train, d.train_subset, seed=derive_seed(DATA_SEED, "train_subset"))
    val_full = val
    if d.eval_subset is not None and d.eval_subset < len(val):
        val = bn_subset(val, d.eval_subset, seed=derive_seed(DATA_SEED, "eval_subset"))
    augment = Augment(crop_padding=d.crop_padding, hflip=d.hflip)
    val_batches = EvalBatches(val_full, d.eval_batch_size, image_size, d.workers)
    return TrainData(
        train=TrainBatches(train, cfg.train.batch_size, cfg.train.seed, augment, image_size, workers=d.workers),
        bn=EvalBatches(bn_subset(train, d.bn_images, seed=DATA_SEED), d.eval_batch_size, image_size, d.workers),
        val=EvalBatches(val, d.eval_batch_size, image_size, d.workers),
        val_full=val_batches,
        test=val_batches if test is val_full else EvalBatches(test, d.eval_batch_size, image_size, d.workers),
        num_classes=train.num_classes,
        in_channels=train.in_channels,
        image_size=image_size,
    )


def selection_split(cfg: Config) -> str:
    """Name of the split subnets are ranked on: the held-out training images, or the test split."""
    return f"validation ({cfg.data.val_split} held-out training images)" if cfg.data.val_split else "test"


def build_net(cfg: Config, space: Space, seed: int | None = None) -> Supernet:
    """The supernet of ``space`` with the model settings of ``cfg`` (dropout, kernel transforms)."""
    return build_supernet(space, dropout=cfg.model.dropout, kernel_transform=cfg.model.kernel_transform,
                          seed=cfg.train.seed if seed is None else seed)


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
