"""The typed results of ``eval``, ``search`` and ``search --front`` (and its budget answers).

Each is a dataclass whose fields, in order, are the keys of the JSON file the command writes: ``to_json()`` gives
that file's content (``eval/pareto.json``, ``search/<budget>.json``, ``search/front.json``) exactly, and
``from_json`` reads one back. Rows inside (buckets, curve points, candidates, front members) stay JSON objects:
they are written and read as they are. ``path`` (where a result was written) is not part of its file.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any, TypeVar

__all__ = ["BudgetAnswer", "EvalResult", "FrontResult", "SearchResult"]

_T = TypeVar("_T")
_NOT_IN_FILE = {"path"}


def _to_json(result: Any) -> dict[str, Any]:
    return {f.name: getattr(result, f.name) for f in dataclasses.fields(result) if f.name not in _NOT_IN_FILE}


def _from_json(cls: type[_T], data: dict[str, Any], what: str, **extra: Any) -> _T:
    """``cls`` from the keys of ``data``; one-line error naming the first key missing."""
    if not isinstance(data, dict):
        raise ValueError(f"{what}: not a JSON object ({type(data).__name__})")
    fields = [f for f in dataclasses.fields(cls) if f.name not in _NOT_IN_FILE and f.name not in extra]
    names = [f.name for f in fields]
    # a field with a default was added later: a file written before it leaves it out
    needed = [f.name for f in fields if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING]
    missing = [n for n in needed if n not in data]
    if missing:
        raise ValueError(f"{what}: has no '{missing[0]}' (needs {', '.join(needed)})")
    return cls(**{n: data[n] for n in names if n in data}, **extra)


@dataclass
class EvalResult:
    """What ``onceforall eval`` measured (``eval/pareto.json``; DESIGN.md "Evaluation")."""

    run: str
    """The run directory."""
    step: int
    """The checkpoint's training step."""
    strategy: str
    """The run's strategy name."""
    space: dict[str, Any]
    """The space's identity (name, width, resolutions, classes, restricted choices)."""
    eval_set: dict[str, Any]
    """The images ranked on and reported on (``measure.evaluator.eval_set``)."""
    macs_range: list[int]
    """MACs of the smallest and the full model."""
    bucket_edges: list[float]
    """The edges of the MACs buckets."""
    buckets: list[dict[str, Any]]
    """Per bucket: ``bucket``, ``lo``, ``hi`` and its winner's ``arch``, ``macs``, ``acc`` (``arch`` None: empty)."""
    curve: list[dict[str, Any]]
    """The smallest subnet, the bucket winners and the full model by MACs (``arch``, ``macs``, test ``acc``)."""
    front: list[dict[str, Any]]
    """The non-dominated points among those measured on the test split."""
    mean_pareto_acc: float
    """Mean Pareto accuracy (%) of the curve on the test split."""
    smallest: dict[str, Any]
    """The smallest subnet's point."""
    largest: dict[str, Any]
    """The full model's point."""
    mean_pareto_ci: list[float]
    """95 % bootstrap interval of ``mean_pareto_acc`` over the test images."""
    bucket_candidates: list[int]
    """Measured candidates per bucket."""
    evaluated: list[dict[str, Any]]
    """Every candidate: arch, MACs, params, ranking and finalist accuracies, test accuracy, bucket, source."""

    def to_json(self) -> dict[str, Any]:
        """The content of ``eval/pareto.json``."""
        return _to_json(self)

    @classmethod
    def from_json(cls, data: dict[str, Any], what: str = "eval result") -> EvalResult:
        """An eval result read back from ``eval/pareto.json``."""
        return _from_json(cls, data, what)


@dataclass
class SearchResult:
    """A search under one budget (``onceforall search --macs/--latency-ms``; ``search/<budget>.json``)."""

    run: str
    """The run directory."""
    step: int
    """The checkpoint's training step."""
    budget: float
    """The budget, in ``unit``."""
    unit: str
    """``MACs`` or ``ms``."""
    budget_text: str
    """The budget as text (``5.00M MACs``, ``2 ms``)."""
    seed: int
    """Seed of the predictor's fit and of the search."""
    resolution: int | None
    """The one resolution searched, or None: all."""
    predictor: dict[str, Any]
    """The accuracy predictor: where it came from and its held-out error."""
    eval_set: dict[str, Any]
    """The images measured on (``measure.evaluator.eval_set``)."""
    candidates: list[dict[str, Any]]
    """The measured contenders: arch, MACs, cost, predicted, selection and test accuracy, source."""
    best: str
    """The contender most accurate on the selection split (fewer cost on a tie)."""
    searched: int
    """Archs the evolution returned under the budget."""
    path: str | None = field(default=None, compare=False)
    """Where the result was written (not in the file)."""

    def to_json(self) -> dict[str, Any]:
        """The content of ``search/<budget>.json``."""
        return _to_json(self)

    @classmethod
    def from_json(cls, data: dict[str, Any], path: str | None = None) -> SearchResult:
        """A search result read back from its file."""
        return _from_json(cls, data, f"search result {path or ''}".strip(), path=path)


@dataclass
class BudgetAnswer:
    """A budget answered from a front (``onceforall search --front --macs ...``; ``search/<budget>.json``, the
    format ``export --from-search`` reads)."""

    run: str
    """The run directory."""
    step: int
    """The checkpoint's training step."""
    budget: dict[str, float]
    """Joint constraints, cost name -> upper bound."""
    budget_text: str
    """The budget as text."""
    front: str | None
    """The front file it was read from."""
    eval_set: dict[str, Any]
    """The front's ``eval_set``."""
    predictor: dict[str, Any]
    """The front's predictor."""
    candidates: list[dict[str, Any]]
    """The front members measured for it, with selection and test accuracy."""
    best: str
    """The candidate most accurate on the selection split (fewer MACs on a tie)."""
    path: str | None = field(default=None, compare=False)
    """Where the answer was written (not in the file)."""

    def to_json(self) -> dict[str, Any]:
        """The content of ``search/<budget>.json``."""
        return _to_json(self)


@dataclass
class FrontResult:
    """The accuracy/cost front of a run (``onceforall search --front``; ``search/front.json``)."""

    run: str
    """The run directory."""
    step: int
    """The checkpoint's training step."""
    costs: list[str]
    """The costs minimized, in order."""
    units: dict[str, str]
    """Each cost's unit."""
    info: dict[str, Any]
    """What the costs were computed with (``memory_dtype``, ``latency_table``); written as keys of their own."""
    seed: int
    """Seed of the predictor's fit and of NSGA-II."""
    resolution: int | None
    """The one resolution searched, or None: all."""
    predictor: dict[str, Any]
    """The accuracy predictor: where it came from and its held-out error."""
    eval_set: dict[str, Any]
    """The images measured on."""
    members: list[dict[str, Any]]
    """The front: arch, costs, MACs, params, memory, predicted accuracy; the measured ones their selection and test
    accuracy and whether they are on the measured front."""
    search: dict[str, Any] = field(default_factory=dict)
    """The search settings it was found with, as the search used them (``workflows.front.search_settings``); empty
    in a file written before they were kept."""
    path: str | None = field(default=None, compare=False)
    """Where the front was written or read (not in the file)."""

    def to_json(self) -> dict[str, Any]:
        """The content of ``search/front.json``."""
        data = _to_json(self)
        at = list(data).index("info")
        items = list(data.items())
        return dict(items[:at] + list(self.info.items()) + items[at + 1:])

    @classmethod
    def from_json(cls, data: dict[str, Any], path: str | None = None) -> FrontResult:
        """A front read back from its file."""
        known = {f.name for f in dataclasses.fields(cls)}
        info = {k: v for k, v in data.items() if k not in known} if isinstance(data, dict) else {}
        return _from_json(cls, data, f"front {path or ''}".strip(), info=info, path=path)
