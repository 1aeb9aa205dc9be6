"""What the plots of eval and compare draw (their series, not pixels) and the split names every output uses."""

from __future__ import annotations

import pytest

from onceforall.run.config import load_config
from onceforall.run.setup import report_split, selection_split
from onceforall.workflows.report import _plot_run, _plot_training, run_plot_panels, training_plot_series


def _result(held_out: bool = True) -> dict:
    evaluated = [{"arch": f"a{i}", "macs": m, "acc_selection": s, "acc_selection_whole": w, "acc": t}
                 for i, (m, s, w, t) in enumerate([(1e6, 70.0, 71.0, 60.0), (2e6, 80.0, None, None),
                                                   (3e6, 90.0, 88.0, 75.0)])]
    return {"evaluated": evaluated, "curve": [{"arch": "a0", "macs": 1e6, "acc": 60.0},
                                              {"arch": "a2", "macs": 3e6, "acc": 75.0}],
            "bucket_edges": [1e6, 2e6, 3e6], "mean_pareto_acc": 67.5,
            "eval_set": {"split": "test", "selection_split": "validation (300 held-out training images)",
                         "held_out": held_out}}


def test_pareto_plot_keeps_selection_points_off_the_test_axis(tmp_path):
    selection, test = run_plot_panels(_result())
    assert selection["ylabel"] == "top-1 accuracy (%), selection split"
    assert selection["title"] == "ranking: validation (300 held-out training images)"
    cands, winners = selection["series"]
    assert cands["y"] == [70.0, 80.0, 90.0] and winners["y"] == [71.0, 88.0]  # winners: on all selection images
    (curve,) = test["series"]  # the test panel holds the reported curve alone
    assert test["ylabel"] == "top-1 accuracy (%), test" and curve["x"] == [1.0, 3.0] and curve["y"] == [60.0, 75.0]
    _plot_run(_result(), tmp_path / "p.png", "run")
    assert (tmp_path / "p.png").stat().st_size > 1000


def test_single_point_series_get_markers(tmp_path):
    rows = [{"method": "deps"}, {"method": "full-only"}]
    metrics = [
        [{"event": "step", "epoch": e / 4, "eps": min(1.0, e / 8)} for e in range(9)]
        + [{"event": "eval", "epoch": 1, "acc_full": 50.0}, {"event": "eval", "epoch": 2, "acc_full": 60.0}],
        [{"event": "step", "epoch": 0.5, "eps": 1.0}, {"event": "step", "epoch": 1.0}]  # one ε value logged
        + [{"event": "eval", "epoch": 1, "acc_full": 55.0}, {"event": "eval", "epoch": 2, "final": True,
                                                             "acc_full": 1.0}],
    ]
    acc, eps = training_plot_series(rows, metrics)
    assert [s["label"] for s in eps] == ["deps", "full-only"]
    assert eps[0]["marker"] is None and len(eps[0]["x"]) == 9
    assert eps[1] == {"label": "full-only", "x": [0.5], "y": [1.0], "marker": "o"}
    assert acc[1]["y"] == [55.0] and acc[1]["marker"] == "o"  # the final evaluation is not a training point
    _plot_training(rows, metrics, tmp_path / "t.png")
    assert (tmp_path / "t.png").stat().st_size > 1000


@pytest.mark.parametrize("preset, report, selection", [
    ("fashion-mnist", "test", "validation (5000 held-out training images)"),
    ("imagenet", "test (the folder's val/ images)", "validation (10000 held-out training images)"),
])
def test_one_name_per_split(preset, report, selection):
    cfg = load_config(preset)
    assert report_split(cfg) == report and selection_split(cfg) == selection
    none = load_config(preset, ["data.val_split=0"])
    assert selection_split(none) == report  # without a held-out split, subnets are chosen on the test split
