"""Depthwise convolution whose weight gradient stays fast on CPU when the filter is larger than the image.

On CPU (oneDNN, AVX2), the weight gradient of a depthwise convolution costs 10-20x its forward pass once the
kernel is larger than the feature map (7x7 filters on the last stages' 5x5, 3x3, 1x1 maps at CIFAR-sized inputs,
where most taps only meet padding): on the demo preset it was 60 % of a training step. There the map is so small
that the convolution is a dense per-channel map between its H*W inputs and Ho*Wo outputs, so the gradient of that
map is one batched matmul over channels, (C, Ho*Wo, N) @ (C, N, H*W), which an index sum folds back onto the
k*k filter taps. Same math as the native gradient (the sums run in another order: the last bits differ);
everywhere else, and on other devices, the native kernel runs. ``benchmarks/depthwise_grad.py`` measures both.
"""

from __future__ import annotations

from functools import lru_cache

import torch
import torch.nn.functional as F
from torch.autograd.function import once_differentiable

__all__ = ["DEPTHWISE_GRADS", "depthwise_conv2d", "tap_index", "use_matmul_grad"]

DEPTHWISE_GRADS = ("auto", "native")
"""``auto``: the matmul weight gradient where :func:`use_matmul_grad` says so; ``native``: PyTorch's always."""


def use_matmul_grad(x: torch.Tensor, kernel: int) -> bool:
    """Whether the matmul weight gradient runs: on CPU, for a filter larger than the feature map."""
    return x.device.type == "cpu" and kernel > min(x.shape[-2], x.shape[-1])


@lru_cache(maxsize=256)
def tap_index(height: int, width: int, kernel: int, stride: int, padding: int) -> torch.Tensor:
    """For every (output position, input position) pair, flattened as o * (height * width) + q, the filter tap
    ``i * kernel + j`` that connects them, or ``kernel * kernel`` (a discarded slot) where none does."""
    out_h = (height + 2 * padding - kernel) // stride + 1
    out_w = (width + 2 * padding - kernel) // stride + 1
    oh, ow = torch.arange(out_h).view(-1, 1, 1, 1), torch.arange(out_w).view(1, -1, 1, 1)
    h, w = torch.arange(height).view(1, 1, -1, 1), torch.arange(width).view(1, 1, 1, -1)
    i, j = h - oh * stride + padding, w - ow * stride + padding  # the tap that input (h, w) meets at output (oh, ow)
    valid = (i >= 0) & (i < kernel) & (j >= 0) & (j < kernel)
    return torch.where(valid, i * kernel + j, kernel * kernel).reshape(-1)


def _matmul_weight_grad(x: torch.Tensor, grad: torch.Tensor, kernel: int, stride: int, padding: int) -> torch.Tensor:
    n, c, height, width = x.shape
    # one copy of each operand into (channel, ...) matrices (bmm would otherwise copy matrix by matrix)
    dense = torch.bmm(grad.transpose(0, 1).reshape(c, n, -1).transpose(1, 2).contiguous(),
                      x.transpose(0, 1).reshape(c, n, -1).contiguous())
    taps = dense.new_zeros(c, kernel * kernel + 1)
    taps.index_add_(1, tap_index(height, width, kernel, stride, padding), dense.reshape(c, -1))
    return taps[:, :-1].reshape(c, 1, kernel, kernel)


class _DepthwiseConv(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x: torch.Tensor, weight: torch.Tensor, stride: int, padding: int) -> torch.Tensor:
        ctx.save_for_backward(x, weight)
        ctx.stride, ctx.padding = stride, padding
        return F.conv2d(x, weight, None, stride, padding, 1, weight.shape[0])

    @staticmethod
    @once_differentiable
    def backward(ctx, grad: torch.Tensor):
        x, weight = ctx.saved_tensors
        s, p, c = ctx.stride, ctx.padding, weight.shape[0]
        grad_x = grad_w = None
        if ctx.needs_input_grad[0]:
            grad_x = torch.ops.aten.convolution_backward(
                grad, x, weight, None, (s, s), (p, p), (1, 1), False, (0, 0), c, (True, False, False))[0]
        if ctx.needs_input_grad[1]:
            grad_w = _matmul_weight_grad(x, grad, weight.shape[-1], s, p)
        return grad_x, grad_w, None, None


def depthwise_conv2d(x: torch.Tensor, weight: torch.Tensor, stride: int, padding: int,
                     grad: str = "auto") -> torch.Tensor:
    """``F.conv2d(x, weight, None, stride, padding, groups=channels)`` for a square (C, 1, k, k) ``weight``, with
    the matmul weight gradient where ``grad`` is ``auto`` and :func:`use_matmul_grad` holds. The forward result is
    PyTorch's in every case."""
    if grad == "auto" and torch.is_grad_enabled() and weight.requires_grad and use_matmul_grad(x, weight.shape[-1]):
        return _DepthwiseConv.apply(x, weight, stride, padding)
    return F.conv2d(x, weight, None, stride, padding, 1, weight.shape[0])
