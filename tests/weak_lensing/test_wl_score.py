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


# ---- hand-worked edges (issue 27: mutation testing) ----
# Dyadic values, exact in binary, so that a truth exactly one sigma off and the score terms are exact.
TRUTH = np.array([[0.25, 0.75], [0.5, 1.0]])
MEAN = np.array([[0.375, 0.75], [0.5, 0.5]])
STD = np.array([[0.125, 0.25], [0.25, 0.25]])


def test_wl_metrics_hand_worked_with_the_run_label_scaler() -> None:
    # map 0: omega_m exactly 1 sigma off (covered), s8 exact; map 1: omega_m exact, s8 2 sigma off
    m0 = -((1.0 + np.log(0.125**2) + 1000 * 0.125**2) + np.log(0.25**2))
    m1 = -(np.log(0.25**2) + (4.0 + np.log(0.25**2) + 1000 * 0.25))
    want = {
        "score": (m0 + m1) / 2,
        "score_unfloored": (m0 + m1) / 2,
        # standardised by the run's scaler (0.25, 0.5): errors -0.5 and 1 -> mean of (0.25, 0, 0, 1)
        "mse_std": 0.3125,
        # ss_tot = 0.03125 for both (below 1); ss_res 0.015625 and 0.25
        "r2_omega_m": 0.5,
        "r2_s8": -7.0,
        "coverage_omega_m": 1.0,
        "coverage_s8": 0.5,
        "coverage": 0.75,
        "mean_sigma_omega_m": 0.1875,
        "mean_sigma_s8": 0.25,
        "n": 2.0,
    }
    got = wl_metrics(TRUTH, MEAN, STD, ("omega_m", "s8"), SCALE, FLOOR, label_loc=[3.0, -2.0], label_scale=[0.25, 0.5])
    assert got == pytest.approx(want, rel=1e-12, abs=1e-15)
    assert sorted(got) == sorted(want)
    assert all(type(v) is float for v in got.values())
    # without the run's scaler, the truth's own std (0.125, 0.125) scales the errors: (1, 0, 0, 16) / 4
    assert wl_metrics(TRUTH, MEAN, STD, ("omega_m", "s8"), SCALE, FLOOR)["mse_std"] == pytest.approx(4.25, rel=1e-12)
    # the run's scale alone (the location cancels in the difference)
    assert wl_metrics(TRUTH, MEAN, STD, ("omega_m", "s8"), SCALE, FLOOR, label_scale=[0.25, 0.5])["mse_std"] == pytest.approx(0.3125, rel=1e-12)


def test_wl_metrics_refuses_names_that_do_not_match_the_columns() -> None:
    with pytest.raises(ValueError, match=r"^3 target names \['a', 'b', 'c'\] for 2 target columns$"):
        wl_metrics(TRUTH, MEAN, STD, ("a", "b", "c"), SCALE, FLOOR)


def test_standardized_mse_uses_the_given_scale_and_refuses_a_zero_one() -> None:
    # errors (-0.125, 0) and (0, 0.5) over scales (0.5, 0.25): (-0.25, 0, 0, 2) -> (0.0625 + 4) / 4
    assert standardized_mse(TRUTH, MEAN, loc=[0.0, 0.0], scale=[0.5, 0.25]) == pytest.approx(4.0625 / 4, rel=1e-12)
    assert standardized_mse(TRUTH, MEAN, scale=[0.5, 0.25]) == pytest.approx(4.0625 / 4, rel=1e-12)
    with pytest.raises(ValueError, match=r"label scaler scale must be > 0, got \[0\. 1\.\]"):
        standardized_mse(TRUTH, MEAN, scale=[0.0, 1.0])
    with pytest.raises(ValueError, match="label scaler scale must be > 0"):  # a constant truth has std 0
        standardized_mse(np.array([[0.3], [0.3]]), np.array([[0.3], [0.4]]))


def test_r2_of_a_truth_with_small_spread_by_hand() -> None:
    # ss_tot = 0.02 (below 1): r2 = 1 - 0.0025 / 0.02
    truth = np.array([[0.1], [0.2], [0.3]])
    mean = np.array([[0.1], [0.25], [0.3]])
    assert r2_per_target(truth, mean)[0] == pytest.approx(0.875, rel=1e-12)
    assert r2_per_target(truth, mean)[0] == pytest.approx(r2_score(truth, mean), rel=1e-12)


def test_float32_truth_is_summarised_in_float64() -> None:
    rng = np.random.default_rng(5)
    truth = rng.uniform(0.1, 0.6, (1000, 2)).astype(np.float32)
    mean = truth.astype(np.float64) + rng.normal(0, 0.01, truth.shape)
    t64 = truth.astype(np.float64)
    # the float32 mean and std of the truth are off by ~1e-8 relative; a float64 summary matches to 1e-14
    np.testing.assert_allclose(r2_per_target(truth, mean), r2_per_target(t64, mean), rtol=1e-14)
    assert standardized_mse(truth, mean) == pytest.approx(standardized_mse(t64, mean), rel=1e-14)


def test_coverage_counts_a_truth_exactly_n_sigma_off() -> None:
    np.testing.assert_array_equal(coverage(TRUTH, MEAN, STD), [1.0, 0.5])  # map 0's omega_m: exactly 1 sigma
    np.testing.assert_array_equal(coverage(TRUTH, MEAN, STD, n_sigma=2.0), [1.0, 1.0])  # map 1's s8: exactly 2
    np.testing.assert_array_equal(coverage(TRUTH, MEAN, STD, n_sigma=0.5), [0.5, 0.5])


def test_per_map_frame_covers_exactly_one_sigma_and_reads_float64() -> None:
    frame = pd.DataFrame({"omega_m": [1, 2], "omega_m_mean": [2, 2], "omega_m_std": [1, 1]})  # integer columns
    truth, mean, std = predictions_arrays(frame, ("omega_m",))
    assert truth.dtype == mean.dtype == std.dtype == np.float64
    out = per_map_frame(frame, ("omega_m",), SCALE)
    assert out["covered_omega_m"].tolist() == [True, True]  # 1 sigma off exactly, and exact
    np.testing.assert_allclose(out["score"], [-(1.0 + 0.0 + 1000.0), -0.0], rtol=1e-12)


def test_missing_columns_name_the_predictions_by_default() -> None:
    with pytest.raises(ValueError, match=r"^predictions: missing column\(s\) \['s8_mean', 's8_std'\]"):
        predictions_arrays(pd.DataFrame({"s8": [0.8]}), ("s8",))


def test_float32_std_is_squared_in_float64() -> None:
    rng = np.random.default_rng(6)
    truth = rng.uniform(0.1, 0.6, (50, 2))
    mean = truth + rng.normal(0, 0.02, truth.shape)
    std = rng.uniform(0.01, 0.05, truth.shape).astype(np.float32)
    std64 = std.astype(np.float64)
    np.testing.assert_allclose(challenge_scores(truth, mean, std, SCALE), challenge_scores(truth, mean, std64, SCALE), rtol=1e-13)
    got = wl_metrics(truth, mean, std, ("omega_m", "s8"), SCALE, FLOOR)
    assert got == pytest.approx(wl_metrics(truth, mean, std64, ("omega_m", "s8"), SCALE, FLOOR), rel=1e-13)
    assert got["n"] == 50.0  # maps, not targets


def test_bad_std_messages_give_the_shape_minimum_and_count() -> None:
    with pytest.raises(ValueError, match=r"^std has shape \(1, 2\); expected \(2, 2\) like truth$"):
        challenge_scores(TRUTH, MEAN, np.ones((1, 2)), SCALE)
    # 0, -1 and -2 are non-positive; 0.5 (below 1) is fine
    with pytest.raises(ValueError, match=r"^std must be finite and > 0; got min -2\.0 \(3 non-positive\)$"):
        challenge_scores(TRUTH, MEAN, np.array([[0.0, -1.0], [-2.0, 0.5]]), SCALE)
