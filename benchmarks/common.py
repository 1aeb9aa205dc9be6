"""Helpers shared by the benchmark scripts: the benchmark setting, the train/eval/record machinery of the suites
(reproduce.py, curves.py) and the over-seed statistics with the one verdict rule every claim uses."""

from __future__ import annotations

import argparse
import json
import math
import os
import resource
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

from onceforall.measure.evaluator import PROTOCOL
from onceforall.run.config import load_config
from onceforall.run.rundir import RunDir, read_metrics
from onceforall.run.state import resume_differences

# The benchmark setting with a capacity signal (capacity.py, reproduce.py's default): the fashion-mnist presets
# with elastic resolution {10, 15, 20}, images stored at 20 px and resized by the network.
FMNIST20_R10 = ["data.image_size=20", "model.resolutions=[10,15,20]"]
# reproduce.py's --quick size
QUICK = {"epochs": 4, "train_subset": 10000}
QUICK_OVERRIDES = [f"data.train_subset={QUICK['train_subset']}", f"train.epochs={QUICK['epochs']}"]

REPO = Path(__file__).resolve().parents[1]


def peak_rss_mib() -> float:
    """Peak resident memory of this process image (VmHWM; unlike ru_maxrss it is not inherited across exec)."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def preset_parser(doc: str, steps: int, steps_help: str, threads: int) -> argparse.ArgumentParser:
    """The arguments of the step benchmarks: --config (a preset), --steps, --threads and config overrides."""
    p = argparse.ArgumentParser(description=doc, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config", default="fashion-mnist-quick")
    p.add_argument("--steps", type=int, default=steps, help=steps_help)
    p.add_argument("--threads", type=int, default=threads)
    p.add_argument("overrides", nargs="*", help="config overrides, e.g. model.width_mult=0.5")
    return p


def run_child(script: str, args: list[str]) -> dict:
    """Run ``script`` with ``args`` in a fresh interpreter; it prints one JSON object as its last line."""
    out = subprocess.run([sys.executable, script, *args], check=True, capture_output=True, text=True).stdout
    return json.loads(out.strip().splitlines()[-1])


# ---------------------------------------------------------------------------------------------------
# Train, evaluate, record (a suite resumable across sessions from committed records)
# ---------------------------------------------------------------------------------------------------


def strip_paths(text: str) -> str:
    """``text`` without this machine's absolute paths: the repository root and the working directory become
    relative, the interpreter becomes ``python`` (committed records and logs name no machine's folders)."""
    text = text.replace(sys.executable, "python")
    for root in dict.fromkeys([str(REPO), os.getcwd(), str(Path.cwd().resolve())]):
        text = text.replace(root + "/", "").replace(root, ".")
    return text


def sh(cmd: list[str], log: Path, tag: str = "") -> None:
    """Run a onceforall command, appending its output to ``log`` line by line without machine paths (each line
    prefixed with ``[tag] `` when given: runs that share a log at the same time); stop the benchmark if it fails."""
    prefix = f"[{tag}] " if tag else ""
    with log.open("a") as f:
        f.write(f"\n{prefix}$ {strip_paths(' '.join(cmd))}\n")
        f.flush()
        with subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True) as proc:
            for line in proc.stdout:
                f.write(prefix + strip_paths(line))
                f.flush()
        code = proc.returncode
    if code != 0:
        sys.exit(f"failed ({code}): {' '.join(cmd)}; see {log}")


def finished(run: Path) -> bool:
    return any(r["event"] == "end" for r in read_metrics(run)) and (run / "cost.json").exists()


# What a record keeps of a run directory: everything `onceforall compare` reads, and the eval report.
RECORD_FILES = ("config.yaml", "metrics.jsonl", "cost.json", "eval/pareto.json", "eval/curve_correct.json",
                "eval/pareto.csv", "eval/report.md")
# Text files of a record whose absolute paths are made relative (curve_correct.json holds only arrays).
_TEXT = {"config.yaml", "metrics.jsonl", "cost.json", "eval/pareto.json", "eval/pareto.csv", "eval/report.md"}


def record(out: Path, name: str) -> Path:
    return out / "records" / name


def result_protocol(result: dict) -> str:
    """The measurement protocol of an evaluation result (a ``pareto.json``'s eval_set; "e2" for one written before
    eval_set named it)."""
    return result["eval_set"].get("protocol", "e2")


def eval_protocol(run: Path) -> str | None:
    """The measurement protocol of the evaluation in a run or record (:func:`result_protocol` of its
    ``eval/pareto.json``); None when it has none."""
    path = run / "eval" / "pareto.json"
    return result_protocol(json.loads(path.read_text())) if path.is_file() else None


def recorded(out: Path, name: str, preset: str | None = None, overrides: list[str] | None = None) -> bool:
    """Whether run ``name`` has a complete record (trained and evaluated under this package's evaluation protocol):
    it is neither trained nor evaluated again. Given the job's ``preset`` and ``overrides``, a record written with
    other training settings (older defaults, say) stops the suite with a one-line error instead of standing in for
    this job."""
    rec = record(out, name)
    if eval_protocol(rec) != PROTOCOL:  # none, or measured under another protocol: not comparable, done again
        return False
    if preset is not None:
        check_settings(rec, preset, overrides or [])
    return True


def check_settings(run: Path, preset: str, overrides: list[str]) -> None:
    """SystemExit naming the first training setting in which the run or record at ``run`` (its config.yaml, an old
    run's missing fields read as it trained) differs from what ``preset`` with ``overrides`` builds now; the
    settings that may differ on resume (threads, cadences, names) are not compared."""
    saved = RunDir(run).read_config()
    diffs = resume_differences(saved, load_config(preset, overrides))
    if diffs:
        key, was, now = diffs[0]
        more = f" (and {len(diffs) - 1} more)" if len(diffs) > 1 else ""
        raise SystemExit(f"{run}: was trained with {key}={was}, this job trains with {key}={now}{more}; move it "
                         f"away (git keeps committed records) or write to another --out")


def keep_record(run: Path, rec: Path) -> None:
    """Copy what compare needs of a trained and evaluated run into its record (written whole, then renamed), with
    this machine's absolute paths made relative."""
    tmp = rec.with_name(rec.name + ".partial")
    shutil.rmtree(tmp, ignore_errors=True)
    for f in RECORD_FILES:
        if (run / f).is_file():
            (tmp / f).parent.mkdir(parents=True, exist_ok=True)
            if f in _TEXT:
                (tmp / f).write_text(strip_paths((run / f).read_text()))
            else:
                shutil.copy2(run / f, tmp / f)
    shutil.rmtree(rec, ignore_errors=True)
    tmp.rename(rec)


def timed(out: Path, name: str, part: str, seconds: float) -> None:
    """Append how long a part took (this call; a resumed part adds a row) to <out>/durations.csv."""
    path = out / "durations.csv"
    new = not path.exists()
    with path.open("a") as f:
        if new:
            f.write("run,part,seconds,finished_at\n")
        f.write(f"{name},{part},{seconds:.0f},{time.strftime('%Y-%m-%dT%H:%M:%S')}\n")


def train_run(name: str, preset: str, overrides: list[str], out: Path, log: Path, threads: int,
              tag: str = "") -> Path:
    """Train run ``name`` into <out>/runs/<name>, or resume it from its last checkpoint, or skip it if finished
    (``tag``: :func:`sh`'s)."""
    run = out / "runs" / name
    ofa = [sys.executable, "-m", "onceforall"]
    tic = time.time()
    if finished(run):
        check_settings(run, preset, overrides)
        print(f"  {name}: done", flush=True)
        return run
    if (run / "checkpoints" / "last.pt").exists():
        check_settings(run, preset, overrides)
        print(f"  {name}: resuming", flush=True)
        sh([*ofa, "train", "--resume", str(run), "train.progress=off"], log, tag)
    else:
        print(f"  {name}: training ({preset} {' '.join(overrides)})", flush=True)
        sh([*ofa, "train", "--config", preset, "--name", name, "--out-dir", str(out / "runs"), *overrides,
            f"train.threads={threads}", "train.progress=off", "train.checkpoint_every_steps=100",
            "train.keep_checkpoints=true"], log, tag)
    timed(out, name, "train", time.time() - tic)
    return run


def eval_and_record(run: Path, out: Path, name: str, log: Path, threads: int, tag: str = "") -> None:
    """``onceforall eval`` (default settings, cached) unless done under this protocol, then the run's record
    (``tag``: :func:`sh`'s)."""
    if eval_protocol(run) != PROTOCOL:
        print(f"  {name}: evaluating", flush=True)
        tic = time.time()
        sh([sys.executable, "-m", "onceforall", "eval", str(run), "--quiet", "--threads", str(threads)], log, tag)
        timed(out, name, "eval", time.time() - tic)
    keep_record(run, record(out, name))


# ---------------------------------------------------------------------------------------------------
# Over-seed statistics and the one verdict rule
# ---------------------------------------------------------------------------------------------------

# two-sided 95 % quantiles of Student's t by degrees of freedom (seeds - 1)
T95 = {1: 12.706, 2: 4.303, 3: 3.182, 4: 2.776, 5: 2.571, 6: 2.447, 7: 2.365, 8: 2.306, 9: 2.262, 10: 2.228,
       11: 2.201, 12: 2.179, 13: 2.160, 14: 2.145, 15: 2.131, 16: 2.120, 17: 2.110, 18: 2.101, 19: 2.093, 20: 2.086,
       25: 2.060, 30: 2.042}


def t95(df: int) -> float:
    """The two-sided 95 % t quantile; between or beyond the table's entries the next smaller df's (wider than
    the true one: conservative)."""
    return T95[max(k for k in T95 if k <= df)]


def t_interval(vals: list[float]) -> tuple[float, float | None, float | None]:
    """(mean, low, high) of the 95 % t-interval over seeds; (value, None, None) with one seed (no interval)."""
    if not vals:
        raise ValueError("t_interval: no values")
    m = statistics.fmean(vals)
    if len(vals) < 2:
        return m, None, None
    half = t95(len(vals) - 1) * statistics.stdev(vals) / math.sqrt(len(vals))
    return m, m - half, m + half


VERDICT_RULE = ("A claim **holds** when its over-seed 95 % interval excludes the null (0 for a difference, 1 for "
                "a ratio) in the claimed direction, is **contradicted** when it excludes it in the other direction, "
                "and is **not shown** otherwise (a tie is never \"does not hold\"); with one seed a claim is at "
                "most **suggestive** (its value, or its own interval over test images where there is one, on the "
                "claimed side), never \"holds\".")


def verdict(lo: float | None, hi: float | None, seeds: int, claim: str = ">", null: float = 0.0) -> str:
    """The one verdict rule (:data:`VERDICT_RULE`) for an interval [lo, hi] of a quantity measured on ``seeds``
    seeds, claimed to be above (``claim`` '>') or below ('<') ``null``. With one seed, lo and hi are its own
    interval (or its value twice)."""
    if claim not in (">", "<"):
        raise ValueError(f"verdict: claim '{claim}' is not valid; valid: >, <")
    if seeds < 1 or lo is None or hi is None:
        return "not shown"
    above, below = lo > null, hi < null
    claimed, other = (above, below) if claim == ">" else (below, above)
    if seeds == 1:
        return "suggestive" if claimed else "not shown"
    return "holds" if claimed else "contradicted" if other else "not shown"


def seed_verdict(vals: list[float], claim: str = ">", null: float = 0.0,
                 single: tuple[float, float] | None = None) -> str:
    """:func:`verdict` of per-seed values through their t-interval over seeds; one seed uses ``single`` (its own
    interval) when given, else its value."""
    if not vals:
        return "not shown"
    if len(vals) == 1:
        lo, hi = single if single is not None else (vals[0], vals[0])
        return verdict(lo, hi, 1, claim, null)
    _, lo, hi = t_interval(vals)
    return verdict(lo, hi, len(vals), claim, null)
