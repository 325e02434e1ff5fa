"""Fisher forecast of (Omega_m, S_8) from the binned convergence power spectrum (issue 22, item 2).

What the power-spectrum summary of the embedded maps can give at best: the binned C_ell that
``analysis.weak_lensing.power_spectrum.binned_cl`` measures (pixelised, not deconvolved), with a Gaussian
covariance over the unmasked modes,

    Cov(C_b) = 2 (C_b + N) ^ 2 / n_b,    n_b = (2 ell + 1) Delta ell f_sky,

where C_b is the pyccl C_ell (the simulator's: Eisenstein-Hu + halofit, the BCM baryons, the Smail n(z))
times the square-pixel window squared, averaged over the Fourier modes of the map in bin b, and
N = sigma_pix^2 dOmega the white shape noise of the pixelised map (the kit's sigma_pix =
0.4 / sqrt(2 n_g p^2), so N = 0.4^2 / (2 n_g)); noise over the window is the same thing in sky units.
n_b is counted on the map's own Fourier grid (twice its rfft2 modes in the bin, times the valid
fraction of the mask), which equals (2 ell + 1) Delta ell f_sky for a bin inside the Nyquist square and
is right for bins it cuts (``n_modes_formula`` is the textbook count; a test checks they agree).
Derivatives are central finite differences of pyccl C_ell. The nuisances of the simulation (log T_AGN,
dz) enter either fixed at their centre or marginalised with their simulation spread as a Gaussian prior
(a map's nuisances are drawn per map, so the MCMC likelihood's per-cosmology covariance carries them).

The Gaussian covariance ignores the non-Gaussian (trispectrum and super-sample) covariance of lognormal
maps, so the bound is optimistic for the power spectrum; a summary that beats it on these maps must use
information beyond the power spectrum.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from analysis.weak_lensing.power_spectrum import ARCMIN, ell_grid, mode_counts, pixel_window

PARAMS = ("omega_m", "s8", "log_t_agn", "dz")


def n_modes_formula(edges: np.ndarray, f_sky: float) -> np.ndarray:
    """(2 ell + 1) Delta ell f_sky per bin, ell the bin's arithmetic centre: real modes of a full-sky estimate."""
    edges = np.asarray(edges, dtype=np.float64)
    centre, width = 0.5 * (edges[1:] + edges[:-1]), np.diff(edges)
    return (2 * centre + 1) * width * f_sky


def n_modes_grid(shape: tuple[int, int], pixel_arcmin: float, edges: np.ndarray, valid_fraction: float = 1.0) -> np.ndarray:
    """Real modes per bin on the map's Fourier grid: 2 x its rfft2 modes (a complex mode is two) x the valid fraction."""
    return 2.0 * mode_counts(shape, pixel_arcmin, edges) * valid_fraction


def gaussian_cl_variance(cl: np.ndarray, noise: np.ndarray | float, n_modes: np.ndarray) -> np.ndarray:
    """Var(C_b) = 2 (C_b + N_b)^2 / n_b (inf where a bin has no modes)."""
    n_modes = np.asarray(n_modes, dtype=np.float64)
    with np.errstate(divide="ignore"):
        return np.where(n_modes > 0, 2.0 * (np.asarray(cl) + noise) ** 2 / np.maximum(n_modes, 1e-300), np.inf)


def fisher_matrix(derivatives: np.ndarray, covariance: np.ndarray, prior_sigma: Sequence[float | None] | None = None) -> np.ndarray:
    """F_ij = dC/dtheta_i^T Cov^-1 dC/dtheta_j (+ 1 / sigma_prior_i^2 on the diagonal).

    Args:
        derivatives: (P, B) derivatives of the data vector.
        covariance: (B,) variances (diagonal covariance) or a (B, B) covariance.
        prior_sigma: Per parameter Gaussian prior std (None: no prior on that parameter).
    """
    d = np.atleast_2d(np.asarray(derivatives, dtype=np.float64))
    cov = np.asarray(covariance, dtype=np.float64)
    if cov.ndim == 1:
        fisher = (d / cov[None, :]) @ d.T
    else:
        fisher = d @ np.linalg.solve(cov, d.T)
    for i, s in enumerate(prior_sigma or []):
        if s is not None:
            fisher[i, i] += 1.0 / float(s) ** 2
    return fisher


def marginal_sigmas(fisher: np.ndarray) -> np.ndarray:
    """sqrt(diag(F^-1)): the marginalised 1-sigma of every parameter."""
    return np.sqrt(np.diag(np.linalg.inv(fisher)))


def expected_score(sigma: Sequence[float], scale: float) -> float:
    """Mean challenge score of an unbiased, calibrated Gaussian predictor with these sigmas per target.

    E[(t - m)^2 / s^2 + log s^2 + scale (t - m)^2] = 1 + log s^2 + scale s^2 when t - m ~ N(0, s^2).
    """
    s2 = np.asarray(sigma, dtype=np.float64) ** 2
    return float(-np.sum(1.0 + np.log(s2) + scale * s2))


def with_gaussian_prior(sigma: Sequence[float], correlation: float, prior_std: Sequence[float]) -> np.ndarray:
    """Marginal sigmas of two parameters after adding independent Gaussian priors to their forecast.

    The design of cosmologies is itself information (the MCMC's flat prior in its hull, a network's
    training labels); as a Gaussian of the design's std this is its Fisher approximation.
    """
    s = np.asarray(sigma, dtype=np.float64)
    cov = np.outer(s, s) * np.array([[1.0, correlation], [correlation, 1.0]])
    fisher = np.linalg.inv(cov) + np.diag(1.0 / np.asarray(prior_std, dtype=np.float64) ** 2)
    return marginal_sigmas(fisher)


def binned_model_cl(cfg: Any, theta: Sequence[float], edges: np.ndarray) -> np.ndarray:
    """The pixelised C_b the estimator measures on a noiseless map: pyccl C(ell_k) W(ell_k)^2 averaged per bin.

    Args:
        cfg: A WLSimConfig (geometry, cosmology and n(z) of the maps).
        theta: (Omega_m, S_8, log T_AGN, dz).
        edges: Bin edges in ell.
    """
    from datamodules.weak_lensing.simulate import angular_cl, ell_nodes, interpolate_cl, make_cosmology

    omega_m, s8, log_t_agn, dz = (float(v) for v in theta)
    nodes = ell_nodes(cfg)
    cl_nodes = angular_cl(cfg, make_cosmology(cfg, omega_m, s8), log_t_agn, dz, nodes)
    shape, pixel = cfg.shape, cfg.map_pixel_arcmin
    lx, ly = ell_grid(shape, pixel)
    ell = np.hypot(lx, ly).ravel()
    power = interpolate_cl(nodes, cl_nodes, ell) * pixel_window(shape, pixel).ravel() ** 2
    which = np.digitize(ell, edges) - 1
    ok = (which >= 0) & (which < len(edges) - 1)
    counts = np.bincount(which[ok], minlength=len(edges) - 1)
    sums = np.bincount(which[ok], weights=power[ok], minlength=len(edges) - 1)
    with np.errstate(invalid="ignore", divide="ignore"):
        return sums / counts


@dataclasses.dataclass(frozen=True)
class FisherForecast:
    """The forecast and what it was computed from (``as_dict`` for metrics.json and the docs)."""

    sigma_omega_m: float  # nuisances marginalised with their simulation spread
    sigma_s8: float
    sigma_omega_m_fixed: float  # nuisances fixed at their centre
    sigma_s8_fixed: float
    correlation: float  # of (Omega_m, S_8), marginalised
    n_bins: int  # bins with modes
    n_modes: float  # real modes over those bins
    f_sky: float
    noise_cl: float
    ell_max: float  # the largest ell with modes on the grid (the Nyquist corner)

    def as_dict(self, prefix: str = "fisher_") -> dict[str, float]:
        return {f"{prefix}{k}": float(v) for k, v in dataclasses.asdict(self).items()}


def wl_fisher(cfg: Any, edges: np.ndarray, mask: np.ndarray | None = None, theta: Sequence[float] | None = None,
              steps: Mapping[str, float] | None = None) -> FisherForecast:
    """Fisher forecast of (Omega_m, S_8) from the binned power spectrum of one map of the config's data set.

    Args:
        cfg: A WLSimConfig or a mapping of its fields (``data.simulation``).
        edges: The power-spectrum summary's bin edges (conf/thresholds/weak_lensing.yaml, mcmc.ps_*).
        mask: The (H, W) mask of the maps (None: the config's survey mask).
        theta: (Omega_m, S_8, log T_AGN, dz) of the forecast (None: the fiducial, the nuisance centre).
        steps: Finite-difference half-steps per parameter (defaults: 0.01, 0.01, 0.1, 0.005).

    Returns:
        A FisherForecast.
    """
    from datamodules.weak_lensing.simulate import as_config, survey_mask

    cfg = as_config(cfg)
    edges = np.asarray(edges, dtype=np.float64)
    mask = survey_mask(cfg) if mask is None else np.asarray(mask, dtype=bool)
    if theta is None:
        theta = (*cfg.fiducial, float(np.mean(cfg.log_t_agn_range)), 0.0)
    theta = np.asarray(theta, dtype=np.float64)
    step = {"omega_m": 0.01, "s8": 0.01, "log_t_agn": 0.1, "dz": 0.005, **dict(steps or {})}
    derivs = []
    for i, name in enumerate(PARAMS):
        up, down = theta.copy(), theta.copy()
        up[i] += step[name]
        down[i] -= step[name]
        derivs.append((binned_model_cl(cfg, up, edges) - binned_model_cl(cfg, down, edges)) / (2 * step[name]))
    derivs = np.array(derivs)
    cl = binned_model_cl(cfg, theta, edges)
    pixel = cfg.map_pixel_arcmin
    noise = cfg.noise_sigma**2 * (pixel * ARCMIN) ** 2  # white pixel noise in C_ell units
    valid = float(mask.mean())
    n_modes = n_modes_grid(mask.shape, pixel, edges, valid)
    keep = n_modes > 0
    var = gaussian_cl_variance(cl[keep], noise, n_modes[keep])
    d = derivs[:, keep]
    # uniform log T_AGN: std = width / sqrt(12); dz: its normal std
    prior = [None, None, (cfg.log_t_agn_range[1] - cfg.log_t_agn_range[0]) / np.sqrt(12.0), cfg.dz_std]
    marg = np.linalg.inv(fisher_matrix(d, var, prior))
    fixed = marginal_sigmas(fisher_matrix(d[:2], var))
    lx, ly = ell_grid(mask.shape, pixel)
    return FisherForecast(
        sigma_omega_m=float(np.sqrt(marg[0, 0])), sigma_s8=float(np.sqrt(marg[1, 1])),
        sigma_omega_m_fixed=float(fixed[0]), sigma_s8_fixed=float(fixed[1]),
        correlation=float(marg[0, 1] / np.sqrt(marg[0, 0] * marg[1, 1])), n_bins=int(keep.sum()),
        n_modes=float(n_modes[keep].sum()), f_sky=float(mask.sum() * (pixel * ARCMIN) ** 2 / (4 * np.pi)),
        noise_cl=float(noise), ell_max=float(np.hypot(lx, ly).max()),
    )
