import math

import pytest

import onceforall as ofa
from onceforall.config import StrategyConfig
from onceforall.strategies import Schedule, cosine_lr, get_strategy, list_strategies, sample_sandwich

from .helpers import tiny_space

SPACE = tiny_space("mbv3-cifar")


def _schedule(epochs=20, spe=10, lr=0.1):
    return Schedule(epochs, spe, cosine_lr(lr, epochs * spe))


def test_registry_lists_strategies_and_rejects_unknown():
    assert {"deps", "bignas", "full-only"} <= set(list_strategies())
    with pytest.raises(ValueError, match=r"strategy.name: 'nas' is not valid; valid: .*deps"):
        get_strategy(StrategyConfig(name="nas"), SPACE, _schedule(), 0)


def test_deps_fm_warmup_then_shrinking_at_the_configured_epoch():
    sched = _schedule(epochs=20, spe=10)
    s = get_strategy(StrategyConfig(name="deps", shrink_start=0.5), SPACE, sched, seed=0)
    assert s.shrink_step == 100  # epoch 10 of 20
    for t in (0, 50, 99):
        plan = s.plan(t)
        assert [p.role for p in plan.passes] == ["full"] and plan.eps == 0.0 and plan.teacher is None
        assert plan.phase == "fm-warmup"
    plan = s.plan(100)
    assert [p.role for p in plan.passes] == ["full", "min", "random1", "random2"]
    assert plan.passes[0].arch == SPACE.max() and plan.passes[1].arch == SPACE.min()
    assert [p.loss for p in plan.passes] == ["ce", "kd", "kd", "kd"] and plan.teacher == "inplace"
    assert plan.passes[0].weight == 1.0 and all(p.weight == pytest.approx(1e-4) for p in plan.passes[1:])


def test_eps_grows_linearly_per_step_to_one_over_the_ramp():
    sched = _schedule(epochs=40, spe=10)
    s = get_strategy(StrategyConfig(name="deps", shrink_start=0.5, eps_ramp_epochs=3), SPACE, sched, 0)
    start, ramp = 200, 30
    assert s.eps(start - 1) == 0.0
    for i in (0, 1, 7, 15, 29):
        assert s.eps(start + i) == pytest.approx(1e-4 + (1 - 1e-4) * i / ramp)
        assert s.plan(start + i).passes[2].weight == pytest.approx(s.eps(start + i))
    assert s.eps(start + ramp) == 1.0 and s.eps(start + 100) == 1.0
    # default ramp: 5 % of the run, at least one epoch
    assert get_strategy(StrategyConfig(name="deps"), SPACE, sched, 0).ramp_steps == 20
    assert get_strategy(StrategyConfig(name="deps"), SPACE, _schedule(epochs=10), 0).ramp_steps == 10


def test_eps_lr_variant_makes_the_effective_lr_rise_linearly():
    sched = _schedule(epochs=40, spe=10, lr=0.4)
    s = get_strategy(StrategyConfig(name="deps", eps_mode="lr", eps_ramp_epochs=4), SPACE, sched, 0)
    start, ramp, end = 200, 40, 240
    eff = [s.subnet_weight(start + i) * sched.lr_at(start + i) for i in range(ramp + 1)]
    slope = (eff[-1] - eff[0]) / ramp
    assert all(e == pytest.approx(eff[0] + slope * i, rel=1e-9, abs=1e-12) for i, e in enumerate(eff))
    assert eff[-1] == pytest.approx(sched.lr_at(end))
    assert s.subnet_weight(end + 5) == 1.0
    assert eff[0] == pytest.approx(1e-4 * sched.lr_at(end))


def test_ablation_switches():
    sched = _schedule()
    no_eps = get_strategy(StrategyConfig(name="deps", eps_shrinking=False), SPACE, sched, 0)
    assert no_eps.plan(100).passes[1].weight == 1.0
    no_fm = get_strategy(StrategyConfig(name="deps", fm_warmup=False), SPACE, sched, 0)
    assert no_fm.shrink_step == 0 and len(no_fm.plan(0).passes) == 4
    no_ikd = get_strategy(StrategyConfig(name="deps", ikd=False), SPACE, sched, 0)
    plan = no_ikd.plan(150)
    assert plan.teacher is None and {p.loss for p in plan.passes} == {"ce"}
    reorg = get_strategy(StrategyConfig(name="deps", reorganize=True), SPACE, sched, 0)
    assert [t for t in range(200) if reorg.plan(t).reorganize] == [100]


def test_bignas_and_full_only():
    sched = _schedule()
    big = get_strategy(StrategyConfig(name="bignas", num_subnets=3), SPACE, sched, 0)
    plan = big.plan(0)
    assert [p.role for p in plan.passes] == ["full", "min", "random1"] and plan.teacher == "inplace"
    assert all(p.weight == 1.0 for p in plan.passes)
    full = get_strategy(StrategyConfig(name="full-only"), SPACE, sched, 0)
    assert [p.arch for p in full.plan(123).passes] == [SPACE.max()]


def test_sampling_is_a_pure_function_of_seed_step_and_slot():
    a = sample_sandwich(SPACE, seed=3, step=17, k=6)
    assert a == sample_sandwich(SPACE, seed=3, step=17, k=6)
    assert a != sample_sandwich(SPACE, seed=3, step=18, k=6)
    assert a != sample_sandwich(SPACE, seed=4, step=17, k=6)
    randoms = [arch for _, arch in a[2:]]
    assert len(set(randoms)) == len(randoms)
    assert all(SPACE.contains(arch) for _, arch in a)


def test_cosine_schedule_with_warmup():
    lr = cosine_lr(1.0, total_steps=110, warmup_steps=10, min_lr=0.1)
    assert lr(0) == pytest.approx(0.1) and lr(9) == pytest.approx(1.0)
    assert lr(10) == pytest.approx(1.0) and lr(60) == pytest.approx(0.1 + 0.9 * 0.5)
    assert lr(110) == pytest.approx(0.1)
    assert all(lr(t) >= lr(t + 1) for t in range(10, 110))
    assert math.isclose(cosine_lr(2.0, 100)(50), 1.0)


def test_restricted_space_samples_stay_inside():
    phase = ofa.get_space("mbv3-cifar").restrict(kernels=(7,), depths=(4, 3))
    for role, arch in sample_sandwich(phase, 0, 5, 4):
        assert phase.contains(arch), role
