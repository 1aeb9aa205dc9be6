"""Fault injection: kill -9 at random points, damaged checkpoints, exports and metrics, killed torchrun workers,
two writers of one run, config.yaml edited before a resume, damaged JSON files.
Prints, per fault, how many were injected, survived (resumed bit for bit, or refused with a one-line error) and how
many lost data or passed silently. tests/test_faults.py asserts one instance of each; this repeats them.

    python benchmarks/faults.py                   # every fault, 8 times each (~10 min on 2 cores)
    python benchmarks/faults.py --repeats 3 --only kill9,checkpoint
    python benchmarks/faults.py --repeats 2 --only concurrency,config_edit,json   # issue 24's cases (~4 min)

A toy Fashion-MNIST run (256 images, 16 steps) is trained once straight as the reference; every fault is injected
into a copy and judged against it.
"""

from __future__ import annotations

import argparse
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from onceforall.run.checkpoint import CheckpointError, load_checkpoint
from onceforall.run.rundir import MetricsError, read_metrics

TINY = [
    "data.train_subset=256", "data.eval_subset=64", "data.bn_images=64", "data.eval_batch_size=64",
    "data.image_size=16", "model.width_mult=0.25", "model.resolutions=[16]", "train.batch_size=32",
    "train.epochs=2", "train.log_every=1", "train.threads=1", "strategy.eps_ramp_epochs=0.5",
    "train.checkpoint_every_steps=2", "train.progress=off",
]
ENV = {**os.environ, "OMP_NUM_THREADS": "1"}
FAULTS = ("kill9", "checkpoint", "metrics", "export", "torchrun", "concurrency", "config_edit", "json")


def cli(*args: object, check: bool = False) -> subprocess.CompletedProcess:
    out = subprocess.run([sys.executable, "-m", "onceforall", *map(str, args)], capture_output=True, text=True,
                         env=ENV, timeout=900)
    if check and out.returncode != 0:
        sys.exit(f"failed: onceforall {' '.join(map(str, args))}\n{out.stderr[-2000:]}")
    return out


def train_args(out_dir: Path, name: str) -> list[str]:
    return ["train", "--config", "fashion-mnist-quick", *TINY, "--out-dir", str(out_dir), "--name", name]


def same_weights(a: Path, b: Path) -> bool:
    ca, cb = load_checkpoint(a / "checkpoints" / "last.pt"), load_checkpoint(b / "checkpoints" / "last.pt")
    return ca["state"]["step"] == cb["state"]["step"] and all(torch.equal(ca["model"][k], cb["model"][k])
                                                             for k in ca["model"])


def steps_logged(run: Path) -> list[int]:
    return [r["step"] for r in read_metrics(run) if r["event"] == "step"]


def one_line_error(out: subprocess.CompletedProcess) -> bool:
    last = out.stderr.strip().splitlines()[-1] if out.stderr.strip() else ""
    return out.returncode == 2 and "Traceback" not in out.stderr and " error: " in last


def damage(path: Path, rng: random.Random, n: int = 64) -> None:
    data = bytearray(path.read_bytes())
    at = rng.randrange(len(data) // 8, len(data) - n)
    data[at: at + n] = np.random.default_rng(rng.randrange(1 << 30)).integers(0, 256, n, dtype=np.uint8).tobytes()
    path.write_bytes(bytes(data))


# --- the faults: each returns (survived, lost) -------------------------------------------------------------------

def fault_kill9(ref: Path, work: Path, rng: random.Random) -> tuple[bool, bool]:
    """kill -9 at a random moment, then --resume: must end bit for bit at the reference, every step logged once."""
    proc = subprocess.Popen([sys.executable, "-m", "onceforall", *train_args(work, "r")], env=ENV,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    time.sleep(rng.uniform(2.0, 12.0))
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    run = work / "r"
    # killed before the first checkpoint: start again in the same directory
    out = cli("train", "--resume", run) if (run / "checkpoints" / "last.pt").exists() else cli(*train_args(work, "r"))
    ok = out.returncode == 0 and same_weights(ref, run)
    return ok, not ok or steps_logged(run) != list(range(1, 17))


def fault_checkpoint(ref: Path, work: Path, rng: random.Random) -> tuple[bool, bool]:
    """64 random bytes in last.pt: resume, eval and export must refuse it in one line (never load it silently)."""
    run = work / "r"
    shutil.copytree(ref, run)
    damage(run / "checkpoints" / "last.pt", rng)
    try:
        load_checkpoint(run / "checkpoints" / "last.pt")
    except CheckpointError:
        refused = True
    else:
        refused = False
    cmd = rng.choice([("train", "--resume", run), ("export", run, "--arch", "min")])
    return refused and one_line_error(cli(*cmd)), not refused


def fault_metrics(ref: Path, work: Path, rng: random.Random) -> tuple[bool, bool]:
    """metrics.jsonl cut at a random byte (a crash mid-write): readers skip the partial line, resume goes on."""
    run = work / "r"
    cli(*train_args(work, "r"), "train.stop_after_steps=10", check=True)
    f = run / "metrics.jsonl"
    text = f.read_bytes()
    last_nl = text.rstrip(b"\n").rfind(b"\n")
    f.write_bytes(text[: rng.randrange(last_nl + 2, len(text) - 1)])  # a cut inside the last row
    try:
        read_metrics(run)
    except MetricsError:
        return False, True
    out = cli("train", "--resume", run, "train.stop_after_steps=null")
    ok = out.returncode == 0 and same_weights(ref, run) and steps_logged(run) == list(range(1, 17))
    return ok, not ok


def fault_export(ref: Path, work: Path, rng: random.Random) -> tuple[bool, bool]:
    """A damaged export file (safetensors or ONNX): load_subnet / verify_export must refuse it."""
    from onceforall.specialize.export import load_subnet, verify_export

    exports = work / "exports"
    if not exports.exists():
        cli("export", ref, "--arch", "min", "--onnx", "--out", exports, check=True)
    sidecar = next(exports.glob("*.json"))
    target = rng.choice(sorted(p for p in exports.iterdir() if p.suffix in (".safetensors", ".onnx")))
    backup = target.read_bytes()
    damage(target, rng)
    try:
        (load_subnet if target.suffix == ".safetensors" else verify_export)(sidecar)
    except ValueError:
        refused = True
    else:
        refused = False
    target.write_bytes(backup)
    return refused, not refused


def fault_torchrun(ref: Path, work: Path, rng: random.Random) -> tuple[bool, bool]:
    """torchrun --max-restarts 2 with one worker (or both) killed after a random step: the job resumes by itself
    and ends bit for bit at a straight torchrun run (2 ranks differ from 1 process, so the reference is its own)."""
    torchrun = [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", "2", "--standalone",
                "--max-restarts", "2", "-m", "onceforall"]
    ref2 = ref.parent / "torchrun-ref"
    if not ref2.exists():
        subprocess.run([*torchrun, *train_args(ref.parent, ref2.name)], env=ENV, capture_output=True, check=True,
                       timeout=900)
    job = subprocess.Popen([*torchrun, *train_args(work, "r")], env=ENV, stdout=subprocess.DEVNULL,
                           stderr=subprocess.DEVNULL, start_new_session=True)
    at = rng.randrange(3, 15)
    run = work / "r"
    deadline = time.time() + 600
    while time.time() < deadline and job.poll() is None:
        if run.exists() and any(s >= at for s in steps_logged(run)):
            kids = subprocess.run(["ps", "-o", "pid=", "--ppid", str(job.pid)], capture_output=True,
                                  text=True).stdout.split()
            if len(kids) == 2:
                for pid in (kids if rng.random() < 0.3 else [rng.choice(kids)]):
                    os.kill(int(pid), signal.SIGKILL)
                break
        time.sleep(0.05)
    ok = job.wait(timeout=900) == 0 and same_weights(ref2, run)
    return ok, not ok or steps_logged(run) != list(range(1, 17))


def fault_concurrency(ref: Path, work: Path, rng: random.Random) -> tuple[bool, bool]:
    """Two writers of one run at once (two `train --name r`, or two `--resume r` of a stopped run): exactly one
    runs, the other is refused in one line naming the holder; the run ends bit for bit at the reference with
    every step logged once."""
    run = work / "r"
    if rng.random() < 0.5:
        cmds = [train_args(work, "r")] * 2
    else:
        cli(*train_args(work, "r"), "train.stop_after_steps=6", check=True)
        cmds = [["train", "--resume", run]] * 2
    procs = [subprocess.Popen([sys.executable, "-m", "onceforall", *map(str, c)], env=ENV, text=True,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE) for c in cmds]
    outs = [subprocess.CompletedProcess(p.args, p.wait(timeout=900), *p.communicate()) for p in procs]
    refused = [o for o in outs if o.returncode != 0]
    ok = (len(refused) == 1 and one_line_error(refused[0]) and "is in use by train (pid" in refused[0].stderr
          and same_weights(ref, run) and steps_logged(run) == list(range(1, 17)) and not (run / ".lock").exists())
    return ok, not (same_weights(ref, run) and steps_logged(run) == list(range(1, 17)))


EDITS = (("optim.lr", "  lr: 0.2\n", "  lr: 0.05\n"), ("train.seed", "  seed: 0\n", "  seed: 3\n"),
         ("optim.label_smoothing", "  label_smoothing: 0.1\n", "  label_smoothing: 0.2\n"),
         ("optim.weight_decay", "  weight_decay: 3.0e-05\n", "  weight_decay: 0.0001\n"),
         ("strategy.eps_ramp_epochs", "  eps_ramp_epochs: 0.5\n", "  eps_ramp_epochs: 1.0\n"))


def fault_config_edit(ref: Path, work: Path, rng: random.Random) -> tuple[bool, bool]:
    """A field that changes the run edited in config.yaml between a stop and --resume: refused in one line naming
    the field and both values; with the value put back the resume ends bit for bit at the reference."""
    run = work / "r"
    cli(*train_args(work, "r"), f"train.stop_after_steps={rng.randrange(2, 15)}", check=True)
    field, old, new = rng.choice(EDITS)
    text = (run / "config.yaml").read_text()
    if old not in text:
        sys.exit(f"config_edit: {old.strip()!r} not in {run / 'config.yaml'}; update EDITS")
    (run / "config.yaml").write_text(text.replace(old, new))
    out = cli("train", "--resume", run)
    refused = one_line_error(out) and f"resume: {field} is " in out.stderr
    (run / "config.yaml").write_text(text)
    again = cli("train", "--resume", run)
    ok = refused and again.returncode == 0 and same_weights(ref, run) and steps_logged(run) == list(range(1, 17))
    return ok, not refused or not same_weights(ref, run)


def fault_json(ref: Path, work: Path, rng: random.Random) -> tuple[bool, bool]:
    """A JSON file of the run cut at a random byte or overwritten with random bytes: cost.json, eval/pareto.json,
    eval/curve_correct.json, a search result are refused in one line naming the file; a damaged eval/cache.json
    or correct.json is set aside with a warning and export goes on."""
    from onceforall.core.util import JSONFileError
    from onceforall.measure.scores import read_curve_correct
    from onceforall.run.rundir import RunDir
    from onceforall.workflows.report import compare_runs

    run = work / "r"
    shutil.copytree(ref, run)
    (run / "eval").mkdir(exist_ok=True)
    fake = {"eval/pareto.json": '{"strategy": "deps", "smallest": {"acc": 50.0, "macs": 1}, "largest": {}}',
            "eval/curve_correct.json": '{"images": 64, "fingerprint": "x", "correct": {"a": "AAAAAAAAAAA="}}',
            "eval/cache.json": '{"step16|test|64|bn64|r16_k3e3": 50.0, "step16|test|64|bn64|r16_k7e6": 60.0}',
            "eval/correct.json": '{"step16|test|64|bn64|r16_k3e3": "AAAAAAAAAAA="}',
            "search/macs-1M.json": '{"best": "", "candidates": [{"arch": "x", "measured_acc": 1.0}]}'}
    name = rng.choice(["cost.json", *fake])
    path = run / name
    path.parent.mkdir(exist_ok=True)
    if name in fake:
        path.write_text(fake[name])
    data = path.read_bytes()
    if rng.random() < 0.5:
        path.write_bytes(data[: rng.randrange(1, len(data) - 1)])  # cut short
    else:
        path.write_bytes(bytes(rng.randrange(256) for _ in range(rng.randrange(1, 64))))  # garbage
    if name.startswith("eval/c") and name != "eval/curve_correct.json":  # the eval caches: set aside, export goes on
        out = cli("export", run, "--arch", "min", "--out", work / "exports")
        aside = list(path.parent.glob(f"{path.name}.damaged-*"))
        ok = out.returncode == 0 and f"warning: eval cache {path}" in out.stderr and len(aside) == 1
        return ok, len(aside) != 1
    try:
        if name == "cost.json":
            RunDir(run).read_cost()
        elif name == "eval/pareto.json":
            compare_runs([run], work / "cmp")
        elif name == "eval/curve_correct.json":
            read_curve_correct(run)
        else:
            out = cli("export", run, "--from-search", path, "--out", work / "exports")
            return one_line_error(out) and str(path) in out.stderr.splitlines()[-1], out.returncode == 0
    except JSONFileError as e:
        return str(path) in str(e) and "\n" not in str(e), False
    except Exception:  # noqa: BLE001 - an unnamed error: not survived
        return False, False
    return False, True  # read silently


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--repeats", type=int, default=8)
    p.add_argument("--only", default=",".join(FAULTS), help=f"comma-separated, of {', '.join(FAULTS)}")
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args()
    names = args.only.split(",")
    bad = [n for n in names if n not in FAULTS]
    if bad:
        p.error(f"--only: '{bad[0]}' is not valid; valid: {', '.join(FAULTS)}")
    rng = random.Random(args.seed)
    with tempfile.TemporaryDirectory(prefix="onceforall-faults-") as tmp:
        root = Path(tmp)
        cli(*train_args(root, "ref"), check=True)
        ref = root / "ref"
        print(f"{'fault':12s} {'injected':>8s} {'survived':>8s} {'data lost or silent':>20s}   seconds")
        tried = held = 0
        for name in names:
            fn = globals()[f"fault_{name}"]
            survived = lost = 0
            shared = root / f"{name}-shared"
            tic = time.time()
            for i in range(args.repeats):
                work = root / f"{name}-{i}"
                work.mkdir()
                if name == "export":
                    work = shared
                    work.mkdir(exist_ok=True)
                ok, gone = fn(ref, work, rng)
                survived += ok
                lost += gone
            tried, held = tried + args.repeats, held + survived
            print(f"{name:12s} {args.repeats:8d} {survived:8d} {lost:20d}   {time.time() - tic:7.0f}", flush=True)
        print(f"{tried} faults tried, {held} held, {tried - held} did not")


if __name__ == "__main__":
    main()
