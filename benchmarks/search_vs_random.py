"""Does the search beat random sampling, and does eval's front hold against the search? For a trained run and a
few MACs budgets, the best measured accuracy of the search's top-K archs (predictor + evolution) vs the best of K
random archs under the same budget, all chosen on the selection split and reported on the test split, plus the
predictor's held-out error. Two random baselines: archs drawn anywhere under the budget, and budget-matched archs
(MACs between --band x budget and the budget, as the search's results use the budget). Cross-check of the two
tools: eval's answer for the budget (of its front's points under the budget, the one best on the selection split)
against the search's, with a paired bootstrap interval of the difference over test images; eval's bucket winner
should not be beaten by what the search finds under the same budget (beaten: the interval lies below 0).

    python benchmarks/search_vs_random.py runs/fashion-mnist-quick-...          # budgets at 1/3, 1/2, 2/3
    python benchmarks/search_vs_random.py RUN --budgets buckets                 # the upper edge of each bucket
    python benchmarks/search_vs_random.py RUN --budgets 4M,8M --top 5 --random-seeds 5
    python benchmarks/search_vs_random.py RUN --budgets buckets --front    # the front, read at every bucket edge

The search here is independent of eval's ranking: its predictor learns from --samples subnets it measures on
--selection-images validation images with BN recalibrated on data.bn_images (`onceforall search` instead reuses
eval's cheaper ranking measurements by default; --selection-images 1000 --ranking-bn-images 250 checks that one).
Random baselines are drawn with several seeds; the table shows their mean and their best.
"""

from __future__ import annotations

import argparse
import json
import statistics

import torch

from onceforall.core.pareto import bootstrap_ci
from onceforall.measure.evaluator import Evaluator
from onceforall.run.rundir import load_run
from onceforall.specialize.budgets import parse_budget
from onceforall.specialize.evolution import random_search
from onceforall.workflows.front import build_front, read_budgets
from onceforall.workflows.search import run_search


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("run")
    p.add_argument("--budgets", help="comma-separated MACs budgets, or 'buckets' (the upper edges of eval's buckets); "
                                     "default: 1/3, 1/2, 2/3 of the range")
    p.add_argument("--top", type=int, default=3, help="archs measured per method (K)")
    p.add_argument("--random-seeds", type=int, default=3, help="random baselines' seeds (0: none, eval vs search only)")
    p.add_argument("--samples", type=int, default=60, help="measured subnets for the predictor")
    p.add_argument("--selection-images", type=int, default=2000, help="images of the predictor's measurements")
    p.add_argument("--ranking-bn-images", type=int, default=0,
                   help="BN images of the predictor's measurements (default 0: data.bn_images, a search measuring "
                        "its own predictor subnets, independent of eval's ranking measurements; "
                        "`onceforall search` defaults to eval's)")
    p.add_argument("--band", type=float, default=0.8, help="budget-matched random archs cost >= band x budget")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--front", action="store_true",
                   help="the front (`search --front`: NSGA-II once, budgets read off it) instead of one search per "
                        "budget")
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    run = load_run(args.run)
    space = run.space
    lo, hi = space.macs_range()
    pareto_file = run.dir.eval_dir / "pareto.json"
    if not pareto_file.exists():
        p.error(f"{pareto_file} not found: run `onceforall eval {args.run}` first (the front is cross-checked)")
    pareto = json.loads(pareto_file.read_text())
    if args.budgets == "buckets":
        budgets = [b["hi"] for b in pareto["buckets"]]
    elif args.budgets:
        budgets = [parse_budget(b) for b in args.budgets.split(",")]
    else:
        budgets = [lo + f * (hi - lo) for f in (1 / 3, 1 / 2, 2 / 3)]
    front = [space.parse(pt["arch"]) for pt in pareto["curve"]]
    ev = Evaluator(run)
    select = lambda archs: ev.accuracy(list(archs), "selection")  # noqa: E731 - whole selection split, cached
    print(f"# {run.run_dir.name}: {space.name} w{space.width_mult:g}; every method picks its best of K on the "
          f"{run.selection_split} split, reported on the test split ({len(run.data.test.ds)} images), K = {args.top}")
    print(f"{'budget':>8s} {'search best':>11s} {'random mean':>11s} {'random best':>11s} {'matched mean':>12s}"
          f" {'matched best':>12s} {'search >= random':>16s} {'eval front':>10s} {'eval - search':>13s}"
          f" {'paired 95 %':>15s} {'pred. RMSE':>10s} {'tau':>5s}")
    wins = held = beaten = 0
    if args.front:  # one front for every budget
        fr = build_front(run, ["macs"], samples=args.samples, selection_images=args.selection_images,
                         ranking_bn_images=args.ranking_bn_images or None, measure=4 * args.top)
        answers = read_budgets(run, fr, [{"macs": b} for b in budgets], top=args.top)
        print(f"# front: {len(fr.members)} archs, {sum(m['measured_acc'] is not None for m in fr.members)} "
              f"measured; predictor held-out top-10% hit rate {fr.predictor['heldout_top10']}")
    for i, budget in enumerate(budgets):
        found = answers[i] if args.front else run_search(run, macs=budget, top=args.top, samples=args.samples,
                                                         selection_images=args.selection_images,
                                                         ranking_bn_images=args.ranking_bn_images or None)
        best_search = next(c["measured_acc"] for c in found.candidates if c["arch"] == found.best)
        anywhere, matched = [], []
        for seed in range(args.random_seeds):
            for bests, floor in ((anywhere, 0.0), (matched, args.band * budget)):
                try:
                    drawn = random_search(space, select, space.macs, budget, n=args.top, seed=1000 + seed,
                                          min_cost=floor)
                except ValueError:  # uniform draws almost never reach the top of the range: no matched baseline
                    continue
                chosen = max(drawn, key=lambda r: r[1])[0]  # best on the selection split
                bests.append(ev.accuracy([chosen], "test")[0])
        ok = best_search >= max((statistics.mean(x) for x in (anywhere, matched) if x), default=float("-inf"))
        wins += ok
        fitting = [a for a in front if space.macs(a) <= budget]
        if fitting:
            sel = select(fitting)
            eval_pick = fitting[max(range(len(fitting)), key=lambda i: sel[i])]
            eval_acc = ev.accuracy([eval_pick], "test")[0]
            # paired over test images: both subnets see the same images, so their shared noise cancels
            per_image = 100.0 * (ev.correct(eval_pick, "test").astype(float)
                                 - ev.correct(space.parse(found.best), "test").astype(float))
            ci = bootstrap_ci(per_image, seed=i)
            held += eval_acc >= best_search
            beaten += ci[1] < 0
            eval_txt, diff_txt = f"{eval_acc:9.2f}%", f"{eval_acc - best_search:+12.2f}"
            ci_txt = f"[{ci[0]:+.2f}, {ci[1]:+.2f}]"
        else:
            eval_txt, diff_txt, ci_txt = f"{'-':>10s}", f"{'-':>13s}", "-"
        pr = found.predictor
        matched_txt = (f"{statistics.mean(matched):11.2f}% {max(matched):11.2f}%" if matched
                       else f"{'-':>12s} {'-':>12s}")
        anywhere_txt = (f"{statistics.mean(anywhere):10.2f}% {max(anywhere):10.2f}%" if anywhere
                        else f"{'-':>11s} {'-':>11s}")
        print(f"{budget / 1e6:7.2f}M {best_search:10.2f}% {anywhere_txt} "
              f"{matched_txt} {'yes' if ok else 'no':>16s} "
              f"{eval_txt} {diff_txt} {ci_txt:>15s} {pr['heldout_rmse']:10.2f} {pr['heldout_kendall_tau']:5.2f}")
    print(f"search >= the mean of both random baselines (or of the one drawn: '-' = no budget-matched arch in 500 "
          f"uniform draws) in {wins}/{len(budgets)} budgets; eval's front >= the search in {held}/{len(budgets)}, "
          f"beaten by it (paired 95 % bootstrap interval of eval - search over test images below 0) in "
          f"{beaten}/{len(budgets)}")


if __name__ == "__main__":
    main()
