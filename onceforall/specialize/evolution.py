"""Searching a space with a score (a predictor's, or measured accuracies) under costs: OFA's constrained evolution,
random search (its baseline) and NSGA-II (the accuracy/cost front).

**Constrained evolution.** :func:`evolutionary_search` runs OFA's evolutionary search: a population of archs under
the budget (rejection sampling), and each generation keeps the best ``parent_ratio`` as parents and fills the
population with mutated parents and uniform crossovers of two parents, rejecting children over budget or already
present. Scores come from any batched ``score_fn`` (:meth:`~onceforall.specialize.predictor.AccuracyPredictor.predict`,
or a measured accuracy) and costs from any ``cost_fn`` (``space.macs``, a latency table, ...). :func:`random_search`
is the baseline.

**Genotype**: a fixed-length tuple of genes ``(resolution, depth of stage 0 .. S-1, then for every stage and block
position up to the stage's maximum depth: kernel, expand)``. It decodes to the canonical
:class:`~onceforall.core.arch.Arch` by truncating each stage to its depth gene, so genes of inactive blocks are kept
(and mutated) and a depth mutation re-activates meaningful blocks instead of copies. In a coupled (CompOFA) stage
the expand comes from the depth, so such stages have no expand genes. Mutation resamples each gene with
probability ``mutate_prob``; crossover takes each gene from either parent with probability 1/2.

**NSGA-II** sorts with the one Pareto primitive of the package (:func:`~onceforall.core.pareto.non_dominated_sort`,
:func:`~onceforall.core.pareto.crowding_distance`).

Everything random uses ``random.Random(seed)`` (never the global RNG), so a search is a function of its seed.
"""

from __future__ import annotations

import math
import random
from collections.abc import Callable, Sequence
from functools import partial

from ..core.arch import Arch
from ..core.pareto import crowding_distance, non_dominated_sort
from ..core.space import Space
from .budgets import CostFn, check_budget, short_cost
from .predictor import ScoreFn

__all__ = ["Result", "evolutionary_search", "nsga2_search", "random_search"]

Result = tuple[Arch, float, float]
"""(arch, score, cost) of a searched arch."""


class _Genotype:
    """Fixed-length genes: resolution, depth per stage, then kernel (and expand unless the stage is
    coupled) per block position up to the stage's maximum depth. Genotypes are tuples of values."""

    def __init__(self, space: Space) -> None:
        self.space = space
        choices: list[tuple] = [tuple(space.resolutions)] + [tuple(st.depths) for st in space.stages]
        self.blocks: list[list[tuple[int, int | None]]] = []  # per stage, per block: (kernel gene, expand gene)
        self.coupled: list[bool] = []
        for s, st in enumerate(space.stages):
            coupled = space.coupled_expand(s, st.depths[0]) is not None
            per = []
            for _ in range(max(st.depths)):
                k_gene = len(choices)
                choices.append(tuple(st.kernels))
                e_gene = None
                if not coupled:
                    e_gene = len(choices)
                    choices.append(tuple(st.expands))
                per.append((k_gene, e_gene))
            self.blocks.append(per)
            self.coupled.append(coupled)
        self.choices = tuple(choices)

    def random(self, rng: random.Random) -> tuple:
        return tuple(c[rng.randrange(len(c))] for c in self.choices)

    def from_arch(self, arch: Arch, rng: random.Random) -> tuple:
        """A genotype decoding to ``arch``; genes of inactive blocks are drawn at random."""
        g = list(self.random(rng))
        g[0] = arch.resolution
        for s, (ks, es) in enumerate(zip(arch.kernels, arch.expands)):
            g[1 + s] = len(ks)
            for (k_gene, e_gene), k, e in zip(self.blocks[s], ks, es):
                g[k_gene] = k
                if e_gene is not None:
                    g[e_gene] = e
        return tuple(g)

    def decode(self, g: tuple) -> Arch:
        kernels, expands = [], []
        for s, per in enumerate(self.blocks):
            d = g[1 + s]
            active = per[:d]
            kernels.append(tuple(g[k] for k, _ in active))
            if self.coupled[s]:
                expands.append((self.space.coupled_expand(s, d),) * d)
            else:
                expands.append(tuple(g[e] for _, e in active))
        return Arch(g[0], tuple(kernels), tuple(expands))

    def mutate(self, g: tuple, rng: random.Random, prob: float) -> tuple:
        return tuple(c[rng.randrange(len(c))] if rng.random() < prob else v for v, c in zip(g, self.choices))

    def crossover(self, g1: tuple, g2: tuple, rng: random.Random) -> tuple:
        return tuple(a if rng.random() < 0.5 else b for a, b in zip(g1, g2))


class _Scorer:
    """Caches costs and scores per arch; scores are requested in batches."""

    def __init__(self, score_fn: ScoreFn, cost_fn: CostFn) -> None:
        self.score_fn, self.cost_fn = score_fn, cost_fn
        self.scores: dict[Arch, float] = {}
        self.costs: dict[Arch, float] = {}

    def cost(self, arch: Arch) -> float:
        c = self.costs.get(arch)
        if c is None:
            c = self.costs[arch] = float(self.cost_fn(arch))
        return c

    def score(self, archs: Sequence[Arch]) -> None:
        todo = list(dict.fromkeys(a for a in archs if a not in self.scores))
        if not todo:
            return
        values = list(self.score_fn(todo))
        if len(values) != len(todo):
            raise ValueError(f"score_fn returned {len(values)} scores for {len(todo)} archs; it must return one each")
        for a, v in zip(todo, values):
            v = float(v)
            if math.isnan(v):
                raise ValueError(f"score_fn returned NaN for arch '{a}'")
            self.scores[a] = v

    def results(self) -> list[Result]:
        out = [(a, s, self.costs[a]) for a, s in self.scores.items()]
        out.sort(key=lambda r: (-r[1], r[2], str(r[0])))
        return out


class _Draws:
    """Rejection sampling of distinct archs with ``min_cost <= cost <= budget`` (at most ``max_tries`` draws each)."""

    def __init__(self, geno: _Genotype, scorer: _Scorer, min_cost: float, budget: float, max_tries: int) -> None:
        self.geno, self.scorer = geno, scorer
        self.min_cost, self.budget, self.max_tries = min_cost, budget, max_tries

    def fits(self, a: Arch) -> bool:
        return self.min_cost <= self.scorer.cost(a) <= self.budget

    def draw(self, make: Callable[[], tuple], taken: set[Arch]) -> tuple[tuple, Arch] | None:
        for _ in range(self.max_tries):
            g = make()
            a = self.geno.decode(g)
            if a not in taken and self.fits(a):
                return g, a
        return None

    def population(self, space: Space, initial: Sequence[Arch], size: int, rng: random.Random,
                   unit: str) -> list[tuple[tuple, Arch]]:
        """The initial population: the given archs, then rejection sampling; a budget only the smallest subnet
        meets may leave it empty, so it falls back to space.min() (under budget: checked before)."""
        geno = self.geno
        members: list[tuple[tuple, Arch]] = []
        taken: set[Arch] = set()
        for a in initial:
            if len(members) < size and a not in taken and space.contains(a) and self.fits(a):
                members.append((geno.from_arch(a, rng), a))
                taken.add(a)
        for _ in range(size - len(members)):
            m = self.draw(lambda: geno.random(rng), taken)
            if m is None:
                break
            members.append(m)
            taken.add(m[1])
        if not members:
            smallest = space.min()
            if not self.fits(smallest):
                raise ValueError(f"no arch with cost between {short_cost(self.min_cost, unit)} and "
                                 f"{short_cost(self.budget, unit)} in {self.max_tries} draws; pass initial archs in "
                                 "that range or lower min_cost")
            members.append((geno.from_arch(smallest, rng), smallest))
        return members


def _check_int(name: str, value: int, low: int) -> int:
    if isinstance(value, bool) or int(value) != value or value < low:
        raise ValueError(f"{name}: {value!r} is not valid; must be an integer >= {low}")
    return int(value)


def _check_fraction(name: str, value: float, low_open: bool = False) -> float:
    if not (0 < value <= 1 if low_open else 0 <= value <= 1):
        raise ValueError(f"{name}: {value!r} is not valid; must be in {'(0' if low_open else '[0'}, 1]")
    return float(value)


def evolutionary_search(
    space: Space,
    score_fn: ScoreFn,
    cost_fn: CostFn,
    budget: float,
    *,
    seed: int = 0,
    population: int = 100,
    generations: int = 30,
    parent_ratio: float = 0.25,
    mutation_ratio: float = 0.5,
    mutate_prob: float = 0.1,
    max_tries: int = 500,
    unit: str = "MACs",
    progress: Callable[[int, Arch, float, float], None] | None = None,
    min_cost: float = 0.0,
    initial: Sequence[Arch] = (),
) -> list[Result]:
    """OFA's constrained evolutionary search for the best-scoring arch with ``min_cost <= cost_fn(arch) <=
    budget`` (``min_cost`` > 0 searches one MACs bucket).

    The initial population is the ``initial`` archs that satisfy the constraint, then distinct archs drawn
    uniformly (genotype-wise, as ``space.sample``) and kept only when they satisfy it, up to ``population``.
    Each generation keeps the best
    ``round(parent_ratio * population)`` members as parents and refills the population to
    ``population`` with ``round(mutation_ratio * population)`` mutants of random parents and uniform
    crossovers of two distinct random parents for the rest; a child over budget or equal to a member of
    the new population is redrawn (up to ``max_tries`` times, then that slot stays empty).

    ``score_fn`` gets lists of archs not scored before (one call per generation) and returns one score
    each (higher is better); ``cost_fn`` is called once per distinct arch. ``progress``, if given, is
    called after every generation (0 = initial population) with (generation, best arch, its score, its
    cost). Returns every distinct arch scored, as (arch, score, cost), best score first (ties: cheaper
    first); all satisfy the budget. Deterministic for a seed (given deterministic score/cost functions).
    Raises ValueError if ``budget`` is below ``cost_fn(space.min())``, costs shown in ``unit``.
    """
    population = _check_int("population", population, 2)
    generations = _check_int("generations", generations, 0)
    max_tries = _check_int("max_tries", max_tries, 1)
    parent_ratio = _check_fraction("parent_ratio", parent_ratio, low_open=True)
    mutation_ratio = _check_fraction("mutation_ratio", mutation_ratio)
    mutate_prob = _check_fraction("mutate_prob", mutate_prob)
    budget = check_budget(space, cost_fn, budget, unit)

    rng = random.Random(seed)
    geno = _Genotype(space)
    scorer = _Scorer(score_fn, cost_fn)
    draws = _Draws(geno, scorer, min_cost, budget, max_tries)
    members = draws.population(space, initial, population, rng, unit)
    scorer.score([a for _, a in members])

    n_parents = max(1, int(round(parent_ratio * population)))
    n_children = max(0, population - n_parents)
    n_mutants = min(int(round(mutation_ratio * population)), n_children)

    def ranked(pop: list[tuple[tuple, Arch]]) -> list[tuple[tuple, Arch]]:
        return sorted(pop, key=lambda m: -scorer.scores[m[1]])  # stable: ties keep their order

    members = ranked(members)
    if progress is not None:
        best = members[0][1]
        progress(0, best, scorer.scores[best], scorer.costs[best])

    for gen in range(1, generations + 1):
        parents = members[:n_parents]
        new = _next_generation(parents, n_children, n_mutants, draws, rng, mutate_prob)
        scorer.score([a for _, a in new[len(parents):]])
        members = ranked(new)
        if progress is not None:
            best = members[0][1]
            progress(gen, best, scorer.scores[best], scorer.costs[best])
    return scorer.results()


def _next_generation(parents: list[tuple[tuple, Arch]], n_children: int, n_mutants: int, draws: _Draws,
                     rng: random.Random, mutate_prob: float) -> list[tuple[tuple, Arch]]:
    """The parents, then ``n_mutants`` mutants of random parents and crossovers of two distinct random parents for
    the rest of the ``n_children`` (a child that cannot be drawn leaves its slot empty)."""
    geno = draws.geno

    def mutant(parents: list[tuple[tuple, Arch]]) -> tuple:
        return geno.mutate(rng.choice(parents)[0], rng, mutate_prob)

    def crossover(parents: list[tuple[tuple, Arch]]) -> tuple:
        p1, p2 = rng.sample(parents, 2) if len(parents) >= 2 else (parents[0], parents[0])
        return geno.crossover(p1[0], p2[0], rng)

    new = list(parents)
    taken = {a for _, a in new}
    for j in range(n_children):
        child = draws.draw(partial(mutant if j < n_mutants else crossover, parents), taken)
        if child is not None:
            new.append(child)
            taken.add(child[1])
    return new


def random_search(
    space: Space,
    score_fn: ScoreFn,
    cost_fn: CostFn,
    budget: float,
    *,
    n: int,
    seed: int = 0,
    max_tries: int = 500,
    unit: str = "MACs",
    min_cost: float = 0.0,
) -> list[Result]:
    """``n`` distinct archs drawn with ``space.sample`` and kept when ``min_cost <= cost_fn(arch) <= budget``,
    scored in one ``score_fn`` call, best first (as :func:`evolutionary_search`). ``min_cost`` close to the
    budget gives a budget-matched baseline (archs that use the budget, as a search's result does). Stops
    early, returning fewer, after ``max_tries`` draws in a row that are outside the band or already drawn
    (a nearly exhausted space); if none was found, returns the smallest subnet alone when it is in the
    band, else raises ``ValueError``. Deterministic for a seed."""
    n = _check_int("n", n, 1)
    max_tries = _check_int("max_tries", max_tries, 1)
    budget = check_budget(space, cost_fn, budget, unit)
    if not (isinstance(min_cost, (int, float)) and 0 <= min_cost <= budget):
        raise ValueError(f"min_cost {min_cost!r} must be a number between 0 and the budget "
                         f"({short_cost(budget, unit)})")
    rng = random.Random(seed)
    scorer = _Scorer(score_fn, cost_fn)
    found: list[Arch] = []
    seen: set[Arch] = set()
    misses = 0
    while len(found) < n and misses < max_tries:
        a = space.sample(rng)
        if a in seen or not min_cost <= scorer.cost(a) <= budget:
            misses += 1
            continue
        misses = 0
        seen.add(a)
        found.append(a)
    if not found:  # only (nearly) the smallest subnet fits: never return nothing
        smallest = space.min()
        if scorer.cost(smallest) < min_cost:
            raise ValueError(f"no arch with cost between {short_cost(min_cost, unit)} and {short_cost(budget, unit)} "
                             f"in {max_tries} draws; lower min_cost")
        found.append(smallest)
    scorer.score(found)
    return scorer.results()


def nsga2_search(
    space: Space,
    score_fn: ScoreFn,
    cost_fns: Sequence[CostFn],
    *,
    seed: int = 0,
    population: int = 100,
    generations: int = 40,
    crossover_prob: float = 0.9,
    mutate_prob: float = 0.1,
    max_tries: int = 100,
    initial: Sequence[Arch] = (),
) -> list[tuple[Arch, float, tuple[float, ...]]]:
    """NSGA-II (Deb et al. 2002) over the space: maximize ``score_fn`` and minimize every cost of
    ``cost_fns`` (MACs, latency, peak memory, parameters...) at once.

    The population starts from ``initial``, the smallest and the largest arch (the ends of the front) and
    uniform genotype draws. Each generation breeds ``population`` distinct children (binary tournaments on
    (front rank, crowding distance), uniform crossover with probability ``crossover_prob``, per-gene mutation
    with ``mutate_prob``), then keeps the best ``population`` of parents and children by non-dominated rank,
    ties on the last front broken by crowding distance. Returns the non-dominated archs among every arch
    scored, as (arch, score, costs), cheapest first by the first cost. Deterministic for a seed.
    """
    population = _check_int("population", population, 4)
    generations = _check_int("generations", generations, 0)
    max_tries = _check_int("max_tries", max_tries, 1)
    crossover_prob = _check_fraction("crossover_prob", crossover_prob)
    mutate_prob = _check_fraction("mutate_prob", mutate_prob)
    if not cost_fns:
        raise ValueError("cost_fns: give at least one cost to minimize")
    rng = random.Random(seed)
    geno = _Genotype(space)
    obj = _Objectives(score_fn, cost_fns)
    members: list[tuple[tuple, Arch]] = []
    taken: set[Arch] = set()
    for a in (*initial, space.min(), space.max()):
        if len(members) < population and a not in taken and space.contains(a):
            members.append((geno.from_arch(a, rng), a))
            taken.add(a)
    for _ in range(max_tries * population):
        if len(members) >= population:
            break
        g = geno.random(rng)
        a = geno.decode(g)
        if a not in taken:
            members.append((g, a))
            taken.add(a)
    obj.score([a for _, a in members])
    members, info = _survivors(members, obj, population)

    def tournament() -> tuple:
        (g1, a1), (g2, a2) = rng.sample(members, 2)
        return g1 if (info[a1][0], -info[a1][1]) <= (info[a2][0], -info[a2][1]) else g2

    for _ in range(generations):
        taken = {a for _, a in members}
        children: list[tuple[tuple, Arch]] = []
        for _ in range(max_tries * population):
            if len(children) >= population:
                break
            g = tournament()
            if rng.random() < crossover_prob:
                g = geno.crossover(g, tournament(), rng)
            g = geno.mutate(g, rng, mutate_prob)
            a = geno.decode(g)
            if a not in taken:
                children.append((g, a))
                taken.add(a)
        obj.score([a for _, a in children])
        members, info = _survivors(members + children, obj, population)
    return obj.front()


class _Objectives:
    """Scores (batched, once per arch) and costs of the archs NSGA-II met, as objective vectors (all minimized)."""

    def __init__(self, score_fn: ScoreFn, cost_fns: Sequence[CostFn]) -> None:
        self.score_fn, self.cost_fns = score_fn, cost_fns
        self.scores: dict[Arch, float] = {}
        self.costs: dict[Arch, tuple[float, ...]] = {}

    def __call__(self, a: Arch) -> tuple[float, ...]:
        if a not in self.costs:
            self.costs[a] = tuple(float(f(a)) for f in self.cost_fns)
        return (-self.scores[a], *self.costs[a])

    def score(self, archs: list[Arch]) -> None:
        todo = list(dict.fromkeys(a for a in archs if a not in self.scores))
        if todo:
            values = list(self.score_fn(todo))
            if len(values) != len(todo):
                raise ValueError(f"score_fn returned {len(values)} scores for {len(todo)} archs")
            self.scores.update(zip(todo, map(float, values)))

    def front(self) -> list[tuple[Arch, float, tuple[float, ...]]]:
        """The non-dominated archs among every arch scored, as (arch, score, costs), cheapest first."""
        every = list(self.scores)
        pts = [self(a) for a in every]
        front = [every[i] for i in non_dominated_sort(pts)[0]]
        front.sort(key=lambda a: (self.costs[a], -self.scores[a], str(a)))
        return [(a, self.scores[a], self.costs[a]) for a in front]


def _survivors(pop: list[tuple[tuple, Arch]], obj: _Objectives, population: int
               ) -> tuple[list[tuple[tuple, Arch]], dict[Arch, tuple[int, float]]]:
    """The best ``population`` of ``pop`` by non-dominated rank, ties on the last front broken by crowding distance,
    and each survivor's (front rank, crowding distance)."""
    pts = [obj(a) for _, a in pop]
    kept, info = [], {}
    for r, front in enumerate(non_dominated_sort(pts)):
        dist = crowding_distance([pts[i] for i in front])
        order = sorted(range(len(front)), key=lambda k: (-dist[k], front[k]))
        for k in order[: population - len(kept)]:
            kept.append(pop[front[k]])
            info[pop[front[k]][1]] = (r, dist[k])
        if len(kept) >= population:
            break
    return kept, info
