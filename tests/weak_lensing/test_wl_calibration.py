"""Issue 22: calibrating the direct heads' sigmas on validation maps (fit_sigma_scale, task=weak_lensing_score calibrate_on)."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from scipy import special, stats

from analysis.predictions import prediction_record, read_predictions, write_predictions
from analysis.weak_lensing.score import (ONE_SIGMA, apply_sigma_scale, coverage, fit_sigma_scale, sigma_scale_record,
                                         wl_metrics)
from callbacks.weak_lensing.score import read_sigma_scale, sigma_scale_path
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


def _file(path: Path, split: str, truth: np.ndarray, mean: np.ndarray, std: np.ndarray, names=NAMES, **extra) -> Path:
    frame = pd.DataFrame({"sample_id": [f"m{i:03d}" for i in range(len(truth))], "split": split})
    for j, t in enumerate(names):
        frame[t], frame[f"{t}_mean"], frame[f"{t}_std"] = truth[:, j], mean[:, j], std[:, j]
    record = prediction_record("regression", split, names, label_scaler={t: {"loc": 0.0, "scale": 1.0} for t in names},
                               wl_score={"scale": 1000.0, "floor": -1.0e6}, **extra)
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


# ---------------------------------------------------------------------------------------------------
# the quantile convention, the record, applying stored factors, and sigma_scale.json beside the checkpoint


@pytest.mark.parametrize("n", [1, 2, 3, 7, 100, 2424])
def test_fit_sigma_scale_is_numpys_inverted_cdf_quantile_and_covers_the_target_up_to_one_map(n: int) -> None:
    rng = np.random.default_rng(n)
    truth, mean = rng.normal(size=(n, 2)), rng.normal(size=(n, 2))
    std = rng.uniform(0.5, 2.0, size=(n, 2))
    k = fit_sigma_scale(truth, mean, std)
    z = np.abs(truth - mean) / std
    # an independent statement of the convention: the empirical quantile without interpolation (k may sit a few
    # ulps above it, so that std * k is not rounded below |truth - mean| for the map that sets k)
    assert k == pytest.approx([np.quantile(z[:, j], ONE_SIGMA, method="inverted_cdf") for j in range(2)], rel=1e-14, abs=0)
    # on the fitting maps: exactly ceil(0.6827 n) maps inside k * sigma (continuous data: no ties), i.e. the
    # nominal coverage, over by less than one map (without the ulps, n = 2, 7, 100 here came out one map short)
    cov = coverage(truth, mean, std * k)
    assert cov.tolist() == [math.ceil(ONE_SIGMA * n) / n] * 2
    assert np.all((cov >= ONE_SIGMA) & (cov < ONE_SIGMA + 1 / n))


def test_fit_sigma_scale_seven_maps_by_hand() -> None:
    # ceil(0.6827 * 7) = ceil(4.78) = 5: the 5th smallest |z|; z = |truth - mean| / std
    truth = np.zeros((7, 1))
    mean = np.array([[0.3], [-0.1], [0.5], [0.2], [-0.7], [0.4], [0.6]])
    std = np.array([[0.1], [0.1], [1.0], [0.1], [0.7], [0.2], [3.0]])
    # |z| = 3, 1, 0.5, 2, 1, 2, 0.2 -> sorted 0.2, 0.5, 1, 1, 2, 2, 3
    assert fit_sigma_scale(truth, mean, std).tolist() == pytest.approx([2.0])
    # ties at k are inside: 6 of 7 maps covered, not 5 (|z| = 2 twice)
    assert coverage(truth, mean, std * 2.0).tolist() == [6 / 7]


def test_gaussian_residuals_with_doubled_sigma_give_half_within_monte_carlo_error() -> None:
    rng = np.random.default_rng(11)
    n, sigma = 5_000, np.array([0.05, 0.02])
    truth = rng.uniform(0.1, 0.6, size=(n, 2))
    mean = truth + rng.normal(size=(n, 2)) * sigma
    k = fit_sigma_scale(truth, mean, np.tile(2 * sigma, (n, 1)))
    # the sampling std of the p-quantile of |z| (|z| half-normal, density 2 phi(1) at its 0.6827 quantile z = 1):
    # sqrt(p (1 - p) / n) / (2 phi(1)) in |z| units, half of it in k = |z| / 2
    se = math.sqrt(ONE_SIGMA * (1 - ONE_SIGMA) / n) / (2 * stats.norm.pdf(1.0)) / 2
    assert np.all(np.abs(k - 0.5) < 4 * se), (k, se)


@pytest.mark.parametrize("bad, why", [
    (dict(std=np.array([[1.0, np.inf]])), "std must be finite and > 0"),
    (dict(std=np.array([[1.0, np.nan]])), "std must be finite and > 0"),
    (dict(std=np.array([[1.0, -0.5]])), "std must be finite and > 0"),
    (dict(truth=np.array([[np.inf, 0.0]])), "must be finite"),
    (dict(mean=np.zeros((2, 2))), "shape"),
])
def test_fit_sigma_scale_refuses_inf_negative_and_mismatched_input(bad: dict, why: str) -> None:
    args = dict(truth=np.zeros((1, 2)), mean=np.zeros((1, 2)), std=np.ones((1, 2)))
    args.update(bad)
    with pytest.raises(ValueError, match=why):
        fit_sigma_scale(**args)


def test_sigma_scale_record_by_hand() -> None:
    truth = np.zeros((4, 2))
    mean = np.array([[0.5, 0.1], [-1.0, 0.2], [2.0, -0.3], [4.0, 0.4]])
    rec = sigma_scale_record(truth, mean, np.ones((4, 2)), NAMES)
    assert rec == {"sigma_scale": {"omega_m": 2.0, "s8": 0.3}, "n": 4, "target_coverage": ONE_SIGMA,
                   "coverage_before": {"omega_m": 0.5, "s8": 1.0}, "coverage_after": {"omega_m": 0.75, "s8": 0.75}}
    with pytest.raises(ValueError, match="target names"):
        sigma_scale_record(truth, mean, np.ones((4, 2)), ["omega_m"])
    with pytest.raises(ValueError, match="no maps"):
        sigma_scale_record(np.zeros((0, 2)), np.zeros((0, 2)), np.ones((0, 2)), NAMES)


def test_apply_sigma_scale_matches_factors_by_name_and_refuses_unknown_targets() -> None:
    std = np.array([[1.0, 2.0], [3.0, 4.0]])
    # the mapping's order does not matter, the names do
    assert apply_sigma_scale(std, NAMES, {"s8": 0.5, "omega_m": 2.0}).tolist() == [[2.0, 1.0], [6.0, 2.0]]
    with pytest.raises(ValueError, match=r"missing \['s8'\], unknown \[\]"):
        apply_sigma_scale(std, NAMES, {"omega_m": 2.0})
    with pytest.raises(ValueError, match=r"unknown \['h0'\]"):
        apply_sigma_scale(std, NAMES, {"omega_m": 2.0, "s8": 1.0, "h0": 1.0})
    with pytest.raises(ValueError, match="finite and > 0"):
        apply_sigma_scale(std, NAMES, {"omega_m": 0.0, "s8": 1.0})
    with pytest.raises(ValueError, match="finite and > 0"):
        apply_sigma_scale(std, NAMES, {"omega_m": float("nan"), "s8": 1.0})
    with pytest.raises(ValueError, match="target names"):
        apply_sigma_scale(std, ["omega_m"], {"omega_m": 1.0})


def test_read_sigma_scale_finds_the_file_from_the_run_the_folder_or_the_checkpoint(tmp_path: Path) -> None:
    ckpts = tmp_path / "checkpoints"
    ckpts.mkdir()
    (ckpts / "best.ckpt").write_bytes(b"")
    assert read_sigma_scale(tmp_path) is None  # nothing fitted
    for where in (tmp_path, ckpts, ckpts / "best.ckpt"):
        assert sigma_scale_path(where) == ckpts / "sigma_scale.json"
    record = {"sigma_scale": {"omega_m": 0.8, "s8": 0.7}, "split": "val", "n": 10, "checkpoint": "best.ckpt"}
    (ckpts / "sigma_scale.json").write_text(json.dumps(record))
    for where in (tmp_path, ckpts, ckpts / "best.ckpt", ckpts / "sigma_scale.json"):
        assert read_sigma_scale(where) == record
    assert read_sigma_scale(ckpts / "last.ckpt") is None  # fitted on best.ckpt's outputs, not last's
    (ckpts / "sigma_scale.json").write_text(json.dumps({"temperature": 2.0}))
    with pytest.raises(ValueError, match="'sigma_scale' mapping"):
        read_sigma_scale(tmp_path)


def _val_and_test(tmp_path: Path, **val_extra) -> tuple[Path, Path, tuple[np.ndarray, ...]]:
    rng = np.random.default_rng(8)
    err = np.array([0.05, 0.01])
    truth_v, truth_t = rng.normal(0.3, 0.1, (200, 2)), rng.normal(0.3, 0.1, (100, 2))
    mean_v, mean_t = truth_v + rng.normal(size=(200, 2)) * err, truth_t + rng.normal(size=(100, 2)) * err
    std_v, std_t = np.tile(1.5 * err, (200, 1)), np.tile(1.5 * err, (100, 1))
    val = _file(tmp_path / "predictions_val.csv", "val", truth_v, mean_v, std_v, **val_extra)
    test = _file(tmp_path / "predictions_test.csv", "test", truth_t, mean_t, std_t)
    return val, test, (truth_v, mean_v, std_v, truth_t, mean_t, std_t)


def test_the_run_s_own_validation_file_keeps_k_beside_its_checkpoint_and_the_file_applies_it(tmp_path: Path) -> None:
    ckpt = tmp_path / "run" / "checkpoints" / "best.ckpt"
    ckpt.parent.mkdir(parents=True)
    ckpt.write_bytes(b"")
    # as task=predict writes it: the checkpoint, the run's own data (data null)
    val, test, (truth_v, mean_v, std_v, truth_t, mean_t, std_t) = _val_and_test(tmp_path, checkpoint=str(ckpt))
    report = _evaluate(["task=weak_lensing_score", f"predictions={test}", f"calibrate_on={val}"])
    cal = report["calibrated"]
    assert cal["sigma_scale_file"] == str(ckpt.parent / "sigma_scale.json")
    kept = read_sigma_scale(ckpt)
    k = fit_sigma_scale(truth_v, mean_v, std_v)
    assert kept == {**sigma_scale_record(truth_v, mean_v, std_v, NAMES), "split": "val", "fitted_on": str(val),
                    "checkpoint": "best.ckpt"}
    assert [kept["sigma_scale"][t] for t in NAMES] == k.tolist()
    assert all(abs(kept["coverage_after"][t] - ONE_SIGMA) < 1 / 200 for t in NAMES)
    # the kept file applies the same k: the same numbers, without the validation file
    again = _evaluate(["task=weak_lensing_score", f"predictions={test}", f"calibrate_on={kept and ckpt.parent / 'sigma_scale.json'}",
                       f"out_dir={tmp_path / 'again'}"])
    assert again["calibrated"]["metrics"] == cal["metrics"] and again["calibrated"]["sigma_scale"] == cal["sigma_scale"]
    assert again["calibrated"]["sigma_scale_file"] is None  # read, not written
    written = read_predictions(again["calibrated"]["predictions"], kind="regression")
    assert np.allclose(written.stds, std_t * k) and written.sidecar["sigma_scale_fitted_on"] == str(val)


def test_other_data_or_no_checkpoint_writes_no_sigma_scale_file(tmp_path: Path) -> None:
    ckpt = tmp_path / "run" / "checkpoints" / "best.ckpt"
    ckpt.parent.mkdir(parents=True)
    ckpt.write_bytes(b"")
    val, test, _ = _val_and_test(tmp_path, checkpoint=str(ckpt), data={"name": "other_maps"})
    report = _evaluate(["task=weak_lensing_score", f"predictions={test}", f"calibrate_on={val}"])
    assert report["calibrated"]["sigma_scale_file"] is None and not (ckpt.parent / "sigma_scale.json").exists()
    val, test, _ = _val_and_test(tmp_path / "plain")
    report = _evaluate(["task=weak_lensing_score", f"predictions={test}", f"calibrate_on={val}"])
    assert report["calibrated"]["sigma_scale_file"] is None


def test_score_task_refuses_scales_of_another_model_or_targets(tmp_path: Path) -> None:
    x = np.full((10, 2), 0.3)
    val = _file(tmp_path / "predictions_val.csv", "val", x, x + 0.01, np.full((10, 2), 0.02), checkpoint="/a/best.ckpt")
    test = _file(tmp_path / "predictions_test.csv", "test", x, x + 0.01, np.full((10, 2), 0.02), checkpoint="/b/best.ckpt")
    with pytest.raises(ValueError, match="belongs to one model"):
        _evaluate(["task=weak_lensing_score", f"predictions={test}", f"calibrate_on={val}"])
    other = tmp_path / "sigma_scale.json"
    other.write_text(json.dumps({"sigma_scale": {"omega_m": 0.8, "s8": 0.9}, "split": "val"}))
    with pytest.raises(ValueError, match="another run's sigma scale"):  # test's checkpoint is /b/best.ckpt
        _evaluate(["task=weak_lensing_score", f"predictions={test}", f"calibrate_on={other}"])
    test = _file(tmp_path / "plain" / "predictions_test.csv", "test", x, x + 0.01, np.full((10, 2), 0.02))
    other.write_text(json.dumps({"sigma_scale": {"omega_m": 0.8, "h0": 0.9}, "split": "val"}))
    with pytest.raises(ValueError, match=r"unknown \['h0'\]"):
        _evaluate(["task=weak_lensing_score", f"predictions={test}", f"calibrate_on={other}"])
    other.write_text(json.dumps({"temperature": 1.5}))
    with pytest.raises(ValueError, match="'sigma_scale' mapping"):
        _evaluate(["task=weak_lensing_score", f"predictions={test}", f"calibrate_on={other}"])


def test_fit_sigma_scale_messages_and_the_record_passes_its_target() -> None:
    with pytest.raises(ValueError, match=r"^no maps to fit the sigma scale on$"):
        fit_sigma_scale(np.zeros((0, 2)), np.zeros((0, 2)), np.ones((0, 2)))
    with pytest.raises(ValueError, match=r"^truth and mean must be finite to fit the sigma scale$"):
        fit_sigma_scale(np.array([[np.nan, 0.0]]), np.zeros((1, 2)), np.ones((1, 2)))
    # |z| = 0.5, 1, 2, 4 and 0.1, 0.2, 0.3, 0.4: target 0.5 -> the 2nd smallest, not the default's 3rd
    truth = np.zeros((4, 2))
    mean = np.array([[0.5, 0.1], [-1.0, 0.2], [2.0, -0.3], [4.0, 0.4]])
    rec = sigma_scale_record(truth, mean, np.ones((4, 2)), NAMES, target=0.5)
    assert rec["sigma_scale"] == {"omega_m": 1.0, "s8": 0.2} and rec["target_coverage"] == 0.5
    assert rec["coverage_after"] == {"omega_m": 0.5, "s8": 0.5}
    # integer sigmas are scaled as floats
    assert apply_sigma_scale(np.array([[1, 2]]), NAMES, {"omega_m": 0.5, "s8": 1.5}).tolist() == [[0.5, 3.0]]
