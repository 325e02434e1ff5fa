"""Paired significance for two models scored on the same samples: McNemar and paired bootstrap CIs.

Score convention: binary ``scores`` are p(class 1) with shape (N,) (accuracy thresholds them at 0.5);
multiclass scores are (N, C) class probabilities. AUROC only needs the ranking, but accuracy needs
probabilities, so pass probabilities everywhere.

The bootstrap is vectorised. Accuracy-type metrics resample the per-class counts of the four
(A right?, B right?) outcomes, a multinomial that costs nothing per sample. AUROC turns each resample
into a weight vector (how often each sample was drawn) and evaluates a weighted Mann-Whitney statistic
(ties count one half, as in sklearn) from one sort of the negatives. 10 000 resamples of ~10^5 samples
take seconds instead of the many minutes a per-resample sklearn call would.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable
from typing import Any

import numpy as np
import pandas as pd
from scipy.stats import binomtest

from analysis.metrics import auroc as auroc_safe  # noqa: F401  (re-exported: one AUROC for the project)

MetricFn = Callable[[np.ndarray, np.ndarray], float]
BUILTIN_METRICS = ("accuracy", "balanced_accuracy", "auroc")

# Cap on elements of one (resamples x samples) block, ~32 MB of float64.
_BLOCK_ELEMENTS = 4_000_000


def mcnemar_exact(correct_a: np.ndarray, correct_b: np.ndarray) -> dict[str, float]:
    """Exact (binomial) McNemar test of two classifiers on the same samples.

    The chi-square version with continuity correction gives p = 0 when the models never disagree, so
    only the exact test is offered.

    Args:
        correct_a: (N,) bool, whether model A got each sample right.
        correct_b: (N,) bool, same for model B.

    Returns:
        ``b`` = #(A right, B wrong), ``c`` = #(A wrong, B right), ``p`` (two-sided; 1.0 when b + c = 0),
        ``n`` = N.
    """
    a = np.asarray(correct_a, dtype=bool)
    b_ = np.asarray(correct_b, dtype=bool)
    if a.shape != b_.shape or a.ndim != 1:
        raise ValueError(f"correct_a and correct_b must be 1-D of the same length, got {a.shape} and {b_.shape}")
    b = int(np.sum(a & ~b_))
    c = int(np.sum(~a & b_))
    # The exact test is a binomial test of b successes in the b + c discordant pairs (the concordant
    # cells do not enter). With no discordant pair, binomtest(0, 1) gives p = 1: no evidence either way.
    p = float(binomtest(b, max(b + c, 1)).pvalue)
    return {"b": b, "c": c, "p": p, "n": int(a.size)}


def predictions_from_scores(scores: np.ndarray) -> np.ndarray:
    """Predicted class: p >= 0.5 for (N,) binary scores, argmax for (N, C)."""
    scores = np.asarray(scores, dtype=np.float64)
    if scores.ndim == 1:
        if scores.size and (scores.min() < 0 or scores.max() > 1):
            raise ValueError("binary scores must be probabilities p(class 1) in [0, 1], not logits")
        return (scores >= 0.5).astype(np.int64)
    return scores.argmax(axis=1).astype(np.int64)


def per_class_accuracy(targets: np.ndarray, preds: np.ndarray, n_classes: int | None = None) -> dict[int, float]:
    """Accuracy within each true class (recall per class); NaN for a class with no samples.

    Args:
        targets: (N,) integer labels.
        preds: (N,) predicted labels.
        n_classes: Number of classes (default: max label + 1 over both arrays).
    """
    targets = np.asarray(targets).astype(np.int64)
    preds = np.asarray(preds).astype(np.int64)
    if n_classes is None:
        n_classes = int(max(targets.max(initial=-1), preds.max(initial=-1)) + 1)
    out = {}
    for k in range(n_classes):
        mask = targets == k
        out[k] = float(np.mean(preds[mask] == k)) if mask.any() else math.nan
    return out


def stratified_bootstrap_indices(
    targets: np.ndarray, n_boot: int, rng: np.random.Generator, stratify: bool = True
) -> np.ndarray:
    """Bootstrap resample indices, (n_boot, N).

    With stratify, each class keeps its count: its n_k slots are drawn with replacement from its own
    samples, so no resample loses a class. Without it, N draws from all samples.
    """
    targets = np.asarray(targets).astype(np.int64)
    n = targets.size
    if not stratify:
        return rng.integers(n, size=(n_boot, n))
    idx = np.empty((n_boot, n), dtype=np.int64)
    for k in np.unique(targets):
        members = np.flatnonzero(targets == k)
        idx[:, members] = members[rng.integers(members.size, size=(n_boot, members.size))]
    return idx


def _counts(idx: np.ndarray, n: int) -> np.ndarray:
    """Draw counts (B, N) from (B, N) resample indices."""
    rows = idx.shape[0]
    flat = (idx + (np.arange(rows) * n)[:, None]).ravel()
    return np.bincount(flat, minlength=rows * n).reshape(rows, n).astype(np.float64)


class _WeightedOvrAuroc:
    """AUROC of one positive-vs-rest problem for many resample weight vectors at once.

    AUROC = sum_i w_i G(s_i) / (W_pos W_neg) over positives i, where G(s) is the weight of negatives
    scoring below s plus half the weight of those tying with s (sklearn's tie rule). Negatives are
    sorted once; each resample then costs one cumulative sum and two gathers.
    """

    def __init__(self, scores: np.ndarray, positive: np.ndarray) -> None:
        self.pos = np.flatnonzero(positive)
        neg = np.flatnonzero(~positive)
        # tied negatives are summed together between the two searchsorted bounds, so any sort order works
        self.neg = neg[np.argsort(scores[neg])]
        sorted_neg = scores[self.neg]
        self.left = np.searchsorted(sorted_neg, scores[self.pos])
        self.right = np.searchsorted(sorted_neg, scores[self.pos], side="right")

    def __call__(self, w: np.ndarray) -> np.ndarray:
        """AUROC per row of the (B, N) weight matrix w."""
        cum = np.zeros((w.shape[0], self.neg.size + 1))
        np.cumsum(w[:, self.neg], axis=1, out=cum[:, 1:])
        below, upto = cum[:, self.left], cum[:, self.right]
        pos_w = w[:, self.pos]
        num = np.sum(pos_w * (below + 0.5 * (upto - below)), axis=1)
        den = pos_w.sum(axis=1) * cum[:, -1]
        # den is 0 only for a resample without positives or negatives, where num is 0 too: 0/0 is the NaN
        with np.errstate(invalid="ignore"):
            return num / den


class _WeightedAuroc:
    """Binary AUROC for (N,) scores; one-vs-rest macro AUROC (sklearn's "ovr", "macro") for (N, C)."""

    def __init__(self, targets: np.ndarray, scores: np.ndarray) -> None:
        if scores.ndim == 1:
            self.parts = [_WeightedOvrAuroc(scores, targets == 1)]
        else:
            self.parts = [_WeightedOvrAuroc(scores[:, k], targets == k) for k in range(scores.shape[1])]

    def __call__(self, w: np.ndarray) -> np.ndarray:
        return np.mean(np.column_stack([part(w) for part in self.parts]), axis=1)


def _correct_counts_bootstrap(
    targets: np.ndarray,
    correct_a: np.ndarray,
    correct_b: np.ndarray,
    n_boot: int,
    rng: np.random.Generator,
    stratify: bool,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Resampled per-class correct counts of both models: (B, K) for A, for B, and class totals.

    For accuracy-type metrics a sample matters only through (class, A right?, B right?), so drawing N
    indices is the same in distribution as drawing N such categories with their observed frequencies:
    a multinomial over at most 4 categories per class. Each draw still carries both models' outcomes
    jointly (the pairing), and the cost no longer grows with N.
    """
    classes = np.unique(targets)
    # category 2*a + b for each sample: 0 = both wrong, 1 = only B right, 2 = only A right, 3 = both right
    cat = 2 * correct_a.astype(np.int64) + correct_b.astype(np.int64)
    freq = np.stack([np.bincount(cat[targets == k], minlength=4) for k in classes])  # (K, 4)
    if stratify:
        draws = np.stack([rng.multinomial(int(f.sum()), f / f.sum(), size=n_boot) for f in freq], axis=1)
    else:
        flat = freq.ravel()
        draws = rng.multinomial(int(flat.sum()), flat / flat.sum(), size=n_boot).reshape(n_boot, *freq.shape)
    right_a = draws[..., 2] + draws[..., 3]
    right_b = draws[..., 1] + draws[..., 3]
    return right_a.astype(np.float64), right_b.astype(np.float64), draws.sum(axis=-1).astype(np.float64)


def _from_correct_counts(metric: str, right: np.ndarray, totals: np.ndarray) -> np.ndarray:
    if metric == "accuracy":
        return right.sum(axis=-1) / totals.sum(axis=-1)
    # balanced accuracy: mean recall over the classes present in the targets; a class that a
    # non-stratified resample lost makes that resample NaN (it is then dropped and counted).
    with np.errstate(invalid="ignore"):
        recall = right / totals  # a lost class has right = totals = 0: 0/0 is the NaN
    return np.mean(recall, axis=-1)


def _indexed_metric(metric: MetricFn, targets: np.ndarray, scores: np.ndarray) -> Callable[[np.ndarray], np.ndarray]:
    """A function metric for each row of a (B, N) matrix of resample indices (undefined resamples give NaN).

    The bootstraps of a callable metric here and in analysis.power draw samples through this one function.
    """

    def per_row(idx: np.ndarray) -> np.ndarray:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # an undefined resample is NaN, counted or dropped by the callers
            return np.array([metric(targets[i], scores[i]) for i in idx], dtype=np.float64)

    return per_row


def paired_bootstrap_ci(
    targets: np.ndarray,
    scores_a: np.ndarray,
    scores_b: np.ndarray,
    metric: str | MetricFn = "accuracy",
    n_boot: int = 10000,
    seed: int = 0,
    alpha: float = 0.05,
    stratify: bool = True,
) -> dict[str, float]:
    """Percentile bootstrap CI of metric(B) - metric(A) with the same resamples for both models.

    Pairing matters: both models are scored on the SAME resampled samples, so sample-to-sample
    difficulty cancels in the difference. Stratified by class (default), every resample keeps each
    class's count, so no resample loses a class and AUROC/balanced accuracy are always defined.

    Accuracy and balanced accuracy are resampled through per-class counts of the four (A right?,
    B right?) outcomes (a multinomial, identical in distribution to resampling indices); AUROC through
    index draws turned into weights; a callable metric through plain index draws.

    Args:
        targets: (N,) integer labels.
        scores_a: Model A's probabilities, (N,) p(class 1) or (N, C).
        scores_b: Model B's probabilities, same shape.
        metric: "accuracy", "balanced_accuracy", "auroc" (binary, or one-vs-rest macro for (N, C)), or
            a callable ``f(targets, scores) -> float`` (evaluated per resample, slower).
        n_boot: Number of resamples.
        seed: Seed of numpy's default_rng.
        alpha: 1 - confidence level; the CI is the [alpha/2, 1 - alpha/2] percentiles.
        stratify: Resample within each class.

    Returns:
        ``diff`` (B - A on the full data), ``ci_low``, ``ci_high``, ``a`` and ``b`` (full-data values),
        ``se_diff`` (the sd of B - A over the valid resamples, ddof=1: the paired bootstrap SE; NaN with
        fewer than two), ``n_boot``, ``n_valid`` (resamples where both values were defined), ``alpha``.
    """
    targets = np.asarray(targets).astype(np.int64).ravel()
    scores_a = np.asarray(scores_a, dtype=np.float64)
    scores_b = np.asarray(scores_b, dtype=np.float64)
    if scores_a.ndim == 2 and scores_a.shape[1] == 1:
        scores_a, scores_b = scores_a[:, 0], scores_b[:, 0]
    n = targets.size
    if scores_a.shape != scores_b.shape or scores_a.shape[0] != n:
        raise ValueError(f"scores must have the same shape with {n} rows, got {scores_a.shape} and {scores_b.shape}")
    if n == 0:
        raise ValueError("cannot bootstrap zero samples")
    if not 0 < alpha < 1:
        raise ValueError(f"alpha must lie in (0, 1), got {alpha}")
    if not callable(metric) and metric not in BUILTIN_METRICS:
        raise ValueError(f"unknown metric {metric!r}; expected one of {BUILTIN_METRICS} or a callable")
    rng = np.random.default_rng(seed)

    if metric in ("accuracy", "balanced_accuracy"):
        correct_a = predictions_from_scores(scores_a) == targets
        correct_b = predictions_from_scores(scores_b) == targets
        classes = np.unique(targets)
        totals = np.array([np.sum(targets == k) for k in classes], dtype=np.float64)
        value_a = float(_from_correct_counts(metric, np.array([np.sum(correct_a[targets == k]) for k in classes], float), totals))
        value_b = float(_from_correct_counts(metric, np.array([np.sum(correct_b[targets == k]) for k in classes], float), totals))
        right_a, right_b, tot = _correct_counts_bootstrap(targets, correct_a, correct_b, n_boot, rng, stratify)
        diffs = _from_correct_counts(metric, right_b, tot) - _from_correct_counts(metric, right_a, tot)
    else:
        if metric == "auroc":
            fa, fb = _WeightedAuroc(targets, scores_a), _WeightedAuroc(targets, scores_b)
            full = np.ones((1, n))
            value_a, value_b = float(fa(full)[0]), float(fb(full)[0])
        else:
            fa, fb = _indexed_metric(metric, targets, scores_a), _indexed_metric(metric, targets, scores_b)
            value_a, value_b = float(metric(targets, scores_a)), float(metric(targets, scores_b))
        diffs = np.empty(n_boot)
        block = max(1, min(n_boot, _BLOCK_ELEMENTS // n))
        for start in range(0, n_boot, block):
            size = min(block, n_boot - start)
            idx = stratified_bootstrap_indices(targets, size, rng, stratify)
            arg = _counts(idx, n) if metric == "auroc" else idx
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # undefined resamples are counted below
                diffs[start : start + size] = fb(arg) - fa(arg)

    valid = np.isfinite(diffs)
    n_valid = int(valid.sum())
    if n_valid < n_boot:
        name = getattr(metric, "__name__", metric)
        warnings.warn(
            f"{n_boot - n_valid} of {n_boot} resamples gave an undefined {name} and were dropped",
            RuntimeWarning,
            stacklevel=2,
        )
    if n_valid == 0:
        low = high = math.nan
    else:
        low, high = np.percentile(diffs[valid], [100 * alpha / 2, 100 * (1 - alpha / 2)])
    return {
        "diff": value_b - value_a,
        "ci_low": float(low),
        "ci_high": float(high),
        "a": value_a,
        "b": value_b,
        "se_diff": float(diffs[valid].std(ddof=1)) if n_valid > 1 else math.nan,
        "n_boot": int(n_boot),
        "n_valid": n_valid,
        "alpha": float(alpha),
    }


def align_samples(
    ids_a: np.ndarray,
    targets_a: np.ndarray,
    ids_b: np.ndarray,
    targets_b: np.ndarray,
    names: tuple[str, str] = ("A", "B"),
    examples: int = 5,
) -> np.ndarray:
    """Row positions in B of A's samples; the one policy for pairing two arms by ``sample_id``.

    The policy: both sides must hold exactly the same samples with the same targets. Arms scored on
    different samples are not a paired comparison, so nothing is dropped or matched on a subset.

    Args:
        ids_a, ids_b: (N,) sample ids of each side (unique within a side).
        targets_a, targets_b: (N,) targets in the same row order as the ids.
        names: How the two sides are named in messages (file names, arms and seeds).
        examples: How many example ids a message lists.

    Returns:
        ``pos`` with ``ids_b[pos] == ids_a``: B's rows in A's order.

    Raises:
        ValueError: Duplicate ids, different sample sets (how many only in A and only in B, with a few
            example ids), or the same id with different targets.
    """
    ids_a, ids_b = np.asarray(ids_a).astype(str), np.asarray(ids_b).astype(str)
    targets_a, targets_b = np.asarray(targets_a), np.asarray(targets_b)
    for name, ids, targets in ((names[0], ids_a, targets_a), (names[1], ids_b, targets_b)):
        if len(targets) != len(ids):
            raise ValueError(f"{name}: {len(ids)} sample ids but {len(targets)} targets")
        dup = pd.Index(ids)[pd.Index(ids).duplicated()].unique().tolist()
        if dup:
            raise ValueError(f"{name}: sample_id is not unique ({len(dup)} repeated, e.g. {dup[:examples]})")
    set_a, set_b = set(ids_a.tolist()), set(ids_b.tolist())
    only_a, only_b = sorted(set_a - set_b), sorted(set_b - set_a)
    if only_a or only_b:
        raise ValueError(
            f"{names[0]} (a) and {names[1]} (b) hold different samples: {len(only_a)} only in a (e.g. {only_a[:examples]}), "
            f"{len(only_b)} only in b (e.g. {only_b[:examples]}); arms are compared only on the same samples"
        )
    pos = pd.Index(ids_b).get_indexer(ids_a)
    differ = np.flatnonzero(targets_a != targets_b[pos])
    if differ.size:
        raise ValueError(
            f"{names[0]} and {names[1]} disagree on 'target' for {differ.size} sample(s), e.g. "
            f"{ids_a[differ[:examples]].tolist()}; they cannot come from the same data"
        )
    return pos


def _mean_correct(targets: np.ndarray, correct: np.ndarray) -> float:
    """Accuracy from correctness, averaged over seeds when ``correct`` is (N, S)."""
    return float(np.mean(correct))


def paired_comparison(
    ids_a: np.ndarray,
    targets_a: np.ndarray,
    scores_a: np.ndarray,
    ids_b: np.ndarray,
    targets_b: np.ndarray,
    scores_b: np.ndarray,
    metrics: tuple[str, ...] = ("accuracy",),
    n_boot: int = 10000,
    seed: int = 0,
    alpha: float = 0.05,
    correct: bool = False,
    names: tuple[str, str] = ("A", "B"),
) -> dict[str, Any]:
    """Arm B against arm A, paired by sample: exact McNemar and paired bootstrap CIs of B - A.

    Rows are matched by ``sample_id`` under align_samples' policy (the same samples and targets on both
    sides, else ValueError), so the result does not depend on either side's row order.

    Args:
        ids_a, targets_a, scores_a: Arm A's sample ids (N,), targets (N,) and scores: (N,) p(class 1) or
            (N, C) class probabilities; with ``correct=True``, correctness (N,) or (N, S) for S seeds
            (column s of A pairs with column s of B).
        ids_b, targets_b, scores_b: The same for arm B, in any row order.
        metrics: Bootstrap metrics of paired_bootstrap_ci ("accuracy", "balanced_accuracy", "auroc").
            Ignored with ``correct=True``, where the one metric is ``accuracy``, the mean correctness
            over samples (and seeds), bootstrapped by index draws.
        n_boot, seed, alpha: Of the paired bootstrap (class-stratified); ``n_boot=0`` skips it.
        correct: The scores are correctness, not probabilities.
        names: How the two sides are named in error messages.

    Returns:
        ``n``; ``mcnemar`` (b = A right and B wrong, c = A wrong and B right, p): a dict, or a list
        of dicts (one per seed) for (N, S) correctness; ``bootstrap`` (metric -> diff, ci_low,
        ci_high, a, b, ...); ``targets``, ``scores_a``, ``scores_b``, ``correct_a``, ``correct_b``
        in A's row order (for the caller's own per-class or per-seed figures).
    """
    pos = align_samples(ids_a, targets_a, ids_b, targets_b, names)
    targets = np.asarray(targets_a)
    scores_a, scores_b = np.asarray(scores_a), np.asarray(scores_b)[pos]
    if scores_a.shape != scores_b.shape:
        raise ValueError(f"{names[0]} scores {scores_a.shape} and {names[1]} scores {scores_b.shape} differ in shape")
    if correct:
        correct_a, correct_b = scores_a.astype(bool), scores_b.astype(bool)
    else:
        labels = targets.astype(np.int64)
        correct_a = predictions_from_scores(scores_a) == labels
        correct_b = predictions_from_scores(scores_b) == labels
    if correct_a.ndim == 2:
        mc: Any = [mcnemar_exact(correct_a[:, s], correct_b[:, s]) for s in range(correct_a.shape[1])]
    else:
        mc = mcnemar_exact(correct_a, correct_b)
    boot: dict[str, dict[str, float]] = {}
    if n_boot:
        if correct:
            boot["accuracy"] = paired_bootstrap_ci(targets, correct_a.astype(float), correct_b.astype(float),
                                                   metric=_mean_correct, n_boot=n_boot, seed=seed, alpha=alpha)
        else:
            for metric in metrics:
                boot[metric] = paired_bootstrap_ci(targets, scores_a, scores_b, metric, n_boot=n_boot, seed=seed, alpha=alpha)
    return {"n": int(len(targets)), "mcnemar": mc, "bootstrap": boot, "targets": targets,
            "scores_a": scores_a, "scores_b": scores_b, "correct_a": correct_a, "correct_b": correct_b}
