"""Write tests/fixtures/ofa_reference.pt: logits computed by OFA's OWN networks, for tests/test_ofa_compat.py.

    .venv/bin/python scripts/make_ofa_reference.py OFA_SNAPSHOT [--out tests/fixtures/ofa_reference.pt]

OFA_SNAPSHOT is a copy of https://github.com/mit-han-lab/once-for-all: a directory holding its ``ofa/`` package, or
a bare git directory of the repository (its HEAD is extracted to a temporary directory and its commit recorded).
CI never runs this script; the test needs only the fixture, not OFA's code or network access. Nothing of OFA's is
copied into this repository: its modules are imported from the snapshot. torchvision and gdown, which OFA's
package imports at load time but its networks never use, are replaced by empty stub modules when not installed.

For each published OFA net id the script builds OUR supernet (``num_classes`` 10, a fixed seed, randomized BN
statistics/affine and non-identity kernel-transform matrices: ``tests.helpers.randomize_bn_and_transforms``),
renames its state dict with ``our_state_dict_to_ofa`` and loads it with ``strict=True`` into OFA's network class,
built with the constructor arguments of OFA's ``model_zoo.ofa_net`` for that id (checked against it) but 10
classes. OFA's ``set_active_subnet`` then selects each arch (the min, the max, two drawn by OFA's own
``sample_active_subnet``, two drawn by our ``Space.sample``), and OFA's forward in eval mode gives the logits of a
fixed input of 2 images (checked against OFA's own extracted subnet, ``get_active_subnet``); the script prints
the max relative error of our supernet against those logits. The fixture keeps the inputs, the OFA configs, the
logits, the seed, the net ids and OFA's state-dict key names and shapes (no weights: the test rebuilds them from
the seed), well under 1 MB. Regenerate it when ``build_supernet``'s initialisation or the test helper changes.

Inputs are uint8 images (the network input is ``(x - 128) / 64``, exact in float32) at 128 and 160 px only, to
keep the file small; OFA's forward takes the input as it comes, so every arch is set at the resolution of its input
(the max arch at 160 px).
"""

from __future__ import annotations

import argparse
import hashlib
import random
import sys
import tempfile
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from snapshot import package_source  # noqa: E402 (scripts/, this script's folder)

from onceforall import Arch, build_supernet  # noqa: E402
from onceforall.core.ofa_compat import (  # noqa: E402
    OFA_NET_IDS,
    from_ofa_config,
    ofa_net_id_space,
    our_state_dict_to_ofa,
    to_ofa_config,
)
from tests.helpers import randomize_bn_and_transforms  # noqa: E402

SEED = 0
NUM_CLASSES = 10
INPUT_SIZES = (128, 160)
OFA_CLASS = {"mbv3": "OFAMobileNetV3", "proxyless": "OFAProxylessNASNets"}
# model_zoo.ofa_net's arguments for every published id (bn_param: the class defaults, spelled out).
OFA_ARGS = {
    "ofa_mbv3_d234_e346_k357_w1.0": dict(width_mult=1.0, bn_param=(0.1, 1e-5)),
    "ofa_mbv3_d234_e346_k357_w1.2": dict(width_mult=1.2, bn_param=(0.1, 1e-5)),
    "ofa_proxyless_d234_e346_k357_w1.3": dict(width_mult=1.3, bn_param=(0.1, 1e-3)),
}
COMMON_ARGS = dict(dropout_rate=0, ks_list=[3, 5, 7], expand_ratio_list=[3, 4, 6], depth_list=[2, 3, 4])


def network_input(images: torch.Tensor) -> torch.Tensor:
    """The float input of the uint8 images stored in the fixture (the test uses the same formula)."""
    return (images.float() - 128.0) / 64.0


def ofa_source(path: Path, tmp: Path) -> tuple[Path, str]:
    """(directory holding OFA's ``ofa`` package, its commit or 'unknown')."""
    return package_source(path, tmp, "ofa", "OFA's repository")


def stub_missing_modules(tmp: Path) -> None:
    """Empty torchvision/gdown stand-ins: OFA's package imports them at load time (its dataloader's transforms, its
    model zoo's downloads); the networks never call them."""
    stubs = tmp / "stubs"
    try:
        import torchvision  # noqa: F401
    except ImportError:
        (stubs / "torchvision" / "transforms").mkdir(parents=True)
        (stubs / "torchvision" / "__init__.py").write_text("")
        (stubs / "torchvision" / "transforms" / "__init__.py").write_text(
            "class RandomResizedCrop:\n    pass\n\n\nclass RandomCrop:\n    pass\n")
        (stubs / "torchvision" / "transforms" / "functional.py").write_text("")
    try:
        import gdown  # noqa: F401
    except ImportError:
        stubs.mkdir(exist_ok=True)
        (stubs / "gdown.py").write_text("")
    sys.path.insert(0, str(stubs))


def check_against_model_zoo(net: torch.nn.Module, net_id: str, ofa_net) -> None:
    """Our spelled-out constructor arguments build what OFA's model_zoo.ofa_net builds for ``net_id`` (but for
    the number of classes)."""
    zoo = ofa_net(net_id, pretrained=False)
    ours = {k: tuple(v.shape) for k, v in net.state_dict().items() if not k.startswith("classifier.")}
    theirs = {k: tuple(v.shape) for k, v in zoo.state_dict().items() if not k.startswith("classifier.")}
    assert ours == theirs, f"{net_id}: the network differs from model_zoo.ofa_net's"
    assert net.get_bn_param() == zoo.get_bn_param(), f"{net_id}: BN parameters differ from model_zoo.ofa_net's"
    assert net.classifier.dropout_rate == zoo.classifier.dropout_rate


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("ofa_snapshot", type=Path, help="OFA's repository: a checkout or a bare git directory")
    parser.add_argument("--out", type=Path, default=ROOT / "tests" / "fixtures" / "ofa_reference.pt")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        src, commit = ofa_source(args.ofa_snapshot.resolve(), tmp)
        stub_missing_modules(tmp)
        sys.path.insert(0, str(src))
        from ofa.imagenet_classification.elastic_nn import networks as ofa_networks
        from ofa.model_zoo import ofa_net

        g = torch.Generator().manual_seed(SEED)
        inputs = {r: torch.randint(0, 256, (2, 3, r, r), generator=g, dtype=torch.uint8) for r in INPUT_SIZES}
        nets = {}
        for net_id in OFA_NET_IDS:
            space = ofa_net_id_space(net_id, num_classes=NUM_CLASSES)
            ours = build_supernet(space, seed=SEED, dropout=0.0).eval()
            randomize_bn_and_transforms(ours, seed=SEED)
            cls = getattr(ofa_networks, OFA_CLASS[space.name])
            net = cls(n_classes=NUM_CLASSES, **OFA_ARGS[net_id], **COMMON_ARGS)
            check_against_model_zoo(net, net_id, ofa_net)
            torch.nn.Module.load_state_dict(net, our_state_dict_to_ofa(ours.state_dict()), strict=True)
            net.eval()

            sizes = [r for r in INPUT_SIZES if r in space.resolutions]
            rng = random.Random(SEED)
            top = space.max()
            configs = [to_ofa_config(space, space.min()),
                       to_ofa_config(space, Arch(max(sizes), top.kernels, top.expands))]
            for i in range(2):
                random.seed(SEED + i)  # OFA's sampler draws from the global RNG
                configs.append({**net.sample_active_subnet(), "r": [rng.choice(sizes)]})
            for _ in range(2):
                arch = space.sample(rng)
                configs.append(to_ofa_config(space, Arch(rng.choice(sizes), arch.kernels, arch.expands)))

            logits, worst = [], 0.0
            with torch.no_grad():
                for cfg in configs:
                    net.set_active_subnet(ks=cfg["ks"], e=cfg["e"], d=cfg["d"])
                    x = network_input(inputs[cfg["r"][0]])
                    ref = net(x)
                    sub = net.get_active_subnet(preserve_weight=True).eval()
                    assert torch.allclose(sub(x), ref, rtol=0, atol=1e-5 * float(ref.abs().max()))
                    arch = from_ofa_config(space, cfg)
                    for mine in (ours(x, arch), ours.extract(arch).eval()(x)):
                        worst = max(worst, float((mine - ref).abs().max() / ref.abs().max()))
                    logits.append(ref)
            keys = list(net.state_dict())
            shapes = [list(v.shape) for v in net.state_dict().values()]
            nets[net_id] = {
                "ofa_class": OFA_CLASS[space.name], "ofa_args": {**OFA_ARGS[net_id], **COMMON_ARGS,
                                                                 "n_classes": NUM_CLASSES},
                "configs": configs, "logits": torch.stack(logits), "ofa_keys": keys, "ofa_shapes": shapes,
                "ofa_keys_sha256": hashlib.sha256("\n".join(keys).encode()).hexdigest(),
            }
            print(f"{net_id}: {len(configs)} archs, {len(keys)} OFA keys, max relative error of ours {worst:.2e}")
        fixture = {"format": 1, "seed": SEED, "num_classes": NUM_CLASSES, "ofa_commit": commit,
                   "torch": str(torch.__version__), "inputs": inputs, "nets": nets}
        args.out.parent.mkdir(parents=True, exist_ok=True)
        torch.save(fixture, args.out)
        print(f"wrote {args.out} ({args.out.stat().st_size / 1024:.0f} KiB), OFA commit {commit}")


if __name__ == "__main__":
    main()
