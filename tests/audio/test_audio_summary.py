"""Seed 003's numbers against sklearn / scipy / hand-worked cases, and the summary plugin on toy jobs."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
from scipy.stats import binomtest
from sklearn.metrics import balanced_accuracy_score, brier_score_loss, recall_score

from analysis.audio.summary import (
    audio_metrics,
    audio_summary,
    choose_threshold,
    exit_criteria,
    operating_point,
    pooled_bootstrap_ci,
    snr_accuracy,
    snr_key,
    wrong_in_every_seed,
)
from analysis.predictions import prediction_table, write_predictions
from analysis.summary import arm_matches

THRESHOLDS = {"balanced_accuracy_std_max": 0.03, "speech_accuracy_min": 0.5, "nonspeech_accuracy_min": 0.95, "ece_max": 0.2,
              "min_seeds": 2, "mcnemar_alpha": 0.05, "max_shared_groups": 0}


def test_audio_metrics_match_sklearn() -> None:
    rng = np.random.default_rng(0)
    y = rng.integers(0, 2, 200)
    logits = rng.normal(size=200) + 1.5 * (y - 0.5)
    for t in (1.0, 3.0):
        m = audio_metrics(logits, y, temperature=t, n_bins=5)
        pred = (logits > 0).astype(int)
        assert m["balanced_accuracy"] == pytest.approx(balanced_accuracy_score(y, pred))
        assert m["speech_accuracy"] == pytest.approx(recall_score(y, pred, pos_label=1))
        assert m["nonspeech_accuracy"] == pytest.approx(recall_score(y, pred, pos_label=0))
        assert m["brier"] == pytest.approx(brier_score_loss(y, 1 / (1 + np.exp(-logits / t))))


def test_audio_metrics_seed_like_case_and_ece_by_hand() -> None:
    # the seed's baseline: 8 SPEECH (3 right), 16 NONSPEECH (all right) -> 79.2% overall, 37.5% / 100%
    y = np.array([1] * 8 + [0] * 16)
    logits = np.array([2.0] * 3 + [-2.0] * 5 + [-2.0] * 16)
    m = audio_metrics(logits, y, n_bins=5)
    assert m["accuracy"] == pytest.approx(19 / 24) and round(m["accuracy"], 3) == 0.792
    assert m["speech_accuracy"] == 0.375 and m["nonspeech_accuracy"] == 1.0 and m["balanced_accuracy"] == pytest.approx(0.6875)
    # every confidence is sigmoid(2) = 0.8808 (bin [0.8, 1]); accuracy 19/24 -> ECE = |19/24 - 0.8808|
    assert m["ece"] == pytest.approx(abs(19 / 24 - 1 / (1 + math.exp(-2))))
    # one class only: balanced accuracy is that class's accuracy, the other is NaN
    one = audio_metrics(np.array([1.0, -1.0]), np.array([1, 1]))
    assert one["balanced_accuracy"] == 0.5 and math.isnan(one["nonspeech_accuracy"])


def test_snr_accuracy_hand_worked() -> None:
    y = np.array([1, 1, 1, 0, 1])
    logits = np.array([1.0, -1.0, 2.0, 5.0, -3.0])
    snr = np.array([-10.0, -10.0, 20.0, -10.0, np.nan])
    assert snr_accuracy(logits, y, snr) == {-10.0: {"accuracy": 0.5, "count": 2}, 20.0: {"accuracy": 1.0, "count": 1}}
    assert snr_key(-10.0) == "m10" and snr_key(5.0) == "5" and snr_key(2.5) == "2p5"


def test_pooled_bootstrap_ci_against_a_plain_loop() -> None:
    rng = np.random.default_rng(1)
    y = rng.integers(0, 2, 60)
    correct = rng.random(60) < np.where(y == 1, 0.6, 0.9)
    out = pooled_bootstrap_ci(y, correct, n_boot=2000, seed=5)
    # the same resamples by a plain per-resample loop (numpy's generator drawn in the same order)
    from analysis.significance import stratified_bootstrap_indices

    idx = stratified_bootstrap_indices(y, 2000, np.random.default_rng(5))
    bal = [balanced_accuracy_score(y[i], np.where(correct[i], y[i], 1 - y[i])) for i in idx]
    low, high = np.percentile(bal, [2.5, 97.5])
    assert out["balanced_accuracy"]["ci_low"] == pytest.approx(low) and out["balanced_accuracy"]["ci_high"] == pytest.approx(high)
    assert out["balanced_accuracy"]["value"] == pytest.approx(balanced_accuracy_score(y, np.where(correct, y, 1 - y)))
    # all right: the CI collapses to 1
    perfect = pooled_bootstrap_ci(y, np.ones(60, bool), n_boot=100)
    assert perfect["speech_accuracy"] == {"value": 1.0, "ci_low": 1.0, "ci_high": 1.0}


def test_wrong_in_every_seed() -> None:
    base = pd.DataFrame({"sample_id": ["a", "b", "c"], "target": [1, 1, 0], "group": ["spk_1", "spk_2", "src_3"],
                         "snr_db": [-10.0, 5.0, np.nan]})
    t1 = base.assign(logit=[-1.0, -2.0, 1.0])  # a, b, c wrong
    t2 = base.assign(logit=[-3.0, 2.0, 2.0])   # a, c wrong
    hard = wrong_in_every_seed({42: t1, 123: t2})
    assert hard["sample_id"].tolist() == ["a", "c"]
    assert hard["mean_logit"].tolist() == [-2.0, 1.5] and hard["snr_db"].iloc[0] == -10.0


def test_exit_criteria_pass_fail_edges() -> None:
    stats = {"n_seeds": 3, "balanced_accuracy_std": 0.02, "speech_accuracy": 0.5, "nonspeech_accuracy": 0.949, "ece": 0.2,
             "mcnemar_p": [0.01, 0.04], "bootstrap": {"ci_low": 0.6, "ci_high": 0.7}, "shared_groups": 0}
    verdicts = {r["criterion"]: r["verdict"] for r in exit_criteria(stats, THRESHOLDS)}
    assert list(verdicts.values()) == ["PASS", "PASS", "FAIL", "FAIL", "PASS", "PASS", "PASS", "PASS"]
    stats.update(n_seeds=1, balanced_accuracy_std=None, mcnemar_p=[0.01, 0.06], shared_groups=2, bootstrap=None)
    verdicts = [r["verdict"] for r in exit_criteria(stats, THRESHOLDS)]
    assert verdicts == ["n/a", "PASS", "FAIL", "FAIL", "FAIL", "FAIL", "FAIL", "FAIL"]
    with pytest.raises(ValueError, match="lacks \\['ece_max'\\]"):
        exit_criteria(stats, {k: v for k, v in THRESHOLDS.items() if k != "ece_max"})


def _write_job(tmp_path, name: str, seed: int, logits: np.ndarray, y: np.ndarray, bal: float) -> dict:
    d = tmp_path / name
    frame = pd.DataFrame({"sample_id": [f"clip_{i:03d}" for i in range(len(y))], "target": y,
                          "group": [f"g{i % 4}" for i in range(len(y))], "snr_db": 0.0})
    table = prediction_table("binary", logits, frame, "test")
    write_predictions(d / "predictions_test.csv", table, {"kind": "binary", "split": "test"})
    metrics = {"seed": seed, "test_balanced_accuracy": bal, "test_speech_accuracy": 0.6, "test_nonspeech_accuracy": 0.97,
               "test_ece_calibrated": 0.1, "audit_shared_groups": 0}
    return {"job_dir": str(d), "metrics": metrics, "status": "completed"}


def test_summary_plugin_mcnemar_matches_binomial_and_lists_hard_clips(tmp_path) -> None:
    y = np.array([1] * 10 + [0] * 10)
    ref_logits = np.where(y == 1, -1.0, -1.0)  # reference says NONSPEECH to everything
    ref_logits[0] = 1.0
    new_logits = np.where(y == 1, 1.0, -1.0)  # the other arm gets everything right except clip 1
    new_logits[1] = -1.0
    jobs, arms = [], {}
    for arm, logits in (("experiment=audio_lora_attn", ref_logits), ("experiment=audio_lora_attn_mlp", new_logits)):
        dirs = []
        for seed in (42, 123):
            job = _write_job(tmp_path, f"{arm.split('=')[1]}_{seed}", seed, logits, y, 0.7 + seed / 1e4)
            jobs.append(job)
            dirs.append(job["job_dir"])
        arms[arm] = {"job_dirs": dirs, "n_completed": 2}
    out = audio_summary(arms, jobs, THRESHOLDS, reference="experiment=audio_lora_attn_mlp", n_boot=500)
    # the reference is matched by whole overrides: "..._attn" is not a prefix match of "..._attn_mlp"
    assert arm_matches("+audio_grid=r16_a32 experiment=audio_lora_attn", "audio_grid=r16_a32")
    assert not arm_matches("experiment=audio_lora_attn_mlp", "experiment=audio_lora_attn")
    res = out["result"]["arms"]["experiment=audio_lora_attn"]
    test = res["mcnemar"][42]
    # reference (mlp) right only: clips 2..9 (8); this arm right only: none (clip 0 both, clip 1 neither)
    assert (test["b"], test["c"]) == (8, 0)
    assert test["p"] == pytest.approx(binomtest(0, 8, 0.5).pvalue)
    assert sorted(h["sample_id"] for h in res["wrong_in_every_seed"]) == [f"clip_{i:03d}" for i in range(1, 10)]
    assert res["balanced_accuracy_std"] == pytest.approx(np.std([0.7042, 0.7123], ddof=1))
    assert res["paired_bootstrap"]["diff"] == pytest.approx(0.55 - 0.95)
    assert "McNemar" in out["markdown"] and "PASS" in out["markdown"]
    assert audio_summary({}, [], THRESHOLDS) is None
    # an arm that adds overrides to the reference's (a zero-shot arm on the same experiment) does not steal it
    zero = _write_job(tmp_path, "zero_42", 42, np.zeros(20) - 1.0, y, 0.5)
    arms["experiment=audio_lora_attn model.net.lora=null train=False"] = {"job_dirs": [zero["job_dir"]], "n_completed": 1}
    out = audio_summary(arms, [*jobs, zero], THRESHOLDS, reference="experiment=audio_lora_attn", n_boot=100)
    assert out["result"]["reference"] == "experiment=audio_lora_attn"
    assert set(out["result"]["arms"]["experiment=audio_lora_attn model.net.lora=null train=False"]["mcnemar"]) == {42}


def test_choose_threshold_hand_worked_ties_and_unmeetable_targets() -> None:
    # dev: NONSPEECH logits -3, -1, -1, 0, 2; SPEECH logits 0, 0.5, 3
    logits = np.array([-3.0, -1.0, -1.0, 0.0, 2.0, 0.0, 0.5, 3.0])
    y = np.array([0, 0, 0, 0, 0, 1, 1, 1])
    # 80%: k = 4 -> the 4th smallest NONSPEECH logit, 0; the SPEECH clip tied at 0 is called NONSPEECH
    assert choose_threshold(logits, y, 0.8) == {"threshold": 0.0, "nonspeech_accuracy": 0.8,
                                                "speech_accuracy": pytest.approx(2 / 3)}
    # 40%: k = 2 -> -1; its tie with the 3rd NONSPEECH logit rejects 3 of 5 (above the target)
    assert choose_threshold(logits, y, 0.4)["threshold"] == -1.0
    assert choose_threshold(logits, y, 0.4)["nonspeech_accuracy"] == 0.6
    # 100%: the largest NONSPEECH logit; only the SPEECH clip above it survives
    assert choose_threshold(logits, y, 1.0) == {"threshold": 2.0, "nonspeech_accuracy": 1.0,
                                                "speech_accuracy": pytest.approx(1 / 3)}
    # 0.95 x 60 is 57.000000000000007 in floating point: k must be 57, not 58
    many = np.arange(60.0)
    assert choose_threshold(many, np.zeros(60), 0.95)["threshold"] == 56.0
    for bad in (0.0, 1.01):
        with pytest.raises(ValueError, match="cannot be met"):
            choose_threshold(logits, y, bad)
    with pytest.raises(ValueError, match="no NONSPEECH clips"):
        choose_threshold(np.array([1.0, 2.0]), np.array([1, 1]), 0.95)
    # on test: the dev threshold (0) applied, strict > for SPEECH; AUROC ignores the threshold
    op = operating_point(logits, y, np.array([-1.0, 0.0, 1.0, 0.0, 2.0]), np.array([0, 0, 0, 1, 1]), 0.8)
    assert op["threshold"] == 0.0 and op["nonspeech_accuracy"] == pytest.approx(2 / 3) and op["speech_accuracy"] == 0.5
    assert op["auroc"] == pytest.approx(((0.5 + 1 + 0) + (1 + 1 + 1)) / 6)


def test_summary_reports_the_operating_point_from_the_dev_predictions(tmp_path) -> None:
    y = np.array([1] * 10 + [0] * 10)
    test_logits = np.where(y == 1, 2.0, np.linspace(-2.0, 1.5, 20))  # NONSPEECH logits spread up to 1.5
    jobs, dirs = [], []
    for seed in (1, 2):
        job = _write_job(tmp_path, f"op_{seed}", seed, test_logits, y, 0.8)
        dev_logits = np.concatenate([np.full(10, 3.0), np.linspace(-1.0, 1.0, 10)])  # 95% of 10 -> k = 10 -> 1.0
        frame = pd.DataFrame({"sample_id": [f"dev_{i:03d}" for i in range(20)], "target": y})
        write_predictions(tmp_path / f"op_{seed}" / "predictions_val.csv", prediction_table("binary", dev_logits, frame, "val"),
                          {"kind": "binary", "split": "val"})
        jobs.append(job)
        dirs.append(job["job_dir"])
    out = audio_summary({"experiment=audio_smoke": {"job_dirs": dirs, "n_completed": 2}}, jobs, THRESHOLDS, n_boot=50)
    arm = out["result"]["arms"]["experiment=audio_smoke"]
    op = arm["operating_point"][1]
    nonspeech_test = np.linspace(-2.0, 1.5, 20)[10:]
    assert op["threshold"] == 1.0 and op["nonspeech_accuracy"] == pytest.approx(np.mean(nonspeech_test <= 1.0))
    assert op["speech_accuracy"] == 1.0 and op["auroc"] == 1.0
    rows = {r["criterion"]: r for r in arm["criteria_operating_point"]}
    assert rows["NONSPEECH accuracy (mean)"]["value"] == pytest.approx(np.mean(nonspeech_test <= 1.0))
    assert "operating point" in out["markdown"] and "at the argmax" in out["markdown"]
