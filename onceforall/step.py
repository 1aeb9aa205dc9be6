"""The training step: runs any strategy's plan (see :mod:`onceforall.strategies`).

For DεpS while shrinking (paper eq. 4), with a_0 the full model and ε_t from the strategy:

    L = CE_ls(a_0(B), y) + ε_t · Σ_{j≥1} KD(a_j(B), softmax(a_0(B).detach() / T))

Each pass runs forward then backward at once (only one graph alive at a time); gradients of all passes
and micro-batches accumulate, then ONE gradient sync across ranks, optional clipping, one optimizer step.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn

from .strategies import Plan

__all__ = ["kd_loss", "pass_loss", "train_step"]


def kd_loss(student: torch.Tensor, teacher: torch.Tensor, temperature: float = 1.0) -> torch.Tensor:
    """Soft-target cross-entropy H(softmax(teacher/T), softmax(student/T)) · T² (Hinton et al.)."""
    t = temperature
    target = F.softmax(teacher.float() / t, dim=1)
    return -(target * F.log_softmax(student.float() / t, dim=1)).sum(dim=1).mean() * (t * t)


def pass_loss(kind: str, logits: torch.Tensor, y: torch.Tensor, teacher: torch.Tensor | None, *,
              label_smoothing: float, temperature: float, kd_label_weight: float, kd_ratio: float) -> torch.Tensor:
    """Loss of one pass: ce, kd (+ kd_label_weight·CE) or ce+kd ((CE + kd_ratio·KD)·2/(kd_ratio+1), OFA)."""
    ce = lambda: F.cross_entropy(logits.float(), y, label_smoothing=label_smoothing)  # noqa: E731
    if kind == "ce":
        return ce()
    if teacher is None:
        raise ValueError(f"a '{kind}' pass needs a teacher; the plan has none")
    kd = kd_loss(logits, teacher, temperature)
    if kind == "kd":
        return kd + kd_label_weight * ce() if kd_label_weight else kd
    if kind == "ce+kd":  # OFA: (CE + r·KD) · 2 / (r + 1), so the loss scale does not depend on r
        return (ce() + kd_ratio * kd) * (2.0 / (kd_ratio + 1.0))
    raise ValueError(f"pass loss '{kind}' is not valid; valid: ce, kd, ce+kd")


def train_step(
    net: nn.Module,
    plan: Plan,
    x: torch.Tensor,
    y: torch.Tensor,
    optimizer: torch.optim.Optimizer,
    *,
    label_smoothing: float = 0.1,
    temperature: float = 1.0,
    kd_label_weight: float = 0.0,
    kd_ratio: float = 1.0,
    micro_batches: int = 1,
    teacher_net: nn.Module | None = None,
    sync_grads: Callable[[], None] | None = None,
    grad_clip: float | None = None,
    autocast: Callable[[], contextlib.AbstractContextManager] = contextlib.nullcontext,
) -> dict[str, float]:
    """One optimizer step on this rank's batch ``(x, y)``; returns the mean loss of each pass role."""
    optimizer.zero_grad(set_to_none=True)
    losses = {p.role: 0.0 for p in plan.passes}
    for xm, ym in zip(x.chunk(micro_batches), y.chunk(micro_batches)):
        teacher = None
        if plan.teacher == "frozen":
            with torch.no_grad(), autocast():
                teacher = teacher_net(xm, plan.teacher_arch).float()
        for i, p in enumerate(plan.passes):
            with autocast():
                logits = net(xm, p.arch)
            loss = pass_loss(p.loss, logits, ym, teacher, label_smoothing=label_smoothing, temperature=temperature,
                             kd_label_weight=kd_label_weight, kd_ratio=kd_ratio)
            # p.weight = ε_t for DεpS subnets: scales their gradient, i.e. their effective learning rate
            (loss * (p.weight / micro_batches)).backward()
            losses[p.role] += loss.item() / micro_batches
            if i == 0 and plan.teacher == "inplace":
                teacher = logits.detach().float()  # IKD: the full model of this very step teaches
    if sync_grads is not None:
        sync_grads()  # one all-reduce of all accumulated gradients (not one per subnet)
    if grad_clip is not None:
        torch.nn.utils.clip_grad_norm_([p for g in optimizer.param_groups for p in g["params"]], grad_clip)
    optimizer.step()
    return losses
