"""Tests of onceforall.data: loaders (real Fashion-MNIST when installed, CIFAR files written in the official
formats, image folders), error messages, and the deterministic batched augmentation."""

from __future__ import annotations

import gzip
import os
import pickle
import struct

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from onceforall.core.seeds import derive_seed
from onceforall.data import (
    FASHION_MNIST_CLASSES,
    Augment,
    DataError,
    EvalBatches,
    FolderDataset,
    ImageDataset,
    TrainBatches,
    bn_subset,
    cifar,
    default_hflip,
    default_root,
    list_datasets,
    load_dataset,
    mirror_safe,
    register_dataset,
    registry,
    split_holdout,
)

FMNIST_ROOT = "/usr/share/datasets/fashion-mnist"
FMNIST_FILES = ("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz", "t10k-images-idx3-ubyte.gz",
                "t10k-labels-idx1-ubyte.gz")
HAVE_FMNIST = all(os.path.isfile(os.path.join(FMNIST_ROOT, f)) for f in FMNIST_FILES)
needs_fmnist = pytest.mark.skipif(not HAVE_FMNIST, reason=f"Fashion-MNIST is not installed in {FMNIST_ROOT} "
                                  "(Debian package dataset-fashion-mnist)")


def _assert_one_line_error(exc_info, *needles: str) -> str:
    msg = str(exc_info.value)
    assert "\n" not in msg, msg
    for needle in needles:
        assert needle in msg, f"{needle!r} not in {msg!r}"
    return msg


# ---------------------------------------------------------------------------------------------------------------
# Fashion-MNIST (real files)
# ---------------------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def fmnist_train() -> ImageDataset:
    if not HAVE_FMNIST:
        pytest.skip(f"Fashion-MNIST is not installed in {FMNIST_ROOT} (Debian package dataset-fashion-mnist)")
    return load_dataset("fashion-mnist", FMNIST_ROOT, "train", 32)


@pytest.fixture(scope="module")
def fmnist_test() -> ImageDataset:
    if not HAVE_FMNIST:
        pytest.skip(f"Fashion-MNIST is not installed in {FMNIST_ROOT} (Debian package dataset-fashion-mnist)")
    return load_dataset("fashion-mnist", FMNIST_ROOT, "test", 32)


def _raw_idx(path: str) -> np.ndarray:
    with gzip.open(path) as f:
        raw = f.read()
    ndim = raw[3]
    dims = struct.unpack(f">{ndim}I", raw[4: 4 + 4 * ndim])
    return np.frombuffer(raw, np.uint8, offset=4 + 4 * ndim).reshape(dims)


@needs_fmnist
def test_fashion_mnist_real_files(fmnist_train, fmnist_test):
    for ds, n, prefix in ((fmnist_train, 60000, "train"), (fmnist_test, 10000, "t10k")):
        assert len(ds) == n and ds.images.shape == (n, 1, 32, 32) and ds.images.dtype == torch.uint8
        assert ds.images.is_contiguous() and ds.labels.dtype == torch.int64
        assert ds.num_classes == 10 and len(ds.classes) == 10 and ds.in_channels == 1 and ds.name == "fashion-mnist"
        assert int(ds.labels.min()) == 0 and int(ds.labels.max()) == 9
        # The 28x28 image is centered with a 2-pixel zero border.
        raw = _raw_idx(os.path.join(FMNIST_ROOT, f"{prefix}-images-idx3-ubyte.gz"))
        assert torch.equal(ds.images[:, 0, 2:30, 2:30], torch.from_numpy(raw.copy()))
        border = ds.images.clone()
        border[:, :, 2:30, 2:30] = 0
        assert int(border.sum()) == 0
        labels = _raw_idx(os.path.join(FMNIST_ROOT, f"{prefix}-labels-idx1-ubyte.gz"))
        assert torch.equal(ds.labels, torch.from_numpy(labels.astype(np.int64)))
    assert default_root("fashion-mnist") in (FMNIST_ROOT, os.environ.get("ONCEFORALL_FASHION_MNIST"))


@needs_fmnist
def test_fashion_mnist_small_size_resizes(fmnist_test):
    small = load_dataset("fashion-mnist", FMNIST_ROOT, "test", 16)
    assert small.images.shape == (10000, 1, 16, 16) and small.images.dtype == torch.uint8
    ref = F.interpolate(fmnist_test.images[:8, :, 2:30, 2:30].float(), size=(16, 16), mode="bilinear",
                        antialias=True, align_corners=False)
    assert (small.images[:8].float() - ref).abs().max() <= 0.5 + 1e-4


@needs_fmnist
def test_fashion_mnist_pairs(fmnist_test):
    """Every test item is the left item of one pair, its partner a fixed permutation of the split; class
    10 * left + right; the 28 x 56 canvas is brought to S x S; test normalised with the training statistics."""
    pairs = load_dataset("fashion-mnist-pairs", FMNIST_ROOT, "test", 28)
    again = load_dataset("fashion-mnist-pairs", FMNIST_ROOT, "test", 28)
    assert torch.equal(pairs.images, again.images) and torch.equal(pairs.labels, again.labels)
    assert pairs.images.shape == (10000, 1, 28, 28) and pairs.num_classes == 100
    left = fmnist_test.labels  # the single-item split is padded to 32: its centre 28 x 28 is the raw image
    raw = fmnist_test.images[:, :, 2:30, 2:30]
    assert torch.equal(pairs.labels // 10, left)
    right = pairs.labels % 10
    # each item squeezed into its half on its own; find each pair's partner by its right half, check its label
    squeezed = F.interpolate(raw.float(), size=(28, 14), mode="bilinear", antialias=True, align_corners=False)
    assert (pairs.images[:, :, :, :14].float() - squeezed).abs().max() <= 0.5 + 1e-4
    d = (pairs.images[:50, :, :, 14:].float().flatten(1)[:, None] - squeezed.flatten(1)[None]).abs().amax(2)
    partner = d.argmin(1)
    assert bool((d.amin(1) <= 0.5 + 1e-4).all()) and torch.equal(right[:50], left[partner])
    assert len(set(partner.tolist())) == 50  # a permutation, not a repeated item
    train = load_dataset("fashion-mnist-pairs", FMNIST_ROOT, "train", 28)
    assert pairs.mean == train.mean and pairs.std == train.std
    assert abs(train.mean[0] - train.images.double().div(255).mean().item()) < 1e-9
    assert pairs.classes[37] == f"{FASHION_MNIST_CLASSES[3]}|{FASHION_MNIST_CLASSES[7]}"


def test_pairs_refuse_flips():
    """A flip swaps the two items (another class): the config refuses it in one line."""
    from onceforall.run.config import ConfigError, load_config

    with pytest.raises(ConfigError) as e:
        load_config("fashion-mnist", ["data.dataset=fashion-mnist-pairs", "data.hflip=true"])
    _assert_one_line_error(e, "data.hflip", "fashion-mnist-pairs", "data.hflip=false")
    assert load_config("fashion-mnist", ["data.dataset=fashion-mnist-pairs"]).data.hflip is None
    assert not default_hflip("fashion-mnist-pairs") and default_hflip("fashion-mnist")
    assert not default_hflip("imagefolder") and mirror_safe("imagefolder")


def test_default_root(monkeypatch):
    monkeypatch.setenv("ONCEFORALL_FASHION_MNIST", "/somewhere/fmnist")
    assert default_root("fashion-mnist") == "/somewhere/fmnist"
    monkeypatch.delenv("ONCEFORALL_FASHION_MNIST")
    assert default_root("fashion-mnist") == FMNIST_ROOT
    assert default_root("cifar10") is None and default_root("imagefolder") is None
    # registration order
    assert tuple(list_datasets()) == ("fashion-mnist", "fashion-mnist-pairs", "cifar10", "cifar100", "imagefolder")


# ---------------------------------------------------------------------------------------------------------------
# CIFAR in the official formats
# ---------------------------------------------------------------------------------------------------------------


class _Py2Pickler(pickle._Pickler):
    """Writes pickles as Python 2's cPickle wrote the official CIFAR python files: protocol 2, every string a py2
    ``str`` (SHORT_BINSTRING/BINSTRING opcodes, loaded as bytes with encoding='bytes'), numpy.core globals."""

    dispatch = pickle._Pickler.dispatch.copy()

    def _save_py2_str(self, obj):
        raw = obj.encode("latin1") if isinstance(obj, str) else bytes(obj)
        if len(raw) < 256:
            self.write(pickle.SHORT_BINSTRING + bytes([len(raw)]) + raw)
        else:
            self.write(pickle.BINSTRING + struct.pack("<i", len(raw)) + raw)
        self.memoize(obj)

    dispatch[bytes] = _save_py2_str
    dispatch[str] = _save_py2_str

    def save_global(self, obj, name=None):
        module = obj.__module__.replace("numpy._core", "numpy.core")
        self.write(pickle.GLOBAL + f"{module}\n{name or obj.__name__}\n".encode())
        self.memoize(obj)


def _py2_dump(obj, path) -> None:
    with open(path, "wb") as f:
        _Py2Pickler(f, protocol=2).dump(obj)


def _records(n: int, num_classes: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    return rng.integers(0, 256, (n, 3, 32, 32), dtype=np.uint8), rng.integers(0, num_classes, n).astype(np.uint8)


def _write_cifar10_bin(folder, n_per_file: int = 3) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    os.makedirs(folder)
    train_x, train_y = [], []
    for i in range(1, 6):
        x, y = _records(n_per_file, 10, i)
        rec = np.concatenate([y[:, None], x.reshape(n_per_file, -1)], axis=1)
        (folder / f"data_batch_{i}.bin").write_bytes(rec.tobytes())
        train_x.append(x)
        train_y.append(y)
    tx, ty = _records(4, 10, 99)
    (folder / "test_batch.bin").write_bytes(np.concatenate([ty[:, None], tx.reshape(4, -1)], axis=1).tobytes())
    (folder / "batches.meta.txt").write_text("\n".join(CIFAR10_NAMES) + "\n\n")
    return np.concatenate(train_x), np.concatenate(train_y), tx, ty


CIFAR10_NAMES = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]


@pytest.mark.parametrize("point_at_folder", [False, True])
def test_cifar10_binary(tmp_path, point_at_folder):
    folder = tmp_path / "cifar-10-batches-bin"
    x, y, tx, ty = _write_cifar10_bin(folder)
    root = str(folder if point_at_folder else tmp_path)
    train = load_dataset("cifar10", root, "train", 32)
    assert train.images.shape == (15, 3, 32, 32) and train.images.dtype == torch.uint8
    assert torch.equal(train.images, torch.from_numpy(x)) and torch.equal(train.labels, torch.from_numpy(y).long())
    assert train.classes == CIFAR10_NAMES and train.num_classes == 10 and train.in_channels == 3
    test = load_dataset("cifar10", root, "test", 32)
    assert torch.equal(test.images, torch.from_numpy(tx)) and torch.equal(test.labels, torch.from_numpy(ty).long())
    # CHW: byte 1 + 1024 of a record (first green byte) is channel 1, row 0, column 0.
    raw = (folder / "test_batch.bin").read_bytes()
    assert int(test.images[0, 1, 0, 0]) == raw[1 + 1024] and int(test.images[0, 0, 0, 1]) == raw[2]
    assert int(test.images[1, 2, 31, 31]) == raw[2 * 3073 - 1]
    small = load_dataset("cifar10", root, "test", 16)
    assert small.images.shape == (4, 3, 16, 16) and small.images.dtype == torch.uint8


def test_cifar100_binary_uses_fine_labels(tmp_path):
    folder = tmp_path / "cifar-100-binary"
    os.makedirs(folder)
    out = {}
    for split, n, seed in (("train", 5, 1), ("test", 3, 2)):
        x, fine = _records(n, 100, seed)
        coarse = (fine // 5).astype(np.uint8) + 1  # never equal to the fine labels we test against
        rec = np.concatenate([coarse[:, None], fine[:, None], x.reshape(n, -1)], axis=1)
        (folder / f"{split}.bin").write_bytes(rec.tobytes())
        out[split] = (x, fine)
    names = [f"class_{i:02d}" for i in range(100)]
    (folder / "fine_label_names.txt").write_text("\n".join(names) + "\n")
    for split in ("train", "test"):
        ds = load_dataset("cifar100", str(tmp_path), split, 32)
        assert torch.equal(ds.images, torch.from_numpy(out[split][0]))
        assert torch.equal(ds.labels, torch.from_numpy(out[split][1]).long())
        assert ds.classes == names and ds.num_classes == 100


def _cifar_py_dict(x: np.ndarray, y: np.ndarray, label_key: str, batch: str) -> dict:
    return {"batch_label": batch, label_key: [int(v) for v in y], "data": x.reshape(len(x), -1).copy(),
            "filenames": [f"img_{i}.png" for i in range(len(x))]}


def test_cifar10_python_py2_pickles(tmp_path):
    folder = tmp_path / "cifar-10-batches-py"
    os.makedirs(folder)
    xs, ys = [], []
    for i in range(1, 6):
        x, y = _records(2, 10, i)
        _py2_dump(_cifar_py_dict(x, y, "labels", f"training batch {i} of 5"), folder / f"data_batch_{i}")
        xs.append(x)
        ys.append(y)
    tx, ty = _records(3, 10, 7)
    _py2_dump(_cifar_py_dict(tx, ty, "labels", "testing batch 1 of 1"), folder / "test_batch")
    _py2_dump({"num_cases_per_batch": 10000, "label_names": CIFAR10_NAMES, "num_vis": 3072}, folder / "batches.meta")
    assert b"cnumpy.core.multiarray\n_reconstruct\n" in (folder / "test_batch").read_bytes()
    for root in (tmp_path, folder):
        train = load_dataset("cifar10", str(root), "train", 32)
        assert torch.equal(train.images, torch.from_numpy(np.concatenate(xs)))
        assert torch.equal(train.labels, torch.from_numpy(np.concatenate(ys)).long())
        assert train.classes == CIFAR10_NAMES
    test = load_dataset("cifar10", str(tmp_path), "test", 32)
    assert torch.equal(test.images, torch.from_numpy(tx)) and test.labels.tolist() == ty.tolist()
    os.remove(folder / "batches.meta")
    assert load_dataset("cifar10", str(tmp_path), "test", 32).classes == [str(i) for i in range(10)]


@pytest.mark.parametrize("protocol", [2, pickle.HIGHEST_PROTOCOL])
def test_cifar100_python_py3_pickles(tmp_path, protocol):
    folder = tmp_path / "cifar-100-python"
    os.makedirs(folder)
    expected = {}
    for split, n, seed in (("train", 4, 3), ("test", 2, 4)):
        x, fine = _records(n, 100, seed)
        d = {b"data": x.reshape(n, -1).copy(), b"fine_labels": [int(v) for v in fine],
             b"coarse_labels": [int(v) // 5 + 1 for v in fine], b"filenames": [b"a.png"] * n}
        (folder / split).write_bytes(pickle.dumps(d, protocol=protocol))
        expected[split] = (x, fine)
    names = [f"fine{i}".encode() for i in range(100)]
    (folder / "meta").write_bytes(pickle.dumps({b"fine_label_names": names, b"coarse_label_names": [b"c"] * 20},
                                               protocol=protocol))
    for split in ("train", "test"):
        ds = load_dataset("cifar100", str(tmp_path), split, 32)
        assert torch.equal(ds.images, torch.from_numpy(expected[split][0]))
        assert ds.labels.tolist() == expected[split][1].tolist()
        assert ds.classes == [f"fine{i}" for i in range(100)]


class _Evil:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


class _EvilEval:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (eval, (f"open({str(self.marker)!r}, 'w')",))


@pytest.mark.parametrize("evil", [_Evil, _EvilEval])
def test_cifar_pickle_with_disallowed_global_is_refused(tmp_path, evil):
    folder = tmp_path / "cifar-10-batches-py"
    os.makedirs(folder)
    marker = tmp_path / "pwned"
    x, y = _records(2, 10, 0)
    payload = {b"data": x.reshape(2, -1), b"labels": [int(v) for v in y], b"filenames": evil(marker)}
    (folder / "test_batch").write_bytes(pickle.dumps(payload, protocol=2))
    with pytest.raises(DataError) as e:
        load_dataset("cifar10", str(tmp_path), "test", 32)
    _assert_one_line_error(e, str(folder / "test_batch"), "refusing")
    assert not marker.exists()


# ---------------------------------------------------------------------------------------------------------------
# Image folders
# ---------------------------------------------------------------------------------------------------------------


@pytest.fixture()
def folder_root(tmp_path):
    from PIL import Image

    rng = np.random.default_rng(0)
    sizes = [(24, 18), (18, 30), (40, 40), (20, 26)]
    for split, per_class in (("train", 4), ("val", 2)):
        for ci, cls in enumerate(["dog", "ant", "cat"]):
            os.makedirs(tmp_path / split / cls)
            for k in range(per_class):
                h, w = sizes[(k + ci) % len(sizes)]
                arr = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
                Image.fromarray(arr).save(tmp_path / split / cls / f"img{k}.png")
            (tmp_path / split / cls / "notes.txt").write_text("not an image")
    Image.fromarray(np.full((20, 30), 77, np.uint8), mode="L").save(tmp_path / "val" / "ant" / "gray.png")
    return tmp_path


def test_imagefolder(folder_root):
    train = load_dataset("imagefolder", str(folder_root), "train", 16)
    assert isinstance(train, FolderDataset)
    assert train.classes == ["ant", "cat", "dog"] and train.num_classes == 3 and train.in_channels == 3
    assert len(train) == 12 and all(p.endswith(".png") for p, _ in train.samples)
    assert [lbl for _, lbl in train.samples] == [0] * 4 + [1] * 4 + [2] * 4
    assert all(os.path.basename(os.path.dirname(p)) == train.classes[lbl] for p, lbl in train.samples)
    assert len(train.mean) == 3 and len(train.std) == 3
    for i in range(len(train)):
        a = train.load(i, 16, True, torch.Generator().manual_seed(5))
        b = train.load(i, 16, True, torch.Generator().manual_seed(5))
        assert a.shape == (3, 16, 16) and a.dtype == torch.uint8 and torch.equal(a, b)
    crops = {train.load(2, 16, True, torch.Generator().manual_seed(s)).sum().item() for s in range(6)}
    assert len(crops) > 1  # the crop really is random
    val = load_dataset("imagefolder", str(folder_root), "test", 20)  # "test" reads val/
    assert len(val) == 7 and all(f"{os.sep}val{os.sep}" in p for p, _ in val.samples)
    gray = next(i for i, (p, _) in enumerate(val.samples) if p.endswith("gray.png"))
    img = val.load(gray, 20, False)
    assert img.shape == (3, 20, 20) and bool((img == 77).all())  # "L" converted to RGB
    assert torch.equal(val.load(0, 20, False), val.load(0, 20, False))
    sub = val.subset(torch.tensor([1, 0]))
    assert isinstance(sub, FolderDataset) and sub.samples == [val.samples[1], val.samples[0]]
    batches = list(EvalBatches(val, 3, 20))
    assert len(EvalBatches(val, 3, 20)) == 3 == len(batches)
    assert [tuple(x.shape) for x, _ in batches] == [(3, 3, 20, 20), (3, 3, 20, 20), (1, 3, 20, 20)]
    assert torch.cat([y for _, y in batches]).tolist() == [lbl for _, lbl in val.samples]
    assert all(x.is_contiguous(memory_format=torch.channels_last) for x, _ in batches)


def test_imagefolder_eval_is_resize_then_center_crop(tmp_path):
    from PIL import Image

    arr = np.random.default_rng(1).integers(0, 256, (32, 64, 3), dtype=np.uint8)
    for split in ("train", "val"):
        os.makedirs(tmp_path / split / "only")
        Image.fromarray(arr).save(tmp_path / split / "only" / "wide.png")
    ds = load_dataset("imagefolder", str(tmp_path), "test", 28)
    # Shorter side -> round(28 / 0.875) = 32 (already), then the centered 28x28 crop: rows 2..29, columns 18..45.
    expected = torch.from_numpy(arr[2:30, 18:46].copy()).permute(2, 0, 1)
    assert torch.equal(ds.load(0, 28, False), expected)
    small = ds.load(0, 14, False)  # 32x64 -> 16x32, then rows 1..14, columns 9..22
    ref = np.asarray(Image.fromarray(arr).resize((32, 16), Image.Resampling.BILINEAR))[1:15, 9:23]
    assert torch.equal(small, torch.from_numpy(ref.copy()).permute(2, 0, 1))


def test_imagefolder_train_batches_workers_match_in_process(folder_root):
    ds = load_dataset("imagefolder", str(folder_root), "train", 16)
    tb0 = TrainBatches(ds, 4, seed=3, augment=Augment(), image_size=16, workers=0)
    tb2 = TrainBatches(ds, 4, seed=3, augment=Augment(), image_size=16, workers=2)
    assert tb0.steps_per_epoch == 3
    in_process = list(tb0.epoch_batches(1))
    with_workers = list(tb2.epoch_batches(1))
    assert len(in_process) == len(with_workers) == 3
    for (x0, y0), (x2, y2) in zip(in_process, with_workers):
        assert x0.shape == (4, 3, 16, 16) and x0.dtype == torch.float32
        assert x0.is_contiguous(memory_format=torch.channels_last)
        assert torch.equal(x0, x2) and torch.equal(y0, y2)
    full = tb0.batch(1, 2)
    halves = [tb0.batch(1, 2, slice(0, 2)), tb0.batch(1, 2, slice(2, 4))]
    assert torch.equal(full[0], torch.cat([h[0] for h in halves])) and torch.equal(full[0], in_process[2][0])
    assert sorted(torch.cat([y for _, y in in_process]).tolist()) == [0] * 4 + [1] * 4 + [2] * 4


# ---------------------------------------------------------------------------------------------------------------
# Errors
# ---------------------------------------------------------------------------------------------------------------


def test_unknown_dataset_and_missing_root(tmp_path):
    with pytest.raises(DataError) as e:
        load_dataset("mnist", None, "train", 32)
    _assert_one_line_error(e, "mnist", "fashion-mnist, fashion-mnist-pairs, cifar10, cifar100, imagefolder")
    missing = tmp_path / "nope"
    with pytest.raises(DataError) as e:
        load_dataset("fashion-mnist", str(missing), "train", 32)
    _assert_one_line_error(e, str(missing), "train-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz")
    with pytest.raises(DataError) as e:
        load_dataset("fashion-mnist", str(tmp_path), "test", 32)
    _assert_one_line_error(e, str(tmp_path / "t10k-images-idx3-ubyte.gz"), "not found", "four IDX .gz files")
    with pytest.raises(DataError) as e:
        load_dataset("cifar10", None, "train", 32)
    _assert_one_line_error(e, "cifar10", "cifar-10-batches-bin", "data.root")
    with pytest.raises(DataError) as e:
        load_dataset("cifar100", str(tmp_path), "train", 32)
    _assert_one_line_error(e, str(tmp_path), "cifar-100-binary/{train.bin,test.bin}", "cifar-100-python")
    with pytest.raises(DataError) as e:
        load_dataset("imagefolder", str(tmp_path), "test", 32)
    _assert_one_line_error(e, str(tmp_path / "train"), "{train,val}/<class>/<image files>")


def test_dataset_registry_is_real_and_fails_loudly(tmp_path):
    with pytest.raises(ValueError) as e:  # DataError is a ValueError
        load_dataset("no-such-set", str(tmp_path), "train", 32)
    _assert_one_line_error(e, "dataset: 'no-such-set' is not known; valid names: "
                           "fashion-mnist, fashion-mnist-pairs, cifar10, cifar100, imagefolder")
    with pytest.raises(ValueError) as e:
        default_root("no-such-set")
    _assert_one_line_error(e, "'no-such-set'", ", ".join(list_datasets()))

    calls = []

    def read_tiny(root: str, split: str, image_size: int) -> ImageDataset:
        calls.append((root, split, image_size))
        n = 10 if split == "train" else 4
        images = torch.full((n, 1, image_size, image_size), 7, dtype=torch.uint8)
        return ImageDataset(images, torch.arange(n) % 2, ["even", "odd"], (0.5,), (0.25,), "tiny")

    name = "tiny-test-set"
    try:
        decorated = register_dataset(name, layout=lambda root: f"nothing much under {root}",
                                     default_root=str(tmp_path))(read_tiny)
        assert decorated is read_tiny
        assert list_datasets() == ["fashion-mnist", "fashion-mnist-pairs", "cifar10", "cifar100", "imagefolder", name]
        assert default_root(name) == str(tmp_path)
        ds = load_dataset(name, None, "test", 6)  # the default root
        assert isinstance(ds, ImageDataset) and len(ds) == 4 and ds.images.shape == (4, 1, 6, 6)
        assert load_dataset(name, tmp_path, "train", 5).images.shape == (10, 1, 5, 5)  # a path-like root
        assert calls == [(str(tmp_path), "test", 6), (str(tmp_path), "train", 5)]
        x, y = next(iter(EvalBatches(ds, 4, 6)))
        assert x.shape == (4, 1, 6, 6) and y.tolist() == [0, 1, 0, 1]
        # The registry validates before calling the reader, and its errors use the registered layout.
        with pytest.raises(DataError) as e:
            load_dataset(name, str(tmp_path / "missing"), "train", 5)
        _assert_one_line_error(e, f"{name}: {tmp_path / 'missing'} not found; expected nothing much under "
                               f"{tmp_path / 'missing'}")
        with pytest.raises(ValueError, match="split: 'val' is not valid"):
            load_dataset(name, None, "val", 5)
        with pytest.raises(ValueError) as e:
            load_dataset("no-such-set", None, "train", 5)
        _assert_one_line_error(e, f"imagefolder, {name}")
        assert len(calls) == 2
        with pytest.raises(ValueError, match="already registered"):
            register_dataset(name, layout=lambda root: root)(read_tiny)
        with pytest.raises(ValueError, match="already registered"):
            register_dataset("cifar10", layout=lambda root: root)(read_tiny)
    finally:
        registry._REGISTRY.pop(name, None)
    assert list_datasets() == ["fashion-mnist", "fashion-mnist-pairs", "cifar10", "cifar100", "imagefolder"]
    with pytest.raises(DataError):
        load_dataset(name, str(tmp_path), "test", 6)


def test_partial_cifar10_names_the_missing_file(tmp_path):
    folder = tmp_path / "cifar-10-batches-bin"
    _write_cifar10_bin(folder)
    os.remove(folder / "data_batch_3.bin")
    with pytest.raises(DataError) as e:
        load_dataset("cifar10", str(tmp_path), "train", 32)
    _assert_one_line_error(e, str(folder / "data_batch_3.bin"), "not found", "data_batch_1..5.bin")
    assert len(load_dataset("cifar10", str(tmp_path), "test", 32)) == 4


def _write_idx(path, magic_ndim: int, dims: tuple[int, ...], payload: bytes) -> None:
    with gzip.open(path, "wb") as f:
        f.write(bytes([0, 0, 8, magic_ndim]) + struct.pack(f">{len(dims)}I", *dims) + payload)


def test_truncated_or_corrupt_files(tmp_path):
    fm = tmp_path / "fm"
    os.makedirs(fm)
    _write_idx(fm / "t10k-images-idx3-ubyte.gz", 3, (10, 28, 28), bytes(28 * 28 * 10 - 5))  # 5 bytes short
    _write_idx(fm / "t10k-labels-idx1-ubyte.gz", 1, (10,), bytes(10))
    with pytest.raises(DataError) as e:
        load_dataset("fashion-mnist", str(fm), "test", 32)
    _assert_one_line_error(e, str(fm / "t10k-images-idx3-ubyte.gz"), "truncated", "four IDX .gz files")
    (fm / "t10k-images-idx3-ubyte.gz").write_bytes(b"definitely not gzip")
    with pytest.raises(DataError) as e:
        load_dataset("fashion-mnist", str(fm), "test", 32)
    _assert_one_line_error(e, str(fm / "t10k-images-idx3-ubyte.gz"), "corrupt", "four IDX .gz files")
    _write_idx(fm / "t10k-images-idx3-ubyte.gz", 3, (10, 28, 28), bytes(28 * 28 * 10))
    ok = load_dataset("fashion-mnist", str(fm), "test", 28)  # a well-formed pair loads
    assert ok.images.shape == (10, 1, 28, 28)

    cb = tmp_path / "c10" / "cifar-10-batches-bin"
    _write_cifar10_bin(cb)
    (cb / "test_batch.bin").write_bytes((cb / "test_batch.bin").read_bytes()[:-100])
    with pytest.raises(DataError) as e:
        load_dataset("cifar10", str(tmp_path / "c10"), "test", 32)
    _assert_one_line_error(e, str(cb / "test_batch.bin"), "truncated", "cifar-10-batches-bin")

    cp = tmp_path / "c100" / "cifar-100-python"
    os.makedirs(cp)
    x, y = _records(3, 100, 0)
    blob = pickle.dumps({b"data": x.reshape(3, -1), b"fine_labels": [int(v) for v in y]}, protocol=2)
    (cp / "test").write_bytes(blob[: len(blob) // 2])
    with pytest.raises(DataError) as e:
        load_dataset("cifar100", str(tmp_path / "c100"), "test", 32)
    _assert_one_line_error(e, str(cp / "test"), "truncated or corrupt", "cifar-100-python/{train,test,meta}")
    (cp / "test").write_bytes(pickle.dumps({b"data": x.reshape(3, -1)[:, :100], b"fine_labels": [1, 2, 3]}))
    with pytest.raises(DataError) as e:
        load_dataset("cifar100", str(tmp_path / "c100"), "test", 32)
    _assert_one_line_error(e, str(cp / "test"), "corrupt", "cifar-100-python")


# ---------------------------------------------------------------------------------------------------------------
# Batches, splits and subsets on a synthetic in-memory dataset whose labels identify the images
# ---------------------------------------------------------------------------------------------------------------

MEAN, STD = (0.5, 0.4), (0.25, 0.3)


def _synthetic(n: int = 96, size: int = 8, channels: int = 2) -> ImageDataset:
    g = torch.Generator().manual_seed(0)
    images = torch.randint(0, 256, (n, channels, size, size), dtype=torch.uint8, generator=g)
    return ImageDataset(images, torch.arange(n), [f"img{i}" for i in range(n)], MEAN, STD, "synthetic")


def _to_uint8(x: torch.Tensor, mean_: tuple[float, ...] = MEAN, std_: tuple[float, ...] = STD) -> torch.Tensor:
    mean = torch.tensor(mean_).view(1, -1, 1, 1)
    std = torch.tensor(std_).view(1, -1, 1, 1)
    u = (x * std + mean) * 255
    assert (u - u.round()).abs().max() < 1e-3
    return u.round().to(torch.uint8)


def test_train_batch_format_and_determinism():
    ds = _synthetic()
    a = TrainBatches(ds, 16, seed=7, augment=Augment(), image_size=8)
    b = TrainBatches(ds, 16, seed=7, augment=Augment(), image_size=8)
    assert a.steps_per_epoch == 6
    x, y = a.batch(2, 3)
    assert x.shape == (16, 2, 8, 8) and x.dtype == torch.float32 and y.dtype == torch.int64 and y.shape == (16,)
    assert x.is_contiguous(memory_format=torch.channels_last)
    for e in range(2):
        for i in range(a.steps_per_epoch):
            xa, ya = a.batch(e, i)
            xb, yb = b.batch(e, i)
            assert torch.equal(xa, xb) and torch.equal(ya, yb)
    other_seed = TrainBatches(ds, 16, seed=8, augment=Augment(), image_size=8)
    assert not torch.equal(other_seed.batch(2, 3)[1], y)
    # Resume: epoch_batches from a start index sees the same batches.
    resumed = list(a.epoch_batches(2, start=3))
    assert len(resumed) == 3
    for k, (xr, yr) in enumerate(resumed):
        xf, yf = a.batch(2, 3 + k)
        assert torch.equal(xr, xf) and torch.equal(yr, yf)
    # A different size than stored is brought to image_size.
    x6, _ = TrainBatches(ds, 16, seed=7, augment=Augment(), image_size=6).batch(0, 0)
    assert x6.shape == (16, 2, 6, 6) and x6.is_contiguous(memory_format=torch.channels_last)


@pytest.mark.parametrize("splits", [[slice(0, 8), slice(8, 16)], [slice(0, 5), slice(5, 11), slice(11, None)]])
def test_rows_concatenate_to_the_global_batch(splits):
    tb = TrainBatches(_synthetic(), 16, seed=1, augment=Augment(crop_padding=2), image_size=8)
    for e, i in ((0, 0), (3, 5)):
        x, y = tb.batch(e, i)
        parts = [tb.batch(e, i, rows) for rows in splits]
        assert torch.equal(torch.cat([p[0] for p in parts]), x) and torch.equal(torch.cat([p[1] for p in parts]), y)
        parts = list(zip(*(list(tb.epoch_batches(e, start=i, rows=rows))[0] for rows in splits)))
        assert torch.equal(torch.cat(parts[0]), x)


def test_epochs_cover_every_image_once_in_new_orders():
    ds = _synthetic(96)
    tb = TrainBatches(ds, 16, seed=0, augment=Augment(), image_size=8)
    orders = []
    for e in range(3):
        labels = torch.cat([y for _, y in tb.epoch_batches(e)])
        assert sorted(labels.tolist()) == list(range(96))
        orders.append(labels)
    assert not torch.equal(orders[0], orders[1]) and not torch.equal(orders[1], orders[2])
    tail = TrainBatches(ds, 40, seed=0, augment=Augment(), image_size=8, drop_last=False)
    assert tail.steps_per_epoch == 3 and tail.batch(0, 2)[0].shape[0] == 16
    assert sorted(torch.cat([y for _, y in tail.epoch_batches(0)]).tolist()) == list(range(96))
    assert TrainBatches(ds, 40, seed=0, augment=Augment(), image_size=8).steps_per_epoch == 2


def _match_transform(out: torch.Tensor, src: torch.Tensor, p: int):
    h, w = src.shape[-2:]
    padded = F.pad(src, (p, p, p, p))
    for dy in range(2 * p + 1):
        for dx in range(2 * p + 1):
            crop = padded[:, dy: dy + h, dx: dx + w]
            for flip in (False, True):
                if torch.equal(out, crop.flip(-1) if flip else crop):
                    return dy, dx, flip
    return None


def test_augmentation_crops_and_flips_with_labels_following_images():
    ds = _synthetic(64)
    p = 2
    tb = TrainBatches(ds, 64, seed=4, augment=Augment(crop_padding=p, hflip=True), image_size=8)
    x, y = tb.batch(0, 0)
    u = _to_uint8(x)
    seen = set()
    for k in range(64):
        match = _match_transform(u[k], ds.images[y[k]], p)
        assert match is not None, f"row {k} is not a padded crop/flip of image {int(y[k])}"
        seen.add(match)
    assert len(seen) > 10 and {m[2] for m in seen} == {False, True}
    assert len({m[:2] for m in seen}) > 5
    # No augmentation: the images themselves.
    plain = TrainBatches(ds, 64, seed=4, augment=Augment(crop_padding=0, hflip=False), image_size=8)
    x0, y0 = plain.batch(0, 0)
    assert torch.equal(_to_uint8(x0), ds.images[y0])
    # Flips only.
    flips = TrainBatches(ds, 64, seed=4, augment=Augment(crop_padding=0, hflip=True), image_size=8)
    xf, yf = flips.batch(0, 0)
    uf = _to_uint8(xf)
    flipped = [bool(torch.equal(uf[k], ds.images[yf[k]].flip(-1))) for k in range(64)]
    assert all(flipped[k] or torch.equal(uf[k], ds.images[yf[k]]) for k in range(64))
    assert 10 < sum(flipped) < 54


def _reference_batch(tb: TrainBatches, epoch: int, index: int,
                     rows: slice = slice(None)) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """TrainBatches.batch of an in-memory dataset spelled out one image at a time, from the documented seeds: the
    epoch order is randperm seeded derive_seed(seed, "perm", epoch); the global batch draws, from a generator seeded
    derive_seed(seed, epoch, index), the (row, column) crop offsets of all its samples, then their flips. Returns the
    uint8 images, the labels and the normalised float images."""
    ds, p, b = tb.ds, tb.augment.crop_padding, tb.batch_size
    perm = torch.randperm(len(ds), generator=torch.Generator().manual_seed(derive_seed(tb.seed, "perm", epoch)))
    idx = perm[index * b: (index + 1) * b]
    g = torch.Generator().manual_seed(derive_seed(tb.seed, epoch, index))
    offsets = torch.randint(0, 2 * p + 1, (len(idx), 2), generator=g) if p > 0 else None
    flips = (torch.rand(len(idx), generator=g) < 0.5) if tb.augment.hflip else None
    images, labels = [], []
    for k in range(len(idx))[rows]:
        image = ds.images[int(idx[k])]  # (C, H, W)
        h, w = image.shape[-2:]
        if offsets is not None:
            dy, dx = int(offsets[k, 0]), int(offsets[k, 1])
            image = F.pad(image, (p, p, p, p))[:, dy: dy + h, dx: dx + w]
        if flips is not None and bool(flips[k]):
            image = image.flip(-1)
        images.append(image)
        labels.append(int(ds.labels[int(idx[k])]))
    u8 = torch.stack(images)
    mean = torch.tensor(ds.mean).view(1, -1, 1, 1)
    std = torch.tensor(ds.std).view(1, -1, 1, 1)
    return u8, torch.tensor(labels, dtype=torch.int64), (u8.double() / 255 - mean) / std


@pytest.mark.parametrize("augment", [Augment(), Augment(crop_padding=2), Augment(crop_padding=3, hflip=False),
                                     Augment(crop_padding=0, hflip=True), Augment(crop_padding=0, hflip=False)])
def test_batched_augmentation_equals_a_per_image_reference(augment):
    ds = _synthetic(80, size=8, channels=2)
    tb = TrainBatches(ds, 32, seed=11, augment=augment, image_size=8, drop_last=False)
    for epoch, index, rows in ((0, 0, slice(None)), (3, 1, slice(None)), (5, 2, slice(None)), (2, 1, slice(3, 29, 4))):
        assert torch.equal(tb.permutation(epoch), torch.randperm(
            80, generator=torch.Generator().manual_seed(derive_seed(11, "perm", epoch))))
        x, y = tb.batch(epoch, index, rows)
        ref_u8, ref_y, ref_x = _reference_batch(tb, epoch, index, rows)
        assert torch.equal(y, ref_y)
        assert torch.equal(_to_uint8(x), ref_u8)
        assert torch.allclose(x.double(), ref_x, atol=1e-5)


def test_batch_size_larger_than_dataset_is_an_error():
    with pytest.raises(DataError) as e:
        TrainBatches(_synthetic(10), 16, seed=0, augment=Augment(), image_size=8)
    _assert_one_line_error(e, "batch_size", "16", "10")


def test_eval_batches_in_memory():
    ds = _synthetic(50)
    ev = EvalBatches(ds, 16, 8)
    batches = list(ev)
    assert len(ev) == 4 == len(batches) and batches[-1][0].shape == (2, 2, 8, 8)
    x = torch.cat([b[0] for b in batches])
    assert torch.equal(_to_uint8(x), ds.images) and torch.equal(torch.cat([b[1] for b in batches]), ds.labels)
    assert all(b[0].is_contiguous(memory_format=torch.channels_last) for b in batches)
    assert next(iter(EvalBatches(ds, 16, 12)))[0].shape == (16, 2, 12, 12)


def test_split_holdout_and_bn_subset():
    ds = _synthetic(96)
    tr, ho = split_holdout(ds, 20, seed=5)
    assert len(tr) == 76 and len(ho) == 20
    a, b = set(tr.labels.tolist()), set(ho.labels.tolist())
    assert not a & b and a | b == set(range(96))
    assert torch.equal(tr.images, ds.images[tr.labels])  # images follow their labels
    tr2, ho2 = split_holdout(ds, 20, seed=5)
    assert torch.equal(ho.labels, ho2.labels) and torch.equal(tr.labels, tr2.labels)
    assert not torch.equal(split_holdout(ds, 20, seed=6)[1].labels, ho.labels)
    same, none = split_holdout(ds, 0, seed=5)
    assert same is ds and none is None
    with pytest.raises(DataError) as e:
        split_holdout(ds, 96, seed=0)
    _assert_one_line_error(e, "val_split", "96")

    s1, s2 = bn_subset(ds, 30, seed=1), bn_subset(ds, 30, seed=1)
    assert isinstance(s1, ImageDataset) and len(s1) == 30 and torch.equal(s1.labels, s2.labels)
    assert len(set(s1.labels.tolist())) == 30 and torch.equal(s1.images, ds.images[s1.labels])
    assert not torch.equal(bn_subset(ds, 30, seed=2).labels, s1.labels)
    assert len(bn_subset(ds, 1000, seed=1)) == 96


def test_split_and_subset_of_image_folder(folder_root):
    ds = load_dataset("imagefolder", str(folder_root), "train", 16)
    tr, ho = split_holdout(ds, 3, seed=0)
    assert isinstance(tr, FolderDataset) and isinstance(ho, FolderDataset)
    assert len(tr) == 9 and len(ho) == 3 and not set(tr.samples) & set(ho.samples)
    assert bn_subset(ds, 5, seed=0).samples == bn_subset(ds, 5, seed=0).samples


# ---------------------------------------------------------------------------------------------------------------
# Real data: normalisation, and the batched augmentation against the per-image reference
# ---------------------------------------------------------------------------------------------------------------


@needs_fmnist
def test_normalisation_on_real_data(fmnist_train, fmnist_test):
    x, _ = TrainBatches(fmnist_train, 4096, seed=0, augment=Augment(), image_size=32).batch(0, 0)
    assert abs(x.mean().item()) < 0.05 and abs(x.std().item() - 1) < 0.05
    x, _ = next(iter(EvalBatches(fmnist_test, 10000, 32)))
    assert abs(x.mean().item()) < 0.05 and abs(x.std().item() - 1) < 0.05


@needs_fmnist
def test_train_batch_equals_the_per_image_reference_on_real_data(fmnist_train):
    # The configuration benchmarks/data_speed.py times (batch 256, 32 px, Augment()); timings are not asserted here.
    tb = TrainBatches(fmnist_train, 256, seed=0, augment=Augment(), image_size=32)
    for epoch, index in ((0, 0), (0, 7), (4, 233)):
        x, y = tb.batch(epoch, index)
        ref_u8, ref_y, ref_x = _reference_batch(tb, epoch, index)
        assert torch.equal(y, ref_y)
        assert torch.equal(_to_uint8(x, fmnist_train.mean, fmnist_train.std), ref_u8)
        assert torch.allclose(x.double(), ref_x, atol=1e-5)


def test_restricted_unpickler_allows_only_array_globals():
    allowed = cifar._allowed_globals()
    modules = {m for m, _ in allowed}
    assert modules <= {"_codecs", "numpy", "numpy.core.multiarray", "numpy._core.multiarray", "numpy.core.numeric",
                       "numpy._core.numeric"}
    assert set(allowed) >= {("numpy.core.multiarray", "_reconstruct"), ("numpy._core.multiarray", "_reconstruct"),
                            ("numpy", "ndarray"), ("numpy", "dtype")}
    assert allowed[("_codecs", "encode")]("\xff", "latin1") == b"\xff"
    with pytest.raises(pickle.UnpicklingError):
        allowed[("_codecs", "encode")]("x", "zlib_codec")


def test_auto_val_split_and_workers_when_the_config_leaves_them_unset():
    import os

    from onceforall.run.config import load_config
    from onceforall.run.setup import auto_val_split, data_workers

    assert [auto_val_split(n) for n in (5, 9, 10, 90, 60_000, 1_281_167)] == [0, 0, 1, 9, 6000, 10_000]
    folder = load_config("imagenet", ["data.workers=null"])
    assert data_workers(folder) == min(8, os.cpu_count() or 1)
    assert data_workers(load_config("imagenet")) == 8  # a preset's explicit value is kept
    assert data_workers(load_config("fashion-mnist", ["data.workers=null"])) == 0  # in memory: no workers
    assert load_config(None).data.val_split is None and load_config(None).data.workers is None


# ---------------------------------------------------------------------------------------------------------------
# The DεpS ImageNet recipe: random erasing, BN momentum (on small generated images)
# ---------------------------------------------------------------------------------------------------------------


def _erased_box(before: torch.Tensor, after: torch.Tensor) -> tuple[int, int, int, int] | None:
    """(top, left, h, w) of the changed pixels, asserting they form one filled rectangle."""
    changed = (before != after).any(0)
    if not changed.any():
        return None
    rows, cols = changed.any(1).nonzero().flatten(), changed.any(0).nonzero().flatten()
    i, j, h, w = int(rows[0]), int(cols[0]), int(rows[-1] - rows[0] + 1), int(cols[-1] - cols[0] + 1)
    box = after[:, i:i + h, j:j + w]
    assert (box == box[:, :1, :1]).all()  # one colour inside; outside untouched
    outside = after.clone()
    outside[:, i:i + h, j:j + w] = before[:, i:i + h, j:j + w]
    assert torch.equal(outside, before)
    return i, j, h, w


def test_random_erase_fills_one_rectangle_of_the_documented_size():
    from onceforall.data.augment import random_erase

    x = torch.randint(0, 256, (3, 40, 48), generator=torch.Generator().manual_seed(0), dtype=torch.uint8)
    fill = [124, 116, 104]
    areas, ratios = [], []
    for seed in range(200):
        out = random_erase(x, 1.0, torch.Generator().manual_seed(seed), fill)
        box = _erased_box(x, out)
        if box is None:  # ten tries failed to fit a rectangle: left alone
            assert out is x
            continue
        i, j, h, w = box
        assert out[:, i, j].tolist() == fill
        areas.append(h * w / (40 * 48))
        ratios.append(h / w)
        again = random_erase(x, 1.0, torch.Generator().manual_seed(seed), fill)
        assert torch.equal(again, out)  # a pure function of the generator
    assert len(areas) > 150 and min(areas) > 0.015 and max(areas) < 0.36  # 2-33 % (rounding to whole pixels)
    assert min(ratios) > 0.25 and max(ratios) < 4.0 and 0.12 < sum(areas) / len(areas) < 0.22
    # probability p: erased about p of the time; p = 0 draws nothing
    hits = sum(random_erase(x, 0.3, torch.Generator().manual_seed(s), fill) is not x for s in range(400))
    assert 0.22 < hits / 400 < 0.38
    g = torch.Generator().manual_seed(1)
    state = g.get_state()
    assert random_erase(x, 0.0, g, fill) is x and torch.equal(g.get_state(), state)
    with pytest.raises(ValueError, match="p = 1.5 is not valid"):
        random_erase(x, 1.5, g, fill)


def test_random_erase_in_folder_training_batches_only(folder_root):
    from dataclasses import replace

    from onceforall.run.config import load_config
    from onceforall.run.setup import build_data

    base = ["data.dataset=imagefolder", f"data.root={folder_root}", "data.val_split=0", "data.workers=0",
            "data.mean=[0.5,0.5,0.5]", "data.std=[0.25,0.25,0.25]", "model.resolutions=[16]", "train.batch_size=6",
            "data.bn_images=6", "data.eval_batch_size=6", "data.bn_augment=true"]
    plain = build_data(load_config(None, base), 16)
    erased = build_data(load_config(None, [*base, "data.random_erase=1.0"]), 16)
    x0, y0 = plain.train.batch(0, 0)
    x1, y1 = erased.train.batch(0, 0)
    assert torch.equal(y0, y1)
    boxes = 0
    for a, b in zip(x0, x1):
        changed = (a != b).any(0)
        if changed.any():  # the erased pixels normalize to the mean: 0 (fill round(0.5 * 255) = 128)
            boxes += 1
            assert torch.allclose(b[:, changed], torch.full_like(b[:, changed], (128 / 255 - 0.5) / 0.25), atol=1e-6)
    assert boxes >= 4
    assert erased.train.augment.random_erase == 1.0 and plain.train.augment.random_erase == 0.0
    assert torch.equal(plain.bn.at(16)._batches.batch(0, 0)[0], erased.bn.at(16)._batches.batch(0, 0)[0])
    assert replace(plain.train.augment, random_erase=1.0) == erased.train.augment
    with pytest.raises(ValueError, match="data.random_erase: 0.2 is not valid for fashion-mnist; random erasing "
                                         "applies to image folders only"):
        build_data(load_config("fashion-mnist-quick", ["data.random_erase=0.2"]), 20)


def test_bn_momentum_of_the_official_command():
    from torch import nn

    from onceforall.run.config import load_config
    from onceforall.run.setup import build_net, build_space

    cfg = load_config("imagenet", ["model.width_mult=0.25"])
    assert cfg.model.bn_momentum == 0.99 and cfg.data.random_erase == 0.2  # as the official DεpS command
    assert load_config("imagenet-ofa-ps").model.bn_momentum == 0.1  # OFA's recipe keeps PyTorch's 0.1
    assert load_config("imagenet-ofa-ps").data.random_erase == 0
    bns = [m for m in build_net(cfg, build_space(cfg)).modules() if isinstance(m, nn.BatchNorm2d)]
    assert bns and {m.momentum for m in bns} == {0.99}
    quick = load_config("fashion-mnist-quick", ["model.bn_momentum=0.1"])
    assert {m.momentum for m in build_net(quick, build_space(quick)).modules()
            if isinstance(m, nn.BatchNorm2d)} == {0.1}
    with pytest.raises(ValueError, match=r"model.bn_momentum: 2.0 is not valid; must be in \[0, 1\]"):
        load_config("imagenet", ["model.bn_momentum=2"])


def test_color_jitter_matches_its_definition_on_generated_images():
    import colorsys

    from onceforall.data.augment import color_jitter

    x = torch.randint(20, 200, (3, 12, 10), generator=torch.Generator().manual_seed(3), dtype=torch.uint8)

    def replay(seed: int, strengths):  # the documented draws: the order, then one factor per non-zero strength
        g = torch.Generator().manual_seed(seed)
        order = torch.randperm(4, generator=g).tolist()
        factors = []
        for k, v in enumerate(strengths):
            lo, hi = (-v, v) if k == 3 else (max(0.0, 1 - v), 1 + v)
            factors.append(lo + (hi - lo) * float(torch.rand((), generator=g)) if v > 0 else None)
        return order, factors

    assert torch.equal(color_jitter(x, [0, 0, 0, 0], torch.Generator().manual_seed(0)), x)
    for seed in range(5):
        _, (b, *_) = replay(seed, [0.4, 0, 0, 0])
        out = color_jitter(x, [0.4, 0, 0, 0], torch.Generator().manual_seed(seed))
        assert 0.6 <= b <= 1.4 and torch.equal(out, (x.float() * b).clamp(0, 255).round().to(torch.uint8))
        # contrast keeps the mean grey level (no clipping at these values), saturation keeps each pixel's grey
        gray = (0.2989 * x[0] + 0.587 * x[1] + 0.114 * x[2]).float()
        out = color_jitter(x, [0, 0.4, 0, 0], torch.Generator().manual_seed(seed)).float()
        assert abs(float((0.2989 * out[0] + 0.587 * out[1] + 0.114 * out[2]).mean() - gray.mean())) < 0.6
        out = color_jitter(x, [0, 0, 0.4, 0], torch.Generator().manual_seed(seed)).float()
        assert (0.2989 * out[0] + 0.587 * out[1] + 0.114 * out[2] - gray).abs().max() < 0.8
        # hue: each pixel's HSV hue turned by the factor (Python's colorsys as the reference)
        _, (*_, h) = replay(seed, [0, 0, 0, 0.5])
        out = color_jitter(x, [0, 0, 0, 0.5], torch.Generator().manual_seed(seed))
        for pix, got in zip(x.reshape(3, -1).T.tolist(), out.reshape(3, -1).T.tolist()):
            hh, ss, vv = colorsys.rgb_to_hsv(*(c / 255 for c in pix))
            want = [round(255 * c) for c in colorsys.hsv_to_rgb((hh + h) % 1.0, ss, vv)]
            assert max(abs(a - w) for a, w in zip(got, want)) <= 1, (pix, got, want)
    # the four at once: their order is drawn too (different seeds, different orders), deterministic per seed
    orders = {tuple(replay(s, [0.4, 0.4, 0.4, 0.1])[0]) for s in range(20)}
    assert len(orders) > 5
    g1, g2 = torch.Generator().manual_seed(7), torch.Generator().manual_seed(7)
    assert torch.equal(color_jitter(x, [0.4, 0.4, 0.4, 0.1], g1), color_jitter(x, [0.4, 0.4, 0.4, 0.1], g2))
    with pytest.raises(ValueError, match=r"color_jitter: \[0.4, 0.4, 0.4\] is not valid"):
        color_jitter(x, [0.4, 0.4, 0.4], g1)


def test_color_jitter_in_folder_training_batches_only(folder_root):
    from onceforall.run.config import ConfigError, load_config
    from onceforall.run.setup import build_data

    base = ["data.dataset=imagefolder", f"data.root={folder_root}", "data.val_split=0", "data.workers=0",
            "data.mean=[0.5,0.5,0.5]", "data.std=[0.25,0.25,0.25]", "model.resolutions=[16]", "train.batch_size=6",
            "data.bn_images=6", "data.eval_batch_size=6", "data.bn_augment=true"]
    plain = build_data(load_config(None, base), 16)
    jittered = build_data(load_config(None, [*base, "data.color_jitter=[0.4,0.4,0.4,0.1]"]), 16)
    assert jittered.train.augment.color_jitter == (0.4, 0.4, 0.4, 0.1)
    x0, x1 = plain.train.batch(0, 0)[0], jittered.train.batch(0, 0)[0]
    assert all(not torch.equal(a, b) for a, b in zip(x0, x1))
    assert torch.equal(plain.bn.at(16)._batches.batch(0, 0)[0], jittered.bn.at(16)._batches.batch(0, 0)[0])
    assert load_config("imagenet").data.color_jitter == [0.4, 0.4, 0.4, 0.1]
    assert load_config("imagenet-compofa").data.color_jitter is None
    with pytest.raises(ConfigError, match=r"data.color_jitter: \[0.4, 0.4\] is not valid"):
        load_config(None, ["data.color_jitter=[0.4,0.4]"])
    with pytest.raises(ValueError, match="data.color_jitter: .* applies to image folders only"):
        build_data(load_config("fashion-mnist-quick", ["data.color_jitter=[0.4,0.4,0.4,0.1]"]), 20)


def test_auto_augment_imagenet_policy_on_generated_images(folder_root):
    from PIL import Image, ImageOps

    from onceforall.data.augment import IMAGENET_POLICY, _magnitude, auto_augment
    from onceforall.run.config import ConfigError, load_config
    from onceforall.run.setup import build_data

    assert len(IMAGENET_POLICY) == 25 and IMAGENET_POLICY[0] == (("Posterize", 0.4, 8), ("Rotate", 0.6, 9))
    assert [_magnitude("Posterize", b) for b in range(10)] == [8, 8, 7, 7, 6, 6, 5, 5, 4, 4]
    assert _magnitude("Rotate", 9) == 30 and _magnitude("Solarize", 0) == 255 and _magnitude("Solarize", 9) == 0
    x = torch.randint(0, 256, (3, 16, 20), generator=torch.Generator().manual_seed(2), dtype=torch.uint8)
    pil = Image.fromarray(x.permute(1, 2, 0).numpy())

    def as_tensor(im):
        return torch.from_numpy(np.array(im)).permute(2, 0, 1)

    # one-op policies with probability 1 give exactly PIL's operation (the documented draws: id, probs, signs)
    cases = {("Invert", None): ImageOps.invert(pil), ("Equalize", None): ImageOps.equalize(pil),
             ("Solarize", 3): ImageOps.solarize(pil, _magnitude("Solarize", 3)),
             ("Posterize", 8): ImageOps.posterize(pil, 4), ("AutoContrast", None): ImageOps.autocontrast(pil)}
    for (op, bin_), want in cases.items():
        policy = (((op, 1.0, bin_), ("Invert", 0.0, None)),)
        assert torch.equal(auto_augment(x, torch.Generator().manual_seed(0), policy=policy), as_tensor(want)), op
    # a signed op: the sign comes from the generator (rotations of +-30 degrees, filled with black)
    rot = (((("Rotate", 1.0, 9)), ("Invert", 0.0, None)),)
    outs = {bytes(auto_augment(x, torch.Generator().manual_seed(s), policy=rot).numpy()) for s in range(8)}
    assert outs == {bytes(as_tensor(pil.rotate(a, resample=Image.Resampling.BILINEAR, fillcolor=(0, 0, 0))).numpy())
                    for a in (30.0, -30.0)}
    # neither op drawn: the image itself; the ImageNet policy's sub-policies are drawn uniformly
    never = ((("Invert", 0.0, None), ("Equalize", 0.0, None)),)
    assert auto_augment(x, torch.Generator().manual_seed(0), policy=never) is x
    picks = [int(torch.randint(25, (), generator=torch.Generator().manual_seed(s))) for s in range(500)]
    assert len(set(picks)) == 25
    g1, g2 = torch.Generator().manual_seed(9), torch.Generator().manual_seed(9)
    assert torch.equal(auto_augment(x, g1), auto_augment(x, g2))
    # in training batches of image folders only, and only when asked
    base = ["data.dataset=imagefolder", f"data.root={folder_root}", "data.val_split=0", "data.workers=0",
            "data.mean=[0.5,0.5,0.5]", "data.std=[0.25,0.25,0.25]", "model.resolutions=[16]", "train.batch_size=6",
            "data.bn_images=6", "data.eval_batch_size=6", "data.bn_augment=true"]
    plain = build_data(load_config(None, base), 16)
    aa = build_data(load_config(None, [*base, "data.auto_augment=imagenet"]), 16)
    x0, x1 = plain.train.batch(0, 0)[0], aa.train.batch(0, 0)[0]
    assert aa.train.augment.auto_augment and any(not torch.equal(a, b) for a, b in zip(x0, x1))
    assert torch.equal(plain.bn.at(16)._batches.batch(0, 0)[0], aa.bn.at(16)._batches.batch(0, 0)[0])
    assert load_config("imagenet").data.auto_augment == "imagenet"
    assert load_config("imagenet-ofa-ps").data.auto_augment is None
    with pytest.raises(ConfigError, match="data.auto_augment: 'cifar' is not valid; valid: imagenet, null"):
        load_config(None, ["data.auto_augment=cifar"])
