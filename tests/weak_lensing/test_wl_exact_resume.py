"""Exact resume of the weak-lensing family (issue 21 item 1): a run killed with -9 ends as an uninterrupted one."""

from __future__ import annotations

import pytest

from tests.helpers import kill_after_first_last_ckpt_and_resume, metric_differences
from tests.weak_lensing.tiny import tiny_overrides

pytestmark = pytest.mark.slow


def test_wl_cnn_killed_after_its_first_last_ckpt_resumes_to_the_same_metrics(tmp_path) -> None:
    # the simple CNN has dropout [0.2, 0.1] and training maps get shape noise drawn per (seed, epoch, sample)
    args = ["experiment=weak_lensing_simple_cnn_direct", "seed=5", "debug=fast", "trainer.max_epochs=4", "cpu_threads=1",
            f"paths.data_dir={tmp_path / 'data'}", *tiny_overrides(tmp_path / "data")]
    straight, resumed = kill_after_first_last_ckpt_and_resume(args, tmp_path / "killed", tmp_path / "straight")
    assert straight["epochs_trained"] == 4 and resumed["status"] == "completed"
    assert not metric_differences(straight, resumed)
