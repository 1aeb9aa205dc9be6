"""The ``onceforall`` command (also ``python -m onceforall``).

Every subcommand reports bad input as one line on stderr and exits with status 2; set
``ONCEFORALL_DEBUG=1`` (or pass ``--debug``) to see the traceback instead.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import random
import sys
import warnings
from collections.abc import Callable, Sequence
from pathlib import Path

from .core.registry import get_space, list_spaces
from .core.util import ensure_writable, first_line, os_error_text, remove_stale_tmp
from .core.version import __version__

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
    from .run.config import list_presets, load_config

    names = list_presets()
    width = max(map(len, names))
    for name in names:
        c = load_config(name)
        print(f"{name:{width}s} {c.data.dataset:14s} {c.model.space:12s} w{c.model.width_mult:<5g} "
              f"{c.strategy.name:10s} {c.train.epochs:4d} epochs, batch {c.train.batch_size}")
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    """The main job on the embedded default: train the quick DεpS preset on Fashion-MNIST, evaluate its Pareto
    front, search two MACs budgets, export the best subnet (safetensors + sidecar + ONNX)."""
    from .run.progress import Heartbeat
    from .workflows.demo import run_demo

    with Heartbeat(lambda text: print(text, flush=True)) as say:
        done = run_demo(config=args.config, overrides=args.overrides, out_dir=args.out_dir, name=args.name,
                        run=args.run, per_bucket=args.per_bucket, selection_images=args.selection_images,
                        samples=args.samples, say=say)
    return 0 if done is not None else 130


def _say(text: str) -> None:
    print(text, file=sys.stderr, flush=True)


def cmd_eval(args: argparse.Namespace) -> int:
    """Evaluate a run across its MACs range: eval/pareto.{json,csv}, report.md, pareto.png."""
    from .run.rundir import load_run
    from .workflows.evaluate import EvalArgs, evaluate_run
    from .workflows.report import pareto_table, write_run_report

    run = load_run(args.run, device=args.device, overrides=args.overrides)
    ensure_writable(run.dir.eval_dir)
    if args.threads:
        import torch

        torch.set_num_threads(args.threads)
    with _writer(run.dir.eval_dir, "eval"), _heartbeat(args.quiet) as say:
        r = evaluate_run(run, _dataclass_from_args(EvalArgs, args), progress=say)
        write_run_report(run, r)
    print(pareto_table(r))
    print(f"wrote {run.dir.eval_dir}/pareto.json, pareto.csv, report.md, pareto.png")
    return 0


def _writer(folder: Path, what: str):
    """The lock of a folder a command writes (one eval, one search of a run at a time), stale temporary files of a
    killed write removed."""
    from .run.lock import RunLock

    lock = RunLock(folder, what).acquire()
    remove_stale_tmp(folder)
    return lock


def _heartbeat(quiet: bool = False):
    """The progress sink of a long command: stderr lines, and one at least every 30 s while it works."""
    import contextlib

    from .run.progress import Heartbeat

    return contextlib.nullcontext(None) if quiet else Heartbeat(_say)


def cmd_compare(args: argparse.Namespace) -> int:
    """Compare runs: compare.md / compare.csv / compare_points.csv / fronts.png / training.png."""

    from .workflows.report import compare_runs

    out = ensure_writable(Path(args.out))
    rows = compare_runs(args.runs, out, reference=args.reference)
    print((out / "compare.md").read_text().split("\n\n![")[0])
    print(f"\nwrote {out}/compare.md, compare.csv, compare_points.csv, fronts.png, training.png ({len(rows)} runs)")
    return 0


def cmd_search(args: argparse.Namespace) -> int:
    """Best archs of a run under budgets: one predictor + evolution per budget, or read off the run's front."""
    from .run.rundir import load_run
    from .specialize.budgets import parse_budgets

    budgets = parse_budgets(args.macs, args.latency_ms, args.memory, args.params)
    if not args.front and not budgets:
        raise CLIError("search: give a budget (--macs 20M, --latency-ms 1.5, several: 5M,10M) or --front")
    if not args.front and any(len(b) > 1 or {"memory", "params"} & b.keys() for b in budgets):
        raise CLIError("search: --memory, --params and joint budgets of several kinds are read off a front; "
                       "add --front")
    if args.memory_dtype is not None and not (args.memory or "memory" in (args.costs or "").split(",")):
        raise CLIError(f"search: --memory-dtype {args.memory_dtype} applies to the peak-memory cost only; add "
                       "--front --costs macs,memory or a --memory budget, or drop it")
    run = load_run(args.run, overrides=args.overrides)
    ensure_writable(run.dir.search_dir)
    with _writer(run.dir.search_dir, "search"), _heartbeat(args.quiet) as say:
        return _search(run, args, budgets, say)


def _search(run, args: argparse.Namespace, budgets: list[dict], say) -> int:
    from .workflows.front import FrontArgs, front_table, read_budgets, stored_or_new_front
    from .workflows.search import SearchArgs, run_search, search_table

    # the options given (None: not given, the dataclass's default); with --front, the ones a stored front is
    # compared with: reading another budget off a front needs none
    given = {k: v for k, v in dict(samples=args.samples, selection_images=args.selection_images,
                                   ranking_bn_images=args.ranking_bn_images, seed=args.seed).items() if v is not None}
    common = dict(predictor=args.predictor, resolution=args.resolution, latency_table=args.latency_table,
                  accept_noisy_table=args.accept_noisy_table)
    if not args.front:
        search_args = SearchArgs(top=args.top, **common, **given)
        for b in budgets:
            result = run_search(run, search_args, macs=b.get("macs"), latency_ms=b.get("latency"), progress=say)
            print(search_table(result))
            print(f"wrote {result.path}")
        return 0
    given.update({k: v for k, v in dict(measure=args.measure, memory_dtype=args.memory_dtype,
                                        latency_table=args.latency_table).items() if v is not None})
    front_args = FrontArgs(**{**common, **given})
    costs = [c.strip() for c in args.costs.split(",")] if args.costs else ["macs"]
    costs += [k for b in budgets for k in b if k not in costs]
    front = stored_or_new_front(run, costs, front_args, asked=list(given), exact_costs=bool(args.costs),
                                rebuild=args.rebuild, progress=say)
    answers = read_budgets(run, front, budgets, top=args.top, progress=say)
    print(front_table(front, answers))
    print(f"front: {front.path} (+ front.csv, front.png)")
    return 0


def cmd_export(args: argparse.Namespace) -> int:
    """Export a subnet of a run: safetensors + JSON sidecar (+ ONNX, TorchScript)."""
    from .run.rundir import load_run
    from .workflows.export import ExportArgs, arch_from_search, export_run, resolve_arch

    run = load_run(args.run)
    remove_stale_tmp(ensure_writable(args.out or run.dir.exports_dir))  # what a killed export left
    how = dict(onnx=args.onnx, torchscript=args.torchscript, threads=args.threads)
    if args.from_front:
        from .specialize.budgets import budget_label, parse_budgets
        from .workflows.front import archs_from_front

        budgets = parse_budgets(args.macs or args.budgets, args.latency_ms, args.memory, args.params)
        for budget, arch in archs_from_front(run, args.from_front, budgets, progress=None if args.quiet else _say):
            out = Path(args.out or run.dir.exports_dir) / budget_label(budget)
            remove_stale_tmp(out)
            print(export_run(run, arch, ExportArgs(out_dir=out, **how)).describe())
        return 0
    if args.from_search:
        arch = arch_from_search(run, args.from_search)
    elif args.arch:
        arch = resolve_arch(run, args.arch)
    else:
        raise CLIError("export: give --arch STR (or min / max), --from-search FILE or --from-front FRONT with budgets")
    print(export_run(run, arch, ExportArgs(out_dir=args.out, **how)).describe())
    return 0


def cmd_import_ofa(args: argparse.Namespace) -> int:
    """Write a run directory holding one of OFA's published supernets (eval, search, export accept it)."""
    from .run.ofa_import import import_ofa_run

    ensure_writable(args.out)
    run = import_ofa_run(args.file, args.out, args.overrides, net_id=args.net_id, force=args.force, say=_say)
    cfg = run.read_config()
    print(f"wrote {run.path}: {cfg.model.space} width {cfg.model.width_mult:g}, resolutions "
          f"{cfg.model.resolutions[0]}..{cfg.model.resolutions[-1]}, data {cfg.data.dataset} at {cfg.data.root}")
    return 0


def cmd_latency_table(args: argparse.Namespace) -> int:
    """Build a per-layer latency lookup table on this device and report its error on random archs."""
    from .workflows.latency import make_latency_table

    if args.run:
        from .run.rundir import load_run

        space = load_run(args.run).space
        if args.resolutions is not None:  # time only the resolutions a deployment uses
            space = space.restrict(resolutions=args.resolutions)
    else:
        space = get_space(args.space, args.width_mult, args.resolutions, num_classes=args.num_classes,
                          in_channels=args.in_channels)
    # prove the output folder writable before measuring (minutes), not after
    ensure_writable(Path(args.out).parent if args.out else (args.run or "."))
    with _heartbeat(args.quiet) as say:
        result = make_latency_table(space, backend=args.backend, threads=args.threads, batch=args.batch,
                                    out=args.out, run_dir=args.run, check=args.check, seed=args.seed,
                                    repeats=args.repeats, min_seconds=args.min_seconds, max_error_pct=args.max_error,
                                    progress=say)
    table = result.table
    print(f"wrote {result.path}: {len(table.entries)} layers, {table.backend}, {table.threads} thread(s), "
          f"batch {table.batch}, {table.device}")
    if result.check is not None:
        print(f"predicted vs measured on {len(result.check['archs'])} archs (smallest, largest, random): mean abs "
              f"error {result.check['mean_abs_error_pct']:.1f}%, max {result.check['max_abs_error_pct']:.1f}%")
    mono = table.check["monotone"]
    print(f"monotonicity: {mono['count']} of {mono['pairs']} (smaller, larger) layer pairs inverted beyond "
          f"{100 * mono['tolerance']:g}%")
    if table.failed_check:
        for problem in table.check["problems"]:
            print(f"warning: the table failed its consistency check: {problem}", file=sys.stderr)
        print("warning: search refuses this table unless --accept-noisy-table; rebuild it on a quieter machine or "
              "with more --repeats / --min-seconds", file=sys.stderr)
    return 0


def cmd_analyze_gradients(args: argparse.Namespace) -> int:
    """Per-layer gradients with and without (ε-)shrinking at a checkpoint, and the first shrinking steps."""
    from .run.rundir import load_run
    from .workflows.gradients import analyze_gradients

    run = load_run(args.run)
    ensure_writable(args.out or run.dir.gradients_dir)
    s = analyze_gradients(run, checkpoint=args.checkpoint, batches=args.batches, eps=args.eps,
                          steps=args.steps, out_dir=args.out)
    print(f"step {s['step']} ({s['checkpoint']}), {s['layers']} layers, {s['batches']} minibatches:")
    print(f"  mean cos(G_noShrink, G_Shrink)    {s['mean_cos_shrink']:.3f}   mean norm ratio "
          f"{s['mean_norm_ratio_shrink']:.2f}")
    print(f"  mean cos(G_noShrink, G_Shrink(ε)) {s['mean_cos_shrink_eps']:.3f}   mean norm ratio "
          f"{s['mean_norm_ratio_shrink_eps']:.2f}   (ε = {s['eps']:g})")
    print(f"wrote {s['out']}/layers.csv, layers.png, steps.csv, steps.png, summary.json")
    return 0


def cmd_train(args: argparse.Namespace) -> int:
    """Train a supernet (see onceforall.workflows.train for the launch commands)."""
    from pathlib import Path

    from .run.config import field_docs, load_config
    from .run.rundir import RunDir
    from .run.state import RESUME_SAFE
    from .workflows.train import train

    if args.fields:
        for name, tp, default, doc in field_docs():
            print(f"{name:32s} {tp:18s} default {default!r:12s} {doc}")
        return 0
    if args.resume:
        run = RunDir(args.resume)
        if not run.config_file.is_file():
            raise CLIError(f"--resume: {run.path} is not a run directory (no config.yaml)")
        if args.config:
            raise CLIError("--resume takes the run's own config.yaml; drop --config")
        if args.init_from:
            raise CLIError("--resume continues the run from its own checkpoint; drop --init-from")
        bad = [o for o in args.overrides if o.split("=", 1)[0] not in RESUME_SAFE]
        if bad:
            raise CLIError(f"--resume: override '{bad[0]}' would change the run; allowed: {', '.join(RESUME_SAFE)}")
        cfg = run.read_config(args.overrides)
        run_dir = run.path
    else:
        overrides = list(args.overrides) + ([f"train.out_dir={args.out_dir}"] if args.out_dir else []) + (
            [f"train.init_from={args.init_from}"] if args.init_from else [])
        cfg = load_config(args.config or "fashion-mnist-quick", overrides)
        run_dir = Path(cfg.train.out_dir) / args.name if args.name else None
    if args.print_config:
        from .run.config import to_yaml

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


def _dataclass_options(p: argparse.ArgumentParser, cls: type) -> None:
    """One option per field of the dataclass ``cls`` (``--per-bucket``; a bool that defaults to True becomes
    ``--no-uniform``), with the field's default and its docstring as the help: one default, one text."""
    from .run.config import field_docs

    for name, type_name, default, doc in field_docs(cls):
        flag = name.replace("_", "-")
        if default is True:
            p.add_argument(f"--no-{flag}", dest=name, action="store_false", help=f"turn off: {doc}")
        elif default is False:
            p.add_argument(f"--{flag}", dest=name, action="store_true", help=doc)
        else:
            kind = float if "float" in type_name else int if "int" in type_name else str
            p.add_argument(f"--{flag}", dest=name, type=kind, default=default, help=f"{doc} (default {default})")


def _dataclass_from_args(cls: type, args: argparse.Namespace):
    """The dataclass ``cls`` filled from the options :func:`_dataclass_options` made."""
    return cls(**{f.name: getattr(args, f.name) for f in dataclasses.fields(cls)})


def build_parser() -> argparse.ArgumentParser:
    from .workflows.evaluate import EvalArgs
    from .workflows.front import FrontArgs
    from .workflows.search import SearchArgs

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
    p.add_argument("--resume", default=None, metavar="RUN_DIR",
                   help="continue the run in RUN_DIR exactly (refused while another process writes it; config.yaml "
                        "and overrides may change only resume-safe fields: logging, threads, device, paths, "
                        "cadences, stop_after_steps, the depthwise gradient kernel)")
    p.add_argument("--init-from", default=None, metavar="RUN_OR_CHECKPOINT",
                   help="start from another run's weights (fresh optimizer and schedule; train.init_from)")
    p.add_argument("--print-config", action="store_true", help="print the resolved config and exit")
    p.add_argument("--fields", action="store_true", help="list every config field with its documentation")
    p.set_defaults(func=cmd_train)

    p = sub.add_parser("eval", help="evaluate a run across its MACs range (Pareto front, report, plot)")
    p.add_argument("run", help="run directory")
    p.add_argument("overrides", nargs="*", metavar="SECTION.FIELD=VALUE",
                   help="config overrides for this command only, e.g. data.workers=0 (config.yaml is kept)")
    _dataclass_options(p, EvalArgs)
    p.add_argument("--device", default="cpu")
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--quiet", action="store_true")
    p.set_defaults(func=cmd_eval)

    p = sub.add_parser("compare", help="compare evaluated runs: cost and accuracy table, fronts and training plots")
    p.add_argument("runs", nargs="+", help="run directories (each evaluated with `onceforall eval`)")
    p.add_argument("--out", default="runs/compare", help="output folder (default runs/compare)")
    p.add_argument("--reference", default=None, help="run whose cost is 1.0x (default: the first deps run)")
    p.set_defaults(func=cmd_compare)

    p = sub.add_parser("search", help="best archs under budgets (predictor + evolution), or the accuracy/cost "
                                      "front of a run (--front: NSGA-II) with budgets read off it")
    p.add_argument("run", help="run directory (its `onceforall eval` measurements train the predictor)")
    p.add_argument("overrides", nargs="*", metavar="SECTION.FIELD=VALUE",
                   help="config overrides for this command only, e.g. data.workers=0 (config.yaml is kept)")
    p.add_argument("--macs", help="MACs budget(s), e.g. 20M or 5M,10M,20M")
    p.add_argument("--latency-ms", help="latency budget(s) in ms per image at batch 1, e.g. 1.5 or 2,4,8")
    p.add_argument("--memory", help="peak activation memory budget(s) in bytes at batch 1, e.g. 300k (= 300,000) "
                                    "or 256k,512k (needs --front)")
    p.add_argument("--params", help="parameter budget(s), e.g. 2M (needs --front)")
    p.add_argument("--front", action="store_true",
                   help="search the accuracy/cost front once (NSGA-II, RUN/search/front.json, .csv, .png) and read "
                        "every budget off it; budgets of several kinds are joint constraints")
    p.add_argument("--costs", help="costs the front minimizes, comma-separated: macs, latency, memory, params "
                                   "(default macs, plus the kinds of the budgets given)")
    p.add_argument("--memory-dtype", default=None,
                   help="element type of the peak-memory cost: float32, float16, bfloat16, int8 (default float32; "
                        "only with a memory cost: --costs ...memory or --memory)")
    p.add_argument("--measure", type=int, default=None,
                   help=f"front members measured on the whole selection and test splits (default {FrontArgs.measure})")
    p.add_argument("--rebuild", action="store_true",
                   help="search the front again even if RUN/search/front.json fits (it is searched again anyway when "
                        "it was searched at another step, for other costs or resolution, or with other values of the "
                        "search options given here; options not given take the stored front's)")
    p.add_argument("--latency-table",
                   help="latency table: JSON from `onceforall latency-table`, or OFA's yaml lookup table (default: "
                        "build one for this device into RUN)")
    p.add_argument("--predictor", metavar="FILE",
                   help="use this accuracy predictor instead of fitting one: a RUN/search/predictor.pt that search "
                        "saved, or OFA's acc_predictor.pth (no subnets are measured to fit it)")
    p.add_argument("--resolution", type=int, default=None,
                   help="search at this one resolution only (MACs, latency and front searches alike)")
    p.add_argument("--accept-noisy-table", action="store_true",
                   help="search with a latency table whose consistency check failed (refused otherwise)")
    p.add_argument("--top", type=int, default=3,
                   help="candidates to measure on the whole validation and test splits (default 3)")
    p.add_argument("--samples", type=int, default=None,
                   help="measured subnets the predictor needs; more are measured when eval left fewer (default 60; "
                        "120 with --front)")
    p.add_argument("--selection-images", type=int, default=None,
                   help="validation images per predictor measurement (0: all; default "
                        f"{SearchArgs.selection_images}, eval's: the predictor learns from eval's measurements)")
    p.add_argument("--ranking-bn-images", type=int, default=None,
                   help="BN-recalibration images of the predictor's measurements (0: data.bn_images; default "
                        f"{SearchArgs.ranking_bn_images}, eval's); the measured candidates use data.bn_images")
    p.add_argument("--seed", type=int, default=None,
                   help=f"seed of the predictor's fit and of the search (default {SearchArgs.seed})")
    p.add_argument("--quiet", action="store_true")
    p.set_defaults(func=cmd_search)

    p = sub.add_parser("export", help="export a subnet: safetensors + JSON sidecar (+ ONNX, TorchScript)")
    p.add_argument("run", help="run directory")
    p.add_argument("--arch", help="arch string, or min / max")
    p.add_argument("--from-search", help="a search result JSON: export its best measured arch")
    p.add_argument("--from-front", metavar="FRONT",
                   help="a front (RUN/search/front.json from `search --front`): export one subnet per budget, each "
                        "into OUT/<budget>/")
    p.add_argument("--budgets", help="with --from-front: MACs budgets, e.g. 5M,10M (same as --macs)")
    p.add_argument("--macs", help="with --from-front: MACs budget(s)")
    p.add_argument("--latency-ms", help="with --from-front: latency budget(s) in ms, e.g. 2,4,8")
    p.add_argument("--memory", help="with --from-front: peak activation memory budget(s) in bytes, e.g. 300k")
    p.add_argument("--params", help="with --from-front: parameter budget(s), e.g. 2M")
    p.add_argument("--quiet", action="store_true")
    p.add_argument("--out", help="output folder (default RUN/exports)")
    p.add_argument("--onnx", action="store_true", help="also write <arch>.onnx (checked with onnxruntime)")
    p.add_argument("--torchscript", action="store_true", help="also write <arch>.pt (TorchScript)")
    p.add_argument("--threads", type=int, default=1, help="threads for the latency measurement (default 1)")
    p.set_defaults(func=cmd_export)

    p = sub.add_parser("import-ofa", help="a run directory from one of OFA's published ImageNet supernets")
    p.add_argument("file", help="OFA's supernet file, e.g. ofa_mbv3_d234_e346_k357_w1.0 (download it yourself)")
    p.add_argument("--out", required=True, help="run directory to write")
    p.add_argument("--net-id", default=None, help="OFA's net id when the file name is not one")
    p.add_argument("--force", action="store_true",
                   help="replace the run in --out (its checkpoint, evaluations, searches and exports)")
    p.add_argument("overrides", nargs="*", metavar="SECTION.FIELD=VALUE",
                   help="config overrides, e.g. data.root=/data/imagenet")
    p.set_defaults(func=cmd_import_ofa)

    p = sub.add_parser("latency-table", help="measure a per-layer latency lookup table on this device")
    p.add_argument("--run", help="take the space from a run directory (with --resolutions: time only those of its "
                                 "resolutions; search then covers only them)")
    _add_space_args(p)
    p.add_argument("--in-channels", type=int, default=3)
    p.add_argument("--backend", default="torch", help="torch, onnxruntime or cuda (default torch)")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--batch", type=int, default=1)
    p.add_argument("--out", help="output JSON (default latency-<space>-...json)")
    p.add_argument("--check", type=int, default=10,
                   help="time this many random archs (plus the smallest and largest) as whole networks and check the "
                        "table's sums against them (0: skip; monotonicity is always checked)")
    p.add_argument("--max-error", type=float, default=25.0,
                   help="mean absolute error (%%) of that check above which the table fails it (default 25)")
    p.add_argument("--repeats", type=int, default=20, help="timed sweeps per layer at least (default 20)")
    p.add_argument("--min-seconds", type=float, default=0.5,
                   help="time each resolution's layers for at least this long in all (adaptive, up to 4 x repeats "
                        "sweeps; default 0.5)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--quiet", action="store_true")
    p.set_defaults(func=cmd_latency_table)

    p = sub.add_parser("analyze-gradients", help="gradients with/without (ε-)shrinking per layer (paper Fig. 3, 4)")
    p.add_argument("run", help="run directory")
    p.add_argument("--checkpoint", default=None,
                   help="checkpoint name in RUN/checkpoints (e.g. epoch-005) or a path; default last")
    p.add_argument("--batches", type=int, default=4, help="minibatches averaged for the per-layer figures")
    p.add_argument("--eps", type=float, default=1e-3, help="ε of G_Shrink(ε) (paper Fig. 3: 0.001)")
    p.add_argument("--steps", type=int, default=40, help="shrinking steps traced with and without ε")
    p.add_argument("--out", default=None, help="output folder (default RUN/gradients)")
    p.set_defaults(func=cmd_analyze_gradients)

    p = sub.add_parser("presets", help="list the config presets")
    p.set_defaults(func=cmd_presets)

    p = sub.add_parser("demo", help="the main job: train the quick DεpS preset on Fashion-MNIST (make demo)")
    p.add_argument("overrides", nargs="*", metavar="SECTION.FIELD=VALUE", help="config overrides")
    p.add_argument("--config", default="fashion-mnist-quick", help="preset (default fashion-mnist-quick)")
    p.add_argument("--name", default=None, help="run name (default: demo preset name plus a timestamp)")
    p.add_argument("--out-dir", default="runs", help="folder of run directories (default runs)")
    p.add_argument("--run", default=None, help="skip training: continue the pipeline on this trained run")
    p.add_argument("--per-bucket", type=int, default=EvalArgs.per_bucket,
                   help=f"measured candidates per MACs bucket (default {EvalArgs.per_bucket})")
    p.add_argument("--selection-images", type=int, default=EvalArgs.selection_images,
                   help=f"images for ranking candidates (default {EvalArgs.selection_images})")
    p.add_argument("--samples", type=int, default=30, help="measured subnets for the accuracy predictor")
    p.set_defaults(func=cmd_demo)
    return parser


# Options whose value may look like an option to argparse (a negative number: --macs -5M): joined as --macs=-5M so
# that the value reaches its own check and a one-line error naming it, not argparse's "expected one argument".
_NUMBER_OPTIONS = ("--macs", "--latency-ms", "--memory", "--params", "--budgets", "--eps", "--seed")


def _join_negative_values(argv: list[str]) -> list[str]:
    out: list[str] = []
    i = 0
    while i < len(argv):
        nxt = argv[i + 1] if i + 1 < len(argv) else ""
        if argv[i] in _NUMBER_OPTIONS and len(nxt) > 1 and nxt[0] == "-" and nxt[1] in ".0123456789":
            out.append(f"{argv[i]}={argv[i + 1]}")
            i += 2
        else:
            out.append(argv[i])
            i += 1
    return out


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args, extra = parser.parse_known_args(_join_negative_values(list(sys.argv[1:] if argv is None else argv)))
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
        with warnings.catch_warnings():  # warnings are one line each, like errors (restored on return)
            if not debug:
                warnings.showwarning = lambda message, category, *rest: print(
                    f"onceforall {args.command}: warning: {message}", file=sys.stderr)
            return int(args.func(args) or 0)
    except (CLIError, ValueError, KeyError) as e:
        if debug:
            raise
        print(f"onceforall {args.command}: error: {first_line(e)}", file=sys.stderr)
        return 2
    except OSError as e:  # permissions, read-only or full disk, missing folder: one line naming the path
        if debug:
            raise
        print(f"onceforall {args.command}: error: {os_error_text(e)}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("onceforall: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
