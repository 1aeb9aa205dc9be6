"""Where an evaluation's seconds go, and what it costs next to the training of the same run.

    python benchmarks/eval_speed.py RUN [--threads 1] [--train-cpu-seconds S] [--json OUT]
    python benchmarks/eval_speed.py RUN --ranking 48 [--proxies 250:500,500:1000,1000:1000,1000:2000]

Evaluates RUN (``onceforall eval``'s defaults) in a scratch copy of the run (config, cost and last checkpoint;
no eval cache, so every measurement is made) and prints, per part, wall seconds and share: subnet extraction,
BN recalibration, forward passes per evaluation set (by its number of images: the selection subset, the whole
validation split, the test split), predictor fits, NSGA-II and per-bucket evolution, cache writes, the report,
and the rest; then the evaluation's wall and CPU seconds against the training's (``cost.json`` train_seconds,
and ``--train-cpu-seconds`` when given, e.g. from ``/usr/bin/time``). The parts are timed by wrapping the
library's functions from outside, so the same instrument measures the evaluation before and after a change.

``--ranking N`` measures how well cheap ranking measurements order subnets: N of eval's candidate archs (the same
number per MACs bucket) measured the way winners are chosen (data.bn_images BN images, the whole validation split)
and with each proxy BN_IMAGES:SELECTION_IMAGES; per proxy: Kendall tau and Spearman's rho against that reference
over all N and within buckets (mean), how often each bucket's reference best is among the proxy's top 3 of the
bucket, and the image-forwards a candidate costs.

On a shared 2-core machine wall time depends on the load: with ``--threads 1`` the CPU seconds of this process
are the figure that the load changes least; compare it with the training's CPU seconds at the same thread count.
"""

from __future__ import annotations

import argparse
import inspect
import json
import os
import shutil
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path

import torch


def _wrap(owner, name: str, part, seconds: dict, counts: dict) -> None:
    """Replace ``owner.name`` by a timed call that adds its seconds to ``seconds[part(args)]`` (nested timed calls
    are subtracted from their caller, so the parts add up to the whole)."""
    if not hasattr(owner, name):
        return
    inner = getattr(owner, name)
    stack: list[float] = _wrap.stack  # type: ignore[attr-defined]

    def timed(*args, **kwargs):
        label = part(args, kwargs) if callable(part) else part
        stack.append(0.0)
        tic = time.perf_counter()
        try:
            return inner(*args, **kwargs)
        finally:
            spent = time.perf_counter() - tic
            nested = stack.pop()
            seconds[label] += spent - nested
            counts[label] += 1
            if stack:
                stack[-1] += spent

    setattr(owner, name, timed)


_wrap.stack = []  # type: ignore[attr-defined]


def _images(batches) -> int:
    ds = getattr(batches, "ds", None)
    if ds is not None:
        return len(ds)
    return sum(len(b[1]) for b in batches) if isinstance(batches, list) else -1


def instrument(seconds: dict, counts: dict) -> None:
    """Time the evaluation's parts by wrapping the functions it calls (old and new evaluation code alike)."""
    from onceforall.core import evaluation as core_eval
    from onceforall.core import supernet as core_supernet
    from onceforall.measure import evaluator as meas_mod
    from onceforall.specialize import predictor as pred_mod
    from onceforall.workflows import evaluate as ev_mod
    from onceforall.workflows import report as report_mod

    _wrap(core_supernet.Supernet, "extract", "extract subnet", seconds, counts)
    for mod in (core_eval, meas_mod):  # wherever the evaluation looks them up
        _wrap(mod, "recalibrate_bn", "BN recalibration", seconds, counts)
        _wrap(mod, "correct_mask", lambda a, k: f"forward, {_images(a[1])} images", seconds, counts)
    _wrap(pred_mod.AccuracyPredictor, "fit", "predictor fit", seconds, counts)
    _wrap(ev_mod, "nsga2_search", "NSGA-II (predicted front)", seconds, counts)
    _wrap(ev_mod, "evolutionary_search", "evolution in a bucket", seconds, counts)
    _wrap(meas_mod.Evaluator, "save", "cache writes", seconds, counts)
    _wrap(report_mod, "write_run_report", "report (md, csv, png)", seconds, counts)
    _wrap(ev_mod, "candidate_archs", "candidate sampling", seconds, counts)


def training_macs(run_dir: Path) -> int:
    """The training's MACs: every step's plan replayed (each pass's arch MACs x the global batch x 3: forward and a
    backward counted as 2 forwards; a frozen teacher's forward x 1), from the run's config alone."""
    from onceforall.run.rundir import RunDir
    from onceforall.run.setup import build_data, build_schedule, build_space, build_strategy, image_size

    cfg = RunDir(run_dir).read_config()
    space0 = build_space(cfg)
    data = build_data(cfg, image_size(cfg, space0), training=False)
    space = space0.with_io(num_classes=data.num_classes, in_channels=data.in_channels)
    schedule = build_schedule(cfg, data.train.steps_per_epoch)
    strategy = build_strategy(cfg, space, schedule)
    total = 0
    for t in range(schedule.total_steps):
        plan = strategy.plan(t)
        total += sum(3 * space.macs(p.arch) for p in plan.passes)
        if plan.teacher == "frozen":
            total += space.macs(plan.teacher_arch)
    return total * cfg.train.batch_size


def old_eval_macs(cache_file: Path, space) -> tuple[int, int]:
    """(MACs, image-forwards) of an evaluation made before protocol e2, from its cache.json: every measurement
    recalibrated BN (``bnN`` in its key) and forwarded its set (``set|images``)."""
    macs = forwards = 0
    for key in json.loads(cache_file.read_text()):
        parts = key.split("|")
        if parts[0].startswith("e"):  # protocol e2 and later: not an old key
            continue
        images, bn, arch = int(parts[2]), int(parts[3][2:].replace("aug", "")), space.parse(parts[4])
        macs += space.macs(arch) * (images + bn)
        forwards += images + bn
    return macs, forwards


def scratch_copy(run: Path, into: Path) -> Path:
    """The run's config, metrics, cost and last checkpoint in ``into`` (no eval/ folder: nothing cached)."""
    dst = into / run.name
    (dst / "checkpoints").mkdir(parents=True)
    for f in ("config.yaml", "metrics.jsonl", "cost.json"):
        if (run / f).is_file():
            shutil.copy2(run / f, dst / f)
    shutil.copy2(run / "checkpoints" / "last.pt", dst / "checkpoints" / "last.pt")
    return dst


def _ranks(x: list[float]) -> list[float]:
    order = sorted(range(len(x)), key=lambda i: x[i])
    r = [0.0] * len(x)
    i = 0
    while i < len(order):  # average ranks over ties
        j = i
        while j + 1 < len(order) and x[order[j + 1]] == x[order[i]]:
            j += 1
        for k in range(i, j + 1):
            r[order[k]] = (i + j) / 2
        i = j + 1
    return r


def spearman(x: list[float], y: list[float]) -> float:
    import numpy as np

    return float(np.corrcoef(_ranks(x), _ranks(y))[0, 1])


def ranking(run_dir: Path, n: int, proxies: list[tuple[int, int]], threads: int) -> None:
    from onceforall.core.pareto import bucket_index
    from onceforall.data import subset_order
    from onceforall.measure.candidates import candidate_archs
    from onceforall.measure.evaluator import SUBSET_SEED, Evaluator
    from onceforall.run.rundir import load_run
    from onceforall.specialize.predictor import kendall_tau

    with tempfile.TemporaryDirectory() as tmp:
        run = load_run(scratch_copy(run_dir, Path(tmp)))
        space = run.space
        lo, hi = space.macs_range()
        archs = candidate_archs(space, per_bucket=max(2, n // 6), uniform=False)
        bucket = {a: bucket_index(space.macs(a), lo, hi) for a in archs}
        ref_ev = Evaluator(run)
        ref_ev.accuracy(archs, "selection")
        n_val = len(ref_ev.batches("selection")[0].ds)
        # the reference: the validation images beyond the largest proxy subset (subsets are nested, the first k of
        # one order), so that proxy and reference share no image and their noise is independent
        beyond = subset_order(n_val, SUBSET_SEED)[max(i for _, i in proxies):].numpy()
        ref = [100.0 * ref_ev.correct(a, "selection")[beyond].mean() for a in archs]
        print(f"# ranking on {run_dir.name}: {len(archs)} archs; reference: BN {ref_ev.bn_images} images, the "
              f"{len(beyond)} images of the {run.selection_split} split outside every proxy's subset, "
              f"{threads} thread(s)")
        print("| proxy (BN:selection images) | image-forwards per candidate | Kendall tau | Spearman rho | "
              "within-bucket tau (mean) | bucket best in proxy's top 3 |")
        print("|---|---|---|---|---|---|")
        for bn, images in proxies:
            ev = Evaluator(run, bn_images=bn)
            prox = ev.accuracy(archs, "selection", images)
            taus, hits, buckets = [], 0, sorted(set(bucket.values()))
            for b in buckets:
                idx = [i for i, a in enumerate(archs) if bucket[a] == b]
                if len(idx) >= 3:
                    taus.append(kendall_tau([ref[i] for i in idx], [prox[i] for i in idx]))
                best = max(idx, key=lambda i: ref[i])
                top3 = sorted(idx, key=lambda i: -prox[i])[:3]
                hits += best in top3
            print(f"| {bn}:{images} | {bn + images} | {kendall_tau(ref, prox):.3f} | {spearman(ref, prox):.3f} | "
                  f"{sum(taus) / len(taus):.3f} | {hits}/{len(buckets)} |", flush=True)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("run", type=Path)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--train-cpu-seconds", type=float, help="the training's CPU seconds (e.g. /usr/bin/time)")
    p.add_argument("--json", type=Path, help="also write the numbers as JSON here")
    p.add_argument("--keep", type=Path, help="keep the evaluated scratch run here (its eval/ for compare)")
    p.add_argument("--old-cache", type=Path,
                   help="print the MACs of an evaluation made before protocol e2 from its eval/cache.json, and exit")
    p.add_argument("--ranking", type=int, help="measure the ranking quality of cheap proxies on this many archs")
    p.add_argument("--proxies", default="250:500,500:1000,1000:1000,1000:2000",
                   help="BN_IMAGES:SELECTION_IMAGES pairs for --ranking")
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    os.environ.setdefault("OMP_NUM_THREADS", str(args.threads))
    if args.old_cache:
        from onceforall.run.rundir import load_run

        macs, forwards = old_eval_macs(args.old_cache, load_run(args.run).space)
        train = training_macs(args.run)
        print(f"old evaluation ({args.old_cache}): {macs / 1e9:.1f} GMACs in {forwards} image-forwards; training "
              f"{train / 1e9:.1f} GMACs; **eval / training (MACs): {macs / train:.3f}x**")
        return None
    if args.ranking:
        proxies = [tuple(int(v) for v in pair.split(":")) for pair in args.proxies.split(",")]
        return ranking(args.run, args.ranking, proxies, args.threads)
    seconds: dict[str, float] = defaultdict(float)
    counts: dict[str, int] = defaultdict(int)
    instrument(seconds, counts)
    from onceforall.measure.evaluator import Evaluator
    from onceforall.run.rundir import load_run
    from onceforall.workflows.evaluate import evaluate_run
    from onceforall.workflows.report import write_run_report

    with tempfile.TemporaryDirectory() as tmp:
        run = load_run(scratch_copy(args.run, Path(tmp)))
        cpu0, tic = time.process_time(), time.perf_counter()
        ev = Evaluator(run)
        result = evaluate_run(run, evaluator=ev) if "evaluator" in inspect.signature(evaluate_run).parameters \
            else evaluate_run(run)
        write_run_report(run, result)
        wall, cpu = time.perf_counter() - tic, time.process_time() - cpu0
        if args.keep:
            shutil.copytree(run.run_dir, args.keep, ignore=shutil.ignore_patterns("checkpoints"))
    seconds["rest (sampling, bookkeeping)"] = wall - sum(seconds.values())
    train_macs = training_macs(args.run)
    eval_macs = sum(ev.macs.values())
    cost = json.loads((args.run / "cost.json").read_text())
    train = cost["train_seconds"]
    lines = [f"# eval_speed: {args.run.name} ({result.strategy}), {args.threads} thread(s), torch "
             f"{torch.__version__}", "",
             f"mean Pareto accuracy {result.mean_pareto_acc:.2f} (the evaluation timed)", "",
             "| part | calls | seconds | share |", "|---|---|---|---|"]
    for part, s in sorted(seconds.items(), key=lambda kv: -kv[1]):
        lines.append(f"| {part} | {counts.get(part, '')} | {s:.1f} | {100 * s / wall:.0f} % |")
    lines += ["", f"eval: {wall:.1f} s wall, {cpu:.1f} s CPU; training: {train:.1f} s wall (cost.json, "
              f"{cost.get('device', '?')})", f"**eval / training (wall): {wall / train:.2f}x**"]
    if eval_macs:
        lines.append(f"**eval / training (MACs): {eval_macs / train_macs:.3f}x** ({eval_macs / 1e9:.1f} GMACs in "
                     f"{sum(ev.images.values())} image-forwards; training {train_macs / 1e9:.1f} GMACs): "
                     + ", ".join(f"{k} {v / 1e9:.1f}" for k, v in sorted(ev.macs.items(), key=lambda kv: -kv[1])))
    if args.train_cpu_seconds:
        lines.append(f"**eval / training (CPU seconds): {cpu / args.train_cpu_seconds:.2f}x** (training "
                     f"{args.train_cpu_seconds:.1f} s CPU)")
    print("\n".join(lines), flush=True)
    if args.json:
        args.json.write_text(json.dumps({"run": args.run.name, "threads": args.threads, "wall": wall, "cpu": cpu,
                                         "train_wall": train, "train_cpu": args.train_cpu_seconds,
                                         "parts": dict(seconds), "calls": dict(counts), "eval_macs": eval_macs,
                                         "train_macs": train_macs, "macs": dict(ev.macs),
                                         "mean_pareto_acc": result.mean_pareto_acc}, indent=1) + "\n")


if __name__ == "__main__":
    sys.exit(main())
