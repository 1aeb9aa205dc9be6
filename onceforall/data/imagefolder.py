"""Image folders (ImageNet-style ``root/{train,val}/<class>/<files>``), registered as ``imagefolder``.

Reading the folder lists the files (files sorted, subfolders followed) and checks them up front, so that nothing is
silently wrong and a run does not die hours in:

* classes are named by the folders of ``train/`` (sorted) and ``val/`` is mapped by name: a ``val/`` class that
  ``train/`` lacks is refused, ``train/`` classes missing from ``val/`` are reported (a :class:`DataWarning`);
* a class folder without images is refused with its path;
* every file's header is read (in threads; a few seconds per 100,000 files on a local disk): a file that is not a
  readable image is refused with its path before training starts.

The images are decoded lazily with PIL by :meth:`~.base.FolderDataset.load`, optionally in
``torch.utils.data.DataLoader`` workers. Split "test" reads ``root/val``.
"""

from __future__ import annotations

import os
import warnings
from concurrent.futures import ThreadPoolExecutor

import torch

from .base import FolderDataset, data_error
from .registry import register_dataset

__all__ = ["IMAGE_EXTENSIONS", "DataWarning", "check_image_headers", "folder_stats", "typical_size"]

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".ppm", ".pgm", ".bmp", ".tif", ".tiff", ".webp")


class DataWarning(UserWarning):
    """Something about the data that does not stop a run but that its user should know (one line)."""


def _folder_layout(root: str) -> str:
    return f"{root}/{{train,val}}/<class>/<image files>"


def _class_folders(folder: str) -> list[str]:
    return sorted(e.name for e in os.scandir(folder) if e.is_dir() and not e.name.startswith("."))


def _images_of(folder: str) -> list[str]:
    paths = []
    for dirpath, dirnames, filenames in sorted(os.walk(folder, followlinks=True)):
        dirnames.sort()
        paths += [os.path.join(dirpath, fn) for fn in sorted(filenames)
                  if fn.lower().endswith(IMAGE_EXTENSIONS) and not fn.startswith(".")]
    return paths


def _header_problem(path: str) -> str | None:
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as im:
            if im.width < 1 or im.height < 1:
                return "it has no pixels"
    except (OSError, ValueError, SyntaxError, UnidentifiedImageError, Image.DecompressionBombError) as e:
        return f"{type(e).__name__}: {e}"
    return None


def check_image_headers(paths: list[str], threads: int = 16) -> None:
    """Refuse, naming the first one, any file whose image header PIL cannot read (empty, truncated header, not an
    image, decompression bomb)."""
    with ThreadPoolExecutor(max_workers=threads) as pool:
        for path, problem in zip(paths, pool.map(_header_problem, paths, chunksize=256)):
            if problem is not None:
                raise data_error(f"imagefolder: {path} is not a readable image ({problem}); remove or replace it")


@register_dataset("imagefolder", layout=_folder_layout, test_name="val", hflip=False)
def _load_folder(root: str, split: str, image_size: int) -> FolderDataset:
    """The checked listing of ``root/train`` or ``root/val``; ``image_size`` is applied when the images are
    loaded."""
    layout = _folder_layout(root)
    train_dir = os.path.join(root, "train")
    folder = train_dir if split == "train" else os.path.join(root, "val")
    for f in (train_dir, folder):
        if not os.path.isdir(f):
            raise data_error(f"imagefolder: {f} not found; expected {layout}")
    classes = _class_folders(train_dir)  # the class index is always train/'s, whichever split is read
    if not classes:
        raise data_error(f"imagefolder: {train_dir} has no class folders; expected {layout}")
    present = _class_folders(folder)
    extra = [c for c in present if c not in classes]
    if extra:
        raise data_error(f"imagefolder: {folder} has classes that {train_dir} lacks: {', '.join(extra)}; a "
                         f"network trained on train/ cannot predict them")
    missing = [c for c in classes if c not in present]
    if missing:
        warnings.warn(f"imagefolder: {folder} has no folder for {len(missing)} of the {len(classes)} classes of "
                      f"train/ ({', '.join(missing[:5])}{', ...' if len(missing) > 5 else ''}); they are never "
                      "scored", DataWarning, stacklevel=2)
    samples = []
    for cls in present:
        paths = _images_of(os.path.join(folder, cls))
        if not paths:
            raise data_error(f"imagefolder: class folder {os.path.join(folder, cls)} holds no image files "
                             f"({', '.join(IMAGE_EXTENSIONS)}); remove it or add images")
        label = classes.index(cls)
        samples += [(p, label) for p in paths]
    check_image_headers([p for p, _ in samples])
    return FolderDataset(classes, samples, "imagefolder")


def _sample(ds: FolderDataset, n: int) -> list[int]:
    """A fixed, spread-out selection of at most ``n`` indices (the same on every machine and run)."""
    if len(ds) <= n:
        return list(range(len(ds)))
    return [int(i * len(ds) / n) for i in range(n)]


def typical_size(ds: FolderDataset, n: int = 200) -> int:
    """The median shorter side of ``n`` of the folder's images, rounded down to a multiple of 4 (at least 8):
    the training resolution of an image folder whose config does not set one."""
    from PIL import Image

    sides = []
    for i in _sample(ds, n):
        with Image.open(ds.samples[i][0]) as im:
            sides.append(min(im.size))
    sides.sort()
    return max(8, sides[len(sides) // 2] // 4 * 4)


def folder_stats(ds: FolderDataset, image_size: int, n: int = 1000) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """Per-channel mean and standard deviation (of pixel / 255) of ``n`` training images as evaluation loads them
    at ``image_size``: the normalization of an image folder whose config does not set one."""
    total = torch.zeros(3, dtype=torch.float64)
    total_sq = torch.zeros(3, dtype=torch.float64)
    count = 0
    for i in _sample(ds, n):
        x = ds.load(i, image_size, False).double().div_(255).flatten(1)
        total += x.sum(1)
        total_sq += (x * x).sum(1)
        count += x.shape[1]
    mean = total / count
    std = (total_sq / count - mean * mean).clamp_min(1e-12).sqrt()
    return tuple(round(float(v), 6) for v in mean), tuple(round(float(v), 6) for v in std)
