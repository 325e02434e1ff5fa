"""The contract end to end: a family that lives only in tests/toy_family/ (code and configs), with dict
inputs, trains, predicts (MC-Dropout included), calibrates where that applies and summarizes, through the
same commands a user runs. Nothing in the core names its keys, targets or experiments.
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import numpy as np
import pytest
import torch

from analysis.predictions import read_predictions
from tests.conftest import ROOT, train_in_process
from tests.helpers import run_script

pytestmark = pytest.mark.slow

SEARCH = f"hydra.searchpath=[file://{ROOT / 'tests' / 'toy_family' / 'conf'}]"


def run(script: str, *args: str) -> subprocess.CompletedProcess:
    """train.py in a subprocess; evaluate.py in this process (tests/helpers.py)."""
    return run_script(script, *args)


def test_regression_with_uncertainty_trains_predicts_and_summarizes(tmp_path):
    sweep = tmp_path / "sweep"
    run("train.py", "-m", SEARCH, "experiment=toy_regression", "seed=1,2", "cpu_threads=1", f"hydra.sweep.dir={sweep}")
    for job in ("0", "1"):
        metrics = json.loads((sweep / job / "metrics.json").read_text())
        assert metrics["status"] == "completed" and metrics["best_epoch"] >= 0
        # the linear scaling rule: 5e-3 x 64 / 32
        assert metrics["lr"] == pytest.approx(1e-2)
        assert "test_mse" in metrics
    run("evaluate.py", f"ckpt_path={sweep / '0' / 'checkpoints' / 'best.ckpt'}", "split=test",
        "mc_dropout.enabled=true", "mc_dropout.n_passes=8")
    pred = read_predictions(sweep / "0" / "predictions_test.csv", kind="regression")
    assert pred.target_names == ("a", "b") and pred.means.shape == (128, 2) and (pred.stds > 0).all()
    assert pred.mc_mean.shape == (128, 2) and (pred.mc_std > 0).all()
    assert list(pred.metadata.columns) == ["group"] and pred.recorded_split == "test"
    # the module's own test MSE equals the MSE of the file's means
    mse = float(np.mean((pred.means - pred.targets) ** 2))
    metrics = json.loads((sweep / "0" / "metrics.json").read_text())
    assert mse == pytest.approx(metrics["test_mse"], rel=1e-4)
    proc = run("evaluate.py", "task=summarize", f"sweep_dir={sweep}")
    summary = json.loads((sweep / "summary.json").read_text())
    (arm,) = summary["arms"].values()
    assert arm["n_completed"] == 2 and arm["metrics"]["test_mse"]["n"] == 2
    assert "toy arms" in proc.stdout  # the family's summary plugin, declared in its experiment config


def test_binary_from_dict_inputs_calibrates(tmp_path):
    run_dir = tmp_path / "run"
    train_in_process([SEARCH, "experiment=toy_binary", "cpu_threads=1"], run_dir, save_config=True)
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert metrics["temperature"] > 0 and "test_ece_calibrated" in metrics
    for split in ("val", "test"):
        run("evaluate.py", f"ckpt_path={run_dir / 'checkpoints' / 'best.ckpt'}", f"split={split}")
    test = read_predictions(run_dir / "predictions_test.csv", kind="binary")
    assert test.sidecar["temperature"] == pytest.approx(metrics["temperature"])
    run("evaluate.py", "task=calibrate", f"fit={run_dir / 'predictions_val.csv'}", f"apply={run_dir / 'predictions_test.csv'}")
    report = json.loads((run_dir / "predictions_test_calibration.json").read_text())
    # the same temperature as the callback fitted on the same validation logits
    assert report["temperature"] == pytest.approx(metrics["temperature"], rel=1e-3)
    assert report["after"]["ece"] == pytest.approx(metrics["test_ece_calibrated"], abs=1e-6)
    # the temperature lives in checkpoints/temperature.json, best.ckpt is not rewritten; a run saved before
    # that file (T inside best.ckpt, no file) still predicts with its temperature
    best = run_dir / "checkpoints" / "best.ckpt"
    probs = np.loadtxt(run_dir / "predictions_test.csv", delimiter=",", skiprows=1, usecols=[_column(run_dir, "prob")])
    assert "rigor_temperature" not in torch.load(best, map_location="cpu", weights_only=True)
    (run_dir / "checkpoints" / "temperature.json").unlink()
    torch.save({**torch.load(best, map_location="cpu", weights_only=True), "rigor_temperature": metrics["temperature"]}, best)
    run("evaluate.py", f"ckpt_path={best}", "split=test")
    old = read_predictions(run_dir / "predictions_test.csv", kind="binary")
    assert old.sidecar["temperature"] == metrics["temperature"]
    again = np.loadtxt(run_dir / "predictions_test.csv", delimiter=",", skiprows=1, usecols=[_column(run_dir, "prob")])
    assert np.array_equal(again, probs)


def _column(run_dir: Path, name: str) -> int:
    return (run_dir / "predictions_test.csv").read_text().splitlines()[0].split(",").index(name)
