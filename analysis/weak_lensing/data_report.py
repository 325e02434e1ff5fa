"""What an embedded weak-lensing data set allows (issue 22): design, bounds, Fisher forecast, one-point R^2.

    python -m analysis.weak_lensing.data_report --data weak_lensing            # the default (lognormal) set
    python -m analysis.weak_lensing.data_report --data weak_lensing_gaussian   # the original Gaussian set

builds (or reuses) the data set of ``conf/data/<data>.yaml`` under ``--cache`` and prints one JSON object:
the design (cosmologies, points within +-0.05 of the fiducial, maps per split), the simulation wall time
when it was built here, the prior-only and perfect-S_8 scores on its test maps, the power-spectrum Fisher
forecast at the fiducial (with the score a calibrated predictor at those sigmas would get) and the
held-out R^2 of Omega_m and S_8 from the maps' one-point moments (std alone, then std + skewness +
kurtosis; quadratic least squares fitted on the training maps with a fresh shape-noise draw, evaluated
on the noisy test maps). Every number in it comes from the config files.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from omegaconf import OmegaConf

from analysis.weak_lensing.bounds import data_bounds, one_point_moments, summary_r2
from analysis.weak_lensing.fisher import expected_score, wl_fisher, with_gaussian_prior
from analysis.weak_lensing.power_spectrum import log_bins

ROOT = Path(__file__).resolve().parents[2]
TARGETS = ["omega_m", "s8"]


def data_config(name: str) -> dict[str, Any]:
    """``data.simulation`` of conf/data/<name>.yaml, resolved (it interpolates ``data.*`` only)."""
    cfg = OmegaConf.create({"data": OmegaConf.load(ROOT / "conf" / "data" / f"{name}.yaml")})
    return OmegaConf.to_container(cfg.data.simulation, resolve=True)


def report(name: str, cache: Path, workers: int, seed: int = 0) -> dict[str, Any]:
    """The report of one data config (see the module docstring)."""
    from datamodules.weak_lensing.simulate import as_config, ensure_wl_dataset, wl_dataset_dir

    sim = data_config(name)
    cfg = as_config(sim)
    thresholds = OmegaConf.load(ROOT / "conf" / "thresholds" / "weak_lensing.yaml")
    scale, floor = float(thresholds.score_scale), float(thresholds.score_floor)
    cached = (wl_dataset_dir(cache, cfg) / "COMPLETE").exists()
    start = time.time()
    manifest = ensure_wl_dataset(cache, cfg, n_workers=workers, progress=False)
    build_s = None if cached else round(time.time() - start, 1)
    frame = pd.read_parquet(manifest)
    pixels = np.load(manifest.with_name("pixels.npy"), mmap_mode="r")
    sigma = json.loads(manifest.with_name("geometry.json").read_text())["noise_sigma"]
    design = frame.groupby("cosmology_id")[TARGETS].first().to_numpy()
    out: dict[str, Any] = {
        "data": name, "cache_dir": str(manifest.parent), "shape": list(cfg.shape), "pixel_arcmin": cfg.map_pixel_arcmin,
        "field": cfg.field, "shift_model": cfg.shift_model, "n_cosmologies": len(design),
        "n_within_0.05_of_fiducial": int(np.all(np.abs(design - np.array(cfg.fiducial)) <= 0.05 + 1e-12, axis=1).sum()),
        "maps": frame["split"].value_counts().to_dict(), "build_wall_s": build_s, "noise_sigma": sigma,
    }
    if "lognormal_shift" in frame:
        out["lognormal_shift_range"] = [float(frame["lognormal_shift"].min()), float(frame["lognormal_shift"].max())]
    train, test = frame[frame["split"] == "train"], frame[frame["split"] == "test"]
    b = data_bounds(test[TARGETS].to_numpy(), train[TARGETS].to_numpy(), TARGETS, scale, floor,
                    float(thresholds.perfect_s8_sigma))
    out.update({f"test_{k}": v for k, v in b.items()})
    start = time.time()
    edges = log_bins(float(thresholds.mcmc.ps_ell_min), float(thresholds.mcmc.ps_ell_max), int(thresholds.mcmc.ps_n_bins))
    forecast = wl_fisher(cfg, edges, mask=np.load(manifest.with_name("mask.npy")))
    out.update(forecast.as_dict())
    out["fisher_score"] = expected_score([forecast.sigma_omega_m, forecast.sigma_s8], scale)
    both = with_gaussian_prior([forecast.sigma_omega_m, forecast.sigma_s8], forecast.correlation,
                               [b["prior_std_omega_m"], b["prior_std_s8"]])
    out.update({"fisher_prior_sigma_omega_m": float(both[0]), "fisher_prior_sigma_s8": float(both[1]),
                "fisher_prior_score": expected_score(both, scale)})
    out["fisher_wall_s"] = round(time.time() - start, 1)
    # one-point moments of the maps as the network sees them: noise on the noiseless training maps
    rng = np.random.default_rng(seed)
    x_train = np.asarray(pixels[train["pixel_row"].to_numpy()], dtype=np.float64)
    x_train = x_train + rng.standard_normal(x_train.shape) * sigma * (~train["noisy"].to_numpy())[:, None]
    x_test = np.asarray(pixels[test["pixel_row"].to_numpy()], dtype=np.float64)  # stored with their noise
    ones = np.ones(x_train.shape[1], dtype=bool)
    m_train, m_test = one_point_moments(x_train, ones), one_point_moments(x_test, ones)
    for label, cols in (("std", [0]), ("std_skew_kurt", [0, 1, 2])):
        for t in TARGETS:
            out[f"r2_{t}_{label}"] = summary_r2(m_train[:, cols], train[t], m_test[:, cols], test[t])
    return out


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default="weak_lensing", help="a conf/data/ name")
    parser.add_argument("--cache", type=Path, default=ROOT / "data", help="the data cache (paths.data_dir)")
    parser.add_argument("--workers", type=int, default=2, help="simulation processes")
    args = parser.parse_args(argv)
    print(json.dumps(report(args.data, args.cache, args.workers), indent=1))


if __name__ == "__main__":
    main()
