"""Posterior sampling for a whole weak-lensing test set (seed 001, CNN + MCMC), as ratios in one process.

    python benchmarks/bench_wl.py                       # 4,000 maps x 10,000 steps, 101 cosmologies
    python benchmarks/bench_wl.py --n-maps 1000 --steps 2000

Three samplers of the same posterior (the same interpolated Gaussian likelihood of 2 CNN summaries over
the kit's design of 101 cosmologies, flat prior in their convex hull, proposal 0.06, 20% burn-in):

1. Rigor's: ``analysis.weak_lensing.mcmc.metropolis`` over all maps at once with ``GaussianSummaryLikelihood`` (affine
   form per triangle, grid lookup of the triangle, closed-form 2 x 2 inverse, running moments).
2. The kit's vectorised loop: NumPy over chains with scipy's ``LinearNDInterpolator`` for mean and
   covariance, batched ``np.linalg`` inverse, every state stored (``analysis.weak_lensing.mcmc.kit_metropolis`` with
   ``scipy_log_prob``).
3. The seed's per-map loop (its train_HMC plan: "run MCMC sampling for each test sample"): one chain at
   a time, the interpolators called on one point per step. Too slow to run whole; timed on a few maps
   and fewer steps and scaled per chain-step.

Targets: Rigor's at least 100x the per-map loop and no slower than the kit's vectorised loop. The
posterior means of 1 and 2 are compared too (they must agree within Monte-Carlo error).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
from omegaconf import OmegaConf

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
MCMC = OmegaConf.load(ROOT / "conf" / "thresholds" / "weak_lensing.yaml").mcmc  # the family's settings, written once there

from analysis.weak_lensing.mcmc import GaussianSummaryLikelihood, hull_starts, kit_metropolis, metropolis, scipy_log_prob  # noqa: E402
from datamodules.weak_lensing.simulate import WLSimConfig, cosmology_design  # noqa: E402


def problem(n_cosmologies: int, n_maps: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """A CNN-like summary model over the kit's design: mean near the parameters, correlated noise."""
    rng = np.random.default_rng(seed)
    cosmo = cosmology_design(WLSimConfig(n_cosmologies=n_cosmologies))
    means = cosmo + 0.01 * np.sin(7 * cosmo[:, ::-1])
    sig = np.column_stack([0.04 + 0.05 * (cosmo[:, 0] - 0.09), 0.015 + 0.01 * (cosmo[:, 1] - 0.68)])
    rho = -0.5
    off = rho * sig[:, 0] * sig[:, 1]
    covs = np.stack([np.stack([sig[:, 0] ** 2, off], axis=-1), np.stack([off, sig[:, 1] ** 2], axis=-1)], axis=1)
    truth = cosmo[rng.integers(0, len(cosmo), n_maps)]
    data = truth + rng.normal(0, 1, (n_maps, 2)) * np.array([0.04, 0.015])
    return cosmo, means, covs, data


def per_map_loop(log_prob_one, x0: np.ndarray, n_steps: int, proposal_std: float, burn_in: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """The seed's plan: one Metropolis chain per map, one interpolator call per step."""
    rng = np.random.default_rng(seed)
    x = np.array(x0, dtype=np.float64)
    lp = log_prob_one(x)
    kept = []
    for i in range(n_steps):
        prop = x + rng.standard_normal(2) * proposal_std
        lp_new = log_prob_one(prop)
        if np.log(rng.random()) < lp_new - lp:
            x, lp = prop, lp_new
        if i >= int(burn_in * n_steps):
            kept.append(x)
    kept = np.array(kept)
    return kept.mean(axis=0), kept.std(axis=0)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--n-maps", type=int, default=4000)
    parser.add_argument("--steps", type=int, default=MCMC.n_steps)
    parser.add_argument("--cosmologies", type=int, default=101)
    parser.add_argument("--loop-maps", type=int, default=3, help="maps run through the per-map loop")
    parser.add_argument("--loop-steps", type=int, default=2000)
    args = parser.parse_args()
    proposal, burn = MCMC.proposal_std, MCMC.burn_in

    cosmo, means, covs, data = problem(args.cosmologies, args.n_maps)
    lik = GaussianSummaryLikelihood(cosmo, means, covs, grid_size=MCMC.grid_size)
    ref = scipy_log_prob(cosmo, means, covs)
    x0 = hull_starts(cosmo, args.n_maps, seed=1)

    t = time.perf_counter()
    ours = metropolis(lambda th: lik.log_prob(th, data), x0, n_steps=args.steps, proposal_std=proposal, burn_in=burn, seed=2,
                      n_trace=MCMC.n_trace)
    t_ours = time.perf_counter() - t

    t = time.perf_counter()
    kit_mean, kit_std, kit_acc = kit_metropolis(lambda th: ref(th, data), x0, n_steps=args.steps, proposal_std=proposal, burn_in=burn, seed=3)
    t_kit = time.perf_counter() - t

    t = time.perf_counter()
    for j in range(args.loop_maps):
        per_map_loop(lambda th, j=j: float(ref(th[None], data[j : j + 1])[0]), x0[j], args.loop_steps, proposal, burn, seed=4 + j)
    t_loop = time.perf_counter() - t
    t_loop_full = t_loop / (args.loop_maps * args.loop_steps) * args.n_maps * args.steps

    # agreement of the two full samplers: posterior means differ by Monte-Carlo error only
    ok = np.isfinite(kit_mean).all(axis=1)
    z = np.abs(ours.mean[ok] - kit_mean[ok]) / np.maximum(ours.std[ok], 1e-12)
    chain_steps = args.n_maps * args.steps
    print(f"problem: {args.n_maps} maps x {args.steps} steps, {len(cosmo)} cosmologies, 2 summaries; "
          f"acceptance {ours.acceptance.mean():.3f} (kit loop {kit_acc.mean():.3f})")
    print("| sampler | wall time | per chain-step | ratio to Rigor's |")
    print("| --- | --- | --- | --- |")
    print(f"| Rigor: `metropolis` + `GaussianSummaryLikelihood` | {t_ours:.1f} s | {t_ours / chain_steps * 1e9:.0f} ns | 1 |")
    print(f"| kit vectorised loop (LinearNDInterpolator, np.linalg) | {t_kit:.1f} s | {t_kit / chain_steps * 1e9:.0f} ns | {t_kit / t_ours:.1f}x slower |")
    print(f"| seed's per-map loop ({args.loop_maps} maps x {args.loop_steps} steps: {t_loop:.1f} s, scaled) | {t_loop_full:.0f} s | "
          f"{t_loop_full / chain_steps * 1e9:.0f} ns | {t_loop_full / t_ours:.0f}x slower |")
    print(f"posterior means, Rigor vs kit loop: median |diff| = {np.median(z):.3f} posterior std "
          f"(Monte-Carlo error of two independent chains of ESS ~{np.median(ours.ess):.0f}: ~{np.sqrt(2 / np.median(ours.ess)):.3f})")
    print(f"targets: >= 100x the per-map loop: {'met' if t_loop_full / t_ours >= 100 else 'NOT met'}; "
          f"no slower than the kit loop: {'met' if t_kit >= t_ours else 'NOT met'}")


if __name__ == "__main__":
    main()
