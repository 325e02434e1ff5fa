"""Every experiment config runs end to end at a tiny budget (debug=fast), in-process.

A config that composes but cannot run fails here. Families whose default data are large point at a
small data set through ``TINY`` (keyed by the data config's ``_target_``); the rest run as they are.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from omegaconf import DictConfig, OmegaConf

from tests.conftest import ROOT, compose, train_in_process

pytestmark = pytest.mark.slow

EXPERIMENTS = sorted(p.stem for p in (ROOT / "conf" / "experiment").glob("*.yaml"))


_ABSENT = object()


def tiny_overrides(base: DictConfig, toy_lens: Path, tiny_wl: Path) -> list[str]:
    """Overrides that shrink a family's data (and its long end-of-run stages) for the wiring check.

    Only keys the experiment has are overridden, so one list serves every experiment of a family.
    """
    family = {
        "datamodules.lens.datamodule.LensDataModule": [f"data.manifest_path={toy_lens}", "data.batch_size=16"],
        "datamodules.puzzle.datamodule.PuzzleDataModule": ["data.batch_size=32", "callbacks.overfit_check=null"],
        # as clip_subtask_smoke: scikit-learn's 8 x 8 digits and a one-epoch tiny CLIP
        "datamodules.clip_subtask.datamodule.ClipSubtaskDataModule": [
            "data.source=sklearn_digits", "data.split.val_size=200", "data.split.test_size=300",
            "data.clip.tiny.pretrain.epochs=1", "model.subtask_training.max_epochs=3", "callbacks.mc_dropout.n_passes=5"],
        # tests/wl_data.py's maps and short chains
        "datamodules.weak_lensing.datamodule.WeakLensingDataModule": [
            f"data.manifest_path={tiny_wl}", "callbacks.weak_lensing.score.mcmc.n_steps=400", "callbacks.weak_lensing.score.mcmc.n_trace=4"],
        # as audio_smoke: a few dozen clips and a 20-step pretext
        "datamodules.audio.datamodule.AudioDataModule": [
            "data.batch_size=8", "data.simulation.n_speakers=6", "data.simulation.clips_per_speaker=4",
            "data.simulation.n_sources=7", "data.simulation.clips_per_source=3", "data.simulation.test_fraction=0.3",
            "data.test_fraction=0.3", "data.dev_fraction=0.3", "model.net.pretext.steps=20"],
    }.get(base.data._target_, [])
    return [o for o in family if OmegaConf.select(base, o.split("=", 1)[0], default=_ABSENT) is not _ABSENT]


@pytest.fixture(scope="session")
def tiny_wl(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from tests.wl_data import tiny_wl_manifest

    return tiny_wl_manifest(tmp_path_factory.mktemp("tiny_wl"))


@pytest.mark.parametrize("experiment", EXPERIMENTS)
def test_experiment_runs_two_tiny_epochs(experiment, tmp_path, toy_lens_manifest, tiny_wl):
    base = compose([f"experiment={experiment}"])
    extra = tiny_overrides(base, toy_lens_manifest, tiny_wl)
    train_in_process([f"experiment={experiment}", "debug=fast", "cpu_threads=1", *extra], tmp_path / experiment)
    metrics = json.loads((tmp_path / experiment / "metrics.json").read_text())
    assert metrics["status"] == "completed" and metrics["experiment"] == experiment
    assert metrics["epochs_trained"] == 2   # debug=fast wins over the experiment's own max_epochs
    assert metrics["best_epoch"] in (0, 1)
    assert any(k.startswith("test_") for k in metrics)


def test_debug_fast_overrides_every_experiments_budget():
    for experiment in EXPERIMENTS:
        cfg = compose([f"experiment={experiment}", "debug=fast"])
        assert cfg.trainer.max_epochs == 2 and cfg.trainer.limit_train_batches == 2, experiment
