"""Train a supernet: ``onceforall train``.

    onceforall train --config fashion-mnist-quick                      # the demo preset, ~10 min on 2 cores
    onceforall train --config fashion-mnist strategy.name=bignas train.epochs=30 --name bignas-30
    onceforall train --resume runs/bignas-30                           # continue exactly where it stopped
    torchrun --nproc-per-node 2 -m onceforall train --config fashion-mnist-quick   # 2 processes (gloo on CPU)

The loop below is the whole algorithm around :func:`onceforall.step.train_step`: the strategy plans
step t, the step runs the plan. Every random choice is a pure function of (seed, step[, rank]) —
batch order and augmentation, sampled archs, dropout — so a resumed run continues bit for bit, and
every rank of a distributed run samples the same archs.
"""

from __future__ import annotations

import copy
import json
import os
import random
import signal
import sys
import time
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import torch
from torch import nn

from . import distributed
from .checkpoint import CheckpointError, load_checkpoint, save_checkpoint
from .config import Config, config_from_dict, to_dict, to_yaml
from .data import Augment, EvalBatches, TrainBatches, bn_subset, derive_seed, load_dataset, split_holdout
from .devices import device_name
from .evaluate import evaluate_arch
from .spaces import Space, get_space
from .step import train_step
from .strategies import Schedule, Strategy, get_strategy
from .supernet import Supernet, build_supernet

__all__ = ["TrainData", "build_data", "build_optimizer", "default_run_name", "train"]

DATA_SEED = 0  # splits and evaluation subsets are the same for every training seed (comparable runs)


def default_run_name(cfg: Config) -> str:
    return f"{cfg.name}-{datetime.now().strftime('%Y%m%d-%H%M%S')}"


# ---------------------------------------------------------------------------------------------------
# Data, model, optimizer
# ---------------------------------------------------------------------------------------------------


@dataclass
class TrainData:
    train: TrainBatches
    bn: EvalBatches
    """A fixed random subset of training images, un-augmented, for BN recalibration."""
    val: EvalBatches
    """Per-epoch validation set (held-out training images, or the test split; data.eval_subset of it)."""
    val_full: EvalBatches
    """The whole validation set, for the final evaluation."""
    num_classes: int
    in_channels: int
    image_size: int


def build_data(cfg: Config, image_size: int) -> TrainData:
    d = cfg.data
    train = load_dataset(d.dataset, d.root, "train", image_size)
    if d.val_split:
        train, val = split_holdout(train, d.val_split, seed=DATA_SEED)
    else:
        val = load_dataset(d.dataset, d.root, "test", image_size)
    if d.train_subset is not None and d.train_subset < len(train):
        train = bn_subset(train, d.train_subset, seed=derive_seed(DATA_SEED, "train_subset"))
    val_full = val
    if d.eval_subset is not None and d.eval_subset < len(val):
        val = bn_subset(val, d.eval_subset, seed=derive_seed(DATA_SEED, "eval_subset"))
    augment = Augment(crop_padding=d.crop_padding, hflip=d.hflip)
    return TrainData(
        train=TrainBatches(train, cfg.train.batch_size, cfg.train.seed, augment, image_size, workers=d.workers),
        bn=EvalBatches(bn_subset(train, d.bn_images, seed=DATA_SEED), d.eval_batch_size, image_size, d.workers),
        val=EvalBatches(val, d.eval_batch_size, image_size, d.workers),
        val_full=EvalBatches(val_full, d.eval_batch_size, image_size, d.workers),
        num_classes=train.num_classes,
        in_channels=train.in_channels,
        image_size=image_size,
    )


def build_space(cfg: Config) -> Space:
    return get_space(cfg.model.space, cfg.model.width_mult, cfg.model.resolutions)


def build_optimizer(net: nn.Module, cfg: Config) -> torch.optim.SGD:
    """SGD (Nesterov) with weight decay on conv/linear weights only: not on BN, biases or the
    kernel-transform matrices (which start at identity; decay would pull them towards zero)."""
    o = cfg.optim
    decay, no_decay = [], []
    for name, p in net.named_parameters():
        (no_decay if p.ndim <= 1 or "kernel_transform" in name else decay).append(p)
    groups = [{"params": decay, "weight_decay": o.weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    return torch.optim.SGD(groups, lr=o.lr, momentum=o.momentum, nesterov=o.nesterov and o.momentum > 0)


def permute_optimizer_state(optimizer: torch.optim.Optimizer, moves) -> None:
    """After channel re-organization, permute momentum buffers exactly like their parameters."""
    for tensor, dim, idx in moves:
        state = optimizer.state.get(tensor)
        if state and state.get("momentum_buffer") is not None:
            buf = state["momentum_buffer"]
            buf.copy_(buf.index_select(dim, idx))


# ---------------------------------------------------------------------------------------------------
# Run directory: metrics, cost, progress
# ---------------------------------------------------------------------------------------------------


class Metrics:
    """metrics.jsonl (one JSON object per event) and an optional TensorBoard sink; rank 0 only."""

    def __init__(self, run_dir: Path, enabled: bool, tensorboard: bool, resume_step: int | None):
        self.enabled = enabled
        self.path = run_dir / "metrics.jsonl"
        self.tb = None
        if not enabled:
            return
        if resume_step is not None and self.path.exists():
            # drop rows written after the checkpoint we resume from: those steps run again
            kept = [line for line in self.path.read_text().splitlines()
                    if line.strip() and json.loads(line).get("step", 0) <= resume_step]
            self.path.write_text("".join(line + "\n" for line in kept))
        if tensorboard:
            try:
                from torch.utils.tensorboard import SummaryWriter
            except ImportError:
                raise ValueError(
                    "train.tensorboard: true needs the tensorboard package; pip install 'onceforall[tensorboard]'"
                ) from None
            self.tb = SummaryWriter(str(run_dir / "tensorboard"))

    def write(self, row: dict[str, Any]) -> None:
        if not self.enabled:
            return
        with self.path.open("a") as f:
            f.write(json.dumps(row) + "\n")
        if self.tb is not None:
            for key, value in row.items():
                if isinstance(value, (int, float)) and key not in ("step", "epoch"):
                    self.tb.add_scalar(f"{row['event']}/{key}", value, row.get("step", 0))

    def close(self) -> None:
        if self.tb is not None:
            self.tb.close()


class Progress:
    """A one-line progress display on stderr (only on a terminal unless forced)."""

    def __init__(self, mode: str, enabled: bool):
        self.on = enabled and (mode == "on" or (mode == "auto" and sys.stderr.isatty()))

    def update(self, text: str) -> None:
        if self.on:
            sys.stderr.write("\r" + text[:160].ljust(160))
            sys.stderr.flush()

    def done(self) -> None:
        if self.on:
            sys.stderr.write("\n")


def write_cost(run_dir: Path, state: dict, cfg: Config, d: distributed.Dist, device: str, epochs_done: float) -> dict:
    wall = state["train_seconds"] + state["eval_seconds"]
    hours = wall * d.world / 3600.0
    cost = {
        "wall_seconds": round(wall, 3),
        "train_seconds": round(state["train_seconds"], 3),
        "eval_seconds": round(state["eval_seconds"], 3),
        "epochs": round(epochs_done, 4),
        "seconds_per_epoch": round(state["train_seconds"] / epochs_done, 3) if epochs_done else None,
        "device": device,
        "devices": d.world,
        "device_hours": round(hours, 8),
        "price_per_device_hour": cfg.train.price_per_device_hour,
        "dollars": round(hours * cfg.train.price_per_device_hour, 6),
    }
    (run_dir / "cost.json").write_text(json.dumps(cost, indent=2) + "\n")
    return cost


# ---------------------------------------------------------------------------------------------------
# Checkpoints
# ---------------------------------------------------------------------------------------------------


def _space_id(space: Space) -> dict:
    return {"name": space.name, "width_mult": space.width_mult, "resolutions": list(space.resolutions),
            "num_classes": space.num_classes, "in_channels": space.in_channels}


def checkpoint_state(net, opt, strategy, teacher, state, cfg, space) -> dict:
    rng = {"torch": torch.get_rng_state(), "python": random.getstate()}
    if torch.cuda.is_available():
        rng["cuda"] = torch.cuda.get_rng_state_all()
    return {
        "config": to_dict(cfg),
        "space": _space_id(space),
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
    ck = load_checkpoint(path, map_location=device)
    if ck["space"] != _space_id(space):
        raise CheckpointError(
            f"checkpoint {path} was trained on space {ck['space']}; this run builds {_space_id(space)}"
        )
    saved_cfg = config_from_dict(ck["config"])
    if to_dict(saved_cfg)["strategy"] != to_dict(cfg)["strategy"] or saved_cfg.train.epochs != cfg.train.epochs:
        raise CheckpointError(f"checkpoint {path} belongs to a run with another strategy or length; resume it with "
                              "its own config.yaml")
    try:
        net.load_state_dict(ck["model"])
    except RuntimeError as e:
        raise CheckpointError(f"checkpoint {path} does not fit this supernet: {str(e).splitlines()[0]}") from None
    opt.load_state_dict(ck["optimizer"])
    strategy.load_state_dict(ck["strategy"])
    teacher = None
    if ck.get("teacher") is not None:
        teacher = copy.deepcopy(net).requires_grad_(False).eval()
        teacher.load_state_dict(ck["teacher"])
    torch.set_rng_state(ck["rng"]["torch"].cpu())
    random.setstate(_as_tuple(ck["rng"]["python"]))
    if "cuda" in ck["rng"] and torch.cuda.is_available():
        torch.cuda.set_rng_state_all([s.cpu() for s in ck["rng"]["cuda"]])
    return dict(ck["state"]), teacher


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


def threading_is_main() -> bool:
    import threading

    return threading.current_thread() is threading.main_thread()


def train(cfg: Config, run_dir: str | Path | None = None, *, resume: bool = False) -> dict[str, Any]:
    """Train (or resume) the run in ``run_dir`` (default: ``train.out_dir/<name>-<timestamp>``, the same on
    every rank); returns a summary dict. Rank 0 writes all files."""
    d = distributed.setup(cfg.train.device)
    try:
        if run_dir is None:
            run_dir = Path(cfg.train.out_dir) / d.broadcast_str(default_run_name(cfg))
        return _train(cfg, Path(run_dir), resume, d)
    finally:
        distributed.teardown(d)


def _train(cfg: Config, run_dir: Path, resume: bool, d: distributed.Dist) -> dict[str, Any]:
    t_cfg = cfg.train
    threads = t_cfg.threads or max(1, (os.cpu_count() or 1) // d.local_world)
    torch.set_num_threads(threads)
    if t_cfg.batch_size % (d.world * t_cfg.micro_batches):
        raise ValueError(f"train.batch_size: {t_cfg.batch_size} is not divisible by {d.world} ranks x "
                         f"{t_cfg.micro_batches} micro-batches")
    ckpt_path = run_dir / "checkpoints" / "last.pt"
    if resume and not ckpt_path.is_file():
        raise CheckpointError(f"--resume: no checkpoint at {ckpt_path}")
    if not resume and ckpt_path.exists():
        raise ValueError(f"run directory {run_dir} already holds a checkpoint; use --resume or another --name")

    space0 = build_space(cfg)
    data = build_data(cfg, cfg.data.image_size or max(space0.resolutions))
    space = space0.with_io(num_classes=data.num_classes, in_channels=data.in_channels)
    fmt = torch.channels_last if t_cfg.channels_last else torch.contiguous_format
    net: Supernet = build_supernet(space, dropout=cfg.model.dropout, kernel_transform=cfg.model.kernel_transform,
                                   seed=t_cfg.seed).to(device=d.device, memory_format=fmt)
    opt = build_optimizer(net, cfg)
    spe = data.train.steps_per_epoch
    o = cfg.optim
    schedule = Schedule(t_cfg.epochs, spe, o.lr, int(round(o.warmup_epochs * spe)), o.min_lr)
    strategy = get_strategy(cfg.strategy, space, schedule, t_cfg.seed)
    lr_at = strategy.lr_at
    teacher: nn.Module | None = None
    state = {"step": 0, "train_seconds": 0.0, "eval_seconds": 0.0, "steps_per_epoch": spe}
    if resume:
        state, teacher = restore(ckpt_path, net, opt, strategy, cfg, space, d.device)
        if state["steps_per_epoch"] != spe:
            raise CheckpointError(f"checkpoint {ckpt_path}: {state['steps_per_epoch']} steps per epoch, this data "
                                  f"gives {spe}; the dataset or batch size changed")
    d.broadcast_module(net)
    if d.is_main:
        run_dir.mkdir(parents=True, exist_ok=True)
        (run_dir / "config.yaml").write_text(to_yaml(cfg))
    metrics = Metrics(run_dir, d.is_main, t_cfg.tensorboard, state["step"] if resume else None)
    dev_name = device_name(d.device, threads)
    if d.is_main and not resume:
        metrics.write({"event": "start", "step": 0, "space": _space_id(space), "steps_per_epoch": spe,
                       "epochs": t_cfg.epochs, "device": dev_name, "devices": d.world,
                       "macs_full": space.macs(space.max()), "macs_min": space.macs(space.min())})

    per_rank = t_cfg.batch_size // d.world
    rows = slice(d.rank * per_rank, (d.rank + 1) * per_rank)
    params = [p for g in opt.param_groups for p in g["params"]]
    use_amp = t_cfg.amp == "bf16"
    autocast = lambda: torch.autocast(d.device.type, dtype=torch.bfloat16, enabled=use_amp)  # noqa: E731
    progress = Progress(t_cfg.progress, d.is_main)
    total = schedule.total_steps
    t = state["step"]
    log = _LogWindow()
    last_phase = None
    summary: dict[str, Any] = {"run_dir": str(run_dir), "stopped": False}

    saved_at = [t if resume else -1]

    def save(tag: str | None = None) -> None:
        saved_at[0] = t
        if d.is_main:
            ck = checkpoint_state(net, opt, strategy, teacher, state, cfg, space)
            save_checkpoint(ckpt_path, ck)
            if tag is not None:
                save_checkpoint(run_dir / "checkpoints" / f"{tag}.pt", ck)
        d.barrier()

    def validate(epoch_done: float, final: bool = False) -> None:
        tic = time.perf_counter()
        if d.is_main:
            row = {"event": "eval", "step": t, "epoch": round(epoch_done, 4)}
            if final:
                row["final"] = True
            val = data.val_full if final else data.val
            for role, arch in (("full", space.max()), ("min", space.min())):
                row[f"acc_{role}"] = round(evaluate_arch(net, arch, data.bn, val, bn_images=cfg.data.bn_images,
                                                         device=d.device, memory_format=fmt), 4)
                row[f"macs_{role}"] = space.macs(arch)
            row["images"] = len(val.ds)
            row["seconds"] = round(time.perf_counter() - tic, 3)
            metrics.write(row)
            summary.update({k: v for k, v in row.items() if k.startswith("acc_")})
        d.barrier()
        state["eval_seconds"] += time.perf_counter() - tic

    with _StopFlag() as stop:
        while t < total:
            epoch, start = divmod(t, spe)
            batches = data.train.epoch_batches(epoch, start, rows)
            tic = time.perf_counter()
            for x, y in batches:
                got = time.perf_counter()
                plan = strategy.plan(t)
                if plan.phase != last_phase:
                    metrics.write({"event": "phase", "step": t, "epoch": round(t / spe, 4), "phase": plan.phase})
                    last_phase = plan.phase
                if plan.reorganize:  # OFA's channel sort; momentum follows its parameters
                    permute_optimizer_state(opt, net.reorganize_channels())
                if plan.snapshot_teacher:  # OFA-PS: the trained full model teaches every later phase
                    teacher = copy.deepcopy(net).requires_grad_(False).eval()
                if plan.reset_momentum:  # a new phase starts like a new job
                    opt.state.clear()
                for g in opt.param_groups:
                    g["lr"] = lr_at(t)
                torch.manual_seed(derive_seed(t_cfg.seed, "dropout", t, d.rank))  # dropout: f(seed, step, rank)
                x = x.to(d.device, non_blocking=True).contiguous(memory_format=fmt)
                y = y.to(d.device, non_blocking=True)
                losses = train_step(
                    net, plan, x, y, opt, label_smoothing=o.label_smoothing,
                    temperature=cfg.strategy.kd_temperature, kd_label_weight=cfg.strategy.kd_label_weight,
                    kd_ratio=cfg.strategy.kd_ratio, micro_batches=t_cfg.micro_batches, teacher_net=teacher,
                    sync_grads=lambda: d.sync_grads(params), grad_clip=o.grad_clip, autocast=autocast,
                )
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
                    progress.update(f"epoch {t / spe:6.2f}/{t_cfg.epochs} step {t}/{total} "
                                    f"loss {row.get('loss_full', float('nan')):.3f} eps {plan.eps:.3g} "
                                    f"lr {row['lr']:.3g} {row['img_per_s']:.0f} img/s")
                end_of_epoch = t % spe == 0
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
                if stop.raised is not None or (t_cfg.stop_after_steps is not None and t >= t_cfg.stop_after_steps):
                    summary["stopped"] = True
                    break
                if end_of_epoch:
                    break  # next epoch: new batch iterator
            if summary["stopped"]:
                if saved_at[0] != t:
                    save()
                break
    progress.done()
    summary.update(step=t, epochs=t / spe)
    if d.is_main:
        summary["cost"] = write_cost(run_dir, state, cfg, d, dev_name, t / spe)
        metrics.write({"event": "end" if t == total else "stopped", "step": t, "epoch": round(t / spe, 4),
                       **{k: summary[k] for k in ("acc_full", "acc_min") if k in summary}})
    metrics.close()
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

    def flush(self) -> dict[str, float]:
        row = {f"loss_{k}": round(sum(v) / len(v), 5) for k, v in self.losses.items()}
        row["img_per_s"] = round(self.images / self.seconds, 2) if self.seconds else 0.0
        row["data_wait"] = round(self.wait / self.seconds, 4) if self.seconds else 0.0
        self.reset()
        return row

