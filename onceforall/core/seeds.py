"""Seeds that are pure functions of their parts: every random choice of a run (batch order, augmentation,
sampled archs, dropout, evaluation subsets) derives from (seed, what, step[, rank]), never from global RNG
state, so resumed and distributed runs reproduce it exactly."""

from __future__ import annotations

import hashlib

__all__ = ["derive_seed", "dropout_seed"]


def derive_seed(*parts: object) -> int:
    """A 60-bit seed that is a pure function of ``parts`` (stable across processes and Python runs)."""
    return int(hashlib.sha256(":".join(str(p) for p in parts).encode()).hexdigest()[:15], 16)


def dropout_seed(seed: int, step: int, rank: int = 0) -> int:
    """The global torch seed set before step ``step`` on ``rank``: dropout masks are f(seed, step, rank)."""
    return derive_seed(seed, "dropout", step, rank)
