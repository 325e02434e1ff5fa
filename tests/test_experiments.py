"""Every experiment config runs end to end at a tiny budget (debug=fast), in-process.

A config that composes but cannot run fails here. Each family's test sizes come from its own
tests/<family>/tiny.py (tests/families.py finds them), so adding a family edits nothing here.
"""

from __future__ import annotations

import json
import pytest

from tests.conftest import ROOT, compose, train_in_process
from tests.families import tiny_overrides

pytestmark = pytest.mark.slow

EXPERIMENTS = sorted(p.stem for p in (ROOT / "conf" / "experiment").glob("*.yaml"))


@pytest.mark.parametrize("experiment", EXPERIMENTS)
def test_experiment_runs_two_tiny_epochs(experiment, tmp_path, tiny_data_root):
    base = compose([f"experiment={experiment}"])
    extra = tiny_overrides(base, tiny_data_root)
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
