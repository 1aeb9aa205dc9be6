"""Gradient analysis of ε-Shrinking (paper §4.2, Fig. 3 and Fig. 4): ``onceforall analyze-gradients RUN``.

At a checkpoint (typically the one saved when shrinking starts), on the same minibatches:

- G_noShrink   = ∇ CE_ls(full(B), y)                                       (eq. 2)
- G_Shrink     = ∇ [CE_ls(full(B), y) + Σ_j KD(a_j(B), full(B).detach())]  (eq. 3, the sandwich of the run)
- G_Shrink(ε)  = ∇ [CE_ls(full(B), y) + ε · Σ_j KD(a_j(B), ...)]           (eq. 4, ε = 1e-3 as in Fig. 3)

per layer (every parameter tensor): L2 norms and the cosine similarity of each shrinking gradient with
G_noShrink — Fig. 3. Then, from the same checkpoint, a few optimizer steps are taken twice, with and
without ε-Shrinking, recording the gradient norm and how far the weights move each step — Fig. 4.
"""

from __future__ import annotations

import copy
import csv
import dataclasses
import json
from collections.abc import Callable
from pathlib import Path

import torch
import torch.nn.functional as F

from ..core.step import kd_loss
from ..core.strategies import Plan, Schedule, Strategy
from ..run.checkpoint import load_checkpoint, load_model_state
from ..run.config import Config, to_dict
from ..run.plotting import pyplot
from ..run.rundir import GradientFiles, LoadedRun
from ..run.setup import build_optimizer, build_schedule, build_strategy
from ..run.state import StepResult, restore_weights, step_once

__all__ = ["analyze_gradients", "gradient_triplet", "replay_steps"]


def _grads(net) -> dict[str, torch.Tensor]:
    return {n: (p.grad.detach().clone() if p.grad is not None else torch.zeros_like(p)) for n, p in
            net.named_parameters()}


def gradient_triplet(net, plan: Plan, x: torch.Tensor, y: torch.Tensor, *,
                     eps: float) -> dict[str, dict[str, torch.Tensor]]:
    """G_noShrink, G_Shrink and G_Shrink(eps) for one minibatch (BN in training mode, as in training), with
    the label smoothing of the plan's full-model pass and the KD temperature of its subnet passes."""
    full, subs = plan.passes[0].arch, [p.arch for p in plan.passes[1:]]
    label_smoothing = plan.passes[0].loss.label_smoothing
    temperature = plan.passes[1].loss.temperature if len(plan.passes) > 1 else 1.0
    out = {}
    for name, weight in (("no_shrink", None), ("shrink", 1.0), ("shrink_eps", eps)):
        net.zero_grad(set_to_none=True)
        logits = net(x, full)
        F.cross_entropy(logits, y, label_smoothing=label_smoothing).backward()
        if weight is not None:
            teacher = logits.detach()
            for a in subs:  # each pass backward at once, like the training step
                (weight * kd_loss(net(x, a), teacher, temperature)).backward()
        out[name] = _grads(net)
    net.zero_grad(set_to_none=True)
    return out


def _cos(a: torch.Tensor, b: torch.Tensor) -> float:
    na, nb = a.norm(), b.norm()
    return float((a.flatten() @ b.flatten()) / (na * nb)) if na > 0 and nb > 0 else float("nan")


def replay_steps(run: LoadedRun, ck: dict, strategy: Strategy, first: int, stop: int, *,
                 on_step: Callable[[int, torch.nn.Module, list[torch.Tensor], StepResult], None] | None = None,
                 ) -> torch.nn.Module:
    """Take steps ``first .. stop-1`` of ``run`` from the checkpoint ``ck`` (model, optimizer and teacher state)
    with ``strategy``, exactly as training takes them (:func:`~onceforall.run.state.step_once`, the run's
    batches); returns the model. ``on_step(t, model, weights_before, result)`` is called after each step."""
    model = copy.deepcopy(run.net).train()
    opt = build_optimizer(model, run.cfg)
    teacher = restore_weights(ck, model, opt, run.checkpoint)
    spe = run.data.train.steps_per_epoch
    for t in range(first, stop):
        x, y = run.data.train.batch(*divmod(t, spe))
        before = [p.detach().clone() for p in model.parameters()] if on_step is not None else []
        step = step_once(run.cfg, strategy, t, model, opt, teacher, x.contiguous(memory_format=run.memory_format), y)
        teacher = step.teacher
        if on_step is not None:
            on_step(t, model, before, step)
    return model


def analyze_gradients(run: LoadedRun, *, checkpoint: str | None = None, batches: int = 4, eps: float = 1e-3,
                      steps: int = 40, out_dir: str | Path | None = None) -> dict:
    """Write gradients/layers.csv, gradients/steps.csv, gradients/layers.png, gradients/steps.png."""
    cfg = run.cfg
    ck_path = run.checkpoint if checkpoint is None else run.dir.checkpoint(checkpoint)
    ck = load_checkpoint(ck_path, space=run.space)
    net = run.net
    load_model_state(net, ck["model"], ck_path)
    net.train()
    for m in net.modules():  # the three gradients must see the same function: no dropout noise
        if isinstance(m, torch.nn.Dropout):
            m.eval()
    start = int(ck["state"]["step"])
    schedule = build_schedule(cfg, run.data.train.steps_per_epoch)
    if start >= schedule.total_steps:  # before any work: Fig. 4 needs steps left to trace
        raise ValueError(f"checkpoint {ck_path} is at the end of the run; pass --checkpoint epoch-NNN (saved with "
                         "train.keep_checkpoints=true), e.g. the one where shrinking starts")
    deps = dataclasses.replace(cfg, strategy=dataclasses.replace(cfg.strategy, name="deps"))
    layers = _layer_gradients(run, build_strategy(deps, run.space, schedule), start, batches, eps)
    trace = _first_shrinking_steps(run, ck, deps, schedule, start, steps)
    files = run.dir.gradient_files(out_dir)
    files.folder.mkdir(parents=True, exist_ok=True)
    _write_csv(files, layers, trace)
    _plot(files, run.name, layers, trace, eps, start)
    summary = {
        "checkpoint": str(ck_path), "step": start, "eps": eps, "batches": batches, "layers": len(layers),
        "mean_cos_shrink": sum(r["cos_shrink"] for r in layers) / len(layers),
        "mean_cos_shrink_eps": sum(r["cos_shrink_eps"] for r in layers) / len(layers),
        "mean_norm_ratio_shrink": sum(r["norm_shrink"] / r["norm_no_shrink"] for r in layers) / len(layers),
        "mean_norm_ratio_shrink_eps": sum(r["norm_shrink_eps"] / r["norm_no_shrink"] for r in layers) / len(layers),
        "config": to_dict(cfg)["strategy"], "out": str(files.folder),
    }
    files.summary.write_text(json.dumps(summary, indent=2) + "\n")
    return summary


def _layer_gradients(run: LoadedRun, strategy: Strategy, start: int, batches: int, eps: float) -> list[dict]:
    """Fig. 3: per layer, the gradients averaged over ``batches`` minibatches of the checkpoint's epoch."""
    cfg, data, net = run.cfg, run.data, run.net
    spe = data.train.steps_per_epoch
    sums: dict[str, dict[str, float]] = {}
    for i in range(batches):
        epoch, index = divmod(start + i, spe)
        x, y = data.train.batch(min(epoch, cfg.train.epochs - 1), index)
        x = x.contiguous(memory_format=run.memory_format)
        plan = strategy.plan(max(start, strategy.shrink_step) + i)
        g = gradient_triplet(net, plan, x, y, eps=eps)
        for name in g["no_shrink"]:
            row = sums.setdefault(name, {"norm_no_shrink": 0.0, "norm_shrink": 0.0, "norm_shrink_eps": 0.0,
                                         "cos_shrink": 0.0, "cos_shrink_eps": 0.0})
            a, b, c = g["no_shrink"][name], g["shrink"][name], g["shrink_eps"][name]
            row["norm_no_shrink"] += float(a.norm()) / batches
            row["norm_shrink"] += float(b.norm()) / batches
            row["norm_shrink_eps"] += float(c.norm()) / batches
            row["cos_shrink"] += _cos(a, b) / batches
            row["cos_shrink_eps"] += _cos(a, c) / batches
    return [{"layer": n, **v} for n, v in sums.items() if v["norm_no_shrink"] > 0]


def _first_shrinking_steps(run: LoadedRun, ck: dict, deps: Config, schedule: Schedule, start: int,
                           steps: int) -> dict[str, list[dict]]:
    """Fig. 4: ``steps`` optimizer steps from the checkpoint with shrinking starting right there, with and without
    ε-Shrinking (the same batches, archs and dropout in both)."""
    trace = {}
    for label, eps_on in (("eps_shrinking", True), ("no_eps", False)):
        here = dataclasses.replace(deps.strategy, eps_shrinking=eps_on, fm_warmup=True,
                                   shrink_start=start / schedule.total_steps)
        s = build_strategy(dataclasses.replace(deps, strategy=here), run.space, schedule)
        rows = []

        def record(t: int, model: torch.nn.Module, before: list[torch.Tensor], step: StepResult,
                   rows: list[dict] = rows, first: int = s.shrink_step) -> None:
            gnorm = torch.sqrt(sum((p.grad.detach() ** 2).sum() for p in model.parameters() if p.grad is not None))
            moved = torch.sqrt(sum(((p.detach() - b) ** 2).sum() for p, b in zip(model.parameters(), before)))
            rows.append({"step": t, "since_shrink": t - first, "eps": step.plan.eps, "grad_norm": float(gnorm),
                         "weight_change": float(moved), "loss_full": step.losses["full"]})

        replay_steps(run, ck, s, s.shrink_step, min(s.shrink_step + steps, schedule.total_steps), on_step=record)
        trace[label] = rows
    return trace


def _write_csv(files: GradientFiles, layers: list[dict], trace: dict[str, list[dict]]) -> None:
    with files.layers_csv.open("w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(layers[0]))
        w.writeheader()
        w.writerows(layers)
    with files.steps_csv.open("w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=["variant", *trace["eps_shrinking"][0]])
        w.writeheader()
        for label, rows in trace.items():
            for r in rows:
                w.writerow({"variant": label, **r})


def _plot(files: GradientFiles, name: str, layers: list[dict], trace: dict[str, list[dict]], eps: float,
          start: int) -> None:
    plt = pyplot()
    fig, (a1, a2) = plt.subplots(2, 1, figsize=(11, 6), sharex=True)
    idx = range(len(layers))
    a1.semilogy(idx, [r["norm_no_shrink"] for r in layers], label="G_noShrink")
    a1.semilogy(idx, [r["norm_shrink"] for r in layers], label="G_Shrink")
    a1.semilogy(idx, [r["norm_shrink_eps"] for r in layers], "--", label=f"G_Shrink(ε={eps:g})")
    a1.set_ylabel("L2 norm")
    a1.legend(fontsize=8)
    a2.plot(idx, [r["cos_shrink"] for r in layers], label="cos(G_noShrink, G_Shrink)")
    a2.plot(idx, [r["cos_shrink_eps"] for r in layers], "--", label=f"cos(G_noShrink, G_Shrink(ε={eps:g}))")
    a2.set_ylabel("cosine similarity")
    a2.set_xlabel("layer (parameter tensor, input to output)")
    a2.legend(fontsize=8)
    fig.suptitle(f"{name}: gradients at step {start} (Fig. 3)")
    fig.tight_layout()
    fig.savefig(files.layers_png, dpi=120)
    plt.close(fig)
    fig, (b1, b2) = plt.subplots(1, 2, figsize=(11, 4))
    for label, rows in trace.items():
        b1.plot([r["since_shrink"] for r in rows], [r["grad_norm"] for r in rows], label=label)
        b2.plot([r["since_shrink"] for r in rows], [r["weight_change"] for r in rows], label=label)
    b1.set_xlabel("steps since shrinking started")
    b1.set_ylabel("gradient L2 norm")
    b2.set_xlabel("steps since shrinking started")
    b2.set_ylabel("weight change per step (L2)")
    for ax in (b1, b2):
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.suptitle(f"{name}: the first shrinking steps (Fig. 4)")
    fig.tight_layout()
    fig.savefig(files.steps_png, dpi=120)
    plt.close(fig)
