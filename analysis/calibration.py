"""Calibration: probabilities from logits, ECE and friends, temperature scaling, MC-Dropout triage.

Conventions used throughout:

- ``probs`` is 1-D for a binary problem (p(class 1)) and 2-D (N, C) with rows summing to 1 otherwise.
- Top-label confidence and prediction: binary ``max(p, 1 - p)`` and ``p >= 0.5``; multiclass the row
  maximum and its argmax.
- ECE uses the equal-width bins of seed 000: [0, 1/M), [1/M, 2/M), ..., [(M-1)/M, 1]. The last bin is
  closed, so a confidence of exactly 1.0 is counted (torchmetrics puts it in a hidden extra bin).
"""

from __future__ import annotations

import math
import warnings

import numpy as np
from scipy.optimize import minimize_scalar
from scipy.special import expit, log_softmax, softmax

#: Search interval for log T in fit_temperature: T in [e^-5, e^5] ~ [0.0067, 148].
LOG_T_BOUNDS = (-5.0, 5.0)


def _check_targets(targets: np.ndarray, n: int) -> np.ndarray:
    targets = np.asarray(targets)
    if targets.shape != (n,):
        raise ValueError(f"targets must have shape ({n},), got {targets.shape}")
    if targets.size and not np.all(targets == np.round(targets)):
        raise ValueError("targets must be integer class labels")
    return targets.astype(np.int64)


def _probs(probs: np.ndarray) -> np.ndarray:
    probs = np.asarray(probs, dtype=np.float64)
    if probs.ndim == 2 and probs.shape[1] == 1:
        probs = probs[:, 0]
    if probs.ndim not in (1, 2):
        raise ValueError(f"probs must be 1-D (binary) or 2-D (N, C), got shape {probs.shape}")
    if not np.all(np.isfinite(probs)) or probs.min(initial=0.0) < 0 or probs.max(initial=0.0) > 1:
        raise ValueError("probs must be finite and lie in [0, 1]; pass probabilities, not logits")
    return probs


def probabilities_from_logits(logits: np.ndarray, temperature: float = 1.0) -> np.ndarray:
    """Probabilities from logits divided by a temperature.

    Args:
        logits: (N,) binary logits, or (N, C) multiclass logits. (N, 1) is treated as binary.
        temperature: T > 0; T > 1 softens, T < 1 sharpens.

    Returns:
        (N,) p(class 1) = sigmoid(logit / T) for binary input, (N, C) softmax(logits / T) otherwise.
    """
    if not (temperature > 0 and math.isfinite(temperature)):
        raise ValueError(f"temperature must be a finite number > 0, got {temperature}")
    logits = np.asarray(logits, dtype=np.float64)
    if logits.ndim == 2 and logits.shape[1] == 1:
        logits = logits[:, 0]
    if logits.ndim == 1:
        return expit(logits / temperature)
    if logits.ndim == 2:
        return softmax(logits / temperature, axis=1)
    raise ValueError(f"logits must be 1-D (binary) or 2-D (N, C), got shape {logits.shape}")


def top_label(probs: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Top-label confidence and predicted class.

    Args:
        probs: (N,) p(class 1) or (N, C) class probabilities.

    Returns:
        (confidence, prediction): binary max(p, 1 - p) and p >= 0.5; multiclass max and argmax.
    """
    probs = _probs(probs)
    if probs.ndim == 1:
        return np.maximum(probs, 1.0 - probs), (probs >= 0.5).astype(np.int64)
    return probs.max(axis=1), probs.argmax(axis=1).astype(np.int64)


def bin_edges(n_bins: int = 15) -> np.ndarray:
    """The n_bins + 1 equal-width edges 0, 1/M, ..., 1."""
    if n_bins < 1:
        raise ValueError(f"n_bins must be >= 1, got {n_bins}")
    return np.linspace(0.0, 1.0, n_bins + 1)


def reliability_bins(probs: np.ndarray, targets: np.ndarray, n_bins: int = 15) -> dict[str, np.ndarray]:
    """Per-bin mean confidence, accuracy and count for an equal-width reliability diagram.

    Bins are [0, 1/M), ..., [(M-1)/M, 1]: a confidence equal to an inner edge goes to the bin above it
    and a confidence of exactly 1.0 to the last bin.

    Args:
        probs: (N,) p(class 1) or (N, C) class probabilities.
        targets: (N,) integer labels.
        n_bins: Number of bins M.

    Returns:
        Dict of arrays of length M: ``lower``, ``upper``, ``confidence`` and ``accuracy`` (NaN for an
        empty bin) and ``count``.
    """
    conf, pred = top_label(probs)
    targets = _check_targets(targets, conf.shape[0])
    edges = bin_edges(n_bins)
    # side="right" on the inner edges: value == edge k goes to bin k; 1.0 exceeds all inner edges -> M-1.
    idx = np.searchsorted(edges[1:-1], conf, side="right")
    count = np.bincount(idx, minlength=n_bins).astype(np.int64)
    conf_sum = np.bincount(idx, weights=conf, minlength=n_bins)
    acc_sum = np.bincount(idx, weights=(pred == targets).astype(np.float64), minlength=n_bins)
    # an empty bin has sums 0 and count 0: 0/0 is its NaN (as in analysis.significance's undefined resamples)
    with np.errstate(invalid="ignore"):
        mean_conf, mean_acc = conf_sum / count, acc_sum / count
    return {"lower": edges[:-1], "upper": edges[1:], "confidence": mean_conf, "accuracy": mean_acc, "count": count}


def ece(probs: np.ndarray, targets: np.ndarray, n_bins: int = 15) -> float:
    """Top-label expected calibration error with equal-width bins.

    ECE = sum_b (n_b / N) * |acc_b - conf_b| over non-empty bins (seed 000, M = 15).

    Args:
        probs: (N,) p(class 1) or (N, C) class probabilities.
        targets: (N,) integer labels.
        n_bins: Number of bins M.
    """
    bins = reliability_bins(probs, targets, n_bins)
    count = bins["count"]
    n = count.sum()
    if n == 0:
        return math.nan
    full = count > 0
    return float(np.sum(count[full] / n * np.abs(bins["accuracy"][full] - bins["confidence"][full])))


def adaptive_ece(probs: np.ndarray, targets: np.ndarray, n_bins: int = 15) -> float:
    """Top-label ECE with equal-mass bins (adaptive ECE).

    Samples are sorted by confidence and cut into n_bins groups whose sizes differ by at most one, so
    every bin carries the same weight; empty groups (N < n_bins) are skipped.

    Args:
        probs: (N,) p(class 1) or (N, C) class probabilities.
        targets: (N,) integer labels.
        n_bins: Number of bins.
    """
    conf, pred = top_label(probs)
    targets = _check_targets(targets, conf.shape[0])
    n = conf.shape[0]
    if n == 0:
        return math.nan
    correct = (pred == targets).astype(np.float64)
    order = np.argsort(conf, kind="stable")
    total = 0.0
    for group in np.array_split(order, n_bins):
        if group.size:
            total += group.size / n * abs(correct[group].mean() - conf[group].mean())
    return float(total)


def brier(probs: np.ndarray, targets: np.ndarray) -> float:
    """Brier score.

    Binary (1-D probs): mean (p - y)^2, the usual binary score in [0, 1]. Multiclass (2-D): mean over
    samples of sum_k (p_k - onehot_k)^2, in [0, 2]. For two classes the multiclass form is exactly twice
    the binary one, so only compare Brier scores computed the same way.
    """
    probs = _probs(probs)
    targets = _check_targets(targets, probs.shape[0])
    if probs.ndim == 1:
        return float(np.mean((probs - targets) ** 2))
    onehot = np.eye(probs.shape[1])[targets]
    return float(np.mean(np.sum((probs - onehot) ** 2, axis=1)))


def nll(probs: np.ndarray, targets: np.ndarray, eps: float = 1e-12) -> float:
    """Mean negative log-likelihood of the true class, from probabilities (clipped at eps).

    Prefer nll_from_logits when logits are available: it does not saturate.
    """
    probs = _probs(probs)
    targets = _check_targets(targets, probs.shape[0])
    p_true = np.where(targets == 1, probs, 1.0 - probs) if probs.ndim == 1 else probs[np.arange(len(targets)), targets]
    return float(-np.mean(np.log(np.clip(p_true, eps, 1.0))))


def nll_from_logits(logits: np.ndarray, targets: np.ndarray, temperature: float = 1.0) -> float:
    """Mean negative log-likelihood of the true class of softmax/sigmoid(logits / T), computed stably.

    Args:
        logits: (N,) binary or (N, C) multiclass logits.
        targets: (N,) integer labels.
        temperature: T > 0.
    """
    logits = np.asarray(logits, dtype=np.float64)
    if logits.ndim == 2 and logits.shape[1] == 1:
        logits = logits[:, 0]
    targets = _check_targets(targets, logits.shape[0])
    z = logits / temperature
    if z.ndim == 1:
        # -log sigmoid(z) for y=1 and -log(1 - sigmoid(z)) for y=0, both as logaddexp(0, +-z).
        return float(np.mean(np.logaddexp(0.0, z) - targets * z))
    return float(-np.mean(log_softmax(z, axis=1)[np.arange(len(targets)), targets]))


def accuracy(probs: np.ndarray, targets: np.ndarray) -> float:
    """Fraction of top-label predictions equal to the target (binary threshold p >= 0.5)."""
    _, pred = top_label(probs)
    targets = _check_targets(targets, pred.shape[0])
    return float(np.mean(pred == targets)) if targets.size else math.nan


def fit_temperature(
    logits: np.ndarray,
    targets: np.ndarray,
    log_t_bounds: tuple[float, float] = LOG_T_BOUNDS,
) -> float:
    """The temperature T that minimises the NLL of the logits (temperature scaling).

    T is searched as log T, so T > 0 by construction. The NLL is convex in 1/T (a one-parameter
    logistic/softmax model), hence unimodal in log T, and bounded Brent finds the global minimum on the
    interval. Fit it on validation or dev predictions, never on the test split.

    Args:
        logits: (N,) binary or (N, C) multiclass logits.
        targets: (N,) integer labels.
        log_t_bounds: Search interval for log T.

    Returns:
        The fitted temperature. A warning is issued when it sits on the search bound (for example when
        the logits are anti-correlated with the targets, the best positive T is as large as allowed).
    """
    logits = np.asarray(logits, dtype=np.float64)
    targets = _check_targets(targets, logits.shape[0])
    if logits.shape[0] == 0:
        raise ValueError("cannot fit a temperature on zero samples")
    lo, hi = log_t_bounds
    res = minimize_scalar(
        lambda log_t: nll_from_logits(logits, targets, math.exp(log_t)),
        bounds=(lo, hi),
        method="bounded",
        options={"xatol": 1e-8},
    )
    log_t = float(res.x)
    if min(log_t - lo, hi - log_t) < 1e-3:
        warnings.warn(
            f"fitted temperature {math.exp(log_t):.4g} is on the search bound "
            f"[{math.exp(lo):.4g}, {math.exp(hi):.4g}]; the logits may carry no (or inverted) signal",
            RuntimeWarning,
            stacklevel=2,
        )
    return math.exp(log_t)


def fit_temperature_ece_grid(
    logits: np.ndarray, targets: np.ndarray, grid: np.ndarray | None = None, n_bins: int = 15
) -> tuple[float, float]:
    """The grid temperature with the lowest ECE (the smallest T on ties) and that ECE.

    The seed 000 way of fitting a temperature. ECE is a step function of T (samples jump between bins),
    so its minimiser is found by search, not by a gradient; the seed searched 0.5, 1.0, ..., 2.5 and
    reports T = 1.431 and 1.504, so a fine grid. Rigor's default is the NLL fit, ``fit_temperature``.

    Args:
        logits: (N, C) or (N,) logits of the validation split (never the test split).
        targets: (N,) integer labels.
        grid: Candidate temperatures > 0 (default 0.5 to 3.0 in steps of 0.001).
        n_bins: ECE bins (seed: 15).

    Returns:
        (temperature, ece at that temperature).
    """
    grid = np.round(np.arange(0.5, 3.0 + 1e-9, 0.001), 6) if grid is None else np.asarray(grid, dtype=np.float64)
    if grid.size == 0 or np.any(grid <= 0) or not np.all(np.isfinite(grid)):
        raise ValueError("the temperature grid must hold finite values > 0")
    values = np.array([ece(probabilities_from_logits(logits, float(t)), targets, n_bins) for t in grid])
    best = int(np.nanargmin(values))  # first minimum: the smallest T among ties
    return float(grid[best]), float(values[best])


TRIAGE_CLASSES = ("review", "spot_check", "auto_approve")


def triage_labels(
    mean_prob: np.ndarray,
    std: np.ndarray,
    review_std: float,
    auto_conf: float,
    auto_std: float,
) -> np.ndarray:
    """Per-sample MC-Dropout triage label (seed 000).

    Rule, in order: std > review_std -> "review"; max class probability > auto_conf and std < auto_std
    -> "auto_approve"; otherwise "spot_check".

    Args:
        mean_prob: MC mean probabilities, (N,) p(class 1) or (N, C).
        std: (N,) std of the predicted class probability over the passes.
        review_std: Uncertainty above which a sample goes to human review.
        auto_conf: Confidence above which (with low std) a sample is auto-approved.
        auto_std: Uncertainty below which (with high confidence) a sample is auto-approved.
    """
    conf, _ = top_label(mean_prob)
    std = np.asarray(std, dtype=np.float64)
    if std.shape != conf.shape:
        raise ValueError(f"std must have shape {conf.shape}, got {std.shape}")
    labels = np.full(conf.shape, "spot_check", dtype=object)
    auto = (conf > auto_conf) & (std < auto_std)
    labels[auto] = "auto_approve"
    labels[std > review_std] = "review"  # review wins: it is checked first in the seed's rule
    return labels


def mc_triage(
    mean_prob: np.ndarray,
    std: np.ndarray,
    review_std: float,
    auto_conf: float,
    auto_std: float,
) -> dict[str, float]:
    """Counts (and fractions) of review / spot_check / auto_approve under seed 000's triage rule.

    See triage_labels for the rule and arguments.

    Returns:
        ``{"review", "spot_check", "auto_approve", "n"}`` counts plus ``frac_<class>`` fractions.
    """
    labels = triage_labels(mean_prob, std, review_std, auto_conf, auto_std)
    n = int(labels.size)
    out: dict[str, float] = {k: int(np.sum(labels == k)) for k in TRIAGE_CLASSES}
    out["n"] = n
    for k in TRIAGE_CLASSES:
        out[f"frac_{k}"] = out[k] / n if n else math.nan
    return out


def calibration_report(logits: np.ndarray, targets: np.ndarray, temperature: float = 1.0, n_bins: int = 15) -> dict[str, float]:
    """ECE, adaptive ECE, Brier, NLL and accuracy of logits / T.

    Args:
        logits: (N,) binary or (N, C) multiclass logits.
        targets: (N,) integer labels.
        temperature: T > 0.
        n_bins: Bins for both ECEs.
    """
    probs = probabilities_from_logits(logits, temperature)
    return {
        "ece": ece(probs, targets, n_bins),
        "adaptive_ece": adaptive_ece(probs, targets, n_bins),
        "brier": brier(probs, targets),
        "nll": nll_from_logits(logits, targets, temperature),
        "accuracy": accuracy(probs, targets),
    }
