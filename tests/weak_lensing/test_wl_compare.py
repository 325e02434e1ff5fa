"""Issue 22 item 3: weak-lensing arms compared on the same maps (analysis.arms.compare_arms_by_terms and
evaluate.py task=weak_lensing_compare)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from analysis.arms import compare_arms_by_terms
from analysis.power import mdd_paired
from analysis.predictions import prediction_record, write_predictions
from analysis.weak_lensing.score import challenge_score, coverage
from tests.conftest import compose

NAMES = ["omega_m", "s8"]


def _run(arm: str, seed: int, values: np.ndarray, ids=None, truth=None) -> dict:
    n = len(values)
    return {"arm": arm, "seed": seed, "ids": np.array([f"m{i}" for i in range(n)] if ids is None else ids),
            "truth": np.zeros((n, 2)) if truth is None else truth, "terms": {"score": np.asarray(values, dtype=float)}}


def test_a_constant_per_map_shift_is_its_own_ci_and_the_t_test_is_scipys() -> None:
    rng = np.random.default_rng(0)
    shifts = {1: 0.5, 2: 1.5, 3: 0.7}
    runs = []
    for seed, shift in shifts.items():
        a = rng.normal(size=50)
        runs += [_run("a", seed, a), _run("b", seed, a + shift)]
    out = compare_arms_by_terms(runs, reference="a", n_boot=500)
    for row in out["per_seed"]:
        # every resample of a constant difference is that difference: the CI is a point, the SE 0
        assert row["score_diff"] == pytest.approx(shifts[row["seed"]], abs=1e-12)
        assert row["score_ci_low"] == pytest.approx(shifts[row["seed"]], abs=1e-12)
        assert row["score_ci_high"] == pytest.approx(shifts[row["seed"]], abs=1e-12)
    (across,) = out["across_seeds"]
    means_a = [np.mean(r["terms"]["score"]) for r in runs if r["arm"] == "a"]
    means_b = [np.mean(r["terms"]["score"]) for r in runs if r["arm"] == "b"]
    ref = stats.ttest_rel(means_b, means_a)
    assert across["t"] == pytest.approx(ref.statistic, rel=1e-12) and across["p"] == pytest.approx(ref.pvalue, rel=1e-12)
    assert across["mean_diff"] == pytest.approx(np.mean(list(shifts.values())), abs=1e-12)
    assert across["mdd"] == pytest.approx(mdd_paired(np.var(list(shifts.values()), ddof=1), 3), rel=1e-12)
    assert across["p_holm"] == across["p"]  # one test in the table


def test_the_bootstrap_se_is_the_closed_form_of_a_mean_difference() -> None:
    # the bootstrap distribution of mean(d*) has sd sqrt(var_pop(d) / n); 20,000 resamples pin it to ~1%
    rng = np.random.default_rng(1)
    a = rng.normal(size=400)
    b = a + rng.normal(0.2, 1.0, size=400)
    out = compare_arms_by_terms([_run("a", 0, a), _run("b", 0, b)], reference="a", n_boot=20_000)
    (row,) = out["per_seed"]
    d = b - a
    se = np.sqrt(np.var(d) / len(d))
    assert (row["score_ci_high"] - row["score_ci_low"]) / (2 * stats.norm.ppf(0.975) * se) == pytest.approx(1.0, abs=0.03)
    assert (row["score_ci_low"] + row["score_ci_high"]) / 2 == pytest.approx(d.mean(), abs=0.1 * se)


def test_maps_are_paired_by_id_and_truth() -> None:
    rng = np.random.default_rng(2)
    a = rng.normal(size=30)
    b = a + rng.normal(size=30)
    ids = np.array([f"m{i}" for i in range(30)])
    truth = rng.uniform(size=(30, 2))
    perm = rng.permutation(30)
    straight = compare_arms_by_terms([_run("a", 0, a, ids, truth), _run("b", 0, b, ids, truth)], reference="a", n_boot=300)
    shuffled = compare_arms_by_terms([_run("a", 0, a, ids, truth), _run("b", 0, b[perm], ids[perm], truth[perm])],
                                     reference="a", n_boot=300)
    assert shuffled["per_seed"] == straight["per_seed"]
    other = truth.copy()
    other[3, 1] += 0.01
    with pytest.raises(ValueError, match="disagree on 'target'"):
        compare_arms_by_terms([_run("a", 0, a, ids, truth), _run("b", 0, b, ids, other)], reference="a")
    with pytest.raises(ValueError, match="different samples"):
        compare_arms_by_terms([_run("a", 0, a, ids, truth), _run("b", 0, b[:-1], ids[:-1], truth[:-1])], reference="a")


def test_bad_terms_and_references_are_named() -> None:
    good, bad = _run("a", 0, [1.0, 2.0]), _run("b", 0, [1.0, np.nan])
    with pytest.raises(ValueError, match="term 'score' must be 2 finite values"):
        compare_arms_by_terms([good, bad])
    with pytest.raises(ValueError, match="term 'coverage'"):
        compare_arms_by_terms([good, _run("b", 0, [1.0, 2.0])], terms=["coverage"])
    with pytest.raises(ValueError, match="reference arm 'c'"):
        compare_arms_by_terms([good, _run("b", 0, [1.0, 2.0])], reference="c")


# --- the task on run directories ----------------------------------------------------------------------


def _write_run(root: Path, name: str, experiment: str, seed: int, truth, files: dict, sigma_scale=None,
               metrics: dict | None = None) -> Path:
    run = root / name
    (run / ".hydra").mkdir(parents=True)
    (run / ".hydra" / "overrides.yaml").write_text(f"- experiment={experiment}\n- seed={seed}\n- cpu_threads=1\n")
    (run / "metrics.json").write_text(json.dumps({"seed": seed, "status": "completed", **(metrics or {})}))
    for stem, (mean, std) in files.items():
        frame = pd.DataFrame({"sample_id": [f"c{i:03d}" for i in range(len(truth))], "split": "test"})
        for j, t in enumerate(NAMES):
            frame[t], frame[f"{t}_mean"] = truth[:, j], mean[:, j]
            if std is not None:
                frame[f"{t}_std"] = std[:, j]
        record = prediction_record("regression", "test", NAMES, wl_score={"scale": 1000.0, "floor": -1.0e6})
        write_predictions(run / f"{stem}.csv", frame, record)
    if sigma_scale is not None:
        (run / "checkpoints").mkdir()
        (run / "checkpoints" / "sigma_scale.json").write_text(json.dumps({"sigma_scale": sigma_scale, "split": "val"}))
    return run


def test_task_finds_each_runs_arms_and_scores_them_as_the_challenge_does(tmp_path: Path) -> None:
    from evaluate import evaluate

    rng = np.random.default_rng(4)
    truth = np.column_stack([rng.uniform(0.2, 0.4, 60), rng.uniform(0.7, 0.9, 60)])
    std = np.tile([0.05, 0.02], (60, 1))
    expected = {}
    for seed in (1, 2):
        direct = truth + rng.normal(size=(60, 2)) * [0.05, 0.02]
        mcmc, ps = (truth + rng.normal(size=(60, 2)) * [0.04, 0.02] for _ in range(2))
        _write_run(tmp_path / "sweep", f"direct_{seed}", "wl_direct", seed, truth, {"predictions_test": (direct, std)},
                   sigma_scale={"omega_m": 0.5, "s8": 2.0})
        _write_run(tmp_path / "sweep", f"mcmc_{seed}", "wl_mcmc", seed, truth,
                   {"predictions_test": (direct, None),  # a point head: not an arm
                    "predictions_test_cnn_mcmc": (mcmc, 1.5 * std), "predictions_test_ps_mcmc": (ps, 2 * std)})
        expected[seed] = {
            "experiment=wl_direct": (challenge_score(truth, direct, std, 1000.0, -1e6), coverage(truth, direct, std).mean()),
            "experiment=wl_direct calibrated": (challenge_score(truth, direct, std * [0.5, 2.0], 1000.0, -1e6),
                                                coverage(truth, direct, std * [0.5, 2.0]).mean()),
            "experiment=wl_mcmc cnn_mcmc": (challenge_score(truth, mcmc, 1.5 * std, 1000.0, -1e6),
                                            coverage(truth, mcmc, 1.5 * std).mean()),
            "experiment=wl_mcmc ps_mcmc": (challenge_score(truth, ps, 2 * std, 1000.0, -1e6), coverage(truth, ps, 2 * std).mean()),
        }
    out = evaluate(compose(["task=weak_lensing_compare", f"sweep_dir={tmp_path / 'sweep'}", "reference=wl_direct",
                            "n_bootstrap=200"], config_name="evaluate"))
    assert out["reference"] == "experiment=wl_direct"
    assert out["arms"] == sorted(expected[1])
    for row in out["arm_means"]:
        for i, seed in enumerate((1, 2)):
            assert row["score"]["values"][i] == pytest.approx(expected[seed][row["arm"]][0], rel=1e-12)
            assert row["coverage"]["values"][i] == pytest.approx(expected[seed][row["arm"]][1], abs=1e-12)
    for row in out["per_seed"]:
        want = expected[row["seed"]][row["arm"]][0] - expected[row["seed"]]["experiment=wl_direct"][0]
        assert row["score_diff"] == pytest.approx(want, rel=1e-9)
    assert (tmp_path / "sweep" / "wl_compare" / "wl_arms.md").read_text().startswith("# Weak-lensing arms")
    with pytest.raises(ValueError, match="matches 0 arms"):
        evaluate(compose(["task=weak_lensing_compare", f"sweep_dir={tmp_path / 'sweep'}", "reference=nope"],
                         config_name="evaluate"))
    with pytest.raises(ValueError, match="terms: \\['bias'\\]"):
        evaluate(compose(["task=weak_lensing_compare", f"sweep_dir={tmp_path / 'sweep'}", "terms=[bias]"],
                         config_name="evaluate"))


def test_pairs_make_the_table_exactly_those_comparisons(tmp_path: Path) -> None:
    from evaluate import evaluate

    rng = np.random.default_rng(6)
    truth = np.column_stack([rng.uniform(0.2, 0.4, 40), rng.uniform(0.7, 0.9, 40)])
    std = np.tile([0.05, 0.02], (40, 1))
    for seed in (1, 2, 3):
        mean = lambda s: truth + rng.normal(size=(40, 2)) * s  # noqa: E731
        _write_run(tmp_path / "sweep", f"direct_{seed}", "wl_direct", seed, truth, {"predictions_test": (mean(0.05), std)})
        _write_run(tmp_path / "sweep", f"mcmc_{seed}", "wl_mcmc", seed, truth,
                   {"predictions_test_cnn_mcmc": (mean(0.03), std), "predictions_test_ps_mcmc": (mean(0.06), std)})
    out = evaluate(compose(["task=weak_lensing_compare", f"sweep_dir={tmp_path / 'sweep'}", "terms=[score]", "n_bootstrap=100",
                            "pairs=[[wl_direct,'wl_mcmc cnn_mcmc'],['wl_mcmc ps_mcmc','wl_mcmc cnn_mcmc']]"],
                           config_name="evaluate"))
    rows = [(r["reference"], r["arm"]) for r in out["across_seeds"]]
    assert rows == [("experiment=wl_direct", "experiment=wl_mcmc cnn_mcmc"),
                    ("experiment=wl_mcmc ps_mcmc", "experiment=wl_mcmc cnn_mcmc")]
    assert out["reference"] is None and len(out["per_seed"]) == 6
    means = {r["arm"]: r["score"]["values"] for r in out["arm_means"]}
    second = out["across_seeds"][1]
    diffs = np.subtract(means["experiment=wl_mcmc cnn_mcmc"], means["experiment=wl_mcmc ps_mcmc"])
    assert second["mean_diff"] == pytest.approx(diffs.mean(), rel=1e-12)
    assert second["p"] == pytest.approx(stats.ttest_1samp(diffs, 0).pvalue, rel=1e-9)
    # Holm over exactly the two rows
    ps = sorted(r["p"] for r in out["across_seeds"])
    assert sorted(r["p_holm"] for r in out["across_seeds"]) == pytest.approx([min(1, 2 * ps[0]), min(1, max(2 * ps[0], ps[1]))])
    with pytest.raises(ValueError, match="each entry is \\[A, B\\]"):
        evaluate(compose(["task=weak_lensing_compare", f"sweep_dir={tmp_path / 'sweep'}", "pairs=[[wl_direct]]"],
                         config_name="evaluate"))


def test_the_seeds_four_comparisons_preset() -> None:
    cfg = compose(["task=weak_lensing_seed_comparisons"], config_name="evaluate")
    assert cfg.task._target_ == "tasks.weak_lensing.compare.run_wl_compare" and list(cfg.terms) == ["score"]
    assert [list(p) for p in cfg.pairs] == [
        ["weak_lensing_simple_cnn_direct", "weak_lensing_simple_cnn_mcmc cnn_mcmc"],
        ["weak_lensing_simple_cnn_mcmc ps_mcmc", "weak_lensing_simple_cnn_mcmc cnn_mcmc"],
        ["weak_lensing_simple_cnn_direct", "weak_lensing_resnet_attn_direct"],
        ["weak_lensing_resnet_attn_direct", "experiment=weak_lensing_resnet_attn_direct data.batch_size=64"]]


def test_power_reads_a_weak_lensing_sweep(tmp_path: Path) -> None:
    # task=power on runs whose predictions_test.csv is regression: the seed variance only, no crash
    from evaluate import evaluate

    truth = np.zeros((5, 2)) + [0.3, 0.8]
    scores = {1: 2.0, 2: 3.5, 3: 1.0}
    for seed, score in scores.items():
        _write_run(tmp_path / "sweep", f"direct_{seed}", "wl_direct", seed, truth,
                   {"predictions_test": (truth + 0.01, np.full((5, 2), 0.05))}, metrics={"test_score": score})
    out = evaluate(compose(["task=power", f"sweep_dir={tmp_path / 'sweep'}", "power.metrics=[test_score]", "power.delta=0.6"],
                           config_name="evaluate"))
    text = json.dumps(out)
    assert "holds regression predictions" not in text
    (row,) = [r for r in out["arms"] if r["metric"] == "test_score"]
    assert row["n"] == 3
    assert row["var_total"] == pytest.approx(np.var(list(scores.values()), ddof=1), rel=1e-12)
    assert "var_seed is the whole variance" in row["sample_estimate"]
