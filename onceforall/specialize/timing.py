"""Wall-clock timing of modules on this machine (median of repeated calls, threads pinned)."""

from __future__ import annotations

import contextlib
import statistics
import time
from collections.abc import Iterator, Sequence

import torch
from torch import nn

from ..core.util import is_int

__all__ = ["measure_latency_ms", "torch_threads"]


@contextlib.contextmanager
def torch_threads(threads: int) -> Iterator[None]:
    """Run the block with ``torch.set_num_threads(threads)``, restoring the previous value after."""
    if not is_int(threads) or threads < 1:
        raise ValueError(f"threads: {threads!r} is not valid; must be a positive integer")
    previous = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        yield
    finally:
        torch.set_num_threads(previous)


def _check_repeats(repeats: int, warmup: int) -> None:
    if not is_int(repeats) or repeats < 1:
        raise ValueError(f"repeats: {repeats!r} is not valid; must be a positive integer")
    if not is_int(warmup) or warmup < 0:
        raise ValueError(f"warmup: {warmup!r} is not valid; must be a non-negative integer")


def measure_latency_ms(module: nn.Module, input_shape: Sequence[int], *, threads: int = 1, repeats: int = 30,
                       warmup: int = 5) -> float:
    """Median wall-clock milliseconds of ``module(x)`` for a random ``x`` of ``input_shape``.

    Eval mode and no_grad, ``torch.set_num_threads(threads)`` (both restored afterwards). ``x`` is created on
    the module's device (CPU for the intended use; CUDA work is synchronised around each call).
    """
    _check_repeats(repeats, warmup)
    ref = next(iter(module.parameters()), None)
    device = ref.device if ref is not None else torch.device("cpu")
    dtype = ref.dtype if ref is not None and ref.is_floating_point() else torch.float32
    x = torch.randn(*input_shape, generator=torch.Generator().manual_seed(0)).to(device=device, dtype=dtype)
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    was_training = module.training
    module.eval()
    times = []
    try:
        with torch_threads(threads), torch.no_grad():
            for i in range(warmup + repeats):
                sync()
                t0 = time.perf_counter()
                module(x)
                sync()
                if i >= warmup:
                    times.append(time.perf_counter() - t0)
    finally:
        module.train(was_training)
    return statistics.median(times) * 1e3
