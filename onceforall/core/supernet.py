"""The elastic supernet: one set of weights that runs any arch of its space.

``net(x, arch)`` runs ``arch``; there is no sticky "active subnet" state. Elasticity (OFA, Cai et al.
2020): depth = the first d blocks of a stage; expand = the first ``mid`` middle channels of a block
(channel slicing of the expand/depthwise/SE/project weights and BN); kernel = the center of the
largest depthwise kernel, transformed 7->5->3 by learnable matrices shared by all channels of a block;
resolution = bilinear resizing on the device. ``net.extract(arch)`` copies the arch's weights, BN
statistics and transformed kernels into a static :class:`~onceforall.subnet.Subnet`.
"""

from __future__ import annotations

import math
import random
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from .arch import Arch, mid_channels, se_channels
from .depthwise import DEPTHWISE_GRADS, depthwise_conv2d
from .space import BlockShape, Space
from .subnet import Head, Stem, Subnet, resize_to, squeeze_excite

__all__ = ["ElasticBlock", "Supernet", "build_supernet"]


def _act(x: torch.Tensor, name: str) -> torch.Tensor:
    if name == "relu":
        return F.relu(x, inplace=True)
    if name == "relu6":
        return F.relu6(x, inplace=True)
    return F.hardswish(x, inplace=True)


def _bn(x: torch.Tensor, bn: nn.BatchNorm2d, c: int) -> torch.Tensor:
    """BatchNorm over the first ``c`` channels of ``bn`` (same semantics as nn.BatchNorm2d, incl.
    cumulative averaging when momentum is None, which BN recalibration uses)."""
    if c == bn.num_features:
        return bn(x)
    factor = 0.0
    if bn.training and bn.track_running_stats:
        bn.num_batches_tracked.add_(1)
        factor = 1.0 / float(bn.num_batches_tracked) if bn.momentum is None else bn.momentum
    use_batch_stats = bn.training or bn.running_mean is None
    return F.batch_norm(
        x,
        bn.running_mean[:c] if bn.running_mean is not None else None,
        bn.running_var[:c] if bn.running_var is not None else None,
        bn.weight[:c],
        bn.bias[:c],
        use_batch_stats,
        factor,
        bn.eps,
    )


class ElasticSE(nn.Module):
    """Squeeze-and-excitation whose channel count follows the block's middle channels."""

    def __init__(self, channels: int):
        super().__init__()
        hidden = se_channels(channels)
        self.reduce = nn.Conv2d(channels, hidden, 1, bias=True)
        self.expand = nn.Conv2d(hidden, channels, 1, bias=True)

    def forward(self, x: torch.Tensor, mid: int) -> torch.Tensor:
        if mid == self.expand.out_channels:
            return squeeze_excite(x, self.reduce.weight, self.reduce.bias, self.expand.weight, self.expand.bias)
        hid = se_channels(mid)
        return squeeze_excite(x, self.reduce.weight[:hid, :mid], self.reduce.bias[:hid],
                              self.expand.weight[:mid, :hid], self.expand.bias[:mid])


class ElasticBlock(nn.Module):
    """Inverted residual block with elastic kernel size and middle channels.

    Parameter names match :class:`~onceforall.subnet.MBConv`, so extraction slices tensor by tensor.
    """

    def __init__(self, shape: BlockShape, kernels: tuple[int, ...], kernel_transform: bool, eps: float,
                 momentum: float, depthwise_grad: str = "auto"):
        super().__init__()
        self.shape = shape  # shape of the largest variant (max kernel, max expand)
        self.depthwise_grad = depthwise_grad
        self.kernel_sizes = tuple(sorted(kernels))
        kmax, mid = self.kernel_sizes[-1], shape.mid
        self.expand_conv = nn.Conv2d(shape.in_ch, mid, 1, bias=False)
        self.expand_bn = nn.BatchNorm2d(mid, eps=eps, momentum=momentum)
        self.dw_conv = nn.Conv2d(mid, mid, kmax, shape.stride, kmax // 2, groups=mid, bias=False)
        self.dw_bn = nn.BatchNorm2d(mid, eps=eps, momentum=momentum)
        self.se = ElasticSE(mid) if shape.se else None
        self.project_conv = nn.Conv2d(mid, shape.out, 1, bias=False)
        self.project_bn = nn.BatchNorm2d(shape.out, eps=eps, momentum=momentum)
        # OFA's kernel transformation matrices: the k x k center of the larger kernel, flattened, is
        # multiplied by a learnable (k*k, k*k) matrix (identity at init, i.e. plain center crop).
        self.kernel_transform = (
            nn.ParameterDict(
                {f"{big}to{small}": nn.Parameter(torch.eye(small * small))
                 for big, small in zip(self.kernel_sizes[1:], self.kernel_sizes[:-1])}
            )
            if kernel_transform
            else None
        )

    def dw_weight(self, kernel: int, mid: int) -> torch.Tensor:
        """Depthwise filter of size ``kernel`` for the first ``mid`` channels."""
        w = self.dw_conv.weight if mid == self.shape.mid else self.dw_conv.weight[:mid]
        size = w.shape[-1]
        if kernel == size:
            return w
        if self.kernel_transform is None:
            c = (size - kernel) // 2
            return w[:, :, c : c + kernel, c : c + kernel]
        for small in reversed(self.kernel_sizes):  # 7 -> 5 -> 3
            if small >= size:
                continue
            c = (size - small) // 2
            w = w[:, :, c : c + small, c : c + small].reshape(mid, small * small)
            w = F.linear(w, self.kernel_transform[f"{size}to{small}"]).reshape(mid, 1, small, small)
            size = small
            if size == kernel:
                break
        return w

    def forward(self, x: torch.Tensor, kernel: int, mid: int) -> torch.Tensor:
        act, full = self.shape.act, mid == self.shape.mid
        w_expand = self.expand_conv.weight if full else self.expand_conv.weight[:mid]
        h = _act(_bn(F.conv2d(x, w_expand), self.expand_bn, mid), act)
        h = depthwise_conv2d(h, self.dw_weight(kernel, mid), self.shape.stride, kernel // 2, self.depthwise_grad)
        h = _act(_bn(h, self.dw_bn, mid), act)
        if self.se is not None:
            h = self.se(h, mid)
        w_project = self.project_conv.weight if full else self.project_conv.weight[:, :mid]
        h = self.project_bn(F.conv2d(h, w_project))
        return h + x if self.shape.residual else h

    @torch.no_grad()
    def export_state(self, kernel: int, mid: int, target: nn.Module) -> None:
        """Copy the weights of the (kernel, mid) variant into a static MBConv ``target``."""
        src = self.state_dict()
        for name, dst in target.state_dict().items():
            if name == "dw_conv.weight":
                value = self.dw_weight(kernel, mid)
            else:
                value = src[name][tuple(slice(0, n) for n in dst.shape)]
            dst.copy_(value)

    @torch.no_grad()
    def reorganize(self, bounds: tuple[int, ...] = ()) -> list[tuple[nn.Parameter | torch.Tensor, int, torch.Tensor]]:
        """Sort middle channels by importance (L1 norm of the project weights over outputs, OFA) so smaller
        expand ratios keep the most important ones; also sorts the SE hidden channels. ``bounds``: middle-channel
        counts that split the channels into segments each sorted on its own (OFA's ``expand_ratio_stage``: the
        channels a smaller expand ratio already trained stay first); (): one sort over all. The block's function
        at full width is unchanged. Returns (tensor, dim, index) for every permuted tensor so optimizer state
        can follow."""
        importance = self.project_conv.weight.abs().sum(dim=(0, 2, 3))
        idx = _segment_sort(importance, bounds)
        moves = [
            (self.expand_conv.weight, 0), (self.expand_bn.weight, 0), (self.expand_bn.bias, 0),
            (self.expand_bn.running_mean, 0), (self.expand_bn.running_var, 0),
            (self.dw_conv.weight, 0), (self.dw_bn.weight, 0), (self.dw_bn.bias, 0),
            (self.dw_bn.running_mean, 0), (self.dw_bn.running_var, 0), (self.project_conv.weight, 1),
        ]
        if self.se is not None:
            moves += [(self.se.reduce.weight, 1), (self.se.expand.weight, 0), (self.se.expand.bias, 0)]
        done = [_permute(t, dim, idx) for t, dim in moves]
        if self.se is not None:  # OFA: the hidden units by the L1 norm of the (re-organized) expand weights
            se_importance = self.se.expand.weight.abs().sum(dim=(0, 2, 3))
            se_idx = torch.sort(se_importance, descending=True, stable=True).indices
            se_moves = [(self.se.expand.weight, 1), (self.se.reduce.weight, 0), (self.se.reduce.bias, 0)]
            done += [_permute(t, dim, se_idx) for t, dim in se_moves]
        return done


def _segment_sort(importance: torch.Tensor, bounds: tuple[int, ...]) -> torch.Tensor:
    """Indices sorting ``importance`` descending within each segment [0, b1), [b1, b2), ..., [bk, n). OFA adds
    offsets of -1e5 per segment and sorts once, which is the same order up to ties (in float32 the offsets round
    the outer segments' importances to about 0.02, so OFA may order near-ties there differently)."""
    n = importance.numel()
    edges = [0, *sorted(b for b in set(bounds) if 0 < b < n), n]
    return torch.cat([lo + torch.sort(importance[lo:hi], descending=True, stable=True).indices
                      for lo, hi in zip(edges[:-1], edges[1:])])


def _permute(t: torch.Tensor, dim: int, idx: torch.Tensor):
    t.copy_(t.index_select(dim, idx))
    return t, dim, idx


class Supernet(nn.Module):
    """Weight-shared network for every arch of ``space``. Call ``net(x, arch)``.

    Build with :func:`build_supernet`. ``net.space`` is the space it was built for (with its number of
    classes and input channels); archs of restrictions of that space run too.
    """

    def __init__(self, space: Space, dropout: float = 0.1, kernel_transform: bool = True,
                 depthwise_grad: str = "auto"):
        super().__init__()
        self.space = space
        self.dropout_rate = dropout
        self.kernel_transform = kernel_transform
        full = space.max()
        self.stem = Stem(space)
        self.stages = nn.ModuleList()
        for s, st in enumerate(space.stages):
            blocks = nn.ModuleList(
                ElasticBlock(space.block_shape(s, b, max(st.kernels), max(st.expands)), st.kernels,
                             kernel_transform, space.bn_eps, space.bn_momentum, depthwise_grad)
                for b in range(max(st.depths))
            )
            self.stages.append(blocks)
        self.head = Head(space, dropout)
        self._checked: set[Arch] = {full}
        self._mid: dict[tuple[int, int, float], int] = {}

    def check(self, arch: Arch) -> Arch:
        """Validate that ``arch`` runs on this supernet (cached; raises ValueError naming the field)."""
        if arch not in self._checked:
            self.space.validate(arch)
            if len(self._checked) > 65536:
                self._checked.clear()
            self._checked.add(arch)
        return arch

    def forward(self, x: torch.Tensor, arch: Arch | None = None, dropout: bool = True) -> torch.Tensor:
        """Logits of ``arch`` for ``x`` (resized to the arch's resolution); ``dropout=False`` skips the
        classifier's dropout in training mode (the official recipes drop out only on the full model's pass).
        Without ``arch``, the active subnet of OFA's :meth:`set_active_subnet` (the full network at first)."""
        arch = self.check(self.active_arch if arch is None else arch)
        x = self.stem(resize_to(x, arch.resolution))
        for s, (blocks, ks, es) in enumerate(zip(self.stages, arch.kernels, arch.expands)):
            for b, (k, e) in enumerate(zip(ks, es)):
                x = blocks[b](x, k, self.mid_channels(s, b, e))
        return self.head(x, dropout)

    def mid_channels(self, s: int, b: int, expand: float) -> int:
        """Middle channels of block ``b`` of stage ``s`` at ``expand``."""
        key = (s, b, expand)
        if key not in self._mid:
            self._mid[key] = mid_channels(self.stages[s][b].shape.in_ch, expand)
        return self._mid[key]

    @torch.no_grad()
    def extract(self, arch: Arch) -> Subnet:
        """A static subnet with copied weights: ``sub(x) == net(x, arch)`` in eval mode."""
        self.check(arch)
        ref = next(self.parameters())
        with torch.random.fork_rng(devices=[]):  # the throwaway init must not move the global RNG
            sub = Subnet(self.space, arch, self.dropout_rate)
        sub.to(device=ref.device, dtype=ref.dtype)
        sub.stem.load_state_dict(self.stem.state_dict())
        sub.head.load_state_dict(self.head.state_dict())
        i = 0
        for s, (ks, es) in enumerate(zip(arch.kernels, arch.expands)):
            for b, (k, e) in enumerate(zip(ks, es)):
                self.stages[s][b].export_state(k, self.mid_channels(s, b, e), sub.blocks[i])
                i += 1
        return sub.train(self.training)

    @torch.no_grad()
    def reorganize_channels(self, keep: tuple[float, ...] = ()) -> list[tuple[torch.Tensor, int, torch.Tensor]]:
        """OFA's channel re-organization on every elastic block (see ElasticBlock.reorganize). ``keep``: expand
        ratios whose middle-channel widths bound the segments sorted separately (OFA's ``expand_ratio_stage``:
        the official DεpS code keeps every expand choice but the largest and the smallest); (): one sort."""
        moves = []
        for s, blocks in enumerate(self.stages):
            for b, block in enumerate(blocks):
                moves += block.reorganize(tuple(self.mid_channels(s, b, e) for e in keep))
        return moves

    def extra_repr(self) -> str:
        return (f"space={self.space.name}, width_mult={self.space.width_mult:g}, "
                f"kernel_transform={self.kernel_transform}")

    # ---- OFA's names: thin wrappers over archs, for code written against OFA's supernets -----------------

    @property
    def active_arch(self) -> Arch:
        """The arch :meth:`set_active_subnet` chose (the full network until then)."""
        cfg = self.__dict__.get("_ofa_active")
        return self.space.max() if cfg is None else self.space.from_ofa_config(cfg)

    def set_active_subnet(self, ks: Any = None, e: Any = None, d: Any = None, r: Any = None,
                          wid: Any = None) -> None:
        """OFA's ``set_active_subnet``: ``ks`` and ``e`` per block slot (a list of one entry per slot of every
        stage's max depth, or one value for all), ``d`` per stage (a list or one value); a field left None keeps
        its current value, as OFA's does (every slot keeps a value, used when a depth grows again). ``r`` (not
        OFA's: its resolution comes from the data loader) sets the resolution, default the largest; ``wid``
        must be None (OFA's width choice; width is not elastic here). Bad values raise a one-line ValueError."""
        space = self.space
        cfg = dict(self.__dict__.get("_ofa_active") or space.to_ofa_config(space.max()))
        n_slots = sum(space.max_depths)
        for name, value, n in (("ks", ks, n_slots), ("e", e, n_slots), ("d", d, space.num_stages)):
            if value is not None:
                cfg[name] = list(value) if isinstance(value, (list, tuple)) else [value] * n
        if r is not None:
            cfg["r"] = [r]
        self.check(space.from_ofa_config({**cfg, "wid": wid}))  # validates every field before anything changes
        self.__dict__["_ofa_active"] = cfg

    def get_active_subnet(self, preserve_weight: bool = True) -> Subnet:
        """OFA's ``get_active_subnet``: the active arch as a static subnet with its weights copied
        (:meth:`extract`; ``preserve_weight`` is accepted for OFA's signature, the weights are always copied)."""
        return self.extract(self.active_arch)

    def sample_active_subnet(self, rng: random.Random | None = None) -> dict[str, list]:
        """OFA's ``sample_active_subnet``: a kernel and an expand per block slot (all slots, used or not) and a
        depth per stage, each uniform over the stage's choices (a coupled stage's expand follows its depth), set
        active and returned as ``{"ks", "e", "d"}``. Draws from ``rng`` (a fresh ``random.Random()`` when None;
        never the global RNG, which OFA's uses); the resolution is left as it is."""
        rng = rng or random.Random()
        ks, es, ds = [], [], []
        for s, st in enumerate(self.space.stages):
            ds.append(rng.choice(st.depths))
            coupled = self.space.coupled_expand(s, ds[-1])
            for _ in range(max(st.depths)):
                ks.append(rng.choice(st.kernels))
                es.append(coupled if coupled is not None else rng.choice(st.expands))
        self.set_active_subnet(ks=ks, e=es, d=ds)
        return {"ks": ks, "e": es, "d": ds}


def init_weights(module: nn.Module, generator: torch.Generator) -> None:
    """OFA's 'he_fout' init: conv ~ N(0, 2 / (k*k*out)), BN (1, 0), linear U(+-1/sqrt(in)), zero biases."""
    for m in module.modules():
        if isinstance(m, nn.Conv2d):
            n = m.kernel_size[0] * m.kernel_size[1] * m.out_channels
            m.weight.data.normal_(0.0, math.sqrt(2.0 / n), generator=generator)
            if m.bias is not None:
                m.bias.data.zero_()
        elif isinstance(m, nn.BatchNorm2d):
            m.weight.data.fill_(1.0)
            m.bias.data.zero_()
        elif isinstance(m, nn.Linear):
            bound = 1.0 / math.sqrt(m.weight.shape[1])
            m.weight.data.uniform_(-bound, bound, generator=generator)
            if m.bias is not None:
                m.bias.data.zero_()


def build_supernet(
    space: Space,
    num_classes: int | None = None,
    *,
    in_channels: int | None = None,
    dropout: float = 0.1,
    kernel_transform: bool = True,
    bn_momentum: float | None = None,
    seed: int = 0,
    depthwise_grad: str = "auto",
) -> Supernet:
    """Build and initialise a supernet for ``space`` (deterministic in ``seed``; global RNG untouched).

    ``num_classes`` / ``in_channels`` override the space's; ``net.space`` reflects them. ``bn_momentum``: the
    training BN momentum of every BN (PyTorch convention); None: the space's (``space.bn_momentum``, which
    extracted subnets and exports keep, so it stays part of the space's identity unchanged). ``depthwise_grad``:
    the weight-gradient kernel of depthwise convolutions (:mod:`onceforall.core.depthwise`).
    """
    if not 0.0 <= dropout < 1.0:
        raise ValueError(f"dropout: {dropout} is not valid; must be in [0, 1)")
    if bn_momentum is not None and not 0.0 < bn_momentum <= 1.0:
        raise ValueError(f"bn_momentum: {bn_momentum} is not valid; must be in (0, 1]")
    if depthwise_grad not in DEPTHWISE_GRADS:
        raise ValueError(f"depthwise_grad: {depthwise_grad!r} is not valid; must be one of "
                         f"{', '.join(DEPTHWISE_GRADS)}")
    space = space.with_io(num_classes=num_classes, in_channels=in_channels)
    with torch.random.fork_rng(devices=[]):
        net = Supernet(space, dropout=dropout, kernel_transform=kernel_transform, depthwise_grad=depthwise_grad)
    init_weights(net, torch.Generator().manual_seed(seed))
    if bn_momentum is not None:
        for m in net.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.momentum = bn_momentum
    return net
