"""Which method for my budget: accuracy–cost curves across training budgets, on 5 seeds (issue 22).

    python benchmarks/curves.py --plan                  # the runs left, in order, with an estimated time
    python benchmarks/curves.py                         # train, evaluate and record what is left, then report
    python benchmarks/curves.py --seeds 0 --only deps,ofa-ps   # a subset
    python benchmarks/curves.py --train-only            # train (or resume) only; evaluate in a later call
    python benchmarks/curves.py --report-only           # curves.md / curves.csv / curves.png from the records
    python benchmarks/curves.py --report-only --sync-results   # ... and RESULTS.md's copies of its tables
    python benchmarks/curves.py --jobs 2                # two runs at a time, 1 thread each (a 2-core machine alone)

The setting is reproduce.py's quick capacity setting (fashion-mnist presets with elastic resolution {10, 15, 20},
10k training images). Each method trains at several budgets (epochs), chosen so that the curves' training costs
overlap: DεpS 4/8/16/32, OFA-PS with its preset's phase fractions at 9/18/35 (2.2x each DεpS budget, the paper's
ratio) and at 4 (DεpS's cheapest epochs: without it the two cost ranges overlap over 1.9x only), BigNAS 3/6/12,
CompOFA 5/10 and the full model alone 4/8/16, each on seeds 0..4. The order is seed-major (seed 0's cheapest budget
level for every method, then its next level, ..., then seed 1, ...), so every session adds complete curves; the
two costliest points, DεpS at 32 and OFA-PS at 35 epochs (~17T MACs: past every other curve's cost, they extend
only the DεpS − OFA-PS comparison, where the gap narrows with the budget), come after all the others, seed by seed.

Every run is `onceforall train` (1 thread by default: the suite runs in the background beside other work), then
`onceforall eval` (default settings), then its record, <out>/records/<name>/ (config, metrics, cost.json with the
training MACs, eval/pareto.json, curve_correct.json, pareto.csv, report.md: small, committed, no machine paths),
and a row per part in <out>/durations.csv. A run with a record is skipped; an unfinished run resumes from its last
checkpoint (<out>/runs/, not committed). The analysis (curves_report.py) reads the records alone.

With --jobs N, N runs go at a time (the next ones in the order above), their log lines prefixed with the run's
name. The cost unit (training MACs) does not depend on the load; each run's cost.json also keeps its CPU seconds,
which pauses do not inflate. Its gain over one run at a time has not been timed on a machine left to it.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import re
import statistics
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from common import FMNIST20_R10, QUICK, eval_and_record, recorded, train_run

from onceforall.run.checkpoint import peek_state

OUT = Path("benchmarks/results/curves-quick-fmnist20-r10")
# reproduce.py's quick runs in the same setting (4 DεpS epochs, 2 threads): the plan's estimate for a method this
# suite has not measured yet
REPRODUCE_DURATIONS = Path(__file__).resolve().parent / "results" / "quick-fmnist20-r10" / "durations.csv"
RESULTS = Path(__file__).resolve().parent / "RESULTS.md"  # its section 3 and claims table copy curves.md's tables
SEEDS = (0, 1, 2, 3, 4)
# method -> (preset, epochs per budget level, cheapest first)
POINTS: dict[str, tuple[str, tuple[int, ...]]] = {
    "deps": ("fashion-mnist", (4, 8, 16, 32)),
    # 9/18/35: 2.2x DεpS's epochs (paper Table 2: 605 / 270); 4: so that the cost ranges overlap over > 2x
    "ofa-ps": ("fashion-mnist-ofa-ps", (4, 9, 18, 35)),
    "bignas": ("fashion-mnist-bignas", (3, 6, 12)),
    "compofa": ("fashion-mnist-compofa", (5, 10)),  # 1.2x (330 / 270)
    "full-only": ("fashion-mnist-full-only", (4, 8, 16)),
}
# Points past every other curve's cost (~17T MACs; BigNAS, CompOFA and the full model alone end at 5-8T): they
# extend only the DεpS − OFA-PS curves, whose gap narrows as the budget grows (does it close?), and cost ~30 % of a
# seed's compute. They run after every seed of the other points, so that the answers need not wait for them.
LAST = {("deps", 32), ("ofa-ps", 35)}
NAME = re.compile(r"^(?P<method>.+)-e(?P<epochs>\d+)-s(?P<seed>\d+)$")


@dataclass(frozen=True)
class Job:
    method: str
    epochs: int
    seed: int

    @property
    def name(self) -> str:
        return f"{self.method}-e{self.epochs}-s{self.seed}"

    @property
    def preset(self) -> str:
        return POINTS[self.method][0]

    def overrides(self) -> list[str]:
        return [*FMNIST20_R10, f"data.train_subset={QUICK['train_subset']}", f"train.epochs={self.epochs}",
                f"train.seed={self.seed}"]


def parse_name(name: str) -> Job | None:
    """The job of a run or record name ``<method>-e<epochs>-s<seed>``; None for another name."""
    m = NAME.match(name)
    return Job(m["method"], int(m["epochs"]), int(m["seed"])) if m else None


def jobs(seeds: list[int], methods: list[str]) -> list[Job]:
    """Every run, seed-major: for each seed, budget level 0 of every method, then level 1, ...; the :data:`LAST`
    points after all of them, seed by seed."""
    levels = max(len(POINTS[m][1]) for m in methods)
    every = [Job(m, POINTS[m][1][level], s) for s in seeds for level in range(levels) for m in methods
             if level < len(POINTS[m][1])]
    return sorted(every, key=lambda j: (j.method, j.epochs) in LAST)  # stable: the order within each part stays


# ---------------------------------------------------------------------------------------------------
# The plan: what is left, with a time estimate from the durations measured so far
# ---------------------------------------------------------------------------------------------------


def read_durations(path: Path) -> dict[tuple[str, str], float]:
    """Seconds per (run, part) of a durations.csv, summed over its rows (a resumed part adds a row)."""
    total: dict[tuple[str, str], float] = {}
    if path.is_file():
        for row in csv.DictReader(path.open()):
            key = (row["run"], row["part"])
            total[key] = total.get(key, 0.0) + float(row["seconds"])
    return total


def with_record_seconds(out: Path, durations: dict[tuple[str, str], float]) -> dict[tuple[str, str], float]:
    """``durations`` with each recorded run's training seconds taken from its cost.json: the training's own total
    over every resume (durations.csv misses the parts of a suite that was killed), as CPU seconds per thread
    (``cpu_seconds`` / the threads its ``device`` names: the time the training had a core per thread, which
    neither a pause nor other jobs on the cores lengthen, while its wall seconds count both), or ``wall_seconds``
    in a record written before cpu_seconds was kept."""
    out_durations = dict(durations)
    for cost_file in sorted((out / "records").glob("*/cost.json")):
        cost = json.loads(cost_file.read_text())
        seconds = (cost.get("cpu_seconds") or 0.0) / _threads(cost) or cost.get("wall_seconds")
        if seconds:
            out_durations[(cost_file.parent.name, "train")] = float(seconds)
    return out_durations


def _threads(cost: dict) -> int:
    """The CPU threads a training used: its cost.json's ``threads``, or in a record written before that field was
    kept, the threads its ``device`` names ("…, N threads"); 1 where neither does."""
    if cost.get("threads"):
        return max(1, int(cost["threads"]))
    match = re.search(r", (\d+) threads$", str(cost.get("device", "")))
    return max(1, int(match.group(1))) if match else 1


def estimate(job: Job, durations: dict[tuple[str, str], float]) -> tuple[float | None, float | None]:
    """(train seconds, eval seconds) estimated for ``job``: the method's median training seconds per epoch and
    median evaluation seconds over its measured runs (any seed and budget; the median, because a run paused for a
    timing or trained beside other jobs counts its lost time too); None where none is measured."""
    per_epoch, evals = [], []
    for (run, part), seconds in durations.items():
        other = parse_name(run)
        if other is None or other.method != job.method:
            continue
        if part == "train":
            per_epoch.append(seconds / other.epochs)
        elif part == "eval":
            evals.append(seconds)
    return (statistics.median(per_epoch) * job.epochs if per_epoch else None,
            statistics.median(evals) if evals else None)


def reproduce_durations(path: Path) -> dict[tuple[str, str], float]:
    """reproduce.py's durations (runs named <method>-s<seed>), renamed as this suite's runs of the same epochs."""
    from reproduce import METHODS

    out = {}
    for (run, part), seconds in read_durations(path).items():
        method, _, seed = run.rpartition("-s")
        if method in POINTS and seed.isdigit():
            out[(Job(method, round(QUICK["epochs"] * METHODS[method][1]), int(seed)).name, part)] = seconds
    return out


def epochs_done(last: Path) -> float | None:
    """The epochs a run's last checkpoint holds (its step over the steps per epoch, to 0.1), where a training
    resumes; None without a checkpoint, 0 for one that cannot be read (written over right now, or damaged: the
    training itself says which when it resumes). Read cheaply (memory-mapped, not verified): a plan only."""
    if not last.is_file():
        return None
    state = peek_state(last)
    try:
        return round(state["step"] / state["steps_per_epoch"], 1)
    except (KeyError, TypeError, ZeroDivisionError):
        return 0.0


def plan(out: Path, todo: list[Job], n_jobs: int = 1) -> list[str]:
    """The runs left, in order, each with its estimated time (from <out>/durations.csv; for a method not measured
    there yet, from reproduce.py's quick runs, marked *) and the running total; a training that resumes counts
    only the epochs its last checkpoint has not done ("at 5/32"); with ``n_jobs`` runs at a time, the total divided
    among them."""
    durations = with_record_seconds(out, read_durations(out / "durations.csv"))
    fallback = reproduce_durations(REPRODUCE_DURATIONS)
    left = [j for j in todo if not recorded(out, j.name, j.preset, j.overrides())]
    lines = [f"{len(left)} of {len(todo)} runs left (estimates from {out / 'durations.csv'} and the records' "
             "cost.json: each method's median seconds per training epoch (a record's CPU seconds per thread) and per "
             "evaluation (wall); * from reproduce.py's quick runs of the same setting at 2 threads):"]
    total, unknown = 0.0, 0
    for j in left:
        tr, ev = estimate(j, durations)
        mark = " "
        if tr is None or ev is None:
            (tr, ev), mark = estimate(j, fallback), "*"
        done = epochs_done(out / "runs" / j.name / "checkpoints" / "last.pt")
        state = "new" if done is None else f"at {done:g}/{j.epochs}"
        if tr is not None and done is not None:
            tr *= max(0.0, 1.0 - done / j.epochs)  # a resumed training runs only the epochs left
        if tr is None or ev is None:
            unknown += 1
            est = "?"
        else:
            total += tr + ev
            est = f"{(tr + ev) / 60:.0f} min{mark}"
        lines.append(f"  {j.name:24s} {state:10s} {est:>8s}   total {total / 3600:5.1f} h")
    if unknown:
        lines.append(f"  ({unknown} runs without a measured duration for their method are not in the total)")
    if n_jobs > 1:
        lines.append(f"  with {n_jobs} runs at a time: about {total / n_jobs / 3600:.1f} h")
    return lines


def run_jobs(todo: list[Job], work, n_jobs: int) -> None:
    """``work(job)`` for every job in order, ``n_jobs`` at a time. After a failure no further job starts; the
    ones running finish (a training stopped halfway resumes in the next call anyway), then the failure is raised."""
    if n_jobs <= 1:
        for j in todo:
            work(j)
        return
    failed = threading.Event()

    def guarded(j: Job) -> None:
        if failed.is_set():
            return
        try:
            work(j)
        except BaseException:
            failed.set()
            raise

    with ThreadPoolExecutor(n_jobs) as pool:
        futures = [pool.submit(guarded, j) for j in todo]
        try:
            for f in futures:
                f.result()
        except BaseException:
            for f in futures:
                f.cancel()
            raise


# ---------------------------------------------------------------------------------------------------
# Main
# ---------------------------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--seeds", default=",".join(map(str, SEEDS)), help="comma-separated seeds (default 0,1,2,3,4)")
    p.add_argument("--only", help=f"comma-separated methods (default all: {','.join(POINTS)})")
    p.add_argument("--threads", type=int, default=1,
                   help="threads per training and evaluation (default 1: runs in the background beside other work)")
    p.add_argument("--jobs", type=int, default=1,
                   help="runs at a time (default 1; 2 on a 2-core machine left to the suite, with --threads 1)")
    p.add_argument("--out", default=str(OUT), help=f"output folder (default {OUT})")
    p.add_argument("--plan", action="store_true", help="print the runs left, in order, with estimated times; run "
                                                       "nothing")
    p.add_argument("--train-only", action="store_true", help="train (or resume) the runs left; evaluate none")
    p.add_argument("--report-only", action="store_true", help="write curves.md/.csv/.png from the records only")
    p.add_argument("--sync-results", action="store_true",
                   help="after the report, copy its per-method table and claims rows into benchmarks/RESULTS.md "
                        "(section 3's table and the claims table's section-3 rows; the prose stays as written)")
    args = p.parse_args(argv)
    methods = args.only.split(",") if args.only else list(POINTS)
    bad = [m for m in methods if m not in POINTS]
    if bad:
        sys.exit(f"--only: unknown method '{bad[0]}'; valid: {', '.join(POINTS)}")
    try:
        seeds = [int(s) for s in args.seeds.split(",")]
    except ValueError:
        sys.exit(f"--seeds: '{args.seeds}' is not valid; expected comma-separated integers, e.g. 0,1,2")
    if args.jobs < 1:
        sys.exit(f"--jobs: {args.jobs} is not valid; expected an integer >= 1")
    out = Path(args.out)
    todo = jobs(seeds, methods)
    if args.plan:
        print("\n".join(plan(out, todo, args.jobs)))
        return
    if not args.report_only:
        out.mkdir(parents=True, exist_ok=True)
        os.environ.setdefault("OMP_NUM_THREADS", str(args.threads))
        log = out / "log.txt"
        started = time.time()
        left = []
        for j in todo:
            if recorded(out, j.name, j.preset, j.overrides()):
                print(f"  {j.name}: recorded", flush=True)
            else:
                left.append(j)

        def work(j: Job) -> None:
            tag = j.name if args.jobs > 1 else ""  # runs that share the log at the same time: each line names its run
            run = train_run(j.name, j.preset, j.overrides(), out, log, args.threads, tag=tag)
            if not args.train_only:
                eval_and_record(run, out, j.name, log, args.threads, tag=tag)

        run_jobs(left, work, args.jobs)
        print(f"runs done in {(time.time() - started) / 60:.1f} min", flush=True)
        if args.train_only:
            return
    from curves_report import sync_results, write_report

    write_report(out, {m: POINTS[m][1] for m in methods}, seeds)
    print(f"report in {out / 'curves.md'}", flush=True)
    if args.sync_results:
        RESULTS.write_text(sync_results(RESULTS.read_text(), (out / "curves.md").read_text()))
        print(f"{RESULTS}: section 3's table and claims rows copied from the report; its prose is yours", flush=True)


if __name__ == "__main__":
    main()
