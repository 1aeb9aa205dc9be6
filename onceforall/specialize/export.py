"""Deployable subnets: safetensors weights + a JSON sidecar that rebuilds the module without the supernet.

Export a static subnet (what ``net.extract(arch)`` returns) and load it back anywhere::

    from onceforall.specialize.export import export_subnet, load_subnet, read_sidecar
    from onceforall.specialize.timing import measure_latency_ms

    sub = net.extract(arch)
    sidecar = export_subnet(sub, "exports/", accuracy={"top1": 86.1, "split": "test", "images": 10000,
                                                       "dataset": "fashion-mnist"},
                            normalization={"mean": [0.286], "std": [0.353]}, onnx=True, torchscript=True)
    sub2 = load_subnet(sidecar)          # or the .safetensors path; eval mode, weights verified
    info = read_sidecar(sidecar)         # the validated JSON as a dict
    ms = measure_latency_ms(sub2, (1, 1, 20, 20), threads=1)   # median wall-clock ms on the CPU

Files written to ``out_dir`` (``<arch>`` is the arch's string form, e.g. ``r20_k3e4-k5e6_...``):

* ``<arch>.safetensors`` -- the module's ``state_dict()`` (parameters and BN buffers; floating tensors as
  float32), tensors only: nothing is unpickled when loading.
* ``<arch>.json`` -- the sidecar (below), written last: its presence means the export is complete.
* ``<arch>.onnx`` (``onnx=True``) -- input ``"input"`` NCHW float32 at the arch's resolution with a dynamic
  batch axis ``"batch"``, output ``"logits"``; opset 17 from torch's TorchScript-based exporter (fast), or
  opset 18 from the torch.export-based one where the former is unavailable. Checked against torch with
  onnxruntime at export time when onnxruntime is installed.
* ``<arch>.pt`` (``torchscript=True``) -- ``torch.jit.trace`` of the module in eval mode (the input must be at
  the arch's resolution: the resize of ``Subnet.forward`` is traced as a no-op). Checked against eager.

Sidecar fields (format 2; format 1, without ``preprocessing`` and ``checksums``, still loads):

* ``format`` -- 2.  ``onceforall`` -- version of the package that wrote it.
* ``arch`` -- string form; ``arch_json`` -- ``Arch.to_json()`` (must agree with ``arch``).
* ``space`` -- ``{name, width_mult, resolutions, num_classes, in_channels}``: ``get_space(**space)`` rebuilds
  the space (for a subnet of a restricted space: the unrestricted space, which contains the arch; only
  registered spaces can be exported).
* ``dropout`` -- the classifier's dropout rate (inactive in eval mode; kept so the module is rebuilt as-is).
* ``input`` -- ``{channels, resolution, layout: "NCHW", dtype: "float32"}``.
* ``normalization`` -- ``{mean: [...], std: [...]}`` (one value per input channel, applied by the caller
  before the network) or null.
* ``macs`` -- analytic multiply-accumulates per image (``space.macs(arch)``); ``params`` -- sum of ``numel`` of
  the module's parameters (equals ``space.params(arch)``). Both are re-checked by :func:`load_subnet`.
* ``accuracy`` / ``latency`` / ``source`` -- the caller's dicts, e.g. ``{"top1", "split", "images",
  "dataset"}``, ``{"ms", "backend", "threads", "batch", "device"}``, ``{"run", "step", "checkpoint"}``; or null.
* ``preprocessing`` -- the whole recipe from a raw image to the network's input (:mod:`onceforall.data.recipe`:
  color, resize / pad / crop steps, scale, normalization), or null; :func:`load_preprocess` applies it.
* ``files`` -- ``{safetensors, onnx?, torchscript?}``: bare file names of the siblings.
* ``sha256`` -- hex digest of the safetensors file; ``checksums`` -- ``{kind: sha256}`` of every file in ``files``
  (:func:`verify_export` checks them all; :func:`load_subnet` checks the safetensors file it reads).

Errors are one-line ``ValueError`` messages naming the file and the missing or bad field.
"""

from __future__ import annotations

import hashlib
import io
import json
import math
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ..core.arch import Arch
from ..core.registry import IDENTITY_FIELDS, space_from_identity
from ..core.space import Space
from ..core.subnet import Subnet, build_subnet
from ..core.util import atomic_write, first_line, is_int, is_number, nonfinite_keys
from ..core.version import __version__
from ..data.recipe import apply_recipe
from .memory import peak_memory
from .onnx_export import ort_session, quiet_export, to_onnx

__all__ = ["FORMAT", "export_subnet", "load_preprocess", "load_subnet", "read_sidecar", "verify_export"]

FORMAT = 2
_SUFFIXES = (".json", ".safetensors", ".onnx", ".pt")
_REQUIRED = ("format", "onceforall", "arch", "arch_json", "space", "dropout", "input", "normalization", "macs",
             "params", "accuracy", "latency", "source", "files", "sha256")
_REQUIRED_V2 = ("preprocessing", "checksums")  # format 1 sidecars (without them) still load


def _write_hashed(path: Path, data: bytes) -> str:
    """Write ``data`` to ``path`` atomically; its SHA-256 (the sidecar's checksum of the file)."""
    atomic_write(path, lambda p: p.write_bytes(data))
    return hashlib.sha256(data).hexdigest()


def _file_sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _check_preprocessing(value: Any, where: str) -> dict | None:
    """A recipe of :mod:`onceforall.data.recipe` (or None): color, steps, scale, normalization."""
    if value is None:
        return None
    if (not isinstance(value, dict) or not {"color", "steps", "scale", "normalization"} <= set(value)
            or not isinstance(value["steps"], list)
            or not all(isinstance(st, dict) and isinstance(st.get("op"), str) and is_int(st.get("size"))
                       for st in value["steps"])):
        raise ValueError(f"{where}: field 'preprocessing' must be null or {{color, steps: [{{op, size, ...}}], "
                         "scale, normalization}")
    return value


# ----------------------------------------------------------------------------------------------------
# small helpers
# ----------------------------------------------------------------------------------------------------


def _fresh_subnet(space: Space, arch: Arch, dropout: float) -> Subnet:
    with torch.random.fork_rng(devices=[]):  # the throwaway init must not move the caller's RNG
        return build_subnet(space, arch, dropout)


def _check_json_dict(name: str, value: Any) -> dict | None:
    if value is None:
        return None
    if not isinstance(value, dict):
        raise ValueError(f"export: {name} must be a dict or None, got {type(value).__name__}")
    try:
        return json.loads(json.dumps(value, allow_nan=False))
    except (TypeError, ValueError) as e:
        raise ValueError(f"export: {name} is not JSON-serialisable: {first_line(e)}") from None


def _check_normalization(value: Any, channels: int, where: str) -> dict | None:
    if value is None:
        return None
    if not isinstance(value, dict) or not {"mean", "std"} <= set(value):
        raise ValueError(f"{where}: field 'normalization' must be null or {{mean: [...], std: [...]}}")
    out = {}
    for key in ("mean", "std"):
        v = value[key]
        if (not isinstance(v, (list, tuple)) or len(v) != channels
                or not all(isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x) for x in v)):
            raise ValueError(f"{where}: field 'normalization.{key}' must be {channels} finite number(s) "
                             f"(one per input channel), got {v!r}")
        out[key] = [float(x) for x in v]
    if any(s <= 0 for s in out["std"]):
        raise ValueError(f"{where}: field 'normalization.std' must be positive, got {out['std']}")
    return {**{k: v for k, v in value.items() if k not in out}, **out}


# ----------------------------------------------------------------------------------------------------
# export
# ----------------------------------------------------------------------------------------------------


def _rebuilt_space(space: Space, arch: Arch) -> Space:
    """The space rebuilt from its identity, as ``load_subnet`` will; a ValueError when it cannot be (an unregistered
    space, a modified skeleton or BN setting), since the export could not be loaded back."""
    ident = space.identity()
    try:
        rebuilt_space = space_from_identity(ident)
    except ValueError as e:
        raise ValueError(f"export: space '{space.name}' cannot be rebuilt by get_space ({first_line(e)}); "
                         "only registered spaces can be exported") from None
    if (rebuilt_space.skeleton_key() != space.skeleton_key() or rebuilt_space.bn_eps != space.bn_eps
            or rebuilt_space.bn_momentum != space.bn_momentum or not rebuilt_space.contains(arch)):
        raise ValueError(f"export: space '{space.name}' differs from what get_space({ident}) builds (a modified "
                         "skeleton or BN setting); such a subnet cannot be rebuilt from a sidecar")
    return rebuilt_space


def canonical_safetensors(blob: bytes) -> bytes:
    """``blob`` (a safetensors file) with its ``__metadata__`` keys in sorted order: safetensors writes them in
    a per-process hash order, which made identical exports differ byte for byte (and in sha256). Tensor entries
    and data stay as written; the header keeps its length and 8-byte alignment."""
    n = int.from_bytes(blob[:8], "little")
    header = json.loads(blob[8 : 8 + n])
    if "__metadata__" in header:
        header = {"__metadata__": dict(sorted(header["__metadata__"].items())),
                  **{k: v for k, v in header.items() if k != "__metadata__"}}
    text = json.dumps(header, separators=(",", ":"), ensure_ascii=False).encode()
    if len(text) > n:  # not the compact form safetensors writes: leave the file as it is
        return blob
    return blob[:8] + text + b" " * (n - len(text)) + blob[8 + n :]


def _write_onnx(model: torch.nn.Module, example: torch.Tensor, expected: torch.Tensor, path: Path) -> str:
    """Write the ONNX export of ``model`` after checking it against eager outputs; its SHA-256."""
    proto = to_onnx(model, [example], ["input"], ["logits"], dynamic_batch=True)
    data = proto.SerializeToString()
    _verify_onnx(data, example, expected, path)
    return _write_hashed(path, data)


def _without_debug_records(data: bytes) -> bytes:
    """A TorchScript archive ``data`` without its ``*.debug_pkl`` records: those hold the source ranges of the
    trace, with the absolute paths of the exporting machine's Python files (its install and the calling script),
    so exports of the same subnet differed between machines and named their folders. The module runs without
    them (only error messages lose their source lines). The archive is rewritten with torch's own zip writer,
    which keeps its record alignment (a torch without it: ``data`` as it is, still a valid archive)."""
    if not (hasattr(torch._C, "PyTorchFileReader") and hasattr(torch._C, "PyTorchFileWriter")):
        return data
    reader = torch._C.PyTorchFileReader(io.BytesIO(data))
    out = io.BytesIO()
    writer = torch._C.PyTorchFileWriter(out)
    for name in reader.get_all_records():
        if not name.endswith(".debug_pkl"):
            record = reader.get_record(name)
            writer.write_record(name, record, len(record))
    writer.write_end_of_file()
    return out.getvalue()


def _write_torchscript(model: torch.nn.Module, example: torch.Tensor, expected: torch.Tensor, path: Path,
                       arch: Arch) -> str:
    """Write the TorchScript trace of ``model``, checked against eager outputs as it is read back; its SHA-256.
    The bytes depend only on the subnet and torch's version: saved to memory (torch.jit.save names the archive's
    root folder after the file, and atomic_write's temporary name holds a pid) and without debug records."""
    buffer = io.BytesIO()
    with quiet_export(), torch.no_grad():
        torch.jit.save(torch.jit.trace(model, example, check_trace=False), buffer)
    data = _without_debug_records(buffer.getvalue())
    with quiet_export(), torch.no_grad(), torch.jit.optimized_execution(False):  # one check run: no profiling
        diff = (torch.jit.load(io.BytesIO(data))(example) - expected).abs().max().item()
    if not diff <= 1e-5:
        raise ValueError(f"export: TorchScript trace of '{arch}' differs from eager by {diff:.3g}")
    return _write_hashed(path, data)


def _sidecar(sub: Subnet, ident: dict, normalization: dict | None, preprocessing: dict | None, params: int,
             accuracy: dict | None, latency: dict | None, source: dict | None, files: dict, checksums: dict) -> dict:
    """The JSON sidecar of an exported subnet (its keys in the order the format lists them)."""
    space, arch = sub.space, sub.arch
    return {
        "format": FORMAT,
        "onceforall": __version__,
        "arch": str(arch),
        "arch_json": arch.to_json(),
        "space": ident,
        "dropout": float(sub.dropout_rate),
        "input": {"channels": space.in_channels, "resolution": arch.resolution, "layout": "NCHW",
                  "dtype": "float32"},
        "normalization": normalization,
        "preprocessing": preprocessing,
        "macs": space.macs(arch),
        "params": params,
        "peak_memory": {"bytes": peak_memory(space, arch, "float32"), "dtype": "float32", "batch": 1,
                        "counts": "activations alive at once in the inference forward (BN folded, in-place "
                                  "activations; onceforall.specialize.memory)"},
        "accuracy": accuracy,
        "latency": latency,
        "source": source,
        "files": files,
        "sha256": checksums["safetensors"],
        "checksums": checksums,
    }


def export_subnet(
    sub: Subnet,
    out_dir: str | Path,
    *,
    accuracy: dict | None = None,
    latency: dict | None = None,
    source: dict | None = None,
    normalization: dict | None = None,
    preprocessing: dict | None = None,
    onnx: bool = False,
    torchscript: bool = False,
) -> Path:
    """Write ``<out_dir>/<arch>.safetensors`` and the ``<arch>.json`` sidecar (plus ``.onnx`` / ``.pt`` on
    request) for a static subnet; returns the sidecar path. ``sub`` is not modified.

    The space must be rebuildable from its identity (a registered space, possibly restricted); otherwise a
    ValueError says why, since the export could not be loaded back.
    """
    if not isinstance(sub, Subnet):
        raise ValueError(f"export: expected a onceforall Subnet (net.extract(arch)), got {type(sub).__name__}")
    space, arch = sub.space, sub.arch
    ident = space.identity()
    rebuilt_space = _rebuilt_space(space, arch)
    where = "export"
    accuracy = _check_json_dict("accuracy", accuracy)
    latency = _check_json_dict("latency", latency)
    source = _check_json_dict("source", source)
    normalization = _check_normalization(normalization, space.in_channels, where)
    preprocessing = _check_preprocessing(preprocessing, where)
    bad = nonfinite_keys(sub.state_dict())
    if bad:
        raise ValueError(f"export: the subnet holds non-finite values ({bad[0]}); it cannot be deployed")

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    stem = str(arch)
    files = {"safetensors": f"{stem}.safetensors"}

    # A float32 CPU copy rebuilt exactly as load_subnet will do it: proves the sidecar suffices, and the
    # ONNX / TorchScript exports never touch the caller's module (its device, dtype or train mode).
    state = {k: (v.detach().float() if v.is_floating_point() else v.detach()).cpu().contiguous()
             for k, v in sub.state_dict().items()}
    model = _fresh_subnet(rebuilt_space, arch, sub.dropout_rate)
    _load_state(model, state, where)
    model.eval()
    params = sum(p.numel() for p in model.parameters())
    if params != space.params(arch):
        raise ValueError(f"export: the module has {params} parameters but space.params(arch) is "
                         f"{space.params(arch)}; is it really the subnet of '{arch}'?")

    from safetensors.torch import save

    blob = canonical_safetensors(save(state, metadata={"format": "pt", "arch": stem}))
    checksums = {"safetensors": _write_hashed(out_dir / files["safetensors"], blob)}

    example = torch.randn(2, space.in_channels, arch.resolution, arch.resolution,
                          generator=torch.Generator().manual_seed(0))
    if onnx or torchscript:
        with torch.no_grad():
            expected = model(example)
    if onnx:
        files["onnx"] = f"{stem}.onnx"
        checksums["onnx"] = _write_onnx(model, example, expected, out_dir / files["onnx"])
    if torchscript:
        files["torchscript"] = f"{stem}.pt"
        checksums["torchscript"] = _write_torchscript(model, example, expected, out_dir / files["torchscript"], arch)

    sidecar = _sidecar(sub, ident, normalization, preprocessing, params, accuracy, latency, source, files,
                       checksums)
    json_path = out_dir / f"{stem}.json"
    atomic_write(json_path, lambda p: p.write_text(json.dumps(sidecar, indent=2) + "\n"))
    return json_path


def _verify_onnx(data: bytes, example: torch.Tensor, expected: torch.Tensor, path: Path) -> None:
    """Run the ONNX model with onnxruntime (when installed) and compare with torch."""
    try:
        import onnxruntime  # noqa: F401
    except ImportError:
        return
    out = ort_session(data, 1).run(None, {"input": example.numpy()})[0]
    diff = float((torch.from_numpy(out) - expected).abs().max())
    if not diff <= 1e-4:
        raise ValueError(f"export: {path} differs from torch by {diff:.3g} under onnxruntime (tolerance 1e-4)")


def _load_state(model: nn.Module, state: dict[str, torch.Tensor], where: str) -> None:
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as e:
        text = " ".join(str(e).split())
        raise ValueError(f"{where}: weights do not fit the arch: {text[:400]}") from None


# ----------------------------------------------------------------------------------------------------
# reading
# ----------------------------------------------------------------------------------------------------


def _sidecar_path(path: str | Path) -> Path:
    path = Path(path)
    for suffix in _SUFFIXES:
        if path.name.endswith(suffix):
            return path.with_name(path.name[: -len(suffix)] + ".json")
    raise ValueError(f"sidecar {path}: expected a .json sidecar or its .safetensors/.onnx/.pt sibling")


def _check_sidecar_space(sp: Any, arch: Arch, bad: Callable[[str, str], ValueError]) -> None:
    """The sidecar's ``space`` field: a space identity whose resolutions include the arch's."""
    if not isinstance(sp, dict):
        raise bad("space", "must be an object {name, width_mult, resolutions, num_classes, in_channels}")
    for key in IDENTITY_FIELDS:
        if key not in sp:
            raise bad(f"space.{key}", "is missing")
    if not isinstance(sp["name"], str):
        raise bad("space.name", "must be a string")
    if not is_number(sp["width_mult"]):
        raise bad("space.width_mult", "must be a number")
    if not isinstance(sp["resolutions"], list) or not sp["resolutions"] or not all(map(is_int, sp["resolutions"])):
        raise bad("space.resolutions", "must be a non-empty list of integers")
    for key in ("num_classes", "in_channels"):
        if not is_int(sp[key]) or sp[key] < 1:
            raise bad(f"space.{key}", "must be a positive integer")
    if arch.resolution not in sp["resolutions"]:
        raise bad("space.resolutions", f"{sp['resolutions']} do not include the arch's resolution {arch.resolution}")


def _check_sidecar_files(data: dict[str, Any], path: Path, bad: Callable[[str, str], ValueError]) -> None:
    """The sidecar's ``files``, ``sha256`` and (format 2) ``preprocessing`` and ``checksums`` fields."""
    files = data["files"]
    if not isinstance(files, dict):
        raise bad("files", "must be an object {safetensors, onnx?, torchscript?}")
    if "safetensors" not in files:
        raise bad("files.safetensors", "is missing")
    for key, name in files.items():
        if key not in ("safetensors", "onnx", "torchscript"):
            raise bad(f"files.{key}", "is not a known file kind (safetensors, onnx, torchscript)")
        if not isinstance(name, str) or not name or Path(name).name != name or name in (".", ".."):
            raise bad(f"files.{key}", f"must be a bare file name next to the sidecar, got {name!r}")
    sha = data["sha256"]
    if not _is_sha256(sha):
        raise bad("sha256", "must be 64 lowercase hex digits")
    if data["format"] == FORMAT:
        _check_preprocessing(data["preprocessing"], f"sidecar {path}")
        sums = data["checksums"]
        if not isinstance(sums, dict) or set(sums) != set(files) or not all(map(_is_sha256, sums.values())):
            raise bad("checksums", f"must give a sha256 (64 hex digits) for each of files ({', '.join(files)})")
        if sums["safetensors"] != sha:
            raise bad("checksums.safetensors", "differs from field 'sha256'")


def read_sidecar(path: str | Path) -> dict[str, Any]:
    """Read and validate an export sidecar (``path``: the ``.json`` or a sibling such as the ``.safetensors``).

    Checks the format, the presence and type of every field, and that ``arch``/``arch_json``/``input`` agree;
    a problem raises a one-line ValueError naming the file and the field.
    """
    path = _sidecar_path(path)
    if not path.is_file():
        raise ValueError(f"sidecar {path}: not found (export_subnet writes <arch>.json next to the weights)")
    try:
        data = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise ValueError(f"sidecar {path}: not valid JSON: {first_line(e)}") from None
    if not isinstance(data, dict):
        raise ValueError(f"sidecar {path}: expected a JSON object, got {type(data).__name__}")

    def bad(field: str, why: str) -> ValueError:
        return ValueError(f"sidecar {path}: field '{field}' {why}")

    if "format" not in data:
        raise bad("format", "is missing; not a onceforall export sidecar")
    if data["format"] not in (1, FORMAT):
        raise bad("format", f"is {data['format']!r}; this onceforall reads formats 1 and {FORMAT}")
    for key in _REQUIRED + (_REQUIRED_V2 if data["format"] == FORMAT else ()):
        if key not in data:
            raise bad(key, "is missing")
    if not isinstance(data["onceforall"], str):
        raise bad("onceforall", "must be a version string")
    if not isinstance(data["arch"], str):
        raise bad("arch", "must be a string")
    if not isinstance(data["arch_json"], dict):
        raise bad("arch_json", "must be an object")
    try:
        arch = Arch.from_json(data["arch_json"])
    except (ValueError, TypeError) as e:
        raise bad("arch_json", f"is not a valid arch: {first_line(e)}") from None
    if str(arch) != data["arch"]:
        raise bad("arch", f"'{data['arch']}' disagrees with arch_json ('{arch}')")

    sp = data["space"]
    _check_sidecar_space(sp, arch, bad)
    if not is_number(data["dropout"]) or not 0 <= data["dropout"] < 1:
        raise bad("dropout", "must be a number in [0, 1)")

    inp = data["input"]
    if not isinstance(inp, dict):
        raise bad("input", "must be an object {channels, resolution, layout, dtype}")
    expected_input = {"channels": sp["in_channels"], "resolution": arch.resolution, "layout": "NCHW",
                      "dtype": "float32"}
    for key, value in expected_input.items():
        if key not in inp:
            raise bad(f"input.{key}", "is missing")
        if inp[key] != value:
            raise bad(f"input.{key}", f"is {inp[key]!r}; expected {value!r}")
    _check_normalization(data["normalization"], sp["in_channels"], f"sidecar {path}")
    for key in ("macs", "params"):
        if not is_int(data[key]) or data[key] < 0:
            raise bad(key, "must be a non-negative integer")
    for key in ("accuracy", "latency", "source"):
        if data[key] is not None and not isinstance(data[key], dict):
            raise bad(key, "must be an object or null")

    _check_sidecar_files(data, path, bad)
    return data


def _is_sha256(v: Any) -> bool:
    return isinstance(v, str) and len(v) == 64 and all(c in "0123456789abcdef" for c in v)


def load_preprocess(path: str | Path) -> Callable[[Any], torch.Tensor]:
    """The sidecar's preprocessing as a function: a raw image (PIL, or a uint8 array / tensor) -> the network's
    float32 (C, r, r) input, exactly as the run evaluated it. A sidecar without a recipe is a one-line error."""
    data = read_sidecar(path)
    recipe = data.get("preprocessing")
    if recipe is None:
        raise ValueError(f"sidecar {_sidecar_path(path)}: field 'preprocessing' is missing or null; this export "
                         "does not record how its inputs were prepared")
    return lambda image: apply_recipe(recipe, image)


def verify_export(path: str | Path) -> list[Path]:
    """Check every file of an export against the sidecar's checksums (safetensors, ONNX, TorchScript); returns
    the files checked. A missing or modified file is a one-line ValueError naming it."""
    data = read_sidecar(path)
    json_path = _sidecar_path(path)
    sums = data["checksums"] if data["format"] == FORMAT else {"safetensors": data["sha256"]}
    checked = []
    for kind, digest in sums.items():
        f = json_path.parent / data["files"][kind]
        if not f.is_file():
            raise ValueError(f"sidecar {json_path}: field 'files.{kind}': {f} not found")
        got = _file_sha256(f)
        if got != digest:
            raise ValueError(f"sidecar {json_path}: {f} does not match its checksum (file has {got[:12]}..., "
                             f"sidecar says {digest[:12]}...); it was modified or truncated")
        checked.append(f)
    return checked


def load_subnet(path: str | Path, *, verify: bool = True) -> Subnet:
    """Rebuild an exported subnet from its sidecar alone and load its weights (strict); eval mode.

    With ``verify`` (default) the safetensors file's sha256 must match the sidecar, and the analytic MACs
    and the parameter count of the rebuilt module must equal the sidecar's ``macs`` and ``params``; any
    mismatch raises a one-line ValueError naming the field and the file. No supernet is involved.
    """
    data = read_sidecar(path)
    json_path = _sidecar_path(path)
    where = f"sidecar {json_path}"
    try:
        space = space_from_identity(data["space"])
        arch = space.parse(data["arch"])
    except ValueError as e:
        raise ValueError(f"{where}: field 'space' does not rebuild the arch: {first_line(e)}") from None
    st_path = json_path.parent / data["files"]["safetensors"]
    if not st_path.is_file():
        raise ValueError(f"{where}: field 'files.safetensors': {st_path} not found")
    blob = st_path.read_bytes()  # one read: the bytes checked are the bytes loaded
    if verify:
        digest = hashlib.sha256(blob).hexdigest()
        if digest != data["sha256"]:
            raise ValueError(f"{where}: field 'sha256' does not match {st_path} (file has {digest[:12]}..., "
                             f"sidecar says {data['sha256'][:12]}...); the weights were modified or truncated")
    from safetensors.torch import load

    try:
        state = load(blob)
    except Exception as e:  # header or size corruption
        raise ValueError(f"{where}: {st_path} is not a readable safetensors file: {first_line(e)}") from None
    nonfinite = nonfinite_keys(state)
    if nonfinite:
        raise ValueError(f"{where}: {st_path} holds non-finite weights ({nonfinite[0]})")
    model = _fresh_subnet(space, arch, float(data["dropout"]))
    _load_state(model, state, f"{where}: {st_path}")
    if verify:
        macs = space.macs(arch)
        if macs != data["macs"]:
            raise ValueError(f"{where}: field 'macs' is {data['macs']} but the arch has {macs} (space.macs)")
        params = sum(p.numel() for p in model.parameters())
        if params != data["params"] or params != space.params(arch):
            raise ValueError(f"{where}: field 'params' is {data['params']} but the rebuilt module has {params} "
                             f"(space.params: {space.params(arch)})")
        memory = data.get("peak_memory")  # sidecars written before it existed have none
        if memory is not None and memory.get("bytes") != peak_memory(space, arch, memory.get("dtype", "float32")):
            raise ValueError(f"{where}: field 'peak_memory' is {memory.get('bytes')} bytes but the arch needs "
                             f"{peak_memory(space, arch, memory.get('dtype', 'float32'))} (specialize.memory)")
    return model.eval()
