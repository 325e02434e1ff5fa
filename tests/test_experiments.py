"""Every experiment config runs end to end at a tiny budget (debug=fast), in-process.

A config that composes but cannot run fails here. Families whose default data are large point at a
small data set through ``TINY`` (keyed by the data config's ``_target_``); the rest run as they are.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from hydra.core.hydra_config import HydraConfig
from omegaconf import open_dict

from tests.conftest import ROOT, compose

pytestmark = pytest.mark.slow

EXPERIMENTS = sorted(p.stem for p in (ROOT / "conf" / "experiment").glob("*.yaml"))


def tiny_overrides(target: str, toy_lens: Path) -> list[str]:
    """Overrides that shrink a family's data for the wiring check."""
    if target == "datamodules.lens.LensDataModule":
        return [f"data.manifest_path={toy_lens}", "data.batch_size=16"]
    if target == "datamodules.puzzle.PuzzleDataModule":
        return ["data.batch_size=32", "callbacks.overfit_check=null"]
    return []


def run_in_process(overrides: list[str], run_dir: Path) -> dict:
    """Compose as train.py does and run train(); returns metrics.json."""
    from train import train

    cfg = compose([*overrides, f"hydra.run.dir={run_dir}"])
    cfg.hydra.runtime.output_dir = str(run_dir)
    HydraConfig.instance().set_config(cfg)
    with open_dict(cfg):
        del cfg["hydra"]  # train.py's config has no hydra node
    train(cfg)
    return json.loads((run_dir / "metrics.json").read_text())


@pytest.mark.parametrize("experiment", EXPERIMENTS)
def test_experiment_runs_two_tiny_epochs(experiment, tmp_path, toy_lens_manifest):
    base = compose([f"experiment={experiment}"])
    extra = tiny_overrides(base.data._target_, toy_lens_manifest)
    metrics = run_in_process([f"experiment={experiment}", "debug=fast", "cpu_threads=1", *extra], tmp_path / experiment)
    assert metrics["status"] == "completed" and metrics["experiment"] == experiment
    assert metrics["epochs_trained"] == 2   # debug=fast wins over the experiment's own max_epochs
    assert metrics["best_epoch"] in (0, 1)
    assert any(k.startswith("test_") for k in metrics)


def test_debug_fast_overrides_every_experiments_budget():
    for experiment in EXPERIMENTS:
        cfg = compose([f"experiment={experiment}", "debug=fast"])
        assert cfg.trainer.max_epochs == 2 and cfg.trainer.limit_train_batches == 2, experiment
