"""Shared test helpers."""

import os
from pathlib import Path

import pytest
import torch

import onceforall as ofa

FASHION = Path(os.environ.get("ONCEFORALL_FASHION_MNIST", "/usr/share/datasets/fashion-mnist"))
needs_fashion = pytest.mark.skipif(not (FASHION / "train-images-idx3-ubyte.gz").exists(),
                                   reason="Fashion-MNIST not installed (make test installs dataset-fashion-mnist)")

# A toy training run on real Fashion-MNIST: 256 images, batch 32 -> 8 steps per epoch; 2 epochs; shrinking (DεpS)
# in the second epoch.
TINY = [
    "data.train_subset=256", "data.eval_subset=64", "data.bn_images=64", "data.eval_batch_size=64",
    "data.image_size=16", "model.width_mult=0.25", "model.resolutions=[16]", "train.batch_size=32",
    "train.epochs=2", "train.log_every=1", "train.threads=1", "strategy.eps_ramp_epochs=0.5",
    "data.test_subset=1000",  # the final validation reports on 1,000 test images, not all 10,000
]

# Every registered space at CPU-test size (timm style: parametrize over the registry).
SPACE_NAMES = ofa.list_spaces()


def tiny_space(name: str, num_classes: int = 7, in_channels: int = 3) -> ofa.Space:
    """A registered space at width 0.25 with two small resolutions."""
    res = (24, 32) if "cifar" in name else (32, 40)
    return ofa.get_space(name, width_mult=0.25, resolutions=res, num_classes=num_classes, in_channels=in_channels)


def randomize_bn_and_transforms(net: torch.nn.Module, seed: int = 0) -> None:
    """Non-trivial BN statistics/affine and kernel transforms, so parity tests can fail."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in net.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.running_mean.normal_(0, 0.2, generator=g)
                m.running_var.uniform_(0.5, 2.0, generator=g)
                m.weight.normal_(1, 0.2, generator=g)
                m.bias.normal_(0, 0.2, generator=g)
        for name, p in net.named_parameters():
            if "kernel_transform" in name:
                p.add_(torch.randn(p.shape, generator=g) * 0.1)
