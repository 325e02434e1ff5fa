"""Calibration metrics against hand-worked cases and independent implementations (numpy, sklearn, torch)."""

from __future__ import annotations

import math
import warnings

import numpy as np
import pytest
import torch
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import accuracy_score, brier_score_loss, log_loss

from analysis.calibration import (
    accuracy,
    adaptive_ece,
    brier,
    ece,
    fit_temperature,
    mc_triage,
    nll,
    nll_from_logits,
    probabilities_from_logits,
    reliability_bins,
    triage_labels,
)


#: seed 000's triage thresholds (conf/thresholds/clip_subtask.yaml holds them for the family)
SEED_000 = {"review_std": 0.35, "auto_conf": 0.90, "auto_std": 0.25}

def reference_ece(conf: np.ndarray, correct: np.ndarray, n_bins: int = 15) -> float:
    """Plain loop ECE with the bins written out: [k/M, (k+1)/M) and a closed last bin [(M-1)/M, 1]."""
    total, n = 0.0, len(conf)
    for k in range(n_bins):
        lo, hi = k / n_bins, (k + 1) / n_bins
        inside = (conf >= lo) & ((conf < hi) if k < n_bins - 1 else (conf <= 1.0))
        if inside.any():
            total += inside.sum() / n * abs(correct[inside].mean() - conf[inside].mean())
    return total


def random_multiclass(rng: np.random.Generator, n: int = 500, c: int = 4, scale: float = 3.0):
    logits = rng.normal(size=(n, c)) * scale
    targets = rng.integers(0, c, n)
    return logits, targets


# --- probabilities ---------------------------------------------------------------------------------

def test_probabilities_match_torch():
    rng = np.random.default_rng(0)
    z = rng.normal(size=50) * 4
    Z = rng.normal(size=(50, 5)) * 4
    for t in (0.5, 1.0, 2.7):
        np.testing.assert_allclose(probabilities_from_logits(z, t), torch.sigmoid(torch.tensor(z / t)).numpy(), rtol=1e-12)
        np.testing.assert_allclose(probabilities_from_logits(Z, t), torch.softmax(torch.tensor(Z / t), dim=1).numpy(), rtol=1e-12)
    np.testing.assert_allclose(probabilities_from_logits(z[:, None]), probabilities_from_logits(z))


@pytest.mark.parametrize("t", [0.0, -1.0, float("nan"), float("inf")])
def test_probabilities_reject_bad_temperature(t):
    with pytest.raises(ValueError, match="temperature"):
        probabilities_from_logits(np.zeros(3), t)


# --- ECE -------------------------------------------------------------------------------------------

def test_ece_hand_worked_multiclass_with_confidence_one_and_empty_bins():
    probs = np.array([
        [1.00, 0.00, 0.00],  # conf 1.0, correct   -> last bin (torchmetrics would hide it)
        [0.95, 0.05, 0.00],  # conf 0.95, wrong    -> last bin [14/15, 1]
        [0.50, 0.25, 0.25],  # conf 0.5, correct   -> bin 7 [7/15, 8/15)
        [0.41, 0.30, 0.29],  # conf 0.41, wrong    -> bin 6 [6/15, 7/15)
    ])
    targets = np.array([0, 2, 0, 1])
    # last bin: 2/4 * |0.5 - 0.975| = 0.2375; bin 7: 1/4 * |1 - 0.5| = 0.125; bin 6: 1/4 * |0 - 0.41| = 0.1025
    assert ece(probs, targets) == pytest.approx(0.465, abs=1e-12)
    bins = reliability_bins(probs, targets)
    assert bins["count"].tolist() == [0] * 6 + [1, 1] + [0] * 6 + [2]
    assert bins["count"].sum() == 4  # nothing lost to a hidden bin
    assert bins["confidence"][14] == pytest.approx(0.975)
    assert bins["accuracy"][14] == pytest.approx(0.5)
    assert np.isnan(bins["confidence"][0]) and np.isnan(bins["accuracy"][0])  # empty bins are NaN, not 0


def test_ece_hand_worked_binary_uses_top_label():
    p = np.array([1.0, 0.0, 0.7, 0.3])
    y = np.array([1, 1, 0, 0])
    # conf = [1, 1, .7, .7], pred = [1, 0, 1, 0], correct = [1, 0, 0, 1]
    # last bin: 2/4 * |0.5 - 1| = 0.25; bin 10 ([10/15, 11/15)): 2/4 * |0.5 - 0.7| = 0.1
    assert ece(p, y) == pytest.approx(0.35, abs=1e-12)
    assert reliability_bins(p, y)["count"][14] == 2


def test_ece_bin_edges_go_up_and_single_bin():
    # a confidence on an inner edge belongs to the bin above it
    edge = np.linspace(0, 1, 16)[8]
    bins = reliability_bins(np.array([[edge, 1 - edge]]), np.array([0]))
    assert bins["count"][8] == 1
    p = np.array([[0.6, 0.4], [0.8, 0.2]])
    assert ece(p, np.array([0, 1]), n_bins=1) == pytest.approx(abs(0.5 - 0.7))


@pytest.mark.parametrize("seed", range(5))
def test_ece_matches_numpy_reference_on_random_data(seed):
    rng = np.random.default_rng(seed)
    logits, targets = random_multiclass(rng)
    probs = probabilities_from_logits(logits)
    probs[:20] = np.eye(4)[targets[:20]]  # some confidences of exactly 1.0
    correct = (probs.argmax(1) == targets).astype(float)
    assert ece(probs, targets) == pytest.approx(reference_ece(probs.max(1), correct), abs=1e-12)
    # binary
    p = probabilities_from_logits(rng.normal(size=300) * 3)
    p[:5] = 1.0
    y = rng.integers(0, 2, 300)
    conf = np.maximum(p, 1 - p)
    correct = ((p >= 0.5).astype(int) == y).astype(float)
    for m in (5, 10, 15):
        assert ece(p, y, m) == pytest.approx(reference_ece(conf, correct, m), abs=1e-12)


def test_ece_matches_torchmetrics_away_from_confidence_one():
    """torchmetrics as a second reference, on data without confidences of exactly 1.0 (see the trap)."""
    from torchmetrics.functional.classification import multiclass_calibration_error

    rng = np.random.default_rng(8)
    logits, targets = random_multiclass(rng)
    probs = probabilities_from_logits(logits)
    assert probs.max() < 1.0
    ours = ece(probs, targets)
    theirs = float(multiclass_calibration_error(torch.tensor(probs), torch.tensor(targets), num_classes=4, n_bins=15))
    assert ours == pytest.approx(theirs, abs=1e-6)  # torchmetrics works in float32


def test_adaptive_ece_equal_mass_reference():
    rng = np.random.default_rng(3)
    logits, targets = random_multiclass(rng, n=450)
    probs = probabilities_from_logits(logits)
    conf, correct = probs.max(1), (probs.argmax(1) == targets).astype(float)
    order = np.argsort(conf)
    expected = sum(abs(correct[g].mean() - conf[g].mean()) for g in order.reshape(15, 30)) / 15
    assert adaptive_ece(probs, targets) == pytest.approx(expected, abs=1e-12)
    # fewer samples than bins: empty groups skipped, still a weighted mean over samples
    assert adaptive_ece(probs[:3], targets[:3]) == pytest.approx(
        np.mean(np.abs(correct[:3] - conf[:3])), abs=1e-12)


def test_perfectly_calibrated_limit_is_small():
    rng = np.random.default_rng(1)
    p = rng.random(200_000)
    y = (rng.random(200_000) < p).astype(int)
    assert ece(p, y) < 0.01
    assert adaptive_ece(p, y) < 0.01


# --- Brier, NLL, accuracy --------------------------------------------------------------------------

def test_brier_nll_accuracy_against_sklearn_and_torch():
    rng = np.random.default_rng(2)
    z = rng.normal(size=400) * 2
    y = rng.integers(0, 2, 400)
    p = probabilities_from_logits(z)
    assert brier(p, y) == pytest.approx(brier_score_loss(y, p))
    assert nll(p, y) == pytest.approx(log_loss(y, p))
    assert accuracy(p, y) == pytest.approx(accuracy_score(y, (p >= 0.5).astype(int)))
    bce = torch.nn.functional.binary_cross_entropy_with_logits(torch.tensor(z / 1.7), torch.tensor(y, dtype=torch.float64))
    assert nll_from_logits(z, y, 1.7) == pytest.approx(float(bce), rel=1e-10)

    Z, t = random_multiclass(rng, 400, 5)
    P = probabilities_from_logits(Z)
    assert brier(P, t) == pytest.approx(np.mean(np.sum((P - np.eye(5)[t]) ** 2, axis=1)))
    assert nll(P, t) == pytest.approx(log_loss(t, P, labels=range(5)))
    ce = torch.nn.functional.cross_entropy(torch.tensor(Z / 0.6), torch.tensor(t))
    assert nll_from_logits(Z, t, 0.6) == pytest.approx(float(ce), rel=1e-10)
    assert accuracy(P, t) == pytest.approx(accuracy_score(t, P.argmax(1)))
    # the two-class multiclass Brier is twice the binary one (documented convention)
    P2 = np.column_stack([1 - p, p])
    assert brier(P2, y) == pytest.approx(2 * brier(p, y))


def test_nll_from_logits_does_not_saturate():
    assert math.isfinite(nll_from_logits(np.array([-800.0]), np.array([1])))
    assert nll_from_logits(np.array([-800.0]), np.array([1])) == pytest.approx(800.0)


def test_probabilities_required_not_logits():
    with pytest.raises(ValueError, match="probabilities"):
        ece(np.array([2.0, -1.0]), np.array([1, 0]))


# --- temperature -----------------------------------------------------------------------------------

def grid_temperature(logits, targets):
    grid = np.exp(np.linspace(np.log(0.05), np.log(20), 4001))
    values = [nll_from_logits(logits, targets, t) for t in grid]
    return grid[int(np.argmin(values))]


@pytest.mark.parametrize("true_t", [0.5, 1.0, 3.0])
def test_fit_temperature_multiclass_matches_grid_and_recovers_truth(true_t):
    rng = np.random.default_rng(int(true_t * 10))
    base = rng.normal(size=(4000, 4)) * 2
    targets = np.array([rng.choice(4, p=row) for row in probabilities_from_logits(base)])
    logits = base * true_t  # logits / true_t is calibrated
    t = fit_temperature(logits, targets)
    assert t > 0
    assert t == pytest.approx(grid_temperature(logits, targets), rel=3e-3)
    assert t == pytest.approx(true_t, rel=0.1)
    assert nll_from_logits(logits, targets, t) <= nll_from_logits(logits, targets, 1.0) + 1e-12


def test_fit_temperature_binary_matches_grid_and_logistic_regression():
    rng = np.random.default_rng(7)
    z_true = rng.normal(size=3000) * 2
    y = (rng.random(3000) < probabilities_from_logits(z_true)).astype(int)
    logits = z_true * 2.5  # overconfident
    t = fit_temperature(logits, y)
    assert t == pytest.approx(grid_temperature(logits, y), rel=3e-3)
    # temperature scaling of one logit = logistic regression on it without intercept: coef = 1/T
    lr = LogisticRegression(fit_intercept=False, C=1e12, tol=1e-10, max_iter=10_000).fit(logits[:, None], y)
    assert t == pytest.approx(1.0 / lr.coef_[0, 0], rel=1e-3)


def test_fit_temperature_positive_for_anticorrelated_logits():
    rng = np.random.default_rng(0)
    y = rng.integers(0, 2, 500)
    logits = np.where(y == 1, -3.0, 3.0) + rng.normal(size=500)  # confidently wrong
    with pytest.warns(RuntimeWarning, match="bound"):
        t = fit_temperature(logits, y)
    assert t > 0 and math.isfinite(t)
    assert t > 100  # flattest allowed: the best a positive T can do with inverted logits
    Z = np.eye(3)[(np.arange(300) + 1) % 3] * 5  # multiclass, always wrong
    with pytest.warns(RuntimeWarning):
        assert fit_temperature(Z, np.arange(300) % 3) > 0


def test_fit_temperature_leaves_calibrated_logits_alone():
    rng = np.random.default_rng(11)
    z = rng.normal(size=20000) * 2
    y = (rng.random(20000) < probabilities_from_logits(z)).astype(int)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no bound warning
        assert fit_temperature(z, y) == pytest.approx(1.0, abs=0.05)


# --- MC-Dropout triage -----------------------------------------------------------------------------

def test_mc_triage_rule_and_edges():
    mean = np.array([0.95, 0.95, 0.95, 0.60, 0.90, 0.02, 0.50, 0.97])
    std = np.array([0.10, 0.36, 0.35, 0.10, 0.10, 0.10, 0.25, 0.25])
    # 0: conf .95, std .10 -> auto; 1: std .36 > .35 -> review; 2: std .35 (not > .35), not < .25 -> spot
    # 3: conf .60 -> spot; 4: conf .90 (not > .90) -> spot; 5: p=.02 -> conf .98 -> auto
    # 6: spot; 7: std .25 (not < .25) -> spot
    labels = triage_labels(mean, std, **SEED_000)
    assert labels.tolist() == ["auto_approve", "review", "spot_check", "spot_check", "spot_check",
                               "auto_approve", "spot_check", "spot_check"]
    counts = mc_triage(mean, std, **SEED_000)
    assert (counts["review"], counts["spot_check"], counts["auto_approve"], counts["n"]) == (1, 5, 2, 8)
    assert counts["frac_auto_approve"] == pytest.approx(2 / 8)


def test_mc_triage_multiclass_and_thresholds():
    mean = np.array([[0.92, 0.05, 0.03], [0.4, 0.3, 0.3], [0.99, 0.01, 0.0]])
    std = np.array([0.2, 0.5, 0.3])
    assert triage_labels(mean, std, **SEED_000).tolist() == ["auto_approve", "review", "spot_check"]
    assert mc_triage(mean, std, review_std=0.6, auto_conf=0.90, auto_std=0.31)["auto_approve"] == 2
