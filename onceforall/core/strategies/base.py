"""Training strategies: each decides, for global step t, the *plan* — which archs run, with which loss
and which weight, where the teacher comes from, and what happens before the passes (re-organize channels,
snapshot a teacher, reset momentum). One generic step (:mod:`onceforall.core.step`) executes any plan, so
DεpS and the baselines differ only in their plans.

Arch sampling for step t is seeded from (seed, t, j) alone: every rank of a distributed run, and a run
resumed from a checkpoint, samples exactly the same archs without sharing any RNG state.

A strategy owns its section of the run config (:class:`StrategyConfig`, the ``strategy:`` section of the
YAML): :meth:`Strategy.check_config` validates it when the config loads, before any data is read.
"""

from __future__ import annotations

import math
import random
from collections.abc import Callable
from dataclasses import dataclass

from ..arch import Arch
from ..space import Space

__all__ = [
    "Loss",
    "Pass",
    "Plan",
    "Schedule",
    "Strategy",
    "StrategyConfig",
    "cosine_lr",
    "get_strategy",
    "get_strategy_class",
    "list_strategies",
    "register_strategy",
    "sample_sandwich",
]


@dataclass
class StrategyConfig:
    """The ``strategy:`` section. One shape for every strategy, so presets can inherit from each other and
    ``strategy.name=bignas`` can be switched on a DεpS preset; each field says which strategies read it."""

    name: str = "deps"
    """Training strategy: deps, bignas, full-only, ofa-ps, compofa."""
    num_subnets: int = 4
    """deps, bignas: k, archs per shrinking step, the full model included (sandwich: full, min, k-2 random)."""
    shrink_start: float = 0.5
    """deps: fraction of the run trained on the full model alone (FM-Warmup) before shrinking."""
    fm_warmup: bool = True
    """deps ablation switch: False starts shrinking (and in-place KD) at step 0."""
    eps_shrinking: bool = True
    """deps ablation switch: False gives the subnets their full weight as soon as shrinking starts."""
    eps_start: float = 1.0e-4
    """deps, eps_mode loss: ε when shrinking starts (lr-ramp does not read it: there ε_t·η_t starts at 1/R of
    η at the ramp's end)."""
    eps_ramp_epochs: float | None = None
    """deps: epochs from the first shrinking step until ε reaches 1 (the official --smallnet_warmup, sw: ε = 1
    from epoch --teacher_warmup, shrinking from teacher_warmup - sw); None: 5 % of the run, at least 1 epoch."""
    eps_mode: str = "lr-ramp"
    """deps: how ε_t grows over the ramp of R steps from the shrink step s. lr-ramp (the official
    adjust_beta_value): ε_t = (t - s + 1) / R · η(s + R) / η_t, so the subnets' effective learning rate ε_t·η_t
    rises linearly to η(s + R), from 1/R of it at the first shrinking step; loss: ε_t grows linearly from
    eps_start to 1 with no learning-rate ratio (the paper's eq. 4 read literally; the default before
    2026-12-03). η always comes from the learning-rate schedule. (lr, ε_t of loss times η(s + R) / η_t, an
    earlier reading of the official code that no committed result used, went on 2026-12-03.)"""
    ikd: bool = True
    """deps, bignas: subnets learn from the full model's detached logits (in-place KD); False: from labels."""
    kd_temperature: float = 1.0
    """KD temperature T (the KD loss is scaled by T²)."""
    kd_label_weight: float = 0.0
    """deps, bignas: weight of an extra label cross-entropy term for subnets trained with KD."""
    kd_ratio: float = 1.0
    """ofa-ps/compofa: loss = CE + kd_ratio · KD from the frozen teacher."""
    reorganize: bool = True
    """deps: sort middle channels by importance when shrinking starts, as the official DεpS command does
    (--reorganize_weights); ofa-ps/compofa re-organize per phase (see phases)."""
    reorganize_mode: str = "ofa"
    """How channels are re-organized (deps, ofa-ps, compofa). ofa: OFA's re_organize_middle_weights as the official
    DεpS code calls it (expand_ratio_stage = number of expand choices - 2): each block's middle channels are sorted
    by importance (L1 norm of the project weights over outputs) within the segments bounded by the widths of the
    expand choices other than the largest and the smallest — for {3, 4, 6}: [0, mid(4)) and [mid(4), mid(6))
    separately; ofa-ps/compofa apply it to the phase's expand choices (OFA's own progressive shrinking does).
    global: one sort over all middle channels (this package's behaviour before 2026-12-03)."""
    reorganize_momentum: bool = False
    """Permute the optimizer's momentum buffers along with the channels they belong to when channels are
    re-organized; False: leave them where they are, as the official DεpS code does (it replaces the parameters'
    data, the optimizer state is untouched). True: this package's behaviour before 2026-12-03."""
    subnet_dropout: bool = False
    """Classifier dropout on the subnets' passes too; False: only on the full model's passes, as the official
    DεpS, BigNAS and OFA code (True: this package's behaviour before 2026-11-25)."""
    phases: list[dict] | None = None
    """ofa-ps/compofa: phase plan [{name, epochs (fraction of the run), depths?, kernels?, expands?}];
    None: the strategy's default plan."""


# Valid values of the section's fields: (low, high, text) ranges and choices, checked for every strategy.
_RANGES: dict[str, tuple[float | None, float | None, str]] = {
    "num_subnets": (1, None, ">= 1"),
    "shrink_start": (0, 0.999999, "in [0, 1)"),
    "eps_start": (1e-12, 1, "in (0, 1]"),
    "eps_ramp_epochs": (1e-9, None, "> 0"),
    "kd_temperature": (1e-6, None, "> 0"),
    "kd_label_weight": (0, None, ">= 0"),
    "kd_ratio": (0, None, ">= 0"),
}
_CHOICES = {"eps_mode": ("lr-ramp", "loss"), "reorganize_mode": ("ofa", "global")}


@dataclass(frozen=True)
class Loss:
    """How one pass's logits become its loss (:func:`onceforall.core.step.pass_loss`)."""

    kind: str
    """ce: label-smoothed cross-entropy on labels; kd: soft-target cross-entropy on the teacher's logits
    (+ label_weight · CE); ce+kd: (CE + kd_ratio · KD) · 2 / (kd_ratio + 1) (OFA-PS)."""
    label_smoothing: float = 0.1
    """Label smoothing of every cross-entropy on labels."""
    temperature: float = 1.0
    """KD temperature T (scaled by T²)."""
    label_weight: float = 0.0
    """kd: weight of the extra label cross-entropy term."""
    kd_ratio: float = 1.0
    """ce+kd: weight of the KD term."""


@dataclass(frozen=True)
class Pass:
    """One forward/backward of the step."""

    arch: Arch
    role: str
    """full, min, random1, random2, ... (names the loss in the metrics)."""
    loss: Loss
    """The loss of this pass, with its parameters."""
    weight: float
    """Multiplier on this pass's loss (ε_t for DεpS subnets)."""
    dropout: bool = True
    """Classifier dropout on this pass (the official DεpS, BigNAS and OFA code: the full model's passes only)."""


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
    reorganize_keep: tuple[float, ...] = ()
    """Expand ratios whose middle-channel widths bound the segments the re-organization sorts within (OFA's
    expand_ratio_stage); (): one sort over all middle channels."""
    reorganize_momentum: bool = False
    """Permute the optimizer's momentum with the re-organized channels (False: the official code's, untouched)."""
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

    def __init__(self, cfg: StrategyConfig, space: Space, schedule: Schedule, seed: int, *,
                 label_smoothing: float = 0.1):
        self.cfg, self.space, self.schedule, self.seed = cfg, space, schedule, seed
        self.label_smoothing = label_smoothing

    @classmethod
    def check_config(cls, cfg: StrategyConfig, space: Space) -> None:
        """Raise ValueError (one line naming the field) if ``cfg`` cannot run on ``space``; called when the
        run config loads, before any data is read. Subclasses extend it with their own fields' checks."""
        for key, valid in _CHOICES.items():
            if getattr(cfg, key) not in valid:
                raise ValueError(f"strategy.{key}: '{getattr(cfg, key)}' is not valid; valid: {', '.join(valid)}")
        for key, (lo, hi, text) in _RANGES.items():
            value = getattr(cfg, key)
            if value is not None and ((lo is not None and value < lo) or (hi is not None and value > hi)):
                raise ValueError(f"strategy.{key}: {value} is not valid; must be {text}")

    def ce(self) -> Loss:
        """Label-smoothed cross-entropy on labels."""
        return Loss("ce", label_smoothing=self.label_smoothing)

    def kd(self) -> Loss:
        """In-place KD from the full model's logits (+ kd_label_weight · CE); CE when ``ikd`` is off."""
        if not self.cfg.ikd:
            return self.ce()
        return Loss("kd", label_smoothing=self.label_smoothing, temperature=self.cfg.kd_temperature,
                    label_weight=self.cfg.kd_label_weight)

    def reorganize_keep(self, space: Space) -> tuple[float, ...]:
        """Plan.reorganize_keep for a re-organization before training ``space``: with reorganize_mode ofa, its
        expand choices but the largest and the smallest (OFA's expand_ratio_stage = len(expands) - 2, as the
        official DεpS code and OFA's progressive shrinking call re_organize_middle_weights); global: none."""
        if self.cfg.reorganize_mode == "global":
            return ()
        expands = sorted({e for st in space.stages for e in st.expands})
        return tuple(expands[1:-1])

    def trained_space(self) -> Space:
        """The archs this strategy trains (what its run is evaluated, searched and exported on): the whole
        space, or a restriction of it (CompOFA's coupled space)."""
        return self.space

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


def get_strategy_class(name: str) -> type[Strategy]:
    """The registered strategy ``name``; unknown names raise ValueError listing the valid ones."""
    if name not in _STRATEGIES:
        raise ValueError(f"strategy.name: '{name}' is not valid; valid: {', '.join(list_strategies())}")
    return _STRATEGIES[name]


def get_strategy(cfg: StrategyConfig, space: Space, schedule: Schedule, seed: int, *,
                 label_smoothing: float = 0.1) -> Strategy:
    return get_strategy_class(cfg.name)(cfg, space, schedule, seed, label_smoothing=label_smoothing)
