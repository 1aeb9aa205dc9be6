"""Mixup and CutMix (data/augment.py's mix_batch, TrainBatches, the config) and the soft-target label loss."""

from __future__ import annotations

import copy
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

import onceforall as ofa
from onceforall.core.seeds import derive_seed
from onceforall.core.step import label_loss, pass_loss, train_step
from onceforall.core.strategies import Schedule, get_strategy
from onceforall.data import Augment, ImageDataset, TrainBatches
from onceforall.data.augment import mix_batch
from onceforall.run.config import ConfigError, StrategyConfig, load_config

from .helpers import randomize_bn_and_transforms

C = 5


def _batch(b: int = 6, size: tuple[int, int] = (8, 10)) -> tuple[torch.Tensor, torch.Tensor]:
    """Image i is the constant i (so a pasted pixel tells where it came from); labels all different classes
    of its neighbour's."""
    x = torch.arange(b, dtype=torch.float32).view(b, 1, 1, 1).expand(b, 3, *size).clone()
    return x, torch.tensor([0, 1, 2, 3, 4, 0][:b])


def test_mixup_blends_each_image_with_the_one_before_it_by_lambda():
    x, y = _batch()
    out, target, info = mix_batch(x, y, C, np.random.default_rng(3), mixup_alpha=0.4)
    ref = np.random.default_rng(3)
    ref.random()  # whether the batch is mixed (prob 1)
    lam = float(ref.beta(0.4, 0.4))  # mixup only: no switch draw
    assert info == {"kind": "mixup", "lam": lam} and 0 < lam < 1
    assert torch.allclose(out, lam * x + (1 - lam) * x.roll(1, 0), atol=0, rtol=1e-6)
    one_hot = F.one_hot(y, C).float()
    assert torch.allclose(target, lam * one_hot + (1 - lam) * one_hot.roll(1, 0))
    assert target.dtype == torch.float32 and torch.allclose(target.sum(1), torch.ones(6))
    assert torch.equal(x, _batch()[0])  # the input is left alone


@pytest.mark.parametrize("seed", range(6))
def test_cutmix_pastes_one_box_and_lambda_is_the_unpasted_area(seed):
    x, y = _batch(size=(8, 10))
    out, target, info = mix_batch(x, y, C, np.random.default_rng(seed), cutmix_alpha=1.0)
    ref = np.random.default_rng(seed)
    ref.random()
    lam0 = float(ref.beta(1.0, 1.0))
    cx, cy = int(ref.random() * 10), int(ref.random() * 8)
    half_w, half_h = int(0.5 * math.sqrt(1 - lam0) * 10), int(0.5 * math.sqrt(1 - lam0) * 8)
    box = torch.zeros(8, 10, dtype=torch.bool)
    box[max(cy - half_h, 0):min(cy + half_h, 8), max(cx - half_w, 0):min(cx + half_w, 10)] = True
    for i in range(6):  # inside the box image i-1's pixels, outside its own
        expected = torch.where(box, float((i - 1) % 6), float(i))
        assert torch.equal(out[i], expected.expand(3, 8, 10))
    lam = 1 - int(box.sum()) / 80
    assert info["kind"] == "cutmix" and info["lam"] == lam
    one_hot = F.one_hot(y, C).float()
    assert torch.allclose(target, lam * one_hot + (1 - lam) * one_hot.roll(1, 0), rtol=0, atol=1e-7)
    assert math.isclose(float(target[1, y[1]]), lam, abs_tol=1e-7)  # rows 0 and 5 share a class; 1 and 0 do not


def test_switch_and_mix_probabilities_and_errors():
    x, y = _batch()
    kinds = [mix_batch(x, y, C, np.random.default_rng(s), mixup_alpha=0.2, cutmix_alpha=1.0)[2]["kind"]
             for s in range(200)]
    assert 70 < kinds.count("cutmix") < 130 and kinds.count("mixup") == 200 - kinds.count("cutmix")
    for switch, kind in ((0.0, "mixup"), (1.0, "cutmix")):
        assert all(mix_batch(x, y, C, np.random.default_rng(s), mixup_alpha=0.2, cutmix_alpha=1.0,
                             switch_prob=switch)[2]["kind"] == kind for s in range(20))
    out, target, info = mix_batch(x, y, C, np.random.default_rng(0), mixup_alpha=0.2, prob=0.0)
    assert info["kind"] == "none" and out is x and torch.equal(target, F.one_hot(y, C).float())
    hits = sum(mix_batch(x, y, C, np.random.default_rng(s), mixup_alpha=0.2, prob=0.3)[2]["kind"] == "mixup"
               for s in range(300))
    assert 60 < hits < 120
    with pytest.raises(ValueError, match=r"mixup_alpha = -0.1 is not valid; must be >= 0 \(0: off\)"):
        mix_batch(x, y, C, np.random.default_rng(0), mixup_alpha=-0.1)
    with pytest.raises(ValueError, match="prob = 1.5, switch_prob = 0.5 are not valid"):
        mix_batch(x, y, C, np.random.default_rng(0), mixup_alpha=0.1, prob=1.5)


def _synthetic(n: int = 48) -> ImageDataset:
    g = torch.Generator().manual_seed(0)
    images = torch.randint(0, 256, (n, 3, 8, 8), dtype=torch.uint8, generator=g)
    labels = torch.arange(n) % C
    return ImageDataset(images, labels, [f"c{i}" for i in range(C)], (0.5, 0.5, 0.5), (0.25, 0.25, 0.25), "syn")


def test_train_batches_mix_deterministically_per_seed_epoch_index_and_rows():
    ds = _synthetic()
    plain = TrainBatches(ds, 12, seed=7, augment=Augment(), image_size=8)
    mixed = TrainBatches(ds, 12, seed=7, augment=Augment(mixup_alpha=0.3, cutmix_alpha=1.0), image_size=8)
    again = TrainBatches(ds, 12, seed=7, augment=Augment(mixup_alpha=0.3, cutmix_alpha=1.0), image_size=8)
    for e, i in ((0, 0), (2, 3)):
        x0, y0 = plain.batch(e, i)
        x, y = mixed.batch(e, i)
        xa, ya = again.batch(e, i)
        assert torch.equal(x, xa) and torch.equal(y, ya)  # a pure function of (seed, epoch, index)
        assert y.shape == (12, C) and y.dtype == torch.float32 and not torch.equal(x, x0)
        assert x.is_contiguous(memory_format=torch.channels_last)
        # exactly mix_batch of the unmixed batch with the generator of (seed, epoch, index, first row)
        rng = np.random.default_rng(derive_seed(7, "mix", e, i, 0))
        xr, yr, _ = mix_batch(x0, y0, C, rng, mixup_alpha=0.3, cutmix_alpha=1.0)
        assert torch.equal(x, xr) and torch.equal(y, yr)
        # each rank mixes its own rows with its own draws (the official per-GPU collate)
        x1, y1 = mixed.batch(e, i, slice(6, 12))
        rng = np.random.default_rng(derive_seed(7, "mix", e, i, 6))
        xr, yr, _ = mix_batch(x0[6:], y0[6:], C, rng, mixup_alpha=0.3, cutmix_alpha=1.0)
        assert torch.equal(x1, xr) and torch.equal(y1, yr)
        assert torch.equal(list(mixed.epoch_batches(e, start=i, rows=slice(6, 12)))[0][1], y1)
    assert not torch.equal(mixed.batch(0, 1)[0], mixed.batch(0, 0)[0])


def test_mixing_off_is_todays_batches():
    ds = _synthetic()
    today = TrainBatches(ds, 12, seed=7, augment=Augment(), image_size=8)
    off = TrainBatches(ds, 12, seed=7, augment=Augment(mixup_alpha=0.0, cutmix_alpha=0.0, mix_prob=0.5),
                       image_size=8)
    for e, i in ((0, 0), (1, 2)):
        (x, y), (xo, yo) = today.batch(e, i), off.batch(e, i)
        assert torch.equal(x, xo) and torch.equal(y, yo) and yo.dtype == torch.int64


def test_label_loss_against_distributions_is_smoothed_cross_entropy():
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(4, C, generator=g)
    q = torch.softmax(torch.randn(4, C, generator=g), 1)
    for ls in (0.0, 0.1):
        expected = -(((1 - ls) * q + ls / C) * F.log_softmax(logits, 1)).sum(1).mean()
        assert torch.allclose(label_loss(logits, q, ls), expected, rtol=1e-6, atol=0)
    y = torch.tensor([0, 3, 1, 4])
    one_hot = F.one_hot(y, C).float()
    assert torch.allclose(label_loss(logits, one_hot, 0.1), label_loss(logits, y, 0.1), rtol=1e-6, atol=0)
    # integer labels: bit for bit the loss before soft targets existed
    assert torch.equal(label_loss(logits, y, 0.1), F.cross_entropy(logits, y, label_smoothing=0.1))
    assert label_loss(logits.double(), q, 0.1).dtype == torch.float64  # float64 stays float64


def test_a_mixed_step_trains_on_mixed_images_and_the_teacher_sees_them_too():
    space = ofa.get_space("mbv3-cifar", width_mult=0.25, resolutions=(8,), num_classes=C)
    net = ofa.build_supernet(space, dropout=0.0, seed=0).train()
    randomize_bn_and_transforms(net, 0)
    with torch.no_grad():  # confident logits, so that the teacher's images matter to the KD loss
        net.head.classifier.weight.mul_(30.0)
    g = torch.Generator().manual_seed(0)
    x0, y0 = torch.randn(6, 3, 8, 8, generator=g), torch.randint(0, C, (6,), generator=g)
    x, y, info = mix_batch(x0, y0, C, np.random.default_rng(1), mixup_alpha=1.0)
    assert 0.2 < info["lam"] < 0.8
    strategy = get_strategy(StrategyConfig(name="deps", shrink_start=0.5, eps_ramp_epochs=2.0), space,
                            Schedule(10, 10, 0.1), 0)
    plan = strategy.plan(80)
    ref = copy.deepcopy(net)
    losses = train_step(net, plan, x, y, torch.optim.SGD(net.parameters(), lr=0.0))
    full = ref(x, plan.passes[0].arch)
    assert math.isclose(losses[plan.passes[0].role], float(label_loss(full, y, 0.1).detach()), rel_tol=1e-5)
    sub = plan.passes[1]  # the smallest subnet learns from the full model's logits on the same mixed images
    expected = float(pass_loss(sub.loss, ref(x, sub.arch), y, full.detach()).detach())
    assert math.isclose(losses[sub.role], expected, rel_tol=1e-5)
    unmixed_teacher = float(pass_loss(sub.loss, ref(x, sub.arch), y, ref(x0, plan.passes[0].arch)).detach())
    assert not math.isclose(expected, unmixed_teacher, rel_tol=1e-3)


def test_mix_config_fields_are_validated_and_set_as_the_official_commands():
    with pytest.raises(ConfigError, match=r"^data.mixup_alpha: -1.0 is not valid; must be >= 0 \(0: off\)$"):
        load_config(None, ["data.mixup_alpha=-1"])
    with pytest.raises(ConfigError, match=r"^data.mix_prob: 2.0 is not valid; must be in \[0, 1\]$"):
        load_config(None, ["data.mix_prob=2"])
    for preset in ("fashion-mnist", "fashion-mnist-quick", "imagenet", "imagenet-proxyless", "imagenet-ofa-ps",
                   "imagenet-compofa"):
        d = load_config(preset, []).data
        assert (d.mixup_alpha, d.cutmix_alpha) == (0.0, 0.0), preset  # see README: the official loaders never mix
