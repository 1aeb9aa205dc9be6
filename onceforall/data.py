"""Datasets and deterministic minibatches.

Design:

* Small datasets (Fashion-MNIST, CIFAR-10/100) are decoded ONCE into a uint8 tensor ``(N, C, H, W)`` held in
  memory, already at the training image size. Augmentation (random crop with zero padding, horizontal flip)
  is done on a whole batch at once with tensor ops: the batch is padded once and every crop, flipped or not,
  is gathered with two ``torch.gather`` ops from per-sample row/column index tables (no per-image Python loop).
  On a 2-core machine a data loader whose worker processes compete with the model for the CPU is the
  bottleneck; the batched gather costs about a millisecond for 256 images and needs no worker process.
* Image folders (ImageNet-style ``root/{train,val}/<class>/<files>``) are decoded lazily with PIL, optionally in
  ``torch.utils.data.DataLoader`` workers.
* Everything random is a pure function of ``(seed, epoch, index)`` (seeds derived with SHA-256, never from
  torch's or Python's global RNG): the epoch permutation from ``(seed, epoch)``, the augmentation of a global
  batch from ``(seed, epoch, index)``. A resumed run therefore sees exactly the batches it would have seen, and
  every rank can materialise only its own rows of the same global batch (``rows``), which concatenate to the
  global batch bit for bit.

Every missing or malformed file raises :class:`DataError` with one line naming the path and the expected layout.
"""

from __future__ import annotations

import gzip
import hashlib
import math
import os
import pickle
import zlib
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

__all__ = [
    "DATASETS",
    "Augment",
    "DataError",
    "EvalBatches",
    "FolderDataset",
    "ImageDataset",
    "TrainBatches",
    "bn_subset",
    "default_root",
    "derive_seed",
    "load_dataset",
    "split_holdout",
]

DATASETS = ("fashion-mnist", "cifar10", "cifar100", "imagefolder")


class DataError(ValueError):
    """Missing or malformed data (one line: the path and the expected layout)."""


def _one_line(msg: str) -> str:
    return " ".join(msg.split("\n"))


def _error(msg: str) -> DataError:
    return DataError(_one_line(msg))


def derive_seed(*parts: object) -> int:
    """A 60-bit seed that is a pure function of ``parts`` (stable across processes and Python runs)."""
    return int(hashlib.sha256(":".join(str(p) for p in parts).encode()).hexdigest()[:15], 16)


def _generator(*parts: object) -> torch.Generator:
    return torch.Generator().manual_seed(derive_seed(*parts))


# --------------------------------------------------------------------------------------------------------------
# Datasets
# --------------------------------------------------------------------------------------------------------------

FASHION_MNIST_CLASSES = [
    "T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot",
]  # fmt: skip
# Pixel statistics (in [0, 1]) of the 60000 Fashion-MNIST training images at 28x28: mean and mean of squares.
# Zero padding to S x S scales both by 784 / S^2, so the statistics at any padded size follow exactly.
_FMNIST_MEAN, _FMNIST_MEAN_SQ = 0.2860405969887955, 0.20644534034103837
_CIFAR10_STATS = ((0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616))
_CIFAR100_STATS = ((0.5071, 0.4865, 0.4409), (0.2673, 0.2564, 0.2762))
_IMAGENET_STATS = ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225))
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".ppm", ".pgm", ".bmp", ".tif", ".tiff", ".webp")


@dataclass
class ImageDataset:
    """In-memory dataset (small datasets live in memory as tensors)."""

    images: torch.Tensor
    """uint8, (N, C, H, W), contiguous."""
    labels: torch.Tensor
    """int64, (N,)."""
    classes: list[str]
    mean: tuple[float, ...]
    """Per-channel mean of images / 255."""
    std: tuple[float, ...]
    name: str

    def __post_init__(self) -> None:
        if self.images.dtype != torch.uint8 or self.images.dim() != 4:
            raise ValueError(f"images: expected a uint8 (N, C, H, W) tensor, got {self.images.dtype} "
                             f"{tuple(self.images.shape)}")
        if self.labels.shape != (self.images.shape[0],):
            raise ValueError(f"labels: expected shape ({self.images.shape[0]},), got {tuple(self.labels.shape)}")
        self.images = self.images.contiguous()
        self.labels = self.labels.to(torch.int64)

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    @property
    def in_channels(self) -> int:
        return int(self.images.shape[1])

    @property
    def image_size(self) -> int:
        """Side of the stored images."""
        return int(self.images.shape[-1])

    def __len__(self) -> int:
        return int(self.images.shape[0])

    def subset(self, indices: torch.Tensor | Sequence[int]) -> ImageDataset:
        idx = torch.as_tensor(indices, dtype=torch.int64)
        return ImageDataset(self.images[idx].contiguous(), self.labels[idx].clone(), list(self.classes),
                            self.mean, self.std, self.name)


class FolderDataset:
    """Lazily decoded image folder (ImageNet, ImageNet-100, custom): ``samples`` is a list of (path, label)."""

    in_channels = 3
    mean = _IMAGENET_STATS[0]
    std = _IMAGENET_STATS[1]

    def __init__(self, classes: list[str], samples: list[tuple[str, int]], name: str = "imagefolder"):
        self.classes = list(classes)
        self.samples = list(samples)
        self.name = name

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    def __len__(self) -> int:
        return len(self.samples)

    def subset(self, indices: torch.Tensor | Sequence[int]) -> FolderDataset:
        idx = torch.as_tensor(indices, dtype=torch.int64).tolist()
        return FolderDataset(self.classes, [self.samples[i] for i in idx], self.name)

    def load(self, index: int, image_size: int, train: bool, generator: torch.Generator | None = None,
             hflip: bool = True) -> torch.Tensor:
        """Decode image ``index`` as a uint8 (3, image_size, image_size) tensor.

        train: RandomResizedCrop (scale 0.08..1, ratio 3/4..4/3) and, with ``hflip``, a random horizontal flip,
        all randomness drawn from ``generator``. Eval: resize the shorter side to round(image_size / 0.875), then
        center-crop image_size.
        """
        from PIL import Image

        path = self.samples[index][0]
        try:
            with Image.open(path) as src:
                im = src.convert("RGB")
        except (OSError, ValueError, SyntaxError, Image.DecompressionBombError) as e:
            raise _error(f"{self.name}: {path} is not a readable image ({type(e).__name__}: {e}); expected "
                         "image files under <root>/{train,val}/<class>/") from None
        width, height = im.size
        bilinear = Image.Resampling.BILINEAR
        if train:
            if generator is None:
                raise ValueError("FolderDataset.load(train=True) needs a generator")
            i, j, h, w = _random_resized_crop_params(height, width, generator)
            im = im.resize((image_size, image_size), bilinear, box=(j, i, j + w, i + h))
            if bool(torch.rand((), generator=generator) < 0.5) and hflip:
                im = im.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
        else:
            short = round(image_size / 0.875)
            if width <= height:
                new_w, new_h = short, int(short * height / width)
            else:
                new_w, new_h = int(short * width / height), short
            im = im.resize((new_w, new_h), bilinear)
            top = int(round((new_h - image_size) / 2.0))
            left = int(round((new_w - image_size) / 2.0))
            im = im.crop((left, top, left + image_size, top + image_size))
        arr = np.array(im, dtype=np.uint8, copy=True)  # (H, W, 3)
        return torch.from_numpy(arr).permute(2, 0, 1).contiguous()


def _random_resized_crop_params(height: int, width: int, g: torch.Generator,
                                scale: tuple[float, float] = (0.08, 1.0),
                                ratio: tuple[float, float] = (3 / 4, 4 / 3)) -> tuple[int, int, int, int]:
    """(top, left, h, w) of a RandomResizedCrop (torchvision's algorithm, randomness from ``g``)."""
    area = height * width
    log_ratio = (math.log(ratio[0]), math.log(ratio[1]))
    for _ in range(10):
        target_area = area * float(torch.empty(()).uniform_(scale[0], scale[1], generator=g))
        aspect = math.exp(float(torch.empty(()).uniform_(log_ratio[0], log_ratio[1], generator=g)))
        w = int(round(math.sqrt(target_area * aspect)))
        h = int(round(math.sqrt(target_area / aspect)))
        if 0 < w <= width and 0 < h <= height:
            i = int(torch.randint(0, height - h + 1, (), generator=g))
            j = int(torch.randint(0, width - w + 1, (), generator=g))
            return i, j, h, w
    in_ratio = width / height
    if in_ratio < ratio[0]:
        w, h = width, int(round(width / ratio[0]))
    elif in_ratio > ratio[1]:
        h, w = height, int(round(height * ratio[1]))
    else:
        w, h = width, height
    return (height - h) // 2, (width - w) // 2, h, w


def default_root(name: str) -> str | None:
    """Default data folder: ``$ONCEFORALL_FASHION_MNIST`` or /usr/share/datasets/fashion-mnist for fashion-mnist
    (Debian package dataset-fashion-mnist); None for the others (a root is required)."""
    _check_name(name)
    if name == "fashion-mnist":
        return os.environ.get("ONCEFORALL_FASHION_MNIST") or "/usr/share/datasets/fashion-mnist"
    return None


def _check_name(name: str) -> None:
    if name not in DATASETS:
        raise _error(f"dataset: {name!r} is not known; valid names: {', '.join(DATASETS)}")


def load_dataset(name: str, root: str | None, split: str, image_size: int) -> ImageDataset | FolderDataset:
    """Load split "train" or "test" of dataset ``name`` from ``root`` (None: :func:`default_root`).

    In-memory datasets are brought to ``image_size`` once here (Fashion-MNIST: centered zero padding when
    image_size >= 28, else antialiased bilinear downscaling; CIFAR: antialiased bilinear resize when it is not 32).
    ``imagefolder`` returns a lazily decoded :class:`FolderDataset` (split "test" reads ``root/val``).
    """
    _check_name(name)
    if split not in ("train", "test"):
        raise ValueError(f"split: {split!r} is not valid; must be 'train' or 'test'")
    if not isinstance(image_size, int) or image_size < 1:
        raise ValueError(f"image_size: {image_size!r} is not valid; must be an int >= 1")
    if root is None:
        root = default_root(name)
    if root is None:
        raise _error(f"{name}: no root given; expected {_LAYOUTS[name]('<root>')} (set data.root)")
    root = os.fspath(root)
    if not os.path.isdir(root):
        raise _error(f"{name}: {root} not found; expected {_LAYOUTS[name](root)}")
    if name == "fashion-mnist":
        return _load_fashion_mnist(root, split, image_size)
    if name in ("cifar10", "cifar100"):
        return _load_cifar(name, root, split, image_size)
    return _load_folder(root, split)


_FMNIST_FILES = {
    "train": ("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz"),
    "test": ("t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz"),
}


def _fmnist_layout(root: str) -> str:
    return (f"the four IDX .gz files of Fashion-MNIST ({', '.join(_FMNIST_FILES['train'] + _FMNIST_FILES['test'])})"
            f" under {root} (Debian package dataset-fashion-mnist)")


def _cifar_layout(name: str) -> Callable[[str], str]:
    def layout(root: str) -> str:
        if name == "cifar10":
            return (f"the CIFAR-10 binary version cifar-10-batches-bin/{{data_batch_1..5.bin,test_batch.bin}} or "
                    f"python version cifar-10-batches-py/{{data_batch_1..5,test_batch,batches.meta}} in or under "
                    f"{root}")
        return (f"the CIFAR-100 binary version cifar-100-binary/{{train.bin,test.bin}} or python version "
                f"cifar-100-python/{{train,test,meta}} in or under {root}")

    return layout


_LAYOUTS = {
    "fashion-mnist": _fmnist_layout,
    "cifar10": _cifar_layout("cifar10"),
    "cifar100": _cifar_layout("cifar100"),
    "imagefolder": lambda root: f"{root}/{{train,val}}/<class>/<image files>",
}


def _read_idx(path: str, ndim: int, layout: str) -> np.ndarray:
    """An uncompressed-by-gzip IDX file of unsigned bytes with ``ndim`` dimensions."""
    if not os.path.isfile(path):
        raise _error(f"fashion-mnist: {path} not found; expected {layout}")
    try:
        with gzip.open(path, "rb") as f:
            raw = f.read()
    except (OSError, EOFError, zlib.error) as e:
        raise _error(f"fashion-mnist: {path} is corrupt ({type(e).__name__}: {e}); expected {layout}") from None
    head = 4 + 4 * ndim
    if len(raw) < head or raw[:3] != b"\x00\x00\x08" or raw[3] != ndim:
        raise _error(f"fashion-mnist: {path} is not a {ndim}-d unsigned-byte IDX file (bad header); expected {layout}")
    dims = tuple(int.from_bytes(raw[4 + 4 * k: 8 + 4 * k], "big") for k in range(ndim))
    size = math.prod(dims)
    if len(raw) != head + size:
        raise _error(f"fashion-mnist: {path} is truncated or corrupt ({len(raw) - head} data bytes, header says "
                     f"{size} for shape {dims}); expected {layout}")
    return np.frombuffer(raw, dtype=np.uint8, offset=head).reshape(dims)


def _fmnist_stats(image_size: int) -> tuple[tuple[float], tuple[float]]:
    frac = 784 / image_size**2 if image_size >= 28 else 1.0
    mean, mean_sq = _FMNIST_MEAN * frac, _FMNIST_MEAN_SQ * frac
    return (mean,), (math.sqrt(mean_sq - mean * mean),)


def _load_fashion_mnist(root: str, split: str, image_size: int) -> ImageDataset:
    layout = _fmnist_layout(root)
    img_name, lbl_name = _FMNIST_FILES[split]
    images = _read_idx(os.path.join(root, img_name), 3, layout)
    labels = _read_idx(os.path.join(root, lbl_name), 1, layout)
    if images.shape[1:] != (28, 28) or images.shape[0] != labels.shape[0]:
        raise _error(f"fashion-mnist: {os.path.join(root, img_name)} holds images of shape {images.shape} for "
                     f"{labels.shape[0]} labels; expected N x 28 x 28 with N labels; expected {layout}")
    if labels.size and int(labels.max()) >= 10:
        raise _error(f"fashion-mnist: {os.path.join(root, lbl_name)} has label {int(labels.max())} >= 10; "
                     f"expected {layout}")
    x = torch.from_numpy(images.copy()).unsqueeze(1)
    if image_size >= 28:
        lo = (image_size - 28) // 2
        hi = image_size - 28 - lo
        x = F.pad(x, (lo, hi, lo, hi)) if image_size > 28 else x
    else:
        x = _resize_uint8(x, image_size)
    mean, std = _fmnist_stats(image_size)
    return ImageDataset(x.contiguous(), torch.from_numpy(labels.astype(np.int64)), list(FASHION_MNIST_CLASSES),
                        mean, std, "fashion-mnist")


def _resize_uint8(x: torch.Tensor, size: int, chunk: int = 2048) -> torch.Tensor:
    """Antialiased bilinear resize of a uint8 (N, C, H, W) tensor to (N, C, size, size), rounded back to uint8."""
    if x.shape[-1] == size and x.shape[-2] == size:
        return x
    out = torch.empty((x.shape[0], x.shape[1], size, size), dtype=torch.uint8)
    for s in range(0, x.shape[0], chunk):
        y = F.interpolate(x[s: s + chunk].float(), size=(size, size), mode="bilinear", align_corners=False,
                          antialias=True)
        out[s: s + chunk] = y.round_().clamp_(0, 255).to(torch.uint8)
    return out


# CIFAR ------------------------------------------------------------------------------------------------------

_CIFAR_SPECS = {
    # name: (binary folder, {split: files}, python folder, {split: files}, python meta, python label key, classes)
    "cifar10": ("cifar-10-batches-bin",
                {"train": [f"data_batch_{i}.bin" for i in range(1, 6)], "test": ["test_batch.bin"]},
                "cifar-10-batches-py",
                {"train": [f"data_batch_{i}" for i in range(1, 6)], "test": ["test_batch"]},
                "batches.meta", b"labels", 10),
    "cifar100": ("cifar-100-binary", {"train": ["train.bin"], "test": ["test.bin"]},
                 "cifar-100-python", {"train": ["train"], "test": ["test"]},
                 "meta", b"fine_labels", 100),
}


def _load_cifar(name: str, root: str, split: str, image_size: int) -> ImageDataset:
    bin_dir, bin_files, py_dir, py_files, _, _, _ = _CIFAR_SPECS[name]
    layout = _LAYOUTS[name](root)
    candidates = [(os.path.join(root, bin_dir), "binary", bin_files[split]), (root, "binary", bin_files[split]),
                  (os.path.join(root, py_dir), "python", py_files[split]), (root, "python", py_files[split])]
    partial = None
    for folder, fmt, files in candidates:
        present = [os.path.isfile(os.path.join(folder, f)) for f in files]
        if all(present):
            if fmt == "binary":
                images, labels, classes = _read_cifar_binary(name, folder, files, layout)
            else:
                images, labels, classes = _read_cifar_python(name, folder, files, layout)
            break
        if any(present) and partial is None:
            partial = os.path.join(folder, files[present.index(False)])
    else:
        if partial:
            raise _error(f"{name}: {partial} not found; expected {layout}")
        raise _error(f"{name}: no {split} files found in {root}; expected {layout}")
    x = torch.from_numpy(images)
    if image_size != 32:
        x = _resize_uint8(x, image_size)
    mean, std = _CIFAR10_STATS if name == "cifar10" else _CIFAR100_STATS
    return ImageDataset(x.contiguous(), torch.from_numpy(labels.astype(np.int64)), classes, mean, std, name)


def _default_classes(n: int) -> list[str]:
    return [str(i) for i in range(n)]


def _read_cifar_binary(name: str, folder: str, files: list[str], layout: str):
    num_classes = _CIFAR_SPECS[name][6]
    label_bytes = 1 if name == "cifar10" else 2  # cifar100: coarse label, fine label
    record = label_bytes + 3072
    images, labels = [], []
    for f in files:
        path = os.path.join(folder, f)
        try:
            with open(path, "rb") as fh:
                raw = fh.read()
        except OSError as e:
            raise _error(f"{name}: {path} is not readable ({e}); expected {layout}") from None
        if len(raw) == 0 or len(raw) % record:
            raise _error(f"{name}: {path} is truncated or corrupt ({len(raw)} bytes is not a positive multiple of "
                         f"the {record}-byte record: {label_bytes} label byte(s) + 3072 pixel bytes); "
                         f"expected {layout}")
        arr = np.frombuffer(raw, dtype=np.uint8).reshape(-1, record)
        lab = arr[:, label_bytes - 1]
        if int(lab.max()) >= num_classes:
            raise _error(f"{name}: {path} has label {int(lab.max())} >= {num_classes} (corrupt); expected {layout}")
        labels.append(lab)
        images.append(arr[:, label_bytes:].reshape(-1, 3, 32, 32))
    names_file = os.path.join(folder, "batches.meta.txt" if name == "cifar10" else "fine_label_names.txt")
    classes = _default_classes(num_classes)
    if os.path.isfile(names_file):
        try:
            with open(names_file, encoding="utf-8", errors="replace") as fh:
                lines = [ln.strip() for ln in fh.read().splitlines() if ln.strip()]
        except OSError:
            lines = []
        if len(lines) == num_classes:
            classes = lines
    return np.concatenate(images), np.concatenate(labels), classes


class _RestrictedUnpickler(pickle.Unpickler):
    """Unpickler that can only rebuild dicts/lists/bytes/ints and numpy arrays: every other global is refused, so
    loading can never call anything but numpy's array/dtype reconstructors and a latin1 text-to-bytes encoder."""

    def __init__(self, file, path: str, what: str):
        super().__init__(file, encoding="bytes")
        self._path = path
        self._what = what

    def find_class(self, module: str, name: str):
        obj = _allowed_globals().get((module, name))
        if obj is None:
            raise _error(f"{self._what}: {self._path} refers to {module}.{name}, which a CIFAR pickle never "
                         "needs; refusing to load it (only numpy arrays, dicts, lists and bytes are allowed)")
        return obj


_ALLOWED: dict | None = None


def _latin1_encode(text: str, encoding: str = "latin1") -> bytes:
    if not isinstance(text, str) or encoding.lower().replace("-", "").replace("_", "") not in ("latin1", "iso88591"):
        raise pickle.UnpicklingError(f"_codecs.encode is only allowed for latin1 text, not {encoding!r}")
    return text.encode("latin1")


def _allowed_globals() -> dict:
    global _ALLOWED
    if _ALLOWED is None:
        try:
            from numpy._core import multiarray, numeric  # numpy >= 2
        except ImportError:  # pragma: no cover - numpy 1.x
            from numpy.core import multiarray, numeric
        # Dicts, lists, ints and py2 strings are built by opcodes, without globals; a protocol-2 pickle written by
        # Python 3 stores bytes as _codecs.encode(text, "latin1").
        allowed = {("_codecs", "encode"): _latin1_encode}
        for mod in ("numpy.core", "numpy._core"):
            allowed[(f"{mod}.multiarray", "_reconstruct")] = multiarray._reconstruct
            if hasattr(numeric, "_frombuffer"):  # protocol-5 pickles of arrays
                allowed[(f"{mod}.numeric", "_frombuffer")] = numeric._frombuffer
        allowed[("numpy", "ndarray")] = np.ndarray
        allowed[("numpy", "dtype")] = np.dtype
        _ALLOWED = allowed
    return _ALLOWED


def _load_pickle(name: str, path: str, layout: str):
    try:
        with open(path, "rb") as fh:
            return _RestrictedUnpickler(fh, path, name).load()
    except DataError:
        raise
    except Exception as e:  # truncated or corrupt pickles raise many kinds of errors
        raise _error(f"{name}: {path} is truncated or corrupt ({type(e).__name__}: {e}); expected {layout}") from None


def _read_cifar_python(name: str, folder: str, files: list[str], layout: str):
    _, _, _, _, meta_file, label_key, num_classes = _CIFAR_SPECS[name]
    images, labels = [], []
    for f in files:
        path = os.path.join(folder, f)
        d = _load_pickle(name, path, layout)
        data = d.get(b"data", d.get("data")) if isinstance(d, dict) else None
        lab = d.get(label_key, d.get(label_key.decode())) if isinstance(d, dict) else None
        bad = None
        if not isinstance(data, np.ndarray) or data.dtype != np.uint8 or data.ndim != 2 or data.shape[1] != 3072:
            bad = f"b'data' is not a uint8 N x 3072 array ({getattr(data, 'dtype', type(data).__name__)})"
        else:
            try:
                lab = np.asarray(lab, dtype=np.int64)
            except (TypeError, ValueError):
                lab = None
            if lab is None or lab.shape != (data.shape[0],):
                bad = f"{label_key!r} is not a list of {data.shape[0]} ints"
            elif lab.size and (int(lab.min()) < 0 or int(lab.max()) >= num_classes):
                bad = f"{label_key!r} has labels outside 0..{num_classes - 1}"
        if bad:
            raise _error(f"{name}: {path} is corrupt: {bad}; expected {layout}")
        images.append(data.reshape(-1, 3, 32, 32))
        labels.append(lab)
    classes = _default_classes(num_classes)
    meta_path = os.path.join(folder, meta_file)
    if os.path.isfile(meta_path):
        meta = _load_pickle(name, meta_path, layout)
        key = b"label_names" if name == "cifar10" else b"fine_label_names"
        names = meta.get(key, meta.get(key.decode())) if isinstance(meta, dict) else None
        if isinstance(names, list) and len(names) == num_classes:
            classes = [n.decode("utf-8", "replace") if isinstance(n, bytes) else str(n) for n in names]
    return np.ascontiguousarray(np.concatenate(images)), np.concatenate(labels), classes


# Image folders ----------------------------------------------------------------------------------------------


def _load_folder(root: str, split: str) -> FolderDataset:
    layout = _LAYOUTS["imagefolder"](root)
    folder = os.path.join(root, "train" if split == "train" else "val")
    if not os.path.isdir(folder):
        raise _error(f"imagefolder: {folder} not found; expected {layout}")
    classes = sorted(e.name for e in os.scandir(folder) if e.is_dir() and not e.name.startswith("."))
    if not classes:
        raise _error(f"imagefolder: {folder} has no class folders; expected {layout}")
    samples = []
    for label, cls in enumerate(classes):
        for dirpath, dirnames, filenames in sorted(os.walk(os.path.join(folder, cls), followlinks=True)):
            dirnames.sort()
            for fn in sorted(filenames):
                if fn.lower().endswith(IMAGE_EXTENSIONS) and not fn.startswith("."):
                    samples.append((os.path.join(dirpath, fn), label))
    if not samples:
        raise _error(f"imagefolder: {folder} has no image files ({', '.join(IMAGE_EXTENSIONS)}); expected {layout}")
    return FolderDataset(classes, samples, "imagefolder")


# --------------------------------------------------------------------------------------------------------------
# Splits and subsets
# --------------------------------------------------------------------------------------------------------------

Dataset = ImageDataset | FolderDataset


def split_holdout(ds: Dataset, holdout: int, seed: int) -> tuple[Dataset, Dataset | None]:
    """Deterministic random split into (train, holdout) with ``holdout`` images removed from train.

    holdout=0 returns (ds, None). Both parts keep the original order of their images.
    """
    n = len(ds)
    if holdout == 0:
        return ds, None
    if holdout < 0 or holdout >= n:
        raise _error(f"val_split: {holdout} is not valid; the {ds.name} training set has {n} images, so it must be "
                     f"in 0..{n - 1}")
    perm = torch.randperm(n, generator=_generator(seed, "holdout", n))
    held = perm[:holdout].sort().values
    kept = perm[holdout:].sort().values
    return ds.subset(kept), ds.subset(held)


def bn_subset(ds: Dataset, num_images: int, seed: int) -> Dataset:
    """A fixed random subset of min(num_images, len(ds)) images, deterministic from ``seed``.

    The images stay in random order, so consecutive batches are not grouped by class (image folders are)."""
    if num_images < 1:
        raise ValueError(f"num_images: {num_images} is not valid; must be >= 1")
    n = len(ds)
    perm = torch.randperm(n, generator=_generator(seed, "bn", n))
    return ds.subset(perm[: min(num_images, n)])


# --------------------------------------------------------------------------------------------------------------
# Batches
# --------------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Augment:
    crop_padding: int = 4
    """Random crop with this zero padding (in-memory datasets); 0 disables."""
    hflip: bool = True
    """Random horizontal flip."""


def _normalize(x: torch.Tensor, mean: Sequence[float], std: Sequence[float]) -> torch.Tensor:
    """uint8 (b, C, H, W) -> float32 ((x / 255 - mean) / std), channels_last."""
    x = x.contiguous(memory_format=torch.channels_last)
    c = x.shape[1]
    scale = torch.tensor([1.0 / (255.0 * s) for s in std], dtype=torch.float32).view(1, c, 1, 1)
    bias = torch.tensor([-m / s for m, s in zip(mean, std)], dtype=torch.float32).view(1, c, 1, 1)
    out = x.to(torch.float32)
    return out.mul_(scale).add_(bias).contiguous(memory_format=torch.channels_last)


def _collate(items: list[tuple[torch.Tensor, int]]) -> tuple[torch.Tensor, torch.Tensor]:
    return torch.stack([x for x, _ in items]), torch.tensor([y for _, y in items], dtype=torch.int64)


class _FolderTrainItems(torch.utils.data.Dataset):
    """Position ``pos`` of epoch ``epoch``: image perm[pos], augmented from a generator seeded (seed, epoch, pos)."""

    def __init__(self, ds: FolderDataset, perm: list[int], seed: int, epoch: int, image_size: int, hflip: bool):
        self.ds, self.perm, self.seed, self.epoch = ds, perm, seed, epoch
        self.image_size, self.hflip = image_size, hflip

    def __len__(self) -> int:
        return len(self.perm)

    def __getitem__(self, pos: int) -> tuple[torch.Tensor, int]:
        i = self.perm[pos]
        g = _generator(self.seed, self.epoch, "sample", pos)
        return self.ds.load(i, self.image_size, True, g, hflip=self.hflip), self.ds.samples[i][1]


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
                 drop_last: bool = True, workers: int = 0):
        if batch_size < 1:
            raise ValueError(f"batch_size: {batch_size} is not valid; must be >= 1")
        n = len(ds)
        if n == 0:
            raise _error(f"{ds.name}: the training set is empty")
        if drop_last and n < batch_size:
            raise _error(f"batch_size: {batch_size} is larger than the {n} training images of {ds.name}; lower "
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
        self.steps_per_epoch = n // batch_size if drop_last else -(-n // batch_size)
        self._perm_cache: tuple[int, torch.Tensor] | None = None

    def __len__(self) -> int:
        return self.steps_per_epoch

    def permutation(self, epoch: int) -> torch.Tensor:
        """The order of the images in epoch ``epoch`` (randperm seeded from (seed, epoch))."""
        if self._perm_cache is None or self._perm_cache[0] != epoch:
            self._perm_cache = (epoch, torch.randperm(len(self.ds), generator=_generator(self.seed, "perm", epoch)))
        return self._perm_cache[1]

    def _positions(self, index: int) -> tuple[int, int]:
        if not 0 <= index < self.steps_per_epoch:
            raise IndexError(f"batch index {index} is out of range 0..{self.steps_per_epoch - 1}")
        start = index * self.batch_size
        return start, min(start + self.batch_size, len(self.ds))

    def batch(self, epoch: int, index: int, rows: slice | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """The ``index``-th global batch of epoch ``epoch`` (only ``rows`` of it; None: all): x float32 normalised,
        (b, C, image_size, image_size), channels_last; y int64."""
        rows = _check_rows(rows)
        start, stop = self._positions(index)
        if isinstance(self.ds, ImageDataset):
            return self._memory_batch(epoch, index, start, stop, rows)
        positions = list(range(start, stop))[rows]
        if self.workers > 0 and positions:
            return next(iter(self._folder_loader(epoch, [positions])))
        items = _FolderTrainItems(self.ds, self.permutation(epoch).tolist(), self.seed, epoch, self.image_size,
                                  self.augment.hflip)
        return self._finish_folder(_collate([items[p] for p in positions]) if positions else self._empty())

    def _empty(self) -> tuple[torch.Tensor, torch.Tensor]:
        c, s = self.ds.in_channels, self.image_size
        return torch.empty((0, c, s, s), dtype=torch.uint8), torch.empty((0,), dtype=torch.int64)

    def _finish_folder(self, xy: tuple[torch.Tensor, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        x, y = xy
        return _normalize(x, self.ds.mean, self.ds.std), y

    def _folder_loader(self, epoch: int, batches: list[list[int]]) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        items = _FolderTrainItems(self.ds, self.permutation(epoch).tolist(), self.seed, epoch, self.image_size,
                                  self.augment.hflip)
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
        g = _generator(self.seed, epoch, index)
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
            x = _resize_uint8(x, self.image_size)
        return _normalize(x, ds.mean, ds.std), labels

    def epoch_batches(self, epoch: int, start: int = 0,
                      rows: slice | None = None) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """Batches ``start``..steps_per_epoch-1 of epoch ``epoch`` (image folders: prefetched by the DataLoader)."""
        rows = _check_rows(rows)
        if isinstance(self.ds, FolderDataset) and self.workers > 0:
            batches = [list(range(*self._positions(i)))[rows] for i in range(start, self.steps_per_epoch)]
            yield from self._folder_loader(epoch, [b for b in batches if b])
            return
        for i in range(start, self.steps_per_epoch):
            yield self.batch(epoch, i, rows)


class EvalBatches:
    """Fixed-order, un-augmented batches (validation/test, and the BN-recalibration subset)."""

    def __init__(self, ds: Dataset, batch_size: int, image_size: int, workers: int = 0):
        if batch_size < 1:
            raise ValueError(f"batch_size: {batch_size} is not valid; must be >= 1")
        self.ds = ds
        self.batch_size = batch_size
        self.image_size = image_size
        self.workers = workers

    def __len__(self) -> int:
        return -(-len(self.ds) // self.batch_size)

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        ds = self.ds
        if isinstance(ds, ImageDataset):
            for s in range(0, len(ds), self.batch_size):
                x = _resize_uint8(ds.images[s: s + self.batch_size], self.image_size)
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
