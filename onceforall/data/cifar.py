"""CIFAR-10 and CIFAR-100 in their official binary or python versions, registered as ``cifar10`` and ``cifar100``.

The 32x32 images are decoded ONCE into an in-memory uint8 tensor ``(N, 3, S, S)`` at the training size S
(antialiased bilinear resize when S is not 32). The python version is read through a restricted unpickler that can
only rebuild dicts, lists, bytes, ints and numpy arrays: a pickle that refers to anything else is refused unread.
"""

from __future__ import annotations

import os
import pickle
from collections.abc import Callable

import numpy as np
import torch

from .base import DataError, ImageDataset, data_error, resize_uint8
from .registry import register_dataset

__all__: list[str] = []

_CIFAR10_STATS = ((0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616))
_CIFAR100_STATS = ((0.5071, 0.4865, 0.4409), (0.2673, 0.2564, 0.2762))


def _cifar_layout(name: str) -> Callable[[str], str]:
    def layout(root: str) -> str:
        if name == "cifar10":
            return (f"the CIFAR-10 binary version cifar-10-batches-bin/{{data_batch_1..5.bin,test_batch.bin}} or "
                    f"python version cifar-10-batches-py/{{data_batch_1..5,test_batch,batches.meta}} in or under "
                    f"{root}")
        return (f"the CIFAR-100 binary version cifar-100-binary/{{train.bin,test.bin}} or python version "
                f"cifar-100-python/{{train,test,meta}} in or under {root}")

    return layout


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
    layout = _cifar_layout(name)(root)
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
            raise data_error(f"{name}: {partial} not found; expected {layout}")
        raise data_error(f"{name}: no {split} files found in {root}; expected {layout}")
    x = torch.from_numpy(images)
    if image_size != 32:
        x = resize_uint8(x, image_size)
    mean, std = _CIFAR10_STATS if name == "cifar10" else _CIFAR100_STATS
    steps = [{"op": "resize", "size": image_size, "antialias": True}] if image_size != 32 else []
    return ImageDataset(x.contiguous(), torch.from_numpy(labels.astype(np.int64)), classes, mean, std, name, steps)


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
            raise data_error(f"{name}: {path} is not readable ({e}); expected {layout}") from None
        if len(raw) == 0 or len(raw) % record:
            raise data_error(f"{name}: {path} is truncated or corrupt ({len(raw)} bytes is not a positive multiple "
                             f"of the {record}-byte record: {label_bytes} label byte(s) + 3072 pixel bytes); "
                             f"expected {layout}")
        arr = np.frombuffer(raw, dtype=np.uint8).reshape(-1, record)
        lab = arr[:, label_bytes - 1]
        if int(lab.max()) >= num_classes:
            raise data_error(f"{name}: {path} has label {int(lab.max())} >= {num_classes} (corrupt); "
                             f"expected {layout}")
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
            raise data_error(f"{self._what}: {self._path} refers to {module}.{name}, which a CIFAR pickle never "
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
        raise data_error(f"{name}: {path} is truncated or corrupt ({type(e).__name__}: {e}); "
                         f"expected {layout}") from None


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
            raise data_error(f"{name}: {path} is corrupt: {bad}; expected {layout}")
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


@register_dataset("cifar10", layout=_cifar_layout("cifar10"))
def _load_cifar10(root: str, split: str, image_size: int) -> ImageDataset:
    return _load_cifar("cifar10", root, split, image_size)


@register_dataset("cifar100", layout=_cifar_layout("cifar100"))
def _load_cifar100(root: str, split: str, image_size: int) -> ImageDataset:
    return _load_cifar("cifar100", root, split, image_size)
