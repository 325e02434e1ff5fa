"""Multi-seed summaries against numpy/scipy, and grouping of runs into arms."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import stats

from analysis.summary import (
    BASE_ARM,
    arm_name,
    group_runs,
    markdown_table,
    metrics_table,
    numeric_metrics,
    pick_reference,
    plot_metrics,
    seed_comparison,
    short_arm_names,
    summarize_metric,
    welch_test,
)


@pytest.mark.parametrize("n", [2, 3, 5, 10])
def test_summarize_metric_matches_numpy_and_scipy_t_interval(n):
    x = np.random.default_rng(n).normal(0.9, 0.02, n)
    s = summarize_metric(x)
    assert s["n"] == n
    assert s["mean"] == pytest.approx(np.mean(x))
    assert s["std"] == pytest.approx(np.std(x, ddof=1))  # sample std, not population
    low, high = stats.t.interval(0.95, n - 1, loc=np.mean(x), scale=stats.sem(x))
    assert s["ci_low"] == pytest.approx(low) and s["ci_high"] == pytest.approx(high)
    assert s["ci_half"] == pytest.approx((high - low) / 2)
    low90, _ = stats.t.interval(0.90, n - 1, loc=np.mean(x), scale=stats.sem(x))
    assert summarize_metric(x, confidence=0.90)["ci_low"] == pytest.approx(low90)


def test_summarize_metric_small_and_nan():
    one = summarize_metric([0.7])
    assert one["n"] == 1 and one["mean"] == 0.7 and math.isnan(one["std"]) and math.isnan(one["ci_low"])
    none = summarize_metric([])
    assert none["n"] == 0 and math.isnan(none["mean"])
    with_nan = summarize_metric([1.0, float("nan"), 3.0])
    assert with_nan["n"] == 2 and with_nan["mean"] == 2.0 and with_nan["std"] == pytest.approx(math.sqrt(2))


def test_arm_name_drops_seed_and_sorts():
    assert arm_name(["seed=1", "model.lr=1e-3", "experiment=lens_b1"]) == "experiment=lens_b1 model.lr=0.001"
    assert arm_name(["++seed=4", "+data.frac=0.1"]) == "+data.frac=0.1"
    assert arm_name(["seed=4"]) == BASE_ARM
    assert arm_name(["seed=4"], experiment="lens_b2") == "experiment=lens_b2"
    assert arm_name(["experiment=lens_b1", "seed=4"], experiment="other") == "experiment=lens_b1"
    assert arm_name(["data.seed_split=3", "seed=4"]) == "data.seed_split=3"  # only the key 'seed' is dropped
    # a single run typed `true`, a sweep stored `True`; threads and the launcher do not make an arm
    assert arm_name(["model.channels_last=true", "seed=1"]) == arm_name(["model.channels_last=True", "seed=2"])
    assert arm_name(["x=false"]) != arm_name(["x=true"])
    ignore = ("seed", "cpu_threads", "hydra")
    assert arm_name(["experiment=b3", "cpu_threads=1", "hydra/launcher=ray", "seed=1"], ignore=ignore) == "experiment=b3"
    assert arm_name(["experiment=b3", "cpu_threads_x=1"], ignore=ignore) == "cpu_threads_x=1 experiment=b3"
    # a sweep stores x=1e-3 as x=0.001 (Hydra), a single run as typed: one arm; ints and text stay as given
    assert arm_name(["cb.fpr=1e-3", "lr=3.0E-4", "seed=1"]) == arm_name(["lr=0.0003", "cb.fpr=0.001", "seed=2"])
    assert arm_name(["cb.fpr=1e-3"]) == "cb.fpr=0.001"
    assert arm_name(["epochs=10", "name=v1.5", "edges=[0.5,1.0]"]) == "edges=[0.5,1.0] epochs=10 name=v1.5"


def test_group_runs():
    records = [
        {"job_dir": "0", "overrides": ["experiment=a", "seed=1"], "metrics": {"x": 1.0}, "status": "completed"},
        {"job_dir": "1", "overrides": ["seed=2", "experiment=a"], "metrics": {"x": 2.0}, "status": "completed"},
        {"job_dir": "2", "overrides": ["experiment=a", "lr=0.1", "seed=1"], "metrics": None, "status": "failed"},
        {"job_dir": "3", "overrides": ["seed=3"], "metrics": None, "status": "unfinished", "experiment": "b"},
    ]
    arms = group_runs(records)
    assert list(arms) == ["experiment=a", "experiment=a lr=0.1", "experiment=b"]
    assert [r["job_dir"] for r in arms["experiment=a"]] == ["0", "1"]
    assert arms["experiment=b"][0]["status"] == "unfinished"  # kept, not dropped


def test_numeric_metrics_and_table():
    m = {"seed": 3, "test_auroc": 0.9, "best_epoch": 7, "core_gate": "PASS", "ok": True, "experiment": "x"}
    assert numeric_metrics(m) == {"test_auroc": 0.9, "best_epoch": 7.0}
    nan = numeric_metrics({"test_tpr_at_fpr_1e-4": None, "x": 1})  # null is metrics.json's NaN
    assert math.isnan(nan["test_tpr_at_fpr_1e-4"]) and nan["x"] == 1.0
    table = markdown_table(["a", "b"], [["x|y", 0.123456], ["z", float("nan")]])
    assert table.splitlines() == ["| a | b |", "|---|---|", "| x\\|y | 0.1235 |", "| z | nan |"]


def test_metrics_table_plugin():
    a = {"metrics": {"test_tpr0": summarize_metric([0.2, 0.4, 0.3]), "test_auroc": summarize_metric([0.9])}, "n_completed": 3}
    b = {"metrics": {"test_tpr0": summarize_metric([float("nan")] * 2)}, "n_completed": 2}
    c = {"metrics": {"other": summarize_metric([1.0])}, "n_completed": 1}
    out = metrics_table({"arm=a": a, "arm=b": b, "arm=c": c}, [], ["test_auroc", "test_tpr0"], title="Search")
    assert out["title"] == "Search" and set(out["result"]) == {"arm=a", "arm=b"}  # c has none of them
    low, high = stats.t.interval(0.95, 2, loc=0.3, scale=stats.sem([0.2, 0.4, 0.3]))
    lines = out["markdown"].splitlines()
    assert lines[-4] == "| arm | test_auroc | test_tpr0 |"
    assert lines[-1] == "| arm=b | n/a | nan (n=0) |"
    assert lines[-2] == f"| arm=a | 0.9000 (n=1) | 0.3000 [{low:.4f}, {high:.4f}] (n=3) |"
    assert out["result"]["arm=b"]["test_auroc"] is None
    assert metrics_table({"arm=c": c}, [], ["test_tpr0"]) is None


def test_plot_metrics_headline_patterns_and_typos():
    names = ["seed", "best_val_auroc", "best_epoch", "lr", "test_auroc", "test_auroc_by_thetae_0.5-1.0",
             "test_count_by_thetae_0.5-1.0", "test_purity_at_c0.5_prev_1e-3", "test_purity_at_c0.5_prev_1e-3_ci_low",
             "test_n_pos", "test_detected_by_arc_snr_0-5", "test_tpr0", "wall_time_s", "test_auroc"]
    assert plot_metrics(names) == ["best_val_auroc", "test_auroc", "test_purity_at_c0.5_prev_1e-3", "test_tpr0"]
    assert plot_metrics(names, limit=2) == ["best_val_auroc", "test_auroc"]
    # patterns: in the order given, each metric once
    assert plot_metrics(names, ["test_tpr*", "test_auroc*", "test_auroc"]) == ["test_tpr0", "test_auroc", "test_auroc_by_thetae_0.5-1.0"]
    assert plot_metrics(names, "lr") == ["lr"]  # one name from the command line
    assert plot_metrics(["lr", "epoch"]) == ["lr", "epoch"]  # no headline metric: all of them
    with pytest.raises(ValueError, match="'test_acc' matches no metric"):
        plot_metrics(names, ["test_acc"])


def _welch_by_hand(a, b, confidence=0.95):
    """Welch (1947) from its formula: t = (mean_b - mean_a) / se, Welch-Satterthwaite df."""
    a, b = np.asarray(a, float), np.asarray(b, float)
    va, vb = a.var(ddof=1) / a.size, b.var(ddof=1) / b.size
    se = math.sqrt(va + vb)
    diff = b.mean() - a.mean()
    df = (va + vb) ** 2 / (va ** 2 / (a.size - 1) + vb ** 2 / (b.size - 1))
    half = stats.t.ppf(0.5 + confidence / 2, df) * se
    return diff / se, df, 2 * stats.t.sf(abs(diff / se), df), diff - half, diff + half


def test_welch_test_matches_the_formula_and_handles_small_arms():
    a, b = [0.30, 0.22, 0.37], [0.33, 0.29, 0.34, 0.31]
    t, df, p, low, high = _welch_by_hand(a, b)
    res = welch_test(a, b)
    assert (res["n_a"], res["n_b"]) == (3, 4) and res["diff"] == pytest.approx(np.mean(b) - np.mean(a))
    assert (res["t"], res["df"], res["p"]) == (pytest.approx(t), pytest.approx(df), pytest.approx(p))
    assert (res["ci_low"], res["ci_high"]) == (pytest.approx(low), pytest.approx(high))
    assert welch_test(b, a)["t"] == pytest.approx(-t)  # B - A: the sign follows the order
    # 90% CI is narrower, same p
    assert welch_test(a, b, 0.9)["ci_high"] < high and welch_test(a, b, 0.9)["p"] == pytest.approx(p)
    # NaN seeds (a metric undefined in a run) are dropped, not counted
    assert welch_test([*a, float("nan")], b)["n_a"] == 3 and welch_test([*a, float("nan")], b)["p"] == pytest.approx(p)
    # one seed in an arm, or no spread in either: no t, but the means and their difference stay
    one = welch_test([0.3], b)
    assert math.isnan(one["p"]) and math.isnan(one["ci_low"]) and one["diff"] == pytest.approx(np.mean(b) - 0.3)
    assert math.isnan(welch_test([0.5, 0.5], [0.6, 0.6])["p"])
    # spread in one arm only is fine: df = n - 1 of that arm
    res = welch_test([0.5, 0.5, 0.5], [0.6, 0.7, 0.8])
    assert res["df"] == pytest.approx(2) and res["p"] == pytest.approx(stats.ttest_1samp([0.6, 0.7, 0.8], 0.5).pvalue)


def test_pick_reference_and_short_names():
    names = ["experiment=a", "experiment=a model.x=1", "experiment=b"]
    assert pick_reference(names, "experiment=a") == ("experiment=a", None)
    assert pick_reference(names, "a") == ("experiment=a", None)  # a bare name is an experiment
    assert pick_reference(names, "model.x=1") == ("experiment=a model.x=1", None)
    assert pick_reference(names, None) == (None, None)
    ref, note = pick_reference(["experiment=a x=1", "experiment=a x=2"], "experiment=a")  # a tie
    assert ref is None and "matches 2 arms" in note
    assert pick_reference(names, "experiment=c")[0] is None
    short, shared = short_arm_names(["experiment=a t=bf16", "experiment=b t=bf16"])
    assert short == {"experiment=a t=bf16": "experiment=a", "experiment=b t=bf16": "experiment=b"} and shared == ["t=bf16"]
    assert short_arm_names(["x=1", "x=1 y=2"])[0]["x=1"] == "x=1"  # nothing left: the full name


def _arms_and_jobs(values: dict[str, list[float | None]], metric: str = "test_auroc"):
    arms, jobs = {}, []
    for arm, seeds in values.items():
        dirs = []
        for i, v in enumerate(seeds):
            d = f"/sweep/{arm}/{i}"
            jobs.append({"job_dir": d, "status": "completed", "metrics": {"seed": i, metric: v}})
            dirs.append(d)
        arms[arm] = {"job_dirs": dirs}
    jobs.append({"job_dir": "/sweep/failed", "status": "failed", "metrics": {metric: 0.0}})
    arms["experiment=a"]["job_dirs"].append("/sweep/failed")  # a failed job's value is never used
    return arms, jobs


def test_seed_comparison_against_a_reference_with_holm():
    values = {"experiment=a": [0.80, 0.82, 0.79], "experiment=b": [0.90, 0.93, 0.91], "experiment=c": [0.81, 0.78, None]}
    arms, jobs = _arms_and_jobs(values)
    out = seed_comparison(arms, jobs, ["test_auroc"], reference="experiment=a")
    tests = out["result"]["tests"]
    assert [(t["a"], t["b"]) for t in tests] == [("experiment=a", "experiment=b"), ("experiment=a", "experiment=c")]
    assert tests[0]["n_a"] == 3 and tests[1]["n_b"] == 2  # the failed job and the null value are left out
    p = [_welch_by_hand(values["experiment=a"], values["experiment=b"])[2],
         _welch_by_hand(values["experiment=a"], [0.81, 0.78])[2]]
    assert [t["p"] for t in tests] == [pytest.approx(x) for x in p]
    # Holm by hand: the smallest p times 2, the other times 1, kept monotone, capped at 1
    lo, hi = sorted(p)
    holm = {lo: min(1, 2 * lo), hi: min(1, max(2 * lo, hi))}
    assert [t["p_holm"] for t in tests] == [pytest.approx(holm[x]) for x in p]
    assert "| experiment=b − experiment=a | test_auroc | 3 / 3 |" in out["markdown"]


def test_seed_comparison_every_pair_and_no_comparison():
    arms, jobs = _arms_and_jobs({"experiment=a": [0.8, 0.9], "experiment=b": [0.7], "experiment=c": [0.6, 0.65]})
    out = seed_comparison(arms, jobs, ["test_auroc", "test_missing"])
    pairs = [(t["a"], t["b"], t["metric"]) for t in out["result"]["tests"]]
    # no arm has test_missing: no row for it
    assert pairs == [(a, b, "test_auroc") for a, b in (("experiment=a", "experiment=b"), ("experiment=a", "experiment=c"),
                                                       ("experiment=b", "experiment=c"))]
    # b has one seed: only a vs c gives a test, and Holm over one test is its p
    finite = [t for t in out["result"]["tests"] if not math.isnan(t["p"])]
    assert len(finite) == 1 and finite[0]["p_holm"] == pytest.approx(finite[0]["p"])
    # a reference that names no single arm: said, and no test run on a guessed arm
    out = seed_comparison(arms, jobs, ["test_auroc"], reference="experiment=z")
    assert out["result"]["tests"] == [] and "No comparison: reference 'experiment=z' matches 0 arms" in out["markdown"]
    one, jobs1 = _arms_and_jobs({"experiment=a": [0.8, 0.9]})
    assert seed_comparison(one, jobs1, ["test_auroc"]) is None
