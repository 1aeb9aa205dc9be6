"""The training step: runs any strategy's plan (see :mod:`onceforall.core.strategies`).

For DεpS while shrinking (paper eq. 4), with a_0 the full model and ε_t from the strategy:

    L = CE_ls(a_0(B), y) + ε_t · Σ_{j≥1} KD(a_j(B), softmax(a_0(B).detach() / T))

:func:`begin_step` carries out what the plan asks for before its passes (re-organize channels, snapshot the
teacher, reset momentum), sets the learning rate and seeds dropout; :func:`train_step` then runs each pass
forward then backward at once (only one graph alive at a time); gradients of all passes and micro-batches
accumulate, then ONE gradient sync across ranks, optional clipping, one optimizer step. Training and
``analyze-gradients`` both take steps through these two functions, so a replayed step is the training step.
"""

from __future__ import annotations

import contextlib
import copy
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn

from .evaluation import at_resolution
from .optim import permute_optimizer_state
from .strategies import Loss, Plan

__all__ = ["begin_step", "frozen_copy", "kd_loss", "label_loss", "pass_loss", "train_step"]


def _wide(x: torch.Tensor) -> torch.Tensor:
    """Losses in at least float32 (autocast logits are half precision); float64 stays float64."""
    return x if x.dtype == torch.float64 else x.float()


def kd_loss(student: torch.Tensor, teacher: torch.Tensor, temperature: float = 1.0) -> torch.Tensor:
    """Soft-target cross-entropy H(softmax(teacher/T), softmax(student/T)) · T² (Hinton et al.)."""
    t = temperature
    target = F.softmax(_wide(teacher) / t, dim=1)
    return -(target * F.log_softmax(_wide(student) / t, dim=1)).sum(dim=1).mean() * (t * t)


def label_loss(logits: torch.Tensor, y: torch.Tensor, label_smoothing: float = 0.0) -> torch.Tensor:
    """Cross-entropy with label smoothing ls against class indices ``y`` (b,), or against distributions ``y``
    (b, C) (mixup/CutMix targets): -Σ_c ((1 - ls)·y_c + ls / C) · log_softmax(logits)_c, averaged over the batch
    (torch's cross_entropy with probabilities; timm's mixup targets with smoothing are the same distribution)."""
    logits = _wide(logits)
    if y.is_floating_point():
        y = y.to(logits.dtype)
    return F.cross_entropy(logits, y, label_smoothing=label_smoothing)


def pass_loss(loss: Loss, logits: torch.Tensor, y: torch.Tensor, teacher: torch.Tensor | None) -> torch.Tensor:
    """Loss of one pass: ce, kd (+ label_weight·CE) or ce+kd ((CE + kd_ratio·KD)·2/(kd_ratio+1), OFA); ``y``
    class indices or, for mixed batches, distributions (:func:`label_loss`)."""
    ce = lambda: label_loss(logits, y, loss.label_smoothing)  # noqa: E731
    if loss.kind == "ce":
        return ce()
    if teacher is None:
        raise ValueError(f"a '{loss.kind}' pass needs a teacher; the plan has none")
    kd = kd_loss(logits, teacher, loss.temperature)
    if loss.kind == "kd":
        return kd + loss.label_weight * ce() if loss.label_weight else kd
    if loss.kind == "ce+kd":  # OFA: (CE + r·KD) · 2 / (r + 1), so the loss scale does not depend on r
        return (ce() + loss.kd_ratio * kd) * (2.0 / (loss.kd_ratio + 1.0))
    raise ValueError(f"pass loss '{loss.kind}' is not valid; valid: ce, kd, ce+kd")


def frozen_copy(net: nn.Module) -> nn.Module:
    """A frozen teacher: a copy of ``net`` in eval mode without gradients (OFA-PS's snapshot of the full model)."""
    return copy.deepcopy(net).requires_grad_(False).eval()


def begin_step(plan: Plan, net: nn.Module, optimizer: torch.optim.Optimizer, teacher: nn.Module | None, *,
               lr: float, dropout_seed: int) -> nn.Module | None:
    """Prepare step t of ``plan``; returns the teacher the step uses (a new snapshot or ``teacher``).

    In this order: re-organize channels (OFA's importance sort within the plan's segments; the momentum follows
    its parameters only if the plan says so: the official DεpS code leaves it in place), snapshot
    the frozen teacher (OFA-PS: the trained full model teaches every later phase), clear momentum (a new
    phase starts like a new job), set the learning rate, and seed dropout with ``dropout_seed``
    (:func:`onceforall.core.seeds.dropout_seed`: a function of (seed, step, rank), so resumed runs and
    replays draw the same masks).
    """
    if plan.reorganize:
        moves = net.reorganize_channels(plan.reorganize_keep)
        if plan.reorganize_momentum:
            permute_optimizer_state(optimizer, moves)
    if plan.snapshot_teacher:
        teacher = frozen_copy(net)
    if plan.reset_momentum:
        optimizer.state.clear()
    for g in optimizer.param_groups:
        g["lr"] = lr
    torch.manual_seed(dropout_seed)
    return teacher


def train_step(
    net: nn.Module,
    plan: Plan,
    x: torch.Tensor,
    y: torch.Tensor,
    optimizer: torch.optim.Optimizer,
    *,
    micro_batches: int = 1,
    teacher_net: nn.Module | None = None,
    sync_grads: Callable[[], None] | None = None,
    grad_clip: float | None = None,
    autocast: Callable[[], contextlib.AbstractContextManager] = contextlib.nullcontext,
) -> dict[str, float]:
    """One optimizer step on this rank's batch ``(x, y)``; returns the mean loss of each pass role. ``x``: a
    tensor, or batches per resolution (``x.at(r)``, :class:`onceforall.data.MultiResolution`), each pass taking
    its arch's; ``y``: class indices or distributions (mixed batches)."""
    optimizer.zero_grad(set_to_none=True)
    losses = {p.role: 0.0 for p in plan.passes}
    for xm, ym in zip(x.chunk(micro_batches), y.chunk(micro_batches)):
        teacher = None
        if plan.teacher == "frozen":
            with torch.no_grad(), autocast():
                teacher = _wide(teacher_net(at_resolution(xm, plan.teacher_arch.resolution), plan.teacher_arch))
        for i, p in enumerate(plan.passes):
            with autocast():  # a batch cropped per resolution (data.train_per_resolution): this arch's crop
                logits = net(at_resolution(xm, p.arch.resolution), p.arch, dropout=p.dropout)
            loss = pass_loss(p.loss, logits, ym, teacher)
            # p.weight = ε_t for DεpS subnets: scales their gradient, i.e. their effective learning rate
            (loss * (p.weight / micro_batches)).backward()
            losses[p.role] += loss.item() / micro_batches
            if i == 0 and plan.teacher == "inplace":
                teacher = _wide(logits.detach())  # IKD: the full model of this very step teaches
    if sync_grads is not None:
        sync_grads()  # one all-reduce of all accumulated gradients (not one per subnet)
    if grad_clip is not None:
        torch.nn.utils.clip_grad_norm_([p for g in optimizer.param_groups for p in g["params"]], grad_clip)
    optimizer.step()
    return losses
