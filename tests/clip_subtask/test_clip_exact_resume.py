"""Exact resume of the CLIP subtask family (issue 21 item 1): a run killed with -9 ends as an uninterrupted one."""

from __future__ import annotations

import pytest

from tests.helpers import kill_after_first_last_ckpt_and_resume, metric_differences

pytestmark = pytest.mark.slow


def test_clip_smoke_killed_after_its_first_last_ckpt_resumes_to_the_same_metrics(tmp_path) -> None:
    # clip_subtask_smoke (dropout in the head) at its tiny size; seed 5 as in the issue
    args = ["experiment=clip_subtask_smoke", "seed=5", "trainer.max_epochs=4", "logger=csv", "cpu_threads=1",
            "callbacks.mc_dropout.n_passes=2", "data.split.subset=600", "data.split.val_size=100",
            "data.split.test_size=150", f"paths.data_dir={tmp_path / 'data'}"]
    straight, resumed = kill_after_first_last_ckpt_and_resume(args, tmp_path / "killed", tmp_path / "straight")
    assert straight["epochs_trained"] == 4 and resumed["status"] == "completed"
    assert not metric_differences(straight, resumed)
