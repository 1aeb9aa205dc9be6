"""Peak activation memory of a subnet at batch 1: the budget of memory-bound boards (MCUNet's SRAM limit).

:func:`peak_memory` is analytic: the largest set of activation tensors alive at once during one inference
forward, in bytes for a dtype, computed from the arch's shapes in microseconds (usable as a search cost).
It models the forward of a deployment runtime, which :class:`FusedSubnet` runs in PyTorch:

* BatchNorm is folded into the preceding convolution, activations, the SE rescale and the residual add run in
  place (no tensor of their own);
* a layer's input is alive until its output exists (input + output), and a residual block keeps its input
  alive until the add; the network input is released after the stem.

So, per inverted-residual block with input X, expanded map M1, depthwise output M2 and output O (elements):
``X + M1`` (expand), ``X + M1 + M2`` (depthwise; ``X + M2`` without expand), ``X + M2 + mid + se_hidden`` (the
SE's pooled vectors), ``X + M2 + O`` (project); the peak is the maximum over every layer of the network.
:func:`measure_peak_memory` measures the same thing on a :class:`FusedSubnet`: every tensor an ATen op
returns is tracked until Python frees it (a ``TorchDispatchMode``), weights excluded; tests check that both
agree to the byte. Eager PyTorch without folding keeps more alive (BN outputs), so it is not what is counted.
"""

from __future__ import annotations

import weakref
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_leaves

from ..core.arch import Arch, se_channels
from ..core.space import Space
from ..core.subnet import ConvBNAct, MBConv, Subnet

__all__ = ["DTYPE_BYTES", "FusedSubnet", "activation_peaks", "dtype_bytes", "measure_peak_memory",
           "peak_activation_elements", "peak_memory"]

DTYPE_BYTES = {"float32": 4, "float16": 2, "bfloat16": 2, "int8": 1, "uint8": 1}


def dtype_bytes(dtype: str) -> int:
    """Bytes per activation element of ``dtype`` (float32, float16, bfloat16, int8, uint8)."""
    if dtype not in DTYPE_BYTES:
        raise ValueError(f"dtype: {dtype!r} is not valid; valid: {', '.join(DTYPE_BYTES)}")
    return DTYPE_BYTES[dtype]


def _down(h: int, stride: int) -> int:
    return (h - 1) // stride + 1


def activation_peaks(space: Space, arch: Arch) -> list[tuple[str, int]]:
    """Per part of the fused inference forward of ``arch`` at batch 1 (``stem``, ``block0`` (the fixed first
    block), ``block1`` .., ``head``): the largest number of activation elements alive at once while it runs
    (module docstring)."""
    space.validate(arch)
    r = arch.resolution
    h_stem, _, sizes = space.spatial_sizes(r)
    cur = space.stem_width * h_stem * h_stem
    parts = [("stem", space.in_channels * r * r + cur)]
    shapes = [(space.first_block_shape(), h_stem)]
    shapes += [(shape, sizes[s][b]) for s, stage in enumerate(space.blocks(arch)) for b, shape in enumerate(stage)]
    for i, (shape, side) in enumerate(shapes):
        out_side = _down(side, shape.stride)
        m2 = shape.mid * out_side * out_side
        out = shape.out * out_side * out_side
        if shape.has_expand:
            m1 = shape.mid * side * side
            peaks = [cur + m1, cur + m1 + m2]  # expand conv, then depthwise while its input is alive
        else:
            peaks = [cur + m2]  # the depthwise conv reads the block input itself
        if shape.se:
            peaks.append(cur + m2 + shape.mid + se_channels(shape.mid))  # pooled vector + reduced, then rescale
        peaks.append(cur + m2 + out)  # project; the block input stays alive for the residual add
        parts.append((f"block{i}", max(peaks)))
        cur = out
    side, ch, peaks = space.final_side(r), space.final_width, []
    for hc in space.head:
        if not hc.after_pool:
            nxt = hc.width * side * side
            peaks.append(cur + nxt)
            cur, ch = nxt, hc.width
    peaks.append(cur + ch)  # global pooling
    cur = ch
    for hc in space.head:
        if hc.after_pool:
            peaks.append(cur + hc.width)
            cur = hc.width
    peaks.append(cur + space.num_classes)
    parts.append(("head", max(peaks)))
    return parts


def peak_activation_elements(space: Space, arch: Arch) -> int:
    """The largest number of activation elements alive at once in the fused inference forward of ``arch``
    at batch 1 (the maximum of :func:`activation_peaks`)."""
    return max(n for _, n in activation_peaks(space, arch))


def peak_memory(space: Space, arch: Arch, dtype: str = "float32") -> int:
    """Peak activation memory (bytes) of ``arch`` at batch 1 in ``dtype``: :func:`peak_activation_elements`
    times the element size. Weights are not included (they are counted by ``space.params``)."""
    return peak_activation_elements(space, arch) * dtype_bytes(dtype)


# ---------------------------------------------------------------------------------------------------------
# The fused forward the model describes, and its measurement
# ---------------------------------------------------------------------------------------------------------


def _fold(conv: nn.Conv2d, bn: nn.BatchNorm2d | None) -> nn.Conv2d:
    """``conv`` followed by ``bn`` (eval statistics) as one convolution with a bias."""
    out = nn.Conv2d(conv.in_channels, conv.out_channels, conv.kernel_size, conv.stride, conv.padding,
                    groups=conv.groups, bias=bn is not None or conv.bias is not None)
    with torch.no_grad():
        w, b = conv.weight, conv.bias if conv.bias is not None else torch.zeros(conv.out_channels)
        if bn is not None:
            scale = bn.weight / torch.sqrt(bn.running_var + bn.eps)
            w, b = w * scale.view(-1, 1, 1, 1), (b - bn.running_mean) * scale + bn.bias
        out.weight.copy_(w)
        if out.bias is not None:
            out.bias.copy_(b)
    return out


def _act(name: str | None) -> Callable[[torch.Tensor], torch.Tensor]:
    if name is None:
        return lambda x: x
    return {"relu": F.relu_, "relu6": lambda x: F.hardtanh_(x, 0.0, 6.0),
            "hswish": lambda x: F.hardswish(x, inplace=True)}[name]


def _act_name(module: nn.Module) -> str:
    return {nn.ReLU: "relu", nn.ReLU6: "relu6", nn.Hardswish: "hswish"}[type(module)]


class _FusedBlock(nn.Module):
    def __init__(self, block: MBConv):
        super().__init__()
        s = block.shape
        self.residual, self.act = s.residual, _act(s.act)
        self.expand = _fold(block.expand_conv, block.expand_bn) if s.has_expand else None
        self.dw = _fold(block.dw_conv, block.dw_bn)
        self.se = (block.se.reduce, block.se.expand) if block.se is not None else None
        self.project = _fold(block.project_conv, block.project_bn)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = x
        if self.expand is not None:
            h = self.act(self.expand(h))
        h = self.act(self.dw(h))
        if self.se is not None:
            reduce, expand = self.se
            s = F.relu_(reduce(h.mean((2, 3), keepdim=True)))
            h.mul_(F.hardsigmoid(expand(s), inplace=True))
            del s
        h = self.project(h)
        if self.residual:
            h += x
        return h


class FusedSubnet(nn.Module):
    """Inference form of a :class:`~onceforall.core.subnet.Subnet` (eval mode): BN folded into the convs,
    activations, SE rescale and residual adds in place. Its outputs equal the subnet's (up to float
    rounding); :meth:`run` releases the input after the stem, as a deployment runtime does."""

    def __init__(self, sub: Subnet):
        super().__init__()
        stem = sub.stem.conv
        self.resolution = sub.resolution
        self.stem, self.stem_act = _fold(stem.conv, stem.bn), _act(_act_name(stem.act))
        self.blocks = nn.ModuleList([_FusedBlock(sub.stem.first_block), *map(_FusedBlock, sub.blocks)])
        self.pre = nn.ModuleList([self._layer(m) for m in sub.head.pre_pool])
        self.post = nn.ModuleList([self._layer(m) for m in sub.head.post_pool])
        self._pre_acts = [_act(_act_name(m.act)) for m in sub.head.pre_pool]
        self._post_acts = [_act(_act_name(m.act)) for m in sub.head.post_pool]
        self.classifier = sub.head.classifier

    @staticmethod
    def _layer(m: nn.Module) -> nn.Conv2d:
        return _fold(m.conv, m.bn if isinstance(m, ConvBNAct) else None)

    @torch.no_grad()
    def run(self, box: list[torch.Tensor]) -> torch.Tensor:
        """Logits for the one input in ``box`` (taken out of it, so the input is freed after the stem)."""
        x = box.pop()
        x = self.stem_act(self.stem(x))
        for block in self.blocks:
            x = block(x)
        for conv, act in zip(self.pre, self._pre_acts):
            x = act(conv(x))
        x = x.mean((2, 3), keepdim=True)
        for conv, act in zip(self.post, self._post_acts):
            x = act(conv(x))
        return self.classifier(torch.flatten(x, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.run([x])


class _LiveTensors(TorchDispatchMode):
    """Bytes of the storages that op outputs hold, counted while any tensor on them is alive."""

    def __init__(self, exclude: set[int]):
        super().__init__()
        self.exclude = exclude
        self.live: dict[int, list[int]] = {}  # storage address -> [bytes, tensors alive on it]
        self.current = self.peak = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        for t in tree_leaves(out):
            if isinstance(t, torch.Tensor):
                self._track(t)
        return out

    def _track(self, t: torch.Tensor) -> None:
        storage = t.untyped_storage()
        ptr = storage.data_ptr()
        if ptr in self.exclude or storage.nbytes() == 0:
            return
        entry = self.live.get(ptr)
        if entry is None:
            entry = self.live[ptr] = [storage.nbytes(), 0]
            self.current += entry[0]
            self.peak = max(self.peak, self.current)
        entry[1] += 1
        weakref.finalize(t, self._release, ptr)

    def _release(self, ptr: int) -> None:
        entry = self.live[ptr]
        entry[1] -= 1
        if entry[1] == 0:
            self.current -= entry[0]
            del self.live[ptr]


def measure_peak_memory(model: FusedSubnet, in_channels: int, dtype: torch.dtype = torch.float32,
                        per_part: bool = False) -> int | list[tuple[str, int]]:
    """Measured peak activation memory (bytes) of one batch-1 inference of ``model`` at its resolution: the
    largest total of live op outputs (the input included until it is freed; weights excluded). ``per_part``:
    the peak of each part (``stem``, ``block0`` .., ``head``), as :func:`activation_peaks` names them."""
    model = model.to(dtype).eval()
    exclude = {t.untyped_storage().data_ptr() for t in [*model.parameters(), *model.buffers()]}
    r = model.resolution
    parts: list[tuple[str, int]] = []
    live = _LiveTensors(exclude)

    def close(name: str) -> None:  # the part that just ended; the next one starts from what is alive now
        parts.append((name, live.peak))
        live.peak = live.current

    n = len(model.blocks)
    hooks = [b.register_forward_pre_hook(lambda m, a, i=i: close("stem" if i == 0 else f"block{i - 1}"))
             for i, b in enumerate(model.blocks)]
    hooks.append(model.blocks[n - 1].register_forward_hook(lambda m, a, o: close(f"block{n - 1}")))
    try:
        with torch.no_grad(), live:
            model.run([torch.zeros((1, in_channels, r, r), dtype=dtype)])
    finally:
        for h in hooks:
            h.remove()
    close("head")
    return parts if per_part else max(p for _, p in parts)
