"""Static networks: plain Conv2d / BatchNorm2d / Linear modules, no elastic code.

:class:`Subnet` is what ``net.extract(arch)`` returns and what an export sidecar rebuilds without the
supernet. The fixed parts of the supernet (stem, first block, head) are these same modules.
"""

from __future__ import annotations

import copy
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils.fusion import fuse_conv_bn_eval

from .arch import Arch, se_channels
from .space import BlockShape, Space

__all__ = ["ConvBNAct", "Head", "MBConv", "SqueezeExcite", "Subnet", "activation", "build_subnet", "fold_batchnorm",
           "resize_to"]


def activation(name: str) -> nn.Module:
    """Activation module by name (relu, relu6, hswish)."""
    if name == "relu":
        return nn.ReLU(inplace=True)
    if name == "relu6":
        return nn.ReLU6(inplace=True)
    if name == "hswish":
        return nn.Hardswish(inplace=True)
    raise ValueError(f"activation: unknown name '{name}'; valid: relu, relu6, hswish")


def resize_to(x: torch.Tensor, resolution: int) -> torch.Tensor:
    """Bilinearly resize a batch of images to ``resolution`` x ``resolution`` (no-op if already there)."""
    if x.shape[-1] == resolution and x.shape[-2] == resolution:
        return x
    return F.interpolate(x, size=(resolution, resolution), mode="bilinear", align_corners=False)


class ConvBNAct(nn.Sequential):
    """Conv (no bias) + BatchNorm + activation, 'same' padding."""

    def __init__(self, cin: int, cout: int, kernel: int, stride: int, act: str, eps: float, momentum: float):
        super().__init__()
        self.conv = nn.Conv2d(cin, cout, kernel, stride, kernel // 2, bias=False)
        self.bn = nn.BatchNorm2d(cout, eps=eps, momentum=momentum)
        self.act = activation(act)


class SqueezeExcite(nn.Module):
    """Squeeze-and-excitation: mean pool, 1x1 reduce + ReLU, 1x1 expand + hard sigmoid, rescale."""

    def __init__(self, channels: int, hidden: int):
        super().__init__()
        self.reduce = nn.Conv2d(channels, hidden, 1, bias=True)
        self.expand = nn.Conv2d(hidden, channels, 1, bias=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return squeeze_excite(x, self.reduce.weight, self.reduce.bias, self.expand.weight, self.expand.bias)


def squeeze_excite(x: torch.Tensor, w_reduce, b_reduce, w_expand, b_expand) -> torch.Tensor:
    """x * hardsigmoid(expand(relu(reduce(mean(x))))) with the given 1x1 weights (shared by the elastic SE)."""
    s = F.relu(F.conv2d(x.mean((2, 3), keepdim=True), w_reduce, b_reduce))
    # relu6(z + 3) / 6 rather than F.hardsigmoid: the same values, but torch's hardsigmoid backward multiplies
    # by a float32 1/6 even in float64 (3e-8 relative), which the float64 parity test with the official code sees
    return x * (F.relu6(F.conv2d(s, w_expand, b_expand) + 3.0) / 6.0)


class MBConv(nn.Module):
    """Inverted residual block: [1x1 expand + BN + act] -> kxk depthwise + BN + act -> [SE] -> 1x1 project + BN."""

    def __init__(self, shape: BlockShape, eps: float, momentum: float):
        super().__init__()
        self.shape = shape
        if shape.has_expand:
            self.expand_conv = nn.Conv2d(shape.in_ch, shape.mid, 1, bias=False)
            self.expand_bn = nn.BatchNorm2d(shape.mid, eps=eps, momentum=momentum)
        self.dw_conv = nn.Conv2d(
            shape.mid, shape.mid, shape.kernel, shape.stride, shape.kernel // 2, groups=shape.mid, bias=False
        )
        self.dw_bn = nn.BatchNorm2d(shape.mid, eps=eps, momentum=momentum)
        self.act = activation(shape.act)
        self.se = SqueezeExcite(shape.mid, se_channels(shape.mid)) if shape.se else None
        self.project_conv = nn.Conv2d(shape.mid, shape.out, 1, bias=False)
        self.project_bn = nn.BatchNorm2d(shape.out, eps=eps, momentum=momentum)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = x
        if self.shape.has_expand:
            h = self.act(self.expand_bn(self.expand_conv(h)))
        h = self.act(self.dw_bn(self.dw_conv(h)))
        if self.se is not None:
            h = self.se(h)
        h = self.project_bn(self.project_conv(h))
        return h + x if self.shape.residual else h


class Head(nn.Module):
    """1x1 convs before/after global pooling, dropout, linear classifier."""

    def __init__(self, space: Space, dropout: float):
        super().__init__()
        pre, post = [], []
        ch = space.final_width
        for hc in space.head:
            if hc.bn:
                layer = ConvBNAct(ch, hc.width, 1, 1, hc.act, space.bn_eps, space.bn_momentum)
            else:
                layer = nn.Sequential()
                layer.conv = nn.Conv2d(ch, hc.width, 1, bias=False)
                layer.act = activation(hc.act)
            (post if hc.after_pool else pre).append(layer)
            ch = hc.width
        self.pre_pool = nn.Sequential(*pre)
        self.post_pool = nn.Sequential(*post)
        self.dropout = nn.Dropout(dropout)
        self.classifier = nn.Linear(ch, space.num_classes)

    def forward(self, x: torch.Tensor, dropout: bool = True) -> torch.Tensor:
        x = self.pre_pool(x)
        x = torch.flatten(self.post_pool(x.mean((2, 3), keepdim=True)), 1)
        return self.classifier(self.dropout(x) if dropout else x)


class Stem(nn.Module):
    """Stem conv and the fixed first block."""

    def __init__(self, space: Space):
        super().__init__()
        self.conv = ConvBNAct(space.in_channels, space.stem_width, 3, space.stem_stride, space.stem_act,
                              space.bn_eps, space.bn_momentum)
        self.first_block = MBConv(space.first_block_shape(), space.bn_eps, space.bn_momentum)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.first_block(self.conv(x))


class Subnet(nn.Module):
    """A standalone network for one arch of a space (what ``Supernet.extract`` returns).

    Attributes ``space``, ``arch`` and ``dropout`` describe it fully; :func:`build_subnet` rebuilds
    the same module (with fresh weights) from them, which is how exports are loaded.
    """

    def __init__(self, space: Space, arch: Arch, dropout: float = 0.1):
        super().__init__()
        space.validate(arch)
        self.space, self.arch, self.dropout_rate = space, arch, dropout
        self.resolution = arch.resolution
        self.stem = Stem(space)
        self.blocks = nn.Sequential(
            *(MBConv(shape, space.bn_eps, space.bn_momentum) for stage in space.blocks(arch) for shape in stage)
        )
        self.head = Head(space, dropout)

    @property
    def config(self) -> dict[str, Any]:
        """OFA's description of this subnet (``Space.to_ofa_net_config``), as OFA's static networks' ``config``;
        its arch in OFA's ``{"ks", "e", "d", "r"}`` format is ``space.to_ofa_config(arch)``."""
        return self.space.to_ofa_net_config(self.arch, self.dropout_rate)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = resize_to(x, self.resolution)
        return self.head(self.blocks(self.stem(x)))

    def macs(self) -> int:
        return self.space.macs(self.arch)

    def num_params(self) -> int:
        return sum(p.numel() for p in self.parameters())

    def extra_repr(self) -> str:
        return f"arch={self.arch}, space={self.space.name}, width_mult={self.space.width_mult:g}"


# (conv, BN) attribute pairs of each module type, the BN applied right after the conv
_CONV_BN = {MBConv: (("expand_conv", "expand_bn"), ("dw_conv", "dw_bn"), ("project_conv", "project_bn")),
            ConvBNAct: (("conv", "bn"),)}


@torch.no_grad()
def fold_batchnorm(sub: Subnet, inplace: bool = False) -> Subnet:
    """A copy of ``sub`` for inference with every BatchNorm folded into the conv before it (the conv gets the
    bias ``beta - gamma * mean / sqrt(var + eps)`` and its weight is scaled by ``gamma / sqrt(var + eps)``; the BN
    becomes an identity): the same function in eval mode up to float rounding, one memory pass fewer per conv
    (on CPU, eval-mode BN in channels_last took 30 % of a forward). ``sub`` is untouched unless ``inplace``
    (then it is the folded subnet returned)."""
    out = (sub if inplace else copy.deepcopy(sub)).eval()
    for module in out.modules():
        for conv_name, bn_name in _CONV_BN.get(type(module), ()):
            if hasattr(module, conv_name):  # an MBConv without expansion has no expand conv
                conv, bn = getattr(module, conv_name), getattr(module, bn_name)
                setattr(module, conv_name, fuse_conv_bn_eval(conv, bn))
                setattr(module, bn_name, nn.Identity())
    return out


def build_subnet(space: Space, arch: Arch, dropout: float = 0.1) -> Subnet:
    """A freshly initialised static subnet for ``arch`` (weights are not trained)."""
    return Subnet(space, arch, dropout)
