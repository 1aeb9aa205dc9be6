"""Image folders (ImageNet-style ``root/{train,val}/<class>/<files>``), registered as ``imagefolder``.

Reading the folder only lists the files (classes sorted by name, files sorted, subfolders followed): the images are
decoded lazily with PIL by :meth:`~.base.FolderDataset.load`, optionally in ``torch.utils.data.DataLoader``
workers. Split "test" reads ``root/val``.
"""

from __future__ import annotations

import os

from .base import FolderDataset, data_error
from .registry import register_dataset

__all__ = ["IMAGE_EXTENSIONS"]

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".ppm", ".pgm", ".bmp", ".tif", ".tiff", ".webp")


def _folder_layout(root: str) -> str:
    return f"{root}/{{train,val}}/<class>/<image files>"


@register_dataset("imagefolder", layout=_folder_layout)
def _load_folder(root: str, split: str, image_size: int) -> FolderDataset:
    """The listing of ``root/train`` or ``root/val``; ``image_size`` is applied when the images are loaded."""
    layout = _folder_layout(root)
    folder = os.path.join(root, "train" if split == "train" else "val")
    if not os.path.isdir(folder):
        raise data_error(f"imagefolder: {folder} not found; expected {layout}")
    classes = sorted(e.name for e in os.scandir(folder) if e.is_dir() and not e.name.startswith("."))
    if not classes:
        raise data_error(f"imagefolder: {folder} has no class folders; expected {layout}")
    samples = []
    for label, cls in enumerate(classes):
        for dirpath, dirnames, filenames in sorted(os.walk(os.path.join(folder, cls), followlinks=True)):
            dirnames.sort()
            for fn in sorted(filenames):
                if fn.lower().endswith(IMAGE_EXTENSIONS) and not fn.startswith("."):
                    samples.append((os.path.join(dirpath, fn), label))
    if not samples:
        raise data_error(f"imagefolder: {folder} has no image files ({', '.join(IMAGE_EXTENSIONS)}); "
                         f"expected {layout}")
    return FolderDataset(classes, samples, "imagefolder")
