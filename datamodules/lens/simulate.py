"""Embedded strong-lens simulator: g,r,z survey-like cutouts in the real manifest + ``.npy`` format.

Each sample is a ``stamp_size`` x ``stamp_size`` stamp at ``pixel_scale`` arcsec/pixel in the bands of
``bands`` (g, r, z), in nanomaggies (AB zero point 22.5, as in DECaLS). A stamp is

* a host galaxy: elliptical Sersic light at the stamp centre (sub-pixel jitter);
* for positives, plus a lensed source: an SIE + external shear mass (centred on the host, its position
  angle following the host light) ray-shoots an elliptical Sersic source. The source centre is drawn
  uniformly *in area* within a disc of radius ``source_offset_max * theta_E`` around the lens centre
  (default theta_E / 2), inside the SIS pseudo-caustic, so every positive shows a multiply imaged
  arc or ring (total magnification >~ 4 for a point source);
* convolved with the band's PSF (Gaussian or Moffat; FWHM from the sample's ``psf_bin``);
* plus noise: Gaussian sky noise of the sample's ``depth_bin`` and, with ``gain > 0``, Poisson-like
  object noise of variance ``model / gain``.

The light is integrated on a ``supersample``-times finer grid; the lens equation is solved (ray shooting)
once per sample and the unit-flux maps are reused for every band with per-band colours. The central
pixels of the host are integrated on a much finer grid, since high-n Sersic cusps are badly sampled.

Modes:

* ``unpaired``: positives and negatives are independent. By default (``negative_hosts: nonlens``) lens
  hosts come from a brighter, more concentrated population than non-lens hosts (as real lens galaxies
  do), so a "bright core" shortcut really exists in the raw images. With ``negative_hosts: matched`` the
  negatives' hosts are drawn from the lens hosts' population (magnitude, Sersic index, size, axis ratio,
  colours, PSF and depth bins all share one distribution), so only the arc tells the classes apart
  (issue 26's redesigned data).
* ``paired``: each positive and its negative share one host (same parameters, PSF and depth bin, and by
  default the same noise field), with and without the arc, and share a ``pair_id``.

Diagnostics and calibration (all off by default; fields added after v1 enter the cache hash only when set,
so today's data sets keep their cache directories):

* ``arcless_positives``: positives are rendered without their arc: the same host, lens draw and noise
  field, so each image is exactly its positive minus the arc model (the noise variance keeps the arc's
  object noise). Gates on such data see everything but the arc.
* ``arc_snr_min``: a LensPop-style detectability cut (Collett 2015 requires arc S/N >= 20): a positive's
  lens and source are redrawn until the arc's S/N reaches it.

Every sample's randomness comes from ``np.random.default_rng([seed, split, unit, stream])``, so results
do not depend on ``n_workers``, and the val/test samples do not change when ``n_train`` does.

Output (``simulate_lens_dataset``): ``manifest.parquet`` (one row per sample; columns below),
``images.npy`` (N, n_bands, H, W) float32 and ``config.json``. ``ensure_lens_dataset`` caches this under
``cache_root/lens_{mode}_{hash}`` and marks a finished directory with ``COMPLETE``.

Manifest columns: ``sample_id, split, label, theta_e`` (arcsec; NaN for negatives), ``psf_bin, depth_bin,
pair_id, image_index``, then truth metadata: ``psf_fwhm`` (arcsec, r band), ``sky_sigma`` (r band),
host ``host_mag, host_flux`` (r band, total), ``host_n, host_reff, host_q, host_pa, host_g_r, host_r_z,
host_x, host_y``; lens ``lens_q, lens_pa, shear_gamma``; source ``source_mag, source_flux`` (r band,
unlensed), ``source_n, source_reff, source_q, source_x, source_y, source_offset`` (|beta| / theta_E),
``magnification, arc_flux`` (r band, lensed flux inside the stamp) and ``arc_snr`` (matched-filter S/N
of the arc over all bands against sky + object noise). Lens and source columns are NaN for negatives.
"""

from __future__ import annotations

import dataclasses
import json
import math
import multiprocessing
from collections.abc import Mapping
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from scipy.signal import fftconvolve
from tqdm.auto import tqdm

from datamodules.simulation import SimConfig
from rigor.cache import build_once
from rigor.cache import content_hash as _content_hash

# Bump when a code change alters the generated data, so that old caches are not reused.
SIM_VERSION = 1
SPLITS = ("train", "val", "test")
MANIFEST_NAME = "manifest.parquet"
IMAGES_NAME = "images.npy"
COMPLETE_NAME = "COMPLETE"
ZERO_POINT = 22.5  # AB magnitude of 1 nanomaggy
KNOWN_BANDS = ("g", "r", "z")

Range = tuple[float, float]
# tuple fields that are lists of any length; every other tuple field is a (lo, hi) range
_VARIABLE_LENGTH = ("bands", "psf_fwhm_bins", "psf_band_scale", "depth_sky_sigma")


@dataclass
class LensSimConfig(SimConfig):
    """Every number of the simulation. Ranges ``(lo, hi)`` are sampled uniformly.

    Hydra's lists and ints given for floats are coerced to the declared types (SimConfig), so equal configs
    hash equally; a bad value fails naming ``data.simulation.<field>``.

    Magnitudes are AB, r band, total; colours ``g_r`` = g - r and ``r_z`` = r - z. Lengths in arcsec unless
    named otherwise. Position angles are uniform in [0, pi).

    Attributes:
        mode: ``paired`` or ``unpaired`` (see the module docstring).
        n_train, n_val, n_test: Samples per split (even: half positives, half negatives).
        seed: Seed of everything.
        stamp_size: Stamp side in pixels.
        pixel_scale: Arcsec per pixel.
        bands: Band names, a subset of g, r, z (image channel order).
        supersample: Sub-pixels per pixel side for integrating light and ray shooting.
        host_core_supersample: Sub-pixels per pixel side in the host's central pixels.
        host_core_size: Side (pixels) of the central patch integrated with ``host_core_supersample``.
        center_jitter: Host / lens centre offset from the stamp centre, uniform in +-this many pixels.
        theta_e_min, theta_e_max: Einstein radius range; theta_E ~ U[min, max).
        lens_q: SIE axis ratio range.
        lens_pa_scatter: Gaussian scatter (degrees) of the SIE position angle around the host's.
        shear_max: External shear strength ~ U[0, shear_max], angle uniform.
        psf_fwhm_bins: r-band PSF FWHM of each psf_bin (drawn uniformly per sample).
        psf_band_scale: FWHM multiplier per band (seeing is worse in bluer bands).
        psf_type: ``gaussian`` or ``moffat``.
        moffat_beta: Moffat power index.
        depth_sky_sigma: Per depth_bin (drawn uniformly), the sky noise sigma per pixel of every band
            (nanomaggies). Defaults: DECaLS-like 5-sigma PSF depths g~24.5, r~23.9, z~23.0 for the
            middle bin, x0.7 (deeper) and x1.4 (shallower) around it.
        gain: Object Poisson-like noise: variance += model / gain (nanomaggies); 0 disables it.
        lens_host_*: Hosts of unpaired positives (bright, concentrated, early-type).
        nonlens_host_*: Hosts of unpaired negatives (fainter, flatter, more extended).
        paired_host_*: Hosts shared by both members of a pair in paired mode (spans both populations).
        host_g_r, host_r_z: Host colours (all populations; red, early-type-like).
        source_mag: Unlensed source magnitude.
        source_n, source_reff, source_q: Source Sersic index, half-light radius, axis ratio.
        source_g_r, source_r_z: Source colours (blue, star-forming).
        source_offset_max: Source centre radius limit as a fraction of theta_E (uniform in area).
        paired_shared_noise: In paired mode, give both members the same noise field (the negative is
            then exactly the positive without its arc, as when injecting arcs into real cutouts).
        negative_hosts: Unpaired negatives' host population: ``nonlens`` (``nonlens_host_*``) or
            ``matched`` (``lens_host_*``, the positives' own population).
        arcless_positives: Render positives without their arc (a diagnostic; see the module docstring).
        arc_snr_min: Redraw a positive's lens and source until its arc S/N is at least this (0: off).
        arc_snr_max_draws: Draws allowed per positive before the cut fails with an error.
    """

    mode: str = "unpaired"
    n_train: int = 2910
    n_val: int = 10024
    n_test: int = 8852
    seed: int = 1234
    stamp_size: int = 63
    pixel_scale: float = 0.262
    bands: tuple[str, ...] = ("g", "r", "z")
    supersample: int = 3
    host_core_supersample: int = 16
    host_core_size: int = 5
    center_jitter: float = 0.5
    # lens mass
    theta_e_min: float = 0.5
    theta_e_max: float = 3.0
    lens_q: Range = (0.6, 1.0)
    lens_pa_scatter: float = 10.0
    shear_max: float = 0.05
    # PSF and noise
    psf_fwhm_bins: tuple[float, ...] = (1.0, 1.3, 1.6)
    psf_band_scale: tuple[float, ...] = (1.08, 1.0, 0.92)
    psf_type: str = "gaussian"
    moffat_beta: float = 3.5
    depth_sky_sigma: tuple[tuple[float, ...], ...] = (
        (0.0030, 0.0052, 0.0119),
        (0.0043, 0.0074, 0.0170),
        (0.0060, 0.0104, 0.0238),
    )
    gain: float = 5000.0
    # host populations
    lens_host_mag: Range = (17.5, 19.5)
    lens_host_n: Range = (3.0, 5.5)
    lens_host_reff: Range = (0.4, 1.4)
    lens_host_q: Range = (0.6, 1.0)
    nonlens_host_mag: Range = (18.5, 21.0)
    nonlens_host_n: Range = (0.8, 2.5)
    nonlens_host_reff: Range = (0.8, 2.5)
    nonlens_host_q: Range = (0.4, 1.0)
    paired_host_mag: Range = (17.5, 21.0)
    paired_host_n: Range = (0.8, 5.5)
    paired_host_reff: Range = (0.4, 2.5)
    paired_host_q: Range = (0.4, 1.0)
    host_g_r: Range = (1.3, 1.8)
    host_r_z: Range = (0.7, 1.1)
    # source
    source_mag: Range = (23.0, 25.5)
    source_n: Range = (0.5, 2.0)
    source_reff: Range = (0.1, 0.5)
    source_q: Range = (0.4, 1.0)
    source_g_r: Range = (0.0, 0.6)
    source_r_z: Range = (0.0, 0.5)
    source_offset_max: float = 0.5
    paired_shared_noise: bool = True
    # added after v1 (issue 26); at these defaults they leave the hash, and the data, as before
    negative_hosts: str = "nonlens"
    arcless_positives: bool = False
    arc_snr_min: float = 0.0
    arc_snr_max_draws: int = 100

    hash_version = ("sim_version", SIM_VERSION)  # a class attribute, not a field

    def _validate(self) -> None:
        bad = self._bad
        if self.mode not in ("paired", "unpaired"):
            raise bad("mode", "must be 'paired' or 'unpaired'")
        for name in ("n_train", "n_val", "n_test"):
            n = getattr(self, name)
            if n <= 0 or n % 2:
                raise bad(name, "must be a positive even number (half positives, half negatives)")
        for name in ("stamp_size", "supersample", "host_core_supersample", "host_core_size"):
            if getattr(self, name) <= 0:
                raise bad(name, "must be positive")
        if self.host_core_size > self.stamp_size:
            raise bad("host_core_size", f"must not exceed stamp_size ({self.stamp_size})")
        for name in ("pixel_scale", "theta_e_min", "moffat_beta"):
            if getattr(self, name) <= 0:
                raise bad(name, "must be positive")
        if self.theta_e_min >= self.theta_e_max:
            raise bad("theta_e_min", f"must be < theta_e_max ({self.theta_e_max})")
        for name in ("center_jitter", "lens_pa_scatter", "shear_max", "gain", "source_offset_max"):
            if getattr(self, name) < 0:
                raise bad(name, "must be >= 0")
        if not self.bands or len(set(self.bands)) != len(self.bands) or not set(self.bands) <= set(KNOWN_BANDS):
            raise bad("bands", f"must be distinct names from {KNOWN_BANDS}")
        if not self.psf_fwhm_bins or min(self.psf_fwhm_bins) <= 0:
            raise bad("psf_fwhm_bins", "must be a non-empty list of positive FWHMs")
        if len(self.psf_band_scale) != len(self.bands) or min(self.psf_band_scale) <= 0:
            raise bad("psf_band_scale", f"needs one positive factor per band ({len(self.bands)})")
        if self.psf_type not in ("gaussian", "moffat"):
            raise bad("psf_type", "must be 'gaussian' or 'moffat'")
        if self.psf_type == "moffat" and self.moffat_beta <= 1:
            raise bad("moffat_beta", "must be > 1 for a normalisable Moffat profile")
        if not self.depth_sky_sigma or any(len(s) != len(self.bands) or min(s) <= 0 for s in self.depth_sky_sigma):
            raise bad("depth_sky_sigma", f"needs, per depth bin, one positive sigma per band ({len(self.bands)})")
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            if isinstance(f.default, tuple) and f.name not in _VARIABLE_LENGTH:  # a (lo, hi) range
                lo, hi = value
                if lo > hi:
                    raise bad(f.name, "range must have lo <= hi")
                if f.name.endswith("_q") and not 0 < lo <= hi <= 1:
                    raise bad(f.name, "axis ratios must lie in (0, 1]")
                if f.name.endswith(("_n", "_reff")) and lo <= 0:
                    raise bad(f.name, "must be positive")
        if self.shear_max >= 0.5:
            raise bad("shear_max", "must be < 0.5")
        if self.negative_hosts not in ("nonlens", "matched"):
            raise bad("negative_hosts", "must be 'nonlens' or 'matched'")
        if self.mode == "paired" and self.negative_hosts != "nonlens":
            raise bad("negative_hosts", "applies to unpaired mode only (paired negatives share their positive's host)")
        if self.arc_snr_min < 0:
            raise bad("arc_snr_min", "must be >= 0 (0: no detectability cut)")
        if self.arc_snr_max_draws < 1:
            raise bad("arc_snr_max_draws", "must be >= 1")

    def content_hash(self) -> str:
        """As SimConfig's, but fields added after v1 enter only when set, so old caches keep their names."""
        key, version = self.hash_version
        fields = {k: v for k, v in self.to_dict().items() if k not in _LATER_DEFAULTS or v != _LATER_DEFAULTS[k]}
        return _content_hash({key: version, **fields}, length=12)

    @property
    def design(self) -> str:
        """``paired``, ``unpaired`` or ``matched`` (unpaired with host-matched negatives): names sample ids."""
        return "matched" if self.mode == "unpaired" and self.negative_hosts == "matched" else self.mode


# fields added after SIM_VERSION 1 and their defaults (which reproduce v1's data)
_LATER_DEFAULTS: dict[str, Any] = {"negative_hosts": "nonlens", "arcless_positives": False, "arc_snr_min": 0.0,
                                   "arc_snr_max_draws": 100}


def as_config(cfg: LensSimConfig | Mapping[str, Any] | None) -> LensSimConfig:
    """A LensSimConfig from itself (re-validated), a (Hydra) mapping of its fields, or None (defaults).

    Raises:
        ValueError: For unknown keys or bad values (the message names the field).
    """
    return LensSimConfig.from_mapping(cfg)


def config_hash(cfg: LensSimConfig) -> str:
    """Short, stable hash of the full config (and the simulator version)."""
    return cfg.content_hash()


# --- physics helpers (cached per process) -------------------------------------------------------------


@lru_cache(maxsize=1)
def _models() -> tuple[Any, Any]:
    """The lenstronomy lens and light models (building them is slow; one per process)."""
    from lenstronomy.LensModel.lens_model import LensModel
    from lenstronomy.LightModel.light_model import LightModel

    return LensModel(["SIE", "SHEAR"]), LightModel(["SERSIC_ELLIPSE"])


@lru_cache(maxsize=8)
def _grid(n_pix: int, pixel_scale: float, supersample: int, offset_pix: float = 0.0) -> tuple[np.ndarray, np.ndarray]:
    """Flattened sub-pixel centre coordinates (arcsec) of an n_pix x n_pix patch.

    Pixel (row i, col j) of the stamp has its centre at x = (j - c) * scale, y = (i - c) * scale with c the
    stamp centre; `offset_pix` is the patch's first pixel index minus c.
    """
    sub = (np.arange(n_pix * supersample) + 0.5) / supersample - 0.5 + offset_pix
    x, y = np.meshgrid(sub * pixel_scale, sub * pixel_scale)
    return x.ravel(), y.ravel()


def _bin_pixels(sb: np.ndarray, n_pix: int, supersample: int, pixel_scale: float) -> np.ndarray:
    """Sub-pixel surface brightness -> flux per pixel (mean over sub-pixels x pixel area)."""
    return sb.reshape(n_pix, supersample, n_pix, supersample).mean(axis=(1, 3)) * pixel_scale**2


@lru_cache(maxsize=64)
def _psf_kernels(fwhms: tuple[float, ...], pixel_scale: float, psf_type: str, beta: float, max_half: int) -> np.ndarray:
    """Normalised PSF kernels (n_bands, K, K), one per FWHM (arcsec), integrated on a 5x finer grid."""
    half = min(max_half, int(math.ceil(3.0 * max(fwhms) / pixel_scale)))
    ss = 5
    sub = (np.arange((2 * half + 1) * ss) + 0.5) / ss - 0.5 - half
    r2 = np.add.outer(sub**2, sub**2) * pixel_scale**2
    kernels = []
    for fwhm in fwhms:
        if psf_type == "gaussian":
            prof = np.exp(-r2 / (2 * (fwhm / (2 * math.sqrt(2 * math.log(2)))) ** 2))
        else:
            alpha = fwhm / (2 * math.sqrt(2 ** (1 / beta) - 1))
            prof = (1 + r2 / alpha**2) ** (-beta)
        k = prof.reshape(2 * half + 1, ss, 2 * half + 1, ss).sum(axis=(1, 3))
        kernels.append(k / k.sum())
    return np.stack(kernels)


def _band_mags(mag_r: float, g_r: float, r_z: float, bands: tuple[str, ...]) -> np.ndarray:
    table = {"g": mag_r + g_r, "r": mag_r, "z": mag_r - r_z}
    return np.array([table[b] for b in bands])


def _flux(mag: np.ndarray | float) -> np.ndarray | float:
    return 10.0 ** (-0.4 * (np.asarray(mag) - ZERO_POINT))


def _uniform(rng: np.random.Generator, bounds: Range) -> float:
    return float(rng.uniform(bounds[0], bounds[1]))


def _draw_host(rng: np.random.Generator, cfg: LensSimConfig, population: str) -> dict[str, Any]:
    """Observing conditions and host light of one stamp (`population`: lens_host, nonlens_host, paired_host)."""
    pop = {key: getattr(cfg, f"{population}_{key}") for key in ("mag", "n", "reff", "q")}
    return dict(
        psf_bin=int(rng.integers(len(cfg.psf_fwhm_bins))),
        depth_bin=int(rng.integers(len(cfg.depth_sky_sigma))),
        host_mag=_uniform(rng, pop["mag"]),
        host_n=_uniform(rng, pop["n"]),
        host_reff=_uniform(rng, pop["reff"]),
        host_q=_uniform(rng, pop["q"]),
        host_pa=float(rng.uniform(0.0, np.pi)),
        host_g_r=_uniform(rng, cfg.host_g_r),
        host_r_z=_uniform(rng, cfg.host_r_z),
        host_x=float(rng.uniform(-cfg.center_jitter, cfg.center_jitter)) * cfg.pixel_scale,
        host_y=float(rng.uniform(-cfg.center_jitter, cfg.center_jitter)) * cfg.pixel_scale,
    )


def _draw_lens(rng: np.random.Generator, cfg: LensSimConfig, host: Mapping[str, Any]) -> dict[str, Any]:
    """SIE + shear (centred on the host) and the source behind it."""
    theta_e = _uniform(rng, (cfg.theta_e_min, cfg.theta_e_max))
    # uniform in area inside a disc of radius source_offset_max * theta_E: always a visible arc or ring
    offset = cfg.source_offset_max * math.sqrt(rng.uniform())
    phi = rng.uniform(0.0, 2 * np.pi)
    return dict(
        theta_e=theta_e,
        lens_q=_uniform(rng, cfg.lens_q),
        lens_pa=float(host["host_pa"] + np.deg2rad(cfg.lens_pa_scatter) * rng.standard_normal()) % np.pi,
        shear_gamma=float(rng.uniform(0.0, cfg.shear_max)),
        shear_pa=float(rng.uniform(0.0, np.pi)),
        source_mag=_uniform(rng, cfg.source_mag),
        source_n=_uniform(rng, cfg.source_n),
        source_reff=_uniform(rng, cfg.source_reff),
        source_q=_uniform(rng, cfg.source_q),
        source_pa=float(rng.uniform(0.0, np.pi)),
        source_g_r=_uniform(rng, cfg.source_g_r),
        source_r_z=_uniform(rng, cfg.source_r_z),
        source_offset=offset,
        source_x=host["host_x"] + offset * theta_e * math.cos(phi),
        source_y=host["host_y"] + offset * theta_e * math.sin(phi),
    )


def _sersic_kwargs(q: float, pa: float, reff: float, n: float, x: float, y: float) -> dict[str, float]:
    from lenstronomy.Util.param_util import phi_q2_ellipticity

    e1, e2 = phi_q2_ellipticity(pa, q)
    return dict(amp=1.0, R_sersic=reff, n_sersic=n, e1=float(e1), e2=float(e2), center_x=x, center_y=y)


def _host_unit_map(cfg: LensSimConfig, host: Mapping[str, Any]) -> np.ndarray:
    """Host light per pixel for a total flux of 1 (the stamp holds slightly less for extended hosts)."""
    _, light = _models()
    size, ss, scale = cfg.stamp_size, cfg.supersample, cfg.pixel_scale
    kw = [_sersic_kwargs(host["host_q"], host["host_pa"], host["host_reff"], host["host_n"], host["host_x"], host["host_y"])]
    x, y = _grid(size, scale, ss, -(size - 1) / 2)
    image = _bin_pixels(light.surface_brightness(x, y, kw), size, ss, scale)
    # the cusp of a high-n Sersic is badly sampled at `supersample`: redo the central pixels finely
    m, s2 = cfg.host_core_size, cfg.host_core_supersample
    start = (size - m) // 2
    xc, yc = _grid(m, scale, s2, start - (size - 1) / 2)
    image[start : start + m, start : start + m] = _bin_pixels(light.surface_brightness(xc, yc, kw), m, s2, scale)
    return image / light.total_flux(kw, norm=True)[0]


def _arc_unit_map(cfg: LensSimConfig, host: Mapping[str, Any], lens: Mapping[str, Any]) -> np.ndarray:
    """Lensed source light per pixel for an unlensed source flux of 1 (its sum is the magnification)."""
    from lenstronomy.Util.param_util import phi_q2_ellipticity, shear_polar2cartesian

    lens_model, light = _models()
    size, ss, scale = cfg.stamp_size, cfg.supersample, cfg.pixel_scale
    e1, e2 = phi_q2_ellipticity(lens["lens_pa"], lens["lens_q"])
    g1, g2 = shear_polar2cartesian(lens["shear_pa"], lens["shear_gamma"])
    kw_lens = [
        dict(theta_E=lens["theta_e"], e1=float(e1), e2=float(e2), center_x=host["host_x"], center_y=host["host_y"]),
        dict(gamma1=float(g1), gamma2=float(g2), ra_0=host["host_x"], dec_0=host["host_y"]),
    ]
    src = {key: lens[f"source_{key}"] for key in ("q", "pa", "reff", "n", "x", "y")}
    kw_src = [_sersic_kwargs(src["q"], src["pa"], src["reff"], src["n"], src["x"], src["y"])]
    x, y = _grid(size, scale, ss, -(size - 1) / 2)
    beta_x, beta_y = lens_model.ray_shooting(x, y, kw_lens)  # once per sample, reused by every band
    image = _bin_pixels(light.surface_brightness(beta_x, beta_y, kw_src), size, ss, scale)
    return image / light.total_flux(kw_src, norm=True)[0]


def _convolve(unit_map: np.ndarray, kernels: np.ndarray, band_flux: np.ndarray) -> np.ndarray:
    """(H, W) unit-flux map -> (n_bands, H, W): each band scaled by its flux and blurred by its PSF."""
    blurred = fftconvolve(unit_map[None], kernels, mode="same", axes=(1, 2))
    return blurred * band_flux[:, None, None]


def _add_noise(model: np.ndarray, z: np.ndarray, sky: np.ndarray, gain: float) -> tuple[np.ndarray, np.ndarray]:
    """Noisy image from a standard-normal field `z`; also returns the per-pixel variance."""
    var = np.broadcast_to(sky[:, None, None] ** 2, model.shape).copy()
    if gain > 0:
        var += np.clip(model, 0.0, None) / gain
    return (model + z * np.sqrt(var)).astype(np.float32), var


# --- one unit (a sample, or a pair in paired mode) ---------------------------------------------------


def _simulate_unit(cfg: LensSimConfig, split_idx: int, unit: int) -> list[tuple[int, np.ndarray, dict[str, Any]]]:
    """Simulate unit `unit` of split `split_idx`.

    Returns:
        (position within the split, image (n_bands, H, W) float32, metadata row) for each of its samples.
    """
    streams = [np.random.default_rng([cfg.seed, split_idx, unit, s]) for s in range(4)]
    host_rng, lens_rng, noise_rng, noise_rng_neg = streams
    paired = cfg.mode == "paired"
    # unpaired: positives at even positions within the split; paired: unit p holds positions 2p, 2p + 1
    labels = [1, 0] if paired else [1 - unit % 2]
    matched = cfg.negative_hosts == "matched"  # negatives drawn from the lens hosts' population
    population = "paired_host" if paired else ("lens_host" if labels[0] or matched else "nonlens_host")
    host = _draw_host(host_rng, cfg, population)

    kernels = _psf_kernels(
        tuple(cfg.psf_fwhm_bins[host["psf_bin"]] * s for s in cfg.psf_band_scale),
        cfg.pixel_scale, cfg.psf_type, cfg.moffat_beta, cfg.stamp_size // 2,
    )
    sky = np.asarray(cfg.depth_sky_sigma[host["depth_bin"]])
    host_fluxes = _flux(_band_mags(host["host_mag"], host["host_g_r"], host["host_r_z"], cfg.bands))
    host_model = _convolve(_host_unit_map(cfg, host), kernels, host_fluxes)
    shape = host_model.shape
    z_pos = noise_rng.standard_normal(shape)
    z_neg = z_pos if (paired and cfg.paired_shared_noise) else noise_rng_neg.standard_normal(shape)
    r_band = cfg.bands.index("r") if "r" in cfg.bands else 0

    common = dict(host, psf_fwhm=cfg.psf_fwhm_bins[host["psf_bin"]], sky_sigma=float(sky[r_band]),
                  host_flux=float(_flux(host["host_mag"])))
    out = []
    for pos, label in enumerate(labels):
        position = 2 * unit + pos if paired else unit
        row = dict(common, label=label, theta_e=np.nan)
        if label:
            for _ in range(cfg.arc_snr_max_draws):  # one draw unless the detectability cut rejects it
                lens = _draw_lens(lens_rng, cfg, host)
                unit_arc = _arc_unit_map(cfg, host, lens)
                src_fluxes = _flux(_band_mags(lens["source_mag"], lens["source_g_r"], lens["source_r_z"], cfg.bands))
                arc_model = _convolve(unit_arc, kernels, src_fluxes)
                image, var = _add_noise(host_model + arc_model, z_pos, sky, cfg.gain)
                arc_snr = float(np.sqrt(np.sum(arc_model**2 / var)))
                if arc_snr >= cfg.arc_snr_min:
                    break
            else:
                raise RuntimeError(f"data.simulation.arc_snr_min = {cfg.arc_snr_min}: no arc reached it in "
                                   f"arc_snr_max_draws = {cfg.arc_snr_max_draws} draws (split {split_idx}, unit {unit})")
            if cfg.arcless_positives:  # the same cutout minus its arc: same host, noise field and variance
                image = (host_model + z_pos * np.sqrt(var)).astype(np.float32)
            magnification = float(unit_arc.sum())
            row.update(lens, source_flux=float(_flux(lens["source_mag"])), magnification=magnification,
                       arc_flux=float(_flux(lens["source_mag"])) * magnification, arc_snr=arc_snr)
        else:
            image, _ = _add_noise(host_model, z_neg if paired else z_pos, sky, cfg.gain)
        out.append((position, image, row))
    return out


def host_table(cfg: LensSimConfig | Mapping[str, Any] | None, split: str) -> pd.DataFrame:
    """Label and host parameters of every sample of `split`, drawn as the simulator draws them, without rendering.

    The host of a sample comes from its own random stream alone, so these are exactly the manifest's host
    columns (checked in tests/lens/test_matched_design.py), at a tiny fraction of the cost.

    Returns:
        One row per sample in split order: ``label``, ``psf_bin``, ``depth_bin`` and the ``host_*`` columns.
    """
    cfg = as_config(cfg)
    split_idx = SPLITS.index(split)
    paired = cfg.mode == "paired"
    matched = cfg.negative_hosts == "matched"
    rows = []
    for unit in range(getattr(cfg, f"n_{split}") // (2 if paired else 1)):
        host_rng = np.random.default_rng([cfg.seed, split_idx, unit, 0])  # stream 0 of _simulate_unit
        labels = [1, 0] if paired else [1 - unit % 2]
        population = "paired_host" if paired else ("lens_host" if labels[0] or matched else "nonlens_host")
        host = _draw_host(host_rng, cfg, population)
        rows += [dict(label=label, **host) for label in labels]
    return pd.DataFrame(rows)


def _split_layout(cfg: LensSimConfig) -> list[tuple[int, str, int, int]]:
    """(split index, name, first image row, number of samples) of every split."""
    layout, start = [], 0
    for i, split in enumerate(SPLITS):
        n = getattr(cfg, f"n_{split}")
        layout.append((i, split, start, n))
        start += n
    return layout


def _simulate_chunk(cfg_dict: dict[str, Any], images_path: str, split_idx: int, split: str, first_row: int,
                    units: list[int]) -> list[dict[str, Any]]:
    """Worker task: simulate `units` of one split, write their images into the memmap, return their rows."""
    cfg = LensSimConfig(**cfg_dict)
    images = np.load(images_path, mmap_mode="r+")
    paired = cfg.mode == "paired"
    rows = []
    for unit in units:
        for position, image, meta in _simulate_unit(cfg, split_idx, unit):
            index = first_row + position
            images[index] = image
            # pairs get one id each; in unpaired mode every sample is its own group
            pair_id = (first_row // 2 + unit) if paired else index
            rows.append(dict(sample_id=f"lens-{cfg.design}-{split}-{position:06d}", split=split, image_index=index,
                             pair_id=pair_id, **meta))
    images.flush()
    del images
    return rows


_FIRST_COLUMNS = ["sample_id", "split", "label", "theta_e", "psf_bin", "depth_bin", "pair_id", "image_index"]
_META_COLUMNS = [
    "psf_fwhm", "sky_sigma", "host_mag", "host_flux", "host_n", "host_reff", "host_q", "host_pa", "host_g_r",
    "host_r_z", "host_x", "host_y", "lens_q", "lens_pa", "shear_gamma", "shear_pa", "source_mag", "source_flux",
    "source_n", "source_reff", "source_q", "source_pa", "source_g_r", "source_r_z", "source_x", "source_y",
    "source_offset", "magnification", "arc_flux", "arc_snr",
]


def simulate_lens_dataset(out_dir: str | Path, cfg: LensSimConfig | Mapping[str, Any] | None = None,
                          n_workers: int = 2, progress: bool = True) -> Path:
    """Simulate the whole data set into `out_dir` (not cached; see ensure_lens_dataset).

    Args:
        out_dir: Directory to write ``manifest.parquet``, ``images.npy`` and ``config.json`` into.
        cfg: The simulation config (a LensSimConfig or a mapping of its fields).
        n_workers: Processes to spread the work over (<= 1: in this process). Results do not depend on it.
        progress: Show a tqdm progress bar.

    Returns:
        Path of the manifest.
    """
    cfg = as_config(cfg)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    layout = _split_layout(cfg)
    n_total = sum(n for *_, n in layout)
    images_path = out_dir / IMAGES_NAME
    # allocate on disk; workers fill their rows through their own memmaps, so RAM holds a chunk at a time
    images = np.lib.format.open_memmap(images_path, mode="w+", dtype=np.float32,
                                       shape=(n_total, len(cfg.bands), cfg.stamp_size, cfg.stamp_size))
    del images

    per_unit = 2 if cfg.mode == "paired" else 1
    n_units = n_total // per_unit
    chunk = int(np.clip(n_units // (8 * max(n_workers, 1)), 8, 128))
    cfg_dict = dataclasses.asdict(cfg)
    tasks = []
    for split_idx, split, first_row, n in layout:
        units = list(range(n // per_unit))
        tasks += [(cfg_dict, str(images_path), split_idx, split, first_row, units[i : i + chunk])
                  for i in range(0, len(units), chunk)]

    rows: list[dict[str, Any]] = []
    bar = tqdm(total=n_total, desc=f"simulate lenses ({cfg.design})", unit="img", disable=not progress)
    with bar:
        if n_workers <= 1:
            for task in tasks:
                rows += _simulate_chunk(*task)
                bar.update(len(task[-1]) * per_unit)
        else:
            # fork where there is one (as torch's DataLoader does): it starts at once and works from notebooks
            # and unguarded scripts; the workers only run numpy/scipy/lenstronomy, never CUDA
            ctx = multiprocessing.get_context("fork" if "fork" in multiprocessing.get_all_start_methods() else "spawn")
            with ProcessPoolExecutor(max_workers=n_workers, mp_context=ctx) as pool:
                futures = {pool.submit(_simulate_chunk, *task): len(task[-1]) * per_unit for task in tasks}
                for future in as_completed(futures):
                    rows += future.result()
                    bar.update(futures[future])

    frame = pd.DataFrame(rows).sort_values("image_index").reset_index(drop=True)
    frame = frame.reindex(columns=_FIRST_COLUMNS + _META_COLUMNS)
    for col in ("label", "psf_bin", "depth_bin", "pair_id", "image_index"):
        frame[col] = frame[col].astype(np.int64)
    manifest = out_dir / MANIFEST_NAME
    frame.to_parquet(manifest, index=False)
    (out_dir / "config.json").write_text(json.dumps({"sim_version": SIM_VERSION, **cfg_dict}, indent=1))
    return manifest


# --- cache ----------------------------------------------------------------------------------------------


def _is_complete(path: Path) -> bool:
    return (path / COMPLETE_NAME).is_file() and (path / MANIFEST_NAME).is_file() and (path / IMAGES_NAME).is_file()


def lens_dataset_dir(cache_root: str | Path, cfg: LensSimConfig | Mapping[str, Any] | None) -> Path:
    """The cache directory ``cache_root / lens_{design}_{hash}`` of a config (design: paired, unpaired, matched)."""
    cfg = as_config(cfg)
    return Path(cache_root) / f"lens_{cfg.design}_{config_hash(cfg)}"


def ensure_lens_dataset(cache_root: str | Path, cfg: LensSimConfig | Mapping[str, Any] | None = None,
                        n_workers: int = 2, progress: bool = True) -> Path:
    """Return the manifest of the simulated data set for `cfg`, generating it only if it is not cached.

    Built once by rigor.cache.build_once: into a private temporary directory that gets a ``COMPLETE``
    marker last and is then renamed into place, so a crashed run never leaves a directory that looks
    finished; concurrent callers (other processes or threads) wait on a lock file and then reuse the
    winner's result.

    Args:
        cache_root: Directory holding the cached data sets.
        cfg: A LensSimConfig or a mapping of its fields (e.g. Hydra's ``data.simulation``).
        n_workers: Processes used if the data set has to be generated.
        progress: Show a progress bar while generating.

    Returns:
        Path of ``manifest.parquet`` (``images.npy`` lies beside it).
    """
    cfg = as_config(cfg)
    # looked up at call time, so that tests can watch the simulator
    out = build_once(lens_dataset_dir(cache_root, cfg),
                     lambda tmp: simulate_lens_dataset(tmp, cfg, n_workers=n_workers, progress=progress),
                     is_complete=_is_complete, marker=COMPLETE_NAME,
                     marker_text=f"lens simulation v{SIM_VERSION}, {config_hash(cfg)}\n")
    return out / MANIFEST_NAME
