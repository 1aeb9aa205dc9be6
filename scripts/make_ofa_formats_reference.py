"""Write the fixtures of OFA's search files for tests/test_ofa_compat.py, with OFA's OWN classes:

    .venv/bin/python scripts/make_ofa_formats_reference.py OFA_SNAPSHOT

OFA_SNAPSHOT is as for ``scripts/make_ofa_reference.py`` (a checkout or a bare git directory of
https://github.com/mit-han-lab/once-for-all; nothing of OFA's is copied here, its modules are imported from it).

- ``tests/fixtures/ofa_acc_predictor.pth``: OFA's ``AccuracyPredictor`` on its ``MobileNetArchEncoder`` (image sizes
  128..224 step 4, ks 3/5/7, expand 3/4/6, depth 2/3/4: the published predictor's encoder) with random weights from
  a fixed seed and a small hidden size (16, 2 layers) to keep the file small: its ``state_dict()``, as OFA saves it.
- ``tests/fixtures/ofa_lut_<space>.yaml``: a latency lookup table in OFA's yaml format, made up: every key OFA's
  ``MBv3LatencyTable`` / ``ProxylessNASLatencyTable`` queries for the uniform subnets (each kernel x expand at the
  largest depth, which covers every layer) at 160 and 224 px, each with ``mean`` = 1e-7 x the product of the
  numbers in its key (so that larger layers take longer) + 0.001 ms.
- ``tests/fixtures/ofa_formats.json``: OFA's answers on a few archs (its sampler's and the ends): the predictor's
  ``predict_acc``, the tables' ``predict_network_latency_given_config`` on each subnet's ``config`` and that
  ``config`` itself (OFA's description of the static subnet), with the OFA commit.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import random
import re
import sys
import tempfile
from pathlib import Path

import torch
import yaml

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "scripts"))

from make_ofa_reference import COMMON_ARGS, OFA_ARGS, ofa_source, stub_missing_modules  # noqa: E402

from onceforall.core.ofa_compat import ofa_net_id_space, to_ofa_config  # noqa: E402

SEED = 0
LUT_SIZES = (160, 224)
NETS = {"mbv3": ("ofa_mbv3_d234_e346_k357_w1.0", "OFAMobileNetV3", "MBv3LatencyTable"),
        "proxyless": ("ofa_proxyless_d234_e346_k357_w1.3", "OFAProxylessNASNets", "ProxylessNASLatencyTable")}


def made_up_ms(key: str) -> float:
    prod = 1
    for n in re.findall(r"\d+", key):
        prod *= int(n)
    return round(1e-7 * prod + 0.001, 6)


class RecordingLUT(dict):
    """OFA's ``self.lut``: answers every key with a made-up mean and remembers it."""

    def __missing__(self, key: str) -> dict:
        self[key] = {"mean": made_up_ms(key), "count": 1}
        return self[key]


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("ofa_snapshot", type=Path)
    parser.add_argument("--out", type=Path, default=ROOT / "tests" / "fixtures")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        src, commit = ofa_source(args.ofa_snapshot.resolve(), tmp)
        stub_missing_modules(tmp)
        try:
            import tqdm  # noqa: F401  (OFA's accuracy-predictor dataset imports it; never used here)
        except ImportError:
            (tmp / "stubs").mkdir(exist_ok=True)
            (tmp / "stubs" / "tqdm.py").write_text("class tqdm:\n    pass\n")
        sys.path.insert(0, str(src))
        from ofa.imagenet_classification.elastic_nn import networks as ofa_networks
        from ofa.nas import efficiency_predictor as ofa_eff
        from ofa.nas.accuracy_predictor import AccuracyPredictor, MobileNetArchEncoder

        out: dict = {"format": 1, "ofa_commit": commit, "seed": SEED, "lut_sizes": list(LUT_SIZES), "luts": {}}
        for name, (net_id, cls_name, lut_cls) in NETS.items():
            space = ofa_net_id_space(net_id)
            net = getattr(ofa_networks, cls_name)(n_classes=1000, **OFA_ARGS[net_id], **COMMON_ARGS)
            lut = object.__new__(getattr(ofa_eff, lut_cls))  # not __init__: it downloads; we give it its table
            lut.lut = RecordingLUT()

            def latency(cfg: dict, r: int, net=net, lut=lut) -> float:
                net.set_active_subnet(ks=cfg["ks"], e=cfg["e"], d=cfg["d"])
                return lut.predict_network_latency_given_config(net.get_active_subnet(preserve_weight=False).config,
                                                                r)

            for r in LUT_SIZES:
                for k in (3, 5, 7):
                    for e in (3, 4, 6):
                        latency({"ks": k, "e": e, "d": 4}, r)
            configs = [to_ofa_config(space, space.min()), to_ofa_config(space, space.max())]
            for i in range(3):
                random.seed(SEED + i)  # OFA's sampler draws from the global RNG
                configs.append(net.sample_active_subnet())
            cases = []
            for i, cfg in enumerate(configs):
                r = LUT_SIZES[i % len(LUT_SIZES)]
                cfg = {"ks": list(cfg["ks"]), "e": list(cfg["e"]), "d": list(cfg["d"])}
                ms = latency(cfg, r)  # sets cfg active
                net_config = net.get_active_subnet(preserve_weight=False).config
                cases.append({**cfg, "r": [r], "latency_ms": ms, "net_config": net_config})
            text = yaml.safe_dump({k: dict(v) for k, v in lut.lut.items()}, sort_keys=True)
            path = args.out / f"ofa_lut_{name}.yaml"
            path.write_text(text)
            out["luts"][name] = {"net_id": net_id, "file": path.name, "cases": cases,
                                 "sha256": hashlib.sha256(text.encode()).hexdigest()}
            print(f"{path}: {len(lut.lut)} keys; {len(cases)} cases")

        sizes = list(range(128, 225, 4))
        encoder = MobileNetArchEncoder(image_size_list=sizes, ks_list=[3, 5, 7], expand_list=[3, 4, 6],
                                       depth_list=[2, 3, 4], n_stage=5)
        torch.manual_seed(SEED)
        predictor = AccuracyPredictor(encoder, hidden_size=16, n_layers=2, device="cpu")
        with torch.no_grad():
            predictor.base_acc.fill_(0.78)
        torch.save(predictor.state_dict(), args.out / "ofa_acc_predictor.pth")
        cases = [{k: c[k] for k in ("ks", "e", "d")} | {"image_size": c["r"][0]} for c in out["luts"]["mbv3"]["cases"]]
        with torch.no_grad():
            preds = predictor.predict_acc(cases).reshape(-1).tolist()
        out["acc_predictor"] = {"file": "ofa_acc_predictor.pth", "n_dim": encoder.n_dim, "hidden_size": 16,
                                "n_layers": 2, "image_size_list": sizes,
                                "cases": [c | {"acc": p} for c, p in zip(cases, preds)]}
        (args.out / "ofa_formats.json").write_text(json.dumps(out, indent=1) + "\n")
        print(f"wrote {args.out}/ofa_formats.json, ofa_acc_predictor.pth (n_dim {encoder.n_dim}), OFA commit {commit}")


if __name__ == "__main__":
    main()
