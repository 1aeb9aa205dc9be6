"""Train a supernet: ``onceforall train``.

    onceforall train --config fashion-mnist-quick                      # the demo preset, ~10 min on 2 cores
    onceforall train --config fashion-mnist strategy.name=bignas train.epochs=30 --name bignas-30
    onceforall train --resume runs/bignas-30                           # continue exactly where it stopped
    torchrun --nproc-per-node 2 -m onceforall train --config fashion-mnist-quick   # 2 processes (gloo on CPU)

:func:`_loop` is the whole algorithm around :func:`~onceforall.run.state.step_once`: the strategy plans step t,
the step runs the plan, the :class:`~onceforall.run.cadence.Cadence` says what else is due. Every random choice is
a pure function of (seed, step[, rank]) — batch order and augmentation, sampled archs, dropout — so a resumed run
continues bit for bit, and every rank of a distributed run samples the same archs. What the loop stands on lives
in ``run/``: the assembly (:func:`~onceforall.run.setup.build_run`), the state and its checkpoint
(:mod:`onceforall.run.state`), the run directory and stop conditions (:mod:`onceforall.run.launch`), progress
lines (:mod:`onceforall.run.progress`).
"""

from __future__ import annotations

import dataclasses
import os
import sys
import time
from pathlib import Path
from typing import Any

import torch

from ..core import distributed
from ..core.devices import device_name
from ..core.evaluation import evaluate_arch, mask_accuracy
from ..core.strategies import Plan
from ..data import DataError
from ..run.cadence import Cadence, Due
from ..run.checkpoint import CheckpointError, peek_config, save_checkpoint
from ..run.config import Config, config_from_dict
from ..run.launch import ORPHANED, StopFlag, decide_run_dir, elastic_restart, hold_run, stop_reason
from ..run.lock import AgentWatch
from ..run.progress import LogWindow, Progress, eta, progress_text
from ..run.rundir import MetricsLog, RunDir, load_initial_weights
from ..run.setup import RunParts, build_run, data_defaults, memory_format, report_split, selection_split
from ..run.state import (
    TrainState,
    check_resume_config,
    checkpoint_payload,
    cost_summary,
    resume_state,
    step_once,
)

__all__ = ["train"]


def train(cfg: Config, run_dir: str | Path | None = None, *, resume: bool = False) -> dict[str, Any]:
    """Train (or resume) the run in ``run_dir`` (default: ``train.out_dir/<name>-<timestamp>``, the same on
    every rank); returns a summary dict. Rank 0 writes all files. Under ``torchrun --max-restarts N`` a restarted
    job continues its run from the last checkpoint by itself."""
    d = distributed.setup(cfg.train.device)
    try:
        chosen, continues = decide_run_dir(cfg, Path(run_dir) if run_dir is not None else None, d)
        with hold_run(chosen, d):
            if continues and not resume:
                print(f"torchrun restart {os.environ.get('TORCHELASTIC_RESTART_COUNT')}: resuming {chosen} from its "
                      "last checkpoint", file=sys.stderr, flush=True)
            return _train(cfg, RunDir(chosen), resume or continues, d)
    finally:
        distributed.teardown(d)


def _train(cfg: Config, run: RunDir, resume: bool, d: distributed.Dist) -> dict[str, Any]:
    cfg, threads = _start_config(cfg, run, resume, d)
    parts = build_run(cfg, d.device)
    state = _start_state(cfg, run, parts, resume, d)
    if state is None:
        return {"run_dir": str(run.path), "stopped": False, "finished_before": True}
    tr = _Trainer(cfg, run, parts, state, d, resume, threads)
    with StopFlag() as stop:
        try:
            _loop(tr, stop, AgentWatch(elastic_restart() is not None))
        except DataError as e:  # an image that cannot be decoded (the up-front scan reads headers only)
            if d.world == 1 and tr.saved_at != state.step:
                tr.save()
            raise DataError(f"{e}; the run stopped at step {state.step}" + (
                f" and saved a checkpoint: fix the file, then onceforall train --resume {run.path}" if d.world == 1
                else "")) from None
    return tr.finish(stop.raised)


def _loop(tr: _Trainer, stop: StopFlag, agent: AgentWatch) -> None:
    """Steps until the schedule ends or a stop: each step, its row and progress line, then whatever is due."""
    state, cadence = tr.state, tr.cadence
    while state.step < cadence.total:
        epoch, start = divmod(state.step, cadence.steps_per_epoch)
        batches = tr.parts.data.train.epoch_batches(epoch, start, tr.rows)
        tic = time.perf_counter()
        for x, y in batches:
            plan = tr.step(x, y, tic)
            tr.report(plan)
            tr.run_due(cadence.after(state.step))
            tic = time.perf_counter()  # the seconds of a step exclude validation and checkpoints
            reason = stop_reason(stop.raised, agent, state.step, tr.cfg.train.stop_after_steps, tr.d)
            if reason is not None:
                tr.summary.update(stopped=True, reason=reason)
                break
            if cadence.epoch_end(state.step):
                break  # next epoch: new batch iterator
        if tr.summary["stopped"]:
            if tr.saved_at != state.step:
                tr.save()
            break


def _start_config(cfg: Config, run: RunDir, resume: bool, d: distributed.Dist) -> tuple[Config, int]:
    """The config this start trains with and its thread count, after the checks that need no data."""
    t_cfg = cfg.train
    threads = t_cfg.threads or max(1, (os.cpu_count() or 1) // d.local_world)
    torch.set_num_threads(threads)
    if t_cfg.batch_size % (d.world * t_cfg.micro_batches):
        raise ValueError(f"train.batch_size: {t_cfg.batch_size} is not divisible by {d.world} ranks x "
                         f"{t_cfg.micro_batches} micro-batches")
    ckpt_path = run.last_checkpoint
    if resume and not ckpt_path.is_file():
        raise CheckpointError(f"--resume: no checkpoint at {ckpt_path}")
    if not resume and ckpt_path.exists():
        raise ValueError(f"run directory {run.path} already holds a checkpoint; use --resume or another --name")
    if resume and (saved := peek_config(ckpt_path)) is not None:  # refused before any data is read
        check_resume_config(config_from_dict(saved), cfg, ckpt_path)
    if not resume:  # an image folder's resolution and normalization, decided once and kept in config.yaml
        cfg, notes = data_defaults(cfg)
        for note in notes if d.is_main else []:
            print(note, file=sys.stderr, flush=True)
    return cfg, threads


def _start_state(cfg: Config, run: RunDir, parts: RunParts, resume: bool, d: distributed.Dist) -> TrainState | None:
    """A fresh state (``train.init_from``'s weights copied in), or the checkpoint's; None for a resumed run that
    had already finished."""
    spe = parts.data.train.steps_per_epoch
    if not resume:
        if cfg.train.init_from:  # weights only; optimizer, schedule and strategy start fresh
            load_initial_weights(parts.net, cfg.train.init_from,
                                 say=lambda s: print(s, file=sys.stderr) if d.is_main else None)
        return TrainState(steps_per_epoch=spe)
    ckpt_path = run.last_checkpoint
    state = resume_state(ckpt_path, parts.net, parts.optimizer, parts.strategy, cfg, parts.space, d.device)
    if state.steps_per_epoch != spe:
        raise CheckpointError(f"checkpoint {ckpt_path}: {state.steps_per_epoch} steps per epoch, this data "
                              f"gives {spe}; the dataset or batch size changed")
    if state.step >= parts.schedule.total_steps and any(r.get("event") == "end" for r in run.read_metrics()):
        if d.is_main:  # the checkpoint verified above; nothing to add to its files
            print(f"{run.path}: already finished; nothing to resume", file=sys.stderr, flush=True)
        return None
    return state


class _Trainer:
    """The loop's parts and what it does between steps: the step, its row and progress line, validation,
    checkpoints and the closing rows. Rank 0 writes every file."""

    def __init__(self, cfg: Config, run: RunDir, parts: RunParts, state: TrainState, d: distributed.Dist,
                 resume: bool, threads: int):
        self.cfg, self.run, self.parts, self.state, self.d = cfg, run, parts, state, d
        d.broadcast_module(parts.net)
        self.kept = dataclasses.replace(cfg, train=dataclasses.replace(cfg.train, stop_after_steps=None))
        if d.is_main:  # stop_after_steps is per invocation: not kept
            run.write_config(self.kept)
        self.metrics = MetricsLog(run, enabled=d.is_main, tensorboard=cfg.train.tensorboard,
                                  resume_step=state.step if resume else None)
        self.device_name, self.threads = device_name(d.device, threads), threads
        self.eval_space = parts.eval_space
        self.cadence = Cadence.of(cfg.train, state.steps_per_epoch, parts.schedule.total_steps)
        if d.is_main and not resume:
            self._start_row()
        per_rank = cfg.train.batch_size // d.world
        self.rows = slice(d.rank * per_rank, (d.rank + 1) * per_rank)
        self.params = [p for g in parts.optimizer.param_groups for p in g["params"]]
        self.fmt = memory_format(cfg)
        self.progress = Progress(cfg.train.progress, d.is_main)
        self.window = LogWindow()
        self.shown: dict[str, Any] = {}  # the last logged row, for the progress line
        self.last_phase: str | None = None
        self.start_step, self.start_seconds = state.step, state.train_seconds  # the ETA uses this process's pace
        self.saved_at = state.step if resume else -1
        self.summary: dict[str, Any] = {"run_dir": str(run.path), "stopped": False}

    def _start_row(self) -> None:
        space, ev = self.parts.space, self.eval_space
        self.metrics.write({"event": "start", "step": 0, "space": space.identity(),
                            "steps_per_epoch": self.state.steps_per_epoch, "epochs": self.cfg.train.epochs,
                            "device": self.device_name, "devices": self.d.world, "eval_space": ev.identity(),
                            "macs_full": ev.macs(ev.max()), "macs_min": ev.macs(ev.min())})

    def autocast(self) -> torch.autocast:
        return torch.autocast(self.d.device.type, dtype=torch.bfloat16, enabled=self.cfg.train.amp == "bf16")

    def step(self, x: torch.Tensor, y: torch.Tensor, tic: float) -> Plan:
        """Step ``state.step`` on this rank's rows of the batch (``tic``: when the wait for it began)."""
        got = time.perf_counter()
        d, p, state = self.d, self.parts, self.state
        x = x.to(d.device, non_blocking=True).contiguous(memory_format=self.fmt)
        y = y.to(d.device, non_blocking=True)
        t = state.step
        result = step_once(self.cfg, p.strategy, t, p.net, p.optimizer, state.teacher, x, y, rank=d.rank,
                           sync_grads=lambda: d.sync_grads(self.params), autocast=self.autocast)
        state.teacher = result.teacher
        state.add_step_macs(p.space, result.plan, x.shape[0] * d.world)  # the global batch: same on any ranks
        if result.plan.phase != self.last_phase:
            self.metrics.write({"event": "phase", "step": t, "epoch": round(t / self.cadence.steps_per_epoch, 4),
                                "phase": result.plan.phase})
            self.last_phase = result.plan.phase
        state.step = t + 1
        now = time.perf_counter()
        state.train_seconds += now - tic
        self.window.add(result.losses, now - tic, got - tic, x.shape[0] * d.world)
        return result.plan

    def report(self, plan: Plan) -> None:
        """The step row (at the log cadence) and, every step, the progress line (a terminal's is live, a log file
        gets one every 30 s and at each epoch end)."""
        t, c, lr = self.state.step, self.cadence, self.parts.strategy.lr_at(self.state.step - 1)
        if c.log(t):
            self.d.check_agree(f"the archs of step {t - 1}", "|".join(str(p.arch) for p in plan.passes))
            row = {"event": "step", "step": t, "epoch": round(t / c.steps_per_epoch, 4), "lr": lr, "eps": plan.eps,
                   "phase": plan.phase, **self.window.flush(), "archs": [str(p.arch) for p in plan.passes]}
            self.metrics.write(row)
            self.shown = row
        pace = eta(self.state.train_seconds - self.start_seconds, t - self.start_step, c.total - t)
        self.progress.update(progress_text(t, c.steps_per_epoch, self.cfg.train.epochs, c.total, plan.eps, lr,
                                           self.shown or self.window.peek(), pace), epoch_end=c.epoch_end(t))

    def run_due(self, due: Due) -> None:
        if due.evaluate:
            self.validate(final=due.final)
        if due.checkpoint:
            self.save(due.keep_epoch)

    def save(self, keep_epoch: int | None = None) -> None:
        self.saved_at = self.state.step
        if self.d.is_main:
            p = self.parts
            ck = checkpoint_payload(self.state, p.net, p.optimizer, p.strategy, self.kept, p.space)
            save_checkpoint(self.run.last_checkpoint, ck)
            if keep_epoch is not None:
                save_checkpoint(self.run.epoch_checkpoint(keep_epoch), ck, keep_previous=False)
        self.d.barrier()

    def validate(self, final: bool = False) -> None:
        """The full and smallest subnets on the validation subset, or (``final``) the whole test split."""
        tic = time.perf_counter()
        if self.d.is_main:
            t = self.state.step
            row = {"event": "eval", "step": t, "epoch": round(t / self.cadence.steps_per_epoch, 4)}
            if final:
                row["final"] = True
            val = self.parts.data.test if final else self.parts.data.val
            with self.progress.busy(f"validating at step {t} ({len(val.ds)} images)"):
                for role in ("full", "min"):
                    row.update(self._accuracy(role, val))
            row["split"] = report_split(self.cfg) if final else selection_split(self.cfg)
            row["images"] = len(val.ds)
            row["seconds"] = round(time.perf_counter() - tic, 3)
            self.metrics.write(row)
            self.summary.update({k: v for k, v in row.items() if k.startswith("acc_")})
        self.d.barrier()
        self.state.eval_seconds += time.perf_counter() - tic

    def _accuracy(self, role: str, val: Any) -> dict[str, Any]:
        ev, data, cfg = self.eval_space, self.parts.data, self.cfg
        arch = ev.max() if role == "full" else ev.min()
        hits = evaluate_arch(self.parts.net, arch, data.bn, val, bn_images=cfg.data.bn_images, device=self.d.device,
                             memory_format=self.fmt)
        self.state.add_eval_macs(ev, arch, min(cfg.data.bn_images, len(data.bn.ds)) + len(val.ds))
        return {f"acc_{role}": round(mask_accuracy(hits), 4), f"macs_{role}": ev.macs(arch)}

    def finish(self, signum: int | None) -> dict[str, Any]:
        """cost.json and the closing row; returns the summary."""
        self.progress.done()
        t, d, summary = self.state.step, self.d, self.summary
        epochs = t / self.cadence.steps_per_epoch
        summary.update(step=t, epochs=epochs)
        if d.is_main:
            summary["cost"] = cost_summary(self.state, epochs_done=epochs, device=self.device_name, devices=d.world,
                                           threads=self.threads,
                                           price_per_device_hour=self.cfg.train.price_per_device_hour)
            self.run.write_cost(summary["cost"])
            self.metrics.write({"event": "end" if t == self.cadence.total else "stopped", "step": t,
                                "epoch": round(epochs, 4),
                                **{k: summary[k] for k in ("acc_full", "acc_min", "reason") if k in summary}})
        self.metrics.close()
        if summary.get("reason") == ORPHANED and d.is_main:
            print(f"rank {d.rank}: the torchrun agent is gone; stopped at step {t} with a checkpoint instead of "
                  f"training on unsupervised: onceforall train --resume {self.run.path}", file=sys.stderr, flush=True)
        if signum is not None:
            summary["signal"] = signum
        return summary
