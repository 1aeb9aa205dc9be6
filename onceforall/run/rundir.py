"""The run directory: the one owner of a run's files (every path is spelled here) and of opening a run.

    runs/<name>/config.yaml       resolved config
    runs/<name>/metrics.jsonl     one JSON object per event (step, eval, phase, start, end, stopped)
    runs/<name>/cost.json         wall seconds, epochs, device-hours, dollars
    runs/<name>/checkpoints/      last.pt (+ epoch-NNN.pt)
    runs/<name>/tensorboard/      optional
    runs/<name>/eval/ search/ exports/ gradients/   what the workflows write

:func:`load_run` opens a trained run: the network (space identity and model settings) comes from the
checkpoint, which says what its weights are; data and evaluation settings come from ``config.yaml``.
"""

from __future__ import annotations

import json
import os
import warnings
from dataclasses import dataclass, field
from datetime import datetime
from functools import cached_property
from pathlib import Path
from typing import Any

import torch
import yaml

from ..core.registry import space_from_identity
from ..core.space import Space
from ..core.supernet import Supernet, build_supernet
from ..core.util import JSONFileError, atomic_write, first_line, is_number, read_json
from .checkpoint import content_checksum, load_checkpoint, load_model_state
from .config import Config, ConfigError, apply_overrides, config_from_dict, load_config, to_dict, to_yaml
from .setup import (
    TrainData,
    build_data,
    image_size,
    memory_format,
    report_split,
    resolve_val_split,
    selection_split,
)

__all__ = [
    "GradientFiles",
    "LoadedRun",
    "MetricsError",
    "MetricsLog",
    "RunDir",
    "RunError",
    "load_initial_weights",
    "load_run",
    "read_eval_cache",
    "read_metrics",
    "supernet_of_checkpoint",
]


class RunError(ValueError):
    """A run directory that cannot be used (missing, never trained)."""


@dataclass(frozen=True)
class RunDir:
    """The paths of one run directory (nothing is created until written)."""

    path: Path

    def __post_init__(self) -> None:
        object.__setattr__(self, "path", Path(self.path))

    @property
    def name(self) -> str:
        return self.path.name

    @property
    def config_file(self) -> Path:
        return self.path / "config.yaml"

    @property
    def metrics_file(self) -> Path:
        return self.path / "metrics.jsonl"

    @property
    def cost_file(self) -> Path:
        return self.path / "cost.json"

    @property
    def checkpoints(self) -> Path:
        return self.path / "checkpoints"

    @property
    def last_checkpoint(self) -> Path:
        return self.checkpoint("last")

    def checkpoint(self, name: str) -> Path:
        """``checkpoints/<name>.pt`` (``last``, ``epoch-003``, ...), or ``name`` itself if it is a .pt path."""
        return Path(name) if str(name).endswith(".pt") else self.checkpoints / f"{name}.pt"

    @property
    def tensorboard(self) -> Path:
        return self.path / "tensorboard"

    @property
    def eval_dir(self) -> Path:
        return self.path / "eval"

    @property
    def search_dir(self) -> Path:
        return self.path / "search"

    @property
    def exports_dir(self) -> Path:
        return self.path / "exports"

    @property
    def gradients_dir(self) -> Path:
        return self.path / "gradients"

    @property
    def predictor_file(self) -> Path:
        """The accuracy predictor ``search`` fitted last (``search --predictor`` reuses such a file)."""
        return self.search_dir / "predictor.pt"

    # -- the files of eval, search, front and export (the measurement lane's names) --

    @property
    def eval_cache(self) -> Path:
        """Every measured accuracy of the run's subnets (key -> top-1), shared by eval, search, front, export."""
        return self.eval_dir / "cache.json"

    @property
    def eval_correct(self) -> Path:
        """Which images each cached measurement got right (key -> packed mask)."""
        return self.eval_dir / "correct.json"

    @property
    def pareto_json(self) -> Path:
        return self.eval_dir / "pareto.json"

    @property
    def pareto_csv(self) -> Path:
        return self.eval_dir / "pareto.csv"

    @property
    def report_md(self) -> Path:
        return self.eval_dir / "report.md"

    @property
    def pareto_png(self) -> Path:
        return self.eval_dir / "pareto.png"

    @property
    def curve_correct(self) -> Path:
        """The test images each point of the Pareto curve got right (paired comparisons)."""
        return self.eval_dir / "curve_correct.json"

    @property
    def front_json(self) -> Path:
        return self.search_dir / "front.json"

    @property
    def front_csv(self) -> Path:
        return self.search_dir / "front.csv"

    @property
    def front_png(self) -> Path:
        return self.search_dir / "front.png"

    def search_result(self, label: str) -> Path:
        """``search/<label>.json``: the answer to one budget (``macs-5.00M``), which ``export --from-search`` reads."""
        return self.search_dir / f"{label}.json"

    def latency_table(self, backend: str = "torch", threads: int = 1, batch: int = 1) -> Path:
        """Where a run keeps the latency lookup table of this device for its space."""
        return self.path / f"latency-{backend}-t{threads}-b{batch}.json"

    def read_config(self, overrides: list[str] | None = None) -> Config:
        """The run's resolved config; a field it lacks because the run was written before the field existed
        takes the value the run trained with (``LEGACY_SETTINGS``), so an old run resumes as it was trained."""
        return load_config(str(self.config_file), legacy_overrides(self.config_file) + list(overrides or []))

    def write_config(self, cfg: Config) -> None:
        self.path.mkdir(parents=True, exist_ok=True)
        self.config_file.write_text(to_yaml(cfg))

    def read_metrics(self) -> list[dict]:
        return read_metrics(self.path)

    def read_cost(self) -> dict | None:
        if not self.cost_file.exists():
            return None
        return read_json(self.cost_file, "cost file", fix="it is rewritten when the run trains again; move it "
                                                          "away to go on without costs")

    def write_cost(self, cost: dict) -> None:
        atomic_write(self.cost_file, lambda tmp: tmp.write_text(json.dumps(cost, indent=2) + "\n"))

    @property
    def lock_file(self) -> Path:
        """Held by the process that trains the run (:mod:`onceforall.run.lock`); eval/ and search/ have their own."""
        return self.path / ".lock"

    # ---- names the training and gradient commands write (train, analyze-gradients) -------------------------

    def epoch_checkpoint(self, epoch: int) -> Path:
        """``checkpoints/epoch-NNN.pt``: the checkpoint of an epoch end kept beside last.pt (train.keep_checkpoints)."""
        return self.checkpoint(f"epoch-{epoch:03d}")

    @staticmethod
    def job_file(out_dir: Path, key: str) -> Path:
        """``<out_dir>/.jobs/<key>.run``: the run directory a torchrun job chose at its first start, which its
        restarts continue (the key is the job's, made safe as a file name)."""
        return Path(out_dir) / ".jobs" / f"{''.join(c if c.isalnum() or c in '-_.' else '_' for c in key)}.run"

    def gradient_files(self, out_dir: str | Path | None = None) -> GradientFiles:
        """What ``analyze-gradients`` writes, in ``gradients/`` or ``out_dir``."""
        return GradientFiles(Path(out_dir) if out_dir else self.gradients_dir)


@dataclass(frozen=True)
class GradientFiles:
    """The files of ``analyze-gradients`` (paper Fig. 3 and Fig. 4) in one folder."""

    folder: Path

    @property
    def layers_csv(self) -> Path:
        return self.folder / "layers.csv"

    @property
    def steps_csv(self) -> Path:
        return self.folder / "steps.csv"

    @property
    def layers_png(self) -> Path:
        return self.folder / "layers.png"

    @property
    def steps_png(self) -> Path:
        return self.folder / "steps.png"

    @property
    def summary(self) -> Path:
        return self.folder / "summary.json"


def read_eval_cache(path: Path, values: str) -> dict[str, Any]:
    """An evaluation cache (``eval/cache.json``: key -> accuracy, ``values="numbers"``; ``eval/correct.json``: key
    -> packed per-image mask, ``values="strings"``), empty if there is none. A damaged one (not JSON, cut short,
    wrong shape) holds nothing that can be trusted but nothing that cannot be measured again: it is moved aside
    to ``<name>.damaged-<time>`` with a one-line warning and the cache starts empty, so eval and export go on."""
    if not path.exists():
        return {}
    ok = is_number if values == "numbers" else (lambda v: isinstance(v, str))
    try:
        data = read_json(path, "eval cache")
        bad = next((k for k, v in data.items() if not ok(v)), None)
        if bad is not None:
            raise JSONFileError(f"eval cache {path} holds {data[bad]!r} at {bad!r}, not {values[:-1]}", path)
    except JSONFileError as e:
        aside = path.with_name(f"{path.name}.damaged-{datetime.now().strftime('%Y%m%d-%H%M%S-%f')}")
        os.replace(path, aside)
        warnings.warn(f"{e}; moved it to {aside.name}, measuring again", stacklevel=2)
        return {}
    return data


LEGACY_SETTINGS = {"strategy.reorganize_mode": "global", "strategy.reorganize_momentum": "true",
                   "model.bn_momentum": "0.1"}
"""Settings added on 2026-12-03 (the official DεpS defaults) -> the behaviour of runs written before them."""


def legacy_overrides(config_file: Path) -> list[str]:
    """Overrides ``LEGACY_SETTINGS`` for the fields a resolved config.yaml lacks (its section present, the field
    not); [] for a file that does not read (load_config then says why)."""
    try:
        written = yaml.safe_load(Path(config_file).read_text())
    except (OSError, yaml.YAMLError):
        return []
    out = []
    for key, value in LEGACY_SETTINGS.items():
        section, name = key.split(".")
        if isinstance(written, dict) and isinstance(written.get(section), dict) and name not in written[section]:
            out.append(f"{key}={value}")
    return out


class MetricsError(ValueError):
    """A metrics.jsonl line that is not a JSON object (other than a partial last line)."""


def read_metrics(run_dir: str | Path) -> list[dict]:
    """The rows of a run's ``metrics.jsonl`` (one dict per event: step, eval, phase, end, ...), oldest first;
    empty if the run has not logged anything yet.

    A crash can leave only the last line partial (rows are appended whole, one write each): such a line is skipped.
    Any other line that is not a JSON object is a one-line :class:`MetricsError` naming the file and the line."""
    path = RunDir(run_dir).metrics_file
    if not path.exists():
        return []
    return _parse_metrics(path, path.read_text(errors="replace"))


def _parse_metrics(path: Path, text: str) -> list[dict]:
    lines = text.split("\n")  # a complete file ends with "\n": its last item is ""
    rows = []
    for n, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
            if not isinstance(row, dict):
                raise ValueError(f"a {type(row).__name__}, not an object")
        except ValueError as e:
            if n == len(lines):
                break  # the partial last line a crash can leave (no newline after it)
            raise MetricsError(f"{path}: line {n} is not a JSON object ({first_line(e)}); fix or delete that "
                               "line") from None
        rows.append(row)
    return rows


class MetricsLog:
    """Appends rows to metrics.jsonl (one JSON object per event) and an optional TensorBoard sink.

    resume_step: the step of the checkpoint a resumed run continues from (later rows and a partial last line are
    dropped, those steps run again); None: a fresh start (the file starts empty)."""

    def __init__(self, run: RunDir, *, enabled: bool = True, tensorboard: bool = False,
                 resume_step: int | None = None):
        self.enabled = enabled
        self.path = run.metrics_file
        self.tb = None
        if not enabled:
            return
        if resume_step is None:
            self.path.unlink(missing_ok=True)  # a fresh start: rows of an attempt that never checkpointed go
        elif self.path.exists():
            # drop rows written after the checkpoint we resume from (those steps run again), and a partial last line
            rows = _parse_metrics(self.path, self.path.read_text(errors="replace"))
            kept = [r for r in rows if r.get("step", 0) <= resume_step]
            atomic_write(self.path, lambda tmp: tmp.write_text("".join(json.dumps(r) + "\n" for r in kept)))
        if tensorboard:
            try:
                from torch.utils.tensorboard import SummaryWriter
            except ImportError:
                raise ValueError(
                    "train.tensorboard: true needs the tensorboard package; pip install 'onceforall[tensorboard]'"
                ) from None
            self.tb = SummaryWriter(str(run.tensorboard))

    def write(self, row: dict[str, Any]) -> None:
        if not self.enabled:
            return
        # one write() on an O_APPEND descriptor: a crash loses at most this row, never an earlier one
        fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o666)
        try:
            os.write(fd, (json.dumps(row) + "\n").encode())
        finally:
            os.close(fd)
        if self.tb is not None:
            for key, value in row.items():
                if isinstance(value, (int, float)) and key not in ("step", "epoch"):
                    self.tb.add_scalar(f"{row['event']}/{key}", value, row.get("step", 0))

    def close(self) -> None:
        if self.tb is not None:
            self.tb.close()


@dataclass
class LoadedRun:
    run_dir: Path
    cfg: Config
    space: Space
    """The space the run trained (its strategy's: e.g. CompOFA's coupled space), with the run's number of classes
    and input channels; what eval, search and export sample from. ``net.space`` is the supernet's."""
    net: Supernet
    step: int
    checkpoint: Path
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))

    @property
    def dir(self) -> RunDir:
        return RunDir(self.run_dir)

    @property
    def name(self) -> str:
        return self.run_dir.name

    @property
    def memory_format(self) -> torch.memory_format:
        return memory_format(self.cfg)

    @property
    def image_size(self) -> int:
        return image_size(self.cfg, self.space)

    @cached_property
    def data(self) -> TrainData:
        """TrainData of the run (BN-recalibration subset, validation set)."""
        return build_data(self.cfg, self.image_size, training=False)

    @property
    def selection_split(self) -> str:
        """The split subnets are ranked on (held-out training images, or the test split without them)."""
        return selection_split(self.cfg)

    @property
    def report_split(self) -> str:
        """The split results are reported on: ``test`` (an image folder's ``val/``, and it says so)."""
        return report_split(self.cfg)

    @property
    def held_out(self) -> bool:
        """Whether selection and report use different images (``data.val_split`` > 0)."""
        return bool(self.cfg.data.val_split)

    @cached_property
    def cost(self) -> dict | None:
        return self.dir.read_cost()

    @cached_property
    def weights_digest(self) -> str:
        """16 hex digits of the SHA-256 of the supernet's weights and BN buffers: measurements cached under it are
        measurements of exactly these weights (a retrained or resumed run gets new ones)."""
        return content_checksum(self.net.state_dict())[:16]


def load_run(run_dir: str | Path, device: str | torch.device = "cpu",
             overrides: list[str] | None = None) -> LoadedRun:
    """Open a trained run: its supernet from ``checkpoints/last.pt``, its settings from ``config.yaml`` with
    ``overrides`` (``section.field=value``, e.g. ``data.workers=0``: for this command only, the file is kept)."""
    run = RunDir(run_dir)
    if not run.path.is_dir():
        raise RunError(f"run {run.path} not found")
    if not run.config_file.is_file():
        raise RunError(f"run {run.path} has no config.yaml; is it a onceforall run directory?")
    if not run.last_checkpoint.is_file():
        raise RunError(f"run {run.path} has no checkpoints/last.pt; train it first")
    cfg = run.read_config()
    if overrides:
        try:
            cfg = config_from_dict(apply_overrides(to_dict(cfg), list(overrides)))
        except ConfigError as e:
            raise RunError(f"run {run.path}: {e}") from None
    if cfg.data.val_split is None and (cfg.data.dataset != "imagefolder" or
                                       (cfg.data.root is not None and Path(cfg.data.root).is_dir())):
        cfg, _ = resolve_val_split(cfg)  # a run imported before data.root was known decides it now
    ck = load_checkpoint(run.last_checkpoint)
    net = supernet_of_checkpoint(ck, run.last_checkpoint)
    net = net.to(device=torch.device(device), memory_format=memory_format(cfg)).eval()
    space = space_from_identity(ck["eval_space"]) if "eval_space" in ck else net.space
    return LoadedRun(run.path, cfg, space, net, int(ck["state"]["step"]), run.last_checkpoint, torch.device(device))


def supernet_of_checkpoint(ck: dict, path: Path) -> Supernet:
    """The supernet a checkpoint holds: its space identity and model settings, its weights."""
    model = config_from_dict(ck["config"]).model
    written = ck["config"].get("model", {})
    # a checkpoint written before model.bn_momentum existed trained with the space's (LEGACY_SETTINGS)
    bn_momentum = model.bn_momentum if "bn_momentum" in written else float(LEGACY_SETTINGS["model.bn_momentum"])
    net = build_supernet(space_from_identity(ck["space"]), dropout=model.dropout,
                         kernel_transform=model.kernel_transform, bn_momentum=bn_momentum)
    load_model_state(net, ck["model"], path)
    return net


def load_initial_weights(net: Supernet, source: str | Path, say: Any = None) -> Path:
    """Copy the supernet weights of a run directory (``checkpoints/last.pt``) or a checkpoint file into ``net``
    (``train.init_from``): the spaces must match except for the number of classes, whose classifier keeps
    ``net``'s fresh initialization. ``say`` (a callable) gets one line on what was copied and what was
    re-initialized. Returns the checkpoint read."""
    source = Path(source)
    path = RunDir(source).last_checkpoint if source.is_dir() else source
    if not path.is_file():
        raise RunError(f"train.init_from: {source} is neither a run directory with checkpoints/last.pt nor a "
                       "checkpoint file")
    ck = load_checkpoint(path)
    theirs = space_from_identity(ck["space"])
    ours = net.space
    if theirs.with_io(num_classes=ours.num_classes).skeleton_key() != ours.skeleton_key() or \
            [(st.depths, st.kernels, st.expands) for st in theirs.stages] != \
            [(st.depths, st.kernels, st.expands) for st in ours.stages]:
        a, b = ck["space"], ours.identity()
        diff = [k for k in dict.fromkeys([*a, *b]) if k not in ("num_classes", "resolutions") and a.get(k) != b.get(k)]
        what = (f"model.{diff[0]} {a.get(diff[0])!r}, this run builds {b.get(diff[0])!r}" if diff else
                "other stage choices (depths, kernels or expands) than this run's")
        raise RunError(f"train.init_from: {path} was trained with {what} (space name, width_mult, in_channels and "
                       "stage choices must match; classes and resolutions may differ)")
    state = dict(ck["model"])
    fresh_keys = []
    if theirs.num_classes != ours.num_classes:
        fresh = net.state_dict()
        fresh_keys = [k for k in fresh if k.startswith("head.classifier.")]
        state.update({k: fresh[k] for k in fresh_keys})
    load_model_state(net, state, path)
    if say is not None:
        kept = len(state) - len(fresh_keys)
        say(f"init-from {path}: copied {kept} tensors" + (
            f"; re-initialized the classifier ({', '.join(fresh_keys)}): {theirs.num_classes} -> "
            f"{ours.num_classes} classes" if fresh_keys else "; every tensor kept"))
    return path
