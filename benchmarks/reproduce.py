"""Reproduce the paper's comparison (Table 2, Fig. 5) and ablations (Fig. 7) at CPU scale on Fashion-MNIST.

    python benchmarks/reproduce.py                      # the 5 methods at the benchmark size (~90 min on 2 cores)
    python benchmarks/reproduce.py --quick --seeds 0,1,2  # the --quick variant with 3 seeds (~25 min each)
    python benchmarks/reproduce.py --ablations          # ablations: shrink start, ε, IKD warm-up, re-organization
    python benchmarks/reproduce.py --quick --ablations  # the ablations at the --quick size
    python benchmarks/reproduce.py --only deps,bignas   # a subset of the methods
    python benchmarks/reproduce.py --ablations --only deps,deps-no-eps   # a subset of the ablation runs
    python benchmarks/reproduce.py --setting pairs28 --seeds 0,1,2        # on fashion-mnist-pairs at 28 px
    python benchmarks/reproduce.py --setting fmnist20 --quick            # the presets at 20 px only (no capacity)

Every training is a separate `onceforall train` process writing to <out>/runs/<name>; a killed benchmark
continues where it stopped when run again (finished runs are skipped, unfinished ones resumed from their
last checkpoint, saved every epoch and every 100 steps; how long each part took goes to <out>/durations.csv).
A suite may span sessions on machines that do not keep <out>/runs: every trained and evaluated run leaves a
record, <out>/records/<name>/ (its config, metrics, cost and eval results, no checkpoints: small enough to
commit), and a run with a record is neither trained nor evaluated again; compare reads the records.
Then every run is evaluated (`onceforall eval`,
cached) and compared (`onceforall compare`); with several seeds a table of mean ± standard deviation per
method is written too. Results go to <out>/ (default benchmarks/results/<full|quick>[-ablations]).

The ablation runs (deps included, trained again) also validate the full model 8 times per epoch, so the
effect of ε-Shrinking on the full model right after the shrink start is visible: <out>/shrink-start-s<seed>.png
and .md (accuracy just before the shrink start and its lowest value in the epoch after it).

Budgets follow the paper's Table 2 epoch counts relative to DεpS: full-only 1x, BigNAS 1.5x (400/270),
OFA-PS 2.2x (605/270), CompOFA 1.2x (330/270); and BigNAS at DεpS's device-hours (0.75x the epochs).

`--ablations` also runs the paper's Fig. 2 (fig2-from-half, fig2-from-full): DεpS's shrinking for half the run,
started (train.init_from) from the full model trained alone for half the run or for the whole run, and compares
the two (<out>/compare-fig2-s<seed>; over seeds in seeds.md, with the verdict on the paper's claim for the small
subnets).
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

from common import (
    FMNIST20_R10,
    QUICK,
    VERDICT_RULE,
    eval_and_record,
    record,
    recorded,
    seed_verdict,
    sh,
    t_interval,
    train_run,
)

from onceforall.run.rundir import read_metrics

METHODS = {  # name -> (preset, epochs relative to DεpS)
    "full-only": ("fashion-mnist-full-only", 1.0),
    "deps": ("fashion-mnist", 1.0),
    "bignas": ("fashion-mnist-bignas", 1.5),
    # BigNAS at DεpS's device-hours: a BigNAS epoch cost 1.33 DεpS epochs (1.99x the cost at 1.5x the epochs,
    # the old setting's runs, 2026-11-24, in RESULTS.md's git history), so 0.75x the epochs
    "bignas-matched": ("fashion-mnist-bignas", 0.75),
    "ofa-ps": ("fashion-mnist-ofa-ps", 2.2),
    "compofa": ("fashion-mnist-compofa", 1.2),
}

# DεpS variants of the paper's ablations (Fig. 7), relative to the main deps run.
ABLATIONS = {
    "deps-shrink-0.25": ["strategy.shrink_start=0.25"],
    "deps-shrink-0.75": ["strategy.shrink_start=0.75"],
    "deps-no-eps": ["strategy.eps_shrinking=false"],
    "deps-inplace-kd": ["strategy.fm_warmup=false"],  # in-place KD from step 0 instead of IKD-Warmup
    # no channel re-organization at the shrink start (the Fig. 2 runs, which do not re-organize, beat DεpS)
    "deps-no-reorganize": ["strategy.reorganize=false"],
}

# Paper Fig. 2: shrinking (DεpS's, for half the run) started from a full model trained alone to 50 % or to
# completion (the full-only run of the same seed: its epoch checkpoint at mid-run, or its last one).
FIG2 = {"fig2-from-half": "half", "fig2-from-full": "full"}

FULL = {"epochs": 10, "train_subset": 24000}

# The benchmark setting: overrides applied to every run (benchmarks/capacity.py measures each one's capacity
# signal: the full model trained alone minus the smallest subnet trained alone, in points).
SETTINGS = {
    "fmnist20": [],  # the fashion-mnist presets as they are: 20 px, width 0.25
    # the same with elastic resolution {10, 15, 20} (images stored at 20 px, resized by the network): the
    # setting with a capacity signal (benchmarks/capacity.py: fmnist20-r10*)
    "fmnist20-r10": FMNIST20_R10,
    "pairs28": ["data.dataset=fashion-mnist-pairs", "data.image_size=28", "model.resolutions=[28]"],
}


def summarize(out: Path, names_by_seed: dict[int, list[str]]) -> None:
    """Mean ± std over seeds of each method's numbers (from each seed's compare.csv)."""
    import csv

    per_method: dict[str, list[dict]] = {}
    for seed in names_by_seed:
        for row in csv.DictReader((out / f"compare-s{seed}" / "compare.csv").open()):
            per_method.setdefault(row["method"].rsplit("-s", 1)[0], []).append(row)  # "deps-s0" -> "deps"
    keys = ["epochs", "wall_min", "device_hours", "dollars", "cost_ratio", "macs_cost_ratio", "smallest_acc",
            "smallest_macs", "largest_acc", "largest_macs", "mean_pareto_acc"]
    lines = ["| method | seeds | " + " | ".join(keys) + " |", "|---|---|" + "---|" * len(keys)]
    for method, rows in per_method.items():
        cells = []
        for k in keys:
            vals = [float(r[k]) for r in rows if r.get(k, "") not in ("", "None")]  # older compare.csv: no MACs
            if not vals:
                cells.append("–")
            elif k.endswith("_macs") or k == "epochs":  # the same for every seed
                cells.append(f"{vals[0] / 1e6:.2f}M" if k.endswith("_macs") else f"{vals[0]:g}")
            elif len(vals) == 1:
                cells.append(f"{vals[0]:.3f}")
            else:
                cells.append(f"{statistics.mean(vals):.3f} ± {statistics.stdev(vals):.3f}")
        lines.append(f"| {method} | {len(rows)} | " + " | ".join(cells) + " |")
    lines += ["", *seed_differences(per_method)]
    if "deps-no-eps" in per_method:  # the ablations
        lines += ["", *shrink_start_over_seeds(out, list(names_by_seed))]
    lines += ["", *fig2_over_seeds(out, list(names_by_seed))]
    (out / "seeds.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


def _over_seeds(vals: list[float]) -> str:
    """Mean and 95 % t-interval over seeds (seed-to-seed variation; each seed's own paired interval over test
    images is in its compare-s<seed>/compare.md)."""
    if not vals:
        return "–"
    m, lo, hi = t_interval(vals)
    return f"{m:+.2f}" if lo is None else f"{m:+.2f} [{lo:+.2f}, {hi:+.2f}]"


def seed_differences(per_method: dict[str, list[dict]]) -> list[str]:
    """Each method minus the reference (the compare tables' Δ, paired per seed), over seeds: the per-seed values,
    their mean with a 95 % t-interval, and how many seeds' paired intervals exclude 0 (above / below)."""
    ref = per_method.get("deps")
    if not ref:
        return []
    lines = ["Differences to deps (points), per seed and over seeds (mean [95 % t-interval over seeds]); "
             "'above/below' counts the seeds whose paired interval over test images excludes 0; the verdict is on "
             "the claim \"DεpS ahead\" (Δ < 0) on mean Pareto accuracy. " + VERDICT_RULE, "",
             "| method | seeds | Δ mean Pareto per seed | Δ mean Pareto | above/below | verdict: DεpS ahead | "
             "Δ smallest | Δ largest |",
             "|---|---|---|---|---|---|---|---|"]
    seed = lambda r: r["method"].rsplit("-s", 1)[1]  # noqa: E731  "deps-s0" -> "0"
    by_seed = {seed(r): r for r in ref}
    for method, rows in per_method.items():
        if method == "deps":
            continue
        pairs = [(r, by_seed[seed(r)]) for r in rows if seed(r) in by_seed and r["diff_vs_ref"] not in ("", "None")]
        diffs = [float(r["diff_vs_ref"]) for r, _ in pairs]
        above = sum(float(r["diff_ci_lo"]) > 0 for r, _ in pairs)
        below = sum(float(r["diff_ci_hi"]) < 0 for r, _ in pairs)
        small = [float(r["smallest_acc"]) - float(d["smallest_acc"]) for r, d in pairs
                 if r["smallest_macs"] == d["smallest_macs"]]
        large = [float(r["largest_acc"]) - float(d["largest_acc"]) for r, d in pairs
                 if r["largest_macs"] == d["largest_macs"]]
        shared = " (shared MACs range)" if any(r["diff_macs_lo"] not in ("", "None") for r, _ in pairs) else ""
        single = (float(pairs[0][0]["diff_ci_lo"]), float(pairs[0][0]["diff_ci_hi"])) if len(pairs) == 1 else None
        lines.append(f"| {method} | {len(pairs)} | {', '.join(f'{d:+.2f}' for d in diffs)} | "
                     f"{_over_seeds(diffs)}{shared} | {above}/{below} | {seed_verdict(diffs, '<', single=single)} | "
                     f"{_over_seeds(small)} | {_over_seeds(large)} |")
    return lines


def _evals(run: Path) -> list[dict]:
    return [r for r in read_metrics(run) if r["event"] == "eval" and not r.get("final")]


def full_model_at_shrink_start(rec: Path) -> dict[str, float]:
    """The full model's validation accuracy (%) around the shrink start of the run recorded at ``rec`` (its config's
    shrink start × train.epochs): ``before`` (the last reading at or before it), ``lowest`` and ``mean`` over the
    readings of the epoch after it (the mean is what the ablation reports: one reading is noisy), ``after`` (that
    epoch's last reading) and ``at`` (the epoch)."""
    from onceforall.run.config import load_config

    ev = _evals(rec)
    cfg = load_config(str(rec / "config.yaml"))
    at = cfg.strategy.shrink_start * cfg.train.epochs
    before = [r["acc_full"] for r in ev if r["epoch"] <= at + 1e-9]
    after = [r["acc_full"] for r in ev if at < r["epoch"] <= at + 1 + 1e-9]
    if not before or not after:
        raise ValueError(f"{rec}: no full-model validation just before and after the shrink start (epoch {at:g})")
    return {"at": at, "before": before[-1], "lowest": min(after), "mean": statistics.mean(after), "after": after[-1]}


def shrink_start_drop(out: Path, seed: int) -> None:
    """Full model's validation accuracy around the shrink start, with and without ε-Shrinking (paper Fig. 7)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    epochs = max(r["epoch"] for r in _evals(record(out, f"deps-s{seed}")))
    at = full_model_at_shrink_start(record(out, f"deps-s{seed}"))["at"]
    lines = [f"Full model's validation accuracy around the shrink start (epoch {at:g}), seed {seed}:", "",
             "| run | acc. before | lowest in the epoch after | drop (points) | mean in the epoch after "
             "| acc. 1 epoch after |", "|---|---|---|---|---|---|"]
    shown: list[float] = []
    fig, ax = plt.subplots(figsize=(7, 4))
    for name in ("deps", "deps-no-eps"):
        ev = _evals(record(out, f"{name}-s{seed}"))
        xs, ys = [r["epoch"] for r in ev], [r["acc_full"] for r in ev]
        ax.plot(xs, ys, marker=".", label="ε-Shrinking (deps)" if name == "deps" else "no ε (deps-no-eps)")
        d = full_model_at_shrink_start(record(out, f"{name}-s{seed}"))
        lines.append(f"| {name} | {d['before']:.2f} | {d['lowest']:.2f} | {d['before'] - d['lowest']:.2f} | "
                     f"{d['mean']:.2f} | {d['after']:.2f} |")
        shown += [y for x, y in zip(xs, ys) if at - 1 <= x <= at + 1.5]
    ax.axvline(at, color="grey", ls="--", lw=1)
    ax.set_xlim(max(0, at - 1), min(epochs, at + 1.5))
    ax.set_ylim(min(shown) - 1, max(shown) + 1)
    ax.set_xlabel("epoch")
    ax.set_ylabel("full model validation accuracy (%)")
    ax.legend()
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(out / f"shrink-start-s{seed}.png", dpi=120)
    plt.close(fig)
    (out / f"shrink-start-s{seed}.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines), flush=True)


def shrink_start_over_seeds(out: Path, seeds: list[int]) -> list[str]:
    """The ε ablation's claim at the shrink start, over seeds with the verdict rule: ε-Shrinking keeps the full
    model's accuracy higher over the epoch after the shrink start (the mean of its readings there, not the lowest
    one), deps − deps-no-eps; and each run's drop (the reading before minus that mean). Seeds without both records
    are left out."""
    pairs = [(full_model_at_shrink_start(record(out, f"deps-s{s}")),
              full_model_at_shrink_start(record(out, f"deps-no-eps-s{s}"))) for s in seeds
             if (record(out, f"deps-s{s}") / "config.yaml").is_file()
             and (record(out, f"deps-no-eps-s{s}") / "config.yaml").is_file()]
    if not pairs:
        return []
    rows = [("full model, mean over the epoch after the shrink start: deps − deps-no-eps (claim > 0)",
             [d["mean"] - n["mean"] for d, n in pairs], True),
            ("deps: drop, before − mean over the epoch after", [d["before"] - d["mean"] for d, _ in pairs], False),
            ("deps-no-eps: drop, before − mean over the epoch after", [n["before"] - n["mean"] for _, n in pairs],
             False)]
    lines = ["Full model around the shrink start (points; mean [95 % t-interval over seeds]). " + VERDICT_RULE, "",
             "| quantity | seeds | per seed | over seeds | verdict |", "|---|---|---|---|---|"]
    for label, vals, claim in rows:
        lines.append(f"| {label} | {len(vals)} | {', '.join(f'{v:+.2f}' for v in vals)} | {_over_seeds(vals)} | "
                     f"{seed_verdict(vals, '>') if claim else '–'} |")
    return lines


def fig2_over_seeds(out: Path, seeds: list[int]) -> list[str]:
    """The paper's Fig. 2 claim over seeds: shrinking from the half-trained full model gives better small subnets
    than from the fully trained one. From each seed's compare-fig2-s<seed> (fig2-from-full minus fig2-from-half,
    paired on the test images): mean Pareto accuracy and every point of the curve, with the verdict on "from the
    half-trained model ahead" (Δ < 0) for the smallest subnet and bucket 1, where the paper claims it; the other
    points are reported without a claim. Seeds without the comparison are left out."""
    import csv

    per_point: dict[str, list[float]] = {}
    singles: dict[str, tuple[float, float]] = {}
    used = []
    for seed in seeds:
        folder = out / f"compare-fig2-s{seed}"
        if not (folder / "compare_points.csv").is_file():
            continue
        used.append(seed)
        rows = [r for r in csv.DictReader((folder / "compare.csv").open()) if r["method"].startswith("fig2-from-full")]
        rows = [{"point": "mean Pareto", "diff": r["diff_vs_ref"], "diff_ci_lo": r["diff_ci_lo"],
                 "diff_ci_hi": r["diff_ci_hi"]} for r in rows]
        rows += [r for r in csv.DictReader((folder / "compare_points.csv").open())
                 if r["method"].startswith("fig2-from-full")]
        for r in rows:
            if r["diff"] in ("", "None"):  # a point the two runs do not share
                continue
            per_point.setdefault(r["point"], []).append(float(r["diff"]))
            singles[r["point"]] = (float(r["diff_ci_lo"]), float(r["diff_ci_hi"]))
    if not used:
        return []
    lines = ["Fig. 2: shrinking started from the fully trained full model minus from the half-trained one (points; "
             "mean [95 % t-interval over seeds]; the paper claims the half-trained start gives better small "
             f"subnets, Δ < 0). Seeds: {', '.join(map(str, used))}. " + VERDICT_RULE, "",
             "| point | seeds | per seed | over seeds | verdict: from the half-trained ahead |",
             "|---|---|---|---|---|"]
    for point, vals in per_point.items():
        claimed = point in ("smallest", "bucket 1")
        single = singles[point] if len(vals) == 1 else None
        lines.append(f"| {point} | {len(vals)} | {', '.join(f'{v:+.2f}' for v in vals)} | {_over_seeds(vals)} | "
                     f"{seed_verdict(vals, '<', single=single) if claimed else '–'} |")
    return lines


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true",
                   help=f"{QUICK['train_subset']} images, {QUICK['epochs']} DεpS epochs")
    p.add_argument("--seeds", default="0", help="comma-separated training seeds (default 0)")
    p.add_argument("--only", help="comma-separated methods (default all five), or with --ablations runs "
                                  f"(default all: deps,{','.join(ABLATIONS)})")
    p.add_argument("--ablations", action="store_true", help="run the DεpS ablations instead of the five methods")
    p.add_argument("--out", help="output folder (default benchmarks/results/<full|quick>)")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--train-only", action="store_true",
                   help="train (or resume) every run, evaluate none: run again without it to evaluate, record "
                        "and compare (lets a suite's trainings go ahead while the instrument is being settled)")
    p.add_argument("--setting", default="fmnist20-r10", choices=list(SETTINGS),
                   help="benchmark setting (benchmarks/capacity.py): fmnist20-r10 (the presets with elastic "
                        "resolution 10/15/20: the one with a capacity signal; results in <quick|full>-fmnist20-r10), "
                        "fmnist20 (the presets as they are; results in quick/ and full/) or pairs28 "
                        "(fashion-mnist-pairs at 28 px)")
    args = p.parse_args()
    size = QUICK if args.quick else FULL
    setting = SETTINGS[args.setting]
    tag = "" if args.setting == "fmnist20" else f"-{args.setting}"
    out = Path(args.out or f"benchmarks/results/{'quick' if args.quick else 'full'}{tag}"
               f"{'-ablations' if args.ablations else ''}")
    log = out / "log.txt"
    seeds = [int(s) for s in args.seeds.split(",")]
    os.environ.setdefault("OMP_NUM_THREADS", str(args.threads))
    ofa = [sys.executable, "-m", "onceforall"]
    valid = ["deps", *ABLATIONS, *FIG2] if args.ablations else list(METHODS)
    chosen = args.only.split(",") if args.only else valid
    bad = [m for m in chosen if m not in valid]
    if bad:
        sys.exit(f"--only: unknown {'run' if args.ablations else 'method'} '{bad[0]}'; valid: {', '.join(valid)}")
    if args.ablations:
        every = max(1, round(size["train_subset"] / 128 / 8))  # 8 validations per epoch at batch 128
        jobs = {n: ("fashion-mnist", [*ABLATIONS.get(n, []), f"train.epochs={size['epochs']}",
                                      f"train.eval_every_steps={every}"]) for n in chosen if n not in FIG2}
    else:
        jobs = {m: (METHODS[m][0], [f"train.epochs={round(size['epochs'] * METHODS[m][1])}"]) for m in chosen}
    out.mkdir(parents=True, exist_ok=True)
    started = time.time()
    names_by_seed = {}
    for seed in seeds:
        print(f"seed {seed}:", flush=True)
        names = []
        seed_jobs = dict(jobs)
        fig2 = [n for n in chosen if n in FIG2] if args.ablations else []
        untrained = [n for n in fig2 if not recorded(out, f"{n}-s{seed}")]
        seed_jobs.update({n: ("fashion-mnist", []) for n in fig2})  # recorded ones are neither trained nor evaluated
        if untrained:  # the full model trained alone, whose mid-run and final checkpoints start the Fig. 2 runs
            source = train_run(f"full-only-s{seed}", "fashion-mnist-full-only",
                               [*setting, f"train.epochs={size['epochs']}", f"data.train_subset={size['train_subset']}",
                                f"train.seed={seed}"], out, log, args.threads)
            half = source / "checkpoints" / f"epoch-{size['epochs'] // 2:03d}.pt"
            for n in untrained:
                init = half if FIG2[n] == "half" else source / "checkpoints" / "last.pt"
                seed_jobs[n] = ("fashion-mnist", [f"train.init_from={init}", "strategy.shrink_start=0",
                                                  f"train.epochs={size['epochs'] // 2}"])
        for name, (preset, overrides) in seed_jobs.items():
            run_name = f"{name}-s{seed}"
            names.append(run_name)
            full = [*setting, *overrides, f"data.train_subset={size['train_subset']}", f"train.seed={seed}"]
            # a recorded Fig. 2 run's init_from/shrink overrides are not rebuilt here: not compared
            known = name not in fig2 or name in untrained
            if recorded(out, run_name, preset if known else None, full):
                print(f"  {run_name}: recorded", flush=True)
                continue
            run = train_run(run_name, preset, full, out, log, args.threads)
            if args.train_only:
                continue
            eval_and_record(run, out, run_name, log, args.threads)
        if args.train_only:
            continue
        sh([*ofa, "compare", *[str(record(out, n)) for n in names], "--out", str(out / f"compare-s{seed}")], log)
        names_by_seed[seed] = names
        print((out / f"compare-s{seed}" / "compare.md").read_text().split("\n\n![")[0], flush=True)
        if args.ablations and {"deps", "deps-no-eps"} <= set(jobs):
            shrink_start_drop(out, seed)
        if set(FIG2) <= set(fig2):  # Fig. 2's own comparison: from the fully trained model against from the half
            sh([*ofa, "compare", *[str(record(out, f"{n}-s{seed}")) for n in FIG2], "--out",
                str(out / f"compare-fig2-s{seed}")], log)
    if len(seeds) > 1 and not args.train_only:
        summarize(out, names_by_seed)
    print(f"done in {(time.time() - started) / 60:.1f} min; results in {out}", flush=True)


if __name__ == "__main__":
    main()
