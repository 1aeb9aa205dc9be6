"""Fault injection: kill -9 at random points, damaged checkpoints, exports and metrics, killed torchrun workers.
Prints, per fault, how many were injected, survived (resumed bit for bit, or refused with a one-line error) and how
many lost data or passed silently. tests/test_faults.py asserts one instance of each; this repeats them.

    python benchmarks/faults.py                   # every fault, 8 times each (~10 min on 2 cores)
    python benchmarks/faults.py --repeats 3 --only kill9,checkpoint

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
FAULTS = ("kill9", "checkpoint", "metrics", "export", "torchrun")


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
        print(f"{'fault':12s} {'injected':>8s} {'survived':>8s} {'data lost or silent':>20s}")
        for name in names:
            fn = globals()[f"fault_{name}"]
            survived = lost = 0
            shared = root / f"{name}-shared"
            for i in range(args.repeats):
                work = root / f"{name}-{i}"
                work.mkdir()
                if name == "export":
                    work = shared
                    work.mkdir(exist_ok=True)
                ok, gone = fn(ref, work, rng)
                survived += ok
                lost += gone
            print(f"{name:12s} {args.repeats:8d} {survived:8d} {lost:20d}", flush=True)


if __name__ == "__main__":
    main()
