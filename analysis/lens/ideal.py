"""What an ideal arc reader would reach, given each lens's arc S/N (issue 26 item 3).

The simulator records each positive's matched-filter S/N, ``arc_snr = sqrt(sum(arc**2 / var))`` over the
bands. A reader that knows the host and the arc's shape and position and thresholds the normalised
matched-filter output sees a lens of S/N ``s`` as N(s, 1) and an arcless cutout as N(0, 1) (Gaussian
noise, as the simulator's), so no reader of the pixels can do better on that cutout. A real reader knows
neither the arc's position nor its shape: it must try many arc templates and keep the best, which raises
the noise floor (the look-elsewhere effect). Modelled here as the maximum over ``n_templates``
independent templates: an arcless cutout scores M_N = max of N standard normals, a lens
max(s + Z, M_{N-1}). ``n_templates = 1`` is the bound; larger values are a reader that searches.

Every number here is a closed form integrated on a grid, checked against the hand-worked case
(AUROC = Phi(s / sqrt 2) at one template) and against Monte Carlo in tests/lens/test_ideal_reader.py.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from scipy import stats

_GRID = np.linspace(-12.0, 40.0, 20_001)  # standard-normal units; covers S/N up to ~30 beyond any null max


def _null_max_logcdf(x: np.ndarray, n: int) -> np.ndarray:
    """log P(max of n standard normals <= x)."""
    return n * stats.norm.logcdf(x)


def ideal_auroc(snr: Sequence[float] | np.ndarray, n_templates: int = 1) -> np.ndarray:
    """AUROC of each lens against arcless cutouts, for the ideal reader with `n_templates` templates.

    P(lens score > arcless score), with lens score max(s + Z, M_{N-1}) and arcless score M_N.

    Args:
        snr: Matched-filter S/N of each lens (>= 0).
        n_templates: Independent arc templates the reader tries (1: the arc is known).

    Returns:
        One AUROC per lens. The AUROC of a set of lenses against the same negatives is their mean.
    """
    s = np.asarray(snr, dtype=float)
    if n_templates < 1:
        raise ValueError(f"n_templates must be >= 1, got {n_templates}")
    if np.any(~np.isfinite(s)) or np.any(s < 0):
        raise ValueError("snr must be finite and >= 0")
    if n_templates == 1:
        return stats.norm.cdf(s / np.sqrt(2.0))
    x = _GRID
    # density of the arcless score M_N on the grid, and the lens score's CDF G_s(x) = Phi(x - s) Phi(x)^(N-1)
    log_f = np.log(n_templates) + stats.norm.logpdf(x) + (n_templates - 1) * stats.norm.logcdf(x)
    f = np.exp(log_f)
    dx = x[1] - x[0]
    out = np.empty_like(s)
    for i, si in enumerate(s):
        g = np.exp(stats.norm.logcdf(x - si) + _null_max_logcdf(x, n_templates - 1))
        out[i] = 1.0 - np.sum(g * f) * dx  # P(lens > arcless) = 1 - P(lens <= arcless)
    return np.clip(out, 0.0, 1.0)


def ideal_threshold(fpr: float, n_templates: int = 1) -> float:
    """The score above which an arcless cutout falls with probability `fpr`."""
    if not 0.0 < fpr < 1.0:
        raise ValueError(f"fpr must be in (0, 1), got {fpr}")
    # P(M_N > t) = fpr  <=>  Phi(t) = (1 - fpr)^(1/N); log1p keeps it exact for tiny fpr and large N
    return float(stats.norm.isf(-np.expm1(np.log1p(-fpr) / n_templates)))


def ideal_tpr_at_fpr(snr: Sequence[float] | np.ndarray, fpr: float, n_templates: int = 1) -> np.ndarray:
    """Probability that the ideal reader flags each lens at the threshold giving `fpr` on arcless cutouts."""
    s = np.asarray(snr, dtype=float)
    t = ideal_threshold(fpr, n_templates)
    below = stats.norm.logcdf(t - s) + _null_max_logcdf(np.asarray(t), n_templates - 1)
    return -np.expm1(below)


def ideal_reader_table(snr: Sequence[float] | np.ndarray, edges: Sequence[float], n_templates: Sequence[int],
                       fpr: float = 1e-3) -> list[dict[str, float]]:
    """AUROC and TPR at `fpr` of the ideal reader, per S/N bin and over all lenses, for each template count.

    Args:
        snr: The lenses' matched-filter S/N.
        edges: S/N bin edges (a lens with edges[k] <= s < edges[k+1] falls in bin k).
        n_templates: Template counts to tabulate.
        fpr: False-positive rate of the TPR column.

    Returns:
        Rows with ``n_templates``, ``bin`` ("lo-hi" or "all"), ``count``, ``auroc`` and ``tpr``.
    """
    s = np.asarray(snr, dtype=float)
    rows = []
    for n in n_templates:
        auc, tpr = ideal_auroc(s, n), ideal_tpr_at_fpr(s, fpr, n)
        for lo, hi in zip(list(edges[:-1]) + [None], list(edges[1:]) + [None]):
            sel = np.ones_like(s, dtype=bool) if lo is None else (s >= lo) & (s < hi)
            name = "all" if lo is None else f"{lo:g}-{hi:g}"
            rows.append(dict(n_templates=int(n), bin=name, count=int(sel.sum()),
                             auroc=float(auc[sel].mean()) if sel.any() else float("nan"),
                             tpr=float(tpr[sel].mean()) if sel.any() else float("nan")))
    return rows
