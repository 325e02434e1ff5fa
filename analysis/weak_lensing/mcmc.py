"""Simulation-based posteriors for the weak-lensing family (seed 001, phase 2: CNN + MCMC).

The pipeline of the challenge kit's CNN_MCMC notebook, in plain NumPy/SciPy:

1. ``summary_moments``: per cosmology, the mean and covariance of a summary statistic (CNN point
   predictions, or binned log C_ell) over that cosmology's validation maps.
2. ``SimplexInterpolator``: piecewise-linear interpolation of those moments over the cosmologies, the same
   function as scipy's ``LinearNDInterpolator`` (same Delaunay triangulation, same barycentric weights)
   but with a lookup table from a fine grid to its triangle, so a call on thousands of points costs a few
   array operations instead of a point-location walk per point.
3. ``GaussianSummaryLikelihood``: log L(theta | d) = -1/2 log det C(theta) - 1/2 r^T C(theta)^-1 r with
   r = d - mu(theta), and a flat prior inside the convex hull of the cosmologies (-inf outside, never NaN).
4. ``metropolis``: random-walk Metropolis vectorised over chains (one chain per test map), proposal std
   0.06, 10,000 steps, 20% burn-in, as in the kit; posterior mean and std from running moments, full traces
   kept for a few chains so that an effective sample size can be checked. ``emcee_posterior`` is the
   alternative sampler for single posteriors.
5. ``chain_checks``: acceptance rates outside the band and low effective sample sizes become warnings.
"""

from __future__ import annotations

import logging
import math
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np
from scipy.interpolate import LinearNDInterpolator
from scipy.spatial import Delaunay

log = logging.getLogger(__name__)


# --------------------------------------------------------------------------------------------------
# per-cosmology moments


def summary_moments(summaries: np.ndarray, cosmology_ids: np.ndarray, params: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Mean and covariance of the summaries of every cosmology.

    Args:
        summaries: (N, D) summary of each map.
        cosmology_ids: (N,) cosmology of each map.
        params: (N, P) parameters of each map (identical within a cosmology).

    Returns:
        (cosmologies (K, P), means (K, D), covariances (K, D, D)); covariances use ddof 1 (np.cov).

    Raises:
        ValueError: when a cosmology has fewer than D + 1 maps (its covariance would be singular).
    """
    summaries = np.asarray(summaries, dtype=np.float64)
    if summaries.ndim == 1:
        summaries = summaries[:, None]
    ids = np.asarray(cosmology_ids)
    params = np.asarray(params, dtype=np.float64)
    if not (len(ids) == len(summaries) == len(params)):
        raise ValueError(f"summary_moments: {len(summaries)} summaries, {len(ids)} cosmology ids, {len(params)} parameter rows")
    keys = np.unique(ids)
    d = summaries.shape[1]
    cosmo, means, covs = [], [], []
    for k in keys:
        rows = ids == k
        name = k.item() if hasattr(k, "item") else k  # a numpy scalar, or a str from an object array
        if rows.sum() < d + 1:
            raise ValueError(f"cosmology {name!r} has {int(rows.sum())} maps; at least {d + 1} are needed for a {d}x{d} covariance")
        theta = np.unique(params[rows], axis=0)
        if len(theta) != 1:
            raise ValueError(f"cosmology {name!r} has {len(theta)} different parameter rows; expected one")
        cosmo.append(theta[0])
        means.append(summaries[rows].mean(axis=0))
        covs.append(np.atleast_2d(np.cov(summaries[rows].T)))  # columns are the variables
    return np.array(cosmo), np.array(means), np.array(covs)


# --------------------------------------------------------------------------------------------------
# interpolation over the cosmologies


class SimplexInterpolator:
    """Piecewise-linear interpolation over a Delaunay triangulation, with a grid lookup of the triangle.

    Gives the same values as ``scipy.interpolate.LinearNDInterpolator(points, values)`` (NaN outside the
    convex hull there; here ``inside`` is False and the values are 0). Within a triangle the interpolant
    is affine, ``v(x) = A_s x + c_s``, so A and c are computed once per triangle. For two parameters a
    regular grid over the points' bounding box maps each cell to the triangle holding the whole cell, or,
    for cells crossed by an edge, to the few triangles overlapping it, which are tested directly; other
    dimensions use ``Delaunay.find_simplex``.

    Args:
        points: (K, P) nodes (the cosmologies).
        values: (K, ...) values at the nodes.
        grid_size: Cells per axis of the lookup grid (P = 2 only; 0 switches the grid off).
    """

    def __init__(self, points: np.ndarray, values: np.ndarray, grid_size: int) -> None:
        self.points = np.asarray(points, dtype=np.float64)
        values = np.asarray(values, dtype=np.float64)
        if values.shape[0] != self.points.shape[0]:
            raise ValueError(f"{self.points.shape[0]} points but {values.shape[0]} value rows")
        self.value_shape = values.shape[1:]
        self.values = values.reshape(len(values), math.prod(self.value_shape))
        self.tri = Delaunay(self.points)
        self.ndim = p = self.points.shape[1]
        self.lo = self.points.min(axis=0)
        self.hi = self.points.max(axis=0)
        # affine form per triangle: barycentric b = R (x - r0), v = V_last + (V_first - V_last) b
        t = self.tri.transform
        rot, r0 = t[:, :p], t[:, p]
        v = self.values[self.tri.simplices]  # (S, P+1, V)
        diff = v[:, :p] - v[:, p:]  # (S, P, V)
        self.slope = np.swapaxes(diff, 1, 2) @ rot  # (S, V, P)
        self.offset = v[:, p] - (self.slope @ r0[..., None])[..., 0]
        self.table: np.ndarray | None = None
        if p == 2 and grid_size > 0:
            self._build_table(int(grid_size))

    def _build_table(self, g: int) -> None:
        self.grid_size = g
        self.cell = (self.hi - self.lo) / g
        edges = [self.lo[j] + self.cell[j] * np.arange(g + 1) for j in range(2)]
        corners = np.stack(np.meshgrid(*edges, indexing="ij"), axis=-1)
        s = self.tri.find_simplex(corners.reshape((g + 1) ** 2, 2)).reshape(g + 1, g + 1)
        four = np.stack([s[:-1, :-1], s[1:, :-1], s[:-1, 1:], s[1:, 1:]])
        # a convex cell whose four corners lie in one (convex) triangle lies wholly inside it
        low, high = four.min(axis=0), four.max(axis=0)
        self.table = np.where((low == high) & (low >= 0), low, -2)
        # every cell (used where the table says -2): the triangles that meet it, from the cells of each triangle's
        # bounding box kept by a separating-axis test
        verts = self.points[self.tri.simplices]
        box = np.floor((np.stack([verts.min(axis=1), verts.max(axis=1)]) - self.lo) / self.cell).astype(np.int64)
        first, last = np.minimum(box, g - 1)  # a vertex on the box's upper edge lies in the last cell
        hits = []
        for k, (a, b) in enumerate(zip(first, last)):
            # every cell of the triangle's bounding box (the order of the pairs does not matter)
            ii, jj = np.meshgrid(np.arange(a[0], b[0] + 1), np.arange(a[1], b[1] + 1))
            ii, jj = ii.ravel(), jj.ravel()
            keep = self._cells_touching(verts[k], ii, jj)
            hits.append((ii[keep], jj[keep], np.full(int(keep.sum()), k)))
        ii, jj, kk = (np.concatenate(h) for h in zip(*hits))
        counts = np.zeros((g, g), dtype=np.int64)
        np.add.at(counts, (ii, jj), 1)
        self.candidates = np.full((g, g, counts.max()), -1)  # every triangle meets a cell: max >= 1
        order = np.lexsort((kk, jj, ii))
        ii, jj, kk = ii[order], jj[order], kk[order]
        flat = ii * g + jj
        slot = np.arange(len(flat)) - np.searchsorted(flat, flat)  # rank of each hit within its cell
        self.candidates[ii, jj, slot] = kk
        # barycentric transform of every triangle, flattened for plain arithmetic
        self._rot = self.tri.transform[:, :2].reshape(len(self.tri.simplices), 4)
        self._r0 = self.tri.transform[:, 2]

    def _cells_touching(self, tri: np.ndarray, ii: np.ndarray, jj: np.ndarray) -> np.ndarray:
        """Which cells (ii, jj) a triangle (3, 2) touches: separating-axis test on its three edge normals."""
        lo = self.lo + self.cell * np.stack([ii, jj], axis=1)
        corners = lo[:, None, :] + self.cell * np.array([[0, 0], [1, 0], [0, 1], [1, 1]])  # (n, 4, 2)
        keep = np.ones(len(ii), dtype=bool)
        slack = 1e-9 * float(np.max(self.hi - self.lo))  # conservative: a touching cell is never dropped
        for edge in tri[[1, 2, 0]] - tri:  # the three edges
            normal = np.array([-edge[1], edge[0]])
            t_proj = tri @ normal
            c_proj = corners @ normal
            keep &= (c_proj.max(axis=1) >= t_proj.min() - slack) & (c_proj.min(axis=1) <= t_proj.max() + slack)
        return keep

    def _test_candidates(self, x: np.ndarray, cells: np.ndarray) -> np.ndarray:
        cand = self.candidates[cells[:, 0], cells[:, 1]]  # (n, M)
        rot, r0 = self._rot[cand], self._r0[cand]  # (n, M, 4), (n, M, 2); the -1 slots read the last triangle, masked below
        dx = x[:, 0, None] - r0[..., 0]
        dy = x[:, 1, None] - r0[..., 1]
        b0 = rot[..., 0] * dx + rot[..., 1] * dy
        b1 = rot[..., 2] * dx + rot[..., 3] * dy
        eps = 100 * np.finfo(np.float64).eps  # scipy's find_simplex tolerance
        ok = (cand >= 0) & (b0 >= -eps) & (b1 >= -eps) & (b0 + b1 <= 1 + eps)
        hit = ok.any(axis=1)
        return np.where(hit, cand[np.arange(len(cand)), ok.argmax(axis=1)], -1)

    def find_simplex(self, x: np.ndarray) -> np.ndarray:
        """Triangle of every point (N, P), -1 outside the convex hull."""
        x = np.asarray(x, dtype=np.float64)
        if self.table is None:
            return self.tri.find_simplex(x).astype(np.int64)
        s = np.full(len(x), -1)
        in_box = np.flatnonzero(np.all((x >= self.lo) & (x <= self.hi), axis=1))  # not NaN either
        idx = ((x[in_box] - self.lo) / self.cell).astype(np.int64)  # truncation = floor inside the box
        np.minimum(idx, self.grid_size - 1, out=idx)  # the box's upper edge lies in the last cell
        s[in_box] = self.table[idx[:, 0], idx[:, 1]]
        ambiguous = s[in_box] == -2
        if ambiguous.any():
            s[in_box[ambiguous]] = self._test_candidates(x[in_box[ambiguous]], idx[ambiguous])
        return s

    def __call__(self, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Interpolated values (N, ...) (0 outside the hull) and the inside-the-hull flags (N,)."""
        x = np.atleast_2d(np.asarray(x, dtype=np.float64))
        s = self.find_simplex(x)
        inside = s >= 0
        si = np.maximum(s, 0)  # outside (-1): any triangle, the values are zeroed below
        slope = self.slope[si]
        out = self.offset[si] + slope[..., 0] * x[:, 0:1]
        for j in range(1, self.ndim):
            out += slope[..., j] * x[:, j : j + 1]
        out[~inside] = 0.0
        return out.reshape(len(x), *self.value_shape), inside


# --------------------------------------------------------------------------------------------------
# likelihood


class GaussianSummaryLikelihood:
    """Gaussian likelihood of summaries with interpolated mean and covariance; flat prior in the hull.

    Args:
        cosmologies: (K, P) parameters of the simulated cosmologies.
        means: (K, D) mean summary of each cosmology.
        covariances: (K, D, D) covariance of the summary of each cosmology.
        grid_size: Lookup grid of the interpolator (see SimplexInterpolator).
    """

    def __init__(self, cosmologies: np.ndarray, means: np.ndarray, covariances: np.ndarray, grid_size: int) -> None:
        self.cosmologies = np.asarray(cosmologies, dtype=np.float64)
        means = np.asarray(means, dtype=np.float64)
        covariances = np.asarray(covariances, dtype=np.float64)
        self.dim = means.shape[1]
        if covariances.shape != (len(means), self.dim, self.dim):
            raise ValueError(f"covariances have shape {covariances.shape}; expected {(len(means), self.dim, self.dim)}")
        # one interpolator for mean and covariance: one triangle search per call
        self.interp = SimplexInterpolator(self.cosmologies, np.concatenate([means, covariances.reshape(len(means), self.dim**2)], axis=1), grid_size)

    def moments(self, theta: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(mean (N, D), covariance (N, D, D), inside (N,)) at the parameters theta (N, P)."""
        values, inside = self.interp(theta)
        d = self.dim
        return values[:, :d], values[:, d:].reshape(len(values), d, d), inside

    def log_prob(self, theta: np.ndarray, data: np.ndarray) -> np.ndarray:
        """log prior + log likelihood (up to a constant) for every row; -inf outside the hull, never NaN."""
        theta = np.atleast_2d(theta)
        data = np.asarray(data, dtype=np.float64).reshape(len(theta), self.dim)
        mean, cov, inside = self.moments(theta)
        r = data - mean
        # a singular covariance divides by zero below: that is the -inf the last line keeps, not a fault to report
        with np.errstate(invalid="ignore", divide="ignore"):
            lp = self._log_density(r, cov)
        # outside the hull the prior is zero; a singular covariance inside counts as impossible, never NaN
        return np.where(inside & np.isfinite(lp), lp, -np.inf)

    def _log_density(self, r: np.ndarray, c: np.ndarray) -> np.ndarray:
        """-0.5 log det C - 0.5 r^T C^-1 r per row; not finite where C is singular (outside the hull the caller discards it)."""
        if self.dim == 2:
            # closed form for the common case (2 CNN summaries): no batched LAPACK call per step
            a, b, dd = c[:, 0, 0], c[:, 0, 1], c[:, 1, 1]
            det = a * dd - b * b
            chi2 = (dd * r[:, 0] ** 2 - 2.0 * b * r[:, 0] * r[:, 1] + a * r[:, 1] ** 2) / det
            logdet = np.log(det)
        else:
            sign, logdet = np.linalg.slogdet(c)
            ok = sign > 0
            # a singular covariance (outside the hull the moments are 0) would stop solve() with LinAlgError:
            # solve with the identity there, then discard
            c = np.where(ok[:, None, None], c, np.eye(self.dim))
            chi2 = np.sum(r * np.linalg.solve(c, r[..., None])[..., 0], axis=1)
            logdet = np.where(ok, logdet, np.nan)
        return -0.5 * logdet - 0.5 * chi2


# --------------------------------------------------------------------------------------------------
# samplers


@dataclass
class ChainResult:
    """Posterior summaries of many chains.

    Attributes:
        mean: (N, P) posterior mean after burn-in.
        std: (N, P) posterior std after burn-in (ddof 0, as np.std in the kit).
        acceptance: (N,) fraction of accepted proposals (over all steps).
        traces: (n_trace, S, P) post-burn-in traces of the first chains (for the ESS check).
        ess: (n_trace, P) effective sample size of those traces.
        n_steps: Steps per chain; burn_in: steps discarded.
    """

    mean: np.ndarray
    std: np.ndarray
    acceptance: np.ndarray
    traces: np.ndarray
    ess: np.ndarray
    n_steps: int
    burn_in: int
    warnings: list[str] = field(default_factory=list)


def effective_sample_size(trace: np.ndarray, c: float = 5.0) -> np.ndarray:
    """ESS = S / tau per chain and parameter, tau from emcee's integrated autocorrelation time.

    Args:
        trace: (S,) or (S, P) samples of one chain.
        c: emcee's window constant.
    """
    from emcee.autocorr import integrated_time

    trace = np.asarray(trace, dtype=np.float64)
    if trace.ndim == 1:
        trace = trace[:, None]
    taus = []
    for j in range(trace.shape[1]):
        x = trace[:, j]
        if np.ptp(x) == 0:
            taus.append(np.inf)  # a chain that never moved has no independent samples
            continue
        taus.append(float(integrated_time(x, c=c, tol=0)[0]))  # tol=0: never refuses a short chain
    return len(trace) / np.maximum(np.array(taus), 1.0)


def metropolis(
    log_prob: Callable[[np.ndarray], np.ndarray],
    x0: np.ndarray,
    n_steps: int,
    proposal_std: float | Sequence[float],
    burn_in: float,
    *,
    n_trace: int,
    seed: int = 0,
    progress: bool = False,
) -> ChainResult:
    """Random-walk Metropolis for N independent chains at once.

    Args:
        log_prob: Maps (N, P) states to (N,) log densities (-inf where impossible); chain i's target
            may depend on i (one test map per chain).
        x0: (N, P) starting states; they must have finite log density.
        n_steps: Steps per chain.
        proposal_std: Std of the Gaussian proposal (scalar or per parameter).
        burn_in: Fraction of the steps discarded before the moments are accumulated.
        seed: Seed of the proposals and of the accept draws.
        n_trace: Number of chains whose post-burn-in traces are kept for the ESS check.
        progress: Show a tqdm bar over the steps.
    """
    rng = np.random.default_rng(seed)
    x = np.array(x0, dtype=np.float64)
    n, p = x.shape
    lp = log_prob(x)
    if not np.all(np.isfinite(lp)):
        bad = np.flatnonzero(~np.isfinite(lp))
        raise ValueError(f"metropolis: {len(bad)} starting state(s) have log density -inf/NaN (e.g. chain {bad[:5].tolist()}); start inside the prior")
    step = np.broadcast_to(np.asarray(proposal_std, dtype=np.float64), (p,))
    start = int(round(burn_in * n_steps))
    n_keep = n_steps - start
    if n_keep <= 0:
        raise ValueError(f"metropolis: burn_in {burn_in} leaves no samples of {n_steps} steps")
    n_trace = min(n_trace, n)
    traces = np.empty((n_trace, n_keep, p))
    total = np.zeros((n, p))
    total_sq = np.zeros((n, p))
    shift = x.copy()  # moments around the start: no cancellation when the posterior is narrow
    accepted = np.zeros(n)
    steps = range(n_steps)
    if progress:
        from tqdm.auto import tqdm

        steps = tqdm(steps, desc="metropolis", unit="step")
    for i in steps:
        proposal = x + rng.standard_normal((n, p)) * step
        lp_new = log_prob(proposal)
        accept = np.log(rng.random(n)) < lp_new - lp
        x[accept] = proposal[accept]
        lp[accept] = lp_new[accept]
        accepted += accept
        if i >= start:
            dx = x - shift
            total += dx
            total_sq += dx * dx
            traces[:, i - start] = x[:n_trace]
    mean_dx = total / n_keep
    var = np.maximum(total_sq / n_keep - mean_dx**2, 0.0)
    ess = np.array([effective_sample_size(t) for t in traces]) if n_trace else np.empty((0, p))
    return ChainResult(mean=shift + mean_dx, std=np.sqrt(var), acceptance=accepted / n_steps, traces=traces, ess=ess, n_steps=n_steps, burn_in=start)


def kit_metropolis(
    log_prob: Callable[[np.ndarray], np.ndarray], x0: np.ndarray, n_steps: int, proposal_std: float, burn_in: float, seed: int = 0
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The kit's vectorised loop as written there (every state stored, moments at the end): the baseline.

    Returns (mean, std, acceptance) like ``metropolis``; kept for the benchmark and as a cross-check.
    """
    rng = np.random.default_rng(seed)
    current = np.array(x0, dtype=np.float64)
    curr_logprob = log_prob(current)
    states = []
    total_acc = np.zeros(len(current))
    for _ in range(n_steps):
        proposal = current + rng.standard_normal(current.shape) * proposal_std
        proposal_logprob = log_prob(proposal)
        acc_logprob = proposal_logprob - curr_logprob
        acc_logprob[acc_logprob > 0] = 0
        acc = rng.random(len(current)) < np.exp(acc_logprob)
        total_acc += acc
        current = np.where(acc[:, None], proposal, current)
        curr_logprob = np.where(acc, proposal_logprob, curr_logprob)
        states.append(current)
    states = np.stack(states)[int(burn_in * n_steps) :]
    return states.mean(axis=0), states.std(axis=0), total_acc / n_steps


def scipy_log_prob(cosmologies: np.ndarray, means: np.ndarray, covariances: np.ndarray) -> Callable[[np.ndarray, np.ndarray], np.ndarray]:
    """The kit's likelihood with scipy's LinearNDInterpolator (the reference the fast one must equal)."""
    d = means.shape[1]
    mean_interp = LinearNDInterpolator(cosmologies, means)
    cov_interp = LinearNDInterpolator(cosmologies, covariances.reshape(len(covariances), d * d))

    def log_prob(theta: np.ndarray, data: np.ndarray) -> np.ndarray:
        theta = np.atleast_2d(theta)
        mu = mean_interp(theta)
        out = np.full(len(theta), -np.inf)
        inside = np.all(np.isfinite(mu), axis=1)
        if inside.any():
            cov = cov_interp(theta[inside]).reshape(int(inside.sum()), d, d)
            r = np.asarray(data, dtype=np.float64).reshape(len(theta), d)[inside] - mu[inside]
            chi2 = np.sum(r * np.linalg.solve(cov, r[..., None])[..., 0], axis=1)
            out[inside] = -0.5 * np.linalg.slogdet(cov)[1] - 0.5 * chi2
        return out

    return log_prob


def emcee_posterior(
    log_prob: Callable[[np.ndarray], float], x0: np.ndarray, n_walkers: int = 16, n_steps: int = 2000, burn_in: float = 0.2,
    init_scale: float = 1e-3, seed: int = 0,
) -> tuple[np.ndarray, np.ndarray, float]:
    """One posterior with emcee's affine-invariant ensemble sampler.

    Args:
        log_prob: Log density of one state (P,) -> float (-inf outside the prior).
        x0: (P,) centre of the walkers' start (inside the prior).
        n_walkers: Walkers (at least 2 P).
        n_steps: Steps per walker; burn_in: fraction discarded.
        init_scale: Std of the walkers' scatter around x0.
        seed: Seed of the start and of the sampler.

    Returns:
        (mean (P,), std (P,), mean acceptance fraction).
    """
    import emcee

    rng = np.random.default_rng(seed)
    x0 = np.asarray(x0, dtype=np.float64)
    start = x0 + init_scale * rng.standard_normal((n_walkers, len(x0)))
    sampler = emcee.EnsembleSampler(n_walkers, len(x0), log_prob)
    sampler.random_state = np.random.RandomState(seed).get_state()  # emcee's own generator, seeded
    sampler.run_mcmc(start, n_steps)
    chain = sampler.get_chain(discard=int(burn_in * n_steps), flat=True)
    return chain.mean(axis=0), chain.std(axis=0), float(np.mean(sampler.acceptance_fraction))


# --------------------------------------------------------------------------------------------------
# checks


def chain_checks(result: ChainResult, acceptance_band: Sequence[float], ess_min: float) -> dict[str, float]:
    """Acceptance and ESS figures; warns (and records in result.warnings) when outside the seed's band.

    ``acceptance_band`` (low, high) and ``ess_min``: conf/thresholds/weak_lensing.yaml (acceptance_low,
    acceptance_high, ess_min).

    Returns keys ``acceptance_mean``, ``acceptance_min``, ``acceptance_max``, ``acceptance_outside_band``
    (fraction of chains), ``ess_min``, ``ess_median``.
    """
    lo, hi = float(acceptance_band[0]), float(acceptance_band[1])
    acc = result.acceptance
    outside = float(np.mean((acc < lo) | (acc > hi)))
    ess = result.ess
    ess_low = float(ess.min()) if ess.size else math.nan
    out = {
        "acceptance_mean": float(acc.mean()),
        "acceptance_min": float(acc.min()),
        "acceptance_max": float(acc.max()),
        "acceptance_outside_band": outside,
        "ess_min": ess_low,
        "ess_median": float(np.median(ess)) if ess.size else math.nan,
    }
    if outside > 0:
        msg = f"MCMC: {outside:.1%} of chains have acceptance outside [{lo}, {hi}] (mean {acc.mean():.3f}); tune the proposal std"
        result.warnings.append(msg)
        warnings.warn(msg, stacklevel=2)
    if ess.size and ess_low < ess_min:
        msg = f"MCMC: effective sample size {ess_low:.0f} < {ess_min:.0f} in a checked chain; run longer chains"
        result.warnings.append(msg)
        warnings.warn(msg, stacklevel=2)
    return out


def hull_starts(cosmologies: np.ndarray, n: int, seed: int = 0) -> np.ndarray:
    """n starting states drawn from the simulated cosmologies (inside the hull, as the kit starts)."""
    rng = np.random.default_rng(seed)
    return np.asarray(cosmologies, dtype=np.float64)[rng.integers(0, len(cosmologies), n)]


# summary_posteriors' settings that a run passes and records (callbacks/weak_lensing/score.py, the sidecar's
# ``mcmc``) and the evaluate task reads back (tasks/weak_lensing/evaluation.py)
MCMC_SETTINGS = ("n_steps", "proposal_std", "burn_in", "seed", "grid_size", "n_trace", "acceptance_band", "ess_min")


def summary_posteriors(
    val_summaries: np.ndarray,
    val_cosmology: np.ndarray,
    val_params: np.ndarray,
    test_summaries: np.ndarray,
    *,
    n_steps: int,
    proposal_std: float,
    burn_in: float,
    seed: int,
    acceptance_band: Sequence[float],
    ess_min: float,
    grid_size: int,
    n_trace: int,
    progress: bool = False,
) -> tuple[np.ndarray, np.ndarray, dict[str, float], list[str]]:
    """The whole CNN + MCMC stage: summaries of validation maps -> posteriors of every test map.

    Args:
        val_summaries: (N_val, D) summaries of the validation maps (CNN point predictions, log C_ell, ...).
        val_cosmology: (N_val,) cosmology id of each validation map.
        val_params: (N_val, P) parameters of each validation map.
        test_summaries: (N_test, D) summaries of the maps to infer.
        n_steps, proposal_std, burn_in, seed, n_trace: See ``metropolis``.
        acceptance_band, ess_min: See ``chain_checks``.
        grid_size: Lookup grid of the interpolator.
        (All of them: conf/thresholds/weak_lensing.yaml, passed by the callback or recorded in a sidecar.)
        progress: tqdm over the steps.

    Returns:
        (posterior mean (N_test, P), posterior std (N_test, P), diagnostics, warnings).
    """
    cosmo, means, covs = summary_moments(val_summaries, val_cosmology, val_params)
    lik = GaussianSummaryLikelihood(cosmo, means, covs, grid_size=grid_size)
    data = np.asarray(test_summaries, dtype=np.float64).reshape(len(test_summaries), means.shape[1])
    start = hull_starts(cosmo, len(data), seed=seed)
    # a start where a map's likelihood underflows is moved to the cosmology that suits that map best
    bad = ~np.isfinite(lik.log_prob(start, data))
    if bad.any():
        per = np.stack([lik.log_prob(np.repeat(c[None], len(data), 0), data) for c in cosmo], axis=1)
        start = np.where(bad[:, None], cosmo[np.argmax(per, axis=1)], start)
    result = metropolis(lambda th: lik.log_prob(th, data), start, n_steps=n_steps, proposal_std=proposal_std,
                        burn_in=burn_in, seed=seed, n_trace=n_trace, progress=progress)
    diag = chain_checks(result, acceptance_band, ess_min)
    diag.update({"n_cosmologies": float(len(cosmo)), "summary_dim": float(means.shape[1])})
    std = result.std
    stuck = std <= 0
    if stuck.any():  # a chain that never moved: keep its (useless) answer scorable, and say so
        msg = f"MCMC: {int(stuck.any(axis=1).sum())} chain(s) never moved; their std is set to 1e-6"
        result.warnings.append(msg)
        warnings.warn(msg, stacklevel=2)
        std = np.where(stuck, 1e-6, std)
    return result.mean, std, diag, list(result.warnings)
