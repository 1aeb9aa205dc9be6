import math

import pytest

import onceforall as ofa
from onceforall.core.strategies import Schedule, cosine_lr, get_strategy, list_strategies, sample_sandwich
from onceforall.run.config import StrategyConfig

from .helpers import tiny_space

SPACE = tiny_space("mbv3-cifar")


def _schedule(epochs=20, spe=10, lr=0.1):
    return Schedule(epochs, spe, lr)


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
    assert [p.loss.kind for p in plan.passes] == ["ce", "kd", "kd", "kd"] and plan.teacher == "inplace"
    assert plan.passes[0].weight == 1.0 and all(p.weight == plan.eps > 0 for p in plan.passes[1:])


def test_eps_default_is_the_official_adjust_beta_value():
    """ε_t = T_cur / R · η(s + R) / η_t, T_cur = 1 at the shrink step s (official deps.py:39-102), then 1."""
    sched = _schedule(epochs=40, spe=10, lr=0.4)
    s = get_strategy(StrategyConfig(name="deps", shrink_start=0.5, eps_ramp_epochs=4), SPACE, sched, 0)
    start, ramp, end = 200, 40, 240
    assert s.cfg.eps_mode == "lr-ramp" and s.eps(start - 1) == 0.0 and s.plan(start - 1).eps == 0.0
    for i in (0, 1, 17, 39):
        expected = (i + 1) / ramp * sched.lr_at(end) / sched.lr_at(start + i)
        assert s.eps(start + i) == pytest.approx(expected, rel=1e-12)
        assert s.plan(start + i).eps == s.eps(start + i) == s.plan(start + i).passes[3].weight
        # the subnets' effective learning rate rises linearly to η(s + R), 1/R of it at the first step
        assert s.eps(start + i) * sched.lr_at(start + i) == pytest.approx((i + 1) / ramp * sched.lr_at(end))
    assert s.eps(start) == pytest.approx(sched.lr_at(end) / sched.lr_at(start) / ramp) and s.eps(start) > 1e-3
    assert s.eps(end) == 1.0 and s.eps(end + 100) == 1.0 and s.plan(end).passes[1].weight == 1.0
    with pytest.raises(ValueError, match=r"strategy.eps_mode: 'official' is not valid; valid: lr-ramp, loss"):
        type(s).check_config(StrategyConfig(eps_mode="official"), SPACE)


def test_eps_loss_variant_grows_linearly_per_step_to_one_over_the_ramp():
    sched = _schedule(epochs=40, spe=10)
    s = get_strategy(StrategyConfig(name="deps", shrink_start=0.5, eps_ramp_epochs=3, eps_mode="loss"), SPACE,
                     sched, 0)
    start, ramp = 200, 30
    assert s.eps(start - 1) == 0.0
    for i in (0, 1, 7, 15, 29):
        assert s.eps(start + i) == pytest.approx(1e-4 + (1 - 1e-4) * i / ramp)
        assert s.plan(start + i).passes[2].weight == pytest.approx(s.eps(start + i))
    assert s.eps(start + ramp) == 1.0 and s.eps(start + 100) == 1.0
    # default ramp: 5 % of the run, at least one epoch
    assert get_strategy(StrategyConfig(name="deps"), SPACE, sched, 0).ramp_steps == 20
    assert get_strategy(StrategyConfig(name="deps"), SPACE, _schedule(epochs=10), 0).ramp_steps == 10


def test_ablation_switches():
    sched = _schedule()
    no_eps = get_strategy(StrategyConfig(name="deps", eps_shrinking=False), SPACE, sched, 0)
    assert no_eps.plan(100).passes[1].weight == 1.0
    no_fm = get_strategy(StrategyConfig(name="deps", fm_warmup=False), SPACE, sched, 0)
    assert no_fm.shrink_step == 0 and len(no_fm.plan(0).passes) == 4
    no_ikd = get_strategy(StrategyConfig(name="deps", ikd=False), SPACE, sched, 0)
    plan = no_ikd.plan(150)
    assert plan.teacher is None and {p.loss.kind for p in plan.passes} == {"ce"}
    reorg = get_strategy(StrategyConfig(name="deps", reorganize=True), SPACE, sched, 0)
    assert [t for t in range(200) if reorg.plan(t).reorganize] == [100]
    # the official sort keeps [0, mid(e4)) apart (expand_ratio_stage 1 of {3, 4, 6}); momentum stays in place
    assert reorg.plan(100).reorganize_keep == (4,) and reorg.plan(100).reorganize_momentum is False
    old = get_strategy(StrategyConfig(name="deps", reorganize_mode="global", reorganize_momentum=True), SPACE, sched, 0)
    assert old.plan(100).reorganize_keep == () and old.plan(100).reorganize_momentum is True
    with pytest.raises(ValueError, match=r"strategy.reorganize_mode: 'l1' is not valid; valid: ofa, global"):
        type(old).check_config(StrategyConfig(reorganize_mode="l1"), SPACE)


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


def _walk(strategy, total):
    return [(t, strategy.plan(t)) for t in range(total)]


def test_ofa_ps_runs_its_phases_in_order_with_restricted_spaces():
    space = tiny_space("mbv3-cifar")
    sched = Schedule(epochs=121, steps_per_epoch=5, base_lr=1.0)  # 605 steps: one per OFA epoch
    s = get_strategy(StrategyConfig(name="ofa-ps"), space, sched, seed=0)
    assert s.bounds == [0, 180, 305, 330, 455, 480, 605]
    plans = _walk(s, 605)
    names = [p.phase for _, p in plans]
    assert [n for i, n in enumerate(names) if i == 0 or n != names[i - 1]] == [
        "full", "kernel", "depth-1", "depth-2", "expand-1", "expand-2"]
    for _, p in plans:
        if p.phase == "full":
            assert [x.arch for x in p.passes] == [space.max()] and p.teacher is None
            continue
        assert p.teacher == "frozen" and p.teacher_arch == space.max()
        assert all(x.loss.kind == "ce+kd" for x in p.passes)
        archs = [x.arch for x in p.passes]
        kernels = {k for a in archs for ks in a.kernels for k in ks}
        expands = {e for a in archs for es in a.expands for e in es}
        depths = {d for a in archs for d in a.depths}
        if p.phase == "kernel":
            assert len(archs) == 1 and depths == {4} and expands == {6}
        elif p.phase.startswith("depth"):
            assert len(archs) == 2 and expands == {6} and depths <= ({3, 4} if p.phase == "depth-1" else {2, 3, 4})
        else:
            assert len(archs) == 4 and expands <= ({4, 6} if p.phase == "expand-1" else {3, 4, 6})
        assert kernels <= {3, 5, 7}
    # the later phases really use their new choices
    seen = lambda phase, f: {v for t, p in plans if p.phase == phase for x in p.passes for v in f(x.arch)}  # noqa: E731
    assert seen("kernel", lambda a: [k for ks in a.kernels for k in ks]) == {3, 5, 7}
    assert seen("depth-2", lambda a: a.depths) == {2, 3, 4}
    assert seen("expand-2", lambda a: [e for es in a.expands for e in es]) == {3, 4, 6}
    events = {name: [t for t, p in plans if getattr(p, name)] for name in
              ("snapshot_teacher", "reorganize", "reset_momentum")}
    assert events == {"snapshot_teacher": [180], "reorganize": [455, 480], "reset_momentum": [180, 305, 330, 455, 480]}
    # OFA's train_elastic_expand: expand_ratio_stage = len(phase expands) - 2: {4, 6} one sort, {3, 4, 6} keeps e4
    assert [dict(plans)[t].reorganize_keep for t in (455, 480)] == [(), (4,)]


def test_ofa_ps_learning_rate_restarts_per_phase():
    space = tiny_space("mbv3-cifar")
    sched = Schedule(epochs=121, steps_per_epoch=5, base_lr=2.0, warmup_steps=10)
    s = get_strategy(StrategyConfig(name="ofa-ps"), space, sched, seed=0)
    assert s.lr_at(0) == pytest.approx(0.2) and s.lr_at(9) == pytest.approx(2.0)  # optim warmup in the full phase
    assert s.lr_at(179) < 0.01
    assert s.lr_at(180 + 4) == pytest.approx(2.0 * 0.369)  # kernel phase: 5 warmup steps (5 of 125)
    assert s.lr_at(305) == pytest.approx(2.0 * 0.031)  # depth-1: no warmup
    assert s.lr_at(330 + 4) == pytest.approx(2.0 * 0.092)
    assert all(s.lr_at(t) >= s.lr_at(t + 1) for t in range(340, 454))


def test_compofa_samples_only_coupled_archs():
    space = tiny_space("mbv3-cifar")
    sched = Schedule(epochs=66, steps_per_epoch=5, base_lr=1.0)  # 330 steps
    s = get_strategy(StrategyConfig(name="compofa"), space, sched, seed=0)
    assert s.bounds == [0, 180, 205, 330]
    coupled = {2: 3, 3: 4, 4: 6}
    depths = set()
    for _, p in _walk(s, 330):
        for x in p.passes:
            for ks, es in zip(x.arch.kernels, x.arch.expands):
                assert set(es) == {coupled[len(ks)]}
                depths.add(len(ks))
    assert depths == {2, 3, 4}
    assert [t for t, p in _walk(s, 330) if p.reorganize] == [180, 205]


def test_phases_from_config_and_errors():
    space = tiny_space("mbv3-cifar")
    sched = Schedule(epochs=10, steps_per_epoch=10, base_lr=1.0)
    phases = [{"name": "full", "fraction": 0.5, "kernels": "max", "depths": "max", "expands": "max", "num_subnets": 0},
              {"name": "all", "fraction": 0.5, "num_subnets": 3, "depths": [2, 4]}]
    s = get_strategy(StrategyConfig(name="ofa-ps", phases=phases), space, sched, 0)
    plan = s.plan(60)
    assert len(plan.passes) == 3 and all(set(x.arch.depths) <= {2, 4} for x in plan.passes)
    with pytest.raises(ValueError, match="fractions sum to 0.9000; they must sum to 1"):
        get_strategy(StrategyConfig(name="ofa-ps", phases=[{"name": "a", "fraction": 0.9}]), space, sched, 0)
    with pytest.raises(ValueError, match=r"strategy.phases: entry .* is not valid; keys: "):
        get_strategy(StrategyConfig(name="ofa-ps", phases=[{"name": "a", "fraction": 1.0, "epochs": 3}]), space,
                     sched, 0)
    with pytest.raises(ValueError, match="phase 'a' kernels 'small' is not valid; valid: all, max, top2 or a list"):
        get_strategy(StrategyConfig(name="ofa-ps", phases=[{"name": "a", "fraction": 1.0, "kernels": "small"}]),
                     space, sched, 0)


def test_dropout_only_on_the_full_models_passes_unless_asked():
    sched = _schedule(epochs=20, spe=10)
    for name in ("deps", "bignas"):
        plan = get_strategy(StrategyConfig(name=name), SPACE, sched, 0).plan(150)
        assert [p.dropout for p in plan.passes] == [True, False, False, False]
        plan = get_strategy(StrategyConfig(name=name, subnet_dropout=True), SPACE, sched, 0).plan(150)
        assert all(p.dropout for p in plan.passes)
    ps = get_strategy(StrategyConfig(name="ofa-ps"), SPACE, sched, 0)
    assert ps.plan(0).passes[0].dropout and not any(p.dropout for p in ps.plan(199).passes)


def test_each_strategy_names_the_space_it_trains():
    sched = _schedule()
    assert get_strategy(StrategyConfig(name="deps"), SPACE, sched, 0).trained_space() == SPACE
    compofa = get_strategy(StrategyConfig(name="compofa"), SPACE, sched, 0).trained_space()
    assert compofa.coupling == ((2, 3), (3, 4), (4, 6)) and compofa.restricted
    assert get_strategy(StrategyConfig(name="ofa-ps"), SPACE, sched, 0).trained_space().size == SPACE.size
