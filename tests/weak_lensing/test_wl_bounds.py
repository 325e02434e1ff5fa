"""What the data allow (issue 22): Fisher forecast, prior-only / perfect-S_8 scores, the cosmology-dependent
lognormal shift and the core design, each against a case with a known answer."""

from __future__ import annotations

import math

import numpy as np
import pytest

from analysis.weak_lensing.bounds import data_bounds, one_point_moments, perfect_target_score, prior_only_score, score_terms
from analysis.weak_lensing.fisher import (
    expected_score, fisher_matrix, with_gaussian_prior, gaussian_cl_variance, marginal_sigmas, n_modes_formula, n_modes_grid, wl_fisher,
)
from analysis.weak_lensing.power_spectrum import log_bins
from analysis.weak_lensing.score import challenge_scores
from datamodules.weak_lensing.simulate import (
    C_KM_S, WLSimConfig, cosmology_design, ell_nodes, empty_beam_convergence, lognormal_shift, make_cosmology,
    simulate_map, survey_mask, angular_cl,
)
from tests.weak_lensing.wl_data import TINY_SIM


# --- Fisher ---------------------------------------------------------------------------------------

def test_fisher_of_an_amplitude_is_sqrt_2_over_the_mode_count() -> None:
    # C_b = A C0_b, noise-free: sigma(A) / A = sqrt(2 / N_modes) whatever the C0_b
    cl0, n_b, amp = np.array([3.0, 1.0, 0.2, 0.05]), np.array([10.0, 40.0, 160.0, 640.0]), 1.7
    var = gaussian_cl_variance(amp * cl0, 0.0, n_b)
    sigma = marginal_sigmas(fisher_matrix(cl0[None], var))[0]
    assert sigma / amp == pytest.approx(math.sqrt(2.0 / n_b.sum()), rel=1e-12)
    # noise N adds (1 + N / C)^2 to each bin's variance
    noisy = marginal_sigmas(fisher_matrix(cl0[None], gaussian_cl_variance(amp * cl0, amp * cl0, n_b)))[0]
    assert noisy == pytest.approx(2 * sigma, rel=1e-12)


def test_two_parameter_fisher_against_a_hand_computed_matrix() -> None:
    derivs = np.array([[1.0, 2.0], [0.0, 1.0]])  # (P, B)
    var = np.array([1.0, 4.0])
    fisher = fisher_matrix(derivs, var)
    np.testing.assert_allclose(fisher, [[2.0, 0.5], [0.5, 0.25]])  # sum_b d_i d_j / var_b
    np.testing.assert_allclose(marginal_sigmas(fisher), [1.0, math.sqrt(8.0)])  # inverse [[1, -2], [-2, 8]]
    np.testing.assert_allclose(fisher_matrix(derivs, np.diag(var)), fisher)  # a full covariance, the same
    # a Gaussian prior of std 1 on the second: F_22 = 1.25, (F^-1)_11 = 1.25 / 2.25
    assert marginal_sigmas(fisher_matrix(derivs, var, [None, 1.0]))[0] == pytest.approx(math.sqrt(1.25 / 2.25))
    # the same through with_gaussian_prior from the marginal sigmas and correlation (-2 / sqrt(8))
    np.testing.assert_allclose(with_gaussian_prior([1.0, math.sqrt(8.0)], -2 / math.sqrt(8.0), [1e9, 1.0]),
                               marginal_sigmas(fisher_matrix(derivs, var, [None, 1.0])), rtol=1e-9)


def test_grid_mode_count_is_the_textbook_count_inside_the_nyquist_square() -> None:
    shape, pixel = (712, 88), 4.0
    edges = np.array([300.0, 600.0, 1200.0, 2400.0, 4800.0])
    f_sky = shape[0] * shape[1] * (pixel * np.pi / 180 / 60) ** 2 / (4 * np.pi)
    grid, formula = n_modes_grid(shape, pixel, edges), n_modes_formula(edges, f_sky)
    np.testing.assert_allclose(grid[:3], formula[:3], rtol=0.05)  # inside ell_Nyquist = 2,700 per axis
    assert grid[3] < 0.6 * formula[3]  # the square cuts the annulus


def test_expected_score_is_the_mean_score_of_a_calibrated_predictor() -> None:
    rng = np.random.default_rng(0)
    sigma = np.array([0.05, 0.02])
    truth = rng.uniform(0.2, 0.9, (200_000, 2))
    mean = truth + rng.standard_normal(truth.shape) * sigma
    got = np.mean(challenge_scores(truth, mean, np.broadcast_to(sigma, truth.shape), 1000.0))
    assert got == pytest.approx(expected_score(sigma, 1000.0), abs=0.02)


def test_fisher_forecast_of_the_tiny_config() -> None:
    cfg = WLSimConfig(**{**TINY_SIM, "nuisance_grid": (3, 3), "n_cosmologies": 1})
    f = wl_fisher(cfg, log_bins(100, 1e4, 10))
    assert f.n_bins == 7  # 8-arcmin pixels: three bins above the Nyquist ell have no modes
    assert 0 < f.sigma_s8 < f.sigma_omega_m < 1 and -1 < f.correlation < 0  # S_8 is the well measured direction
    assert f.sigma_omega_m >= f.sigma_omega_m_fixed and f.sigma_s8 >= f.sigma_s8_fixed  # nuisances only add error
    assert f.f_sky == pytest.approx(survey_mask(cfg).sum() * (8 * np.pi / 180 / 60) ** 2 / (4 * np.pi))


# --- prior-only and perfect-S_8 scores --------------------------------------------------------------

def test_prior_only_and_perfect_s8_scores_by_hand() -> None:
    truth = np.array([[0.2, 0.7], [0.4, 0.9]])
    term = 1.0 + math.log(0.01) + 1000 * 0.01  # (0.1 / 0.1)^2 + log 0.1^2 + 1000 x 0.1^2, per map and target
    assert prior_only_score(truth, [0.3, 0.8], [0.1, 0.1], 1000.0, -1e6) == pytest.approx(-2 * term)
    assert perfect_target_score(truth, [0.3, 0.8], [0.1, 0.1], 1, 0.02, 1000.0, -1e6) == pytest.approx(-term - math.log(0.02**2))
    np.testing.assert_allclose(score_terms(truth, np.full((2, 2), 0.3), np.full((2, 2), 0.1), 1000.0).sum(),
                               np.mean(challenge_scores(truth, np.full((2, 2), 0.3), np.full((2, 2), 0.1), 1000.0)))
    b = data_bounds(truth, truth, ["omega_m", "s8"], 1000.0, -1e6, 0.02)  # the prior: mean 0.3 / 0.8, std 0.1
    assert b["score_prior_only"] == pytest.approx(-2 * term) and b["prior_std_s8"] == pytest.approx(0.1)
    with pytest.raises(ValueError, match="s8"):
        data_bounds(truth, truth, ["a", "b"], 1000.0, -1e6, 0.02)


# --- the lognormal shift and the design --------------------------------------------------------------

def test_empty_beam_convergence_of_uniform_sources_by_hand() -> None:
    # sources uniform in comoving distance on [0, X], no expansion (a = 1): int_0^chi_s chi (chi_s - chi) / chi_s
    # = chi_s^2 / 6, averaged over chi_s: X^2 / 18, so kappa = -(3/2) Omega_m (H0/c)^2 X^2 / 18
    x, h = 3000.0, 0.7
    chi = np.linspace(0.0, x, 4001)
    kappa = empty_beam_convergence(0.3, h, chi, chi, np.ones_like(chi), np.ones_like(chi))
    assert kappa == pytest.approx(-0.3 * (100 * h / C_KM_S) ** 2 * x**2 / 12, rel=1e-5)
    # linear in Omega_m at fixed distances
    assert empty_beam_convergence(0.6, h, chi, chi, np.ones_like(chi), np.ones_like(chi)) == pytest.approx(2 * kappa, rel=1e-12)


def test_the_shift_grows_with_omega_m_and_source_redshift() -> None:
    cfg = WLSimConfig(field="lognormal", shift_model="empty_beam")
    s = {om: lognormal_shift(cfg, make_cosmology(cfg, om, 0.8), om, 0.0) for om in (0.15, 0.3, 0.5)}
    assert 0.02 < s[0.15] < s[0.3] < s[0.5] < 0.1
    cosmo = make_cosmology(cfg, 0.3, 0.8)
    assert lognormal_shift(cfg, cosmo, 0.3, 0.1) > s[0.3] > lognormal_shift(cfg, cosmo, 0.3, -0.1)
    deeper = WLSimConfig(field="lognormal", shift_model="empty_beam", nz_z0=0.8)
    assert lognormal_shift(deeper, cosmo, 0.3, 0.0) > s[0.3]
    assert lognormal_shift(WLSimConfig(field="lognormal"), cosmo, 0.3, 0.0) == 0.02  # "fixed": the config's


def test_skewness_depends_on_omega_m_at_fixed_s8_only_for_the_empty_beam_shift() -> None:
    def skewness(om: float, **kw) -> float:
        cfg = WLSimConfig(downsample=8, n_ell=24, **kw)
        ell = ell_nodes(cfg)
        cl = angular_cl(cfg, make_cosmology(cfg, om, 0.8), 7.8, 0.0, ell)
        shift = lognormal_shift(cfg, make_cosmology(cfg, om, 0.8), om, 0.0)
        maps = np.stack([simulate_map(cfg, cl, ell, np.random.default_rng([5, r]), shift=shift) for r in range(4)])
        return float(np.mean(one_point_moments(maps, np.ones(cfg.shape, bool))[:, 1]))

    beam = {om: skewness(om, field="lognormal", shift_model="empty_beam") for om in (0.2, 0.45)}
    gauss = {om: skewness(om) for om in (0.2, 0.45)}
    assert beam[0.2] > beam[0.45] + 0.1 > 0.1  # less matter at the same S_8: a smaller shift, more skewed maps
    assert abs(gauss[0.2]) < 0.1 and abs(gauss[0.45]) < 0.1


def test_core_design_has_half_its_points_near_the_fiducial() -> None:
    cfg = WLSimConfig(n_cosmologies=101, design="core")
    d = cosmology_design(cfg)
    assert d.shape == (101, 2) and tuple(d[0]) == (0.3, 0.8)
    near = np.all(np.abs(d - [0.3, 0.8]) <= 0.05 + 1e-12, axis=1)
    assert near[:51].all() and near.sum() >= 51
    assert (d[:, 0] >= 0.09).all() and (d[:, 0] <= 0.62).all() and (d[:, 1] >= 0.68).all() and (d[:, 1] <= 0.955).all()
    assert len(np.unique(d, axis=0)) == 101
    with pytest.raises(ValueError, match="data.simulation.design"):
        WLSimConfig(design="grid")
    with pytest.raises(ValueError, match="data.simulation.shift_model"):
        WLSimConfig(shift_model="hilbert")
