import copy

import pytest
import torch
import torch.nn.functional as F

import onceforall as ofa
from onceforall.core.optim import build_optimizer
from onceforall.core.step import begin_step, kd_loss, train_step
from onceforall.core.strategies import Schedule, get_strategy
from onceforall.run.config import StrategyConfig

from .helpers import randomize_bn_and_transforms, tiny_space


def _setup(seed=0):
    space = tiny_space("mbv3-cifar", num_classes=5)
    net = ofa.build_supernet(space, dropout=0.0, seed=seed).train()
    randomize_bn_and_transforms(net, seed)
    with torch.no_grad():  # confident, diverse logits so that KD terms have real gradients
        net.head.classifier.weight.mul_(30.0)
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(6, 3, 32, 32, generator=g)
    y = torch.randint(0, 5, (6,), generator=g)
    sched = Schedule(10, 10, 0.1)
    return space, net, x, y, sched


def _close(a, b, rel=1e-4):
    """Equal up to float summation order: per-tensor relative error of the norm."""
    return (a - b).norm() <= rel * b.norm() + 1e-6


def _grads(net):
    return {n: (p.grad.clone() if p.grad is not None else torch.zeros_like(p)) for n, p in net.named_parameters()}


def test_kd_loss_is_soft_target_cross_entropy_scaled_by_t_squared():
    s, t = torch.randn(4, 7), torch.randn(4, 7)
    for temp in (1.0, 2.0):
        expected = -(F.softmax(t / temp, 1) * F.log_softmax(s / temp, 1)).sum(1).mean() * temp**2
        assert torch.allclose(kd_loss(s, t, temp), expected)
    assert kd_loss(t, t) <= kd_loss(s, t)  # minimised by matching the teacher


@pytest.mark.parametrize("step", [53, 80])  # inside the ε ramp (steps 50..70), and after it
def test_shrinking_step_gradient_equals_eq4(step):
    space, net, x, y, sched = _setup()
    strategy = get_strategy(StrategyConfig(name="deps", shrink_start=0.5, eps_ramp_epochs=2.0), space, sched, 0)
    plan = strategy.plan(step)
    eps = strategy.eps(step)
    assert (eps < 0.5) == (step < 70) and 0 < eps <= 1 and len(plan.passes) == 4
    ref = copy.deepcopy(net)
    opt = torch.optim.SGD(net.parameters(), lr=0.0)  # lr 0: the step leaves weights and .grad for inspection
    losses = train_step(net, plan, x, y, opt)  # the plan's passes carry label smoothing 0.1 and T = 1

    # Direct: L = CE_ls(full(B), y) + ε_t · Σ_j KD(a_j(B), softmax(full(B).detach()))   (paper eq. 4)
    full_logits = ref(x, plan.passes[0].arch)
    loss = F.cross_entropy(full_logits, y, label_smoothing=0.1)
    teacher = full_logits.detach()
    for p in plan.passes[1:]:
        loss = loss + eps * kd_loss(ref(x, p.arch), teacher)
    loss.backward()
    got, want = _grads(net), _grads(ref)
    for name in want:
        assert _close(got[name], want[name]), name
    assert any(want[n].abs().sum() > 0 for n in want if "stages.4.3" in n)  # the full model reaches the last block
    # the subnets' ε-weighted terms matter: the full model's gradient alone is far from the total
    full_only = copy.deepcopy(ref)
    full_only.zero_grad(set_to_none=True)
    F.cross_entropy(full_only(x, plan.passes[0].arch), y, label_smoothing=0.1).backward()
    g_full = torch.cat([g.flatten() for g in _grads(full_only).values()])
    g_all = torch.cat([g.flatten() for g in want.values()])
    assert (g_all - g_full).norm() > 1e-3 * g_all.norm() + 1e-4
    assert losses["full"] == pytest.approx(F.cross_entropy(full_logits, y, label_smoothing=0.1).item(), rel=1e-5)


def test_fm_warmup_runs_only_the_full_model():
    space, net, x, y, sched = _setup()
    strategy = get_strategy(StrategyConfig(name="deps", shrink_start=0.5), space, sched, 0)
    calls = []
    net.register_forward_pre_hook(lambda m, args: calls.append(args[1]))
    opt = torch.optim.SGD(net.parameters(), lr=0.01)
    for t in range(3):
        train_step(net, strategy.plan(t), x, y, opt)
    assert calls == [space.max()] * 3
    calls.clear()
    train_step(net, strategy.plan(50), x, y, opt)
    assert calls[0] == space.max() and calls[1] == space.min() and len(calls) == 4


def test_without_ikd_subnets_learn_from_labels():
    space, net, x, y, sched = _setup()
    strategy = get_strategy(StrategyConfig(name="deps", ikd=False, eps_shrinking=False), space, sched, 0,
                            label_smoothing=0.0)
    plan = strategy.plan(60)
    assert all(p.loss.kind == "ce" and p.loss.label_smoothing == 0.0 for p in plan.passes)
    ref = copy.deepcopy(net)
    train_step(net, plan, x, y, torch.optim.SGD(net.parameters(), lr=0.0))
    loss = sum(F.cross_entropy(ref(x, p.arch), y) for p in plan.passes)
    loss.backward()
    got, want = _grads(net), _grads(ref)
    assert all(_close(got[n], want[n]) for n in want)


def test_gradient_clipping_bounds_the_update():
    space, net, x, y, sched = _setup()
    plan = get_strategy(StrategyConfig(name="full-only"), space, sched, 0).plan(0)
    before = {n: p.detach().clone() for n, p in net.named_parameters()}
    train_step(net, plan, x * 50, y, torch.optim.SGD(net.parameters(), lr=1.0), grad_clip=0.5)
    total = torch.sqrt(sum(((p.detach() - before[n]) ** 2).sum() for n, p in net.named_parameters()))
    assert total <= 0.5 + 1e-4


def test_ofa_ps_step_uses_the_frozen_teacher_and_normalised_ce_plus_kd():
    space, net, x, y, sched = _setup()
    strategy = get_strategy(StrategyConfig(name="ofa-ps", kd_ratio=0.5), space, sched, 0)
    plan = strategy.plan(60)  # depth phases: 2 random subnets, frozen teacher
    assert plan.teacher == "frozen" and len(plan.passes) == 2
    teacher = copy.deepcopy(net).eval()
    with torch.no_grad():
        teacher.head.classifier.weight.mul_(0.5)  # a teacher that differs from the student
    ref = copy.deepcopy(net)
    assert all(p.loss.kind == "ce+kd" and p.loss.kd_ratio == 0.5 for p in plan.passes)
    train_step(net, plan, x, y, torch.optim.SGD(net.parameters(), lr=0.0), teacher_net=teacher)
    with torch.no_grad():
        t_logits = teacher(x, space.max())
    loss = 0.0
    for p in plan.passes:  # OFA: (CE + r·KD) · 2 / (r + 1) per subnet, KD from the frozen teacher's logits
        logits = ref(x, p.arch)
        loss = loss + (F.cross_entropy(logits, y, label_smoothing=0.1) + 0.5 * kd_loss(logits, t_logits)) * (2 / 1.5)
    loss.backward()
    got, want = _grads(net), _grads(ref)
    assert all(_close(got[n], want[n]) for n in want)


@pytest.mark.parametrize("permute", [False, True])
def test_reorganization_leaves_momentum_in_place_unless_asked(permute):
    """The official DεpS code re-organizes by replacing the parameters' data: momentum stays where it was
    (strategy.reorganize_momentum false, the default); true permutes it with the channels (the old behaviour)."""
    space, net, x, y, sched = _setup()
    strategy = get_strategy(StrategyConfig(name="deps", reorganize_momentum=permute), space, sched, 0)
    opt = build_optimizer(net, lr=0.1)
    train_step(net, strategy.plan(0), x, y, opt)  # momentum buffers now hold the first gradient
    plan = strategy.plan(strategy.shrink_step)
    assert plan.reorganize and plan.reorganize_momentum is permute
    w = net.stages[1][0].expand_conv.weight
    w_before, buf_before = w.detach().clone(), opt.state[w]["momentum_buffer"].clone()
    begin_step(plan, net, opt, None, lr=0.1, dropout_seed=0)
    idx = next(i for i in range(w.shape[0]) if not torch.equal(w[i], w_before[i]))  # a moved channel
    src = next(j for j in range(w.shape[0]) if torch.equal(w[idx], w_before[j]))
    buf = opt.state[w]["momentum_buffer"]
    assert torch.equal(buf[idx], buf_before[src] if permute else buf_before[idx])


def test_losses_keep_float64():
    s, t = torch.randn(4, 7, dtype=torch.float64), torch.randn(4, 7, dtype=torch.float64)
    assert kd_loss(s, t).dtype == torch.float64  # the parity test with the official code runs in float64
    assert kd_loss(s.half(), t.half()).dtype == torch.float32  # autocast logits: losses in float32
