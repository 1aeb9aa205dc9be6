"""OFA compatibility: specialize OFA's published ImageNet supernets with this package, without training.

Our ``mbv3`` and ``proxyless`` spaces lay out parameters exactly as OFA's ``OFAMobileNetV3`` and
``OFAProxylessNASNets`` do (channel rules, SE width, activations, residuals, BN epsilon, the 7->5->3 kernel
transforms), so moving weights between the two is a renaming of state-dict keys, no tensor is transformed.
``tests/test_ofa_compat.py`` checks this against logits computed by OFA's own code
(``scripts/make_ofa_reference.py``).

- :func:`ofa_net_id_space`: the space of one of OFA's published net ids (``ofa_mbv3_d234_e346_k357_w1.0``, ...);
- :func:`ofa_state_dict_to_ours` / :func:`our_state_dict_to_ofa`: the key renaming, both ways;
- :func:`to_ofa_config` / :func:`from_ofa_config`: archs in OFA's ``{"ks", "e", "d", "r"}`` format, and
  :func:`to_ofa_net_config`, a subnet as OFA's network config (from :mod:`onceforall.core.ofa_config`, which
  sits below :class:`Space` so that the space, the supernet and this module can all use it).

Typical use, with a checkpoint downloaded by the user (nothing here downloads)::

    space = ofa_net_id_space("ofa_mbv3_d234_e346_k357_w1.0")
    net = build_supernet(space)
    ofa_state = torch.load("ofa_mbv3_d234_e346_k357_w1.0", map_location="cpu", weights_only=True)["state_dict"]
    net.load_state_dict(ofa_state_dict_to_ours(ofa_state, space))
"""

from __future__ import annotations

import re
from collections.abc import Mapping

import torch

from .ofa_config import from_ofa_config, to_ofa_config, to_ofa_net_config
from .registry import get_space
from .space import Space
from .supernet import Supernet

__all__ = [
    "OFA_NET_IDS", "from_ofa_config", "ofa_net_id_space", "ofa_state_dict_to_ours", "our_state_dict_to_ofa",
    "to_ofa_config", "to_ofa_net_config",
]

OFA_NET_IDS: dict[str, tuple[str, float, tuple[int, ...]]] = {
    "ofa_mbv3_d234_e346_k357_w1.0": ("mbv3", 1.0, tuple(range(128, 225, 4))),
    "ofa_mbv3_d234_e346_k357_w1.2": ("mbv3", 1.2, tuple(range(160, 225, 4))),
    "ofa_proxyless_d234_e346_k357_w1.3": ("proxyless", 1.3, tuple(range(128, 225, 4))),
}
"""OFA's published supernets that our spaces hold exactly: net id -> (space name, width multiplier, resolutions).
The resolutions are those OFA trained them at (its elastic resolution, steps of 4 px; 160 px and up for w1.2,
as in OFA's own evolution finder)."""


def ofa_net_id_space(net_id: str, num_classes: int = 1000) -> Space:
    """The space of OFA's published supernet ``net_id`` (the name OFA's ``model_zoo.ofa_net`` takes).

    Unknown ids raise a one-line ValueError listing the valid ones; ``ofa_resnet50`` is refused with the reason
    (its elastic-width ResNet space has no counterpart here).
    """
    if net_id not in OFA_NET_IDS:
        why = ("needs an elastic-width ResNet space, which onceforall does not support"
               if net_id == "ofa_resnet50" else "is not one of OFA's supported supernets")
        raise ValueError(f"OFA net id '{net_id}' {why}; valid: {', '.join(OFA_NET_IDS)}")
    name, width_mult, resolutions = OFA_NET_IDS[net_id]
    return get_space(name, width_mult=width_mult, resolutions=resolutions, num_classes=num_classes)


# ----------------------------------------------------------------------------------------------------
# State-dict keys
# ----------------------------------------------------------------------------------------------------

# Inside a block, our module path -> OFA's. OFA's first block is a static MBConvLayer (plain modules), its elastic
# blocks are DynamicMBConvLayers (each conv and BN wrapped once more: ``.conv.conv.``, ``.bn.bn.``).
_FIRST_BLOCK = {"dw_conv": "depth_conv.conv", "dw_bn": "depth_conv.bn", "project_conv": "point_linear.conv",
                "project_bn": "point_linear.bn"}
_ELASTIC_BLOCK = {"expand_conv": "inverted_bottleneck.conv.conv", "expand_bn": "inverted_bottleneck.bn.bn",
                  "dw_conv": "depth_conv.conv.conv", "dw_bn": "depth_conv.bn.bn",
                  "se.reduce": "depth_conv.se.fc.reduce", "se.expand": "depth_conv.se.fc.expand",
                  "project_conv": "point_linear.conv.conv", "project_bn": "point_linear.bn.bn"}
# OFA names its head convs from the end: the last is the feature mix layer, the one before the final expand layer.
_HEAD_NAMES = ("feature_mix_layer", "final_expand_layer")
_STAGE_KEY = re.compile(r"^stages\.(\d+)\.(\d+)\.(.+)$")
_HEAD_KEY = re.compile(r"^head\.(pre_pool|post_pool)\.(\d+)\.(.+)$")
# The key spellings OFA's own load_state_dict accepts besides its current ones (older releases).
_OFA_ALIASES = ((".bn.bn.", ".bn."), (".conv.conv.weight", ".conv.weight"), (".linear.linear.", ".linear."))


def _rename_in(rest: str, table: Mapping[str, str]) -> str | None:
    for ours, theirs in table.items():
        if rest.startswith(ours + "."):
            return theirs + rest[len(ours):]
    return None


def _ofa_key_map(our_keys: list[str]) -> tuple[dict[str, str], str | None]:
    """(our key -> OFA key, the first of ``our_keys`` that has no OFA name). The layout (blocks per stage, head
    convs) is read from the keys themselves: OFA numbers blocks across stages, ``blocks.0`` being the first."""
    max_depth: dict[int, int] = {}
    heads: list[tuple[str, int]] = []
    for key in our_keys:
        if (m := _STAGE_KEY.match(key)) is not None:
            s, b = int(m.group(1)), int(m.group(2))
            max_depth[s] = max(max_depth.get(s, 0), b + 1)
        elif (m := _HEAD_KEY.match(key)) is not None and (m.group(1), int(m.group(2))) not in heads:
            heads.append((m.group(1), int(m.group(2))))
    offset, first = {}, 1
    for s in sorted(max_depth):
        offset[s] = first
        first += max_depth[s]
    heads.sort(key=lambda h: (h[0] == "post_pool", h[1]))
    head_name = {h: _HEAD_NAMES[len(heads) - 1 - i] for i, h in enumerate(heads) if len(heads) - 1 - i < 2}
    out: dict[str, str] = {}
    for key in our_keys:
        theirs = None
        if key.startswith("stem.conv."):
            theirs = "first_conv." + key[len("stem.conv."):]
        elif key.startswith("stem.first_block."):
            rest = _rename_in(key[len("stem.first_block."):], _FIRST_BLOCK)
            theirs = None if rest is None else "blocks.0.conv." + rest
        elif (m := _STAGE_KEY.match(key)) is not None:
            rest = m.group(3)
            if (t := re.fullmatch(r"kernel_transform\.(\d+to\d+)", rest)) is not None:
                rest = f"depth_conv.conv.{t.group(1)}_matrix"
            else:
                rest = _rename_in(rest, _ELASTIC_BLOCK)
            theirs = None if rest is None else f"blocks.{offset[int(m.group(1))] + int(m.group(2))}.conv.{rest}"
        elif (m := _HEAD_KEY.match(key)) is not None:
            name = head_name.get((m.group(1), int(m.group(2))))
            theirs = None if name is None else f"{name}.{m.group(3)}"
        elif key.startswith("head.classifier."):
            theirs = "classifier.linear." + key[len("head.classifier."):]
        if theirs is None:
            return out, key
        out[key] = theirs
    return out, None


def our_state_dict_to_ofa(state: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Our supernet's state dict with OFA's key names (the same tensors, not copied), loadable with
    ``strict=True`` into OFA's network of the same space (``OFAMobileNetV3`` / ``OFAProxylessNASNets``); a key that
    has no OFA name raises a one-line ValueError naming it.

    The supernet must have kernel transforms (``build_supernet(..., kernel_transform=True)``, the default): OFA's
    networks always hold the matrices.
    """
    names, bad = _ofa_key_map(list(state))
    if bad is not None:
        raise ValueError(f"state dict: key '{bad}' has no OFA name; expected the keys of a mbv3/proxyless supernet "
                         f"(stem.*, stages.<s>.<b>.*, head.*)")
    return {names[k]: v for k, v in state.items()}


def ofa_state_dict_to_ours(state: Mapping[str, torch.Tensor], space: Space) -> dict[str, torch.Tensor]:
    """OFA's state dict (``OFAMobileNetV3`` / ``OFAProxylessNASNets``, or a checkpoint ``{"state_dict": ...}``) with
    our key names, checked key by key against the supernet of ``space`` (kernel transforms on) so it loads with
    ``strict=True``. The tensors are not copied.

    Accepts the key spellings OFA's own ``load_state_dict`` accepts: ``.mobile_inverted_conv.`` for ``.conv.``
    (older releases), and ``.bn.``/``.conv.weight``/``.linear.`` with or without their extra nesting. BN's
    ``num_batches_tracked`` may be missing (it does not affect inference; 0 is filled in). Any other key or shape
    that does not fit raises a one-line ValueError naming the first bad key and what was expected.
    """
    if "state_dict" in state and isinstance(state["state_dict"], Mapping):
        state = state["state_dict"]
    with torch.random.fork_rng(devices=[]), torch.device("meta"):
        expected = Supernet(space, dropout=0.0, kernel_transform=True).state_dict()
    names, _ = _ofa_key_map(list(expected))
    ours_of = {theirs: ours for ours, theirs in names.items()}
    where = f"space '{space.name}' width_mult {space.width_mult:g}, {space.num_classes} classes"
    out: dict[str, torch.Tensor] = {}
    source: dict[str, str] = {}
    for key, value in state.items():
        ours = _our_name(key, ours_of)
        if ours is None:
            example = next(iter(ours_of))
            raise ValueError(f"OFA state dict: unexpected key '{key}' for {where}; expected OFA's names like "
                             f"'{example}' ({len(ours_of)} keys)")
        if ours in out:
            raise ValueError(f"OFA state dict: key '{key}' names the same tensor as '{source[ours]}' (ours: '{ours}')")
        want = tuple(expected[ours].shape)
        if not isinstance(value, torch.Tensor) or tuple(value.shape) != want:
            got = tuple(value.shape) if isinstance(value, torch.Tensor) else type(value).__name__
            raise ValueError(f"OFA state dict: key '{key}' has shape {got}; expected {want} for {where}")
        out[ours] = value
        source[ours] = key
    for ours in expected:
        if ours not in out:
            if ours.endswith(".num_batches_tracked"):
                out[ours] = torch.zeros((), dtype=torch.long)
                continue
            raise ValueError(f"OFA state dict: missing key '{names[ours]}' (ours: '{ours}') for {where}")
    return {k: out[k] for k in expected}


def _our_name(key: str, ours_of: Mapping[str, str]) -> str | None:
    key = key.replace(".mobile_inverted_conv.", ".conv.")
    if key in ours_of:
        return ours_of[key]
    for nested, flat in _OFA_ALIASES:
        for a, b in ((flat, nested), (nested, flat)):
            if a in key and key.replace(a, b) in ours_of:
                return ours_of[key.replace(a, b)]
    return None
