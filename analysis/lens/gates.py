"""Shortcut gates: can a linear model find the label in the core pixels or the radial profile?

If a logistic regression on the central pixels alone (or on the azimuthally averaged profile) separates
lenses from non-lenses, the data carry a shortcut that a CNN can take instead of learning arcs. The gate
values are 5-fold cross-validated AUROCs, so a value near 0.5 means no shortcut.
"""

from __future__ import annotations

import numpy as np
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import StratifiedGroupKFold, StratifiedKFold, cross_val_predict
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from analysis.lens.images import core_mask, radial_profile
from analysis.metrics import auroc


def core_features(images: np.ndarray, core_radius: float) -> np.ndarray:
    """The pixels of every band strictly inside `core_radius`, flattened to (N, n_features)."""
    mask = core_mask(images.shape[-1], core_radius)
    return np.asarray(images)[..., mask].reshape(len(images), -1)


def radial_features(images: np.ndarray, n_bins: int | None = None) -> np.ndarray:
    """Azimuthally averaged profile of every band, flattened to (N, C * n_bins)."""
    return radial_profile(images, n_bins).reshape(len(images), -1)


def cv_lr_auroc(
    features: np.ndarray,
    labels: np.ndarray,
    n_folds: int = 5,
    seed: int = 0,
    max_iter: int = 1000,
    groups: np.ndarray | None = None,
) -> float:
    """Cross-validated AUROC of a standardised logistic regression.

    Out-of-fold probabilities from every fold are pooled and scored once, so the value is one AUROC over
    all samples rather than a mean of fold AUROCs. With `groups` (e.g. the pair_id of paired data) the
    members of a group stay in one fold: otherwise a positive is scored by a model that saw its own host
    as a negative, which biases the AUROC (below 0.5 for paired data).
    """
    labels = np.asarray(labels).astype(int)
    counts = np.bincount(labels, minlength=2)
    if counts.min() < n_folds:
        raise ValueError(f"gate needs at least {n_folds} samples of each class, got {counts.tolist()}")
    model = make_pipeline(StandardScaler(), LogisticRegression(max_iter=max_iter))
    if groups is None:
        folds = StratifiedKFold(n_splits=n_folds, shuffle=True, random_state=seed)
    else:
        folds = StratifiedGroupKFold(n_splits=n_folds, shuffle=True, random_state=seed)
    proba = cross_val_predict(model, np.asarray(features, dtype=np.float64), labels, cv=folds, method="predict_proba", groups=groups)
    return auroc(labels, proba[:, 1])


def shortcut_gates(
    images: np.ndarray,
    labels: np.ndarray,
    core_radius: float,
    radial_bins: int | None = None,
    n_folds: int = 5,
    seed: int = 0,
    groups: np.ndarray | None = None,
) -> dict[str, float]:
    """Both gate values on one set of model inputs.

    Args:
        images: Model inputs (N, C, H, W), as the model sees them.
        labels: Binary labels.
        core_radius: Radius (pixels) of the core whose pixels feed the core gate.
        radial_bins: Number of annuli of the radial profile (default: to the stamp edge).
        n_folds: Cross-validation folds.
        seed: Fold shuffling seed.
        groups: Optional group per sample (pair_id); a group never spans two folds.

    Returns:
        {"core_lr_auc": ..., "radial_lr_auc": ..., "gate_n_samples": N}
    """
    return {
        "core_lr_auc": cv_lr_auroc(core_features(images, core_radius), labels, n_folds, seed, groups=groups),
        "radial_lr_auc": cv_lr_auroc(radial_features(images, radial_bins), labels, n_folds, seed, groups=groups),
        "gate_n_samples": int(len(labels)),
    }
