"""Statistical power of seed and test-set comparisons: minimum detectable differences, seeds and samples needed.

Three designs, each with the test Rigor actually runs on it:

- **Two arms, unpaired, over seeds** (summarize's seed comparison: Welch's t, ``scipy.stats.ttest_ind``
  with ``equal_var=False``). ``power_welch`` is the exact power of Welch's test: conditional on the two
  sample variances the mean difference is normal and the critical value is fixed, so the power is a
  two-dimensional integral over the variances' scaled chi-square laws, done by generalized Gauss-Laguerre
  quadrature. The textbook shortcut, a noncentral t with n_a + n_b - 2 df at the pooled variance
  (``power_student``, Cohen 1988, ch. 2; statsmodels ``TTestIndPower``), is the power of Student's
  equal-variance test and overstates Welch's at few seeds (3 + 3 seeds, d = 2.5: 0.64 against 0.52), because
  Welch's estimated df (between 2 and 4 there) costs power.
- **Two arms, paired per seed** (both arms trained with the same seeds and scored on the same test set,
  ``scipy.stats.ttest_rel``): a one-sample t-test of the n per-seed differences, whose power is exactly the
  noncentral t with n - 1 df and noncentrality delta * sqrt(n) / sd_diff (``power_paired``; statsmodels
  ``TTestPower``).
- **Two predictions files on the same samples** (task=compare): the paired bootstrap SE of the difference
  with a normal approximation, power = Phi(delta / se - z) + Phi(-delta / se - z), z = z_{1-alpha/2}
  (``power_normal``).

The minimum detectable difference (MDD) is the delta at which a design's power equals the target
(``mdd_*``: the power function solved for delta with brentq). The variance of a metric over seeds splits
into a seed part and a test-sample part (Bouthillier et al., MLSys 2021, "Accounting for variance in machine
learning benchmarks"; Colas et al. 2018, "How many random seeds?"): var(metric over seeds) = var_seed +
var_sample, with var_sample the variance of one run's metric over resampled test sets (``bootstrap_variance``,
or p(1-p)/n for a proportion, ``binomial_variance``), so var_seed = max(0, observed - mean var_sample)
(``variance_split``). More seeds shrink both parts; more test samples shrink only var_sample.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from functools import lru_cache

import numpy as np
from scipy import optimize, special, stats

from analysis.significance import _indexed_metric, _WeightedAuroc, _counts, stratified_bootstrap_indices

#: Metrics the bootstraps here compute from a predictions file's targets and probabilities.
SAMPLE_METRICS = ("accuracy", "balanced_accuracy", "auroc")
#: Quadrature nodes per sample variance in power_welch (60 x 60 evaluations; error ~1e-5 in power).
_NODES = 60
#: Above this many seeds per arm the sample variances are nearly exact (power within 2e-5 of the quadrature
#: at 200), and the quadrature's weights underflow: power_welch uses the noncentral t at the true Welch df.
_LARGE_N = 200
# Cap on elements of one (resamples x samples) weight block, ~32 MB of float64.
_BLOCK_ELEMENTS = 4_000_000


def _check(alpha: float, power: float | None = None) -> None:
    if not 0 < alpha < 1:
        raise ValueError(f"power.alpha must lie in (0, 1), got {alpha}")
    if power is not None and not alpha < power < 1:
        raise ValueError(f"power.power must lie in (alpha, 1) = ({alpha}, 1), got {power}")


@lru_cache(maxsize=64)
def _chi2_nodes(df: int, nodes: int = _NODES) -> tuple[np.ndarray, np.ndarray]:
    """Nodes and weights (summing to 1) of E[f(X)] for X ~ chi2(df): generalized Gauss-Laguerre in x / 2."""
    y, w = special.roots_genlaguerre(nodes, df / 2 - 1)
    return 2 * y, w / w.sum()


def _nct_two_sided(tc: float, df: float, nc: float) -> float:
    """P(|T| > tc) for T ~ nct(df, nc); scipy's nct returns NaN far in the tail, where the normal limit is exact."""
    # each tail on its own: at df = 1 the far tail is NaN while the near one is finite and far from normal
    upper, lower = float(stats.nct.sf(tc, df, nc)), float(stats.nct.cdf(-tc, df, nc))
    upper = upper if math.isfinite(upper) else float(stats.norm.sf(tc - nc))
    lower = lower if math.isfinite(lower) else float(stats.norm.cdf(-tc - nc))
    return upper + lower


def power_welch(delta: float, var_a: float, var_b: float, n_a: int, n_b: int, alpha: float = 0.05) -> float:
    """Exact power of the two-sided Welch t-test (``ttest_ind(equal_var=False)``) of a mean difference.

    With normal seeds, the mean difference D ~ N(delta, s2) with s2 = var_a / n_a + var_b / n_b is
    independent of the sample variances S_a^2 = var_a X_a / (n_a - 1), X_a ~ chi2(n_a - 1) (and for b). Given
    them, Welch's SE is se = sqrt(S_a^2 / n_a + S_b^2 / n_b), its df is Welch-Satterthwaite's
    se^4 / ((S_a^2 / n_a)^2 / (n_a - 1) + (S_b^2 / n_b)^2 / (n_b - 1)), c = t_{1-alpha/2, df}, and the test
    rejects with probability Phi((delta - c se) / sqrt(s2)) + Phi((-delta - c se) / sqrt(s2)). The power is
    that probability's expectation over X_a and X_b, by Gauss-Laguerre quadrature.

    Args:
        delta: True difference of the arm means.
        var_a, var_b: True variance of one seed's metric in each arm.
        n_a, n_b: Seeds per arm.
        alpha: Two-sided level.

    Returns:
        The power; NaN with fewer than 2 seeds in an arm (the test is undefined); with no variance in
        either arm, 1.0 for delta != 0 and alpha for delta = 0 (the convention of a test that cannot err).
    """
    _check(alpha)
    if n_a < 2 or n_b < 2:
        return float("nan")
    if var_a < 0 or var_b < 0:
        raise ValueError(f"variances must be >= 0, got {var_a} and {var_b}")
    s2 = var_a / n_a + var_b / n_b
    if s2 == 0:
        return 1.0 if delta != 0 else alpha
    if min(n_a, n_b) > _LARGE_N:
        df = s2**2 / ((var_a / n_a) ** 2 / (n_a - 1) + (var_b / n_b) ** 2 / (n_b - 1))
        return _nct_two_sided(stats.t.ppf(1 - alpha / 2, df), df, delta / math.sqrt(s2))
    xa, wa = _chi2_nodes(n_a - 1)
    xb, wb = _chi2_nodes(n_b - 1)
    va = (var_a / n_a) * xa[:, None] / (n_a - 1)  # S_a^2 / n_a at each node
    vb = (var_b / n_b) * xb[None, :] / (n_b - 1)
    se2 = va + vb
    with np.errstate(divide="ignore", invalid="ignore"):
        df = se2**2 / (va**2 / (n_a - 1) + vb**2 / (n_b - 1))
    df = np.where(np.isfinite(df), df, max(n_a, n_b) - 1)  # one arm without spread: that arm's df drops out
    crit = stats.t.ppf(1 - alpha / 2, df) * np.sqrt(se2)
    sd = math.sqrt(s2)
    reject = stats.norm.cdf((delta - crit) / sd) + stats.norm.cdf((-delta - crit) / sd)
    return float(wa @ reject @ wb)


def power_student(delta: float, var: float, n_a: int, n_b: int, alpha: float = 0.05) -> float:
    """Power of Student's two-sided equal-variance t-test: noncentral t at the pooled variance.

    T ~ nct(df = n_a + n_b - 2, nc = delta / (sigma sqrt(1/n_a + 1/n_b))); power = P(T > t_c) + P(T < -t_c),
    t_c = t_{1-alpha/2, df} (Cohen 1988; what statsmodels' TTestIndPower computes with d = delta / sigma).

    Args:
        delta: True difference of means.
        var: Common (pooled) variance of one seed's metric.
        n_a, n_b: Seeds per arm.
        alpha: Two-sided level.
    """
    _check(alpha)
    if n_a < 2 or n_b < 2 or n_a + n_b < 3:
        return float("nan")
    if var == 0:
        return 1.0 if delta != 0 else alpha
    df = n_a + n_b - 2
    nc = delta / math.sqrt(var * (1 / n_a + 1 / n_b))
    return _nct_two_sided(stats.t.ppf(1 - alpha / 2, df), df, nc)


def power_paired(delta: float, var_diff: float, n: int, alpha: float = 0.05) -> float:
    """Power of the two-sided paired t-test (``ttest_rel``) over n per-seed differences.

    T ~ nct(df = n - 1, nc = delta sqrt(n) / sd_diff); exact for normal differences.

    Args:
        delta: True mean of the per-seed difference B - A.
        var_diff: Variance of one seed's difference B - A (var_a + var_b - 2 cov).
        n: Pairs (seeds run in both arms).
        alpha: Two-sided level.
    """
    _check(alpha)
    if n < 2:
        return float("nan")
    if var_diff == 0:
        return 1.0 if delta != 0 else alpha
    df, nc = n - 1, delta * math.sqrt(n / var_diff)
    return _nct_two_sided(stats.t.ppf(1 - alpha / 2, df), df, nc)


def power_normal(delta: float, se: float, alpha: float = 0.05) -> float:
    """Power of a two-sided z-test of a difference with known standard error (e.g. a paired bootstrap SE).

    power = Phi(delta / se - z) + Phi(-delta / se - z), z = z_{1-alpha/2}.
    """
    _check(alpha)
    if se == 0:
        return 1.0 if delta != 0 else alpha
    z = stats.norm.ppf(1 - alpha / 2)
    return float(stats.norm.cdf(delta / se - z) + stats.norm.cdf(-delta / se - z))


def _solve_delta(power_of: Callable[[float], float], scale: float, target: float) -> float:
    """The delta >= 0 where the increasing power_of(delta) reaches target; scale: a typical delta."""
    hi = scale
    while power_of(hi) < target:
        hi *= 2
        if hi > 1e12 * scale:  # cannot happen for the designs here; guards a silent endless loop
            return float("inf")
    return float(optimize.brentq(lambda d: power_of(d) - target, 0.0, hi, xtol=1e-12 * scale, rtol=1e-10))


def mdd_welch(var_a: float, var_b: float, n_a: int, n_b: int, alpha: float = 0.05, power: float = 0.8) -> float:
    """Minimum detectable difference of Welch's test: the delta with power_welch(delta, ...) == power.

    Returns:
        The MDD (same units as the metric); inf with fewer than 2 seeds in an arm (no t-test is possible:
        see mdd_note); 0.0 with no variance in either arm (any difference would show; the t statistic is
        then undefined in practice, so read it as "the seeds do not limit the comparison").
    """
    _check(alpha, power)
    if n_a < 2 or n_b < 2:
        return float("inf")
    s = math.sqrt(var_a / n_a + var_b / n_b)
    if s == 0:
        return 0.0
    return _solve_delta(lambda d: power_welch(d, var_a, var_b, n_a, n_b, alpha), s, power)


def mdd_student(var: float, n_a: int, n_b: int, alpha: float = 0.05, power: float = 0.8) -> float:
    """Minimum detectable difference of Student's test at the pooled variance (nct; see power_student)."""
    _check(alpha, power)
    if n_a < 2 or n_b < 2:
        return float("inf")
    if var == 0:
        return 0.0
    return _solve_delta(lambda d: power_student(d, var, n_a, n_b, alpha), math.sqrt(var * (1 / n_a + 1 / n_b)), power)


def mdd_paired(var_diff: float, n: int, alpha: float = 0.05, power: float = 0.8) -> float:
    """Minimum detectable mean per-seed difference of the paired t-test (see power_paired); inf for n < 2."""
    _check(alpha, power)
    if n < 2:
        return float("inf")
    if var_diff == 0:
        return 0.0
    return _solve_delta(lambda d: power_paired(d, var_diff, n, alpha), math.sqrt(var_diff / n), power)


def mdd_normal(se: float, alpha: float = 0.05, power: float = 0.8) -> float:
    """Minimum detectable difference of a z-test with standard error se (see power_normal).

    Close to (z_{1-alpha/2} + z_power) * se, the usual closed form, which ignores the far tail.
    """
    _check(alpha, power)
    if se == 0:
        return 0.0
    if not math.isfinite(se):
        return float("inf")
    return _solve_delta(lambda d: power_normal(d, se, alpha), se, power)


def mdd_note(n_a: int, n_b: int | None = None, var: float | None = None) -> str | None:
    """Why an MDD is not a finite positive number, in words (None when it is one)."""
    n_b = n_a if n_b is None else n_b
    if min(n_a, n_b) < 2:
        return (f"n = {min(n_a, n_b)} seed(s) in an arm: no seed variance can be estimated and no t-test run, "
                "so no difference is detectable; run at least 2 seeds per arm")
    if var is not None and var == 0:
        return "no variance across seeds: any difference is detectable (the t statistic itself is undefined)"
    return None


def seeds_needed(delta: float, var_a: float, var_b: float | None = None, alpha: float = 0.05, power: float = 0.8,
                 paired: bool = False, max_n: int = 100_000) -> int | None:
    """Seeds per arm for Welch's test (or pairs for the paired test) to detect delta with the given power.

    Args:
        delta: The difference to detect (its sign does not matter).
        var_a, var_b: Per-seed variance of each arm (var_b defaults to var_a); with ``paired``, var_a is the
            variance of one seed's difference and var_b is ignored.
        alpha, power: Level and target power.
        paired: Paired t-test over per-seed differences instead of Welch's test.
        max_n: Search limit.

    Returns:
        The smallest n >= 2 reaching the power, or None when even max_n does not (or delta is 0).
    """
    _check(alpha, power)
    delta = abs(float(delta))
    var_b = var_a if var_b is None else var_b
    if delta == 0:
        return None

    def enough(n: int) -> bool:
        return (power_paired(delta, var_a, n, alpha) if paired else power_welch(delta, var_a, var_b, n, n, alpha)) >= power

    if enough(2):
        return 2
    hi = 4
    while not enough(hi):  # power grows with n: double, then bisect on the integers
        if hi >= max_n:
            return None
        hi = min(2 * hi, max_n)
    lo = hi // 2
    while hi - lo > 1:
        mid = (lo + hi) // 2
        lo, hi = (lo, mid) if enough(mid) else (mid, hi)
    return hi


def samples_needed(delta: float, var_seed: float, var_sample: float, n_test: int, n_seeds: int,
                        alpha: float = 0.05, power: float = 0.8) -> int | None:
    """Test samples for Welch's test at n_seeds per arm to detect delta, when var_sample scales as 1 / n_test.

    At n seeds, Welch's MDD is proportional to the per-seed sd: mdd = sigma * m1, with m1 the MDD at sigma
    = 1. Detecting delta needs sigma^2 <= (delta / m1)^2 = v_max, i.e. var_seed + var_sample * n_test / N <=
    v_max, so N = n_test * var_sample / (v_max - var_seed).

    Returns:
        N (rounded up), or None when var_seed alone exceeds v_max (more test samples cannot help: more seeds
        are needed), n_seeds < 2, or delta is 0.
    """
    _check(alpha, power)
    delta = abs(float(delta))
    if n_seeds < 2 or delta == 0 or n_test <= 0:
        return None
    v_max = (delta / mdd_welch(1.0, 1.0, n_seeds, n_seeds, alpha, power)) ** 2
    if var_seed >= v_max:
        return None
    if var_sample <= 0:
        return int(n_test)
    return int(math.ceil(n_test * var_sample / (v_max - var_seed)))


def binomial_variance(p: float, n: int) -> float:
    """Test-sample variance of a proportion (accuracy) measured on n samples: p (1 - p) / n."""
    if n <= 0:
        raise ValueError(f"a proportion needs n >= 1 test samples, got {n}")
    if not 0 <= p <= 1:
        raise ValueError(f"a proportion lies in [0, 1], got {p}")
    return float(p * (1 - p) / n)


def variance_split(values: Sequence[float], sample_variances: Sequence[float] | None = None) -> dict[str, float]:
    """Split the variance of a metric over seeds into its seed part and its test-sample part.

    var(metric over seeds) = var_seed + var_sample (Bouthillier et al. 2021): the observed sample variance
    (ddof=1) minus the mean of the runs' test-sample variances, floored at 0 (a noisy estimate can come out
    negative; the floor says "no seed variance beyond the test-set noise").

    Args:
        values: The metric, one value per seed (NaN dropped).
        sample_variances: Each run's test-sample variance of the metric (NaN dropped); None: not known.

    Returns:
        ``n``, ``mean``, ``sd``, ``var_total`` (NaN for n < 2), ``var_sample`` (mean of the given ones; NaN
        when none), ``var_seed`` (var_total - var_sample floored at 0; var_total when var_sample is unknown),
        ``sample_share`` (var_sample / (var_seed + var_sample); NaN when unknown).
    """
    x = np.asarray([float(v) for v in values], dtype=np.float64)
    x = x[~np.isnan(x)]
    n = int(x.size)
    total = float(x.var(ddof=1)) if n >= 2 else float("nan")
    sv = np.asarray([] if sample_variances is None else [float(v) for v in sample_variances], dtype=np.float64)
    sv = sv[~np.isnan(sv)]
    var_sample = float(sv.mean()) if sv.size else float("nan")
    var_seed = max(0.0, total - var_sample) if sv.size and not math.isnan(total) else total
    both = var_seed + var_sample
    share = var_sample / both if sv.size and both > 0 else float("nan")
    return {"n": n, "mean": float(x.mean()) if n else float("nan"), "sd": math.sqrt(total) if n >= 2 else float("nan"),
            "var_total": total, "var_sample": var_sample, "var_seed": var_seed, "sample_share": share}


def _weighted_metric(metric: str, targets: np.ndarray, scores: np.ndarray) -> Callable[[np.ndarray], np.ndarray]:
    """metric(targets, scores) for each row of a (B, N) matrix of resample weights (draw counts)."""
    if metric == "auroc":
        return _WeightedAuroc(targets, scores)
    pred = (scores >= 0.5).astype(np.int64) if scores.ndim == 1 else scores.argmax(axis=1)
    correct = (pred == targets).astype(np.float64)
    if metric == "accuracy":
        return lambda w: (w @ correct) / w.sum(axis=1)
    classes = np.unique(targets)
    onehot = (targets[:, None] == classes[None, :]).astype(np.float64)  # (N, K)

    def balanced(w: np.ndarray) -> np.ndarray:
        with np.errstate(invalid="ignore", divide="ignore"):
            return np.mean((w @ (onehot * correct[:, None])) / (w @ onehot), axis=1)

    return balanced


def metric_value(targets: np.ndarray, scores: np.ndarray, metric: str | Callable[..., float] = "accuracy") -> float:
    """One of SAMPLE_METRICS, or a function ``f(targets, scores) -> float``, on the full test set (the same code the
    bootstraps here resample)."""
    targets = np.asarray(targets).astype(np.int64).ravel()
    if callable(metric):
        return float(metric(targets, np.asarray(scores, dtype=np.float64)))
    return float(_weighted_metric(metric, targets, np.asarray(scores, dtype=np.float64))(np.ones((1, targets.size)))[0])


def _bootstrap(targets: np.ndarray, scores: Sequence[np.ndarray], metric: str | Callable[..., float], n_boot: int, seed: int,
               stratify: bool) -> list[np.ndarray]:
    """The metric of each score array on the same n_boot resamples (paired when several arrays)."""
    if not callable(metric) and metric not in SAMPLE_METRICS:
        raise ValueError(f"unknown sample metric {metric!r}; expected one of {SAMPLE_METRICS} or a function")
    targets = np.asarray(targets).astype(np.int64).ravel()
    n = targets.size
    if n == 0:
        raise ValueError("cannot bootstrap zero samples")
    # the built-in metrics read draw counts as weights; a function metric gets the drawn samples themselves
    make = (lambda s: _indexed_metric(metric, targets, s)) if callable(metric) else (lambda s: _weighted_metric(metric, targets, s))
    fns = [make(np.asarray(s, dtype=np.float64)) for s in scores]
    rng = np.random.default_rng(seed)
    out = [np.empty(n_boot) for _ in fns]
    block = max(1, min(n_boot, _BLOCK_ELEMENTS // n))
    for start in range(0, n_boot, block):
        size = min(block, n_boot - start)
        idx = stratified_bootstrap_indices(targets, size, rng, stratify)
        arg = idx if callable(metric) else _counts(idx, n)
        for o, fn in zip(out, fns):
            o[start:start + size] = fn(arg)
    return out


def bootstrap_variance(targets: np.ndarray, scores: np.ndarray, metric: str | Callable[..., float] = "accuracy", n_boot: int = 2000,
                       seed: int = 0, stratify: bool = True) -> float:
    """Test-sample variance of one run's metric: its variance over bootstrap resamples of the test samples.

    Args:
        targets: (N,) integer labels.
        scores: (N,) p(class 1) or (N, C) class probabilities.
        metric: One of SAMPLE_METRICS, or a function ``f(targets, scores) -> float`` (e.g. a TPR at a fixed FPR).
        n_boot, seed: Resamples and the seed of numpy's default_rng.
        stratify: Resample within each class (class counts fixed, as in task=compare).

    Returns:
        The variance (ddof=1) over the resamples where the metric is defined.
    """
    (values,) = _bootstrap(targets, [scores], metric, n_boot, seed, stratify)
    values = values[np.isfinite(values)]
    return float(values.var(ddof=1)) if values.size > 1 else float("nan")


def paired_bootstrap_se(targets: np.ndarray, scores_a: np.ndarray, scores_b: np.ndarray, metric: str | Callable[..., float] = "accuracy",
                        n_boot: int = 2000, seed: int = 0, stratify: bool = True) -> dict[str, float]:
    """Standard errors of metric(B) - metric(A) and of each side, over the same (paired) test-sample resamples.

    Returns:
        ``se_diff``, ``se_a``, ``se_b`` (sd over resamples, ddof=1) and ``n_valid`` (resamples where both
        values are defined).
    """
    a, b = _bootstrap(targets, [scores_a, scores_b], metric, n_boot, seed, stratify)
    ok = np.isfinite(a) & np.isfinite(b)
    sd = (lambda v: float(v[ok].std(ddof=1)) if ok.sum() > 1 else float("nan"))
    return {"se_diff": sd(b - a), "se_a": sd(a), "se_b": sd(b), "n_valid": int(ok.sum())}
