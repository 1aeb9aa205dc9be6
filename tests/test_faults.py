"""Faults: nothing lost, nothing silent. Damaged checkpoints and exports, partial metrics lines, torchrun restarts
after a killed worker, image folders with missing, empty or corrupt classes, OS errors, progress in log files.
(benchmarks/faults.py repeats the injections many times and counts.)"""

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from onceforall.run.checkpoint import (
    CheckpointError,
    content_checksum,
    load_checkpoint,
    previous_checkpoint,
    save_checkpoint,
)
from onceforall.run.config import load_config
from onceforall.run.rundir import MetricsError, RunDir, read_metrics
from onceforall.workflows.train import train

from .helpers import TINY, needs_fashion

ONE_EPOCH = [*TINY, "train.epochs=1"]


def _cfg(*extra):
    return load_config("fashion-mnist-quick", TINY + list(extra))


def _cli(args, **kw):
    kw.setdefault("timeout", 300)
    return subprocess.run([sys.executable, "-m", "onceforall", *map(str, args)], capture_output=True, text=True, **kw)


def _one_line_error(out, *needles):
    assert out.returncode == 2, (out.returncode, out.stdout[-2000:], out.stderr[-2000:])
    lines = out.stderr.strip().splitlines()  # notes (data defaults, progress) may come before the error
    err = lines[-1]
    assert "Traceback" not in out.stderr and err.startswith("onceforall ") and " error: " in err, out.stderr
    assert sum(" error: " in ln for ln in lines) == 1, out.stderr
    for n in needles:
        assert n in err, (n, err)
    return err


def _damage(path: Path, n: int = 64, seed: int = 0) -> None:
    """``n`` random bytes written over the middle of a file (what a bad disk block or a bad copy does)."""
    data = bytearray(path.read_bytes())
    mid = len(data) // 2
    data[mid: mid + n] = np.random.default_rng(seed).integers(0, 256, n, dtype=np.uint8).tobytes()
    path.write_bytes(bytes(data))


# ---------------------------------------------------------------------------------------------------------------
# Checkpoints
# ---------------------------------------------------------------------------------------------------------------


def test_checksum_is_over_contents_and_survives_a_round_trip(tmp_path):
    state = {"model": {"w": torch.randn(3, 4), "b": torch.zeros(2, dtype=torch.bfloat16)}, "state": {"step": 7},
             "rng": (torch.ones(2, dtype=torch.uint8), [1, (2, 3)]), "flag": True, "name": "x"}
    save_checkpoint(tmp_path / "a.pt", state)
    raw = torch.load(tmp_path / "a.pt", weights_only=True)
    stored = raw.pop("checksum")
    assert stored == content_checksum(raw) == content_checksum({"format": 2, **state})
    for change in (lambda s: s["model"]["w"].view(-1)[5].add_(1e-6),   # one element, barely
                   lambda s: s["state"].update(step=8),
                   lambda s: s["model"].update(w=s["model"]["w"].double()),  # same values, another dtype
                   lambda s: s["model"].update(w=s["model"]["w"].reshape(4, 3))):
        other = {"format": 2, **{k: (dict(v) if isinstance(v, dict) else v) for k, v in state.items()}}
        other["model"] = {k: v.clone() for k, v in state["model"].items()}
        change(other)
        assert content_checksum(other) != stored


@needs_fashion
def test_damaged_checkpoint_is_refused_naming_the_older_one(tmp_path):
    run = tmp_path / "run"
    train(_cfg("train.checkpoint_every_steps=5"), run)
    last = run / "checkpoints" / "last.pt"
    prev = previous_checkpoint(last)
    assert prev.name == "previous.pt" and load_checkpoint(prev)["state"]["step"] < 16
    _damage(last)
    with pytest.raises(CheckpointError) as e:
        load_checkpoint(last)
    msg = str(e.value)
    assert "\n" not in msg and str(last) in msg and str(prev) in msg
    assert "damaged" in msg or "unreadable" in msg
    for args in (["train", "--resume", run], ["eval", run, "--quiet"], ["export", run, "--arch", "max"]):
        _one_line_error(_cli(args), str(last), "previous.pt")
    prev.replace(last)  # what the message says to do
    assert load_checkpoint(last)["state"]["step"] < 16


@needs_fashion
def test_every_random_64_byte_damage_is_caught(tmp_path):
    """The issue's fault: 64 random bytes in the middle of last.pt loaded silently (one tensor became NaN)."""
    run = tmp_path / "run"
    train(load_config("fashion-mnist-quick", ONE_EPOCH), run)
    last = run / "checkpoints" / "last.pt"
    good = last.read_bytes()
    for seed in range(8):
        data = bytearray(good)
        at = np.random.default_rng(seed).integers(len(data) // 4, 3 * len(data) // 4)
        data[at: at + 64] = np.random.default_rng(100 + seed).integers(0, 256, 64, dtype=np.uint8).tobytes()
        last.write_bytes(bytes(data))
        with pytest.raises(CheckpointError):
            load_checkpoint(last)


def test_non_finite_weights_are_refused(tmp_path):
    w = torch.randn(4)
    w[2] = float("nan")
    save_checkpoint(tmp_path / "last.pt", {"model": {"blocks.0.weight": w, "ok": torch.ones(2)}})
    with pytest.raises(CheckpointError, match=r"non-finite weights \(model blocks.0.weight\)"):
        load_checkpoint(tmp_path / "last.pt")


def test_epoch_checkpoints_keep_no_previous_copy(tmp_path):
    save_checkpoint(tmp_path / "epoch-001.pt", {"x": torch.ones(1)}, keep_previous=False)
    save_checkpoint(tmp_path / "epoch-001.pt", {"x": torch.ones(1)}, keep_previous=False)
    save_checkpoint(tmp_path / "last.pt", {"x": torch.ones(1)})
    save_checkpoint(tmp_path / "last.pt", {"x": torch.zeros(1)})
    assert sorted(p.name for p in tmp_path.iterdir()) == ["epoch-001.pt", "last.pt", "previous.pt"]
    assert load_checkpoint(tmp_path / "previous.pt")["x"].item() == 1 and load_checkpoint(tmp_path / "last.pt")[
        "x"].item() == 0


# ---------------------------------------------------------------------------------------------------------------
# Metrics
# ---------------------------------------------------------------------------------------------------------------


def test_partial_last_metrics_line_is_skipped_other_bad_lines_named(tmp_path):
    f = tmp_path / "metrics.jsonl"
    f.write_text('{"event": "start", "step": 0}\n{"event": "step", "step": 1}\n{"event": "st')
    assert read_metrics(tmp_path) == [{"event": "start", "step": 0}, {"event": "step", "step": 1}]
    f.write_text('{"event": "start", "step": 0}\n{"event": "st\n{"event": "step", "step": 1}\n')
    with pytest.raises(MetricsError) as e:
        read_metrics(tmp_path)
    assert str(e.value).startswith(f"{f}: line 2 is not a JSON object") and "\n" not in str(e.value)
    f.write_text('{"event": "start"}\n[1, 2]\n')
    with pytest.raises(MetricsError, match="line 2 is not a JSON object"):
        read_metrics(tmp_path)


@needs_fashion
def test_resume_truncates_a_partial_line_and_a_finished_run_stays_finished(tmp_path):
    run = tmp_path / "run"
    train(_cfg("train.stop_after_steps=11"), run)
    with (run / "metrics.jsonl").open("a") as fh:
        fh.write('{"event": "step", "step": 12, "lo')  # what kill -9 or a full disk can leave
    out = _cli(["train", "--resume", run, "train.stop_after_steps=null"])
    assert out.returncode == 0, out.stderr
    rows = read_metrics(run)
    assert [r["step"] for r in rows if r["event"] == "step"] == list(range(1, 17))
    assert (run / "metrics.jsonl").read_text().endswith("}\n")
    assert sum(r["event"] == "end" for r in rows) == 1
    again = _cli(["train", "--resume", run])
    assert again.returncode == 0 and "already finished" in again.stderr
    assert read_metrics(run) == rows  # no second end row
    # a bad line in the middle: compare and resume name the file and the line
    text = (run / "metrics.jsonl").read_text().splitlines()
    text[3] = text[3][:10]
    (run / "metrics.jsonl").write_text("\n".join(text) + "\n")
    _one_line_error(_cli(["train", "--resume", run]), str(run / "metrics.jsonl"), "line 4")


# ---------------------------------------------------------------------------------------------------------------
# torchrun restarts
# ---------------------------------------------------------------------------------------------------------------


def _children(pid: int) -> list[int]:
    out = subprocess.run(["ps", "-o", "pid=", "--ppid", str(pid)], capture_output=True, text=True).stdout
    return [int(p) for p in out.split()]


def _torchrun_train(out_dir: Path, name: str | None) -> subprocess.Popen:
    """``torchrun --max-restarts 2`` of a tiny 2-worker training (16 steps, a checkpoint every 2)."""
    common = ["--config", "fashion-mnist-quick", *TINY, "train.checkpoint_every_steps=2", "train.threads=1"]
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", "2", "--standalone",
           "--max-restarts", "2", "-m", "onceforall", "train", *common, "--out-dir", str(out_dir)]
    return subprocess.Popen(cmd + (["--name", name] if name else []), env={**os.environ, "OMP_NUM_THREADS": "1"},
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True)


@pytest.fixture(scope="module")
def torchrun_reference(tmp_path_factory) -> Path:
    """The uninterrupted torchrun training's last checkpoint (one for both restart tests)."""
    out = tmp_path_factory.mktemp("straight")
    straight = _torchrun_train(out, "ref")
    assert straight.wait(timeout=600) == 0, straight.stdout.read()[-3000:]
    return out / "ref" / "checkpoints" / "last.pt"


@needs_fashion
@pytest.mark.parametrize("named", [True, False])
def test_torchrun_restart_after_a_killed_worker_resumes_bit_for_bit(tmp_path, named, torchrun_reference):
    """``torchrun --max-restarts 2``: one worker killed with SIGKILL after a checkpoint; the restarted workers find
    the job's run directory (named or not), resume from its checkpoint and end where an uninterrupted run ends."""
    job = _torchrun_train(tmp_path / "killed", "job" if named else None)
    deadline, killed = time.time() + 300, None
    while time.time() < deadline and killed is None:
        runs = [p for p in (tmp_path / "killed").glob("*") if (p / "checkpoints" / "last.pt").exists()]
        rows = read_metrics(runs[0]) if runs else []
        if any(r.get("step", 0) >= 9 for r in rows):
            workers = _children(job.pid)
            if len(workers) == 2:
                killed = workers[1]
                os.kill(killed, signal.SIGKILL)
        assert job.poll() is None, job.stdout.read()[-3000:]
        time.sleep(0.05)
    assert killed is not None, "the job never reached step 9"
    log = job.communicate(timeout=600)[0]
    assert job.returncode == 0, log[-3000:]
    assert "resuming" in log
    runs = [p for p in (tmp_path / "killed").iterdir() if not p.name.startswith(".")]
    assert len(runs) == 1, runs  # one run directory for the whole job, no half-finished second one
    a = load_checkpoint(torchrun_reference)
    b = load_checkpoint(runs[0] / "checkpoints" / "last.pt")
    assert a["state"]["step"] == b["state"]["step"] == 16
    assert all(torch.equal(a["model"][k], b["model"][k]) for k in a["model"])
    steps = [r["step"] for r in read_metrics(runs[0]) if r["event"] == "step"]
    assert steps == list(range(1, 17))


# ---------------------------------------------------------------------------------------------------------------
# Image folders
# ---------------------------------------------------------------------------------------------------------------


def _folder(root: Path, layout: dict[str, dict[str, int]], size=(12, 12)) -> Path:
    from PIL import Image

    rng = np.random.default_rng(0)
    for split, classes in layout.items():
        for cls, n in classes.items():
            (root / split / cls).mkdir(parents=True, exist_ok=True)
            for k in range(n):
                Image.fromarray(rng.integers(0, 256, (*size, 3), dtype=np.uint8)).save(root / split / cls / f"{k}.png")
    return root


def test_folder_classes_map_by_name_from_train(tmp_path):
    from onceforall.data import DataWarning, load_dataset

    root = _folder(tmp_path, {"train": {"digit0": 2, "digit1": 2, "digit2": 1}, "val": {"digit1": 2, "digit2": 1}})
    with pytest.warns(DataWarning, match=r"no folder for 1 of the 3 classes of train/ \(digit0\)"):
        val = load_dataset("imagefolder", str(root), "test", 12)
    assert val.classes == ["digit0", "digit1", "digit2"]
    assert [lbl for _, lbl in val.samples] == [1, 1, 2]  # val/digit1 is class 1, not 0


@pytest.mark.parametrize("case, needles", [
    ("extra-val-class", ["has classes that", "lacks: cat"]),
    ("empty-class", ["class folder", "holds no image files"]),
    ("corrupt-image", ["bad.png", "is not a readable image"]),
    ("empty-file", ["zero.jpg", "is not a readable image"]),
])
def test_folder_problems_are_refused_before_training(tmp_path, case, needles):
    from onceforall.data import DataError, load_dataset

    root = _folder(tmp_path, {"train": {"ant": 2, "bee": 2}, "val": {"ant": 1, "bee": 1}})
    split = "train"
    if case == "extra-val-class":
        _folder(tmp_path, {"val": {"cat": 1}})
        split = "test"
    elif case == "empty-class":
        (root / "train" / "cow").mkdir()
        needles = [*needles, str(root / "train" / "cow")]
    elif case == "corrupt-image":
        (root / "train" / "bee" / "bad.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"\x00" * 40)
    else:
        (root / "train" / "ant" / "zero.jpg").write_bytes(b"")
    with pytest.raises(DataError) as e:
        load_dataset("imagefolder", str(root), split, 12)
    assert "\n" not in str(e.value) and all(n in str(e.value) for n in needles), str(e.value)
    out = _cli(["train", "--config", "fashion-mnist-quick", "data.dataset=imagefolder", f"data.root={root}",
                "--out-dir", tmp_path / "runs"])
    _one_line_error(out, *needles)
    assert not any((tmp_path / "runs").glob("*/checkpoints")) if (tmp_path / "runs").exists() else True


def test_folder_run_gets_its_own_resolution_normalization_and_no_flips(tmp_path):
    from onceforall.run.setup import build_data, data_defaults

    root = _folder(tmp_path, {"train": {"a": 3, "b": 3}, "val": {"a": 1, "b": 1}}, size=(22, 26))
    cfg = load_config(None, ["data.dataset=imagefolder", f"data.root={root}", "model.width_mult=0.25",
                             "train.batch_size=2", "data.bn_images=4"])
    cfg2, notes = data_defaults(cfg)
    assert cfg2.model.resolutions == [20]  # median shorter side 22, rounded down to a multiple of 4
    assert len(cfg2.data.mean) == 3 and all(0 < s < 1 for s in cfg2.data.std)
    assert any("training at 20 px" in n for n in notes) and any("no horizontal flips" in n for n in notes)
    data = build_data(cfg2, 20)
    assert data.train.ds.mean == tuple(cfg2.data.mean) and data.test.ds.std == tuple(cfg2.data.std)
    assert data.train.augment.hflip is False
    # stats are those of the training images as evaluation loads them
    x = torch.stack([data.train.ds.load(i, 20, False) for i in range(len(data.train.ds))]).double() / 255
    assert torch.allclose(torch.tensor(cfg2.data.mean, dtype=torch.float64), x.mean((0, 2, 3)), atol=1e-6)
    # a preset's resolution far from the images is pointed out, not changed
    cfg3, notes3 = data_defaults(load_config("fashion-mnist", ["data.dataset=imagefolder", f"data.root={root}",
                                                               "model.resolutions=[64]"]))
    assert cfg3.model.resolutions == [64] and any("about 20 px" in n for n in notes3)


# ---------------------------------------------------------------------------------------------------------------
# OS errors: one line, status 2, in every command that writes
# ---------------------------------------------------------------------------------------------------------------


@needs_fashion
def test_os_errors_are_one_line_in_every_command(tmp_path):
    run = tmp_path / "run"
    train(load_config("fashion-mnist-quick", ONE_EPOCH), run)
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    bad = blocker / "out"  # a folder below a regular file: NotADirectoryError even for root
    small_eval = ["eval", run, "--quiet", "--per-bucket", "1", "--search-per-bucket", "0", "--selection-images", "64",
                  "--no-uniform"]
    cases = [
        ["train", "--config", "fashion-mnist-quick", *ONE_EPOCH, "--out-dir", bad],
        ["compare", run, "--out", bad],  # refused before reading the runs
        ["export", run, "--arch", "min", "--out", bad],
        ["latency-table", "--space", "mbv3-cifar", "--width-mult", "0.25", "--resolutions", "16", "--check", "0",
         "--out", bad / "t.json"],
    ]
    for args in cases:
        _one_line_error(_cli(args), "Not a directory", str(blocker))
    # eval and search write into the run: a file where their folder should be (refused before any work)
    (run / "search").write_text("a file where search/ should be")
    (run / "eval").write_text("a file where eval/ should be")
    for args in (["search", run, "--macs", "1e20", "--quiet"], small_eval):
        err = _one_line_error(_cli(args))
        assert "File exists" in err or "Not a directory" in err, err


# ---------------------------------------------------------------------------------------------------------------
# Progress in a log file
# ---------------------------------------------------------------------------------------------------------------


@needs_fashion
def test_progress_lines_reach_a_log_file(tmp_path):
    out = _cli(["train", "--config", "fashion-mnist-quick", *TINY, "--out-dir", tmp_path, "--name", "r",
                "train.log_every=5"])  # epoch ends (steps 8, 16) that are not log steps still get a line
    assert out.returncode == 0, out.stderr
    lines = [ln for ln in out.stderr.splitlines() if "ETA" in ln]
    # stderr is a pipe, not a terminal: one flushed line per epoch (and every 30 s), no carriage returns
    assert len(lines) >= 2 and "\r" not in out.stderr
    assert any("epoch   1.00/2" in ln for ln in lines) and any("step 16/16" in ln for ln in lines)
    quiet = _cli(["train", "--config", "fashion-mnist-quick", *TINY, "--out-dir", tmp_path, "--name", "q",
                  "train.progress=off", "train.epochs=1"])
    assert quiet.returncode == 0 and "ETA" not in quiet.stderr


def test_image_that_fails_to_decode_mid_run_stops_with_a_checkpoint(tmp_path):
    """A file whose header reads but whose pixels do not passes the up-front scan (which reads headers; measuring an
    image folder's normalization decodes its images and would catch it before training): the run saves a
    checkpoint, names the file in one line, and resumes once the file is fixed."""
    root = _folder(tmp_path / "data", {"train": {"a": 4, "b": 4}, "val": {"a": 2, "b": 2}}, size=(16, 16))
    victim = root / "train" / "b" / "3.png"
    good = victim.read_bytes()
    victim.write_bytes(good[: len(good) * 2 // 3])  # truncated pixel data, intact header
    args = ["train", "--config", "fashion-mnist-quick", "data.dataset=imagefolder", f"data.root={root}",
            "data.val_split=0", "data.train_subset=null", "data.eval_subset=null", "data.bn_images=4",
            "data.eval_batch_size=4", "train.batch_size=4", "train.epochs=2", "model.width_mult=0.25",
            "model.resolutions=[16]", "data.mean=[0.5,0.5,0.5]", "data.std=[0.25,0.25,0.25]",  # no data scan
            "--out-dir", tmp_path / "runs", "--name", "r"]
    err = _one_line_error(_cli(args), str(victim), "saved a checkpoint", "--resume")
    assert "stopped at step" in err
    run = tmp_path / "runs" / "r"
    assert (run / "checkpoints" / "last.pt").is_file()
    victim.write_bytes(good)
    out = _cli(["train", "--resume", run])
    assert out.returncode == 0, out.stderr
    assert load_checkpoint(run / "checkpoints" / "last.pt")["state"]["step"] == 4


# ---------------------------------------------------------------------------------------------------------------
# One writer per run; resume keeps the run's config
# ---------------------------------------------------------------------------------------------------------------

# a lock record as RunLock writes it, by a process that does not import torch (fast to start)
_HOLD = ("import json, os, socket, sys, time\nos.makedirs(sys.argv[1], exist_ok=True)\n"
         "st = int(open(f'/proc/{os.getpid()}/stat').read().rsplit(')', 1)[1].split()[19])\n"
         "rec = dict(pid=os.getpid(), host=socket.gethostname(), proc_start=st, started='now', what=sys.argv[2])\n"
         "open(os.path.join(sys.argv[1], '.lock'), 'x').write(json.dumps(rec))\n"
         "print('held', flush=True)\ntime.sleep(300)\n")


def _holder(folder: Path, what: str = "train") -> subprocess.Popen:
    """Another process holding ``folder``'s lock (a second writer, as seen from this one)."""
    proc = subprocess.Popen([sys.executable, "-c", _HOLD, str(folder), what], stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "held"
    return proc


def test_run_lock_names_its_holder_and_takes_over_only_dead_or_same_job_locks(tmp_path, capsys):
    import json
    import socket

    from onceforall.run.lock import RunLock, RunLockError

    holder = _holder(tmp_path)
    try:
        with pytest.raises(RunLockError, match=rf"in use by train \(pid {holder.pid} on {socket.gethostname()}, since"):
            RunLock(tmp_path, "eval").acquire()
    finally:
        holder.kill()
        holder.wait()
    with RunLock(tmp_path, "train") as lock:  # the holder died without releasing: stale, taken over with a note
        assert f"stale lock of train (pid {holder.pid}" in capsys.readouterr().err
        assert lock.note and json.loads((tmp_path / ".lock").read_text())["pid"] == os.getpid()
    assert not (tmp_path / ".lock").exists()  # released
    # a live pid whose process started at another time is a reused pid: stale too
    live = os.getppid()
    (tmp_path / ".lock").write_text(json.dumps({"pid": live, "host": socket.gethostname(), "proc_start": 1,
                                                "started": "x", "what": "train", "job": "J"}))
    assert RunLock(tmp_path, "train").acquire().note
    # the live holder itself: refused, unless this is the same torchrun job (its restart)
    from onceforall.run.lock import _proc_start
    rec = {"pid": live, "host": socket.gethostname(), "proc_start": _proc_start(live), "started": "x",
           "what": "train", "job": "J"}
    (tmp_path / ".lock").write_text(json.dumps(rec))
    with pytest.raises(RunLockError, match=f"pid {live} "):
        RunLock(tmp_path, "train", job="K").acquire()
    assert "earlier attempt" in RunLock(tmp_path, "train", job="J").acquire().note
    # another host's lock cannot be checked: refused, naming the file to delete
    (tmp_path / ".lock").write_text(json.dumps({**rec, "host": "elsewhere", "job": None}))
    with pytest.raises(RunLockError, match=f"delete {tmp_path / '.lock'}"):
        RunLock(tmp_path, "train").acquire()


@needs_fashion
def test_second_writer_refused_stale_lock_taken_over_and_resume_checks_the_whole_config(tmp_path, capsys):
    from onceforall.run.lock import RunLockError

    run = tmp_path / "r"
    holder = _holder(run)
    try:
        with pytest.raises(RunLockError, match=re.escape(f"{run} is in use by train (pid {holder.pid} on ")):
            train(_cfg("train.epochs=1"), run)
    finally:
        holder.kill()
        holder.wait()
    capsys.readouterr()
    train(_cfg("train.epochs=1", "train.stop_after_steps=3", "train.progress=off"), run)
    assert f"taking over a stale lock of train (pid {holder.pid}" in capsys.readouterr().err
    assert not (run / ".lock").exists()
    resume = lambda: train(RunDir(run).read_config(), run, resume=True)  # noqa: E731 (what --resume runs)
    holder = _holder(run)  # a second --resume while one runs: refused, nothing touched
    try:
        with pytest.raises(RunLockError, match=f"pid {holder.pid} "):
            resume()
    finally:
        holder.kill()
        holder.wait()
    # config.yaml edited between stop and resume: refused outside the resume-safe fields, naming field and values
    text = (run / "config.yaml").read_text()
    for edit, needle in (
        (("  lr: 0.2\n", "  lr: 0.05\n"), "optim.lr is 0.05 in config.yaml but 0.2 in checkpoint"),
        (("  label_smoothing: 0.1\n", "  label_smoothing: 0.0\n"),
         "optim.label_smoothing is 0.0 in config.yaml but 0.1"),
        (("  seed: 0\n", "  seed: 7\n"), "train.seed is 7 in config.yaml but 0"),
    ):
        assert edit[0] in text, edit
        (run / "config.yaml").write_text(text.replace(*edit))
        with pytest.raises(CheckpointError, match=re.escape(needle)):
            resume()
    # resume-safe edits pass; stop_after_steps holds for its invocation only: the resume runs to the end
    (run / "config.yaml").write_text(text.replace("  log_every: 1\n", "  log_every: 2\n"))
    resume()
    assert [r["step"] for r in read_metrics(run) if r["event"] in ("stopped", "end")] == [3, 8]
    assert load_checkpoint(run / "checkpoints" / "last.pt")["state"]["step"] == 8


@needs_fashion
def test_workers_of_a_dead_torchrun_agent_stop_with_a_checkpoint(tmp_path):
    """SIGKILL to the torchrun agent: its workers (orphans now) stop together at the next step with a checkpoint
    and a ``stopped`` row, and release the run's lock, instead of training on unsupervised."""
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", "2", "--standalone", "-m",
           "onceforall", "train", "--config", "fashion-mnist-quick", *TINY, "train.progress=off", "--out-dir",
           tmp_path, "--name", "r"]
    agent = subprocess.Popen(list(map(str, cmd)), env={**os.environ, "OMP_NUM_THREADS": "1"},
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    run = tmp_path / "r"
    deadline = time.time() + 300
    while not any(r.get("step", 0) >= 3 for r in read_metrics(run)):
        assert agent.poll() is None and time.time() < deadline
        time.sleep(0.05)
    workers = _children(agent.pid)
    assert len(workers) == 2 and (run / ".lock").exists()
    agent.kill()
    agent.wait()
    deadline = time.time() + 120
    while any(Path(f"/proc/{w}").exists() for w in workers):
        assert time.time() < deadline, "orphaned workers still running"
        time.sleep(0.1)
    rows = read_metrics(run)
    assert rows[-1]["event"] == "stopped" and rows[-1]["reason"] == "torchrun agent gone"
    assert 3 <= rows[-1]["step"] < 16
    assert load_checkpoint(run / "checkpoints" / "last.pt")["state"]["step"] == rows[-1]["step"]
    assert not (run / ".lock").exists()


# ---------------------------------------------------------------------------------------------------------------
# JSON files: a bad one is named; a damaged eval cache is set aside and rebuilt
# ---------------------------------------------------------------------------------------------------------------


def test_every_json_read_names_its_file(tmp_path):
    from types import SimpleNamespace

    from onceforall.core.util import JSONFileError, read_json
    from onceforall.measure.scores import read_curve_correct
    from onceforall.workflows.export import arch_from_search
    from onceforall.workflows.report import compare_runs

    f = tmp_path / "x.json"
    f.write_text('{"a": "unterminated')
    with pytest.raises(JSONFileError, match=re.escape(f"cache {f} is not valid JSON (Unterminated string")):
        read_json(f, "cache")
    f.write_text("[1, 2]")
    with pytest.raises(JSONFileError, match=re.escape(f"cache {f} holds an array, not an object")):
        read_json(f, "cache")
    f.write_bytes(b"\x80\x81 binary")
    with pytest.raises(JSONFileError, match=re.escape(f"{f} is not valid JSON")):
        read_json(f, "cache")
    run = tmp_path / "run"
    (run / "eval").mkdir(parents=True)
    (run / "cost.json").write_text('{"wall_seconds": 1')
    with pytest.raises(JSONFileError, match=re.escape(f"cost file {run / 'cost.json'} is not valid JSON")):
        RunDir(run).read_cost()
    (run / "cost.json").write_text('{"wall_seconds": 1}')
    (run / "eval" / "pareto.json").write_text('{"strategy": "deps", "smal')
    with pytest.raises(JSONFileError, match=re.escape(f"eval result {run / 'eval' / 'pareto.json'} is not valid")):
        compare_runs([run], tmp_path / "cmp")
    (run / "eval" / "pareto.json").write_text('{"strategy": "deps"}')
    with pytest.raises(JSONFileError, match="has no 'smallest'"):
        compare_runs([run], tmp_path / "cmp")
    cc = run / "eval" / "curve_correct.json"
    for text, needle in (('{"images": 5, "corr', "is not valid JSON"), ('{"images": "5", "correct": {}}', "lack"),
                         ('{"images": 5, "correct": {"a": "!!"}}', "does not unpack")):
        cc.write_text(text)
        with pytest.raises(JSONFileError, match=re.escape(str(cc)) + ".*" + needle):
            read_curve_correct(run)
    with pytest.raises(JSONFileError, match=re.escape(f"search result {f} is not valid JSON")):
        arch_from_search(SimpleNamespace(), f)
    f.write_text('{"best": null, "candidates": 3}')
    with pytest.raises(JSONFileError, match=re.escape(f"--from-search: {f} has no 'best' and no 'candidates'")):
        arch_from_search(SimpleNamespace(), f)


def test_damaged_eval_cache_is_set_aside_with_a_warning_and_rebuilt(tmp_path):
    from types import SimpleNamespace

    from onceforall.measure.evaluator import Evaluator

    eval_dir = tmp_path / "eval"
    eval_dir.mkdir()
    run = SimpleNamespace(cfg=SimpleNamespace(data=SimpleNamespace(bn_images=8)), dir=RunDir(tmp_path))
    cases = [('{"step1|test|64|bn8|r16": 81.5, "step1|te', '[]'),   # cut by a crash; a list
             ('{"k": "81.5"}', '{"k": 3}'),                         # values of the wrong type
             ('"just a string"', '{"k": "AAE="} trailing')]
    for cache, correct in cases:
        (eval_dir / "cache.json").write_text(cache)
        (eval_dir / "correct.json").write_text(correct)
        with pytest.warns(UserWarning) as got:
            ev = Evaluator(run)
        assert ev.cache == {} and ev.hits == {}
        msgs = [str(w.message) for w in got]
        assert len(msgs) == 2 and all("moved it to" in m and "measuring again" in m for m in msgs), msgs
        assert str(eval_dir / "cache.json") in msgs[0] and str(eval_dir / "correct.json") in msgs[1]
        assert not (eval_dir / "cache.json").exists() and not (eval_dir / "correct.json").exists()
    aside = sorted(p.name.split(".damaged-")[0] for p in eval_dir.glob("*.damaged-*"))
    assert aside == ["cache.json"] * 3 + ["correct.json"] * 3  # nothing deleted
    (eval_dir / "cache.json").write_text('{"k": 81.5}')  # a good cache is read as it is, silently
    assert Evaluator(run).cache == {"k": 81.5}


def test_saving_beside_a_cache_another_writer_damaged_sets_it_aside(tmp_path):
    """save() merges what another Evaluator of the run wrote meanwhile; a file it left damaged is set aside with
    the same warning as at load, not a crash that loses this evaluation's measurements."""
    from types import SimpleNamespace

    from onceforall.measure.evaluator import Evaluator

    (tmp_path / "eval").mkdir()
    run = SimpleNamespace(cfg=SimpleNamespace(data=SimpleNamespace(bn_images=8)), dir=RunDir(tmp_path))
    ev = Evaluator(run)
    ev.cache["mine"], ev.hits["mine"], ev._unsaved = 80.0, "AAE=", 1  # noqa: SLF001 (a measurement of ours)
    (tmp_path / "eval" / "cache.json").write_text('{"theirs": 70.0, "cut')  # the other writer's, cut short
    (tmp_path / "eval" / "correct.json").write_text('{"theirs": "AAE="}')
    with pytest.warns(UserWarning, match="moved it to cache.json.damaged-"):
        ev.save()
    assert json.loads((tmp_path / "eval" / "cache.json").read_text()) == {"mine": 80.0}
    assert json.loads((tmp_path / "eval" / "correct.json").read_text()) == {"mine": "AAE=", "theirs": "AAE="}
    assert len(list((tmp_path / "eval").glob("cache.json.damaged-*"))) == 1


# ---------------------------------------------------------------------------------------------------------------
# Silent or unclear cases: one line naming the field or file
# ---------------------------------------------------------------------------------------------------------------


def test_unusable_checkpoint_files_and_init_from_spaces_are_named(tmp_path):
    import onceforall as ofa
    from onceforall.run.rundir import RunError, load_initial_weights

    for name, content, needle in (("empty.pt", b"", "is empty (0 bytes)"),
                                  ("notes.pt", b"these are my notes\n", "not a torch checkpoint at all")):
        (tmp_path / name).write_bytes(content)
        with pytest.raises(CheckpointError) as e:
            load_checkpoint(tmp_path / name)
        assert needle in str(e.value) and str(tmp_path / name) in str(e.value) and "weights_only" not in str(e.value)
    small = ofa.get_space("mbv3-cifar", width_mult=0.25, resolutions=(16,), num_classes=10)
    theirs = ofa.build_supernet(ofa.get_space("mbv3-cifar", width_mult=0.5, resolutions=(16,), num_classes=10))
    save_checkpoint(tmp_path / "w05.pt", {"space": theirs.space.identity(), "model": theirs.state_dict()})
    with pytest.raises(RunError) as e:
        load_initial_weights(ofa.build_supernet(small), tmp_path / "w05.pt")
    msg = str(e.value)
    assert "trained with model.width_mult 0.5, this run builds 0.25" in msg and len(msg) < 300, msg


def test_checkpoints_of_the_same_state_are_byte_identical(tmp_path):
    """torch.save names a zip's root folder after the file it writes; given atomic_write's temporary name (a pid,
    a random suffix) the same state gave other bytes each time. Written through the open file, the root is
    'archive' and the bytes depend on the state alone (and a write that cannot start still names the file)."""
    import zipfile

    import onceforall as ofa
    from onceforall.core.util import atomic_torch_save

    net = ofa.build_supernet(ofa.get_space("mbv3-cifar", width_mult=0.25, resolutions=(16,), num_classes=10))
    state = {"space": net.space.identity(), "model": net.state_dict(), "step": 3}
    save_checkpoint(tmp_path / "a.pt", state)
    save_checkpoint(tmp_path / "b.pt", state)
    assert (tmp_path / "a.pt").read_bytes() == (tmp_path / "b.pt").read_bytes()
    assert {n.split("/")[0] for n in zipfile.ZipFile(tmp_path / "a.pt").namelist()} == {"archive"}
    assert load_checkpoint(tmp_path / "b.pt")["step"] == 3
    with pytest.raises(OSError) as e:
        atomic_torch_save(tmp_path / "no-such-folder" / "c.pt", state)
    assert e.value.filename is not None and "no-such-folder" in e.value.filename


def test_checkpoint_on_a_disk_that_fills_mid_write_names_the_file_and_keeps_the_last(tmp_path, monkeypatch):
    """torch's zip writer swallows the file's OSError and fails later with a bare RuntimeError ("unexpected pos");
    save_checkpoint must still say what happened and to which file, and lose nothing: the last checkpoint stays
    readable and no temporary is left."""
    import builtins
    import errno

    from onceforall.core import util

    save_checkpoint(tmp_path / "last.pt", {"step": 1, "w": torch.zeros(4)})
    real_open = builtins.open

    class Filling:  # a disk with 2 kB left
        def __init__(self, f):
            self.f, self.n = f, 0

        def write(self, data):
            self.n += len(data)
            if self.n > 2048:
                raise OSError(errno.ENOSPC, "No space left on device")
            return self.f.write(data)

        def __getattr__(self, name):
            return getattr(self.f, name)

        def __enter__(self):
            return self

        def __exit__(self, *exc):
            self.f.close()

    monkeypatch.setattr(util, "open", lambda *a, **k: Filling(real_open(*a, **k)), raising=False)
    with pytest.raises(OSError) as e:
        save_checkpoint(tmp_path / "last.pt", {"step": 2, "w": torch.zeros(10_000)})
    assert e.value.errno == errno.ENOSPC and e.value.filename == str(tmp_path / "last.pt")
    monkeypatch.undo()
    assert load_checkpoint(tmp_path / "last.pt")["step"] == 1
    assert sorted(p.name for p in tmp_path.iterdir()) == ["last.pt", "previous.pt"]


def test_data_root_file_subset_cap_full_disk_and_stale_temporaries(tmp_path):
    from onceforall.core.util import atomic_write, remove_stale_tmp
    from onceforall.data import DataError, load_dataset

    f = tmp_path / "fashion.tar"
    f.write_text("not a folder")
    with pytest.raises(DataError, match=re.escape(f"data.root {f} is a file, not a folder; expected")):
        load_dataset("fashion-mnist", str(f), "train", 28)
    with pytest.raises(DataError):  # the run's lock made its directory: a start that fails leaves none behind
        train(_cfg(f"data.root={f}"), tmp_path / "never")
    assert not (tmp_path / "never").exists()

    def full(tmp):
        raise OSError(28, "No space left on device")  # what write() raises: no file name

    with pytest.raises(OSError) as e:
        atomic_write(tmp_path / "cost.json", full)
    assert e.value.filename == str(tmp_path / "cost.json") and e.value.errno == 28
    assert not list(tmp_path.glob(".*.tmp"))
    # a killed writer's temporary file (dead pid in its name) goes; a live writer's stays
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    left = tmp_path / f".model.pt.p{int(dead.stdout)}.x1y2.tmp"
    live = tmp_path / f".model.pt.p{os.getpid()}.a3b4.tmp"
    left.write_text("half")
    live.write_text("half")
    assert remove_stale_tmp(tmp_path) == [left] and live.exists()


@needs_fashion
def test_train_subset_above_the_dataset_is_pointed_out():
    from onceforall.run.setup import build_data

    with pytest.warns(UserWarning, match=r"data.train_subset: 100000 is more than the 59\d\d\d training images "
                                         r"fashion-mnist has after the held-out split; using all of them"):
        build_data(load_config("fashion-mnist-quick", ["data.train_subset=100000", "data.val_split=1000"]), 16,
                   training=False)


def test_compare_says_why_a_difference_is_missing(tmp_path):
    from onceforall.workflows.report import _unpaired_reason

    a, b = tmp_path / "a", tmp_path / "b"
    for d in (a, b):
        (d / "eval").mkdir(parents=True)
    assert _unpaired_reason(b, a, "a") == "a has no eval/curve_correct.json: evaluate it again"
    (a / "eval" / "curve_correct.json").write_text("{}")
    assert _unpaired_reason(b, a, "a") == "b has no eval/curve_correct.json: evaluate it again"
    (b / "eval" / "curve_correct.json").write_text("{}")
    assert _unpaired_reason(b, a, "a") == "evaluated on other test images than a"


# ---------------------------------------------------------------------------------------------------------------
# Progress that tells the truth
# ---------------------------------------------------------------------------------------------------------------


@needs_fashion
def test_progress_line_every_step_window_without_nan_before_the_first_row(tmp_path, capsys, monkeypatch):
    import onceforall.workflows.train as train_mod  # it builds its Progress from its own namespace

    class Every(train_mod.Progress):  # a log file's 30 s, shortened to 0: one line per step
        def __init__(self, mode, enabled):
            super().__init__("auto", enabled, every_s=0.0)

    monkeypatch.setattr(train_mod, "Progress", Every)
    capsys.readouterr()
    train(_cfg("train.epochs=1", "train.log_every=100", "train.stop_after_steps=4"), tmp_path / "r")  # no row yet
    lines = [ln for ln in capsys.readouterr().err.splitlines() if "ETA" in ln]
    assert [int(re.search(r"step (\d+)/8", ln).group(1)) for ln in lines] == list(range(1, 5))
    assert all(re.search(r" loss \d+\.\d{3} .* \d+ img/s ETA", ln) for ln in lines), lines
    assert not any("nan" in ln or " 0 img/s" in ln for ln in lines), lines


def test_progress_text_counters_heartbeat_and_predictor_figures(capsys):
    from onceforall.measure.predictor import predictor_quality
    from onceforall.run.progress import Heartbeat, counter, progress_text

    assert progress_text(3, 8, 2, 16, 0.0, 0.1, {}, "?") == "epoch   0.38/2 step 3/16 eps 0 lr 0.1 ETA ?"
    # OFA-PS expand phases train no full pass: the line shows the role it has
    assert " loss_max 1.250 " in progress_text(3, 8, 2, 16, 0.0, 0.1, {"loss_max": 1.25, "img_per_s": 9.0}, "1s")
    said = []
    tick = counter(said.append, "subnets", every_s=1000)
    for i in range(1, 6):
        tick(i, 5)
    assert said == ["  subnets: 1/5", "  subnets: 5/5"]
    said.clear()
    with Heartbeat(said.append, every_s=0.2) as say:
        say("measuring 12 subnets")
        time.sleep(0.7)
    assert said[0] == "measuring 12 subnets" and len(said) >= 3
    assert all(s.startswith("  ... still at it (") and s.endswith("s): measuring 12 subnets") for s in said[1:])
    from onceforall.run.progress import Progress

    capsys.readouterr()
    with Progress("auto", True, every_s=0.2).busy("validating at step 8 (64 images)"):  # a log file: not a tty
        time.sleep(0.7)
    beats = capsys.readouterr().err.splitlines()
    assert len(beats) >= 2 and all(re.fullmatch(r"\[\d\d:\d\d:\d\d\] \.\.\. still at it \(\d+ s\): validating at "
                                                r"step 8 \(64 images\)", b) for b in beats), beats
    assert predictor_quality({"pairs": 5, "heldout_rmse": None}) == "too few pairs for a held-out error (5 measured)"
    assert predictor_quality({"pairs": 50, "heldout_rmse": 1.234, "heldout_kendall_tau": None,
                              "heldout_top10": 0.5}) == "held-out RMSE 1.23 points, top-10% hit rate 0.50"


@needs_fashion
def test_demo_stopped_in_training_says_how_to_go_on(tmp_path):
    from onceforall.workflows.demo import run_demo

    said = []
    assert run_demo(overrides=[*TINY, "train.stop_after_steps=2", "train.progress=off"], out_dir=str(tmp_path),
                    name="d", say=said.append) is None
    assert f"onceforall train --resume {tmp_path / 'd'}, then onceforall demo --run {tmp_path / 'd'}" in said[-1]
    assert "train.stop_after_steps" in said[-1]
