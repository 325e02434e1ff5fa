"""Plots as pure functions of arrays and a path.

Figures are built with matplotlib's object API on an Agg canvas, never through pyplot, so no global
backend is switched and nothing needs a display.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure


def _save(fig: Figure, path: str | Path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    FigureCanvasAgg(fig)
    fig.savefig(path, dpi=120, bbox_inches="tight")
    return path


def _reliability_panel(ax: Any, bins: Mapping[str, np.ndarray], label: str, ece_value: float | None) -> None:
    lower, upper = np.asarray(bins["lower"]), np.asarray(bins["upper"])
    acc, count = np.asarray(bins["accuracy"], dtype=float), np.asarray(bins["count"])
    conf = np.asarray(bins["confidence"], dtype=float)
    width = upper - lower
    full = count > 0
    ax.bar(lower[full], acc[full], width=width[full], align="edge", edgecolor="black", alpha=0.8, label="accuracy")
    # Gap between confidence and accuracy, drawn per bin as in Guo et al. (2017).
    ax.bar(lower[full], conf[full] - acc[full], bottom=acc[full], width=width[full], align="edge",
           color="red", alpha=0.3, hatch="//", label="gap to confidence")
    ax.plot([0, 1], [0, 1], "k--", lw=1, label="perfect calibration")
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1)
    ax.set_xlabel("confidence")
    ax.set_ylabel("accuracy")
    title = label if ece_value is None else f"{label} (ECE {ece_value:.4f})"
    ax.set_title(title)
    ax.legend(loc="upper left", fontsize=8)


def _ece_of(bins: Mapping[str, np.ndarray]) -> float | None:
    count = np.asarray(bins["count"])
    n = count.sum()
    if n == 0:
        return None
    full = count > 0
    return float(np.sum(count[full] / n * np.abs(np.asarray(bins["accuracy"])[full] - np.asarray(bins["confidence"])[full])))


def reliability_diagram(
    bins_before: Mapping[str, np.ndarray],
    bins_after: Mapping[str, np.ndarray] | None,
    path: str | Path,
    title: str = "Reliability diagram",
) -> Path:
    """Reliability diagrams before and after temperature scaling, side by side.

    Args:
        bins_before: Output of analysis.calibration.reliability_bins on the uncalibrated probabilities.
        bins_after: Same after calibration, or None for a single panel.
        path: Where to write the PNG.
        title: Figure title.

    Returns:
        The path written.
    """
    panels = [("before", bins_before)] + ([("after", bins_after)] if bins_after is not None else [])
    fig = Figure(figsize=(5 * len(panels), 5))
    for i, (label, bins) in enumerate(panels):
        _reliability_panel(fig.add_subplot(1, len(panels), i + 1), bins, label, _ece_of(bins))
    fig.suptitle(title)
    return _save(fig, path)


def metric_bars(
    summary_table: Sequence[Mapping[str, Any]] | Any,
    path: str | Path,
    metrics: Sequence[str] | None = None,
    max_metrics: int = 12,
) -> Path:
    """Bars of per-arm means with 95% CI whiskers, one panel per metric.

    Args:
        summary_table: Rows (dicts or a pandas DataFrame) with ``arm``, ``metric``, ``mean``,
            ``ci_low``, ``ci_high`` (and optionally ``n``).
        path: Where to write the PNG.
        metrics: Metrics to draw (default: all, in first-seen order, up to max_metrics).
        max_metrics: Cap on panels when `metrics` is not given.

    Returns:
        The path written.
    """
    rows = summary_table.to_dict("records") if hasattr(summary_table, "to_dict") else list(summary_table)
    if metrics is None:
        metrics = list(dict.fromkeys(r["metric"] for r in rows))[:max_metrics]
    arms = list(dict.fromkeys(r["arm"] for r in rows))
    n_cols = min(3, max(1, len(metrics)))
    n_rows = max(1, math.ceil(len(metrics) / n_cols))
    fig = Figure(figsize=(4.5 * n_cols, 3.2 * n_rows + 0.4 * len(arms)))
    for i, metric in enumerate(metrics):
        ax = fig.add_subplot(n_rows, n_cols, i + 1)
        by_arm = {r["arm"]: r for r in rows if r["metric"] == metric}
        x = np.arange(len(arms))
        means = np.array([float(by_arm[a]["mean"]) if a in by_arm else np.nan for a in arms])
        lows = np.array([float(by_arm[a].get("ci_low", np.nan)) if a in by_arm else np.nan for a in arms])
        highs = np.array([float(by_arm[a].get("ci_high", np.nan)) if a in by_arm else np.nan for a in arms])
        ax.bar(x, np.nan_to_num(means), color=[f"C{j % 10}" for j in range(len(arms))])
        has_ci = np.isfinite(lows) & np.isfinite(highs)  # n < 2: no CI, no whisker
        if has_ci.any():
            ax.errorbar(x[has_ci], means[has_ci], yerr=np.vstack([means - lows, highs - means])[:, has_ci],
                        fmt="none", ecolor="black", capsize=4)
        if not np.isfinite(means).any():  # e.g. TPR at an FPR no split resolves: say so, not an empty frame
            ax.text(0.5, 0.5, "no value in any arm (null)", transform=ax.transAxes, ha="center", va="center", fontsize=9)
        ax.set_xticks(x)
        ax.set_xticklabels([str(j) for j in range(len(arms))])
        ax.set_title(metric, fontsize=9)
    legend = "\n".join(f"{j}: {a}" for j, a in enumerate(arms))
    fig.text(0.01, 0.0, "arms (mean, 95% t CI):\n" + legend, fontsize=8, va="top", family="monospace")
    fig.tight_layout()
    return _save(fig, path)
