"""What a run carries from one step to the next, and the checkpoint that holds it.

:class:`TrainState` is the run's position (step, seconds, MACs counters) and its frozen teacher; the network, the
optimizer and the strategy keep their own state. :func:`checkpoint_payload` writes all of it (plus the RNG states
and the config) as one checkpoint; :func:`resume_state` reads it back for ``train --resume``, and
:func:`restore_weights` (model, optimizer, teacher) is the part that ``analyze-gradients`` replays from.
:func:`step_once` is one step of the loop, which training and the gradient replay both take.

Nothing here is random without a seed: the dropout of step t is seeded from (seed, t, rank), and the global RNG
states are saved only because third-party code may draw from them.
"""

from __future__ import annotations

import contextlib
import random
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ..core.arch import Arch
from ..core.cost import eval_macs, step_macs
from ..core.seeds import dropout_seed
from ..core.space import Space
from ..core.step import begin_step, frozen_copy, train_step
from ..core.strategies import Plan, Strategy
from .checkpoint import CheckpointError, load_checkpoint, load_model_state
from .config import Config, config_from_dict, to_dict

__all__ = ["RESUME_SAFE", "StepResult", "TrainState", "check_resume_config", "checkpoint_payload", "cost_summary",
           "restore_weights", "resume_differences", "resume_state", "step_once"]


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


@dataclass
class TrainState:
    """The run's position and counters (checkpointed as ``state``) and its frozen teacher (``teacher``)."""

    steps_per_epoch: int
    step: int = 0
    train_seconds: float = 0.0
    eval_seconds: float = 0.0
    train_macs: int | None = 0
    """MACs of training so far, teacher forwards included; None for a run resumed from a checkpoint older than
    the MACs accounting (a partial count would understate the cost)."""
    teacher_macs: int | None = 0
    eval_macs: int | None = 0
    """MACs of validating during training (BN recalibration and evaluation forwards), kept apart."""
    cpu_seconds: float | None = 0.0
    """CPU seconds of the training process (all its threads; rank 0's under torchrun) up to when this state was made
    or loaded, over every resume: unlike the wall seconds, time the process spent paused (a SIGSTOP for a timing) or
    waiting for a core does not count. None for a run resumed from a checkpoint older than this counter."""
    teacher: nn.Module | None = None
    cpu_mark: float = field(default_factory=time.process_time, repr=False, compare=False)
    """``time.process_time()`` when this state was made or loaded."""

    def cpu_now(self) -> float | None:
        """The CPU seconds so far (``cpu_seconds`` plus this process's since ``cpu_mark``); None when unknown."""
        return None if self.cpu_seconds is None else self.cpu_seconds + time.process_time() - self.cpu_mark

    def counters(self) -> dict[str, Any]:
        """The checkpoint's ``state`` entry (the key order checkpoints have always had; newer counters last)."""
        return {"step": self.step, "train_seconds": self.train_seconds, "eval_seconds": self.eval_seconds,
                "steps_per_epoch": self.steps_per_epoch, "train_macs": self.train_macs,
                "teacher_macs": self.teacher_macs, "eval_macs": self.eval_macs, "cpu_seconds": self.cpu_now()}

    @classmethod
    def from_counters(cls, saved: dict[str, Any], teacher: nn.Module | None) -> TrainState:
        """The state a checkpoint's ``state`` entry holds; MACs counters it lacks are unknown (None)."""
        return cls(steps_per_epoch=saved["steps_per_epoch"], step=saved["step"],
                   train_seconds=saved["train_seconds"], eval_seconds=saved["eval_seconds"],
                   train_macs=saved.get("train_macs"), teacher_macs=saved.get("teacher_macs"),
                   eval_macs=saved.get("eval_macs"), cpu_seconds=saved.get("cpu_seconds"), teacher=teacher)

    def add_step_macs(self, space: Space, plan: Plan, images: int) -> None:
        """Count one step (:func:`~onceforall.core.cost.step_macs`) on the global batch of ``images``; the
        counters are checkpointed, so a resumed run keeps counting from the exact total."""
        if self.train_macs is None:
            return
        trained, teacher = step_macs(space, plan, images)
        self.train_macs += trained + teacher
        self.teacher_macs += teacher

    def add_eval_macs(self, space: Space, arch: Arch, images: int) -> None:
        """Count evaluating ``arch`` on ``images`` images (forwards only)."""
        if self.eval_macs is not None:
            self.eval_macs += eval_macs(space, arch, images)


def checkpoint_payload(state: TrainState, net: nn.Module, opt: torch.optim.Optimizer, strategy: Strategy,
                       cfg: Config, space: Space) -> dict[str, Any]:
    """Everything a resume needs, as tensors and plain values (see :mod:`onceforall.run.checkpoint`)."""
    rng = {"torch": torch.get_rng_state(), "python": random.getstate()}
    if torch.cuda.is_available():
        rng["cuda"] = torch.cuda.get_rng_state_all()
    return {
        "config": to_dict(cfg),
        "space": space.identity(),
        "eval_space": strategy.trained_space().identity(),
        "model": net.state_dict(),
        "optimizer": opt.state_dict(),
        "scheduler": {"step": state.step},
        "strategy": strategy.state_dict(),
        "teacher": state.teacher.state_dict() if state.teacher is not None else None,
        "rng": rng,
        "data": {"epoch": state.step // state.steps_per_epoch, "index": state.step % state.steps_per_epoch},
        "state": state.counters(),
    }


def restore_weights(ck: dict[str, Any], net: nn.Module, opt: torch.optim.Optimizer,
                    path: Path) -> nn.Module | None:
    """Load a checkpoint's model and optimizer state into ``net`` and ``opt``; returns its teacher (a frozen
    copy of ``net`` with the saved weights), or None. Resuming and the gradient replay both restore this way."""
    load_model_state(net, ck["model"], path)
    opt.load_state_dict(ck["optimizer"])
    if ck.get("teacher") is None:
        return None
    teacher = frozen_copy(net)
    teacher.load_state_dict(ck["teacher"])
    return teacher


def resume_state(path: Path, net: nn.Module, opt: torch.optim.Optimizer, strategy: Strategy, cfg: Config,
                 space: Space, device: torch.device | str) -> TrainState:
    """Restore a run from its checkpoint: weights, optimizer, strategy, RNG states; returns its state. Refused
    (:class:`CheckpointError`) for a config that changed outside the resume-safe fields."""
    ck = load_checkpoint(path, map_location=device, space=space)
    check_resume_config(config_from_dict(ck["config"]), cfg, path)
    teacher = restore_weights(ck, net, opt, path)
    strategy.load_state_dict(ck["strategy"])
    torch.set_rng_state(ck["rng"]["torch"].cpu())
    random.setstate(_as_tuple(ck["rng"]["python"]))
    if "cuda" in ck["rng"] and torch.cuda.is_available():
        torch.cuda.set_rng_state_all([s.cpu() for s in ck["rng"]["cuda"]])
    return TrainState.from_counters(ck["state"], teacher)


RESUME_SAFE: dict[str, str] = {
    "name": "the default run name (a resumed run keeps its directory)",
    "train.log_every": "how often step rows are written",
    "train.progress": "the progress line",
    "train.tensorboard": "an extra sink for the same rows",
    "train.threads": "CPU threads (same arithmetic)",
    "train.depthwise_grad": "the depthwise weight-gradient kernel (same math, the last bits differ)",
    "train.device": "where the run continues (another device may differ in the last bits)",
    "train.out_dir": "the folder the run directory sits in (moved runs)",
    "train.eval_every": "validation cadence (validation does not touch training state)",
    "train.eval_every_steps": "validation cadence",
    "train.checkpoint_every": "checkpoint cadence",
    "train.checkpoint_every_steps": "checkpoint cadence",
    "train.keep_checkpoints": "extra checkpoint copies",
    "train.stop_after_steps": "where this invocation stops (not kept in config.yaml)",
    "train.price_per_device_hour": "the rate cost.json uses",
    "train.init_from": "read only when a run starts",
    "data.root": "where the same images are (a moved dataset)",
    "data.workers": "data loading processes (same batches)",
    "data.eval_batch_size": "batch size of validation passes",
    "data.bn_batch_size": "batch size of the BN recalibration before validation (not training state)",
}
"""Fields a resumed run may change, with why: they do not change what the run computes. ``train --resume``
accepts overrides of these only, and refuses a checkpoint whose config differs from config.yaml in any other
field (an edited lr, seed or label smoothing would silently train on at the new value)."""


def _flat(data: dict, prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in data.items():
        if isinstance(v, dict):
            out.update(_flat(v, f"{prefix}{k}."))
        else:
            out[f"{prefix}{k}"] = v
    return out


def resume_differences(saved: Config, now: Config) -> list[tuple[str, Any, Any]]:
    """(field, saved value, new value) for every field outside :data:`RESUME_SAFE` in which ``now`` differs from
    ``saved`` (a checkpoint's config), in field order."""
    a, b = _flat(to_dict(saved)), _flat(to_dict(now))
    return [(k, a.get(k), b.get(k)) for k in dict.fromkeys([*a, *b])
            if k not in RESUME_SAFE and a.get(k) != b.get(k)]


def check_resume_config(saved: Config, cfg: Config, path: Path) -> None:
    """Refuse to resume with a config that differs from the checkpoint's outside the resume-safe fields
    (:data:`RESUME_SAFE`), naming the first such field and both values."""
    diff = resume_differences(saved, cfg)
    if diff:
        key, old, new = diff[0]
        more = f" (and {len(diff) - 1} more field{'s' if len(diff) > 2 else ''})" if len(diff) > 1 else ""
        raise CheckpointError(f"resume: {key} is {new!r} in config.yaml but {old!r} in checkpoint {path}{more}; a "
                              "resumed run keeps its config (only log, progress, thread, device, path and cadence "
                              "fields may change): put the value back, or start a new run from its weights with "
                              "--init-from")


def _as_tuple(x: Any) -> Any:
    return tuple(_as_tuple(v) for v in x) if isinstance(x, (list, tuple)) else x


def cost_summary(state: TrainState, *, epochs_done: float, device: str, devices: int, threads: int,
                 price_per_device_hour: float) -> dict[str, Any]:
    """The run's cost.json: seconds, epochs, MACs (None when unknown), device-hours and dollars; ``threads`` is
    the CPU threads per process (``cpu_seconds`` / ``threads`` is the time the training had a core per thread)."""
    wall = state.train_seconds + state.eval_seconds
    hours = wall * devices / 3600.0
    return {
        "wall_seconds": round(wall, 3),
        "train_seconds": round(state.train_seconds, 3),
        "eval_seconds": round(state.eval_seconds, 3),
        "cpu_seconds": None if (cpu := state.cpu_now()) is None else round(cpu, 3),
        "threads": threads,
        "epochs": round(epochs_done, 4),
        "train_macs": state.train_macs, "teacher_macs": state.teacher_macs, "eval_macs": state.eval_macs,
        "seconds_per_epoch": round(state.train_seconds / epochs_done, 3) if epochs_done else None,
        "device": device,
        "devices": devices,
        "device_hours": round(hours, 8),
        "price_per_device_hour": price_per_device_hour,
        "dollars": round(hours * price_per_device_hour, 6),
    }
