"""The CLIP family's summary: paired B-vs-A tests on the same test images, checked by hand and against scipy/statsmodels."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from scipy import stats
from statsmodels.stats.contingency_tables import mcnemar

from analysis.clip_subtask.summary import (
    clip_summary,
    clip_verdict,
    majority_correct,
    seed_comparison,
    seed_t_test,
)


def test_majority_vote_over_seeds():
    correct = np.array([[1, 1, 0], [1, 0, 0], [0, 0, 0], [1, 1, 1], [1, 0, 1]], dtype=bool)
    assert majority_correct(correct).tolist() == [True, False, False, True, True]
    assert majority_correct(np.array([[1, 0]], dtype=bool)).tolist() == [False]  # a tie is not a majority


def test_seed_t_test_matches_scipy_and_handles_degenerate_cases():
    a, b = [0.90, 0.91, 0.92], [0.92, 0.915, 0.95]
    res = seed_t_test(a, b)
    ref = stats.ttest_rel(b, a)
    assert res["p"] == pytest.approx(ref.pvalue) and res["t"] == pytest.approx(ref.statistic)
    assert res["mean_diff"] == pytest.approx(np.mean(np.subtract(b, a)))
    assert np.isnan(seed_t_test([0.9], [0.91])["p"])
    assert np.isnan(seed_t_test([0.9, 0.8], [0.91, 0.81])["p"])  # identical differences: no spread, no t


def test_paired_comparison_per_seed_mcnemar_and_bootstrap():
    rng = np.random.default_rng(0)
    n = 400
    targets = rng.integers(0, 4, n)
    correct_a = rng.random((n, 3)) < 0.80
    correct_b = correct_a | (rng.random((n, 3)) < 0.30)  # B fixes a share of A's errors and breaks none
    comp = seed_comparison(targets, correct_a, correct_b, n_boot=2000)
    for s, row in enumerate(comp["per_seed"]):
        b = int(np.sum(correct_a[:, s] & ~correct_b[:, s]))
        c = int(np.sum(~correct_a[:, s] & correct_b[:, s]))
        both = int(np.sum(correct_a[:, s] & correct_b[:, s]))
        table = [[both, b], [c, n - both - b - c]]
        assert (row["b"], row["c"]) == (b, c) and b == 0
        assert row["p"] == pytest.approx(mcnemar(table, exact=True).pvalue)
    diff = correct_b.mean() - correct_a.mean()
    assert comp["bootstrap"]["diff"] == pytest.approx(diff)
    assert comp["bootstrap"]["ci_low"] > 0
    assert clip_verdict(comp) == "B better"
    # swapped roles: A better; identical models: nothing shown
    assert clip_verdict(seed_comparison(targets, correct_b, correct_a, n_boot=500)) == "A better"
    same = seed_comparison(targets, correct_a, correct_a, n_boot=500)
    assert same["majority_mcnemar"]["p"] == 1.0 and clip_verdict(same) == "no difference shown"


def write_run(job_dir, sample_ids, targets, preds, seed, experiment, ece_value):
    job_dir.mkdir(parents=True)
    logits = np.full((len(targets), 3), -1.0)
    logits[np.arange(len(targets)), preds] = 1.0
    frame = pd.DataFrame({"sample_id": sample_ids, "split": "test", "target": targets,
                          **{f"logit_{k}": logits[:, k] for k in range(3)}})
    frame.to_csv(job_dir / "predictions_test.csv", index=False)
    metrics = {"seed": seed, "test_accuracy": float(np.mean(preds == targets)), "test_ece_calibrated": ece_value}
    return {"job_dir": str(job_dir), "overrides": [f"experiment={experiment}", f"seed={seed}"], "metrics": metrics,
            "status": "completed", "experiment": experiment}


def test_summary_pairs_runs_by_seed_on_the_same_images_in_any_row_order(tmp_path):
    rng = np.random.default_rng(3)
    n = 60
    ids = np.array([f"img{i:03d}" for i in range(n)])
    targets = rng.integers(0, 3, n)
    jobs = []
    for seed in (1, 2):
        pred_a = np.where(rng.random(n) < 0.7, targets, (targets + 1) % 3)
        pred_b = np.where(rng.random(n) < 0.9, targets, (targets + 1) % 3)
        order = rng.permutation(n)  # B's file lists the images in another order
        jobs.append(write_run(tmp_path / f"a{seed}", ids, targets, pred_a, seed, "clip_subtask_a", 0.02))
        jobs.append(write_run(tmp_path / f"b{seed}", ids[order], targets[order], pred_b[order], seed, "clip_subtask_b", 0.03))
    arms = {f"experiment={e}": {"experiment": e, "n_completed": 2,
                                "metrics": {"test_accuracy": {"mean": 0.8, "std": 0.01, "ci_low": 0.7, "ci_high": 0.9}}}
            for e in ("clip_subtask_a", "clip_subtask_b")}
    out = clip_summary(arms, jobs, {"alpha": 0.05}, n_boot=500)
    comp = out["result"]["comparisons"]["(base)"]
    assert comp["seeds"] == [1, 2] and comp["n_images"] == n
    frame_a = pd.read_csv(tmp_path / "a1" / "predictions_test.csv")
    frame_b = pd.read_csv(tmp_path / "b1" / "predictions_test.csv").set_index("sample_id").loc[frame_a["sample_id"]]
    ca = frame_a[["logit_0", "logit_1", "logit_2"]].to_numpy().argmax(1) == frame_a["target"].to_numpy()
    cb = frame_b[["logit_0", "logit_1", "logit_2"]].to_numpy().argmax(1) == frame_b["target"].to_numpy()
    assert comp["per_seed"][0]["b"] == int(np.sum(ca & ~cb)) and comp["per_seed"][0]["c"] == int(np.sum(~ca & cb))
    assert comp["ece_seed_t"]["mean_diff"] == pytest.approx(0.01)
    assert "Verdict" in out["markdown"] and "| accuracy |" in out["markdown"]

    # a B run tested on other images is refused, naming the file
    frame = pd.read_csv(tmp_path / "b2" / "predictions_test.csv")
    frame.loc[0, "sample_id"] = "other"
    frame.to_csv(tmp_path / "b2" / "predictions_test.csv", index=False)
    with pytest.raises(ValueError, match="arm B, seed 2.*different samples"):
        clip_summary(arms, jobs, {"alpha": 0.05}, n_boot=100)
    assert clip_summary({}, [], {"alpha": 0.05}) is None
