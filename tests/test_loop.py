"""The parts the training loop stands on (run/): the cadence of logs, validations and checkpoints, the state a
checkpoint carries, the run's file names. The loop itself is exercised by test_train.py / test_faults.py."""

from __future__ import annotations

from pathlib import Path

from onceforall.run.cadence import Cadence, Due
from onceforall.run.config import load_config
from onceforall.run.rundir import RunDir
from onceforall.run.state import TrainState


def test_cadence_epoch_ends_steps_between_and_the_last_step():
    c = Cadence(steps_per_epoch=4, total=12, log_every=5, eval_every=2, checkpoint_every=1, eval_every_steps=3,
                checkpoint_every_steps=2, keep_checkpoints=True)
    due = {t: c.after(t) for t in range(1, 13)}
    assert due[4] == Due(evaluate=False, checkpoint=True, keep_epoch=1)  # epoch 1: no eval (every 2 epochs)
    assert due[8] == Due(evaluate=True, checkpoint=True, keep_epoch=2)
    assert due[12] == Due(evaluate=True, final=True, checkpoint=True, keep_epoch=3)
    # between epoch ends the step-level cadences, never an epoch checkpoint; at an epoch end they do not apply
    assert due[3] == due[9] == Due(evaluate=True) and due[2] == due[10] == Due(checkpoint=True)
    assert due[6] == Due(evaluate=True, checkpoint=True)
    assert due[1] == due[5] == due[7] == due[11] == Due()
    assert [t for t in range(1, 13) if c.log(t)] == [5, 10, 12] and [c.epoch_end(t) for t in (3, 4)] == [False, True]
    rare = Cadence(4, 12, 1, 0, 2, 0, 0, False)  # eval_every 0: only the final one; checkpoints every 2 epochs
    assert [rare.after(t) for t in (4, 8, 12)] == [Due(), Due(checkpoint=True), Due(True, True, True)]


def test_cadence_reads_the_train_section():
    t = load_config("fashion-mnist-quick", ["train.log_every=7", "train.eval_every_steps=5"]).train
    c = Cadence.of(t, steps_per_epoch=10, total=30)
    assert (c.log_every, c.eval_every, c.checkpoint_every, c.eval_every_steps, c.checkpoint_every_steps,
            c.keep_checkpoints) == (7, t.eval_every, t.checkpoint_every, 5, t.checkpoint_every_steps,
                                    t.keep_checkpoints)


def test_train_state_counters_round_trip_and_old_checkpoints():
    s = TrainState(steps_per_epoch=8, step=5, train_seconds=1.5, eval_seconds=0.25, train_macs=10, teacher_macs=4,
                   eval_macs=2)
    sum(range(200_000))  # some CPU time of this process
    saved = s.counters()
    assert list(saved) == ["step", "train_seconds", "eval_seconds", "steps_per_epoch", "train_macs",
                           "teacher_macs", "eval_macs", "cpu_seconds"]  # new counters go last
    assert saved["cpu_seconds"] > 0  # this process's CPU seconds since the state was made
    back = TrainState.from_counters(saved, None)
    assert back.cpu_seconds == saved["cpu_seconds"]
    assert back == TrainState(**{**vars(s), "cpu_seconds": back.cpu_seconds})
    assert back.cpu_now() >= saved["cpu_seconds"]  # a resumed run counts on from the checkpoint's total
    old = {k: v for k, v in saved.items() if not k.endswith("_macs") and k != "cpu_seconds"}  # older checkpoints
    back = TrainState.from_counters(old, None)
    assert (back.train_macs, back.teacher_macs, back.eval_macs, back.cpu_seconds) == (None, None, None, None)
    assert back.cpu_now() is None  # an unknown total stays unknown
    back.add_eval_macs(None, None, 10)  # an unknown total stays unknown (nothing is measured)
    assert back.eval_macs is None


def test_run_names_of_the_training_commands(tmp_path):
    run = RunDir(tmp_path / "r")
    assert run.epoch_checkpoint(3) == tmp_path / "r" / "checkpoints" / "epoch-003.pt"
    assert RunDir.job_file(tmp_path, "agent-12/x y") == tmp_path / ".jobs" / "agent-12_x_y.run"
    files = run.gradient_files()
    assert files.folder == run.gradients_dir and files.summary == run.gradients_dir / "summary.json"
    assert run.gradient_files(tmp_path / "g").layers_csv == Path(tmp_path / "g" / "layers.csv")
