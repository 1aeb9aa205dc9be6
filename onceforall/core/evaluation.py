"""Measuring one subnet: extract it, recalibrate its BN statistics on training images, count correct answers."""

from __future__ import annotations

from collections.abc import Iterable

import torch
from torch import nn

from .arch import Arch
from .bn import recalibrate_bn
from .supernet import Supernet

__all__ = ["accuracy", "evaluate_arch"]


@torch.no_grad()
def accuracy(model: nn.Module, batches: Iterable, device: torch.device, memory_format=torch.contiguous_format,
             arch: Arch | None = None) -> float:
    """Top-1 accuracy (%) of ``model`` (or of ``model`` running ``arch``) over ``batches`` of (x, y)."""
    model.eval()
    correct = total = 0
    for x, y in batches:
        x = x.to(device, non_blocking=True).contiguous(memory_format=memory_format)
        y = y.to(device, non_blocking=True)
        logits = model(x) if arch is None else model(x, arch)
        correct += int((logits.argmax(1) == y).sum())
        total += y.numel()
    if total == 0:
        raise ValueError("accuracy: the evaluation set is empty")
    return 100.0 * correct / total


def evaluate_arch(net: Supernet, arch: Arch, bn_batches: Iterable, val_batches: Iterable, *, bn_images: int,
                  device: torch.device, memory_format=torch.contiguous_format) -> float:
    """Accuracy (%) of ``arch``: extract the subnet, recalibrate its BN, evaluate. The supernet is untouched."""
    sub = net.extract(arch).to(device=device, memory_format=memory_format)
    recalibrate_bn(sub, bn_batches, num_images=bn_images, device=device, memory_format=memory_format)
    return accuracy(sub, val_batches, device, memory_format)
