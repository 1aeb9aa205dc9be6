"""Architecture search on a trained supernet: an accuracy predictor and constrained evolution (OFA style).

Once a supernet is trained, finding the best subnet for a deployment budget needs no more training:

1. **Accuracy predictor.** Sample a few thousand archs, measure their accuracy on held-out data with the
   supernet's shared weights (after BN recalibration), and fit :class:`AccuracyPredictor`, OFA's small
   MLP (3 hidden layers of 400, ReLU) on a fixed-length one-hot encoding of the arch (:func:`encode`).
   Predicting one arch then costs microseconds instead of an evaluation pass.
2. **Constrained evolution.** :func:`evolutionary_search` runs OFA's evolutionary search: a population
   of archs under the budget (rejection sampling), and each generation keeps the best ``parent_ratio``
   as parents and fills the population with mutated parents and uniform crossovers of two parents,
   rejecting children over budget or already present. Scores come from any batched ``score_fn`` (the
   predictor's :meth:`AccuracyPredictor.predict`, or a measured accuracy) and costs from any
   ``cost_fn`` (``space.macs``, a latency table, ...). :func:`random_search` is the baseline.

**Encoding** (:func:`encode`): for every elastic stage and every block position up to the stage's
*maximum* depth, a one-hot of the kernel choice followed by a one-hot of the expand choice (all zeros
for a block beyond the arch's depth), then a one-hot of the resolution. The depth is thus the number of
non-zero blocks, and two different archs of the space never encode alike.

**Genotype** (evolution): a fixed-length tuple of genes ``(resolution, depth of stage 0 .. S-1, then
for every stage and block position up to the stage's maximum depth: kernel, expand)``. It decodes to
the canonical :class:`~onceforall.core.arch.Arch` by truncating each stage to its depth gene, so genes of
inactive blocks are kept (and mutated) and a depth mutation re-activates meaningful blocks instead of
copies. In a coupled (CompOFA) stage the expand comes from the depth, so such stages have no expand
genes. Mutation resamples each gene with probability ``mutate_prob``; crossover takes each gene from
either parent with probability 1/2.

Everything random uses ``random.Random(seed)`` / ``torch.Generator`` (never the global RNGs), so a
search or a fit is a function of its seed.
"""

from __future__ import annotations

import math
import random
import re
from collections.abc import Callable, Mapping, Sequence
from functools import lru_cache, partial
from typing import Any

import numpy as np
import torch
from torch import nn

from ..core.arch import Arch
from ..core.space import Space

__all__ = [
    "AccuracyPredictor",
    "check_budget",
    "crowding_distance",
    "dominates",
    "encode",
    "evolutionary_search",
    "feature_dim",
    "format_cost",
    "kendall_tau",
    "non_dominated_sort",
    "nsga2_search",
    "parse_budget",
    "random_search",
    "top_k_hit_rate",
]

ScoreFn = Callable[[list[Arch]], Sequence[float]]
CostFn = Callable[[Arch], float]
Result = tuple[Arch, float, float]

# ----------------------------------------------------------------------------------------------------
# Budgets and costs
# ----------------------------------------------------------------------------------------------------

_SUFFIXES = {"": 1.0, "k": 1e3, "m": 1e6, "g": 1e9, "t": 1e12}
_BUDGET_RE = re.compile(r"^\s*((?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?)\s*([kKmMgGtT]?)\s*$")
_BUDGET_FORMAT = "a positive number with an optional k, M, G or T suffix, e.g. 350k, 20M, 1.5G or 12345"

# Units that count operations or parameters: shown in millions ("7.12M MACs").
_COUNT_UNITS = {"macs", "flops", "params"}


def parse_budget(text: str | float) -> float:
    """Parse a budget: ``"20M"`` -> 20e6, ``"1.5G"`` -> 1.5e9, ``"350k"`` -> 350e3, ``"12345"`` -> 12345.0.

    Suffixes k, M, G, T are case-insensitive (``m`` is mega: budgets are never milli-MACs). A plain
    positive int or float is returned as a float. Anything else raises ValueError naming the value and
    the expected format.
    """
    if isinstance(text, (int, float)) and not isinstance(text, bool):
        value = float(text)
    else:
        m = _BUDGET_RE.match(text) if isinstance(text, str) else None
        if m is None:
            raise ValueError(f"budget {text!r} is not valid; expected {_BUDGET_FORMAT}")
        value = float(m.group(1)) * _SUFFIXES[m.group(2).lower()]
    if not math.isfinite(value) or value <= 0:
        raise ValueError(f"budget {text!r} is not valid; expected {_BUDGET_FORMAT}")
    return value


def _short(value: float, unit: str) -> str:
    if unit.lower() in _COUNT_UNITS:
        return f"{value / 1e6:.2f}M"
    return f"{value:.2f}{_unit_sep(unit)}{unit}"


def _unit_sep(unit: str) -> str:
    return "" if len(unit) <= 2 else " "  # 3.40ms, 12.00 cycles


def format_cost(value: float, unit: str = "MACs") -> str:
    """Human form of a cost: ``7.12M MACs`` for counting units (MACs, FLOPs, params), ``3.40ms`` else."""
    if unit.lower() in _COUNT_UNITS:
        return f"{value / 1e6:.2f}M {unit}"
    return _short(value, unit)


def check_budget(space: Space, cost_fn: CostFn, budget: float, unit: str) -> float:
    try:
        budget = float(budget)
    except (TypeError, ValueError):
        raise ValueError(f"budget {budget!r} is not a number; expected a cost in {unit}") from None
    if math.isnan(budget):
        raise ValueError(f"budget {budget!r} is not a number; expected a cost in {unit}")
    smallest = float(cost_fn(space.min()))
    if budget < smallest:
        raise ValueError(
            f"budget {_short(budget, unit)} is below the smallest subnet ({format_cost(smallest, unit)})"
        )
    return budget


# ----------------------------------------------------------------------------------------------------
# Encoding
# ----------------------------------------------------------------------------------------------------


class _Layout:
    """Offsets of the one-hot groups of :func:`encode` for one space."""

    def __init__(self, space: Space) -> None:
        self.stages = []  # per stage: (offset of block 0, block width, kernel index, expand index)
        offset = 0
        for st in space.stages:
            k_idx = {k: i for i, k in enumerate(st.kernels)}
            e_idx = {e: i for i, e in enumerate(st.expands)}
            width = len(st.kernels) + len(st.expands)
            self.stages.append((offset, width, k_idx, e_idx))
            offset += width * max(st.depths)
        self.res_offset = offset
        self.res_idx = {r: i for i, r in enumerate(space.resolutions)}
        self.dim = offset + len(space.resolutions)
        self.signature = "|".join(
            [f"r{','.join(map(str, space.resolutions))}"]
            + [
                f"d{max(st.depths)}k{','.join(map(str, st.kernels))}e{','.join(f'{e:g}' for e in st.expands)}"
                for st in space.stages
            ]
        )


@lru_cache(maxsize=32)
def _layout(space: Space) -> _Layout:
    return _Layout(space)


def feature_dim(space: Space) -> int:
    """Length of :func:`encode`'s vectors: sum over stages of max depth x (#kernels + #expands), plus
    #resolutions."""
    return _layout(space).dim


def encode(space: Space, arch: Arch) -> list[float]:
    """OFA's fixed-length one-hot encoding of ``arch`` (validated against ``space``).

    Per stage and block position up to the stage's maximum depth: one-hot of the kernel, then one-hot
    of the expand (zeros for blocks beyond the arch's depth); then a one-hot of the resolution.
    """
    space.validate(arch)
    lay = _layout(space)
    vec = [0.0] * lay.dim
    for (offset, width, k_idx, e_idx), ks, es in zip(lay.stages, arch.kernels, arch.expands):
        for b, (k, e) in enumerate(zip(ks, es)):
            base = offset + b * width
            vec[base + k_idx[k]] = 1.0
            vec[base + len(k_idx) + e_idx[e]] = 1.0
    vec[lay.res_offset + lay.res_idx[arch.resolution]] = 1.0
    return vec


# ----------------------------------------------------------------------------------------------------
# Accuracy predictor
# ----------------------------------------------------------------------------------------------------


def kendall_tau(x: Sequence[float], y: Sequence[float]) -> float:
    """Kendall's tau-b (ties counted as in scipy); 0.0 when either side is constant."""
    xa, ya = np.asarray(x, dtype=np.float64), np.asarray(y, dtype=np.float64)
    n = len(xa)
    s = tied_x = tied_y = 0
    for i in range(n - 1):
        dx = np.sign(xa[i + 1:] - xa[i])
        dy = np.sign(ya[i + 1:] - ya[i])
        s += int(np.sum(dx * dy))
        tied_x += int(np.sum(dx == 0))
        tied_y += int(np.sum(dy == 0))
    n0 = n * (n - 1) // 2
    denom = math.sqrt((n0 - tied_x) * (n0 - tied_y))
    return s / denom if denom > 0 else 0.0


def top_k_hit_rate(pred: Sequence[float], true: Sequence[float], k: int) -> float:
    """Share of the ``k`` best archs by ``true`` that are among the ``k`` best by ``pred`` (1.0: the predictor
    finds every one of the best ``k``)."""
    k = max(1, min(int(k), len(true)))
    best_true = set(np.argsort(-np.asarray(true, dtype=np.float64), kind="stable")[:k].tolist())
    best_pred = set(np.argsort(-np.asarray(pred, dtype=np.float64), kind="stable")[:k].tolist())
    return len(best_true & best_pred) / k


def _pairwise_logistic(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """RankNet's loss over every ordered pair of the batch: log(1 + exp(-(p_i - p_j))) for each pair with
    target_i > target_j (pairs of equal targets carry no order)."""
    dp = pred[:, None] - pred[None, :]
    order = target[:, None] > target[None, :]
    if not bool(order.any()):
        return pred.sum() * 0.0
    return nn.functional.softplus(-dp[order]).mean()


class AccuracyPredictor:
    """OFA's accuracy predictor: an MLP (``layers`` hidden layers of ``hidden`` units, ReLU) on
    :func:`encode` (plus, with ``cost_feature``, the arch's MACs scaled to [0, 1] over the space), predicting
    accuracy in %.

    It is trained on standardized accuracies with the MSE plus ``rank_weight`` times a pairwise ranking loss
    (RankNet's logistic loss over every pair of a mini-batch): what a search needs is the order of archs,
    and measured accuracies differ by a few tenths of a point between neighbours, where the MSE alone hardly
    orders them (OFA's MLP with MSE reached Kendall tau 0.28-0.39 on our runs). Initialisation is seeded by
    ``seed`` (a ``torch.Generator``), so two predictors with the same arguments fitted on the same data are
    identical.
    """

    def __init__(self, space: Space, hidden: int = 400, layers: int = 3, seed: int = 0,
                 cost_feature: bool = True) -> None:
        if int(hidden) < 1:
            raise ValueError(f"hidden: {hidden!r} is not valid; must be a positive integer")
        if int(layers) < 0:
            raise ValueError(f"layers: {layers!r} is not valid; must be an integer >= 0 (0 is a linear model)")
        self.space = space
        self.hidden = int(hidden)
        self.layers = int(layers)
        self.seed = int(seed)
        self.cost_feature = bool(cost_feature)
        self.base_acc = 0.0
        self.scale = 1.0
        self.fitted = False
        self.net = self._build()
        self._init(self.seed)

    @property
    def input_dim(self) -> int:
        return feature_dim(self.space) + int(self.cost_feature)

    # ---- network --------------------------------------------------------------------------------

    def _build(self) -> nn.Sequential:
        mods: list[nn.Module] = []
        width = self.input_dim
        for _ in range(self.layers):
            # skip_init: no default init, which would draw from the global RNG.
            mods += [nn.utils.skip_init(nn.Linear, width, self.hidden), nn.ReLU()]
            width = self.hidden
        mods.append(nn.utils.skip_init(nn.Linear, width, 1))
        return nn.Sequential(*mods)

    def _init(self, seed: int) -> None:
        """PyTorch's default Linear init (U(+-1/sqrt(fan_in)) for weights and biases), seeded."""
        g = torch.Generator().manual_seed(seed)
        with torch.no_grad():
            for m in self.net:
                if isinstance(m, nn.Linear):
                    bound = 1.0 / math.sqrt(m.in_features)
                    m.weight.uniform_(-bound, bound, generator=g)
                    m.bias.uniform_(-bound, bound, generator=g)

    def _features(self, archs: Sequence[Arch]) -> torch.Tensor:
        rows = [encode(self.space, a) for a in archs]
        if self.cost_feature:
            lo, hi = self.space.macs_range()
            rows = [r + [(self.space.macs(a) - lo) / max(hi - lo, 1)] for r, a in zip(rows, archs)]
        return torch.tensor(rows, dtype=torch.float32).reshape(len(archs), self.input_dim)

    def _train(self, x: torch.Tensor, y: torch.Tensor, epochs: int, lr: float, batch_size: int, seed: int,
               rank_weight: float) -> None:
        """Fresh seeded init, then Adam on standardized accuracies: MSE + rank_weight x pairwise ranking loss."""
        self._init(self.seed)
        self.base_acc = float(y.mean())
        self.scale = float(y.std()) if len(y) > 1 and float(y.std()) > 0 else 1.0
        target = (y - self.base_acc) / self.scale
        g = torch.Generator().manual_seed(seed)
        opt = torch.optim.Adam(self.net.parameters(), lr=lr)
        self.net.train()
        n = len(x)
        for _ in range(epochs):
            order = torch.randperm(n, generator=g)
            for start in range(0, n, batch_size):
                idx = order[start:start + batch_size]
                pred = self.net(x[idx]).squeeze(1)
                loss = nn.functional.mse_loss(pred, target[idx])
                if rank_weight > 0:
                    loss = loss + rank_weight * _pairwise_logistic(pred, target[idx])
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
        self.net.eval()
        self.fitted = True

    @torch.no_grad()
    def _predict_tensor(self, x: torch.Tensor) -> torch.Tensor:
        self.net.eval()
        return self.net(x).squeeze(1) * self.scale + self.base_acc

    # ---- public ---------------------------------------------------------------------------------

    def fit(
        self,
        archs: Sequence[Arch],
        accs: Sequence[float],
        *,
        epochs: int = 300,
        lr: float = 1e-3,
        heldout: float = 0.2,
        seed: int = 0,
        batch_size: int = 256,
        rank_weight: float = 1.0,
    ) -> dict[str, Any]:
        """Fit on (arch, accuracy %) pairs; deterministic for (init seed, ``seed``).

        A seeded shuffle holds out ``round(heldout * pairs)`` pairs; the predictor is trained on the rest
        (Adam, MSE + ``rank_weight`` x pairwise ranking loss, mini-batches of ``batch_size`` in a seeded
        order) and measured on them, then refitted from the same initialisation on all pairs. Returns
        ``pairs``, ``train_rmse`` (on the training split), ``heldout_rmse``, ``heldout_mae``,
        ``heldout_kendall_tau``, ``heldout_top10`` (:func:`top_k_hit_rate` for the best 10 % of the held-out
        archs) and ``heldout_pairs``. With fewer than 5 pairs held out the held-out step is skipped: the
        heldout_* values are None and train_rmse is measured on all pairs after the single fit.
        """
        archs = list(archs)
        accs = [float(a) for a in accs]
        if len(archs) != len(accs):
            raise ValueError(f"fit: {len(archs)} archs but {len(accs)} accuracies; they must pair up")
        if len(archs) < 4:
            raise ValueError(f"fit: {len(archs)} (arch, accuracy) pairs is too few; need at least 4")
        if not all(math.isfinite(a) for a in accs):
            raise ValueError("fit: accuracies must be finite numbers")
        if not 0 <= heldout < 1:
            raise ValueError(f"heldout: {heldout!r} is not valid; must be a fraction in [0, 1)")
        if int(epochs) < 1:
            raise ValueError(f"epochs: {epochs!r} is not valid; must be a positive integer")
        if not lr > 0:
            raise ValueError(f"lr: {lr!r} is not valid; must be positive")
        if int(batch_size) < 1:
            raise ValueError(f"batch_size: {batch_size!r} is not valid; must be a positive integer")
        if not rank_weight >= 0:
            raise ValueError(f"rank_weight: {rank_weight!r} is not valid; must be >= 0 (0: MSE alone)")
        epochs, batch_size = int(epochs), int(batch_size)
        x = self._features(archs)
        y = torch.tensor(accs, dtype=torch.float32)
        n = len(archs)
        n_held = min(int(round(heldout * n)), n - 1)
        stats: dict[str, Any] = {
            "pairs": n, "train_rmse": None, "heldout_rmse": None, "heldout_mae": None,
            "heldout_kendall_tau": None, "heldout_top10": None, "heldout_pairs": n_held,
        }
        if n_held >= 5:
            order = list(range(n))
            random.Random(seed).shuffle(order)
            held, train = torch.tensor(order[:n_held]), torch.tensor(order[n_held:])
            self._train(x[train], y[train], epochs, lr, batch_size, seed, rank_weight)
            stats["train_rmse"] = _rmse(self._predict_tensor(x[train]), y[train])
            pred = self._predict_tensor(x[held])
            stats["heldout_rmse"] = _rmse(pred, y[held])
            stats["heldout_mae"] = float((pred - y[held]).abs().mean())
            stats["heldout_kendall_tau"] = kendall_tau(pred.tolist(), y[held].tolist())
            stats["heldout_top10"] = top_k_hit_rate(pred.tolist(), y[held].tolist(), max(1, round(n_held / 10)))
        self._train(x, y, epochs, lr, batch_size, seed, rank_weight)
        if stats["train_rmse"] is None:
            stats["train_rmse"] = _rmse(self._predict_tensor(x), y)
        return stats

    def predict(self, archs: Sequence[Arch]) -> list[float]:
        """Predicted accuracy (%) of each arch (batched; usable as a search ``score_fn``)."""
        if not self.fitted:
            raise RuntimeError("AccuracyPredictor: not fitted; call fit() or load_state_dict() first")
        archs = list(archs)
        if not archs:
            return []
        return [float(v) for v in self._predict_tensor(self._features(archs))]

    def __call__(self, archs: Sequence[Arch]) -> list[float]:
        return self.predict(archs)

    def state_dict(self) -> dict[str, Any]:
        """Weights as ``net.*`` tensors plus plain values (``base_acc``, ``hidden``, ``layers``,
        ``feature_dim``, ``encoding``): save the tensors with safetensors and the rest as JSON."""
        if not self.fitted:
            raise RuntimeError("AccuracyPredictor: not fitted; nothing to save")
        out: dict[str, Any] = {
            f"net.{k}": v.detach().clone().contiguous() for k, v in self.net.state_dict().items()
        }
        out.update(
            base_acc=float(self.base_acc), scale=float(self.scale), hidden=self.hidden, layers=self.layers,
            feature_dim=self.input_dim, encoding=self._signature(),
        )
        return out

    def _signature(self) -> str:
        return _layout(self.space).signature + ("|macs" if self.cost_feature else "")

    def load_state_dict(self, d: Mapping[str, Any]) -> None:
        """Load :meth:`state_dict` output (rebuilding the MLP if its hidden/layers differ). Raises
        ValueError if it was made for a space with another encoding."""
        for key in ("base_acc", "hidden", "layers", "feature_dim", "encoding"):
            if key not in d:
                raise ValueError(f"predictor state: missing field '{key}'")
        lay = _layout(self.space)
        cost_feature = str(d["encoding"]).endswith("|macs")  # states without it are OFA's one-hot alone
        if str(d["encoding"]) != lay.signature + ("|macs" if cost_feature else "") or \
                int(d["feature_dim"]) != lay.dim + int(cost_feature):
            raise ValueError(
                f"predictor state: made for encoding '{d['encoding']}' ({int(d['feature_dim'])} features); "
                f"this space encodes as '{lay.signature}' ({lay.dim} features, +1 with MACs)"
            )
        hidden, layers = int(d["hidden"]), int(d["layers"])
        if (hidden, layers, cost_feature) != (self.hidden, self.layers, self.cost_feature):
            self.hidden, self.layers, self.cost_feature = hidden, layers, cost_feature
            self.net = self._build()
        weights = {k[len("net."):]: torch.as_tensor(v) for k, v in d.items() if k.startswith("net.")}
        try:
            self.net.load_state_dict(weights)
        except RuntimeError as exc:
            raise ValueError(f"predictor state: weights do not fit the MLP: {exc}") from None
        self.base_acc = float(d["base_acc"])
        self.scale = float(d.get("scale", 1.0))
        self.fitted = True
        self.net.eval()


def _rmse(pred: torch.Tensor, target: torch.Tensor) -> float:
    return float(((pred - target) ** 2).mean().sqrt())


# ----------------------------------------------------------------------------------------------------
# Search
# ----------------------------------------------------------------------------------------------------


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

    def fits(a: Arch) -> bool:
        return min_cost <= scorer.cost(a) <= budget

    def draw(make: Callable[[], tuple], taken: set[Arch]) -> tuple[tuple, Arch] | None:
        for _ in range(max_tries):
            g = make()
            a = geno.decode(g)
            if a not in taken and fits(a):
                return g, a
        return None

    # Initial population: the given archs, then rejection sampling; a budget only the smallest subnet meets
    # may leave it empty, so fall back to space.min() (under budget: checked above).
    members: list[tuple[tuple, Arch]] = []
    taken: set[Arch] = set()
    for a in initial:
        if len(members) < population and a not in taken and space.contains(a) and fits(a):
            members.append((geno.from_arch(a, rng), a))
            taken.add(a)
    for _ in range(population - len(members)):
        m = draw(lambda: geno.random(rng), taken)
        if m is None:
            break
        members.append(m)
        taken.add(m[1])
    if not members:
        smallest = space.min()
        if not fits(smallest):
            raise ValueError(f"no arch with cost between {_short(min_cost, unit)} and {_short(budget, unit)} "
                             f"in {max_tries} draws; pass initial archs in that range or lower min_cost")
        members.append((geno.from_arch(smallest, rng), smallest))
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
    def mutant(parents: list[tuple[tuple, Arch]]) -> tuple:
        return geno.mutate(rng.choice(parents)[0], rng, mutate_prob)

    def crossover(parents: list[tuple[tuple, Arch]]) -> tuple:
        p1, p2 = rng.sample(parents, 2) if len(parents) >= 2 else (parents[0], parents[0])
        return geno.crossover(p1[0], p2[0], rng)

    for gen in range(1, generations + 1):
        parents = members[:n_parents]
        new = list(parents)
        taken = {a for _, a in new}
        for j in range(n_children):
            make = partial(mutant if j < n_mutants else crossover, parents)
            child = draw(make, taken)
            if child is not None:
                new.append(child)
                taken.add(child[1])
        scorer.score([a for _, a in new[len(parents):]])
        members = ranked(new)
        if progress is not None:
            best = members[0][1]
            progress(gen, best, scorer.scores[best], scorer.costs[best])
    return scorer.results()


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
                         f"({_short(budget, unit)})")
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
            raise ValueError(f"no arch with cost between {_short(min_cost, unit)} and {_short(budget, unit)} "
                             f"in {max_tries} draws; lower min_cost")
        found.append(smallest)
    scorer.score(found)
    return scorer.results()


# ----------------------------------------------------------------------------------------------------
# Multi-objective search (NSGA-II)
# ----------------------------------------------------------------------------------------------------


def dominates(a: Sequence[float], b: Sequence[float]) -> bool:
    """Whether objective vector ``a`` dominates ``b`` (all objectives minimized): no worse in every one and
    better in at least one."""
    return all(x <= y for x, y in zip(a, b)) and any(x < y for x, y in zip(a, b))


def non_dominated_sort(points: Sequence[Sequence[float]]) -> list[list[int]]:
    """Deb's fast non-dominated sort: indices of ``points`` (objectives minimized) by front, best front first,
    each front in index order. The domination matrix is computed with numpy in row blocks (NSGA-II sorts
    every arch it scored at the end: thousands of points)."""
    pts = np.asarray(points, dtype=np.float64)
    n = len(pts)
    if n == 0:
        return []
    pts = pts.reshape(n, -1)
    dom = np.empty((n, n), dtype=bool)  # dom[i, j]: i dominates j (as `dominates`)
    for start in range(0, n, 256):
        a = pts[start:start + 256, None, :]
        dom[start:start + 256] = (a <= pts[None]).all(-1) & (a < pts[None]).any(-1)
    count = dom.sum(axis=0)  # how many points dominate each point
    fronts = []
    current = np.flatnonzero(count == 0)
    while current.size:
        fronts.append(current.tolist())
        count = count - dom[current].sum(axis=0)
        count[current] = -1  # placed
        current = np.flatnonzero(count == 0)
    return fronts


def crowding_distance(points: Sequence[Sequence[float]]) -> list[float]:
    """NSGA-II's crowding distance of each point of one front: the sum over objectives of the normalized gap
    between its two neighbours (infinite at the extremes), so that spread-out members survive."""
    n = len(points)
    dist = [0.0] * n
    if n == 0:
        return dist
    for m in range(len(points[0])):
        order = sorted(range(n), key=lambda i: (points[i][m], i))
        lo, hi = points[order[0]][m], points[order[-1]][m]
        dist[order[0]] = dist[order[-1]] = math.inf
        if hi == lo:
            continue
        for k in range(1, n - 1):
            dist[order[k]] += (points[order[k + 1]][m] - points[order[k - 1]][m]) / (hi - lo)
    return dist


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
    scores: dict[Arch, float] = {}
    costs: dict[Arch, tuple[float, ...]] = {}

    def objectives(a: Arch) -> tuple[float, ...]:
        if a not in costs:
            costs[a] = tuple(float(f(a)) for f in cost_fns)
        return (-scores[a], *costs[a])

    def score(archs: list[Arch]) -> None:
        todo = list(dict.fromkeys(a for a in archs if a not in scores))
        if todo:
            values = list(score_fn(todo))
            if len(values) != len(todo):
                raise ValueError(f"score_fn returned {len(values)} scores for {len(todo)} archs")
            scores.update(zip(todo, map(float, values)))

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
    score([a for _, a in members])

    def rank(pop: list[tuple[tuple, Arch]]) -> tuple[list[tuple[tuple, Arch]], dict[Arch, tuple[int, float]]]:
        """The best ``population`` of ``pop`` and each survivor's (front rank, crowding distance)."""
        pts = [objectives(a) for _, a in pop]
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

    members, info = rank(members)

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
        score([a for _, a in children])
        members, info = rank(members + children)
    every = list(scores)
    pts = [objectives(a) for a in every]
    front = [every[i] for i in non_dominated_sort(pts)[0]]
    front.sort(key=lambda a: (costs[a], -scores[a], str(a)))
    return [(a, scores[a], costs[a]) for a in front]
