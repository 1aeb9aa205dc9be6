"""The depthwise weight gradient (onceforall.core.depthwise): training-step time with train.depthwise_grad=auto
(the batched-matmul weight gradient where the filter is larger than the feature map) vs native (PyTorch's kernel),
on a preset's full-only step and DεpS shrinking step, the two settings alternating in one process so a shared
machine's drifts hit both; then the per-layer kernels on the shapes where auto takes the matmul path.

    python benchmarks/depthwise_grad.py
    python benchmarks/depthwise_grad.py --config fashion-mnist --threads 2 --steps 12

Prints median seconds per step and native / auto (the speed-up); the per-layer table prints the weight-gradient
milliseconds of each path on the shapes of the preset's full model.
"""

from __future__ import annotations

import dataclasses
import statistics
import sys
import time
from pathlib import Path

import torch

from onceforall.core.depthwise import _matmul_weight_grad, use_matmul_grad
from onceforall.core.step import train_step
from onceforall.core.strategies import StrategyConfig
from onceforall.core.supernet import ElasticBlock
from onceforall.run.config import load_config
from onceforall.run.setup import build_run, memory_format

sys.path.insert(0, str(Path(__file__).parent))
from common import preset_parser  # noqa: E402


def set_grad(net: torch.nn.Module, mode: str) -> None:
    for m in net.modules():
        if isinstance(m, ElasticBlock):
            m.depthwise_grad = mode


def step_times(args):
    cfg = load_config(args.config, args.overrides)
    parts = build_run(dataclasses.replace(cfg, strategy=StrategyConfig(name="deps")))
    deps, fmt = parts.strategy, memory_format(cfg)
    plans = {"full-only": deps.plan(0), "deps-shrinking": deps.plan(deps.shrink_step + 50)}
    times: dict[tuple[str, str], list[float]] = {}
    for t in range(args.steps + 1):
        for mode in ("native", "auto"):
            set_grad(parts.net, mode)
            for kind, plan in plans.items():
                x, y = parts.data.train.batch(0, t % parts.data.train.steps_per_epoch)
                t0 = time.perf_counter()
                train_step(parts.net, plan, x.contiguous(memory_format=fmt), y, parts.optimizer)
                if t:  # the first round warms up
                    times.setdefault((kind, mode), []).append(time.perf_counter() - t0)
    print(f"# {args.config} {' '.join(args.overrides)}: batch {cfg.train.batch_size}, {args.threads} threads, "
          f"torch {torch.__version__}, median of {args.steps} steps")
    print(f"{'step':16}{'native s':>10}{'auto s':>10}{'native/auto':>13}")
    for kind in plans:
        n, a = (statistics.median(times[(kind, m)]) for m in ("native", "auto"))
        print(f"{kind:16}{n:10.3f}{a:10.3f}{n / a:13.2f}")
    return parts.net, cfg


def _median_ms(fn, reps: int) -> float:
    times = []
    for _ in range(reps + 1):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return 1e3 * statistics.median(times[1:])


def layer_times(net, cfg, reps: int = 5) -> None:
    """Weight-gradient milliseconds of both paths on each depthwise layer of the full model where auto takes the
    matmul path (the layer's input as the training step sees it: batch size, channels_last)."""
    layers, hooks = set(), []
    for m in net.modules():
        if isinstance(m, ElasticBlock):
            hooks.append(m.register_forward_pre_hook(
                lambda mod, a: layers.add((a[0].shape[-2], a[0].shape[-1], mod.shape.mid, a[1], mod.shape.stride))))
    full = net.space.max()
    with torch.no_grad():
        net(torch.zeros(2, net.space.in_channels, full.resolution, full.resolution), full)
    for h in hooks:
        h.remove()
    n, fmt = cfg.train.batch_size, memory_format(cfg)
    print(f"{'depthwise layer N,C,H,W k s':32}{'native ms':>10}{'matmul ms':>10}{'native/matmul':>15}")
    for height, width, c, k, s in sorted(layers, key=lambda t: (-t[0], t[2])):
        x = torch.randn(n, c, height, width).contiguous(memory_format=fmt)
        if not use_matmul_grad(x, k):
            continue
        native, matmul = _weight_grad_ms(x, k, s, reps)
        print(f"{f'{n},{c},{height},{width} k{k} s{s}':32}{native:10.2f}{matmul:10.2f}{native / matmul:15.2f}")


def _weight_grad_ms(x: torch.Tensor, k: int, s: int, reps: int) -> tuple[float, float]:
    c, p = x.shape[1], k // 2
    w = torch.randn(c, 1, k, k).contiguous(memory_format=torch.channels_last)
    g = torch.randn_like(torch.nn.functional.conv2d(x, w, None, s, p, 1, c))
    native = _median_ms(lambda: torch.ops.aten.convolution_backward(
        g, x, w, None, (s, s), (p, p), (1, 1), False, (0, 0), c, (False, True, False)), reps)
    return native, _median_ms(lambda: _matmul_weight_grad(x, g, k, s, p), reps)


def main() -> None:
    args = preset_parser(__doc__, 8, "timed steps of each kind and setting", 1).parse_args()
    torch.set_num_threads(args.threads)
    net, cfg = step_times(args)
    layer_times(net, cfg)


if __name__ == "__main__":
    main()
