"""The puzzle experiments through train.py, on a tiny grid: metrics.json, checkpoints, pictures, logs."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from tests.conftest import ROOT
from tests.helpers import run_script

TINY = ["data.cols=6", "data.rows=4", "data.piece_size=32", "trainer.max_epochs=2", "logger=csv",
        "callbacks.overfit_check.few_max_epochs=800"]


def run(args: list[str]) -> subprocess.CompletedProcess:
    proc = subprocess.run([sys.executable, "train.py", *args], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-4000:]
    return proc


def only_run_dir(root: Path) -> Path:
    found = [p.parent for p in root.rglob("metrics.json")]
    assert len(found) == 1, found
    return found[0]


@pytest.mark.slow
def test_puzzle_exp3_end_to_end(tmp_path):
    run(["experiment=puzzle_exp3", f"paths.log_dir={tmp_path}", *TINY])
    run_dir = only_run_dir(tmp_path / "puzzle_exp3")
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert metrics["status"] == "completed" and metrics["experiment"] == "puzzle_exp3"
    for key in ("best_val_top1", "test_top1", "test_top5", "test_loss", "wall_time_s", "test_cells_correct"):
        assert isinstance(metrics[key], float), key
    assert 0.0 <= metrics["test_top1"] <= metrics["test_top5"] <= 1.0
    assert isinstance(metrics["overfit_1_step"], int) and isinstance(metrics["overfit_10_epoch"], int)
    assert metrics["epochs_trained"] == 2
    for name in ("test_accuracy", "test_heatmap", "test_grid"):
        assert (run_dir / "plots" / f"{name}.png").stat().st_size > 1000
    assert (run_dir / "checkpoints" / "best.ckpt").exists() and (run_dir / "checkpoints" / "last.ckpt").exists()
    logged = (run_dir / "csv" / "metrics.csv").read_text().splitlines()[0]
    assert "val/top1" in logged and "val/top5" in logged and "train/loss_epoch" in logged

    # evaluate.py rebuilds the puzzle run from its config: multiclass predictions in the contract
    run_script("evaluate.py", f"ckpt_path={run_dir}/checkpoints/best.ckpt", "split=test")
    frame = pd.read_csv(run_dir / "predictions_test.csv")
    n_cells = 6 * 4
    assert list(frame.columns[: 3 + n_cells]) == ["sample_id", "split", "target", *[f"logit_{k}" for k in range(n_cells)]]
    logits = frame[[f"logit_{k}" for k in range(n_cells)]].to_numpy()
    top1 = float((logits.argmax(1) == frame["target"].to_numpy()).mean())
    assert top1 == pytest.approx(metrics["test_top1"], abs=1e-6)  # the same best checkpoint
    assert np.isfinite(logits).all()


@pytest.mark.slow
def test_other_puzzle_experiments_in_one_sweep(tmp_path):
    experiments = ["puzzle_exp3_regression", "puzzle_rotation", "puzzle_generalization"]
    # puzzle keys need no restated groups: the sweep-level config is the first swept experiment's (rigor.config)
    run(["-m", f"experiment={','.join(experiments)}", f"paths.sweep_dir={tmp_path}",
         "trainer.max_epochs=1", "callbacks.overfit_check.enabled=false",
         *[t for t in TINY if not t.startswith(("trainer.", "callbacks.overfit"))]])
    by_name = {}
    for path in tmp_path.rglob("metrics.json"):
        metrics = json.loads(path.read_text())
        by_name[metrics["experiment"]] = metrics
    assert sorted(by_name) == sorted(experiments)
    regression = by_name["puzzle_exp3_regression"]
    assert regression["best_val_mean_distance"] >= 0 and 0 <= regression["test_top1"] <= 1
    assert 0 <= by_name["puzzle_rotation"]["test_rotation_acc"] <= 1
    generalization = by_name["puzzle_generalization"]
    assert 0 <= generalization["test_top1"] <= generalization["test_top5"] <= 1
