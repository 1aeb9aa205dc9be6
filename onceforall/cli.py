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


def cmd_presets(args: argparse.Namespace) -> int:
    """List the shipped presets with their space, strategy and length."""
    from .config import list_presets, load_config

    for name in list_presets():
        c = load_config(name)
        print(f"{name:24s} {c.data.dataset:14s} {c.model.space:12s} w{c.model.width_mult:<5g} "
              f"{c.strategy.name:10s} {c.train.epochs:4d} epochs, batch {c.train.batch_size}")
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    """The main job on the embedded default: train the quick preset with DεpS on Fashion-MNIST."""
    from pathlib import Path

    from .config import load_config
    from .train import default_run_name, train

    ofa_space = get_space("mbv3", 1.0, (224,))
    print("OFA MobileNetV3 space at 224 px, 1000 classes (OFA's published range: 151M .. 566M MACs):")
    print(f"  k7 e3 d2: {ofa_space.macs(ofa_space.uniform(7, 3, 2)) / 1e6:.2f}M MACs   "
          f"k7 e6 d4 (full model): {ofa_space.macs(ofa_space.max()) / 1e6:.2f}M MACs")
    cfg = load_config(args.config, args.overrides + [f"train.out_dir={args.out_dir}"])
    run_dir = Path(cfg.train.out_dir) / (args.name or default_run_name(cfg))
    print(f"\nTraining preset {args.config} ({cfg.strategy.name}, {cfg.model.space} width {cfg.model.width_mult:g}, "
          f"{cfg.train.epochs} epochs) into {run_dir}")
    summary = train(cfg, run_dir)
    cost = summary["cost"]
    print(f"\nFinished in {cost['wall_seconds'] / 60:.1f} min ({cost['seconds_per_epoch']:.0f} s/epoch, "
          f"{cost['device_hours']:.3f} device-hours, ${cost['dollars']:.3f}).")
    print(f"Test accuracy (BN-recalibrated): full model {summary['acc_full']:.2f}%, "
          f"smallest subnet {summary['acc_min']:.2f}%")
    return 0


# Overrides that may change when resuming (they do not change what is computed).
RESUME_SAFE = ("train.log_every", "train.progress", "train.tensorboard", "train.threads", "data.workers",
               "train.stop_after_steps", "train.checkpoint_every_steps", "data.eval_batch_size")


def cmd_train(args: argparse.Namespace) -> int:
    """Train a supernet (see onceforall.train for the launch commands)."""
    from pathlib import Path

    from .config import field_docs, load_config, to_yaml
    from .train import train

    if args.fields:
        for name, tp, default, doc in field_docs():
            print(f"{name:32s} {tp:18s} default {default!r:12s} {doc}")
        return 0
    if args.resume:
        run_dir = Path(args.resume)
        if not (run_dir / "config.yaml").is_file():
            raise CLIError(f"--resume: {run_dir} is not a run directory (no config.yaml)")
        if args.config:
            raise CLIError("--resume takes the run's own config.yaml; drop --config")
        bad = [o for o in args.overrides if o.split("=", 1)[0] not in RESUME_SAFE]
        if bad:
            raise CLIError(f"--resume: override '{bad[0]}' would change the run; allowed: {', '.join(RESUME_SAFE)}")
        cfg = load_config(str(run_dir / "config.yaml"), args.overrides)
    else:
        overrides = list(args.overrides) + ([f"train.out_dir={args.out_dir}"] if args.out_dir else [])
        cfg = load_config(args.config or "fashion-mnist-quick", overrides)
        run_dir = Path(cfg.train.out_dir) / args.name if args.name else None
    if args.print_config:
        print(to_yaml(cfg), end="")
        return 0
    summary = train(cfg, run_dir, resume=bool(args.resume))
    accs = " ".join(f"{k} {summary[k]:.2f}%" for k in ("acc_full", "acc_min") if k in summary)
    cost = summary.get("cost")
    took = f"{cost['wall_seconds'] / 60:.1f} min" if cost else ""
    state = "stopped (resume with --resume)" if summary.get("stopped") else "finished"
    if cost is not None:
        print(f"{summary['run_dir']}: {state} at epoch {summary['epochs']:.2f} in {took}; {accs}")
    return 130 if summary.get("signal") else 0


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

    p = sub.add_parser(
        "train", help="train a supernet (DεpS, BigNAS, full-only, OFA-PS, CompOFA)",
        description="Train a supernet. Positional arguments are dotted overrides, e.g. train.epochs=3 "
                    "strategy.name=bignas. Distributed: torchrun --nproc-per-node N -m onceforall train ...",
    )
    p.add_argument("overrides", nargs="*", metavar="SECTION.FIELD=VALUE", help="config overrides")
    p.add_argument("--config", default=None,
                   help="preset name or YAML file (default fashion-mnist-quick); see `onceforall presets`")
    p.add_argument("--name", default=None, help="run name (default: the preset's name plus a timestamp)")
    p.add_argument("--out-dir", default=None, help="folder of run directories (default train.out_dir, 'runs')")
    p.add_argument("--resume", default=None, metavar="RUN_DIR", help="continue the run in RUN_DIR exactly")
    p.add_argument("--print-config", action="store_true", help="print the resolved config and exit")
    p.add_argument("--fields", action="store_true", help="list every config field with its documentation")
    p.set_defaults(func=cmd_train)

    p = sub.add_parser("presets", help="list the config presets")
    p.set_defaults(func=cmd_presets)

    p = sub.add_parser("demo", help="the main job: train the quick DεpS preset on Fashion-MNIST (make demo)")
    p.add_argument("overrides", nargs="*", metavar="SECTION.FIELD=VALUE", help="config overrides")
    p.add_argument("--config", default="fashion-mnist-quick", help="preset (default fashion-mnist-quick)")
    p.add_argument("--name", default=None, help="run name (default: demo preset name plus a timestamp)")
    p.add_argument("--out-dir", default="runs", help="folder of run directories (default runs)")
    p.set_defaults(func=cmd_demo)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args, extra = parser.parse_known_args(argv)
    # dotted overrides may come anywhere, also after options (argparse only collects them before)
    if hasattr(args, "overrides"):
        args.overrides = list(args.overrides) + [e for e in extra if "=" in e and not e.startswith("-")]
        extra = [e for e in extra if not ("=" in e and not e.startswith("-"))]
    if extra:
        parser.error(f"unrecognized arguments: {' '.join(extra)}")
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
