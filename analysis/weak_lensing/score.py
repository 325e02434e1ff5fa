"""The FAIR-Universe weak-lensing challenge score and the kit's reference metrics (seed 001).

Phase-1 score of one map (the kit's ``Score._score_phase1`` before its mean):

    score_i = - sum_t [ (truth - mean)^2 / std^2 + log(std^2) + scale * (truth - mean)^2 ]

over the targets t = (Omega_m, S_8). The reported score is the mean over maps, floored (the kit floors the
mean, not the single maps). ``scale`` and ``floor`` are the kit's constants, written once in
conf/thresholds/weak_lensing.yaml (score_scale, score_floor); every caller passes them. Beside it the kit reports the MSE of
standardised labels, R^2 per target and the 1-sigma coverage (fraction of maps whose truth lies within
mean +- std). ``fit_sigma_scale`` / ``sigma_scale_record`` / ``apply_sigma_scale`` calibrate a direct head's
sigmas (the regression analogue of temperature scaling): the callback and evaluate.py's score task both use
them, and keep the record in ``<run>/checkpoints/sigma_scale.json``. Everything here is plain NumPy; inputs
are (N, T) arrays.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd


def _check(truth: np.ndarray, mean: np.ndarray, std: np.ndarray | None = None) -> tuple[np.ndarray, ...]:
    truth = np.atleast_2d(np.asarray(truth, dtype=np.float64))
    mean = np.atleast_2d(np.asarray(mean, dtype=np.float64))
    if truth.shape != mean.shape:
        raise ValueError(f"truth has shape {truth.shape} but mean has shape {mean.shape}; expected equal (N, T)")
    if std is None:
        return truth, mean
    std = np.atleast_2d(np.asarray(std, dtype=np.float64))
    if std.shape != truth.shape:
        raise ValueError(f"std has shape {std.shape}; expected {truth.shape} like truth")
    if not np.all(np.isfinite(std)) or np.any(std <= 0):
        raise ValueError(f"std must be finite and > 0; got min {np.nanmin(std)} ({int(np.sum(~(std > 0)))} non-positive)")
    return truth, mean, std


def challenge_scores(truth: np.ndarray, mean: np.ndarray, std: np.ndarray, scale: float) -> np.ndarray:
    """Per-map phase-1 score (no floor), shape (N,).

    Args:
        truth: True parameters, (N, T).
        mean: Predicted means, (N, T).
        std: Predicted standard deviations (> 0), (N, T).
        scale: Weight of the plain squared error (the kit's ``scale_factor``).
    """
    truth, mean, std = _check(truth, mean, std)
    sq = (truth - mean) ** 2
    return -np.sum(sq / std**2 + np.log(std**2) + scale * sq, axis=1)


def challenge_score(
    truth: np.ndarray, mean: np.ndarray, std: np.ndarray, scale: float, floor: float
) -> float:
    """Mean phase-1 score over maps, floored at ``floor`` (NaN also becomes the floor)."""
    score = float(np.mean(challenge_scores(truth, mean, std, scale)))
    return score if score >= floor else float(floor)


def standardized_mse(
    truth: np.ndarray, mean: np.ndarray, loc: Sequence[float] | None = None, scale: Sequence[float] | None = None
) -> float:
    """MSE of labels standardised by (loc, scale) per target, averaged over targets.

    Args:
        truth: (N, T) true labels.
        mean: (N, T) predictions.
        loc: Per-target centre of the label scaler (default: the truth's mean).
        scale: Per-target scale of the label scaler (default: the truth's std, ddof 0 as sklearn's StandardScaler).
    """
    truth, mean = _check(truth, mean)
    loc = truth.mean(axis=0) if loc is None else np.asarray(loc, dtype=np.float64)
    scale = truth.std(axis=0) if scale is None else np.asarray(scale, dtype=np.float64)
    if np.any(scale <= 0):
        raise ValueError(f"label scaler scale must be > 0, got {scale}")
    return float(np.mean(((truth - loc) / scale - (mean - loc) / scale) ** 2))


def r2_per_target(truth: np.ndarray, mean: np.ndarray) -> np.ndarray:
    """Coefficient of determination of every target, (T,) (sklearn's r2_score with multioutput='raw_values')."""
    truth, mean = _check(truth, mean)
    ss_res = np.sum((truth - mean) ** 2, axis=0)
    ss_tot = np.sum((truth - truth.mean(axis=0)) ** 2, axis=0)
    with np.errstate(divide="ignore", invalid="ignore"):
        # sklearn: a constant truth gives 1.0 for a perfect fit and 0.0 otherwise
        return np.where(ss_tot > 0, 1.0 - ss_res / np.where(ss_tot > 0, ss_tot, 1.0), np.where(ss_res == 0, 1.0, 0.0))


def coverage(truth: np.ndarray, mean: np.ndarray, std: np.ndarray, n_sigma: float = 1.0) -> np.ndarray:
    """Fraction of maps with |truth - mean| <= n_sigma * std, per target (T,). A calibrated Gaussian gives 0.683."""
    truth, mean, std = _check(truth, mean, std)
    return np.mean(np.abs(truth - mean) <= n_sigma * std, axis=0)


#: The probability mass of a Gaussian within one sigma, erf(1 / sqrt 2): what 1-sigma coverage should be.
ONE_SIGMA = 0.6826894921370859


def fit_sigma_scale(truth: np.ndarray, mean: np.ndarray, std: np.ndarray, target: float = ONE_SIGMA) -> np.ndarray:
    """Per target, the factor k that gives the predicted sigmas the nominal coverage on these maps.

    The regression analogue of temperature scaling: fitted on validation maps, then ``k * std`` is the
    calibrated sigma of any map. k is the ceil(target * N)-th smallest |truth - mean| / std (1-based): the
    smallest k with at least a fraction `target` of the maps inside mean +- k std, so the coverage on the
    fitting maps is ceil(target * N) / N (target up to one map; ties at k can only add maps). This is the
    empirical quantile without interpolation, NumPy's ``np.quantile(z, target, method="inverted_cdf")``,
    raised by a few ulps where floating point would otherwise leave the map that sets k outside k * std.

    Args:
        truth, mean, std: (N, T) arrays (std finite and > 0).
        target: Coverage to reach, in (0, 1); default the Gaussian 1-sigma mass.

    Returns:
        (T,) factors; < 1 where the sigmas were too wide (over-coverage), > 1 where too narrow.
    """
    truth, mean, std = _check(truth, mean, std)
    if not 0.0 < target < 1.0:
        raise ValueError(f"target coverage must lie in (0, 1), got {target}")
    n = truth.shape[0]
    if n == 0:
        raise ValueError("no maps to fit the sigma scale on")
    if not (np.all(np.isfinite(truth)) and np.all(np.isfinite(mean))):
        raise ValueError("truth and mean must be finite to fit the sigma scale")
    dist = np.abs(truth - mean)
    rank = max(int(np.ceil(target * n - 1e-9)), 1)  # 1-based; the tolerance keeps 0.5 * 4 at 2, not 3
    k = np.sort(dist / std, axis=0)[rank - 1]
    # std * (dist / std) can round one ulp below dist, and coverage() would then miss the map that sets k:
    # raise k by ulps (a relative 1e-16 or so) until coverage's own comparison counts `rank` maps
    while True:
        short = np.sum(dist <= std * k, axis=0) < rank
        if not short.any():
            return k
        k = np.where(short, np.nextafter(k, np.inf), k)


def sigma_scale_record(
    truth: np.ndarray, mean: np.ndarray, std: np.ndarray, target_names: Sequence[str], target: float = ONE_SIGMA
) -> dict[str, Any]:
    """The per-target factors fitted on these maps and what they do there: what ``sigma_scale.json`` holds.

    Args:
        truth, mean, std: (N, T) arrays of the fitting (validation) maps.
        target_names: The T target names, in column order.
        target: Coverage to reach (see ``fit_sigma_scale``).

    Returns:
        ``{sigma_scale: {t: k}, n, target_coverage, coverage_before: {t: c}, coverage_after: {t: c}}``.
    """
    truth, mean, std = _check(truth, mean, std)
    if len(target_names) != truth.shape[1]:
        raise ValueError(f"{len(target_names)} target names {list(target_names)} for {truth.shape[1]} target columns")
    k = fit_sigma_scale(truth, mean, std, target)
    before, after = coverage(truth, mean, std), coverage(truth, mean, std * k)
    per = lambda v: {t: float(v[j]) for j, t in enumerate(target_names)}  # noqa: E731
    return {"sigma_scale": per(k), "n": int(truth.shape[0]), "target_coverage": float(target),
            "coverage_before": per(before), "coverage_after": per(after)}


def apply_sigma_scale(std: np.ndarray, target_names: Sequence[str], sigma_scale: Mapping[str, float]) -> np.ndarray:
    """``std`` with column t multiplied by ``sigma_scale[t]``; the factors are matched by target name.

    Raises:
        ValueError: a target without a factor, a factor for a target these predictions do not have, or a
            factor that is not finite and > 0.
    """
    std = np.atleast_2d(std)  # std * k below is float64 whatever std's type
    names = list(target_names)
    if len(names) != std.shape[1]:
        raise ValueError(f"{len(names)} target names {names} for {std.shape[1]} std columns")
    missing = [t for t in names if t not in sigma_scale]
    unknown = [t for t in sigma_scale if t not in names]
    if missing or unknown:
        raise ValueError(f"sigma scale for targets {sorted(sigma_scale)} does not match the predictions' targets {names}"
                         f" (missing {missing}, unknown {unknown})")
    k = np.array([float(sigma_scale[t]) for t in names])
    if not np.all(np.isfinite(k)) or np.any(k <= 0):
        raise ValueError(f"sigma scale must be finite and > 0, got {dict(zip(names, k.tolist()))}")
    return std * k


def wl_metrics(
    truth: np.ndarray,
    mean: np.ndarray,
    std: np.ndarray,
    target_names: Sequence[str],
    scale: float,
    floor: float,
    label_loc: Sequence[float] | None = None,
    label_scale: Sequence[float] | None = None,
) -> dict[str, float]:
    """Score, standardised MSE, R^2, 1-sigma coverage and mean sigma, flat names for metrics.json.

    ``label_loc`` / ``label_scale`` are the run's label scaler (None: the truth's own mean and std, see
    ``standardized_mse``); pass the run's to get the run's ``mse_std``.

    Returns keys ``score``, ``score_unfloored``, ``mse_std``, ``r2_<t>``, ``coverage_<t>``,
    ``coverage`` (mean over targets), ``mean_sigma_<t>`` and ``n``.
    """
    truth, mean, std = _check(truth, mean, std)
    if len(target_names) != truth.shape[1]:
        raise ValueError(f"{len(target_names)} target names {list(target_names)} for {truth.shape[1]} target columns")
    per_map = challenge_scores(truth, mean, std, scale)
    out: dict[str, float] = {
        "score": challenge_score(truth, mean, std, scale, floor),
        "score_unfloored": float(np.mean(per_map)),
        "mse_std": standardized_mse(truth, mean, label_loc, label_scale),
    }
    cov = coverage(truth, mean, std)
    for j, name in enumerate(target_names):
        out[f"r2_{name}"] = float(r2_per_target(truth, mean)[j])
        out[f"coverage_{name}"] = float(cov[j])
        out[f"mean_sigma_{name}"] = float(np.mean(std[:, j]))
    out["coverage"] = float(np.mean(cov))
    out["n"] = float(truth.shape[0])
    return out


def predictions_arrays(frame: pd.DataFrame, target_names: Sequence[str], source: str = "predictions") -> tuple[np.ndarray, ...]:
    """(truth, mean, std) arrays from a regression predictions frame (columns ``t``, ``t_mean``, ``t_std``).

    Raises:
        ValueError: naming the source and the missing column(s).
    """
    need = [c for t in target_names for c in (t, f"{t}_mean", f"{t}_std")]
    missing = [c for c in need if c not in frame.columns]
    if missing:
        raise ValueError(
            f"{source}: missing column(s) {missing}; a regression-with-uncertainty predictions file needs "
            f"t, t_mean, t_std for every target {list(target_names)}"
        )
    get = lambda suffix: np.stack([frame[f"{t}{suffix}"].to_numpy(np.float64) for t in target_names], axis=1)  # noqa: E731
    return get(""), get("_mean"), get("_std")


def per_map_frame(frame: pd.DataFrame, target_names: Sequence[str], scale: float) -> pd.DataFrame:
    """The predictions frame with a ``score`` column (per-map phase-1 score) and ``covered_<t>`` flags."""
    truth, mean, std = predictions_arrays(frame, target_names)
    out = frame.copy()
    out["score"] = challenge_scores(truth, mean, std, scale)
    for j, t in enumerate(target_names):
        out[f"covered_{t}"] = np.abs(truth[:, j] - mean[:, j]) <= std[:, j]
    return out
