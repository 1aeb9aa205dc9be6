"""Search spaces, declared apart from any network.

A :class:`Space` is the set of architectures a supernet can run: a fixed skeleton (stem, first block,
head) and elastic stages, each with choices of depth, and per block of kernel size and expand ratio,
plus input resolutions (and an optional CompOFA coupling of depth and expand). Analytic MACs and
parameter counts follow OFA's convention (conv + linear multiply-accumulates, nothing for BN,
activations, pooling or resizing) and are computed from lookup tables built once per resolution, so
``space.macs(a)`` costs a few dictionary lookups. The registered spaces are in :mod:`.registry`.
"""

from __future__ import annotations

import dataclasses
import math
import random
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, NamedTuple, Union

import torch

from . import ofa_config
from .arch import Arch, fmt_number, mid_channels, norm_number, parse_arch, se_channels

__all__ = ["ACTIVATIONS", "BlockShape", "HeadConv", "Rng", "Space", "Stage", "block_macs", "block_params", "iter_archs"]

ACTIVATIONS = ("relu", "relu6", "hswish")

Rng = Union[random.Random, torch.Generator]

# ----------------------------------------------------------------------------------------------------
# Space
# ----------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Stage:
    """An elastic stage: up to ``max(depths)`` inverted-residual blocks of output width ``width``."""

    width: int
    """Output channels of every block in the stage (after the width multiplier)."""
    stride: int
    """Stride of the first block (the others use 1)."""
    act: str
    """Activation: one of relu, relu6, hswish."""
    se: bool
    """Squeeze-and-excitation after the depthwise conv."""
    depths: tuple[int, ...]
    """Depth choices (number of active blocks)."""
    kernels: tuple[int, ...]
    """Depthwise kernel-size choices, per block."""
    expands: tuple[float, ...]
    """Expand-ratio choices, per block (middle channels = make_divisible(round(in * e)))."""


@dataclass(frozen=True)
class HeadConv:
    """A 1x1 conv of the head, before or after global pooling."""

    width: int
    after_pool: bool
    bn: bool
    act: str


class BlockShape(NamedTuple):
    """Concrete shape of one inverted-residual block (shared by MACs, the supernet and subnets)."""

    in_ch: int
    mid: int
    out: int
    kernel: int
    stride: int
    act: str
    se: bool
    has_expand: bool
    residual: bool


@dataclass(frozen=True)
class Space:
    """A search space: fixed skeleton + elastic stages + resolutions (+ optional CompOFA coupling).

    Create with :func:`get_space`; derive phase and coupling spaces with :meth:`restrict`. All archs of
    a restricted space run on the supernet built from the space it was restricted from (same skeleton).
    """

    name: str
    width_mult: float
    resolutions: tuple[int, ...]
    stem_width: int
    stem_stride: int
    stem_act: str
    first_block_width: int
    first_block_stride: int
    first_block_act: str
    stages: tuple[Stage, ...]
    head: tuple[HeadConv, ...]
    bn_eps: float = 1e-5
    bn_momentum: float = 0.1
    num_classes: int = 1000
    in_channels: int = 3
    coupling: tuple[tuple[int, float], ...] | None = None
    """CompOFA: depth -> expand of every block of a stage with that depth (None: independent)."""
    restricted: bool = field(default=False, compare=False)
    """True for a space made by :meth:`restrict` with fewer stage choices (or a coupling) than the registered
    one; its identity then records the choices."""
    _tables: dict = field(default_factory=dict, compare=False, hash=False, repr=False)

    # ---- basic choices --------------------------------------------------------------------------

    @property
    def num_stages(self) -> int:
        return len(self.stages)

    @property
    def max_depths(self) -> tuple[int, ...]:
        return tuple(max(st.depths) for st in self.stages)

    def coupled_expand(self, s: int, depth: int) -> float | None:
        """The expand every block of stage ``s`` must use at ``depth`` (CompOFA coupling), or None if free."""
        if self.coupling is None or len(self.stages[s].depths) < 2:
            return None
        return dict(self.coupling)[depth]

    def max(self) -> Arch:
        """The full model: max resolution, depth, kernel and expand everywhere."""
        return self._extreme(max)

    def min(self) -> Arch:
        """The smallest subnet: min resolution, depth, kernel and expand everywhere."""
        return self._extreme(min)

    def _extreme(self, pick) -> Arch:
        kernels, expands = [], []
        for s, st in enumerate(self.stages):
            d = pick(st.depths)
            e = self.coupled_expand(s, d)
            kernels.append((pick(st.kernels),) * d)
            expands.append((pick(st.expands) if e is None else e,) * d)
        return Arch(pick(self.resolutions), tuple(kernels), tuple(expands))

    def uniform(self, kernel: int, expand: float, depth: int, resolution: int | None = None) -> Arch:
        """The arch with the same kernel/expand/depth in every elastic stage (stages whose choices
        do not include a value keep their nearest choice); resolution defaults to the max."""
        res = max(self.resolutions) if resolution is None else resolution
        kernels, expands = [], []
        for s, st in enumerate(self.stages):
            d = _nearest(st.depths, depth)
            e = self.coupled_expand(s, d)
            kernels.append((_nearest(st.kernels, kernel),) * d)
            expands.append((_nearest(st.expands, expand) if e is None else e,) * d)
        return self.validate(Arch(res, tuple(kernels), tuple(expands)))

    def sample(self, rng: Rng, skew: float = 0.0) -> Arch:
        """A random arch (OFA's distribution): resolution and per-stage depth uniform, then kernel and
        expand uniform per active block. Uses only ``rng`` (random.Random or torch.Generator).

        ``skew`` in [-1, 1] tilts every choice towards the larger (> 0) or smaller (< 0) options: index
        ``floor(n · u ** exp(-3 · skew))`` for u uniform, so skew 1 draws nearly the full model. Uniform
        sampling almost never reaches the top of the MACs range; evaluation covers it with skewed draws.
        """
        if not -1.0 <= skew <= 1.0:
            raise ValueError(f"skew: {skew} is not valid; must be in [-1, 1]")
        pick = _choice if skew == 0.0 else (lambda r, seq: _skewed_choice(r, seq, skew))
        res = pick(rng, self.resolutions)
        kernels, expands = [], []
        for s, st in enumerate(self.stages):
            d = pick(rng, st.depths)
            e = self.coupled_expand(s, d)
            kernels.append(tuple(pick(rng, st.kernels) for _ in range(d)))
            expands.append(tuple(pick(rng, st.expands) for _ in range(d)) if e is None else (e,) * d)
        return Arch(res, tuple(kernels), tuple(expands))

    @property
    def size(self) -> int:
        """Number of distinct archs in the space."""
        total = len(self.resolutions)
        for s, st in enumerate(self.stages):
            per_stage = 0
            for d in st.depths:
                per_block = len(st.kernels) * (1 if self.coupled_expand(s, d) is not None else len(st.expands))
                per_stage += per_block**d
            total *= per_stage
        return total

    # ---- validation and string forms -----------------------------------------------------------

    def validate(self, arch: Arch) -> Arch:
        """Return ``arch`` if it belongs to the space, else raise ValueError naming the field, the value
        and the valid choices."""
        if not isinstance(arch, Arch):
            raise ValueError(f"arch: expected an Arch, got {type(arch).__name__}")
        if arch.resolution not in self.resolutions:
            raise ValueError(
                f"arch '{arch}': resolution {arch.resolution} is not in space '{self.name}'; "
                f"valid: {_list(self.resolutions)}"
            )
        if len(arch.kernels) != self.num_stages:
            raise ValueError(
                f"arch '{arch}': has {len(arch.kernels)} stages; space '{self.name}' has {self.num_stages}"
            )
        for s, (st, ks, es) in enumerate(zip(self.stages, arch.kernels, arch.expands)):
            if len(ks) not in st.depths:
                raise ValueError(
                    f"arch '{arch}': stage {s} depth {len(ks)} is not valid; valid depths: {_list(st.depths)}"
                )
            for b, (k, e) in enumerate(zip(ks, es)):
                if k not in st.kernels:
                    raise ValueError(
                        f"arch '{arch}': stage {s} block {b} kernel {k} is not valid; "
                        f"valid kernels: {_list(st.kernels)}"
                    )
                if e not in st.expands:
                    raise ValueError(
                        f"arch '{arch}': stage {s} block {b} expand {fmt_number(e)} is not valid; "
                        f"valid expands: {_list(st.expands)}"
                    )
            coupled = self.coupled_expand(s, len(ks))
            if coupled is not None and any(e != coupled for e in es):
                raise ValueError(
                    f"arch '{arch}': stage {s} expand {_list(sorted(set(es)))} breaks the coupling of depth "
                    f"{len(ks)}; valid expand: {fmt_number(coupled)} (coupling {self.coupling_str()})"
                )
        return arch

    def contains(self, arch: Arch) -> bool:
        """True if ``arch`` is a point of this space."""
        try:
            self.validate(arch)
        except ValueError:
            return False
        return True

    def parse(self, text: str) -> Arch:
        """Parse and validate the string form; bad text raises ValueError naming the field."""
        return self.validate(parse_arch(text))

    def coupling_str(self) -> str:
        if self.coupling is None:
            return "none"
        return ", ".join(f"d{d}->e{fmt_number(e)}" for d, e in self.coupling)

    # ---- OFA's formats (onceforall.core.ofa_config) -------------------------------------------------

    def to_ofa_config(self, arch: Arch) -> dict[str, list]:
        """``arch`` in OFA's ``{"ks", "e", "d", "r"}`` format (:func:`~onceforall.core.ofa_config.to_ofa_config`)."""
        return ofa_config.to_ofa_config(self, arch)

    def to_ofa_net_config(self, arch: Arch, dropout: float = 0.0) -> dict[str, Any]:
        """OFA's network config of ``arch``'s static subnet (:func:`~onceforall.core.ofa_config.to_ofa_net_config`)."""
        return ofa_config.to_ofa_net_config(self, arch, dropout)

    def from_ofa_config(self, cfg: Mapping[str, Any]) -> Arch:
        """The arch of an OFA config (:func:`~onceforall.core.ofa_config.from_ofa_config`)."""
        return ofa_config.from_ofa_config(self, cfg)

    # ---- restriction ------------------------------------------------------------------------------

    def restrict(
        self,
        *,
        depths: Iterable[int] | Sequence[Iterable[int]] | None = None,
        kernels: Iterable[int] | Sequence[Iterable[int]] | None = None,
        expands: Iterable[float] | Sequence[Iterable[float]] | None = None,
        resolutions: Iterable[int] | None = None,
        coupling: Mapping[int, float] | None = None,
    ) -> Space:
        """A sub-space with fewer choices (OFA-PS phases, CompOFA coupling).

        Each of depths/kernels/expands is either a flat collection (applied to every stage that is
        elastic in that dimension) or a sequence with one collection per stage. Values must be choices
        of this space. ``coupling`` maps each depth to the expand of all blocks of a stage with that
        depth (CompOFA: ``{2: 3, 3: 4, 4: 6}``); depths without a coupled expand are dropped.
        """
        stages = list(self.stages)
        for name, value in (("depths", depths), ("kernels", kernels), ("expands", expands)):
            if value is None:
                continue
            per_stage = _per_stage(name, value, len(stages))
            for s, st in enumerate(stages):
                current = getattr(st, name)
                wanted = per_stage[s]
                if wanted is None or (per_stage.flat and len(current) == 1):
                    continue
                wanted = tuple(sorted(set(norm_number(v) if name == "expands" else int(v) for v in wanted)))
                bad = [v for v in wanted if v not in current]
                if not wanted or bad:
                    raise ValueError(
                        f"restrict: {name} {_list(bad or wanted)} for stage {s} not in the space; "
                        f"valid: {_list(current)}"
                    )
                stages[s] = dataclasses.replace(st, **{name: wanted})
        res = self.resolutions
        if resolutions is not None:
            wanted = tuple(sorted(set(int(r) for r in resolutions)))
            bad = [r for r in wanted if r not in self.resolutions]
            if not wanted or bad:
                raise ValueError(
                    f"restrict: resolutions {_list(bad or wanted)} not in the space; valid: {_list(self.resolutions)}"
                )
            res = wanted
        coup = self.coupling
        if coupling is not None:
            coup = tuple(sorted((int(d), norm_number(e)) for d, e in coupling.items()))
            for s, st in enumerate(stages):
                if len(st.depths) < 2:
                    continue
                for d, e in coup:
                    if d in st.depths and e not in st.expands:
                        raise ValueError(
                            f"restrict: coupling d{d}->e{fmt_number(e)}: expand {fmt_number(e)} not valid for "
                            f"stage {s}; "
                            f"valid: {_list(st.expands)}"
                        )
                kept = tuple(d for d in st.depths if d in dict(coup))
                if not kept:
                    raise ValueError(
                        f"restrict: coupling {{{', '.join(f'{d}: {fmt_number(e)}' for d, e in coup)}}} covers no depth "
                        f"of stage {s}; valid depths: {_list(st.depths)}"
                    )
                stages[s] = dataclasses.replace(st, depths=kept)
        restricted = self.restricted or tuple(stages) != self.stages or coup != self.coupling
        return dataclasses.replace(self, stages=tuple(stages), resolutions=res, coupling=coup, restricted=restricted,
                                   _tables={})

    def with_io(self, num_classes: int | None = None, in_channels: int | None = None) -> Space:
        """The same space for another number of classes / input channels (changes MACs and params)."""
        nc = self.num_classes if num_classes is None else int(num_classes)
        ic = self.in_channels if in_channels is None else int(in_channels)
        if nc < 1:
            raise ValueError(f"num_classes: {num_classes} is not valid; must be a positive integer")
        if ic < 1:
            raise ValueError(f"in_channels: {in_channels} is not valid; must be a positive integer")
        if nc == self.num_classes and ic == self.in_channels:
            return self
        return dataclasses.replace(self, num_classes=nc, in_channels=ic, _tables={})

    def identity(self) -> dict[str, Any]:
        """What rebuilds this space with :func:`~onceforall.core.registry.space_from_identity`: the registered
        name, width multiplier, resolutions, number of classes and input channels, and for a restricted space
        its per-stage choices and coupling. Checkpoints, eval results, export sidecars and latency tables all
        record it."""
        ident: dict[str, Any] = {"name": self.name, "width_mult": self.width_mult,
                                 "resolutions": list(self.resolutions), "num_classes": self.num_classes,
                                 "in_channels": self.in_channels}
        if self.restricted:
            ident["choices"] = {
                "depths": [list(st.depths) for st in self.stages],
                "kernels": [list(st.kernels) for st in self.stages],
                "expands": [list(st.expands) for st in self.stages],
                "coupling": None if self.coupling is None else [[d, e] for d, e in self.coupling],
            }
        return ident

    def skeleton_key(self) -> tuple:
        """Everything that fixes the supernet's tensors' shapes (not the choices' subsets)."""
        return (
            self.stem_width, self.stem_stride, self.first_block_width, self.first_block_stride,
            tuple((st.width, st.stride, st.act, st.se) for st in self.stages), self.head,
            self.num_classes, self.in_channels,
        )

    # ---- shapes ------------------------------------------------------------------------------------

    def block_shape(self, s: int, b: int, kernel: int, expand: float) -> BlockShape:
        """Shape of block ``b`` of stage ``s`` for a kernel and expand ratio."""
        st = self.stages[s]
        in_ch = (self.stages[s - 1].width if s > 0 else self.first_block_width) if b == 0 else st.width
        stride = st.stride if b == 0 else 1
        return BlockShape(
            in_ch=in_ch, mid=mid_channels(in_ch, expand), out=st.width, kernel=kernel, stride=stride,
            act=st.act, se=st.se, has_expand=True, residual=stride == 1 and in_ch == st.width,
        )

    def first_block_shape(self) -> BlockShape:
        """The fixed first block: depthwise 3x3 + pointwise (expand 1, no expand conv)."""
        return BlockShape(
            in_ch=self.stem_width, mid=self.stem_width, out=self.first_block_width, kernel=3,
            stride=self.first_block_stride, act=self.first_block_act, se=False, has_expand=False,
            residual=self.first_block_stride == 1 and self.stem_width == self.first_block_width,
        )

    def blocks(self, arch: Arch) -> list[list[BlockShape]]:
        """Shapes of the active blocks of ``arch``, per stage."""
        return [
            [self.block_shape(s, b, k, e) for b, (k, e) in enumerate(zip(ks, es))]
            for s, (ks, es) in enumerate(zip(arch.kernels, arch.expands))
        ]

    @property
    def final_width(self) -> int:
        return self.stages[-1].width

    @property
    def feature_width(self) -> int:
        """Channels entering the classifier."""
        return self.head[-1].width

    # ---- analytic MACs and params ------------------------------------------------------------

    def macs(self, arch: Arch) -> int:
        """Multiply-accumulates of conv + linear layers for one image (OFA / torchvision convention)."""
        fixed, table = self._macs_table(arch.resolution)
        total = fixed
        for s, (ks, es) in enumerate(zip(arch.kernels, arch.expands)):
            for b, (k, e) in enumerate(zip(ks, es)):
                total += table[s, b, k, e]
        return total

    def params(self, arch: Arch) -> int:
        """Number of parameters of the extracted subnet (conv, BN affine, SE biases, classifier)."""
        fixed, table = self._params_table()
        total = fixed
        for s, (ks, es) in enumerate(zip(arch.kernels, arch.expands)):
            for b, (k, e) in enumerate(zip(ks, es)):
                total += table[s, b, k, e]
        return total

    def macs_range(self) -> tuple[int, int]:
        """(MACs of min(), MACs of max()): MACs grow with every choice, so these bound the space."""
        return self.macs(self.min()), self.macs(self.max())

    def spatial_sizes(self, resolution: int) -> tuple[int, int, list[list[int]]]:
        """Feature-map side after the stem, after the first block, and at the input of every block."""
        h = _down(resolution, self.stem_stride)
        h_first = _down(h, self.first_block_stride)
        sizes, cur = [], h_first
        for st in self.stages:
            sizes.append([cur] + [_down(cur, st.stride)] * (max(st.depths) - 1))
            cur = _down(cur, st.stride)
        return h, h_first, sizes

    def final_side(self, resolution: int) -> int:
        """Side of the last feature map (before global pooling)."""
        _, h, _ = self.spatial_sizes(resolution)
        for st in self.stages:
            h = _down(h, st.stride)
        return h

    def _macs_table(self, resolution: int) -> tuple[int, dict]:
        key = ("macs", resolution)
        if key not in self._tables:
            h_stem, h_first, sizes = self.spatial_sizes(resolution)
            fixed = h_stem * h_stem * self.stem_width * self.in_channels * 9
            fixed += block_macs(self.first_block_shape(), h_stem)
            fixed += self._head_macs(self.final_side(resolution))
            table = {}
            for s, st in enumerate(self.stages):
                for b in range(max(st.depths)):
                    for k in st.kernels:
                        for e in st.expands:
                            table[s, b, k, e] = block_macs(self.block_shape(s, b, k, e), sizes[s][b])
            self._tables[key] = (fixed, table)
        return self._tables[key]

    def _head_macs(self, h_last: int) -> int:
        total, ch = 0, self.final_width
        for hc in self.head:
            side = 1 if hc.after_pool else h_last
            total += side * side * ch * hc.width
            ch = hc.width
        return total + ch * self.num_classes

    def _params_table(self) -> tuple[int, dict]:
        key = ("params",)
        if key not in self._tables:
            fixed = self.stem_width * self.in_channels * 9 + 2 * self.stem_width
            fixed += block_params(self.first_block_shape())
            ch = self.final_width
            for hc in self.head:
                fixed += ch * hc.width + (2 * hc.width if hc.bn else 0)
                ch = hc.width
            fixed += ch * self.num_classes + self.num_classes
            table = {}
            for s, st in enumerate(self.stages):
                for b in range(max(st.depths)):
                    for k in st.kernels:
                        for e in st.expands:
                            table[s, b, k, e] = block_params(self.block_shape(s, b, k, e))
            self._tables[key] = (fixed, table)
        return self._tables[key]

    # ---- description -----------------------------------------------------------------------------

    def describe(self) -> str:
        """Multi-line human summary (used by ``onceforall spaces``)."""
        lo, hi = self.macs_range()
        lines = [
            f"space {self.name}: width_mult {fmt_number(self.width_mult)}, resolutions {_list(self.resolutions)}, "
            f"{self.num_classes} classes, {self.in_channels} input channels",
            f"  stem {self.stem_width} (stride {self.stem_stride}), first block {self.first_block_width}",
        ]
        for s, st in enumerate(self.stages):
            lines.append(
                f"  stage {s}: width {st.width:4d} stride {st.stride} {st.act:6s} se={'y' if st.se else 'n'} "
                f"depths {_list(st.depths)} kernels {_list(st.kernels)} expands {_list(st.expands)}"
            )
        lines.append("  head " + " -> ".join(f"{h.width}{' (after pool)' if h.after_pool else ''}" for h in self.head))
        if self.coupling is not None:
            lines.append(f"  coupling {self.coupling_str()}")
        lines.append(f"  archs {self.size:.3e}; MACs {lo / 1e6:.2f}M (min) .. {hi / 1e6:.2f}M (max)")
        return "\n".join(lines)


def block_macs(shape: BlockShape, h_in: int) -> int:
    """MACs of one inverted-residual block for an input feature map of side ``h_in``."""
    h_out = _down(h_in, shape.stride)
    macs = 0
    if shape.has_expand:
        macs += h_in * h_in * shape.in_ch * shape.mid
    macs += h_out * h_out * shape.mid * shape.kernel * shape.kernel
    if shape.se:
        macs += 2 * shape.mid * se_channels(shape.mid)
    macs += h_out * h_out * shape.mid * shape.out
    return macs


def block_params(shape: BlockShape) -> int:
    """Parameters of one block: convs, BN affine (2 per channel), SE with biases."""
    p = 0
    if shape.has_expand:
        p += shape.in_ch * shape.mid + 2 * shape.mid
    p += shape.mid * shape.kernel * shape.kernel + 2 * shape.mid
    if shape.se:
        se = se_channels(shape.mid)
        p += shape.mid * se + se + se * shape.mid + shape.mid
    p += shape.mid * shape.out + 2 * shape.out
    return p


def _down(h: int, stride: int) -> int:
    """Output side of a 'same'-padded conv with odd kernel: ceil(h / stride)."""
    return (h - 1) // stride + 1


def _choice(rng: Rng, seq: Sequence):
    if isinstance(rng, torch.Generator):
        return seq[int(torch.randint(len(seq), (1,), generator=rng))]
    if isinstance(rng, random.Random):
        return seq[rng.randrange(len(seq))]
    raise TypeError(
        f"rng: expected random.Random or torch.Generator, got {type(rng).__name__} (global RNG is never used)"
    )


def _skewed_choice(rng: Rng, seq: Sequence, skew: float):
    """An element of sorted ``seq`` tilted towards its end (skew > 0) or its start (skew < 0)."""
    if isinstance(rng, torch.Generator):
        u = float(torch.rand((), generator=rng))
    elif isinstance(rng, random.Random):
        u = rng.random()
    else:
        return _choice(rng, seq)  # raises the TypeError naming the valid RNGs
    ordered = sorted(seq)
    return ordered[min(len(ordered) - 1, int(len(ordered) * u ** math.exp(-3.0 * skew)))]


def _nearest(choices: Sequence[float], value: float):
    return min(choices, key=lambda c: (abs(c - value), c))


def _list(values: Iterable) -> str:
    return ", ".join(fmt_number(v) if isinstance(v, float) else str(v) for v in values)


class _PerStage(list):
    flat: bool = False


def _per_stage(name: str, value, n: int) -> _PerStage:
    values = list(value)
    if values and all(isinstance(v, (list, tuple, set, frozenset)) or v is None for v in values):
        if len(values) != n:
            raise ValueError(f"restrict: {name} has {len(values)} per-stage entries; the space has {n} stages")
        out = _PerStage(values)
        out.flat = False
        return out
    out = _PerStage([values] * n)
    out.flat = True
    return out


def iter_archs(space: Space) -> Iterator[Arch]:  # pragma: no cover - only for tiny spaces
    """Enumerate every arch of a (small, restricted) space."""
    import itertools

    per_stage = []
    for s, st in enumerate(space.stages):
        options = []
        for d in st.depths:
            e_c = space.coupled_expand(s, d)
            block_opts = [(k, e) for k in st.kernels for e in ((e_c,) if e_c is not None else st.expands)]
            options.extend(itertools.product(block_opts, repeat=d))
        per_stage.append(options)
    for res in space.resolutions:
        for combo in itertools.product(*per_stage):
            kernels = tuple(tuple(k for k, _ in st) for st in combo)
            yield Arch(res, kernels, tuple(tuple(e for _, e in st) for st in combo))

