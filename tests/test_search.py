"""Search: budgets, encoding, accuracy predictor, constrained evolution and random search."""

import json
import random
import re
import statistics
import zlib

import numpy as np
import pytest
import torch
from safetensors.torch import load_file, save_file

import onceforall as ofa
from onceforall.core.arch import Arch
from onceforall.core.pareto import dominates
from onceforall.core.space import iter_archs
from onceforall.specialize.budgets import format_cost, parse_budget
from onceforall.specialize.evolution import evolutionary_search, nsga2_search, random_search
from onceforall.specialize.predictor import AccuracyPredictor, encode, feature_dim

COUPLING = {2: 3, 3: 4, 4: 6}


def base_space() -> ofa.Space:
    return ofa.get_space("mbv3-cifar", width_mult=0.25, resolutions=(20, 24), num_classes=10, in_channels=1)


def small_space() -> ofa.Space:
    """15,552 archs: small enough to enumerate, varied enough (resolution, depth, kernel, expand)."""
    return base_space().restrict(
        depths=[(2,), (2, 3), (2,), (2,), (2, 3)],
        kernels=[(3, 5), (3,), (3, 5, 7), (3,), (3,)],
        expands=[(3,), (3, 6), (3,), (3, 4, 6), (3,)],
    )


def coupled_space() -> ofa.Space:
    """4,536 archs of a CompOFA space (depth 2/3/4 -> expand 3/4/6)."""
    return base_space().restrict(kernels=[(3, 5), (3,), (3,), (3,), (3,)], coupling=COUPLING)


def gene_score(seed: int, low: float = 0.0):
    """A synthetic accuracy: a random weight per (resolution), (stage, depth), (stage, block, kernel) and
    (stage, block, expand) gene, summed over the active ones. Not monotone in MACs, unique optimum."""
    rng, weights = random.Random(seed), {}

    def weight(key) -> float:
        if key not in weights:
            weights[key] = rng.uniform(low, 1.0)
        return weights[key]

    def score(a: Arch) -> float:
        s = weight(("r", a.resolution))
        for i, (ks, es) in enumerate(zip(a.kernels, a.expands)):
            s += weight(("d", i, len(ks)))
            for b, (k, e) in enumerate(zip(ks, es)):
                s += weight(("k", i, b, k)) + weight(("e", i, b, e))
        return s

    return score


def batched(score):
    return lambda archs: [score(a) for a in archs]


def brute_force(archs, score, cost, budget):
    """(best feasible arch, its score, second best feasible score, best arch of all)."""
    feasible = sorted((a for a in archs if cost(a) <= budget), key=score, reverse=True)
    return feasible[0], score(feasible[0]), score(feasible[1]), max(archs, key=score)


@pytest.fixture(scope="module")
def small():
    space = small_space()
    archs = list(iter_archs(space))
    assert len(archs) == space.size == 15552
    return space, archs, np.array([space.macs(a) for a in archs])


def check_results(space, results, score, cost, budget):
    archs = [a for a, _, _ in results]
    assert len(set(archs)) == len(archs)
    assert [s for _, s, _ in results] == sorted((s for _, s, _ in results), reverse=True)
    for a, s, c in results:
        assert space.contains(a)
        assert c == cost(a) <= budget
        assert s == pytest.approx(score(a))


# ----------------------------------------------------------------------------------------------------
# Budgets
# ----------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "text, value",
    [("20M", 20e6), ("1.5G", 1.5e9), ("350k", 350e3), ("12345", 12345.0), (" 20m ", 20e6), ("350 K", 350e3),
     ("2e6", 2e6), (".5G", 0.5e9), ("1T", 1e12), (20_000_000, 20e6), (1.5, 1.5)],
)
def test_parse_budget(text, value):
    assert parse_budget(text) == pytest.approx(value)
    assert isinstance(parse_budget(text), float)


@pytest.mark.parametrize("text", ["", "abc", "20X", "-5M", "0", "0k", "1..5M", "20MM", "M", "nan", "inf", "5 ms", None])
def test_parse_budget_rejects(text):
    with pytest.raises(ValueError, match=re.escape(f"budget {text!r}") + r".*expected .*k, M, G.*20M"):
        parse_budget(text)


def test_format_cost():
    assert format_cost(7_123_456) == "7.12M MACs"
    assert format_cost(3.4, "ms") == "3.40ms"
    assert format_cost(12, "cycles") == "12.00 cycles"


# ----------------------------------------------------------------------------------------------------
# Encoding
# ----------------------------------------------------------------------------------------------------


def test_encode_fixed_length_and_one_hot_blocks():
    space = base_space()
    assert feature_dim(space) == 5 * 4 * (3 + 3) + 2
    rng = random.Random(0)
    for a in [space.min(), space.max()] + [space.sample(rng) for _ in range(300)]:
        v = encode(space, a)
        assert len(v) == feature_dim(space) and set(v) <= {0.0, 1.0}
        pos = 0
        for st, ks, es in zip(space.stages, a.kernels, a.expands):
            for b in range(max(st.depths)):
                kern = v[pos:pos + len(st.kernels)]
                exp = v[pos + len(st.kernels):pos + len(st.kernels) + len(st.expands)]
                pos += len(st.kernels) + len(st.expands)
                active = b < len(ks)
                assert sum(kern) == sum(exp) == (1 if active else 0)
                if active:
                    assert st.kernels[kern.index(1.0)] == ks[b] and st.expands[exp.index(1.0)] == es[b]
        assert v[pos:] == [1.0 if r == a.resolution else 0.0 for r in space.resolutions]


def test_encode_injective_over_a_whole_space_and_samples(small):
    space, archs, _ = small
    assert len({str(tuple(encode(space, a))) for a in archs}) == len(archs)
    big, rng = base_space(), random.Random(1)
    sampled = {big.sample(rng) for _ in range(3000)}
    assert len({str(tuple(encode(big, a))) for a in sampled}) == len(sampled)


def test_encode_coupled_space_and_rejects_foreign_archs():
    space = base_space().restrict(coupling=COUPLING)
    rng = random.Random(2)
    sampled = {space.sample(rng) for _ in range(1000)}
    codes = {str(tuple(encode(space, a))) for a in sampled}
    assert len(codes) == len(sampled)
    assert all(len(encode(space, a)) == feature_dim(space) for a in sampled)
    a = Arch(20, ((3, 3),) * 5, ((3, 4),) * 5)  # depth 2 with an expand 4 breaks the coupling
    assert base_space().contains(a)
    with pytest.raises(ValueError, match="coupling"):
        encode(space, a)


# ----------------------------------------------------------------------------------------------------
# Accuracy predictor
# ----------------------------------------------------------------------------------------------------


def smooth_accuracy(a: Arch) -> float:
    blocks = [(k, e) for ks, es in zip(a.kernels, a.expands) for k, e in zip(ks, es)]
    return (60 + 3 * sum(e for _, e in blocks) / len(blocks) + 0.05 * sum(k for k, _ in blocks)
            + 0.1 * a.resolution + 0.1 * len(blocks))


@pytest.fixture(scope="module")
def predictor_data():
    space = ofa.get_space("mbv3-cifar", width_mult=0.25, resolutions=(20, 24, 28), num_classes=10, in_channels=1)
    rng = random.Random(0)
    archs = list(dict.fromkeys(space.sample(rng) for _ in range(400)))
    test = [a for a in dict.fromkeys(space.sample(rng) for _ in range(200)) if a not in set(archs)]
    return space, archs, [smooth_accuracy(a) for a in archs], test


def fit_small(space, archs, accs, epochs=100, **kw):
    p = AccuracyPredictor(space, hidden=64, layers=3, seed=kw.pop("init_seed", 0))
    return p, p.fit(archs, accs, epochs=epochs, **kw)


@pytest.fixture(scope="module")
def fitted(predictor_data):
    space, archs, accs, _ = predictor_data
    return fit_small(space, archs, accs, seed=3, batch_size=512)  # full batch: fast on a busy CPU


def test_predictor_learns_a_smooth_target(predictor_data, fitted):
    space, archs, accs, test = predictor_data
    p, stats = fitted
    std = statistics.pstdev(accs)
    assert std > 0.8
    assert stats["pairs"] == 400 and stats["heldout_pairs"] == 80
    assert stats["heldout_rmse"] < 0.3 * std
    assert stats["heldout_mae"] <= stats["heldout_rmse"]
    assert 0.8 < stats["heldout_kendall_tau"] <= 1
    assert stats["train_rmse"] < stats["heldout_rmse"]
    pred = p.predict(test)
    rmse = float(np.sqrt(np.mean((np.array(pred) - [smooth_accuracy(a) for a in test]) ** 2)))
    assert rmse < 0.3 * std
    assert p(test[:3]) == pred[:3] and p.predict([]) == []


def test_predictor_is_deterministic_and_leaves_global_rngs_alone(predictor_data):
    space, archs, accs, test = predictor_data
    states = torch.get_rng_state(), random.getstate(), np.random.get_state()[1].copy()
    p1, stats1 = fit_small(space, archs, accs, epochs=10, seed=3)
    assert torch.equal(states[0], torch.get_rng_state()) and states[1] == random.getstate()
    assert np.array_equal(states[2], np.random.get_state()[1])
    p2, stats2 = fit_small(space, archs, accs, epochs=10, seed=3)
    assert stats1 == stats2 and p1.predict(test) == p2.predict(test)
    assert p2.fit(archs, accs, epochs=10, seed=3) == stats1 and p2.predict(test) == p1.predict(test)  # from scratch
    p3, stats3 = fit_small(space, archs, accs, epochs=10, seed=4)  # another split and batch order
    assert stats3 != stats1 and p3.predict(test) != p1.predict(test)
    p4, _ = fit_small(space, archs, accs, epochs=10, seed=3, init_seed=1)  # another initialisation
    assert p4.predict(test) != p1.predict(test)


def test_predictor_state_dict_round_trip_through_safetensors_and_json(predictor_data, fitted, tmp_path):
    space, _, _, test = predictor_data
    p, _ = fitted
    state = p.state_dict()
    tensors = {k: v for k, v in state.items() if isinstance(v, torch.Tensor)}
    plain = {k: v for k, v in state.items() if not isinstance(v, torch.Tensor)}
    assert tensors and set(plain) == {"base_acc", "scale", "hidden", "layers", "feature_dim", "encoding"}
    save_file(tensors, tmp_path / "predictor.safetensors")
    (tmp_path / "predictor.json").write_text(json.dumps(plain))
    loaded = AccuracyPredictor(space, hidden=8, layers=1)  # rebuilt to the saved shape
    loaded.load_state_dict({**load_file(tmp_path / "predictor.safetensors"),
                            **json.loads((tmp_path / "predictor.json").read_text())})
    assert loaded.predict(test) == p.predict(test)
    with pytest.raises(ValueError, match="encoding"):
        AccuracyPredictor(base_space()).load_state_dict(state)
    with pytest.raises(ValueError, match="missing field 'base_acc'"):
        AccuracyPredictor(space).load_state_dict({k: v for k, v in state.items() if k != "base_acc"})


def test_predictor_file_round_trip_weights_only(predictor_data, fitted, tmp_path):
    from onceforall.specialize.predictor import load_predictor, save_predictor

    space, _, _, test = predictor_data
    p, stats = fitted
    path = save_predictor(tmp_path / "search" / "predictor.pt", p, fit=stats, info={"step": 7, "images": 100})
    raw = torch.load(path, weights_only=True)  # plain tensors and values: no pickled classes
    assert raw["format"] == "onceforall-predictor" and raw["version"] == 1 and raw["space"] == space.identity()
    assert raw["fit"] == stats
    loaded, report = load_predictor(path, space)
    assert loaded.predict(test) == p.predict(test)
    assert report == {**stats, "step": 7, "images": 100, "kind": "onceforall", "source": str(path)}
    # another space: refused by identity (width) or by encoding (other choices), one line naming the file
    wider = ofa.get_space("mbv3-cifar", width_mult=0.5, resolutions=(20, 24, 28), num_classes=10, in_channels=1)
    with pytest.raises(ValueError) as excinfo:
        load_predictor(path, wider)
    assert str(excinfo.value) == (f"predictor {path}: fitted for space width_mult=0.25, but this space has "
                                  "width_mult=0.5")
    with pytest.raises(ValueError, match=f"predictor {path}: predictor state: made for encoding"):
        load_predictor(path, space.restrict(kernels=(3,)))
    torch.save({"something": torch.zeros(1)}, tmp_path / "other.pt")
    with pytest.raises(ValueError, match="neither an onceforall predictor"):
        load_predictor(tmp_path / "other.pt", space)


def test_kendall_tau():
    from onceforall.specialize.predictor import kendall_tau as _kendall_tau

    assert _kendall_tau([1, 2, 3, 4], [10, 20, 30, 40]) == 1.0
    assert _kendall_tau([1, 2, 3, 4], [4, 3, 2, 1]) == -1.0
    assert _kendall_tau([1, 2, 3, 4], [1, 3, 2, 4]) == pytest.approx(4 / 6)
    assert _kendall_tau([1, 1, 2, 3], [1, 2, 3, 4]) == pytest.approx(5 / np.sqrt(5 * 6))  # tau-b with a tie
    assert _kendall_tau([1, 1, 1], [1, 2, 3]) == 0.0


def test_predictor_errors_and_tiny_heldout(predictor_data):
    space, archs, accs, _ = predictor_data
    p = AccuracyPredictor(space, hidden=16, layers=2)
    with pytest.raises(RuntimeError, match="not fitted"):
        p.predict(archs[:2])
    with pytest.raises(ValueError, match="3 .* pairs is too few; need at least 4"):
        p.fit(archs[:3], accs[:3])
    with pytest.raises(ValueError, match="4 archs but 3 accuracies"):
        p.fit(archs[:4], accs[:3])
    stats = p.fit(archs[:20], accs[:20], epochs=5)  # 4 held out: no held-out metrics
    assert stats["heldout_pairs"] == 4 and stats["pairs"] == 20
    assert stats["heldout_rmse"] is stats["heldout_mae"] is stats["heldout_kendall_tau"] is None
    assert stats["train_rmse"] is not None and len(p.predict(archs[:5])) == 5


# ----------------------------------------------------------------------------------------------------
# Evolutionary search
# ----------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("percentile", [30, 60])
@pytest.mark.parametrize("seed", [0, 1])
def test_evolution_finds_the_known_optimum(small, percentile, seed):
    space, archs, macs = small
    score = gene_score(0)
    budget = float(np.percentile(macs, percentile))
    best, best_score, second, best_overall = brute_force(archs, score, space.macs, budget)
    assert space.macs(best_overall) > budget  # the budget binds
    assert best_score > second  # unique optimum
    results = evolutionary_search(space, batched(score), space.macs, budget, seed=seed)
    assert results[0][0] == best and results[0][1] == pytest.approx(best_score)
    assert len(results) > 300
    check_results(space, results, score, space.macs, budget)


def test_evolution_is_deterministic_batched_and_cached(small):
    space, _, macs = small
    score, budget, calls = gene_score(1), float(np.percentile(macs, 50)), []

    def score_fn(archs):
        assert isinstance(archs, list)
        calls.append(list(archs))
        return [score(a) for a in archs]

    kw = dict(seed=5, population=40, generations=10)
    r1 = evolutionary_search(space, score_fn, space.macs, budget, **kw)
    assert len(calls) == 11  # initial population + one batch per generation
    flat = [a for c in calls for a in c]
    assert len(flat) == len(set(flat)) == len(r1)  # no arch scored twice
    assert len(calls[0]) == 40
    r2 = evolutionary_search(space, batched(score), space.macs, budget, **kw)
    assert r1 == r2
    r3 = evolutionary_search(space, batched(score), space.macs, budget, **{**kw, "seed": 6})
    assert r3 != r1
    seen = []
    evolutionary_search(space, batched(score), space.macs, budget, progress=lambda *a: seen.append(a), **kw)
    assert [g for g, *_ in seen] == list(range(11))
    assert seen[-1] == (10, *r1[0]) and [s for _, _, s, _ in seen] == sorted(s for _, _, s, _ in seen)


@pytest.mark.parametrize("mutation_ratio", [0.0, 1.0])
def test_crossover_alone_and_mutation_alone_make_new_archs(small, mutation_ratio):
    space, _, macs = small
    budget = float(np.percentile(macs, 50))
    results = evolutionary_search(space, batched(gene_score(0)), space.macs, budget, population=40, generations=5,
                                  mutation_ratio=mutation_ratio, max_tries=20)
    assert len(results) > 40 + 4 * 5  # children that are neither over budget nor copies of a member


def test_random_search_budget_matched_band(small):
    space, _, macs = small
    score = gene_score(0)
    lo, budget = float(np.percentile(macs, 40)), float(np.percentile(macs, 60))
    results = random_search(space, batched(score), space.macs, budget, n=10, seed=1, min_cost=lo)
    assert len(results) == 10 and all(lo <= c <= budget for _, _, c in results)
    anywhere = random_search(space, batched(score), space.macs, budget, n=10, seed=1)
    assert any(c < lo for _, _, c in anywhere)  # without the band, cheaper archs are drawn too
    with pytest.raises(ValueError, match=r"min_cost 2e\+30 must be a number between 0 and the budget"):
        random_search(space, batched(score), space.macs, budget, n=3, min_cost=2e30)
    top = space.macs(space.max())  # a band above every arch but the largest few: nothing in 5 draws
    with pytest.raises(ValueError, match=r"no arch with cost between .* in 5 draws; lower min_cost"):
        random_search(space, batched(score), space.macs, top, n=3, min_cost=top, max_tries=5, seed=3)


def test_budget_below_the_smallest_subnet_is_an_error(small):
    space, _, _ = small
    smallest = space.macs(space.min())
    msg = f"budget {(smallest - 1e5) / 1e6:.2f}M is below the smallest subnet ({smallest / 1e6:.2f}M MACs)"
    for search in (evolutionary_search, lambda *a: random_search(*a, n=5)):
        with pytest.raises(ValueError, match=re.escape(msg)):
            search(space, batched(gene_score(0)), space.macs, smallest - 1e5)


def test_budget_of_exactly_the_smallest_subnet(small):
    space, _, _ = small
    smallest = space.min()
    budget = space.macs(smallest)
    results = evolutionary_search(space, batched(gene_score(0)), space.macs, budget, generations=3, max_tries=50)
    assert results[0][0] == smallest and all(c <= budget for _, _, c in results)
    assert random_search(space, batched(gene_score(0)), space.macs, budget, n=3, max_tries=50)[0][0] == smallest


def test_evolution_with_a_latency_cost(small):
    space, archs, _ = small
    rng = random.Random(7)
    table = {}
    for s, st in enumerate(space.stages):
        for b in range(max(st.depths)):
            for k in st.kernels:
                for e in st.expands:
                    table[s, b, k, e] = rng.uniform(0.05, 0.3)

    def latency(a: Arch) -> float:  # ms: not proportional to MACs
        blocks = sum(table[s, b, k, e] for s, (ks, es) in enumerate(zip(a.kernels, a.expands))
                     for b, (k, e) in enumerate(zip(ks, es)))
        return 0.4 + blocks * (a.resolution / 20) ** 1.5

    lat = np.array([latency(a) for a in archs])
    budget = float(np.percentile(lat, 40))
    score = gene_score(3)
    best, best_score, second, best_overall = brute_force(archs, score, latency, budget)
    assert latency(best_overall) > budget and best_score > second
    results = evolutionary_search(space, batched(score), latency, budget, seed=0, unit="ms")
    assert results[0][0] == best
    check_results(space, results, score, latency, budget)
    low = latency(space.min())
    with pytest.raises(ValueError, match=re.escape(f"budget 0.50ms is below the smallest subnet ({low:.2f}ms)")):
        evolutionary_search(space, batched(score), latency, 0.5, unit="ms")


def test_evolution_in_a_coupled_space():
    space = coupled_space()
    archs = list(iter_archs(space))
    assert len(archs) == space.size == 4536
    score = gene_score(3, low=-1.0)
    budget = float(np.percentile([space.macs(a) for a in archs], 50))
    best, best_score, second, best_overall = brute_force(archs, score, space.macs, budget)
    assert space.macs(best_overall) > budget and best_score > second
    results = evolutionary_search(space, batched(score), space.macs, budget, seed=0)
    assert results[0][0] == best
    check_results(space, results, score, space.macs, budget)  # contains() checks the coupling
    for a, _, _ in results:
        for ks, es in zip(a.kernels, a.expands):
            assert set(es) == {COUPLING[len(ks)]}
    assert len({a.depths for a, _, _ in results}) > 10  # depths do move


def test_evolution_rejects_bad_settings(small):
    space, _, _ = small
    args = (space, batched(gene_score(0)), space.macs, space.macs(space.max()))
    for kw, name in [({"population": 1}, "population"), ({"parent_ratio": 0}, "parent_ratio"),
                     ({"mutate_prob": 1.5}, "mutate_prob"), ({"max_tries": 0}, "max_tries")]:
        with pytest.raises(ValueError, match=f"{name}: .* is not valid"):
            evolutionary_search(*args, **kw)
    with pytest.raises(ValueError, match="returned 1 scores for 100 archs"):
        evolutionary_search(space, lambda archs: [0.0], space.macs, space.macs(space.max()))


def test_evolution_with_the_predictor_as_score(predictor_data, fitted):
    space, _, _, _ = predictor_data
    p, _ = fitted
    budget = float(np.mean(space.macs_range()))
    results = evolutionary_search(space, p.predict, space.macs, budget, population=30, generations=5)
    check_results(space, results, lambda a: p.predict([a])[0], space.macs, budget)
    assert smooth_accuracy(results[0][0]) > np.percentile(
        [smooth_accuracy(a) for a, _, _ in results], 90)


# ----------------------------------------------------------------------------------------------------
# Random search
# ----------------------------------------------------------------------------------------------------


def test_random_search(small):
    space, _, macs = small
    score, budget = gene_score(0), float(np.percentile(macs, 30))
    results = random_search(space, batched(score), space.macs, budget, n=50, seed=1)
    assert len(results) == 50
    check_results(space, results, score, space.macs, budget)
    assert results == random_search(space, batched(score), space.macs, budget, n=50, seed=1)
    assert results != random_search(space, batched(score), space.macs, budget, n=50, seed=2)


def test_evolution_inside_a_macs_bucket_finds_its_optimum(small):
    """With min_cost (one MACs bucket of eval) and a few initial archs inside it, the search stays in the bucket
    and finds the best arch there, also at the top of the range that uniform draws rarely reach."""
    space, archs, macs = small
    score = gene_score(2)
    lo_all, hi_all = space.macs_range()
    lo, hi = lo_all + 5 / 6 * (hi_all - lo_all), hi_all  # the top bucket
    inside = [a for a, m in zip(archs, macs) if lo <= m <= hi]
    assert 0 < len(inside) < 0.05 * len(archs)
    best = max(inside, key=score)
    results = evolutionary_search(space, batched(score), space.macs, hi, min_cost=lo, initial=inside[:5], seed=0,
                                  population=30, generations=20)
    assert all(lo <= c <= hi for _, _, c in results)
    assert results[0][0] == best
    with pytest.raises(ValueError, match="no arch with cost between"):
        evolutionary_search(space, batched(score), space.macs, hi, min_cost=hi + 1, max_tries=5)


# ----------------------------------------------------------------------------------------------------
# Ranking-aware predictor and multi-objective search (NSGA-II)
# ----------------------------------------------------------------------------------------------------


def test_pairwise_ranking_loss_is_ranknet():
    from onceforall.specialize.predictor import _pairwise_logistic

    pred = torch.tensor([0.5, -1.0, 2.0], requires_grad=True)
    target = torch.tensor([1.0, 0.0, 1.0])  # ordered pairs: (0, 1) and (2, 1); 0 and 2 are tied
    loss = _pairwise_logistic(pred, target)
    expected = (torch.nn.functional.softplus(torch.tensor(-1.5)) + torch.nn.functional.softplus(torch.tensor(-3.0))) / 2
    assert torch.allclose(loss, expected)
    loss.backward()
    assert pred.grad[0] < 0 and pred.grad[2] < 0 and pred.grad[1] > 0  # pushes the better ones up
    assert float(_pairwise_logistic(pred.detach(), torch.ones(3))) == 0.0  # no order, no loss


def test_top_k_hit_rate():
    from onceforall.specialize.predictor import top_k_hit_rate

    assert top_k_hit_rate([1, 2, 3, 4], [10, 20, 30, 40], 2) == 1.0
    assert top_k_hit_rate([4, 3, 2, 1], [10, 20, 30, 40], 2) == 0.0
    assert top_k_hit_rate([1, 4, 3, 2], [10, 20, 30, 40], 2) == 0.5


def test_predictor_with_macs_feature_and_old_states(predictor_data):
    space, archs, accs, test = predictor_data
    p = AccuracyPredictor(space, hidden=16, layers=1, cost_feature=False)
    p.fit(archs[:40], accs[:40], epochs=3, rank_weight=0.0)
    p.scale = 1.0  # states written before standardized targets and the MACs feature: one-hot alone, no scale
    old = p.state_dict()
    old.pop("scale")
    q = AccuracyPredictor(space, hidden=16, layers=1)  # built with the MACs feature; the state decides
    q.load_state_dict(old)
    assert not q.cost_feature and q.predict(test[:5]) == p.predict(test[:5])
    r = AccuracyPredictor(space, hidden=16, layers=1)
    r.fit(archs[:40], accs[:40], epochs=3)
    assert r.state_dict()["encoding"].endswith("|macs") and r.state_dict()["feature_dim"] == feature_dim(space) + 1
    with pytest.raises(ValueError, match="rank_weight: -1 is not valid"):
        r.fit(archs[:40], accs[:40], rank_weight=-1)


def test_non_dominated_sort_and_crowding():
    from onceforall.core.pareto import crowding_distance, dominates, non_dominated_sort

    pts = [(1, 5), (2, 2), (5, 1), (3, 3), (4, 4), (2, 2)]
    assert dominates((1, 1), (1, 2)) and not dominates((1, 2), (1, 2)) and not dominates((0, 3), (1, 2))
    assert non_dominated_sort(pts) == [[0, 1, 2, 5], [3], [4]]
    d = crowding_distance([(1, 5), (2, 2), (5, 1)])
    assert d[0] == d[2] == float("inf") and d[1] == pytest.approx((5 - 1) / 4 + (5 - 1) / 4)


def test_non_dominated_sort_matches_the_definition_on_ties_and_three_objectives():
    """Every point's front is one more than the deepest front among the points that dominate it (front 0: no
    dominator), checked pairwise with `dominates` on integer points full of ties."""
    from onceforall.core.pareto import dominates, non_dominated_sort

    rng = random.Random(5)
    for n, k in ((1, 2), (40, 2), (120, 3)):
        pts = [tuple(rng.randint(0, 6) for _ in range(k)) for _ in range(n)]
        fronts = non_dominated_sort(pts)
        assert sorted(i for f in fronts for i in f) == list(range(n)) and all(f == sorted(f) for f in fronts)
        rank = {i: r for r, f in enumerate(fronts) for i in f}
        for j in range(n):
            above = [rank[i] for i in range(n) if dominates(pts[i], pts[j])]
            assert rank[j] == (max(above) + 1 if above else 0)
    assert non_dominated_sort([]) == []


def _hypervolume(points: list[tuple[float, float]], ref: tuple[float, float]) -> float:
    """Area dominated by 2-d points (both minimized) up to ``ref``."""
    area, best_y = 0.0, ref[1]
    for x, y in sorted(points):
        if y < best_y:
            area += (ref[0] - x) * (best_y - y)
            best_y = y
    return area


def test_nsga2_recovers_the_exact_front_of_an_enumerable_space():
    space = base_space().restrict(depths=[2], kernels=[7], expands=[3, 6])  # 2^10 archs x 2 resolutions
    archs = list(iter_archs(space))
    assert len(archs) == 2048
    lo, hi = space.macs_range()

    def score(batch):  # saturating in MACs, with an arch-specific wiggle so that the front is not trivial
        return [10 * (1 - np.exp(-3 * (space.macs(a) - lo) / (hi - lo))) + (zlib.crc32(str(a).encode()) % 97) / 97
                for a in batch]

    every = [(-s, float(space.macs(a))) for a, s in zip(archs, score(archs))]
    ref = (0.0, float(hi) * 1.01)
    true_hv = _hypervolume(every, ref)
    found = nsga2_search(space, score, [space.macs], population=40, generations=25, seed=0)
    found_pts = [(-s, c[0]) for _, s, c in found]
    assert _hypervolume(found_pts, ref) >= 0.99 * true_hv
    for i, p in enumerate(found_pts):  # the returned set is non-dominated
        assert not any(dominates(q, p) for j, q in enumerate(found_pts) if j != i)
    assert found == nsga2_search(space, score, [space.macs], population=40, generations=25, seed=0)
    two = nsga2_search(space, score, [space.macs, space.params], population=40, generations=5, seed=1)
    assert all(len(c) == 2 and c == (space.macs(a), space.params(a)) for a, _, c in two)
    with pytest.raises(ValueError, match="cost_fns: give at least one cost"):
        nsga2_search(space, score, [])


def test_results_write_their_files_key_for_key_and_read_back():
    """A typed result's ``to_json`` is the file's content in the file's key order (a front's cost information
    between units and seed, ``path`` left out); ``from_json`` reads it back, and a file missing a key is refused
    naming it."""
    from onceforall.measure.results import EvalResult, FrontResult, SearchResult

    front_file = {"run": "r", "step": 3, "costs": ["macs", "latency"], "units": {"macs": "MACs", "latency": "ms"},
                  "latency_table": "t.json", "memory_dtype": "float16", "seed": 0, "resolution": None,
                  "predictor": {"pairs": 4}, "eval_set": {"split": "test"}, "members": [{"arch": "a"}]}
    front = FrontResult.from_json(front_file, "f.json")
    assert front.info == {"latency_table": "t.json", "memory_dtype": "float16"} and front.path == "f.json"
    # a key added later (the search settings) reads back as its default from a file written before it
    assert front.search == {} and json.dumps(front.to_json()) == json.dumps({**front_file, "search": {}})
    front_file["search"] = {"seed": 0, "samples": 120}
    assert json.dumps(FrontResult.from_json(front_file).to_json()) == json.dumps(front_file)
    search_file = {"run": "r", "step": 3, "budget": 5e6, "unit": "MACs", "budget_text": "5.00M MACs", "seed": 0,
                   "resolution": 16, "predictor": {}, "eval_set": {}, "candidates": [], "best": "a", "searched": 9}
    found = SearchResult.from_json(search_file, "s.json")
    assert list(found.to_json().items()) == list(search_file.items()) and found.path == "s.json"
    with pytest.raises(ValueError, match=r"eval result: has no 'mean_pareto_ci' \(needs run, step"):
        EvalResult.from_json({k: 0 for k in ("run", "step", "strategy", "space", "eval_set", "macs_range",
                                             "bucket_edges", "buckets", "curve", "front", "mean_pareto_acc",
                                             "smallest", "largest")})
