"""One search, every device (``onceforall search RUN --front``): the accuracy/cost front of a run, and budgets
read off it.

1. The accuracy predictor (:class:`~onceforall.specialize.search.AccuracyPredictor`, MSE + ranking loss) learns
   from subnets measured on a fixed subset of the selection split (cached; more are measured when there are
   fewer than ``samples``).
2. NSGA-II (:func:`~onceforall.specialize.search.nsga2_search`) finds the archs that no other arch beats in
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
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

from ..core.arch import Arch
from ..core.space import Space
from ..run.rundir import LoadedRun
from ..specialize.memory import DTYPE_BYTES, peak_memory
from ..specialize.search import format_cost, non_dominated_sort, nsga2_search, parse_budget
from .evaluate import Evaluator
from .search import latency_space, latency_table_of, pin_resolution, predictor_for, predictor_text

__all__ = ["COSTS", "build_front", "cost_functions", "front_table", "load_front", "parse_budgets", "read_budgets"]

COSTS = {"macs": "MACs", "latency": "ms", "memory": "bytes", "params": "params"}
"""The costs a front can minimize, with their units."""


def _check_costs(costs: list[str]) -> list[str]:
    bad = [c for c in costs if c not in COSTS]
    if bad or not costs:
        raise ValueError(f"costs: {','.join(bad) or '(none)'} is not valid; valid: {', '.join(COSTS)}")
    return list(dict.fromkeys(costs))


def cost_functions(run: LoadedRun, costs: list[str], *, latency_table: str | None = None,
                   accept_noisy_table: bool = False, memory_dtype: str = "float32",
                   say: Callable[[str], None] = lambda s: None
                   ) -> tuple[dict[str, Callable[[Arch], float]], dict, Space]:
    """The cost functions of ``costs`` for the run's space, what they were computed with, and the space to
    search (the run's, restricted to the latency table's resolutions when it covers only some)."""
    space = run.space
    if "latency" in costs:
        table, where = latency_table_of(run, latency_table, say, accept_noisy_table)
        space = latency_space(space, table, say)
    fns: dict[str, Callable[[Arch], float]] = {}
    info: dict[str, Any] = {}
    for c in _check_costs(costs):
        if c == "macs":
            fns[c] = space.macs
        elif c == "params":
            fns[c] = space.params
        elif c == "memory":
            if memory_dtype not in DTYPE_BYTES:
                raise ValueError(f"memory dtype: {memory_dtype!r} is not valid; valid: {', '.join(DTYPE_BYTES)}")
            fns[c] = lambda a: peak_memory(space, a, memory_dtype)
            info["memory_dtype"] = memory_dtype
        else:
            fns[c] = lambda a, table=table: table.predict(space, a)
            info["latency_table"] = where
    return fns, info, space


def _spread(n_front: int, k: int) -> list[int]:
    """``k`` indices spread evenly over 0..n_front-1, both ends included."""
    if k >= n_front:
        return list(range(n_front))
    return sorted({round(i * (n_front - 1) / (k - 1)) for i in range(k)}) if k > 1 else [n_front - 1]


def build_front(run: LoadedRun, costs: list[str] | tuple[str, ...] = ("macs",), *, latency_table: str | None = None,
                accept_noisy_table: bool = False, memory_dtype: str = "float32", samples: int = 120,
                selection_images: int | None = 1000, predictor: str | None = None,
                resolution: int | None = None,
                measure: int = 12, population: int = 100, generations: int = 40, seed: int = 0,
                progress: Callable[[str], None] | None = None) -> dict:
    """Search the run's accuracy/cost front and measure ``measure`` of its members (module docstring); writes
    ``search/front.json``, ``front.csv`` and ``front.png`` and returns the front."""
    say = progress or (lambda text: None)
    costs = _check_costs(list(costs))
    fns, info, space = cost_functions(run, costs, latency_table=latency_table, accept_noisy_table=accept_noisy_table,
                                      memory_dtype=memory_dtype, say=say)
    space = pin_resolution(space, resolution, say)
    ev = Evaluator(run)
    predictor_obj, report = predictor_for(run, ev, predictor, samples, selection_images, seed, say)
    found = nsga2_search(space, predictor_obj.predict, [fns[c] for c in costs], seed=seed, population=population,
                         generations=generations)
    say(f"NSGA-II: {len(found)} archs on the predicted front ({' / '.join(['accuracy', *costs])})")
    chosen = [found[i][0] for i in _spread(len(found), measure)]
    say(f"measuring {len(chosen)} of them on the whole {run.selection_split} and {run.report_split} splits")
    sel = dict(zip(chosen, ev.accuracy(chosen, "selection")))
    test = dict(zip(chosen, ev.accuracy(chosen, "test")))
    members = [_member(run, a, score, cost, costs, sel.get(a), test.get(a)) for a, score, cost in found]
    measured_pts = [(-m["selection_acc"], *m["costs"].values()) for m in members if m["selection_acc"] is not None]
    on_measured = set(non_dominated_sort(measured_pts)[0]) if measured_pts else set()
    for k, m in enumerate(m for m in members if m["selection_acc"] is not None):
        m["measured_front"] = k in on_measured
    front = {
        "run": str(run.run_dir), "step": run.step, "costs": costs, "units": {c: COSTS[c] for c in costs},
        **info, "seed": seed, "resolution": resolution, "predictor": report,
        "eval_set": {"split": run.report_split, "selection_split": run.selection_split, "held_out": run.held_out,
                     "images": len(run.data.test.ds), "predictor_images": selection_images},
        "members": members,
    }
    _write_front(run, front)
    return front


def _member(run: LoadedRun, arch: Arch, score: float, cost: tuple[float, ...], costs: list[str],
            selection_acc: float | None, test_acc: float | None) -> dict:
    space = run.space
    return {"arch": str(arch), "costs": {c: round(v, 6) for c, v in zip(costs, cost)}, "macs": space.macs(arch),
            "params": space.params(arch), "memory": peak_memory(space, arch), "predicted_acc": round(score, 4),
            "selection_acc": selection_acc, "measured_acc": test_acc}


def _write_front(run: LoadedRun, front: dict) -> None:
    out = run.dir.search_dir
    out.mkdir(parents=True, exist_ok=True)
    (out / "front.json").write_text(json.dumps(front, indent=1) + "\n")
    costs = front["costs"]
    with open(out / "front.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["arch", *costs, "macs", "params", "memory_bytes_fp32", "predicted_acc", "selection_acc",
                    "test_acc"])
        for m in front["members"]:
            w.writerow([m["arch"], *(m["costs"][c] for c in costs), m["macs"], m["params"], m["memory"],
                        m["predicted_acc"], m["selection_acc"], m["measured_acc"]])
    _plot_front(front, out / "front.png")
    front["path"] = str(out / "front.json")


def _plot_front(front: dict, path: Path) -> None:
    from .report import pyplot

    plt = pyplot()
    costs = front["costs"]
    fig, axes = plt.subplots(1, len(costs), figsize=(5.5 * len(costs), 4), squeeze=False)
    for ax, c in zip(axes[0], costs):
        scale = 1e6 if COSTS[c] in ("MACs", "params") else (1e3 if c == "memory" else 1.0)
        unit = {"MACs": "M MACs", "params": "M params", "bytes": "kB"}.get(COSTS[c], COSTS[c])
        ms = front["members"]
        ax.plot([m["costs"][c] / scale for m in ms], [m["predicted_acc"] for m in ms], ".", ms=3, alpha=0.5,
                label="predicted (front)")
        meas = [m for m in ms if m["measured_acc"] is not None]
        ax.plot([m["costs"][c] / scale for m in meas], [m["selection_acc"] for m in meas], "s", mfc="none",
                label=f"measured, {front['eval_set']['selection_split']}")
        ax.plot([m["costs"][c] / scale for m in meas], [m["measured_acc"] for m in meas], "o",
                label=f"measured, {front['eval_set']['split']}")
        ax.set_xlabel(f"{c} ({unit})")
        ax.set_ylabel("top-1 accuracy (%)")
        ax.grid(alpha=0.3)
    axes[0][0].legend(fontsize=8)
    fig.suptitle(f"{Path(front['run']).name}: accuracy vs {', '.join(costs)} (step {front['step']})")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def load_front(path: str | Path) -> dict:
    """A front written by :func:`build_front` (one-line error for a file that is not one)."""
    path = Path(path)
    try:
        front = json.loads(path.read_text())
    except (OSError, ValueError) as e:
        raise ValueError(f"front: {path} cannot be read as a front JSON ({type(e).__name__}: {e})") from None
    if not isinstance(front, dict) or not {"costs", "members", "step"} <= front.keys():
        raise ValueError(f"front: {path} is not a front written by `onceforall search --front` "
                         "(needs costs, members and step)")
    front["path"] = str(path)
    return front


_BUDGET_UNITS = {"macs": "MACs", "latency": "ms", "memory": "bytes", "params": "params"}


def parse_budgets(macs: str | None = None, latency_ms: str | None = None, memory: str | None = None,
                  params: str | None = None) -> list[dict[str, float]]:
    """Budgets from comma-separated lists (``"5M,10M"``; memory in bytes, ``300k`` = 300,000): one dict of
    joint constraints per budget. Lists of several kinds pair up element by element; a list of one value
    applies to every budget."""
    lists = {}
    for kind, text in (("macs", macs), ("latency", latency_ms), ("memory", memory), ("params", params)):
        if text is None:
            continue
        values = []
        for item in str(text).split(","):
            try:
                values.append(float(item) if kind == "latency" else parse_budget(item.strip()))
            except ValueError:
                raise ValueError(f"--{'latency-ms' if kind == 'latency' else kind}: {item.strip()!r} is not "
                                 "valid; expected positive numbers separated by commas, e.g. 5M,10M") from None
            if not values[-1] > 0:
                raise ValueError(f"--latency-ms: {item.strip()!r} is not valid; must be > 0")
        lists[kind] = values
    if not lists:
        return []
    n = max(len(v) for v in lists.values())
    bad = {k: len(v) for k, v in lists.items() if len(v) not in (1, n)}
    if bad:
        raise ValueError(f"budgets: lists of {', '.join(f'{len(v)}' for v in lists.values())} values do not pair "
                         "up; give each kind one value or the same number of values")
    return [{k: v[i] if len(v) > 1 else v[0] for k, v in lists.items()} for i in range(n)]


def _budget_text(budget: dict[str, float]) -> str:
    return " & ".join(format_cost(v, _BUDGET_UNITS[k]) if k != "memory" else f"{v / 1e3:g} kB"
                      for k, v in budget.items())


def budget_label(budget: dict[str, float]) -> str:
    """File-name form of a budget: ``macs-5.00M``, ``latency-4ms_memory-300kB``."""
    parts = []
    for k, v in budget.items():
        parts.append({"macs": f"macs-{v / 1e6:.2f}M", "params": f"params-{v / 1e6:.2f}M",
                      "latency": f"latency-{v:g}ms", "memory": f"memory-{v / 1e3:g}kB"}[k])
    return "_".join(parts)


def read_budgets(run: LoadedRun, front: dict, budgets: list[dict[str, float]], *, top: int = 3,
                 progress: Callable[[str], None] | None = None) -> list[dict]:
    """For each budget (joint constraints on the front's costs), the front's best subnet under it: its ``top``
    best predicted members under the budget and the measured ones are measured (cached) on the selection
    split, the most accurate there wins, and its test accuracy is reported. Writes
    ``search/<budget>.json`` (the format ``export --from-search`` reads) and returns the results."""
    say = progress or (lambda text: None)
    missing = sorted({k for b in budgets for k in b} - set(front["costs"]))
    if missing:
        raise ValueError(f"front {front.get('path', '')}: has no {', '.join(missing)} cost (it has "
                         f"{', '.join(front['costs'])}); rebuild it with --front --costs "
                         f"{','.join([*front['costs'], *missing])}")
    if front["step"] != run.step:
        raise ValueError(f"front {front.get('path', '')}: was searched at step {front['step']}, the run is at step "
                         f"{run.step}; rebuild it with --front")
    ev = Evaluator(run)
    space = run.space
    out = []
    for budget in budgets:
        fits = [m for m in front["members"] if all(m["costs"][k] <= v for k, v in budget.items())]
        if not fits:
            cheapest = min(front["members"], key=lambda m: m["costs"][next(iter(budget))])
            raise ValueError(f"budget {_budget_text(budget)}: no subnet of the front fits; its cheapest is "
                             f"{', '.join(f'{k} {v:g}' for k, v in cheapest['costs'].items())}")
        by_pred = sorted(fits, key=lambda m: -m["predicted_acc"])[: max(1, top)]
        cands = list({m["arch"]: m for m in [*by_pred, *(m for m in fits if m["selection_acc"] is not None)]}.values())
        archs = [space.parse(m["arch"]) for m in cands]
        say(f"budget {_budget_text(budget)}: {len(fits)} front members fit; measuring {len(archs)}")
        sel = ev.accuracy(archs, "selection")
        test = ev.accuracy(archs, "test")
        best = max(range(len(archs)), key=lambda i: (sel[i], -cands[i]["macs"]))
        result = {
            "run": str(run.run_dir), "step": run.step, "budget": budget, "budget_text": _budget_text(budget),
            "front": front.get("path"), "eval_set": front["eval_set"], "predictor": front["predictor"],
            "candidates": [{**m, "cost_text": _budget_text({k: m["costs"][k] for k in budget}),
                            "selection_acc": s, "measured_acc": t, "source": "front"}
                           for m, s, t in zip(cands, sel, test)],
            "best": str(archs[best]),
        }
        path = run.dir.search_dir / f"{budget_label(budget)}.json"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(result, indent=2) + "\n")
        result["path"] = str(path)
        out.append(result)
    return out


def front_table(front: dict, answers: list[dict] = ()) -> str:
    """The measured members of a front and the budgets' answers, as plain text."""
    es, p = front["eval_set"], front["predictor"]
    costs = front["costs"]
    rows = [f"front of {len(front['members'])} archs (accuracy vs {', '.join(costs)}); {predictor_text(p)}",
            f"measured members (chosen on {es['selection_split']}, reported on {es['split']}):",
            "  " + " ".join(f"{c:>12s}" for c in costs) + f" {'predicted':>9s} {'selection':>9s} {'test':>9s}  arch"]
    for m in front["members"]:
        if m["measured_acc"] is None:
            continue
        cells = " ".join(f"{_cell(c, m['costs'][c]):>12s}" for c in costs)
        rows.append(f"  {cells} {m['predicted_acc']:8.2f}% {m['selection_acc']:8.2f}% {m['measured_acc']:8.2f}%  "
                    f"{m['arch']}")
    for a in answers:
        best = next(c for c in a["candidates"] if c["arch"] == a["best"])
        rows.append(f"budget {a['budget_text']}: {best['arch']}  {best['measured_acc']:.2f}% on {es['split']} "
                    f"({best['selection_acc']:.2f}% {es['selection_split']}; "
                    f"{', '.join(_cell(c, best['costs'][c]) for c in costs)})  -> {a['path']}")
    return "\n".join(rows)


def _cell(cost: str, value: float) -> str:
    if cost == "memory":
        return f"{value / 1e3:.1f} kB"
    return format_cost(value, COSTS[cost])
