"""train.py end to end, in subprocesses as a user runs it: metrics.json, sweeps, W&B runs, resume."""

from __future__ import annotations

import json
import math
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from tests.conftest import ROOT, TOY_SEARCH, train_in_process
from tests.lens.tiny import TEST_NET

pytestmark = pytest.mark.slow

SEED_004_KEYS = [
    "best_val_auroc", "best_epoch", "final_core_lr_auc", "final_radial_lr_auc", "core_gate", "radial_gate",
    "core_reliance", "core_reliance_verdict", "test_auroc", "test_core_reliance",
    *[f"core_sensitivity_r{r}" for r in (0, 3, 5, 7, 10, 15)],
    *[f"test_core_sensitivity_r{r}" for r in (0, 3, 5, 7, 10, 15)],
    *[f"test_auroc_by_thetae_{b}" for b in ("0.50-0.75", "0.75-1.00", "1.00-1.50", "1.50-2.00", "2.00-2.50", "2.50-3.00")],
    "seed", "experiment", "wall_time_s",
]


def run_train(*overrides: str, manifest: Path, check: bool = True) -> subprocess.CompletedProcess:
    env = {**os.environ, "WANDB_MODE": "offline", "WANDB_SILENT": "true", "PYTHONHASHSEED": "0"}
    flags = [o for o in overrides if o.startswith("-")]  # argparse wants -m before the overrides
    overrides = tuple(o for o in overrides if not o.startswith("-"))
    cmd = [sys.executable, "train.py", *flags, f"data.manifest_path={manifest}", "data.batch_size=32", *TEST_NET,
           "callbacks.shortcut_gates.every_n_epochs=1", "callbacks.thetae_auroc.every_n_epochs=1", *overrides]
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=600, env=env)
    if check and proc.returncode != 0:
        raise AssertionError(f"train.py failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-5000:]}")
    return proc


def test_single_run_writes_metrics_checkpoints_and_plots(tmp_path, toy_lens_manifest, capsys):
    # in this process (the command line itself: test_default_experiment_on_freshly_simulated_data and the sweeps)
    run_dir = tmp_path / "run"
    train_in_process([f"data.manifest_path={toy_lens_manifest}", "data.batch_size=32", *TEST_NET,
                      "callbacks.shortcut_gates.every_n_epochs=1", "callbacks.thetae_auroc.every_n_epochs=1",
                      "trainer.max_epochs=3", "logger=csv"], run_dir, save_config=True)
    assert f"metrics.json: {run_dir / 'metrics.json'}" in capsys.readouterr().out
    metrics = json.loads((run_dir / "metrics.json").read_text())
    missing = [k for k in SEED_004_KEYS if k not in metrics]
    assert not missing, missing
    assert metrics["status"] == "completed" and metrics["seed"] == 42 and metrics["experiment"] == "lens_smoke"
    assert 0 <= metrics["best_epoch"] < 3
    assert 0.0 <= metrics["best_val_auroc"] <= 1.0
    # the best checkpoint is what the core-sensitivity curve used: r=0 equals the best val AUROC
    assert metrics["core_sensitivity_r0"] == pytest.approx(metrics["best_val_auroc"], abs=1e-4)
    assert metrics["core_sensitivity_r0"] - metrics["core_sensitivity_r7"] == pytest.approx(metrics["core_reliance"], abs=1e-9)
    assert metrics["test_auroc"] == pytest.approx(metrics["test_core_sensitivity_r0"], abs=1e-4)
    assert metrics["core_gate"] in {"PASS", "WARN", "FAIL"}
    counts = sum(metrics[k] for k in metrics if k.startswith("test_count_by_thetae_"))
    assert counts == 24  # every test positive is in exactly one θ_E bin
    for name in ("best.ckpt", "last.ckpt"):
        assert (run_dir / "checkpoints" / name).exists()
    for plot in ("gate_history", "thetae_auroc", "core_sensitivity"):
        assert (run_dir / "plots" / f"{plot}.png").stat().st_size > 1000
    assert (run_dir / "csv" / "metrics.csv").exists() and (run_dir / ".hydra" / "config.yaml").exists()
    gates = (run_dir / "gate_history.csv").read_text().splitlines()
    assert len(gates) == 1 + 3


def run_toy(*args: str) -> subprocess.CompletedProcess:
    """train.py on the toy family (tests/toy_family): the core's behaviour without a family's weight."""
    env = {**os.environ, "WANDB_MODE": "offline", "WANDB_SILENT": "true", "PYTHONHASHSEED": "0"}
    flags = [a for a in args if a.startswith("-")]
    cmd = [sys.executable, "train.py", *flags, TOY_SEARCH, "experiment=toy_binary", "cpu_threads=1",
           *[a for a in args if not a.startswith("-")]]
    return subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=600, env=env)


def test_two_seed_multirun_gives_two_runs_and_two_wandb_runs(tmp_path):
    sweep = tmp_path / "sweep"
    proc = run_toy("-m", "seed=1,2", "trainer.max_epochs=1", "logger=wandb", f"hydra.sweep.dir={sweep}")
    assert proc.returncode == 0, proc.stderr[-3000:]
    jobs = sorted(p for p in sweep.iterdir() if p.is_dir() and p.name.isdigit())
    assert [j.name for j in jobs] == ["0", "1"]
    run_ids = set()
    for job, seed in zip(jobs, (1, 2)):
        metrics = json.loads((job / "metrics.json").read_text())
        assert metrics["seed"] == seed and metrics["status"] == "completed"
        offline = list((job / "wandb").glob("offline-run-*"))
        assert len(offline) == 1, offline  # one W&B run per job: the previous one was finished
        run_ids.add(offline[0].name.rsplit("-", 1)[-1])
    assert len(run_ids) == 2
    # different seeds really train differently
    m0, m1 = (json.loads((j / "metrics.json").read_text()) for j in jobs)
    assert m0["test_loss"] != m1["test_loss"]


def test_interrupted_run_resumes_to_the_same_metrics(tmp_path, toy_lens_manifest):
    # one thread in every start: the in-process run would otherwise use the test worker's thread count, and
    # float sums over another number of threads differ in the last digits
    common = ("trainer.max_epochs=4", "logger=csv", "callbacks.core_sensitivity.splits=[val]", "cpu_threads=1")
    # the uninterrupted run in this process (it needs no process of its own); the crash and the resume are
    # starts of train.py as a user makes them (failure.json is written by its main)
    lens = (f"data.manifest_path={toy_lens_manifest}", "data.batch_size=32", *TEST_NET, "callbacks.shortcut_gates.every_n_epochs=1",
            "callbacks.thetae_auroc.every_n_epochs=1")
    straight = tmp_path / "straight"
    train_in_process([*lens, *common], straight)

    resumed = tmp_path / "resumed"
    crash = ("+callbacks.crash._target_=tests.helpers.CrashAfterEpoch", "+callbacks.crash.epoch=1")
    proc = run_train(*common, *crash, f"hydra.run.dir={resumed}", manifest=toy_lens_manifest, check=False)
    assert proc.returncode != 0 and "simulated crash" in proc.stderr
    assert (resumed / "checkpoints" / "last.ckpt").exists() and not (resumed / "metrics.json").exists()
    assert "simulated crash" in json.loads((resumed / "failure.json").read_text())["error"]
    # a run directory copied elsewhere resumes from its own checkpoints; the crash callback is the only config
    # difference, so the resume guard needs resume_force (and says what differs)
    moved = tmp_path / "moved"
    shutil.move(resumed, moved)
    resumed = moved
    proc = run_train(*common, "resume_force=true", f"hydra.run.dir={resumed}", manifest=toy_lens_manifest)
    assert "resuming" in proc.stderr + proc.stdout and "callbacks.crash.epoch" in proc.stderr + proc.stdout

    a = json.loads((straight / "metrics.json").read_text())
    b = json.loads((resumed / "metrics.json").read_text())
    assert torch.load(straight / "checkpoints" / "last.ckpt", weights_only=True, mmap=True)["epoch"] == 3  # latest, not best
    differ = []
    for key in sorted(set(a) - {"wall_time_s", "run_dir"}):
        va, vb = a[key], b.get(key)
        same = vb == pytest.approx(va, rel=1e-6, abs=1e-9) if isinstance(va, float) and not math.isnan(va) else va == vb
        if not same:
            differ.append((key, va, vb))
    assert not differ, differ
    assert a["epochs_trained"] == 4


def test_nan_loss_stops_with_a_clear_error(tmp_path):
    run_dir = tmp_path / "nan"
    with pytest.raises(Exception, match=r"(?i)training loss is (nan|inf)"):
        train_in_process([TOY_SEARCH, "experiment=toy_binary", "cpu_threads=1", "trainer.max_epochs=1", "logger=csv",
                          "model.optimizer.lr=1e30"], run_dir)


def test_default_experiment_on_freshly_simulated_data(tmp_path):
    """The path `python train.py` takes: simulate (cached under paths.data_dir), train, test."""
    run_dir = tmp_path / "run"
    env = {**os.environ, "WANDB_MODE": "offline", "WANDB_SILENT": "true"}
    cmd = [sys.executable, "train.py", f"paths.data_dir={tmp_path / 'data'}", f"hydra.run.dir={run_dir}", "logger=csv",
           "data.simulation.n_train=64", "data.simulation.n_val=48", "data.simulation.n_test=48", "trainer.max_epochs=1",
           "callbacks.shortcut_gates.every_n_epochs=1", "callbacks.thetae_auroc.every_n_epochs=1"]
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=600, env=env)
    assert proc.returncode == 0, proc.stderr[-4000:]
    cached = list((tmp_path / "data").glob("lens_unpaired_*/manifest.parquet"))
    assert len(cached) == 1 and (cached[0].parent / "COMPLETE").exists()
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert metrics["experiment"] == "lens_smoke" and metrics["status"] == "completed"
    assert metrics["final_gate_n_samples"] == 48


def test_ddp_spawn_on_two_cpu_processes_matches_the_contract(tmp_path):
    """trainer=ddp locally uses ddp_spawn: callbacks' summaries and the best score survive the spawned processes."""
    run_dir = tmp_path / "ddp"
    # trainer=ddp asks for sync_batchnorm, which only works on GPUs: on CPU it is switched off
    proc = run_toy("trainer=ddp", "trainer.accelerator=cpu", "trainer.devices=2", "trainer.precision=32-true",
                   "trainer.max_epochs=2", "logger=csv", f"hydra.run.dir={run_dir}")
    assert proc.returncode == 0, proc.stderr[-3000:]
    m = json.loads((run_dir / "metrics.json").read_text())
    assert m["epochs_trained"] == 2  # counted from last.ckpt: the spawned processes did the training
    # the end-of-run passes gathered every sample once from both processes: the callback's NLL of the test
    # pass is the module's own test loss on the best checkpoint, and the temperature saw all 128 val samples
    assert m["test_nll_uncalibrated"] == pytest.approx(m["test_loss"], rel=1e-5)
    fitted = json.loads((run_dir / "checkpoints" / "temperature.json").read_text())
    assert fitted["n"] == 128 and fitted["split"] == "val"
    assert fitted["temperature"] > 0 and m["temperature"] == pytest.approx(fitted["temperature"])
