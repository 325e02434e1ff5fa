"""Issue 22: calibrating the direct heads' sigmas on validation maps (fit_sigma_scale, task=weak_lensing_score calibrate_on)."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from scipy import special

from analysis.predictions import prediction_record, read_predictions, write_predictions
from analysis.weak_lensing.score import ONE_SIGMA, coverage, fit_sigma_scale, wl_metrics
from tests.conftest import compose

NAMES = ["omega_m", "s8"]


def test_one_sigma_is_the_gaussian_mass_within_one_sigma() -> None:
    assert ONE_SIGMA == pytest.approx(special.erf(1 / math.sqrt(2)), abs=1e-15)


def test_fit_sigma_scale_by_hand() -> None:
    # |z| = 0.5, 1, 2, 4 (target omega_m) and 0.1, 0.2, 0.3, 0.4 (s8); target 0.5 of 4 maps -> the 2nd smallest
    truth = np.zeros((4, 2))
    mean = np.array([[0.5, 0.1], [-1.0, 0.2], [2.0, -0.3], [4.0, 0.4]])
    std = np.ones((4, 2))
    assert fit_sigma_scale(truth, mean, std, target=0.5).tolist() == [1.0, 0.2]
    # 0.683 of 4 maps -> ceil(2.73) = 3rd smallest
    assert fit_sigma_scale(truth, mean, std).tolist() == [2.0, 0.3]
    # std enters as |z| = |truth - mean| / std: doubling std halves k
    assert fit_sigma_scale(truth, mean, 2 * std).tolist() == [1.0, 0.15]
    # on the fitting maps the coverage becomes ceil(target N) / N
    k = fit_sigma_scale(truth, mean, std)
    assert coverage(truth, mean, std * k).tolist() == [0.75, 0.75]


def test_fit_sigma_scale_recovers_a_known_miscalibration() -> None:
    rng = np.random.default_rng(3)
    n = 20_000
    truth = rng.normal(size=(n, 2))
    mean = truth + rng.normal(size=(n, 2)) * np.array([0.1, 0.02])  # true errors
    std = np.tile([0.2, 0.01], (n, 1))  # omega_m twice too wide, s8 half too narrow
    k = fit_sigma_scale(truth, mean, std)
    # k * std should be the true sigma: 0.5 and 2.0, up to the sampling error of a quantile (~1% here)
    assert k == pytest.approx([0.5, 2.0], rel=0.02)
    cov = coverage(truth, mean, std * k)
    assert np.all(np.abs(cov - ONE_SIGMA) <= 1 / n + 1e-12)


@pytest.mark.parametrize("bad, why", [
    (dict(target=1.0), "target coverage"), (dict(target=0.0), "target coverage"),
    (dict(std=np.array([[1.0, 0.0]])), "std must be finite and > 0"),
    (dict(mean=np.array([[np.nan, 0.0]])), "must be finite"),
])
def test_fit_sigma_scale_refuses_bad_input(bad: dict, why: str) -> None:
    args = dict(truth=np.zeros((1, 2)), mean=np.zeros((1, 2)), std=np.ones((1, 2)))
    args.update(bad)
    with pytest.raises(ValueError, match=why):
        fit_sigma_scale(**args)
    with pytest.raises(ValueError, match="no maps"):
        fit_sigma_scale(np.zeros((0, 2)), np.zeros((0, 2)), np.ones((0, 2)))


def _file(path: Path, split: str, truth: np.ndarray, mean: np.ndarray, std: np.ndarray, names=NAMES) -> Path:
    frame = pd.DataFrame({"sample_id": [f"m{i:03d}" for i in range(len(truth))], "split": split})
    for j, t in enumerate(names):
        frame[t], frame[f"{t}_mean"], frame[f"{t}_std"] = truth[:, j], mean[:, j], std[:, j]
    record = prediction_record("regression", split, names, label_scaler={t: {"loc": 0.0, "scale": 1.0} for t in names},
                               wl_score={"scale": 1000.0, "floor": -1.0e6})
    return write_predictions(path, frame, record)


def _evaluate(overrides: list[str]) -> dict:
    from evaluate import evaluate

    return evaluate(compose(overrides, config_name="evaluate"))


def test_score_task_calibrates_on_validation_maps(tmp_path: Path) -> None:
    rng = np.random.default_rng(5)
    truth_v, truth_t = rng.normal(0.3, 0.1, (300, 2)), rng.normal(0.3, 0.1, (200, 2))
    err = np.array([0.05, 0.01])
    mean_v, mean_t = truth_v + rng.normal(size=(300, 2)) * err, truth_t + rng.normal(size=(200, 2)) * err
    std_v, std_t = np.tile(2 * err, (300, 1)), np.tile(2 * err, (200, 1))  # twice too wide: over-coverage
    val = _file(tmp_path / "predictions_val.csv", "val", truth_v, mean_v, std_v)
    test = _file(tmp_path / "predictions_test.csv", "test", truth_t, mean_t, std_t)
    report = _evaluate(["task=weak_lensing_score", f"predictions={test}", f"calibrate_on={val}"])
    k = fit_sigma_scale(truth_v, mean_v, std_v)
    cal = report["calibrated"]
    assert [cal["sigma_scale"][t] for t in NAMES] == k.tolist() and cal["n_fit"] == 300
    assert cal["metrics"] == wl_metrics(truth_t, mean_t, std_t * k, NAMES, 1000.0, -1.0e6, [0.0, 0.0], [1.0, 1.0])
    assert report["coverage"] > 0.9 and abs(cal["metrics"]["coverage"] - ONE_SIGMA) < 0.08  # before / after
    assert cal["metrics"]["score"] > report["score"]  # sigmas twice too wide cost log(4) per target and map
    written = read_predictions(cal["predictions"], kind="regression")
    assert np.allclose(written.stds, std_t * k) and np.allclose(written.means, mean_t)
    assert written.sidecar["sigma_scale_fitted_on"] == str(val) and written.recorded_split == "test"
    assert (tmp_path / "predictions_test_calibrated_wl_scores.csv").is_file()
    # the calibrated file scores as the report says
    again = _evaluate(["task=weak_lensing_score", f"predictions={cal['predictions']}", f"out_dir={tmp_path / 'again'}"])
    assert again["score"] == pytest.approx(cal["metrics"]["score"], rel=1e-12)


def test_score_task_refuses_a_calibration_it_cannot_trust(tmp_path: Path) -> None:
    x = np.full((10, 2), 0.3)
    test = _file(tmp_path / "predictions_test.csv", "test", x, x + 0.01, np.full((10, 2), 0.02))
    other = _file(tmp_path / "other" / "predictions_test.csv", "test", x, x, np.full((10, 2), 0.02))
    one = _file(tmp_path / "predictions_val.csv", "val", x[:, :1], x[:, :1], np.full((10, 1), 0.02), names=["omega_m"])
    for value, why in ((test, "is the file being scored"), (other, "is a test split"), (one, "has targets")):
        with pytest.raises(ValueError, match=why):
            _evaluate(["task=weak_lensing_score", f"predictions={test}", f"calibrate_on={value}"])
    with pytest.raises(FileNotFoundError, match="calibrate_on"):
        _evaluate(["task=weak_lensing_score", f"predictions={test}", f"calibrate_on={tmp_path / 'nope.csv'}"])
