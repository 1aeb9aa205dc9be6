"""When the training loop logs, validates and checkpoints: one object for the five cadences of ``train``."""

from __future__ import annotations

from dataclasses import dataclass

from .config import TrainConfig

__all__ = ["Cadence", "Due"]


@dataclass(frozen=True)
class Due:
    """What is due after a step."""

    evaluate: bool = False
    final: bool = False
    """The last step: the evaluation is on the whole test split."""
    checkpoint: bool = False
    keep_epoch: int | None = None
    """The checkpoint is also kept as this epoch's (train.keep_checkpoints; :meth:`RunDir.epoch_checkpoint`)."""


@dataclass(frozen=True)
class Cadence:
    """The cadences of ``train``: a step row every ``log_every`` steps and at the end; at an epoch end a
    validation every ``eval_every`` epochs and a checkpoint every ``checkpoint_every`` epochs (both at the last
    step); between epoch ends, every ``eval_every_steps`` / ``checkpoint_every_steps`` steps (0: never)."""

    steps_per_epoch: int
    total: int
    log_every: int
    eval_every: int
    checkpoint_every: int
    eval_every_steps: int
    checkpoint_every_steps: int
    keep_checkpoints: bool

    @classmethod
    def of(cls, t: TrainConfig, steps_per_epoch: int, total: int) -> Cadence:
        return cls(steps_per_epoch, total, t.log_every, t.eval_every, t.checkpoint_every,
                   t.eval_every_steps, t.checkpoint_every_steps, t.keep_checkpoints)

    def log(self, t: int) -> bool:
        """Whether step ``t`` (counted from 1) writes a step row."""
        return t % self.log_every == 0 or t == self.total

    def epoch_end(self, t: int) -> bool:
        return t % self.steps_per_epoch == 0

    def after(self, t: int) -> Due:
        """What is due once ``t`` steps are done."""
        if self.epoch_end(t) or t == self.total:
            done = t // self.steps_per_epoch
            final = t == self.total
            save = done % self.checkpoint_every == 0 or final
            return Due(evaluate=final or bool(self.eval_every and done % self.eval_every == 0), final=final,
                       checkpoint=save, keep_epoch=done if save and self.keep_checkpoints else None)
        return Due(evaluate=bool(self.eval_every_steps and t % self.eval_every_steps == 0),
                   checkpoint=bool(self.checkpoint_every_steps and t % self.checkpoint_every_steps == 0))
