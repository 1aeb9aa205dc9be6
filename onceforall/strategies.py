"""Training strategies: each decides, for global step t, the *plan* — which archs run, with which loss
and which weight, and where the teacher comes from. One generic step (:mod:`onceforall.step`) executes
any plan, so DεpS and the baselines differ only here.

Arch sampling for step t is seeded from (seed, t, j) alone: every rank of a distributed run, and a run
resumed from a checkpoint, samples exactly the same archs without sharing any RNG state.
"""

from __future__ import annotations

import math
import random
from collections.abc import Callable
from dataclasses import dataclass

from .config import StrategyConfig
from .spaces import Arch, Space

__all__ = [
    "Pass",
    "Plan",
    "Schedule",
    "Strategy",
    "get_strategy",
    "list_strategies",
    "register_strategy",
    "sample_sandwich",
]


@dataclass(frozen=True)
class Pass:
    """One forward/backward of the step."""

    arch: Arch
    role: str
    """full, min, random1, random2, ... (names the loss in the metrics)."""
    loss: str
    """ce: label-smoothed cross-entropy on labels; kd: soft-target cross-entropy on the teacher's logits
    (+ kd_label_weight · CE); ce+kd: CE + kd_ratio · KD (OFA-PS)."""
    weight: float
    """Multiplier on this pass's loss (ε_t for DεpS subnets)."""


@dataclass(frozen=True)
class Plan:
    """What step t does."""

    passes: tuple[Pass, ...]
    teacher: str | None = None
    """None; 'inplace': the detached logits of passes[0] (the full model) in the same step; 'frozen': a frozen
    copy of the supernet running the full model (OFA-PS)."""
    eps: float = 0.0
    """ε_t (0 while only the full model trains); logged."""
    phase: str = "main"
    reorganize: bool = False
    """Re-organize channels by importance before this step."""
    snapshot_teacher: bool = False
    """Freeze a copy of the current supernet as the teacher before this step."""


@dataclass(frozen=True)
class Schedule:
    """The run's length and its learning-rate schedule (strategies read η from it, never from tables)."""

    epochs: int
    steps_per_epoch: int
    lr_at: Callable[[int], float]

    @property
    def total_steps(self) -> int:
        return self.epochs * self.steps_per_epoch

    def step_of(self, epochs: float) -> int:
        """First step at or after a (fractional) epoch."""
        return int(round(epochs * self.steps_per_epoch))


def cosine_lr(base: float, total_steps: int, warmup_steps: int = 0, min_lr: float = 0.0) -> Callable[[int], float]:
    """One cosine schedule over the whole run, optionally after a linear warmup (per step)."""

    def lr_at(step: int) -> float:
        if step < warmup_steps:
            return base * (step + 1) / warmup_steps
        span = max(1, total_steps - warmup_steps)
        progress = min(1.0, (step - warmup_steps) / span)
        return min_lr + (base - min_lr) * 0.5 * (1.0 + math.cos(math.pi * progress))

    return lr_at


def sample_sandwich(space: Space, seed: int, step: int, k: int) -> list[tuple[str, Arch]]:
    """The sandwich rule: full model, smallest subnet, then k-2 random archs seeded from (seed, step, j)."""
    archs = [("full", space.max())]
    if k >= 2:
        archs.append(("min", space.min()))
    for j in range(2, k):
        archs.append((f"random{j - 1}", space.sample(random.Random(f"arch:{seed}:{step}:{j}"))))
    return archs


class Strategy:
    """Base class: subclasses implement :meth:`plan`. Plans depend only on the step (and the config),
    so the state to checkpoint is small; it is saved anyway for forward compatibility."""

    name = "base"

    def __init__(self, cfg: StrategyConfig, space: Space, schedule: Schedule, seed: int):
        self.cfg, self.space, self.schedule, self.seed = cfg, space, schedule, seed

    def plan(self, step: int) -> Plan:  # pragma: no cover - abstract
        raise NotImplementedError

    def state_dict(self) -> dict:
        return {"name": self.name}

    def load_state_dict(self, state: dict) -> None:
        if state.get("name") != self.name:
            raise ValueError(f"checkpoint strategy '{state.get('name')}' does not match this run's '{self.name}'")


_STRATEGIES: dict[str, type[Strategy]] = {}


def register_strategy(cls: type[Strategy]) -> type[Strategy]:
    _STRATEGIES[cls.name] = cls
    return cls


def list_strategies() -> list[str]:
    return sorted(_STRATEGIES)


def get_strategy(cfg: StrategyConfig, space: Space, schedule: Schedule, seed: int) -> Strategy:
    if cfg.name not in _STRATEGIES:
        raise ValueError(f"strategy.name: '{cfg.name}' is not valid; valid: {', '.join(list_strategies())}")
    return _STRATEGIES[cfg.name](cfg, space, schedule, seed)


@register_strategy
class FullOnly(Strategy):
    """The plain full model: the reference for what once-for-all training costs."""

    name = "full-only"

    def plan(self, step: int) -> Plan:
        return Plan((Pass(self.space.max(), "full", "ce", 1.0),))


@register_strategy
class BigNAS(Strategy):
    """BigNAS (Yu et al. 2020): sandwich rule with in-place KD from step 0, every subnet at full weight."""

    name = "bignas"

    def plan(self, step: int) -> Plan:
        archs = sample_sandwich(self.space, self.seed, step, self.cfg.num_subnets)
        passes = [Pass(archs[0][1], "full", "ce", 1.0)]
        sub_loss = "kd" if self.cfg.ikd else "ce"
        passes += [Pass(a, role, sub_loss, 1.0) for role, a in archs[1:]]
        return Plan(tuple(passes), teacher="inplace" if self.cfg.ikd else None, eps=1.0)


@register_strategy
class DEpS(Strategy):
    """DεpS (paper §4): FM-Warmup, then ε-Shrinking with IKD-Warmup.

    Before ``shrink_step`` only the full model trains (FM-Warmup, §4.1). From then on every step runs
    the sandwich — full model with CE on labels, k-1 subnets with KD from the full model's detached
    logits (IKD-Warmup, §4.3) — and scales the subnets' losses by ε_t (eq. 4), which grows linearly per
    step from ``eps_start`` to 1 over the ramp (§4.2), so their effective learning rate warms up.
    """

    name = "deps"

    @property
    def shrink_step(self) -> int:
        if not self.cfg.fm_warmup:
            return 0
        return self.schedule.step_of(self.cfg.shrink_start * self.schedule.epochs)

    @property
    def ramp_steps(self) -> int:
        epochs = self.cfg.eps_ramp_epochs
        if epochs is None:  # default: 5 % of the run, at least one epoch
            epochs = max(1.0, 0.05 * self.schedule.epochs)
        return max(1, self.schedule.step_of(epochs))

    def eps(self, step: int) -> float:
        """ε_t of the paper: eps_start at the shrink step, +constant per step, 1 from the ramp's end."""
        if step < self.shrink_step:
            return 0.0
        if not self.cfg.eps_shrinking:
            return 1.0
        progress = min(1.0, (step - self.shrink_step) / self.ramp_steps)
        return self.cfg.eps_start + (1.0 - self.cfg.eps_start) * progress

    def subnet_weight(self, step: int) -> float:
        """Multiplier on the subnets' losses: ε_t (eps_mode=loss), or the code-faithful variant
        (eps_mode=lr) in which ε_t·η_t rises linearly to η(ramp end), with η from the LR schedule."""
        eps = self.eps(step)
        if self.cfg.eps_mode == "loss" or eps in (0.0, 1.0):
            return eps
        end = self.shrink_step + self.ramp_steps
        return eps * self.schedule.lr_at(end) / self.schedule.lr_at(step)

    def plan(self, step: int) -> Plan:
        full = self.space.max()
        if step < self.shrink_step:
            return Plan((Pass(full, "full", "ce", 1.0),), phase="fm-warmup")
        weight = self.subnet_weight(step)
        archs = sample_sandwich(self.space, self.seed, step, self.cfg.num_subnets)
        sub_loss = "kd" if self.cfg.ikd else "ce"
        passes = [Pass(full, "full", "ce", 1.0)] + [Pass(a, role, sub_loss, weight) for role, a in archs[1:]]
        return Plan(
            tuple(passes),
            teacher="inplace" if self.cfg.ikd else None,
            eps=self.eps(step),
            phase="shrinking",
            reorganize=self.cfg.reorganize and step == self.shrink_step and step > 0,
        )
