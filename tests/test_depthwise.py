"""The depthwise convolution's matmul weight gradient (core/depthwise.py) against PyTorch's."""

import random

import pytest
import torch
import torch.nn.functional as F

import onceforall as ofa
from onceforall.core.depthwise import depthwise_conv2d, use_matmul_grad
from onceforall.run.config import ConfigError, load_config

from .helpers import SPACE_NAMES, tiny_space


@pytest.mark.parametrize("fmt", [torch.contiguous_format, torch.channels_last], ids=["contiguous", "channels_last"])
@pytest.mark.parametrize("stride", [1, 2])
@pytest.mark.parametrize("kernel", [3, 5, 7])
def test_gradients_equal_pytorchs_on_every_small_map(kernel, stride, fmt):
    g = torch.Generator().manual_seed(kernel * 10 + stride)
    for height, width in [(1, 1), (2, 3), (3, 3), (4, 5), (5, 5), (6, 7), (9, 8)]:
        x = torch.randn(3, 6, height, width, generator=g, dtype=torch.float64)
        x = x.contiguous(memory_format=fmt).requires_grad_()
        w = torch.randn(6, 1, kernel, kernel, generator=g, dtype=torch.float64, requires_grad=True)
        y = depthwise_conv2d(x, w, stride, kernel // 2)
        ref = F.conv2d(x, w, None, stride, kernel // 2, 1, 6)
        assert torch.equal(y, ref)  # the forward pass is PyTorch's own
        # the matmul path runs exactly where the filter is larger than the map
        assert (type(y.grad_fn).__name__ == "_DepthwiseConvBackward") == (kernel > min(height, width))
        up = torch.randn(y.shape, generator=g, dtype=torch.float64)
        got, want = torch.autograd.grad(y, (x, w), up), torch.autograd.grad(ref, (x, w), up)
        for a, b in zip(got, want):
            torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-12)


def test_native_and_no_grad_take_pytorchs_path():
    x = torch.randn(2, 4, 3, 3)
    w = torch.randn(4, 1, 7, 7, requires_grad=True)
    assert use_matmul_grad(x, 7) and not use_matmul_grad(x, 3)
    assert type(depthwise_conv2d(x, w, 1, 3, grad="native").grad_fn).__name__ == "ConvolutionBackward0"
    with torch.no_grad():
        assert depthwise_conv2d(x, w, 1, 3).grad_fn is None


@pytest.mark.parametrize("name", SPACE_NAMES)
def test_supernet_gradients_match_with_either_kernel(name):
    """A training step's gradients on a supernet at a small resolution (later stages' maps smaller than their
    filters) agree between depthwise_grad=auto and native, parameter by parameter (in float64, so that only a
    wrong gradient, not the summation order, can tell them apart)."""
    space = tiny_space(name)
    nets = {m: ofa.build_supernet(space, num_classes=5, seed=3, dropout=0.0, depthwise_grad=m).double().train()
            for m in ("auto", "native")}
    arch = space.sample(random.Random(4))
    g = torch.Generator().manual_seed(5)
    x = torch.randn(6, 3, arch.resolution, arch.resolution, generator=g, dtype=torch.float64)
    grads = {}
    for m, net in nets.items():
        F.cross_entropy(net(x, arch), torch.arange(6) % 5).backward()
        grads[m] = {n: p.grad for n, p in net.named_parameters() if p.grad is not None}
    assert grads["auto"].keys() == grads["native"].keys()
    for n, g in grads["auto"].items():
        torch.testing.assert_close(g, grads["native"][n], rtol=1e-9, atol=1e-12, msg=n)


def test_bad_setting_names_the_field():
    with pytest.raises(ConfigError, match=r"train.depthwise_grad: 'fast' is not valid; valid: auto, native"):
        load_config("fashion-mnist-quick", ["train.depthwise_grad=fast"])
    with pytest.raises(ValueError, match=r"depthwise_grad: 'fast' is not valid; must be one of auto, native"):
        ofa.build_supernet(tiny_space(SPACE_NAMES[0]), depthwise_grad="fast")
