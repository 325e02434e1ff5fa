"""What the weak-lensing data allow, stated beside every score (issue 22, item 2).

Two reference scores on the same test maps, pure functions of the labels:

- prior-only: every map gets the prior's mean and std for both targets (the prior: the training labels,
  i.e. the design of cosmologies the maps were drawn from). For the challenge score a constant Gaussian
  prediction is best with the mean and std of the truths, so this is the score of knowing nothing;
- perfect S_8: S_8 exact (mean = truth) with a stated sigma (``sigma_s8``; the score's log sigma^2 term
  is unbounded as sigma -> 0, so "perfect" needs a number), Omega_m from the prior. It is what learning
  S_8 alone can reach: the score is dominated by Omega_m.

``score_terms`` splits a score into its per-target parts, and ``one_point_moments`` / ``summary_r2`` give
the non-Gaussian information check (R^2 of Omega_m from the one-point skewness of the maps).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from analysis.weak_lensing.score import challenge_score, challenge_scores


def prior_moments(train_labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(mean (T,), std (T,)) of the training labels: the prior the test maps' cosmologies come from."""
    labels = np.atleast_2d(np.asarray(train_labels, dtype=np.float64))
    return labels.mean(axis=0), labels.std(axis=0)


def prior_only_score(truth: np.ndarray, prior_mean: Sequence[float], prior_std: Sequence[float], scale: float,
                     floor: float) -> float:
    """Challenge score of predicting the prior's mean and std for every map and target."""
    truth = np.atleast_2d(np.asarray(truth, dtype=np.float64))
    mean = np.broadcast_to(np.asarray(prior_mean, dtype=np.float64), truth.shape)
    std = np.broadcast_to(np.asarray(prior_std, dtype=np.float64), truth.shape)
    return challenge_score(truth, mean, std, scale, floor)


def perfect_target_score(truth: np.ndarray, prior_mean: Sequence[float], prior_std: Sequence[float], target: int,
                         sigma: float, scale: float, floor: float) -> float:
    """Challenge score with target ``target`` exact (std ``sigma``) and the others from the prior."""
    truth = np.atleast_2d(np.asarray(truth, dtype=np.float64))
    mean = np.array(np.broadcast_to(np.asarray(prior_mean, dtype=np.float64), truth.shape))
    std = np.array(np.broadcast_to(np.asarray(prior_std, dtype=np.float64), truth.shape))
    mean[:, target], std[:, target] = truth[:, target], float(sigma)
    return challenge_score(truth, mean, std, scale, floor)


def score_terms(truth: np.ndarray, mean: np.ndarray, std: np.ndarray, scale: float) -> np.ndarray:
    """Mean score contribution of every target, (T,) (they sum to the unfloored score)."""
    truth, mean, std = (np.atleast_2d(np.asarray(v, dtype=np.float64)) for v in (truth, mean, std))
    return np.array([np.mean(challenge_scores(truth[:, [j]], mean[:, [j]], std[:, [j]], scale)) for j in range(truth.shape[1])])


def data_bounds(truth: np.ndarray, train_labels: np.ndarray, target_names: Sequence[str], scale: float, floor: float,
                sigma_s8: float) -> dict[str, float]:
    """``score_prior_only`` and ``score_perfect_s8`` (plus ``prior_std_<t>``) on these test labels.

    Args:
        truth: (N, T) test labels.
        train_labels: (M, T) training labels (the prior).
        target_names: Names of the T targets; one must be ``s8``.
        scale, floor: The challenge score's constants.
        sigma_s8: The std given to the exact S_8.
    """
    names = list(target_names)
    if "s8" not in names:
        raise ValueError(f"data_bounds: no 's8' among the targets {names}")
    mean, std = prior_moments(train_labels)
    out = {"score_prior_only": prior_only_score(truth, mean, std, scale, floor),
           "score_perfect_s8": perfect_target_score(truth, mean, std, names.index("s8"), sigma_s8, scale, floor)}
    out.update({f"prior_std_{t}": float(std[j]) for j, t in enumerate(names)})
    return out


def one_point_moments(maps: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """(N, 3) standard deviation, skewness and excess kurtosis of the valid pixels of every map."""
    from scipy.stats import kurtosis, skew

    vals = np.asarray(maps, dtype=np.float64)[:, np.asarray(mask, dtype=bool)]
    return np.stack([vals.std(axis=1), skew(vals, axis=1), kurtosis(vals, axis=1)], axis=1)


def summary_r2(train_x: np.ndarray, train_y: np.ndarray, test_x: np.ndarray, test_y: np.ndarray, degree: int = 2) -> float:
    """Held-out R^2 of a least-squares polynomial (with cross terms) of the summaries predicting one label."""
    from sklearn.linear_model import LinearRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import PolynomialFeatures, StandardScaler

    model = make_pipeline(StandardScaler(), PolynomialFeatures(degree), LinearRegression())
    model.fit(np.atleast_2d(train_x), np.asarray(train_y))
    pred = model.predict(np.atleast_2d(test_x))
    test_y = np.asarray(test_y, dtype=np.float64)
    return float(1.0 - np.sum((test_y - pred) ** 2) / np.sum((test_y - test_y.mean()) ** 2))
