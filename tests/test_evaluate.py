"""evaluate.py end to end on runs that train.py produced: predict, calibrate, compare, summarize, gates."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import roc_auc_score
from statsmodels.stats.contingency_tables import mcnemar

from analysis.calibration import fit_temperature
from tests.helpers import run_script
from tests.conftest import ROOT
from tests.lens.tiny import TEST_NET

pytestmark = pytest.mark.slow

_run = run_script  # tests/helpers.py


@pytest.fixture(scope="module")
def sweep(tmp_path_factory, toy_lens_manifest) -> Path:
    sweep_dir = tmp_path_factory.mktemp("evalsweep") / "sweep"
    _run("train.py", "-m", f"data.manifest_path={toy_lens_manifest}", *TEST_NET, "seed=1,2", "trainer.max_epochs=2", "logger=csv",
         "data.batch_size=32", "callbacks.core_sensitivity.splits=[val]", f"hydra.sweep.dir={sweep_dir}")
    return sweep_dir


def test_predict_writes_the_contract_and_matches_metrics(sweep):
    job = sweep / "0"
    _run("evaluate.py", f"ckpt_path={job}/checkpoints/best.ckpt", "split=test")
    frame = pd.read_csv(job / "predictions_test.csv")
    assert list(frame.columns[:4]) == ["sample_id", "split", "target", "logit"] and (frame["split"] == "test").all()
    assert {"prob", "theta_e", "psf_bin", "depth_bin", "pair_id"} <= set(frame.columns)
    assert len(frame) == 48 and frame["sample_id"].is_unique
    metrics = json.loads((job / "metrics.json").read_text())
    # the same best checkpoint: AUROC from the CSV (sklearn) equals the test AUROC of the run
    assert roc_auc_score(frame["target"], frame["logit"]) == pytest.approx(metrics["test_auroc"], abs=1e-5)
    report = json.loads((job / "predictions_test.json").read_text())  # the sidecar
    assert report["kind"] == "binary" and report["split"] == "test" and report["thresholds"]["core_pass_below"] == 0.60
    assert report["temperature"] == pytest.approx(metrics["temperature"])
    assert report["metrics"]["auroc"] == pytest.approx(metrics["test_auroc"], abs=1e-6)
    assert np.allclose(frame["prob"], 1 / (1 + np.exp(-frame["logit"] / metrics["temperature"])), atol=1e-6)


def test_calibrate_on_val_applies_to_test_and_refuses_test_fits(sweep):
    job = sweep / "0"
    _run("evaluate.py", f"ckpt_path={job}/checkpoints/best.ckpt", "split=val")
    if not (job / "predictions_test.csv").exists():
        _run("evaluate.py", f"ckpt_path={job}/checkpoints/best.ckpt", "split=test")
    _run("evaluate.py", "task=calibrate", f"fit={job}/predictions_val.csv", f"apply={job}/predictions_test.csv")
    report = json.loads((job / "predictions_test_calibration.json").read_text())
    val = pd.read_csv(job / "predictions_val.csv")
    expected_t = fit_temperature(val["logit"].to_numpy(), val["target"].to_numpy())
    assert report["temperature"] == pytest.approx(expected_t, rel=1e-6)
    # the callback fitted the same T on the same validation logits at the end of training
    assert report["temperature"] == pytest.approx(json.loads((job / "metrics.json").read_text())["temperature"], rel=1e-4)
    assert (job / "predictions_test_reliability.png").exists()
    proc = _run("evaluate.py", "task=calibrate", f"fit={job}/predictions_test.csv", f"apply={job}/predictions_val.csv", check=False)
    assert proc.returncode != 0 and "refusing to fit a temperature on the test split" in proc.stderr
    # renamed, the test predictions are still refused: the content says test
    renamed = job / "renamed_test_as_dev.csv"
    renamed.write_text((job / "predictions_test.csv").read_text())
    proc = _run("evaluate.py", "task=calibrate", f"fit={renamed}", f"apply={job}/predictions_val.csv", check=False)
    assert proc.returncode != 0 and "'split' column" in proc.stderr


def test_compare_two_seeds_against_statsmodels(sweep):
    a, b = sweep / "0", sweep / "1"
    for job in (a, b):
        if not (job / "predictions_test.csv").exists():
            _run("evaluate.py", f"ckpt_path={job}/checkpoints/best.ckpt", "split=test")
    out = sweep / "compare"
    _run("evaluate.py", "task=compare", f"a={a}/predictions_test.csv", f"b={b}/predictions_test.csv", "n_bootstrap=500", f"out_dir={out}")
    report = json.loads(next(out.glob("compare_*.json")).read_text())
    fa, fb = (pd.read_csv(j / "predictions_test.csv").set_index("sample_id") for j in (a, b))
    fb = fb.loc[fa.index]
    ca = (fa["logit"] >= 0).astype(int) == fa["target"]
    cb = (fb["logit"] >= 0).astype(int) == fb["target"]
    b_count, c_count = int((ca & ~cb).sum()), int((~ca & cb).sum())
    flat = json.dumps(report)
    assert f'"b": {b_count}' in flat and f'"c": {c_count}' in flat
    if b_count + c_count:
        p = mcnemar([[int((ca & cb).sum()), b_count], [c_count, int((~ca & ~cb).sum())]], exact=True).pvalue
        assert f"{p:.6f}"[:6] in flat or any(abs(v - p) < 1e-9 for v in _numbers(report))


def _numbers(obj):
    if isinstance(obj, dict):
        for v in obj.values():
            yield from _numbers(v)
    elif isinstance(obj, list):
        for v in obj:
            yield from _numbers(v)
    elif isinstance(obj, (int, float)) and not isinstance(obj, bool):
        yield float(obj)


def test_summarize_lists_arms_and_failed_jobs(sweep):
    failed = sweep / "9"
    (failed / ".hydra").mkdir(parents=True)
    (failed / ".hydra" / "overrides.yaml").write_text("- seed=3\n")
    (failed / "failure.json").write_text(json.dumps({"status": "failed", "error": "RuntimeError: boom"}))
    proc = _run("evaluate.py", "task=summarize", f"sweep_dir={sweep}")
    md = (sweep / "summary.md").read_text()
    assert "boom" in md and "9" in md
    table = pd.read_csv(sweep / "summary.csv")
    row = table[table["metric"] == "test_auroc"] if "metric" in table.columns else table
    assert len(row) >= 1
    values = [json.loads((sweep / j / "metrics.json").read_text())["test_auroc"] for j in ("0", "1")]
    assert f"{np.mean(values):.4f}" in md
    assert "ddof=1" in md or "ddof = 1" in md
    assert proc.returncode == 0
    # the runs' saved configs declare the lens plugin (resolved from .hydra/config.yaml, whose other
    # nodes hold ${hydra:...}); lens_smoke is none of the seed's arms, so it has nothing to say
    summary = json.loads((sweep / "summary.json").read_text())
    assert "lens_decision" in summary and summary["lens_decision"] is None
    # the search metrics of both splits reach the sweep summary (mean and CI over seeds per arm)
    assert {"val_tpr0", "test_tpr0", "test_tpr10", "test_purity_at_c0.5_prev_1e-3"} <= set(table["metric"])
    tpr0s = [json.loads((sweep / j / "metrics.json").read_text())["test_tpr0"] for j in ("0", "1")]
    assert table.loc[table["metric"] == "test_tpr0", "mean"].iloc[0] == pytest.approx(np.mean(tpr0s))
    (arm,) = summary["lens_search"].values()  # the experiment's metrics_table plugin
    assert arm["test_tpr0"]["mean"] == pytest.approx(np.mean(tpr0s)) and "Lens search metrics" in md


def test_unknown_task_lists_the_task_files():
    proc = _run("evaluate.py", "task=nope", check=False)
    assert proc.returncode != 0 and "Could not find 'task/nope'" in proc.stderr
    assert all(p.stem in proc.stderr for p in (ROOT / "conf" / "task").glob("*.yaml"))


def test_gates_task_detects_nothing_on_toy_data(tmp_path, toy_lens_manifest):
    _run("evaluate.py", "task=lens_gates", "gates.experiment=lens_smoke", "gates.preprocessing=raw", f"out_dir={tmp_path}",
         f"gates.overrides=[\"data.manifest_path={toy_lens_manifest}\"]")
    report = json.loads(next(tmp_path.glob("gates_lens_smoke_raw_val.json")).read_text())
    assert report["gate_n_samples"] == 48 and report["core_gate"] in {"PASS", "WARN", "FAIL"}
    assert 0.0 <= report["core_lr_auc"] <= 1.0
