"""McNemar, paired bootstrap CIs and safe AUROC against scipy and sklearn."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
from scipy import stats
from sklearn.metrics import balanced_accuracy_score, recall_score, roc_auc_score
from statsmodels.stats.contingency_tables import mcnemar

from analysis.significance import (
    _counts,
    _WeightedAuroc,
    auroc_safe,
    mcnemar_exact,
    paired_bootstrap_ci,
    paired_comparison,
    per_class_accuracy,
    stratified_bootstrap_indices,
)


def two_models(n: int = 300, seed: int = 0, classes: int = 2, gap: float = 0.3):
    """Targets and probabilities of two correlated models, B a bit better than A."""
    rng = np.random.default_rng(seed)
    y = rng.integers(0, classes, n)
    signal = np.eye(classes)[y] * 1.5
    shared = rng.normal(size=(n, classes))
    za = signal + shared + rng.normal(size=(n, classes)) * 0.8
    zb = signal * (1 + gap) + shared + rng.normal(size=(n, classes)) * 0.8
    pa = np.exp(za) / np.exp(za).sum(1, keepdims=True)
    pb = np.exp(zb) / np.exp(zb).sum(1, keepdims=True)
    if classes == 2:
        return y, pa[:, 1], pb[:, 1]
    return y, pa, pb


# --- McNemar ---------------------------------------------------------------------------------------

@pytest.mark.parametrize("seed", range(6))
def test_mcnemar_exact_matches_binomial_test(seed):
    rng = np.random.default_rng(seed)
    n = int(rng.integers(10, 200))
    a = rng.random(n) < 0.7
    b = np.where(rng.random(n) < 0.8, a, ~a)  # mostly agree
    res = mcnemar_exact(a, b)
    assert res["b"] == np.sum(a & ~b) and res["c"] == np.sum(~a & b)
    if res["b"] + res["c"] == 0:
        assert res["p"] == 1.0
    else:
        expected = stats.binomtest(res["b"], res["b"] + res["c"], 0.5).pvalue
        assert res["p"] == pytest.approx(expected, rel=1e-9)


def test_mcnemar_hand_case_and_no_disagreement():
    a = np.array([1] * 10 + [1] * 8 + [0] * 2 + [0] * 5, dtype=bool)
    b = np.array([1] * 10 + [0] * 8 + [1] * 2 + [0] * 5, dtype=bool)
    res = mcnemar_exact(a, b)
    assert (res["b"], res["c"]) == (8, 2)
    assert res["p"] == pytest.approx(2 * sum(stats.binom.pmf(k, 10, 0.5) for k in range(3)))  # 0.109375
    # never disagree: p = 1 (the chi-square version with correction would say p = 0)
    same = np.array([True, False, True])
    assert mcnemar_exact(same, same) == {"b": 0, "c": 0, "p": 1.0, "n": 3}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        assert mcnemar([[2, 0], [0, 1]], exact=False, correction=True).pvalue == 0.0  # the trap


# --- AUROC and per-class accuracy ------------------------------------------------------------------

def test_auroc_safe_matches_sklearn_and_is_nan_for_one_class():
    y, pa, _ = two_models(200, 1)
    assert auroc_safe(y, pa) == pytest.approx(roc_auc_score(y, pa))
    y3, P, _ = two_models(300, 2, classes=3)
    assert auroc_safe(y3, P) == pytest.approx(roc_auc_score(y3, P, multi_class="ovr", labels=[0, 1, 2]))
    with pytest.warns(RuntimeWarning, match="single class"):
        value = auroc_safe(np.ones(10), np.linspace(0, 1, 10))
    assert np.isnan(value)  # never 0.0
    with pytest.warns(RuntimeWarning):
        assert np.isnan(auroc_safe(np.array([0, 1, 1, 0]), np.full((4, 3), 1 / 3)))


def test_per_class_accuracy_matches_sklearn_recall():
    rng = np.random.default_rng(4)
    y, p = rng.integers(0, 4, 200), rng.integers(0, 4, 200)
    ours = per_class_accuracy(y, p, 5)
    np.testing.assert_allclose([ours[k] for k in range(4)], recall_score(y, p, average=None, labels=range(4)))
    assert np.isnan(ours[4])


# --- bootstrap -------------------------------------------------------------------------------------

def test_stratified_indices_never_lose_a_class():
    y = np.array([0] * 47 + [1] * 2 + [2] * 1)
    idx = stratified_bootstrap_indices(y, 2000, np.random.default_rng(0))
    counts = np.stack([np.bincount(y[row], minlength=3) for row in idx])
    assert (counts == [47, 2, 1]).all()
    plain = stratified_bootstrap_indices(y, 2000, np.random.default_rng(0), stratify=False)
    assert (np.stack([np.bincount(y[row], minlength=3) for row in plain])[:, 2] == 0).any()


def test_stratified_auroc_ci_always_defined_on_rare_class():
    rng = np.random.default_rng(0)
    y = np.array([1] * 3 + [0] * 60)
    pa, pb = rng.random(63), rng.random(63)
    res = paired_bootstrap_ci(y, pa, pb, "auroc", n_boot=2000)
    assert res["n_valid"] == 2000
    with pytest.warns(RuntimeWarning, match="undefined"):
        res = paired_bootstrap_ci(y, pa, pb, "auroc", n_boot=2000, stratify=False)
    assert res["n_valid"] < 2000


def test_weighted_auroc_equals_sklearn_on_resamples_with_ties():
    rng = np.random.default_rng(5)
    y = rng.integers(0, 2, 150)
    s = np.round(rng.random(150), 1)  # many ties
    idx = stratified_bootstrap_indices(y, 40, rng)
    got = _WeightedAuroc(y, s)(_counts(idx, 150))
    np.testing.assert_allclose(got, [roc_auc_score(y[i], s[i]) for i in idx], atol=1e-12)
    y3, P, _ = two_models(150, 6, classes=3)
    idx = stratified_bootstrap_indices(y3, 20, rng)
    got = _WeightedAuroc(y3, P)(_counts(idx, 150))
    np.testing.assert_allclose(got, [roc_auc_score(y3[i], P[i], multi_class="ovr", labels=[0, 1, 2]) for i in idx], atol=1e-12)


def test_point_values_match_sklearn():
    y, pa, pb = two_models(250, 3)
    acc = paired_bootstrap_ci(y, pa, pb, "accuracy", n_boot=50)
    assert acc["a"] == pytest.approx(np.mean((pa >= 0.5) == y))
    assert acc["diff"] == pytest.approx(acc["b"] - acc["a"])
    bal = paired_bootstrap_ci(y, pa, pb, "balanced_accuracy", n_boot=50)
    assert bal["b"] == pytest.approx(balanced_accuracy_score(y, (pb >= 0.5).astype(int)))
    auc = paired_bootstrap_ci(y, pa, pb, "auroc", n_boot=50)
    assert auc["a"] == pytest.approx(roc_auc_score(y, pa)) and auc["b"] == pytest.approx(roc_auc_score(y, pb))
    y3, Pa, Pb = two_models(250, 3, classes=3)
    auc3 = paired_bootstrap_ci(y3, Pa, Pb, "auroc", n_boot=50)
    assert auc3["a"] == pytest.approx(roc_auc_score(y3, Pa, multi_class="ovr", labels=[0, 1, 2]))
    bal3 = paired_bootstrap_ci(y3, Pa, Pb, "balanced_accuracy", n_boot=50)
    assert bal3["a"] == pytest.approx(balanced_accuracy_score(y3, Pa.argmax(1)))


def _scipy_ci(y, pa, pb, statistic, vectorized, n=4000):
    res = stats.bootstrap((y, pa, pb), statistic, paired=True, vectorized=vectorized, n_resamples=n,
                          method="percentile", confidence_level=0.95, random_state=np.random.default_rng(1))
    return res.confidence_interval.low, res.confidence_interval.high


@pytest.mark.parametrize("stratify", [False, True])
def test_accuracy_ci_matches_scipy_bootstrap(stratify):
    y, pa, pb = two_models(400, 8)

    def diff(yy, a, b, axis=-1):
        return np.mean((b >= 0.5) == yy, axis=axis) - np.mean((a >= 0.5) == yy, axis=axis)

    low, high = _scipy_ci(y, pa, pb, diff, vectorized=True, n=8000)
    res = paired_bootstrap_ci(y, pa, pb, "accuracy", n_boot=8000, stratify=stratify)
    # Monte Carlo error of a 2.5% percentile with 8000 resamples is ~0.002 here
    assert res["ci_low"] == pytest.approx(low, abs=0.008)
    assert res["ci_high"] == pytest.approx(high, abs=0.008)
    assert res["diff"] == pytest.approx(diff(y, pa, pb))


def test_auroc_ci_matches_scipy_bootstrap():
    y, pa, pb = two_models(200, 9)

    def diff(yy, a, b):
        if np.unique(yy).size < 2:
            return np.nan
        return roc_auc_score(yy, b) - roc_auc_score(yy, a)

    low, high = _scipy_ci(y, pa, pb, diff, vectorized=False, n=800)
    res = paired_bootstrap_ci(y, pa, pb, "auroc", n_boot=4000, stratify=False)
    # the CI is ~0.1 wide; the Monte Carlo error of scipy's 800-resample percentiles is ~0.003
    assert res["ci_low"] == pytest.approx(low, abs=0.012)
    assert res["ci_high"] == pytest.approx(high, abs=0.012)


def test_count_path_agrees_with_index_path():
    """The multinomial shortcut for accuracy gives the same CI as resampling indices (a callable)."""
    y, pa, pb = two_models(300, 10, classes=3)

    def acc(yy, p):
        return float(np.mean(p.argmax(1) == yy))

    def bal(yy, p):
        hit = p.argmax(1) == yy
        return float(np.mean([hit[yy == k].mean() for k in np.unique(yy)]))

    for name, fn in (("accuracy", acc), ("balanced_accuracy", bal)):
        fast = paired_bootstrap_ci(y, pa, pb, name, n_boot=3000, seed=1)
        slow = paired_bootstrap_ci(y, pa, pb, fn, n_boot=3000, seed=2)
        assert fast["diff"] == pytest.approx(slow["diff"])
        assert fast["ci_low"] == pytest.approx(slow["ci_low"], abs=0.01)
        assert fast["ci_high"] == pytest.approx(slow["ci_high"], abs=0.01)


def test_identical_models_give_zero_interval_and_seed_is_reproducible():
    y, pa, _ = two_models(100, 11)
    res = paired_bootstrap_ci(y, pa, pa, "auroc", n_boot=300)
    assert res["diff"] == 0 and res["ci_low"] == 0 and res["ci_high"] == 0
    y, pa, pb = two_models(100, 12)
    assert paired_bootstrap_ci(y, pa, pb, "auroc", n_boot=300, seed=3) == paired_bootstrap_ci(y, pa, pb, "auroc", n_boot=300, seed=3)


def test_bootstrap_rejects_logits_and_unknown_metric():
    y = np.array([0, 1, 0, 1])
    with pytest.raises(ValueError, match="probabilities"):
        paired_bootstrap_ci(y, np.array([-2.0, 3, 1, 0]), np.zeros(4), "accuracy", n_boot=10)
    with pytest.raises(ValueError, match="unknown metric"):
        paired_bootstrap_ci(y, np.zeros(4), np.zeros(4), "f1", n_boot=10)


# --- paired_comparison: one pairing policy for arm B against arm A -----------------------------------

IDS = np.array([f"s{i}" for i in range(6)])
TARGETS = np.array([0, 0, 0, 1, 1, 1])
# A predicts [0, 0, 1, 1, 1, 0]: right on s0, s1, s3, s4; B predicts [1, 1, 0, 1, 1, 0]: right on s2, s3, s4
P_A = np.array([0.2, 0.3, 0.7, 0.8, 0.9, 0.4])
P_B = np.array([0.6, 0.7, 0.2, 0.8, 0.9, 0.4])


def test_paired_comparison_matches_a_hand_worked_case():
    comp = paired_comparison(IDS, TARGETS, P_A, IDS, TARGETS, P_B, metrics=("accuracy", "balanced_accuracy"), n_boot=2000)
    # b = A right, B wrong: s0, s1; c = A wrong, B right: s2. Exact McNemar: 2 * P(X <= 1 | n=3, 1/2) = 2 * 4/8 = 1
    assert (comp["mcnemar"]["b"], comp["mcnemar"]["c"]) == (2, 1)
    assert comp["mcnemar"]["p"] == pytest.approx(1.0)
    acc = comp["bootstrap"]["accuracy"]
    assert (acc["a"], acc["b"], acc["diff"]) == pytest.approx((4 / 6, 3 / 6, -1 / 6))
    # balanced: A (2/3 + 2/3) / 2, B (1/3 + 2/3) / 2
    bal = comp["bootstrap"]["balanced_accuracy"]
    assert (bal["a"], bal["b"]) == pytest.approx((2 / 3, 1 / 2))
    assert acc["ci_low"] <= acc["diff"] <= acc["ci_high"]
    assert comp["n"] == 6 and comp["correct_a"].tolist() == [True, True, False, True, True, False]


def test_paired_comparison_mcnemar_extreme_case():
    # B wrong wherever A is right on s0, s1, s3 and never right where A is wrong: b = 3, c = 0, p = 2 / 2**3
    p_b = np.array([0.9, 0.9, 0.7, 0.1, 0.9, 0.4])
    comp = paired_comparison(IDS, TARGETS, P_A, IDS, TARGETS, p_b, n_boot=500)
    assert (comp["mcnemar"]["b"], comp["mcnemar"]["c"], comp["mcnemar"]["p"]) == (3, 0, pytest.approx(0.25))
    assert comp["bootstrap"]["accuracy"]["ci_high"] <= 0  # no resample can favour B


def test_paired_comparison_does_not_depend_on_row_order():
    rng = np.random.default_rng(3)
    n = 200
    ids = np.array([f"id{i:03d}" for i in range(n)])
    targets = rng.integers(0, 3, n)
    pa, pb = rng.dirichlet(np.ones(3), n), rng.dirichlet(np.ones(3), n)
    metrics = ("accuracy", "balanced_accuracy", "auroc")
    ref = paired_comparison(ids, targets, pa, ids, targets, pb, metrics=metrics, n_boot=300)
    perm = rng.permutation(n)
    shuffled_b = paired_comparison(ids, targets, pa, ids[perm], targets[perm], pb[perm], metrics=metrics, n_boot=300)
    assert shuffled_b["mcnemar"] == ref["mcnemar"] and shuffled_b["bootstrap"] == ref["bootstrap"]
    # A shuffled too: the same pairs, so the same McNemar table and the same (count-based) accuracy CIs
    both = paired_comparison(ids[perm], targets[perm], pa[perm], ids[perm[::-1]], targets[perm[::-1]], pb[perm[::-1]],
                             metrics=("accuracy", "balanced_accuracy"), n_boot=300)
    assert both["mcnemar"] == ref["mcnemar"]
    for m in ("accuracy", "balanced_accuracy"):
        assert both["bootstrap"][m] == ref["bootstrap"][m]


def test_paired_comparison_refuses_different_samples_or_targets():
    with pytest.raises(ValueError) as err:
        paired_comparison(IDS, TARGETS, P_A, np.array(["s0", "s1", "s2", "s3", "x1", "x2"]), TARGETS, P_B, names=("runA", "runB"))
    msg = str(err.value)
    assert "runA (a) and runB (b) hold different samples" in msg
    assert "2 only in a (e.g. ['s4', 's5'])" in msg and "2 only in b (e.g. ['x1', 'x2'])" in msg
    flipped = TARGETS.copy()
    flipped[[1, 4]] = 1 - flipped[[1, 4]]
    with pytest.raises(ValueError, match=r"runA and runB disagree on 'target' for 2 sample\(s\), e.g. \['s1', 's4'\]"):
        paired_comparison(IDS, TARGETS, P_A, IDS, flipped, P_B, names=("runA", "runB"))
    with pytest.raises(ValueError, match="B: sample_id is not unique"):
        paired_comparison(IDS, TARGETS, P_A, np.array(["s0"] * 6), TARGETS, P_B)


def test_paired_comparison_of_seed_columns():
    # correctness (N, S): one McNemar per seed column, bootstrap of the seed-averaged accuracy
    ca = np.array([[1, 1], [1, 0], [0, 0], [1, 1]], bool)
    cb = np.array([[1, 1], [0, 0], [1, 1], [1, 0]], bool)
    ids, targets = np.arange(4), np.array([0, 1, 0, 1])
    comp = paired_comparison(ids, targets, ca, ids, targets, cb, correct=True, n_boot=200)
    assert [(m["b"], m["c"]) for m in comp["mcnemar"]] == [(1, 1), (1, 1)]
    assert comp["bootstrap"]["accuracy"]["diff"] == pytest.approx(5 / 8 - 5 / 8)
