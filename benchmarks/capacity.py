"""Capacity curve of a benchmark setting: the smallest subnet, a middle arch and the full model, each trained
alone (``full-only`` on a one-arch space) with the same budget, reported on the whole test split.

A setting can rank once-for-all methods only if bigger subnets are better there: the issue's criterion is
that the full model trained alone beats the smallest subnet trained alone by at least 3 points.

    python benchmarks/capacity.py                         # every setting below, in order (resumable)
    python benchmarks/capacity.py --settings fmnist20-w025 --out benchmarks/results/capacity

Each training is a separate ``onceforall train`` process into ``--runs``; running the script again skips
finished runs and resumes unfinished ones. Writes ``<out>/<setting>.md`` and ``<out>/capacity.csv``.
"""

from __future__ import annotations

import argparse
import csv
import subprocess
import sys
import time
from pathlib import Path

from onceforall.run.rundir import read_metrics

# name -> overrides of the fashion-mnist-full-only preset (kernel 7 everywhere: the official DεpS space)
SETTINGS = {
    # two items side by side, 100 classes (accuracy ~ the product of two item accuracies): 28 px, width 0.25
    "pairs28-w025": ["data.dataset=fashion-mnist-pairs", "data.image_size=28", "model.resolutions=[28]"],
    "fmnist20-w025": [],  # the benchmark preset: 24k images, 20 px, width 0.25, 10 epochs
    "fmnist28-w05": ["data.image_size=28", "model.resolutions=[28]", "model.width_mult=0.5"],
    "fmnist28-w1": ["data.image_size=28", "model.resolutions=[28]", "model.width_mult=1.0"],
}
# (label, depth, expand): the smallest subnet, a middle arch and the full model of the fixed-kernel space
ARCHS = [("min", 2, 3), ("mid", 3, 4), ("full", 4, 6)]


def finished(run: Path) -> bool:
    return any(r.get("event") == "end" for r in read_metrics(run))


def train(run: Path, overrides: list[str], log) -> float:
    """Train (or resume, or skip) one run; returns its wall seconds in this call."""
    if finished(run):
        return 0.0
    args = (["--resume", str(run)] if (run / "checkpoints" / "last.pt").exists()
            else ["--config", "fashion-mnist-full-only", "--name", run.name, "--out-dir", str(run.parent),
                  *overrides, "train.checkpoint_every_steps=100", "train.progress=off"])
    tic = time.perf_counter()
    subprocess.run([sys.executable, "-m", "onceforall", "train", *args], check=True, stdout=log, stderr=log)
    return time.perf_counter() - tic


def final_row(run: Path) -> dict:
    return next(r for r in read_metrics(run) if r.get("event") == "eval" and r.get("final"))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--settings", default=",".join(SETTINGS), help=f"comma-separated, of {', '.join(SETTINGS)}")
    p.add_argument("--runs", default="runs/capacity", help="folder of the training runs")
    p.add_argument("--out", default="benchmarks/results/capacity", help="folder of the results")
    args = p.parse_args()
    names = args.settings.split(",")
    bad = [n for n in names if n not in SETTINGS]
    if bad:
        p.error(f"--settings: '{bad[0]}' is not valid; valid: {', '.join(SETTINGS)}")
    runs, out = Path(args.runs), Path(args.out)
    runs.mkdir(parents=True, exist_ok=True)
    out.mkdir(parents=True, exist_ok=True)
    rows = []
    with (runs / "train.log").open("a") as log:
        for name in names:
            for label, depth, expand in ARCHS:
                run = runs / f"{name}-{label}"
                extra = [f"model.depths=[{depth}]", f"model.expands=[{expand}]"]
                took = train(run, SETTINGS[name] + extra, log)
                r = final_row(run)
                rows.append({"setting": name, "arch": label, "depth": depth, "expand": expand, "macs": r["macs_full"],
                             "test_acc": r["acc_full"], "images": r["images"], "train_seconds_this_call": round(took)})
                print(f"{name:14s} {label:4s} d{depth} e{expand} {r['macs_full'] / 1e6:7.2f}M MACs "
                      f"{r['acc_full']:6.2f}% (test, {r['images']} images)", flush=True)
            sel = [r for r in rows if r["setting"] == name]
            gap = sel[-1]["test_acc"] - sel[0]["test_acc"]
            lines = [f"# Capacity curve: {name}", "",
                     f"`fashion-mnist-full-only` with {' '.join(SETTINGS[name]) or 'no overrides'}; each arch trained "
                     "alone (its one-arch space), kernel 7, same epochs; top-1 on the whole test split.", "",
                     "| arch | depth | expand | MACs | test acc |", "|---|---|---|---|---|"]
            lines += [f"| {r['arch']} | {r['depth']} | {r['expand']} | {r['macs'] / 1e6:.2f}M | {r['test_acc']:.2f}% |"
                      for r in sel]
            verdict = "meets" if gap >= 3 else "does not meet"
            lines += ["", f"Full model minus smallest subnet: {gap:+.2f} points ({verdict} the >= 3 point criterion).",
                      ""]
            (out / f"{name}.md").write_text("\n".join(lines))
    with (out / "capacity.csv").open("w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)


if __name__ == "__main__":
    main()
