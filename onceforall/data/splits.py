"""Deterministic splits and subsets of a dataset (in memory or image folder): the held-out validation images and
the BN-recalibration subset, each a pure function of ``(seed, size of the dataset)``."""

from __future__ import annotations

import torch

from .base import Dataset, data_error, seeded_generator

__all__ = ["bn_subset", "subset_order", "split_holdout"]


def split_holdout(ds: Dataset, holdout: int, seed: int) -> tuple[Dataset, Dataset | None]:
    """Deterministic random split into (train, holdout) with ``holdout`` images removed from train.

    holdout=0 returns (ds, None). Both parts keep the original order of their images.
    """
    n = len(ds)
    if holdout == 0:
        return ds, None
    if holdout < 0 or holdout >= n:
        raise data_error(f"val_split: {holdout} is not valid; the {ds.name} training set has {n} images, so it must "
                         f"be in 0..{n - 1}")
    perm = torch.randperm(n, generator=seeded_generator(seed, "holdout", n))
    held = perm[:holdout].sort().values
    kept = perm[holdout:].sort().values
    return ds.subset(kept), ds.subset(held)


def bn_subset(ds: Dataset, num_images: int, seed: int) -> Dataset:
    """A fixed random subset of min(num_images, len(ds)) images, deterministic from ``seed``.

    The images stay in random order, so consecutive batches are not grouped by class (image folders are)."""
    if num_images < 1:
        raise ValueError(f"num_images: {num_images} is not valid; must be >= 1")
    return ds.subset(subset_order(len(ds), seed)[: min(num_images, len(ds))])


def subset_order(n: int, seed: int) -> torch.Tensor:
    """The random order of a dataset's ``n`` images whose first k are :func:`bn_subset`'s k images (so the rest of
    the dataset, beyond a subset, is known too: a measurement on a subset can be completed to the whole set)."""
    return torch.randperm(n, generator=seeded_generator(seed, "bn", n))
