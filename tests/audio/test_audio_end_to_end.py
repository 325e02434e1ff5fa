"""The audio family through train.py and evaluate.py on a few dozen clips: two arms, summary, predict."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from tests.conftest import ROOT
from tests.helpers import run_script

ENV = {**os.environ, "HF_HUB_OFFLINE": "1", "WANDB_MODE": "offline", "TOKENIZERS_PARALLELISM": "false"}


def run(script: str, args: list[str]) -> subprocess.CompletedProcess:
    proc = subprocess.run([sys.executable, script, *args], cwd=ROOT, capture_output=True, text=True, timeout=300, env=ENV)
    assert proc.returncode == 0, proc.stderr[-4000:]
    return proc


@pytest.mark.slow
def test_audio_arms_summary_and_predict(tmp_path: Path) -> None:
    # two arms (attention, attention + MLP), one seed each, in one Hydra multirun on freshly simulated clips
    run("train.py", ["-m", "experiment=audio_smoke", "model.net.lora.targets=attention,attention_mlp", "seed=7",
                     f"paths.data_dir={tmp_path / 'data'}", f"paths.sweep_dir={tmp_path / 'multirun'}", "data.batch_size=16"])
    jobs = sorted(p.parent for p in (tmp_path / "multirun").rglob("metrics.json"))
    assert len(jobs) == 2
    for job in jobs:
        metrics = json.loads((job / "metrics.json").read_text())
        assert metrics["status"] == "completed" and metrics["audit_shared_groups"] == 0
        for key in ("test_speech_accuracy", "test_nonspeech_accuracy", "test_balanced_accuracy", "temperature",
                    "test_ece_calibrated", "test_brier_calibrated", "test_auroc", "op_threshold", "op_speech_accuracy",
                    "op_nonspeech_accuracy", "op_dev_nonspeech_accuracy"):
            assert isinstance(metrics[key], float), key
        per_class = (metrics["test_speech_accuracy"] + metrics["test_nonspeech_accuracy"]) / 2
        assert metrics["test_balanced_accuracy"] == pytest.approx(per_class)
        frame = pd.read_csv(job / "predictions_test.csv")
        assert {"sample_id", "target", "logit", "prob", "group", "snr_db"} <= set(frame.columns)
        assert (frame["split"] == "test").all() and len(frame) == metrics["audit_test_samples"]
        # the checkpoint holds the adapters only
        state = torch.load(job / "checkpoints" / "best.ckpt", map_location="cpu", weights_only=True)["state_dict"]
        assert state and all("lora_" in k for k in state)
        # no group of the test predictions was seen in training (the audit's promise, checked on the output)
        val = pd.read_csv(job / "predictions_val.csv")
        assert not set(frame["group"]) & set(val["group"])

    # the summary plugin: the exit-criteria table, McNemar between the arms, hard clips
    sweep = jobs[0].parent
    run_script("evaluate.py", "task=summarize", f"sweep_dir={sweep}")
    summary = (sweep / "summary.md").read_text()
    assert "Seed 003 exit criteria" in summary and "PASS" in summary and "FAIL" in summary
    assert "Exact McNemar" in summary and "Clips wrong in every seed" in summary
    assert "At the operating point chosen on dev" in summary and "Exit criteria at the operating point" in summary

    # evaluate.py rebuilds the run from its config and the adapter-only checkpoint: the same logits
    job = jobs[0]
    before = pd.read_csv(job / "predictions_test.csv")
    run_script("evaluate.py", f"ckpt_path={job}/checkpoints/best.ckpt", "split=test")
    after = pd.read_csv(job / "predictions_test.csv")
    np.testing.assert_allclose(after["logit"].to_numpy(), before["logit"].to_numpy(), rtol=1e-5, atol=1e-5)
