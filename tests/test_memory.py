"""Peak activation memory: the analytic count (specialize/memory.py) against a measurement of the forward it
describes (every live op output tracked by a TorchDispatchMode), part by part, on every registered space."""

import random

import pytest
import torch

import onceforall as ofa
from onceforall.specialize.memory import (
    FusedSubnet,
    activation_peaks,
    measure_peak_memory,
    peak_activation_elements,
    peak_memory,
)
from tests.helpers import SPACE_NAMES, randomize_bn_and_transforms, tiny_space


@pytest.mark.parametrize("name", SPACE_NAMES)
def test_analytic_peak_equals_the_measured_one_part_by_part(name):
    space = tiny_space(name, num_classes=300)  # a wide classifier: the head's terms are exercised too
    net = ofa.build_supernet(space, seed=0)
    randomize_bn_and_transforms(net)
    rng = random.Random(1)
    for arch in (space.min(), space.max(), *(space.sample(rng) for _ in range(3))):
        sub = net.extract(arch).eval()
        fused = FusedSubnet(sub)
        x = torch.randn(2, space.in_channels, arch.resolution, arch.resolution, generator=torch.Generator())
        with torch.no_grad():
            ref = sub(x)
            assert torch.allclose(fused(x), ref, rtol=1e-4, atol=1e-5 * float(ref.abs().max()))
        measured = measure_peak_memory(fused, space.in_channels, per_part=True)
        assert measured == [(part, 4 * n) for part, n in activation_peaks(space, arch)], str(arch)
        assert peak_memory(space, arch) == max(b for _, b in measured) == 4 * peak_activation_elements(space, arch)


def test_peak_memory_units_and_errors():
    space = tiny_space("mbv3")
    arch = space.max()
    assert peak_memory(space, arch, "float16") * 2 == peak_memory(space, arch) == 4 * peak_memory(space, arch, "int8")
    with pytest.raises(ValueError, match=r"dtype: 'fp8' is not valid; valid: float32, float16, bfloat16, int8"):
        peak_memory(space, arch, "fp8")
    # Memory grows with resolution and with every elastic choice at the peak's block
    small, big = space.min(), space.max()
    assert peak_memory(space, small) < peak_memory(space, big)

