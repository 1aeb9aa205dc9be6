"""The registry of datasets (timm style: register a reader under a name, fail loudly with the valid names).

A reader is ``fn(root, split, image_size) -> Dataset``; it is registered with its layout (a function of the root
giving the human description of the expected files, used in every error message) and its default root. The built-in
readers (:mod:`.fashion_mnist`, :mod:`.cifar`, :mod:`.imagefolder`) register themselves when imported; the package
imports them in the order of :func:`list_datasets`: fashion-mnist, fashion-mnist-pairs, cifar10, cifar100,
imagefolder.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass

from .base import Dataset, data_error

__all__ = ["Reader", "default_hflip", "default_root", "list_datasets", "load_dataset", "mirror_safe",
           "register_dataset", "test_split_name"]

Reader = Callable[[str, str, int], Dataset]
"""``fn(root, split, image_size)``: split "train" or "test" of the dataset in the existing folder ``root``."""


@dataclass(frozen=True)
class _Entry:
    reader: Reader
    layout: Callable[[str], str]
    default_root: Callable[[], str | None]
    mirror_safe: bool
    test_name: str
    hflip: bool


_REGISTRY: dict[str, _Entry] = {}


def register_dataset(name: str, *, layout: Callable[[str], str],
                     default_root: str | Callable[[], str | None] | None = None,
                     mirror_safe: bool = True, test_name: str = "test",
                     hflip: bool | None = None) -> Callable[[Reader], Reader]:
    """Decorator registering a reader ``fn(root, split, image_size) -> Dataset`` under ``name``.

    layout: ``layout(root)`` describes the files expected under ``root`` for the error messages (it is called with
    ``"<root>"`` when no root is given). default_root: the folder used when :func:`load_dataset` gets no root, or a
    function returning it (read at each load, so it may look at the environment); None: a root is required.
    mirror_safe: False when a horizontal flip changes an image's class (the config then refuses data.hflip).
    test_name: what the dataset calls the split read as "test" (reports use it: ``val`` for image folders).
    hflip: whether training flips images when ``data.hflip`` is not set (None: ``mirror_safe``).
    The reader is only called with a validated split, image size and an existing folder.
    """
    if not isinstance(name, str) or not name:
        raise ValueError(f"dataset name: {name!r} is not valid; must be a non-empty string")
    if not callable(layout):
        raise TypeError(f"layout: {layout!r} is not valid; must be a function of the root returning a description")
    root_fn = default_root if callable(default_root) else (lambda: default_root)

    def deco(fn: Reader) -> Reader:
        if name in _REGISTRY:
            raise ValueError(f"dataset {name!r} is already registered")
        _REGISTRY[name] = _Entry(fn, layout, root_fn, mirror_safe, test_name,
                                 mirror_safe if hflip is None else hflip)
        return fn

    return deco


def list_datasets() -> list[str]:
    """Names of the registered datasets, in the order they were registered."""
    return list(_REGISTRY)


def _entry(name: str) -> _Entry:
    if not isinstance(name, str) or name not in _REGISTRY:
        raise data_error(f"dataset: {name!r} is not known; valid names: {', '.join(list_datasets())}")
    return _REGISTRY[name]


def mirror_safe(name: str) -> bool:
    """Whether a horizontal flip keeps the class of every image of dataset ``name``."""
    return _entry(name).mirror_safe


def default_hflip(name: str) -> bool:
    """Whether training on dataset ``name`` flips images when ``data.hflip`` is not set (image folders: no)."""
    return _entry(name).hflip


def test_split_name(name: str) -> str:
    """What dataset ``name`` calls its test split (``val`` for image folders): the name reports use."""
    return _entry(name).test_name


def default_root(name: str) -> str | None:
    """Default data folder of dataset ``name``; None when a root is required (cifar10, cifar100, imagefolder).

    fashion-mnist: ``$ONCEFORALL_FASHION_MNIST`` or /usr/share/datasets/fashion-mnist (Debian package
    dataset-fashion-mnist)."""
    return _entry(name).default_root()


def load_dataset(name: str, root: str | None, split: str, image_size: int) -> Dataset:
    """Load split "train" or "test" of dataset ``name`` from ``root`` (None: :func:`default_root`).

    In-memory datasets are brought to ``image_size`` once here (Fashion-MNIST: centered zero padding when
    image_size >= 28, else antialiased bilinear downscaling; CIFAR: antialiased bilinear resize when it is not 32).
    ``imagefolder`` returns a lazily decoded :class:`~.base.FolderDataset` (split "test" reads ``root/val``).
    Unknown names raise :class:`~.base.DataError` (a ValueError) listing the valid ones.
    """
    entry = _entry(name)
    if split not in ("train", "test"):
        raise ValueError(f"split: {split!r} is not valid; must be 'train' or 'test'")
    if not isinstance(image_size, int) or image_size < 1:
        raise ValueError(f"image_size: {image_size!r} is not valid; must be an int >= 1")
    if root is None:
        root = entry.default_root()
    if root is None:
        raise data_error(f"{name}: no root given; expected {entry.layout('<root>')} (set data.root)")
    root = os.fspath(root)
    if os.path.exists(root) and not os.path.isdir(root):
        raise data_error(f"{name}: data.root {root} is a file, not a folder; expected {entry.layout(root)}")
    if not os.path.isdir(root):
        raise data_error(f"{name}: {root} not found; expected {entry.layout(root)}")
    return entry.reader(root, split, image_size)
