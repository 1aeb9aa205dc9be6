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
    copy of the supernet running ``teacher_arch`` (OFA-PS, CompOFA)."""
    teacher_arch: Arch | None = None
    eps: float = 0.0
    """ε_t (0 while only the full model trains); logged."""
    phase: str = "main"
    reorganize: bool = False
    """Re-organize channels by importance before this step."""
    snapshot_teacher: bool = False
    """Freeze a copy of the current supernet as the teacher before this step."""
    reset_momentum: bool = False
    """Clear the optimizer's momentum before this step (a new OFA-PS phase starts like a new job)."""


@dataclass(frozen=True)
class Schedule:
    """The run's length and its learning-rate schedule: one cosine over the whole run after an optional linear
    warmup (strategies read η from it, never from tables; phased strategies run one cosine per phase)."""

    epochs: int
    steps_per_epoch: int
    base_lr: float
    warmup_steps: int = 0
    min_lr: float = 0.0

    @property
    def total_steps(self) -> int:
        return self.epochs * self.steps_per_epoch

    def lr_at(self, step: int) -> float:
        return cosine_lr(self.base_lr, self.total_steps, self.warmup_steps, self.min_lr)(step)

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

    def lr_at(self, step: int) -> float:
        """Learning rate of step t (the run's one cosine schedule unless a strategy has phases)."""
        return self.schedule.lr_at(step)

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
        return eps * self.lr_at(end) / self.lr_at(step)

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


# ---------------------------------------------------------------------------------------------------
# Progressive shrinking (OFA) and CompOFA: phases, each a restricted space, KD from a frozen teacher
# ---------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Phase:
    """One phase of a progressive-shrinking plan (``strategy.phases`` entries in YAML)."""

    name: str
    fraction: float
    """Share of the run's epochs."""
    kernels: str | tuple[int, ...] = "all"
    """Choices: 'all', 'max', 'top2' or an explicit list (same for depths and expands)."""
    depths: str | tuple[int, ...] = "all"
    expands: str | tuple[float, ...] = "all"
    coupled: bool = False
    """CompOFA: couple depth and expand per stage (i-th smallest depth <-> i-th smallest expand)."""
    num_subnets: int = 1
    """Random subnets per step (0: the full model alone, trained on labels)."""
    lr_scale: float = 1.0
    """Peak learning rate of the phase as a multiple of optim.lr (each phase has its own cosine)."""
    warmup: float = 0.0
    """Linear warmup, as a fraction of the phase."""
    reorganize: bool = False
    """Re-organize middle channels by importance when the phase starts."""

    @classmethod
    def from_dict(cls, d: dict) -> Phase:
        known = {f for f in cls.__dataclass_fields__}
        bad = [k for k in d if k not in known]
        if bad or "name" not in d or "fraction" not in d:
            raise ValueError(f"strategy.phases: entry {d} is not valid; keys: {', '.join(sorted(known))} "
                             "(name and fraction required)")
        d = {k: (tuple(v) if isinstance(v, list) else v) for k, v in d.items()}
        return cls(**d)


# OFA's ImageNet recipe: 180 (full) + 120+5 (kernel) + 25 + 120+5 (depth) + 25 + 120+5 (expand) = 605 epochs.
# Peak LRs are OFA's per-phase base LRs relative to its full-model LR (2.6 at batch 2048): kernel 3e-2x32
# = 0.96 -> 0.369; depth/expand phase 1: 0.08 -> 0.031; phase 2: 0.24 -> 0.092. Random subnets per step
# as in OFA: kernel 1, depth 2, expand 4. Channels are re-organized when each expand phase starts.
OFA_PHASES = (
    Phase("full", 180 / 605, "max", "max", "max", num_subnets=0),
    Phase("kernel", 125 / 605, "all", "max", "max", num_subnets=1, lr_scale=0.369, warmup=5 / 125),
    Phase("depth-1", 25 / 605, "all", "top2", "max", num_subnets=2, lr_scale=0.031),
    Phase("depth-2", 125 / 605, "all", "all", "max", num_subnets=2, lr_scale=0.092, warmup=5 / 125),
    Phase("expand-1", 25 / 605, "all", "all", "top2", num_subnets=4, lr_scale=0.031, reorganize=True),
    Phase("expand-2", 125 / 605, "all", "all", "all", num_subnets=4, lr_scale=0.092, warmup=5 / 125,
          reorganize=True),
)

# CompOFA's recipe: 180 (full) + 25 + 120+5 (compound: depth and expand coupled) = 330 epochs, 4 subnets per
# step, channels re-organized when each compound phase starts.
COMPOFA_PHASES = (
    Phase("full", 180 / 330, "max", "max", "max", num_subnets=0),
    Phase("compound-1", 25 / 330, coupled=True, num_subnets=4, lr_scale=0.031, reorganize=True),
    Phase("compound-2", 125 / 330, coupled=True, num_subnets=4, lr_scale=0.092, warmup=5 / 125, reorganize=True),
)


def _choices(spec, current: tuple, field: str, phase: str) -> tuple | None:
    if spec == "all":
        return None
    if spec == "max":
        return (max(current),)
    if spec == "top2":
        return tuple(sorted(current)[-2:])
    if isinstance(spec, (tuple, list)):
        return tuple(spec)
    raise ValueError(f"strategy.phases: phase '{phase}' {field} '{spec}' is not valid; valid: all, max, top2 or a list")


def phase_space(space: Space, phase: Phase) -> Space:
    """The restricted space of a phase (flat restrictions apply to every elastic stage; the choices of the
    first stage with elastic depth define 'max' and 'top2')."""
    st = next(s for s in space.stages if len(s.depths) > 1)
    kwargs = {
        name: _choices(getattr(phase, name), getattr(st, name), name, phase.name)
        for name in ("kernels", "depths", "expands")
    }
    sub = space.restrict(**{k: v for k, v in kwargs.items() if v is not None})
    if phase.coupled:
        st = next(s for s in sub.stages if len(s.depths) > 1)
        depths, expands = sorted(st.depths), sorted(st.expands)
        if len(depths) != len(expands):
            raise ValueError(f"strategy.phases: phase '{phase.name}' couples {len(depths)} depths with "
                             f"{len(expands)} expands; they must match")
        sub = sub.restrict(coupling=dict(zip(depths, expands)))
    return sub


@register_strategy
class ProgressiveShrinking(Strategy):
    """OFA progressive shrinking (Cai et al. 2020): the full model first, then phases that enlarge the space —
    elastic kernel, depth, expand — each sampling random subnets of its restricted space, each trained with
    CE + kd_ratio · KD from a frozen copy of the trained full model, each with its own cosine learning rate."""

    name = "ofa-ps"
    default_phases = OFA_PHASES

    def __init__(self, cfg: StrategyConfig, space: Space, schedule: Schedule, seed: int):
        super().__init__(cfg, space, schedule, seed)
        phases = tuple(Phase.from_dict(d) for d in cfg.phases) if cfg.phases else self.default_phases
        total = sum(p.fraction for p in phases)
        if not phases or abs(total - 1.0) > 1e-6:
            raise ValueError(f"strategy.phases: fractions sum to {total:.4f}; they must sum to 1")
        self.phases = phases
        self.spaces = [phase_space(space, p) for p in phases]
        bounds, acc = [0], 0.0
        for p in phases:
            acc += p.fraction
            bounds.append(int(round(acc * schedule.total_steps)))
        self.bounds = bounds
        first_kd = [i for i, p in enumerate(phases) if p.num_subnets > 0]
        self.teacher_phase = first_kd[0] if first_kd else None

    def phase_at(self, step: int) -> int:
        for i in range(len(self.phases)):
            if step < self.bounds[i + 1]:
                return i
        return len(self.phases) - 1

    def lr_at(self, step: int) -> float:
        """Each phase: its own cosine from ``lr_scale · optim.lr`` after its own warmup (the first phase also
        honours optim.warmup_epochs), as each OFA phase is a separate training job."""
        i = self.phase_at(step)
        p, start, end = self.phases[i], self.bounds[i], self.bounds[i + 1]
        warm = int(round(p.warmup * (end - start))) or (self.schedule.warmup_steps if i == 0 else 0)
        sched = self.schedule
        return cosine_lr(sched.base_lr * p.lr_scale, max(1, end - start), warm, sched.min_lr * p.lr_scale)(step - start)

    def plan(self, step: int) -> Plan:
        i = self.phase_at(step)
        p, first = self.phases[i], step == self.bounds[i]
        full = self.space.max()
        if p.num_subnets == 0:
            return Plan((Pass(full, "full", "ce", 1.0),), phase=p.name, reorganize=first and p.reorganize,
                        reset_momentum=first and i > 0)
        space = self.spaces[i]
        passes = tuple(
            Pass(space.sample(random.Random(f"arch:{self.seed}:{step}:{j}")), f"random{j + 1}", "ce+kd", 1.0)
            for j in range(p.num_subnets)
        )
        return Plan(passes, teacher="frozen", teacher_arch=full, eps=1.0, phase=p.name,
                    reorganize=first and p.reorganize, snapshot_teacher=first and i == self.teacher_phase,
                    reset_momentum=first and i > 0)


@register_strategy
class CompOFA(ProgressiveShrinking):
    """CompOFA (Sahni et al. 2021): progressive shrinking with depth and expand coupled per stage, so fewer,
    shorter phases (full model, then two compound phases)."""

    name = "compofa"
    default_phases = COMPOFA_PHASES
