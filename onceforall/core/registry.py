"""The registry of spaces (timm style: register a factory under a name, fail loudly with the valid names),
and the spaces this package ships: OFA's MobileNetV3 and ProxylessNAS, and their CIFAR variants."""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable
from typing import Any

from .arch import make_divisible
from .space import HeadConv, Space, Stage

__all__ = ["IDENTITY_FIELDS", "get_space", "list_spaces", "register_space", "space_from_identity"]

_REGISTRY: dict[str, Any] = {}


def register_space(name: str):
    """Decorator registering a space factory ``fn(width_mult, resolutions) -> Space`` under ``name``."""

    def deco(fn):
        if name in _REGISTRY:
            raise ValueError(f"space '{name}' is already registered")
        _REGISTRY[name] = fn
        return fn

    return deco


def list_spaces() -> list[str]:
    """Names of the registered spaces."""
    return sorted(_REGISTRY)


def get_space(
    name: str,
    width_mult: float = 1.0,
    resolutions: Iterable[int] | None = None,
    num_classes: int = 1000,
    in_channels: int = 3,
) -> Space:
    """Build a registered space. Unknown names raise ValueError listing the valid ones."""
    if name not in _REGISTRY:
        raise ValueError(f"space: unknown name '{name}'; valid: {', '.join(list_spaces())}")
    if not isinstance(width_mult, (int, float)) or not 0 < width_mult <= 4:
        raise ValueError(f"width_mult: {width_mult!r} is not valid; must be a number in (0, 4]")
    space = _REGISTRY[name](float(width_mult))
    if resolutions is not None:
        res = tuple(sorted(set(int(r) for r in resolutions)))
        if not res or any(r < 8 for r in res):
            raise ValueError(f"resolutions: {list(resolutions)} is not valid; need integers >= 8")
        space = dataclasses.replace(space, resolutions=res)
    return space.with_io(num_classes=num_classes, in_channels=in_channels)


IDENTITY_FIELDS = ("name", "width_mult", "resolutions", "num_classes", "in_channels")


def space_from_identity(identity: dict[str, Any]) -> Space:
    """The space whose :meth:`Space.identity` is ``identity`` (a checkpoint's, sidecar's or table's record)."""
    missing = [k for k in IDENTITY_FIELDS if k not in identity]
    if missing:
        raise ValueError(f"space identity: missing field '{missing[0]}'; expected {', '.join(IDENTITY_FIELDS)}")
    space = get_space(identity["name"], identity["width_mult"], identity["resolutions"],
                      num_classes=identity["num_classes"], in_channels=identity["in_channels"])
    choices = identity.get("choices")
    if choices is not None:
        if not isinstance(choices, dict) or any(k not in choices for k in ("depths", "kernels", "expands")):
            raise ValueError("space identity: field 'choices' must be {depths, kernels, expands, coupling}")
        space = space.restrict(depths=choices["depths"], kernels=choices["kernels"], expands=choices["expands"])
        if choices.get("coupling"):
            space = space.restrict(coupling=dict((int(d), e) for d, e in choices["coupling"]))
    return space


def _w(base: int, width_mult: float) -> int:
    return make_divisible(base * width_mult)


def _mbv3(name: str, width_mult: float, cifar: bool) -> Space:
    widths = (24, 40, 80, 112, 160)
    strides = (1 if cifar else 2, 2, 2, 1, 2)
    acts = ("relu", "relu", "hswish", "hswish", "hswish")
    ses = (False, True, False, True, True)
    stages = tuple(
        Stage(_w(w, width_mult), s, a, se, depths=(2, 3, 4), kernels=(3, 5, 7), expands=(3, 4, 6))
        for w, s, a, se in zip(widths, strides, acts, ses)
    )
    return Space(
        name=name, width_mult=width_mult,
        resolutions=(32,) if cifar else (128, 160, 192, 224),
        stem_width=_w(16, width_mult), stem_stride=1 if cifar else 2, stem_act="hswish",
        first_block_width=_w(16, width_mult), first_block_stride=1, first_block_act="relu",
        stages=stages,
        head=(
            HeadConv(_w(960, width_mult), after_pool=False, bn=True, act="hswish"),
            HeadConv(_w(1280, width_mult), after_pool=True, bn=False, act="hswish"),
        ),
        bn_eps=1e-5,
    )


def _proxyless(name: str, width_mult: float, cifar: bool) -> Space:
    widths = (24, 40, 80, 96, 192)
    strides = (1 if cifar else 2, 2, 2, 1, 2)
    stages = tuple(
        Stage(_w(w, width_mult), s, "relu6", False, depths=(2, 3, 4), kernels=(3, 5, 7), expands=(3, 4, 6))
        for w, s in zip(widths, strides)
    ) + (Stage(_w(320, width_mult), 1, "relu6", False, depths=(1,), kernels=(3, 5, 7), expands=(3, 4, 6)),)
    return Space(
        name=name, width_mult=width_mult,
        resolutions=(32,) if cifar else (128, 160, 192, 224),
        stem_width=_w(32, width_mult), stem_stride=1 if cifar else 2, stem_act="relu6",
        first_block_width=_w(16, width_mult), first_block_stride=1, first_block_act="relu6",
        stages=stages,
        head=(HeadConv(_w(1280, width_mult), after_pool=False, bn=True, act="relu6"),),
        bn_eps=1e-3,
    )


@register_space("mbv3")
def _space_mbv3(width_mult: float) -> Space:
    """OFA MobileNetV3 space (ImageNet strides, resolutions 128..224)."""
    return _mbv3("mbv3", width_mult, cifar=False)


@register_space("mbv3-cifar")
def _space_mbv3_cifar(width_mult: float) -> Space:
    """MobileNetV3 space with stride 1 in the stem and first stage (8x downsampling) for 32 px."""
    return _mbv3("mbv3-cifar", width_mult, cifar=True)


@register_space("proxyless")
def _space_proxyless(width_mult: float) -> Space:
    """OFA ProxylessNAS (GPU base) space: ReLU6, no SE, a final single-block 320 stage."""
    return _proxyless("proxyless", width_mult, cifar=False)


@register_space("proxyless-cifar")
def _space_proxyless_cifar(width_mult: float) -> Space:
    """ProxylessNAS space with stride 1 in the stem and first stage for 32 px inputs."""
    return _proxyless("proxyless-cifar", width_mult, cifar=True)

