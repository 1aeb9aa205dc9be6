"""The main job on the embedded default (``make demo``): train the quick DεpS preset on Fashion-MNIST,
evaluate its Pareto front, search two MACs budgets, export the best subnet."""

from __future__ import annotations

import importlib.util
import time
from collections.abc import Callable
from pathlib import Path

from ..core.registry import get_space
from ..run.config import load_config
from ..run.launch import default_run_name
from ..run.rundir import load_run
from .evaluate import EvalArgs, evaluate_run
from .export import ExportArgs, arch_from_search, export_run
from .report import pareto_table, write_run_report
from .search import SearchArgs, run_search, search_table
from .train import train

__all__ = ["run_demo"]


def _has_onnxruntime() -> bool:
    return importlib.util.find_spec("onnxruntime") is not None


def run_demo(*, config: str = "fashion-mnist-quick", overrides: list[str] | None = None, out_dir: str = "runs",
             name: str | None = None, run: str | None = None, per_bucket: int = EvalArgs.per_bucket,
             selection_images: int = EvalArgs.selection_images,
             samples: int = 30, say: Callable[[str], None] = print) -> Path | None:
    """Run the pipeline (``run``: skip training and continue on that trained run); returns the run directory, or
    None when training was stopped (a signal, ``train.stop_after_steps``) before the end."""
    start = time.perf_counter()
    ofa_space = get_space("mbv3", 1.0, (224,))
    say("OFA MobileNetV3 space at 224 px, 1000 classes (OFA's published range: 151M .. 566M MACs):")
    say(f"  k7 e3 d2: {ofa_space.macs(ofa_space.uniform(7, 3, 2)) / 1e6:.2f}M MACs   "
        f"k7 e6 d4 (full model): {ofa_space.macs(ofa_space.max()) / 1e6:.2f}M MACs")
    if run:
        run_dir = Path(run)
        say(f"\n[1/4] using the trained run {run_dir}")
    else:
        cfg = load_config(config, list(overrides or []) + [f"train.out_dir={out_dir}"])
        run_dir = Path(cfg.train.out_dir) / (name or default_run_name(cfg))
        say(f"\n[1/4] training preset {config} ({cfg.strategy.name}, {cfg.model.space} width "
            f"{cfg.model.width_mult:g}, {cfg.train.epochs} epochs) into {run_dir}")
        summary = train(cfg, run_dir)
        if summary.get("stopped"):  # a signal or train.stop_after_steps: no final accuracies to show
            say(f"      training stopped at epoch {summary['epochs']:.2f} ({summary.get('reason', 'interrupted')}); "
                f"its checkpoint is saved: onceforall train --resume {run_dir}, then onceforall demo --run {run_dir}")
            return None
        cost = summary["cost"]
        say(f"      {cost['wall_seconds'] / 60:.1f} min ({cost['seconds_per_epoch']:.0f} s/epoch, "
            f"{cost['device_hours']:.3f} device-hours, ${cost['dollars']:.3f}); test accuracy (BN-recalibrated): "
            f"full model {summary['acc_full']:.2f}%, smallest subnet {summary['acc_min']:.2f}%")
    loaded = load_run(run_dir)
    say(f"\n[2/4] evaluating subnets across the MACs range (ranked on {loaded.selection_split}, reported on test)")
    r = evaluate_run(loaded, per_bucket=per_bucket, uniform=False, selection_images=selection_images, progress=say)
    write_run_report(loaded, r)
    say(pareto_table(r))
    lo, hi = loaded.space.macs_range()
    found = []
    for i, frac in enumerate((1 / 3, 2 / 3)):
        budget = lo + frac * (hi - lo)
        say(f"\n[3/4] search {i + 1}/2: best subnet under {budget / 1e6:.2f}M MACs")
        found.append(run_search(loaded, SearchArgs(top=2, samples=samples, selection_images=selection_images),
                                macs=budget, progress=say))
        say(search_table(found[-1]))
    say("\n[4/4] exporting the best subnet found under the first budget")
    ex = export_run(loaded, arch_from_search(loaded, found[0].path),
                    ExportArgs(onnx=_has_onnxruntime(), torchscript=True))
    say(ex.describe())
    say(f"\nreports: {loaded.dir.report_md} (+ pareto.png); whole demo "
        f"{(time.perf_counter() - start) / 60:.1f} min")
    return run_dir
