"""Candidate subnets of an evaluation: the fixed ends and uniform archs, then skewed random draws until every MACs
bucket of the space's range holds the candidates asked for (OFA's uniform sampler alone almost never reaches the
top buckets)."""

from __future__ import annotations

import dataclasses
import random

from ..core.arch import Arch
from ..core.pareto import bucket_index
from ..core.space import Space

__all__ = ["SKEWS", "candidate_archs", "new_in_bucket"]

SKEWS = tuple(round(-1.0 + 0.1 * i, 1) for i in range(21))
"""The skews of :meth:`Space.sample` the draws cycle through, from -1 (small archs) to 1 (large ones)."""


def candidate_archs(space: Space, *, per_bucket: int = 10, uniform: bool = True, buckets: int = 6, seed: int = 0,
                    max_draws: int = 50000) -> list[Arch]:
    """Archs to evaluate: min, max (at every resolution), the uniform archs (every kernel x expand x depth at
    the largest resolution), then random archs until each of the ``buckets`` MACs buckets holds ``per_bucket``
    candidates (the fixed ones count), drawn with skews from -1 to 1 in turn so that every part of the range
    is reached (uniform draws alone rarely reach the top buckets). A bucket that ``max_draws`` draws cannot
    fill (a small restricted space) keeps what they found."""
    rng = random.Random(f"candidates:{seed}")
    archs = [space.min(), space.max()]
    for r in space.resolutions:
        archs += [dataclasses.replace(space.min(), resolution=r), dataclasses.replace(space.max(), resolution=r)]
    if uniform:
        st = next((s for s in space.stages if len(s.depths) > 1), space.stages[0])
        for k in st.kernels:
            for e in st.expands:
                for d in st.depths:
                    archs.append(space.uniform(k, e, d))
    archs = [a for a in dict.fromkeys(archs) if space.contains(a)]
    lo, hi = space.macs_range()
    counts = [0] * buckets
    for a in archs:
        counts[bucket_index(space.macs(a), lo, hi, buckets)] += 1
    seen = set(archs)
    for i in range(max_draws):
        if min(counts) >= per_bucket:
            break
        a = space.sample(rng, SKEWS[i % len(SKEWS)])
        b = bucket_index(space.macs(a), lo, hi, buckets)
        if a not in seen and counts[b] < per_bucket:
            archs.append(a)
            seen.add(a)
            counts[b] += 1
    return archs


def new_in_bucket(space: Space, results: list, b: int, buckets: int, known: set[Arch], n: int) -> list[Arch]:
    """The first ``n`` archs of ``results`` ((arch, score, cost) rows) in MACs bucket ``b`` that are not ``known``."""
    lo, hi = space.macs_range()
    return [a for a, *_ in results if a not in known and bucket_index(space.macs(a), lo, hi, buckets) == b][:n]
