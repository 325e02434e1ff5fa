"""The CLIP subtask family through train.py and evaluate.py: both arms, the cache, the summary, predictions."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest
from statsmodels.stats.contingency_tables import mcnemar

from tests.conftest import ROOT
from tests.helpers import run_script

ENV = {**os.environ, "HF_HUB_OFFLINE": "1", "WANDB_MODE": "offline"}
# scikit-learn's 8 x 8 digits, a one-epoch tiny CLIP, two meta-learner epochs: seconds, the real pipeline
TINY = ["data.source=sklearn_digits", "data.split.val_size=200", "data.split.test_size=300",
        "data.clip.tiny.pretrain.epochs=1", "model.subtask_training.max_epochs=3", "callbacks.mc_dropout.n_passes=5",
        "trainer.max_epochs=2", "logger=csv", "cpu_threads=1", "callbacks.temperature_scaling.method=ece_grid"]


def run(script: str, args: list[str]) -> subprocess.CompletedProcess:
    proc = subprocess.run([sys.executable, script, *args], cwd=ROOT, capture_output=True, text=True, timeout=300, env=ENV)
    assert proc.returncode == 0, proc.stderr[-4000:]
    return proc


@pytest.mark.slow
def test_both_arms_share_the_cache_and_the_summary_tests_b_against_a(tmp_path):
    sweep = tmp_path / "multirun"
    # no family groups restated: the sweep-level config is the first swept experiment's (rigor.config)
    run("train.py", ["-m", "experiment=clip_subtask_a,clip_subtask_b", "seed=1", f"paths.sweep_dir={sweep}",
                     f"paths.data_dir={tmp_path / 'data'}", *TINY])
    jobs = {}
    for path in sweep.rglob("metrics.json"):
        metrics = json.loads(path.read_text())
        jobs[metrics["experiment"]] = (path.parent, metrics)
    assert sorted(jobs) == ["clip_subtask_a", "clip_subtask_b"]
    dir_a, a = jobs["clip_subtask_a"]
    dir_b, b = jobs["clip_subtask_b"]
    # the linear scaling rule: B's lr is 1e-3 x 256 / 128
    assert a["lr"] == pytest.approx(1e-3) and b["lr"] == pytest.approx(2e-3)
    for m in (a, b):
        assert m["status"] == "completed"
        for key in ("test_accuracy", "temperature", "test_ece_calibrated", "mc_mean_std", "test_superclass_accuracy",
                    "test_brightness_accuracy", "test_complexity_accuracy"):
            assert isinstance(m[key], float), key
        assert m["mc_review"] + m["mc_spot_check"] + m["mc_auto_approve"] == 300
        assert 0.5 <= m["temperature"] <= 3.0  # the seed's way (the ECE grid), the run's one temperature
        fit = json.loads((jobs[m["experiment"]][0] / "checkpoints" / "temperature.json").read_text())
        assert fit["method"] == "ece_grid" and fit["split"] == "val" and fit["temperature"] == m["temperature"]
    # arm A computed the embeddings (and the tiny CLIP); arm B found all three splits in the cache
    log_b = (dir_b / "train.log").read_text()
    assert log_b.count("embedding cache hit") == 3 and "cache miss" not in log_b
    assert "embedding cache miss" in (dir_a / "train.log").read_text()
    history = pd.read_csv(dir_a / "subtask_history.csv")
    assert {"superclass_val_accuracy", "brightness_train_loss", "complexity_val_loss"} <= set(history.columns)
    logged = (dir_a / "csv" / "metrics.csv").read_text().splitlines()[0]
    assert "val/accuracy" in logged and "val/brightness_accuracy" in logged and "subtask/superclass_val_accuracy" in logged

    # the test predictions: metrics.json's test accuracy, and triage counts from the MC columns
    pred_a = pd.read_csv(dir_a / "predictions_test.csv")
    pred_b = pd.read_csv(dir_b / "predictions_test.csv")
    logits = [f"logit_{k}" for k in range(10)]
    correct_a = pred_a[logits].to_numpy().argmax(1) == pred_a["target"].to_numpy()
    assert correct_a.mean() == pytest.approx(a["test_accuracy"], abs=1e-6)
    assert (pred_a["mc_std"] > 0.35).sum() == a["mc_review"]

    run_script("evaluate.py", "task=summarize", f"sweep_dir={sweep}")
    summary = json.loads((sweep / "summary.json").read_text())
    section = json.dumps(summary)
    assert "clip_subtask" in section
    text = (sweep / "summary.md").read_text()
    assert "arm B against arm A" in text and "McNemar" in text and "Verdict" in text
    # the per-seed McNemar against statsmodels on the two prediction files
    merged = pred_a.merge(pred_b, on="sample_id", suffixes=("_a", "_b"))
    ca = merged[[f"{c}_a" for c in logits]].to_numpy().argmax(1) == merged["target_a"].to_numpy()
    cb = merged[[f"{c}_b" for c in logits]].to_numpy().argmax(1) == merged["target_b"].to_numpy()
    b_count, c_count = int(np.sum(ca & ~cb)), int(np.sum(~ca & cb))
    table = [[int(np.sum(ca & cb)), b_count], [c_count, int(np.sum(~ca & ~cb))]]
    expected_p = 1.0 if b_count + c_count == 0 else mcnemar(table, exact=True).pvalue
    (comp,) = summary["clip_subtask"]["comparisons"].values() if "clip_subtask" in summary else \
        summary["sections"]["clip_subtask"]["comparisons"].values()
    assert comp["per_seed"][0]["b"] == b_count and comp["per_seed"][0]["c"] == c_count
    assert comp["per_seed"][0]["p"] == pytest.approx(min(expected_p, 1.0))

    # evaluate.py rebuilds the run from its config (heads from the checkpoint) with MC-Dropout
    run_script("evaluate.py", f"ckpt_path={dir_a}/checkpoints/best.ckpt", "split=test", "mc_dropout.enabled=true", "mc_dropout.n_passes=5")
    again = pd.read_csv(dir_a / "predictions_test.csv")
    assert np.allclose(again[logits].to_numpy(), pred_a[logits].to_numpy(), atol=1e-5)
    assert "mc_std" in again.columns
