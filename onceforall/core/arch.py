"""Architectures (archs): one point of a search space, a frozen hashable value with a short string form.

    r32_k3e4-k5e6_k7e3-k3e3-k5e6_...      r<resolution>, then one '_'-separated group per stage,
                                          one '-'-separated 'k<kernel>e<expand>' per active block

Blocks beyond a stage's depth do not exist in an arch, so two archs that build the same network are
equal. Also the channel rules every network of the package shares (OFA's ``make_divisible``).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

__all__ = ["Arch", "fmt_number", "make_divisible", "mid_channels", "norm_number", "parse_arch", "se_channels"]

CHANNEL_DIVISIBLE = 8
SE_REDUCTION = 4

def make_divisible(v: float, divisor: int = CHANNEL_DIVISIBLE, min_val: int | None = None) -> int:
    """Round ``v`` to a multiple of ``divisor`` without going down by more than 10 % (TF/OFA rule)."""
    min_val = divisor if min_val is None else min_val
    new_v = max(min_val, int(v + divisor / 2) // divisor * divisor)
    if new_v < 0.9 * v:
        new_v += divisor
    return new_v


def mid_channels(in_channels: int, expand: float) -> int:
    """Middle (expanded) channels of an inverted-residual block: OFA's make_divisible(round(in * e))."""
    return make_divisible(round(in_channels * expand))


def se_channels(mid: int) -> int:
    """Hidden channels of the squeeze-and-excitation module for ``mid`` channels."""
    return make_divisible(mid // SE_REDUCTION)


def fmt_number(x: float) -> str:
    return f"{x:g}"


def norm_number(x: float) -> float:
    """Canonical expand value: ints stay ints (3, not 3.0) so str/JSON forms are stable."""
    x = float(x)
    return int(x) if x.is_integer() else x


# ----------------------------------------------------------------------------------------------------
# Arch
# ----------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Arch:
    """One architecture: resolution, and per elastic stage the kernel and expand of each active block.

    ``kernels[s][b]`` and ``expands[s][b]`` belong to block ``b`` of stage ``s``; the depth of stage
    ``s`` is ``len(kernels[s])``. Frozen and hashable: use it as a dict key (accuracy caches) or in sets.
    """

    resolution: int
    kernels: tuple[tuple[int, ...], ...]
    expands: tuple[tuple[float, ...], ...]

    def __post_init__(self) -> None:
        kernels = tuple(tuple(int(k) for k in stage) for stage in self.kernels)
        expands = tuple(tuple(norm_number(e) for e in stage) for stage in self.expands)
        if len(kernels) != len(expands):
            raise ValueError(
                f"arch: kernels has {len(kernels)} stages but expands has {len(expands)}; they must match"
            )
        for s, (ks, es) in enumerate(zip(kernels, expands)):
            if len(ks) != len(es):
                raise ValueError(
                    f"arch: stage {s} has {len(ks)} kernels but {len(es)} expands; they must match"
                )
        object.__setattr__(self, "resolution", int(self.resolution))
        object.__setattr__(self, "kernels", kernels)
        object.__setattr__(self, "expands", expands)

    @property
    def depths(self) -> tuple[int, ...]:
        """Number of active blocks per elastic stage."""
        return tuple(len(k) for k in self.kernels)

    def __str__(self) -> str:
        stages = (
            "-".join(f"k{k}e{fmt_number(e)}" for k, e in zip(ks, es)) for ks, es in zip(self.kernels, self.expands)
        )
        return "_".join([f"r{self.resolution}", *stages])

    def __repr__(self) -> str:
        return f"Arch('{self}')"

    def to_json(self) -> dict[str, Any]:
        """JSON form: ``{"resolution", "depths", "kernels", "expands"}`` (depths is informative)."""
        return {
            "resolution": self.resolution,
            "depths": list(self.depths),
            "kernels": [list(k) for k in self.kernels],
            "expands": [list(e) for e in self.expands],
        }

    def to_ofa_config(self, space: Any) -> dict[str, list]:
        """This arch in OFA's ``{"ks", "e", "d", "r"}`` format for the network of ``space`` (its block slots):
        ``space.to_ofa_config(self)``, spelled as OFA users look for it."""
        return space.to_ofa_config(self)

    @classmethod
    def from_json(cls, obj: Mapping[str, Any]) -> Arch:
        """Inverse of :meth:`to_json`; raises ValueError naming the missing or inconsistent field."""
        for key in ("resolution", "kernels", "expands"):
            if key not in obj:
                raise ValueError(f"arch JSON: missing field '{key}'; expected resolution, kernels, expands")
        arch = cls(obj["resolution"], tuple(map(tuple, obj["kernels"])), tuple(map(tuple, obj["expands"])))
        if "depths" in obj and tuple(obj["depths"]) != arch.depths:
            raise ValueError(
                f"arch JSON: depths {list(obj['depths'])} disagree with the kernels given "
                f"(which imply {list(arch.depths)})"
            )
        return arch


_BLOCK_RE = re.compile(r"^k(\d+)e(\d+(?:\.\d+)?)$")
_RES_RE = re.compile(r"^r(\d+)$")


def parse_arch(text: str) -> Arch:
    """Parse the string form of an arch (no space check; :meth:`Space.parse` also validates)."""
    if not isinstance(text, str) or not text.strip():
        raise ValueError(f"arch {text!r}: expected a string like 'r32_k3e4-k5e6_k7e3-k3e3'")
    text = text.strip()
    parts = text.split("_")
    m = _RES_RE.match(parts[0])
    if m is None:
        raise ValueError(f"arch '{text}': field 'resolution' must start the string as 'r<pixels>', got '{parts[0]}'")
    kernels, expands = [], []
    for s, group in enumerate(parts[1:]):
        if not group:
            raise ValueError(f"arch '{text}': stage {s} is empty; a stage needs at least one 'k<kernel>e<expand>'")
        ks, es = [], []
        for b, block in enumerate(group.split("-")):
            mb = _BLOCK_RE.match(block)
            if mb is None:
                raise ValueError(
                    f"arch '{text}': stage {s} block {b} is '{block}'; expected 'k<kernel>e<expand>' like 'k3e4'"
                )
            ks.append(int(mb.group(1)))
            es.append(float(mb.group(2)))
        kernels.append(tuple(ks))
        expands.append(tuple(es))
    if not kernels:
        raise ValueError(f"arch '{text}': no stages after the resolution; expected 'r<pixels>_<stage>_<stage>...'")
    return Arch(int(m.group(1)), tuple(kernels), tuple(expands))

