"""End-to-end training on real Fashion-MNIST at toy size: resume, kill -9, torchrun, errors, metrics."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from onceforall.core.registry import get_space
from onceforall.core.supernet import build_supernet
from onceforall.run.checkpoint import load_checkpoint
from onceforall.run.config import load_config
from onceforall.run.rundir import RunDir, read_metrics
from onceforall.workflows.train import train

from .helpers import TINY, needs_fashion

pytestmark = needs_fashion

def _cfg(*extra):
    return load_config("fashion-mnist-quick", TINY + list(extra))


def _rows(run_dir, event=None):
    return [r for r in read_metrics(run_dir) if event is None or r["event"] == event]


def _assert_same_state(a, b, exact=True):
    ca, cb = load_checkpoint(a), load_checkpoint(b)
    for key in ca["model"]:
        if exact:
            assert torch.equal(ca["model"][key], cb["model"][key]), key
        else:
            assert torch.allclose(ca["model"][key].float(), cb["model"][key].float(), rtol=1e-4, atol=1e-5), key
    if exact:
        for sa, sb in zip(ca["optimizer"]["state"].values(), cb["optimizer"]["state"].values()):
            assert torch.equal(sa["momentum_buffer"], sb["momentum_buffer"])
    return ca, cb


def _run_cli(args, **kw):
    return subprocess.run([sys.executable, "-m", "onceforall", *args], capture_output=True, text=True, **kw)


def test_run_directory_metrics_eps_and_cost(tmp_path):
    summary = train(_cfg(), tmp_path / "run")
    run = tmp_path / "run"
    assert {"config.yaml", "metrics.jsonl", "cost.json", "checkpoints"} <= {p.name for p in run.iterdir()}
    steps = _rows(run, "step")
    assert [r["step"] for r in steps] == list(range(1, 17))
    # FM-Warmup for the first epoch (steps 1..8 logged after steps 0..7), shrinking from epoch 1 = step 8
    assert all(r["phase"] == "fm-warmup" and r["eps"] == 0.0 and len(r["archs"]) == 1 for r in steps[:8])
    phases = _rows(run, "phase")
    assert [(r["phase"], r["step"]) for r in phases] == [("fm-warmup", 0), ("shrinking", 8)]
    # ε of the step logged as row t (= step t-1), the official adjust_beta_value over a 4-step ramp (0.5 epoch):
    # (i + 1) / 4 · η(step 12) / η(step t-1) with i = t - 1 - 8, then 1
    lr = {r["step"] - 1: r["lr"] for r in steps}
    for r in steps[8:]:
        i = r["step"] - 1 - 8
        assert r["eps"] == pytest.approx((i + 1) / 4 * lr[12] / lr[r["step"] - 1] if i < 4 else 1.0)
        assert len(r["archs"]) == 4 and {"loss_full", "loss_min", "loss_random1", "loss_random2"} <= set(r)
    evals = _rows(run, "eval")
    assert [e["epoch"] for e in evals] == [1.0, 2.0]
    assert all(0 <= e["acc_full"] <= 100 and e["macs_full"] > e["macs_min"] for e in evals)
    cost = json.loads((run / "cost.json").read_text())
    assert cost["epochs"] == 2 and cost["devices"] == 1
    assert cost["device_hours"] == pytest.approx(cost["wall_seconds"] / 3600, rel=1e-3)
    assert cost["dollars"] == pytest.approx(cost["device_hours"] * 2.13, rel=1e-3)
    assert cost["cpu_seconds"] > 0  # the process's CPU seconds: the wall's cross-check that pauses do not inflate
    assert cost["threads"] == torch.get_num_threads() and cost["device"].endswith(f", {cost['threads']} threads")
    assert summary["acc_full"] == evals[-1]["acc_full"]
    ck = load_checkpoint(run / "checkpoints" / "last.pt")
    assert ck["state"]["step"] == 16 and ck["space"]["in_channels"] == 1
    # training MACs: every logged step's archs x 32 images x 3 (forward + backward); in-place KD adds nothing
    assert cost["train_macs"] == _expected_macs(_cfg(), steps)[0] and cost["teacher_macs"] == 0
    assert ck["state"]["train_macs"] == cost["train_macs"]
    # validation apart: full + min, each on 64 BN images + the evaluated images
    assert cost["eval_macs"] == sum((e["macs_full"] + e["macs_min"]) * (64 + e["images"]) for e in evals)


def _expected_macs(cfg, steps, batch=32):
    """(train_macs, teacher_macs) recomputed from the step rows' archs (log_every=1) and the space's analytic MACs:
    each pass x images x 3; a frozen teacher (the full model, in every phase with subnets) x images x 1."""
    from onceforall.run.setup import build_space

    space = build_space(cfg).with_io(num_classes=10, in_channels=1)
    passes = sum(space.macs(space.parse(a)) for r in steps for a in r["archs"]) * batch * 3
    phased = cfg.strategy.name in ("ofa-ps", "compofa")  # their phases after "full" train subnets with KD
    teacher = sum(space.macs(space.max()) * batch for r in steps if phased and r["phase"] != "full")
    return passes + teacher, teacher


def test_resume_is_bitwise_identical(tmp_path):
    train(_cfg(), tmp_path / "straight")
    stopped = train(_cfg("train.stop_after_steps=11"), tmp_path / "split")  # mid-epoch, after shrinking began
    assert stopped["stopped"] and stopped["step"] == 11
    assert load_checkpoint(tmp_path / "split" / "checkpoints" / "last.pt")["state"]["step"] == 11
    train(_cfg(), tmp_path / "split", resume=True)
    ckpt = Path("checkpoints") / "last.pt"
    _assert_same_state(tmp_path / "straight" / ckpt, tmp_path / "split" / ckpt)
    strip = lambda rows: [{k: v for k, v in r.items() if k not in ("img_per_s", "data_wait", "seconds")} for r in rows]  # noqa: E731
    assert strip(_rows(tmp_path / "straight", "step")) == strip(_rows(tmp_path / "split", "step"))
    assert strip(_rows(tmp_path / "straight", "eval")) == strip(_rows(tmp_path / "split", "eval"))
    # the MACs count survives the stop (kept in the checkpoint's state) exactly
    cost = lambda run: json.loads((tmp_path / run / "cost.json").read_text())  # noqa: E731
    assert cost("split")["train_macs"] == cost("straight")["train_macs"] == _expected_macs(
        _cfg(), _rows(tmp_path / "straight", "step"))[0]
    assert cost("split")["eval_macs"] == cost("straight")["eval_macs"] > 0
    # the CPU seconds count on from the stopped run's checkpoint (each process adds its own)
    assert cost("split")["cpu_seconds"] > stopped["cost"]["cpu_seconds"] > 0


def test_validation_every_n_steps_does_not_change_training(tmp_path):
    train(_cfg(), tmp_path / "plain")
    train(_cfg("train.eval_every_steps=3"), tmp_path / "fine")
    _assert_same_state(tmp_path / "plain" / "checkpoints" / "last.pt", tmp_path / "fine" / "checkpoints" / "last.pt")
    # every 3 steps, plus the end of each epoch (step 8) and the final evaluation (step 16)
    assert [e["step"] for e in _rows(tmp_path / "fine", "eval")] == [3, 6, 8, 9, 12, 15, 16]


def test_sigkill_mid_epoch_then_resume_finishes(tmp_path):
    run = tmp_path / "killed"
    args = ["train", "--config", "fashion-mnist-quick", "--name", "killed", "--out-dir", str(tmp_path), *TINY,
            "train.checkpoint_every_steps=3"]
    proc = subprocess.Popen([sys.executable, "-m", "onceforall", *args], stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 120
    while time.time() < deadline:
        if (run / "metrics.jsonl").exists() and any(r.get("step", 0) >= 13 for r in _rows(run, "step")):
            break
        if proc.poll() is not None:
            pytest.fail(f"training ended before it could be killed: {proc.stderr.read()}")
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    step = load_checkpoint(run / "checkpoints" / "last.pt")["state"]["step"]
    assert 0 < step < 16 and (step % 3 == 0 or step == 8)
    out = _run_cli(["train", "--resume", str(run)], timeout=300)
    assert out.returncode == 0, out.stderr
    assert "finished at epoch 2.00" in out.stdout
    train(_cfg(), tmp_path / "straight")
    _assert_same_state(tmp_path / "straight" / "checkpoints" / "last.pt", run / "checkpoints" / "last.pt")
    assert [r["step"] for r in _rows(run, "step")] == list(range(1, 17))  # rows of redone steps are not duplicated


@pytest.mark.parametrize("strategy, steps", [("full-only", 4), ("deps", 2)])
def test_torchrun_two_ranks_equal_one_process_with_the_global_batch(tmp_path, strategy, steps):
    """2 gloo ranks x 16 images == 1 process x 32 images in 2 micro-batches (BN statistics are per rank,
    i.e. per 16-image chunk, in both; dropout off, its masks come from per-rank streams).

    full-only is bitwise equal ((g0 + g1) / 2 == g0 / 2 + g1 / 2 in floats). With several passes the two
    sum the same gradients in another order; this toy network amplifies such 1e-7 differences ~100x per
    step (a 1e-8 perturbation of the weights does the same), so DεpS is compared after 2 steps at a small
    learning rate, on the relative difference of the updates."""
    common = ["train", "--config", "fashion-mnist-quick", "--out-dir", str(tmp_path), *TINY, "model.dropout=0.0",
              "train.epochs=1", f"strategy.name={strategy}", "strategy.shrink_start=0.0", "optim.lr=0.002",
              f"train.stop_after_steps={steps}", "model.kernels=null"]  # the elastic-kernel space, as tuned above
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    torchrun = [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", "2", "--standalone",
                "-m", "onceforall", *common, "--name", "ddp"]
    out = subprocess.run(torchrun, capture_output=True, text=True, env=env, timeout=600)
    assert out.returncode == 0, out.stderr[-3000:]
    single = _run_cli([*common, "--name", "single", "train.micro_batches=2"], env=env, timeout=600)
    assert single.returncode == 0, single.stderr
    a = load_checkpoint(tmp_path / "ddp" / "checkpoints" / "last.pt")
    b = load_checkpoint(tmp_path / "single" / "checkpoints" / "last.pt")
    assert a["state"]["step"] == b["state"]["step"] == steps
    space = get_space("mbv3-cifar", 0.25, (16,), num_classes=10, in_channels=1)
    names = [n for n, p in build_supernet(space, dropout=0.0, seed=0).named_parameters()]
    if strategy == "full-only":
        assert all(torch.equal(a["model"][n], b["model"][n]) for n in names)
    else:
        init = build_supernet(space, dropout=0.0, seed=0).state_dict()
        da = torch.cat([(a["model"][n] - init[n]).flatten() for n in names])
        db = torch.cat([(b["model"][n] - init[n]).flatten() for n in names])
        assert db.norm() > 0.01 and (da - db).norm() < 1e-3 * db.norm()
    ddp_rows, single_rows = _rows(tmp_path / "ddp", "step"), _rows(tmp_path / "single", "step")
    assert [r["archs"] for r in ddp_rows] == [r["archs"] for r in single_rows]  # ranks also checked agreement
    assert len(ddp_rows[-1]["archs"]) == (4 if strategy == "deps" else 1)
    assert json.loads((tmp_path / "ddp" / "cost.json").read_text())["devices"] == 2
    macs = [json.loads((tmp_path / r / "cost.json").read_text())["train_macs"] for r in ("ddp", "single")]
    assert macs[0] == macs[1] > 0  # counted on the global batch, whatever the number of ranks


def test_cli_errors_are_one_line(tmp_path):
    cases = [
        (["train", "strategy.name=nas"], "strategy.name: 'nas' is not valid; valid: bignas"),
        (["train", "model.space=resnet"], "model.space: 'resnet' is not valid"),
        (["train", "--config", "nope"], "unknown preset 'nope'"),
        (["train", "data.root=/nonexistent/fm", "--out-dir", str(tmp_path)], "/nonexistent/fm"),
        (["train", "--resume", str(tmp_path / "missing")], "is not a run directory"),
    ]
    for args, message in cases:
        out = _run_cli(args, timeout=120)
        assert out.returncode == 2, (args, out.stderr)
        assert message in out.stderr, (args, out.stderr)
        assert "Traceback" not in out.stderr and out.stderr.strip().count("\n") == 0, out.stderr


def test_bad_checkpoints_are_refused(tmp_path):
    train(_cfg("train.epochs=1"), tmp_path / "a")
    # another space with the same run directory layout
    train(_cfg("train.epochs=1", "model.space=proxyless-cifar"), tmp_path / "b")
    data = (tmp_path / "b" / "checkpoints" / "last.pt").read_bytes()
    (tmp_path / "b" / "checkpoints" / "last.pt").replace(tmp_path / "a" / "checkpoints" / "last.pt")
    out = _run_cli(["train", "--resume", str(tmp_path / "a")], timeout=120)
    # refused by the config check before any data is read: the checkpoint's config names the other space
    assert out.returncode == 2 and "resume: model.space is 'mbv3-cifar' in config.yaml but 'proxyless-cifar'" in \
        out.stderr, out.stderr
    (tmp_path / "b" / "checkpoints" / "last.pt").write_bytes(data[: len(data) // 2])  # its own, truncated
    out = _run_cli(["train", "--resume", str(tmp_path / "b")], timeout=120)
    assert out.returncode == 2 and "unreadable (truncated" in out.stderr, out.stderr
    out = _run_cli(["train", "--config", "fashion-mnist-quick", "--name", "a", "--out-dir", str(tmp_path)],
                   timeout=120)
    assert out.returncode == 2 and "already holds a checkpoint; use --resume" in out.stderr


@pytest.mark.parametrize("strategy", ["ofa-ps", "compofa"])
def test_phased_strategies_log_their_phases_and_archs(tmp_path, strategy):
    from onceforall.core.strategies import get_strategy

    cfg = _cfg("train.epochs=3", f"strategy.name={strategy}")  # 24 steps
    train(cfg, tmp_path / strategy)
    rows = _rows(tmp_path / strategy, "step")
    phases = [r["phase"] for r in _rows(tmp_path / strategy, "phase")]
    expected = ["full", "kernel", "depth-1", "depth-2", "expand-1", "expand-2"] if strategy == "ofa-ps" else [
        "full", "compound-1", "compound-2"]
    assert phases == expected
    from onceforall.run.setup import build_space

    space = build_space(cfg).with_io(num_classes=10, in_channels=1)  # the preset's fixed-kernel space
    assert space == get_space("mbv3-cifar", 0.25, (16,), num_classes=10, in_channels=1).restrict(kernels=(7,))
    s = get_strategy(cfg.strategy, space, _schedule(cfg, 8), cfg.train.seed)
    for r in rows:  # the logged archs of every step belong to the restricted space of the logged phase
        i = [p.name for p in s.phases].index(r["phase"])
        for text in r["archs"]:
            assert s.spaces[i].contains(space.parse(text)), (r["phase"], text)
    ck = load_checkpoint(tmp_path / strategy / "checkpoints" / "last.pt")
    assert ck["teacher"] is not None
    # the frozen teacher's forwards (the full model, 1x per image) are counted apart and in the total
    cost = json.loads((tmp_path / strategy / "cost.json").read_text())
    train_macs, teacher_macs = _expected_macs(cfg, rows)
    assert teacher_macs > 0 and (cost["train_macs"], cost["teacher_macs"]) == (train_macs, teacher_macs)
    # the run is evaluated on the space it trained: CompOFA's coupled one, OFA-PS's last phase
    from onceforall.run.rundir import load_run

    run = load_run(tmp_path / strategy)
    assert run.space == s.spaces[-1].with_io(num_classes=10, in_channels=1)
    assert (run.space.coupling is not None) == (strategy == "compofa")


def _schedule(cfg, steps_per_epoch):
    from onceforall.core.strategies import Schedule

    return Schedule(cfg.train.epochs, steps_per_epoch, cfg.optim.lr)


def test_read_metrics_rows_in_order_and_missing_log(tmp_path):
    assert read_metrics(tmp_path) == []  # nothing logged yet
    rows = [{"event": "step", "step": 1}, {"event": "eval", "epoch": 1.0, "acc_full": 50.0}, {"event": "end"}]
    (tmp_path / "metrics.jsonl").write_text("\n".join(json.dumps(r) for r in rows) + "\n\n")
    assert read_metrics(tmp_path) == rows
    assert read_metrics(str(tmp_path)) == rows


def test_init_from_copies_weights_and_reinitializes_a_new_classifier(tmp_path):
    from onceforall.run.rundir import RunError, load_initial_weights
    from onceforall.run.setup import build_net, build_space

    train(_cfg("train.stop_after_steps=3"), tmp_path / "src")
    src = load_checkpoint(tmp_path / "src" / "checkpoints" / "last.pt")["model"]
    cfg = _cfg("train.seed=5")
    net = build_net(cfg, build_space(cfg).with_io(num_classes=10, in_channels=1))
    load_initial_weights(net, tmp_path / "src")
    assert all(torch.equal(v, src[k]) for k, v in net.state_dict().items())
    other = build_net(cfg, build_space(cfg).with_io(num_classes=7, in_channels=1))
    fresh = {k: v.clone() for k, v in other.state_dict().items()}
    load_initial_weights(other, tmp_path / "src" / "checkpoints" / "last.pt")
    for k, v in other.state_dict().items():
        assert torch.equal(v, fresh[k] if k.startswith("head.classifier.") else src[k]), k
    wide = _cfg("model.width_mult=0.5")
    with pytest.raises(RunError, match=r"train.init_from: .* was trained with model.width_mult 0.25, this run "
                                       r"builds 0.5 \(space name, width_mult"):
        load_initial_weights(build_net(wide, build_space(wide).with_io(10, 1)), tmp_path / "src")
    # end to end: the new run starts from those weights with a fresh schedule, and records where they came from
    out = _run_cli(["train", "--config", "fashion-mnist-quick", "--name", "dst", "--out-dir", str(tmp_path),
                    "--init-from", str(tmp_path / "src"), *TINY, "train.stop_after_steps=1"])
    assert out.returncode == 0, out.stderr
    assert load_config(str(tmp_path / "dst" / "config.yaml")).train.init_from == str(tmp_path / "src")
    assert _rows(tmp_path / "dst", "step")[0]["lr"] == pytest.approx(_rows(tmp_path / "src", "step")[0]["lr"])
    out = _run_cli(["train", "--resume", str(tmp_path / "dst"), "--init-from", str(tmp_path / "src")])
    assert out.returncode == 2 and "drop --init-from" in out.stderr


def test_runs_written_before_the_official_defaults_resume_as_they_trained(tmp_path):
    """A config.yaml without the 2026-12-03 fields (re-organization, momentum, BN momentum) reads with the values
    the run trained with, not today's defaults; one that has them keeps them."""
    run = RunDir(tmp_path / "old")
    run.write_config(load_config("fashion-mnist-quick"))
    text = run.config_file.read_text()
    assert "reorganize_mode: ofa" in text and "bn_momentum: 0.99" in text
    assert run.read_config().strategy.reorganize_mode == "ofa"  # written today: as written
    old = "\n".join(line for line in text.splitlines()
                    if not line.strip().startswith(("reorganize_mode:", "reorganize_momentum:", "bn_momentum:")))
    run.config_file.write_text(old + "\n")
    s = run.read_config().strategy
    assert (s.reorganize_mode, s.reorganize_momentum, run.read_config().model.bn_momentum) == ("global", True, 0.1)
    assert run.read_config(["train.epochs=1"]).model.bn_momentum == 0.1


def test_a_run_resumed_from_a_checkpoint_without_macs_reports_them_unknown(tmp_path):
    """A checkpoint written before the MACs accounting: a partial count would understate the cost, so None."""
    from onceforall.run.checkpoint import save_checkpoint

    train(_cfg("train.epochs=1", "train.stop_after_steps=3"), tmp_path / "old")
    path = tmp_path / "old" / "checkpoints" / "last.pt"
    ck = load_checkpoint(path)
    assert ck["state"]["train_macs"] > 0
    for key in ("train_macs", "teacher_macs", "eval_macs"):
        del ck["state"][key]
    save_checkpoint(path, ck)
    train(_cfg("train.epochs=1"), tmp_path / "old", resume=True)
    cost = json.loads((tmp_path / "old" / "cost.json").read_text())
    assert cost["epochs"] == 1 and cost["train_macs"] is None and cost["eval_macs"] is None
