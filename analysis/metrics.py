"""Ranking metrics that stay honest on awkward inputs: single-class sets give NaN, never 0.0; stratified metrics."""

from __future__ import annotations

import math
import warnings
from collections.abc import Mapping, Sequence
from typing import Any

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
            return math.nan
        return float(roc_auc_score(targets, scores))
    n_classes = scores.shape[1]
    if present.size < n_classes:
        warnings.warn(
            f"AUROC undefined: only classes {present.tolist()} of {n_classes} present; reporting NaN",
            RuntimeWarning,
            stacklevel=2,
        )
        return math.nan
    return float(roc_auc_score(targets, scores, multi_class="ovr", average="macro", labels=np.arange(n_classes)))


def bin_label(low: float, high: float) -> str:
    """Name of a [low, high) bin as used in metric keys, e.g. '0.50-0.75'."""
    return f"{low:.2f}-{high:.2f}"


#: Which negatives a stratum's positives are scored against.
NEGATIVES = ("all", "same_bin")


def check_edges(edges: Sequence[float], where: str = "bin edges") -> list[float]:
    """Bin edges as floats, refused unless there are two at least and they increase strictly."""
    try:
        values = [float(e) for e in edges]
    except (TypeError, ValueError):
        raise ValueError(f"{where}: expected a list of numbers, got {edges!r}") from None
    if len(values) < 2 or any(b <= a for a, b in zip(values, values[1:])):
        raise ValueError(f"{where} must increase strictly (two at least), got {values}")
    return values


def bin_spec(where: str, spec: Mapping[str, Any], extra: str = "") -> dict[str, Any]:
    """The ``{column, edges}`` of a stratified metric (callbacks' configs), checked before any data is seen.

    Args:
        where: The config path, for the error (e.g. ``strata.thetae``).
        spec: The config entry.
        extra: The entry's other keys, named in the error (e.g. ``, negatives, required``).

    Returns:
        ``{"column": str, "edges": [float, ...]}``.
    """
    missing = [k for k in ("column", "edges") if spec.get(k) is None]
    if missing:
        raise ValueError(f"{where}: missing {missing}; expected {{column, edges{extra}}}")
    return {"column": str(spec["column"]), "edges": check_edges(spec["edges"], f"{where}.edges")}


def stratified_metrics(
    targets: np.ndarray,
    scores: np.ndarray,
    strata: np.ndarray,
    edges: Sequence[float],
    negatives: str = "all",
    threshold: float | None = None,
) -> list[dict]:
    """AUROC (and completeness at a fixed threshold) of each stratum of any metadata column.

    One code path for every stratified number: θ_E or arc S/N (negatives carry none: each bin's
    positives against ALL negatives) and PSF bin, depth bin or host magnitude (negatives have them too:
    ``negatives="same_bin"`` scores a bin's positives against that bin's negatives). A bin with no
    positives or no negatives gets NaN AUROC and its counts, never 0.0.

    Args:
        targets: Binary labels.
        scores: Model scores.
        strata: Stratifying value per sample (NaN is in no bin).
        edges: Increasing bin edges; bin i is [edges[i], edges[i+1]).
        negatives: "all" or "same_bin" (see above).
        threshold: A score threshold fixed elsewhere (e.g. FPR 1e-3 on the validation negatives); each
            bin then also gets ``completeness``, the fraction of its positives scored above it (NaN for
            an empty bin), and ``n_detected``.

    Returns:
        One dict per bin: low, high, label, auroc, n_pos, n_neg (and completeness, n_detected).
    """
    targets = np.asarray(targets).astype(int).ravel()
    scores = np.asarray(scores, dtype=float).ravel()
    strata = np.asarray(strata, dtype=float).ravel()
    if not (targets.shape == scores.shape == strata.shape):
        raise ValueError(
            f"targets, scores and strata must have the same length, got {targets.size}, {scores.size}, {strata.size}"
        )
    if negatives not in NEGATIVES:
        raise ValueError(f"negatives must be one of {NEGATIVES}, got {negatives!r}")
    edges = check_edges(edges)
    rows = []
    for low, high in zip(edges, edges[1:]):
        in_bin = (strata >= low) & (strata < high)
        pos = (targets == 1) & in_bin
        neg = (targets == 0) & (in_bin if negatives == "same_bin" else True)
        n_pos, n_neg = int(pos.sum()), int(neg.sum())
        if n_pos == 0 or n_neg == 0:
            value = math.nan
        else:
            sel = pos | neg
            value = float(roc_auc_score(targets[sel], scores[sel]))
        row = dict(low=low, high=high, label=bin_label(low, high), auroc=value, n_pos=n_pos, n_neg=n_neg)
        if threshold is not None:
            detected = int(np.sum(scores[pos] > threshold))
            row["n_detected"] = detected
            row["completeness"] = detected / n_pos if n_pos and not math.isnan(threshold) else math.nan
        rows.append(row)
    return rows


def stratified_auroc(
    targets: np.ndarray,
    scores: np.ndarray,
    strata: np.ndarray,
    edges: Sequence[float],
) -> list[dict]:
    """AUROC of each stratum's positives against ALL negatives (the θ_E-stratified AUROC of the lens plan).

    stratified_metrics with ``negatives="all"``: negatives carry no θ_E, so each θ_E bin is scored as "its
    positives versus every negative"; a bin with no positives (or a set with no negatives) gets NaN and
    its counts, never 0.0.
    """
    return stratified_metrics(targets, scores, strata, edges, negatives="all")


def spread_summary(rows: list[dict]) -> dict[str, float]:
    """Minimum AUROC and max-minus-min spread over the bins that have a value."""
    values = [r["auroc"] for r in rows if not math.isnan(r["auroc"])]
    if not values:
        return {"min_auroc": math.nan, "spread": math.nan}
    return {"min_auroc": min(values), "spread": max(values) - min(values)}


def gate_verdict(value: float, pass_below: float, fail_above: float) -> str:
    """Three-band gate for a lower-is-better value.

    Args:
        value: The measured value.
        pass_below: PASS when value < pass_below.
        fail_above: FAIL when value > fail_above; WARN in between (edges included).

    Returns:
        "PASS", "WARN" or "FAIL"; "N/A" when the value is None or NaN.
    """
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "N/A"
    if value < pass_below:
        return "PASS"
    if value > fail_above:
        return "FAIL"
    return "WARN"


def gate_verdict_above(value: float, pass_above: float, fail_below: float) -> str:
    """Three-band gate for a higher-is-better value: PASS > pass_above, FAIL < fail_below."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "N/A"
    return gate_verdict(-value, -pass_above, -fail_below)
