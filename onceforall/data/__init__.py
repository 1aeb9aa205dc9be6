"""Datasets and deterministic minibatches.

* :mod:`.base`: the dataset types (:class:`ImageDataset` in memory, :class:`FolderDataset` decoded lazily) and
  :class:`DataError` (every missing or malformed file: one line naming the path and the expected layout).
* :mod:`.registry`: :func:`register_dataset`, :func:`list_datasets`, :func:`load_dataset`, :func:`default_root`.
* The built-in readers, registered on import: :mod:`.fashion_mnist` (``fashion-mnist``,
  ``fashion-mnist-pairs``), :mod:`.cifar`
  (``cifar10``, ``cifar100``), :mod:`.imagefolder` (``imagefolder``).
* :mod:`.splits`: :func:`split_holdout`, :func:`bn_subset`, :func:`subset_order`.
* :mod:`.batches`: :class:`Augment`, :class:`TrainBatches`, :class:`EvalBatches` (everything random is a pure
  function of ``(seed, epoch, index)``).
"""

# The built-in readers register themselves when imported, and list_datasets() keeps the order of registration
# (the order of the data.dataset choices and of the valid names in error messages): fashion-mnist first.
from .fashion_mnist import FASHION_MNIST_CLASSES

# isort: split
from . import cifar  # noqa: F401  (registers cifar10 and cifar100)
from .base import DataError, Dataset, FolderDataset, ImageDataset
from .batches import Augment, EvalBatches, FixedCrops, MultiResolution, TrainBatches
from .imagefolder import IMAGE_EXTENSIONS, DataWarning, folder_stats, typical_size
from .registry import (
    default_hflip,
    default_root,
    list_datasets,
    load_dataset,
    mirror_safe,
    register_dataset,
    test_split_name,
)
from .splits import bn_subset, split_holdout, subset_order

__all__ = [
    "FASHION_MNIST_CLASSES",
    "IMAGE_EXTENSIONS",
    "Augment",
    "DataError",
    "DataWarning",
    "Dataset",
    "EvalBatches",
    "FixedCrops",
    "FolderDataset",
    "ImageDataset",
    "MultiResolution",
    "TrainBatches",
    "bn_subset",
    "default_hflip",
    "default_root",
    "folder_stats",
    "list_datasets",
    "load_dataset",
    "mirror_safe",
    "register_dataset",
    "split_holdout",
    "subset_order",
    "test_split_name",
    "typical_size",
]
