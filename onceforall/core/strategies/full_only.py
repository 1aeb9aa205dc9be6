"""The plain full model, the cost reference."""

from __future__ import annotations

from .base import Pass, Plan, Strategy, register_strategy

__all__ = ["FullOnly"]

@register_strategy
class FullOnly(Strategy):
    """The plain full model: the reference for what once-for-all training costs."""

    name = "full-only"

    def plan(self, step: int) -> Plan:
        return Plan((Pass(self.space.max(), "full", self.ce(), 1.0),))
