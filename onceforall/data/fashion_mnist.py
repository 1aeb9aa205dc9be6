"""Fashion-MNIST from its four gzipped IDX files (Debian package dataset-fashion-mnist), registered as
``fashion-mnist``.

The 28x28 images are decoded ONCE into an in-memory uint8 tensor ``(N, 1, S, S)`` at the training size S: centered
zero padding when S >= 28, antialiased bilinear downscaling below. The normalisation statistics follow exactly from
those of the 28x28 images.
"""

from __future__ import annotations

import gzip
import math
import os
import zlib

import numpy as np
import torch
import torch.nn.functional as F

from .base import ImageDataset, data_error, resize_uint8, seeded_generator
from .registry import register_dataset

__all__ = ["FASHION_MNIST_CLASSES"]

FASHION_MNIST_CLASSES = [
    "T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot",
]  # fmt: skip
# Pixel statistics (in [0, 1]) of the 60000 Fashion-MNIST training images at 28x28: mean and mean of squares.
# Zero padding to S x S scales both by 784 / S^2, so the statistics at any padded size follow exactly.
_FMNIST_MEAN, _FMNIST_MEAN_SQ = 0.2860405969887955, 0.20644534034103837

_FMNIST_FILES = {
    "train": ("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz"),
    "test": ("t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz"),
}


def _fmnist_layout(root: str) -> str:
    return (f"the four IDX .gz files of Fashion-MNIST ({', '.join(_FMNIST_FILES['train'] + _FMNIST_FILES['test'])})"
            f" under {root} (Debian package dataset-fashion-mnist)")


def _fmnist_default_root() -> str:
    return os.environ.get("ONCEFORALL_FASHION_MNIST") or "/usr/share/datasets/fashion-mnist"


def _read_idx(path: str, ndim: int, layout: str) -> np.ndarray:
    """An uncompressed-by-gzip IDX file of unsigned bytes with ``ndim`` dimensions."""
    if not os.path.isfile(path):
        raise data_error(f"fashion-mnist: {path} not found; expected {layout}")
    try:
        with gzip.open(path, "rb") as f:
            raw = f.read()
    except (OSError, EOFError, zlib.error) as e:
        raise data_error(f"fashion-mnist: {path} is corrupt ({type(e).__name__}: {e}); expected {layout}") from None
    head = 4 + 4 * ndim
    if len(raw) < head or raw[:3] != b"\x00\x00\x08" or raw[3] != ndim:
        raise data_error(f"fashion-mnist: {path} is not a {ndim}-d unsigned-byte IDX file (bad header); "
                         f"expected {layout}")
    dims = tuple(int.from_bytes(raw[4 + 4 * k: 8 + 4 * k], "big") for k in range(ndim))
    size = math.prod(dims)
    if len(raw) != head + size:
        raise data_error(f"fashion-mnist: {path} is truncated or corrupt ({len(raw) - head} data bytes, header says "
                         f"{size} for shape {dims}); expected {layout}")
    return np.frombuffer(raw, dtype=np.uint8, offset=head).reshape(dims)


def _fmnist_stats(image_size: int) -> tuple[tuple[float], tuple[float]]:
    frac = 784 / image_size**2 if image_size >= 28 else 1.0
    mean, mean_sq = _FMNIST_MEAN * frac, _FMNIST_MEAN_SQ * frac
    return (mean,), (math.sqrt(mean_sq - mean * mean),)


def _load_fmnist_split(root: str, split: str) -> tuple[np.ndarray, np.ndarray]:
    layout = _fmnist_layout(root)
    img_name, lbl_name = _FMNIST_FILES[split]
    images = _read_idx(os.path.join(root, img_name), 3, layout)
    labels = _read_idx(os.path.join(root, lbl_name), 1, layout)
    if images.shape[1:] != (28, 28) or images.shape[0] != labels.shape[0]:
        raise data_error(f"fashion-mnist: {os.path.join(root, img_name)} holds images of shape {images.shape} for "
                         f"{labels.shape[0]} labels; expected N x 28 x 28 with N labels; expected {layout}")
    if labels.size and int(labels.max()) >= 10:
        raise data_error(f"fashion-mnist: {os.path.join(root, lbl_name)} has label {int(labels.max())} >= 10; "
                         f"expected {layout}")
    return images, labels


@register_dataset("fashion-mnist", layout=_fmnist_layout, default_root=_fmnist_default_root)
def _load_fashion_mnist(root: str, split: str, image_size: int) -> ImageDataset:
    images, labels = _load_fmnist_split(root, split)
    x = torch.from_numpy(images.copy()).unsqueeze(1)
    if image_size >= 28:
        lo = (image_size - 28) // 2
        hi = image_size - 28 - lo
        x = F.pad(x, (lo, hi, lo, hi)) if image_size > 28 else x
        steps = [{"op": "center_pad", "size": image_size}] if image_size > 28 else []
    else:
        x = resize_uint8(x, image_size)
        steps = [{"op": "resize", "size": image_size, "antialias": True}]
    mean, std = _fmnist_stats(image_size)
    return ImageDataset(x.contiguous(), torch.from_numpy(labels.astype(np.int64)), list(FASHION_MNIST_CLASSES),
                        mean, std, "fashion-mnist", steps)


# --- fashion-mnist-pairs: a harder task from the same files ---------------------------------------------------------
# Two items side by side, each squeezed to S x S/2, class 10 * left + right: 100 classes. A subnet must
# recognise both items, so its accuracy is about the product of two single-item accuracies and differences in
# capacity show about twice as large as on Fashion-MNIST itself (benchmarks/capacity.py measures it). Each split
# pairs every image of the split once as the left item with a fixed random partner (seeded; the same on every
# machine), so the splits keep their sizes (60,000 and 10,000) and no test item is seen in training. Flips would
# swap the items (another class): the config refuses data.hflip=true with this dataset.

def _pairs_classes() -> list[str]:
    return [f"{a}|{b}" for a in FASHION_MNIST_CLASSES for b in FASHION_MNIST_CLASSES]


def _pair_images(images: np.ndarray, labels: np.ndarray, split: str, image_size: int) -> tuple[torch.Tensor,
                                                                                                torch.Tensor]:
    n = images.shape[0]
    partner = torch.randperm(n, generator=seeded_generator("fashion-mnist-pairs", split))
    x = torch.from_numpy(images.copy()).unsqueeze(1)  # (n, 1, 28, 28)
    half = image_size // 2  # each item squeezed into its half on its own: no blur across the seam
    out = torch.cat([resize_uint8(x, (image_size, half)), resize_uint8(x[partner], (image_size, image_size - half))],
                    dim=3)
    lab = torch.from_numpy(labels.astype(np.int64))
    return out, 10 * lab + lab[partner]


@register_dataset("fashion-mnist-pairs", layout=_fmnist_layout, default_root=_fmnist_default_root, mirror_safe=False)
def _load_fashion_mnist_pairs(root: str, split: str, image_size: int) -> ImageDataset:
    images, labels = _load_fmnist_split(root, split)
    x, y = _pair_images(images, labels, split, image_size)
    # normalisation from the paired training images at this size (the test split uses the training statistics)
    train = x if split == "train" else _pair_images(*_load_fmnist_split(root, "train"), "train", image_size)[0]
    v = train.double() / 255
    mean, std = float(v.mean()), float(v.std())
    return ImageDataset(x.contiguous(), y, _pairs_classes(), (mean,), (std,), "fashion-mnist-pairs",
                        [{"op": "side_by_side", "size": image_size}])
