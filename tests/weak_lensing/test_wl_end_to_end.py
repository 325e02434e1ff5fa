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


def _train(overrides: list[str], run_dir: Path) -> dict:
    train_in_process(overrides, run_dir)
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
                          "callbacks.wl_score.mcmc.n_steps=400", "callbacks.wl_score.mcmc.n_trace=4"], run)
    assert metrics["status"] == "completed" and metrics["epochs_trained"] == 2
    for name in ("cnn_mcmc", "ps_mcmc"):
        assert np.isfinite(metrics[f"test_{name}_score"]) and 0 <= metrics[f"test_{name}_coverage"] <= 1
        assert 0 <= metrics[f"{name}_acceptance_mean"] <= 1
    assert metrics["ps_mcmc_summary_dim"] == 7  # 10 bins over ell 100-1e4, those under the 8-arcmin Nyquist ell
    # the MCMC predictions are a regression file with stds, and their score is the one in metrics.json
    mcmc = read_predictions(run / "predictions_test_cnn_mcmc.csv", kind="regression")
    assert mcmc.stds is not None and mcmc.recorded_split == "test"
    assert challenge_score(mcmc.targets, mcmc.means, mcmc.stds) == pytest.approx(metrics["test_cnn_mcmc_score"])
    val = pd.read_csv(run / "predictions_val.csv")
    assert {"omega_m", "omega_m_mean", "s8", "s8_mean", "cosmology_id"} <= set(val.columns) and "omega_m_std" not in val.columns
    # the file tasks: the same MCMC stage on the run's files, then the score of its output
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        report = _evaluate(["task=weak_lensing_mcmc", f"val={run / 'predictions_val.csv'}", f"test={run / 'predictions_test.csv'}",
                            "mcmc.n_steps=400", "mcmc.n_trace=4", f"out_dir={tmp_path / 'eval'}"])
    scored = _evaluate(["task=weak_lensing_score", f"predictions={report['predictions']}"])
    assert scored["score"] == pytest.approx(report["mcmc_score"])
    assert (tmp_path / "eval" / "predictions_test_mcmc_wl_scores.csv").exists()
    with pytest.raises(ValueError, match="t_std"):
        _evaluate(["task=weak_lensing_score", f"predictions={run / 'predictions_test.csv'}"])


def test_direct_run_writes_its_score(tmp_path) -> None:
    manifest = tiny_wl_manifest(tmp_path / "data")
    run = tmp_path / "run"
    metrics = _train(["experiment=weak_lensing_resnet_attn_direct", "debug=fast", "cpu_threads=1", f"data.manifest_path={manifest}"], run)
    preds = read_predictions(run / "predictions_test.csv", kind="regression")
    assert preds.stds is not None
    assert metrics["test_score"] == pytest.approx(challenge_score(preds.targets, preds.means, preds.stds))
    assert "last_val_score" in metrics and 0 <= metrics["test_coverage"] <= 1
