"""McNemar, paired bootstrap CIs and safe AUROC against scipy and sklearn."""

from __future__ import annotations

import math
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
    table = [[np.sum(a & b), np.sum(a & ~b)], [np.sum(~a & b), np.sum(~a & ~b)]]
    assert res["p"] == pytest.approx(mcnemar(table, exact=True).pvalue, rel=1e-9)  # statsmodels, from the full table


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


# The AUROC CI is compared with the same draws (test_auroc_ci_with_several_blocks_equals_the_same_draws_exactly,
# test_unstratified_auroc_ci_equals_the_same_draws_...), to rounding; an AUROC comparison with scipy's bootstrap
# (other draws) could only hold to its Monte Carlo error, wider than the changes it should catch.


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


# --- the same random draws: the CI is checked to the last digit (issue 27) ---------------------------
# The comparisons with scipy above are distributional (another bootstrap, other draws), so they need a
# tolerance wider than small changes of the interval (a 96.7% interval printed as 95% passes them). The
# tests below redraw paired_bootstrap_ci's own resamples from the same seed, in the documented way, and
# compute the metric on them independently, so the interval must agree to rounding.

def _percentile_ci(diffs: np.ndarray, alpha: float) -> tuple[float, float]:
    """The percentile interval written out: the order statistics at alpha/2 and 1 - alpha/2.

    Args:
        diffs: Bootstrap differences (all finite).
        alpha: 1 - confidence level.

    Returns:
        (low, high) by numpy's default (linear) percentile rule.
    """
    return float(np.quantile(diffs, alpha / 2)), float(np.quantile(diffs, 1 - alpha / 2))


def _redraw_indices(y: np.ndarray, size: int, rng: np.random.Generator, stratify: bool) -> np.ndarray:
    """Resample indices as documented: per class (in label order) its own slots, or N draws from all.

    Args:
        y: (N,) integer labels.
        size: Number of resamples.
        rng: The generator, advanced exactly as paired_bootstrap_ci advances it.
        stratify: Class-stratified or plain resampling.

    Returns:
        (size, N) indices.
    """
    if not stratify:
        return rng.integers(0, y.size, size=(size, y.size))
    idx = np.empty((size, y.size), dtype=np.int64)
    for k in sorted(set(y.tolist())):
        members = np.flatnonzero(y == k)
        idx[:, members] = members[rng.integers(0, members.size, size=(size, members.size))]
    return idx


def _rank_auroc(y_rows: np.ndarray, s_rows: np.ndarray) -> np.ndarray:
    """Binary AUROC of each row by the Mann-Whitney rank sum (average ranks for ties); NaN for one class.

    Args:
        y_rows: (B, N) 0/1 labels of each resample.
        s_rows: (B, N) scores of each resample.
    """
    ranks = stats.rankdata(s_rows, axis=1)
    n_pos = y_rows.sum(axis=1).astype(float)
    n_neg = y_rows.shape[1] - n_pos
    u = np.sum(ranks * y_rows, axis=1) - n_pos * (n_pos + 1) / 2
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where((n_pos > 0) & (n_neg > 0), u / (n_pos * n_neg), np.nan)


def test_auroc_ci_with_several_blocks_equals_the_same_draws_exactly():
    """N = 2001 needs blocks of 1999 resamples: 2100 resamples are drawn in two blocks (1999, then 101)."""
    y, pa, pb = two_models(2001, 21)
    pa, pb = np.round(pa, 2), np.round(pb, 2)  # ties, counted one half
    n_boot, seed = 2100, 5
    res = paired_bootstrap_ci(y, pa, pb, "auroc", n_boot=n_boot, seed=seed)
    rng = np.random.default_rng(seed)
    block = 4_000_000 // y.size
    assert block == 1999 and n_boot > block  # the loop really runs twice, the last block short
    diffs = []
    for start in range(0, n_boot, block):
        idx = _redraw_indices(y, min(block, n_boot - start), rng, True)
        diffs.append(_rank_auroc(y[idx], pb[idx]) - _rank_auroc(y[idx], pa[idx]))
    diffs = np.concatenate(diffs)
    low, high = _percentile_ci(diffs, 0.05)
    assert res["n_valid"] == n_boot
    assert (res["ci_low"], res["ci_high"]) == (pytest.approx(low, abs=1e-12), pytest.approx(high, abs=1e-12))
    assert res["diff"] == pytest.approx(roc_auc_score(y, pb) - roc_auc_score(y, pa), abs=1e-12)
    assert res["se_diff"] == pytest.approx(np.std(diffs, ddof=1), abs=1e-12)
    # a 96.7% interval (percentiles alpha/3) or a 90% one is a different interval, far beyond rounding
    wider = _percentile_ci(diffs, 0.05 / 1.5)
    assert abs(wider[0] - low) > 1e-4 and abs(wider[1] - high) > 1e-4


@pytest.mark.parametrize("alpha", [0.05, 0.2])
def test_unstratified_auroc_ci_equals_the_same_draws_and_drops_one_class_resamples(alpha):
    y = np.array([1] * 4 + [0] * 26)
    rng = np.random.default_rng(2)
    pa, pb = rng.random(30), np.round(rng.random(30) + 0.3 * y, 1)
    with pytest.warns(RuntimeWarning, match=r"of 3000 resamples gave an undefined auroc"):
        res = paired_bootstrap_ci(y, pa, pb, "auroc", n_boot=3000, seed=4, alpha=alpha, stratify=False)
    idx = _redraw_indices(y, 3000, np.random.default_rng(4), False)
    diffs = _rank_auroc(y[idx], pb[idx]) - _rank_auroc(y[idx], pa[idx])
    valid = np.isfinite(diffs)
    assert 0 < res["n_valid"] == valid.sum() < 3000 and res["alpha"] == alpha
    low, high = _percentile_ci(diffs[valid], alpha)
    assert (res["ci_low"], res["ci_high"]) == (pytest.approx(low, abs=1e-12), pytest.approx(high, abs=1e-12))


def _redraw_correct_counts(y, ca, cb, n_boot, rng, stratify):
    """The count path's draws: per class a multinomial over (A right?, B right?) = 2a + b, or one over all.

    Returns:
        (right_a, right_b, totals), each (n_boot, K).
    """
    classes = sorted(set(y.tolist()))
    cat = 2 * ca.astype(int) + cb.astype(int)
    freq = np.array([[np.sum(cat[y == k] == j) for j in range(4)] for k in classes])
    if stratify:
        d = np.stack([rng.multinomial(f.sum(), f / f.sum(), size=n_boot) for f in freq], axis=1)
    else:
        d = rng.multinomial(freq.sum(), freq.ravel() / freq.sum(), size=n_boot).reshape(n_boot, len(classes), 4)
    return d[..., 2] + d[..., 3], d[..., 1] + d[..., 3], d.sum(axis=-1)


@pytest.mark.parametrize("stratify", [True, False])
def test_accuracy_and_balanced_accuracy_cis_on_imbalanced_classes_equal_the_same_draws(stratify):
    """90% of one class: accuracy and balanced accuracy differ, and each arm's CI is its own metric's."""
    rng = np.random.default_rng(6)
    y = (rng.random(400) < 0.1).astype(int)
    # A is right on most negatives and few positives; B is the other way round
    pa = np.where(y == 1, rng.random(400) * 0.9, rng.random(400) * 0.55)
    pb = np.where(y == 1, 0.3 + rng.random(400) * 0.7, rng.random(400) * 0.8)
    ca, cb = (pa >= 0.5) == y, (pb >= 0.5) == y
    n_k = np.array([np.sum(y == 0), np.sum(y == 1)])
    for metric in ("accuracy", "balanced_accuracy"):
        res = paired_bootstrap_ci(y, pa, pb, metric, n_boot=3000, seed=9, alpha=0.1, stratify=stratify)
        ra, rb, tot = _redraw_correct_counts(y, ca, cb, 3000, np.random.default_rng(9), stratify)
        if metric == "accuracy":
            a, b = ca.mean(), cb.mean()
            diffs = (rb.sum(1) - ra.sum(1)) / y.size
        else:
            a = np.mean([ca[y == k].mean() for k in (0, 1)])
            b = np.mean([cb[y == k].mean() for k in (0, 1)])
            with np.errstate(invalid="ignore", divide="ignore"):
                diffs = np.mean(rb / tot, axis=1) - np.mean(ra / tot, axis=1)
        assert (res["a"], res["b"], res["diff"]) == pytest.approx((a, b, b - a), abs=1e-12)
        valid = np.isfinite(diffs)
        assert res["n_valid"] == valid.sum() == 3000
        low, high = _percentile_ci(diffs[valid], 0.1)
        assert (res["ci_low"], res["ci_high"]) == (pytest.approx(low, abs=1e-12), pytest.approx(high, abs=1e-12))
        assert res["se_diff"] == pytest.approx(np.std(diffs[valid], ddof=1), abs=1e-12)
    assert n_k[1] < n_k[0] / 5
    bal = paired_bootstrap_ci(y, pa, pb, "balanced_accuracy", n_boot=10)
    acc = paired_bootstrap_ci(y, pa, pb, "accuracy", n_boot=10)
    assert abs(bal["diff"] - acc["diff"]) > 0.1  # the two metrics really differ on these data


def test_balanced_accuracy_resample_that_loses_a_class_is_dropped():
    y = np.array([0] * 12 + [1])
    p = np.where(y == 1, 0.9, 0.2)
    with pytest.warns(RuntimeWarning, match="undefined balanced_accuracy"):
        res = paired_bootstrap_ci(y, p, 1 - p, "balanced_accuracy", n_boot=500, seed=0, stratify=False)
    # P(the one positive is drawn at least once in 13 draws) = 1 - (12/13)^13 ~ 0.647
    assert 0.55 < res["n_valid"] / 500 < 0.75
    assert (res["a"], res["b"]) == (1.0, 0.0)
    assert res["ci_low"] == res["ci_high"] == -1.0
    assert res["se_diff"] == 0.0  # every valid resample gives the same difference


def test_callable_metric_ci_equals_the_same_draws():
    y, pa, pb = two_models(120, 13, classes=3)

    def top1(yy, p):
        return float(np.mean(p.argmax(1) == yy))

    res = paired_bootstrap_ci(y, pa, pb, top1, n_boot=400, seed=8, alpha=0.1)
    idx = _redraw_indices(y, 400, np.random.default_rng(8), True)
    diffs = np.mean(pb[idx].argmax(2) == y[idx], axis=1) - np.mean(pa[idx].argmax(2) == y[idx], axis=1)
    low, high = _percentile_ci(diffs, 0.1)
    assert (res["ci_low"], res["ci_high"]) == (pytest.approx(low, abs=1e-12), pytest.approx(high, abs=1e-12))
    assert res["n_boot"] == 400 and res["n_valid"] == 400


def test_all_resamples_undefined_gives_nan_bounds():
    y = np.array([0, 1])
    with pytest.warns(RuntimeWarning, match="2 of 2 resamples"):
        res = paired_bootstrap_ci(y, np.array([0.2, 0.9]), np.array([0.1, 0.8]), lambda yy, p: float("nan"), n_boot=2)
    assert res["n_valid"] == 0 and np.isnan(res["ci_low"]) and np.isnan(res["ci_high"])


def test_probability_of_exactly_one_half_is_class_one():
    from analysis.significance import predictions_from_scores

    assert predictions_from_scores(np.array([0.0, 0.5, np.nextafter(0.5, 0), 1.0])).tolist() == [0, 1, 0, 1]
    res = paired_bootstrap_ci(np.array([1, 0, 1, 0]), np.array([0.5, 0.5, 0.9, 0.1]), np.array([0.49, 0.5, 0.9, 0.1]),
                              "accuracy", n_boot=20)
    assert (res["a"], res["b"]) == (0.75, 0.5)
    with pytest.raises(ValueError, match="logits"):
        predictions_from_scores(np.array([0.5, 1.0 + 1e-12]))
    with pytest.raises(ValueError, match="logits"):
        predictions_from_scores(np.array([-1e-12, 0.5]))


def test_bootstrap_rejects_bad_shapes_alpha_and_empty_input():
    y = np.array([0, 1, 0, 1])
    with pytest.raises(ValueError, match="same shape"):
        paired_bootstrap_ci(y, np.zeros(4), np.zeros(3), n_boot=5)
    with pytest.raises(ValueError, match="zero samples"):
        paired_bootstrap_ci(np.array([], int), np.zeros(0), np.zeros(0), n_boot=5)
    for alpha in (0.0, 1.0):
        with pytest.raises(ValueError, match="alpha"):
            paired_bootstrap_ci(y, np.zeros(4), np.zeros(4), n_boot=5, alpha=alpha)
    # an (N, 1) column is the binary case
    col = paired_bootstrap_ci(y, np.array([[0.2], [0.7], [0.6], [0.9]]), np.array([[0.6], [0.8], [0.3], [0.4]]), n_boot=5)
    assert (col["a"], col["b"]) == (0.75, 0.5)


def test_per_class_accuracy_default_class_count_and_mcnemar_shape_check():
    assert per_class_accuracy(np.array([0, 0, 2]), np.array([0, 1, 2])) == {0: 0.5, 1: pytest.approx(np.nan, nan_ok=True), 2: 1.0}
    assert list(per_class_accuracy(np.array([0, 1]), np.array([0, 3]))) == [0, 1, 2, 3]  # predictions count too
    with pytest.raises(ValueError, match="same length"):
        mcnemar_exact(np.ones(3, bool), np.ones(4, bool))
    with pytest.raises(ValueError, match="same length"):
        mcnemar_exact(np.ones((2, 2), bool), np.ones((2, 2), bool))
    assert mcnemar_exact(np.array([True, True, False]), np.array([False, False, False]))["n"] == 3


def test_paired_comparison_passes_seed_alpha_and_metrics_through():
    y, pa, pb = two_models(150, 14)
    ids = np.arange(150)
    comp = paired_comparison(ids, y, pa, ids, y, pb, metrics=("auroc", "accuracy"), n_boot=300, seed=6, alpha=0.2)
    for m in ("auroc", "accuracy"):
        assert comp["bootstrap"][m] == paired_bootstrap_ci(y, pa, pb, m, n_boot=300, seed=6, alpha=0.2)
    assert list(comp["bootstrap"]) == ["auroc", "accuracy"]
    assert paired_comparison(ids, y, pa, ids, y, pb, n_boot=0)["bootstrap"] == {}
    # correctness (N,): accuracy is the mean correctness, bootstrapped by index draws with the same seed
    ca, cb = (pa >= 0.5) == y, (pb >= 0.5) == y
    comp = paired_comparison(ids, y, ca, ids, y, cb, correct=True, n_boot=300, seed=6, alpha=0.2)
    idx = _redraw_indices(y, 300, np.random.default_rng(6), True)
    low, high = _percentile_ci(cb[idx].mean(1) - ca[idx].mean(1), 0.2)
    acc = comp["bootstrap"]["accuracy"]
    assert (acc["a"], acc["b"]) == pytest.approx((ca.mean(), cb.mean()))
    assert (acc["ci_low"], acc["ci_high"]) == (pytest.approx(low, abs=1e-12), pytest.approx(high, abs=1e-12))
    assert comp["mcnemar"] == mcnemar_exact(ca, cb)
    with pytest.raises(ValueError, match="differ in shape"):
        paired_comparison(ids, y, pa, ids, y, np.column_stack([1 - pb, pb]))


# --- survivors of a mutation run (issue 27): contracts the tests above left open ---------------------

def test_mcnemar_counts_zero_one_floats_as_correctness():
    """Correctness read back from a table comes as 0.0 / 1.0; it is counted as bool, not refused."""
    res = mcnemar_exact(np.array([1.0, 1, 1, 0, 1]), np.array([0.0, 0, 0, 0, 1]))
    assert (res["b"], res["c"], res["n"]) == (3, 0, 5)
    assert res["p"] == pytest.approx(0.25, abs=1e-15)  # 2 * (1/2)^3


def test_predictions_are_integer_class_indices():
    from analysis.significance import predictions_from_scores

    assert predictions_from_scores(np.array([0.2, 0.7])).dtype == np.int64
    assert predictions_from_scores(np.array([[0.2, 0.8], [0.9, 0.1]])).dtype == np.int64
    with pytest.raises(ValueError, match=r"^binary scores must be probabilities"):
        predictions_from_scores(np.array([2.0]))


def test_per_class_accuracy_on_empty_and_single_class_input_without_warnings():
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # an absent class is NaN by the guard, not by a mean of nothing
        assert per_class_accuracy(np.array([], int), np.array([], int)) == {}
        assert per_class_accuracy(np.array([0, 0]), np.array([0, 0])) == {0: 1.0}
        out = per_class_accuracy(np.array([0, 0, 1]), np.array([0, 1, 1]), n_classes=3)
    assert out[0] == 0.5 and out[1] == 1.0 and np.isnan(out[2])


def test_weighted_auroc_of_one_positive_and_one_negative():
    # W_pos * W_neg = 1 exactly: still a defined AUROC (1 or 0), not NaN
    y = np.array([0, 1])
    assert _WeightedAuroc(y, np.array([0.2, 0.9]))(np.ones((1, 2))).tolist() == [1.0]
    assert _WeightedAuroc(y, np.array([0.9, 0.2]))(np.ones((1, 2))).tolist() == [0.0]
    assert _WeightedAuroc(y, np.array([0.5, 0.5]))(np.ones((1, 2))).tolist() == [0.5]


def test_bootstrap_defaults_are_10000_resamples_from_seed_0():
    y, pa, pb = two_models(200, 15)
    res = paired_bootstrap_ci(y, pa, pb)
    assert res["n_boot"] == 10000 and res["alpha"] == 0.05 and res["n_valid"] == 10000
    assert res == paired_bootstrap_ci(y, pa, pb, "accuracy", n_boot=10000, seed=0, alpha=0.05, stratify=True)
    # the seed: an AUROC CI (near-continuous, unlike accuracy's steps of 1/N) moves with it
    y, pa, pb = two_models(100, 15)
    auc = paired_bootstrap_ci(y, pa, pb, "auroc")
    assert auc == paired_bootstrap_ci(y, pa, pb, "auroc", n_boot=10000, seed=0)
    assert auc["ci_low"] != paired_bootstrap_ci(y, pa, pb, "auroc", n_boot=10000, seed=1)["ci_low"]
    with pytest.raises(ValueError, match=r"^cannot bootstrap zero samples$"):
        paired_bootstrap_ci(np.array([], int), np.zeros(0), np.zeros(0), n_boot=5)


def test_a_block_holds_one_resample_at_least(monkeypatch):
    """Past the element cap (N above it) each block is one resample: the draws are those of blocks of one."""
    import analysis.significance as sig

    monkeypatch.setattr(sig, "_BLOCK_ELEMENTS", 10)  # 10 // 20 = 0 resamples a block -> 1
    y = np.array([0, 1] * 10)
    rng = np.random.default_rng(0)
    pa, pb = rng.random(20), rng.random(20)
    res = paired_bootstrap_ci(y, pa, pb, "auroc", n_boot=5, seed=3, alpha=0.5)
    draw = np.random.default_rng(3)
    idx = np.concatenate([_redraw_indices(y, 1, draw, True) for _ in range(5)])
    diffs = _rank_auroc(y[idx], pb[idx]) - _rank_auroc(y[idx], pa[idx])
    low, high = _percentile_ci(diffs, 0.5)
    assert (res["ci_low"], res["ci_high"]) == (pytest.approx(low, abs=1e-12), pytest.approx(high, abs=1e-12))


def test_undefined_resample_warning_counts_names_and_points_at_the_caller():
    y, pa, pb = two_models(60, 16)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # every resample defined: no warning
        paired_bootstrap_ci(y, pa, pb, "auroc", n_boot=50)

    def half_undefined(yy, p):
        return float("nan") if p[0] > 0.5 else 1.0

    with pytest.warns(RuntimeWarning) as record:
        res = paired_bootstrap_ci(y, pa, pb, half_undefined, n_boot=40, seed=1)
    dropped = 40 - res["n_valid"]
    assert 0 < dropped < 40
    (w,) = [r for r in record if "resamples" in str(r.message)]
    assert str(w.message) == f"{dropped} of 40 resamples gave an undefined half_undefined and were dropped"
    # stacklevel 2: the caller's line, not significance.py (under mutmut a wrapper frame sits between)
    assert w.filename == __file__ or "mutmut" in w.filename


def test_align_samples_names_each_side_and_refuses_a_subset():
    from analysis.significance import align_samples

    ids = np.array(["s0", "s1", "s2"])
    with pytest.raises(ValueError, match=r"^runA: sample_id is not unique"):
        align_samples(np.array(["s0", "s0", "s2"]), np.zeros(3), ids, np.zeros(3), names=("runA", "runB"))
    with pytest.raises(ValueError, match=r"^runA: 3 sample ids but 2 targets$"):
        align_samples(ids, np.zeros(2), ids, np.zeros(3), names=("runA", "runB"))
    # B holds a subset of A: refused (nothing is matched on a subset), in either direction
    with pytest.raises(ValueError, match=r"1 only in a \(e.g. \['s2'\]\), 0 only in b"):
        align_samples(ids, np.zeros(3), ids[:2], np.zeros(2))
    with pytest.raises(ValueError, match=r"0 only in a \(e.g. \[\]\), 1 only in b"):
        align_samples(ids[:2], np.zeros(2), ids, np.zeros(3))
    # five example ids by default
    many = np.array([f"x{i}" for i in range(7)])
    with pytest.raises(ValueError, match=r"7 only in a \(e.g. \['x0', 'x1', 'x2', 'x3', 'x4'\]\), 7 only in b"):
        align_samples(many, np.zeros(7), np.array([f"y{i}" for i in range(7)]), np.zeros(7))


def test_paired_comparison_returns_arrays_in_a_row_order_and_its_defaults():
    perm = np.array([3, 5, 0, 2, 1, 4])
    comp = paired_comparison(IDS, TARGETS, P_A, IDS[perm], TARGETS[perm], P_B[perm], names=("runA", "runB"))
    np.testing.assert_array_equal(comp["targets"], TARGETS)
    np.testing.assert_array_equal(comp["scores_a"], P_A)
    np.testing.assert_array_equal(comp["scores_b"], P_B)
    assert comp["correct_b"].tolist() == [False, False, True, True, True, False]
    # defaults: 10000 class-stratified resamples from seed 0, alpha 0.05 (an AUROC CI, which moves with the seed)
    y, pa, pb = two_models(100, 15)
    ids = np.arange(100)
    auc = paired_comparison(ids, y, pa, ids, y, pb, metrics=("auroc",))["bootstrap"]["auroc"]
    assert auc == paired_bootstrap_ci(y, pa, pb, "auroc", n_boot=10000, seed=0, alpha=0.05)
    assert auc["ci_low"] != paired_bootstrap_ci(y, pa, pb, "auroc", n_boot=10000, seed=1)["ci_low"]
    # correctness given as 0/1 comes back as bool
    c = paired_comparison(IDS, TARGETS, np.array([1, 1, 0, 1, 1, 0]), IDS, TARGETS, np.array([0, 0, 1, 1, 1, 0]),
                          correct=True, n_boot=0)
    assert c["correct_a"].dtype == bool and c["correct_b"].dtype == bool
    assert c["correct_b"].tolist() == [False, False, True, True, True, False]
    with pytest.raises(ValueError, match=r"^runA scores \(6,\) and runB scores \(6, 2\) differ in shape$"):
        paired_comparison(IDS, TARGETS, P_A, IDS, TARGETS, np.column_stack([1 - P_B, P_B]), names=("runA", "runB"))


def test_a_resample_that_loses_a_class_warns_once_and_never_divides_by_zero():
    """Only the counted "resamples ... dropped" warning: the NaN of a lost class is a quiet 0/0."""
    from analysis.significance import _WeightedAuroc

    y = np.array([0] * 12 + [1])
    p = np.where(y == 1, 0.9, 0.2)
    for metric in ("balanced_accuracy", "auroc"):
        with warnings.catch_warnings(record=True) as record, np.errstate(all="raise"):
            warnings.simplefilter("always")
            res = paired_bootstrap_ci(y, p, 1 - p, metric, n_boot=200, seed=0, stratify=False)
        assert 0 < res["n_valid"] < 200
        assert [str(w.message) for w in record] == [f"{200 - res['n_valid']} of 200 resamples gave an undefined {metric} and were dropped"]
    # the weighted AUROC itself (its resamples run with warnings silenced): rows without positives, without
    # negatives, and empty give NaN without dividing by zero; a full row gives the AUROC
    w = np.array([np.where(y == 1, 0.0, 1.0), np.where(y == 1, 3.0, 0.0), np.zeros(13), np.ones(13)])
    with np.errstate(all="raise"):
        out = _WeightedAuroc(y, p)(w)
    assert np.isnan(out[:3]).all() and out[3] == 1.0


def test_se_diff_with_two_one_and_no_valid_resamples_without_numpy_warnings():
    """se_diff is the ddof-1 sd of the valid differences: defined from two of them, NaN (quietly) below that.

    The metric is defined only on a resample that drew one sample three times (probability 1/9), so the valid rows
    are known from the same draws: rows of ``rng.integers(3, size=(n_boot, 3))`` (unstratified, one block).
    """
    y = np.array([0, 1, 0])
    pa, pb = np.array([0.1, 0.2, 0.3]), np.array([0.2, 0.5, 0.9])

    def one_sample_only(yy, p):
        return float(p.mean()) if p.min() == p.max() else math.nan

    found = set()
    for seed in range(200):
        idx = np.random.default_rng(seed).integers(3, size=(12, 3))
        valid = idx.min(axis=1) == idx.max(axis=1)
        k = int(valid.sum())
        if k > 2 or k in found or (k == 2 and idx[valid, 0][0] == idx[valid, 0][1]):
            continue  # two valid rows must differ, or their sd is 0 for any ddof
        found.add(k)
        with warnings.catch_warnings(record=True) as record, np.errstate(all="raise"):
            warnings.simplefilter("always")
            res = paired_bootstrap_ci(y, pa, pb, one_sample_only, n_boot=12, seed=seed, stratify=False)
        assert [str(w.message) for w in record] == [f"{12 - k} of 12 resamples gave an undefined one_sample_only and were dropped"]
        assert res["n_valid"] == k
        if k == 2:
            d = (pb - pa)[idx[valid, 0]]
            assert res["se_diff"] == pytest.approx(abs(d[0] - d[1]) / math.sqrt(2), rel=1e-12)
        else:
            assert math.isnan(res["se_diff"])
        if found == {0, 1, 2}:
            break
    assert found == {0, 1, 2}
