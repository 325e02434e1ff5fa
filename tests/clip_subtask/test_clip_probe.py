"""Issue 23: the linear probe arm and the paired comparisons with their MDD, by hand."""

from __future__ import annotations

import json

import numpy as np
import pytest

from analysis.clip_subtask.probe import compare_arms, linear_probe
from analysis.predictions import prediction_table, write_predictions


def _job(d, experiment: str, seed: int, right: np.ndarray) -> None:
    import pandas as pd

    d.mkdir(parents=True)
    y = np.arange(len(right)) % 2
    logits = np.stack([1.0 - y, y.astype(float)], 1)
    logits[~right] = logits[~right][:, ::-1]  # wrong where right is False
    frame = pd.DataFrame({"sample_id": [f"s{i}" for i in range(len(y))], "target": y})
    write_predictions(d / "predictions_test.csv", prediction_table("multiclass", logits, frame, "test"),
                      {"kind": "multiclass", "split": "test"})
    (d / "metrics.json").write_text(json.dumps({"status": "completed", "experiment": experiment, "seed": seed}))


def test_compare_arms_counts_discordant_images_and_sizes_the_mdd(tmp_path) -> None:
    n = 10
    ref = np.ones(n, bool)
    ref[:2] = False                                    # the probe: 8 of 10 right
    arm = {1: np.r_[True, True, True, False, [True] * 6], 2: np.r_[True, False, False, True, [True] * 6]}
    for seed, right in arm.items():
        _job(tmp_path / "sweep" / f"a{seed}", "clip_subtask_a", seed, right)
    _job(tmp_path / "probe", "probe", 0, ref)
    out = compare_arms(tmp_path / "sweep", tmp_path / "probe", [("clip_subtask_a", "probe")])[0]
    # seed 1: arm right on 0, 1 where the probe is wrong (c = 2), wrong on 3 where the probe is right (b = 1);
    # seed 2: right on 0 (c = 1), wrong on 2 (b = 1), both wrong on 1
    assert [(r["b"], r["c"]) for r in out["seeds"]] == [(1, 2), (1, 1)]
    assert out["mean_diff"] == pytest.approx((0.1 + 0.0) / 2)
    assert out["seeds"][0]["sample_sd"] == pytest.approx(np.sqrt(3 - 1 / 10) / 10)
    from analysis.power import mdd_paired

    assert out["mdd"] == pytest.approx(mdd_paired(np.var([0.1, 0.0], ddof=1), 2))


def test_linear_probe_picks_c_on_val() -> None:
    rng = np.random.default_rng(0)
    x = rng.standard_normal((200, 5))
    y = (x[:, 0] > 0).astype(int)
    res = linear_probe(x[:100], y[:100], x[100:150], y[100:150], x[150:], y[150:], c_grid=(0.001, 1.0))
    assert res["C"] == 1.0 and res["test_accuracy"] > 0.9 and res["test_logits"].shape == (50,)
