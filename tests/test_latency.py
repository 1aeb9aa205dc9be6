import json
import math
import random
import sys

import pytest
import torch

import onceforall as ofa
from onceforall.core.space import iter_archs
from onceforall.specialize.latency import (
    BACKENDS,
    LatencyTable,
    build_latency_table,
    latency_error,
    layer_keys,
    measure_arch_latency,
)
from onceforall.specialize.timing import torch_threads


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    """Structure tests of tiny nets: one thread avoids OpenMP spin-waits when the CPU is shared."""
    with torch_threads(1):
        yield


def _base(resolutions=(16, 20)) -> ofa.Space:
    return ofa.get_space("mbv3-cifar", width_mult=0.25, resolutions=resolutions, num_classes=10, in_channels=1)


def _enumerable() -> ofa.Space:
    """Small enough to enumerate (96 archs) yet elastic in depth, kernel, expand and resolution."""
    return _base().restrict(
        depths=[(2, 3), (2,), (2,), (2,), (2,)],
        kernels=[(3, 5), (3,), (3,), (3,), (3,)],
        expands=[(3,), (3, 6), (3,), (3,), (3,)],
    )


@pytest.fixture(scope="module")
def table():
    """Torch table of a restricted space at one resolution (few repeats: tests check structure, not speed)."""
    space = _base(resolutions=(20,)).restrict(kernels=(3, 5), expands=(3, 6), depths=(2, 3))
    return space, build_latency_table(space, threads=1, repeats=5, warmup=1)


def _needed_keys(space: ofa.Space) -> set[str]:
    return {key for arch in iter_archs(space) for key in layer_keys(space, arch)}


@pytest.mark.parametrize("coupled", [False, True])
def test_table_covers_exactly_the_layers_of_every_arch(coupled):
    space = _enumerable()
    if coupled:  # CompOFA: block 2 of stage 0 only exists at depth 3, so only with expand 6
        space = _base().restrict(depths=[(2, 3), (2,), (2,), (2,), (2,)], kernels=(3,),
                                 expands=[(3, 4, 6), (3,), (3,), (3,), (3,)], coupling={2: 3, 3: 6})
    lines = []
    with torch_threads(3):
        t = build_latency_table(space, threads=1, repeats=2, warmup=0, progress=lines.append)
        assert torch.get_num_threads() == 3
    assert set(t.entries) == _needed_keys(space)
    assert len(lines) == len(t.entries) and all(isinstance(line, str) for line in lines)
    assert all(math.isfinite(ms) and ms > 0 for ms in t.entries.values())
    assert {k: v for k, v in t.space.items() if k != "choices"} == {
        "name": "mbv3-cifar", "width_mult": 0.25, "resolutions": [16, 20], "num_classes": 10, "in_channels": 1}
    assert t.space == space.identity()  # the restricted choices the table was built for are recorded too
    assert (t.backend, t.threads, t.batch) == ("torch", 1, 1) and t.device
    if coupled:
        assert "r16:s0b2:k3e6" in t.entries and "r16:s0b2:k3e3" not in t.entries
        assert "r16:s0b0:k3e3" in t.entries and "r16:s0b0:k3e4" not in t.entries


def test_layer_keys_format():
    space = _enumerable()
    arch = space.parse("r20_k5e3-k3e3-k5e3_k3e6-k3e3_k3e3-k3e3_k3e3-k3e3_k3e3-k3e3")
    keys = layer_keys(space, arch)
    assert keys[:3] == ["r20:stem", "r20:first", "r20:s0b0:k5e3"]
    assert keys[5] == "r20:s1b0:k3e6" and keys[-1] == "r20:head"
    assert len(keys) == 3 + sum(arch.depths)


def test_predict_is_the_sum_of_the_arch_layers(table):
    space, t = table
    rng = random.Random(0)
    for arch in [space.min(), space.max(), *(space.sample(rng) for _ in range(5))]:
        expected = sum(t.entries[k] for k in layer_keys(space, arch))
        assert t.predict(space, arch) == pytest.approx(expected, rel=1e-12)
    assert t.predict(space, space.max()) > t.predict(space, space.min())


def test_predict_refuses_missing_layers_and_other_spaces(table):
    space, t = table
    other_res = _base().restrict(kernels=(3, 5), expands=(3, 6), depths=(2, 3))
    with pytest.raises(ValueError) as excinfo:
        t.predict(other_res, other_res.min())  # 16 px: not measured
    assert "'r16:stem'" in str(excinfo.value) and "\n" not in str(excinfo.value)
    wider = ofa.get_space("mbv3-cifar", width_mult=0.5, resolutions=(20,), num_classes=10, in_channels=1)
    with pytest.raises(ValueError, match="width_mult"):
        t.predict(wider, wider.min())
    full = _base(resolutions=(20,))
    with pytest.raises(ValueError, match="k7e"):  # kernel 7 was restricted away
        t.predict(full, full.max())


def test_save_load_round_trip(table, tmp_path):
    _, t = table
    path = t.save(tmp_path / "lat" / "table.json")
    loaded = LatencyTable.load(path)
    assert loaded == t
    assert loaded.meta["repeats"] == 5 and loaded.meta["torch"] == torch.__version__
    data = json.loads(path.read_text())
    assert data["format"] == 1
    data["entries"]["r20:stem"] = "fast"
    path.write_text(json.dumps(data))
    with pytest.raises(ValueError) as excinfo:
        LatencyTable.load(path)
    assert "entries.r20:stem" in str(excinfo.value) and str(path) in str(excinfo.value)
    del data["backend"]
    path.write_text(json.dumps(data))
    with pytest.raises(ValueError, match="'backend' is missing"):
        LatencyTable.load(path)


def test_latency_error_reports_finite_numbers(table):
    space, t = table
    archs = [space.min(), space.max(), space.sample(random.Random(1))]
    with torch_threads(3):
        report = latency_error(t, space, archs, repeats=5, warmup=2)
        assert torch.get_num_threads() == 3
    assert [row["arch"] for row in report["archs"]] == [str(a) for a in archs]
    for row, a in zip(report["archs"], archs):
        assert set(row) == {"arch", "predicted_ms", "measured_ms", "error_pct"}
        assert row["predicted_ms"] == pytest.approx(sum(t.entries[k] for k in layer_keys(space, a)))
        assert row["measured_ms"] > 0 and math.isfinite(row["error_pct"])
    assert (report["backend"], report["threads"], report["batch"]) == ("torch", 1, 1)


def test_latency_error_compares_the_sum_of_layers_with_whole_networks(table, monkeypatch):
    """With known whole-network times, the signed and absolute errors are exactly what they should be."""
    import onceforall.specialize.latency as latency_mod

    space, t = table
    archs = [space.min(), space.max()]
    predicted = [sum(t.entries[k] for k in layer_keys(space, a)) for a in archs]
    measured = [predicted[0] * 2, predicted[1] / 2]  # the table predicts -50 % and +100 %
    monkeypatch.setattr(latency_mod, "_measure_archs", lambda space, archs, **kw: measured)
    report = latency_error(t, space, archs)
    assert [r["error_pct"] for r in report["archs"]] == pytest.approx([-50.0, 100.0])
    assert report["mean_abs_error_pct"] == pytest.approx(75.0) and report["max_abs_error_pct"] == pytest.approx(100.0)


def _one_line(excinfo) -> str:
    msg = str(excinfo.value)
    assert "\n" not in msg, msg
    return msg


def test_bad_backends_are_one_line_errors(monkeypatch):
    space = _enumerable()
    for call in (lambda: build_latency_table(space, backend="tpu"),
                 lambda: measure_arch_latency(space, space.min(), backend="tpu")):
        with pytest.raises(ValueError) as excinfo:
            call()
        msg = _one_line(excinfo)
        assert "'tpu'" in msg and all(b in msg for b in BACKENDS)
    if not torch.cuda.is_available():
        with pytest.raises(ValueError) as excinfo:
            build_latency_table(space, backend="cuda")
        msg = _one_line(excinfo)
        assert "'cuda'" in msg and all(b in msg for b in BACKENDS)
    monkeypatch.setitem(sys.modules, "onnxruntime", None)  # import fails as if not installed
    with pytest.raises(ValueError) as excinfo:
        build_latency_table(space, backend="onnxruntime")
    assert _one_line(excinfo) == ("latency: backend 'onnxruntime' needs the onnxruntime package; "
                                  "pip install 'onceforall[onnx]'")
    with pytest.raises(ValueError, match="resolutions"):
        build_latency_table(space, resolutions=(32,))
    with pytest.raises(ValueError, match="threads"):
        build_latency_table(space, threads=0)


def test_onnxruntime_table_on_a_tiny_space():
    pytest.importorskip("onnxruntime")
    pytest.importorskip("onnx")
    space = _base(resolutions=(16,)).restrict(kernels=(3,), expands=(3,), depths=(2,))
    t = build_latency_table(space, backend="onnxruntime", threads=1, repeats=3, warmup=1)
    (arch,) = list(iter_archs(space))
    assert set(t.entries) == set(layer_keys(space, arch))
    assert t.backend == "onnxruntime" and "onnxruntime" in t.meta
    assert all(math.isfinite(ms) and ms > 0 for ms in t.entries.values())
    assert t.predict(space, arch) > 0
    report = latency_error(t, space, [arch], repeats=3, warmup=1)  # whole network through onnxruntime too
    assert report["backend"] == "onnxruntime" and math.isfinite(report["archs"][0]["error_pct"])


@pytest.mark.parametrize("name", ofa.list_spaces())
def test_timing_passes_cover_every_layer(name):
    """The forward passes that time the layers in context reach every layer of full and coupled spaces."""
    from onceforall.specialize.latency import _chains, _layers

    space = ofa.get_space(name, width_mult=0.25, resolutions=(32,))
    for sp in (space, space.restrict(coupling={2: 3, 3: 4, 4: 6})):
        chains = _chains(sp, 32)
        assert {key for chain in chains for key in chain} == {key for key, _, _ in _layers(sp, 32, 1)}
        assert len(chains) == 9  # 3 kernels x 3 expands at max depth, or 3 kernels x 3 (depth, expand) couples
        for chain in chains:  # each pass is a real arch of the space
            assert chain[:2] == ["r32:stem", "r32:first"] and chain[-1] == "r32:head"
