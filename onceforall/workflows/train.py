"""Train a supernet: ``onceforall train``.

    onceforall train --config fashion-mnist-quick                      # the demo preset, ~10 min on 2 cores
    onceforall train --config fashion-mnist strategy.name=bignas train.epochs=30 --name bignas-30
    onceforall train --resume runs/bignas-30                           # continue exactly where it stopped
    torchrun --nproc-per-node 2 -m onceforall train --config fashion-mnist-quick   # 2 processes (gloo on CPU)

The loop below is the whole algorithm around :func:`step_once` (:mod:`onceforall.core.step`): the strategy plans
step t, the step runs the plan. Every random choice is a pure function of (seed, step[, rank]) —
batch order and augmentation, sampled archs, dropout — so a resumed run continues bit for bit, and
every rank of a distributed run samples the same archs.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import random
import signal
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ..core import distributed
from ..core.cost import add_eval_macs, add_step_macs
from ..core.devices import device_name
from ..core.evaluation import evaluate_arch, mask_accuracy
from ..core.seeds import dropout_seed
from ..core.space import Space
from ..core.step import begin_step, frozen_copy, train_step
from ..core.strategies import Plan, Strategy
from ..core.supernet import Supernet
from ..core.util import atomic_write, remove_stale_tmp
from ..data import DataError
from ..run.checkpoint import CheckpointError, load_checkpoint, load_model_state, peek_config, save_checkpoint
from ..run.config import Config, config_from_dict, resume_differences, to_dict
from ..run.lock import AgentWatch, RunLock, RunLockError
from ..run.progress import Heartbeat
from ..run.rundir import MetricsLog, RunDir, load_initial_weights
from ..run.setup import (
    build_data,
    build_net,
    build_optimizer,
    build_schedule,
    build_space,
    build_strategy,
    data_defaults,
    image_size,
    memory_format,
    report_split,
    selection_split,
)

__all__ = ["StepResult", "decide_run_dir", "default_run_name", "elastic_restart", "step_once", "train"]


def default_run_name(cfg: Config) -> str:
    return f"{cfg.name}-{datetime.now().strftime('%Y%m%d-%H%M%S')}"


# ---------------------------------------------------------------------------------------------------
# One step: the plan of step t, its actions, its passes (training and analyze-gradients both call it)
# ---------------------------------------------------------------------------------------------------


@dataclass
class StepResult:
    plan: Plan
    losses: dict[str, float]
    teacher: nn.Module | None
    """The frozen teacher after the step (OFA-PS snapshots it when its first KD phase starts)."""


def step_once(cfg: Config, strategy: Strategy, t: int, net: nn.Module, optimizer: torch.optim.Optimizer,
              teacher: nn.Module | None, x: torch.Tensor, y: torch.Tensor, *, rank: int = 0,
              sync_grads: Callable[[], None] | None = None,
              autocast: Callable[[], contextlib.AbstractContextManager] = contextlib.nullcontext) -> StepResult:
    """Global step ``t`` of a run on this rank's batch (already on the device): the strategy's plan, its
    actions and learning rate (:func:`~onceforall.core.step.begin_step`, dropout seeded from (seed, t, rank)),
    then :func:`~onceforall.core.step.train_step`."""
    plan = strategy.plan(t)
    teacher = begin_step(plan, net, optimizer, teacher, lr=strategy.lr_at(t),
                         dropout_seed=dropout_seed(cfg.train.seed, t, rank))
    losses = train_step(net, plan, x, y, optimizer, micro_batches=cfg.train.micro_batches, teacher_net=teacher,
                        sync_grads=sync_grads, grad_clip=cfg.optim.grad_clip, autocast=autocast)
    return StepResult(plan, losses, teacher)


# ---------------------------------------------------------------------------------------------------
# Progress and cost
# ---------------------------------------------------------------------------------------------------


class Progress:
    """Progress on stderr: a live one-line bar on a terminal; in a log file (not a terminal) a flushed line every
    ``every_s`` seconds and at every epoch end, so a log shows a working run. ``mode`` off: nothing."""

    def __init__(self, mode: str, enabled: bool, every_s: float = 30.0):
        self.on = enabled and mode != "off"
        self.bar = self.on and (mode == "on" or sys.stderr.isatty())
        self.every_s = every_s
        self.last = -float("inf")

    def update(self, text: str, *, epoch_end: bool = False) -> None:
        if not self.on:
            return
        if self.bar:
            sys.stderr.write("\r" + text[:160].ljust(160))
        else:
            now = time.monotonic()
            if not epoch_end and now - self.last < self.every_s:
                return
            self.last = now
            sys.stderr.write(f"[{datetime.now().strftime('%H:%M:%S')}] {text}\n")
        sys.stderr.flush()

    def done(self) -> None:
        if self.bar:
            sys.stderr.write("\n")

    def busy(self, what: str) -> contextlib.AbstractContextManager:
        """While a long pause of the steps runs (validation), a log file still gets a line every ``every_s``."""
        if not self.on or self.bar:
            return contextlib.nullcontext()
        beat = Heartbeat(lambda text: print(f"[{datetime.now().strftime('%H:%M:%S')}] {text.strip()}",
                                            file=sys.stderr, flush=True), every_s=self.every_s)
        beat.text = what  # said only if it takes longer than every_s
        return beat


def eta(seconds_so_far: float, steps_done: int, steps_left: int) -> str:
    """Remaining time at the pace so far, as 1h02m / 3m05s / 12s."""
    if steps_done <= 0:
        return "?"
    left = round(seconds_so_far / steps_done * steps_left)
    h, rest = divmod(left, 3600)
    m, sec = divmod(rest, 60)
    return f"{h}h{m:02d}m" if h else (f"{m}m{sec:02d}s" if m else f"{sec}s")


def progress_text(t: int, spe: int, epochs: int, total: int, eps: float, lr: float, row: dict[str, Any],
                  eta_text: str) -> str:
    """The progress line after step ``t``: loss (the full model's, else the first role's: OFA-PS's expand phases
    train no full pass) and throughput only once measured, never as ``nan`` or ``0 img/s``."""
    losses = [k for k in row if k.startswith("loss_")]
    key = "loss_full" if "loss_full" in row else (losses[0] if losses else None)
    loss = f" {key.replace('_full', '')} {row[key]:.3f}" if key else ""
    speed = f" {row['img_per_s']:.0f} img/s" if row.get("img_per_s") else ""
    return (f"epoch {t / spe:6.2f}/{epochs} step {t}/{total}{loss} eps {eps:.3g} lr {lr:.3g}{speed} "
            f"ETA {eta_text}")


def write_cost(run: RunDir, state: dict, cfg: Config, d: distributed.Dist, device: str, epochs_done: float) -> dict:
    wall = state["train_seconds"] + state["eval_seconds"]
    hours = wall * d.world / 3600.0
    cost = {
        "wall_seconds": round(wall, 3),
        "train_seconds": round(state["train_seconds"], 3),
        "eval_seconds": round(state["eval_seconds"], 3),
        "epochs": round(epochs_done, 4),
        **macs_cost(state),
        "seconds_per_epoch": round(state["train_seconds"] / epochs_done, 3) if epochs_done else None,
        "device": device,
        "devices": d.world,
        "device_hours": round(hours, 8),
        "price_per_device_hour": cfg.train.price_per_device_hour,
        "dollars": round(hours * cfg.train.price_per_device_hour, 6),
    }
    run.write_cost(cost)
    return cost


def macs_cost(state: dict) -> dict:
    """The run's cost in MACs (:mod:`onceforall.core.cost`): train_macs (teacher_macs included) and eval_macs;
    None for a run resumed from a checkpoint older than the MACs accounting (its total would be partial)."""
    return {k: state.get(k) for k in ("train_macs", "teacher_macs", "eval_macs")}


# ---------------------------------------------------------------------------------------------------
# Checkpoints
# ---------------------------------------------------------------------------------------------------


def checkpoint_state(net, opt, strategy, teacher, state, cfg, space) -> dict:
    rng = {"torch": torch.get_rng_state(), "python": random.getstate()}
    if torch.cuda.is_available():
        rng["cuda"] = torch.cuda.get_rng_state_all()
    return {
        "config": to_dict(cfg),
        "space": space.identity(),
        "eval_space": strategy.trained_space().identity(),
        "model": net.state_dict(),
        "optimizer": opt.state_dict(),
        "scheduler": {"step": state["step"]},
        "strategy": strategy.state_dict(),
        "teacher": teacher.state_dict() if teacher is not None else None,
        "rng": rng,
        "data": {"epoch": state["step"] // state["steps_per_epoch"],
                 "index": state["step"] % state["steps_per_epoch"]},
        "state": dict(state),
    }


def restore(path: Path, net, opt, strategy: Strategy, cfg: Config, space: Space, device) -> tuple[dict, Any]:
    ck = load_checkpoint(path, map_location=device, space=space)
    check_resume_config(config_from_dict(ck["config"]), cfg, path)
    load_model_state(net, ck["model"], path)
    opt.load_state_dict(ck["optimizer"])
    strategy.load_state_dict(ck["strategy"])
    teacher = None
    if ck.get("teacher") is not None:
        teacher = frozen_copy(net)
        teacher.load_state_dict(ck["teacher"])
    torch.set_rng_state(ck["rng"]["torch"].cpu())
    random.setstate(_as_tuple(ck["rng"]["python"]))
    if "cuda" in ck["rng"] and torch.cuda.is_available():
        torch.cuda.set_rng_state_all([s.cpu() for s in ck["rng"]["cuda"]])
    return dict(ck["state"]), teacher


def check_resume_config(saved: Config, cfg: Config, path: Path) -> None:
    """Refuse to resume with a config that differs from the checkpoint's outside the resume-safe fields
    (:data:`~onceforall.run.config.RESUME_SAFE`), naming the first such field and both values."""
    diff = resume_differences(saved, cfg)
    if diff:
        key, old, new = diff[0]
        more = f" (and {len(diff) - 1} more field{'s' if len(diff) > 2 else ''})" if len(diff) > 1 else ""
        raise CheckpointError(f"resume: {key} is {new!r} in config.yaml but {old!r} in checkpoint {path}{more}; a "
                              "resumed run keeps its config (only log, progress, thread, device, path and cadence "
                              "fields may change): put the value back, or start a new run from its weights with "
                              "--init-from")


def _as_tuple(x):
    return tuple(_as_tuple(v) for v in x) if isinstance(x, (list, tuple)) else x


# ---------------------------------------------------------------------------------------------------
# The run
# ---------------------------------------------------------------------------------------------------


class _StopFlag:
    """SIGINT/SIGTERM set a flag; the loop checkpoints between steps and stops cleanly."""

    def __init__(self):
        self.raised: int | None = None
        self._old = {}

    def __enter__(self):
        if threading_is_main():
            for sig in (signal.SIGINT, signal.SIGTERM):
                self._old[sig] = signal.signal(sig, self._handle)
        return self

    def _handle(self, signum, frame):
        self.raised = signum

    def __exit__(self, *exc):
        for sig, old in self._old.items():
            signal.signal(sig, old)


ORPHANED = "torchrun agent gone"


def stop_reason(signum: int | None, agent: AgentWatch, t: int, stop_after: int | None,
                d: distributed.Dist) -> str | None:
    """Why the loop stops after step ``t`` (None: it goes on): a signal, ``train.stop_after_steps``, or the
    torchrun agent's death (an orphaned worker). Under torchrun every rank stops at the same step if any must."""
    reason = (f"signal {signum}" if signum is not None else ORPHANED if agent.gone() else
              "train.stop_after_steps" if stop_after is not None and t >= stop_after else None)
    if d.enabled and d.any(reason is not None) and reason is None:
        reason = "another rank stopped"
    return reason


def threading_is_main() -> bool:
    return threading.current_thread() is threading.main_thread()


def elastic_restart() -> tuple[str, int] | None:
    """(job key, restart number) when launched by ``torchrun`` (torchelastic), else None. The key is the same on
    every restart of one job: the rendezvous id, or, without one (``none``), this node's agent process."""
    if "TORCHELASTIC_RESTART_COUNT" not in os.environ:
        return None
    run_id = os.environ.get("TORCHELASTIC_RUN_ID", "none")
    key = run_id if run_id not in ("", "none") else f"agent-{os.getppid()}"
    return key, int(os.environ["TORCHELASTIC_RESTART_COUNT"])


def _job_file(out_dir: Path, key: str) -> Path:
    return out_dir / ".jobs" / f"{''.join(c if c.isalnum() or c in '-_.' else '_' for c in key)}.run"


def decide_run_dir(cfg: Config, run_dir: Path | None, d: distributed.Dist) -> tuple[Path, bool]:
    """The run directory and whether this start continues an earlier one of the same job: a torchrun restart
    (``--max-restarts``) uses the directory its job chose at its first start, named or not, and resumes from its
    checkpoint when there is one. Decided by rank 0, the same on every rank."""
    job = elastic_restart()
    chosen = str(run_dir) if run_dir is not None else ""
    if d.is_main:
        if job is not None:
            marker = _job_file(Path(cfg.train.out_dir), job[0])
            if job[1] > 0 and marker.is_file():
                chosen = marker.read_text().strip()
            if not chosen:
                chosen = str(Path(cfg.train.out_dir) / default_run_name(cfg))
            marker.parent.mkdir(parents=True, exist_ok=True)
            atomic_write(marker, lambda tmp: tmp.write_text(chosen + "\n"))
        elif not chosen:
            chosen = str(Path(cfg.train.out_dir) / default_run_name(cfg))
    chosen = d.broadcast_str(chosen)
    restarted = job is not None and job[1] > 0
    return Path(chosen), restarted and RunDir(chosen).last_checkpoint.is_file()


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
            return _train(cfg, chosen, resume or continues, d)
    finally:
        distributed.teardown(d)


@contextlib.contextmanager
def hold_run(run_dir: Path, d: distributed.Dist):
    """Rank 0 holds the run's lock (:class:`~onceforall.run.lock.RunLock`) for the whole job; a refusal is raised
    on every rank. A torchrun restart of the same job takes over the lock of its earlier attempt. Leftover
    temporary files of writes that a kill interrupted are removed once the lock is ours."""
    job = elastic_restart()
    lock = RunLock(run_dir, "train", job=job[0] if job else None)
    created = not run_dir.exists()
    refused = ""
    if d.is_main:
        try:
            lock.acquire()
            for folder in (run_dir, RunDir(run_dir).checkpoints):
                remove_stale_tmp(folder)
        except (RunLockError, OSError) as e:
            if not d.enabled:
                raise
            refused = f"{type(e).__name__}: {e}"
    refused = d.broadcast_str(refused)
    if refused:
        raise RunLockError(refused.split(": ", 1)[1])
    try:
        yield lock
    finally:
        lock.release()
        if created and d.is_main:  # a start that failed before writing anything leaves no empty run directory
            with contextlib.suppress(OSError):
                run_dir.rmdir()


def _train(cfg: Config, run_dir: Path, resume: bool, d: distributed.Dist) -> dict[str, Any]:
    t_cfg = cfg.train
    threads = t_cfg.threads or max(1, (os.cpu_count() or 1) // d.local_world)
    torch.set_num_threads(threads)
    if t_cfg.batch_size % (d.world * t_cfg.micro_batches):
        raise ValueError(f"train.batch_size: {t_cfg.batch_size} is not divisible by {d.world} ranks x "
                         f"{t_cfg.micro_batches} micro-batches")
    run = RunDir(run_dir)
    ckpt_path = run.last_checkpoint
    if resume and not ckpt_path.is_file():
        raise CheckpointError(f"--resume: no checkpoint at {ckpt_path}")
    if not resume and ckpt_path.exists():
        raise ValueError(f"run directory {run_dir} already holds a checkpoint; use --resume or another --name")

    if resume and (saved := peek_config(ckpt_path)) is not None:  # refused before any data is read
        check_resume_config(config_from_dict(saved), cfg, ckpt_path)
    if not resume:  # an image folder's resolution and normalization, decided once and kept in config.yaml
        cfg, notes = data_defaults(cfg)
        for note in notes if d.is_main else []:
            print(note, file=sys.stderr, flush=True)
    space0 = build_space(cfg)
    data = build_data(cfg, image_size(cfg, space0))
    space = space0.with_io(num_classes=data.num_classes, in_channels=data.in_channels)
    fmt = memory_format(cfg)
    net: Supernet = build_net(cfg, space).to(device=d.device, memory_format=fmt)
    opt = build_optimizer(net, cfg)
    spe = data.train.steps_per_epoch
    schedule = build_schedule(cfg, spe)
    strategy = build_strategy(cfg, space, schedule)
    eval_space = strategy.trained_space()  # what the run is validated (and later evaluated) on
    lr_at = strategy.lr_at
    teacher: nn.Module | None = None
    state = {"step": 0, "train_seconds": 0.0, "eval_seconds": 0.0, "steps_per_epoch": spe,
             "train_macs": 0, "teacher_macs": 0, "eval_macs": 0}
    if t_cfg.init_from and not resume:  # weights only; optimizer, schedule and strategy start fresh
        load_initial_weights(net, t_cfg.init_from, say=lambda s: print(s, file=sys.stderr) if d.is_main else None)
    if resume:
        state, teacher = restore(ckpt_path, net, opt, strategy, cfg, space, d.device)
        state = {"train_macs": None, "teacher_macs": None, "eval_macs": None, **state}  # older checkpoints: unknown
        if state["steps_per_epoch"] != spe:
            raise CheckpointError(f"checkpoint {ckpt_path}: {state['steps_per_epoch']} steps per epoch, this data "
                                  f"gives {spe}; the dataset or batch size changed")
        if state["step"] >= schedule.total_steps and any(r.get("event") == "end" for r in run.read_metrics()):
            if d.is_main:  # the checkpoint verified above; nothing to add to its files
                print(f"{run_dir}: already finished; nothing to resume", file=sys.stderr, flush=True)
            return {"run_dir": str(run_dir), "stopped": False, "finished_before": True}
    d.broadcast_module(net)
    kept = dataclasses.replace(cfg, train=dataclasses.replace(t_cfg, stop_after_steps=None))  # per invocation
    if d.is_main:
        run.write_config(kept)
    metrics = MetricsLog(run, enabled=d.is_main, tensorboard=t_cfg.tensorboard,
                         resume_step=state["step"] if resume else None)
    dev_name = device_name(d.device, threads)
    if d.is_main and not resume:
        metrics.write({"event": "start", "step": 0, "space": space.identity(), "steps_per_epoch": spe,
                       "epochs": t_cfg.epochs, "device": dev_name, "devices": d.world,
                       "eval_space": eval_space.identity(),
                       "macs_full": eval_space.macs(eval_space.max()), "macs_min": eval_space.macs(eval_space.min())})

    per_rank = t_cfg.batch_size // d.world
    rows = slice(d.rank * per_rank, (d.rank + 1) * per_rank)
    params = [p for g in opt.param_groups for p in g["params"]]
    use_amp = t_cfg.amp == "bf16"
    autocast = lambda: torch.autocast(d.device.type, dtype=torch.bfloat16, enabled=use_amp)  # noqa: E731
    progress = Progress(t_cfg.progress, d.is_main)
    total = schedule.total_steps
    t = state["step"]
    start_step, start_seconds = t, state["train_seconds"]  # the ETA uses this process's pace
    shown: dict[str, Any] = {}  # the last logged row, for the progress line
    log = _LogWindow()
    last_phase = None
    summary: dict[str, Any] = {"run_dir": str(run_dir), "stopped": False}

    saved_at = [t if resume else -1]

    def save(tag: str | None = None) -> None:
        saved_at[0] = t
        if d.is_main:
            ck = checkpoint_state(net, opt, strategy, teacher, state, kept, space)
            save_checkpoint(ckpt_path, ck)
            if tag is not None:
                save_checkpoint(run.checkpoint(tag), ck, keep_previous=False)
        d.barrier()

    def validate(epoch_done: float, final: bool = False) -> None:
        tic = time.perf_counter()
        if d.is_main:
            row = {"event": "eval", "step": t, "epoch": round(epoch_done, 4)}
            if final:
                row["final"] = True
            val = data.test if final else data.val  # the end of the run reports on the whole test split
            with progress.busy(f"validating at step {t} ({len(val.ds)} images)"):
                for role, arch in (("full", eval_space.max()), ("min", eval_space.min())):
                    hits = evaluate_arch(net, arch, data.bn, val, bn_images=cfg.data.bn_images, device=d.device,
                                         memory_format=fmt)
                    row[f"acc_{role}"] = round(mask_accuracy(hits), 4)
                    row[f"macs_{role}"] = eval_space.macs(arch)
                    add_eval_macs(state, eval_space, arch, min(cfg.data.bn_images, len(data.bn.ds)) + len(val.ds))
            row["split"] = report_split(cfg) if final else selection_split(cfg)
            row["images"] = len(val.ds)
            row["seconds"] = round(time.perf_counter() - tic, 3)
            metrics.write(row)
            summary.update({k: v for k, v in row.items() if k.startswith("acc_")})
        d.barrier()
        state["eval_seconds"] += time.perf_counter() - tic

    agent = AgentWatch(elastic_restart() is not None)
    with _StopFlag() as stop:
        try:
            while t < total:
                epoch, start = divmod(t, spe)
                batches = data.train.epoch_batches(epoch, start, rows)
                tic = time.perf_counter()
                for x, y in batches:
                    got = time.perf_counter()
                    x = x.to(d.device, non_blocking=True).contiguous(memory_format=fmt)
                    y = y.to(d.device, non_blocking=True)
                    step = step_once(cfg, strategy, t, net, opt, teacher, x, y, rank=d.rank,
                                     sync_grads=lambda: d.sync_grads(params), autocast=autocast)
                    plan, losses, teacher = step.plan, step.losses, step.teacher
                    add_step_macs(state, space, plan, x.shape[0] * d.world)  # the global batch: same on any ranks
                    if plan.phase != last_phase:
                        metrics.write({"event": "phase", "step": t, "epoch": round(t / spe, 4), "phase": plan.phase})
                        last_phase = plan.phase
                    t += 1
                    state["step"] = t
                    now = time.perf_counter()
                    state["train_seconds"] += now - tic
                    log.add(losses, now - tic, got - tic, x.shape[0] * d.world)
                    tic = now
                    if t % t_cfg.log_every == 0 or t == total:
                        d.check_agree(f"the archs of step {t - 1}", "|".join(str(p.arch) for p in plan.passes))
                        row = {"event": "step", "step": t, "epoch": round(t / spe, 4), "lr": lr_at(t - 1),
                               "eps": plan.eps, "phase": plan.phase, **log.flush(),
                               "archs": [str(p.arch) for p in plan.passes]}
                        metrics.write(row)
                        shown = row
                    end_of_epoch = t % spe == 0
                    # every step: a terminal's line is live, a log file gets one every 30 s and each epoch end
                    progress.update(progress_text(t, spe, t_cfg.epochs, total, plan.eps, lr_at(t - 1),
                                                  shown or log.peek(),
                                                  eta(state['train_seconds'] - start_seconds, t - start_step,
                                                      total - t)), epoch_end=end_of_epoch)
                    if end_of_epoch or t == total:
                        done = t // spe
                        if t == total:
                            validate(t / spe, final=True)  # the whole validation set
                        elif t_cfg.eval_every and done % t_cfg.eval_every == 0:
                            validate(t / spe)
                        if done % t_cfg.checkpoint_every == 0 or t == total:
                            save(f"epoch-{done:03d}" if t_cfg.keep_checkpoints else None)
                        tic = time.perf_counter()
                    else:
                        if t_cfg.eval_every_steps and t % t_cfg.eval_every_steps == 0:
                            validate(t / spe)
                        if t_cfg.checkpoint_every_steps and t % t_cfg.checkpoint_every_steps == 0:
                            save()
                        tic = time.perf_counter()
                    reason = stop_reason(stop.raised, agent, t, t_cfg.stop_after_steps, d)
                    if reason is not None:
                        summary.update(stopped=True, reason=reason)
                        break
                    if end_of_epoch:
                        break  # next epoch: new batch iterator
                if summary["stopped"]:
                    if saved_at[0] != t:
                        save()
                    break
        except DataError as e:  # an image that cannot be decoded (the up-front scan reads headers only)
            if d.world == 1 and saved_at[0] != t:
                save()
            raise DataError(f"{e}; the run stopped at step {t}" + (
                f" and saved a checkpoint: fix the file, then onceforall train --resume {run_dir}" if d.world == 1
                else "")) from None
    progress.done()
    summary.update(step=t, epochs=t / spe)
    if d.is_main:
        summary["cost"] = write_cost(run, state, cfg, d, dev_name, t / spe)
        metrics.write({"event": "end" if t == total else "stopped", "step": t, "epoch": round(t / spe, 4),
                       **{k: summary[k] for k in ("acc_full", "acc_min", "reason") if k in summary}})
    metrics.close()
    if summary.get("reason") == ORPHANED and d.is_main:
        print(f"rank {d.rank}: the torchrun agent is gone; stopped at step {t} with a checkpoint instead of training "
              f"on unsupervised: onceforall train --resume {run_dir}", file=sys.stderr, flush=True)
    if stop.raised is not None:
        summary["signal"] = stop.raised
    return summary


class _LogWindow:
    """Averages of the losses, throughput and data-wait share since the last step row."""

    def __init__(self):
        self.reset()

    def reset(self):
        self.losses: dict[str, list[float]] = {}
        self.seconds = self.wait = 0.0
        self.images = 0

    def add(self, losses: dict[str, float], seconds: float, wait: float, images: int) -> None:
        for k, v in losses.items():
            self.losses.setdefault(k, []).append(v)
        self.seconds += seconds
        self.wait += wait
        self.images += images

    def peek(self) -> dict[str, float]:
        """The averages so far, without starting a new window (for the progress line before the first row)."""
        row = {f"loss_{k}": sum(v) / len(v) for k, v in self.losses.items()}
        if self.seconds:
            row["img_per_s"] = self.images / self.seconds
        return row

    def flush(self) -> dict[str, float]:
        row = {f"loss_{k}": round(sum(v) / len(v), 5) for k, v in self.losses.items()}
        row["img_per_s"] = round(self.images / self.seconds, 2) if self.seconds else 0.0
        row["data_wait"] = round(self.wait / self.seconds, 4) if self.seconds else 0.0
        self.reset()
        return row

