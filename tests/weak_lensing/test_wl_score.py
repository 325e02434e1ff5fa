"""The weak-lensing challenge score and the kit's reference metrics against hand-worked cases and sklearn."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import r2_score
from sklearn.preprocessing import StandardScaler

from omegaconf import OmegaConf

from analysis.weak_lensing.score import (
    challenge_score,
    challenge_scores,
    coverage,
    per_map_frame,
    predictions_arrays,
    r2_per_target,
    standardized_mse,
    wl_metrics,
)
from tests.conftest import ROOT

# the family's constants, written once in its thresholds file; the hand-worked cases below use the kit's
THRESHOLDS = OmegaConf.load(ROOT / "conf" / "thresholds" / "weak_lensing.yaml")
SCALE, FLOOR = float(THRESHOLDS.score_scale), float(THRESHOLDS.score_floor)


def test_thresholds_hold_the_kits_score_constants() -> None:
    assert (SCALE, FLOOR) == (1000.0, -1.0e6)  # the kit's Score._score_phase1: scale_factor 1000, floor -1e6


def test_score_hand_worked() -> None:
    truth = np.array([[0.3, 0.8], [0.25, 0.75]])
    mean = np.array([[0.31, 0.78], [0.25, 0.75]])
    std = np.array([[0.02, 0.01], [0.05, 0.1]])
    # map 0: (0.01^2 / 0.02^2 + ln 0.0004 + 1000 * 1e-4) + (0.02^2 / 0.01^2 + ln 1e-4 + 1000 * 4e-4)
    m0 = -((0.25 + np.log(4e-4) + 0.1) + (4.0 + np.log(1e-4) + 0.4))
    # map 1: exact means; only the log terms
    m1 = -(np.log(0.05**2) + np.log(0.1**2))
    np.testing.assert_allclose(challenge_scores(truth, mean, std, SCALE), [m0, m1], rtol=1e-12)
    assert challenge_score(truth, mean, std, SCALE, FLOOR) == pytest.approx((m0 + m1) / 2, rel=1e-12)


def test_score_floor_applies_to_the_mean() -> None:
    truth = np.zeros((2, 2))
    mean = np.array([[1.0, 1.0], [0.0, 0.0]])
    std = np.full((2, 2), 1e-4)
    per_map = challenge_scores(truth, mean, std, SCALE)
    assert per_map[0] < -1e6  # one terrible map ...
    assert challenge_score(truth, mean, std, SCALE, FLOOR) == -1e6  # ... floors the mean
    assert challenge_score(truth, mean, std, SCALE, floor=-1e12) == pytest.approx(per_map.mean())
    # a mean above the floor is not touched
    assert challenge_score(truth, truth, np.ones((2, 2)), SCALE, FLOOR) == 0.0


def test_score_nan_mean_is_floored_and_bad_std_refused() -> None:
    truth = np.zeros((1, 2))
    assert challenge_score(truth, np.array([[np.nan, 0.0]]), np.ones((1, 2)), SCALE, FLOOR) == -1e6
    with pytest.raises(ValueError, match="std must be finite and > 0"):
        challenge_scores(truth, truth, np.array([[0.0, 1.0]]), SCALE)
    with pytest.raises(ValueError, match="shape"):
        challenge_scores(truth, np.zeros((2, 2)), np.ones((1, 2)), SCALE)


def test_reference_metrics_match_sklearn() -> None:
    rng = np.random.default_rng(0)
    truth = np.column_stack([rng.uniform(0.1, 0.6, 200), rng.uniform(0.7, 0.95, 200)])
    mean = truth + rng.normal(0, [0.03, 0.01], truth.shape)
    std = np.abs(rng.normal(0.02, 0.005, truth.shape)) + 1e-3
    np.testing.assert_allclose(r2_per_target(truth, mean), r2_score(truth, mean, multioutput="raw_values"), rtol=1e-12)
    scaler = StandardScaler().fit(truth)
    want = np.mean((scaler.transform(truth) - scaler.transform(mean)) ** 2)
    assert standardized_mse(truth, mean, scaler.mean_, scaler.scale_) == pytest.approx(want, rel=1e-12)
    assert standardized_mse(truth, mean) == pytest.approx(want, rel=1e-12)
    cov = coverage(truth, mean, std)
    np.testing.assert_allclose(cov, [np.mean(np.abs(truth[:, j] - mean[:, j]) <= std[:, j]) for j in range(2)])
    m = wl_metrics(truth, mean, std, ("omega_m", "s8"), SCALE, FLOOR)
    assert m["coverage"] == pytest.approx(cov.mean())
    assert m["mean_sigma_s8"] == pytest.approx(std[:, 1].mean())
    assert m["score"] == pytest.approx(challenge_score(truth, mean, std, SCALE, FLOOR))


def test_coverage_of_a_calibrated_gaussian_is_68_percent() -> None:
    rng = np.random.default_rng(1)
    n = 200_000
    truth = rng.normal(0, 1, (n, 1))
    cov = coverage(truth, np.zeros((n, 1)), np.ones((n, 1)))
    assert cov[0] == pytest.approx(0.6827, abs=0.005)


def test_r2_constant_truth_follows_sklearn() -> None:
    truth = np.ones((4, 1))
    assert r2_per_target(truth, truth)[0] == r2_score(truth, truth)
    off = truth + np.array([[0.1], [0.0], [0.0], [0.0]])
    assert r2_per_target(truth, off)[0] == r2_score(truth, off)


def test_predictions_frame_columns_are_checked() -> None:
    frame = pd.DataFrame({"omega_m": [0.3], "omega_m_mean": [0.3], "omega_m_std": [0.1], "s8": [0.8], "s8_mean": [0.8]})
    with pytest.raises(ValueError, match="s8_std"):
        predictions_arrays(frame, ("omega_m", "s8"), source="p.csv")
    frame["s8_std"] = 0.1
    out = per_map_frame(frame, ("omega_m", "s8"), SCALE)
    assert out["score"].iloc[0] == pytest.approx(-2 * np.log(0.01))
    assert bool(out["covered_s8"].iloc[0])
