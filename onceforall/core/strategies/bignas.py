"""BigNAS: the sandwich rule with in-place KD from the first step."""

from __future__ import annotations

from .base import Pass, Plan, Strategy, register_strategy, sample_sandwich

__all__ = ["BigNAS"]

@register_strategy
class BigNAS(Strategy):
    """BigNAS (Yu et al. 2020): sandwich rule with in-place KD from step 0, every subnet at full weight."""

    name = "bignas"

    def plan(self, step: int) -> Plan:
        archs = sample_sandwich(self.space, self.seed, step, self.cfg.num_subnets)
        passes = [Pass(archs[0][1], "full", self.ce(), 1.0)]
        passes += [Pass(a, role, self.kd(), 1.0, self.cfg.subnet_dropout) for role, a in archs[1:]]
        return Plan(tuple(passes), teacher="inplace" if self.cfg.ikd else None, eps=1.0)
