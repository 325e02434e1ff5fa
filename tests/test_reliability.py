"""Runs that stay trustworthy when things go wrong (docs/reliability.md lists every case and its command).

Fast cases run in-process or on hand-made files; the SIGTERM and untrusted-checkpoint cases run train.py
as a user does.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from omegaconf import open_dict

from lightning_modules.base import NonFiniteLossError
from lightning_modules.metrics import DefinedBinaryAUROC
from rigor.guard import ResumeConfigError, SplitError, check_resume, check_splits, config_diff, relevant_config, safe_load
from tests.conftest import ROOT, TOY_SEARCH, compose, train_in_process


def toy(manifest: Path, *extra: str) -> list[str]:
    return ["experiment=lens_smoke", f"data.manifest_path={manifest}", "logger=none", "cpu_threads=1", *extra]


def toy_family(*extra: str) -> list[str]:
    """A run of the toy family (tests/toy_family): the core's behaviour in well under a second an epoch."""
    return [TOY_SEARCH, "experiment=toy_binary", "logger=none", "cpu_threads=1", *extra]


# --- 1. resume guard ------------------------------------------------------------------------------


def test_relevant_config_ignores_plumbing_only():
    a = compose(["experiment=lens_smoke"])
    b = compose(["experiment=lens_smoke", "trainer.enable_progress_bar=false", "data.num_workers=2", "logger=csv",
                 "cpu_threads=1"])
    for cfg in (a, b):
        with open_dict(cfg):
            del cfg["hydra"]
            cfg.paths.output_dir = "/x"
    assert config_diff(relevant_config(a), relevant_config(b)) == []
    c = compose(["experiment=lens_smoke", "model.optimizer.lr=0.5", "trainer.max_epochs=99"])
    with open_dict(c):
        del c["hydra"]
        c.paths.output_dir = "/x"
    keys = [k for k, _, _ in config_diff(relevant_config(a), relevant_config(c))]
    assert keys == ["model.optimizer.lr", "model.scheduler.T_max", "trainer.max_epochs"]


def test_resume_guard_refuses_a_changed_config_and_names_the_keys(tmp_path):
    last = tmp_path / "last.ckpt"
    torch.save({"epoch": 3, "rigor_config": {"seed": 42, "model": {"optimizer": {"lr": 1e-3}}}}, last)
    check_resume({"seed": 42, "model": {"optimizer": {"lr": 1e-3}}}, last, force=False)  # same config: fine
    with pytest.raises(ResumeConfigError, match=r"(?s)model.optimizer.lr: 0.001 \(checkpoint\) -> 0.5.*seed: 42 \(checkpoint\) -> 7.*resume_force=true"):
        check_resume({"seed": 7, "model": {"optimizer": {"lr": 0.5}}}, last, force=False)
    check_resume({"seed": 7}, last, force=True)  # forced: a warning, no error


def test_guarded_restart_keeps_the_first_config_and_skips_a_completed_run(tmp_path):
    run = tmp_path / "run"
    env = {**os.environ, "WANDB_MODE": "offline"}
    cmd = [sys.executable, "train.py", *toy_family("trainer.max_epochs=1", f"hydra.run.dir={run}")]
    subprocess.run(cmd, cwd=ROOT, env=env, check=True, capture_output=True, timeout=600)
    first = (run / ".hydra" / "overrides.yaml").read_text()
    stamp = (run / "metrics.json").stat().st_mtime_ns
    again = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert again.returncode == 0 and "already completed" in again.stdout
    assert (run / "metrics.json").stat().st_mtime_ns == stamp        # not retrained, not rewritten
    changed = subprocess.run(cmd + ["seed=7"], cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert changed.returncode != 0 and "seed: 42 (checkpoint) -> 7 (now)" in changed.stderr
    assert (run / ".hydra" / "overrides.yaml").read_text() == first    # the original .hydra/ is never overwritten
    assert len(list((run / ".hydra" / "restarts").iterdir())) == 2     # each later start's config kept beside it
    assert not (run / "failure.json").exists()                          # a refused start leaves the run alone


# --- 3. degenerate splits -------------------------------------------------------------------------


class _FakeData:
    def __init__(self, **targets: list[int]) -> None:
        self.frames = {k: pd.DataFrame({"sample_id": [f"{k}{i}" for i in range(len(v))], "target": v}) for k, v in targets.items()}

    def split_frame(self, split: str) -> pd.DataFrame:
        return self.frames[split]


def test_split_checks_name_the_split_counts_and_keys():
    good = _FakeData(train=[0, 1], val=[0, 1], test=[0, 1])
    assert check_splits(good, "binary", ["train", "val", "test"], "data.n") == []
    with pytest.raises(SplitError, match=r"the val split is empty \(0 samples\); change data.n"):
        check_splits(_FakeData(train=[0, 1], val=[], test=[0, 1]), "binary", ["train", "val", "test"], "data.n")
    with pytest.raises(SplitError, match=r"the train split has 3 samples, all of class 0 \(counts per class: \{0: 3\}\): nothing to learn; change data.fraction"):
        check_splits(_FakeData(train=[0, 0, 0], val=[0, 1]), "binary", ["train", "val"], "data.fraction")
    with pytest.raises(SplitError, match="the val split .* no validation metric"):
        check_splits(_FakeData(train=[0, 1], val=[1, 1]), "binary", ["train", "val"], "data.n")
    warnings = check_splits(_FakeData(train=[0, 1], val=[0, 1], test=[1, 1]), "binary", ["train", "val", "test"], "data.n")
    assert len(warnings) == 1 and "test split has 2 samples, all of class 1" in warnings[0]
    assert check_splits(_FakeData(train=[0], val=[1]), "regression", ["train", "val"], "data.n") == []  # not a classifier


def test_one_class_auroc_is_nan_not_zero():
    metric = DefinedBinaryAUROC(thresholds=None)
    metric.update(torch.tensor([0.2, 0.9]), torch.tensor([1, 1]))
    assert torch.isnan(metric.compute())
    metric = DefinedBinaryAUROC(thresholds=None)
    metric.update(torch.tensor([0.5, 0.9, 0.4]), torch.tensor([0, 1, 1]))
    assert float(metric.compute()) == pytest.approx(0.5)  # hand-worked: one negative (0.5) below 0.9, above 0.4


def write_lens(out: Path, labels: dict[str, list[int]], seed: int = 0) -> Path:
    rng = np.random.default_rng(seed)
    rows, images = [], []
    for split, ys in labels.items():
        for i, y in enumerate(ys):
            rows.append(dict(sample_id=f"{split}{i}", split=split, label=y, theta_e=1.0 if y else np.nan,
                             psf_bin=0, depth_bin=0, pair_id=len(rows)))
            images.append(rng.normal(size=(3, 63, 63)).astype(np.float32))
    out.mkdir(parents=True, exist_ok=True)
    pd.DataFrame(rows).to_parquet(out / "manifest.parquet")
    np.save(out / "images.npy", np.stack(images))
    return out / "manifest.parquet"


def test_one_class_test_split_completes_with_null_auroc_and_a_warning(tmp_path):
    manifest = write_lens(tmp_path / "data", {"train": [0, 1] * 8, "val": [0, 1] * 8, "test": [1] * 8})
    metrics = train_in_process(toy(manifest, "trainer.max_epochs=1", "data.batch_size=16"), tmp_path / "run")
    assert metrics["status"] == "completed" and metrics["test_auroc"] is None or np.isnan(metrics["test_auroc"])
    saved = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert saved["test_auroc"] is None and "all of class 1" in saved["warnings"][0]


@pytest.mark.parametrize("overrides, message", [
    (["trainer.max_epochs=0"], "trainer.max_epochs=0: nothing would be trained"),
    (["seed=abc"], "seed must be an integer, got 'abc'"),
    (["data.batch_size=0"], "data.batch_size must be a positive integer, got 0"),
    (["data.fraction=0.05"], r"the train split (is empty|has \d+ samples, all of class \d).*change data.fraction"),
])
def test_bad_settings_stop_before_training_naming_the_key(tmp_path, toy_lens_manifest, overrides, message):
    with pytest.raises(Exception, match=message):
        train_in_process(toy(toy_lens_manifest, *overrides), tmp_path / "run")
    assert not (tmp_path / "run" / "checkpoints").exists()


# --- 4. divergence with a finite training loss ------------------------------------------------------


def test_non_finite_validation_outputs_stop_the_run_naming_epoch_and_split():
    from tests.toy_family.toy import ToyBinary
    from tests.helpers import adamw

    module = ToyBinary(adamw())
    module.net.body[-1].bias.data.fill_(float("nan"))
    batch = {"x": torch.zeros(2, 4), "aux": torch.zeros(2, 3), "target": torch.tensor([0.0, 1.0]), "index": torch.arange(2)}
    with pytest.raises(NonFiniteLossError, match="val outputs hold NaN/inf at epoch 0"):
        module._step(batch, "val")


# --- 5. SIGTERM -----------------------------------------------------------------------------------


@pytest.mark.slow
def test_sigterm_keeps_last_ckpt_exits_non_zero_and_resumes(tmp_path):
    run = tmp_path / "run"
    env = {**os.environ, "WANDB_MODE": "offline"}
    # 60 toy epochs (a tenth of a second each): the signal lands mid-training, a second after the first last.ckpt
    cmd = [sys.executable, "train.py", *toy_family("trainer.max_epochs=60", "callbacks.early_stopping=null",
                                                   "data.batch_size=16", f"hydra.run.dir={run}")]
    proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 300
    while not (run / "checkpoints" / "last.ckpt").exists() and time.time() < deadline and proc.poll() is None:
        time.sleep(0.5)
    time.sleep(1.0)
    proc.send_signal(signal.SIGTERM)
    out, err = proc.communicate(timeout=300)
    assert proc.returncode == 143, err[-2000:]
    failure = json.loads((run / "failure.json").read_text())
    assert failure["status"] == "terminated" and "SIGTERM" in failure["error"] and "last.ckpt holds the end of epoch" in failure["error"]
    assert not (run / "metrics.json").exists()
    epoch = int(safe_load(run / "checkpoints" / "last.ckpt")["epoch"])
    resumed = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=900)
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    assert "resuming" in resumed.stderr + resumed.stdout
    assert epoch < 59 and json.loads((run / "metrics.json").read_text())["epochs_trained"] == 60


# --- 6. untrusted checkpoints ---------------------------------------------------------------------


class _Payload:
    def __reduce__(self):
        return (os.system, (f"touch {os.environ.get('RIGOR_PAYLOAD_MARK', '/tmp/rigor_payload_ran')}",))


def test_a_checkpoint_that_would_run_code_is_refused(tmp_path, monkeypatch):
    mark = tmp_path / "payload_ran"
    monkeypatch.setenv("RIGOR_PAYLOAD_MARK", str(mark))
    bad = tmp_path / "checkpoints" / "last.ckpt"
    bad.parent.mkdir()
    torch.save({"epoch": 0, "evil": _Payload()}, bad)
    with pytest.raises(ValueError, match="refused: it holds more than tensors"):
        safe_load(bad)
    with pytest.raises(ValueError, match="refused"):
        check_resume({}, bad, force=True)
    assert not mark.exists()


@pytest.mark.slow
def test_train_and_predict_refuse_a_crafted_checkpoint(tmp_path, monkeypatch):
    mark = tmp_path / "payload_ran"
    monkeypatch.setenv("RIGOR_PAYLOAD_MARK", str(mark))
    run = tmp_path / "run"
    (run / "checkpoints").mkdir(parents=True)
    torch.save({"epoch": 0, "evil": _Payload()}, run / "checkpoints" / "last.ckpt")  # pickles os.system(...)
    proc = subprocess.run([sys.executable, "train.py", *toy_family(f"hydra.run.dir={run}")], cwd=ROOT,
                          env={**os.environ, "WANDB_MODE": "offline"}, capture_output=True, text=True, timeout=600)
    assert proc.returncode != 0 and "refused" in proc.stderr
    assert not mark.exists()
    # evaluate.py's predict task reads the file the same way, before Lightning does
    from omegaconf import OmegaConf

    from tasks.predict import run_predict

    (run / ".hydra").mkdir(exist_ok=True)
    (run / ".hydra" / "config.yaml").write_text("paths: {}\nseed: 0\n")
    with pytest.raises(ValueError, match="refused"):
        run_predict(OmegaConf.create({"ckpt_path": str(run / "checkpoints" / "last.ckpt")}))
    assert not mark.exists()


# --- 9. small ones ---------------------------------------------------------------------------------


def test_zero_byte_predictions_file_names_the_file(tmp_path):
    from analysis.predictions import read_predictions

    empty = tmp_path / "predictions_val.csv"
    empty.write_text("")
    with pytest.raises(ValueError, match=f"{empty}: the file is empty"):
        read_predictions(empty)


def test_wandb_logger_passes_no_anonymous_setting_and_keeps_its_run_id(tmp_path):
    from rigor.loggers import WandbLogger

    logger = WandbLogger(project="rigor", save_dir=str(tmp_path), mode="offline")
    assert "anonymous" not in logger._wandb_init
    run_id = logger._wandb_init["id"]
    assert (tmp_path / "wandb_run_id.txt").read_text().strip() == run_id
    # a restart in the same run directory continues the same W&B run; another directory gets its own
    assert WandbLogger(project="rigor", save_dir=str(tmp_path), mode="offline")._wandb_init["id"] == run_id
    assert WandbLogger(project="rigor", save_dir=str(tmp_path / "other"), mode="offline")._wandb_init["id"] != run_id


def test_a_half_written_or_foreign_record_reads_as_no_record(tmp_path):
    # resume decisions read metrics.json / failure.json: a crash mid-write or a stray file must not raise
    from rigor.jsonio import read_record, write_json

    assert read_record(tmp_path / "missing.json") is None
    (tmp_path / "half.json").write_text('{"status": "compl')
    assert read_record(tmp_path / "half.json") is None
    (tmp_path / "list.json").write_text("[1, 2]")
    assert read_record(tmp_path / "list.json") is None
    write_json(tmp_path / "ok.json", {"status": "completed", "auroc": float("nan")})
    assert read_record(tmp_path / "ok.json") == {"status": "completed", "auroc": None}
