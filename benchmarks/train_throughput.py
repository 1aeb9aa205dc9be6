"""Training throughput on a preset (default: the quick demo preset): images/s of the DεpS shrinking step
(full model + min + 2 random subnets) vs the full-only step (FM-Warmup, or plain training), the share
of wall time spent waiting for data (target <= 5 %), and peak memory.

    python benchmarks/train_throughput.py
    python benchmarks/train_throughput.py --config fashion-mnist --steps 30

Steps of the two kinds alternate in one process (a shared machine's drifts hit both); data time is the
time to produce each batch exactly as the trainer does (in-memory tensors, batched augmentation, on the
training thread). Peak memory comes from a fresh process per kind.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import statistics
import sys
import time
from pathlib import Path

import torch

from onceforall.core.step import train_step
from onceforall.core.strategies import StrategyConfig
from onceforall.run.config import load_config
from onceforall.run.setup import build_run, memory_format

sys.path.insert(0, str(Path(__file__).parent))
from common import peak_rss_mib, preset_parser, run_child  # noqa: E402


def setup(args):
    cfg = load_config(args.config, args.overrides)
    torch.set_num_threads(args.threads)
    # the run's own assembly, with the DεpS strategy whatever the preset's (both step kinds come from its plans)
    parts = build_run(dataclasses.replace(cfg, strategy=StrategyConfig(name="deps")))
    deps = parts.strategy
    plans = {"full-only": lambda t: deps.plan(0), "deps-shrinking": lambda t: deps.plan(deps.shrink_step + 50 + t)}
    return cfg, parts.data, parts.net, parts.optimizer, plans, memory_format(cfg)


def one_step(cfg, data, net, opt, plan, fmt, t):
    spe = data.train.steps_per_epoch
    t0 = time.perf_counter()
    x, y = data.train.batch(t // spe, t % spe)
    x = x.contiguous(memory_format=fmt)
    t1 = time.perf_counter()
    train_step(net, plan, x, y, opt)
    return t1 - t0, time.perf_counter() - t0, x.shape[0]


def child(args) -> None:
    cfg, data, net, opt, plans, fmt = setup(args)
    for t in range(3):
        one_step(cfg, data, net, opt, plans[args.child](t), fmt, t)
    print(json.dumps({"peak_mib": peak_rss_mib()}))


def main() -> None:
    p = preset_parser(__doc__, 20, "timed steps of each kind", 2)
    p.add_argument("--child", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.child:
        return child(args)
    cfg, data, net, opt, plans, fmt = setup(args)
    print(f"# {args.config} {' '.join(args.overrides)}: {cfg.model.space} w{cfg.model.width_mult:g} "
          f"res {net.space.resolutions} batch {cfg.train.batch_size}, {args.threads} threads, "
          f"torch {torch.__version__}")
    stats = {k: {"data": [], "total": [], "images": 0} for k in plans}
    for t in range(2):  # warm-up
        for name in plans:
            one_step(cfg, data, net, opt, plans[name](t), fmt, t)
    for t in range(args.steps):
        order = list(plans) if t % 2 == 0 else list(reversed(plans))
        for name in order:
            d, total, n = one_step(cfg, data, net, opt, plans[name](t), fmt, t + 2)
            stats[name]["data"].append(d)
            stats[name]["total"].append(total)
            stats[name]["images"] = n
    rows = {}
    for name, s in stats.items():
        med = statistics.median(s["total"])
        child_args = ["--config", args.config, "--child", name, *args.overrides]
        rows[name] = {"img_s": s["images"] / med, "wait": sum(s["data"]) / sum(s["total"]),
                      "mem": run_child(__file__, child_args)["peak_mib"]}
    print(f"{'step':16s} {'img/s':>8s} {'data wait':>10s} {'peak MiB':>9s}")
    for name, r in rows.items():
        print(f"{name:16s} {r['img_s']:8.1f} {100 * r['wait']:9.2f}% {r['mem']:9.0f}")
    full, deps = rows["full-only"], rows["deps-shrinking"]
    print(f"deps-shrinking / full-only: img/s {deps['img_s'] / full['img_s']:.3f}, "
          f"peak memory {deps['mem'] / full['mem']:.3f}; "
          f"max data-wait share {100 * max(r['wait'] for r in rows.values()):.2f}% (target <= 5 %)")


if __name__ == "__main__":
    main()
