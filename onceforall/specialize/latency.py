"""Latency lookup tables: measure every distinct layer of a space once, then predict any arch's latency by a sum.

An arch's network is a fixed stem conv, a fixed first block, one inverted-residual block per active
(stage, position) and a fixed head. Each block's input size and channels depend only on the resolution,
the stage and the position (never on the other blocks' choices), so the latency of a network is well
approximated by the sum of its layers' latencies measured one by one (OFA's latency lookup table)::

    import onceforall as ofa
    from onceforall.specialize.latency import LatencyTable, build_latency_table, latency_error

    space = ofa.get_space("mbv3-cifar", width_mult=0.25, resolutions=(20,), num_classes=10, in_channels=1)
    table = build_latency_table(space, backend="torch", threads=1, batch=1, progress=print)
    table.save("latency-mbv3-cifar.json")
    table = LatencyTable.load("latency-mbv3-cifar.json")
    ms = table.predict(space, space.max())                        # milliseconds, a few dict lookups
    report = latency_error(table, space, [space.sample(rng) for _ in range(10)])  # vs whole-network timing

Layer keys (see :func:`layer_keys`): ``r20:stem``, ``r20:first``, ``r20:s2b1:k5e4`` (resolution 20, stage 2,
block 1, both 0-based, kernel 5, expand 4) and ``r20:head``.

Backends: ``"torch"`` (eager CPU, ``torch.set_num_threads(threads)``), ``"onnxruntime"`` (each layer exported
to ONNX in memory and timed in an ``InferenceSession`` with ``intra_op_num_threads=threads`` and thread
spinning off; needs ``pip install 'onceforall[onnx]'``) and ``"cuda"`` (eager on the current GPU, timed with
CUDA events). Every figure is a median of at least ``repeats`` timed calls after ``warmup`` untimed rounds,
in eval mode under no_grad, with random weights (latency does not depend on their values).

Layers are timed in context, not each in a tight loop: a few archs that together contain every layer are
run as forward passes made of the standalone layers, each pass twice in a row, and every layer call of the
second pass is timed -- a layer then finds the caches as a network serving repeatedly leaves them (timing a
layer in a tight loop keeps its weights cache-hot and underestimated whole networks by 20-40 % on a CPU).
Whole networks (:func:`measure_arch_latency`, :func:`latency_error`) are timed the same way: per repeat,
one untimed then one timed call, several archs round-robin. The exception is onnxruntime, where every layer
is its own session and switching among ~200 sessions costs more than these small layers themselves: there
each layer is timed in its own loop (which came within ~10 % of whole networks on a 2-core CPU, where the
round-robin overestimated them 2-3x).

Tables are JSON (format 1): ``{format, space, backend, threads, batch, device, entries, meta}``.
"""

from __future__ import annotations

import json
import math
import statistics
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ..core.arch import Arch
from ..core.devices import device_name
from ..core.space import Space
from ..core.subnet import ConvBNAct, Head, MBConv, build_subnet
from ..core.util import atomic_write, first_line, is_int, is_number
from .latency_check import ERROR_THRESHOLD_PCT, consistency_check, monotone_violations
from .onnx_export import ort_session, to_onnx
from .timing import torch_threads

__all__ = [
    "BACKENDS",
    "ERROR_THRESHOLD_PCT",
    "LatencyTable",
    "block_choices",
    "build_latency_table",
    "consistency_check",
    "latency_error",
    "layer_keys",
    "measure_arch_latency",
    "monotone_violations",
]

BACKENDS = ("torch", "onnxruntime", "cuda")
TABLE_BACKENDS = (*BACKENDS, "ofa-lut")
"""What a table's ``backend`` may say: a timing backend, or ``ofa-lut`` for one read from OFA's lookup tables
(:mod:`onceforall.specialize.ofa_formats`)."""
FORMAT = 1
_ORT_MISSING = "latency: backend 'onnxruntime' needs the onnxruntime package; pip install 'onceforall[onnx]'"
_IDENTITY = ("name", "width_mult", "num_classes", "in_channels")


def _fmt(x: float) -> str:
    return f"{x:g}"


def _check_backend(backend: str) -> None:
    """Raise a one-line ValueError if ``backend`` is unknown or cannot run here."""
    if backend not in BACKENDS:
        raise ValueError(f"latency: unknown backend {backend!r}; valid backends: {', '.join(BACKENDS)}")
    if backend == "onnxruntime":
        try:
            import onnxruntime  # noqa: F401
        except ImportError:
            raise ValueError(_ORT_MISSING) from None
    if backend == "cuda" and not torch.cuda.is_available():
        raise ValueError("latency: backend 'cuda' needs a CUDA GPU but torch.cuda.is_available() is False; "
                         f"valid backends: {', '.join(BACKENDS)} (torch and onnxruntime run on the CPU)")


def _check_positive(name: str, value: Any, minimum: int = 1) -> None:
    if not is_int(value) or value < minimum:
        raise ValueError(f"{name}: {value!r} is not valid; must be an integer >= {minimum}")


def _check_timing(backend: str, threads: Any, batch: Any, repeats: Any, warmup: Any) -> None:
    """The arguments every timing function shares: a known backend, positive counts."""
    _check_backend(backend)
    _check_positive("threads", threads)
    _check_positive("batch", batch)
    _check_positive("repeats", repeats)
    _check_positive("warmup", warmup, 0)


def _device_name(backend: str) -> str:
    return device_name("cuda" if backend == "cuda" else "cpu")


# ----------------------------------------------------------------------------------------------------
# layers
# ----------------------------------------------------------------------------------------------------


def _block_key(resolution: int, s: int, b: int, kernel: int, expand: float) -> str:
    return f"r{resolution}:s{s}b{b}:k{kernel}e{_fmt(expand)}"


def layer_keys(space: Space, arch: Arch) -> list[str]:
    """Keys of the layers ``arch`` runs, in order: stem, first block, each active block, head."""
    space.validate(arch)
    r = arch.resolution
    keys = [f"r{r}:stem", f"r{r}:first"]
    for s, (ks, es) in enumerate(zip(arch.kernels, arch.expands)):
        keys.extend(_block_key(r, s, b, k, e) for b, (k, e) in enumerate(zip(ks, es)))
    keys.append(f"r{r}:head")
    return keys


def block_choices(space: Space, s: int, b: int) -> list[tuple[int, float]]:
    """(kernel, expand) pairs that block ``b`` of stage ``s`` takes in some arch of ``space`` (coupling aware)."""
    st = space.stages[s]
    coupled = {space.coupled_expand(s, d) for d in st.depths if d > b}
    expands = st.expands if None in coupled else tuple(sorted(coupled))
    return [(k, e) for k in st.kernels for e in expands]


def _layers(space: Space, resolution: int, batch: int) -> list[tuple[str, Callable[[], nn.Module], tuple]]:
    """(key, module factory, input shape) of every distinct layer of ``space`` at ``resolution``."""
    eps, mom, r = space.bn_eps, space.bn_momentum, resolution
    h_stem, h_first, sizes = space.spatial_sizes(r)
    out: list[tuple[str, Callable[[], nn.Module], tuple]] = [
        (f"r{r}:stem",
         lambda: ConvBNAct(space.in_channels, space.stem_width, 3, space.stem_stride, space.stem_act, eps, mom),
         (batch, space.in_channels, r, r)),
        (f"r{r}:first", lambda: MBConv(space.first_block_shape(), eps, mom), (batch, space.stem_width, h_stem, h_stem)),
    ]
    for s, st in enumerate(space.stages):
        for b in range(max(st.depths)):
            for k, e in block_choices(space, s, b):
                shape = space.block_shape(s, b, k, e)
                out.append((_block_key(r, s, b, k, e), lambda shape=shape: MBConv(shape, eps, mom),
                            (batch, shape.in_ch, sizes[s][b], sizes[s][b])))
    side = space.final_side(r)
    out.append((f"r{r}:head", lambda: Head(space, 0.0), (batch, space.final_width, side, side)))
    return out


def _chains(space: Space, resolution: int) -> list[list[str]]:
    """Layer-key sequences of a few archs that together contain every layer of ``space`` at ``resolution``.

    Per stage, configurations (depth, one (kernel, expand) for all its blocks) are listed until every
    (position, kernel, expand) is covered -- the deepest depth suffices unless expands are coupled to
    depths; round ``t`` takes configuration ``t mod n`` of each stage.
    """
    r = resolution
    per_stage = []
    for s, st in enumerate(space.stages):
        needed = {(b, k, e) for b in range(max(st.depths)) for k, e in block_choices(space, s, b)}
        configs = []
        for d in sorted(st.depths, reverse=True):
            coupled = space.coupled_expand(s, d)
            choices = [(k, e) for k in st.kernels for e in ((coupled,) if coupled is not None else st.expands)]
            new = {(b, k, e) for b in range(d) for k, e in choices} & needed
            if new:
                configs.extend([_block_key(r, s, b, k, e) for b in range(d)] for k, e in choices)
                needed -= new
        per_stage.append(configs)
    rounds = max(len(c) for c in per_stage)
    return [[f"r{r}:stem", f"r{r}:first", *(key for configs in per_stage for key in configs[t % len(configs)]),
             f"r{r}:head"] for t in range(rounds)]


def _build(factory: Callable[[], nn.Module]) -> nn.Module:
    with torch.random.fork_rng(devices=[]):  # random init must not move the caller's RNG
        return factory().eval()


def _input(shape: Sequence[int], device: str = "cpu") -> torch.Tensor:
    return torch.randn(*shape, generator=torch.Generator().manual_seed(0)).to(device)


# ----------------------------------------------------------------------------------------------------
# timers
# ----------------------------------------------------------------------------------------------------


def _step(module: nn.Module, shape: Sequence[int], backend: str, threads: int) -> Callable[[Any], Any]:
    """``h -> module(h)`` with the backend: a torch module on the CPU or GPU, or an onnxruntime session."""
    if backend == "onnxruntime":
        model = to_onnx(module, [_input(shape)], ["x"], ["y"], dynamic_batch=False)
        session = ort_session(model.SerializeToString(), threads, spinning=False)
        return lambda h: session.run(None, {"x": h})[0]
    return module.to("cuda" if backend == "cuda" else "cpu").eval()


Clock = Callable[[], float]


def _sweep(steps: dict[str, Callable[[Any], Any]], chains: Sequence[Sequence[str]], inputs: Sequence[Any],
           backend: str, clock: Clock) -> list[tuple[str, float]]:
    """One sweep over ``chains``: each run as a forward pass from its input twice in a row, every step of the
    second pass timed (ms). CPU steps are timed with ``clock``; CUDA ones with CUDA events."""
    out: list[tuple[str, float]] = []
    for chain, x in zip(chains, inputs):
        h = x
        for key in chain:  # priming pass
            h = steps[key](h)
        h = x
        if backend == "cuda":
            events = []
            for key in chain:
                start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
                start.record()
                h = steps[key](h)
                end.record()
                events.append((key, start, end))
            torch.cuda.synchronize()
            out.extend((key, start.elapsed_time(end)) for key, start, end in events)
        else:
            for key in chain:
                t0 = clock()
                h = steps[key](h)
                out.append((key, (clock() - t0) * 1e3))
    return out


def _fences(samples: Sequence[float]) -> tuple[float, float]:
    """Tukey's fences (quartiles -/+ 1.5 IQR, at least 5 % of the median, so that a timer's ticks on a tight
    distribution are not outliers): samples outside are outliers (a preempted call, a page fault)."""
    if len(samples) < 4:
        return -math.inf, math.inf
    q1, q2, q3 = statistics.quantiles(samples, n=4)
    width = max(1.5 * (q3 - q1), 0.05 * q2)
    return q1 - width, q3 + width


def _spread(samples: Sequence[float]) -> float:
    """Interquartile range relative to the median (0 with fewer than 4 samples)."""
    if len(samples) < 4:
        return 0.0
    q1, q2, q3 = statistics.quantiles(samples, n=4)
    return (q3 - q1) / q2 if q2 > 0 else 0.0


def _time_chains(steps: dict[str, Callable[[Any], Any]], chains: Sequence[Sequence[str]],
                 inputs: Sequence[torch.Tensor], backend: str, repeats: int, warmup: int, *,
                 min_seconds: float = 0.0, max_repeats: int | None = None, retime_rounds: int = 3,
                 clock: Clock = time.perf_counter) -> tuple[dict[str, float], dict[str, Any]]:
    """Median milliseconds of every step, timed in context, adaptively, with outliers re-timed.

    Each chain is run as a forward pass from its input (a step's output feeds the next) twice in a row, and
    every step of the second pass is timed: a step finds its weights as a network serving repeatedly does
    (touched one forward pass ago), and the chains' round-robin spreads a slow spell of a shared machine over
    all steps. ``warmup`` untimed sweeps come first, then timed ones in blocks of ``repeats`` until the timed
    calls add up to ``min_seconds`` (at most ``max_repeats`` sweeps, default 4 x ``repeats``), as
    ``torch.utils.benchmark``'s ``blocked_autorange`` sizes its runs by time. Then samples outside Tukey's
    fences (of the first samples) are dropped and the chains holding such steps are swept again, up to
    ``retime_rounds`` times, until every step has at least ``repeats`` samples inside its fences.

    Returns the medians and ``{"sweeps", "retimed": [keys re-timed], "outliers": samples dropped,
    "spread": {key: IQR / median}}``.
    """
    if backend == "onnxruntime":
        inputs = [x.numpy() for x in inputs]
    elif backend == "cuda":
        inputs = [x.cuda() for x in inputs]
    cap = max(repeats, max_repeats if max_repeats is not None else 4 * repeats)
    samples: dict[str, list[float]] = {key: [] for key in steps}
    sweeps, timed, dropped, retimed = 0, 0.0, 0, set()
    with torch.no_grad():
        for _ in range(warmup):
            _sweep(steps, chains, inputs, backend, clock)
        while sweeps < repeats or (timed < min_seconds * 1e3 and sweeps < cap):
            for key, ms in _sweep(steps, chains, inputs, backend, clock):
                samples[key].append(ms)
                timed += ms
            sweeps += 1
        # fences from the first block, fixed: re-applying them to what is kept would trim ever tighter
        fences = {key: _fences(values) for key, values in samples.items()}
        for key, values in samples.items():
            kept = [v for v in values if fences[key][0] <= v <= fences[key][1]]
            dropped += len(values) - len(kept)
            samples[key] = kept
        for _ in range(retime_rounds):
            short = {key for key, values in samples.items() if len(values) < repeats}
            if not short:
                break
            retimed |= short
            todo = [(c, x) for c, x in zip(chains, inputs) if short & set(c)]
            for _ in range(max(repeats - len(samples[key]) for key in short)):
                for key, ms in _sweep(steps, [c for c, _ in todo], [x for _, x in todo], backend, clock):
                    if fences[key][0] <= ms <= fences[key][1]:
                        samples[key].append(ms)
                    else:
                        dropped += 1
    info = {"sweeps": sweeps, "retimed": sorted(retimed), "outliers": dropped,
            "spread": {key: round(_spread(v), 4) for key, v in samples.items()}}
    return {key: statistics.median(v) for key, v in samples.items()}, info


# -- the table (its consistency check: latency_check.py) --


@dataclass
class LatencyTable:
    """Median latency (ms) of every distinct layer of a space for one backend/threads/batch/device."""

    space: dict
    """Identity of the space: {name, width_mult, resolutions, num_classes, in_channels}."""
    backend: str
    """"torch", "onnxruntime" or "cuda"."""
    threads: int
    batch: int
    device: str
    """Human-readable CPU model or GPU name."""
    entries: dict[str, float]
    """Layer key (see :func:`layer_keys`) -> median milliseconds."""
    meta: dict = field(default_factory=dict)
    """How it was measured: repeats, warmup, sweeps, re-timed layers, versions, build seconds."""
    check: dict | None = None
    """Its consistency check (:func:`consistency_check`): ``ok``, ``problems``, ``monotone``, ``whole_net``;
    None for a table written before tables checked themselves."""

    @property
    def failed_check(self) -> bool:
        """Whether the table's stored consistency check failed (an unchecked table has not failed)."""
        return self.check is not None and not self.check.get("ok", False)

    def predict(self, space: Space, arch: Arch) -> float:
        """Predicted latency (ms) of ``arch``: the sum of its layers' entries.

        ``space`` must have the table's identity (name, width, classes, input channels); a layer without an
        entry (another resolution or a choice the table was not built for) raises ValueError naming it.
        """
        for key in _IDENTITY:
            if getattr(space, key) != self.space.get(key):
                raise ValueError(f"latency table: built for space {key}={self.space.get(key)!r}, but the space has "
                                 f"{key}={getattr(space, key)!r}; build a table for this space")
        total = 0.0
        for key in layer_keys(space, arch):
            if key not in self.entries:
                raise ValueError(f"latency table: no entry for layer '{key}' of arch '{arch}' (table resolutions "
                                 f"{self.space.get('resolutions')}); rebuild it with build_latency_table for this "
                                 "space")
            total += self.entries[key]
        return total

    def to_json(self) -> dict[str, Any]:
        out = {"format": FORMAT, "space": self.space, "backend": self.backend, "threads": self.threads,
               "batch": self.batch, "device": self.device, "entries": self.entries, "meta": self.meta}
        if self.check is not None:
            out["check"] = self.check
        return out

    def save(self, path: str | Path) -> Path:
        """Write the table as JSON (atomically); returns the path."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        text = json.dumps(self.to_json(), indent=1) + "\n"
        atomic_write(path, lambda p: p.write_text(text))
        return path

    @classmethod
    def load(cls, path: str | Path) -> LatencyTable:
        """Read a table written by :meth:`save`; a bad file raises a one-line ValueError naming the field."""
        path = Path(path)
        try:
            data = json.loads(path.read_text())
        except FileNotFoundError:
            raise ValueError(f"latency table {path}: not found") from None
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
            raise ValueError(f"latency table {path}: not valid JSON: {first_line(e)}") from None

        def bad(key: str, why: str) -> ValueError:
            return ValueError(f"latency table {path}: field '{key}' {why}")

        if not isinstance(data, dict):
            raise ValueError(f"latency table {path}: expected a JSON object")
        if data.get("format") != FORMAT:
            raise bad("format", f"is {data.get('format')!r}; this onceforall reads format {FORMAT}")
        for key in ("space", "backend", "threads", "batch", "device", "entries"):
            if key not in data:
                raise bad(key, "is missing")
        if not isinstance(data["space"], dict) or any(k not in data["space"] for k in (*_IDENTITY, "resolutions")):
            raise bad("space", "must be an object {name, width_mult, resolutions, num_classes, in_channels}")
        if data["backend"] not in TABLE_BACKENDS:
            raise bad("backend", f"is {data['backend']!r}; valid backends: {', '.join(TABLE_BACKENDS)}")
        for key in ("threads", "batch"):
            if not is_int(data[key]) or data[key] < 1:
                raise bad(key, "must be a positive integer")
        if not isinstance(data["device"], str):
            raise bad("device", "must be a string")
        entries = data["entries"]
        if not isinstance(entries, dict):
            raise bad("entries", "must be an object {layer key: ms}")
        for key, ms in entries.items():
            if not is_number(ms) or not math.isfinite(ms) or ms < 0:
                raise bad(f"entries.{key}", f"must be a non-negative number of ms, got {ms!r}")
        meta = data.get("meta", {})
        if not isinstance(meta, dict):
            raise bad("meta", "must be an object")
        check = data.get("check")
        if check is not None and (not isinstance(check, dict) or not isinstance(check.get("ok"), bool)
                                  or not isinstance(check.get("problems", []), list)):
            raise bad("check", "must be an object {ok: true/false, problems: [...], ...}")
        return cls(space=data["space"], backend=data["backend"], threads=data["threads"], batch=data["batch"],
                   device=data["device"], entries={k: float(v) for k, v in entries.items()}, meta=meta, check=check)


def _measure_chains(steps: dict[str, Callable[[Any], Any]], chains: list[list[str]], inputs: list[torch.Tensor], *,
                    backend: str, repeats: int, warmup: int, seconds_per_chain: float, spread: dict[str, float],
                    timing: dict[str, Any], label: str) -> dict[str, float]:
    """:func:`_time_chains` over ``chains`` -- for onnxruntime each chain (one layer) in its own loop -- adding
    its sweeps, re-timed layers and outliers to ``timing`` and the layers' spreads to ``spread``."""
    groups = [([c], [x]) for c, x in zip(chains, inputs)] if backend == "onnxruntime" else [(chains, inputs)]
    got: dict[str, float] = {}
    for part, xs in groups:
        names = {key for chain in part for key in chain}
        medians, info = _time_chains({k: steps[k] for k in names}, part, xs, backend, repeats, warmup,
                                     min_seconds=seconds_per_chain * len(part))
        got.update(medians)
        spread.update(info["spread"])
        timing["sweeps"][label] = max(timing["sweeps"].get(label, 0), info["sweeps"])
        timing["retimed"] += info["retimed"]
        timing["outliers"] += info["outliers"]
    return got


def _table_resolutions(space: Space, resolutions: Iterable[int] | None) -> tuple[int, ...]:
    """The resolutions a table is built for (default: all of the space's); one-line error naming the valid ones."""
    if resolutions is None:
        return tuple(space.resolutions)
    res = tuple(sorted(set(int(r) for r in resolutions)))
    if not res or [r for r in res if r not in space.resolutions]:
        raise ValueError(f"resolutions: {list(resolutions)} is not valid; choose among the space's "
                         f"{list(space.resolutions)}")
    return res


def _resolution_steps(space: Space, r: int, batch: int, backend: str, threads: int,
                      progress: Callable[[str], None] | None) -> tuple[list, dict, list[list[str]], list]:
    """The layers of resolution ``r``, a timed step per layer, and the chains they are timed in with their inputs
    (onnxruntime: one session per layer, each timed in its own loop; module docstring)."""
    layers = _layers(space, r, batch)
    steps = {}
    for i, (key, factory, shape) in enumerate(layers):
        if progress is not None and backend == "onnxruntime":
            progress(f"latency: exporting {key} to ONNX ({i + 1}/{len(layers)})")
        steps[key] = _step(_build(factory), shape, backend, threads)
    if backend == "onnxruntime":
        return layers, steps, [[key] for key, _, _ in layers], [_input(shape) for _, _, shape in layers]
    chains = _chains(space, r)
    return layers, steps, chains, [_input(layers[0][2])] * len(chains)


def build_latency_table(
    space: Space,
    *,
    backend: str = "torch",
    threads: int = 1,
    batch: int = 1,
    resolutions: Iterable[int] | None = None,
    repeats: int = 20,
    warmup: int = 3,
    min_seconds: float = 0.5,
    progress: Callable[[str], None] | None = None,
) -> LatencyTable:
    """Measure every distinct layer of ``space`` once and return the lookup table.

    For each resolution (default: all of the space's): the stem conv, the first block, every (stage,
    position, kernel, expand) block that some arch of ``space`` uses (restricted and coupled spaces give
    smaller tables), and the head -- each a standalone static module of the classes a Subnet is made of,
    with random weights, at its input size in the network, batch ``batch``. Layers are timed in the context
    of forward passes (see the module docstring), each at least ``repeats`` times after ``warmup`` untimed
    sweeps, more until the timed calls of a resolution add up to ``min_seconds`` (at most 4 x ``repeats``
    sweeps), outliers re-timed (:func:`_time_chains`). Layers that break monotonicity (a larger op faster than
    a smaller one of the same slot beyond noise) are timed once more, all sweeps again; what is left is recorded
    in ``table.check`` (:func:`consistency_check`, without whole networks: ``make_latency_table`` adds them).
    ``progress`` gets one line per measured layer (and, for onnxruntime, one per exported layer).
    Torch threads are set for the duration and restored.
    """
    _check_timing(backend, threads, batch, repeats, warmup)
    res = _table_resolutions(space, resolutions)
    if not is_number(min_seconds) or min_seconds < 0:
        raise ValueError(f"min_seconds: {min_seconds!r} is not valid; must be a number >= 0")
    t_start = time.perf_counter()
    entries: dict[str, float] = {}
    timing = {"min_seconds": min_seconds, "max_repeats": 4 * repeats, "sweeps": {}, "retimed": [], "outliers": 0,
              "monotone_retimed": []}
    spread: dict[str, float] = {}
    with torch_threads(threads):
        for r in res:
            layers, steps, chains, inputs = _resolution_steps(space, r, batch, backend, threads, progress)
            kw = {"backend": backend, "repeats": repeats, "warmup": warmup, "seconds_per_chain": min_seconds /
                  len(chains), "spread": spread, "timing": timing, "label": f"r{r}"}
            measured = _measure_chains(steps, chains, inputs, **kw)
            # a larger op faster than a smaller one beyond noise: time the chains holding either once more
            # (against the resolutions measured before too; only this resolution's layers can be timed again)
            suspects = {k for v in monotone_violations({**entries, **measured})
                        for k in (v["smaller"], v["larger"]) if k in measured}
            if suspects:
                again = [(c, x) for c, x in zip(chains, inputs) if suspects & set(c)]
                remeasured = _measure_chains(steps, [c for c, _ in again], [x for _, x in again], **kw)
                measured.update({k: remeasured[k] for k in suspects})
                timing["monotone_retimed"] += sorted(suspects)
            for i, (key, _, _) in enumerate(layers):
                entries[key] = measured[key]
                if progress is not None:
                    progress(f"latency: {key} {entries[key]:.4f} ms ({i + 1}/{len(layers)})")
            del steps
    timing["retimed"] = sorted(set(timing["retimed"]))
    meta: dict[str, Any] = {"repeats": repeats, "warmup": warmup, **timing,
                            "max_spread": max(spread.values(), default=0.0), "torch": torch.__version__,
                            "seconds": round(time.perf_counter() - t_start, 3)}
    if backend == "onnxruntime":
        import onnxruntime

        meta["onnxruntime"] = onnxruntime.__version__
    ident = space.identity()
    ident["resolutions"] = list(res)
    return LatencyTable(space=ident, backend=backend, threads=threads, batch=batch, device=_device_name(backend),
                        entries=entries, meta=meta, check=consistency_check(entries))


def measure_arch_latency(space: Space, arch: Arch, *, backend: str = "torch", threads: int = 1, batch: int = 1,
                         repeats: int = 30, warmup: int = 5) -> float:
    """Measured median latency (ms) of the whole network of ``arch`` (random weights: values do not matter)."""
    return _measure_archs(space, [arch], backend=backend, threads=threads, batch=batch, repeats=repeats,
                          warmup=warmup)[0]


_ARCH_GROUP = 16  # whole networks alive at once while measuring several


def _measure_archs(space: Space, archs: Sequence[Arch], *, backend: str = "torch", threads: int = 1, batch: int = 1,
                   repeats: int = 30, warmup: int = 5) -> list[float]:
    """Whole-network medians of several archs, timed round-robin in groups (per repeat, each arch runs once
    untimed then once timed), so a slow spell of a shared machine is spread over all of them."""
    _check_timing(backend, threads, batch, repeats, warmup)
    for arch in archs:
        space.validate(arch)
    result = []
    with torch_threads(threads):
        for i in range(0, len(archs), _ARCH_GROUP):
            group = archs[i : i + _ARCH_GROUP]
            steps, inputs = {}, []
            for j, arch in enumerate(group):
                shape = (batch, space.in_channels, arch.resolution, arch.resolution)
                steps[str(j)] = _step(_build(lambda a=arch: build_subnet(space, a, 0.0)), shape, backend, threads)
                inputs.append(_input(shape))
            measured, _ = _time_chains(steps, [[str(j)] for j in range(len(group))], inputs, backend, repeats,
                                       warmup)
            result.extend(measured[str(j)] for j in range(len(group)))
    return result


def latency_error(table: LatencyTable, space: Space, archs: Iterable[Arch], **measure_kw: Any) -> dict[str, Any]:
    """Compare the table's predictions with whole-network measurements.

    ``measure_kw`` (backend, threads, batch, repeats, warmup) is as for :func:`measure_arch_latency`; backend,
    threads and batch default to the table's. The archs are timed round-robin (per repeat, each arch runs once
    untimed, then once timed).
    Returns ``{"archs": [{arch, predicted_ms, measured_ms, error_pct}], "mean_abs_error_pct",
    "max_abs_error_pct", "backend", "threads", "batch"}`` with ``error_pct = 100 * (predicted - measured) /
    measured`` (signed).
    """
    archs = list(archs)
    if not archs:
        raise ValueError("latency_error: archs is empty; pass at least one arch")
    kw = {"backend": table.backend, "threads": table.threads, "batch": table.batch, **measure_kw}
    predicted = [table.predict(space, arch) for arch in archs]
    measured = _measure_archs(space, archs, **kw)
    rows = [{"arch": str(a), "predicted_ms": p, "measured_ms": m, "error_pct": 100.0 * (p - m) / m}
            for a, p, m in zip(archs, predicted, measured)]
    errors = [abs(r["error_pct"]) for r in rows]
    return {"archs": rows, "mean_abs_error_pct": statistics.fmean(errors), "max_abs_error_pct": max(errors),
            "backend": kw["backend"], "threads": kw["threads"], "batch": kw["batch"]}
