"""reproduce.py's ablation statistics over seeds, with the verdict rule: the full model at the shrink start (the mean
over the epoch after it) and Fig. 2 (from the fully trained full model minus from the half-trained one)."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))

import reproduce  # noqa: E402

from onceforall.run.config import load_config, to_yaml  # noqa: E402


def _record(out: Path, name: str, accs: list[float], shrink_start: float = 0.5) -> None:
    """A record of a 4-epoch run validated 4 times per epoch (epochs 0.25, 0.5, ..., 4.0) with these full-model
    accuracies, and a final evaluation that must not count."""
    rec = out / "records" / name
    rec.mkdir(parents=True)
    cfg = load_config("fashion-mnist", [f"strategy.shrink_start={shrink_start}", "train.epochs=4"])
    (rec / "config.yaml").write_text(to_yaml(cfg))
    rows = [{"event": "eval", "epoch": 0.25 * (i + 1), "acc_full": a} for i, a in enumerate(accs)]
    rows.append({"event": "eval", "epoch": 4.0, "acc_full": 0.0, "final": True})
    (rec / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))


def _accs(before: float, after: list[float]) -> list[float]:
    """16 readings: 70 up to epoch 1.75, ``before`` at epoch 2 (the shrink start), ``after`` over epochs 2.25–3,
    then 80."""
    return [70.0] * 7 + [before] + after + [80.0] * 4


def test_the_shrink_start_ablation_reports_the_mean_over_the_epoch_after_with_the_verdict_rule(tmp_path):
    # seed 0: ε-Shrinking dips by 1 on average (lowest 78), no ε by 4 (lowest 70): its lowest reading is one outlier
    _record(tmp_path, "deps-s0", _accs(80, [78, 80, 79, 79]))
    _record(tmp_path, "deps-no-eps-s0", _accs(80, [70, 77, 77, 80]))
    d = reproduce.full_model_at_shrink_start(tmp_path / "records" / "deps-s0")
    assert d == {"at": 2.0, "before": 80, "lowest": 78, "mean": 79.0, "after": 79}
    assert reproduce.full_model_at_shrink_start(tmp_path / "records" / "deps-no-eps-s0")["mean"] == 76.0
    one = reproduce.shrink_start_over_seeds(tmp_path, [0, 1])  # seed 1 has no records: left out
    row = next(line for line in one if "deps − deps-no-eps" in line)
    assert "| 1 | +3.00 | +3.00 | suggestive |" in row
    # seeds 1 and 2: ε ahead by 2 and 4 → over three seeds +3 [+0.52, +5.48]: holds
    _record(tmp_path, "deps-s1", _accs(80, [79, 79, 79, 79]))
    _record(tmp_path, "deps-no-eps-s1", _accs(80, [77, 77, 77, 77]))
    _record(tmp_path, "deps-s2", _accs(80, [80, 80, 80, 80]))
    _record(tmp_path, "deps-no-eps-s2", _accs(80, [76, 76, 76, 76]))
    lines = reproduce.shrink_start_over_seeds(tmp_path, [0, 1, 2])
    row = next(line for line in lines if "deps − deps-no-eps" in line)
    assert "| 3 | +3.00, +2.00, +4.00 | +3.00 [+0.52, +5.48] | holds |" in row
    drop = next(line for line in lines if line.startswith("| deps-no-eps: drop"))
    assert "+4.00, +3.00, +4.00" in drop and drop.endswith("| – |")  # descriptive: no claim, no verdict
    # a tie over seeds is "not shown", never "does not hold"
    _record(tmp_path, "deps-s3", _accs(80, [70, 70, 70, 70]))
    _record(tmp_path, "deps-no-eps-s3", _accs(80, [80, 80, 80, 80]))
    row = next(line for line in reproduce.shrink_start_over_seeds(tmp_path, [0, 1, 2, 3]) if "deps −" in line)
    assert row.endswith("| not shown |")


def test_a_run_without_readings_around_the_shrink_start_is_an_error_naming_it(tmp_path):
    _record(tmp_path, "deps-s0", [70.0] * 4, shrink_start=0.75)  # readings stop at epoch 1
    with pytest.raises(ValueError, match=r"deps-s0: no full-model validation just before and after the shrink "
                                         r"start \(epoch 3\)"):
        reproduce.full_model_at_shrink_start(tmp_path / "records" / "deps-s0")


def _fig2_compare(out: Path, seed: int, mean: float, smallest: float, bucket1: float) -> None:
    """compare-fig2-s<seed> as `onceforall compare` writes it: from-half the reference, from-full's Δ to it (with a
    paired interval ±0.3 over test images) in compare.csv and, per point, compare_points.csv."""
    folder = out / f"compare-fig2-s{seed}"
    folder.mkdir(parents=True)
    head = "method,mean_pareto_acc,diff_vs_ref,diff_ci_lo,diff_ci_hi\n"
    (folder / "compare.csv").write_text(head + f"fig2-from-half-s{seed},80,0,0,0\n"
                                        f"fig2-from-full-s{seed},80,{mean},{mean - 0.3},{mean + 0.3}\n")
    rows = ["method,point,diff,diff_ci_lo,diff_ci_hi"]
    for point, d in (("smallest", smallest), ("bucket 1", bucket1), ("bucket 2", 1.0), ("bucket 3", "")):
        rows.append(f"fig2-from-half-s{seed},{point},0,0,0")
        lo, hi = (d - 0.3, d + 0.3) if d != "" else ("", "")
        rows.append(f"fig2-from-full-s{seed},{point},{d},{lo},{hi}")
    (folder / "compare_points.csv").write_text("\n".join(rows) + "\n")


def test_fig2_over_seeds_claims_the_small_subnets_only_with_the_verdict_rule(tmp_path):
    assert reproduce.fig2_over_seeds(tmp_path, [0]) == []  # no comparison yet: nothing to report
    _fig2_compare(tmp_path, 0, mean=1.0, smallest=-1.0, bucket1=0.2)
    lines = reproduce.fig2_over_seeds(tmp_path, [0, 1])  # seed 1 not compared: left out
    assert "Seeds: 0." in lines[0]
    row = {line.split(" | ")[0]: line for line in lines if line.startswith("| ")}
    assert row["| smallest"].endswith("| 1 | -1.00 | -1.00 | suggestive |")  # its own interval below 0
    assert row["| bucket 1"].endswith("| not shown |")  # its own interval [-0.1, +0.5] contains 0
    assert row["| mean Pareto"].endswith("| – |") and row["| bucket 2"].endswith("| – |")  # reported, not claimed
    assert "| bucket 3" not in row  # a point the runs do not share
    _fig2_compare(tmp_path, 1, mean=1.0, smallest=-2.0, bucket1=1.5)
    _fig2_compare(tmp_path, 2, mean=1.0, smallest=-3.0, bucket1=2.5)
    row = {line.split(" | ")[0]: line for line in reproduce.fig2_over_seeds(tmp_path, [0, 1, 2]) if line[:2] == "| "}
    assert row["| smallest"].endswith("| 3 | -1.00, -2.00, -3.00 | -2.00 [-4.48, +0.48] | not shown |")
    assert row["| bucket 1"].endswith("| 3 | +0.20, +1.50, +2.50 | +1.40 [-1.47, +4.27] | not shown |")
    _fig2_compare(tmp_path, 3, mean=1.0, smallest=-2.0, bucket1=2.0)
    _fig2_compare(tmp_path, 4, mean=1.0, smallest=-2.0, bucket1=2.0)
    seeds = [0, 1, 2, 3, 4]
    row = {line.split(" | ")[0]: line for line in reproduce.fig2_over_seeds(tmp_path, seeds) if line[:2] == "| "}
    assert row["| smallest"].endswith("| holds |") and row["| bucket 1"].endswith("| contradicted |")
