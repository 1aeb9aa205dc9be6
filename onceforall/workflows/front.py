"""One search, every device (``onceforall search RUN --front``): the accuracy/cost front of a run, and budgets
read off it.

1. The accuracy predictor (:class:`~onceforall.specialize.predictor.AccuracyPredictor`, MSE + ranking loss) learns
   from subnets measured on a fixed subset of the selection split exactly as eval ranks its candidates (so eval's
   measurements are reused from the cache; more are measured when there are fewer than ``samples``).
2. NSGA-II (:func:`~onceforall.specialize.evolution.nsga2_search`) finds the archs that no other arch beats in
   predicted accuracy and every chosen cost at once: MACs, latency (this device's lookup table), peak
   activation memory (:func:`~onceforall.specialize.memory.peak_memory`), parameters.
3. ``measure`` members spread along the first cost are measured on the whole selection and test splits, and
   the front is written to ``<run>/search/front.json``, ``front.csv`` and ``front.png`` (predicted and measured
   points).
4. :func:`read_budgets` answers budgets (``--macs 5M,10M``, ``--latency-ms 2,4,8``, ``--memory 300k``, several
   kinds at once as joint constraints) from the front: among the front's members under the budget, the best
   predicted ones are measured (cached) and the most accurate on the selection split wins; its test accuracy
   is reported. No new search per budget.
"""

from __future__ import annotations

import csv
import dataclasses
import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..core.arch import Arch
from ..core.pareto import non_dominated_sort
from ..measure.costs import COSTS, check_costs, cost_functions, pin_resolution
from ..measure.evaluator import (
    RANKING_BN_IMAGES,
    RANKING_IMAGES,
    Evaluator,
    eval_set,
    ranking_bn_images,
    ranking_evaluator,
)
from ..measure.predictor import predictor_for, predictor_text
from ..measure.results import BudgetAnswer, FrontResult
from ..run.rundir import LoadedRun
from ..specialize.budgets import budget_label, budget_text, check_front_budgets, format_cost, front_candidates
from ..specialize.evolution import nsga2_search
from ..specialize.memory import peak_memory

__all__ = ["BudgetAnswer", "FrontArgs", "FrontResult", "archs_from_front", "build_front", "front_table", "load_front",
           "read_budgets", "search_settings", "stored_or_new_front", "why_search_again"]


@dataclass(frozen=True)
class FrontArgs:
    """The arguments of a front search (``onceforall search --front``); the command's options carry the same
    defaults (``tests/test_cli.py`` checks)."""

    samples: int = 120
    """Measured subnets the predictor needs; more are measured when eval left fewer."""
    selection_images: int | None = RANKING_IMAGES
    """Validation images per predictor measurement (0 or None: all); eval's, so that the predictor learns from the
    subnets eval measured."""
    ranking_bn_images: int | None = RANKING_BN_IMAGES
    """BN-recalibration images of the predictor's measurements (at most data.bn_images; 0 or None: data.bn_images);
    eval's. The members measured on the whole validation and test splits always use data.bn_images."""
    measure: int = 12
    """Front members measured on the whole selection and test splits."""
    population: int = 100
    """NSGA-II's population."""
    generations: int = 40
    """NSGA-II's generations."""
    seed: int = 0
    """Seed of the predictor's fit and of NSGA-II."""
    predictor: str | None = None
    """An accuracy predictor file to use instead of fitting one (no subnets are measured to fit it)."""
    resolution: int | None = None
    """Search at this one resolution only."""
    latency_table: str | None = None
    """Latency table of a latency cost (default: build one for this device into the run)."""
    accept_noisy_table: bool = False
    """Search with a latency table whose consistency check failed (refused otherwise)."""
    memory_dtype: str = "float32"
    """Element type of the peak-memory cost: float32, float16, bfloat16, int8."""

def search_settings(a: FrontArgs, bn_images: int) -> dict[str, Any]:
    """The settings of ``a`` that shape a front's search, as the search uses them (selection images 0 → None: all;
    ranking BN images at most the run's ``data.bn_images``, 0 → it): what ``search/front.json`` keeps
    (:attr:`FrontResult.search`) and what a later request is compared with. The costs' own settings (memory dtype,
    latency table) are in :attr:`FrontResult.info`."""
    return {"samples": a.samples, "selection_images": a.selection_images or None,
            "ranking_bn_images": ranking_bn_images(a.ranking_bn_images, bn_images), "measure": a.measure,
            "population": a.population, "generations": a.generations, "seed": a.seed}


def why_search_again(front: FrontResult, run: LoadedRun, costs: list[str], a: FrontArgs, *,
                     asked: Sequence[str] = (), exact_costs: bool = False) -> str | None:
    """Why the stored ``front`` cannot answer a request for ``costs`` with ``a``, or None when it can: another
    checkpoint, a cost it does not minimize (with ``exact_costs``: other costs or another order), another
    resolution, a predictor file, or a setting the request ``asked`` for (FrontArgs field names the user gave)
    with a value other than the front's. Settings not asked for are the front's: reading another budget off a
    front needs no search settings."""
    if front.step != run.step:
        return f"it was searched at step {front.step}, the run's checkpoint is at step {run.step}"
    if not set(costs) <= set(front.costs) or (exact_costs and costs != front.costs):
        return f"it minimizes {', '.join(front.costs)}; asked: {', '.join(costs)}"
    if front.resolution != a.resolution:
        return f"it was searched at resolution {front.resolution or 'all'}; asked: {a.resolution or 'all'}"
    if a.predictor is not None:
        return f"a predictor file was given ({a.predictor})"
    wanted = search_settings(a, run.cfg.data.bn_images)
    for key in (k for k in asked if k in wanted):
        if key not in front.search:
            return f"it does not record its {key} (written before search settings were kept); asked: {wanted[key]}"
        if front.search[key] != wanted[key]:
            return f"it was searched with {key}={front.search[key]}; asked: {key}={wanted[key]}"
    if "memory_dtype" in asked and "memory" in costs and front.info.get("memory_dtype") != a.memory_dtype:
        return f"its memory cost counts {front.info.get('memory_dtype')}; asked: {a.memory_dtype}"
    if "latency_table" in asked and "latency" in costs and \
            Path(str(front.info.get("latency_table"))).resolve() != Path(str(a.latency_table)).resolve():
        return f"its latency cost comes from {front.info.get('latency_table')}; asked: {a.latency_table}"
    return None


def stored_or_new_front(run: LoadedRun, costs: list[str], a: FrontArgs, *, asked: Sequence[str] = (),
                        exact_costs: bool = False, rebuild: bool = False,
                        progress: Callable[[str], None] | None = None) -> FrontResult:
    """The run's stored front (``search/front.json``) when it answers the request (:func:`why_search_again`) and
    ``rebuild`` is not set; else a new one (:func:`build_front`), saying why the stored one did not fit."""
    say = progress or (lambda text: None)
    path = run.dir.front_json
    front = load_front(path) if path.exists() and not rebuild else None
    why = None if front is None else why_search_again(front, run, costs, a, asked=asked, exact_costs=exact_costs)
    if front is not None and why is None:
        say(f"reading budgets off {path} (step {front.step}; --rebuild searches it again)")
        return front
    if why:
        say(f"searching the front again: {path} does not fit ({why})")
    return build_front(run, costs, a, progress=progress)


def _spread(n_front: int, k: int) -> list[int]:
    """``k`` indices spread evenly over 0..n_front-1, both ends included."""
    if k >= n_front:
        return list(range(n_front))
    return sorted({round(i * (n_front - 1) / (k - 1)) for i in range(k)}) if k > 1 else [n_front - 1]


def build_front(run: LoadedRun, costs: list[str] | tuple[str, ...] = ("macs",), args: FrontArgs | None = None, *,
                progress: Callable[[str], None] | None = None, **overrides: Any) -> FrontResult:
    """Search the run's accuracy/cost front with ``args`` (default :class:`FrontArgs`; ``overrides`` replace single
    fields) and measure ``measure`` of its members (module docstring); writes ``search/front.json``, ``front.csv``
    and ``front.png`` and returns the front (:class:`FrontResult`, ``path`` where it was written)."""
    a = dataclasses.replace(args or FrontArgs(), **overrides)
    seed, resolution, selection_images = a.seed, a.resolution, a.selection_images or None
    say = progress or (lambda text: None)
    costs = check_costs(list(costs))
    fns, info, space = cost_functions(run, costs, latency_table=a.latency_table,
                                      accept_noisy_table=a.accept_noisy_table, memory_dtype=a.memory_dtype, say=say)
    space = pin_resolution(space, resolution, say)
    ev = Evaluator(run)
    ranker = ranking_evaluator(ev, a.ranking_bn_images)  # eval's ranking measurements: shared, not redone
    predictor_obj, report = predictor_for(run, ranker, a.predictor, a.samples, selection_images, seed, say)
    found = nsga2_search(space, predictor_obj.predict, [fns[c] for c in costs], seed=seed, population=a.population,
                         generations=a.generations)
    say(f"NSGA-II: {len(found)} archs on the predicted front ({' / '.join(['accuracy', *costs])})")
    chosen = [found[i][0] for i in _spread(len(found), a.measure)]
    say(f"measuring {len(chosen)} of them on the whole {run.selection_split} and {run.report_split} splits")
    sel = dict(zip(chosen, ev.accuracy(chosen, "selection")))
    test = dict(zip(chosen, ev.accuracy(chosen, "test")))
    members = [_member(run, a, score, cost, costs, sel.get(a), test.get(a)) for a, score, cost in found]
    measured_pts = [(-m["selection_acc"], *m["costs"].values()) for m in members if m["selection_acc"] is not None]
    on_measured = set(non_dominated_sort(measured_pts)[0]) if measured_pts else set()
    for k, m in enumerate(m for m in members if m["selection_acc"] is not None):
        m["measured_front"] = k in on_measured
    front = FrontResult(
        run=str(run.run_dir), step=run.step, costs=costs, units={c: COSTS[c] for c in costs},
        info=info, seed=seed, resolution=resolution, predictor=report,
        eval_set=eval_set(run, predictor_images=selection_images, predictor_bn_images=ranker.bn_images),
        members=members, search=search_settings(a, run.cfg.data.bn_images),
    )
    _write_front(run, front)
    return front


def _member(run: LoadedRun, arch: Arch, score: float, cost: tuple[float, ...], costs: list[str],
            selection_acc: float | None, test_acc: float | None) -> dict:
    space = run.space
    return {"arch": str(arch), "costs": {c: round(v, 6) for c, v in zip(costs, cost)}, "macs": space.macs(arch),
            "params": space.params(arch), "memory": peak_memory(space, arch), "predicted_acc": round(score, 4),
            "selection_acc": selection_acc, "measured_acc": test_acc}


def _write_front(run: LoadedRun, front: FrontResult) -> None:
    files = run.dir
    files.search_dir.mkdir(parents=True, exist_ok=True)
    files.front_json.write_text(json.dumps(front.to_json(), indent=1) + "\n")
    costs = front.costs
    with open(files.front_csv, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["arch", *costs, "macs", "params", "memory_bytes_fp32", "predicted_acc", "selection_acc",
                    "test_acc"])
        for m in front.members:
            w.writerow([m["arch"], *(m["costs"][c] for c in costs), m["macs"], m["params"], m["memory"],
                        m["predicted_acc"], m["selection_acc"], m["measured_acc"]])
    _plot_front(front, files.front_png)
    front.path = str(files.front_json)


def _plot_front(front: FrontResult, path: Path) -> None:
    from ..run.plotting import pyplot

    plt = pyplot()
    costs = front.costs
    fig, axes = plt.subplots(1, len(costs), figsize=(5.5 * len(costs), 4), squeeze=False)
    for ax, c in zip(axes[0], costs):
        scale = 1e6 if COSTS[c] in ("MACs", "params") else (1e3 if c == "memory" else 1.0)
        unit = {"MACs": "M MACs", "params": "M params", "bytes": "kB"}.get(COSTS[c], COSTS[c])
        ms = front.members
        ax.plot([m["costs"][c] / scale for m in ms], [m["predicted_acc"] for m in ms], ".", ms=3, alpha=0.5,
                label="predicted (front)")
        meas = [m for m in ms if m["measured_acc"] is not None]
        ax.plot([m["costs"][c] / scale for m in meas], [m["selection_acc"] for m in meas], "s", mfc="none",
                label=f"measured, {front.eval_set['selection_split']}")
        ax.plot([m["costs"][c] / scale for m in meas], [m["measured_acc"] for m in meas], "o",
                label=f"measured, {front.eval_set['split']}")
        ax.set_xlabel(f"{c} ({unit})")
        ax.set_ylabel("top-1 accuracy (%)")
        ax.grid(alpha=0.3)
    axes[0][0].legend(fontsize=8)
    fig.suptitle(f"{Path(front.run).name}: accuracy vs {', '.join(costs)} (step {front.step})")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def load_front(path: str | Path) -> FrontResult:
    """A front written by :func:`build_front` (one-line error for a file that is not one)."""
    path = Path(path)
    try:
        front = json.loads(path.read_text())
    except (OSError, ValueError) as e:
        raise ValueError(f"front: {path} cannot be read as a front JSON ({type(e).__name__}: {e})") from None
    if not isinstance(front, dict) or not {"costs", "members", "step"} <= front.keys():
        raise ValueError(f"front: {path} is not a front written by `onceforall search --front` "
                         "(needs costs, members and step)")
    return FrontResult.from_json(front, str(path))


def read_budgets(run: LoadedRun, front: FrontResult, budgets: list[dict[str, float]], *, top: int = 3,
                 progress: Callable[[str], None] | None = None) -> list[BudgetAnswer]:
    """For each budget (joint constraints on the front's costs), the front's best subnet under it: its ``top``
    best predicted members under the budget and the measured ones are measured (cached) on the selection
    split, the most accurate there wins, and its test accuracy is reported. Writes
    ``search/<budget>.json`` (the format ``export --from-search`` reads) and returns the answers (``path`` where
    each was written)."""
    say = progress or (lambda text: None)
    check_front_budgets(front.costs, front.step, budgets, run.step, front.path)
    ev = Evaluator(run)
    space = run.space
    out = []
    for budget in budgets:
        fits, cands = front_candidates(front.members, budget, top)
        archs = [space.parse(m["arch"]) for m in cands]
        say(f"budget {budget_text(budget)}: {len(fits)} front members fit; measuring {len(archs)}")
        sel = ev.accuracy(archs, "selection")
        test = ev.accuracy(archs, "test")
        best = max(range(len(archs)), key=lambda i: (sel[i], -cands[i]["macs"]))
        result = BudgetAnswer(
            run=str(run.run_dir), step=run.step, budget=budget, budget_text=budget_text(budget),
            front=front.path, eval_set=front.eval_set, predictor=front.predictor,
            candidates=[{**m, "cost_text": budget_text({k: m["costs"][k] for k in budget}),
                         "selection_acc": s, "measured_acc": t, "source": "front"}
                        for m, s, t in zip(cands, sel, test)],
            best=str(archs[best]),
        )
        path = run.dir.search_result(budget_label(budget))
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(result.to_json(), indent=2) + "\n")
        result.path = str(path)
        out.append(result)
    return out


def archs_from_front(run: LoadedRun, path: str | Path, budgets: list[dict[str, float]],
                     progress=None) -> list[tuple[dict[str, float], Arch]]:
    """The subnet the front ``path`` (``search --front``) gives each budget (:func:`read_budgets`)."""
    if not budgets:
        raise ValueError("--from-front: give the budgets to export, e.g. --macs 5M,10M or --latency-ms 2,4,8")
    answers = read_budgets(run, load_front(path), budgets, progress=progress)
    return [(b, run.space.parse(a.best)) for b, a in zip(budgets, answers)]


def front_table(front: FrontResult, answers: Sequence[BudgetAnswer] = ()) -> str:
    """The measured members of a front and the budgets' answers, as plain text."""
    es, p = front.eval_set, front.predictor
    costs = front.costs
    rows = [f"front of {len(front.members)} archs (accuracy vs {', '.join(costs)}); {predictor_text(p)}",
            f"measured members (chosen on {es['selection_split']}, reported on {es['split']}):",
            "  " + " ".join(f"{c:>12s}" for c in costs) + f" {'predicted':>9s} {'selection':>9s} {'test':>9s}  arch"]
    for m in front.members:
        if m["measured_acc"] is None:
            continue
        cells = " ".join(f"{_cell(c, m['costs'][c]):>12s}" for c in costs)
        rows.append(f"  {cells} {m['predicted_acc']:8.2f}% {m['selection_acc']:8.2f}% {m['measured_acc']:8.2f}%  "
                    f"{m['arch']}")
    for a in answers:
        best = next(c for c in a.candidates if c["arch"] == a.best)
        rows.append(f"budget {a.budget_text}: {best['arch']}  {best['measured_acc']:.2f}% on {es['split']} "
                    f"({best['selection_acc']:.2f}% {es['selection_split']}; "
                    f"{', '.join(_cell(c, best['costs'][c]) for c in costs)})  -> {a.path}")
    return "\n".join(rows)


def _cell(cost: str, value: float) -> str:
    if cost == "memory":
        return f"{value / 1e3:.1f} kB"
    return format_cost(value, COSTS[cost])
