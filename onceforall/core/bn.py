"""BatchNorm recalibration: subnets of a supernet share BN layers whose running statistics belong to no
subnet in particular, so statistics are re-estimated before evaluating any subnet (OFA, BigNAS)."""

from __future__ import annotations

from collections.abc import Iterable

import torch
from torch import nn

from .arch import Arch

__all__ = ["recalibrate_bn"]


@torch.no_grad()
def recalibrate_bn(
    model: nn.Module,
    loader: Iterable,
    num_images: int = 2000,
    arch: Arch | None = None,
    device: torch.device | str | None = None,
    memory_format: torch.memory_format = torch.contiguous_format,
) -> nn.Module:
    """Reset every BatchNorm's statistics and re-estimate them as the average, weighted by images, of
    the batch statistics over the first ``num_images`` images of ``loader`` (batches of images or
    (images, labels)).

    ``model`` is a subnet (``model(x)``) or, with ``arch``, a supernet (``model(x, arch)``; this
    overwrites the statistics of the channels the arch uses). Only BN layers switch to training mode,
    so dropout stays off. Returns ``model`` in eval mode.
    """
    if num_images < 1:
        raise ValueError(f"num_images: {num_images} is not valid; must be >= 1")
    bns = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    saved = [(bn.momentum, bn.training) for bn in bns]
    model.eval()
    for bn in bns:
        bn.reset_running_stats()
        bn.train()
    if device is None:
        device = next(model.parameters()).device
    seen = 0
    try:
        for batch in loader:
            x = batch[0] if isinstance(batch, (tuple, list)) else batch
            x = x[: num_images - seen].to(device, non_blocking=True).contiguous(memory_format=memory_format)
            if x.shape[0] == 0:
                break
            # cumulative average weighted by images: new = old + b / (seen + b) * (batch - old)
            for bn in bns:
                bn.momentum = x.shape[0] / (seen + x.shape[0])
            model(x) if arch is None else model(x, arch)
            seen += x.shape[0]
            if seen >= num_images:
                break
    finally:
        for bn, (momentum, _) in zip(bns, saved):
            bn.momentum = momentum
            bn.eval()
    if seen == 0:
        raise ValueError("recalibrate_bn: the loader yielded no images")
    return model
