"""The accuracy predictor of a search, and predictors as files.

**The predictor** (:class:`AccuracyPredictor`): sample a few thousand archs, measure their accuracy on held-out
data with the supernet's shared weights (after BN recalibration), and fit OFA's small MLP (3 hidden layers of 400,
ReLU) on a fixed-length one-hot encoding of the arch (:func:`encode`). Predicting one arch then costs microseconds
instead of an evaluation pass.

**Encoding** (:func:`encode`): for every elastic stage and every block position up to the stage's
*maximum* depth, a one-hot of the kernel choice followed by a one-hot of the expand choice (all zeros
for a block beyond the arch's depth), then a one-hot of the resolution. The depth is thus the number of
non-zero blocks, and two different archs of the space never encode alike.

**Files**: ``search`` saves the predictor it fitted (``<run>/search/predictor.pt``) and ``search --predictor FILE``
reuses one, ours or OFA's ``acc_predictor.pth``, without measuring subnets to fit it. Our file (``torch.save``,
read with ``weights_only=True``)::

    {"format": "onceforall-predictor", "version": 1,
     "space": the identity of the space it was fitted for (Space.identity()),
     "state": AccuracyPredictor.state_dict() (net.* tensors, base_acc, scale, hidden, layers, feature_dim, encoding),
     "fit": what fit() reported (pairs, held-out RMSE, Kendall tau, top-10 % hit rate),
     "info": where its measurements came from (run, step, split, images per subnet)}

Everything random uses ``random.Random(seed)`` / ``torch.Generator`` (never the global RNGs), so a fit is a
function of its seed.
"""

from __future__ import annotations

import math
import random
from collections.abc import Callable, Mapping, Sequence
from functools import lru_cache
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import torch
from torch import nn

from ..core.arch import Arch
from ..core.space import Space
from ..core.util import atomic_torch_save, load_weights_only
from .ofa_formats import load_ofa_acc_predictor

__all__ = ["FORMAT", "AccuracyPredictor", "Predictor", "ScoreFn", "encode", "feature_dim", "kendall_tau",
           "load_predictor", "save_predictor", "top_k_hit_rate"]

ScoreFn = Callable[[list[Arch]], Sequence[float]]
"""Scores of archs, batched (a predictor's ``predict``, or measured accuracies)."""

# ----------------------------------------------------------------------------------------------------
# Encoding and the predictor
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
# Predictors as files
# ----------------------------------------------------------------------------------------------------

FORMAT = "onceforall-predictor"
VERSION = 1
_IDENTITY = ("name", "width_mult", "num_classes", "in_channels")


class Predictor(Protocol):
    def predict(self, archs: list[Arch]) -> list[float]: ...


def save_predictor(path: str | Path, predictor: AccuracyPredictor, *, fit: Mapping[str, Any],
                   info: Mapping[str, Any] | None = None) -> Path:
    """Write ``predictor`` (fitted) with its space's identity, its fit statistics and ``info`` (atomically)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    data = {"format": FORMAT, "version": VERSION, "space": predictor.space.identity(),
            "state": predictor.state_dict(), "fit": dict(fit), "info": dict(info or {})}
    atomic_torch_save(path, data)
    return path


def load_predictor(path: str | Path, space: Space) -> tuple[Predictor, dict[str, Any]]:
    """The predictor in ``path`` for archs of ``space`` and its report (the file's fit statistics, ``source``,
    ``kind``: ``onceforall`` or ``ofa``). Our files must have been fitted for a space of the same identity and
    encoding; anything else is OFA's accuracy-predictor format or a one-line ValueError naming the file."""
    data = load_weights_only(path, "predictor")
    if not (isinstance(data, Mapping) and data.get("format") == FORMAT):
        try:
            ofa = load_ofa_acc_predictor(path, space)
        except ValueError as e:
            if "expected OFA's AccuracyPredictor" not in str(e):
                raise
            raise ValueError(f"predictor {path}: neither an onceforall predictor (search/predictor.pt) nor OFA's "
                             "accuracy predictor (acc_predictor.pth)") from None
        return ofa, {"kind": "ofa", "source": str(path), "pairs": None, "heldout_rmse": None,
                     "heldout_kendall_tau": None, "heldout_top10": None}
    if data.get("version") != VERSION:
        raise ValueError(f"predictor {path}: version {data.get('version')!r}; this onceforall reads {VERSION}")
    ident = data.get("space") or {}
    for key in _IDENTITY:
        if ident.get(key) != getattr(space, key):
            raise ValueError(f"predictor {path}: fitted for space {key}={ident.get(key)!r}, but this space has "
                             f"{key}={getattr(space, key)!r}")
    predictor = AccuracyPredictor(space)
    try:
        predictor.load_state_dict(data["state"])
    except ValueError as e:
        raise ValueError(f"predictor {path}: {e}") from None
    return predictor, {**data.get("fit", {}), **data.get("info", {}), "kind": "onceforall", "source": str(path)}
