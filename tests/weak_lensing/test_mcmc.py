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
    summary_posteriors,
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
    mixed = params.copy()
    mixed[13] = [0.31, 0.8]  # one map of cosmology 1 labelled with other parameters: the ids or the table are wrong
    with pytest.raises(ValueError, match=r"^cosmology 1 has 2 different parameter rows; expected one$"):
        summary_moments(s, ids, mixed)
    # ids as strings, as pandas gives them (an object array of str): named as written
    names = np.array(["c0", "c0", "c1", "c1"], dtype=object)
    with pytest.raises(ValueError, match=r"^cosmology 'c0' has 2 maps; at least 3 are needed for a 2x2 covariance$"):
        summary_moments(s[:4], names, params[:4])
    with pytest.raises(ValueError, match=r"^cosmology 'c1' has 2 different parameter rows; expected one$"):
        summary_moments(s, np.array(["c0"] * 10 + ["c1"] * 10 + ["c2"] * 10, dtype=object), mixed)
    starts = hull_starts(cosmo, 5, seed=0)
    assert starts.shape == (5, 2) and all(any(np.allclose(r, c) for c in cosmo) for r in starts)


# ---- chain figures and moments by hand (issue 27: mutation testing) ----

import warnings  # noqa: E402

from analysis.weak_lensing.mcmc import ChainResult  # noqa: E402


def _chains(acceptance, ess) -> ChainResult:
    acc = np.asarray(acceptance, dtype=float)
    return ChainResult(mean=np.zeros((len(acc), 2)), std=np.ones((len(acc), 2)), acceptance=acc,
                       traces=np.zeros((0, 0, 2)), ess=np.asarray(ess, dtype=float), n_steps=100, burn_in=20)


def test_chain_checks_figures_by_hand_with_the_band_edges_inside() -> None:
    res = _chains([0.1, 0.2, 0.35, 0.5, 0.6], [[100.0, 300.0], [50.0, 400.0]])
    with pytest.warns(UserWarning) as caught:
        out = chain_checks(res, (0.2, 0.5), ess_min=51)
    assert out == {"acceptance_mean": pytest.approx(0.35, abs=1e-15), "acceptance_min": 0.1, "acceptance_max": 0.6,
                   "acceptance_outside_band": 0.4, "ess_min": 50.0, "ess_median": 200.0}
    want = ["MCMC: 40.0% of chains have acceptance outside [0.2, 0.5] (mean 0.350); tune the proposal std",
            "MCMC: effective sample size 50 < 51 in a checked chain; run longer chains"]
    assert res.warnings == want and [str(w.message) for w in caught] == want
    # stacklevel 2: the caller's line, not mcmc.py (under mutmut a wrapper frame sits between)
    assert all(w.filename == __file__ or "mutmut" in w.filename for w in caught)
    ok = _chains([0.2, 0.5], [[50.0]])
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # on the band edges and at ess_min exactly: no warning
        assert chain_checks(ok, (0.2, 0.5), ess_min=50)["acceptance_outside_band"] == 0.0
    assert ok.warnings == []


def test_chain_checks_without_ess_traces() -> None:
    res = _chains([0.3, 0.4], np.zeros((0, 2)))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        out = chain_checks(res, (0.2, 0.5), ess_min=1e9)
    assert np.isnan(out["ess_min"]) and np.isnan(out["ess_median"]) and res.warnings == []


def test_effective_sample_size_equals_emcee_and_is_capped_at_the_chain_length() -> None:
    from emcee.autocorr import integrated_time

    rng = np.random.default_rng(3)
    x = np.empty(3000)
    x[0] = 0.0
    for i in range(1, len(x)):
        x[i] = 0.8 * x[i - 1] + rng.standard_normal()
    for c in (5.0, 3.0):
        want = len(x) / float(integrated_time(x, c=c, tol=0, quiet=True)[0])
        assert effective_sample_size(x, c=c)[0] == pytest.approx(want, rel=1e-12)
    assert effective_sample_size(x)[0] == pytest.approx(effective_sample_size(x, c=5.0)[0], rel=1e-12)
    assert effective_sample_size(x, c=3.0)[0] != pytest.approx(effective_sample_size(x)[0], rel=1e-6)
    # anti-correlated: tau < 1, but a chain never has more independent samples than draws
    alt = np.where(np.arange(400) % 2, 1.0, -1.0) + 0.01 * rng.standard_normal(400)
    assert float(integrated_time(alt, c=5.0, tol=0, quiet=True)[0]) < 1
    assert effective_sample_size(alt)[0] == 400.0
    # (S, P): per column; a stuck column has none
    two = effective_sample_size(np.column_stack([np.ones(400), x[:400]]))  # the stuck one first
    assert two.shape == (2,) and two[0] == 0.0
    assert two[1] == pytest.approx(400 / float(integrated_time(x[:400], c=5.0, tol=0, quiet=True)[0]), rel=1e-12)


def test_summary_moments_by_hand_at_the_minimum_number_of_maps() -> None:
    # two cosmologies given out of order, 1-D summaries: d + 1 = 2 maps each suffice
    s = np.array([1.0, 3.0, 10.0, 14.0])
    ids = np.array(["b", "b", "a", "a"])
    params = np.array([[0.3, 0.8], [0.3, 0.8], [0.2, 0.7], [0.2, 0.7]])
    cosmo, means, covs = summary_moments(s, ids, params)
    np.testing.assert_array_equal(cosmo, [[0.2, 0.7], [0.3, 0.8]])  # sorted by cosmology id
    # float32 inputs are summarised in float64 (a float32 mean of 0.1-spaced values is off by ~1e-8)
    s32 = np.random.default_rng(4).uniform(0, 1, (6, 2)).astype(np.float32)
    c32, m32, v32 = summary_moments(s32, np.zeros(6, int), np.full((6, 2), 0.3, dtype=np.float32))
    assert c32.dtype == m32.dtype == v32.dtype == np.float64
    np.testing.assert_allclose(m32[0], s32.astype(np.float64).mean(axis=0), rtol=1e-15)
    np.testing.assert_allclose(v32[0], np.cov(s32.astype(np.float64), rowvar=False), rtol=1e-13)
    np.testing.assert_array_equal(means, [[12.0], [2.0]])
    np.testing.assert_array_equal(covs, [[[8.0]], [[2.0]]])  # ddof 1: (2^2 + 2^2) / 1, (1 + 1) / 1
    with pytest.raises(ValueError, match=r"^cosmology 'a' has 1 maps; at least 2 are needed for a 1x1 covariance$"):
        summary_moments(s[:3], ids[:3], params[:3])
    with pytest.raises(ValueError, match=r"^summary_moments: 4 summaries, 3 cosmology ids, 4 parameter rows$"):
        summary_moments(s, ids[:3], params)
    with pytest.raises(ValueError, match=r"^summary_moments: 4 summaries, 4 cosmology ids, 3 parameter rows$"):
        summary_moments(s, ids, params[:3])


def test_hull_starts_are_the_seeded_draws_of_cosmologies() -> None:
    cosmo = np.array([[0.2, 0.7], [0.3, 0.8], [0.4, 0.9], [0.5, 0.75]], dtype=np.float32)
    for seed, starts in ((0, hull_starts(cosmo, 6)), (5, hull_starts(cosmo, 6, seed=5))):
        want = cosmo.astype(np.float64)[np.random.default_rng(seed).integers(0, 4, 6)]
        np.testing.assert_array_equal(starts, want)
        assert starts.dtype == np.float64
    assert not np.array_equal(hull_starts(cosmo, 6), hull_starts(cosmo, 6, seed=1))


def test_likelihood_moments_interpolate_means_and_covariances_like_scipy() -> None:
    pts = _design(12, seed=2)
    rng = np.random.default_rng(3)
    means = rng.normal(size=(12, 2)).astype(np.float32)
    a = rng.normal(size=(12, 2, 2))
    covs = (a @ a.transpose(0, 2, 1) + 0.1 * np.eye(2)).astype(np.float32)
    lik = GaussianSummaryLikelihood(pts.astype(np.float32), means, covs, grid_size=32)
    assert lik.dim == 2 and lik.cosmologies.dtype == np.float64
    p64 = pts.astype(np.float32).astype(np.float64)  # the nodes as given
    centre = p64.mean(axis=0)  # convex combinations of nodes: inside the hull
    x = np.vstack([centre, 0.7 * centre + 0.3 * p64[1], 0.5 * centre + 0.5 * p64[7], [[5.0, 5.0]]])
    m, c, inside = lik.moments(x)
    ref_m = LinearNDInterpolator(p64, means.astype(np.float64))(x[:3])
    ref_c = LinearNDInterpolator(p64, covs.astype(np.float64).reshape(12, 4))(x[:3])
    assert inside.tolist() == [True, True, True, False]
    np.testing.assert_allclose(m[:3], ref_m, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(c[:3], ref_c.reshape(3, 2, 2), rtol=1e-12, atol=1e-12)
    assert m.dtype == np.float64 and c.shape == (4, 2, 2)
    with pytest.raises(ValueError, match=r"^covariances have shape \(12, 2\); expected \(12, 2, 2\)$"):
        GaussianSummaryLikelihood(pts, means, covs[:, 0], grid_size=32)


# ---- the samplers against a hand-written loop on the same random draws (issue 27, item 3) ----

def _box_gaussian(d: np.ndarray, sig: np.ndarray):
    """Chain i's target: N(d_i, diag sig^2) cut to the box |theta| <= 1 (-inf outside)."""
    def log_prob(th: np.ndarray) -> np.ndarray:
        lp = -0.5 * np.sum(((th - d) / sig) ** 2, axis=1)
        return np.where(np.all(np.abs(th) <= 1.0, axis=1), lp, -np.inf)
    return log_prob


def _reference_chain(log_prob, x0, n_steps, step, seed):
    """Every state of a random-walk Metropolis chain, drawing as documented: N(0, 1) proposals, then U(0, 1)."""
    rng = np.random.default_rng(seed)
    x = np.array(x0, dtype=np.float64)
    lp = log_prob(x)
    states, accepted = [], np.zeros(len(x))
    for _ in range(n_steps):
        prop = x + rng.standard_normal(x.shape) * step
        lp_prop = log_prob(prop)
        u = rng.random(len(x))
        ok = np.log(u) < lp_prop - lp
        x = np.where(ok[:, None], prop, x)
        lp = np.where(ok, lp_prop, lp)
        accepted += ok
        states.append(x)
    return np.stack(states), accepted / n_steps


def test_metropolis_equals_a_hand_written_loop_on_the_same_draws() -> None:
    rng = np.random.default_rng(11)
    d = rng.uniform(-0.5, 0.5, (5, 2))
    sig = np.array([0.2, 0.5])  # wide enough that some proposals leave the box and are refused
    log_prob = _box_gaussian(d, sig)
    step = np.array([0.3, 0.6])
    # 0.2 * 203 = 40.6: the burn-in rounds to 41 (truncation would keep one state more)
    res = metropolis(log_prob, d + 0.01, n_steps=203, proposal_std=step, burn_in=0.2, seed=4, n_trace=3)
    states, acceptance = _reference_chain(log_prob, d + 0.01, 203, step, seed=4)
    kept = states[41:]
    assert res.burn_in == 41 and res.n_steps == 203
    np.testing.assert_allclose(res.mean, kept.mean(axis=0), rtol=1e-12, atol=1e-14)
    np.testing.assert_allclose(res.std, kept.std(axis=0), rtol=1e-9)
    np.testing.assert_array_equal(res.acceptance, acceptance)
    assert 0.05 < acceptance.min() and acceptance.max() < 0.95
    assert res.traces.shape == (3, 162, 2)
    np.testing.assert_array_equal(res.traces, kept[:, :3].transpose(1, 0, 2))
    np.testing.assert_array_equal(res.ess, [effective_sample_size(kept[:, i]) for i in range(3)])
    # a scalar proposal std is used for every parameter; another seed gives other chains
    scalar = metropolis(log_prob, d + 0.01, n_steps=50, proposal_std=0.3, burn_in=0.5, seed=4, n_trace=1)
    states1, _ = _reference_chain(log_prob, d + 0.01, 50, np.array([0.3, 0.3]), seed=4)
    np.testing.assert_allclose(scalar.mean, states1[25:].mean(axis=0), rtol=1e-12, atol=1e-14)
    other = metropolis(log_prob, d + 0.01, n_steps=50, proposal_std=0.3, burn_in=0.5, seed=5, n_trace=1)
    assert not np.allclose(other.mean, scalar.mean)
    # the default seed is 0
    default = metropolis(log_prob, d, n_steps=30, proposal_std=0.3, burn_in=0.5, n_trace=1)
    np.testing.assert_allclose(default.mean, _reference_chain(log_prob, d, 30, 0.3, seed=0)[0][15:].mean(axis=0), rtol=1e-12)


def test_metropolis_keeps_at_most_n_chains_traces_and_refuses_what_it_cannot_run() -> None:
    d = np.zeros((2, 2))
    log_prob = _box_gaussian(d, np.array([0.2, 0.2]))
    many = metropolis(log_prob, d, n_steps=40, proposal_std=0.1, burn_in=0.25, seed=0, n_trace=10)
    assert many.traces.shape == (2, 30, 2) and many.ess.shape == (2, 2)
    none = metropolis(log_prob, d, n_steps=40, proposal_std=0.1, burn_in=0.25, seed=0, n_trace=0)
    assert none.traces.shape == (0, 30, 2) and none.ess.shape == (0, 2)
    np.testing.assert_array_equal(none.mean, many.mean)  # the traces do not change the chains
    with pytest.raises(ValueError, match=r"^metropolis: burn_in 1.0 leaves no samples of 40 steps$"):
        metropolis(log_prob, d, n_steps=40, proposal_std=0.1, burn_in=1.0, n_trace=1)
    starts = np.array([[0.0, 0.0], [2.0, 0.0], [0.0, 0.0], [0.0, -3.0]])
    with pytest.raises(ValueError, match=r"^metropolis: 2 starting state\(s\) have log density -inf/NaN \(e\.g\. chain \[1, 3\]\); start inside the prior$"):
        metropolis(_box_gaussian(np.zeros((4, 2)), np.ones(2)), starts, n_steps=10, proposal_std=0.1, burn_in=0.2, n_trace=1)


def test_kit_metropolis_equals_the_same_loop_with_its_truncated_burn_in() -> None:
    rng = np.random.default_rng(12)
    d = rng.uniform(-0.5, 0.5, (4, 2))
    log_prob = _box_gaussian(d, np.array([0.2, 0.5]))
    mean, std, acc = kit_metropolis(log_prob, d, n_steps=203, proposal_std=0.4, burn_in=0.2, seed=3)
    states, acceptance = _reference_chain(log_prob, d, 203, 0.4, seed=3)
    kept = states[40:]  # the kit truncates 40.6 to 40
    np.testing.assert_allclose(mean, kept.mean(axis=0), rtol=1e-12, atol=1e-14)
    np.testing.assert_allclose(std, kept.std(axis=0), rtol=1e-12, atol=1e-14)
    np.testing.assert_array_equal(acc, acceptance)
    assert 0.05 < acceptance.min() and acceptance.max() < 0.95
    m0, _, _ = kit_metropolis(log_prob, d, n_steps=20, proposal_std=0.4, burn_in=0.5)  # the default seed is 0
    np.testing.assert_allclose(m0, _reference_chain(log_prob, d, 20, 0.4, seed=0)[0][10:].mean(axis=0), rtol=1e-12)


def test_emcee_posterior_is_emcee_from_the_documented_start_and_discard() -> None:
    import emcee

    mu, sig = np.array([0.3, 0.8]), np.array([0.04, 0.02])

    def lp(t: np.ndarray) -> float:
        return float(-0.5 * np.sum(((t - mu) / sig) ** 2))

    def by_hand(n_walkers, n_steps, burn_in, init_scale, seed):
        start = mu + init_scale * np.random.default_rng(seed).standard_normal((n_walkers, 2))
        s = emcee.EnsembleSampler(n_walkers, 2, lp)
        s.random_state = np.random.RandomState(seed).get_state()
        s.run_mcmc(start, n_steps, progress=False)
        chain = s.get_chain(discard=int(burn_in * n_steps), flat=True)
        return chain.mean(axis=0), chain.std(axis=0), float(np.mean(s.acceptance_fraction))

    got = emcee_posterior(lp, mu, n_walkers=8, n_steps=103, burn_in=0.3, init_scale=0.01, seed=7)
    want = by_hand(8, 103, 0.3, 0.01, 7)  # 30.9 steps discarded: 30
    for g, w in zip(got, want):
        np.testing.assert_allclose(g, w, rtol=1e-12)
    # the defaults: 16 walkers, 2000 steps, burn-in 0.2, start scatter 1e-3, seed 0
    for g, w in zip(emcee_posterior(lp, mu), by_hand(16, 2000, 0.2, 1e-3, 0)):
        np.testing.assert_allclose(g, w, rtol=1e-12)
    assert not np.allclose(emcee_posterior(lp, mu, n_steps=103, seed=8)[0], emcee_posterior(lp, mu, n_steps=103, seed=7)[0])


def _posterior_problem(seed: int = 0, n_maps: int = 8):
    """Validation maps of 12 cosmologies whose 2 summaries are the parameters plus noise, and test summaries."""
    rng = np.random.default_rng(seed)
    cosmo = np.column_stack([rng.uniform(0.1, 0.6, 12), rng.uniform(0.7, 0.95, 12)])
    ids = np.repeat(np.arange(12), n_maps)
    params = cosmo[ids]
    summaries = params + rng.normal(0, [0.03, 0.02], params.shape)
    test = cosmo[:5].mean(axis=0) + rng.normal(0, 0.01, (6, 2))
    return summaries, ids, params, test


SETTINGS = dict(n_steps=300, proposal_std=0.02, burn_in=0.3, seed=4, acceptance_band=(0.05, 0.95), ess_min=1.0,
                grid_size=32, n_trace=3)


def test_summary_posteriors_is_the_moments_likelihood_and_chains_it_documents() -> None:
    summaries, ids, params, test = _posterior_problem()
    mean, std, diag, warns = summary_posteriors(summaries, ids, params, test, **SETTINGS)
    cosmo, means, covs = summary_moments(summaries, ids, params)
    lik = GaussianSummaryLikelihood(cosmo, means, covs, grid_size=32)
    start = hull_starts(cosmo, 6, seed=4)
    assert np.all(np.isfinite(lik.log_prob(start, test)))  # no start needs moving here
    res = metropolis(lambda th: lik.log_prob(th, test), start, n_steps=300, proposal_std=0.02, burn_in=0.3, seed=4, n_trace=3)
    np.testing.assert_array_equal(mean, res.mean)
    np.testing.assert_array_equal(std, res.std)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        want = chain_checks(res, (0.05, 0.95), 1.0)
    assert diag == {**want, "n_cosmologies": 12.0, "summary_dim": 2.0}
    assert warns == res.warnings
    # 1-D test summaries of a 1-D summary are read as one column each
    m1, s1, d1, _ = summary_posteriors(summaries[:, :1], ids, params, test[:, 0], **{**SETTINGS, "n_steps": 40})
    assert m1.shape == (6, 2) and d1["summary_dim"] == 1.0


def test_summary_posteriors_moves_a_start_whose_likelihood_is_impossible() -> None:
    summaries, ids, params, test = _posterior_problem(seed=1)
    # cosmology 0's maps all have the same summary: its covariance is singular, so log_prob is -inf exactly there
    summaries[ids == 0] = summaries[ids == 0][0]
    cosmo, means, covs = summary_moments(summaries, ids, params)
    lik = GaussianSummaryLikelihood(cosmo, means, covs, grid_size=32)
    seed = next(s for s in range(100) if (np.random.default_rng(s).integers(0, 12, 6) == 0).any())
    start = hull_starts(cosmo, 6, seed=seed)
    bad = ~np.isfinite(lik.log_prob(start, test))
    assert bad.any() and not bad.all()
    # the cosmology that suits each map best, by a loop over the nodes
    best = np.array([cosmo[np.argmax([lik.log_prob(c[None], t[None])[0] for c in cosmo])] for t in test])
    moved = np.where(bad[:, None], best, start)
    settings = {**SETTINGS, "seed": seed}
    mean, std, _, _ = summary_posteriors(summaries, ids, params, test, **settings)
    res = metropolis(lambda th: lik.log_prob(th, test), moved, n_steps=300, proposal_std=0.02, burn_in=0.3, seed=seed, n_trace=3)
    np.testing.assert_array_equal(mean, res.mean)
    np.testing.assert_array_equal(std, res.std)


def test_summary_posteriors_warns_of_chains_that_never_moved() -> None:
    summaries, ids, params, test = _posterior_problem(seed=2)
    # proposals 100 x the hull's size: every one lands outside, so no chain ever moves
    with pytest.warns(UserWarning, match=r"^MCMC: 6 chain\(s\) never moved; their std is set to 1e-6$"):
        mean, std, diag, warns = summary_posteriors(summaries, ids, params, test, **{**SETTINGS, "proposal_std": 100.0})
    cosmo, _, _ = summary_moments(summaries, ids, params)
    np.testing.assert_array_equal(mean, hull_starts(cosmo, 6, seed=4))
    np.testing.assert_array_equal(std, np.full((6, 2), 1e-6))
    assert "MCMC: 6 chain(s) never moved; their std is set to 1e-6" in warns
    assert diag["acceptance_max"] == 0.0


def test_summary_posteriors_sets_only_the_stuck_chains_std_and_shows_progress_only_when_asked(capsys) -> None:
    summaries, ids, params, test = _posterior_problem(seed=3)
    cosmo, means, covs = summary_moments(summaries, ids, params)
    lik = GaussianSummaryLikelihood(cosmo, means, covs, grid_size=32)
    short = {**SETTINGS, "n_steps": 3, "burn_in": 0.0, "proposal_std": 0.05, "ess_min": 0.0}
    for seed in range(50):  # 3 steps: some chains accept nothing, others move
        res = metropolis(lambda th: lik.log_prob(th, test), hull_starts(cosmo, 6, seed=seed), n_steps=3,
                         proposal_std=0.05, burn_in=0.0, seed=seed, n_trace=3)
        stuck = (res.std <= 0).any(axis=1)
        if 0 < stuck.sum() < 6 and np.all(np.isfinite(lik.log_prob(hull_starts(cosmo, 6, seed=seed), test))):
            break
    with warnings.catch_warnings(record=True) as record:
        warnings.simplefilter("always")
        mean, std, _, warns = summary_posteriors(summaries, ids, params, test, **{**short, "seed": seed})
    msg = f"MCMC: {int(stuck.sum())} chain(s) never moved; their std is set to 1e-6"
    assert msg in warns
    (w,) = [r for r in record if str(r.message) == msg]
    assert w.filename == __file__ or "mutmut" in w.filename  # the caller's line, not mcmc.py
    np.testing.assert_array_equal(mean, res.mean)
    assert std.dtype == np.float64
    np.testing.assert_array_equal(std, np.where(res.std <= 0, 1e-6, res.std))
    assert capsys.readouterr().err == ""  # no progress bar by default
    summary_posteriors(summaries, ids, params, test, **{**short, "seed": seed}, progress=True)
    assert "metropolis" in capsys.readouterr().err


def _hard_points(pts: np.ndarray, tri, lo: np.ndarray, hi: np.ndarray, g: int, rng) -> np.ndarray:
    """Points where a lookup can go wrong: nodes, edge midpoints and thirds, cell corners, the box's edges."""
    simp = pts[tri.simplices]
    edges = np.concatenate([simp[:, [0, 1]], simp[:, [1, 2]], simp[:, [2, 0]]])
    on_edges = np.concatenate([edges.mean(axis=1), (2 * edges[:, 0] + edges[:, 1]) / 3])
    cell = (hi - lo) / g
    grid = np.stack(np.meshgrid(*[lo[j] + cell[j] * np.arange(g + 1) for j in range(2)], indexing="ij"), -1).reshape(-1, 2)
    box = np.concatenate([np.column_stack([np.linspace(lo[0], hi[0], 50), np.full(50, v)]) for v in (lo[1], hi[1])]
                         + [np.column_stack([np.full(50, v), np.linspace(lo[1], hi[1], 50)]) for v in (lo[0], hi[0])])
    near = pts + rng.normal(0, 1e-9, pts.shape)
    return np.concatenate([pts, on_edges, grid, box, near, [hi, lo, [np.nan, lo[1]], [lo[0], np.inf]]])


@pytest.mark.parametrize("grid_size", [1, 2, 7, 64])
def test_interpolator_equals_scipy_on_nodes_edges_cell_corners_and_the_box(grid_size) -> None:
    from scipy.spatial import Delaunay

    pts = _design(25, seed=9)
    rng = np.random.default_rng(9)
    values = rng.normal(size=(25, 2, 2))  # matrix values keep their shape
    interp = SimplexInterpolator(pts, values, grid_size=grid_size)
    tri = Delaunay(pts)
    x = _hard_points(pts, tri, pts.min(axis=0), pts.max(axis=0), grid_size, rng)
    out, inside = interp(x)
    ref = LinearNDInterpolator(pts, values.reshape(25, 4))(x)
    ref_inside = np.all(np.isfinite(ref), axis=1)
    np.testing.assert_array_equal(inside, ref_inside)
    assert out.shape == (len(x), 2, 2)
    np.testing.assert_allclose(out[inside].reshape(-1, 4), ref[inside], rtol=1e-9, atol=1e-12)
    assert np.all(out[~inside] == 0)
    # the triangle found holds the point (on a shared edge either neighbour does): barycentric coordinates >= 0
    s = interp.find_simplex(x)
    np.testing.assert_array_equal(s >= 0, ref_inside)
    assert np.all(s[~ref_inside] == -1)  # -1 outside the hull, inside the bounding box too (documented)
    b = np.einsum("nij,nj->ni", tri.transform[s[inside], :2], x[inside] - tri.transform[s[inside], 2])
    bary = np.column_stack([b, 1 - b.sum(axis=1)])
    assert bary.min() >= -1e-12
    # a single point and a point given as a 1-D array
    one, ok = interp(pts[3])
    assert ok.tolist() == [True] and one.shape == (1, 2, 2)
    np.testing.assert_allclose(one[0], values[3], atol=1e-12)


def test_interpolator_in_three_dimensions_and_its_errors() -> None:
    rng = np.random.default_rng(10)
    pts = rng.uniform(0, 1, (30, 3))
    values = rng.normal(size=(30, 2))
    x = np.concatenate([rng.uniform(-0.2, 1.2, (400, 3)), pts])
    out, inside = SimplexInterpolator(pts, values, grid_size=64)(x)  # no grid in 3-D: scipy's find_simplex
    ref = LinearNDInterpolator(pts, values)(x)
    np.testing.assert_array_equal(inside, np.all(np.isfinite(ref), axis=1))
    assert 0 < inside.sum() < len(x)
    np.testing.assert_allclose(out[inside], ref[inside], rtol=1e-9, atol=1e-12)
    with pytest.raises(ValueError, match=r"^30 points but 29 value rows$"):
        SimplexInterpolator(pts, values[:29], grid_size=8)


def test_metropolis_with_integer_starts_one_kept_state_and_many_bad_starts() -> None:
    d = np.zeros((3, 2))
    log_prob = _box_gaussian(d, np.array([0.2, 0.2]))
    # integer starting states are moved in float64, not truncated back to integers
    res = metropolis(log_prob, np.zeros((3, 2), dtype=np.int64), n_steps=30, proposal_std=0.1, burn_in=0.5, seed=2, n_trace=1)
    states, _ = _reference_chain(log_prob, np.zeros((3, 2)), 30, 0.1, seed=2)
    np.testing.assert_allclose(res.mean, states[15:].mean(axis=0), rtol=1e-12, atol=1e-14)
    assert np.all(res.std > 0)
    # one state kept after the burn-in is enough (its std is 0)
    one = metropolis(log_prob, d, n_steps=4, proposal_std=0.1, burn_in=0.75, seed=2, n_trace=1)
    assert one.burn_in == 3 and one.traces.shape == (1, 1, 2)
    np.testing.assert_array_equal(one.mean, _reference_chain(log_prob, d, 4, 0.1, seed=2)[0][3])
    np.testing.assert_array_equal(one.std, np.zeros((3, 2)))
    # the message names at most five of the bad chains
    starts = np.full((7, 2), 5.0)
    with pytest.raises(ValueError, match=r"^metropolis: 7 starting state\(s\) have log density -inf/NaN \(e\.g\. chain \[0, 1, 2, 3, 4\]\)"):
        metropolis(_box_gaussian(np.zeros((7, 2)), np.ones(2)), starts, n_steps=10, proposal_std=0.1, burn_in=0.2, n_trace=1)


def test_samplers_show_a_progress_bar_only_when_asked(capsys) -> None:
    import emcee  # noqa: F401  (emcee's own bar goes to stderr too)

    d = np.zeros((2, 2))
    log_prob = _box_gaussian(d, np.array([0.2, 0.2]))
    metropolis(log_prob, d, n_steps=20, proposal_std=0.1, burn_in=0.5, n_trace=1)
    emcee_posterior(lambda t: float(log_prob(np.tile(t, (2, 1)))[0]), d[0], n_walkers=4, n_steps=20)
    assert capsys.readouterr().err == ""
    metropolis(log_prob, d, n_steps=20, proposal_std=0.1, burn_in=0.5, n_trace=1, progress=True)
    err = capsys.readouterr().err
    assert "metropolis: " in err and "20/20" in err and "step/s" in err


def test_likelihood_at_a_singular_covariance_is_minus_inf_without_numpy_warnings_or_errors() -> None:
    """A summary that never varies has a singular covariance: impossible (-inf), in 2-D and in general dimension."""
    pts = _design(12, seed=5)
    covs = np.repeat(np.diag([1e-3, 0.0])[None], 12, axis=0)  # the second summary is constant in every cosmology
    lik = GaussianSummaryLikelihood(pts, pts.copy(), covs, grid_size=16)
    covs3 = np.repeat(np.diag([1e-3, 1e-3, 0.0])[None], 12, axis=0)
    means3 = np.column_stack([pts, pts[:, 0]])
    lik3 = GaussianSummaryLikelihood(pts, means3, covs3, grid_size=16)
    x = np.vstack([pts[:3], pts[:3].mean(axis=0)])
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        with np.errstate(all="warn"):
            lp = lik.log_prob(x, np.vstack([pts[:3], pts[:3].mean(axis=0)]) + [0.0, 0.01])
            lp_exact = lik.log_prob(x, np.vstack([pts[:3], pts[:3].mean(axis=0)]))  # 0 / 0 in the chi2
            lp3 = lik3.log_prob(x, np.vstack([means3[:3], means3[:3].mean(axis=0)]))
    assert np.all(lp == -np.inf) and np.all(lp_exact == -np.inf) and np.all(lp3 == -np.inf)
    # the same in 3-D with a regular covariance is finite, and equals scipy's
    covs3[:, 2, 2] = 2e-3
    ok = GaussianSummaryLikelihood(pts, means3, covs3, grid_size=16).log_prob(x, means3[[0, 1, 2, 3]])
    np.testing.assert_allclose(ok, scipy_log_prob(pts, means3, covs3)(x, means3[[0, 1, 2, 3]]), rtol=1e-10)


def _triangles_meeting_boxes(tris: np.ndarray, box_lo: np.ndarray, box_hi: np.ndarray, tol: float) -> np.ndarray:
    """(cells, triangles) bool: whether each closed triangle (T, 3, 2) meets each closed box (C, 2), by brute force.

    Two convex polygons meet when a vertex of one lies in the other or an edge of one crosses an edge of the other;
    independent of the interpolator's separating-axis test. ``tol`` widens the boxes a little (rounding of edges).
    """
    box_lo, box_hi = box_lo[:, None, :] - tol, box_hi[:, None, :] + tol  # (C, 1, 2)
    vert_in_box = np.all((tris[None] >= box_lo[:, :, None]) & (tris[None] <= box_hi[:, :, None]), axis=-1).any(-1)

    def cross(o, a, b):  # z of (a - o) x (b - o), broadcast
        return (a[..., 0] - o[..., 0]) * (b[..., 1] - o[..., 1]) - (a[..., 1] - o[..., 1]) * (b[..., 0] - o[..., 0])

    corners = np.stack([box_lo[:, 0], np.stack([box_hi[:, 0, 0], box_lo[:, 0, 1]], -1), box_hi[:, 0],
                        np.stack([box_lo[:, 0, 0], box_hi[:, 0, 1]], -1)], axis=1)  # (C, 4, 2), in order round the box
    a, b, c = (tris[None, :, None, k] for k in range(3))  # (1, T, 1, 2)
    q = corners[:, None]  # (C, 1, 4, 2)
    d1, d2, d3 = cross(a, b, q), cross(b, c, q), cross(c, a, q)
    corner_in_tri = ((np.minimum(np.minimum(d1, d2), d3) >= 0) | (np.maximum(np.maximum(d1, d2), d3) <= 0)).any(-1)
    crossing = np.zeros_like(vert_in_box)
    for e in range(3):
        p0, p1 = tris[None, :, e], tris[None, :, (e + 1) % 3]  # (1, T, 2)
        for f in range(4):
            q0, q1 = corners[:, None, f], corners[:, None, (f + 1) % 4]  # (C, 1, 2)
            o1, o2, o3, o4 = cross(p0, p1, q0), cross(p0, p1, q1), cross(q0, q1, p0), cross(q0, q1, p1)
            crossing |= (o1 * o2 <= 0) & (o3 * o4 <= 0)
    return vert_in_box | corner_in_tri | crossing


@pytest.mark.parametrize("grid_size", [1, 3, 9, 40])
def test_interpolator_lookup_table_against_scipy_cell_by_cell(grid_size) -> None:
    """The lookup itself, not only its answers: a cell maps to a triangle exactly when its four corners lie in that one
    triangle (scipy's find_simplex), and every cell lists exactly the triangles that meet it, found by brute force.

    A wrong table can still give right values (a cell sent to its candidates is tested point by point), so the
    values test alone cannot see a lookup that has silently stopped resolving cells or lists triangles it need not.
    """
    from scipy.spatial import Delaunay

    pts = _design(25, seed=0)
    interp = SimplexInterpolator(pts, np.zeros((25, 1)), grid_size=grid_size)
    tri = Delaunay(pts)
    g = grid_size
    assert interp.table is not None and interp.table.shape == (g, g)
    lo, hi = pts.min(axis=0), pts.max(axis=0)
    cell = (hi - lo) / g
    # the four corners of each cell, located by scipy
    edges = [lo[j] + cell[j] * np.arange(g + 1) for j in range(2)]
    corner = tri.find_simplex(np.stack(np.meshgrid(*edges, indexing="ij"), -1).reshape(-1, 2)).reshape(g + 1, g + 1)
    four = np.stack([corner[:-1, :-1], corner[1:, :-1], corner[:-1, 1:], corner[1:, 1:]])
    resolved = np.all(four == four[0], axis=0) & (four[0] >= 0)
    np.testing.assert_array_equal(interp.table, np.where(resolved, four[0], -2))
    if g == 40:  # the design resolves cells of triangle 0 and of many others
        assert (interp.table == 0).any() and len(np.unique(interp.table[resolved])) > len(tri.simplices) // 2
    ii, jj = np.meshgrid(np.arange(g), np.arange(g), indexing="ij")
    cell_lo = lo + cell * np.stack([ii.ravel(), jj.ravel()], axis=1)
    meets = _triangles_meeting_boxes(pts[tri.simplices], cell_lo, cell_lo + cell, tol=1e-12 * float(np.max(hi - lo)))
    width = interp.candidates.shape[2]
    assert width == meets.sum(axis=1).max()  # as wide as the fullest cell, no wider
    for n, (i, j) in enumerate(zip(ii.ravel(), jj.ravel())):
        listed = interp.candidates[i, j]
        k = int(meets[n].sum())
        assert listed[:k].tolist() == np.flatnonzero(meets[n]).tolist() and np.all(listed[k:] == -1), (i, j)
    far = np.array([[lo[0] - 1, lo[1]], [hi[0] + 1e-9, hi[1]], [np.nan, 0.8], [0.0, 0.0]])
    np.testing.assert_array_equal(interp.find_simplex(far), [-1, -1, -1, -1])


def test_likelihood_with_correlated_two_by_two_covariances_equals_scipy() -> None:
    """The 2-D closed form's off-diagonal terms (det = a d - b^2, chi2's -2 b r0 r1), which diagonal covariances skip."""
    pts = _design(20, seed=11)
    rng = np.random.default_rng(11)
    sd = rng.uniform(0.02, 0.05, (20, 2))
    rho = rng.uniform(-0.8, 0.8, 20)
    covs = np.stack([[sd[:, 0] ** 2, rho * sd[:, 0] * sd[:, 1]], [rho * sd[:, 0] * sd[:, 1], sd[:, 1] ** 2]]).transpose(2, 0, 1)
    means = pts @ np.array([[1.0, 0.3], [-0.2, 1.0]])
    lik = GaussianSummaryLikelihood(pts, means, covs, grid_size=32)
    x = _design(300, seed=12)
    d = x @ np.array([[1.0, 0.3], [-0.2, 1.0]]) + rng.normal(0, 0.03, (300, 2))
    got, want = lik.log_prob(x, d), scipy_log_prob(pts, means, covs)(x, d)
    assert np.isfinite(want).sum() > 100
    np.testing.assert_allclose(got, want, rtol=1e-10)
