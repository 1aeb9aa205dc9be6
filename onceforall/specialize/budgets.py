"""Budgets of a search: parsing them (``20M``, ``1.5G``, lists of joint constraints), their human and file-name
forms, checking one against a space, and reading the members of a front that fit one (which the front command then
measures)."""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Sequence

from ..core.arch import Arch
from ..core.space import Space

__all__ = ["BUDGET_UNITS", "CostFn", "budget_label", "budget_text", "check_budget", "check_front_budgets",
           "format_cost", "front_candidates", "parse_budget", "parse_budgets", "short_cost"]

CostFn = Callable[[Arch], float]
"""A cost of an arch (MACs, latency, peak memory, parameters)."""

# ----------------------------------------------------------------------------------------------------
# Budgets and costs
# ----------------------------------------------------------------------------------------------------

_SUFFIXES = {"": 1.0, "k": 1e3, "m": 1e6, "g": 1e9, "t": 1e12}
_BUDGET_RE = re.compile(r"^\s*((?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?)\s*([kKmMgGtT]?)\s*$")
_BUDGET_FORMAT = "a positive number with an optional k, M, G or T suffix, e.g. 350k, 20M, 1.5G or 12345"

# Units that count operations or parameters: shown in millions ("7.12M MACs").
_COUNT_UNITS = {"macs", "flops", "params"}


def parse_budget(text: str | float) -> float:
    """Parse a budget: ``"20M"`` -> 20e6, ``"1.5G"`` -> 1.5e9, ``"350k"`` -> 350e3, ``"12345"`` -> 12345.0.

    Suffixes k, M, G, T are case-insensitive (``m`` is mega: budgets are never milli-MACs). A plain
    positive int or float is returned as a float. Anything else raises ValueError naming the value and
    the expected format.
    """
    if isinstance(text, (int, float)) and not isinstance(text, bool):
        value = float(text)
    else:
        m = _BUDGET_RE.match(text) if isinstance(text, str) else None
        if m is None:
            raise ValueError(f"budget {text!r} is not valid; expected {_BUDGET_FORMAT}")
        value = float(m.group(1)) * _SUFFIXES[m.group(2).lower()]
    if not math.isfinite(value) or value <= 0:
        raise ValueError(f"budget {text!r} is not valid; expected {_BUDGET_FORMAT}")
    return value


def short_cost(value: float, unit: str) -> str:
    """A cost in few characters: ``7.12M`` for counting units, ``3.40ms`` else."""
    if unit.lower() in _COUNT_UNITS:
        return f"{value / 1e6:.2f}M"
    return f"{value:.2f}{_unit_sep(unit)}{unit}"


def _unit_sep(unit: str) -> str:
    return "" if len(unit) <= 2 else " "  # 3.40ms, 12.00 cycles


def format_cost(value: float, unit: str = "MACs") -> str:
    """Human form of a cost: ``7.12M MACs`` for counting units (MACs, FLOPs, params), ``3.40ms`` else."""
    if unit.lower() in _COUNT_UNITS:
        return f"{value / 1e6:.2f}M {unit}"
    return short_cost(value, unit)


def check_budget(space: Space, cost_fn: CostFn, budget: float, unit: str) -> float:
    try:
        budget = float(budget)
    except (TypeError, ValueError):
        raise ValueError(f"budget {budget!r} is not a number; expected a cost in {unit}") from None
    if math.isnan(budget):
        raise ValueError(f"budget {budget!r} is not a number; expected a cost in {unit}")
    smallest = float(cost_fn(space.min()))
    if budget < smallest:
        raise ValueError(
            f"budget {short_cost(budget, unit)} is below the smallest subnet ({format_cost(smallest, unit)})"
        )
    return budget


BUDGET_UNITS = {"macs": "MACs", "latency": "ms", "memory": "bytes", "params": "params"}
"""The kinds of budget (the costs a front can minimize), with their units."""


def parse_budgets(macs: str | None = None, latency_ms: str | None = None, memory: str | None = None,
                  params: str | None = None) -> list[dict[str, float]]:
    """Budgets from comma-separated lists (``"5M,10M"``; memory in bytes, ``300k`` = 300,000): one dict of
    joint constraints per budget. Lists of several kinds pair up element by element; a list of one value
    applies to every budget."""
    lists = {}
    for kind, text in (("macs", macs), ("latency", latency_ms), ("memory", memory), ("params", params)):
        if text is not None:
            lists[kind] = [_budget_item(kind, item) for item in str(text).split(",")]
    if not lists:
        return []
    n = max(len(v) for v in lists.values())
    bad = {k: len(v) for k, v in lists.items() if len(v) not in (1, n)}
    if bad:
        raise ValueError(f"budgets: lists of {', '.join(f'{len(v)}' for v in lists.values())} values do not pair "
                         "up; give each kind one value or the same number of values")
    return [{k: v[i] if len(v) > 1 else v[0] for k, v in lists.items()} for i in range(n)]


def _budget_item(kind: str, item: str) -> float:
    """One value of a budget list (``--macs 5M,10M``'s ``5M``); one-line error naming the option."""
    try:
        value = float(item) if kind == "latency" else parse_budget(item.strip())
    except ValueError:
        raise ValueError(f"--{'latency-ms' if kind == 'latency' else kind}: {item.strip()!r} is not "
                         "valid; expected positive numbers separated by commas, e.g. 5M,10M") from None
    if not value > 0:
        raise ValueError(f"--latency-ms: {item.strip()!r} is not valid; must be > 0")
    return value


def budget_text(budget: dict[str, float]) -> str:
    """Human form of a budget of joint constraints: ``5.00M MACs & 300 kB``."""
    return " & ".join(format_cost(v, BUDGET_UNITS[k]) if k != "memory" else f"{v / 1e3:g} kB"
                      for k, v in budget.items())


def budget_label(budget: dict[str, float]) -> str:
    """File-name form of a budget: ``macs-5.00M``, ``latency-4ms_memory-300kB``."""
    parts = []
    for k, v in budget.items():
        parts.append({"macs": f"macs-{v / 1e6:.2f}M", "params": f"params-{v / 1e6:.2f}M",
                      "latency": f"latency-{v:g}ms", "memory": f"memory-{v / 1e3:g}kB"}[k])
    return "_".join(parts)


def check_front_budgets(costs: Sequence[str], front_step: int, budgets: Sequence[dict[str, float]], step: int,
                        where: str | None = None) -> None:
    """Refuse budgets a front (of ``costs``, searched at ``front_step``, read from ``where``) cannot answer (a cost
    it did not minimize) and a front of other weights (another step), each with a one-line error saying how to
    rebuild it."""
    missing = sorted({k for b in budgets for k in b} - set(costs))
    if missing:
        raise ValueError(f"front {where or ''}: has no {', '.join(missing)} cost (it has "
                         f"{', '.join(costs)}); rebuild it with --front --costs "
                         f"{','.join([*costs, *missing])}")
    if front_step != step:
        raise ValueError(f"front {where or ''}: was searched at step {front_step}, the run is at step "
                         f"{step}; rebuild it with --front")


def front_candidates(members: list[dict], budget: dict[str, float], top: int) -> tuple[list[dict], list[dict]]:
    """The members of a front under ``budget`` (joint constraints) and those of them to measure: the ``top`` best
    predicted and every one already measured. One-line error naming the front's cheapest when none fits."""
    fits = [m for m in members if all(m["costs"][k] <= v for k, v in budget.items())]
    if not fits:
        cheapest = min(members, key=lambda m: m["costs"][next(iter(budget))])
        raise ValueError(f"budget {budget_text(budget)}: no subnet of the front fits; its cheapest is "
                         f"{', '.join(f'{k} {v:g}' for k, v in cheapest['costs'].items())}")
    by_pred = sorted(fits, key=lambda m: -m["predicted_acc"])[: max(1, top)]
    cands = list({m["arch"]: m for m in [*by_pred, *(m for m in fits if m["selection_acc"] is not None)]}.values())
    return fits, cands
