"""Training cost in MACs: a unit that does not depend on the machine or its load (wall time is the cross-check).

Convention (counted by :class:`~onceforall.run.state.TrainState`, written to a run's ``cost.json``):

- ``train_macs``: the whole training cost, the number cost ratios use. Each pass of a step costs the analytic MACs
  of its arch (:meth:`~onceforall.core.space.Space.macs`, one image) x the step's images (the global batch, all
  ranks) x 3 (forward + backward, the backward counted as 2x the forward); a frozen teacher's forward (OFA-PS,
  CompOFA KD) costs its arch's MACs x the images, once (no backward), and is included.
- ``teacher_macs``: the frozen teacher's share of ``train_macs`` (0 for in-place KD: the full model's own pass
  teaches, at no extra cost).
- ``eval_macs``: validation during training (each validated arch's BN recalibration + evaluation forwards), kept
  apart: it is not part of the training cost.
"""

from __future__ import annotations

from .arch import Arch
from .space import Space
from .strategies.base import Plan

__all__ = ["BACKWARD_FACTOR", "eval_macs", "step_macs"]

BACKWARD_FACTOR = 3
"""A trained pass costs forward + backward = 3 forwards (the backward counted as 2x the forward)."""


def step_macs(space: Space, plan: Plan, images: int) -> tuple[int, int]:
    """(MACs of the step's trained passes, MACs of its frozen teacher's forward) for ``images`` images (the global
    batch of the step, summed over ranks)."""
    trained = sum(space.macs(p.arch) for p in plan.passes) * images * BACKWARD_FACTOR
    teacher = space.macs(plan.teacher_arch) * images if plan.teacher == "frozen" and plan.teacher_arch else 0
    return trained, teacher


def eval_macs(space: Space, arch: Arch, images: int) -> int:
    """MACs of evaluating ``arch`` on ``images`` images (BN recalibration and evaluation: forwards only)."""
    return space.macs(arch) * images
