"""Typed run configuration: dataclasses with a docstring per field, YAML presets, dotted overrides.

    cfg = load_config("fashion-mnist-quick", ["train.epochs=3", "strategy.shrink_start=0.25"])
    print(to_yaml(cfg))

Presets live in ``onceforall/configs/*.yaml`` (``configs/`` at the repository root links there). Bad
input raises :class:`ConfigError` with one line naming the field, the value and what is valid.
"""

from __future__ import annotations

import ast
import dataclasses
import inspect
import textwrap
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from ..core.depthwise import DEPTHWISE_GRADS
from ..core.registry import get_space, list_spaces
from ..core.space import Space
from ..core.strategies import StrategyConfig, get_strategy_class, list_strategies
from ..core.util import first_line
from ..data import list_datasets, mirror_safe

__all__ = [
    "Config",
    "ConfigError",
    "DataConfig",
    "ModelConfig",
    "OptimConfig",
    "StrategyConfig",
    "TrainConfig",
    "field_docs",
    "list_presets",
    "load_config",
    "model_space",
    "config_from_dict",
    "to_dict",
    "to_yaml",
]

PRESET_DIR = Path(__file__).resolve().parent.parent / "configs"


class ConfigError(ValueError):
    """A bad configuration value (one line: field, value, what is valid)."""


@dataclass
class DataConfig:
    dataset: str = "fashion-mnist"
    """Dataset: fashion-mnist (embedded default, Debian package), fashion-mnist-pairs (two items side by side, 100
    classes, from the same files), cifar10, cifar100, imagefolder."""
    root: str | None = None
    """Folder holding the data files; None: the default location of the dataset (fashion-mnist only)."""
    image_size: int | None = None
    """Side of the training images; None: the largest resolution of the space."""
    train_subset: int | None = None
    """Train on a fixed random subset of this many training images; None: all."""
    val_split: int | None = None
    """Hold out this many training images as the validation split, on which subnets are selected (results are
    reported on the test split); 0: select on the test split; None: 10 % of the training images, at most 10,000,
    decided when a run starts (or is imported) and written into its config.yaml."""
    eval_subset: int | None = None
    """Per-epoch validation on a fixed subset of this many images; None: the whole validation set."""
    test_subset: int | None = None
    """Report on a fixed random subset of this many test images (quick looks, tests; reports say how many);
    None: the whole test split, as the paper's protocol."""
    crop_padding: int = 4
    """Random-crop augmentation: zero padding in pixels (in-memory datasets); 0 disables cropping."""
    hflip: bool | None = None
    """Random horizontal flips; None: the dataset's default (on for fashion-mnist and CIFAR, off for image
    folders and fashion-mnist-pairs, where a mirrored image may be another class)."""
    mean: list[float] | None = None
    """Per-channel normalization mean (of pixel / 255); None: the dataset's own (image folders: measured on 1000
    training images when a run starts, and written into its config.yaml)."""
    std: list[float] | None = None
    """Per-channel normalization standard deviation; None: the dataset's own (as data.mean)."""
    bn_images: int = 2000
    """Training images used to recalibrate BN statistics before evaluating a subnet."""
    bn_augment: bool = False
    """Recalibrate BN on training crops of those images (the training augmentation, drawn once from a fixed seed)
    as OFA does; False: on their evaluation crops."""
    bn_batch_size: int = 200
    """Images per batch of the BN recalibration (OFA's and the official DεpS code's: 2000 images in batches of
    200). The recalibrated statistics average each batch's, so they depend on it (it is part of a measurement's
    cache key)."""
    per_resolution: bool = True
    """Image folders: decode every evaluated image at the subnet's resolution r (shorter side ceil(r / 0.875),
    center crop r: OFA's ImageNet protocol); False: crop once at data.image_size and let the network resize, as
    for in-memory datasets (always)."""
    train_per_resolution: bool = False
    """Image folders: crop every training image at each resolution of the space directly (one random-resized
    crop box and flip, resized to each resolution; the same augmentation draws at each), and let each pass of a
    step take the crop at its arch's resolution, as OFA's MyRandomResizedCrop crops the active size (OFA samples
    one resolution per batch for every subnet; our strategies give each arch its own); False: crop at
    data.image_size and let the network resize (in-memory datasets: always). The official DεpS command trains at
    224 only (off); OFA's train_ofa_net.py crops per resolution (on in imagenet-ofa-ps and imagenet-compofa,
    which keep OFA's recipe)."""
    eval_batch_size: int = 128
    """Batch size of validation and test passes (not of the BN recalibration: data.bn_batch_size). With BN folded
    (eval), a speed knob only: on CPU, small batches keep the activations in cache (1.8-2x faster at 128 than 500
    for the fashion-mnist subnets at 1 thread)."""
    random_erase: float = 0.0
    """Image folders: probability of random erasing per training image (torchvision's RandomErasing: 2-33 % of
    the area, aspect 0.3-3.3, filled with the mean colour), not on the BN-recalibration crops; 0: off. The
    official DεpS ImageNet command: 0.2."""
    auto_augment: str | None = None
    """Image folders: AutoAugment policy of each training image, "imagenet" (Cubuk et al.'s ImageNet policy, as
    torchvision's AutoAugment), not on the BN-recalibration crops; None: off. The official DεpS command:
    imagenet."""
    color_jitter: list[float] | None = None
    """Image folders: colour jitter of each training image, [brightness, contrast, saturation, hue] as
    torchvision's ColorJitter (random order, factors uniform in 1 -/+ s, hue shift in -/+ h turns), not on the
    BN-recalibration crops; None: off. The official DεpS command (--distort_color torch): [0.4, 0.4, 0.4, 0.1]."""
    mixup_alpha: float = 0.0
    """Mixup of each training batch (Zhang et al.): every image blended with the one before it in the batch,
    lambda ~ Beta(alpha, alpha), the labels blended alike (the loss takes the distribution; label smoothing on
    top, as torch's and timm's); every pass of a step, its in-place or frozen teacher included, sees the same
    mixed images; not on the BN-recalibration crops; 0: off. The official DεpS MobileNetV3 command:
    --mixup_alpha 0."""
    cutmix_alpha: float = 0.0
    """CutMix of each training batch (Yun et al.): a box of area (1 - lambda) pasted from the image before it,
    lambda ~ Beta(alpha, alpha), then corrected to the pasted box's area; the labels mixed by that lambda; with
    data.mixup_alpha also > 0, one of the two per batch (data.mix_switch_prob); 0: off. The official DεpS
    MobileNetV3 command: --cutmix_alpha 0."""
    mix_prob: float = 1.0
    """Probability that a training batch is mixed when data.mixup_alpha or data.cutmix_alpha is > 0 (the official
    code: 1)."""
    mix_switch_prob: float = 0.5
    """Probability of CutMix rather than mixup for a batch when both alphas are > 0 (the official code picks one
    of the two uniformly: 0.5)."""
    workers: int | None = None
    """DataLoader worker processes for image folders (in-memory datasets need none); None: min(8, this
    machine's cores) for image folders, 0 for in-memory datasets."""


@dataclass
class ModelConfig:
    space: str = "mbv3-cifar"
    """Search space name (see `onceforall spaces`)."""
    width_mult: float = 1.0
    """Width multiplier of the space."""
    resolutions: list[int] | None = None
    """Resolution choices; None: the space's defaults."""
    dropout: float = 0.1
    """Dropout before the classifier (on the full model's passes only unless strategy.subnet_dropout)."""
    bn_momentum: float = 0.99
    """BN momentum while training, in PyTorch's convention (running = (1 - m) · running + m · batch). 0.99: the
    official DεpS code's default (train_options.py --bn_momentum, the README's commands; set_bn_param writes it
    into every BN as is), so the running statistics follow almost only the last batch; 0.1: PyTorch's and OFA's
    (this package's before 2026-12-03). Weights are unaffected; evaluation re-estimates BN statistics anyway."""
    kernel_transform: bool = True
    """OFA's learnable 7->5->3 kernel transformation matrices (False: plain center crop)."""
    kernels: list[int] | None = None
    """Kernel choices of every elastic stage; [7]: the official DεpS fixed-kernel space (no kernel-transform
    matrices); None: the space's own (3, 5, 7)."""
    stage_kernels: list[int] | None = None
    """One fixed kernel per stage, e.g. [3, 5, 3, 3, 5]: MobileNetV3-Large's, the kernels CompOFA trains with;
    None: off (model.kernels applies)."""
    depths: list[int] | None = None
    """Depth choices of every elastic stage; None: the space's (2, 3, 4). With depths, kernels and expands of
    one value each the space is a single arch (a subnet trained alone: benchmarks/capacity.py)."""
    expands: list[float] | None = None
    """Expand-ratio choices of every block; None: the space's (3, 4, 6)."""


@dataclass
class OptimConfig:
    lr: float = 0.1
    """Peak learning rate for the global batch (nothing is rescaled behind your back)."""
    momentum: float = 0.9
    """SGD momentum."""
    nesterov: bool = True
    """Nesterov momentum."""
    weight_decay: float = 3e-5
    """Weight decay (not applied to BN, biases or kernel-transform matrices)."""
    warmup_epochs: float = 0.0
    """Linear learning-rate warmup from 0 before the cosine decay."""
    min_lr: float = 0.0
    """Learning rate at the end of the cosine schedule."""
    label_smoothing: float = 0.1
    """Label smoothing of the cross-entropy on labels."""
    grad_clip: float | None = None
    """Clip the global gradient norm to this value; None: no clipping."""


@dataclass
class TrainConfig:
    epochs: int = 10
    """Epochs of the whole run."""
    batch_size: int = 128
    """Global batch size (split evenly over ranks and micro-batches)."""
    micro_batches: int = 1
    """Split each rank's batch into this many sequential chunks (gradient accumulation; BN statistics
    per chunk, like per-rank BN across devices)."""
    seed: int = 0
    """Seed of everything random (init, data order, augmentation, arch sampling, dropout)."""
    device: str = "auto"
    """auto, cpu, cuda or cuda:N."""
    channels_last: bool = True
    """channels_last memory format (1.2–3.2× faster depthwise convolutions on CPU)."""
    depthwise_grad: str = "auto"
    """auto or native: the weight gradient of depthwise convolutions whose filter is larger than the feature
    map, on CPU, as one batched matmul (auto; several times faster there, the same math with the sums in another
    order) or PyTorch's kernel everywhere (native; the arithmetic of runs trained before 2026-12-03)."""
    amp: str = "none"
    """none or bf16 (autocast; meant for GPUs)."""
    threads: int | None = None
    """CPU threads per process; None: all cores divided by the processes on this node."""
    log_every: int = 20
    """Write a step row to metrics.jsonl every this many steps."""
    eval_every: int = 1
    """Validate the full model and the smallest subnet every this many epochs (0: only at the end)."""
    eval_every_steps: int = 0
    """Also validate every this many steps (0: off); for curves around the shrink start (paper Fig. 7)."""
    checkpoint_every: int = 1
    """Save checkpoints/last.pt every this many epochs (and always at the end)."""
    checkpoint_every_steps: int = 0
    """Also save last.pt every this many steps (0: off)."""
    keep_checkpoints: bool = False
    """Keep a copy of the checkpoint of every epoch (epoch-NNN.pt) besides last.pt."""
    out_dir: str = "runs"
    """Folder holding run directories."""
    tensorboard: bool = False
    """Also write TensorBoard event files (needs the tensorboard package)."""
    progress: str = "auto"
    """Progress bar on stderr: auto (on a terminal), on, off."""
    price_per_device_hour: float = 2.13
    """Dollars per device-hour for cost.json (the rate implied by the paper's Table 2)."""
    init_from: str | None = None
    """Start from the weights of this run directory (its last checkpoint) or checkpoint file: weights only, with
    a fresh optimizer and schedule; the classifier is re-initialized when the number of classes differs."""
    stop_after_steps: int | None = None
    """Stop (as if interrupted, with a checkpoint) after this global step; for tests and budgets."""


@dataclass
class Config:
    name: str = "run"
    """Default run name (a timestamp is appended unless --name is given)."""
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    strategy: StrategyConfig = field(default_factory=StrategyConfig)
    train: TrainConfig = field(default_factory=TrainConfig)


# ---------------------------------------------------------------------------------------------------
# Choices and ranges checked after loading (types are checked generically from the annotations).
# ---------------------------------------------------------------------------------------------------

_CHOICES = {
    "train.amp": ("none", "bf16"),
    "train.depthwise_grad": DEPTHWISE_GRADS,
    "train.progress": ("auto", "on", "off"),
}

_RANGES: dict[str, tuple[float | None, float | None, str]] = {
    "data.image_size": (8, None, ">= 8"),
    "data.train_subset": (1, None, ">= 1"),
    "data.val_split": (0, None, ">= 0"),
    "data.eval_subset": (1, None, ">= 1"),
    "data.test_subset": (1, None, ">= 1"),
    "data.crop_padding": (0, None, ">= 0"),
    "data.bn_images": (1, None, ">= 1"),
    "data.eval_batch_size": (1, None, ">= 1"),
    "data.bn_batch_size": (1, None, ">= 1"),
    "data.workers": (0, None, ">= 0"),
    "data.random_erase": (0, 1, "in [0, 1]"),
    "data.mixup_alpha": (0, None, ">= 0 (0: off)"),
    "data.cutmix_alpha": (0, None, ">= 0 (0: off)"),
    "data.mix_prob": (0, 1, "in [0, 1]"),
    "data.mix_switch_prob": (0, 1, "in [0, 1]"),
    "model.bn_momentum": (0, 1, "in [0, 1]"),
    "model.width_mult": (1e-6, 4, "in (0, 4]"),
    "model.dropout": (0, 0.999, "in [0, 1)"),
    "optim.lr": (1e-12, None, "> 0"),
    "optim.momentum": (0, 0.999999, "in [0, 1)"),
    "optim.weight_decay": (0, None, ">= 0"),
    "optim.warmup_epochs": (0, None, ">= 0"),
    "optim.min_lr": (0, None, ">= 0"),
    "optim.label_smoothing": (0, 0.999, "in [0, 1)"),
    "optim.grad_clip": (1e-12, None, "> 0"),
    "train.epochs": (1, None, ">= 1"),
    "train.batch_size": (1, None, ">= 1"),
    "train.micro_batches": (1, None, ">= 1"),
    "train.threads": (1, None, ">= 1"),
    "train.log_every": (1, None, ">= 1"),
    "train.eval_every": (0, None, ">= 0"),
    "train.eval_every_steps": (0, None, ">= 0"),
    "train.checkpoint_every": (1, None, ">= 1"),
    "train.checkpoint_every_steps": (0, None, ">= 0"),
    "train.price_per_device_hour": (0, None, ">= 0"),
    "train.stop_after_steps": (1, None, ">= 1"),
}


def _validate(cfg: Config) -> Config:
    choices = dict(_CHOICES)
    choices["data.dataset"] = tuple(list_datasets())
    choices["model.space"] = tuple(list_spaces())
    choices["strategy.name"] = tuple(list_strategies())
    for key, valid in choices.items():
        value = _get(cfg, key)
        if value not in valid:
            raise ConfigError(f"{key}: '{value}' is not valid; valid: {', '.join(valid)}")
    for key, (lo, hi, text) in _RANGES.items():
        value = _get(cfg, key)
        if value is None:
            continue
        if (lo is not None and value < lo) or (hi is not None and value > hi):
            raise ConfigError(f"{key}: {value} is not valid; must be {text}")
    if cfg.data.auto_augment not in (None, "imagenet"):
        raise ConfigError(f"data.auto_augment: '{cfg.data.auto_augment}' is not valid; valid: imagenet, null")
    cj = cfg.data.color_jitter
    if cj is not None and (len(cj) != 4 or any(v < 0 for v in cj) or cj[3] > 0.5):
        raise ConfigError(f"data.color_jitter: {cj} is not valid; expected [brightness, contrast, saturation, hue], "
                          "each >= 0, hue <= 0.5, or null")
    if (cfg.data.mean is None) != (cfg.data.std is None):
        raise ConfigError(f"data.mean: {cfg.data.mean} and data.std: {cfg.data.std} are not valid; set both or "
                          "neither")
    if cfg.data.std is not None and (len(cfg.data.std) != len(cfg.data.mean) or min(cfg.data.std) <= 0):
        raise ConfigError(f"data.std: {cfg.data.std} is not valid; need one positive value per data.mean value "
                          f"({len(cfg.data.mean)})")
    if cfg.data.hflip and not mirror_safe(cfg.data.dataset):
        raise ConfigError(f"data.hflip: true is not valid for {cfg.data.dataset} (a flip changes the class); "
                          "set data.hflip=false")
    if cfg.model.resolutions is not None and (not cfg.model.resolutions or min(cfg.model.resolutions) < 8):
        raise ConfigError(f"model.resolutions: {cfg.model.resolutions} is not valid; need integers >= 8")
    dev = cfg.train.device
    if not (dev in ("auto", "cpu", "cuda") or (dev.startswith("cuda:") and dev[5:].isdigit())):
        raise ConfigError(f"train.device: '{dev}' is not valid; valid: auto, cpu, cuda, cuda:N")
    if cfg.train.batch_size % cfg.train.micro_batches:
        raise ConfigError(
            f"train.micro_batches: {cfg.train.micro_batches} does not divide train.batch_size {cfg.train.batch_size}"
        )
    space = model_space(cfg.model)
    try:  # the strategy checks its own section against the space it will train (before any data is read)
        get_strategy_class(cfg.strategy.name).check_config(cfg.strategy, space)
    except ConfigError:
        raise
    except ValueError as e:
        raise ConfigError(first_line(e)) from None
    return cfg


def model_space(m: ModelConfig) -> Space:
    """The space of a model section: the registered space at its width and resolutions, with its kernel
    choices restricted by ``kernels`` or fixed per stage by ``stage_kernels`` (default classes and channels)."""
    space = get_space(m.space, m.width_mult, m.resolutions)
    if m.kernels is not None and m.stage_kernels is not None:
        raise ConfigError("model.stage_kernels: set either model.kernels or model.stage_kernels, not both")
    if m.stage_kernels is not None:
        if len(m.stage_kernels) != space.num_stages:
            raise ConfigError(f"model.stage_kernels: {m.stage_kernels} is not valid; need one kernel for each of "
                              f"the {space.num_stages} stages of '{space.name}'")
        for s, (k, st) in enumerate(zip(m.stage_kernels, space.stages)):
            if k not in st.kernels:
                raise ConfigError(f"model.stage_kernels: {k} for stage {s} is not valid; valid: "
                                  f"{', '.join(map(str, st.kernels))}")
        space = space.restrict(kernels=[(k,) for k in m.stage_kernels])
    for name in ("kernels", "depths", "expands"):
        wanted = getattr(m, name)
        if wanted is None:
            continue
        valid = sorted({v for st in space.stages for v in getattr(st, name) if len(getattr(st, name)) > 1})
        if not wanted or any(v not in valid for v in wanted):
            raise ConfigError(f"model.{name}: {wanted} is not valid; choose among {', '.join(f'{v:g}' for v in valid)}")
        space = space.restrict(**{name: wanted})
    return space


def _get(cfg: Config, key: str) -> Any:
    obj = cfg
    for part in key.split("."):
        obj = getattr(obj, part)
    return obj


# ---------------------------------------------------------------------------------------------------
# dict <-> dataclasses with type checks
# ---------------------------------------------------------------------------------------------------


def _check_type(key: str, value: Any, tp: Any) -> Any:
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        args = typing.get_args(tp)
        if value is None and type(None) in args:
            return None
        errors = []
        for arg in args:
            if arg is type(None):
                continue
            try:
                return _check_type(key, value, arg)
            except ConfigError as e:
                errors.append(str(e))
        raise ConfigError(errors[0] if errors else f"{key}: {value!r} is not valid")
    if origin is list:
        (item,) = typing.get_args(tp)
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{key}: {value!r} is not valid; expected a list")
        return [_check_type(f"{key}[{i}]", v, item) for i, v in enumerate(value)]
    if origin is dict or tp is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"{key}: {value!r} is not valid; expected a mapping")
        return dict(value)
    if tp is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{key}: {value!r} is not valid; expected true or false")
        return value
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            if isinstance(value, float) and value.is_integer():
                return int(value)
            raise ConfigError(f"{key}: {value!r} is not valid; expected an integer")
        return value
    if tp is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"{key}: {value!r} is not valid; expected a number")
        return float(value)
    if tp is str:
        if isinstance(value, bool):  # YAML 1.1 reads on/off/yes/no as booleans: `train.progress=off`
            return "on" if value else "off"
        if not isinstance(value, str):
            raise ConfigError(f"{key}: {value!r} is not valid; expected a string")
        return value
    raise ConfigError(f"{key}: unsupported type {tp}")  # pragma: no cover


def _from_dict(cls, data: dict, prefix: str):
    if not isinstance(data, dict):
        raise ConfigError(f"{prefix or 'config'}: expected a mapping, got {type(data).__name__}")
    hints = typing.get_type_hints(cls)
    names = [f.name for f in dataclasses.fields(cls)]
    kwargs = {}
    for key, value in data.items():
        full = f"{prefix}{key}"
        if key not in names:
            raise ConfigError(f"{full}: unknown field; valid: {', '.join(names)}")
        tp = hints[key]
        if dataclasses.is_dataclass(tp):
            kwargs[key] = _from_dict(tp, value or {}, f"{full}.")
        else:
            kwargs[key] = _check_type(full, value, tp)
    return cls(**kwargs)


def config_from_dict(data: dict) -> Config:
    """Build and validate a Config from a (possibly partial) nested dict."""
    return _validate(_from_dict(Config, data or {}, ""))


def to_dict(cfg: Config) -> dict:
    return dataclasses.asdict(cfg)


def to_yaml(cfg: Config) -> str:
    return yaml.safe_dump(to_dict(cfg), sort_keys=False)


def list_presets() -> list[str]:
    return sorted(p.stem for p in PRESET_DIR.glob("*.yaml"))


def _read_yaml(path: Path) -> dict:
    try:
        data = yaml.safe_load(path.read_text())
    except yaml.YAMLError as e:
        raise ConfigError(f"{path}: not valid YAML ({str(e).splitlines()[0]})") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a mapping at the top level")
    return data


def resolve_preset(name_or_path: str) -> Path:
    path = Path(name_or_path)
    if path.suffix in (".yaml", ".yml") or path.exists():
        if not path.is_file():
            raise ConfigError(f"config: file '{name_or_path}' not found")
        return path
    preset = PRESET_DIR / f"{name_or_path}.yaml"
    if not preset.is_file():
        raise ConfigError(
            f"config: unknown preset '{name_or_path}'; valid: {', '.join(list_presets())} or a .yaml path"
        )
    return preset


def apply_overrides(data: dict, overrides: list[str]) -> dict:
    """Apply ``section.field=value`` overrides (values parsed as YAML) to a nested dict."""
    data = {k: (dict(v) if isinstance(v, dict) else v) for k, v in data.items()}
    for item in overrides:
        if "=" not in item:
            raise ConfigError(f"override '{item}' is not valid; expected section.field=value, e.g. train.epochs=3")
        key, text = item.split("=", 1)
        try:
            value = yaml.safe_load(text) if text != "" else None
        except yaml.YAMLError:
            value = text
        parts = key.strip().split(".")
        target = data
        for part in parts[:-1]:
            if not isinstance(target.get(part, {}), dict):
                raise ConfigError(f"override '{item}': {part} is not a section")
            target = target.setdefault(part, {})
        target[parts[-1]] = value
    return data


def _merge(base: dict, over: dict) -> dict:
    out = dict(base)
    for key, value in over.items():
        out[key] = _merge(out[key], value) if isinstance(value, dict) and isinstance(out.get(key), dict) else value
    return out


def load_tree(name_or_path: str, _seen: tuple[str, ...] = ()) -> dict:
    """The raw YAML mapping of a preset or file, with ``inherit: <preset or file>`` resolved (deep merge)."""
    path = resolve_preset(name_or_path)
    data = _read_yaml(path)
    parent = data.pop("inherit", None)
    if parent is None:
        return data
    if not isinstance(parent, str):
        raise ConfigError(f"{path}: inherit: {parent!r} is not valid; expected a preset name or a .yaml path")
    if parent in _seen:
        raise ConfigError(f"{path}: inherit: '{parent}' makes a cycle ({' -> '.join((*_seen, parent))})")
    return _merge(load_tree(parent, (*_seen, name_or_path)), data)


def load_config(name_or_path: str | None = None, overrides: list[str] | None = None) -> Config:
    """Load a preset (by name) or a YAML file (``inherit:`` another one), apply dotted overrides, validate."""
    data = load_tree(name_or_path) if name_or_path else {}
    return config_from_dict(apply_overrides(data, list(overrides or [])))


def field_docs(cls=Config, prefix: str = "") -> list[tuple[str, str, Any, str]]:
    """(dotted name, type, default, docstring) of every field, read from the attribute docstrings."""
    source = textwrap.dedent(inspect.getsource(cls))
    tree = ast.parse(source).body[0]
    docs, last = {}, None
    for node in tree.body:
        if isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name):
            last = node.target.id
        elif isinstance(node, ast.Expr) and isinstance(getattr(node, "value", None), ast.Constant) and last:
            docs[last] = " ".join(str(node.value.value).split())
            last = None
    hints = typing.get_type_hints(cls)
    rows = []
    for f in dataclasses.fields(cls):
        tp = hints[f.name]
        if dataclasses.is_dataclass(tp):
            rows += field_docs(tp, f"{prefix}{f.name}.")
            continue
        default = f.default if f.default is not dataclasses.MISSING else None
        type_name = str(tp).replace("typing.", "") if not isinstance(tp, type) else tp.__name__
        rows.append((f"{prefix}{f.name}", type_name, default, docs.get(f.name, "")))
    return rows
