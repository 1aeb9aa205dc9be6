"""Searching a trained run for the best subnets under a budget (``onceforall search``)."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

from ..core.space import Space
from ..run.progress import counter
from ..run.rundir import LoadedRun
from ..specialize.latency import LatencyTable, build_latency_table
from ..specialize.ofa_formats import load_ofa_latency_lut
from ..specialize.predictors import Predictor, load_predictor, save_predictor
from ..specialize.search import AccuracyPredictor, CostFn, check_budget, evolutionary_search, format_cost, parse_budget
from .evaluate import Evaluator, candidate_archs
from .latency import check_table_usable

__all__ = ["fit_predictor", "latency_space", "latency_table_of", "pin_resolution", "predictor_for", "run_search",
           "search_table"]


def latency_table_of(run: LoadedRun, path: str | None, say: Callable[[str], None],
                     accept_noisy: bool = False) -> tuple[LatencyTable, str]:
    """The latency table at ``path``, else the run's default one (torch, 1 thread, batch 1), built and saved
    into the run directory when it is missing; with where it came from. A table whose consistency check failed
    is refused unless ``accept_noisy`` (:func:`~onceforall.workflows.latency.check_table_usable`)."""
    if path is None:
        path = str(run.dir.latency_table("torch", 1, 1))
        if not Path(path).exists():
            say("building a latency table for this device (torch, 1 thread, batch 1)")
            build_latency_table(run.space, backend="torch", threads=1, batch=1).save(path)
    if str(path).endswith((".yaml", ".yml")):  # OFA's latency lookup table format
        table = load_ofa_latency_lut(path, run.space)
        say(f"read OFA's latency lookup table {path} (resolutions {', '.join(map(str, table.space['resolutions']))})")
    else:
        table = LatencyTable.load(path)
    check_table_usable(table, str(path), accept_noisy, say)
    return table, str(path)


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


def pin_resolution(space: Space, resolution: int | None, say: Callable[[str], None]) -> Space:
    """``space`` restricted to one ``resolution`` (``search --resolution R``), or unchanged when None; one-line
    error naming the valid ones."""
    if resolution is None:
        return space
    if resolution not in space.resolutions:
        raise ValueError(f"--resolution: {resolution} is not valid; the search space has resolutions "
                         f"{', '.join(map(str, space.resolutions))}")
    say(f"searching at resolution {resolution} only")
    return space.restrict(resolutions=[resolution])


def predictor_for(run: LoadedRun, ev: Evaluator, path: str | None, samples: int, images: int | None, seed: int,
                  say: Callable[[str], None]) -> tuple[Predictor, dict]:
    """The predictor in ``path`` (ours or OFA's ``acc_predictor.pth``; nothing is measured to fit it), else one
    fitted by :func:`fit_predictor` and saved as ``<run>/search/predictor.pt`` for ``--predictor`` to reuse."""
    if path is not None:
        predictor, report = load_predictor(path, run.space)
        fitted = f" (fitted on {report['pairs']} subnets)" if report.get("pairs") else ""
        say(f"predictor: {report['kind']} file {path}{fitted}")
        return predictor, report
    predictor, report = fit_predictor(run, ev, samples, images, seed, say)
    where = save_predictor(run.dir.predictor_file, predictor, fit=report,
                           info={"run": str(run.run_dir), "step": run.step, "split": run.selection_split,
                                 "images": images, "seed": seed})
    say(f"saved the predictor to {where} (reuse it with --predictor)")
    return predictor, {**report, "source": str(where)}


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
               latency_table: str | None = None, accept_noisy_table: bool = False, top: int = 3, samples: int = 60,
               selection_images: int | None = 2000, seed: int = 0, predictor: str | None = None,
               resolution: int | None = None, progress: Callable[[str], None] | None = None) -> dict:
    """Search a run's supernet for the most accurate archs under a budget and measure the best ``top``.

    The accuracy predictor learns from the (arch, accuracy) pairs ``onceforall eval`` measured on the
    selection images (more random subnets are measured when there are fewer than ``samples``); its
    held-out error is reported, and it is saved as ``<run>/search/predictor.pt``; ``predictor`` (a file) is used
    instead, measuring nothing to fit it. ``resolution`` pins the search to one resolution. Results go to
    ``<run>/search/<budget>.json``."""
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
        table, _ = latency_table_of(run, latency_table, say, accept_noisy_table)
        space = latency_space(space, table, say)
        cost_fn = lambda a: table.predict(space, a)  # noqa: E731
        label = f"latency-{budget:g}ms"
    else:
        raise ValueError("search: give a budget: macs or latency_ms")
    space = pin_resolution(space, resolution, say)
    if resolution is not None:
        label += f"-r{resolution}"
    budget = check_budget(space, cost_fn, budget, unit)  # fail fast, before measuring anything
    evaluator = Evaluator(run)
    predictor_obj, report = predictor_for(run, evaluator, predictor, samples, selection_images, seed, say)
    pairs = evaluator.measured("selection", selection_images)
    found = evolutionary_search(space, predictor_obj.predict, cost_fn, budget, seed=seed, unit=unit)
    best = [(a, score, c, "search") for a, score, c in found[: max(1, top)]]
    # the best subnet already measured under the budget competes too (the predictor may rank it lower)
    fitting = [a for a in pairs if space.contains(a) and cost_fn(a) <= budget]
    if fitting:
        known = max(fitting, key=lambda a: (pairs[a], -cost_fn(a)))
        if all(known != a for a, *_ in best):
            best.append((known, float(predictor_obj.predict([known])[0]), cost_fn(known), "measured"))
    full = space.max()  # a budget the full model fits: it competes too (the most trained subnet)
    if cost_fn(full) <= budget and all(full != a for a, *_ in best):
        best.append((full, float(predictor_obj.predict([full])[0]), cost_fn(full), "full model"))
    archs = [a for a, *_ in best]
    say(f"measuring the best {len(best)} candidates on the whole {run.selection_split} and test splits")
    chosen = evaluator.accuracy(archs, "selection", progress=counter(say, f"on the whole {run.selection_split}"))
    measured = evaluator.accuracy(archs, "test", progress=counter(say, f"on the whole {run.report_split} split"))
    result = {
        "run": str(run.run_dir), "step": run.step, "budget": budget, "unit": unit,
        "budget_text": format_cost(budget, unit), "seed": seed, "resolution": resolution,
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


def predictor_text(p: dict) -> str:
    """One phrase on where the predictor came from and how well it ranks held-out subnets."""
    if p.get("kind") == "ofa":
        return f"OFA's accuracy predictor from {p['source']} (no held-out error: not fitted here)"
    loaded = f" (loaded from {p['source']})" if p.get("kind") == "onceforall" else ""
    return f"predictor trained on {p['pairs']} measured subnets{loaded} ({predictor_quality(p)})"


def search_table(r: dict) -> str:
    """A search result as a plain-text table."""
    es = r["eval_set"]
    rows = [f"budget {r['budget_text']}: {predictor_text(r['predictor'])}",
            f"chosen on the {es.get('selection_split', 'test')} split, reported on {es['split']}; * = chosen",
            f"  {'cost':>12s} {'MACs':>9s} {'predicted':>9s} {'selection':>9s} {'test':>9s}  arch"]
    for c in r["candidates"]:
        sel = f"{c['selection_acc']:8.2f}%" if c.get("selection_acc") is not None else f"{'-':>9s}"
        test = f"{c['measured_acc']:8.2f}%" if c.get("measured_acc") is not None else f"{'-':>9s}"
        mark = "*" if c["arch"] == r.get("best") else " "
        rows.append(f"{mark} {c['cost_text']:>12s} {c['macs'] / 1e6:8.2f}M {c['predicted_acc']:8.2f}% {sel} {test}  "
                    f"{c['arch']}")
    return "\n".join(rows)
