"""Reports: a run's Pareto front (eval/), and the comparison of several runs (Table 2 of the paper).

Plots use matplotlib's Agg backend (files only, no display needed).
"""

from __future__ import annotations

import csv
import json
from datetime import datetime
from pathlib import Path

import numpy as np

from ..core.pareto import bootstrap_ci
from ..core.util import JSONFileError, read_json
from ..measure.results import EvalResult
from ..measure.scores import curve_scores, read_curve_correct
from ..run.plotting import pyplot
from ..run.rundir import LoadedRun, RunDir

__all__ = ["big_number", "compare_runs", "pareto_table", "point_differences", "write_run_report"]


def _m(macs: float) -> str:
    return f"{macs / 1e6:.2f}M"


def big_number(x: float) -> str:
    """A training cost in MACs with an SI prefix: 1.23T, 456.7P (3-4 significant digits)."""
    for unit, scale in (("E", 1e18), ("P", 1e15), ("T", 1e12), ("G", 1e9), ("M", 1e6)):
        if abs(x) >= scale:
            return f"{x / scale:.4g}{unit}"
    return f"{x:.4g}"


_PER_RESOLUTION = (" Images are decoded at each subnet's resolution r (shorter side ceil(r / 0.875), center crop r: "
                   "OFA's ImageNet protocol).")


def write_run_report(run: LoadedRun, result: EvalResult) -> None:
    """eval/pareto.json, eval/pareto.csv (every evaluated subnet), eval/report.md, eval/pareto.png."""
    files = run.dir
    files.eval_dir.mkdir(parents=True, exist_ok=True)
    files.pareto_json.write_text(json.dumps(result.to_json(), indent=2) + "\n")
    curve = {p["arch"] for p in result.curve}
    front = {p["arch"] for p in result.front}
    with files.pareto_csv.open("w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["arch", "macs", "params", "bucket", "acc_selection", "acc", "bucket_winner", "on_front"])
        for e in sorted(result.evaluated, key=lambda e: e["macs"]):
            w.writerow([e["arch"], e["macs"], e["params"], e["bucket"], e["acc_selection"],
                        "" if e["acc"] is None else e["acc"], e["arch"] in curve, e["arch"] in front])
    files.report_md.write_text(_run_markdown(run, result))
    _plot_run(result.to_json(), files.pareto_png, title=run.name)


def _run_markdown(run: LoadedRun, r: EvalResult) -> str:
    es = r.eval_set
    ci = r.mean_pareto_ci
    counts = ", ".join(map(str, r.bucket_candidates))
    searched = sum(e.get("source") == "search" for e in r.evaluated)
    final = (f" the best {es['finalists_per_bucket']} of each bucket and the ends were measured again on "
             f"{es['finalist_images']} and the winners chosen on that;" if es.get("finalists_per_bucket") else "")
    if es["held_out"]:
        splits = (f"Candidates were ranked on {es['selection_images']} images of the {es['selection_split']} split;"
                  f"{final} the numbers below are top-1 on all {es['images']} images of the {es['split']} split, which "
                  "played no part in choosing them.")
    else:
        splits = (f"**No held-out split** (data.val_split = 0): candidates were ranked on {es['selection_images']} "
                  f"{' (finalists on all)' if final else ''} of the same {es['images']} {es['split']} images that "
                  "are reported, so the bucket winners are optimistically biased.")
    lines = [
        f"# {run.name}: Pareto front",
        "",
        f"Strategy `{r.strategy}`, space `{r.space['name']}` width {r.space['width_mult']:g}"
        f"{' (restricted: ' + _choices(r.space) + ')' if 'choices' in r.space else ''}, "
        f"checkpoint step {r.step}. {splits} BN recalibrated on {es['bn_images']} training images per reported "
        f"subnet{_ranking_bn(es)}"
        f"{' (training crops, drawn once)' if es.get('bn_augment') else ''}."
        f"{_PER_RESOLUTION if es.get('per_resolution') else ''}",
        "",
        f"**Mean Pareto accuracy: {r.mean_pareto_acc:.2f}%** (95 % bootstrap interval over test images "
        f"{ci[0]:.2f}–{ci[1]:.2f}; area under accuracy vs normalized MACs, 6 buckets over "
        f"{_m(r.macs_range[0])}..{_m(r.macs_range[1])})",
        "",
        f"Measured candidates per bucket: {counts} ({searched} of them found by the per-bucket predictor search).",
        "",
        "| bucket | MACs range | MACs | accuracy | arch |",
        "|---|---|---|---|---|",
    ]
    for b in r.buckets:
        rng = f"{_m(b['lo'])}–{_m(b['hi'])}"
        if b["arch"] is None:
            lines.append(f"| {b['bucket'] + 1} | {rng} | – | – | (no subnet evaluated) |")
        else:
            lines.append(f"| {b['bucket'] + 1} | {rng} | {_m(b['macs'])} | {b['acc']:.2f}% | `{b['arch']}` |")
    lines += ["", f"Smallest subnet: {r.smallest['acc']:.2f}% at {_m(r.smallest['macs'])}; "
              f"full model: {r.largest['acc']:.2f}% at {_m(r.largest['macs'])}.", ""]
    if run.cost:
        c = run.cost
        lines += [f"Training cost: {c['wall_seconds'] / 60:.1f} min wall, {c['epochs']:g} epochs, "
                  f"{c['seconds_per_epoch']:.1f} s/epoch, {c['device_hours']:.4f} device-hours on {c['devices']} x "
                  f"{c['device']}, ${c['dollars']:.4f}"
                  + (f"; {big_number(c['train_macs'])} training MACs." if c.get("train_macs") is not None else "."),
                  ""]
    lines += ["![Pareto front](pareto.png)", ""]
    return "\n".join(lines)


def _ranking_bn(es: dict) -> str:
    n = es.get("ranking_bn_images")
    return f" ({n} for the ranking measurements)" if n and n != es["bn_images"] else ""


def _choices(space: dict) -> str:
    c = space["choices"]
    kernels = sorted({k for ks in c["kernels"] for k in ks})
    text = f"kernels {kernels}" if all(len(ks) > 1 for ks in c["kernels"]) or len(kernels) == 1 else \
        f"kernels per stage {[ks[0] if len(ks) == 1 else ks for ks in c['kernels']]}"
    if c.get("coupling"):
        text += ", depth-expand coupling " + ", ".join(f"d{d}-e{e:g}" for d, e in c["coupling"])
    return text


def run_plot_panels(r: dict) -> list[dict]:
    """What ``eval/pareto.png`` draws, panel by panel: ``[{title, ylabel, series: [{label, x, y, style}]}]``.

    The candidates' accuracies on the selection split and the winners' accuracies on the test split are on
    different images (with a held-out split) and on different axes: selection first (all candidates, the winners
    marked), the reported test curve second. A point of one split never sits on the other's axis."""
    es = r["eval_set"]
    ev = [e for e in r["evaluated"] if e.get("acc_selection") is not None]
    curve = {p["arch"] for p in r["curve"]}
    winners = [e for e in ev if e["arch"] in curve]
    selection = {
        "title": f"ranking: {es['selection_split']}", "ylabel": "top-1 accuracy (%), selection split",
        "series": [{"label": "evaluated candidates", "x": [e["macs"] / 1e6 for e in ev],
                    "y": [e["acc_selection"] for e in ev], "style": "scatter"},
                   {"label": "bucket winners (on all selection images where measured so)",
                    "x": [e["macs"] / 1e6 for e in winners],
                    "y": [e.get("acc_selection_whole") or e["acc_selection"] for e in winners], "style": "points"}],
    }
    test = {
        "title": f"reported: {es['split']}", "ylabel": f"top-1 accuracy (%), {es['split']}",
        "series": [{"label": f"bucket winners (mean Pareto acc {r['mean_pareto_acc']:.2f}%)",
                    "x": [p["macs"] / 1e6 for p in r["curve"]], "y": [p["acc"] for p in r["curve"]],
                    "style": "line"}],
    }
    return [selection, test]


def _plot_run(r: dict, path: Path, title: str) -> None:
    plt = pyplot()
    panels = run_plot_panels(r)
    fig, axes = plt.subplots(1, len(panels), figsize=(12, 4.5), sharex=True)
    for ax, panel in zip(axes, panels):
        for i, s in enumerate(panel["series"]):
            if s["style"] == "scatter":
                ax.scatter(s["x"], s["y"], s=12, color="0.7", label=s["label"])
            else:  # a marker on every point: a one-point series stays visible
                ax.plot(s["x"], s["y"], "o-" if s["style"] == "line" else "o", color=f"C{i}", label=s["label"])
        for edge in r["bucket_edges"]:
            ax.axvline(edge / 1e6, color="0.9", lw=0.8, zorder=0)
        ax.set_xlabel("MACs (M)")
        ax.set_ylabel(panel["ylabel"])
        ax.set_title(panel["title"], fontsize=9)
        ax.grid(alpha=0.3)
        ax.legend(loc="lower right", fontsize=8)
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def pareto_table(r: EvalResult) -> str:
    """The Pareto summary of ``evaluate_run`` as a plain-text table."""
    es, ci = r.eval_set, r.mean_pareto_ci
    rows = [f"mean Pareto accuracy {r.mean_pareto_acc:.2f}% (95% CI {ci[0]:.2f}-{ci[1]:.2f}; {es['split']}, "
            f"{es['images']} images; ranked on {es['selection_split']})",
            f"{'bucket':>6s} {'MACs':>9s} {'acc':>7s}  arch"]
    for b in r.buckets:
        if b["arch"] is None:
            rows.append(f"{b['bucket'] + 1:6d} {'-':>9s} {'-':>7s}  (none)")
        else:
            rows.append(f"{b['bucket'] + 1:6d} {b['macs'] / 1e6:8.2f}M {b['acc']:6.2f}%  {b['arch']}")
    rows.append(f"smallest {r.smallest['acc']:.2f}% at {r.smallest['macs'] / 1e6:.2f}M MACs; "
                f"full model {r.largest['acc']:.2f}% at {r.largest['macs'] / 1e6:.2f}M MACs")
    return "\n".join(rows)


# ---------------------------------------------------------------------------------------------------
# Comparing runs
# ---------------------------------------------------------------------------------------------------

COLUMNS = ["method", "strategy", "epochs", "wall_min", "s_per_epoch", "device_hours", "dollars", "cost_ratio",
           "train_macs", "macs_cost_ratio", "smallest_acc", "smallest_macs", "largest_acc", "largest_macs",
           "mean_pareto_acc", "mean_pareto_ci_lo", "mean_pareto_ci_hi", "diff_vs_ref", "diff_ci_lo", "diff_ci_hi",
           "diff_macs_lo", "diff_macs_hi"]


def compare_runs(run_dirs: list[str | Path], out_dir: str | Path, reference: str | None = None) -> list[dict]:
    """Table 2 for several runs (markdown + CSV), one plot with every run's curve, one with the full model's
    validation accuracy over epochs and ε over training. ``cost_ratio`` is each run's device-hours divided by
    the reference run's (default: the first DεpS run, else the first run); ``macs_cost_ratio`` the same for the
    training MACs of cost.json (``train_macs``, teacher forwards included: exact and independent of the machine's
    load; None for runs recorded before the MACs accounting)."""
    rows, results, metrics = [], [], []
    for run in map(RunDir, run_dirs):
        d = run.path
        pj = run.pareto_json
        if not pj.is_file():
            raise ValueError(f"run {d} has no eval/pareto.json; run `onceforall eval {d}` first")
        c = run.read_cost()
        if c is None:
            raise ValueError(f"run {d} has no cost.json; it never finished a training session")
        r = read_json(pj, "eval result", fix=f"run `onceforall eval {d}` again")
        missing = [k for k in ("strategy", "smallest", "largest", "mean_pareto_acc", "curve", "buckets", "space",
                               "macs_range") if k not in r]
        if missing:
            raise JSONFileError(f"eval result {pj} has no '{missing[0]}': not written by this version's "
                                f"`onceforall eval`; run `onceforall eval {d}` again", pj)
        results.append(r)
        metrics.append(run.read_metrics())
        rows.append({
            "method": run.name, "strategy": r["strategy"], "epochs": c["epochs"], "wall_min": c["wall_seconds"] / 60,
            "s_per_epoch": c["seconds_per_epoch"], "device_hours": c["device_hours"], "dollars": c["dollars"],
            "train_macs": c.get("train_macs"),
            "smallest_acc": r["smallest"]["acc"], "smallest_macs": r["smallest"]["macs"],
            "largest_acc": r["largest"]["acc"], "largest_macs": r["largest"]["macs"],
            "mean_pareto_acc": r["mean_pareto_acc"],
            "mean_pareto_ci_lo": r.get("mean_pareto_ci", [None, None])[0],
            "mean_pareto_ci_hi": r.get("mean_pareto_ci", [None, None])[1],
        })
    bases = {json.dumps({k: v for k, v in r["space"].items() if k != "choices"}, sort_keys=True) for r in results}
    if len(bases) > 1:
        raise ValueError("compare: the runs use different spaces (name, width, resolutions, classes); their MACs "
                         "ranges and fronts are not comparable")
    if reference is None:
        ref = next((row for row in rows if row["strategy"] == "deps"), rows[0])
    else:
        matches = [row for row in rows if row["method"] == reference]
        if not matches:
            raise ValueError(f"compare: --reference '{reference}' is not one of the runs: "
                             f"{', '.join(r['method'] for r in rows)}")
        ref = matches[0]
    for row in rows:
        row["cost_ratio"] = row["device_hours"] / ref["device_hours"] if ref["device_hours"] else None
        row["macs_cost_ratio"] = (row["train_macs"] / ref["train_macs"]
                                  if row["train_macs"] is not None and ref["train_macs"] else None)
    paired = _paired_correct([Path(d) for d in run_dirs], rows.index(ref))
    for row, d, data in zip(rows, run_dirs, paired):
        row["diff_note"] = None if data is not None else _unpaired_reason(Path(d), Path(run_dirs[rows.index(ref)]),
                                                                         ref["method"])
    _paired_differences(rows, results, paired, rows.index(ref))
    per_point = point_differences(rows, results, paired, rows.index(ref))
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    with (out / "compare.csv").open("w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=COLUMNS)
        w.writeheader()
        for row in rows:
            w.writerow({k: row[k] for k in COLUMNS})
    with (out / "compare_points.csv").open("w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=POINT_COLUMNS)
        w.writeheader()
        w.writerows(per_point)
    (out / "compare.md").write_text(_compare_markdown(rows, ref, results[0]) + _points_markdown(per_point, ref))
    _plot_fronts(rows, results, out / "fronts.png")
    _plot_training(rows, metrics, out / "training.png")
    return rows


def _paired_correct(run_dirs: list[Path], ref: int) -> list[dict | None]:
    """Each run's ``eval/curve_correct.json`` (read once) where it was evaluated on the reference run's test
    images (same fingerprint), else None: the runs a paired difference can be computed for."""
    data = [read_curve_correct(d) for d in run_dirs]
    if data[ref] is None:
        return [None] * len(data)
    return [c if c is not None and c["fingerprint"] == data[ref]["fingerprint"] else None for c in data]


def _unpaired_reason(run: Path, ref_run: Path, ref: str) -> str:
    """Why a run has no paired Δ against the reference (said in compare.md instead of a bare "–")."""
    for d in (ref_run, run):
        if not RunDir(d).curve_correct.is_file():
            return f"{d.name} has no eval/curve_correct.json: evaluate it again"
    return f"evaluated on other test images than {ref}"


def _paired_differences(rows: list[dict], results: list[dict], paired: list[dict | None], ref: int) -> None:
    """Mean Pareto accuracy minus the reference run's, with a paired bootstrap interval over the test images,
    for runs evaluated on the same images (same fingerprint); None elsewhere. A run whose space spans another
    MACs range (CompOFA's) is compared over the range both share: each curve's mean accuracy over those MACs
    (``diff_macs_lo``/``diff_macs_hi`` name it; None when both span the same range)."""
    ref_data, r_ref = paired[ref], results[ref]
    for row, r, data in zip(rows, results, paired):
        row["diff_vs_ref"] = row["diff_ci_lo"] = row["diff_ci_hi"] = row["diff_macs_lo"] = row["diff_macs_hi"] = None
        if data is None:
            continue
        window = None
        if r["macs_range"] != r_ref["macs_range"]:
            window = (max(r["macs_range"][0], r_ref["macs_range"][0]), min(r["macs_range"][1], r_ref["macs_range"][1]))
            if window[0] >= window[1]:
                row["diff_note"] = "no MACs range in common with the reference"
                continue
            row["diff_macs_lo"], row["diff_macs_hi"] = window
        diff = (curve_scores(r["curve"], data["correct"], *r["macs_range"], window=window)
                - curve_scores(r_ref["curve"], ref_data["correct"], *r_ref["macs_range"], window=window))
        lo, hi = bootstrap_ci(diff)
        row["diff_vs_ref"], row["diff_ci_lo"], row["diff_ci_hi"] = float(diff.mean()), lo, hi


POINT_COLUMNS = ["method", "point", "lo", "hi", "arch", "macs", "acc", "ref_arch", "ref_macs", "ref_acc", "diff",
                 "diff_ci_lo", "diff_ci_hi"]


def _curve_points(r: dict) -> list[tuple[str, float, float, dict | None]]:
    """A run's points by name: the smallest subnet, each bucket's winner (None where the bucket is empty),
    the largest subnet; with the MACs interval each stands for."""
    pts = [("smallest", r["smallest"]["macs"], r["smallest"]["macs"], r["smallest"])]
    for b in r["buckets"]:
        pts.append((f"bucket {b['bucket'] + 1}", b["lo"], b["hi"], b if b.get("arch") is not None else None))
    pts.append(("largest", r["largest"]["macs"], r["largest"]["macs"], r["largest"]))
    return pts


def point_differences(rows: list[dict], results: list[dict], paired: list[dict | None], ref: int) -> list[dict]:
    """Per point of the curve (smallest, each bucket's winner, largest): its accuracy minus the reference run's
    point of the same name, with a paired bootstrap interval over the test images (paper Fig. 7 compares
    methods bucket by bucket). Only for runs evaluated on the reference's images with the same bucket edges
    (a narrower space, CompOFA's, has other buckets); a bucket empty in either run has no difference."""
    ref_data, r_ref = paired[ref], results[ref]
    out: list[dict] = []
    ref_points = _curve_points(r_ref)
    for row, r, data in zip(rows, results, paired):
        same_buckets = r["macs_range"] == r_ref["macs_range"] and r["bucket_edges"] == r_ref["bucket_edges"]
        if data is None or not same_buckets:
            continue
        for (name, lo, hi, p), (_, _, _, q) in zip(_curve_points(r), ref_points):
            cell = {**dict.fromkeys(POINT_COLUMNS), "method": row["method"], "point": name, "lo": lo, "hi": hi}
            if p is not None:
                cell.update(arch=p["arch"], macs=p["macs"], acc=p["acc"])
            if q is not None:
                cell.update(ref_arch=q["arch"], ref_macs=q["macs"], ref_acc=q["acc"])
            if p is not None and q is not None:
                diff = 100.0 * (data["correct"][p["arch"]].astype(np.float64)
                                - ref_data["correct"][q["arch"]].astype(np.float64))
                lo_ci, hi_ci = bootstrap_ci(diff)
                cell.update(diff=float(diff.mean()), diff_ci_lo=lo_ci, diff_ci_hi=hi_ci)
            out.append(cell)
    return out


def _points_markdown(per_point: list[dict], ref: dict) -> str:
    if not per_point:
        return ""
    names = list(dict.fromkeys(c["point"] for c in per_point))
    first = [c for c in per_point if c["method"] == per_point[0]["method"]]
    heads = [n if n in ("smallest", "largest") else f"{n} ({_m(c['lo'])}–{_m(c['hi'])})"
             for n, c in zip(names, first)]
    lines = ["## Per point of the curve", "",
             f"Accuracy of each run's smallest subnet, bucket winner and largest subnet minus `{ref['method']}`'s "
             "point of the same name (points), with a paired 95 % bootstrap interval over the test images; an "
             "interval that contains 0 is a tie. Runs evaluated on other images or with other bucket edges are "
             "left out.", "",
             "| method | " + " | ".join(heads) + " |", "|---|" + "---|" * len(names)]
    for method in dict.fromkeys(c["method"] for c in per_point):
        cells = ["–" if c["diff"] is None else f"{c['diff']:+.2f} ({c['diff_ci_lo']:+.2f}, {c['diff_ci_hi']:+.2f})"
                 for c in per_point if c["method"] == method]
        lines.append(f"| {method} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def _ci(lo: float | None, hi: float | None) -> str:
    return "–" if lo is None else f"{lo:.2f}–{hi:.2f}"


def _compare_markdown(rows: list[dict], ref: dict, r0: dict) -> str:
    es = r0["eval_set"]
    lines = [
        f"# Comparison ({datetime.now().strftime('%Y-%m-%d %H:%M')})",
        "",
        f"Space `{r0['space']['name']}` width {r0['space']['width_mult']:g}; accuracy = top-1 on {es['images']} "
        f"{es['split']} images after BN recalibration (subnets chosen on the {es.get('selection_split', 'test')} "
        f"split); cost ratio = device-hours / those of `{ref['method']}`; MACs ratio = training MACs (each pass's "
        "arch MACs x images x 3 for forward + backward, a frozen teacher's forward x 1; exact, independent of "
        f"the machine's load) / those of `{ref['method']}`. Intervals: 95 % bootstrap over test "
        f"images; Δ = mean Pareto accuracy minus `{ref['method']}`'s with a paired interval (same test images). "
        "A Δ whose interval contains 0 is a tie. Each run's mean Pareto accuracy is over the MACs range of the "
        "space it trained; a run whose range differs from the reference's is compared over the MACs both span "
        "(each curve's mean accuracy there; the range is shown with its Δ).",
        "",
        "| method | strategy | epochs | wall (min) | s/epoch | device-hours | $ | cost ratio | train MACs "
        "| MACs ratio | smallest acc | smallest MACs | largest acc | largest MACs | mean Pareto acc | 95 % CI "
        "| Δ vs ref | Δ 95 % CI |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        ratio = f"{r['cost_ratio']:.2f}x" if r["cost_ratio"] is not None else "–"
        macs = "–" if r["train_macs"] is None else big_number(r["train_macs"])
        macs_ratio = "–" if r["macs_cost_ratio"] is None else f"{r['macs_cost_ratio']:.2f}x"
        delta = "–" if r["diff_vs_ref"] is None else f"{r['diff_vs_ref']:+.2f}"
        if r["diff_vs_ref"] is None and r.get("diff_note"):
            delta += f" ({r['diff_note']})"
        if r["diff_macs_lo"] is not None:
            delta += f" (over {_m(r['diff_macs_lo'])}–{_m(r['diff_macs_hi'])})"
        lines.append(
            f"| {r['method']} | {r['strategy']} | {r['epochs']:g} | {r['wall_min']:.1f} | {r['s_per_epoch']:.1f} | "
            f"{r['device_hours']:.4f} | {r['dollars']:.4f} | {ratio} | {macs} | {macs_ratio} | "
            f"{r['smallest_acc']:.2f}% | {_m(r['smallest_macs'])} | {r['largest_acc']:.2f}% | "
            f"{_m(r['largest_macs'])} | "
            f"{r['mean_pareto_acc']:.2f}% | {_ci(r['mean_pareto_ci_lo'], r['mean_pareto_ci_hi'])} | {delta} | "
            f"{_ci(r['diff_ci_lo'], r['diff_ci_hi'])} |"
        )
    lines += ["", "![fronts](fronts.png)", "", "![training](training.png)", ""]
    return "\n".join(lines)


def _plot_fronts(rows, results, path: Path) -> None:
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(7, 4.5))
    for i, (row, r) in enumerate(zip(rows, results)):
        ax.plot([p["macs"] / 1e6 for p in r["curve"]], [p["acc"] for p in r["curve"]], "o-", color=f"C{i}",
                label=f"{row['method']} ({r['mean_pareto_acc']:.2f}%)")
    for edge in results[0]["bucket_edges"]:
        ax.axvline(edge / 1e6, color="0.9", lw=0.8, zorder=0)
    ax.set_xlabel("MACs (M)")
    ax.set_ylabel("top-1 accuracy (%)")
    ax.set_title("Bucket winners per run (mean Pareto accuracy)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="lower right")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def training_plot_series(rows: list[dict], metrics: list[list[dict]]) -> list[list[dict]]:
    """What ``compare/training.png`` draws: per panel (full-model accuracy during training, ε), one series per run
    ``{label, x, y, marker}``; a series of a single point gets a marker (a line needs two points to show)."""
    acc, eps = [], []
    for row, m in zip(rows, metrics):
        ev = [e for e in m if e["event"] == "eval" and not e.get("final")]
        st = [e for e in m if e["event"] == "step" and e.get("eps") is not None]
        series = ((acc, [(e["epoch"], e["acc_full"]) for e in ev]), (eps, [(e["epoch"], e["eps"]) for e in st]))
        for panel, pts in series:
            panel.append({"label": row["method"], "x": [p[0] for p in pts], "y": [p[1] for p in pts],
                          "marker": "o" if panel is acc or len(pts) == 1 else None})
    return [acc, eps]


def _plot_training(rows, metrics, path: Path) -> None:
    plt = pyplot()
    fig, (a1, a2) = plt.subplots(1, 2, figsize=(11, 4))
    acc, eps = training_plot_series(rows, metrics)
    for i, (sa, se) in enumerate(zip(acc, eps)):
        a1.plot(sa["x"], sa["y"], marker=sa["marker"], ms=3, color=f"C{i}", label=sa["label"])
        a2.plot(se["x"], se["y"], marker=se["marker"], ms=4, color=f"C{i}", label=se["label"])
    a1.set_xlabel("epoch")
    a1.set_ylabel("full-model accuracy (%), validation split\n(the test split for runs without one)")
    a1.grid(alpha=0.3)
    a1.legend(fontsize=8)
    a2.set_xlabel("epoch")
    a2.set_ylabel("ε (subnet loss weight)")
    a2.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
