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


# ----------------------------------------------------------------------------------------------------
# tables that check themselves (no real timing below: the numbers are injected)
# ----------------------------------------------------------------------------------------------------


class FakeClock:
    """A clock that only moves when a fake step runs: step ``key``'s n-th call takes ``durations(key, n)`` ms."""

    def __init__(self, durations):
        self.now, self.calls, self.durations = 0.0, {}, durations

    def __call__(self) -> float:
        return self.now

    def step(self, key):
        def run(h):
            n = self.calls.get(key, 0)
            self.calls[key] = n + 1
            self.now += self.durations(key, n) / 1e3
            return h
        return run


def test_timing_drops_outliers_and_retimes_them():
    from onceforall.specialize.latency import _time_chains

    # "a" takes 1 ms but 50 ms in its 4th timed call (calls alternate: priming, timed) and in the first re-timing
    clock = FakeClock(lambda key, n: 50.0 if key == "a" and n in (7, 17) else (1.0 if key == "a" else 2.0))
    steps = {k: clock.step(k) for k in "ab"}
    medians, info = _time_chains(steps, [["a", "b"]], [torch.zeros(1)], "torch", 8, 0, clock=clock)
    assert medians == pytest.approx({"a": 1.0, "b": 2.0})
    assert info["outliers"] == 2 and info["retimed"] == ["a"]
    assert info["spread"] == pytest.approx({"a": 0.0, "b": 0.0})
    assert info["sweeps"] == 8 and clock.calls == {"a": 20, "b": 20}  # 8 sweeps + 2 re-timings of "a"'s chain, x2


def test_timing_runs_until_min_seconds_capped_at_four_times_repeats():
    from onceforall.specialize.latency import _time_chains

    def sweeps(min_seconds):
        clock = FakeClock(lambda key, n: 1.0)
        steps = {k: clock.step(k) for k in "ab"}  # 2 ms of timed calls per sweep
        return _time_chains(steps, [["a", "b"]], [torch.zeros(1)], "torch", 4, 1, min_seconds=min_seconds,
                            clock=clock)[1]["sweeps"]

    assert sweeps(0.0) == 4 and sweeps(0.02) == 10 and sweeps(1.0) == 16


def _clean_entries(space: ofa.Space) -> dict[str, float]:
    """Made-up milliseconds that grow with resolution, kernel and expand: a consistent table."""
    from onceforall.specialize.latency import _layers

    out = {}
    for r in space.resolutions:
        for key, _, _ in _layers(space, r, 1):
            parts = key.split(":")
            k, e = (int(parts[2][1]), float(parts[2].split("e")[1])) if len(parts) == 3 else (1, 1.0)
            out[key] = round(1e-3 * r * r * (1 + k * k / 9) * e, 6)
    return out


def test_monotonicity_check_finds_a_table_made_noisy_on_purpose():
    from onceforall.specialize.latency import consistency_check, monotone_violations

    space = _enumerable()
    entries = _clean_entries(space)
    assert monotone_violations(entries) == []
    check = consistency_check(entries)
    assert check["ok"] and check["problems"] == [] and check["whole_net"] is None
    assert check["monotone"]["pairs"] > 0 and check["monotone"]["count"] == 0
    noisy = dict(entries)
    noisy["r16:s1b0:k3e3"] = entries["r16:s1b0:k3e6"] * 10  # the k3e3 11.98 ms vs k3e4 2.15 ms
    found = monotone_violations(noisy)
    # worst first: 30.72 ms vs r20 k3e3 2.4 ms (-92.2 %), r16 k3e6 3.072 ms (-90 %), r20 k3e6 4.8 ms (-84.4 %)
    assert [(v["smaller"], v["larger"], v["faster_pct"]) for v in found] == [
        ("r16:s1b0:k3e3", "r20:s1b0:k3e3", 92.2), ("r16:s1b0:k3e3", "r16:s1b0:k3e6", 90.0),
        ("r16:s1b0:k3e3", "r20:s1b0:k3e6", 84.4)]
    noisy["r20:stem"] = entries["r16:stem"] * 0.5  # a larger resolution faster
    check = consistency_check(noisy)
    assert not check["ok"] and check["monotone"]["count"] == 4
    assert any(v["smaller"] == "r16:stem" and v["larger"] == "r20:stem" for v in check["monotone"]["violations"])
    assert len(check["problems"]) == 1 and "4 larger layer(s)" in check["problems"][0]
    assert "(worst: r20:s1b0:k3e3 2.4 ms < r16:s1b0:k3e3 30.72 ms)" in check["problems"][0]
    assert "\n" not in check["problems"][0]
    # within noise (20 % + 2 us) is not a violation
    close = dict(entries, **{"r16:s1b0:k3e6": entries["r16:s1b0:k3e3"] * 0.81})
    assert monotone_violations(close) == []


def test_consistency_check_against_whole_networks():
    from onceforall.specialize.latency import consistency_check

    entries = _clean_entries(_enumerable())
    report = {"archs": [{}] * 3, "mean_abs_error_pct": 63.5, "max_abs_error_pct": 77.6}
    check = consistency_check(entries, report)
    assert not check["ok"] and check["whole_net"] == {"archs": 3, "mean_abs_error_pct": 63.5,
                                                       "max_abs_error_pct": 77.6, "threshold_pct": 25.0}
    assert check["problems"] == ["the table's sums are 63.5% off whole-network timings on average (threshold 25%)"]
    assert consistency_check(entries, dict(report, mean_abs_error_pct=24.9))["ok"]
    assert not consistency_check(entries, dict(report, mean_abs_error_pct=10.0), max_error_pct=5)["ok"]


def _fake_timing(monkeypatch, entries, noisy_first=None, always_noisy=None):
    """Replace the layer timer by made-up medians: ``noisy_first`` keys read 10x on their first timing only,
    ``always_noisy`` on every timing."""
    import onceforall.specialize.latency as latency_mod

    seen = set()

    def fake(steps, chains, inputs, backend, repeats, warmup, **kw):
        out = {}
        for key in steps:
            bad = key in (always_noisy or ()) or (key in (noisy_first or ()) and key not in seen)
            out[key] = entries[key] * (10 if bad else 1)
            seen.add(key)
        return out, {"sweeps": repeats, "retimed": [], "outliers": 0, "spread": dict.fromkeys(steps, 0.0)}

    monkeypatch.setattr(latency_mod, "_time_chains", fake)


def test_build_retimes_monotonicity_breakers_and_stores_the_check(monkeypatch, tmp_path):
    space = _enumerable()
    entries = _clean_entries(space)
    _fake_timing(monkeypatch, entries, noisy_first={"r16:s1b0:k3e3"})
    t = build_latency_table(space, repeats=2, warmup=0)
    assert t.entries == entries  # the breaker and its pair were timed again and the second reading kept
    assert t.meta["monotone_retimed"] == ["r16:s1b0:k3e3", "r16:s1b0:k3e6"]
    assert t.check["ok"] and not t.failed_check
    _fake_timing(monkeypatch, entries, always_noisy={"r16:s1b0:k3e3"})
    t = build_latency_table(space, repeats=2, warmup=0)
    assert t.failed_check and t.check["monotone"]["count"] == 3
    loaded = LatencyTable.load(t.save(tmp_path / "noisy.json"))
    assert loaded == t and loaded.failed_check
    data = json.loads((tmp_path / "noisy.json").read_text())
    assert data["check"]["ok"] is False
    data["check"] = {"ok": "maybe"}
    (tmp_path / "noisy.json").write_text(json.dumps(data))
    with pytest.raises(ValueError, match="field 'check' must be an object"):
        LatencyTable.load(tmp_path / "noisy.json")
    del data["check"]  # a table from before the check loads, unchecked
    (tmp_path / "noisy.json").write_text(json.dumps(data))
    assert LatencyTable.load(tmp_path / "noisy.json").check is None


def test_latency_table_cli_warns_and_search_refuses_a_noisy_table(monkeypatch, tmp_path, capsys):
    import onceforall.specialize.latency as latency_mod
    from onceforall.cli import main
    from onceforall.measure.costs import latency_table_of

    space = ofa.get_space("mbv3-cifar", width_mult=0.25, resolutions=(16,), num_classes=10, in_channels=3)
    entries = _clean_entries(space)
    _fake_timing(monkeypatch, entries)
    # whole networks measure twice the table's sums: -50 % error
    monkeypatch.setattr(latency_mod, "_measure_archs",
                        lambda space, archs, **kw: [2 * sum(entries[k] for k in layer_keys(space, a)) for a in archs])
    out = tmp_path / "t.json"
    args = ["latency-table", "--space", "mbv3-cifar", "--width-mult", "0.25", "--resolutions", "16", "--out", str(out),
            "--check", "3", "--quiet"]
    assert main(args) == 0
    said = capsys.readouterr()
    assert "on 5 archs (smallest, largest, random): mean abs error 50.0%, max 50.0%" in said.out
    assert "warning: the table failed its consistency check: the table's sums are 50.0% off" in said.err
    assert "--accept-noisy-table" in said.err
    table = LatencyTable.load(out)
    assert table.failed_check and table.check["whole_net"]["mean_abs_error_pct"] == 50.0
    lines = []
    with pytest.raises(ValueError) as excinfo:
        latency_table_of(None, str(out), lines.append)
    msg = _one_line(excinfo)
    assert msg.startswith(f"latency table {out}: failed its consistency check: the table's sums are 50.0% off")
    assert "--accept-noisy-table" in msg
    got, where = latency_table_of(None, str(out), lines.append, accept_noisy=True)
    assert got == table and where == str(out) and lines[-1].startswith(f"warning: latency table {out} failed")
    assert main([*args, "--max-error", "60"]) == 0  # a looser threshold passes it
    assert "warning" not in capsys.readouterr().err and not LatencyTable.load(out).failed_check
    assert latency_table_of(None, str(out), lines.append)[0].check["ok"]


def test_device_names_say_the_cpu_capability_and_the_threads():
    # two CPUs with one model name may differ in the vector instructions torch uses (speed, and a seed's digits)
    from onceforall.core.devices import cpu_name, device_name

    assert cpu_name().endswith(f" cpus, {torch.backends.cpu.get_cpu_capability()})")
    assert device_name("cpu", 3) == f"CPU {cpu_name()}, 3 threads" and device_name("cpu") == f"CPU {cpu_name()}"
