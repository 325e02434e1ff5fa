"""Weak-lensing family end to end: train.py on tiny simulated maps, then evaluate.py's wl tasks on its files."""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from analysis.predictions import read_predictions
from analysis.weak_lensing.score import challenge_score
from tests.conftest import compose, train_in_process
from tests.weak_lensing.wl_data import tiny_wl_manifest

pytestmark = pytest.mark.slow


def _train(overrides: list[str], run_dir: Path, save_config: bool = False) -> dict:
    train_in_process(overrides, run_dir, save_config=save_config)
    return json.loads((run_dir / "metrics.json").read_text())


def _evaluate(overrides: list[str]) -> dict:
    from evaluate import evaluate

    return evaluate(compose(overrides, config_name="evaluate"))


def test_cnn_mcmc_run_and_file_tasks(tmp_path) -> None:
    manifest = tiny_wl_manifest(tmp_path / "data")
    run = tmp_path / "run"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # short chains: the acceptance/ESS warnings are expected here
        metrics = _train(["experiment=weak_lensing_simple_cnn_mcmc", "debug=fast", "cpu_threads=1", f"data.manifest_path={manifest}",
                          "data.map_shape=[356,44]", "callbacks.wl_score.mcmc.n_steps=400", "callbacks.wl_score.mcmc.n_trace=4"], run)
    assert metrics["status"] == "completed" and metrics["epochs_trained"] == 2
    for name in ("cnn_mcmc", "ps_mcmc"):
        assert np.isfinite(metrics[f"test_{name}_score"]) and 0 <= metrics[f"test_{name}_coverage"] <= 1
        assert 0 <= metrics[f"{name}_acceptance_mean"] <= 1
    assert metrics["ps_mcmc_summary_dim"] == 7  # 10 bins over ell 100-1e4, those under the 8-arcmin Nyquist ell
    # the MCMC predictions are a regression file with stds, and their score is the one in metrics.json
    mcmc = read_predictions(run / "predictions_test_cnn_mcmc.csv", kind="regression")
    assert mcmc.stds is not None and mcmc.recorded_split == "test"
    recorded = mcmc.sidecar["wl_score"]
    assert challenge_score(mcmc.targets, mcmc.means, mcmc.stds, recorded["scale"], recorded["floor"]) == pytest.approx(metrics["test_cnn_mcmc_score"])
    val = pd.read_csv(run / "predictions_val.csv")
    assert {"omega_m", "omega_m_mean", "s8", "s8_mean", "cosmology_id"} <= set(val.columns) and "omega_m_std" not in val.columns
    # the file tasks: the same MCMC stage on the run's files, with the run's settings from the sidecar (n_steps=400,
    # n_trace=4, seed, label scaler), gives the run's own numbers exactly; then the score of its output
    files = [f"val={run / 'predictions_val.csv'}", f"test={run / 'predictions_test.csv'}"]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        report = _evaluate(["task=weak_lensing_mcmc", *files, f"out_dir={tmp_path / 'eval'}"])
    for key in ("score", "mse_std", "coverage"):
        assert report[f"mcmc_{key}"] == metrics[f"test_cnn_mcmc_{key}"], key
    assert report["mcmc_r2_s8"] == pytest.approx(metrics["test_cnn_mcmc_r2_s8"], rel=1e-12)  # summation order of a column
    assert report["acceptance_mean"] == metrics["cnn_mcmc_acceptance_mean"]
    scored = _evaluate(["task=weak_lensing_score", f"predictions={report['predictions']}"])
    assert scored["score"] == pytest.approx(report["mcmc_score"]) and scored["mse_std"] == report["mcmc_mse_std"]
    assert (tmp_path / "eval" / "predictions_test_mcmc_wl_scores.csv").exists()
    # a task option overrides the sidecar's value, key by key, and the output's sidecar records what was used
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        other = _evaluate(["task=weak_lensing_mcmc", *files, "mcmc.n_steps=200", f"out_dir={tmp_path / 'eval200'}"])
    used = read_predictions(other["predictions"], kind="regression").sidecar["mcmc"]
    assert used["n_steps"] == 200 and used["n_trace"] == 4 and used["seed"] == mcmc.sidecar["mcmc"]["seed"]
    with pytest.raises(ValueError, match="t_std"):
        _evaluate(["task=weak_lensing_score", f"predictions={run / 'predictions_test.csv'}"])


def test_direct_run_writes_its_score(tmp_path) -> None:
    manifest = tiny_wl_manifest(tmp_path / "data")
    run = tmp_path / "run"
    metrics = _train(["experiment=weak_lensing_resnet_attn_direct", "debug=fast", "cpu_threads=1", f"data.manifest_path={manifest}",
                           "data.map_shape=[356,44]"], run, save_config=True)  # the config: task=predict rebuilds the run
    preds = read_predictions(run / "predictions_test.csv", kind="regression")
    assert preds.stds is not None
    assert metrics["test_score"] == pytest.approx(challenge_score(preds.targets, preds.means, preds.stds, 1000.0, -1.0e6))
    assert "last_val_score" in metrics and 0 <= metrics["test_coverage"] <= 1
    # what the data allow, beside the score: the prior-only score is below the perfect-S_8 one
    assert metrics["test_score_prior_only"] < metrics["test_score_perfect_s8"]
    # the run's own file scores exactly as the run did: the sidecar carries its label scaler and score constants
    assert set(preds.sidecar["label_scaler"]) == {"omega_m", "s8"} and preds.sidecar["wl_score"] == {"scale": 1000.0, "floor": -1.0e6}
    scored = _evaluate(["task=weak_lensing_score", f"predictions={run / 'predictions_test.csv'}", f"out_dir={tmp_path / 'eval'}"])
    for key in ("score", "mse_std", "coverage"):
        assert scored[key] == metrics[f"test_{key}"], key
    for key in ("r2_omega_m", "mean_sigma_s8"):  # sums over a column: equal up to summation order
        assert scored[key] == pytest.approx(metrics[f"test_{key}"], rel=1e-12), key
    # without the run's scaler (the file's own truth standardises) the standardised MSE is another number
    own = _evaluate(["task=weak_lensing_score", f"predictions={run / 'predictions_test.csv'}", f"out_dir={tmp_path / 'eval'}",
                     f"wl_score.label_loc={preds.targets.mean(axis=0).tolist()}", f"wl_score.label_scale={preds.targets.std(axis=0).tolist()}"])
    assert own["mse_std"] != scored["mse_std"] and own["score"] == scored["score"]
    # the sigma scale (issue 22): fitted on the validation maps at the end of the run, kept beside best.ckpt, and the
    # test metrics after it in metrics.json; evaluate.py applies the kept file, or refits it from task=predict's val file
    kept = json.loads((run / "checkpoints" / "sigma_scale.json").read_text())
    assert kept["split"] == "val" and kept["checkpoint"] == "best.ckpt" and kept["n"] == metrics["sigma_scale_n"]
    for t in ("omega_m", "s8"):
        assert kept["sigma_scale"][t] == metrics[f"sigma_scale_{t}"] > 0
        assert abs(metrics[f"val_coverage_{t}_calibrated"] - 0.6827) <= 1 / kept["n"] + 1e-4
    assert {"test_score_calibrated", "test_coverage_calibrated", "test_coverage_s8_calibrated"} <= set(metrics)
    applied = _evaluate(["task=weak_lensing_score", f"predictions={run / 'predictions_test.csv'}", f"out_dir={tmp_path / 'cal'}",
                         f"calibrate_on={run / 'checkpoints' / 'sigma_scale.json'}"])["calibrated"]
    for key in ("score", "coverage", "coverage_omega_m", "mean_sigma_s8"):
        assert applied["metrics"][key] == pytest.approx(metrics[f"test_{key}_calibrated"], rel=1e-9), key
    _evaluate([f"ckpt_path={run / 'checkpoints' / 'best.ckpt'}", "split=val"])
    refit = _evaluate(["task=weak_lensing_score", f"predictions={run / 'predictions_test.csv'}", f"out_dir={tmp_path / 'refit'}",
                       f"calibrate_on={run / 'predictions_val.csv'}"])["calibrated"]
    assert refit["sigma_scale_file"] == str(run / "checkpoints" / "sigma_scale.json")
    assert refit["sigma_scale"] == pytest.approx(kept["sigma_scale"], rel=1e-6)  # the same maps, float32 outputs either way
