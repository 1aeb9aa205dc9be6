"""Does the accuracy predictor rank subnets? Held-out Kendall tau and top-10 % hit rate of three predictors
trained on the same cheap measurements of a trained run, within a measurement budget a user can afford.

    python benchmarks/predictor.py runs/demo --minutes 10 --images 500    # measure for 10 minutes, then fit
    python benchmarks/predictor.py runs/demo --minutes 0                  # refit on what is cached

1. Random subnets spread over the MACs range (skewed samplers, as `eval`) are measured on a fixed subset of
   ``--images`` images of the selection split, each after BN recalibration, until ``--minutes`` of measuring
   are spent (cached in the run's eval/cache.json: a second call continues).
2. A seeded ``--heldout`` share of them is held out; on the rest three predictors are fitted:
   ``ofa`` (OFA's MLP on the one-hot encoding, MSE), ``ofa+macs`` (the MACs as one more input, MSE) and
   ``rank`` (MACs input, MSE + pairwise ranking loss: `onceforall search`'s predictor).
3. On the held-out subnets: Kendall tau against the cheap measurement, the share of the 10 % best that the
   predictor puts in its 10 % best, and tau inside each resolution (weighted mean: where a space is elastic in
   resolution, ranking across resolutions is the easy part). ``--reference N`` also measures N held-out
   subnets on the whole selection split: tau of each predictor against that accurate accuracy, next to the
   tau of the cheap measurement itself (the instrument's own ceiling).
"""

from __future__ import annotations

import argparse
import json
import random
import time

import torch

from onceforall.core.pareto import bucket_index
from onceforall.measure.candidates import SKEWS
from onceforall.measure.evaluator import Evaluator
from onceforall.run.rundir import load_run
from onceforall.specialize.predictor import AccuracyPredictor, kendall_tau, top_k_hit_rate

VARIANTS = {"ofa": {"cost_feature": False, "rank_weight": 0.0}, "ofa+macs": {"cost_feature": True, "rank_weight": 0.0},
            "rank": {"cost_feature": True, "rank_weight": 1.0}}


def draw(space, n: int, seed: int) -> list:
    """``n`` distinct archs drawn with the skews from -1 to 1 in turn (every part of the MACs range)."""
    rng, out, seen = random.Random(f"predictor-bench:{seed}"), [], set()
    i = 0
    while len(out) < n and i < 100 * n:
        a = space.sample(rng, skew=SKEWS[i % len(SKEWS)])
        i += 1
        if a not in seen:
            seen.add(a)
            out.append(a)
    return out


def within_resolution_tau(archs: list, pred, measured: list[float]) -> float:
    """Kendall tau inside each resolution, averaged with weights by group size: how well the predictor ranks
    subnets that the resolution alone does not tell apart (1 resolution: the plain tau)."""
    groups: dict[int, list[int]] = {}
    for i, a in enumerate(archs):
        groups.setdefault(a.resolution, []).append(i)
    kept = [g for g in groups.values() if len(g) > 2]
    return sum(len(g) * kendall_tau([float(pred[i]) for i in g], [measured[i] for i in g]) for g in kept) / \
        sum(len(g) for g in kept)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("run")
    p.add_argument("--minutes", type=float, default=10.0, help="measuring time to spend (0: use the cache)")
    p.add_argument("--images", type=int, default=500, help="selection images per cheap measurement")
    p.add_argument("--heldout", type=float, default=0.25)
    p.add_argument("--reference", type=int, default=40, help="held-out subnets measured on the whole selection split")
    p.add_argument("--seeds", default="0,1,2", help="predictor seeds (split and initialization)")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--out", help="write the results as JSON here")
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    run = load_run(args.run)
    space = run.space
    ev = Evaluator(run)
    pool = draw(space, 20000, 0)
    start, done = time.perf_counter(), 0
    todo = [a for a in pool if ev.key(a, "selection", args.images) not in ev.cache]
    while todo and time.perf_counter() - start < 60 * args.minutes:
        ev.accuracy(todo[:10], "selection", args.images)
        todo, done = todo[10:], done + 10
    spent = time.perf_counter() - start
    pairs = ev.measured("selection", args.images)
    archs = [a for a in pool if a in pairs]
    if len(archs) < 20:
        p.error(f"{len(archs)} measured subnets; measure longer (--minutes)")
    print(f"# {run.run_dir.name}: {len(archs)} subnets measured on {args.images} {run.selection_split} images each "
          f"({done} now in {spent / 60:.1f} min, {spent / max(done, 1):.2f} s each; the rest cached)")
    lo, hi = space.macs_range()
    buckets = [0] * 6
    for a in archs:
        buckets[bucket_index(space.macs(a), lo, hi, 6)] += 1
    print(f"# per MACs bucket: {buckets}")
    results: dict = {"run": str(run.run_dir), "images": args.images, "subnets": len(archs),
                     "seconds_per_measurement": round(spent / max(done, 1), 3) if done else None, "variants": {}}
    rows = []
    for seed in [int(s) for s in args.seeds.split(",")]:
        order = list(archs)
        random.Random(f"split:{seed}").shuffle(order)
        n_held = round(args.heldout * len(order))
        held, train = order[:n_held], order[n_held:]
        ref = {}
        if args.reference:
            sub = held[: args.reference]
            ref = dict(zip(sub, ev.accuracy(sub, "selection")))
        cheap = [pairs[a] for a in held]
        for name, kw in VARIANTS.items():
            pred_model = AccuracyPredictor(space, seed=seed, cost_feature=kw["cost_feature"])
            pred_model.fit(train, [pairs[a] for a in train], seed=seed, heldout=0, rank_weight=kw["rank_weight"])
            pred = pred_model.predict(held)
            row = {"seed": seed, "variant": name, "train": len(train), "heldout": len(held),
                   "tau": kendall_tau(pred, cheap), "top10": top_k_hit_rate(pred, cheap, max(1, len(held) // 10)),
                   "tau_within_resolution": within_resolution_tau(held, pred, cheap)}
            if ref:
                ra = list(ref)
                row["tau_reference"] = kendall_tau(pred_model.predict(ra), [ref[a] for a in ra])
                row["tau_cheap_vs_reference"] = kendall_tau([pairs[a] for a in ra], [ref[a] for a in ra])
            rows.append(row)
    print(f"\n{'predictor':>10s} {'tau (held-out, cheap)':>22s} {'top-10% hit':>12s} {'within res.':>11s}"
          f" {'tau vs whole split':>19s} {'cheap vs whole':>15s}")
    for name in VARIANTS:
        rs = [r for r in rows if r["variant"] == name]
        mean = {k: sum(r[k] for r in rs) / len(rs) for k in ("tau", "top10", "tau_within_resolution", "tau_reference",
                                                           "tau_cheap_vs_reference") if k in rs[0]}
        spread = {k: (min(r[k] for r in rs), max(r[k] for r in rs)) for k in mean}
        results["variants"][name] = {"mean": mean, "range": spread, "per_seed": rs}
        ref_txt = (f"{mean['tau_reference']:10.3f} [{spread['tau_reference'][0]:.2f}, {spread['tau_reference'][1]:.2f}]"
                   f" {mean['tau_cheap_vs_reference']:7.3f}") if "tau_reference" in mean else ""
        print(f"{name:>10s} {mean['tau']:12.3f} [{spread['tau'][0]:.2f}, {spread['tau'][1]:.2f}] "
              f"{mean['top10']:12.2f} {mean['tau_within_resolution']:11.3f} {ref_txt}")
    print(f"\n# mean [min, max] over seeds {args.seeds}; {rows[0]['train']} training and {rows[0]['heldout']} held-out "
          f"subnets per seed")
    if args.out:
        with open(args.out, "w") as f:
            json.dump(results, f, indent=1)


if __name__ == "__main__":
    main()
