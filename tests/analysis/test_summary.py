"""Multi-seed summaries against numpy/scipy, and grouping of runs into arms."""

from __future__ import annotations

import math
import warnings

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
    fmt,
    match_metrics,
    short_arm_names,
    summarize_arm,
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
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # nothing to average: NaN, without a mean-of-empty warning
        none = summarize_metric([])
        all_nan = summarize_metric([float("nan")] * 3)
    assert all_nan["n"] == 0 and math.isnan(all_nan["mean"]) and math.isnan(all_nan["ci_high"])
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


# ---- edges and defaults (issue 27: mutation testing) ----


def test_group_runs_passes_the_ignored_keys_on():
    records = [{"overrides": ["experiment=a", "cpu_threads=1", "seed=1"]}, {"overrides": ["experiment=a", "cpu_threads=2", "seed=2"]}]
    assert list(group_runs(records, ignore=("seed", "cpu_threads"))) == ["experiment=a"]
    assert list(group_runs(records)) == ["cpu_threads=1 experiment=a", "cpu_threads=2 experiment=a"]


def test_match_metrics_messages_name_the_setting_and_eight_examples():
    names = [f"m{i}" for i in range(10)]
    with pytest.raises(ValueError) as err:
        match_metrics(names, ["x*"])
    assert str(err.value) == f"metrics: 'x*' matches no metric of the sweep (e.g. {names[:8]})"
    with pytest.raises(ValueError, match=r"^plot_metrics: 'x' matches no metric"):
        plot_metrics(names, ["x"])


def test_plot_metrics_shows_twelve_panels_by_default():
    names = [f"test_m{i}" for i in range(14)]
    assert plot_metrics(names) == names[:12]
    assert plot_metrics(names, ["test_*"]) == names[:12]


def test_summarize_arm_pools_each_metric_over_the_records():
    records = [{"metrics": {"seed": 1, "a": 0.2, "b": 1.0}}, {"metrics": None}, {"metrics": {"seed": 2, "a": 0.4}},
               {"metrics": {"a": 0.3, "b": None}}, {}]
    out = summarize_arm(records)
    assert set(out) == {"a", "b"}
    assert out["a"] == summarize_metric([0.2, 0.4, 0.3])
    low, high = stats.t.interval(0.95, 2, loc=0.3, scale=stats.sem([0.2, 0.4, 0.3]))
    assert (out["a"]["ci_low"], out["a"]["ci_high"]) == (pytest.approx(low, abs=1e-12), pytest.approx(high, abs=1e-12))
    assert out["b"]["n"] == 1 and out["b"]["mean"] == 1.0  # the null is NaN: counted out
    low90, _ = stats.t.interval(0.90, 2, loc=0.3, scale=stats.sem([0.2, 0.4, 0.3]))
    assert summarize_arm(records, confidence=0.90)["a"]["ci_low"] == pytest.approx(low90, abs=1e-12)


def test_metrics_table_defaults_and_arms_without_metrics_or_interval():
    a = {"metrics": {"test_auroc": {"n": 3, "mean": 0.9, "ci_low": 0.85, "ci_high": 0.95}}}  # no ci_half: no interval
    out = metrics_table({"arm=a": a, "arm=x": {}}, [], ["test_auroc"])
    assert out["title"] == "Selected metrics" and list(out["result"]) == ["arm=a"]
    assert out["markdown"].splitlines() == [
        "Mean over completed seeds [Student-t CI] (n = seeds with a value; nan: unresolved or undefined in every seed)",
        "",
        "| arm | test_auroc |",
        "|---|---|",
        "| arm=a | 0.9000 (n=3) |",
    ]


def test_fmt_switches_to_exponents_below_the_digits_and_from_a_million():
    assert [fmt(True), fmt(np.bool_(False)), fmt(3), fmt(np.int64(7)), fmt("x")] == ["True", "False", "3", "7", "x"]
    assert fmt(0.0) == "0.0000" and fmt(np.float32(0.25)) == "0.2500" and fmt(float("nan")) == "nan"
    assert fmt(1e-4) == "0.0001" and fmt(9.99e-5) == "9.990e-05" and fmt(-2e-5) == "-2.000e-05"
    assert fmt(999999.0) == "999999.0000" and fmt(1e6) == "1.000e+06" and fmt(-1e6) == "-1.000e+06"
    assert fmt(0.5, digits=2) == "0.50" and fmt(0.01, digits=2) == "0.01" and fmt(0.009, digits=2) == "9.0e-03"
    assert fmt(float("inf")) == "inf"


def test_markdown_table_digits_and_line_breaks():
    table = markdown_table(["a", "b"], [["x\ny", 0.123456], [2, 1e-5]], digits=2)
    assert table.splitlines()[2:] == ["| x y | 0.12 |", "| 2 | 1.0e-05 |"]


def test_seed_comparison_mdd_verdicts_and_table_by_hand():
    import warnings

    from analysis.power import mdd_welch

    values = {"experiment=a": [0.80, 0.82, 0.79], "experiment=b": [0.90, 0.93, 0.91], "experiment=c": [0.81, 0.78],
              "experiment=d": [0.85]}
    arms, jobs = _arms_and_jobs(values)
    # a job of c without the metric (another metric only): no value, and no None in the variance
    jobs.append({"job_dir": "/sweep/c/extra", "status": "completed", "metrics": {"other": 1.0}})
    arms["experiment=c"]["job_dirs"].append("/sweep/c/extra")
    arms["experiment=e"] = {"job_dirs": ["/sweep/e/0"]}  # an arm with none of the metric: no row
    jobs.append({"job_dir": "/sweep/e/0", "status": "completed", "metrics": {"other": 2.0}})
    arms["experiment=f"] = {}  # no job_dirs at all
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a one-seed arm: inf MDD, without a ddof warning
        out = seed_comparison(arms, jobs, ["test_auroc"], reference="experiment=a", confidence=0.9, power=0.9)
    tests = out["result"]["tests"]
    a = values["experiment=a"]
    assert [(t["a"], t["b"]) for t in tests] == [("experiment=a", "experiment=b"), ("experiment=a", "experiment=c"),
                                                 ("experiment=a", "experiment=d")]
    p = [_welch_by_hand(a, values[f"experiment={k}"], 0.9)[2] for k in "bc"]
    low, high = _welch_by_hand(a, values["experiment=b"], 0.9)[3:]
    assert (tests[0]["ci_low"], tests[0]["ci_high"]) == (pytest.approx(low, abs=1e-12), pytest.approx(high, abs=1e-12))
    # Holm over the two finite p (d has one seed): the smaller times 2, the larger kept monotone
    assert p[0] < p[1] and tests[0]["p_holm"] == pytest.approx(2 * p[0], rel=1e-9)
    assert tests[1]["p_holm"] == pytest.approx(max(2 * p[0], p[1]), rel=1e-9) and math.isnan(tests[2]["p_holm"])
    mdd = [mdd_welch(np.var(a, ddof=1), np.var(values[f"experiment={k}"], ddof=1), 3, len(values[f"experiment={k}"]), 0.1, 0.9)
           for k in "bc"]
    assert [t["mdd"] for t in tests] == [pytest.approx(mdd[0], rel=1e-9), pytest.approx(mdd[1], rel=1e-9), math.inf]
    assert mdd[1] != pytest.approx(mdd_welch(np.var(a, ddof=1), np.var(values["experiment=c"], ddof=1), 3, 2, 0.1, 0.8))
    assert tests[0]["p_holm"] < 0.1 < tests[1]["p_holm"] < 0.9  # one resolved at level 0.1, one not
    assert [t["verdict"] for t in tests] == ["resolved", f"not resolved; MDD {fmt(mdd[1])}", "not resolved; MDD inf"]
    lines = out["markdown"].splitlines()
    assert out["title"] == "Arms compared over seeds (Welch)"
    assert lines[0] == (
        "Welch's t-test over seeds (each seed's value is one draw; no pairing of samples), B − A, with the 90% CI of "
        "the difference; p_holm: Holm-adjusted over the 2 tests of this table; nan: fewer than 2 seeds in an arm, or "
        "no spread; pairs where an arm lacks the metric are left out. mdd: the difference this Welch test detects with "
        "power 0.9 at level 0.1, given each arm's seeds and variance (analysis.power.mdd_welch; inf: fewer than 2 "
        "seeds); verdict: resolved when p_holm < 0.1, else not resolved with that MDD beside it.")
    assert lines[2] == ("| B − A | metric | n B / A | mean B | mean A | diff | 90% CI | t | df (Welch) | p | p_holm | "
                        "mdd | verdict |")
    t = tests[2]
    assert lines[-1] == (f"| experiment=d − experiment=a | test_auroc | 1 / 3 | 0.8500 | {fmt(np.mean(a))} | "
                         f"{fmt(0.85 - np.mean(a))} |  | nan | nan | nan | nan | inf | not resolved; MDD inf |")
    assert t["mean_b"] == 0.85
    assert lines[-3].startswith("| experiment=b − experiment=a | test_auroc | 3 / 3 |")
    assert f"| [{fmt(low)}, {fmt(high)}] |" in lines[-3] and lines[-3].endswith("| resolved |")
    assert out["result"]["reference"] == "experiment=a" and out["result"]["note"] is None


def test_references_and_short_names_at_their_edges():
    from analysis.summary import arm_matches

    # a '+' / '~' prefix is ignored on either side; a key is never matched by its suffix
    assert arm_matches("data.frac=0.1 experiment=a", "+data.frac=0.1")
    assert arm_matches("+data.frac=0.1 experiment=a", "data.frac=0.1")
    assert not arm_matches("Xa=1", "a=1") and not arm_matches("a=1", "   ")
    # the arm with the fewest overrides, even when it does not sort first by name
    assert pick_reference(["a=0 experiment=a", "experiment=a"], "experiment=a") == ("experiment=a", None)
    # one arm shares nothing with another arm: no shared overrides, full name
    assert short_arm_names(["x=1 y=2"]) == ({"x=1 y=2": "x=1 y=2"}, [])
    assert short_arm_names([]) == ({}, [])
    assert short_arm_names(["a=1 b=1 t=1", "a=2 b=2 t=1"]) == ({"a=1 b=1 t=1": "a=1 b=1", "a=2 b=2 t=1": "a=2 b=2"}, ["t=1"])


def test_seed_comparison_of_two_arms_each_of_two_seeds():
    arms, jobs = _arms_and_jobs({"experiment=a": [0.8, 0.9], "experiment=b": [0.6, 0.65]})
    out = seed_comparison(arms, jobs, ["test_auroc"])
    (t,) = out["result"]["tests"]
    a, b = [0.8, 0.9], [0.6, 0.65]
    assert t["p"] == pytest.approx(_welch_by_hand(a, b)[2], rel=1e-9) and t["p_holm"] == t["p"]
    from analysis.power import mdd_welch

    assert t["mdd"] == pytest.approx(mdd_welch(np.var(a, ddof=1), np.var(b, ddof=1), 2, 2, 0.05, 0.8), rel=1e-9)
    assert math.isfinite(t["mdd"])
    assert "Overrides every arm shares" not in out["markdown"]
    shared = {f"{arm} t=1 u=2": info for arm, info in arms.items()}  # two overrides on every arm
    md = seed_comparison(shared, jobs, ["test_auroc"])["markdown"]
    assert "beside it. Overrides every arm shares, left out of the names: `t=1 u=2`.\n\n| B − A |" in md
    assert "| experiment=b − experiment=a | test_auroc | 2 / 2 |" in md


def test_welch_test_small_and_empty_arms_give_nan_without_warnings():
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no mean-of-empty, ddof or precision-loss warning reaches the reader
        empty = welch_test([], [0.5, 0.6])
        one = welch_test([0.3], [0.6, 0.7, 0.8])
        flat = welch_test([0.5, 0.5, 0.5], [0.6, 0.7, 0.8])  # one arm without spread: a valid test
    assert empty["n_a"] == 0 and math.isnan(empty["mean_a"]) and empty["mean_b"] == pytest.approx(0.55)
    assert math.isnan(empty["diff"])
    # one seed in A, three in B: every test entry is NaN (scipy alone would give df = 1)
    assert sorted(one) == sorted(["n_a", "n_b", "mean_a", "mean_b", "diff", "ci_low", "ci_high", "t", "df", "p"])
    assert all(math.isnan(one[k]) for k in ("ci_low", "ci_high", "t", "df", "p"))
    assert math.isnan(welch_test([0.6, 0.7, 0.8], [0.3])["df"])
    assert flat["df"] == pytest.approx(2.0) and flat["p"] == pytest.approx(stats.ttest_1samp([0.6, 0.7, 0.8], 0.5).pvalue)
