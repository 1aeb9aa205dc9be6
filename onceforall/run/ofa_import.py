"""OFA's published ImageNet supernets as onceforall supernets and run directories (no training needed).

OFA publishes its supernets as files named by their net id, without an extension (``ofa_mbv3_d234_e346_k357_w1.0``,
``ofa_mbv3_d234_e346_k357_w1.2``, ``ofa_proxyless_d234_e346_k357_w1.3``), each ``{"state_dict": ...}``. Users
download them themselves; nothing here downloads. The key renaming and the spaces are in
:mod:`onceforall.core.ofa_compat` (tested against logits computed by OFA's own code).

    net = load_ofa_supernet("ofa_mbv3_d234_e346_k357_w1.0")          # a Supernet, forward equal to OFA's
    import_ofa_run("ofa_mbv3_d234_e346_k357_w1.0", "runs/ofa-w10", ["data.root=/data/imagenet"])
    # then: onceforall eval / search / export / latency-table runs/ofa-w10, or train --init-from runs/ofa-w10
"""

from __future__ import annotations

import shutil
from collections.abc import Callable
from pathlib import Path

import torch

from ..core.ofa_compat import OFA_NET_IDS, ofa_net_id_space, ofa_state_dict_to_ours
from ..core.supernet import Supernet, build_supernet
from ..core.util import first_line, nonfinite_keys
from .checkpoint import save_checkpoint
from .config import Config, load_config, to_dict
from .rundir import MetricsLog, RunDir
from .setup import resolve_val_split

__all__ = ["import_ofa_run", "load_ofa_supernet", "ofa_net_id_of"]

# The preset whose data, optimization and evaluation settings an imported run gets, per OFA space.
_PRESET = {"mbv3": "imagenet", "proxyless": "imagenet-proxyless"}


def ofa_net_id_of(path: str | Path, net_id: str | None = None) -> str:
    """``net_id``, or the file's name when it is one of OFA's net ids (OFA names its files by them)."""
    if net_id is not None:
        ofa_net_id_space(net_id)  # a one-line error for an unknown id
        return net_id
    name = Path(path).name
    for suffix in (".pth.tar", ".pth", ".pt", ".tar"):
        name = name.removesuffix(suffix)
    if name.startswith("ofa_"):
        ofa_net_id_space(name)  # one of OFA's names that is not supported here (ofa_resnet50): say why
    if name not in OFA_NET_IDS:
        raise ValueError(f"OFA supernet {path}: the file name does not say which supernet it is; pass --net-id "
                         f"(valid: {', '.join(OFA_NET_IDS)})")
    return name


def load_ofa_supernet(path: str | Path, net_id: str | None = None, *, num_classes: int = 1000) -> Supernet:
    """A supernet holding the weights of OFA's published supernet file ``path`` (``{"state_dict": ...}``, read with
    ``weights_only=True``: nothing in the file is executed). The space comes from the net id (the file name, or
    ``net_id``); ``.space`` equals OFA's (its resolutions included) and the forward equals OFA's for every arch.
    A file that is not such a supernet is a one-line ValueError naming what is wrong."""
    path = Path(path)
    nid = ofa_net_id_of(path, net_id)
    if not path.is_file():
        raise ValueError(f"OFA supernet {path} not found (download it from OFA's model zoo yourself; nothing is "
                         "downloaded here)")
    try:
        blob = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # a pickle with code in it, a truncated file, not a torch file
        raise ValueError(f"OFA supernet {path} cannot be read safely (weights_only): {first_line(e)}") from None
    state = blob.get("state_dict", blob) if isinstance(blob, dict) else None
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise ValueError(f"OFA supernet {path}: expected {{'state_dict': {{name: tensor}}}}, got "
                         f"{type(blob).__name__}")
    space = ofa_net_id_space(nid, num_classes=num_classes)
    classifier = next((v for k, v in state.items() if k.endswith("classifier.linear.weight")), None)
    if classifier is not None and classifier.shape[0] != num_classes:
        space = ofa_net_id_space(nid, num_classes=int(classifier.shape[0]))
    ours = ofa_state_dict_to_ours(state, space)
    net = build_supernet(space, dropout=0.1, kernel_transform=True, seed=0)
    try:
        net.load_state_dict(ours)
    except RuntimeError as e:
        raise ValueError(f"OFA supernet {path}: does not fit {nid}: {first_line(e)}") from None
    bad = nonfinite_keys(ours)
    if bad:
        raise ValueError(f"OFA supernet {path}: holds non-finite weights ({bad[0]})")
    return net.eval()


def import_ofa_run(path: str | Path, out: str | Path, overrides: list[str] | None = None, *,
                   net_id: str | None = None, force: bool = False,
                   say: Callable[[str], None] | None = None) -> RunDir:
    """Write run directory ``out`` holding OFA's supernet ``path``: ``eval``, ``search``, ``export``,
    ``latency-table`` and ``train --init-from`` accept it like a trained run. Its config is the ImageNet preset of
    the space (``imagenet`` / ``imagenet-proxyless``: ImageNet statistics, 2,000 images for BN recalibration)
    with OFA's space (elastic kernels 3/5/7 with transforms, its resolutions) and ``overrides`` (the data:
    ``data.root=`` an ImageNet-style folder). Unless the overrides set them, the held-out split is sized to the
    folder's training images (10 %, at most 10,000; decided now when ``data.root`` is given, else when the run is
    first loaded) and the data workers to this machine (``data.workers: null``); ``say`` gets a line on each.
    ``force`` replaces a run already in ``out`` (refused otherwise)."""
    nid = ofa_net_id_of(path, net_id)
    net = load_ofa_supernet(path, nid)
    run = RunDir(out)
    if run.last_checkpoint.exists() and not force:
        raise ValueError(f"--out: {run.path} already holds a checkpoint; choose another folder or pass --force to "
                         "replace it")
    space = net.space
    fixed = [f"model.space={space.name}", f"model.width_mult={space.width_mult:g}",
             f"model.resolutions=[{','.join(map(str, space.resolutions))}]", "model.kernels=null",
             "model.kernel_transform=true", "model.dropout=0.1", "strategy.name=full-only"]
    given = {item.split("=", 1)[0].strip() for item in overrides or []}
    sized = [f"data.{k}=null" for k in ("val_split", "workers") if f"data.{k}" not in given]
    cfg: Config = load_config(_PRESET[space.name], [*fixed, *sized, *(overrides or [])])
    if cfg.data.val_split is None and cfg.data.root is not None and Path(cfg.data.root).is_dir():
        cfg, notes = resolve_val_split(cfg)
        for note in notes if say else []:
            say(note)
    if say and cfg.data.workers is None:
        say("data: workers sized to this machine when the run is used (data.workers to choose)")
    if force and run.path.exists():  # the files of the run it replaces: evaluations and searches of other weights
        for target in (run.checkpoints, run.eval_dir, run.search_dir, run.exports_dir, run.metrics_file):
            if target.is_dir():
                shutil.rmtree(target)
            elif target.exists():
                target.unlink()
    run.path.mkdir(parents=True, exist_ok=True)
    run.write_config(cfg)
    save_checkpoint(run.last_checkpoint, {
        "config": to_dict(cfg), "space": space.identity(), "eval_space": space.identity(),
        "model": net.state_dict(), "state": {"step": 0, "train_seconds": 0.0, "eval_seconds": 0.0},
        "source": {"ofa_file": str(path), "net_id": nid},
    })
    metrics = MetricsLog(run)
    metrics.write({"event": "start", "step": 0, "space": space.identity(), "imported_from": str(path),
                   "net_id": nid})
    metrics.write({"event": "end", "step": 0, "imported": True})
    return run
