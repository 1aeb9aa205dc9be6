"""The ``onceforall`` command (also ``ofa`` and ``python -m onceforall``).

Every subcommand reports bad input as one line on stderr and exits with status 2; set
``ONCEFORALL_DEBUG=1`` (or pass ``--debug``) to see the traceback instead.
"""

from __future__ import annotations

import argparse
import os
import random
import sys
from collections.abc import Callable, Sequence

from . import __version__
from .spaces import get_space, list_spaces

__all__ = ["main"]

COMMANDS: dict[str, Callable[[argparse.Namespace], int]] = {}


class CLIError(Exception):
    """A user-facing error: printed as one line, exit status 2."""


def _resolutions(text: str) -> tuple[int, ...]:
    try:
        return tuple(int(v) for v in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"resolutions: '{text}' is not valid; expected integers like 32 or 128,160"
        ) from None


def _add_space_args(p: argparse.ArgumentParser, default: str = "mbv3-cifar") -> None:
    p.add_argument("--space", default=default, help=f"space name ({', '.join(list_spaces())}); default {default}")
    p.add_argument("--width-mult", type=float, default=1.0, help="width multiplier (default 1.0)")
    p.add_argument("--resolutions", type=_resolutions, default=None, help="comma-separated input resolutions")
    p.add_argument("--num-classes", type=int, default=1000, help="classifier outputs (default 1000)")


def cmd_spaces(args: argparse.Namespace) -> int:
    """List the registered spaces, or describe one."""
    if args.space is None:
        for name in list_spaces():
            lo, hi = get_space(name).macs_range()
            print(f"{name:16s} MACs {lo / 1e6:8.2f}M .. {hi / 1e6:8.2f}M at width 1.0, 1000 classes")
        return 0
    space = get_space(args.space, args.width_mult, args.resolutions, num_classes=args.num_classes)
    print(space.describe())
    rng = random.Random(args.seed)
    for _ in range(args.samples):
        a = space.sample(rng)
        print(f"  {space.macs(a) / 1e6:8.2f}M MACs {space.params(a) / 1e6:6.2f}M params  {a}")
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    """Build the default space and supernet, print its size, MACs range and a few archs."""
    import torch

    from .supernet import build_supernet

    torch.set_num_threads(max(1, min(args.threads, os.cpu_count() or 1)))
    ofa_space = get_space("mbv3", 1.0, (224,))
    print("OFA MobileNetV3 space at 224 px, 1000 classes (OFA's published range: 151M .. 566M MACs):")
    print(f"  k7 e3 d2: {ofa_space.macs(ofa_space.uniform(7, 3, 2)) / 1e6:.2f}M MACs   "
          f"k7 e6 d4 (full model): {ofa_space.macs(ofa_space.max()) / 1e6:.2f}M MACs")
    space = get_space("mbv3-cifar", 0.5, (32,), num_classes=10, in_channels=1)
    print()
    print(space.describe())
    net = build_supernet(space, seed=0).eval()
    rng = random.Random(0)
    x = torch.randn(2, 1, 28, 28)
    print(f"  supernet parameters: {sum(p.numel() for p in net.parameters()) / 1e6:.2f}M")
    for a in [space.min(), *(space.sample(rng) for _ in range(3)), space.max()]:
        sub = net.extract(a).eval()
        with torch.no_grad():
            diff = (sub(x) - net(x, a)).abs().max().item()
        print(f"  {space.macs(a) / 1e6:7.2f}M MACs {space.params(a) / 1e6:5.2f}M params  "
              f"extract max|diff| {diff:.1e}  {a}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="onceforall",
        description="Once-for-all supernets with DεpS: train, evaluate, search and export subnets.",
    )
    parser.add_argument("--version", action="version", version=f"onceforall {__version__}")
    parser.add_argument("--debug", action="store_true", help="show tracebacks on errors")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    p = sub.add_parser("spaces", help="list spaces, or describe one with --space")
    p.add_argument("--space", default=None, help=f"one of: {', '.join(list_spaces())}")
    p.add_argument("--width-mult", type=float, default=1.0)
    p.add_argument("--resolutions", type=_resolutions, default=None)
    p.add_argument("--num-classes", type=int, default=1000)
    p.add_argument("--samples", type=int, default=5, help="random archs to print (default 5)")
    p.add_argument("--seed", type=int, default=0)
    p.set_defaults(func=cmd_spaces)

    p = sub.add_parser("demo", help="build the default supernet and show what it can run")
    p.add_argument("--threads", type=int, default=2)
    p.set_defaults(func=cmd_demo)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return 2
    debug = args.debug or os.environ.get("ONCEFORALL_DEBUG") == "1"
    try:
        return int(args.func(args) or 0)
    except (CLIError, ValueError, FileNotFoundError, KeyError) as e:
        if debug:
            raise
        msg = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        print(f"onceforall {args.command}: error: {msg}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("onceforall: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
