"""Training strategies (plans per step) and their registry; importing this package registers them all."""

from . import bignas, deps, full_only, progressive  # noqa: F401  (registers the strategies)
from .base import (
    Loss,
    Pass,
    Plan,
    Schedule,
    Strategy,
    StrategyConfig,
    cosine_lr,
    get_strategy,
    get_strategy_class,
    list_strategies,
    register_strategy,
    sample_sandwich,
)
from .bignas import BigNAS
from .deps import DEpS
from .full_only import FullOnly
from .progressive import COMPOFA_PHASES, OFA_PHASES, CompOFA, Phase, ProgressiveShrinking, phase_space

__all__ = [
    "COMPOFA_PHASES",
    "OFA_PHASES",
    "BigNAS",
    "CompOFA",
    "DEpS",
    "FullOnly",
    "Loss",
    "Pass",
    "Phase",
    "Plan",
    "ProgressiveShrinking",
    "Schedule",
    "Strategy",
    "StrategyConfig",
    "cosine_lr",
    "get_strategy",
    "get_strategy_class",
    "list_strategies",
    "phase_space",
    "register_strategy",
    "sample_sandwich",
]
