"""Lens-search metrics against sklearn's ROC and precision-recall curves and hand-worked cases."""

from __future__ import annotations

import math

import numpy as np
import pytest
from sklearn.metrics import precision_recall_curve, roc_auc_score, roc_curve

from analysis.lens.search_metrics import (
    purity,
    purity_at_completeness,
    rate_label,
    search_metrics,
    threshold_at_fpr,
    tpr0,
    tpr10,
    tpr_at_fp_count,
    tpr_at_fpr,
)


def _data(n_pos: int, n_neg: int, seed: int = 0, decimals: int | None = 1):
    """Overlapping classes; rounding makes many ties between and within classes."""
    rng = np.random.default_rng(seed)
    scores = np.concatenate([rng.normal(1.5, 1, n_pos), rng.normal(0, 1, n_neg)])
    if decimals is not None:
        scores = np.round(scores, decimals)
    return np.r_[np.ones(n_pos, int), np.zeros(n_neg, int)], scores


def _sklearn_tpr_with_fp_at_most(y, s, max_fp):
    fpr, tpr, _ = roc_curve(y, s, drop_intermediate=False)
    fps = np.rint(fpr * np.sum(y == 0))
    return tpr[fps <= max_fp].max()


@pytest.mark.parametrize("seed, decimals", [(0, 1), (1, 2), (2, None)])
def test_tpr_at_fp_count_matches_sklearn_roc_curve(seed, decimals):
    y, s = _data(300, 2000, seed, decimals)
    for k in (0, 1, 9, 20):
        assert tpr_at_fp_count(y, s, k) == pytest.approx(_sklearn_tpr_with_fp_at_most(y, s, k), abs=1e-12)
    assert tpr0(y, s) == tpr_at_fp_count(y, s, 0) and tpr10(y, s) == tpr_at_fp_count(y, s, 9)
    for f in (1e-2, 1e-3):
        fpr, tpr, _ = roc_curve(y, s, drop_intermediate=False)
        assert tpr_at_fpr(y, s, f) == pytest.approx(tpr[fpr <= f + 1e-12].max(), abs=1e-12)


def test_hand_worked_ties_count_against_the_finder():
    # positives 0.9, 0.8, 0.5; negatives 0.8, 0.3. The positive tied with the top negative cannot be
    # flagged without flagging that negative too: TPR0 = 1/3. One false positive allowed: all three.
    y = np.array([1, 1, 1, 0, 0])
    s = np.array([0.9, 0.8, 0.5, 0.8, 0.3])
    assert tpr0(y, s) == pytest.approx(1 / 3)
    assert tpr_at_fp_count(y, s, 1) == 1.0


def test_no_false_positives_at_all():
    y = np.array([1, 1, 0, 0] * 5)
    s = np.array([0.9, 0.8, 0.1, 0.2] * 5)
    assert tpr0(y, s) == 1.0 and tpr10(y, s) == 1.0
    assert roc_auc_score(y, s) == 1.0


def test_too_few_negatives_is_nan_with_a_warning_never_a_guess():
    y, s = _data(50, 999, seed=3)
    with pytest.warns(RuntimeWarning, match="FPR=0.001 unresolved: 999 negatives"):
        assert math.isnan(tpr_at_fpr(y, s, 1e-3))
    y, s = _data(50, 1000, seed=3)  # exactly 1/FPR negatives: one false positive allowed
    assert tpr_at_fpr(y, s, 1e-3) == tpr_at_fp_count(y, s, 1)
    with pytest.warns(RuntimeWarning, match="1e-04|0.0001"):
        assert math.isnan(tpr_at_fpr(y, s, 1e-4))
    # TPR10 needs ten negatives; with exactly ten the threshold is the lowest negative
    y = np.r_[np.ones(3, int), np.zeros(9, int)]
    s = np.r_[[5.0, 0.5, -1.0], np.arange(9.0)]
    with pytest.warns(RuntimeWarning, match="needs at least 10"):
        assert math.isnan(tpr10(y, s))
    y, s = np.r_[y, 0], np.r_[s, 0.0]
    assert tpr10(y, s) == pytest.approx(2 / 3)  # 5.0 and 0.5 are above the lowest negative, 0.0
    with pytest.warns(RuntimeWarning, match="no positives"):
        assert math.isnan(tpr_at_fpr(np.zeros(2000, int), np.arange(2000.0), 1e-3))


def test_threshold_at_fpr_lets_at_most_that_many_negatives_through():
    neg = np.arange(1000.0)
    t = threshold_at_fpr(neg, 1e-2)  # 10 false positives allowed: the 11th highest negative
    assert t == 989.0 and np.sum(neg > t) == 10
    with pytest.warns(RuntimeWarning):
        assert math.isnan(threshold_at_fpr(np.arange(50.0), 1e-2))


def test_purity_hand_worked():
    y = np.array([1, 1, 1, 1, 0, 0, 0, 0])
    s = np.array([0.9, 0.8, 0.7, 0.6, 0.75, 0.5, 0.4, 0.1])
    with pytest.warns(RuntimeWarning, match="no false positive"):
        rows = purity_at_completeness(y, s, [0.5, 0.75], [0.5, 1e-3])
    half = [r for r in rows if r["completeness"] == 0.5]
    assert all(math.isnan(r["purity"]) and r["n_fp"] == 0 for r in half)  # FPR 0 of 4 is unresolved, not purity 1
    r = next(r for r in rows if r["completeness"] == 0.75 and r["prevalence"] == 0.5)
    assert (r["tpr"], r["fpr"], r["n_fp"]) == (0.75, 0.25, 1)
    assert r["purity"] == pytest.approx(0.75)  # 0.75 * 0.5 / (0.75 * 0.5 + 0.25 * 0.5)
    r = next(r for r in rows if r["completeness"] == 0.75 and r["prevalence"] == 1e-3)
    assert r["purity"] == pytest.approx(0.75e-3 / (0.75e-3 + 0.25 * 0.999))
    assert purity(0.5, 0.0, 1e-3) != purity(0.5, 0.0, 1e-3)  # NaN


@pytest.mark.parametrize("c", [0.3, 0.5, 0.8, 0.9, 1.0])
def test_purity_at_the_sample_prevalence_is_sklearn_precision(c):
    y, s = _data(400, 1600, seed=4, decimals=2)
    prevalence = y.mean()
    (row,) = purity_at_completeness(y, s, [c], [prevalence])
    precision, recall, _ = precision_recall_curve(y, s, drop_intermediate=False)
    # the highest threshold whose recall reaches c (sklearn lists recall in decreasing order)
    i = np.flatnonzero(recall >= c - 1e-12)[-1]
    assert row["tpr"] == pytest.approx(recall[i]) and row["purity"] == pytest.approx(precision[i], abs=1e-12)


def test_purity_bootstrap_matches_a_plain_loop_with_sklearn():
    y, s = _data(60, 240, seed=5, decimals=2)
    n_boot, seed, c, p = 200, 7, 0.8, 1e-3
    (row,) = purity_at_completeness(y, s, [c], [p], n_boot=n_boot, seed=seed)
    pos, neg = s[y == 1], s[y == 0]
    rng = np.random.default_rng(seed)
    ip, ineg = rng.integers(0, pos.size, (n_boot, pos.size)), rng.integers(0, neg.size, (n_boot, neg.size))
    values = []
    for b in range(n_boot):
        yy = np.r_[np.ones(pos.size, int), np.zeros(neg.size, int)]
        fpr, tpr, _ = roc_curve(yy, np.r_[pos[ip[b]], neg[ineg[b]]], drop_intermediate=False)
        i = np.flatnonzero(tpr >= c - 1e-12)[0]
        values.append(tpr[i] * p / (tpr[i] * p + fpr[i] * (1 - p)) if fpr[i] > 0 else np.inf)
    assert row["n_boot_valid"] == int(np.isfinite(values).sum())
    ordered = np.sort(values)  # percentile bounds without interpolation: the ceil(q * B)-th value
    low, high = ordered[int(np.ceil(0.025 * n_boot)) - 1], ordered[int(np.ceil(0.975 * n_boot)) - 1]
    assert (row["ci_low"], row["ci_high"]) == (pytest.approx(low), pytest.approx(high))
    assert row["ci_low"] <= row["purity"] <= row["ci_high"]


def test_purity_ci_when_some_resamples_have_no_false_positive():
    # a finder good enough that some resamples of its negatives hold no false positive at c = 0.5
    y = np.r_[np.ones(20, int), np.zeros(40, int)]
    s = np.r_[np.linspace(1.0, 2.0, 20), np.linspace(-2.0, 0.0, 39), 1.6]  # one negative among the top positives
    (row,) = purity_at_completeness(y, s, [0.5], [1e-3], n_boot=400, seed=1)
    assert row["n_fp"] == 1 and 0 < row["n_boot_valid"] < 400
    assert not math.isnan(row["ci_low"])
    assert math.isnan(row["ci_high"])  # the upper bound falls among unresolved resamples: not a number to quote
    with pytest.warns(RuntimeWarning, match="no false positive"):
        (row,) = purity_at_completeness(y[:-1], s[:-1], [0.5], [1e-3], n_boot=50, seed=1)
    assert math.isnan(row["purity"]) and math.isnan(row["ci_low"]) and math.isnan(row["ci_high"])


def test_search_metrics_keys_and_values():
    y, s = _data(200, 2000, seed=6, decimals=None)
    with pytest.warns(RuntimeWarning, match="FPR=0.0001 unresolved"):
        m = search_metrics(y, s, fprs=[1e-2, 1e-3, 1e-4], completeness=[0.5, 0.9], prevalences=[1e-3, 1e-4], n_boot=50)
    assert m["auroc"] == pytest.approx(roc_auc_score(y, s))
    assert m["tpr0"] == tpr0(y, s) and m["tpr_at_fpr_1e-2"] == tpr_at_fpr(y, s, 1e-2)
    assert math.isnan(m["tpr_at_fpr_1e-4"])  # 2000 negatives cannot resolve 1e-4
    assert {"purity_at_c0.5_prev_1e-3", "purity_at_c0.9_prev_1e-4_ci_low", "purity_at_c0.9_prev_1e-4_ci_high"} <= set(m)
    assert (m["n_pos"], m["n_neg"]) == (200, 2000)
    assert [rate_label(x) for x in (1e-2, 1e-3, 1e-4, 0.5, 0.9, 2.5e-3)] == ["1e-2", "1e-3", "1e-4", "0.5", "0.9", "2.5e-3"]


def test_bad_input_is_refused():
    with pytest.raises(ValueError, match="same length"):
        tpr0(np.array([0, 1]), np.array([0.1]))
    with pytest.raises(ValueError, match="0/1"):
        tpr0(np.array([0, 2]), np.array([0.1, 0.2]))
    with pytest.raises(ValueError, match="finite"):
        tpr0(np.array([0, 1]), np.array([0.1, np.nan]))
    with pytest.raises(ValueError, match="completeness"):
        purity_at_completeness(np.array([0, 1]), np.array([0.1, 0.2]), [1.5], [1e-3])


# --- empty classes, ties at the threshold and the interval's percentiles (issue 27) ------------------------

def test_empty_class_gives_nan_purity_rows_with_their_counts():
    for y, n_pos, n_neg in ((np.zeros(5, int), 0, 5), (np.ones(3, int), 3, 0)):
        with pytest.warns(RuntimeWarning, match=f"purity undefined: {n_pos} positives, {n_neg} negatives"):
            rows = purity_at_completeness(y, np.linspace(0, 1, y.size), [0.5, 0.9], [1e-3], n_boot=20)
        assert [(r["completeness"], r["prevalence"]) for r in rows] == [(0.5, 1e-3), (0.9, 1e-3)]
        for r in rows:
            assert all(math.isnan(r[k]) for k in ("purity", "ci_low", "ci_high", "tpr", "fpr"))
            assert (r["n_pos"], r["n_neg"], r["n_fp"], r["n_boot_valid"]) == (n_pos, n_neg, 0, 0)
    for c in (0.0, 1.0 + 1e-9):
        with pytest.raises(ValueError, match="completeness"):
            purity_at_completeness(np.array([0, 1]), np.array([0.1, 0.2]), [c], [1e-3])


def test_operating_point_with_ties_on_the_completeness_threshold_hand_worked():
    # positives 0.9, 0.7, 0.7, 0.2; negatives 0.1, 0.3, 0.7, 0.8. c = 0.5: the 2nd best positive (0.7) sets
    # t = 0.7; flagged score >= 0.7: positives 0.9, 0.7, 0.7 (TPR 3/4, ties included), negatives 0.7, 0.8
    y = np.array([1, 1, 1, 1, 0, 0, 0, 0])
    s = np.array([0.9, 0.7, 0.7, 0.2, 0.1, 0.3, 0.7, 0.8])
    rows = purity_at_completeness(y, s, [0.5, 1.0], [0.5, 0.1])
    assert (rows[0]["tpr"], rows[0]["fpr"], rows[0]["n_fp"]) == (0.75, 0.5, 2)
    assert rows[0]["purity"] == pytest.approx(0.75 * 0.5 / (0.75 * 0.5 + 0.5 * 0.5))
    assert rows[1]["purity"] == pytest.approx(0.75 * 0.1 / (0.75 * 0.1 + 0.5 * 0.9))
    # c = 1: t = 0.2 (the worst positive); negatives >= 0.2: 0.3, 0.7, 0.8
    assert (rows[2]["tpr"], rows[2]["fpr"], rows[2]["n_fp"]) == (1.0, 0.75, 3)
    # c = 0.25 * 4 = 1 exactly: the best positive alone (0.9), no negative above it -> unresolved
    with pytest.warns(RuntimeWarning, match=r"no false positive among 4 negatives"):
        (row,) = purity_at_completeness(y, s, [0.25], [0.5])
    assert (row["tpr"], row["n_fp"]) == (0.25, 0) and math.isnan(row["purity"])


def test_score_exactly_at_the_fpr_threshold_is_not_flagged():
    # 10 negatives 0.0..0.9: FPR 0.1 lets one through, threshold = 2nd highest negative = 0.8
    neg = np.arange(10) / 10
    assert threshold_at_fpr(neg, 0.1) == 0.8 and threshold_at_fpr(neg, 0.2) == 0.7
    y = np.r_[np.ones(4, int), np.zeros(10, int)]
    s = np.r_[0.8, 0.81, 0.9, 0.5, neg]
    assert tpr_at_fpr(y, s, 0.1) == 0.5  # 0.8 ties the threshold: not counted
    assert tpr_at_fp_count(y, s, 1) == 0.5 and tpr0(y, s) == 0.0  # 0.9 ties the top negative
    from analysis.lens.search_metrics import allowed_fp, threshold_for_fp

    assert allowed_fp(1000, 1e-3) == 1 and allowed_fp(999, 1e-3) == 0 and allowed_fp(10, 0.25) == 2
    for bad in (0.0, 1.0, -0.1):
        with pytest.raises(ValueError, match="FPR must be in"):
            allowed_fp(10, bad)
    with pytest.raises(ValueError, match="max_fp"):
        threshold_for_fp(neg, -1)
    assert math.isnan(threshold_for_fp(neg, 10)) and threshold_for_fp(neg, 9) == 0.0
    with pytest.warns(RuntimeWarning, match=r"FPR=0.05 unresolved: 10 negatives \(needs at least 20\)"):
        assert math.isnan(tpr_at_fpr(y, s, 0.05))
    with pytest.warns(RuntimeWarning, match="no positives"):
        assert math.isnan(tpr_at_fpr(np.zeros(10, int), neg, 0.1))
    with pytest.warns(RuntimeWarning, match=r"at most 9 false positive\(s\) undefined: 4 positives, 9 negatives \(needs at least 10\)"):
        assert math.isnan(tpr10(y[:-1], s[:-1]))


def test_purity_ci_percentiles_follow_alpha():
    y, s = _data(40, 200, seed=9, decimals=2)
    wide = purity_at_completeness(y, s, [0.5], [1e-2], n_boot=300, seed=3, alpha=0.05)[0]
    narrow = purity_at_completeness(y, s, [0.5], [1e-2], n_boot=300, seed=3, alpha=0.5)[0]
    assert wide["n_boot_valid"] == narrow["n_boot_valid"] > 290
    # the same draws: the 50% interval is inside the 95% one, strictly on both sides here
    assert wide["ci_low"] < narrow["ci_low"] < narrow["ci_high"] < wide["ci_high"]
    from analysis.lens.search_metrics import _purity_ci

    values = np.array([0.1, 0.2, 0.3, 0.4, np.nan])  # the unresolved one ranks above all
    assert _purity_ci(values, 0.4) == (0.1, 0.4, 4)  # inverted cdf: the ceil(0.2 * 5)-th and ceil(0.8 * 5)-th
    low, high, n = _purity_ci(values, 0.2)
    assert (low, n) == (0.1, 4) and math.isnan(high)
    both = purity(np.array([0.5, 0.5]), np.array([0.0, 0.25]), 0.5)
    assert math.isnan(both[0]) and both[1] == pytest.approx(2 / 3)
    assert purity(0.5, 0.25, 0.2) == pytest.approx(0.1 / (0.1 + 0.2))


# --- survivors of a mutation run (issue 27) ----------------------------------------------------------------

def test_one_positive_is_enough_for_a_tpr():
    y = np.r_[1, np.zeros(20, int)]
    s = np.r_[0.95, np.arange(20) / 20]  # negatives 0.0 .. 0.95
    assert tpr0(y, s) == 0.0  # ties the top negative
    assert tpr_at_fp_count(y, s, 1) == 1.0 and tpr10(y, s) == 1.0


def test_rate_label_of_a_tenth_and_the_search_metrics_keys():
    assert [rate_label(x) for x in (0.1, 0.099, 1e-1 * 3, 1.0)] == ["0.1", "9.9e-2", "0.3", "1"]
    y, s = _data(100, 1200, seed=10, decimals=2)
    m = search_metrics(y, s, fprs=[1e-2], completeness=[0.5, 0.9], prevalences=[1e-3])
    assert m["tpr10"] == tpr10(y, s)
    # without n_boot no interval: the CI keys are NaN, the values those of purity_at_completeness
    rows = purity_at_completeness(y, s, [0.5, 0.9], [1e-3])
    for r in rows:
        key = f"purity_at_c{rate_label(r['completeness'])}_prev_1e-3"
        assert m[key] == r["purity"] and not math.isnan(r["purity"])
        assert math.isnan(m[f"{key}_ci_low"]) and math.isnan(m[f"{key}_ci_high"])
        assert math.isnan(r["ci_low"]) and r["n_boot_valid"] == 0


def test_search_metrics_passes_n_boot_seed_and_alpha_through_and_defaults_to_seed_0():
    y, s = _data(60, 400, seed=11, decimals=2)
    args = dict(fprs=[1e-2], completeness=[0.5], prevalences=[1e-2])
    m = search_metrics(y, s, n_boot=200, alpha=0.2, **args)
    (r,) = purity_at_completeness(y, s, [0.5], [1e-2], n_boot=200, seed=0, alpha=0.2)
    assert (m["purity_at_c0.5_prev_1e-2_ci_low"], m["purity_at_c0.5_prev_1e-2_ci_high"]) == (r["ci_low"], r["ci_high"])
    assert m == search_metrics(y, s, n_boot=200, seed=0, alpha=0.2, **args)
    # the seed and alpha really move the interval here, so the comparisons above can fail
    (r1,) = purity_at_completeness(y, s, [0.5], [1e-2], n_boot=200, seed=1, alpha=0.2)
    assert r1["ci_low"] != r["ci_low"]
    d = search_metrics(y, s, n_boot=200, **args)  # alpha 0.05 by default
    (r05,) = purity_at_completeness(y, s, [0.5], [1e-2], n_boot=200, seed=0, alpha=0.05)
    assert d["purity_at_c0.5_prev_1e-2_ci_low"] == r05["ci_low"] != r["ci_low"]
    assert purity_at_completeness(y, s, [0.5], [1e-2], n_boot=200)[0] == r05  # seed 0 by default


def test_purity_is_a_plain_float_for_scalars_and_warns_about_nothing():
    import warnings

    assert type(purity(0.5, 0.25, 0.2)) is float
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # 0 / 0 at TPR = FPR = 0 is masked, not warned about
        assert math.isnan(purity(0.0, 0.0, 1e-3))
        out = purity(np.array([0.0, 0.5]), np.array([0.0, 0.5]), 0.5)
    assert math.isnan(out[0]) and out[1] == 0.5


def test_unresolved_rate_warnings_say_so_and_point_at_the_caller():
    with pytest.warns(RuntimeWarning) as record:
        tpr_at_fpr(np.zeros(10, int), np.arange(10.0), 0.1)
        threshold_at_fpr(np.arange(10.0), 0.05)
        tpr_at_fp_count(np.r_[1, np.zeros(5, int)], np.arange(6.0), 9)
    assert [str(w.message) for w in record] == [
        "TPR undefined: no positives; reporting NaN",
        "FPR=0.05 unresolved: 10 negatives (needs at least 20); reporting NaN",
        "TPR with at most 9 false positive(s) undefined: 1 positives, 5 negatives (needs at least 10); reporting NaN",
    ]
    for w in record:
        # stacklevel 2: this file, not search_metrics.py (under mutmut a wrapper frame sits between)
        assert w.filename == __file__ or "mutmut" in w.filename


def test_purity_rows_carry_counts_and_one_resample_is_an_interval():
    y, s = _data(30, 200, seed=12, decimals=2)
    (row,) = purity_at_completeness(y, s, [0.8], [1e-2])
    assert (row["n_pos"], row["n_neg"], row["n_boot_valid"]) == (30, 200, 0) and row["n_fp"] > 0
    (one,) = purity_at_completeness(y, s, [0.8], [1e-2], n_boot=1, seed=2)
    # one resample: both bounds are its purity, redrawn here from the same seed
    rng = np.random.default_rng(2)
    pos, neg = s[y == 1], s[y == 0]
    pb, nb = pos[rng.integers(0, 30, (1, 30))][0], neg[rng.integers(0, 200, (1, 200))][0]
    (ref,) = purity_at_completeness(np.r_[np.ones(30, int), np.zeros(200, int)], np.r_[pb, nb], [0.8], [1e-2])
    assert one["n_boot_valid"] == 1 and one["ci_low"] == one["ci_high"] == pytest.approx(ref["purity"], abs=1e-15)


def test_an_unresolved_point_gets_no_interval_even_if_resamples_resolve():
    # positives 0.9, 0.5; negatives 0.6, 0.1. c = 0.5: t = 0.9, no negative above -> unresolved. A resample
    # drawing 0.5 twice has t = 0.5 and a false positive (0.6), but the interval of an unresolved point is NaN.
    y = np.array([1, 1, 0, 0])
    s = np.array([0.9, 0.5, 0.6, 0.1])
    with pytest.warns(RuntimeWarning, match=r"^purity undefined at completeness \[0.5\]: no false positive among 2 negatives") as record:
        (row,) = purity_at_completeness(y, s, [0.5], [0.1], n_boot=200, seed=0)
    assert row["n_fp"] == 0 and row["n_boot_valid"] == 0
    assert math.isnan(row["purity"]) and math.isnan(row["ci_low"]) and math.isnan(row["ci_high"])
    with pytest.warns(RuntimeWarning, match=r"^purity undefined: 0 positives, 2 negatives; reporting NaN$") as empty:
        purity_at_completeness(np.zeros(2, int), s[:2], [0.5], [0.1])
    for w in (record[0], empty[0]):
        # stacklevel 2: this file, not search_metrics.py (under mutmut a wrapper frame sits between)
        assert w.filename == __file__ or "mutmut" in w.filename


def test_targets_other_than_zero_and_one_are_refused_before_any_cast():
    s = np.array([0.9, 0.8, 0.1, 0.2])
    # a soft label 0.7 is not read as a negative (a cast to int first would make it 0 and pass the check)
    with pytest.raises(ValueError, match=r"^targets must be 0/1, got values \[0.0, 0.7, 1.0\]$"):
        tpr0(np.array([0.7, 1, 0, 0]), s)
    assert tpr0(np.array([1.0, 1.0, 0.0, 0.0]), s) == 1.0 and tpr0(np.array([True, True, False, False]), s) == 1.0
    with pytest.raises(ValueError, match=r"got values \[0, 1, 2, 3, 4\]$"):  # five values at most
        tpr0(np.arange(7) % 7, np.zeros(7))
    with pytest.raises(ValueError, match=r"^scores must be finite, got 1 non-finite value\(s\)$"):
        tpr0(np.array([0, 1, 0, 1]), np.array([0.1, np.inf, 0.2, 0.3]))  # 1 non-finite, 3 finite


def test_named_rate_metrics_are_tpr_at_their_fpr_hand_worked():
    """tpr_at_fpr_1e3 / 1e2 (the names evaluate.py's score_sweep takes): 1,000 negatives allow 1 and 10 false positives."""
    from analysis.lens.search_metrics import tpr_at_fpr_1e2, tpr_at_fpr_1e3

    neg = np.arange(1000) / 1000.0  # 0.000 ... 0.999; the 2nd and 11th highest are 0.998 and 0.989
    pos = np.array([0.9995, 0.9985, 0.995, 0.985, 0.5])
    y = np.r_[np.zeros(1000, int), np.ones(5, int)]
    s = np.r_[neg, pos]
    assert tpr_at_fpr_1e3(y, s) == 2 / 5  # above 0.998
    assert tpr_at_fpr_1e2(y, s) == 3 / 5  # above 0.989
