"""Multi-seed summaries: mean, sample std and Student-t CIs per arm, and small table helpers.

An *arm* is one configuration run over several seeds. Runs are grouped by their Hydra overrides minus
``seed=...``, so ``experiment=lens_b1 seed=1`` and ``experiment=lens_b1 seed=2`` are one arm.
``metrics_table`` is a generic summary plugin (docs/contract.md): a table of chosen metrics per arm.
"""

from __future__ import annotations

import fnmatch
import math
import re
import warnings
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import numpy as np
from scipy import stats

# the one override parser (Hydra's grammar, imported only when parsing); re-exported for the summary's readers
from rigor.overrides import canonical_override, ignored_key, override_key  # noqa: F401

#: Name of the arm whose overrides were nothing but the seed.
BASE_ARM = "(base)"


def summarize_metric(values: Iterable[float], confidence: float = 0.95) -> dict[str, float]:
    """Mean, sample std and Student-t confidence interval of one metric over seeds.

    NaN values (a metric a run could not compute) are dropped before counting.

    Args:
        values: One value per seed.
        confidence: Confidence level of the interval.

    Returns:
        ``n``, ``mean``, ``std`` (sample std, ddof=1; NaN for n < 2), ``ci_half`` (t_{1-a/2, n-1} * std /
        sqrt(n); NaN for n < 2), ``ci_low``, ``ci_high``.
    """
    x = np.asarray([float(v) for v in values], dtype=np.float64)
    x = x[~np.isnan(x)]
    n = int(x.size)
    mean = float(x.mean()) if n else math.nan
    if n < 2:
        std = half = math.nan
    else:
        std = float(x.std(ddof=1))
        half = float(stats.t.ppf(0.5 + confidence / 2, df=n - 1) * std / math.sqrt(n))
    return {"n": n, "mean": mean, "std": std, "ci_half": half, "ci_low": mean - half, "ci_high": mean + half}


def arm_name(overrides: Sequence[str], experiment: str | None = None, ignore: Sequence[str] = ("seed",)) -> str:
    """Arm key: the overrides except ``seed=...`` (and other ignored keys), sorted and joined with a space.

    Floats and booleans are written canonically (``1e-3`` and ``0.001`` are one arm, so are ``true`` and
    ``True``); other values as given.

    Args:
        overrides: Hydra override strings, e.g. ``["experiment=lens_b1", "seed=42"]``.
        experiment: Experiment name to add as ``experiment=<name>`` when no override sets it.
        ignore: Keys (and their sub-keys) that do not define an arm: the seed, and settings that say how
            a run ran rather than what it computes (threads, paths, the launcher).
    """
    kept = [canonical_override(o) for o in overrides if not ignored_key(override_key(o), ignore)]
    if experiment and not any(override_key(o) == "experiment" for o in kept):
        kept.append(f"experiment={experiment}")
    return " ".join(sorted(kept)) if kept else BASE_ARM


def group_runs(records: Iterable[Mapping[str, Any]], ignore: Sequence[str] = ("seed",)) -> dict[str, list[Mapping[str, Any]]]:
    """Group run records into arms.

    Args:
        records: Dicts ``{job_dir, overrides: list[str], metrics: dict | None, status}``; an optional
            ``experiment`` key is added to the arm name when no override names the experiment.
        ignore: Override keys that do not define an arm (see ``arm_name``).

    Returns:
        Arm name -> its records, in input order (arms sorted by name).
    """
    arms: dict[str, list[Mapping[str, Any]]] = {}
    for rec in records:
        arms.setdefault(arm_name(list(rec.get("overrides") or []), rec.get("experiment"), ignore), []).append(rec)
    return dict(sorted(arms.items()))


def numeric_metrics(metrics: Mapping[str, Any] | None, exclude: Sequence[str] = ("seed",)) -> dict[str, float]:
    """The numeric entries of a metrics.json (bools, strings and the seed left out).

    ``null`` is how metrics.json writes NaN (undefined: an empty bin, an FPR too small for the split), so
    it comes back as NaN: the metric stays in the summary with n = 0 instead of vanishing.
    """
    if not metrics:
        return {}
    return {
        k: math.nan if v is None else float(v)
        for k, v in metrics.items()
        if k not in exclude
        and (v is None or (isinstance(v, (int, float, np.integer, np.floating)) and not isinstance(v, bool)))
    }


#: per-bin, count and CI-bound metrics: many per run, each a detail of a headline number
_DETAIL = re.compile(r"_by_|_count|count_|_n_|^n_|_ci_(low|high)$|_detected|_n(pos|neg)$")


def match_metrics(names: Sequence[str], patterns: Sequence[str] | str, what: str = "metrics") -> list[str]:
    """The metric names matching fnmatch patterns, pattern by pattern, in first-seen order.

    Raises:
        ValueError: A pattern matches no metric (a typo would otherwise give an empty plot or table); the
            message starts with `what`, the setting that carried the pattern.
    """
    names = list(dict.fromkeys(names))
    if isinstance(patterns, str):  # plot_metrics=test_auroc on the command line
        patterns = [patterns]
    chosen: list[str] = []
    for pattern in patterns:
        hits = [n for n in names if fnmatch.fnmatchcase(n, str(pattern))]
        if not hits:
            raise ValueError(f"{what}: {pattern!r} matches no metric of the sweep (e.g. {names[:8]})")
        chosen += [h for h in hits if h not in chosen]
    return chosen


def plot_metrics(names: Sequence[str], patterns: Sequence[str] | None = None, limit: int = 12) -> list[str]:
    """The metrics worth a panel in a sweep's summary plot, in first-seen order.

    Args:
        names: Every metric name of the sweep.
        patterns: fnmatch patterns naming the metrics to plot (``test_auroc``, ``test_tpr*``), in the
            order given; None: the headline metrics, ``best_*`` (not ``best_epoch``) and ``test_*``
            without per-bin, count and CI-bound metrics, then, if there are none, every metric.
        limit: Cap on the number returned.

    Returns:
        Metric names.

    Raises:
        ValueError: A pattern matches no metric (a typo would otherwise give an empty plot).
    """
    if patterns:
        return match_metrics(names, patterns, "plot_metrics")[:limit]
    names = list(dict.fromkeys(names))
    headline = [n for n in names if (n.startswith("test_") or (n.startswith("best_") and n != "best_epoch"))
                and not _DETAIL.search(n)]
    return (headline or names)[:limit]


def summarize_arm(records: Sequence[Mapping[str, Any]], confidence: float = 0.95) -> dict[str, dict[str, float]]:
    """Per numeric metric summary over an arm's completed records (metric -> summarize_metric)."""
    values: dict[str, list[float]] = {}
    for rec in records:
        for k, v in numeric_metrics(rec.get("metrics")).items():
            values.setdefault(k, []).append(v)
    return {k: summarize_metric(v, confidence) for k, v in values.items()}


def fmt(value: Any, digits: int = 4) -> str:
    """A number for a table: fixed digits, 'nan' kept visible, ints as ints."""
    if isinstance(value, (bool, np.bool_)):
        return str(value)
    if isinstance(value, (int, np.integer)):
        return str(int(value))
    if isinstance(value, (float, np.floating)):
        if math.isnan(value):
            return "nan"
        if value != 0 and (abs(value) < 10 ** -digits or abs(value) >= 1e6):
            return f"{value:.{digits - 1}e}"
        return f"{value:.{digits}f}"
    return str(value)


def markdown_table(headers: Sequence[str], rows: Sequence[Sequence[Any]], digits: int = 4) -> str:
    """A GitHub markdown table; numbers formatted with fmt, pipes in cells escaped."""
    def cell(v: Any) -> str:
        return fmt(v, digits).replace("|", "\\|").replace("\n", " ")

    lines = ["| " + " | ".join(str(h) for h in headers) + " |", "|" + "|".join("---" for _ in headers) + "|"]
    lines += ["| " + " | ".join(cell(v) for v in row) + " |" for row in rows]
    return "\n".join(lines)


def metrics_table(
    arms: Mapping[str, Mapping[str, Any]],
    jobs: Sequence[Mapping[str, Any]],
    metrics: Sequence[str],
    title: str = "Selected metrics",
) -> dict[str, Any] | None:
    """Summary plugin: one row per arm, one column per chosen metric, as ``mean [CI]`` over seeds.

    A family declares it under ``summary:`` with the metrics its readers look at first (e.g. a lens
    search's TPR0, TPR10, TPR at FPR 1e-3 and purity), so they are not lost among hundreds of rows.

    Args:
        arms: Arm name -> ``{metrics: {name: summarize_metric dict}, n_completed, ...}``.
        jobs: The job records (unused).
        metrics: Metric names, in column order.
        title: Section title.

    Returns:
        None when no arm has any of the metrics; else ``{"title", "markdown", "result"}`` with
        result[arm][metric] = the summarize_metric dict (or None when the arm lacks it).
    """
    result = {arm: {m: info.get("metrics", {}).get(m) for m in metrics} for arm, info in arms.items()
              if any(m in info.get("metrics", {}) for m in metrics)}
    if not result:
        return None

    def cell(s: Mapping[str, float] | None) -> str:
        if s is None or math.isnan(s["mean"]):
            return "n/a" if s is None else f"nan (n={s['n']})"
        ci = "" if math.isnan(s.get("ci_half", math.nan)) else f" [{fmt(s['ci_low'])}, {fmt(s['ci_high'])}]"
        return f"{fmt(s['mean'])}{ci} (n={s['n']})"

    rows = [[arm] + [cell(values[m]) for m in metrics] for arm, values in result.items()]
    md = ("Mean over completed seeds [Student-t CI] (n = seeds with a value; nan: unresolved or undefined in "
          "every seed)\n\n" + markdown_table(["arm", *metrics], rows))
    return {"title": title, "markdown": md, "result": result}


def arm_matches(arm: str, reference: str) -> bool:
    """True when every override of `reference` (space-separated, ``+``/``~`` ignored) is one of the arm's.

    Both are compared in canonical spelling, so a reference ``model.lr=1e-3`` names the arm ``model.lr=0.001``.
    """
    def tokens(text: str) -> set[str]:
        return {canonical_override(t).lstrip("+~") for t in text.split()}

    return bool(reference.strip()) and tokens(reference) <= tokens(arm)


def pick_reference(arm_names: Iterable[str], reference: str | None) -> tuple[str | None, str | None]:
    """The arm a reference string names: of the arms carrying all its overrides, the one with the fewest.

    Several arms may carry the reference's overrides (a zero-shot arm built on the reference experiment,
    say); the one with the fewest other overrides is the reference, and a tie leaves it undecided. A
    reference without ``=`` is an experiment name: ``lens_b1`` means ``experiment=lens_b1``.

    Returns:
        (arm or None, a note saying why there is none, or None).
    """
    if not reference:
        return None, None
    if "=" not in reference:
        reference = f"experiment={reference}"
    matches = sorted((a for a in arm_names if arm_matches(a, reference)), key=lambda a: len(a.split()))
    if matches and (len(matches) == 1 or len(matches[0].split()) < len(matches[1].split())):
        return matches[0], None
    return None, f"reference {reference!r} matches {len(matches)} arms ({matches})"


def short_arm_names(arm_names: Sequence[str]) -> tuple[dict[str, str], list[str]]:
    """Arm names without the overrides every arm shares (``trainer=cpu_bf16`` on every run, say).

    Returns:
        (arm -> short name, the shared overrides); an arm left with nothing keeps its full name.
    """
    tokens = {a: a.split() for a in arm_names}
    shared = sorted(set.intersection(*(set(t) for t in tokens.values()))) if len(tokens) > 1 else []
    short = {a: " ".join(t for t in tok if t not in shared) or a for a, tok in tokens.items()}
    return short, shared


def welch_test(a: Iterable[float], b: Iterable[float], confidence: float = 0.95) -> dict[str, float]:
    """Welch's unequal-variance t-test over seeds of mean(b) - mean(a) (scipy.stats.ttest_ind, equal_var=False).

    For two arms whose runs do not share a test set (different data, preprocessing or simulation), so no
    per-sample pairing exists: each seed is one draw of the arm's metric. NaN values are dropped.

    Returns:
        ``n_a``, ``n_b``, ``mean_a``, ``mean_b``, ``diff`` (b - a), ``ci_low``/``ci_high`` (Welch CI of the
        difference), ``t``, ``df`` (Welch-Satterthwaite) and two-sided ``p``; the test entries are NaN with
        fewer than 2 values in an arm or no spread in either arm (a t statistic is undefined).
    """
    x = np.asarray([float(v) for v in a], dtype=np.float64)
    y = np.asarray([float(v) for v in b], dtype=np.float64)
    x, y = x[~np.isnan(x)], y[~np.isnan(y)]
    out = {"n_a": int(x.size), "n_b": int(y.size),
           "mean_a": float(x.mean()) if x.size else math.nan, "mean_b": float(y.mean()) if y.size else math.nan}
    out["diff"] = out["mean_b"] - out["mean_a"]
    nan = math.nan
    if x.size < 2 or y.size < 2 or (np.ptp(x) == 0 and np.ptp(y) == 0):
        return {**out, "ci_low": nan, "ci_high": nan, "t": nan, "df": nan, "p": nan}
    with warnings.catch_warnings():  # one arm without spread (TPR0 = 0 in every seed) is a valid case
        warnings.filterwarnings("ignore", "Precision loss occurred in moment calculation")
        res = stats.ttest_ind(y, x, equal_var=False)
    ci = res.confidence_interval(confidence)
    return {**out, "ci_low": float(ci.low), "ci_high": float(ci.high), "t": float(res.statistic),
            "df": float(res.df), "p": float(res.pvalue)}


def seed_comparison(
    arms: Mapping[str, Mapping[str, Any]],
    jobs: Sequence[Mapping[str, Any]],
    metrics: Sequence[str],
    reference: str | None = None,
    confidence: float = 0.95,
    title: str = "Arms compared over seeds (Welch)",
    power: float = 0.8,
) -> dict[str, Any] | None:
    """Summary plugin: each arm against a reference arm (or every pair), metric by metric, Welch's t over seeds.

    Each completed seed's metrics.json value is one observation of its arm. The p-values of the section
    are also Holm-adjusted together (statsmodels), since a table of many tests will show some small p by
    chance. With three seeds an arm, only large differences reach p < 0.05.

    Args:
        arms: Arm name -> ``{job_dirs, ...}`` (the summarizer's arms).
        jobs: The summarizer's job records (``job_dir``, ``status``, ``metrics``).
        metrics: Metric names, in row order.
        reference: Overrides naming the reference arm (``experiment=lens_b1``; see pick_reference); None:
            every pair of arms, in name order.
        confidence: Level of the CIs of the differences; 1 - confidence is the level of the verdicts and MDDs.
        title: Section title.
        power: Target power of each row's minimum detectable difference.

    Returns:
        None with fewer than two arms; else ``{"title", "markdown", "result"}``, result = ``{reference,
        note, tests: [{a, b, metric, welch_test fields..., p_holm, mdd, verdict}]}``: ``mdd`` is the
        difference Welch's test detects with `power` at each arm's n and sample variance (inf for n < 2),
        ``verdict`` "resolved" (p_holm < 1 - confidence) or "not resolved; MDD <mdd>".
    """
    from statsmodels.stats.multitest import multipletests

    from analysis.power import mdd_welch

    by_dir = {str(j["job_dir"]): j for j in jobs if j.get("status") == "completed" and j.get("metrics")}
    values = {arm: [numeric_metrics(by_dir[str(d)]["metrics"]) for d in info.get("job_dirs", []) if str(d) in by_dir]
              for arm, info in arms.items()}
    values = {arm: v for arm, v in values.items() if v}
    if len(values) < 2:
        return None
    ref, note = pick_reference(values, reference)
    names = sorted(values)
    if reference and ref is None:
        pairs: list[tuple[str, str]] = []
    elif ref is not None:
        pairs = [(ref, arm) for arm in names if arm != ref]
    else:
        pairs = [(a, b) for i, a in enumerate(names) for b in names[i + 1:]]
    tests = [{"a": a, "b": b, "metric": m,
              **welch_test([r.get(m, math.nan) for r in values[a]], [r.get(m, math.nan) for r in values[b]],
                           confidence)}
             for a, b in pairs for m in metrics]
    tests = [t for t in tests if t["n_a"] and t["n_b"]]  # an arm without the metric (another family's): no row
    finite = [i for i, t in enumerate(tests) if not math.isnan(t["p"])]
    holm = multipletests([tests[i]["p"] for i in finite], method="holm")[1] if finite else []
    for t in tests:
        t["p_holm"] = math.nan
    for i, p in zip(finite, holm):
        tests[i]["p_holm"] = float(p)
    for t in tests:
        # what the seeds could have resolved: the difference Welch's test detects with the given power
        va, vb = (float(np.nanvar([r.get(t["metric"], math.nan) for r in values[t[k]]], ddof=1))
                  if t[f"n_{k}"] >= 2 else math.nan for k in ("a", "b"))
        t["mdd"] = (mdd_welch(va, vb, t["n_a"], t["n_b"], 1 - confidence, power)
                    if t["n_a"] >= 2 and t["n_b"] >= 2 else math.inf)
        resolved = not math.isnan(t["p_holm"]) and t["p_holm"] < 1 - confidence
        t["verdict"] = "resolved" if resolved else f"not resolved; MDD {fmt(t['mdd'])}"

    level = f"{100 * confidence:g}%"
    short, shared = short_arm_names(names)
    rows = [[f"{short[t['b']]} − {short[t['a']]}", t["metric"], f"{t['n_b']} / {t['n_a']}", t["mean_b"], t["mean_a"], t["diff"],
             "" if math.isnan(t["ci_low"]) else f"[{fmt(t['ci_low'])}, {fmt(t['ci_high'])}]",
             t["t"], t["df"], t["p"], t["p_holm"], t["mdd"], t["verdict"]] for t in tests]
    md = (f"Welch's t-test over seeds (each seed's value is one draw; no pairing of samples), B − A, with the "
          f"{level} CI of the difference; p_holm: Holm-adjusted over the {len(finite)} tests of this table; "
          f"nan: fewer than 2 seeds in an arm, or no spread; pairs where an arm lacks the metric are left out. "
          f"mdd: the difference this Welch test detects with power {power:g} at level {1 - confidence:g}, given each "
          f"arm's seeds and variance (analysis.power.mdd_welch; inf: fewer than 2 seeds); verdict: resolved when "
          f"p_holm < {1 - confidence:g}, else not resolved with that MDD beside it."
          + (f" Overrides every arm shares, left out of the names: `{' '.join(shared)}`." if shared else "") + "\n\n"
          + (f"No comparison: {note}." if note else
             markdown_table(["B − A", "metric", "n B / A", "mean B", "mean A", "diff", f"{level} CI", "t", "df (Welch)",
                             "p", "p_holm", "mdd", "verdict"], rows)))
    return {"title": title, "markdown": md, "result": {"reference": ref, "note": note, "tests": tests}}
