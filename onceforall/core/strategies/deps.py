"""DεpS (paper §4): FM-Warmup, then ε-Shrinking with IKD-Warmup."""

from __future__ import annotations

from .base import Pass, Plan, Strategy, register_strategy, sample_sandwich

__all__ = ["DEpS"]

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
            return Plan((Pass(full, "full", self.ce(), 1.0),), phase="fm-warmup")
        weight = self.subnet_weight(step)
        archs = sample_sandwich(self.space, self.seed, step, self.cfg.num_subnets)
        passes = [Pass(full, "full", self.ce(), 1.0)] + [
            Pass(a, role, self.kd(), weight, self.cfg.subnet_dropout) for role, a in archs[1:]
        ]
        return Plan(
            tuple(passes),
            teacher="inplace" if self.cfg.ikd else None,
            eps=self.eps(step),
            phase="shrinking",
            reorganize=self.cfg.reorganize and step == self.shrink_step and step > 0,
        )
