"""Write tests/fixtures/deps_reference.pt: a training trajectory of the OFFICIAL DεpS code, for tests/test_parity.py.

    .venv/bin/python scripts/make_deps_reference.py DEPS_SNAPSHOT [--out tests/fixtures/deps_reference.pt]

DEPS_SNAPSHOT is a copy of https://github.com/gatech-sysml/DepS: a directory holding its ``deps/`` package, or a bare
git directory of the repository (its HEAD is extracted to a temporary directory and its commit recorded). CI never
runs this script; the test needs only the fixture, not the official code. Nothing of the official code is copied
into this repository: its modules are imported from the snapshot, once. Modules it imports at load time but that
the training step never uses (horovod, wandb, tqdm, torchvision, ...) are replaced by inert stubs when missing.

What runs: the official ``train_one_epoch_deps`` (deps.py) and ``train_one_epoch_bignas`` (bignas.py), epoch by
epoch, in one process on the CPU in float64, on the official ``OFAMobileNetV332`` (the CIFAR space, kernel 7 fixed,
depth {2,3,4}, expand {3,4,6}) built with the official defaults (``bn_param=(0.99, 1e-5)``: train_options.py's
``--bn_momentum`` default, set on every BN by ``set_bn_param``) and the README's flags (``--reorganize_weights``,
``--inplace_distillation``, ``--gradient_aggregation sum``, ``--dynamic_batch_size 4``, ``--smallnet_warmup``).
Everything random is aligned with OUR training, so that the test can replay it with our code alone:

- the start: our supernet (``build_supernet``, seed 0) renamed into the official keys (``our_state_dict_to_ofa``);
- the batches: uint8 images stored in the fixture (network input ``(x - 128) / 64``) and their labels;
- the archs: the official sampler (``sample_active_subnet``, after its ``random.seed``) is replaced by our
  ``sample_sandwich`` draw for the same step and slot; min and max nets are the official ``set_min_net``/``max``;
- the dropout masks: the global torch seed is set to our ``dropout_seed(seed, t, 0)`` when the loader hands out
  step t's batch; the first draw of the official step is then the full model's classifier dropout, as in ours;
- the learning rate: ``calc_and_adjust_lr`` is replaced by our cosine schedule (``Schedule.lr_at``), and the
  official ε schedule's η(tw) table entry (lrs.py ``mbv3_cifar_lrs_200``, read by ``adjust_beta_value``) by our
  schedule's learning rate at the first step of epoch tw (the first step with ε = 1);
- the optimizer: torch SGD (Nesterov 0.9) with the official ``no_decay_keys`` rule ("bn" or "bias" in the name:
  no weight decay), ``synchronize`` a no-op (horovod's explicit sync, one process).

After the start and after every step the script stores a digest of every tensor of the state dict, in OUR key
names (``ofa_state_dict_to_ours``): float64 sum, sum of squares and the cosine-weighted sum (:func:`digest`).
It also stores the official ε (``adjust_beta_value``'s value for the min net) and learning rate of every step.
"""

from __future__ import annotations

import argparse
import importlib
import importlib.machinery
import random
import sys
import tempfile
import types
from pathlib import Path

import torch
from torch import nn

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from snapshot import package_source  # noqa: E402 (scripts/, this script's folder)

from onceforall.core.ofa_compat import ofa_state_dict_to_ours, our_state_dict_to_ofa  # noqa: E402
from onceforall.core.seeds import dropout_seed  # noqa: E402
from onceforall.core.strategies import sample_sandwich  # noqa: E402
from onceforall.run.config import Config  # noqa: E402
from onceforall.run.setup import build_net, build_schedule, build_space  # noqa: E402

# The trajectory's settings; tests/test_parity.py rebuilds our run from the fixture's copy of them.
SETTINGS = {
    "deps": dict(epochs=6, steps_per_epoch=2, teacher_warmup=4, smallnet_warmup=2),
    "bignas": dict(epochs=3, steps_per_epoch=2),
}
COMMON = dict(seed=0, width_mult=0.25, resolution=16, batch_size=4, num_classes=10, lr=0.1, momentum=0.9,
              weight_decay=3e-5, label_smoothing=0.1, dropout=0.1, bn_momentum=0.99, num_subnets=4)


def network_input(images: torch.Tensor) -> torch.Tensor:
    """The float64 network input of the stored uint8 images (the test uses the same formula)."""
    return (images.to(torch.float64) - 128.0) / 64.0


def our_config(strategy: str) -> Config:
    """Our run config of the trajectory: the fixed-kernel CIFAR space, tiny, with every setting at its default
    except the run's length and the ones named in SETTINGS/COMMON."""
    s, c = SETTINGS[strategy], COMMON
    cfg = Config()
    cfg.model.space, cfg.model.width_mult, cfg.model.resolutions = "mbv3-cifar", c["width_mult"], [c["resolution"]]
    cfg.model.kernels, cfg.model.kernel_transform, cfg.model.dropout = [7], False, c["dropout"]
    cfg.optim.lr, cfg.optim.momentum, cfg.optim.weight_decay = c["lr"], c["momentum"], c["weight_decay"]
    cfg.optim.label_smoothing = c["label_smoothing"]
    cfg.train.epochs, cfg.train.seed, cfg.train.batch_size = s["epochs"], c["seed"], c["batch_size"]
    cfg.strategy.name, cfg.strategy.num_subnets = strategy, c["num_subnets"]
    if strategy == "deps":
        cfg.strategy.shrink_start = (s["teacher_warmup"] - s["smallnet_warmup"]) / s["epochs"]
        cfg.strategy.eps_ramp_epochs = float(s["smallnet_warmup"])
    return cfg


def source(path: Path, tmp: Path) -> tuple[Path, str]:
    """(directory holding the official ``deps`` package, its commit or 'unknown')."""
    return package_source(path, tmp, "deps", "the DepS repository")


class _Inert:
    """Stands for anything of a stubbed module: callable, a context manager, any attribute, any base class."""

    def __init__(self, *args, **kwargs):
        pass

    def __call__(self, *args, **kwargs):
        return _Inert()

    def __getattr__(self, name):
        return _stub_attribute(name)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False

    def __iter__(self):
        return iter(())

    def __mro_entries__(self, bases):
        return (object,)


def _stub_attribute(attr: str):
    if attr.startswith("__"):
        raise AttributeError(attr)
    return _Inert()


def _stub(name: str) -> None:
    parts = name.split(".")
    for i in range(1, len(parts) + 1):
        full = ".".join(parts[:i])
        if full not in sys.modules:
            mod = types.ModuleType(full)
            mod.__path__ = []  # a package, so that submodules import
            mod.__spec__ = importlib.machinery.ModuleSpec(full, None, is_package=True)
            mod.__getattr__ = _stub_attribute
            sys.modules[full] = mod


def import_official(name: str, own: str = "deps"):
    """Import ``name`` from the snapshot, stubbing each missing third-party module it needs."""
    for _ in range(50):
        try:
            return importlib.import_module(name)
        except ModuleNotFoundError as e:
            if e.name is None or e.name.split(".")[0] == own:
                raise
            _stub(e.name)
    raise SystemExit(f"could not import {name}")


def digest(state: dict[str, torch.Tensor], keys: list[str]) -> torch.Tensor:
    """[len(keys), 3] float64 per tensor v (flattened, n elements): sum, sum of squares, and sum of v_i · cos(i),
    which depends on where every element sits (a permutation of channels changes it). tests/test_parity.py has
    the same formula."""
    rows = []
    for k in keys:
        v = state[k].detach().to(torch.float64).flatten()
        w = torch.cos(torch.arange(v.numel(), dtype=torch.float64))
        rows.append(torch.stack([v.sum(), (v * v).sum(), (v * w).sum()]))
    return torch.stack(rows)


class Loader:
    """The official loop's train_loader: epoch e hands out the stored batches of steps e·nBatch + i, and seeds the
    global torch RNG with our dropout seed of that step just before (the official step draws nothing from it
    before the full model's classifier dropout)."""

    def __init__(self, images: torch.Tensor, labels: torch.Tensor, steps_per_epoch: int, seed: int, state: dict):
        self.images, self.labels, self.spe, self.seed, self.state = images, labels, steps_per_epoch, seed, state
        self.sampler = _Inert()

    def __len__(self) -> int:
        return self.spe

    def __iter__(self):
        for i in range(self.spe):
            t = self.state["epoch"] * self.spe + i
            self.state["t"] = t
            torch.manual_seed(dropout_seed(self.seed, t, 0))
            yield network_input(self.images[t]), self.labels[t]


def batches() -> tuple[torch.Tensor, torch.Tensor]:
    """The uint8 images and labels of every step (both trajectories start with the same ones)."""
    c, steps = COMMON, max(s["epochs"] * s["steps_per_epoch"] for s in SETTINGS.values())
    g = torch.Generator().manual_seed(c["seed"] + 1)
    r = c["resolution"]
    images = torch.randint(0, 256, (steps, c["batch_size"], 3, r, r), generator=g, dtype=torch.uint8)
    return images, torch.randint(0, c["num_classes"], (steps, c["batch_size"]), generator=g)


def run_official(strategy: str, modules: dict, images: torch.Tensor, labels: torch.Tensor) -> dict:
    s, c = SETTINGS[strategy], COMMON
    cfg = our_config(strategy)
    space = build_space(cfg).with_io(num_classes=c["num_classes"], in_channels=3)
    ours = build_net(cfg, space).double()
    keys = list(ours.state_dict())
    steps = s["epochs"] * s["steps_per_epoch"]
    schedule = build_schedule(cfg, s["steps_per_epoch"])

    net = modules["OFAMobileNetV332"](
        n_classes=c["num_classes"], bn_param=(c["bn_momentum"], 1e-5), dropout_rate=c["dropout"],
        width_mult=c["width_mult"], ks_list=[7], expand_ratio_list=[3, 4, 6], depth_list=[2, 3, 4],
    ).double()
    nn.Module.load_state_dict(net, our_state_dict_to_ofa(ours.state_dict()), strict=True)
    net.initialize_mask()
    net.zero_grad = lambda set_to_none=False: nn.Module.zero_grad(net, set_to_none=False)  # the official's torch 1.x

    state = {"epoch": 0, "t": 0, "j": 1}
    slots: dict[int, dict] = {}

    def sample_active_subnet():  # our sandwich draw of this step and slot (the official seeds random first)
        state["j"] += 1
        if state["j"] == 2:
            slots.clear()
            slots.update({j: a for j, (_, a) in enumerate(sample_sandwich(space, c["seed"], state["t"],
                                                                          c["num_subnets"]))})
        arch = slots[state["j"]]
        ofa = space.to_ofa_config(arch)
        net.set_active_subnet(ks=ofa["ks"], e=ofa["e"], d=ofa["d"])
        return {"ks": ofa["ks"], "e": ofa["e"], "d": ofa["d"]}

    net.sample_active_subnet = sample_active_subnet
    decay = [p for n, p in net.named_parameters() if not ("bn" in n or "bias" in n)]
    no_decay = [p for n, p in net.named_parameters() if "bn" in n or "bias" in n]
    opt = torch.optim.SGD([{"params": decay, "weight_decay": c["weight_decay"]},
                           {"params": no_decay, "weight_decay": 0.0}],
                          lr=c["lr"], momentum=c["momentum"], nesterov=True)
    opt.synchronize = lambda: None
    lrs, eps = [], []

    def calc_and_adjust_lr(optimizer, epoch, gamma=0.1, batch=0, nBatch=None):  # noqa: N803 (theirs)
        lr = schedule.lr_at(epoch * nBatch + batch)
        for group in optimizer.param_groups:
            group["lr"] = lr
        lrs.append(lr)
        state["j"] = 1
        return lr

    run_config = types.SimpleNamespace(
        train_loader=Loader(images, labels, s["steps_per_epoch"], c["seed"], state),
        calc_and_adjust_lr=calc_and_adjust_lr, teacher_warmup=s.get("teacher_warmup", 0), reorganize_flag=False,
        warmup_adjust_learning_rate=None)
    criterion = nn.CrossEntropyLoss(label_smoothing=c["label_smoothing"])  # the official run manager's
    run_manager = types.SimpleNamespace(
        network=net, net=net, run_config=run_config, optimizer=opt, train_criterion=criterion, is_root=True,
        get_metric_dict=lambda: {}, update_metric=lambda *a: None, get_metric_vals=lambda *a, **k: {})
    args = types.SimpleNamespace(
        network_family="mbv3_32", n_epochs=200, dataset="cifar", smallnet_warmup=s.get("smallnet_warmup", 0),
        reorganize_weights=True, gradient_aggregation="sum", opt_type="sgd", lr_gamma=0.0,
        dynamic_batch_size=c["num_subnets"], max_multiplier=1.0, min_multiplier=1.0, other_multiplier=1.0,
        temperature=1.0, inplace_distillation=True, sampling="random", wandb=False, bignas_recipe="original",
        lr_schedule_type="cosine")

    if strategy == "deps":
        tw, spe = s["teacher_warmup"], s["steps_per_epoch"]
        modules["lrs"].mbv3_cifar_lrs_200 = {tw: schedule.lr_at(tw * spe)}  # η(tw) from our schedule
        deps_mod = modules["deps"]
        official_beta = deps_mod.adjust_beta_value

        def adjust_beta_value(args, epoch, multiplier, lr, teacher_warmup, nBatch, batch):  # noqa: N803
            beta = official_beta(args, epoch, multiplier, lr, teacher_warmup, nBatch, batch)
            if state.get("beta_step") != state["t"]:  # the min net's call, the step's first
                state["beta_step"] = state["t"]
                eps.append(float(beta))
            return beta

        deps_mod.adjust_beta_value = adjust_beta_value
        train_epoch = deps_mod.train_one_epoch_deps
    else:
        train_epoch = modules["bignas"].train_one_epoch_bignas

    digests = [digest(ofa_state_dict_to_ours(net.state_dict(), space), keys)]
    assert torch.equal(digests[0], digest(ours.state_dict(), keys)), "the official net does not start from ours"
    real_cuda = torch.Tensor.cuda
    torch.Tensor.cuda = lambda self, *a, **k: self  # one CPU process
    official_step = opt.step

    def step_and_digest(*a, **k):
        out = official_step(*a, **k)
        digests.append(digest(ofa_state_dict_to_ours(net.state_dict(), space), keys))
        return out

    opt.step = step_and_digest
    try:
        for epoch in range(s["epochs"]):
            state["epoch"] = epoch
            if strategy == "deps":
                eps_before = len(eps)
                train_epoch(run_manager, args, epoch)
                if epoch < tw - args.smallnet_warmup:  # teacher mode: ε is 0, the official never computes it
                    eps += [0.0] * (spe - (len(eps) - eps_before))
            else:
                train_epoch(run_manager, args, epoch)
    finally:
        torch.Tensor.cuda = real_cuda
    assert len(digests) == steps + 1, (len(digests), steps)
    return {"settings": {**c, **s}, "keys": keys, "digests": torch.stack(digests),
            "lr": torch.tensor(lrs, dtype=torch.float64),
            "eps": torch.tensor(eps, dtype=torch.float64) if eps else None}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("deps_snapshot", type=Path, help="the DepS repository: a checkout or a bare git directory")
    parser.add_argument("--out", type=Path, default=ROOT / "tests" / "fixtures" / "deps_reference.pt")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    random.seed(0)
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        src, commit = source(args.deps_snapshot.resolve(), tmp)
        sys.path.insert(0, str(src))
        networks = import_official("deps.imagenet_classification.elastic_nn.networks.ofa_mbv3_32")
        modules = {
            "OFAMobileNetV332": networks.OFAMobileNetV332,
            "lrs": import_official("deps.imagenet_classification.elastic_nn.training.lrs"),
            "deps": import_official("deps.imagenet_classification.elastic_nn.training.deps"),
            "bignas": import_official("deps.imagenet_classification.elastic_nn.training.bignas"),
        }
        images, labels = batches()
        fixture = {"format": 1, "deps_commit": commit, "torch": str(torch.__version__), "images": images,
                   "labels": labels}
        for strategy in SETTINGS:
            fixture[strategy] = run_official(strategy, modules, images, labels)
            d = fixture[strategy]
            print(f"{strategy}: {len(d['digests']) - 1} steps, {len(d['keys'])} tensors; lr {d['lr'].tolist()}; "
                  f"eps {None if d['eps'] is None else [round(e, 4) for e in d['eps'].tolist()]}")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    torch.save(fixture, args.out)
    print(f"wrote {args.out} ({args.out.stat().st_size / 1024:.0f} KiB), DepS commit {commit}")


if __name__ == "__main__":
    main()
