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


# --- edges, empty inputs and the reports no other test reaches (issue 27) ------------------------------

def test_probability_of_exactly_one_half_is_class_one_with_confidence_one_half():
    from analysis.calibration import top_label

    conf, pred = top_label(np.array([0.5, np.nextafter(0.5, 0), 0.0, 1.0]))
    assert pred.tolist() == [1, 0, 0, 1]
    assert conf.tolist() == [0.5, 1 - np.nextafter(0.5, 0), 1.0, 1.0]
    assert accuracy(np.array([0.5, 0.5]), np.array([1, 0])) == 0.5
    # (N, 1) is binary; probabilities exactly 0 and 1 are allowed, anything outside is refused
    assert brier(np.array([[0.0], [1.0]]), np.array([0, 1])) == 0.0
    for bad in (np.array([1.0 + 1e-12]), np.array([-1e-12]), np.array([np.nan]), np.zeros((2, 2, 2))):
        with pytest.raises(ValueError):
            top_label(bad)


def test_empty_inputs_give_nan_not_zero():
    empty, none = np.zeros(0), np.zeros(0, int)
    assert math.isnan(ece(empty, none)) and math.isnan(adaptive_ece(empty, none)) and math.isnan(accuracy(empty, none))
    counts = mc_triage(empty, empty, **SEED_000)
    assert counts["n"] == 0 and counts["review"] == 0
    assert all(math.isnan(counts[f"frac_{k}"]) for k in ("review", "spot_check", "auto_approve"))
    with pytest.raises(ValueError, match="zero samples"):
        fit_temperature(empty, none)


def test_targets_and_shapes_are_checked():
    with pytest.raises(ValueError, match=r"targets must have shape \(2,\)"):
        ece(np.array([0.2, 0.7]), np.array([0, 1, 1]))
    with pytest.raises(ValueError, match="integer class labels"):
        brier(np.array([0.2, 0.7]), np.array([0.0, 0.5]))
    with pytest.raises(ValueError, match=r"std must have shape \(2,\)"):
        triage_labels(np.array([0.2, 0.7]), np.array([0.1]), **SEED_000)
    with pytest.raises(ValueError, match="n_bins"):
        reliability_bins(np.array([0.2]), np.array([0]), n_bins=0)
    with pytest.raises(ValueError, match="1-D"):
        probabilities_from_logits(np.zeros((2, 2, 2)))


def test_nll_clips_a_zero_probability_at_eps():
    # p(true) = 0 would be -log 0 = inf; clipped at 1e-12 it is 12 ln 10 = 27.631...
    assert nll(np.array([0.0, 1.0]), np.array([1, 1])) == pytest.approx(12 * math.log(10) / 2, rel=1e-12)
    assert nll(np.array([1.0]), np.array([0]), eps=1e-3) == pytest.approx(3 * math.log(10), rel=1e-12)
    assert nll(np.array([[0.25, 0.75]]), np.array([1])) == pytest.approx(-math.log(0.75), rel=1e-12)
    # (N, 1) logits are binary: -log sigmoid(2) and -log(1 - sigmoid(-1))
    z = np.array([[2.0], [-1.0]])
    expected = (math.log1p(math.exp(-2.0)) + math.log1p(math.exp(-1.0))) / 2
    assert nll_from_logits(z, np.array([1, 0])) == pytest.approx(expected, rel=1e-12)


def test_calibration_report_before_and_after_a_temperature_hand_worked():
    from analysis.calibration import calibration_report

    logits = np.array([2.0, -1.0, 0.0, 3.0])
    y = np.array([1, 1, 0, 0])
    for t in (1.0, 2.0):
        p = 1 / (1 + np.exp(-logits / t))
        conf, pred = np.maximum(p, 1 - p), (p >= 0.5).astype(int)  # p = 0.5 at logit 0: predicted 1, wrong
        correct = (pred == y).astype(float)
        report = calibration_report(logits, y, temperature=t, n_bins=5)
        assert report["ece"] == pytest.approx(reference_ece(conf, correct, 5), abs=1e-12)
        expected_adaptive = sum(len(g) / 4 * abs(correct[g].mean() - conf[g].mean())
                                for g in np.array_split(np.argsort(conf, kind="stable"), 5) if len(g))
        assert report["adaptive_ece"] == pytest.approx(expected_adaptive, abs=1e-12)
        assert report["brier"] == pytest.approx(np.mean((p - y) ** 2), abs=1e-12)
        assert report["nll"] == pytest.approx(-np.mean(y * np.log(p) + (1 - y) * np.log(1 - p)), abs=1e-12)
        assert report["accuracy"] == 0.25  # only logit 2 (target 1) is right
    assert calibration_report(logits, y, 2.0)["nll"] < calibration_report(logits, y, 1.0)["nll"]


def test_fit_temperature_ece_grid_picks_the_smallest_best_temperature():
    from analysis.calibration import fit_temperature_ece_grid

    logits = np.array([2.0, -2.0, 1.0, -1.0])
    y = np.array([1, 0, 0, 0])
    grid = np.array([0.5, 1.0, 2.0, 4.0])
    expected = [ece(probabilities_from_logits(logits, t), y) for t in grid]
    t, value = fit_temperature_ece_grid(logits, y, grid)
    best = min(expected)
    assert value == pytest.approx(best, abs=1e-12)
    assert t == grid[expected.index(best)]
    # ties: every temperature gives the same ECE (all logits 0) -> the smallest
    assert fit_temperature_ece_grid(np.zeros(4), y, np.array([3.0, 1.5, 0.7]))[0] == 3.0
    assert fit_temperature_ece_grid(np.zeros(4), y, np.array([0.7, 1.5, 3.0]))[0] == 0.7
    # default grid 0.5, 0.501, ..., 3.0
    t_default, _ = fit_temperature_ece_grid(logits, y, n_bins=5)
    assert 0.5 <= t_default <= 3.0 and round(t_default * 1000) == t_default * 1000
    for bad in (np.array([]), np.array([1.0, 0.0]), np.array([1.0, np.inf])):
        with pytest.raises(ValueError, match="grid"):
            fit_temperature_ece_grid(logits, y, bad)


def test_adaptive_ece_of_one_sample_and_of_tied_confidences():
    # one sample: |correct - confidence|
    assert adaptive_ece(np.array([0.8]), np.array([0])) == pytest.approx(0.8, abs=1e-12)
    assert adaptive_ece(np.array([[0.3, 0.7]]), np.array([1])) == pytest.approx(0.3, abs=1e-12)
    # many tied confidences: groups are cut from the samples in input order within a tie (a stable sort), so the
    # number does not depend on the sorting algorithm
    rng = np.random.default_rng(12)
    p = rng.choice([0.55, 0.65, 0.8, 0.95], size=3000)
    y = rng.integers(0, 2, 3000)
    conf, correct = np.maximum(p, 1 - p), ((p >= 0.5) == y).astype(float)
    order = sorted(range(3000), key=lambda i: conf[i])  # Python's sort is stable
    expected = sum(len(g) / 3000 * abs(correct[g].mean() - conf[g].mean()) for g in np.array_split(np.array(order), 15))
    assert adaptive_ece(p, y) == pytest.approx(expected, abs=1e-12)


def test_adaptive_ece_cuts_ties_in_input_order_even_where_the_order_matters():
    """Ties split across groups whose errors change sign: only a stable sort gives the hand-worked value.

    Where every group of a tie block errs the same way, the sum of |acc - conf| does not depend on which
    tied sample lands in which group (the test above). Here confidences alternate 0.6, 0.7 and class 1 is
    predicted everywhere, right for the first half of the inputs only. A stable sort lines up 500 right
    then 500 wrong samples at 0.6, then the same at 0.7; 8 groups of 250 are 2 right at 0.6 (|1 - 0.6|),
    2 wrong at 0.6 (0.6), 2 right at 0.7 (0.3) and 2 wrong at 0.7 (0.7): ECE = (0.8 + 1.2 + 0.6 + 1.4) / 8
    = 0.5. numpy's default (unstable) argsort mixes the tie blocks and gives 0.15.
    """
    n = 2000
    p = np.where(np.arange(n) % 2 == 0, 0.6, 0.7)
    y = (np.arange(n) < n // 2).astype(int)
    assert adaptive_ece(p, y, n_bins=8) == pytest.approx(0.5, abs=1e-12)
    assert adaptive_ece(np.stack([1 - p, p], axis=1), y, n_bins=8) == pytest.approx(0.5, abs=1e-12)


def test_fifteen_bins_by_default():
    """A caller that leaves n_bins out gets 15 bins, in every function that takes it (issue 27)."""
    from analysis.calibration import bin_edges, calibration_report, fit_temperature_ece_grid

    rng = np.random.default_rng(12)
    p = rng.random(450)
    t = (rng.random(450) < p ** 1.5).astype(int)  # miscalibrated, so the bin count changes every ECE
    np.testing.assert_array_equal(bin_edges(), np.linspace(0, 1, 16))
    for fn in (ece, adaptive_ece):
        assert fn(p, t) == fn(p, t, n_bins=15) != fn(p, t, n_bins=16)
    rb, rb15 = reliability_bins(p, t), reliability_bins(p, t, n_bins=15)
    assert rb.keys() == rb15.keys() and all(np.array_equal(rb[k], rb15[k], equal_nan=True) for k in rb)
    logits = np.log(p / (1 - p))
    assert calibration_report(logits, t) == calibration_report(logits, t, n_bins=15)
    assert calibration_report(logits, t)["ece"] != calibration_report(logits, t, n_bins=16)["ece"]
    grid = np.array([0.5, 1.0, 2.0])
    assert fit_temperature_ece_grid(logits, t, grid) == fit_temperature_ece_grid(logits, t, grid, n_bins=15)
    assert fit_temperature_ece_grid(logits, t, grid)[1] != fit_temperature_ece_grid(logits, t, grid, n_bins=16)[1]


# ---- mutation-testing round 2 (issue 27): the survivors of a full run of this module ----

def test_errors_name_what_is_wrong_exactly():
    from analysis.calibration import _check_targets, fit_temperature_ece_grid, top_label

    with pytest.raises(ValueError, match=r"^targets must be integer class labels$"):
        _check_targets(np.array([0.5, 1.0]), 2)
    with pytest.raises(ValueError, match=r"^probs must be 1-D \(binary\) or 2-D \(N, C\), got shape \(2, 2, 1\)$"):
        top_label(np.full((2, 2, 1), 0.5))
    with pytest.raises(ValueError, match=r"^probs must be finite and lie in \[0, 1\]; pass probabilities, not logits$"):
        top_label(np.array([0.2, 1.5]))
    with pytest.raises(ValueError, match=r"^cannot fit a temperature on zero samples$"):
        fit_temperature(np.zeros(0), np.zeros(0, dtype=int))
    with pytest.raises(ValueError, match=r"^the temperature grid must hold finite values > 0$"):
        fit_temperature_ece_grid(np.zeros(3), np.array([0, 1, 0]), grid=np.array([1.0, -1.0]))


def test_top_label_predictions_are_integer_class_indices():
    from analysis.calibration import top_label

    for probs in (np.array([0.2, 0.5, 0.9]), np.array([[0.7, 0.3], [0.1, 0.9], [0.2, 0.8]])):
        _, pred = top_label(probs)
        assert pred.dtype == np.int64 and pred.tolist() == [0, 1, 1]


def test_reliability_bins_edges_and_empty_bins_without_numpy_warnings():
    from analysis.calibration import bin_edges

    probs, y = np.array([0.05, 0.95, 0.9, 0.55]), np.array([0, 1, 0, 1])  # confidences 0.95, 0.95, 0.9, 0.55
    with warnings.catch_warnings(), np.errstate(all="raise"):
        warnings.simplefilter("error")
        bins = reliability_bins(probs, y, n_bins=5)
    np.testing.assert_array_equal(bins["lower"], bin_edges(5)[:-1])
    np.testing.assert_array_equal(bins["upper"], bin_edges(5)[1:])
    assert set(bins) == {"lower", "upper", "confidence", "accuracy", "count"}
    assert bins["count"].tolist() == [0, 0, 1, 0, 3]
    assert np.isnan(bins["confidence"][[0, 1, 3]]).all() and np.isnan(bins["accuracy"][[0, 1, 3]]).all()
    np.testing.assert_allclose(bins["confidence"][[2, 4]], [0.55, (0.95 + 0.95 + 0.9) / 3], rtol=1e-15)
    np.testing.assert_allclose(bins["accuracy"][[2, 4]], [1.0, 2 / 3], rtol=1e-15)


def test_accuracy_of_nothing_is_nan_without_a_numpy_warning():
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert math.isnan(accuracy(np.zeros(0), np.zeros(0, dtype=int)))


def _nll_optimal_temperature(logits: np.ndarray, y: np.ndarray) -> float:
    """1 / beta where d NLL / d beta = 0 (the NLL is convex in beta = 1 / T): a root, found to 1e-14."""
    from scipy.optimize import brentq
    from scipy.special import expit, softmax

    if logits.ndim == 1:
        grad = lambda b: float(np.sum((y - expit(b * logits)) * logits))  # noqa: E731
    else:
        grad = lambda b: float(np.sum(logits[np.arange(len(y)), y] - np.sum(softmax(b * logits, axis=1) * logits, axis=1)))  # noqa: E731
    return 1.0 / brentq(grad, 1e-3, 1e3, xtol=1e-14, rtol=1e-14)


@pytest.mark.parametrize("classes", [0, 4])
def test_fit_temperature_equals_the_root_of_the_nll_gradient_to_1e7(classes):
    rng = np.random.default_rng(3)
    if classes:
        y = rng.integers(0, classes, 3000)
        logits = rng.normal(0, 1, (3000, classes))
        logits[np.arange(3000), y] += 1.5
        logits *= 2.7  # over-confident: T near 2
    else:
        z = rng.normal(0, 2, 3000)
        y = (rng.random(3000) < 1 / (1 + np.exp(-z))).astype(int)
        logits = 0.6 * z  # under-confident: T below 1
    want = _nll_optimal_temperature(logits, y)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # far from the search bounds: no warning
        got = fit_temperature(logits, y)
    assert got == pytest.approx(want, rel=1e-7)  # scipy's default xatol (1e-5 in log T) is not this tight


def test_fit_temperature_bound_warning_points_at_the_caller():
    z = np.random.default_rng(4).normal(0, 1, 500)
    with pytest.warns(RuntimeWarning, match="on the search bound") as record:
        fit_temperature(z, (z < 0).astype(int))  # anti-correlated: the largest T allowed
    assert record[0].filename == __file__ or "mutmut" in record[0].filename
    # T = 60 (log T 4.1, within one unit of the bound 5 but not on it): fitted, and no warning
    y = (np.random.default_rng(5).random(500) < 1 / (1 + np.exp(-z))).astype(int)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        t = fit_temperature(60.0 * z, y)
    assert t == pytest.approx(_nll_optimal_temperature(60.0 * z, y), rel=1e-7) and 4.0 < math.log(t) < 4.999


def test_fit_temperature_ece_grid_default_grid_is_0_5_to_3_in_steps_of_0_001():
    from analysis.calibration import fit_temperature_ece_grid

    rng = np.random.default_rng(6)
    z = rng.normal(0, 1.5, 2000)
    y = (rng.random(2000) < 1 / (1 + np.exp(-z))).astype(int)
    grid = np.arange(500, 3001) / 1000  # independent of the function's own arange

    def brute(logits):
        values = np.array([ece(probabilities_from_logits(logits, t), y) for t in grid])
        return grid[int(np.argmin(values))], float(values.min())

    for scale in (0.7, 30.0):  # under-confident (best T inside, below 1); very over-confident (best T at 3.0)
        t, e = fit_temperature_ece_grid(scale * z, y)
        want_t, want_e = brute(scale * z)
        assert (t, e) == (pytest.approx(want_t, abs=1e-12), pytest.approx(want_e, abs=1e-15))
    assert fit_temperature_ece_grid(30.0 * z, y)[0] == 3.0
    assert 0.5 < fit_temperature_ece_grid(0.7 * z, y)[0] < 1.0


def test_calibration_report_passes_its_bins_to_both_eces():
    from analysis.calibration import calibration_report

    rng = np.random.default_rng(7)
    logits = rng.normal(0, 2, 400)
    y = (rng.random(400) < 0.5).astype(int)
    report = calibration_report(logits, y, temperature=1.3, n_bins=7)
    probs = probabilities_from_logits(logits, 1.3)
    assert report["adaptive_ece"] == adaptive_ece(probs, y, 7) != adaptive_ece(probs, y, 15)
    assert report["ece"] == ece(probs, y, 7)
