"""DεpS (paper §4): FM-Warmup, then ε-Shrinking with IKD-Warmup."""

from __future__ import annotations

from .base import Pass, Plan, Strategy, register_strategy, sample_sandwich

__all__ = ["DEpS"]

@register_strategy
class DEpS(Strategy):
    """DεpS (paper §4): FM-Warmup, then ε-Shrinking with IKD-Warmup.

    Before ``shrink_step`` only the full model trains (FM-Warmup, §4.1). From then on every step runs
    the sandwich — full model with CE on labels, k-1 subnets with KD from the full model's detached
    logits (IKD-Warmup, §4.3) — and scales the subnets' losses by ε_t (eq. 4), which grows over the ramp
    (§4.2) so that their effective learning rate warms up: by default as the official code's
    ``adjust_beta_value`` (eps_mode lr-ramp), ε_t·η_t rising linearly to η at the ramp's end.
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
        """ε_t, the multiplier of the subnets' losses that is logged: 0 before the shrink step, 1 from the ramp's
        end; in between, eps_mode lr-ramp: the official adjust_beta_value (deps.py:51-102),
        ε_t = (t - s + 1) / R · η(s + R) / η_t; loss: eps_start + (1 - eps_start) · (t - s) / R. It scales the
        subnets' losses (their Pass weight)."""
        if step < self.shrink_step:
            return 0.0
        if not self.cfg.eps_shrinking:
            return 1.0
        done = step - self.shrink_step
        if done >= self.ramp_steps:
            return 1.0
        if self.cfg.eps_mode == "lr-ramp":
            return (done + 1) / self.ramp_steps * self.lr_at(self.shrink_step + self.ramp_steps) / self.lr_at(step)
        return self.cfg.eps_start + (1.0 - self.cfg.eps_start) * done / self.ramp_steps

    def plan(self, step: int) -> Plan:
        full = self.space.max()
        if step < self.shrink_step:
            return Plan((Pass(full, "full", self.ce(), 1.0),), phase="fm-warmup")
        weight = self.eps(step)
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
            reorganize_keep=self.reorganize_keep(self.space),
            reorganize_momentum=self.cfg.reorganize_momentum,
        )
