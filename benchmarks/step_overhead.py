"""Supernet step overhead: one SGD training step of ``net(x, arch)`` vs the same step on the extracted
static subnet, for min, max and random archs. Elastic slicing should cost next to nothing next to the
convolutions (target: ratio <= 1.05 for every arch).

    python benchmarks/step_overhead.py                      # mbv3-cifar w0.5, 32 px, batch 128, 2 threads
    python benchmarks/step_overhead.py --memory-format contiguous --random 5

Prints per-arch median step times, the median of paired ratios (each round times one step of each model,
alternating which goes first, so a shared machine's drifts hit both), images/s, and the peak resident
memory of a fresh process running a few steps of each.
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F

import onceforall as ofa

sys.path.insert(0, str(Path(__file__).parent))
from common import peak_rss_mib, run_child  # noqa: E402


def make_models(args, arch_text: str | None = None):
    space = ofa.get_space(args.space, args.width_mult, (args.resolution,), num_classes=10)
    net = ofa.build_supernet(space, seed=0, kernel_transform=not args.no_kernel_transform)
    fmt = torch.channels_last if args.memory_format == "channels_last" else torch.contiguous_format
    net = net.to(memory_format=fmt).train()
    return space, net, fmt


def sgd(params):
    return torch.optim.SGD(params, lr=0.01, momentum=0.9, nesterov=True, weight_decay=3e-5)


def train_step(forward, opt, x, y):
    opt.zero_grad(set_to_none=True)
    F.cross_entropy(forward(x), y).backward()
    opt.step()


def time_steps(forward, opt, x, y, steps: int) -> list[float]:
    times = []
    for _ in range(steps):
        t0 = time.perf_counter()
        train_step(forward, opt, x, y)
        times.append(time.perf_counter() - t0)
    return times


def peak_memory_child(args) -> None:
    """Run in a fresh process: report peak RSS (MiB) of a few steps of one model."""
    torch.set_num_threads(args.threads)
    space, net, fmt = make_models(args)
    arch = space.parse(args.child_arch)
    x = torch.randn(args.batch, 3, args.resolution, args.resolution).contiguous(memory_format=fmt)
    y = torch.randint(0, 10, (args.batch,))
    if args.child == "subnet":
        sub = net.extract(arch).to(memory_format=fmt).train()
        del net
        forward, opt = sub, sgd(sub.parameters())
    else:
        forward, opt = (lambda t: net(t, arch)), sgd(net.parameters())
    for _ in range(3):
        train_step(forward, opt, x, y)
    print(json.dumps({"peak_mib": peak_rss_mib()}))


def peak_memory(args, kind: str, arch) -> float:
    cmd = ["--child", kind, "--child-arch", str(arch), "--space", args.space,
           "--width-mult", str(args.width_mult), "--resolution", str(args.resolution), "--batch", str(args.batch),
           "--threads", str(args.threads), "--memory-format", args.memory_format]
    if args.no_kernel_transform:
        cmd.append("--no-kernel-transform")
    return run_child(__file__, cmd)["peak_mib"]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--space", default="mbv3-cifar")
    p.add_argument("--width-mult", type=float, default=0.5)
    p.add_argument("--resolution", type=int, default=32)
    p.add_argument("--batch", type=int, default=128)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--random", type=int, default=3, help="random archs besides min and max")
    p.add_argument("--repeats", type=int, default=20, help="paired rounds per arch (one step of each model)")
    p.add_argument("--warmup", type=int, default=4, help="untimed steps per model before timing")
    p.add_argument("--memory-format", choices=["channels_last", "contiguous"], default="channels_last")
    p.add_argument("--no-kernel-transform", action="store_true", help="center crop only (no 7->5->3 matrices)")
    p.add_argument("--no-memory", action="store_true", help="skip the peak-memory subprocesses")
    p.add_argument("--child", choices=["supernet", "subnet"], help=argparse.SUPPRESS)
    p.add_argument("--child-arch", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.child:
        return peak_memory_child(args)

    torch.set_num_threads(args.threads)
    space, net, fmt = make_models(args)
    rng = random.Random(0)
    archs = [(f"random{i}", space.sample(rng)) for i in range(args.random)]
    archs += [("min", space.min()), ("max", space.max())]
    x = torch.randn(args.batch, 3, args.resolution, args.resolution).contiguous(memory_format=fmt)
    y = torch.randint(0, 10, (args.batch,))
    print(f"# {args.space} width {args.width_mult:g}, {args.resolution} px, batch {args.batch}, "
          f"{args.threads} threads, "
          f"{args.memory_format}, torch {torch.__version__}")
    print(f"{'arch':8s} {'MACs':>8s} {'super ms':>9s} {'sub ms':>8s} {'ratio':>6s} {'ratio IQR':>11s} "
          f"{'super img/s':>11s} "
          f"{'sub img/s':>9s} {'super MiB':>9s} {'sub MiB':>8s}")
    ratios = []
    for label, arch in archs:
        sub = net.extract(arch).to(memory_format=fmt).train()
        opt_net, opt_sub = sgd(net.parameters()), sgd(sub.parameters())
        forward_net = lambda t, a=arch: net(t, a)  # noqa: E731
        for _ in range(args.warmup):  # warm-up: allocator, oneDNN primitive caches
            train_step(forward_net, opt_net, x, y)
            train_step(sub, opt_sub, x, y)
        # Paired rounds: one step of each, order alternating, ratio per round. Slow drifts of a shared
        # machine hit both sides of a pair, so the median of paired ratios is far steadier than a
        # ratio of medians.
        t_net, t_sub, pair = [], [], []
        for r in range(args.repeats):
            first_net = r % 2 == 0
            a = time_steps(forward_net if first_net else sub, opt_net if first_net else opt_sub, x, y, 1)[0]
            b = time_steps(sub if first_net else forward_net, opt_sub if first_net else opt_net, x, y, 1)[0]
            tn, ts = (a, b) if first_net else (b, a)
            t_net.append(tn)
            t_sub.append(ts)
            pair.append(tn / ts)
        m_net, m_sub = statistics.median(t_net), statistics.median(t_sub)
        ratio = statistics.median(pair)
        q1, _, q3 = statistics.quantiles(pair, n=4)
        ratios.append(ratio)
        mem = ("", "") if args.no_memory else (f"{peak_memory(args, 'supernet', arch):.0f}",
                                                 f"{peak_memory(args, 'subnet', arch):.0f}")
        print(f"{label:8s} {space.macs(arch) / 1e6:7.2f}M {m_net * 1e3:9.1f} {m_sub * 1e3:8.1f} {ratio:6.3f} "
              f"{q1:5.3f}-{q3:5.3f} "
              f"{args.batch / m_net:11.1f} {args.batch / m_sub:9.1f} {mem[0]:>9s} {mem[1]:>8s}")
    print(f"max ratio {max(ratios):.3f} (target <= 1.05); median ratio {statistics.median(ratios):.3f}")


if __name__ == "__main__":
    main()
