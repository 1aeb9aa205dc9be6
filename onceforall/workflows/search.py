"""Searching a trained run for the best subnets under a budget (``onceforall search``)."""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from ..core.arch import Arch
from ..measure.costs import cost_functions, pin_resolution
from ..measure.evaluator import RANKING_BN_IMAGES, RANKING_IMAGES, Evaluator, eval_set, ranking_evaluator
from ..measure.predictor import predictor_for, predictor_text
from ..measure.results import SearchResult
from ..run.progress import counter
from ..run.rundir import LoadedRun
from ..specialize.budgets import CostFn, check_budget, format_cost, parse_budget
from ..specialize.evolution import evolutionary_search
from ..specialize.predictor import Predictor

__all__ = ["SearchArgs", "SearchResult", "run_search", "search_table"]


@dataclass(frozen=True)
class SearchArgs:
    """The arguments of a search under one budget (``onceforall search --macs/--latency-ms``); the command's options
    carry the same defaults (``tests/test_cli.py`` checks)."""

    top: int = 3
    """Candidates to measure on the whole validation and test splits."""
    samples: int = 60
    """Measured subnets the predictor needs; more are measured when eval left fewer."""
    selection_images: int | None = RANKING_IMAGES
    """Validation images per predictor measurement (0 or None: all); eval's, so that the predictor learns from the
    subnets eval measured."""
    ranking_bn_images: int | None = RANKING_BN_IMAGES
    """BN-recalibration images of the predictor's measurements (at most data.bn_images; 0 or None: data.bn_images);
    eval's. The candidates measured on the whole validation and test splits always use data.bn_images."""
    seed: int = 0
    """Seed of the predictor's fit and of the search."""
    predictor: str | None = None
    """An accuracy predictor file to use instead of fitting one (a RUN/search/predictor.pt, or OFA's
    acc_predictor.pth): no subnets are measured to fit it."""
    resolution: int | None = None
    """Search at this one resolution only."""
    latency_table: str | None = None
    """Latency table of a latency budget (default: build one for this device into the run)."""
    accept_noisy_table: bool = False
    """Search with a latency table whose consistency check failed (refused otherwise)."""


def run_search(run: LoadedRun, args: SearchArgs | None = None, *, macs: str | float | None = None,
               latency_ms: float | None = None, progress: Callable[[str], None] | None = None,
               **overrides: Any) -> SearchResult:
    """Search a run's supernet for the most accurate archs under a budget (``macs`` or ``latency_ms``) with ``args``
    (default :class:`SearchArgs`; ``overrides`` replace single fields) and measure the best ``top``.

    The accuracy predictor learns from the (arch, accuracy) pairs ``onceforall eval`` measured on the
    selection images (more random subnets are measured when there are fewer than ``samples``); its
    held-out error is reported, and it is saved as ``<run>/search/predictor.pt``; ``predictor`` (a file) is used
    instead, measuring nothing to fit it. ``resolution`` pins the search to one resolution. Results go to
    ``<run>/search/<budget>.json`` (:class:`SearchResult`, ``path`` where it was written)."""
    a = dataclasses.replace(args or SearchArgs(), **overrides)
    top, samples, seed, resolution = a.top, a.samples, a.seed, a.resolution
    selection_images = a.selection_images or None
    say = progress or (lambda text: None)
    budget, unit, kind, label = _budget_of(macs, latency_ms)
    fns, _, space = cost_functions(run, [kind], latency_table=a.latency_table,
                                   accept_noisy_table=a.accept_noisy_table, say=say)
    cost_fn = fns[kind]
    space = pin_resolution(space, resolution, say)
    if resolution is not None:
        label += f"-r{resolution}"
    budget = check_budget(space, cost_fn, budget, unit)  # fail fast, before measuring anything
    evaluator = Evaluator(run)
    ranker = ranking_evaluator(evaluator, a.ranking_bn_images)  # eval's ranking measurements: shared, not redone
    predictor_obj, report = predictor_for(run, ranker, a.predictor, samples, selection_images, seed, say)
    pairs = ranker.measured("selection", selection_images)
    found = evolutionary_search(space, predictor_obj.predict, cost_fn, budget, seed=seed, unit=unit)
    best = _contenders(space, found, top, pairs, predictor_obj, cost_fn, budget)
    archs = [a for a, *_ in best]
    say(f"measuring the best {len(best)} candidates on the whole {run.selection_split} and test splits")
    chosen = evaluator.accuracy(archs, "selection", progress=counter(say, f"on the whole {run.selection_split}"))
    measured = evaluator.accuracy(archs, "test", progress=counter(say, f"on the whole {run.report_split} split"))
    result = SearchResult(
        run=str(run.run_dir), step=run.step, budget=budget, unit=unit,
        budget_text=format_cost(budget, unit), seed=seed, resolution=resolution,
        predictor=report,
        eval_set=eval_set(run, predictor_images=selection_images, predictor_bn_images=ranker.bn_images),
        candidates=[
            {"arch": str(a), "macs": space.macs(a), "cost": c, "cost_text": format_cost(c, unit),
             "predicted_acc": round(float(score), 4), "selection_acc": sel, "measured_acc": acc, "source": source}
            for (a, score, c, source), sel, acc in zip(best, chosen, measured)
        ],
        best=str(archs[max(range(len(archs)), key=lambda i: (chosen[i], -best[i][2]))]),
        searched=len(found),
    )
    out = run.dir.search_result(label)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result.to_json(), indent=2) + "\n")
    result.path = str(out)
    return result


def _budget_of(macs: str | float | None, latency_ms: float | None) -> tuple[float, str, str, str]:
    """(budget, unit, cost kind, file label) of a MACs or latency budget; one-line error for a bad or missing one."""
    if macs is not None:
        budget = parse_budget(macs)
        return budget, "MACs", "macs", f"macs-{format_cost(budget, 'MACs').split()[0]}"
    if latency_ms is not None:
        budget = float(latency_ms)
        if budget <= 0:
            raise ValueError(f"latency budget: {latency_ms} ms is not valid; must be > 0")
        return budget, "ms", "latency", f"latency-{budget:g}ms"
    raise ValueError("search: give a budget: macs or latency_ms")


def _contenders(space, found: list, top: int, pairs: dict[Arch, float], predictor: Predictor, cost_fn: CostFn,
                budget: float) -> list[tuple[Arch, float, float, str]]:
    """The ``top`` best searched archs, then the best subnet already measured under the budget and the full model
    when it fits (each unless already there): (arch, predicted accuracy, cost, source)."""
    best = [(a, score, c, "search") for a, score, c in found[: max(1, top)]]
    # the best subnet already measured under the budget competes too (the predictor may rank it lower)
    fitting = [a for a in pairs if space.contains(a) and cost_fn(a) <= budget]
    if fitting:
        known = max(fitting, key=lambda a: (pairs[a], -cost_fn(a)))
        if all(known != a for a, *_ in best):
            best.append((known, float(predictor.predict([known])[0]), cost_fn(known), "measured"))
    full = space.max()  # a budget the full model fits: it competes too (the most trained subnet)
    if cost_fn(full) <= budget and all(full != a for a, *_ in best):
        best.append((full, float(predictor.predict([full])[0]), cost_fn(full), "full model"))
    return best


def search_table(r: SearchResult) -> str:
    """A search result as a plain-text table."""
    es = r.eval_set
    rows = [f"budget {r.budget_text}: {predictor_text(r.predictor)}",
            f"chosen on the {es.get('selection_split', 'test')} split, reported on {es['split']}; * = chosen",
            f"  {'cost':>12s} {'MACs':>9s} {'predicted':>9s} {'selection':>9s} {'test':>9s}  arch"]
    for c in r.candidates:
        sel = f"{c['selection_acc']:8.2f}%" if c.get("selection_acc") is not None else f"{'-':>9s}"
        test = f"{c['measured_acc']:8.2f}%" if c.get("measured_acc") is not None else f"{'-':>9s}"
        mark = "*" if c["arch"] == r.best else " "
        rows.append(f"{mark} {c['cost_text']:>12s} {c['macs'] / 1e6:8.2f}M {c['predicted_acc']:8.2f}% {sel} {test}  "
                    f"{c['arch']}")
    return "\n".join(rows)
