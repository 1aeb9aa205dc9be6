"""Measuring one subnet: extract it, recalibrate its BN statistics on training images, count correct answers."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Protocol, runtime_checkable

import torch
from torch import nn

from .arch import Arch
from .bn import recalibrate_bn
from .supernet import Supernet

__all__ = ["PerResolution", "accuracy", "at_resolution", "correct_mask", "evaluate_arch", "mask_accuracy"]


@torch.inference_mode()
def correct_mask(model: nn.Module, batches: Iterable, device: torch.device, memory_format=torch.contiguous_format,
                 arch: Arch | None = None) -> torch.Tensor:
    """Per image of ``batches`` (in order): whether ``model`` (or ``model`` running ``arch``) classifies it
    correctly (a bool tensor on the CPU)."""
    model.eval()
    hits = []
    for x, y in batches:
        x = x.to(device, non_blocking=True).contiguous(memory_format=memory_format)
        y = y.to(device, non_blocking=True)
        logits = model(x) if arch is None else model(x, arch)
        hits.append((logits.argmax(1) == y).cpu())
    if not hits or sum(h.numel() for h in hits) == 0:
        raise ValueError("accuracy: the evaluation set is empty")
    return torch.cat(hits)


def accuracy(model: nn.Module, batches: Iterable, device: torch.device, memory_format=torch.contiguous_format,
             arch: Arch | None = None) -> float:
    """Top-1 accuracy (%) of ``model`` (or of ``model`` running ``arch``) over ``batches`` of (x, y)."""
    return mask_accuracy(correct_mask(model, batches, device, memory_format, arch))


def mask_accuracy(mask: torch.Tensor) -> float:
    """Top-1 accuracy (%) of a :func:`correct_mask`."""
    return 100.0 * int(mask.sum()) / mask.numel()


@runtime_checkable
class PerResolution(Protocol):
    """Batches that are read differently for each resolution (image folders under OFA's protocol:
    :class:`~onceforall.data.EvalBatches`, :class:`~onceforall.data.FixedCrops`)."""

    def at(self, resolution: int) -> Iterable: ...


def at_resolution(batches: Iterable, resolution: int) -> Iterable:
    """``batches`` as a subnet at ``resolution`` sees them (``batches.at(resolution)`` where they have it)."""
    return batches.at(resolution) if isinstance(batches, PerResolution) else batches


def evaluate_arch(net: Supernet, arch: Arch, bn_batches: Iterable, val_batches: Iterable, *, bn_images: int,
                  device: torch.device, memory_format=torch.contiguous_format) -> torch.Tensor:
    """Per-image correctness (:func:`correct_mask`) of ``arch``: extract the subnet, recalibrate its BN,
    evaluate, both on batches read at the arch's resolution (:func:`at_resolution`). The supernet is untouched;
    :func:`mask_accuracy` turns it into top-1 (%)."""
    sub = net.extract(arch).to(device=device, memory_format=memory_format)
    recalibrate_bn(sub, at_resolution(bn_batches, arch.resolution), num_images=bn_images, device=device,
                   memory_format=memory_format)
    return correct_mask(sub, at_resolution(val_batches, arch.resolution), device, memory_format)
