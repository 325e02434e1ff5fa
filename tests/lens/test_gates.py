"""Shortcut gates on constructed sets: an obvious core shortcut must FAIL, pure noise must PASS."""

import numpy as np
import pytest

from analysis.lens.gates import core_features, radial_features, shortcut_gates
from analysis.metrics import gate_verdict
from analysis.lens.images import core_mask, radial_median_model, radial_profile


def _stamps(n: int, size: int = 31, core_boost: float = 0.0, seed: int = 0):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, 3, size, size)).astype(np.float32)
    y = np.arange(n) % 2
    if core_boost:
        x[y == 1] += core_boost * core_mask(size, 4)  # positives brighter in the centre only
    return x, y


def test_core_shortcut_fails_gate():
    x, y = _stamps(400, core_boost=0.8)
    g = shortcut_gates(x, y, core_radius=5, n_folds=5)
    assert g["core_lr_auc"] > 0.9 and gate_verdict(g["core_lr_auc"], 0.60, 0.65) == "FAIL"
    assert g["radial_lr_auc"] > 0.9 and gate_verdict(g["radial_lr_auc"], 0.55, 0.60) == "FAIL"
    assert g["gate_n_samples"] == 400


def test_no_shortcut_passes_gate():
    x, y = _stamps(400)
    g = shortcut_gates(x, y, core_radius=5, n_folds=5)
    assert gate_verdict(g["core_lr_auc"], 0.60, 0.65) == "PASS"
    assert gate_verdict(g["radial_lr_auc"], 0.55, 0.60) == "PASS"


def test_signal_outside_core_is_invisible_to_core_gate():
    x, y = _stamps(400)
    ring = (np.hypot(*np.mgrid[:31, :31] - 15) > 9)
    x[y == 1] += 0.8 * ring
    g = shortcut_gates(x, y, core_radius=5)
    assert g["core_lr_auc"] < 0.6 and g["radial_lr_auc"] > 0.9


def test_verdict_boundaries():
    assert gate_verdict(0.59, 0.60, 0.65) == "PASS"
    assert gate_verdict(0.60, 0.60, 0.65) == "WARN"
    assert gate_verdict(0.65, 0.60, 0.65) == "WARN"
    assert gate_verdict(0.651, 0.60, 0.65) == "FAIL"
    assert gate_verdict(float("nan"), 0.6, 0.65) == "N/A"


def test_gate_needs_both_classes():
    x, y = _stamps(20)
    with pytest.raises(ValueError, match="each class"):
        shortcut_gates(x, np.zeros(20, int), core_radius=3)


def test_features_and_profile_by_hand():
    img = np.zeros((1, 1, 5, 5))
    img[0, 0, 2, 2] = 9.0          # centre → ring 0
    img[0, 0, 2, 3] = 4.0          # distance 1 → ring 1 (4 pixels at distance 1, 4 at sqrt2→ring 1)
    prof = radial_profile(img)
    assert prof.shape == (1, 1, 3)
    assert prof[0, 0, 0] == 9.0
    assert prof[0, 0, 1] == pytest.approx(4.0 / 8)   # 8 pixels with round(r) == 1
    assert core_features(img, 1.0).shape == (1, 1)    # only the centre is strictly inside r=1
    assert radial_features(np.zeros((2, 3, 5, 5))).shape == (2, 9)


def test_radial_median_model_keeps_thin_arc():
    size = 41
    r = np.hypot(*np.mgrid[:size, :size] - 20)
    host = 100 * np.exp(-r / 3)
    arc = np.where((np.abs(r - 10) < 1) & (np.mgrid[:size, :size][1] > 25), 20.0, 0.0)  # a short arc segment
    stamp = (host + arc)[None, None]
    resid = stamp - radial_median_model(stamp)
    # host removed: what is left off the arc is under a tenth of the host's light (rings are 1 px wide)
    assert np.abs(resid[0, 0][arc == 0]).sum() < 0.10 * host.sum()
    assert resid[0, 0][arc > 0].mean() > 15               # arc survives


def test_paired_data_need_group_folds():
    # Paired set: each positive is its negative's host plus a faint signal outside the core. A shared,
    # strongly varying host makes plain CV anti-informative; keeping pairs in one fold gives ~0.5.
    rng = np.random.default_rng(3)
    n_pairs, size = 300, 21
    hosts = rng.normal(size=(n_pairs, 1, 1, 1)) * 5 * core_mask(size, 4) + rng.normal(size=(n_pairs, 3, size, size))
    x = np.concatenate([hosts, hosts + 0.01 * rng.normal(size=hosts.shape)]).astype(np.float32)
    y = np.r_[np.zeros(n_pairs, int), np.ones(n_pairs, int)]
    pair = np.r_[np.arange(n_pairs), np.arange(n_pairs)]
    plain = shortcut_gates(x, y, core_radius=4)["core_lr_auc"]
    grouped = shortcut_gates(x, y, core_radius=4, groups=pair)["core_lr_auc"]
    assert abs(grouped - 0.5) < 0.08
    assert plain < grouped - 0.05  # the leak drags plain CV below chance


# ---- the gate values against a fold-by-fold reference (issue 27: mutation testing) ----

from sklearn.linear_model import LogisticRegression  # noqa: E402
from sklearn.metrics import roc_auc_score  # noqa: E402
from sklearn.model_selection import StratifiedGroupKFold, StratifiedKFold  # noqa: E402

from analysis.lens.gates import cv_lr_auroc  # noqa: E402


def _cv_auroc_by_hand(features, labels, n_folds=5, seed=0, groups=None, standardise=True):
    """The gate's AUROC rebuilt fold by fold: standardise on the training folds (float64), fit, pool, score once."""
    x = np.asarray(features, dtype=np.float64)
    y = np.asarray(labels)
    splitter = (StratifiedKFold(n_folds, shuffle=True, random_state=seed) if groups is None
                else StratifiedGroupKFold(n_folds, shuffle=True, random_state=seed))
    proba = np.full(len(y), np.nan)
    for train, test in splitter.split(x, y, groups):
        mu, sd = x[train].mean(axis=0), x[train].std(axis=0)
        sd[sd == 0] = 1.0
        if not standardise:
            mu, sd = np.zeros_like(mu), np.ones_like(sd)
        lr = LogisticRegression(max_iter=1000).fit((x[train] - mu) / sd, y[train])
        proba[test] = lr.predict_proba((x[test] - mu) / sd)[:, 1]
    assert not np.isnan(proba).any()
    return roc_auc_score(y, proba)


def _weak_signal(n=60, seed=0):
    """Features of very different scales with a weak label signal (AUROC well inside (0.5, 1))."""
    rng = np.random.default_rng(seed)
    y = np.arange(n) % 2
    x = rng.normal(size=(n, 4)) + 0.6 * y[:, None] * np.array([1.0, 0.5, 0.0, 0.3])
    return x * np.array([1e-3, 1.0, 1e3, 10.0]), y


def test_cv_auroc_equals_the_fold_by_fold_reference():
    x, y = _weak_signal()
    want = _cv_auroc_by_hand(x, y)
    # the reference must move with the folds, the seed and the scaling, or this test could not fail
    assert len({want, _cv_auroc_by_hand(x, y, seed=1), _cv_auroc_by_hand(x, y, n_folds=6), _cv_auroc_by_hand(x, y, 3, 7)}) == 4
    assert abs(_cv_auroc_by_hand(x, y, standardise=False) - want) > 1e-3  # an unscaled LR would differ
    assert cv_lr_auroc(x, y) == pytest.approx(want, abs=1e-12)  # defaults: 5 folds, seed 0
    assert cv_lr_auroc(x, y, n_folds=3, seed=7) == pytest.approx(_cv_auroc_by_hand(x, y, 3, 7), abs=1e-12)
    assert cv_lr_auroc(x, y) == cv_lr_auroc(x, y)  # the folds are seeded, never random


def test_grouped_cv_auroc_equals_the_fold_by_fold_reference():
    x, y = _weak_signal(80, seed=2)
    groups = np.arange(80) // 4  # groups of two positives and two negatives
    want = _cv_auroc_by_hand(x, y, groups=groups)
    assert len({want, _cv_auroc_by_hand(x, y), _cv_auroc_by_hand(x, y, seed=1, groups=groups),
                _cv_auroc_by_hand(x, y, 3, 7, groups)}) == 4
    assert cv_lr_auroc(x, y, groups=groups) == pytest.approx(want, abs=1e-12)
    assert cv_lr_auroc(x, y, 3, 7, groups=groups) == pytest.approx(_cv_auroc_by_hand(x, y, 3, 7, groups), abs=1e-12)
    assert cv_lr_auroc(x, y, groups=groups) == cv_lr_auroc(x, y, groups=groups)


def test_a_class_of_exactly_n_folds_samples_is_enough():
    x, y = _weak_signal(10)  # five of each class
    assert 0.0 <= cv_lr_auroc(x, y, n_folds=5) <= 1.0
    with pytest.raises(ValueError, match=r"at least 6 samples of each class, got \[5, 5\]"):
        cv_lr_auroc(x, y, n_folds=6)
    with pytest.raises(ValueError, match=r"got \[10, 0\]"):  # one class absent: counted as 0, not dropped
        cv_lr_auroc(x, np.zeros(10, int))


def test_float32_features_are_standardised_in_float64():
    # one feature, values a float32 ulp apart at 4096: standardised in float32, neighbours collapse into
    # ties and the AUROC moves (0.3025 instead of 0.305 here)
    rng = np.random.default_rng(9)
    x = (np.float32(4096.0) + rng.integers(0, 40, 40).astype(np.float32) * np.spacing(np.float32(4096.0)))
    x = x.astype(np.float32)[:, None]
    y = np.arange(40) % 2
    want = _cv_auroc_by_hand(x, y)
    assert want == pytest.approx(0.305, abs=1e-12)
    assert cv_lr_auroc(x, y) == pytest.approx(want, abs=1e-12)


def test_radial_features_use_the_given_number_of_annuli():
    img = np.random.default_rng(0).normal(size=(2, 3, 11, 11))
    feats = radial_features(img, 2)
    assert feats.shape == (2, 6)
    np.testing.assert_array_equal(feats, radial_profile(img, 2).reshape(2, 6))
    # band-major: band 1's two annuli follow band 0's
    assert feats[1, 2] == radial_profile(img, 2)[1, 1, 0]


def test_shortcut_gates_pass_folds_seed_bins_and_groups_to_both_gates():
    x, y = _stamps(80, size=11, core_boost=0.25, seed=4)
    groups = np.arange(80) // 4
    g = shortcut_gates(x, y, core_radius=3, radial_bins=3, n_folds=4, seed=3, groups=groups)
    assert g["core_lr_auc"] == pytest.approx(_cv_auroc_by_hand(core_features(x, 3), y, 4, 3, groups), abs=1e-12)
    assert g["radial_lr_auc"] == pytest.approx(_cv_auroc_by_hand(radial_features(x, 3), y, 4, 3, groups), abs=1e-12)
    # defaults: 5 folds, seed 0, annuli to the stamp edge, no groups
    d = shortcut_gates(x, y, core_radius=3)
    assert d["core_lr_auc"] == pytest.approx(_cv_auroc_by_hand(core_features(x, 3), y), abs=1e-12)
    assert d["radial_lr_auc"] == pytest.approx(_cv_auroc_by_hand(radial_features(x), y), abs=1e-12)
    assert d["gate_n_samples"] == 80 and isinstance(d["gate_n_samples"], int)
    # each setting moves the values, so each is checked above
    core, radial = core_features(x, 3), radial_features(x, 3)
    assert len({g["radial_lr_auc"], _cv_auroc_by_hand(radial, y, 4, 3), _cv_auroc_by_hand(radial, y, 4, 0, groups),
                _cv_auroc_by_hand(radial, y, 5, 3, groups), _cv_auroc_by_hand(radial_features(x), y, 4, 3, groups)}) == 5
    assert len({g["core_lr_auc"], _cv_auroc_by_hand(core, y, 4, 3), _cv_auroc_by_hand(core, y, 4, 0, groups),
                _cv_auroc_by_hand(core, y, 5, 3, groups)}) == 4
