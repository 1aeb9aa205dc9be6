"""Exporting a subnet of a trained run (``onceforall export``): BN-recalibrated, timed on this machine,
written as safetensors + JSON sidecar (+ ONNX, TorchScript) with the run's accuracy and provenance."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..core.arch import Arch
from ..core.bn import recalibrate_bn
from ..core.devices import device_name
from ..core.evaluation import at_resolution
from ..core.util import JSONFileError, read_json
from ..data.recipe import eval_recipe
from ..measure.evaluator import Evaluator
from ..run.rundir import LoadedRun
from ..specialize.export import export_subnet
from ..specialize.timing import measure_latency_ms

__all__ = ["ExportArgs", "ExportResult", "arch_from_search", "export_run", "resolve_arch"]


@dataclass(frozen=True)
class ExportArgs:
    """How a subnet is exported (``onceforall export``); the command's options carry the same defaults
    (``tests/test_cli.py`` checks)."""

    out_dir: str | None = None
    """Output folder (default RUN/exports)."""
    onnx: bool = False
    """Also write <arch>.onnx (checked with onnxruntime)."""
    torchscript: bool = False
    """Also write <arch>.pt (TorchScript)."""
    threads: int = 1
    """Threads for the latency measurement."""


@dataclass
class ExportResult:
    """What ``onceforall export`` wrote for one subnet (the files' content is the sidecar's: ``read_sidecar``)."""

    arch: Arch
    """The exported subnet."""
    sidecar: Path
    """Its JSON sidecar (accuracy, latency, provenance, checksums); the weights and other formats beside it."""
    macs: int
    """Its MACs at its resolution."""
    params: int
    """Its parameters."""
    accuracy: float
    """Top-1 (%) on the run's test split (``split``)."""
    split: str
    """The split ``accuracy`` was measured on."""
    latency_ms: float
    """Its latency on this machine (torch, ``threads``, batch 1)."""
    threads: int
    """Threads of the latency measurement."""

    @property
    def files(self) -> list[Path]:
        """The sidecar and its siblings (safetensors, and ONNX / TorchScript when written)."""
        return sorted(self.sidecar.parent.glob(self.sidecar.stem + ".*"))

    def describe(self) -> str:
        """What ``onceforall export`` prints: the arch, its cost and accuracy, and the files written."""
        lines = [f"exported {self.arch}: {self.macs / 1e6:.2f}M MACs, {self.params / 1e6:.3f}M params, "
                 f"{self.accuracy:.2f}% ({self.split}), {self.latency_ms:.2f} ms (torch, {self.threads} thread(s), "
                 "batch 1)"]
        return "\n".join(lines + [f"  {f}" for f in self.files])


def resolve_arch(run: LoadedRun, text: str) -> Arch:
    """An arch of the run's space from its string form, or ``min``/``smallest``, ``max``/``full``."""
    if text in ("min", "smallest"):
        return run.space.min()
    if text in ("max", "full"):
        return run.space.max()
    return run.space.parse(text)


def arch_from_search(run: LoadedRun, path: str | Path) -> Arch:
    """The arch a ``search/<budget>.json`` result chose: the candidate best on the selection split (not on the
    test split it reports)."""
    path = Path(path)
    if not path.is_file():
        raise ValueError(f"--from-search: {path} not found (a RUN/search/<budget>.json written by onceforall search)")
    found = read_json(path, "search result", fix="give a RUN/search/<budget>.json written by onceforall search")
    if found.get("best"):
        return run.space.parse(found["best"])
    cands = found.get("candidates")
    if not isinstance(cands, list) or not all(isinstance(c, dict) for c in cands):
        raise JSONFileError(f"--from-search: {path} has no 'best' and no 'candidates' list: not a search result "
                            "(a RUN/search/<budget>.json written by onceforall search)", path)
    measured = [c for c in cands if c.get("measured_acc") is not None]
    if not measured:
        raise ValueError(f"--from-search: {path} has no measured candidate")
    return run.space.parse(max(measured, key=lambda c: c["measured_acc"])["arch"])


def export_run(run: LoadedRun, arch: Arch, args: ExportArgs | None = None, **overrides: Any) -> ExportResult:
    """Extract ``arch``, recalibrate its BN as evaluation does, time it (torch, ``threads``, batch 1) and
    export it into ``out_dir`` (default ``RUN/exports``) with its accuracy (the cached evaluation) and source;
    ``args`` default to :class:`ExportArgs`, ``overrides`` replace single fields."""
    a = dataclasses.replace(args or ExportArgs(), **overrides)
    out_dir, onnx, torchscript, threads = a.out_dir, a.onnx, a.torchscript, a.threads
    acc = Evaluator(run).accuracy([arch], "test")[0]  # cached; the same recalibration as below
    sub = run.net.extract(arch)
    recalibrate_bn(sub, at_resolution(run.data.bn, arch.resolution), num_images=run.cfg.data.bn_images)
    shape = (1, run.space.in_channels, arch.resolution, arch.resolution)
    ms = measure_latency_ms(sub, shape, threads=threads)
    ds = run.data.test.ds
    stored = run.data.test.at(arch.resolution).image_size  # the arch's own under OFA's protocol (image folders)
    path = export_subnet(
        sub, Path(out_dir) if out_dir else run.dir.exports_dir,
        accuracy={"top1": acc, "split": run.report_split, "images": len(ds), "dataset": run.cfg.data.dataset},
        latency={"ms": round(ms, 4), "backend": "torch", "threads": threads, "batch": 1,
                 "device": device_name("cpu", threads)},
        source={"run": str(run.run_dir), "step": run.step, "checkpoint": str(run.checkpoint),
                "strategy": run.cfg.strategy.name},
        normalization={"mean": list(ds.mean), "std": list(ds.std)},
        preprocessing=eval_recipe(ds.load_steps(stored), arch.resolution, stored, run.space.in_channels,
                                  ds.mean, ds.std),
        onnx=onnx, torchscript=torchscript,
    )
    return ExportResult(arch, path, run.space.macs(arch), run.space.params(arch), acc, run.report_split, ms, threads)
