"""Lens-search metrics: the numbers that decide a finder used at false-positive rates of 1e-3 and below.

Lenses are about 1 in 10^3-10^4 galaxies, so AUROC (an average over every false-positive rate) hides what
matters. The Bologna Lens Finding Challenge (Metcalf et al. 2019) ranks by TPR0 (the highest TPR reached
before the first false positive) and TPR10 (before the tenth), besides AUROC; a search also wants the TPR
at a fixed FPR and the purity expected at the survey's prevalence for a chosen completeness.

Conventions, shared by every function here:

- A sample is flagged when its score is strictly above a threshold set on the negatives; allowing at most
  k false positives puts the threshold at the (k+1)-th highest negative score, so a positive tied with
  that negative is not counted (ties never help). This is the highest TPR on sklearn's ROC curve among
  its points with at most k false positives.
- An FPR is resolved only when the negatives allow at least one false positive at it
  (n_neg >= 1/FPR); otherwise the value is NaN with a warning, never an interpolated guess. TPR0 needs one
  negative, TPR10 ten.
- Purity at completeness c: the threshold is the score of the ceil(c * n_pos)-th best positive (flagged:
  score >= it, the ROC point where TPR first reaches c); with that point's TPR and FPR, purity at
  prevalence p is TPR p / (TPR p + FPR (1 - p)). With no false positive among the negatives the FPR is
  unresolved and purity is NaN (with a warning), not 1.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Sequence

import numpy as np

from analysis.metrics import auroc


def rate_label(x: float) -> str:
    """A rate for metric keys: 1e-3 -> '1e-3', 2.5e-3 -> '2.5e-3', 0.5 -> '0.5'."""
    if x >= 0.1:
        return f"{x:g}"
    mantissa, exponent = f"{x:.3e}".split("e")
    return f"{mantissa.rstrip('0').rstrip('.')}e{int(exponent)}"


def _split_scores(targets: np.ndarray, scores: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    targets = np.asarray(targets).ravel()
    scores = np.asarray(scores, dtype=np.float64).ravel()
    if targets.shape != scores.shape:
        raise ValueError(f"targets and scores must have the same length, got {targets.size} and {scores.size}")
    # checked before the cast to int, which would read a target of 0.7 as 0
    if not np.isin(targets, (0, 1)).all():
        raise ValueError(f"targets must be 0/1, got values {np.unique(targets)[:5].tolist()}")
    targets = targets.astype(int)
    if not np.isfinite(scores).all():
        raise ValueError(f"scores must be finite, got {int((~np.isfinite(scores)).sum())} non-finite value(s)")
    return scores[targets == 1], scores[targets == 0]


def threshold_for_fp(neg_scores: np.ndarray, max_fp: int) -> float:
    """The score threshold that lets at most `max_fp` negatives through (flagged: score > threshold).

    Returns:
        The (max_fp+1)-th highest negative score, or NaN when there are at most `max_fp` negatives (then
        every negative could pass and the count says nothing).
    """
    neg = np.sort(np.asarray(neg_scores, dtype=np.float64).ravel())[::-1]
    if max_fp < 0:
        raise ValueError(f"max_fp must be >= 0, got {max_fp}")
    return float(neg[max_fp]) if neg.size > max_fp else math.nan


def tpr_at_fp_count(targets: np.ndarray, scores: np.ndarray, max_fp: int) -> float:
    """Highest TPR with at most `max_fp` false positives (TPR0: max_fp=0; TPR10: max_fp=9).

    NaN with a RuntimeWarning when there are no positives or at most `max_fp` negatives.
    """
    pos, neg = _split_scores(targets, scores)
    if pos.size == 0 or neg.size <= max_fp:
        warnings.warn(
            f"TPR with at most {max_fp} false positive(s) undefined: {pos.size} positives, {neg.size} negatives "
            f"(needs at least {max_fp + 1}); reporting NaN", RuntimeWarning, stacklevel=2)
        return math.nan
    return float(np.mean(pos > threshold_for_fp(neg, max_fp)))


def tpr0(targets: np.ndarray, scores: np.ndarray) -> float:
    """TPR before the first false positive (Bologna challenge TPR0)."""
    return tpr_at_fp_count(targets, scores, 0)


def tpr10(targets: np.ndarray, scores: np.ndarray) -> float:
    """TPR before the tenth false positive (Bologna challenge TPR10: fewer than ten false positives)."""
    return tpr_at_fp_count(targets, scores, 9)


def tpr_at_fpr_1e3(targets: np.ndarray, scores: np.ndarray) -> float:
    """TPR at FPR 1e-3, as a function of (targets, scores) alone: a metric evaluate.py can name
    (``task=score_sweep metrics=[analysis.lens.search_metrics.tpr_at_fpr_1e3]``)."""
    return tpr_at_fpr(targets, scores, 1e-3)


def tpr_at_fpr_1e2(targets: np.ndarray, scores: np.ndarray) -> float:
    """TPR at FPR 1e-2 (see tpr_at_fpr_1e3)."""
    return tpr_at_fpr(targets, scores, 1e-2)


def allowed_fp(n_neg: int, fpr: float) -> int:
    """False positives allowed at `fpr` among `n_neg` negatives: floor(fpr * n_neg) (0: unresolved)."""
    if not 0 < fpr < 1:
        raise ValueError(f"FPR must be in (0, 1), got {fpr}")
    return int(math.floor(fpr * n_neg + 1e-9))  # 1e-3 * 1000 must give 1, not 0.999...


def threshold_at_fpr(neg_scores: np.ndarray, fpr: float) -> float:
    """Threshold on negative scores with empirical FPR <= `fpr` (flagged: score > threshold).

    NaN with a RuntimeWarning when the negatives cannot resolve `fpr` (fewer than 1/fpr of them).
    """
    neg = np.asarray(neg_scores, dtype=np.float64).ravel()
    k = allowed_fp(neg.size, fpr)
    if k < 1:
        warnings.warn(f"FPR={fpr:g} unresolved: {neg.size} negatives (needs at least {math.ceil(1 / fpr - 1e-9)}); "
                      "reporting NaN", RuntimeWarning, stacklevel=2)
        return math.nan
    return threshold_for_fp(neg, k)


def tpr_at_fpr(targets: np.ndarray, scores: np.ndarray, fpr: float) -> float:
    """Highest TPR with empirical FPR <= `fpr`; NaN (with a warning) when the negatives cannot resolve it."""
    pos, neg = _split_scores(targets, scores)
    if pos.size == 0:
        warnings.warn("TPR undefined: no positives; reporting NaN", RuntimeWarning, stacklevel=2)
        return math.nan
    threshold = threshold_at_fpr(neg, fpr)
    return math.nan if math.isnan(threshold) else float(np.mean(pos > threshold))


def purity(tpr: np.ndarray | float, fpr: np.ndarray | float, prevalence: float) -> np.ndarray | float:
    """Precision expected at `prevalence`: TPR p / (TPR p + FPR (1 - p)); NaN where FPR is 0 (unresolved)."""
    tpr, fpr = np.asarray(tpr, dtype=np.float64), np.asarray(fpr, dtype=np.float64)
    with np.errstate(invalid="ignore", divide="ignore"):
        value = np.where(fpr > 0, tpr * prevalence / (tpr * prevalence + fpr * (1 - prevalence)), np.nan)
    return float(value) if value.ndim == 0 else value


def _operating_points(pos_sorted_desc: np.ndarray, neg_sorted_asc: np.ndarray, completeness: float) -> tuple[float, float, int]:
    """(TPR, FPR, n_fp) at the threshold where TPR first reaches `completeness` (flagged: score >= t)."""
    n_pos, n_neg = pos_sorted_desc.size, neg_sorted_asc.size
    m = max(1, math.ceil(completeness * n_pos - 1e-9))
    t = pos_sorted_desc[m - 1]
    n_tp = int(np.searchsorted(-pos_sorted_desc, -t, side="right"))  # positives >= t (ties included)
    n_fp = n_neg - int(np.searchsorted(neg_sorted_asc, t, side="left"))  # negatives >= t
    return n_tp / n_pos, n_fp / n_neg, n_fp


def _purity_ci(values: np.ndarray, alpha: float) -> tuple[float, float, int]:
    """Percentile CI of bootstrap purities; a resample without false positives (NaN) is unresolved.

    Its purity is above what its negatives can show, so it is ranked above every resolved value
    (not dropped, which would bias the interval down); a bound that lands among those is NaN.
    """
    ranked = np.where(np.isnan(values), np.inf, values)
    low, high = np.quantile(ranked, [alpha / 2, 1 - alpha / 2], method="inverted_cdf")
    bound = lambda v: float(v) if np.isfinite(v) else math.nan  # noqa: E731
    return bound(low), bound(high), int(np.sum(~np.isnan(values)))


def purity_at_completeness(
    targets: np.ndarray,
    scores: np.ndarray,
    completeness: Sequence[float],
    prevalences: Sequence[float],
    n_boot: int = 0,
    seed: int = 0,
    alpha: float = 0.05,
) -> list[dict[str, float]]:
    """Purity at each prevalence for each completeness level, with class-stratified bootstrap CIs.

    Args:
        targets: 0/1 labels.
        scores: Scores (higher: more lens-like).
        completeness: TPR levels in (0, 1].
        prevalences: Lens fractions of the survey, e.g. 1e-3 and 1e-4.
        n_boot: Bootstrap resamples (0: no CI). Positives and negatives are resampled separately, so
            every resample keeps the class counts.
        seed: Seed of numpy's default_rng.
        alpha: 1 - confidence of the percentile interval.

    Returns:
        One row per (completeness, prevalence): completeness, prevalence, purity, ci_low, ci_high, tpr,
        fpr, n_fp, n_pos, n_neg, n_boot_valid (resamples whose FPR was resolved). The percentile CI ranks
        unresolved resamples above every resolved one; a bound among them, or an unresolved point
        estimate, is NaN.
    """
    pos, neg = _split_scores(targets, scores)
    for c in completeness:
        if not 0 < c <= 1:
            raise ValueError(f"completeness levels must be in (0, 1], got {c}")
    rows: list[dict[str, float]] = []
    if pos.size == 0 or neg.size == 0:
        warnings.warn(f"purity undefined: {pos.size} positives, {neg.size} negatives; reporting NaN", RuntimeWarning, stacklevel=2)
        nan = math.nan
        return [dict(completeness=c, prevalence=p, purity=nan, ci_low=nan, ci_high=nan, tpr=nan, fpr=nan, n_fp=0,
                     n_pos=int(pos.size), n_neg=int(neg.size), n_boot_valid=0) for c in completeness for p in prevalences]
    pos_desc, neg_asc = np.sort(pos)[::-1], np.sort(neg)
    boot: dict[float, tuple[np.ndarray, np.ndarray]] = {}
    if n_boot > 0:
        rng = np.random.default_rng(seed)
        pos_b = np.sort(pos[rng.integers(0, pos.size, size=(n_boot, pos.size))], axis=1)[:, ::-1]
        neg_b = np.sort(neg[rng.integers(0, neg.size, size=(n_boot, neg.size))], axis=1)
        for c in completeness:
            pts = np.array([_operating_points(pos_b[b], neg_b[b], c)[:2] for b in range(n_boot)])
            boot[c] = (pts[:, 0], pts[:, 1])
    unresolved = []
    for c in completeness:
        tpr, fpr, n_fp = _operating_points(pos_desc, neg_asc, c)
        if n_fp == 0:
            unresolved.append(c)
        for p in prevalences:
            row = dict(completeness=float(c), prevalence=float(p), purity=purity(tpr, fpr, p), ci_low=math.nan,
                       ci_high=math.nan, tpr=tpr, fpr=fpr, n_fp=n_fp, n_pos=int(pos.size), n_neg=int(neg.size), n_boot_valid=0)
            if c in boot and n_fp > 0:
                row["ci_low"], row["ci_high"], row["n_boot_valid"] = _purity_ci(purity(*boot[c], p), alpha)
            rows.append(row)
    if unresolved:
        warnings.warn(f"purity undefined at completeness {unresolved}: no false positive among {neg.size} negatives "
                      f"(FPR < 1/{neg.size} unresolved); reporting NaN", RuntimeWarning, stacklevel=2)
    return rows


def search_metrics(
    targets: np.ndarray,
    scores: np.ndarray,
    fprs: Sequence[float],
    completeness: Sequence[float],
    prevalences: Sequence[float],
    n_boot: int = 0,
    seed: int = 0,
    alpha: float = 0.05,
) -> dict[str, float]:
    """Every search number of one split as a flat dict (keys for metrics.json, without a split prefix).

    Keys: ``auroc``, ``tpr0``, ``tpr10``, ``tpr_at_fpr_<f>`` per FPR, ``purity_at_c<c>_prev_<p>`` with
    ``_ci_low`` / ``_ci_high`` per completeness and prevalence, ``n_pos`` and ``n_neg``.
    """
    pos, neg = _split_scores(targets, scores)
    out: dict[str, float] = {"auroc": auroc(targets, scores), "tpr0": tpr0(targets, scores), "tpr10": tpr10(targets, scores)}
    for f in fprs:
        out[f"tpr_at_fpr_{rate_label(f)}"] = tpr_at_fpr(targets, scores, f)
    for row in purity_at_completeness(targets, scores, completeness, prevalences, n_boot, seed, alpha):
        key = f"purity_at_c{rate_label(row['completeness'])}_prev_{rate_label(row['prevalence'])}"
        out[key] = row["purity"]
        out[f"{key}_ci_low"] = row["ci_low"]
        out[f"{key}_ci_high"] = row["ci_high"]
    out["n_pos"], out["n_neg"] = int(pos.size), int(neg.size)
    return out
