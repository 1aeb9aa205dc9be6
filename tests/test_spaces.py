import json
import random

import pytest
import torch

import onceforall as ofa
from onceforall.core.arch import Arch, parse_arch
from onceforall.core.space import iter_archs

from .helpers import SPACE_NAMES, tiny_space


def test_registry_lists_and_rejects_unknown():
    assert {"mbv3", "mbv3-cifar", "proxyless"} <= set(ofa.list_spaces())
    with pytest.raises(ValueError, match=r"unknown name 'mbv9'.*valid: .*mbv3-cifar"):
        ofa.get_space("mbv9")
    with pytest.raises(ValueError, match="width_mult: -1"):
        ofa.get_space("mbv3", width_mult=-1)


@pytest.mark.parametrize("name", SPACE_NAMES)
def test_string_and_json_round_trip_1000(name):
    space = tiny_space(name)
    rng = random.Random(0)
    for _ in range(1000):
        a = space.sample(rng)
        assert space.contains(a)
        assert space.parse(str(a)) == a
        assert hash(space.parse(str(a))) == hash(a)
        assert Arch.from_json(json.loads(json.dumps(a.to_json()))) == a


@pytest.mark.parametrize("name", SPACE_NAMES)
def test_min_max_and_monotone_macs(name):
    space = tiny_space(name)
    lo, hi = space.macs(space.min()), space.macs(space.max())
    rng = random.Random(1)
    for _ in range(200):
        a = space.sample(rng)
        assert lo <= space.macs(a) <= hi
        assert space.params(space.min()) <= space.params(a) <= space.params(space.max())
    assert space.macs_range() == (lo, hi)
    assert space.max().depths == space.max_depths


def test_archs_are_canonical_values():
    a = Arch(32, ((3, 5), (7,)), ((3, 4), (6,)))
    b = Arch(32.0, ((3.0, 5), (7,)), ((3.0, 4.0), (6.0,)))
    assert a == b and hash(a) == hash(b) and str(a) == str(b) == "r32_k3e3-k5e4_k7e6"
    assert a.depths == (2, 1)
    assert {a, b} == {a}
    with pytest.raises(ValueError, match="stage 0 has 2 kernels but 1 expands"):
        Arch(32, ((3, 5),), ((3,),))


def test_sampling_uses_only_the_given_rng():
    space = ofa.get_space("mbv3-cifar")
    torch_state, py_state = torch.get_rng_state(), random.getstate()
    a1 = [space.sample(random.Random(7)) for _ in range(3)]
    g1 = space.sample(torch.Generator().manual_seed(7))
    g2 = space.sample(torch.Generator().manual_seed(7))
    assert len(set(a1)) == 1 and g1 == g2
    assert torch.equal(torch.get_rng_state(), torch_state) and random.getstate() == py_state
    with pytest.raises(TypeError, match="rng: expected random.Random or torch.Generator"):
        space.sample(7)


def test_sampling_covers_all_choices():
    space = ofa.get_space("mbv3-cifar")
    rng = random.Random(3)
    seen_d, seen_k, seen_e = set(), set(), set()
    for _ in range(300):
        a = space.sample(rng)
        seen_d.update(a.depths)
        seen_k.update(k for ks in a.kernels for k in ks)
        seen_e.update(e for es in a.expands for e in es)
    assert seen_d == {2, 3, 4} and seen_k == {3, 5, 7} and seen_e == {3, 4, 6}


@pytest.mark.parametrize(
    "text, pattern",
    [
        ("", "expected a string like"),
        ("32_k3e3", r"field 'resolution'.*got '32'"),
        ("r32", "no stages after the resolution"),
        ("r32_k3e3__k3e3", "stage 1 is empty"),
        ("r32_k3x3-k3e3", r"stage 0 block 0 is 'k3x3'; expected 'k<kernel>e<expand>'"),
        ("r33" + "_k3e3-k3e3" * 5, r"resolution 33 is not in space 'mbv3-cifar'; valid: 32"),
        ("r32" + "_k3e3-k3e3" * 4, "has 4 stages; space 'mbv3-cifar' has 5"),
        ("r32_k3e3" + "_k3e3-k3e3" * 4, r"stage 0 depth 1 is not valid; valid depths: 2, 3, 4"),
        ("r32_k9e3-k3e3" + "_k3e3-k3e3" * 4, r"stage 0 block 0 kernel 9 is not valid; valid kernels: 3, 5, 7"),
        ("r32_k3e3-k3e5" + "_k3e3-k3e3" * 4, r"stage 0 block 1 expand 5 is not valid; valid expands: 3, 4, 6"),
    ],
)
def test_malformed_strings_name_field_value_and_choices(text, pattern):
    space = ofa.get_space("mbv3-cifar")
    with pytest.raises(ValueError, match=pattern):
        space.parse(text)
    try:
        structural = parse_arch(text)
    except ValueError:
        return
    assert not space.contains(structural)  # well-formed but outside the space


def test_arch_json_errors_name_the_field():
    with pytest.raises(ValueError, match="missing field 'expands'"):
        Arch.from_json({"resolution": 32, "kernels": [[3]]})
    with pytest.raises(ValueError, match=r"depths \[3\] disagree"):
        Arch.from_json({"resolution": 32, "depths": [3], "kernels": [[3]], "expands": [[3]]})


def test_mbv3_macs_match_ofa_published_range():
    space = ofa.get_space("mbv3", width_mult=1.0, resolutions=(224,), num_classes=1000)
    small = space.macs(space.uniform(kernel=7, expand=3, depth=2))
    big = space.macs(space.max())
    assert 150.8e6 < small < 151.8e6  # OFA: 151M
    assert 565.5e6 < big < 566.8e6  # OFA: 566M (k7 e6 d4)
    assert big == space.macs(space.uniform(kernel=7, expand=6, depth=4))


def test_mbv3_cifar_macs_range_at_32():
    space = ofa.get_space("mbv3-cifar", width_mult=1.0, resolutions=(32,), num_classes=10)
    lo, hi = space.macs_range()
    assert 30e6 < lo < 50e6 and 170e6 < hi < 190e6


@pytest.mark.parametrize("name", SPACE_NAMES)
@pytest.mark.parametrize("coupled", [False, True])
def test_size_counts_every_arch_of_small_spaces(name, coupled):
    space = tiny_space(name)
    depths = [(2, 3) if s == 0 else (2,) if len(st.depths) > 1 else None for s, st in enumerate(space.stages)]
    kernels = [(3, 5)] + [(3,)] * (space.num_stages - 1)
    space = space.restrict(depths=depths, kernels=kernels, expands=(3, 4), resolutions=space.resolutions[:1])
    assert space.size <= 50_000
    if coupled:
        space = space.restrict(coupling={2: 3, 3: 4})
    archs = list(iter_archs(space))
    assert len(archs) == len(set(archs)) == space.size
    assert all(space.contains(a) for a in archs)
    rng = random.Random(0)
    assert {space.sample(rng) for _ in range(3000)} <= set(archs)


def test_restrict_phases_and_errors():
    space = ofa.get_space("mbv3-cifar")
    full_only = space.restrict(depths=(4,), kernels=(7,), expands=(6,))
    assert full_only.size == 1 and full_only.min() == full_only.max() == space.max()
    assert full_only.skeleton_key() == space.skeleton_key() and space.contains(full_only.max())
    assert not full_only.contains(space.min())
    kernel_phase = space.restrict(depths=(4,), expands=(6,))
    assert kernel_phase.size == 3 ** 20
    assert not kernel_phase.contains(space.min()) and space.contains(kernel_phase.min())
    with pytest.raises(ValueError, match=r"restrict: kernels 9 for stage 0 not in the space; valid: 3, 5, 7"):
        space.restrict(kernels=(3, 9))
    with pytest.raises(ValueError, match=r"restrict: resolutions 64 not in the space; valid: 32"):
        space.restrict(resolutions=(64,))
    with pytest.raises(ValueError, match="has 2 per-stage entries; the space has 5 stages"):
        space.restrict(depths=[(2,), (3,)])
    per_stage = space.restrict(depths=[(2,), (3,), (4,), (2, 3), None])
    assert [st.depths for st in per_stage.stages] == [(2,), (3,), (4,), (2, 3), (2, 3, 4)]


def test_proxyless_fixed_last_stage_is_kept_by_flat_restrictions():
    space = ofa.get_space("proxyless")
    r = space.restrict(depths=(4,))
    assert r.stages[-1].depths == (1,) and all(st.depths == (4,) for st in r.stages[:-1])


def test_compofa_coupling():
    space = ofa.get_space("mbv3-cifar").restrict(coupling={2: 3, 3: 4, 4: 6})
    rng = random.Random(5)
    for _ in range(200):
        a = space.sample(rng)
        for ks, es in zip(a.kernels, a.expands):
            assert set(es) == {{2: 3, 3: 4, 4: 6}[len(ks)]}
    assert space.size == (3**2 + 3**3 + 3**4) ** 5
    assert space.min() == space.uniform(3, 3, 2) and space.max() == space.uniform(7, 6, 4)
    uncoupled = parse_arch("r32" + "_k3e6-k3e6" * 5)
    assert not space.contains(uncoupled)
    with pytest.raises(ValueError, match=r"stage 0 expand 6 breaks the coupling of depth 2; valid expand: 3"):
        space.validate(uncoupled)
    with pytest.raises(ValueError, match="covers no depth of stage 0"):
        ofa.get_space("mbv3-cifar").restrict(coupling={5: 3})


def test_io_changes_macs_of_stem_and_classifier():
    a = ofa.get_space("mbv3-cifar", num_classes=10, in_channels=3)
    b = ofa.get_space("mbv3-cifar", num_classes=100, in_channels=1)
    arch = a.max()
    h = 32  # stride-1 stem
    diff = (a.macs(arch) - b.macs(arch))
    assert diff == h * h * a.stem_width * 9 * 2 + a.feature_width * (10 - 100)
    with pytest.raises(ValueError, match="num_classes: 0 is not valid"):
        a.with_io(num_classes=0)


@pytest.mark.parametrize("name", SPACE_NAMES)
def test_skewed_sampling_reaches_both_ends_and_stays_seeded(name):
    space = tiny_space(name)
    lo, hi = space.macs_range()
    frac = lambda a: (space.macs(a) - lo) / (hi - lo)  # noqa: E731
    top = [frac(space.sample(random.Random(i), 1.0)) for i in range(50)]
    bottom = [frac(space.sample(random.Random(i), -1.0)) for i in range(50)]
    uniform = [frac(space.sample(random.Random(i))) for i in range(200)]
    assert min(top) > 0.8 and max(bottom) < 0.2 and max(uniform) < min(top) + 0.2
    assert space.sample(random.Random(3), 0.4) == space.sample(random.Random(3), 0.4)
    assert all(space.contains(space.sample(torch.Generator().manual_seed(i), 0.7)) for i in range(5))
    with pytest.raises(ValueError, match=r"skew: 1.5 is not valid; must be in \[-1, 1\]"):
        space.sample(random.Random(0), 1.5)


@pytest.mark.parametrize("name", SPACE_NAMES)
def test_restricted_space_identity_round_trips(name):
    from onceforall.core.registry import space_from_identity

    space = tiny_space(name)
    assert "choices" not in space.identity() and space_from_identity(space.identity()) == space
    stage_kernels = [(k,) for k in (3, 5, 3, 3, 5, 7)[: space.num_stages]]
    for restricted in (space.restrict(kernels=(7,)), space.restrict(kernels=stage_kernels),
                       space.restrict(kernels=(7,)).restrict(coupling={2: 3, 3: 4, 4: 6})):
        ident = restricted.identity()
        assert "choices" in ident
        rebuilt = space_from_identity(ident)
        assert rebuilt == restricted and rebuilt.identity() == ident and rebuilt.macs_range() == restricted.macs_range()
    assert "choices" not in space.restrict(resolutions=space.resolutions[:1]).identity()
