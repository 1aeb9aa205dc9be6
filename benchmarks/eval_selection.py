"""Two checks of how eval chooses its bucket winners, on a run that `onceforall eval` and
`benchmarks/search_vs_random.py --front` have measured (their cache, eval/cache.json, is read; more is measured).

    python benchmarks/eval_selection.py ranking RUN [--resolution 15] [--extra 4]
    python benchmarks/eval_selection.py shrink RUN COPY [--weight 0.5]

``ranking``: the subnets of one resolution measured on the whole validation split (eval's finalists, the fronts'
members) and eval's ``--extra`` best searched candidates of bucket 1, each measured on eval's 1,000-image ranking
subset with BN from 250 and from data.bn_images images, on the whole validation split and on the test split; then
Kendall tau of each against test (results/eval_speed/bucket1-deps-e4-s0-e3.txt).

``shrink``: evaluates a copy of RUN (its cache copied, so only new measurements are made) with eval's defaults, the
finalists chosen on the ranking measurement shrunk towards an accuracy predictor fitted on every ranked subnet
(``weight`` x measured + (1 - weight) x predicted); prints the mean Pareto accuracy and the bucket winners.
"""

from __future__ import annotations

import argparse
import json
import shutil
from pathlib import Path

import numpy as np
import torch

import onceforall.workflows.evaluate as evaluate_mod
from onceforall.core.pareto import Point
from onceforall.measure.evaluator import RANKING_BN_IMAGES, RANKING_IMAGES, Evaluator
from onceforall.run.rundir import load_run
from onceforall.specialize.predictor import AccuracyPredictor, kendall_tau
from onceforall.workflows.report import write_run_report


def ranking(run_dir: Path, resolution: int, extra: int) -> None:
    run = load_run(run_dir)
    cache = json.loads((run_dir / "eval" / "cache.json").read_text())
    n_val = len(Evaluator(run).batches("selection")[0].ds)
    whole = [k.rsplit("|", 1)[1] for k in cache if f"|{n_val}|bn{run.cfg.data.bn_images}x" in k]
    names = [a for a in dict.fromkeys(whole) if a.startswith(f"r{resolution}_")]
    pareto = json.loads((run_dir / "eval" / "pareto.json").read_text())
    searched = sorted((e for e in pareto["evaluated"] if e["bucket"] == 0 and e["source"] == "search"),
                      key=lambda e: -e["acc_selection"])
    names += [e["arch"] for e in searched[:extra] if e["arch"] not in names]
    archs = [run.space.parse(a) for a in names]
    cheap = Evaluator(run, bn_images=RANKING_BN_IMAGES).accuracy(archs, "selection", RANKING_IMAGES)
    full = Evaluator(run)
    rows = (cheap, full.accuracy(archs, "selection", RANKING_IMAGES), full.accuracy(archs, "selection"),
            full.accuracy(archs, "test"))
    for i, a in enumerate(archs):
        print(" ".join(f"{r[i]:6.2f}" for r in rows) + f" {run.space.macs(a) / 1e6:5.2f} {a}")
    test = rows[3]
    print(f"tau(250 vs test) {kendall_tau(rows[0], test)} tau(1000bn vs test) {kendall_tau(rows[1], test)} "
          f"tau(whole vs test) {kendall_tau(rows[2], test)}")
    print("mean diff 250-1000", float(np.mean(np.array(rows[0]) - np.array(rows[1]))))


def shrink(run_dir: Path, copy: Path, weight: float) -> None:
    if copy.exists():
        shutil.rmtree(copy)
    (copy / "checkpoints").mkdir(parents=True)
    (copy / "eval").mkdir()
    for f in ("config.yaml", "metrics.jsonl", "cost.json"):
        shutil.copy2(run_dir / f, copy / f)
    shutil.copy2(run_dir / "checkpoints" / "last.pt", copy / "checkpoints" / "last.pt")
    for f in ("cache.json", "correct.json"):
        shutil.copy2(run_dir / "eval" / f, copy / "eval" / f)
    run = load_run(copy)
    plain = evaluate_mod._finalists

    def shrunk(points, k, lo, hi, buckets, ends):
        predictor = AccuracyPredictor(run.space, seed=0)
        predictor.fit([p.arch for p in points], [p.acc for p in points], seed=0)
        est = predictor.predict([p.arch for p in points])
        pts = [Point(p.arch, p.macs, weight * p.acc + (1 - weight) * float(e)) for p, e in zip(points, est)]
        return plain(pts, k, lo, hi, buckets, ends)

    evaluate_mod._finalists = shrunk
    r = evaluate_mod.evaluate_run(run, progress=print)
    write_run_report(run, r)
    print("mean Pareto", r.mean_pareto_acc)
    for b in r.buckets:
        print(b["bucket"], b["macs"], b["acc"], b["arch"])


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="check", required=True)
    r = sub.add_parser("ranking")
    r.add_argument("run", type=Path)
    r.add_argument("--resolution", type=int, default=15)
    r.add_argument("--extra", type=int, default=4)
    s = sub.add_parser("shrink")
    s.add_argument("run", type=Path)
    s.add_argument("copy", type=Path)
    s.add_argument("--weight", type=float, default=0.5)
    p.add_argument("--threads", type=int, default=1)
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    if args.check == "ranking":
        ranking(args.run, args.resolution, args.extra)
    else:
        shrink(args.run, args.copy, args.weight)


if __name__ == "__main__":
    main()
