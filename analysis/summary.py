"""Multi-seed summaries: mean, sample std and Student-t CIs per arm, and small table helpers.

An *arm* is one configuration run over several seeds. Runs are grouped by their Hydra overrides minus
``seed=...``, so ``experiment=lens_b1 seed=1`` and ``experiment=lens_b1 seed=2`` are one arm.
``metrics_table`` is a generic summary plugin (docs/contract.md): a table of chosen metrics per arm.
"""

from __future__ import annotations

import fnmatch
import math
import re
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import numpy as np
from scipy import stats

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
    mean = float(x.mean()) if n else float("nan")
    if n < 2:
        std = half = float("nan")
    else:
        std = float(x.std(ddof=1))
        half = float(stats.t.ppf(0.5 + confidence / 2, df=n - 1) * std / math.sqrt(n))
    return {"n": n, "mean": mean, "std": std, "ci_half": half, "ci_low": mean - half, "ci_high": mean + half}


def override_key(override: str) -> str:
    """The key of a Hydra override, without +/++/~ prefixes: '++seed=3' -> 'seed'."""
    return override.split("=", 1)[0].lstrip("+~").strip()


def canonical_override(override: str) -> str:
    """One spelling per value, as Hydra parses it: ``x=1e-3`` and ``x=0.001``, ``x=true`` and ``x=True``,
    ``x=[1, 2]`` and ``x=[1,2]`` are each one override (Hydra's sweeps write values back in their own
    spelling; single runs keep what was typed). An override Hydra cannot parse is compared as text."""
    from hydra.core.override_parser.overrides_parser import OverridesParser

    try:
        parsed = OverridesParser.create().parse_overrides([override.strip()])[0]
    except Exception:
        return override.strip()
    value = "null" if parsed.value() is None else parsed.get_value_element_as_str()
    return f"{parsed.get_key_element()}={value}"


def ignored_key(key: str, ignore: Sequence[str]) -> bool:
    """Whether an override key is one of `ignore` or below one (``a.b``, ``a/b`` under ``a``)."""
    return any(key == i or key.startswith((i + ".", i + "/")) for i in ignore)


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
        k: float("nan") if v is None else float(v)
        for k, v in metrics.items()
        if k not in exclude
        and (v is None or (isinstance(v, (int, float, np.integer, np.floating)) and not isinstance(v, bool)))
    }


#: per-bin, count and CI-bound metrics: many per run, each a detail of a headline number
_DETAIL = re.compile(r"_by_|_count|count_|_n_|^n_|_ci_(low|high)$|_detected|_n(pos|neg)$")


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
    names = list(dict.fromkeys(names))
    if isinstance(patterns, str):  # plot_metrics=test_auroc on the command line
        patterns = [patterns]
    if patterns:
        chosen: list[str] = []
        for pattern in patterns:
            hits = [n for n in names if fnmatch.fnmatchcase(n, str(pattern))]
            if not hits:
                raise ValueError(f"plot_metrics: {pattern!r} matches no metric of the sweep (e.g. {names[:8]})")
            chosen += [h for h in hits if h not in chosen]
        return chosen[:limit]
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
        ci = "" if math.isnan(s.get("ci_half", float("nan"))) else f" [{fmt(s['ci_low'])}, {fmt(s['ci_high'])}]"
        return f"{fmt(s['mean'])}{ci} (n={s['n']})"

    rows = [[arm] + [cell(values[m]) for m in metrics] for arm, values in result.items()]
    md = ("Mean over completed seeds [Student-t CI] (n = seeds with a value; nan: unresolved or undefined in "
          "every seed)\n\n" + markdown_table(["arm", *metrics], rows))
    return {"title": title, "markdown": md, "result": result}
