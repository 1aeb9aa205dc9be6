"""Searching a trained run for the best subnets under a budget (``onceforall search``)."""

from __future__ import annotations

import json
from collections.abc import Callable

from ..core.space import Space
from ..run.progress import counter
from ..run.rundir import LoadedRun
from ..specialize.latency import LatencyTable, build_latency_table
from ..specialize.search import AccuracyPredictor, CostFn, check_budget, evolutionary_search, format_cost, parse_budget
from .evaluate import Evaluator, candidate_archs

__all__ = ["fit_predictor", "latency_space", "latency_table_of", "run_search", "search_table"]


def latency_table_of(run: LoadedRun, path: str | None, say: Callable[[str], None]) -> tuple[LatencyTable, str]:
    """The latency table at ``path``, else the run's default one (torch, 1 thread, batch 1), built and saved
    into the run directory when it is missing; with where it came from."""
    if path is not None:
        return LatencyTable.load(path), str(path)
    default = run.dir.latency_table("torch", 1, 1)
    if not default.exists():
        say("building a latency table for this device (torch, 1 thread, batch 1)")
        build_latency_table(run.space, backend="torch", threads=1, batch=1).save(default)
    return LatencyTable.load(default), str(default)


def latency_space(space: Space, table: LatencyTable, say: Callable[[str], None]) -> Space:
    """``space`` restricted to the resolutions ``table`` was built for (a table for a few deployment resolutions,
    ``latency-table --run RUN --resolutions 160,224``, searches those only); one-line error when it has none."""
    have = [r for r in space.resolutions if r in table.space.get("resolutions", ())]
    if not have:
        raise ValueError(f"latency table: built for resolutions {table.space.get('resolutions')}, none of the "
                         f"space's ({', '.join(map(str, space.resolutions))}); build one with `onceforall "
                         "latency-table --run RUN [--resolutions R,R]`")
    if len(have) == len(space.resolutions):
        return space
    say(f"the latency table covers resolutions {', '.join(map(str, have))}: searching those only")
    return space.restrict(resolutions=have)


def fit_predictor(run: LoadedRun, ev: Evaluator, samples: int, images: int | None, seed: int,
                  say: Callable[[str], None]) -> tuple[AccuracyPredictor, dict]:
    """The accuracy predictor fitted on the subnets measured on ``images`` selection images (cached; random
    subnets across the MACs buckets are measured first when there are fewer than ``samples``), and its
    held-out report."""
    pairs = ev.measured("selection", images)
    if len(pairs) < samples:
        extra = [a for a in candidate_archs(run.space, per_bucket=max(2, samples // 6 + 1), uniform=False,
                                            seed=seed + 1) if a not in pairs][: samples - len(pairs)]
        n = len(ev.batches("selection", images)[0].ds)  # images beyond the split's size: all of them
        say(f"measuring {len(extra)} more subnets for the accuracy predictor ({n} images each, of the "
            f"{run.selection_split})")
        ev.accuracy(extra, "selection", images, progress=counter(say, "predictor subnets"))
        pairs = ev.measured("selection", images)
    predictor = AccuracyPredictor(run.space, seed=seed)
    report = predictor.fit(list(pairs), list(pairs.values()), seed=seed)
    say(f"predictor: {report['pairs']} measured subnets, {predictor_quality(report)}")
    return predictor, report


def predictor_quality(report: dict) -> str:
    """The predictor's held-out figures as text; what is missing (too few pairs to hold some out) is said, not
    printed as None."""
    if report.get("heldout_rmse") is None:
        return f"too few pairs for a held-out error ({report.get('pairs')} measured)"
    text = f"held-out RMSE {report['heldout_rmse']:.2f} points"
    if report.get("heldout_kendall_tau") is not None:
        text += f", Kendall tau {report['heldout_kendall_tau']:.2f}"
    if report.get("heldout_top10") is not None:
        text += f", top-10% hit rate {report['heldout_top10']:.2f}"
    return text


def run_search(run: LoadedRun, *, macs: str | float | None = None, latency_ms: float | None = None,
               latency_table: str | None = None, top: int = 3, samples: int = 60,
               selection_images: int | None = 2000, seed: int = 0,
               progress: Callable[[str], None] | None = None) -> dict:
    """Search a run's supernet for the most accurate archs under a budget and measure the best ``top``.

    The accuracy predictor learns from the (arch, accuracy) pairs ``onceforall eval`` measured on the
    selection images (more random subnets are measured when there are fewer than ``samples``); its
    held-out error is reported. Results go to ``<run>/search/<budget>.json``."""
    say = progress or (lambda text: None)
    space = run.space
    if macs is not None:
        budget, unit = parse_budget(macs), "MACs"
        cost_fn: CostFn = space.macs
        label = f"macs-{format_cost(budget, 'MACs').split()[0]}"
    elif latency_ms is not None:
        budget, unit = float(latency_ms), "ms"
        if budget <= 0:
            raise ValueError(f"latency budget: {latency_ms} ms is not valid; must be > 0")
        table, _ = latency_table_of(run, latency_table, say)
        space = latency_space(space, table, say)
        cost_fn = lambda a: table.predict(space, a)  # noqa: E731
        label = f"latency-{budget:g}ms"
    else:
        raise ValueError("search: give a budget: macs or latency_ms")
    budget = check_budget(space, cost_fn, budget, unit)  # fail fast, before measuring anything
    evaluator = Evaluator(run)
    predictor, report = fit_predictor(run, evaluator, samples, selection_images, seed, say)
    pairs = evaluator.measured("selection", selection_images)
    found = evolutionary_search(space, predictor.predict, cost_fn, budget, seed=seed, unit=unit)
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
    archs = [a for a, *_ in best]
    say(f"measuring the best {len(best)} candidates on the whole {run.selection_split} and test splits")
    chosen = evaluator.accuracy(archs, "selection", progress=counter(say, f"on the whole {run.selection_split}"))
    measured = evaluator.accuracy(archs, "test", progress=counter(say, f"on the whole {run.report_split} split"))
    result = {
        "run": str(run.run_dir), "step": run.step, "budget": budget, "unit": unit,
        "budget_text": format_cost(budget, unit), "seed": seed,
        "predictor": report,
        "eval_set": {"split": run.report_split, "selection_split": run.selection_split, "held_out": run.held_out,
                     "images": len(run.data.test.ds), "predictor_images": selection_images},
        "candidates": [
            {"arch": str(a), "macs": space.macs(a), "cost": c, "cost_text": format_cost(c, unit),
             "predicted_acc": round(float(score), 4), "selection_acc": sel, "measured_acc": acc, "source": source}
            for (a, score, c, source), sel, acc in zip(best, chosen, measured)
        ],
        "best": str(archs[max(range(len(archs)), key=lambda i: (chosen[i], -best[i][2]))]),
        "searched": len(found),
    }
    out = run.dir.search_dir / f"{label}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    result["path"] = str(out)
    return result


def search_table(r: dict) -> str:
    """A search result as a plain-text table."""
    p = r["predictor"]
    err = predictor_quality(p)
    es = r["eval_set"]
    rows = [f"budget {r['budget_text']}: predictor trained on {p['pairs']} measured subnets ({err})",
            f"chosen on the {es.get('selection_split', 'test')} split, reported on {es['split']}; * = chosen",
            f"  {'cost':>12s} {'MACs':>9s} {'predicted':>9s} {'selection':>9s} {'test':>9s}  arch"]
    for c in r["candidates"]:
        sel = f"{c['selection_acc']:8.2f}%" if c.get("selection_acc") is not None else f"{'-':>9s}"
        test = f"{c['measured_acc']:8.2f}%" if c.get("measured_acc") is not None else f"{'-':>9s}"
        mark = "*" if c["arch"] == r.get("best") else " "
        rows.append(f"{mark} {c['cost_text']:>12s} {c['macs'] / 1e6:8.2f}M {c['predicted_acc']:8.2f}% {sel} {test}  "
                    f"{c['arch']}")
    return "\n".join(rows)
