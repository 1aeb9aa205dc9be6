"""OFA's own search files: its accuracy-predictor checkpoint (``acc_predictor.pth``) and its latency lookup tables
(the yaml LUTs of ``ofa/nas/efficiency_predictor``), read into this package's objects so that a published supernet
can be specialized with OFA's published predictor and device tables, without measuring anything::

    from onceforall.specialize.ofa_formats import load_ofa_acc_predictor, load_ofa_latency_lut

    space = ofa_net_id_space("ofa_mbv3_d234_e346_k357_w1.0")
    predictor = load_ofa_acc_predictor("acc_predictor.pth", space)   # .predict(archs) -> accuracy %
    table = load_ofa_latency_lut("note10_lut.yaml", space)           # a LatencyTable (ms), backend "ofa-lut"

Accuracy predictor (OFA's ``AccuracyPredictor`` + ``MobileNetArchEncoder``): ``n_layers`` blocks
``layers.i.0`` (Linear + ReLU), then ``layers.n`` (Linear to 1, no bias), plus ``base_acc`` (shape 1); the
output is a fraction (OFA trains it on top-1 / 100), returned here in %. Its input is OFA's encoding: one-hot of
the resolution over ``image_size_list``, then one-hot of the kernel of every block slot (``ks_list`` each), then
one-hot of the expand of every slot (``expand_list`` each); slots beyond a stage's depth are all zero. The file
is read with ``torch.load(weights_only=True)``; ``{"state_dict": ...}`` wrapping is accepted as OFA's loader does.

Latency LUT: a yaml mapping ``key -> {mean: ms, ...}``. Keys name a layer by type and shapes
(``Conv-input:224x224x3-output:112x112x16``; blocks ``expanded_conv-input:HxWxC-output:HxWxC-expand:E-kernel:K-
stride:S-idskip:I`` with, for MobileNetV3, ``-se:0/1-hs:0/1`` and ``E`` the middle channels, for ProxylessNAS
``E`` the expand ratio); the head is ``Conv_1``, ``AvgPool2D``, ``Conv_2``, ``Logits`` (MobileNetV3) or
``Conv_1``, ``Logits`` (ProxylessNAS). Each of our table's layers (:func:`~onceforall.specialize.latency.layer_keys`)
is the sum of the LUT entries it stands for.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from pathlib import Path

import torch
import yaml
from torch import nn

from ..core.arch import Arch
from ..core.space import BlockShape, Space
from ..core.util import first_line, is_number, load_weights_only
from .latency import LatencyTable, block_choices, consistency_check

__all__ = ["OFA_IMAGE_SIZES", "OFAAccuracyPredictor", "load_ofa_acc_predictor", "load_ofa_latency_lut",
           "ofa_lut_keys", "read_ofa_acc_state"]

OFA_IMAGE_SIZES = tuple(range(128, 225, 4))
"""The ``image_size_list`` of OFA's published accuracy predictor (its tutorial's encoder)."""


# ----------------------------------------------------------------------------------------------------
# accuracy predictor
# ----------------------------------------------------------------------------------------------------


def _choices(space: Space) -> tuple[list[int], list[int]]:
    """OFA's ``ks_list`` and ``expand_list`` of ``space``: the union over its stages, ascending."""
    ks = sorted({k for st in space.stages for k in st.kernels})
    es = sorted({e for st in space.stages for e in st.expands})
    return ks, es


def read_ofa_acc_state(path: str | Path) -> dict[str, torch.Tensor]:
    """The state dict of an OFA accuracy-predictor checkpoint (``weights_only``; ``{"state_dict": ...}``
    unwrapped); a file that is not one raises a one-line ValueError naming it."""
    state = load_weights_only(path, "OFA accuracy predictor")
    if isinstance(state, Mapping) and "state_dict" in state:
        state = state["state_dict"]
    if not isinstance(state, Mapping) or "base_acc" not in state or not any(k.startswith("layers.") for k in state):
        raise ValueError(f"OFA accuracy predictor {path}: expected OFA's AccuracyPredictor state dict "
                         "(layers.*, base_acc)")
    return dict(state)


class OFAAccuracyPredictor:
    """OFA's accuracy-predictor MLP with its weights, predicting the accuracy (%) of archs of ``space``.

    ``image_sizes`` is the encoder's ``image_size_list`` (default: the space's resolutions, or OFA's published
    128..224 when the weights' input width says so). Usable as a search ``score_fn`` like
    :class:`~onceforall.specialize.predictor.AccuracyPredictor`.
    """

    def __init__(self, space: Space, state: Mapping[str, torch.Tensor], *, image_sizes: Sequence[int] | None = None,
                 where: str = "state") -> None:
        self.space = space
        self.ks, self.es = _choices(space)
        self.slots = space.max_depths
        blocks = sum(self.slots) * (len(self.ks) + len(self.es))
        names = sorted((k for k in state if k.startswith("layers.") and k.endswith(".weight")),
                       key=lambda k: int(k.split(".")[1]))
        if not names:
            raise ValueError(f"OFA accuracy predictor {where}: no layers.*.weight")
        n_in = int(state[names[0]].shape[1])
        if image_sizes is None:
            image_sizes = space.resolutions if n_in == blocks + len(space.resolutions) else OFA_IMAGE_SIZES
        self.image_sizes = [int(r) for r in image_sizes]
        self.n_dim = len(self.image_sizes) + blocks
        if n_in != self.n_dim:
            raise ValueError(
                f"OFA accuracy predictor {where}: takes {n_in} features, but OFA's encoding of this space has "
                f"{self.n_dim} ({len(self.image_sizes)} image sizes + {sum(self.slots)} block slots x "
                f"({len(self.ks)} kernels + {len(self.es)} expands)); pass the encoder's image_sizes")
        missing = [r for r in space.resolutions if r not in self.image_sizes]
        if missing:
            raise ValueError(f"OFA accuracy predictor {where}: resolutions {missing} of the space are not among its "
                             f"image sizes {self.image_sizes}; restrict the space to them")
        mods: list[nn.Module] = []
        for name in names:
            w = state[name]
            bias = name.replace(".weight", ".bias")
            layer = nn.Linear(int(w.shape[1]), int(w.shape[0]), bias=bias in state)
            with torch.no_grad():
                layer.weight.copy_(w)
                if bias in state:
                    layer.bias.copy_(state[bias])
            mods.append(layer)
            if name != names[-1]:
                mods.append(nn.ReLU())
        if int(state[names[-1]].shape[0]) != 1:
            raise ValueError(f"OFA accuracy predictor {where}: its last layer has {state[names[-1]].shape[0]} "
                             "outputs; expected 1")
        self.net = nn.Sequential(*mods).eval()
        self.base_acc = float(torch.as_tensor(state["base_acc"]).reshape(-1)[0])
        self.hidden = int(state[names[0]].shape[0])
        self.layers = len(names) - 1
        self.fitted = True

    def encode(self, arch: Arch) -> list[float]:
        """OFA's ``MobileNetArchEncoder.arch2feature`` of ``arch``."""
        self.space.validate(arch)
        nk, ne, n_slots = len(self.ks), len(self.es), sum(self.slots)
        vec = [0.0] * self.n_dim
        vec[self.image_sizes.index(arch.resolution)] = 1.0
        k_base, e_base = len(self.image_sizes), len(self.image_sizes) + n_slots * nk
        start = 0
        for ks, es, slots in zip(arch.kernels, arch.expands, self.slots):
            for b, (k, e) in enumerate(zip(ks, es)):
                vec[k_base + (start + b) * nk + self.ks.index(k)] = 1.0
                vec[e_base + (start + b) * ne + self.es.index(e)] = 1.0
            start += slots
        return vec

    @torch.no_grad()
    def predict(self, archs: Sequence[Arch]) -> list[float]:
        """Predicted accuracy (%) of each arch: 100 x (MLP + base_acc), OFA's fraction in percent."""
        archs = list(archs)
        if not archs:
            return []
        x = torch.tensor([self.encode(a) for a in archs], dtype=torch.float32)
        return [100.0 * float(v) for v in self.net(x).reshape(-1) + self.base_acc]

    def __call__(self, archs: Sequence[Arch]) -> list[float]:
        return self.predict(archs)


def load_ofa_acc_predictor(path: str | Path, space: Space, *,
                           image_sizes: Sequence[int] | None = None) -> OFAAccuracyPredictor:
    """OFA's accuracy-predictor checkpoint at ``path`` (e.g. its ``acc_predictor.pth``) for archs of ``space``."""
    return OFAAccuracyPredictor(space, read_ofa_acc_state(path), image_sizes=image_sizes, where=str(path))


# ----------------------------------------------------------------------------------------------------
# latency lookup tables
# ----------------------------------------------------------------------------------------------------


def _shape(*dims: int) -> str:
    return "x".join(str(d) for d in dims)


def _mbv3_style(space: Space) -> bool:
    """OFA's MobileNetV3 LUT (head convs after pooling, ``se``/``hs`` in block keys, ``expand`` = middle
    channels) rather than its ProxylessNAS one."""
    return any(h.after_pool for h in space.head)


def _block_key(space: Space, shape: BlockShape, h_in: int, expand: float) -> str:
    h_out = (h_in - 1) // shape.stride + 1  # 'same' padding, as OFA's int((fsize - 1) / stride + 1)
    key = (f"expanded_conv-input:{_shape(h_in, h_in, shape.in_ch)}-output:{_shape(h_out, h_out, shape.out)}"
           f"-expand:{shape.mid if _mbv3_style(space) else int(expand)}-kernel:{shape.kernel}-stride:{shape.stride}"
           f"-idskip:{int(shape.residual)}")
    if _mbv3_style(space):
        key += f"-se:{int(shape.se)}-hs:{int(shape.act == 'hswish')}"
    return key


def ofa_lut_keys(space: Space, resolution: int) -> dict[str, list[str]]:
    """Our layer key -> the OFA LUT keys it stands for, for every layer of ``space`` at ``resolution``."""
    r = resolution
    h_stem, h_first, sizes = space.spatial_sizes(r)
    stem = f"Conv-input:{_shape(r, r, space.in_channels)}-output:{_shape(h_stem, h_stem, space.stem_width)}"
    out = {f"r{r}:stem": [stem],
           f"r{r}:first": [_block_key(space, space.first_block_shape(), h_stem, 1)]}
    for s, st in enumerate(space.stages):
        for b in range(max(st.depths)):
            for k, e in block_choices(space, s, b):
                out[f"r{r}:s{s}b{b}:k{k}e{e:g}"] = [_block_key(space, space.block_shape(s, b, k, e), sizes[s][b], e)]
    f, c = space.final_side(r), space.final_width
    head: list[str] = []
    pre = [h for h in space.head if not h.after_pool]
    post = [h for h in space.head if h.after_pool]
    for i, h in enumerate(pre):
        head.append(f"Conv_{i + 1}-input:{_shape(f, f, c)}-output:{_shape(f, f, h.width)}")
        c = h.width
    if _mbv3_style(space):
        head.append(f"AvgPool2D-input:{_shape(f, f, c)}-output:{_shape(1, 1, c)}")
        for i, h in enumerate(post):
            head.append(f"Conv_{len(pre) + i + 1}-input:{_shape(1, 1, c)}-output:{_shape(1, 1, h.width)}")
            c = h.width
        head.append(f"Logits-input:{_shape(1, 1, c)}-output:{space.num_classes}")
    else:
        head.append(f"Logits-input:{_shape(f, f, c)}-output:{space.num_classes}")
    out[f"r{r}:head"] = head
    return out


def load_ofa_latency_lut(path: str | Path, space: Space, *, resolutions: Sequence[int] | None = None,
                         device: str = "OFA lookup table") -> LatencyTable:
    """OFA's latency lookup table (yaml) at ``path`` as a :class:`LatencyTable` of ``space`` (ms), at the
    ``resolutions`` the LUT covers (default: every resolution of the space for which it has all layers; one-line
    error naming a missing key when it covers none or a requested one is incomplete)."""
    try:
        lut = yaml.safe_load(Path(path).read_text())
    except FileNotFoundError:
        raise ValueError(f"OFA latency table {path}: not found") from None
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as e:
        raise ValueError(f"OFA latency table {path}: not valid yaml: {first_line(e)}") from None
    if not isinstance(lut, Mapping):
        raise ValueError(f"OFA latency table {path}: expected a mapping of layer keys to {{mean: ms}}")

    def mean(key: str) -> float:
        v = lut[key]
        ms = v.get("mean") if isinstance(v, Mapping) else None
        if not is_number(ms) or not math.isfinite(ms) or ms < 0:
            raise ValueError(f"OFA latency table {path}: entry '{key}' must have a non-negative 'mean' (ms), "
                             f"got {v!r}")
        return float(ms)

    wanted = list(resolutions) if resolutions is not None else list(space.resolutions)
    bad = [r for r in wanted if r not in space.resolutions]
    if bad:
        raise ValueError(f"resolutions: {bad} not in the space's {list(space.resolutions)}")
    entries: dict[str, float] = {}
    covered, first_missing = [], None
    for r in wanted:
        keys = ofa_lut_keys(space, r)
        missing = next((k for ks in keys.values() for k in ks if k not in lut), None)
        if missing is not None:
            first_missing = first_missing or (r, missing)
            if resolutions is not None:
                raise ValueError(f"OFA latency table {path}: no entry '{missing}' (resolution {r}); it was made for "
                                 "another network or resolution")
            continue
        covered.append(r)
        entries.update({ours: sum(mean(k) for k in theirs) for ours, theirs in keys.items()})
    if not covered:
        r, key = first_missing
        raise ValueError(f"OFA latency table {path}: covers none of the space's resolutions (no entry '{key}' at "
                         f"{r}); it was made for another network")
    ident = space.identity()
    ident["resolutions"] = covered
    return LatencyTable(space=ident, backend="ofa-lut", threads=1, batch=1, device=device, entries=entries,
                        meta={"source": str(path), "format": "OFA latency lookup table (yaml)"},
                        check=consistency_check(entries))
