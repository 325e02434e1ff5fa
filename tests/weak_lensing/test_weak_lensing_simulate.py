"""Map statistics of the weak-lensing simulator: variance, power, mask, noise and the on-disk format."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from analysis.weak_lensing.power_spectrum import binned_cl, log_bins, mode_counts, pixel_window, predicted_pixel_variance
from datamodules.weak_lensing.simulate import (
    WLSimConfig,
    as_config,
    cosmology_design,
    field_spectrum,
    gaussian_field,
    interpolate_cl,
    lognormal_field,
    noise_sigma,
    simulate_map,
    survey_mask,
)
from tests.weak_lensing.wl_data import tiny_wl_manifest


def _power_law(ell: np.ndarray) -> np.ndarray:
    return 1e-9 * (ell / 1000.0) ** -1.2


def test_measured_cl_over_input_within_2_percent() -> None:
    box, pix = (512, 512), 2.0  # 2 arcmin pixels: Nyquist ell = 5400
    spectrum = field_spectrum(_power_law, box, pix)
    edges = log_bins(100, 5000, 6)
    rng = np.random.default_rng(11)
    cls = [binned_cl(gaussian_field(spectrum, box, rng), pix, edges, deconvolve_window=True)[1] for _ in range(200)]
    measured = np.mean(cls, axis=0)
    # the input, averaged over exactly the modes of each bin
    from analysis.weak_lensing.power_spectrum import ell_grid

    lx, ly = ell_grid(box, pix)
    ell = np.hypot(lx, ly).ravel()
    which = np.digitize(ell, edges) - 1
    ok = (which >= 0) & (which < len(edges) - 1)
    want = np.bincount(which[ok], weights=_power_law(ell[ok]), minlength=6) / np.bincount(which[ok], minlength=6)
    np.testing.assert_allclose(measured / want, 1.0, atol=0.02)


def test_pixel_variance_matches_the_prediction_with_the_pixel_window() -> None:
    cfg = WLSimConfig(downsample=8, pad=2)
    ell_nodes = np.geomspace(5, 2e4, 40)
    cl = _power_law(ell_nodes)
    h, w = cfg.shape
    box = (cfg.pad * h, cfg.pad * w)
    want = predicted_pixel_variance(lambda e: interpolate_cl(ell_nodes, cl, e), box, cfg.map_pixel_arcmin)
    no_window = predicted_pixel_variance(lambda e: interpolate_cl(ell_nodes, cl, e), box, cfg.map_pixel_arcmin, window=False)
    assert want < 0.95 * no_window  # the window matters at this pixel size: the test can tell them apart
    rng = np.random.default_rng(12)
    maps = np.stack([simulate_map(cfg, cl, ell_nodes, rng) for _ in range(300)])
    assert np.mean(maps**2) == pytest.approx(want, rel=0.04)
    logn = WLSimConfig(downsample=8, pad=2, field="lognormal", lognormal_shift=0.02)
    maps_ln = np.stack([simulate_map(logn, cl, ell_nodes, rng) for _ in range(300)])
    assert np.mean(maps_ln**2) == pytest.approx(want, rel=0.06)
    skew = np.mean(maps_ln**3) / np.mean(maps_ln**2) ** 1.5
    assert skew > 0.1 and abs(np.mean(maps**3) / np.mean(maps**2) ** 1.5) < 0.1


def test_lognormal_field_keeps_the_mean_and_variance() -> None:
    box = (128, 128)
    spectrum = field_spectrum(_power_law, box, 4.0)
    var = float(np.fft.irfft2(spectrum, s=box)[0, 0])
    rng = np.random.default_rng(13)
    f = np.stack([lognormal_field(spectrum, box, rng, shift=0.05) for _ in range(200)])
    assert np.mean(f) == pytest.approx(0.0, abs=0.05 * np.sqrt(var))
    assert np.mean(f**2) == pytest.approx(var, rel=0.05)
    assert f.min() > -0.05  # a shifted lognormal never goes below -shift


def test_mask_valid_fraction_and_determinism() -> None:
    full = WLSimConfig(downsample=1)
    m = survey_mask(full)
    assert m.shape == (1424, 176) and m.dtype == bool
    assert m.mean() == pytest.approx(0.53, abs=0.03)
    small = survey_mask(WLSimConfig(downsample=8))
    assert small.shape == (178, 22) and small.mean() == pytest.approx(0.53, abs=0.05)
    np.testing.assert_array_equal(m, survey_mask(WLSimConfig(downsample=1)))
    assert not np.array_equal(m, survey_mask(WLSimConfig(downsample=1, seed=1)))


def test_noise_level_is_the_kits() -> None:
    assert noise_sigma(0.4, 30, 2.0) == pytest.approx(0.4 / np.sqrt(2 * 30 * 4))
    assert WLSimConfig(downsample=4).noise_sigma == pytest.approx(0.4 / np.sqrt(2 * 30 * 64))


def test_design_contains_the_fiducial_and_stays_in_range() -> None:
    cfg = WLSimConfig(n_cosmologies=101)
    d = cosmology_design(cfg)
    assert d.shape == (101, 2) and np.allclose(d[0], [0.3, 0.8])
    assert d[:, 0].min() >= 0.09 and d[:, 0].max() <= 0.62 and d[:, 1].min() >= 0.68 and d[:, 1].max() <= 0.955
    # denser near the fiducial than a uniform design
    near = np.mean((np.abs(d[:, 0] - 0.3) < 0.05) & (np.abs(d[:, 1] - 0.8) < 0.03))
    assert near > 2 * (0.1 * 0.06) / (0.53 * 0.275)


def test_config_errors_name_the_key() -> None:
    with pytest.raises(ValueError, match="data.simulation: unknown key"):
        as_config({"n_cosmos": 3})
    with pytest.raises(ValueError, match="downsample"):
        WLSimConfig(downsample=5)
    with pytest.raises(ValueError, match="field"):
        WLSimConfig(field="poisson")


def test_the_default_hash_names_the_existing_cache() -> None:
    from datamodules.weak_lensing.simulate import config_hash

    # the cache directory of the default data set: a change regenerates every cache
    assert config_hash(WLSimConfig()) == config_hash(as_config({"nuisance_grid": [3, 3], "dz_std": 0.022})) == "c5a9f255ed98"
    with pytest.raises(ValueError, match="data.simulation.nuisance_grid"):
        as_config({"nuisance_grid": [3]})


def test_tiny_dataset_format_splits_and_noise(tmp_path) -> None:
    manifest = tiny_wl_manifest(tmp_path)
    frame = pd.read_parquet(manifest)
    pixels = np.load(manifest.with_name("pixels.npy"), mmap_mode="r")
    mask = np.load(manifest.with_name("mask.npy"))
    geometry = json.loads(manifest.with_name("geometry.json").read_text())
    assert pixels.shape == (6 * 14, int(mask.sum())) and mask.shape == (356, 44)
    assert set(frame.columns) >= {"sample_id", "split", "cosmology_id", "realisation", "omega_m", "s8", "log_t_agn", "dz", "noisy"}
    # splits along realisations: every cosmology in every split
    counts = frame.groupby(["cosmology_id", "split"]).size().unstack()
    assert (counts["train"] == 4).all() and (counts["val"] == 8).all() and (counts["test"] == 2).all()
    assert frame.loc[frame["split"] == "test", "noisy"].all() and not frame.loc[frame["split"] != "test", "noisy"].any()
    # test maps carry the kit's shape noise on top of the signal
    sigma = geometry["noise_sigma"]
    var_clean = float(np.mean(np.asarray(pixels[frame.index[frame["split"] != "test"]]) ** 2))
    var_noisy = float(np.mean(np.asarray(pixels[frame.index[frame["split"] == "test"]]) ** 2))
    assert var_noisy - var_clean == pytest.approx(sigma**2, rel=0.15)
    # cached: a second call reuses the directory
    assert tiny_wl_manifest(tmp_path) == manifest
    assert mode_counts((356, 44), geometry["pixel_arcmin"], log_bins(100, 1e4, 10))[-1] == 0  # above Nyquist
    assert pixel_window((4, 4), 2.0)[0, 0] == 1.0
