"""OFA progressive shrinking and CompOFA: phases, each a restricted space, KD from a frozen teacher."""

from __future__ import annotations

import random
from dataclasses import dataclass

from ..space import Space
from .base import Loss, Pass, Plan, Schedule, Strategy, StrategyConfig, cosine_lr, register_strategy

__all__ = ["COMPOFA_PHASES", "OFA_PHASES", "CompOFA", "Phase", "ProgressiveShrinking", "phase_space"]

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
        if not isinstance(d, dict):
            raise ValueError(f"strategy.phases: entry {d!r} is not valid; expected a mapping with keys "
                             f"{', '.join(sorted(known))}")
        bad = [k for k in d if k not in known]
        if bad or "name" not in d or "fraction" not in d:
            raise ValueError(f"strategy.phases: entry {d} is not valid; keys: {', '.join(sorted(known))} "
                             "(name and fraction required)")
        d = {k: (tuple(v) if isinstance(v, list) else v) for k, v in d.items()}
        for key in ("fraction", "lr_scale", "warmup"):
            value = d.get(key, 0.0)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or value < 0:
                raise ValueError(f"strategy.phases: phase '{d['name']}' {key} {value!r} is not valid; "
                                 "must be a number >= 0")
        n = d.get("num_subnets", 1)
        if isinstance(n, bool) or not isinstance(n, int) or n < 0:
            raise ValueError(f"strategy.phases: phase '{d['name']}' num_subnets {n!r} is not valid; "
                             "must be an integer >= 0")
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

    def __init__(self, cfg: StrategyConfig, space: Space, schedule: Schedule, seed: int, *,
                 label_smoothing: float = 0.1):
        super().__init__(cfg, space, schedule, seed, label_smoothing=label_smoothing)
        phases = self.parse_phases(cfg)
        self.phases = phases
        self.spaces = [phase_space(space, p) for p in phases]
        bounds, acc = [0], 0.0
        for p in phases:
            acc += p.fraction
            bounds.append(int(round(acc * schedule.total_steps)))
        self.bounds = bounds
        first_kd = [i for i, p in enumerate(phases) if p.num_subnets > 0]
        self.teacher_phase = first_kd[0] if first_kd else None

    @classmethod
    def parse_phases(cls, cfg: StrategyConfig) -> tuple[Phase, ...]:
        """The phase plan of ``cfg`` (``strategy.phases``, or the strategy's default plan), checked."""
        phases = tuple(Phase.from_dict(d) for d in cfg.phases) if cfg.phases else cls.default_phases
        total = sum(p.fraction for p in phases)
        if not phases or abs(total - 1.0) > 1e-6:
            raise ValueError(f"strategy.phases: fractions sum to {total:.4f}; they must sum to 1")
        return phases

    @classmethod
    def check_config(cls, cfg: StrategyConfig, space: Space) -> None:
        super().check_config(cfg, space)
        for p in cls.parse_phases(cfg):
            phase_space(space, p)

    def ce_kd(self) -> Loss:
        """OFA's loss against the frozen teacher: (CE + kd_ratio · KD) · 2 / (kd_ratio + 1)."""
        return Loss("ce+kd", label_smoothing=self.label_smoothing, temperature=self.cfg.kd_temperature,
                    kd_ratio=self.cfg.kd_ratio)

    def trained_space(self) -> Space:
        """The space of the last phase (the largest: OFA's elastic expand phase, CompOFA's coupled space)."""
        return self.spaces[-1]

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
        full, space = self.space.max(), self.spaces[i]
        reorganize = dict(reorganize=first and p.reorganize, reorganize_keep=self.reorganize_keep(space),
                          reorganize_momentum=self.cfg.reorganize_momentum)
        if p.num_subnets == 0:
            return Plan((Pass(full, "full", self.ce(), 1.0),), phase=p.name, reset_momentum=first and i > 0,
                        **reorganize)
        passes = tuple(
            Pass(space.sample(random.Random(f"arch:{self.seed}:{step}:{j}")), f"random{j + 1}", self.ce_kd(), 1.0,
                 self.cfg.subnet_dropout)
            for j in range(p.num_subnets)
        )
        return Plan(passes, teacher="frozen", teacher_arch=full, eps=1.0, phase=p.name,
                    snapshot_teacher=first and i == self.teacher_phase, reset_momentum=first and i > 0, **reorganize)


@register_strategy
class CompOFA(ProgressiveShrinking):
    """CompOFA (Sahni et al. 2021): progressive shrinking with depth and expand coupled per stage, so fewer,
    shorter phases (full model, then two compound phases)."""

    name = "compofa"
    default_phases = COMPOFA_PHASES
