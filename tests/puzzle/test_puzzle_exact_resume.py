"""Exact resume of the puzzle family (issue 21 item 1): a run killed with -9 ends as an uninterrupted one."""

from __future__ import annotations

import pytest

from tests.helpers import kill_after_first_last_ckpt_and_resume, metric_differences

pytestmark = pytest.mark.slow


def test_puzzle_killed_after_its_first_last_ckpt_resumes_to_the_same_metrics(tmp_path) -> None:
    # a 6 x 4 grid: shifts, colour jitter and tab masks are drawn per (seed, epoch, sample)
    args = ["experiment=puzzle_exp3", "seed=5", "data.cols=6", "data.rows=4", "data.piece_size=32", "data.batch_size=32",
            "callbacks.overfit_check=null", "trainer.max_epochs=4", "logger=csv", "cpu_threads=1",
            f"paths.data_dir={tmp_path / 'data'}"]
    straight, resumed = kill_after_first_last_ckpt_and_resume(args, tmp_path / "killed", tmp_path / "straight")
    assert straight["epochs_trained"] == 4 and resumed["status"] == "completed"
    assert not metric_differences(straight, resumed)
