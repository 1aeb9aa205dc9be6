import dataclasses
import hashlib
import json
import math
import os
import random
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import onceforall as ofa
from onceforall.specialize.export import (
    canonical_safetensors,
    export_subnet,
    load_preprocess,
    load_subnet,
    read_sidecar,
    verify_export,
)
from onceforall.specialize.timing import measure_latency_ms, torch_threads

from .helpers import SPACE_NAMES, randomize_bn_and_transforms


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    """Correctness tests of tiny nets: one thread avoids OpenMP spin-waits when the CPU is shared."""
    with torch_threads(1):
        yield


def _space(name: str, in_channels: int = 2) -> ofa.Space:
    return ofa.get_space(name, width_mult=0.25, resolutions=(16, 20), num_classes=5, in_channels=in_channels)


def _one_line_error(excinfo, *needles: str) -> str:
    msg = str(excinfo.value)
    assert "\n" not in msg, msg
    for needle in needles:
        assert needle in msg, (needle, msg)
    return msg


def _export_reference(out: Path) -> tuple[ofa.Subnet, Path]:
    """One non-trivial subnet exported with everything (weights, sidecar, ONNX when possible, TorchScript)."""
    space = ofa.get_space("mbv3-cifar", width_mult=0.25, resolutions=(20,), num_classes=10, in_channels=1)
    net = ofa.build_supernet(space, seed=2)
    randomize_bn_and_transforms(net, seed=2)
    arch = space.sample(random.Random(5))
    sub = net.extract(arch).eval()
    try:
        import onnxruntime  # noqa: F401
        import onnxscript  # noqa: F401

        with_onnx = True
    except ImportError:
        with_onnx = False
    sidecar = export_subnet(
        sub, out, onnx=with_onnx, torchscript=True,
        accuracy={"top1": 86.1, "split": "test", "images": 10000, "dataset": "fashion-mnist"},
        latency={"ms": 1.2, "backend": "torch", "threads": 1, "batch": 1, "device": "test"},
        source={"run": "runs/x", "step": 702, "checkpoint": "runs/x/last.pt"},
        normalization={"mean": [0.286], "std": [0.353]},
    )
    return sub, sidecar


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    return _export_reference(tmp_path_factory.mktemp("export"))


def test_exports_are_byte_identical_in_another_process_and_name_no_folder(exported, tmp_path):
    """The same subnet exported by another process (another hash seed, working directory and folder) gives the
    same bytes in every file, so the sidecar's checksums identify the model. TorchScript once differed: its
    archive was named after the temporary file (pid, random suffix) and its debug records held the exporter's
    source paths; no file may name this machine's folders."""
    sub, sidecar = exported
    repo = Path(__file__).resolve().parents[1]
    other = tmp_path / "elsewhere"
    code = ("import sys; from pathlib import Path; from tests.test_export import _export_reference; "
            "_export_reference(Path(sys.argv[1]))")
    env = {**os.environ, "PYTHONPATH": str(repo), "PYTHONHASHSEED": "7", "OMP_NUM_THREADS": "1"}
    subprocess.run([sys.executable, "-c", code, str(other)], check=True, cwd=tmp_path, env=env)
    data = read_sidecar(sidecar)
    assert "torchscript" in data["files"]
    assert read_sidecar(other / sidecar.name)["checksums"] == data["checksums"]
    folders = {str(repo), str(Path(ofa.__file__).resolve().parent), str(tmp_path), sys.prefix}
    for name in [sidecar.name, *data["files"].values()]:
        blob = (sidecar.parent / name).read_bytes()
        assert (other / name).read_bytes() == blob, name
        assert not [f for f in folders if f.encode() in blob], name
    assert b".debug_pkl" not in (sidecar.parent / data["files"]["torchscript"]).read_bytes()


@pytest.mark.parametrize("name", SPACE_NAMES)
def test_reloaded_export_matches_supernet(name, tmp_path):
    space = _space(name)
    net = ofa.build_supernet(space, seed=1)
    randomize_bn_and_transforms(net)
    net.eval()
    rng = random.Random(0)
    x = torch.randn(3, 2, 20, 20, generator=torch.Generator().manual_seed(0))  # resized for 16 px archs
    for arch in [space.min(), space.max(), space.sample(rng), space.sample(rng)]:
        sidecar = export_subnet(net.extract(arch), tmp_path / name)
        assert sidecar.name == f"{arch}.json"
        sub = load_subnet(sidecar)
        assert isinstance(sub, ofa.Subnet) and sub.arch == arch and not sub.training
        with torch.no_grad():
            diff = (sub(x) - net(x, arch)).abs().max().item()
        assert diff < 1e-5, (str(arch), diff)


def test_sidecar_fields_and_recomputed_counts(exported):
    sub, sidecar = exported
    data = read_sidecar(sidecar)
    assert read_sidecar(sidecar.with_name(data["files"]["safetensors"])) == data  # the sibling finds it
    space, arch = sub.space, sub.arch
    assert data["format"] == 2 and data["onceforall"] == ofa.__version__
    assert data["arch"] == str(arch) and ofa.Arch.from_json(data["arch_json"]) == arch
    assert data["space"] == {"name": "mbv3-cifar", "width_mult": 0.25, "resolutions": [20], "num_classes": 10,
                             "in_channels": 1}
    assert ofa.get_space(**data["space"]).contains(arch)
    assert data["input"] == {"channels": 1, "resolution": 20, "layout": "NCHW", "dtype": "float32"}
    assert data["normalization"] == {"mean": [0.286], "std": [0.353]}
    assert data["accuracy"]["top1"] == 86.1 and data["latency"]["ms"] == 1.2 and data["source"]["step"] == 702
    assert data["dropout"] == sub.dropout_rate
    st_path = sidecar.parent / data["files"]["safetensors"]
    assert data["sha256"] == hashlib.sha256(st_path.read_bytes()).hexdigest()
    assert data["files"]["torchscript"] == f"{arch}.pt"
    assert set(data["checksums"]) == set(data["files"]) and data["checksums"]["safetensors"] == data["sha256"]
    assert verify_export(sidecar) == [sidecar.parent / data["files"][k] for k in data["checksums"]]

    loaded = load_subnet(st_path)
    assert space.macs(loaded.arch) == data["macs"] == space.macs(arch)
    params = sum(p.numel() for p in loaded.parameters())
    assert params == data["params"] == space.params(arch) == sum(p.numel() for p in sub.parameters())


def test_safetensors_holds_exactly_the_state_dict(exported):
    from safetensors.torch import load_file

    sub, sidecar = exported
    tensors = load_file(str(sidecar.with_name(read_sidecar(sidecar)["files"]["safetensors"])))
    state = sub.state_dict()
    assert set(tensors) == set(state)
    assert any("running_var" in k for k in tensors) and any("num_batches_tracked" in k for k in tensors)
    for key, value in state.items():
        assert isinstance(tensors[key], torch.Tensor)
        assert torch.equal(tensors[key], value.cpu()), key


def test_safetensors_bytes_do_not_depend_on_the_process_hash_order(exported):
    """safetensors writes its metadata keys in a per-process hash order; exports sort them, so the same weights
    give the same bytes and sha256 (30 raw saves in one process show both orders with near certainty)."""
    from safetensors import safe_open
    from safetensors.torch import save

    sub, sidecar = exported
    state = {k: v.detach().float().contiguous() for k, v in sub.state_dict().items() if v.is_floating_point()}
    meta = {"format": "pt", "arch": "x"}
    assert len({canonical_safetensors(save(state, metadata=meta)) for _ in range(30)}) == 1
    written = (sidecar.parent / read_sidecar(sidecar)["files"]["safetensors"]).read_bytes()
    assert canonical_safetensors(written) == written  # the export wrote the sorted form
    with safe_open(str(sidecar.parent / read_sidecar(sidecar)["files"]["safetensors"]), "pt") as f:
        assert f.metadata()["format"] == "pt"


def test_tampered_weights_are_refused(exported, tmp_path):
    _, sidecar = exported
    data = read_sidecar(sidecar)
    for name in (sidecar.name, data["files"]["safetensors"]):
        (tmp_path / name).write_bytes((sidecar.parent / name).read_bytes())
    st_path = tmp_path / data["files"]["safetensors"]
    raw = bytearray(st_path.read_bytes())
    raw[-3] ^= 0x40  # flip a bit of the last tensor's data: still a readable file
    st_path.write_bytes(bytes(raw))
    with pytest.raises(ValueError) as excinfo:
        load_subnet(tmp_path / sidecar.name)
    _one_line_error(excinfo, "sha256", str(st_path))
    load_subnet(tmp_path / sidecar.name, verify=False)  # explicitly unchecked loading still works
    st_path.write_bytes(bytes(raw[: len(raw) // 2]))  # truncated: unreadable even unchecked
    with pytest.raises(ValueError) as excinfo:
        load_subnet(tmp_path / sidecar.name, verify=False)
    _one_line_error(excinfo, "not a readable safetensors file", str(st_path))


def _edit(d: dict, key: str, value) -> dict:
    d = json.loads(json.dumps(d))
    if value is _DELETE:
        del d[key]
    else:
        d[key] = value(d[key]) if callable(value) else value
    return d


_DELETE = object()


@pytest.mark.parametrize(
    "key, value, where, needle",
    [
        ("macs", lambda m: m + 1, "load", "'macs'"),
        ("params", lambda p: p - 1, "load", "'params'"),
        ("params", _DELETE, "read", "'params'"),
        ("sha256", _DELETE, "read", "'sha256'"),
        ("format", 3, "read", "'format'"),
        ("checksums", _DELETE, "read", "'checksums'"),
        ("checksums", lambda c: {"safetensors": c["safetensors"]}, "read", "'checksums'"),
        ("preprocessing", {"steps": "resize"}, "read", "'preprocessing'"),
        ("arch", "r20_k3e3-k3e3_k3e3-k3e3_k3e3-k3e3_k3e3-k3e3_k3e3-k3e3", "read", "'arch'"),
        ("input", lambda i: {**i, "resolution": 32}, "read", "'input.resolution'"),
        ("files", {"safetensors": "../elsewhere.safetensors"}, "read", "'files.safetensors'"),
        ("normalization", {"mean": [0.1, 0.2], "std": [1.0, 1.0]}, "read", "'normalization.mean'"),
    ],
)
def test_bad_sidecar_is_refused_with_one_line(exported, tmp_path, key, value, where, needle):
    _, sidecar = exported
    data = read_sidecar(sidecar)
    st_name = data["files"]["safetensors"]
    (tmp_path / st_name).write_bytes((sidecar.parent / st_name).read_bytes())
    bad = tmp_path / sidecar.name
    bad.write_text(json.dumps(_edit(data, key, value)))
    with pytest.raises(ValueError) as excinfo:
        read_sidecar(bad) if where == "read" else load_subnet(bad)
    _one_line_error(excinfo, needle, str(bad))


def test_missing_sidecar_and_unknown_suffix(tmp_path):
    with pytest.raises(ValueError) as excinfo:
        read_sidecar(tmp_path / "r20_x.safetensors")
    _one_line_error(excinfo, "not found", "r20_x.json")
    with pytest.raises(ValueError) as excinfo:
        read_sidecar(tmp_path / "weights.bin")
    _one_line_error(excinfo, "weights.bin")


def test_onnx_matches_torch_with_dynamic_batch(exported):
    ort = pytest.importorskip("onnxruntime")
    onnx = pytest.importorskip("onnx")
    sub, sidecar = exported
    data = read_sidecar(sidecar)
    path = sidecar.with_name(data["files"]["onnx"])
    model = onnx.load(str(path))
    assert max(op.version for op in model.opset_import if op.domain in ("", "ai.onnx")) >= 17
    dims = model.graph.input[0].type.tensor_type.shape.dim
    assert dims[0].dim_param and not dims[0].HasField("dim_value")
    assert [d.dim_value for d in dims[1:]] == [1, 20, 20]
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    for batch in (1, 3):
        x = torch.randn(batch, 1, 20, 20, generator=torch.Generator().manual_seed(batch))
        with torch.no_grad():
            expected = sub(x)
        out = session.run(None, {session.get_inputs()[0].name: x.numpy()})[0]
        assert out.shape == (batch, 10)
        assert float((torch.from_numpy(out) - expected).abs().max()) < 1e-4


def test_torch_export_based_onnx_fallback(tmp_path, monkeypatch):
    """Where torch no longer ships the TorchScript-based ONNX exporter, the torch.export-based one is used."""
    ort = pytest.importorskip("onnxruntime")
    onnx = pytest.importorskip("onnx")
    pytest.importorskip("onnxscript")
    import onceforall.specialize.onnx_export as export_mod

    def removed(*args, **kwargs):
        raise RuntimeError("the TorchScript-based exporter was removed")

    monkeypatch.setattr(export_mod, "_onnx_legacy", removed)
    space = _space("proxyless", in_channels=1).restrict(resolutions=(16,))
    sub = ofa.build_subnet(space, space.min()).eval()
    path = tmp_path / read_sidecar(export_subnet(sub, tmp_path, onnx=True))["files"]["onnx"]
    assert max(op.version for op in onnx.load(str(path)).opset_import if op.domain in ("", "ai.onnx")) >= 18
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    for batch in (1, 3):
        x = torch.randn(batch, 1, 16, 16, generator=torch.Generator().manual_seed(batch))
        with torch.no_grad():
            expected = sub(x)
        out = session.run(None, {"input": x.numpy()})[0]
        assert float((torch.from_numpy(out) - expected).abs().max()) < 1e-4


@pytest.mark.filterwarnings("ignore:`torch.jit.load` is deprecated:DeprecationWarning")
def test_torchscript_matches_torch(exported):
    sub, sidecar = exported
    traced = torch.jit.load(str(sidecar.with_name(read_sidecar(sidecar)["files"]["torchscript"])))
    for batch in (1, 3):
        x = torch.randn(batch, 1, 20, 20, generator=torch.Generator().manual_seed(10 + batch))
        with torch.no_grad(), torch.jit.optimized_execution(False):
            assert (traced(x) - sub(x)).abs().max().item() < 1e-5


def test_export_leaves_the_module_and_rng_alone(tmp_path):
    space = _space("proxyless-cifar")
    sub = ofa.build_subnet(space, space.sample(random.Random(1))).train()
    before = {k: v.clone() for k, v in sub.state_dict().items()}
    torch.manual_seed(123)
    expected_draw = torch.rand(1)
    torch.manual_seed(123)
    sidecar = export_subnet(sub, tmp_path)
    load_subnet(sidecar)
    assert torch.equal(torch.rand(1), expected_draw)
    assert sub.training
    assert all(torch.equal(before[k], v) for k, v in sub.state_dict().items())


def test_restricted_space_exports_and_foreign_spaces_are_refused(tmp_path):
    space = _space("mbv3-cifar").restrict(kernels=(3,), expands=(3,), depths=(2,), resolutions=(16,))
    sub = ofa.build_subnet(space, space.max())
    data = read_sidecar(export_subnet(sub, tmp_path))
    assert data["space"]["resolutions"] == [16]
    assert load_subnet(tmp_path / f"{space.max()}.json").arch == space.max()

    odd = dataclasses.replace(space, bn_eps=1e-3, _tables={})
    with pytest.raises(ValueError) as excinfo:
        export_subnet(ofa.build_subnet(odd, odd.max()), tmp_path / "odd")
    _one_line_error(excinfo, "mbv3-cifar", "cannot be rebuilt")
    unregistered = dataclasses.replace(space, name="my-space", _tables={})
    with pytest.raises(ValueError) as excinfo:
        export_subnet(ofa.build_subnet(unregistered, unregistered.max()), tmp_path / "odd")
    _one_line_error(excinfo, "my-space")
    with pytest.raises(ValueError) as excinfo:
        export_subnet(sub, tmp_path, normalization={"mean": [0.5], "std": [0.5, 0.5]})
    _one_line_error(excinfo, "normalization.mean")


def test_measure_latency_ms_restores_threads_and_mode():
    space = _space("mbv3-cifar")
    sub = ofa.build_subnet(space, space.min()).train()
    with torch_threads(3):
        ms = measure_latency_ms(sub, (1, 2, 16, 16), threads=1, repeats=3, warmup=1)
        assert torch.get_num_threads() == 3
    assert math.isfinite(ms) and ms > 0 and sub.training
    with pytest.raises(ValueError, match="repeats"):
        measure_latency_ms(sub, (1, 2, 16, 16), repeats=0)


def test_modified_export_files_are_caught(exported, tmp_path):
    """Every file of an export carries a checksum: a changed byte in any of them is refused, naming the file;
    non-finite weights are refused too."""
    import shutil

    _, sidecar = exported
    copy = tmp_path / "copy"
    shutil.copytree(sidecar.parent, copy)
    side = copy / sidecar.name
    data = read_sidecar(side)
    for name in data["files"].values():
        f = copy / name
        keep = f.read_bytes()
        f.write_bytes(keep[:-1] + bytes([keep[-1] ^ 1]))
        with pytest.raises(ValueError) as e:
            verify_export(side)
        _one_line_error(e, str(f), "checksum")
        f.write_bytes(keep)
    assert len(verify_export(side)) == len(data["files"])
    with pytest.raises(ValueError, match="'preprocessing' is missing or null"):
        load_preprocess(side)  # this export was written without a recipe
    from safetensors.torch import load, save

    st = copy / data["files"]["safetensors"]
    state = load(st.read_bytes())
    first = next(k for k, v in state.items() if v.is_floating_point())
    state[first] = state[first].clone().fill_(float("inf"))
    blob = save(state)
    st.write_bytes(blob)
    data["sha256"] = data["checksums"]["safetensors"] = hashlib.sha256(blob).hexdigest()
    side.write_text(json.dumps(data))
    with pytest.raises(ValueError, match="non-finite weights"):
        load_subnet(side)
