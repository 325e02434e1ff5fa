"""CNN + MCMC numerics: interpolation against scipy, hull prior, samplers against analytic posteriors."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.interpolate import LinearNDInterpolator

from analysis.weak_lensing.mcmc import (
    GaussianSummaryLikelihood,
    SimplexInterpolator,
    chain_checks,
    effective_sample_size,
    emcee_posterior,
    hull_starts,
    kit_metropolis,
    metropolis,
    scipy_log_prob,
    summary_moments,
)


def _design(n: int = 40, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return np.column_stack([rng.uniform(0.09, 0.62, n), rng.uniform(0.68, 0.955, n)])


def test_interpolator_equals_scipy_inside_and_flags_outside() -> None:
    pts = _design()
    rng = np.random.default_rng(1)
    values = rng.normal(size=(len(pts), 3))
    x = np.column_stack([rng.uniform(0.0, 0.7, 5000), rng.uniform(0.6, 1.0, 5000)])
    ours, inside = SimplexInterpolator(pts, values, grid_size=64)(x)
    ref = LinearNDInterpolator(pts, values)(x)
    ref_inside = np.all(np.isfinite(ref), axis=1)
    assert 0 < inside.sum() < len(x)
    np.testing.assert_array_equal(inside, ref_inside)
    np.testing.assert_allclose(ours[inside], ref[inside], rtol=1e-10, atol=1e-12)
    assert np.all(ours[~inside] == 0) and np.all(np.isfinite(ours))
    # the nodes themselves are reproduced, with and without the lookup grid
    for grid in (0, 64):
        at_nodes, ok = SimplexInterpolator(pts, values, grid_size=grid)(pts)
        assert ok.all()
        np.testing.assert_allclose(at_nodes, values, atol=1e-10)


def test_likelihood_outside_hull_is_minus_inf_never_nan() -> None:
    pts = _design()
    means = pts.copy()
    covs = np.repeat(np.diag([1e-4, 1e-4])[None], len(pts), axis=0)
    lik = GaussianSummaryLikelihood(pts, means, covs, grid_size=256)
    far = np.array([[5.0, 5.0], [-1.0, 0.8], [0.3, 2.0], [np.nan, 0.8]])
    lp = lik.log_prob(far, np.zeros((4, 2)))
    assert np.all(lp == -np.inf)
    inside = lik.log_prob(pts[:5], pts[:5])
    assert np.all(np.isfinite(inside))
    # equals the kit's scipy likelihood wherever that is defined, and is -inf where scipy gives -inf
    rng = np.random.default_rng(2)
    x = np.column_stack([rng.uniform(0.0, 0.7, 500), rng.uniform(0.6, 1.0, 500)])
    d = rng.normal([0.3, 0.8], 0.05, (500, 2))
    np.testing.assert_allclose(lik.log_prob(x, d), scipy_log_prob(pts, means, covs)(x, d), rtol=1e-9)


def test_likelihood_general_dimension_matches_scipy() -> None:
    pts = _design(30, seed=3)
    rng = np.random.default_rng(3)
    a = rng.normal(size=(2, 4))
    means = pts @ a
    covs = np.array([np.eye(4) * 0.01 + 0.002 * np.outer(r, r) for r in rng.normal(size=(len(pts), 4))])
    lik = GaussianSummaryLikelihood(pts, means, covs, grid_size=256)
    x = _design(200, seed=4)
    d = x @ a + rng.normal(0, 0.1, (200, 4))
    np.testing.assert_allclose(lik.log_prob(x, d), scipy_log_prob(pts, means, covs)(x, d), rtol=1e-9)


def test_metropolis_recovers_an_analytic_gaussian_posterior() -> None:
    # summary = parameters, constant covariance, flat prior on a hull much wider than the posterior:
    # the posterior of each map is N(d, Sigma) exactly
    grid = np.array([[x, y] for x in np.linspace(-1, 2, 7) for y in np.linspace(-1, 2, 7)])
    sig = np.array([0.05, 0.03])
    covs = np.repeat(np.diag(sig**2)[None], len(grid), axis=0)
    lik = GaussianSummaryLikelihood(grid, grid.copy(), covs, grid_size=256)
    n = 48
    rng = np.random.default_rng(5)
    d = rng.uniform(0.3, 0.7, (n, 2))
    res = metropolis(lambda th: lik.log_prob(th, d), d.copy(), n_steps=6000, proposal_std=0.06, burn_in=0.2, seed=6, n_trace=n)
    # Monte-Carlo error of each chain's mean: posterior std / sqrt(ESS)
    mc_err = sig / np.sqrt(res.ess)
    z = (res.mean - d) / mc_err
    assert np.abs(z).max() < 5
    assert abs(z.mean()) < 5 / np.sqrt(z.size) * 2
    np.testing.assert_allclose(res.std.mean(axis=0), sig, rtol=0.05)
    assert 0.1 < res.acceptance.mean() < 0.6


def test_kit_loop_and_emcee_agree_with_the_analytic_posterior() -> None:
    mu, sig = np.array([0.3, 0.8]), np.array([0.04, 0.02])

    def lp_many(th: np.ndarray) -> np.ndarray:
        return -0.5 * np.sum(((th - mu) / sig) ** 2, axis=1)

    mean, std, acc = kit_metropolis(lp_many, np.tile(mu, (64, 1)), n_steps=3000, proposal_std=0.06, burn_in=0.2, seed=1)
    np.testing.assert_allclose(mean.mean(axis=0), mu, atol=4 * sig.max() / np.sqrt(64 * 150))
    np.testing.assert_allclose(std.mean(axis=0), sig, rtol=0.08)
    m, s, a = emcee_posterior(lambda t: float(lp_many(t[None])[0]), mu, n_walkers=16, n_steps=3000, seed=2)
    np.testing.assert_allclose(m, mu, atol=3 * sig.max() / np.sqrt(16 * 3000 / 30))
    np.testing.assert_allclose(s, sig, rtol=0.1)
    assert 0.2 < a < 0.9


def test_effective_sample_size_of_an_ar1_chain() -> None:
    rng = np.random.default_rng(7)
    rho, n = 0.9, 200_000
    x = np.empty(n)
    x[0] = 0
    eps = rng.standard_normal(n)
    for i in range(1, n):
        x[i] = rho * x[i - 1] + eps[i]
    want = n * (1 - rho) / (1 + rho)  # integrated autocorrelation time (1 + rho) / (1 - rho)
    assert effective_sample_size(x)[0] == pytest.approx(want, rel=0.15)
    assert effective_sample_size(np.ones(100))[0] == pytest.approx(100 / np.inf + 0)  # a stuck chain has none


def test_chain_checks_warn_outside_the_band_and_on_low_ess() -> None:
    grid = np.array([[x, y] for x in np.linspace(-1, 2, 5) for y in np.linspace(-1, 2, 5)])
    lik = GaussianSummaryLikelihood(grid, grid.copy(), np.repeat(np.eye(2)[None] * 0.05**2, len(grid), axis=0), grid_size=256)
    d = np.full((8, 2), 0.5)
    tiny = metropolis(lambda th: lik.log_prob(th, d), d.copy(), n_steps=500, proposal_std=0.001, burn_in=0.2, seed=0, n_trace=4)
    with pytest.warns(UserWarning, match="acceptance outside"):
        out = chain_checks(tiny, (0.2, 0.5), ess_min=1e9)
    assert out["acceptance_outside_band"] == 1.0
    assert any("effective sample size" in w for w in tiny.warnings)
    with pytest.raises(ValueError, match="starting state"):
        metropolis(lambda th: lik.log_prob(th, d[:1]), np.array([[9.0, 9.0]]), n_steps=10, proposal_std=0.06, burn_in=0.2, n_trace=1)


def test_summary_moments_match_numpy_and_refuse_too_few_maps() -> None:
    rng = np.random.default_rng(8)
    ids = np.repeat([0, 1, 2], 10)
    params = np.repeat([[0.2, 0.7], [0.3, 0.8], [0.4, 0.9]], 10, axis=0)
    s = rng.normal(size=(30, 2))
    cosmo, means, covs = summary_moments(s, ids, params)
    np.testing.assert_allclose(cosmo, [[0.2, 0.7], [0.3, 0.8], [0.4, 0.9]])
    np.testing.assert_allclose(means[1], s[10:20].mean(axis=0))
    np.testing.assert_allclose(covs[2], np.cov(s[20:], rowvar=False))
    with pytest.raises(ValueError, match="at least 3"):
        summary_moments(s[:4], np.array([0, 0, 1, 1]), params[:4])
    starts = hull_starts(cosmo, 5, seed=0)
    assert starts.shape == (5, 2) and all(any(np.allclose(r, c) for c in cosmo) for r in starts)
