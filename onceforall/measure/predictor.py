"""The accuracy predictor of a search: one read from a file, or one fitted on the run's cached measurements (more
subnets measured when there are too few) and saved into the run directory for ``--predictor`` to reuse."""

from __future__ import annotations

from collections.abc import Callable

from ..run.progress import counter
from ..run.rundir import LoadedRun
from ..specialize.predictor import AccuracyPredictor, Predictor, load_predictor, save_predictor
from .candidates import candidate_archs
from .evaluator import Evaluator

__all__ = ["fit_predictor", "predictor_for", "predictor_quality", "predictor_text"]


def predictor_for(run: LoadedRun, ev: Evaluator, path: str | None, samples: int, images: int | None, seed: int,
                  say: Callable[[str], None]) -> tuple[Predictor, dict]:
    """The predictor in ``path`` (ours or OFA's ``acc_predictor.pth``; nothing is measured to fit it), else one
    fitted by :func:`fit_predictor` and saved as ``<run>/search/predictor.pt`` for ``--predictor`` to reuse."""
    if path is not None:
        predictor, report = load_predictor(path, run.space)
        fitted = f" (fitted on {report['pairs']} subnets)" if report.get("pairs") else ""
        say(f"predictor: {report['kind']} file {path}{fitted}")
        return predictor, report
    predictor, report = fit_predictor(run, ev, samples, images, seed, say)
    where = save_predictor(run.dir.predictor_file, predictor, fit=report,
                           info={"run": str(run.run_dir), "step": run.step, "split": run.selection_split,
                                 "images": images, "seed": seed})
    say(f"saved the predictor to {where} (reuse it with --predictor)")
    return predictor, {**report, "source": str(where)}


def fit_predictor(run: LoadedRun, ev: Evaluator, samples: int, images: int | None, seed: int,
                  say: Callable[[str], None]) -> tuple[AccuracyPredictor, dict]:
    """The accuracy predictor fitted on the subnets measured on ``images`` selection images (cached; random
    subnets across the MACs buckets are measured first when there are fewer than ``samples``), and its
    held-out report."""
    pairs = ev.measured("selection", images)
    if len(pairs) < samples:
        extra = [a for a in candidate_archs(run.space, per_bucket=max(2, samples // 6 + 1), uniform=False,
                                            seed=seed + 1) if a not in pairs][: samples - len(pairs)]
        n = len(ev.batches("selection", images)[0].ds)  # images beyond the split's size: all of them
        say(f"measuring {len(extra)} more subnets for the accuracy predictor ({n} images each, of the "
            f"{run.selection_split})")
        ev.accuracy(extra, "selection", images, progress=counter(say, "predictor subnets"))
        pairs = ev.measured("selection", images)
    predictor = AccuracyPredictor(run.space, seed=seed)
    report = predictor.fit(list(pairs), list(pairs.values()), seed=seed)
    say(f"predictor: {report['pairs']} measured subnets, {predictor_quality(report)}")
    return predictor, report


def predictor_quality(report: dict) -> str:
    """The predictor's held-out figures as text; what is missing (too few pairs to hold some out) is said, not
    printed as None."""
    if report.get("heldout_rmse") is None:
        return f"too few pairs for a held-out error ({report.get('pairs')} measured)"
    text = f"held-out RMSE {report['heldout_rmse']:.2f} points"
    if report.get("heldout_kendall_tau") is not None:
        text += f", Kendall tau {report['heldout_kendall_tau']:.2f}"
    if report.get("heldout_top10") is not None:
        text += f", top-10% hit rate {report['heldout_top10']:.2f}"
    return text


def predictor_text(p: dict) -> str:
    """One phrase on where the predictor came from and how well it ranks held-out subnets."""
    if p.get("kind") == "ofa":
        return f"OFA's accuracy predictor from {p['source']} (no held-out error: not fitted here)"
    loaded = f" (loaded from {p['source']})" if p.get("kind") == "onceforall" else ""
    return f"predictor trained on {p['pairs']} measured subnets{loaded} ({predictor_quality(p)})"
