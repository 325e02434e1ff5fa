"""analysis.power against simulation (the rejection rate of the same scipy test), statsmodels and hand-worked
cases; evaluate.py task=power end to end on a hand-written sweep and on two predictions files."""

from __future__ import annotations

import json
import math
import warnings

import numpy as np
import pandas as pd
import pytest
from scipy import stats
from statsmodels.stats.power import TTestIndPower, TTestPower

from analysis.power import (
    binomial_variance,
    bootstrap_variance,
    mdd_normal,
    mdd_note,
    mdd_paired,
    mdd_student,
    mdd_welch,
    paired_bootstrap_se,
    power_normal,
    power_paired,
    power_student,
    power_welch,
    samples_needed,
    seeds_needed,
    variance_split,
)
from analysis.significance import paired_bootstrap_ci
from analysis.summary import seed_comparison

SIMS = 2000  # simulated studies per point: Monte Carlo SE of a rate p is sqrt(p (1 - p) / 2000) <= 0.011


def _mc_close(rate: float, stated: float) -> None:
    se = math.sqrt(max(stated * (1 - stated), 0.01) / SIMS)
    assert abs(rate - stated) < 3 * se, (rate, stated, se)


@pytest.mark.parametrize("n, delta, sd_a, sd_b", [(3, 2.5, 1.0, 1.0), (3, 0.06, 0.02, 0.04), (8, 1.2, 1.0, 1.0)])
def test_welch_power_is_the_rejection_rate_of_ttest_ind(n, delta, sd_a, sd_b):
    rng = np.random.default_rng(n)
    x = rng.normal(0.0, sd_a, (SIMS, n))
    y = rng.normal(delta, sd_b, (SIMS, n))
    rate = float(np.mean(stats.ttest_ind(y, x, axis=1, equal_var=False).pvalue < 0.05))
    stated = power_welch(delta, sd_a**2, sd_b**2, n, n, 0.05)
    _mc_close(rate, stated)
    # the pooled-variance noncentral t (Student's test) overstates Welch's power at 3 seeds an arm
    if n == 3 and sd_a == sd_b:
        assert power_student(delta, sd_a**2, n, n) > stated + 0.05


@pytest.mark.parametrize("n, delta, sd", [(3, 1.5, 1.0), (10, 0.3, 0.5)])
def test_paired_power_is_the_rejection_rate_of_ttest_rel(n, delta, sd):
    rng = np.random.default_rng(100 + n)
    base = rng.normal(0.0, 3.0, (SIMS, n))  # a seed effect shared by both arms: cancels in the pairs
    a = base + rng.normal(0.0, sd / math.sqrt(2), (SIMS, n))
    b = base + delta + rng.normal(0.0, sd / math.sqrt(2), (SIMS, n))
    rate = float(np.mean(stats.ttest_rel(b, a, axis=1).pvalue < 0.05))
    _mc_close(rate, power_paired(delta, sd**2, n))


def test_nct_formulas_match_statsmodels_and_round_trip():
    for n, d in [(3, 1.0), (5, 0.8), (20, 0.5)]:
        assert power_student(d, 1.0, n, n) == pytest.approx(TTestIndPower().power(d, n, 0.05), abs=1e-9)
        assert power_paired(d, 1.0, n) == pytest.approx(TTestPower().power(d, n, 0.05), abs=1e-9)
        assert mdd_student(4.0, n, n) == pytest.approx(2 * TTestIndPower().solve_power(None, n, 0.05, 0.8), rel=1e-6)
        assert mdd_paired(4.0, n) == pytest.approx(2 * TTestPower().solve_power(None, n, 0.05, 0.8), rel=1e-6)
    # power at the MDD is the target power, for every design
    assert power_welch(mdd_welch(0.3, 0.7, 3, 4, 0.05, 0.8), 0.3, 0.7, 3, 4, 0.05) == pytest.approx(0.8, abs=1e-8)
    assert power_welch(mdd_welch(1.0, 1.0, 5, 5, 0.01, 0.9), 1.0, 1.0, 5, 5, 0.01) == pytest.approx(0.9, abs=1e-8)
    assert power_paired(mdd_paired(2.0, 4), 2.0, 4) == pytest.approx(0.8, abs=1e-8)
    assert power_normal(mdd_normal(0.01), 0.01) == pytest.approx(0.8, abs=1e-8)
    # the normal MDD is the textbook (z_{1-a/2} + z_power) se up to the far tail
    assert mdd_normal(0.01) == pytest.approx((stats.norm.ppf(0.975) + stats.norm.ppf(0.8)) * 0.01, rel=1e-4)
    # many seeds: Welch's power tends to Student's (and the large-n branch joins the quadrature smoothly)
    assert power_welch(0.3, 1.0, 1.0, 150, 150) == pytest.approx(power_student(0.3, 1.0, 150, 150), abs=2e-3)
    assert power_welch(0.2, 1.0, 1.0, 201, 201) == pytest.approx(power_welch(0.2, 1.0, 1.0, 200, 200), abs=3e-3)


def test_seeds_and_samples_needed():
    n = seeds_needed(0.5, 1.0)  # Welch, var 1 an arm: about Student's 64
    assert power_welch(0.5, 1.0, 1.0, n, n) >= 0.8 > power_welch(0.5, 1.0, 1.0, n - 1, n - 1)
    assert abs(n - TTestIndPower().solve_power(0.5, None, 0.05, 0.8)) < 2
    p = seeds_needed(0.5, 1.0, paired=True)
    assert power_paired(0.5, 1.0, p) >= 0.8 > power_paired(0.5, 1.0, p - 1)
    assert seeds_needed(40.0, 1.0) == 2 and seeds_needed(10.0, 1.0) == 3 and seeds_needed(0.0, 1.0) is None and seeds_needed(1e-4, 1.0, max_n=50) is None
    # samples: at 5 seeds, var_seed 1e-5 + var_sample 1e-4 at 1000 samples; delta such that v_max = 4e-5
    m1 = mdd_welch(1.0, 1.0, 5, 5)
    delta = m1 * math.sqrt(4e-5)
    assert samples_needed(delta, 1e-5, 1e-4, 1000, 5) == pytest.approx(math.ceil(1000 * 1e-4 / 3e-5))
    assert samples_needed(delta, 5e-5, 1e-4, 1000, 5) is None  # the seed part alone is too large: more seeds
    assert samples_needed(delta, 1e-5, 1e-4, 1000, 1) is None


def test_edge_cases_by_hand():
    # one seed: no variance, no t-test, nothing detectable
    assert mdd_welch(1.0, 1.0, 1, 3) == math.inf and math.isnan(power_welch(1.0, 1.0, 1.0, 1, 3))
    assert "n = 1 seed(s)" in mdd_note(1, 3) and mdd_note(3, 3, 0.5) is None
    assert mdd_paired(1.0, 1) == math.inf
    # zero variance: any difference shows
    assert mdd_welch(0.0, 0.0, 3, 3) == 0.0 and mdd_paired(0.0, 3) == 0.0 and mdd_normal(0.0) == 0.0
    assert power_welch(0.1, 0.0, 0.0, 3, 3) == 1.0 and power_welch(0.0, 0.0, 0.0, 3, 3) == 0.05
    assert "no variance" in mdd_note(3, 3, 0.0)
    # one arm without spread: Welch's df is the other arm's n - 1, so power is the one-sample t's
    assert power_welch(1.0, 0.0, 1.0, 3, 4) == pytest.approx(power_paired(1.0, 1.0, 4), abs=1e-4)  # quadrature
    # zero effect: the power is the test's size, which for Welch at 3 + 5 seeds and variances 1 : 2 is below the
    # level (1.6 million simulated studies of ttest_ind(equal_var=False): 0.0419 +- 0.0002)
    assert power_welch(0.0, 1.0, 2.0, 3, 5) == pytest.approx(0.0419, abs=1e-3)
    assert power_paired(0.0, 1.0, 3) == pytest.approx(0.05) and power_student(0.0, 1.0, 3, 3) == pytest.approx(0.05)
    assert binomial_variance(0.9, 100) == pytest.approx(0.0009)
    with pytest.raises(ValueError, match="power.power"):
        mdd_welch(1.0, 1.0, 3, 3, 0.05, 0.01)
    with pytest.raises(ValueError, match="n >= 1"):
        binomial_variance(0.5, 0)
    split = variance_split([0.8, 0.8, 0.8], [1e-4, 1e-4, 1e-4])
    assert split["var_total"] == pytest.approx(0, abs=1e-20) and split["var_seed"] == 0.0 and split["var_sample"] == pytest.approx(1e-4)
    one = variance_split([0.8])
    assert one["n"] == 1 and math.isnan(one["var_total"]) and math.isnan(one["var_sample"])


def test_variance_split_recovers_a_two_level_model():
    # 2000 studies of 10 seeds: accuracy_s ~ Binomial(n_test, p_s) / n_test, p_s ~ N(0.8, sd_seed^2)
    rng = np.random.default_rng(7)
    n_test, sd_seed, studies, seeds = 1000, 0.02, 2000, 10
    p = rng.normal(0.8, sd_seed, (studies, seeds))
    acc = rng.binomial(n_test, p) / n_test
    var_sample = acc * (1 - acc) / n_test
    total = acc.var(axis=1, ddof=1)
    var_seed = total - var_sample.mean(axis=1)  # variance_split without the floor, vectorised over studies
    assert var_seed.mean() == pytest.approx(sd_seed**2, rel=0.05)
    assert var_sample.mean() == pytest.approx(0.8 * 0.2 / n_test, rel=0.05)
    split = variance_split(acc[0], var_sample[0])
    assert split["var_seed"] == pytest.approx(max(0.0, total[0] - var_sample[0].mean()))
    assert split["var_seed"] + split["var_sample"] == pytest.approx(split["var_total"])


def test_bootstrap_variance_matches_the_binomial_and_paired_se():
    rng = np.random.default_rng(3)
    n = 2000
    y = rng.integers(0, 2, n)
    p = np.clip(y * 0.6 + rng.uniform(0, 0.5, n) * (1 - 2 * (rng.random(n) < 0.2) * y), 0, 1)
    acc = float(np.mean((p >= 0.5) == y))
    # stratified by class: the variance is the sum over classes of n_k^2 p_k (1 - p_k) / n_k / n^2 (< binomial)
    by_class = sum((np.sum(y == k) / n) ** 2 * binomial_variance(float(np.mean((p[y == k] >= 0.5) == k)), int(np.sum(y == k)))
                   for k in (0, 1))
    assert bootstrap_variance(y, p, "accuracy", 4000, 0) == pytest.approx(by_class, rel=0.1)
    assert bootstrap_variance(y, p, "accuracy", 4000, 0, stratify=False) == pytest.approx(binomial_variance(acc, n), rel=0.1)
    assert bootstrap_variance(y, p, "auroc", 500, 0) > 0
    se = paired_bootstrap_se(y, p, p, "accuracy", 500, 0)
    assert se["se_diff"] == 0 and se["se_a"] == pytest.approx(se["se_b"]) and se["n_valid"] == 500


def test_a_function_metric_draws_the_same_resamples_as_the_built_in_one():
    """A metric given as f(targets, scores) is bootstrapped by index draws; the built-in AUROC by the same draws
    turned into counts: with analysis.metrics.auroc as the function, the two paths give the same numbers."""
    from analysis.arms import compare_arms
    from analysis.lens.search_metrics import tpr0
    from analysis.metrics import auroc
    from analysis.power import metric_value

    rng = np.random.default_rng(5)
    n = 300
    y = rng.integers(0, 2, n)
    pa, pb = (np.clip(0.5 * y + rng.normal(0.25, s, n), 0, 1) for s in (0.3, 0.2))
    assert metric_value(y, pa, auroc) == pytest.approx(metric_value(y, pa, "auroc"), abs=1e-12)
    by_name, by_fn = (paired_bootstrap_se(y, pa, pb, m, 200, 1) for m in ("auroc", auroc))
    assert by_fn == pytest.approx(by_name, rel=1e-9)
    assert bootstrap_variance(y, pa, auroc, 200, 2) == pytest.approx(bootstrap_variance(y, pa, "auroc", 200, 2), rel=1e-9)
    # compare_arms reports a function metric under the caller's name, on the same resamples as the built-in one
    runs = [{"arm": arm, "seed": s, "ids": np.arange(n), "targets": y, "scores": np.clip(p + 0.01 * s, 0, 1)}
            for arm, p in (("a", pa), ("b", pb)) for s in (1, 2)]
    named = compare_arms(runs, metrics={"auc": auroc, "tpr0": tpr0}, n_boot=100)
    plain = compare_arms(runs, metrics=["auroc"], n_boot=100)
    assert named["metrics"] == ["auc", "tpr0"]
    for r_named, r_plain in zip(named["per_seed"], plain["per_seed"]):
        for key in ("diff", "ci_low", "ci_high", "mdd"):
            assert r_named[f"auc_{key}"] == pytest.approx(r_plain[f"auroc_{key}"], rel=1e-9)
        s = r_named["seed"]
        sa, sb = np.clip(pa + 0.01 * s, 0, 1), np.clip(pb + 0.01 * s, 0, 1)
        assert r_named["tpr0_diff"] == pytest.approx(tpr0(y, sb) - tpr0(y, sa))
        # the per-seed MDD: mdd_normal of the sd of the CI's own resampled differences, at the call's alpha and power
        ci = paired_bootstrap_ci(y, sa, sb, "auroc", n_boot=100, seed=0)
        assert r_plain["auroc_mdd"] == pytest.approx(mdd_normal(ci["se_diff"]), rel=1e-12)
    strict = compare_arms(runs, metrics=["auroc"], n_boot=100, alpha=0.01, power=0.9)
    ci = paired_bootstrap_ci(y, np.clip(pa + 0.01, 0, 1), np.clip(pb + 0.01, 0, 1), "auroc", n_boot=100, seed=0)
    assert strict["per_seed"][0]["auroc_mdd"] == pytest.approx(mdd_normal(ci["se_diff"], 0.01, 0.9), rel=1e-12)
    with pytest.raises(ValueError, match="unknown sample metric 'tpr0'"):
        paired_bootstrap_se(y, pa, pb, "tpr0", 10, 0)


def test_seed_comparison_puts_the_mdd_beside_not_resolved():
    values = {"A": [0.30, 0.22, 0.37], "B": [0.33, 0.29, 0.34], "C": [0.90, 0.91, 0.92]}
    jobs = [{"job_dir": f"{arm}{i}", "status": "completed", "metrics": {"test_tpr0": v}}
            for arm, vs in values.items() for i, v in enumerate(vs)]
    arms = {arm: {"job_dirs": [f"{arm}{i}" for i in range(3)]} for arm in values}
    res = seed_comparison(arms, jobs, ["test_tpr0"])
    rows = {t["b"]: t for t in res["result"]["tests"] if t["a"] == "A"}
    va, vb = np.var(values["A"], ddof=1), np.var(values["B"], ddof=1)
    assert rows["B"]["mdd"] == pytest.approx(mdd_welch(va, vb, 3, 3, 0.05, 0.8))
    assert rows["B"]["verdict"] == f"not resolved; MDD {rows['B']['mdd']:.4f}"
    assert rows["C"]["verdict"] == "resolved" and rows["C"]["p_holm"] < 0.05
    assert f"not resolved; MDD {rows['B']['mdd']:.4f}" in res["markdown"] and "| mdd | verdict |" in res["markdown"]


# --- task=power end to end ---------------------------------------------------------------------------

def _job(root, name, overrides, metrics, predictions=None):
    d = root / name
    (d / ".hydra").mkdir(parents=True)
    (d / ".hydra" / "overrides.yaml").write_text("".join(f"- {o}\n" for o in overrides))
    (d / "metrics.json").write_text(json.dumps({**metrics, "status": "completed"}))
    if predictions is not None:
        predictions.to_csv(d / "predictions_test.csv", index=False)
    return d


def _binary_predictions(rng, n, acc):
    y = rng.integers(0, 2, n)
    right = rng.random(n) < acc
    logit = np.where(right == (y == 1), 2.0, -2.0) + rng.normal(0, 0.1, n)
    return pd.DataFrame({"sample_id": [f"s{i}" for i in range(n)], "target": y, "logit": logit})


def _cfg(**overrides):
    from omegaconf import OmegaConf

    from tests.test_evaluation_tasks import make_cfg

    return make_cfg("power", **overrides) if not overrides.get("power") else OmegaConf.merge(
        make_cfg("power"), OmegaConf.create(overrides))


def test_task_power_on_a_sweep(tmp_path, capsys):
    from tasks.power import run_power

    rng = np.random.default_rng(0)
    sweep = tmp_path / "sweep"
    accs = {"a1": [0.80, 0.83, 0.78], "b1": [0.85, 0.84, 0.88]}
    for exp, values in accs.items():
        for seed, acc in zip((1, 2, 3), values):
            frame = _binary_predictions(np.random.default_rng(seed), 400, acc)  # same samples and targets per seed
            _job(sweep, f"{exp}_{seed}", [f"experiment={exp}", f"seed={seed}"],
                 {"seed": seed, "test_acc": acc, "test_tpr0": rng.uniform(0.1, 0.3)}, frame)
    _job(sweep, "single", ["experiment=c1", "seed=1"], {"seed": 1, "test_acc": 0.9})
    res = run_power(_cfg(sweep_dir=str(sweep), power={"metrics": ["test_acc", "test_tpr0"], "delta": 0.02,
                                                      "reference": "a1", "n_bootstrap": 300}))
    rows = {(r["arm"], r["metric"]): r for r in res["arms"]}
    a1 = rows[("experiment=a1", "test_acc")]
    assert a1["n"] == 3 and a1["sd"] == pytest.approx(np.std(accs["a1"], ddof=1))
    assert a1["sample_estimate"].startswith("bootstrap of predictions_test.csv (accuracy")
    assert 0 < a1["var_sample"] < 0.001 and a1["var_seed"] == pytest.approx(max(0.0, a1["var_total"] - a1["var_sample"]))
    assert a1["mdd"] == pytest.approx(mdd_welch(a1["var_total"], a1["var_total"], 3, 3))
    assert a1["seeds_needed"] == seeds_needed(0.02, a1["var_total"]) and "test_samples_needed" in a1
    tpr = rows[("experiment=a1", "test_tpr0")]
    assert tpr["sample_estimate"].startswith("none") and tpr["var_seed"] == tpr["var_total"]
    single = rows[("experiment=c1", "test_acc")]
    assert single["mdd"] == math.inf and "n = 1 seed(s)" in single["note"]
    pair = next(p for p in res["pairs"] if p["b"] == "experiment=b1" and p["metric"] == "test_acc")
    diffs = np.subtract(accs["b1"], accs["a1"])
    assert pair["n_pairs"] == 3 and pair["mdd_paired"] == pytest.approx(mdd_paired(np.var(diffs, ddof=1), 3))
    assert "same test samples" in pair["paired"]
    md = (sweep / "power.md").read_text()
    assert "## test_acc" in md and "| experiment=a1 | 3 |" in md and "none (n < 2)" in md
    assert json.loads((sweep / "power.json").read_text())["arms"][0]["mdd"] is not None
    assert "## test_acc" in capsys.readouterr().out
    with pytest.raises(ValueError, match="power.metrics: 'test_aucc' matches no metric"):
        run_power(_cfg(sweep_dir=str(sweep), power={"metrics": ["test_aucc"]}))
    with pytest.raises(ValueError, match="needs sweep_dir"):
        run_power(_cfg())


def test_task_power_on_two_predictions_files(tmp_path):
    from tasks.power import run_power

    rng = np.random.default_rng(1)
    fa = _binary_predictions(rng, 500, 0.8)
    fb = fa.copy()
    flip = rng.random(500) < 0.1
    fb.loc[flip, "logit"] *= -1
    fb = fb.sample(frac=1.0, random_state=0)  # another row order: paired by sample_id
    fa.to_csv(tmp_path / "a.csv", index=False)
    fb.to_csv(tmp_path / "b.csv", index=False)
    res = run_power(_cfg(a=str(tmp_path / "a.csv"), b=str(tmp_path / "b.csv"),
                         power={"metrics": ["accuracy"], "delta": 0.01, "n_bootstrap": 1000}))
    (row,) = res["rows"]
    # accuracy: the paired SE of the difference is sqrt(discordant share / n) (McNemar's variance) near zero effect
    assert row["se_diff"] == pytest.approx(math.sqrt(flip.mean() / 500), rel=0.15)
    assert row["mdd"] == pytest.approx(mdd_normal(row["se_diff"]))
    assert row["test_samples_needed"] == math.ceil(500 * (row["mdd"] / 0.01) ** 2)
    assert (tmp_path / "power.md").exists() and (tmp_path / "power.json").exists()
    warnings.simplefilter("default")


def test_across_seed_mdd_at_alpha_over_m_beside_the_unadjusted_one():
    """compare_arms' across-seed rows: the paired t-test's MDD at alpha and at alpha/m (m rows with a p-value)."""
    from analysis.arms import compare_arms

    rng = np.random.default_rng(7)
    n = 200
    y = rng.integers(0, 2, n)
    runs = []
    for s, shift in zip((1, 2, 3), (0.00, 0.03, 0.07)):
        pa = np.clip(0.5 * y + rng.normal(0.25, 0.3, n), 0, 1)
        pb = np.clip(pa + shift * (2 * y - 1) + rng.normal(0, 0.05, n), 0, 1)
        runs += [{"arm": "a", "seed": s, "ids": np.arange(n), "targets": y, "scores": pa},
                 {"arm": "b", "seed": s, "ids": np.arange(n), "targets": y, "scores": pb}]
    out = compare_arms(runs, metrics=["accuracy", "auroc"], n_boot=50, alpha=0.1)
    rows = out["across_seeds"]
    m = sum(np.isfinite(r["p"]) for r in rows)
    assert m == 2
    for r in rows:
        var = r["sd_diff"] ** 2
        assert r["mdd"] == pytest.approx(mdd_paired(var, 3, alpha=0.1), rel=1e-9)
        assert r["mdd_holm"] == pytest.approx(mdd_paired(var, 3, alpha=0.05), rel=1e-9) and r["mdd_holm"] > r["mdd"]
        if r["verdict"] != "resolved":
            assert r["verdict"] == f"not resolved; MDD {r['mdd']:.4g} ({r['mdd_holm']:.4g} at alpha/2, which Holm over the table needs at worst)"


def test_the_same_difference_in_every_seed_is_no_spread_not_a_resolved_test():
    """11 -> 21 and 21 -> 31 correct of 50: both seeds +0.2, which float rounding makes 0.19999999999999998
    and 0.2. A t-test on that would give p ~ 1e-15; it is a zero spread (no t statistic, MDD 0)."""
    from analysis.arms import compare_arms

    n = 50
    y = np.ones(n, dtype=int)
    assert 21 / n - 11 / n != 31 / n - 21 / n  # the rounding this test is about
    runs = []
    for s, (ka, kb) in enumerate(((11, 21), (21, 31)), start=1):
        runs += [{"arm": "a", "seed": s, "ids": np.arange(n), "targets": y, "scores": (np.arange(n) < ka).astype(float)},
                 {"arm": "b", "seed": s, "ids": np.arange(n), "targets": y, "scores": (np.arange(n) < kb).astype(float)}]
    [row] = compare_arms(runs, metrics=["accuracy"], n_boot=20)["across_seeds"]
    assert row["mean_diff"] == pytest.approx(0.2) and row["sd_diff"] == 0.0
    assert math.isnan(row["t"]) and math.isnan(row["p"]) and row["mdd"] == 0.0
    assert row["verdict"].startswith("not resolved; no spread across seeds")
