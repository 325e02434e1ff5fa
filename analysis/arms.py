"""Arms scored on one test set: paired statistics per seed and across seeds (pure functions, no files).

Every arm's seeds were scored on the same samples (evaluate.py task=score_sweep), so arm B is compared
with the reference arm A sample by sample:

- per seed s (a seed both arms ran): exact McNemar on the correctness of the two models
  (analysis.significance.paired_comparison, which refuses different samples or targets) and a paired
  bootstrap CI of metric(B_s) - metric(A_s); Holm over the per-seed McNemar p-values; the MDD of that seed's
  comparison is mdd_normal of the paired bootstrap SE (the sd of the CI's own resampled differences);
- across seeds: the paired t-test (scipy ``ttest_rel``) of the per-seed metric values, Holm over the table
  (every arm against the reference, every metric), and the MDD of the paired t-test at the seeds at hand
  (analysis.power.mdd_paired of the per-seed differences' variance) beside every "not resolved", with the
  MDD at alpha/m (m tests in the table): Holm's bar for one row is between the two, so the first is the MDD
  of that row alone and the second one that survives Holm whatever the other rows are.

compare_arms_by_terms does the same for metrics that are means of per-sample terms (the weak-lensing
challenge score, a coverage): no McNemar, the per-seed bootstrap over samples of the mean difference.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np
from scipy import stats

from analysis.power import mdd_normal, mdd_note, mdd_paired, metric_value
from analysis.significance import align_samples, paired_bootstrap_ci, paired_comparison
from rigor.sweeps import natural_key


def holm(pvalues: Sequence[float]) -> list[float]:
    """Holm-adjusted p-values (statsmodels' ``multipletests(method="holm")``); NaN stays NaN."""
    from statsmodels.stats.multitest import multipletests

    p = np.asarray(pvalues, dtype=float)
    out = np.full(p.shape, np.nan)
    ok = np.isfinite(p)
    if ok.any():
        out[ok] = multipletests(p[ok], method="holm")[1]
    return out.tolist()


def _verdict(p_holm: float, mdd: float, alpha: float, mdd_holm: float = math.nan, m: int = 1) -> str:
    if math.isfinite(p_holm) and p_holm < alpha:
        return "resolved"
    if not math.isfinite(mdd):
        return "not resolved; MDD inf (fewer than 2 seeds)"
    if mdd == 0:
        return "not resolved; no spread across seeds (the same difference in every seed: no t statistic; MDD 0)"
    if m > 1 and math.isfinite(mdd_holm):
        return f"not resolved; MDD {mdd:.4g} ({mdd_holm:.4g} at alpha/{m}, which Holm over the table needs at worst)"
    return f"not resolved; MDD {mdd:.4g}"


def _by_arm(runs: Sequence[Mapping[str, Any]], reference: str | None, who: str
            ) -> tuple[dict[str, dict[Any, Mapping[str, Any]]], list[str], str]:
    """Runs by arm and seed (one run per arm and seed), the sorted arms, and the reference (default the first)."""
    if not runs:
        raise ValueError(f"{who}: no scored runs")
    by_arm: dict[str, dict[Any, Mapping[str, Any]]] = {}
    for run in runs:
        seeds = by_arm.setdefault(str(run["arm"]), {})
        if run["seed"] in seeds:
            raise ValueError(f"arm {run['arm']!r}: two runs with seed {run['seed']} "
                             f"({seeds[run['seed']].get('label')} and {run.get('label')})")
        seeds[run["seed"]] = run
    arms = sorted(by_arm)
    reference = arms[0] if reference is None else reference
    if reference not in by_arm:
        raise ValueError(f"{who}: reference arm {reference!r} is not among {arms}")
    return by_arm, arms, reference


def _shared_seeds(by_arm: Mapping[str, Mapping[Any, Any]], arm: str, reference: str, notes: list[str]) -> list:
    """The seeds both arms ran; a note for those only one of them ran."""
    shared = sorted(set(by_arm[arm]) & set(by_arm[reference]), key=natural_key)
    unpaired = sorted(set(by_arm[arm]) ^ set(by_arm[reference]), key=str)
    if unpaired:
        notes.append(f"{arm} vs {reference}: seeds {unpaired} ran in only one of the two arms; left out of the pairing")
    return shared


def _bootstrap_cells(metric: str, boot: Mapping[str, float], alpha: float, power: float) -> dict[str, float]:
    """A per-seed row's cells for one metric: A, B, B - A, its CI and the MDD of the bootstrap SE.

    The SE is that of the CI's own resamples (one bootstrap per metric, not two).
    """
    se = boot["se_diff"]
    return {f"{metric}_a": boot["a"], f"{metric}_b": boot["b"], f"{metric}_diff": boot["diff"],
            f"{metric}_ci_low": boot["ci_low"], f"{metric}_ci_high": boot["ci_high"],
            f"{metric}_mdd": mdd_normal(se, alpha, power) if math.isfinite(se) else math.inf}


def _across_seeds(arm: str, reference: str, metric: str, values: Sequence[tuple[float, float]], shared: list,
                  alpha: float, power: float) -> dict[str, Any]:
    """One across-seed row: the paired t-test of the per-seed (A, B) values and its MDD (Holm comes later)."""
    pairs = np.asarray(values, dtype=float).reshape(-1, 2)
    n = len(pairs)
    diffs = pairs[:, 1] - pairs[:, 0]
    var = float(np.var(diffs, ddof=1)) if n > 1 else math.nan
    # the same difference in every seed (e.g. 10 more of 4,426 lenses found) reaches float rounding as a
    # spread of ~1e-18, which a t-test turns into p ~ 1e-15: that is no spread, not a resolved difference
    if n > 1 and np.ptp(diffs) <= 1e-12 * max(1.0, float(np.max(np.abs(pairs)))):
        var = 0.0
    if n > 1 and var > 0:
        test = stats.ttest_rel(pairs[:, 1], pairs[:, 0])
        t, p = float(test.statistic), float(test.pvalue)
    else:
        t, p = math.nan, math.nan
    return {"arm": arm, "reference": reference, "metric": metric, "n_seeds": n, "seeds": shared,
            "mean_a": float(pairs[:, 0].mean()) if n else math.nan,
            "mean_b": float(pairs[:, 1].mean()) if n else math.nan,
            "mean_diff": float(diffs.mean()) if n else math.nan, "sd_diff": math.sqrt(var) if n > 1 else math.nan,
            "t": t, "p": p, "mdd": mdd_paired(var, n, alpha, power) if n > 1 else math.inf,
            "mdd_note": mdd_note(n, n, var if n > 1 else None)}


def _holm_and_verdicts(across: list[dict[str, Any]], alpha: float, power: float) -> None:
    """Holm over the across-seed table, the MDD at alpha/m beside each row's, and each row's verdict (in place)."""
    # Holm's bar for a row lies between alpha/m and alpha (m tests with a p-value): a difference with power
    # `power` at alpha/m is resolved after Holm with at least that power, whatever the other rows give
    m_tests = sum(math.isfinite(r["p"]) for r in across)
    for row, p in zip(across, holm([r["p"] for r in across])):
        row["p_holm"] = p
        var = row["sd_diff"] ** 2 if row["n_seeds"] > 1 else math.nan
        row["mdd_holm"] = (mdd_paired(var, row["n_seeds"], alpha / max(m_tests, 1), power)
                           if row["n_seeds"] > 1 and m_tests > 1 else row["mdd"])
        row["verdict"] = _verdict(p, row["mdd"], alpha, row["mdd_holm"], m_tests)


def compare_arms(runs: Sequence[Mapping[str, Any]], reference: str | None = None,
                 metrics: Sequence[str] | Mapping[str, str | Callable[..., float]] = ("accuracy",),
                 alpha: float = 0.05, power: float = 0.8, n_boot: int = 2000, seed: int = 0) -> dict[str, Any]:
    """Every arm against the reference arm, paired by sample and by seed.

    Args:
        runs: One per scored job: ``arm``, ``seed``, ``ids`` (N,), ``targets`` (N,) int, ``scores`` ((N,)
            p(class 1) or (N, C) probabilities), and optionally ``label`` (for messages).
        reference: The reference arm (default: the first arm in sorted order).
        metrics: analysis.power.metric_value metrics (``accuracy``, ``balanced_accuracy``, ``auroc``), or a mapping
            from a metric's name in the results to such a name or to a function ``f(targets, scores) -> float``
            (e.g. ``{"tpr0": analysis.lens.search_metrics.tpr0}``), bootstrapped by index draws.
        alpha, power: Of the tests and the MDDs.
        n_boot, seed: Of the paired bootstraps.

    Returns:
        ``reference``, ``arms``, ``per_seed`` rows (arm, seed, n, McNemar b/c/p, p_holm, and per metric a, b,
        diff, ci_low, ci_high, mdd), ``across_seeds`` rows (arm, metric, n_seeds, mean_a, mean_b, mean_diff,
        sd_diff, t, p, p_holm, mdd, mdd_holm, verdict, seeds) and ``notes``.

    Raises:
        ValueError: No runs, an unknown reference, or two runs of a comparison on different samples/targets.
    """
    named = dict(metrics) if isinstance(metrics, Mapping) else {str(m): str(m) for m in metrics}
    metrics = list(named)
    by_arm, arms, reference = _by_arm(runs, reference, "compare_arms")
    per_seed: list[dict[str, Any]] = []
    across: list[dict[str, Any]] = []
    notes: list[str] = []
    for arm in arms:
        if arm == reference:
            continue
        shared = _shared_seeds(by_arm, arm, reference, notes)
        values: dict[str, list[tuple[float, float]]] = {m: [] for m in metrics}
        for s in shared:
            a, b = by_arm[reference][s], by_arm[arm][s]
            names = (str(a.get("label", f"{reference} seed {s}")), str(b.get("label", f"{arm} seed {s}")))
            result = paired_comparison(a["ids"], a["targets"], a["scores"], b["ids"], b["targets"], b["scores"],
                                       metrics=tuple(named.values()), n_boot=n_boot, seed=seed, alpha=alpha, names=names)
            row: dict[str, Any] = {"arm": arm, "reference": reference, "seed": s, "n": result["n"],
                                   "mcnemar_b": result["mcnemar"]["b"], "mcnemar_c": result["mcnemar"]["c"],
                                   "mcnemar_p": result["mcnemar"]["p"]}
            for m in metrics:
                boot = result["bootstrap"][named[m]]
                row.update(_bootstrap_cells(m, boot, alpha, power))
                values[m].append((boot["a"], boot["b"]))
            per_seed.append(row)
        for m in metrics:
            across.append(_across_seeds(arm, reference, m, values[m], shared, alpha, power))
    for row, p in zip(per_seed, holm([r["mcnemar_p"] for r in per_seed])):
        row["mcnemar_p_holm"] = p
    _holm_and_verdicts(across, alpha, power)
    return {"reference": reference, "arms": arms, "metrics": list(metrics), "alpha": alpha, "power": power,
            "per_seed": per_seed, "across_seeds": across, "notes": notes}


def mean_of(_targets: np.ndarray, values: np.ndarray) -> float:
    """The mean of per-sample terms (a paired_bootstrap_ci metric: the targets are not used)."""
    return float(np.mean(values))


def compare_arms_by_terms(runs: Sequence[Mapping[str, Any]], reference: str | None = None,
                          terms: Sequence[str] = ("score",), alpha: float = 0.05, power: float = 0.8,
                          n_boot: int = 2000, seed: int = 0,
                          pairs: Sequence[tuple[str, str]] | None = None) -> dict[str, Any]:
    """Every arm against the reference arm where each metric is the mean of a per-sample term.

    For metrics that are means over samples, such as the weak-lensing challenge score (the mean of per-map
    scores) or a 1-sigma coverage (the mean of per-map indicators). Per seed: a percentile bootstrap CI of
    mean(B) - mean(A) over samples, the same resamples for both (analysis.significance.paired_bootstrap_ci,
    not stratified), and its MDD from the bootstrap SE; across seeds: as compare_arms (paired t-test of the
    per-seed means, Holm over the table, the MDD at alpha and at alpha/m).

    Args:
        runs: One per scored file: ``arm``, ``seed``, ``ids`` (N,), ``truth`` ((N,) or (N, T): pairing refuses
            samples whose truth differs), ``terms`` (term name -> (N,) values), and optionally ``label``.
        reference: The reference arm (default: the first in sorted order).
        terms: The terms to compare; every run must have them.
        alpha, power, n_boot, seed: As compare_arms.
        pairs: ``(A, B)`` arm pairs to compare, B - A, instead of every arm against ``reference``: the table (and
            Holm's family) is then exactly these comparisons, each with its own A.

    Returns:
        ``reference``, ``arms``, ``metrics`` (the terms), ``pairs``, ``per_seed`` rows (arm, reference, seed, n, per
        term a, b, diff, ci_low, ci_high, mdd), ``across_seeds`` rows as compare_arms', ``notes``.

    Raises:
        ValueError: No runs, an unknown reference, a missing or non-finite term, or two runs of a comparison on
            different samples.
    """
    terms = [str(t) for t in terms]
    by_arm, arms, reference = _by_arm(runs, reference, "compare_arms_by_terms")
    if pairs is None:
        pairs = [(reference, arm) for arm in arms if arm != reference]
    else:
        reference = None  # each pair names its own A
    pairs = [(str(a), str(b)) for a, b in pairs]
    unknown = sorted({x for pair in pairs for x in pair} - set(by_arm))
    if unknown:
        raise ValueError(f"compare_arms_by_terms: pairs name arms {unknown} that are not among {arms}")
    for run in runs:
        for t in terms:
            values = np.asarray(run["terms"][t], dtype=float) if t in run["terms"] else None
            if values is None or values.shape != (len(run["ids"]),) or not np.isfinite(values).all():
                raise ValueError(f"{run.get('label', run['arm'])}: term {t!r} must be {len(run['ids'])} finite values, one per sample")
    per_seed: list[dict[str, Any]] = []
    across: list[dict[str, Any]] = []
    notes: list[str] = []
    for ref_arm, arm in pairs:
        shared = _shared_seeds(by_arm, arm, ref_arm, notes)
        values: dict[str, list[tuple[float, float]]] = {t: [] for t in terms}
        for s in shared:
            a, b = by_arm[ref_arm][s], by_arm[arm][s]
            names = (str(a.get("label", f"{ref_arm} seed {s}")), str(b.get("label", f"{arm} seed {s}")))
            key_a, key_b = (_truth_key(r["truth"]) for r in (a, b))
            pos = align_samples(a["ids"], key_a, b["ids"], key_b, names)
            row: dict[str, Any] = {"arm": arm, "reference": ref_arm, "seed": s, "n": len(pos)}
            for t in terms:
                ta, tb = np.asarray(a["terms"][t], dtype=float), np.asarray(b["terms"][t], dtype=float)[pos]
                boot = paired_bootstrap_ci(np.zeros(len(ta), dtype=np.int64), ta, tb, metric=mean_of, n_boot=n_boot,
                                           seed=seed, alpha=alpha, stratify=False)
                row.update(_bootstrap_cells(t, boot, alpha, power))
                values[t].append((boot["a"], boot["b"]))
            per_seed.append(row)
        for t in terms:
            across.append(_across_seeds(arm, ref_arm, t, values[t], shared, alpha, power))
    _holm_and_verdicts(across, alpha, power)
    return {"reference": reference, "arms": arms, "metrics": terms, "pairs": pairs,
            "alpha": alpha, "power": power, "per_seed": per_seed, "across_seeds": across, "notes": notes}


def _truth_key(truth: Any) -> np.ndarray:
    """One comparable value per sample from (N,) or (N, T) truth, for align_samples' same-targets check."""
    truth = np.asarray(truth)
    if truth.ndim == 1:
        return truth
    return np.array([",".join(repr(float(v)) for v in row) for row in truth.reshape(len(truth), -1)])


def binary_or_class_scores(kind: str, logits: np.ndarray, probs: np.ndarray | None) -> np.ndarray:
    """The scores compare_arms pairs: calibrated probabilities where the file has them, else the softmax/sigmoid."""
    if probs is not None:
        return np.asarray(probs, dtype=float)
    logits = np.asarray(logits, dtype=float)
    if kind == "binary":
        return 1.0 / (1.0 + np.exp(-logits))
    z = logits - logits.max(axis=1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=1, keepdims=True)


__all__ = ["align_samples", "binary_or_class_scores", "compare_arms", "compare_arms_by_terms", "holm", "mean_of", "metric_value"]
