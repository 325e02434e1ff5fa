"""Ranking metrics that stay honest on awkward inputs: single-class sets give NaN, never 0.0."""

from __future__ import annotations

import math
import warnings
from collections.abc import Sequence

import numpy as np
from sklearn.metrics import roc_auc_score


def auroc(targets: np.ndarray, scores: np.ndarray) -> float:
    """AUROC, or NaN with a warning when it is undefined (never 0.0).

    Args:
        targets: (N,) integer labels.
        scores: (N,) scores for a binary problem; (N, C) probabilities for one-vs-rest macro AUROC.

    Returns:
        sklearn's roc_auc_score, or NaN (with a RuntimeWarning) when a class needed is absent: a single
        class for binary input; any of the C classes for multiclass input.
    """
    targets = np.asarray(targets).astype(np.int64).ravel()
    scores = np.asarray(scores, dtype=np.float64)
    present = np.unique(targets)
    if scores.ndim == 1:
        if present.size < 2:
            warnings.warn(f"AUROC undefined: {targets.size} samples of a single class; reporting NaN", RuntimeWarning, stacklevel=2)
            return float("nan")
        return float(roc_auc_score(targets, scores))
    n_classes = scores.shape[1]
    if present.size < n_classes:
        warnings.warn(
            f"AUROC undefined: only classes {present.tolist()} of {n_classes} present; reporting NaN",
            RuntimeWarning,
            stacklevel=2,
        )
        return float("nan")
    return float(roc_auc_score(targets, scores, multi_class="ovr", average="macro", labels=np.arange(n_classes)))


def bin_label(low: float, high: float) -> str:
    """Name of a [low, high) bin as used in metric keys, e.g. '0.50-0.75'."""
    return f"{low:.2f}-{high:.2f}"


def stratified_auroc(
    targets: np.ndarray,
    scores: np.ndarray,
    strata: np.ndarray,
    edges: Sequence[float],
) -> list[dict]:
    """AUROC of each stratum's positives against ALL negatives.

    This is the θ_E-stratified AUROC of the lens plan: negatives carry no θ_E, so each θ_E bin is scored
    as "its positives versus every negative". A bin with no positives (or a set with no negatives) gets
    NaN and its counts, never 0.0.

    Args:
        targets: Binary labels.
        scores: Model scores.
        strata: Stratifying value per sample (NaN for negatives is fine; it is ignored for them).
        edges: Increasing bin edges; bin i is [edges[i], edges[i+1]).

    Returns:
        One dict per bin: low, high, label, auroc, n_pos, n_neg.
    """
    targets = np.asarray(targets).astype(int).ravel()
    scores = np.asarray(scores, dtype=float).ravel()
    strata = np.asarray(strata, dtype=float).ravel()
    if not (targets.shape == scores.shape == strata.shape):
        raise ValueError(
            f"targets, scores and strata must have the same length, got {targets.size}, {scores.size}, {strata.size}"
        )
    edges = [float(e) for e in edges]
    if any(b <= a for a, b in zip(edges, edges[1:])):
        raise ValueError(f"bin edges must increase strictly, got {edges}")
    neg = targets == 0
    rows = []
    for low, high in zip(edges, edges[1:]):
        pos = (targets == 1) & (strata >= low) & (strata < high)
        n_pos, n_neg = int(pos.sum()), int(neg.sum())
        if n_pos == 0 or n_neg == 0:
            value = float("nan")
        else:
            sel = pos | neg
            value = float(roc_auc_score(targets[sel], scores[sel]))
        rows.append(dict(low=low, high=high, label=bin_label(low, high), auroc=value, n_pos=n_pos, n_neg=n_neg))
    return rows


def spread_summary(rows: list[dict]) -> dict[str, float]:
    """Minimum AUROC and max-minus-min spread over the bins that have a value."""
    values = [r["auroc"] for r in rows if not math.isnan(r["auroc"])]
    if not values:
        return {"min_auroc": float("nan"), "spread": float("nan")}
    return {"min_auroc": min(values), "spread": max(values) - min(values)}
