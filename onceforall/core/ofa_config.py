"""OFA's arch formats: an arch as OFA's ``{"ks", "e", "d", "r"}`` config and a subnet as OFA's network config.

The functions take a :class:`~onceforall.core.space.Space` (whose ``to_ofa_config``, ``from_ofa_config`` and
``to_ofa_net_config`` methods call them; this module sits below the space, so it names it only in words) and are
re-exported by :mod:`onceforall.core.ofa_compat`, the home of everything OFA.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Iterable, Mapping
from typing import Any

from .arch import Arch, fmt_number, norm_number
from .util import is_int

__all__ = ["from_ofa_config", "to_ofa_config", "to_ofa_net_config"]


def to_ofa_config(space: Any, arch: Arch) -> dict[str, list]:
    """``arch`` in OFA's config format ``{"ks", "e", "d", "r"}`` (what its ``set_active_subnet``, evolution
    finder and accuracy predictor read), so OFA's tools and published search results interoperate.

    ``ks`` and ``e`` hold one entry per block slot of every stage's max depth (20 for mbv3, 21 for proxyless),
    ``d`` one per stage, ``r`` a one-element list. Slots beyond a stage's depth repeat the stage's last used
    kernel and expand: a valid value, as OFA's ``sample_active_subnet`` always writes one there (its network
    sets it on the unused block and never runs it; its predictor ignores it). The slots are those of a network
    built for this space: for an arch of a restriction that lowers a stage's max depth, convert with the space
    the network was built from (``net.space``).
    """
    space.validate(arch)
    ks: list[int] = []
    es: list[float] = []
    for st_ks, st_es, slots in zip(arch.kernels, arch.expands, space.max_depths):
        ks += list(st_ks) + [st_ks[-1]] * (slots - len(st_ks))
        es += list(st_es) + [st_es[-1]] * (slots - len(st_es))
    return {"ks": ks, "e": es, "d": list(arch.depths), "r": [arch.resolution]}

def to_ofa_net_config(space: Any, arch: Arch, dropout: float = 0.0) -> dict[str, Any]:
    """OFA's description of the static subnet of ``arch`` (what ``get_active_subnet().config`` gives on OFA's
    supernet: ``MobileNetV3`` or ``ProxylessNASNets`` with its first conv, residual blocks, head convs and
    classifier), which OFA's ``build_from_config`` and latency tables' ``predict_network_latency_given_config``
    read. ``dropout`` is the classifier's."""
    space.validate(arch)
    act = {"hswish": "h_swish"}

    def conv(cin: int, cout: int, k: int, stride: int, bn: bool, a: str) -> dict[str, Any]:
        return {"name": "ConvLayer", "kernel_size": k, "stride": stride, "dilation": 1, "groups": 1,
                "bias": False, "has_shuffle": False, "use_se": False, "in_channels": cin, "out_channels": cout,
                "use_bn": bn, "act_func": act.get(a, a), "dropout_rate": 0, "ops_order": "weight_bn_act"}

    def block(shape: Any, expand: float) -> dict[str, Any]:
        shortcut = {"name": "IdentityLayer", "in_channels": shape.in_ch, "out_channels": shape.out,
                    "use_bn": False, "act_func": None, "dropout_rate": 0, "ops_order": "weight_bn_act"}
        return {"name": "ResidualBlock",
                "conv": {"name": "MBConvLayer", "in_channels": shape.in_ch, "out_channels": shape.out,
                         "kernel_size": shape.kernel, "stride": shape.stride, "expand_ratio": expand,
                         "mid_channels": shape.mid if shape.has_expand else None,
                         "act_func": act.get(shape.act, shape.act), "use_se": shape.se, "groups": None},
                "shortcut": shortcut if shape.residual else None}

    blocks = [block(space.first_block_shape(), 1)]
    for s, (ks, es) in enumerate(zip(arch.kernels, arch.expands)):
        blocks += [block(space.block_shape(s, b, k, e), e) for b, (k, e) in enumerate(zip(ks, es))]
    pre = [h for h in space.head if not h.after_pool]
    post = [h for h in space.head if h.after_pool]
    cfg: dict[str, Any] = {
        "name": "MobileNetV3" if post else "ProxylessNASNets",
        "bn": {"momentum": space.bn_momentum, "eps": space.bn_eps, "ws_eps": None},
        "first_conv": conv(space.in_channels, space.stem_width, 3, space.stem_stride, True, space.stem_act),
        "blocks": blocks,
    }
    c = space.final_width
    names = ["final_expand_layer", "feature_mix_layer"][-len(space.head):]
    for name, h in zip(names, [*pre, *post]):
        cfg[name] = conv(c, h.width, 1, 1, h.bn, h.act)
        c = h.width
    cfg["classifier"] = {"name": "LinearLayer", "in_features": c, "out_features": space.num_classes,
                         "bias": True, "use_bn": False, "act_func": None, "dropout_rate": dropout,
                         "ops_order": "weight_bn_act"}
    return cfg

def from_ofa_config(space: Any, cfg: Mapping[str, Any]) -> Arch:
    """The arch of an OFA config ``{"ks", "e", "d", "r"}`` (inverse of :func:`to_ofa_config`).

    Follows OFA's reading: entries of ``ks``/``e`` beyond a stage's depth are ignored (OFA's predictor writes
    0 there, its sampler random values); a scalar ``ks``, ``e`` or ``d`` applies to every slot or stage (its
    ``set_active_subnet`` does that); ``r`` may be an int, and OFA's predictor key ``image_size`` stands for
    ``r``. A stage with a single depth choice (ProxylessNAS's final block) also takes the larger depths of the
    other stages, since OFA clamps a depth to the blocks a stage has. Anything else that does not fit raises a
    one-line ValueError naming the field, the value and what is valid.
    """
    if not isinstance(cfg, Mapping):
        raise ValueError(f"ofa config: expected a dict with ks, e, d, r; got {type(cfg).__name__}")
    unknown = [k for k in cfg if k not in ("ks", "e", "d", "r", "image_size", "wid")]
    if unknown:
        raise ValueError(f"ofa config: unknown field {unknown[0]!r}; valid: ks, e, d, r (or image_size), wid")
    if cfg.get("wid") is not None:
        raise ValueError(f"ofa config: field 'wid' = {cfg['wid']!r} is not valid; width is not elastic here, "
                         f"valid: None")
    missing = [k for k in ("ks", "e", "d") if k not in cfg] + ([] if "r" in cfg or "image_size" in cfg else ["r"])
    if missing:
        raise ValueError(f"ofa config: missing field '{missing[0]}'; expected ks, e, d, r")
    n_slots = sum(space.max_depths)
    slots = _ofa_field(cfg, "ks", n_slots, f"one per block slot, stages of {_choices(space.max_depths)}")
    expands = _ofa_field(cfg, "e", n_slots, f"one per block slot, stages of {_choices(space.max_depths)}")
    depths = _ofa_field(cfg, "d", space.num_stages, "one per stage")
    res = _ofa_resolution(cfg["r"] if "r" in cfg else cfg["image_size"], "r" if "r" in cfg else "image_size")
    if res not in space.resolutions:
        raise ValueError(f"ofa config: r = {res} is not valid; valid resolutions: {_choices(space.resolutions)}")
    all_depths = sorted({d for st in space.stages for d in st.depths})
    kernels, exps, start = [], [], 0
    for s, st in enumerate(space.stages):
        d = depths[s]
        fixed = len(st.depths) == 1 and is_int(d) and d > st.depths[0] and d in all_depths
        if not (is_int(d) and d in st.depths) and not fixed:
            raise ValueError(f"ofa config: d[{s}] = {d!r} is not valid for stage {s}; valid depths: "
                             f"{_choices(st.depths)}")
        d = min(int(d), max(st.depths))
        for b in range(d):
            i = start + b
            k, e = slots[i], expands[i]
            if not (is_int(k) and k in st.kernels):
                raise ValueError(f"ofa config: ks[{i}] = {k!r} (stage {s} block {b}) is not valid; valid kernels: "
                                 f"{_choices(st.kernels)}")
            if not (_is_real(e) and norm_number(e) in st.expands):
                raise ValueError(f"ofa config: e[{i}] = {e!r} (stage {s} block {b}) is not valid; valid expands: "
                                 f"{_choices(st.expands)}")
        kernels.append(tuple(int(k) for k in slots[start:start + d]))
        exps.append(tuple(expands[start:start + d]))
        start += max(st.depths)
    return space.validate(Arch(res, tuple(kernels), tuple(exps)))


def _choices(values: Iterable) -> str:
    return ", ".join(fmt_number(v) if isinstance(v, float) else str(v) for v in values)


def _is_real(x: Any) -> bool:
    """A finite real number, not a bool (numpy scalars count: OFA's tools may hand those over)."""
    return isinstance(x, numbers.Real) and not isinstance(x, bool) and math.isfinite(x)


def _ofa_field(cfg: Mapping[str, Any], name: str, n: int, what: str) -> list:
    """Field ``name`` of an OFA config as a list of ``n`` entries (a scalar repeats, as OFA's val2list does)."""
    value = cfg[name]
    if _is_real(value):
        return [value] * n
    if not isinstance(value, (list, tuple)):
        raise ValueError(f"ofa config: field '{name}' = {value!r} is not valid; expected a list of {n} ({what})")
    if len(value) != n:
        raise ValueError(f"ofa config: field '{name}' has {len(value)} entries; expected {n} ({what})")
    return list(value)


def _ofa_resolution(value: Any, name: str) -> int:
    """OFA writes the resolution as ``[224]`` (evolution finder) or ``224`` (predictor's ``image_size``)."""
    if isinstance(value, (list, tuple)) and len(value) == 1:
        value = value[0]
    if not is_int(value):
        raise ValueError(f"ofa config: field '{name}' = {value!r} is not valid; expected a resolution like [224]")
    return int(value)
