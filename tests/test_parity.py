"""Step-for-step parity with the official DεpS code (gatech-sysml/DepS).

tests/fixtures/deps_reference.pt holds trajectories of the official ``train_one_epoch_deps`` and
``train_one_epoch_bignas`` (written once by scripts/make_deps_reference.py, float64, CPU, one process): a digest of
every tensor of the supernet after each step, with the batches, archs, dropout masks and learning rates aligned
with ours. These tests replay OUR training (``step_once``: the strategy's plan, ``begin_step``, ``train_step``) with
this package's defaults from the same start, and require every tensor's digest to match at every step. The four
settings in which this package used to differ from the official code are checked to break the parity.
"""

from __future__ import annotations

import copy
from pathlib import Path

import pytest
import torch

from onceforall.run.config import Config
from onceforall.run.setup import build_net, build_optimizer, build_schedule, build_space, build_strategy
from onceforall.run.state import step_once

FIXTURE = Path(__file__).parent / "fixtures" / "deps_reference.pt"
TOLERANCE = 1e-6  # relative, per tensor and step (the float64 replays agree to about 2e-10)
# This package's settings before 2026-12-03, one at a time: each must break the parity (first failing step).
OLD_DEFAULTS = {
    "eps-loss": ("strategy.eps_mode", "loss"),
    "global-sort": ("strategy.reorganize_mode", "global"),
    "permute-momentum": ("strategy.reorganize_momentum", True),
    "bn-momentum-0.1": ("model.bn_momentum", 0.1),
}


@pytest.fixture(scope="module")
def reference() -> dict:
    return torch.load(FIXTURE, weights_only=True)


def config(name: str, st: dict, overrides: tuple[tuple[str, object], ...] = ()) -> Config:
    """Our config of the official trajectory: defaults, but for the run's size and the official flags' values."""
    cfg = Config()
    cfg.model.space, cfg.model.width_mult, cfg.model.resolutions = "mbv3-cifar", st["width_mult"], [st["resolution"]]
    cfg.model.kernels, cfg.model.kernel_transform, cfg.model.dropout = [7], False, st["dropout"]
    cfg.optim.lr, cfg.optim.momentum, cfg.optim.weight_decay = st["lr"], st["momentum"], st["weight_decay"]
    cfg.optim.label_smoothing = st["label_smoothing"]
    cfg.train.epochs, cfg.train.seed, cfg.train.batch_size = st["epochs"], st["seed"], st["batch_size"]
    cfg.strategy.name, cfg.strategy.num_subnets = name, st["num_subnets"]
    if name == "deps":  # shrinking from epoch teacher_warmup - smallnet_warmup, ε = 1 from teacher_warmup
        cfg.strategy.shrink_start = (st["teacher_warmup"] - st["smallnet_warmup"]) / st["epochs"]
        cfg.strategy.eps_ramp_epochs = float(st["smallnet_warmup"])
    for key, value in overrides:
        section, field = key.split(".")
        setattr(getattr(cfg, section), field, value)
    return cfg


def digest(state: dict[str, torch.Tensor], keys: list[str]) -> torch.Tensor:
    """The script's digest: per tensor, sum, sum of squares and sum of v_i · cos(i) (float64)."""
    rows = []
    for k in keys:
        v = state[k].detach().to(torch.float64).flatten()
        w = torch.cos(torch.arange(v.numel(), dtype=torch.float64))
        rows.append(torch.stack([v.sum(), (v * v).sum(), (v * w).sum()]))
    return torch.stack(rows)


def relative_error(ours: torch.Tensor, ref: torch.Tensor, sizes: torch.Tensor) -> float:
    """Max over tensors of |Δ| / scale, with scales that bound each entry: n · rms for the two sums, n · rms² for the
    sum of squares, rms = max(RMS of the official tensor, 1e-6). The floor keeps tensors that are zero up to
    rounding (a BN bias whose gradient vanishes because a BN follows) from dividing rounding noise by itself."""
    rms = (ref[:, 1] / sizes).sqrt().clamp(min=1e-6)
    scale = torch.stack([sizes * rms, sizes * rms * rms, sizes * rms], dim=1)
    return float(((ours - ref).abs() / scale).max())


def replay(reference: dict, name: str, overrides: tuple[tuple[str, object], ...] = (), *,
           stop_above: float | None = None, start: dict | None = None, keep: int | None = None) -> dict:
    """Our training of the fixture's run: per step, the relative error against the official digest, ε and lr.

    ``stop_above``: stop after the first step whose error exceeds it; ``start``: continue from a state kept by an
    earlier replay (``out["kept"]``, the supernet and optimizer before step ``keep``) instead of step 0."""
    ref = reference[name]
    st, keys = ref["settings"], ref["keys"]
    cfg = config(name, st, overrides)
    space = build_space(cfg).with_io(num_classes=st["num_classes"], in_channels=3)
    net = build_net(cfg, space).double().train()
    assert list(net.state_dict()) == keys
    sizes = torch.tensor([float(v.numel()) for v in net.state_dict().values()], dtype=torch.float64)
    opt = build_optimizer(net, cfg)
    strategy = build_strategy(cfg, space, build_schedule(cfg, st["steps_per_epoch"]))
    first = 0
    if start is not None:
        first = start["step"]
        net.load_state_dict(start["net"])
        opt.load_state_dict(copy.deepcopy(start["optimizer"]))
    out: dict = {"error": {first: relative_error(digest(net.state_dict(), keys), ref["digests"][first], sizes)},
                 "eps": [], "lr": []}
    teacher = None
    with torch.random.fork_rng(devices=[]):  # the steps seed dropout
        for t in range(first, len(ref["digests"]) - 1):
            if t == keep:
                out["kept"] = {"step": t, "net": copy.deepcopy(net.state_dict()),
                               "optimizer": copy.deepcopy(opt.state_dict())}
            x = (reference["images"][t].to(torch.float64) - 128.0) / 64.0
            teacher = step_once(cfg, strategy, t, net, opt, teacher, x, reference["labels"][t]).teacher
            out["error"][t + 1] = relative_error(digest(net.state_dict(), keys), ref["digests"][t + 1], sizes)
            out["eps"].append(strategy.plan(t).eps)
            out["lr"].append(strategy.lr_at(t))
            if stop_above is not None and out["error"][t + 1] > stop_above:
                break
    return out


def first_shrink_step(st: dict) -> int:
    return (st["teacher_warmup"] - st["smallnet_warmup"]) * st["steps_per_epoch"]


@pytest.fixture(scope="module")
def deps_replay(reference: dict) -> dict:
    return replay(reference, "deps", keep=first_shrink_step(reference["deps"]["settings"]))


def test_fixture_covers_every_deps_phase(reference: dict) -> None:
    ref = reference["deps"]
    st, eps = ref["settings"], ref["eps"].tolist()
    shrink = first_shrink_step(st)
    ramp = st["smallnet_warmup"] * st["steps_per_epoch"]
    assert len(ref["digests"]) - 1 >= 12
    assert eps[:shrink] == [0.0] * shrink  # FM-Warmup
    assert all(0 < e < 1 for e in eps[shrink:shrink + ramp])  # the ε ramp, starting with the re-organization
    assert eps[shrink + ramp:] == [1.0] * (len(eps) - shrink - ramp) and len(eps) > shrink + ramp  # ε = 1


def test_deps_schedule_is_the_official_one(reference: dict, deps_replay: dict) -> None:
    """ε_t and η_t of every step equal the official adjust_beta_value's and the schedule's."""
    ref = reference["deps"]
    assert deps_replay["lr"] == pytest.approx(ref["lr"].tolist(), rel=1e-12, abs=0)
    assert deps_replay["eps"] == pytest.approx(ref["eps"].tolist(), rel=1e-12, abs=0)


def test_deps_matches_the_official_code_step_for_step(deps_replay: dict) -> None:
    errors = deps_replay["error"]
    assert errors[0] < 1e-15  # the same start (up to the digest's own summation order under threads)
    bad = {t - 1: e for t, e in errors.items() if e > TOLERANCE}
    assert not bad, f"diverges from the official DεpS trajectory after step(s) {bad}"


def test_bignas_matches_the_official_code_step_for_step(reference: dict) -> None:
    errors = replay(reference, "bignas")["error"]
    bad = {t - 1: e for t, e in errors.items() if e > TOLERANCE}
    assert not bad, f"diverges from the official BigNAS trajectory after step(s) {bad}"


@pytest.mark.parametrize("old", list(OLD_DEFAULTS))
def test_each_old_default_breaks_the_parity(reference: dict, deps_replay: dict, old: str) -> None:
    """The fixture tells the old settings apart: each one alone breaks the parity, the BN momentum at step 0
    (running statistics), the others at the first shrinking step (ε, re-organization, momentum), from which they
    replay, continuing the default replay's state (the steps before are the same)."""
    shrink = first_shrink_step(reference["deps"]["settings"])
    start = None if old == "bn-momentum-0.1" else deps_replay["kept"]
    errors = replay(reference, "deps", (OLD_DEFAULTS[old],), stop_above=TOLERANCE, start=start)["error"]
    diverged = [t - 1 for t, e in errors.items() if e > TOLERANCE]
    assert diverged, f"{old}: no step diverges beyond {TOLERANCE}"
    assert diverged[0] == (0 if old == "bn-momentum-0.1" else shrink), f"{old}: diverges at step {diverged[0]}"
    assert errors[diverged[0] + 1] > 1e-3  # not a rounding matter
