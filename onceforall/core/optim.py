"""The optimizer of every strategy: SGD (Nesterov) with weight decay only where it belongs."""

from __future__ import annotations

from collections.abc import Iterable

import torch
from torch import nn

__all__ = ["build_optimizer", "permute_optimizer_state"]


def build_optimizer(net: nn.Module, *, lr: float, momentum: float = 0.9, nesterov: bool = True,
                    weight_decay: float = 3e-5) -> torch.optim.SGD:
    """SGD (Nesterov) with weight decay on conv/linear weights only: not on BN, biases or the
    kernel-transform matrices (which start at identity; decay would pull them towards zero)."""
    decay, no_decay = [], []
    for name, p in net.named_parameters():
        (no_decay if p.ndim <= 1 or "kernel_transform" in name else decay).append(p)
    groups = [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    return torch.optim.SGD(groups, lr=lr, momentum=momentum, nesterov=nesterov and momentum > 0)


def permute_optimizer_state(optimizer: torch.optim.Optimizer,
                            moves: Iterable[tuple[torch.Tensor, int, torch.Tensor]]) -> None:
    """After channel re-organization, permute momentum buffers exactly like their parameters."""
    for tensor, dim, idx in moves:
        state = optimizer.state.get(tensor)
        if state and state.get("momentum_buffer") is not None:
            buf = state["momentum_buffer"]
            buf.copy_(buf.index_select(dim, idx))
