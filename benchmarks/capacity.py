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

from common import FMNIST20_R10, QUICK_OVERRIDES

from onceforall.run.rundir import read_metrics

# name -> overrides of the fashion-mnist-full-only preset (kernel 7 everywhere: the official DεpS space)
SETTINGS = {
    # the benchmark presets with elastic resolution {12, 16, 20} (OFA's spaces are elastic in resolution too):
    # every arch sees the 20-px images the supernet sees, resized by the network to its own resolution
    "fmnist20-r12": ["data.image_size=20", "model.resolutions=[12,16,20]"],
    "fmnist20-r10": FMNIST20_R10,
    # the same at reproduce.py's --quick size (10k training images, 4 epochs)
    "fmnist20-r12-quick": ["data.image_size=20", "model.resolutions=[12,16,20]", *QUICK_OVERRIDES],
    "fmnist20-r10-quick": [*FMNIST20_R10, *QUICK_OVERRIDES],
    # two items side by side, 100 classes (accuracy ~ the product of two item accuracies): 28 px, width 0.25
    "pairs28-w025": ["data.dataset=fashion-mnist-pairs", "data.image_size=28", "model.resolutions=[28]"],
    "fmnist20-w025": [],  # the benchmark preset: 24k images, 20 px, width 0.25, 10 epochs
    "fmnist28-w05": ["data.image_size=28", "model.resolutions=[28]", "model.width_mult=0.5"],
    "fmnist28-w1": ["data.image_size=28", "model.resolutions=[28]", "model.width_mult=1.0"],
}
# (label, depth, expand): the smallest subnet, a middle arch and the full model of the fixed-kernel space; with
# several resolutions, they take the smallest, the middle and the largest one
ARCHS = [("min", 2, 3), ("mid", 3, 4), ("full", 4, 6)]


def resolutions(overrides: list[str]) -> list[int] | None:
    """The setting's ``model.resolutions`` when it has several, else None."""
    for o in overrides:
        if o.startswith("model.resolutions="):
            rs = sorted(int(r) for r in o.split("=", 1)[1].strip("[]").split(","))
            return rs if len(rs) > 1 else None
    return None


def arch_resolution(setting: list[str], i: int) -> int | None:
    """The resolution of the ``i``-th arch of ARCHS in ``setting`` (None: the setting's only one)."""
    rs = resolutions(setting)
    return rs[[0, len(rs) // 2, -1][i]] if rs else None


def arch_overrides(setting: list[str], i: int, depth: int, expand: int) -> list[str]:
    """Overrides that restrict ``setting``'s space to its ``i``-th arch of ARCHS (a one-arch space)."""
    extra = [f"model.depths=[{depth}]", f"model.expands=[{expand}]"]
    r = arch_resolution(setting, i)
    if r is None:
        return setting + extra
    return [o for o in setting if not o.startswith("model.resolutions=")] + extra + [f"model.resolutions=[{r}]"]


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
    rows: list[dict] = []
    trained: dict[tuple, Path] = {}
    with (runs / "train.log").open("a") as log:
        for name in names:
            for i, (label, depth, expand) in enumerate(ARCHS):
                overrides = arch_overrides(SETTINGS[name], i, depth, expand)
                # settings that share an arch's training (the same overrides) share its run
                run = trained.setdefault(tuple(sorted(overrides)), runs / f"{name}-{label}")
                took = train(run, overrides, log)
                r = final_row(run)
                rows.append({"setting": name, "arch": label, "depth": depth, "expand": expand,
                             "resolution": arch_resolution(SETTINGS[name], i), "macs": r["macs_full"],
                             "test_acc": r["acc_full"], "images": r["images"], "train_seconds_this_call": round(took)})
                print(f"{name:14s} {label:4s} d{depth} e{expand} {r['macs_full'] / 1e6:7.2f}M MACs "
                      f"{r['acc_full']:6.2f}% (test, {r['images']} images)", flush=True)
            sel = [r for r in rows if r["setting"] == name]
            gap = sel[-1]["test_acc"] - sel[0]["test_acc"]
            half = gap_interval(sel[0]["test_acc"], sel[-1]["test_acc"], sel[0]["images"])
            lines = [f"# Capacity curve: {name}", "",
                     f"`fashion-mnist-full-only` with {' '.join(SETTINGS[name]) or 'no overrides'}; each arch trained "
                     "alone (its one-arch space), kernel 7, same epochs; top-1 on the whole test split.", "",
                     "| arch | resolution | depth | expand | MACs | test acc |", "|---|---|---|---|---|---|"]
            lines += [f"| {r['arch']} | {r['resolution'] or '-'} | {r['depth']} | {r['expand']} "
                      f"| {r['macs'] / 1e6:.2f}M | {r['test_acc']:.2f}% |" for r in sel]
            verdict = "meets" if gap >= 3 else "does not meet"
            lines += ["", f"Full model minus smallest subnet: {gap:+.2f} ± {half:.2f} points (95 % interval over the "
                      f"test images drawn; seeds not included): {verdict} the >= 3 point criterion.", ""]
            (out / f"{name}.md").write_text("\n".join(lines))
    write_csv(out / "capacity.csv", rows)


def gap_interval(acc_small: float, acc_full: float, images: int) -> float:
    """Half-width (points) of the normal 95 % interval of the difference of two accuracies on ``images`` each."""
    p, q = acc_small / 100, acc_full / 100
    return 100 * 1.96 * ((p * (1 - p) + q * (1 - q)) / images) ** 0.5


def write_csv(path: Path, rows: list[dict]) -> None:
    """Write ``rows`` into ``path``, keeping the rows of the settings that were not run this time."""
    done = {r["setting"] for r in rows}
    kept = [r for r in csv.DictReader(path.open())] if path.exists() else []
    merged = [r for r in kept if r["setting"] not in done] + rows
    with path.open("w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(rows[0]), restval="")
        w.writeheader()
        w.writerows(merged)


if __name__ == "__main__":
    main()
