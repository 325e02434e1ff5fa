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
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from omegaconf import open_dict

from lightning_modules.base import NonFiniteLossError
from lightning_modules.metrics import DefinedBinaryAUROC
from rigor.guard import ResumeConfigError, SplitError, check_resume, check_splits, config_diff, relevant_config, safe_load
from tests.helpers import signal_after_first_last_ckpt
from tests.conftest import ROOT, TOY_SEARCH, compose, train_in_process
from tests.lens.tiny import TEST_NET


def toy(manifest: Path, *extra: str) -> list[str]:
    return ["experiment=lens_smoke", f"data.manifest_path={manifest}", *TEST_NET, "logger=none", "cpu_threads=1", *extra]


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
    # Python lists every module it imports on stderr: neither start may import Lightning (seconds of CPU)
    traced = {**env, "PYTHONPROFILEIMPORTTIME": "1"}
    again = subprocess.run(cmd, cwd=ROOT, env=traced, capture_output=True, text=True, timeout=600)
    assert again.returncode == 0 and "already completed" in again.stdout
    assert (run / "metrics.json").stat().st_mtime_ns == stamp        # not retrained, not rewritten
    changed = subprocess.run(cmd + ["seed=7"], cwd=ROOT, env=traced, capture_output=True, text=True, timeout=600)
    assert changed.returncode != 0 and "seed: 42 (checkpoint) -> 7 (now)" in changed.stderr
    for start in (again, changed):
        imported = {line.rsplit("|", 1)[1].strip() for line in start.stderr.splitlines() if line.startswith("import time:")}
        assert "omegaconf" in imported and "lightning" not in imported and "tests.toy_family.toy" not in imported
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
    returncode, out, err = signal_after_first_last_ckpt(cmd, run, signal.SIGTERM)
    assert returncode == 143, err[-2000:]
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


# --- issue 21 (second round): runs, configs and evaluate --------------------------------------------


def _payload_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> tuple[Path, Path]:
    """A pickle that touches a mark file when loaded with weights_only=False, and that mark."""
    mark = tmp_path / "payload_ran"
    monkeypatch.setenv("RIGOR_PAYLOAD_MARK", str(mark))
    evil = tmp_path / "evil.pt"
    torch.save({"x": _Payload()}, evil)
    return evil, mark


def test_every_target_the_configs_name_is_allowed_and_only_those_modules():
    import re

    from rigor.config import target_refusal

    files = [*(ROOT / "conf").rglob("*.yaml"), *(ROOT / "tests" / "toy_family" / "conf").rglob("*.yaml")]
    targets = {t for f in files for t in re.findall(r"_target_:\s*([\w.]+)", f.read_text())}
    assert len(targets) > 40 and {t: target_refusal(t) for t in targets if target_refusal(t)} == {}
    for target in ("torch.load", "os.system", "builtins.exec", "hydra.utils.call", "functools.partial",
                   "torch.nn.modules.module.torch.load",  # an allowed prefix, then a module imported there
                   "callbacks.base.torch.load", "callbacks.base.Path",  # a name imported into a project module
                   "rigor.config._module_class_attribute", "${oc.env:T}", "timm.models.load_checkpoint"):
        assert target_refusal(target), target


def _crafted_run(tmp_path: Path, data: object) -> Path:
    """A run directory with a plain checkpoint and a saved config whose `data` node is `data`."""
    from omegaconf import OmegaConf

    run = tmp_path / "run"
    (run / "checkpoints").mkdir(parents=True)
    (run / ".hydra").mkdir()
    torch.save({"epoch": 0, "state_dict": {}}, run / "checkpoints" / "best.ckpt")
    config = {"seed": 0, "paths": {"output_dir": "x"}, "data": data, "model": {"_target_": "tests.toy_family.toy.ToyBinary"}}
    (run / ".hydra" / "config.yaml").write_text(OmegaConf.to_yaml(OmegaConf.create(config)))
    return run / "checkpoints" / "best.ckpt"


@pytest.mark.parametrize("data, key", [
    ({"_target_": "torch.load", "f": "EVIL", "weights_only": False}, r"data\._target_='torch\.load'"),
    # nested in an allowed target's positional arguments
    ({"_target_": "datamodules.lens.datamodule.LensDataModule",
      "_args_": [{"_target_": "torch.load", "_args_": ["EVIL"], "weights_only": False}]}, r"data\._args_\.0\._target_='torch\.load'"),
    # an allowed module's import of torch, as a partial
    ({"_target_": "callbacks.base.torch.load", "_partial_": True}, r"data\._target_='callbacks\.base\.torch\.load' is refused: callbacks\.base\.torch is the module torch"),
    # a node an interpolation creates
    ("${oc.create:{_target_: torch.load, f: 'EVIL', weights_only: false}}", r"data\._target_='torch\.load'"),
])
def test_evaluate_refuses_a_run_config_that_would_run_code(tmp_path, monkeypatch, data, key):
    from omegaconf import OmegaConf

    from rigor.config import UntrustedTargetError
    from tasks.predict import run_predict

    evil, mark = _payload_file(tmp_path, monkeypatch)
    data = json.loads(json.dumps(data).replace("EVIL", str(evil)))
    ckpt = _crafted_run(tmp_path, data)
    with pytest.raises(UntrustedTargetError, match=rf"(?s)config.yaml: {key}.*Nothing was instantiated"):
        run_predict(OmegaConf.create({"ckpt_path": str(ckpt)}))
    assert not mark.exists()


@pytest.mark.parametrize("entry, key", [
    ({"_target_": "torch.load", "f": "EVIL", "weights_only": False}, r"summary\.evil\._target_='torch\.load'"),
    ({"_target_": "analysis.summary.seed_comparison", "_partial_": True,
      "extra": {"_target_": "torch.load", "_args_": ["EVIL"], "weights_only": False}}, r"summary\.evil\.extra\._target_='torch\.load'"),
])
def test_summarize_refuses_a_summary_entry_that_would_run_code(tmp_path, monkeypatch, entry, key):
    from omegaconf import OmegaConf

    from rigor.config import UntrustedTargetError
    from tasks.evaluation import run_summarize

    evil, mark = _payload_file(tmp_path, monkeypatch)
    job = tmp_path / "sweep" / "0"
    (job / ".hydra").mkdir(parents=True)
    (job / ".hydra" / "overrides.yaml").write_text("- seed=1\n")
    (job / "metrics.json").write_text(json.dumps({"seed": 1, "score": 0.1, "status": "completed"}))
    entry = json.loads(json.dumps(entry).replace("EVIL", str(evil)))
    (job / ".hydra" / "config.yaml").write_text(OmegaConf.to_yaml(OmegaConf.create({"seed": 1, "summary": {"evil": entry}})))
    cfg = OmegaConf.merge(OmegaConf.load(ROOT / "conf" / "task" / "summarize.yaml"), {"sweep_dir": str(tmp_path / "sweep"), "out_dir": None})
    with pytest.raises(UntrustedTargetError, match=rf"(?s){key} is refused"):
        run_summarize(cfg)
    assert not mark.exists() and not (tmp_path / "sweep" / "summary.md").exists()


@pytest.mark.slow
def test_a_start_that_left_no_checkpoint_hands_hydra_to_the_start_that_trains(tmp_path):
    import shutil

    from omegaconf import OmegaConf

    from rigor.guard import ResumeConfigError
    from tasks.predict import run_predict

    run = tmp_path / "run"
    env = {**os.environ, "WANDB_MODE": "offline"}
    cmd = [sys.executable, "train.py", *toy_family(f"hydra.run.dir={run}")]
    dead = subprocess.run(cmd + ["seed=5", "trainer.max_epochs=0"], cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert dead.returncode != 0 and OmegaConf.load(run / ".hydra" / "config.yaml").seed == 5
    ok = subprocess.run(cmd + ["trainer.max_epochs=1"], cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert ok.returncode == 0, ok.stderr[-2000:]
    assert OmegaConf.load(run / ".hydra" / "config.yaml").seed == 42  # the config the checkpoints were trained under
    (kept,) = (run / ".hydra" / "restarts").iterdir()                  # the dead start's, kept beside it
    assert kept.name.endswith("-no-checkpoint") and OmegaConf.load(kept / "config.yaml").seed == 5
    assert "seed=5" in (kept / "overrides.yaml").read_text()
    predict = {"ckpt_path": str(run / "checkpoints" / "best.ckpt"), "split": "val", "out_dir": str(tmp_path / "p")}
    assert run_predict(OmegaConf.create(predict))["seed"] == 42
    # a run left as before (.hydra/ holds the dead start's config): evaluate refuses, naming the keys
    shutil.copy(kept / "config.yaml", run / ".hydra" / "config.yaml")
    shutil.rmtree(kept)
    with pytest.raises(ResumeConfigError, match=r"(?s)seed: 5 \(\.hydra/config\.yaml\) -> 42 \(checkpoint\).*trainer\.max_epochs: 0"):
        run_predict(OmegaConf.create(predict))
    # a saved config that matches the checkpoint's stamp (a restart's, after resume_force=true) is used
    (run / ".hydra" / "restarts" / "later").mkdir(parents=True)
    (run / ".hydra" / "restarts" / "later" / "config.yaml").write_text(
        (run / ".hydra" / "config.yaml").read_text().replace("seed: 5", "seed: 42").replace("max_epochs: 0", "max_epochs: 1"))
    assert run_predict(OmegaConf.create(predict))["seed"] == 42


@pytest.fixture(scope="module")
def toy_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One finished toy-family run (2 epochs), with the .hydra/config.yaml a real start writes (trained in this process)."""
    run = tmp_path_factory.mktemp("toy_run") / "run"
    train_in_process(toy_family("trainer.max_epochs=2"), run, save_config=True)
    return run


def test_an_explicit_ckpt_path_is_guarded_and_init_from_starts_a_new_run(tmp_path, toy_run):
    from tests.toy_family.toy import ToyBinary
    from tests.helpers import adamw
    from train import load_initial_weights

    last = toy_run / "checkpoints" / "last.ckpt"
    with pytest.raises(ResumeConfigError, match=r"(?s)ckpt_path: .*seed: 42 \(checkpoint\) -> 7 \(now\).*trainer.max_epochs: 2 "
                                                r"\(checkpoint\) -> 3 \(now\).*give init_from="):
        train_in_process(toy_family("seed=7", "trainer.max_epochs=3", "model.optimizer.lr=0.05", f"ckpt_path={last}"), tmp_path / "b")
    assert not (tmp_path / "b" / "checkpoints").exists()
    metrics = train_in_process(toy_family("seed=7", "trainer.max_epochs=1", f"init_from={last}"), tmp_path / "c")
    new = safe_load(tmp_path / "c" / "checkpoints" / "last.ckpt")
    assert metrics["init_from"] == str(last) and metrics["epochs_trained"] == 1 and metrics["status"] == "completed"
    assert new["epoch"] == 0 and 2 * new["global_step"] == safe_load(last)["global_step"]  # fresh epoch and step count
    assert new["rigor_config"]["init_from"] == str(last)  # a restart with another init_from is refused by the guard
    model = ToyBinary(adamw())
    load_initial_weights(model, last)
    assert all(torch.equal(v, safe_load(last)["state_dict"][k]) for k, v in model.state_dict().items())


def test_evaluate_takes_the_readme_trainer_override(tmp_path, toy_run):
    out = tmp_path / "out"
    proc = subprocess.run([sys.executable, "evaluate.py", f"ckpt_path={toy_run / 'checkpoints' / 'best.ckpt'}", "split=val",
                           "trainer=cpu", f"out_dir={out}"], cwd=ROOT, env={**os.environ, "WANDB_MODE": "offline"},
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert (out / "predictions_val.csv").is_file()
    from tasks.predict import trainer_config

    cfg = compose(["trainer=gpu"], config_name="evaluate")
    assert trainer_config(cfg, cfg.trainer).accelerator == "gpu"     # a conf/trainer file, composed by Hydra
    assert compose([], config_name="evaluate").get("trainer") is None  # default: the run's own trainer


def test_fast_dev_run_is_a_wiring_check_without_checkpoints(tmp_path, capsys):
    run = tmp_path / "run"
    metrics = train_in_process(toy_family("++trainer.fast_dev_run=true"), run)
    assert not list(run.rglob("*.ckpt"))
    saved = json.loads((run / "metrics.json").read_text())
    assert saved["fast_dev_run"] is True and saved["status"] == "fast_dev_run" and "test_auroc" in saved
    assert metrics["status"] == "fast_dev_run" and "the wiring works" in capsys.readouterr().out


@pytest.mark.slow
def test_ctrl_c_stops_like_sigterm_with_status_interrupted(tmp_path):
    run = tmp_path / "run"
    cmd = [sys.executable, "train.py", *toy_family("trainer.max_epochs=60", "callbacks.early_stopping=null",
                                                   "data.batch_size=16", f"hydra.run.dir={run}")]
    returncode, out, err = signal_after_first_last_ckpt(cmd, run, signal.SIGINT)
    assert returncode == 130, err[-2000:]
    failure = json.loads((run / "failure.json").read_text())
    assert failure["status"] == "interrupted" and "SIGINT" in failure["error"]
    assert "last.ckpt holds the end of epoch" in failure["error"] and "run the same command again to resume" in failure["error"]
    assert not (run / "metrics.json").exists() and safe_load(run / "checkpoints" / "last.ckpt")["epoch"] < 59


def test_a_run_stopped_after_its_last_epochs_checkpoint_resumes_with_its_last_val_metrics(tmp_path):
    """Killed between the final epoch's last.ckpt and metrics.json, the restart trains nothing: its last_val_*
    come from last.ckpt, equal to the uninterrupted run's (before, they were missing from metrics.json)."""
    run = tmp_path / "run"
    straight = train_in_process(toy_family("trainer.max_epochs=2"), run)
    last_val = {k: v for k, v in straight.items() if k.startswith("last_val_")}
    assert {"last_val_loss", "last_val_auroc"} <= set(last_val)
    (run / "metrics.json").unlink()  # as if the process died after the last epoch's checkpoint
    resumed = train_in_process(toy_family("trainer.max_epochs=2"), run)
    assert resumed["epochs_trained"] == 2 and resumed["test_auroc"] == straight["test_auroc"]
    assert {k: v for k, v in resumed.items() if k.startswith("last_val_")} == last_val
