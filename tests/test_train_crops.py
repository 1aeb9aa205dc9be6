"""Per-resolution random-resized training crops for image folders (data.train_per_resolution)."""

from __future__ import annotations

import os

import numpy as np
import pytest
import torch
import torch.nn.functional as F

import onceforall as ofa
from onceforall.core.strategies import Schedule, get_strategy
from onceforall.data import Augment, FolderDataset, MultiResolution, TrainBatches, load_dataset
from onceforall.data.base import _random_resized_crop_params
from onceforall.run.config import StrategyConfig, load_config
from onceforall.run.setup import build_data

MEAN, STD = (0.5, 0.5, 0.5), (0.25, 0.25, 0.25)


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    """A tiny image folder: 3 classes x 4 training images of different shapes with smooth content (so a
    direct crop and a resized larger crop differ visibly), 1 val image each."""
    from PIL import Image

    root = tmp_path_factory.mktemp("crops")
    rng = np.random.default_rng(0)
    for split, per_class in (("train", 4), ("val", 1)):
        for ci, cls in enumerate(["a", "b", "c"]):
            os.makedirs(root / split / cls)
            for k in range(per_class):
                h, w = (40 + 8 * k, 56 - 4 * ci)
                arr = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
                Image.fromarray(arr).save(root / split / cls / f"{k}.png")
    return root


def _ds(root) -> FolderDataset:
    ds = load_dataset("imagefolder", str(root), "train", 16)
    ds.mean, ds.std = MEAN, STD
    return ds


def test_load_crops_resizes_one_box_directly_to_each_size(folder):
    from PIL import Image

    ds = _ds(folder)
    crops = ds.load_crops(5, (8, 12, 16), torch.Generator().manual_seed(3))
    g = torch.Generator().manual_seed(3)
    with Image.open(ds.samples[5][0]) as src:
        im = src.convert("RGB")
    i, j, h, w = _random_resized_crop_params(im.height, im.width, g)
    flip = bool(torch.rand((), generator=g) < 0.5)
    for r, x in crops.items():
        ref = im.resize((r, r), Image.Resampling.BILINEAR, box=(j, i, j + w, i + h))
        if flip:
            ref = ref.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
        assert torch.equal(x, torch.from_numpy(np.array(ref)).permute(2, 0, 1))
    # load(train=True) is the one-size case, draw for draw
    for r in (8, 16):
        assert torch.equal(ds.load(5, r, True, torch.Generator().manual_seed(3)), crops[r])
    # ... and a direct crop is not the network's bilinear resize of the larger one
    resized = F.interpolate(crops[16][None].float(), size=(8, 8), mode="bilinear", align_corners=False)[0]
    assert (resized.round() - crops[8].float()).abs().max() > 8


@pytest.mark.parametrize("augment", [Augment(hflip=True),
                                     Augment(hflip=True, random_erase=1.0, color_jitter=(0.4, 0.4, 0.4, 0.1))])
def test_a_per_resolution_batch_is_the_one_size_batch_at_each_resolution(folder, augment):
    ds = _ds(folder)
    multi = TrainBatches(ds, 6, seed=2, augment=augment, image_size=16, resolutions=(16, 8, 12))
    assert multi.resolutions == (8, 12, 16)
    for e, i in ((0, 0), (1, 1)):
        x, y = multi.batch(e, i)
        assert isinstance(x, MultiResolution) and list(x.by_resolution) == [8, 12, 16] and x.shape == (6, 3, 16, 16)
        for r in (8, 12, 16):  # same boxes, flips and augmentation draws: bit for bit the batch cropped at r
            xr, yr = TrainBatches(ds, 6, seed=2, augment=augment, image_size=r).batch(e, i)
            assert torch.equal(x.at(r), xr) and torch.equal(y, yr)
            assert x.at(r).is_contiguous(memory_format=torch.channels_last)
        rows = multi.batch(e, i, slice(2, 5))[0]
        assert torch.equal(rows.at(12), x.at(12)[2:5])
    with pytest.raises(ValueError, match=r"^training batch: resolution 10 is not valid; the batch was cropped at "
                                         r"8, 12, 16 \(data.train_per_resolution"):
        x.at(10)
    parts = x.chunk(2)
    assert len(parts) == 2 and torch.equal(parts[1].at(8), x.at(8)[3:])


def test_workers_and_mixing_keep_the_resolutions_consistent(folder):
    ds = _ds(folder)
    aug = Augment(hflip=True, mixup_alpha=0.5, cutmix_alpha=1.0)
    inproc = TrainBatches(ds, 6, seed=4, augment=aug, image_size=16, resolutions=(8, 16))
    workers = TrainBatches(ds, 6, seed=4, augment=aug, image_size=16, resolutions=(8, 16), workers=1)
    (xa, ya), (xb, yb) = inproc.batch(0, 1), list(workers.epoch_batches(0, start=1))[0]
    assert torch.equal(ya, yb) and all(torch.equal(xa.at(r), xb.at(r)) for r in (8, 16))
    assert ya.shape == (6, 3) and ya.dtype == torch.float32  # the largest resolution's targets
    for r in (8, 16):  # each resolution mixed with the same draws as the one-size batch at r
        xr, yr = TrainBatches(ds, 6, seed=4, augment=aug, image_size=r).batch(0, 1)
        assert torch.equal(xa.at(r), xr)
        if r == 16:
            assert torch.equal(ya, yr)


def test_each_pass_and_the_teacher_take_their_own_resolution():
    space = ofa.get_space("mbv3-cifar", width_mult=0.25, resolutions=(8, 12), num_classes=3)
    net = ofa.build_supernet(space, dropout=0.0, seed=0).train()
    seen = []
    net.register_forward_pre_hook(lambda m, args: seen.append((args[0].shape[-1], args[1].resolution)))
    g = torch.Generator().manual_seed(0)
    x = MultiResolution({r: torch.randn(4, 3, r, r, generator=g) for r in (8, 12)})
    y = torch.randint(0, 3, (4,), generator=g)
    strategy = get_strategy(StrategyConfig(name="deps", shrink_start=0.5), space, Schedule(10, 10, 0.1), 0)
    plan = strategy.plan(80)
    assert {p.arch.resolution for p in plan.passes} == {8, 12}  # the min subnet at 8, the full model at 12
    from onceforall.core.step import train_step

    losses = train_step(net, plan, x, y, torch.optim.SGD(net.parameters(), lr=0.0), micro_batches=2)
    assert len(seen) == 2 * len(plan.passes) and all(side == res for side, res in seen)
    full = plan.passes[0]
    expected = sum(float(F.cross_entropy(net(xm, full.arch), ym, label_smoothing=0.1).detach()) / 2  # per
                   for xm, ym in zip(x.at(12).chunk(2), y.chunk(2)))  # micro-batch BN statistics (train mode)
    assert abs(losses[full.role] - expected) < 1e-5


def test_the_switch_in_the_config_and_the_presets(folder):
    base = ["data.dataset=imagefolder", f"data.root={folder}", "data.val_split=0", "data.workers=0",
            f"data.mean={list(MEAN)}", f"data.std={list(STD)}", "model.space=mbv3-cifar", "model.width_mult=0.25",
            "model.resolutions=[8,12]", "train.batch_size=6", "data.bn_images=6", "data.eval_batch_size=6"]
    assert build_data(load_config(None, base), 12).train.resolutions is None  # default: crop once and resize
    data = build_data(load_config(None, [*base, "data.train_per_resolution=true"]), 12)
    assert data.train.resolutions == (8, 12) and isinstance(data.train.batch(0, 0)[0], MultiResolution)
    with pytest.raises(ValueError, match="^data.train_per_resolution: true is not valid for fashion-mnist; "
                                         "per-resolution crops apply to image folders only"):
        build_data(load_config("fashion-mnist-quick", ["data.train_per_resolution=true"]), 20)
    expected = {"imagenet": False, "imagenet-proxyless": False, "imagenet-ofa-ps": True, "imagenet-compofa": True,
                "fashion-mnist": False, "fashion-mnist-quick": False}
    assert {p: load_config(p, []).data.train_per_resolution for p in expected} == expected
