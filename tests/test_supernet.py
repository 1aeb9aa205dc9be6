import random

import pytest
import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

import onceforall as ofa
from onceforall.core.arch import parse_arch
from onceforall.core.subnet import fold_batchnorm
from onceforall.core.supernet import ElasticBlock

from .helpers import SPACE_NAMES, randomize_bn_and_transforms, tiny_space


def _archs(space, n=20, seed=0):
    rng = random.Random(seed)
    return [space.min(), space.max()] + [space.sample(rng) for _ in range(n)]


@pytest.fixture(scope="module", params=SPACE_NAMES)
def net(request):
    net = ofa.build_supernet(tiny_space(request.param), num_classes=7, seed=1)
    randomize_bn_and_transforms(net)
    return net.eval()


def test_extracted_subnet_matches_supernet_and_analytic_macs(net):
    x = torch.randn(3, 3, 40, 40, generator=torch.Generator().manual_seed(0))  # resized per arch
    for a in _archs(net.space):
        sub = net.extract(a).eval()
        with torch.no_grad():
            diff = (sub(x) - net(x, a)).abs().max().item()
        assert diff < 1e-5, (str(a), diff)
        with FlopCounterMode(display=False) as counter, torch.no_grad():
            sub(torch.zeros(1, 3, a.resolution, a.resolution))
        assert counter.get_total_flops() == 2 * net.space.macs(a), str(a)
        assert sum(p.numel() for p in sub.parameters()) == net.space.params(a) == sub.num_params()


def test_folded_batchnorm_is_the_same_function_without_bn(net):
    """fold_batchnorm (eval's measured forwards): every BN of a subnet folded into the conv before it; in float64
    the logits equal the unfolded subnet's (non-trivial statistics and affine: a wrong fold moves them), in float32
    too up to rounding, channels_last included; the subnet it came from is unchanged."""
    x = torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(2))
    for a in _archs(net.space, n=2, seed=5):
        sub = net.extract(a).eval().double()
        state = {k: v.clone() for k, v in sub.state_dict().items()}
        folded = fold_batchnorm(sub)
        assert not any(isinstance(m, nn.BatchNorm2d) for m in folded.modules()), str(a)
        biased = lambda m: sum(isinstance(c, nn.Conv2d) and c.bias is not None for c in m.modules())  # noqa: E731
        assert biased(folded) == biased(sub) + sum(isinstance(c, nn.BatchNorm2d) for c in sub.modules())
        with torch.no_grad():
            torch.testing.assert_close(folded(x.double()), sub(x.double()), rtol=1e-10, atol=1e-10)
            assert all(torch.equal(v, sub.state_dict()[k]) for k, v in state.items())
            sub.float()
            cl = fold_batchnorm(sub).to(memory_format=torch.channels_last)
            torch.testing.assert_close(cl(x.contiguous(memory_format=torch.channels_last)), sub(x), rtol=1e-4,
                                       atol=1e-4)


def test_subnet_is_plain_static_modules(net):
    sub = net.extract(net.space.sample(random.Random(3)))
    leaf_types = {type(m) for m in sub.modules() if not list(m.children())}
    allowed = {nn.Conv2d, nn.BatchNorm2d, nn.Linear, nn.Dropout, nn.ReLU, nn.ReLU6, nn.Hardswish, nn.Sequential}
    assert leaf_types <= allowed, leaf_types - allowed
    assert not any(isinstance(m, ElasticBlock) for m in sub.modules())
    assert not any("kernel_transform" in n for n, _ in sub.named_parameters())
    # copies, not views: training the subnet leaves the supernet alone
    before = net.stem.conv.conv.weight.clone()
    with torch.no_grad():
        sub.stem.conv.conv.weight.add_(1.0)
    assert torch.equal(net.stem.conv.conv.weight, before)


def test_kernel_transform_changes_small_kernels_only():
    space = tiny_space("mbv3-cifar")
    plain = ofa.build_supernet(space, kernel_transform=False, seed=3).eval()
    net = ofa.build_supernet(space, kernel_transform=True, seed=3).eval()
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        assert torch.equal(net(x, space.max()), plain(x, space.max()))
        assert torch.allclose(net(x, space.min()), plain(x, space.min()))  # identity matrices at init
        for p in net.parameters():
            if p.shape == (9, 9):  # the 5to3 matrices
                p.copy_(torch.randn(9, 9))
        assert torch.equal(net(x, space.max()), plain(x, space.max()))
        assert not torch.allclose(net(x, space.min()), plain(x, space.min()))
    block = net.stages[0][0]
    w3 = block.dw_weight(3, block.shape.mid)
    w5 = block.dw_conv.weight[:, :, 1:6, 1:6].reshape(block.shape.mid, 25) @ block.kernel_transform["7to5"].T
    expected = w5.reshape(-1, 1, 5, 5)[:, :, 1:4, 1:4].reshape(-1, 9) @ block.kernel_transform["5to3"].T
    assert torch.allclose(w3.reshape(-1, 9), expected)


@pytest.mark.parametrize("name", SPACE_NAMES)
def test_backward_reaches_exactly_the_used_parameters(name):
    space = tiny_space(name)
    net = ofa.build_supernet(space, num_classes=7, seed=0).train()
    rng = random.Random(2)
    for a in [space.min(), space.sample(rng)]:
        net.zero_grad(set_to_none=True)
        x = torch.randn(4, 3, a.resolution, a.resolution)
        nn.functional.cross_entropy(net(x, a), torch.arange(4)).backward()
        for name_, p in net.named_parameters():
            assert p.grad is None or torch.isfinite(p.grad).all(), name_
        for s, blocks in enumerate(net.stages):
            for b, block in enumerate(blocks):
                grads = {n: p.grad for n, p in block.named_parameters()}
                if b >= a.depths[s]:  # inactive block: nothing
                    assert all(g is None or not g.any() for g in grads.values()), (s, b)
                    continue
                k, mid = a.kernels[s][b], net.mid_channels(s, b, a.expands[s][b])
                for n, g in grads.items():
                    if n.startswith("kernel_transform"):
                        big, small = map(int, n.split(".")[-1].split("to"))
                        assert (g is not None and g.abs().sum() > 0) == (small >= k), (s, b, n)
                        continue
                    assert g is not None and g.abs().sum() > 0, (s, b, n)
                # the channels beyond `mid` of sliced tensors get exactly zero gradient
                assert not block.expand_conv.weight.grad[mid:].any()
                assert not block.dw_conv.weight.grad[mid:].any()
                assert not block.project_conv.weight.grad[:, mid:].any()
                assert not block.dw_bn.weight.grad[mid:].any()
                kmax = block.dw_conv.weight.shape[-1]
                if k < kmax and block.kernel_transform is None:
                    c = (kmax - k) // 2
                    ring = block.dw_conv.weight.grad.clone()
                    ring[:, :, c : c + k, c : c + k] = 0
                    assert not ring.any()
        assert all(p.grad is not None and p.grad.any() for p in net.head.parameters())


def test_reorganize_keeps_full_model_and_sorts_channels():
    space = tiny_space("mbv3-cifar")
    net = ofa.build_supernet(space, num_classes=7, seed=5)
    randomize_bn_and_transforms(net, seed=1)
    net.eval()
    x = torch.randn(4, 3, 32, 32)
    small = space.sample(random.Random(0))
    with torch.no_grad():
        full_before, small_before = net(x, space.max()), net(x, small)
        block = net.stages[1][0]
        old = {n: t.clone() for n, t in block.state_dict().items()}
        moves = net.reorganize_channels()
        full_after, small_after = net(x, space.max()), net(x, small)
    assert (full_after - full_before).abs().max() < 1e-5
    assert not torch.allclose(small_after, small_before)  # smaller subnets now keep other channels
    importance = block.project_conv.weight.abs().sum(dim=(0, 2, 3))
    assert torch.all(importance[:-1] >= importance[1:])
    # one consistent permutation: expand rows, depthwise filters, BN and project columns move together
    idx = next(i for t, d, i in moves if t is block.project_conv.weight)
    assert torch.equal(block.expand_conv.weight, old["expand_conv.weight"][idx])
    assert torch.equal(block.dw_conv.weight, old["dw_conv.weight"][idx])
    assert torch.equal(block.dw_bn.running_var, old["dw_bn.running_var"][idx])
    assert torch.equal(block.project_conv.weight, old["project_conv.weight"][:, idx])
    se_moves = {(id(t), d) for t, d, _ in moves}
    assert block.se is not None  # stage 1 of mbv3 has SE: its input dim and its hidden channels follow
    assert {(id(block.se.reduce.weight), 1), (id(block.se.reduce.weight), 0), (id(block.se.expand.bias), 0)} <= se_moves


def test_reorganize_with_kept_expand_sorts_each_segment_alone():
    """OFA's re_organize_middle_weights(expand_ratio_stage=1) on {3, 4, 6}: the channels of [0, mid(e4)) stay there
    (sorted among themselves), those of [mid(e4), mid(e6)) too; the global sort mixes them."""
    space = tiny_space("mbv3-cifar")
    net = ofa.build_supernet(space, num_classes=7, seed=5)
    s, b = 1, 0
    block = net.stages[s][b]
    mid4, mid6 = net.mid_channels(s, b, 4), block.shape.mid
    before = block.project_conv.weight.abs().sum(dim=(0, 2, 3)).clone()
    moves = net.reorganize_channels((4,))
    idx = next(i for t, d, i in moves if t is block.project_conv.weight)
    assert sorted(idx[:mid4].tolist()) == list(range(mid4)) and sorted(idx[mid4:].tolist()) == list(range(mid4, mid6))
    after = block.project_conv.weight.abs().sum(dim=(0, 2, 3))
    assert torch.equal(after, before[idx])
    for lo, hi in ((0, mid4), (mid4, mid6)):
        assert torch.all(after[lo:hi - 1] >= after[lo + 1:hi])
    net2 = ofa.build_supernet(space, num_classes=7, seed=5)
    idx2 = next(i for t, d, i in net2.reorganize_channels() if t is net2.stages[s][b].project_conv.weight)
    assert sorted(idx2[:mid4].tolist()) != list(range(mid4))  # the global sort does move channels across e4


def test_invalid_arch_is_rejected_with_the_field(net):
    bad = parse_arch("r32" + "_k9e3-k9e3" * net.space.num_stages)
    with pytest.raises(ValueError, match="kernel 9 is not valid"):
        net(torch.zeros(1, 3, 32, 32), bad)
    with pytest.raises(ValueError, match="kernel 9 is not valid"):
        net.extract(bad)


def test_restricted_space_archs_run_on_the_supernet():
    space = tiny_space("mbv3-cifar")
    net = ofa.build_supernet(space, seed=0).eval()
    phase = space.restrict(kernels=(7,), depths=(4,))
    a = phase.sample(random.Random(0))
    assert phase.skeleton_key() == net.space.skeleton_key() and net.space.contains(a)
    sub = net.extract(a).eval()
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        assert torch.allclose(sub(x), net(x, a), atol=1e-6)


def test_build_is_deterministic_and_leaves_global_rng_alone():
    space = tiny_space("proxyless-cifar")
    state = torch.get_rng_state()
    a = ofa.build_supernet(space, seed=4)
    b = ofa.build_supernet(space, seed=4)
    c = ofa.build_supernet(space, seed=5)
    a.extract(space.max())
    assert torch.equal(torch.get_rng_state(), state)
    sa, sb, sc = a.state_dict(), b.state_dict(), c.state_dict()
    assert all(torch.equal(sa[k], sb[k]) for k in sa)
    assert not all(torch.equal(sa[k], sc[k]) for k in sa)
    with pytest.raises(ValueError, match="dropout: 1.5 is not valid"):
        ofa.build_supernet(space, dropout=1.5)


def test_channels_last_runs_and_matches():
    space = tiny_space("mbv3-cifar")
    net = ofa.build_supernet(space, seed=0)
    randomize_bn_and_transforms(net)
    net.eval()
    x = torch.randn(2, 3, 32, 32)
    a = space.sample(random.Random(9))
    with torch.no_grad():
        ref = net(x, a)
        net_cl = net.to(memory_format=torch.channels_last)
        out = net_cl(x.contiguous(memory_format=torch.channels_last), a)
    assert (out - ref).abs().max() < 1e-5


def _loader(images, batch):
    return [(images[i : i + batch], None) for i in range(0, len(images), batch)]


def test_recalibrate_bn_is_an_image_weighted_average():
    space = tiny_space("mbv3-cifar")
    net = ofa.build_supernet(space, seed=0)
    sub = net.extract(space.min())
    images = torch.randn(25, 3, 24, 24) * 2 + 0.5  # the min arch's resolution: no resizing
    ofa.recalibrate_bn(sub, _loader(images, 10), num_images=23)  # batches of 10, 10, 3
    conv = sub.stem.conv.conv
    with torch.no_grad():
        feats = conv(images[:23])
    expected_mean = feats.mean(dim=(0, 2, 3))
    assert torch.allclose(sub.stem.conv.bn.running_mean, expected_mean, atol=1e-5)
    assert not sub.training and all(not m.training for m in sub.modules())
    assert sub.stem.conv.bn.momentum == space.bn_momentum
    # the same through the supernet with an arch
    net2 = ofa.build_supernet(space, seed=0)
    ofa.recalibrate_bn(net2, _loader(images, 10), num_images=23, arch=space.min())
    assert torch.allclose(net2.stem.conv.bn.running_mean, expected_mean, atol=1e-5)
    mid = net2.mid_channels(0, 0, 3)
    sub.eval()
    ref = net2.extract(space.min())
    assert torch.allclose(ref.blocks[0].expand_bn.running_mean, sub.blocks[0].expand_bn.running_mean, atol=1e-5)
    assert mid == sub.blocks[0].shape.mid
    with pytest.raises(ValueError, match="num_images: 0 is not valid"):
        ofa.recalibrate_bn(sub, _loader(images, 10), num_images=0)


def test_dropout_can_be_skipped_per_pass_in_training_mode():
    space = tiny_space("mbv3-cifar")
    net = ofa.build_supernet(space, dropout=0.5, seed=0).train()
    x, a = torch.randn(4, 3, 32, 32), space.max()
    torch.manual_seed(0)
    with_dropout = [net(x, a) for _ in range(2)]
    assert not torch.equal(*with_dropout)  # different masks
    assert torch.equal(net(x, a, dropout=False), net(x, a, dropout=False))


def test_fixed_kernel_space_has_no_kernel_transforms():
    space = tiny_space("mbv3-cifar").restrict(kernels=(7,))
    net = ofa.build_supernet(space, seed=0)
    assert not any("kernel_transform" in n for n, _ in net.named_parameters())
    a = space.sample(random.Random(0))
    sub = net.extract(a).eval()
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        assert torch.allclose(sub(x), net.eval()(x, a), atol=1e-6)
