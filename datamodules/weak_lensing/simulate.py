"""Weak-lensing convergence maps in the FAIR-Universe challenge format (seed 001), from pyccl.

What is simulated (every number comes from ``WLSimConfig``, i.e. from conf/data/weak_lensing.yaml):

- Cosmologies: the fiducial (Omega_m, S_8) = (0.3, 0.8) plus a scrambled Sobol design over Omega_m in
  [0.09, 0.62] and S_8 in [0.68, 0.955], denser near the fiducial as the kit's 101: ``design: pulled``
  bunches one Sobol design towards it, ``design: core`` puts half the points in fiducial +- 0.05.
- Per map (one realisation of the nuisance parameters): baryonic feedback log T_AGN ~ U[7.2, 8.5] through
  pyccl's own baryon model (Schneider et al. 2015 BCM; log10 M_c is a linear function of log T_AGN, the
  mapping is a config choice, not a fit) and a photo-z shift dz ~ N(0, 0.022) of a Smail-like n(z).
- C_ell: pyccl with Eisenstein-Hu + halofit (no camb needed; ``transfer_function: boltzmann_camb`` is the
  option when camb is installed), Omega_b, h, n_s fixed, sigma_8 = S_8 / sqrt(Omega_m / 0.3).
- Fields: Gaussian or shifted-lognormal flat-sky fields by FFT on a periodic box ``pad`` times the footprint
  (the lognormal shift fixed, or ``shift_model: empty_beam``: minus the empty-beam convergence of the map's
  cosmology and n(z), so the non-Gaussianity depends on Omega_m),
  with the square-pixel window, cut to the challenge geometry (1424 x 176 pixels of 2 arcmin, divided by
  ``downsample``), times a survey-like mask (~53% valid: ragged edges and star holes).
- Splits along realisations: train and val maps are stored noiseless (shape noise is added on the fly,
  as in the kit), test maps are stored with their noise, sigma_pix = 0.4 / sqrt(2 n_g p^2) (n_g = 30
  arcmin^-2, p the pixel side in arcmin).

Output, the challenge's own layout plus a manifest: ``manifest.parquet`` (sample_id, split, cosmology_id,
realisation, omega_m, s8, log_t_agn, dz, noisy, pixel_row), ``pixels.npy`` (N, n_valid) float32 memmap
of the valid pixels of each map (the kit ships its maps flattened over the mask the same way),
``mask.npy`` (H, W) bool and ``geometry.json``. ``ensure_wl_dataset`` caches a data set under
``cache_root/weak_lensing_<hash of the config>`` and marks a finished one with ``COMPLETE``.
"""

from __future__ import annotations

import dataclasses
import json
import multiprocessing
import warnings
from collections.abc import Mapping
from concurrent.futures import ProcessPoolExecutor, as_completed
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from tqdm.auto import tqdm

from analysis.weak_lensing.power_spectrum import ARCMIN, ell_grid, pixel_window
from datamodules.simulation import SimConfig
from rigor.cache import build_once

SIM_VERSION = 1
MANIFEST_NAME = "manifest.parquet"
PIXELS_NAME = "pixels.npy"
MASK_NAME = "mask.npy"
GEOMETRY_NAME = "geometry.json"
COMPLETE_NAME = "COMPLETE"
# fields added after the first data sets were cached, with the values those sets had: left out of the
# hash at these values, so the original (Gaussian) set keeps its cache directory
ADDED_FIELDS: dict[str, Any] = {"design": "pulled", "design_core_fraction": 0.5, "design_core_halfwidth": (0.05, 0.05),
                                "shift_model": "fixed"}
C_KM_S = 299792.458  # speed of light, km/s


@dataclasses.dataclass(frozen=True)
class WLSimConfig(SimConfig):
    """Every number of the simulation (defaults: the embedded CPU-sized data set).

    Values are coerced to the declared types (SimConfig): YAML lists become tuples, ints given for floats
    become floats, so equal configs hash equally; a bad value fails naming ``data.simulation.<field>``.
    """

    # design
    n_cosmologies: int = 25
    n_train: int = 40  # realisations per cosmology in each split (splits along realisations)
    n_val: int = 16
    n_test: int = 8
    omega_m_range: tuple[float, float] = (0.09, 0.62)
    s8_range: tuple[float, float] = (0.68, 0.955)
    fiducial: tuple[float, float] = (0.3, 0.8)
    design_power: float = 1.5  # > 1 pulls the design towards the fiducial ("pulled" design only)
    # "pulled": one Sobol design bunched towards the fiducial by |v|^design_power (the original set);
    # "core": a Sobol design of design_core_fraction of the non-fiducial points in the box fiducial +-
    # design_core_halfwidth, the rest a Sobol design over the full ranges (the kit's: denser near the fiducial)
    design: str = "pulled"
    design_core_fraction: float = 0.5
    design_core_halfwidth: tuple[float, float] = (0.05, 0.05)
    log_t_agn_range: tuple[float, float] = (7.2, 8.5)
    dz_std: float = 0.022
    # geometry (the challenge's, then divided by `downsample`)
    height: int = 1424
    width: int = 176
    pixel_arcmin: float = 2.0
    downsample: int = 4
    pad: int = 2  # periodic box = pad x the footprint on each side: modes longer than the footprint exist
    valid_fraction: float = 0.53
    mask_holes_per_sq_deg: float = 1.5
    mask_hole_radius_arcmin: tuple[float, float] = (4.0, 40.0)
    # cosmology
    omega_b: float = 0.049
    h: float = 0.677
    n_s: float = 0.965
    transfer_function: str = "eisenstein_hu"
    matter_power_spectrum: str = "halofit"
    nz_z0: float = 0.5  # Smail n(z) ~ z^alpha exp(-(z / z0)^beta)
    nz_alpha: float = 2.0
    nz_beta: float = 1.5
    nz_z_max: float = 3.0
    nz_points: int = 300
    baryon_log_t_agn_pivot: float = 7.8
    baryon_log10_mc_pivot: float = 13.8
    baryon_log10_mc_slope: float = 1.0  # dex of M_c per dex of T_AGN
    n_ell: int = 48  # C_ell nodes, log-spaced; log-log interpolated to the FFT grid
    # C_ell of each map: exact per map ([0, 0]), or quadratic interpolation of log C_ell over a
    # (log T_AGN, dz) grid of this many points per axis (dz over +-3 sigma), computed once per cosmology
    nuisance_grid: tuple[int, int] = (3, 3)
    # fields and noise
    field: str = "gaussian"  # gaussian | lognormal
    lognormal_shift: float = 0.02  # lambda of kappa = lambda (exp(g - s^2/2) - 1) when shift_model is "fixed"
    # "fixed": lambda = lognormal_shift for every cosmology; "empty_beam": lambda = -kappa_empty of the map's
    # cosmology and (shifted) n(z) (Taruya et al. 2002; Hilbert, Hartlap & Schneider 2011), so the
    # non-Gaussianity depends on Omega_m as in nature
    shift_model: str = "fixed"
    n_galaxies: float = 30.0  # per arcmin^2
    shape_noise: float = 0.4
    seed: int = 0

    hash_version = ("v", SIM_VERSION)  # a class attribute, not a field

    def content_hash(self) -> str:
        """The hash of every field, leaving out added fields at their original values (old caches keep their names)."""
        from rigor.cache import content_hash

        key, version = self.hash_version
        fields = {k: v for k, v in self.to_dict().items() if k not in ADDED_FIELDS or v != ADDED_FIELDS[k]}
        return content_hash({key: version, **fields}, length=12)

    def _validate(self) -> None:
        bad = self._bad
        if self.height % self.downsample or self.width % self.downsample:
            raise bad("downsample", f"{self.downsample} must divide the map shape {self.height} x {self.width}")
        if self.field not in ("gaussian", "lognormal"):
            raise bad("field", f"expected 'gaussian' or 'lognormal', got {self.field!r}")
        if self.shift_model not in ("fixed", "empty_beam"):
            raise bad("shift_model", f"expected 'fixed' or 'empty_beam', got {self.shift_model!r}")
        if self.design not in ("pulled", "core"):
            raise bad("design", f"expected 'pulled' or 'core', got {self.design!r}")
        if not 0 <= self.design_core_fraction <= 1:
            raise bad("design_core_fraction", f"must be in [0, 1], got {self.design_core_fraction}")
        if self.n_cosmologies < 1 or min(self.n_train, self.n_val, self.n_test) < 0:
            raise bad("n_cosmologies", "need at least one cosmology and non-negative split sizes")
        if not 0 < self.valid_fraction <= 1:
            raise bad("valid_fraction", f"must be in (0, 1], got {self.valid_fraction}")
        for key in ("omega_m_range", "s8_range"):
            lo, hi = getattr(self, key)
            if not lo < hi:
                raise bad(key, f"expected low < high, got {(lo, hi)}")
        if self.omega_m_range[0] <= self.omega_b:
            raise bad("omega_m_range", f"Omega_m must exceed omega_b = {self.omega_b}")

    @property
    def n_realisations(self) -> int:
        return self.n_train + self.n_val + self.n_test

    @property
    def shape(self) -> tuple[int, int]:
        """Map shape after downsampling."""
        return self.height // self.downsample, self.width // self.downsample

    @property
    def map_pixel_arcmin(self) -> float:
        """Pixel side after downsampling."""
        return self.pixel_arcmin * self.downsample

    @property
    def noise_sigma(self) -> float:
        """Shape-noise std per pixel, the kit's 0.4 / sqrt(2 n_g p^2)."""
        return noise_sigma(self.shape_noise, self.n_galaxies, self.map_pixel_arcmin)


def noise_sigma(shape_noise: float, n_galaxies: float, pixel_arcmin: float) -> float:
    """Per-pixel shape-noise std of the kit: shape_noise / sqrt(2 n_g p^2)."""
    return float(shape_noise / np.sqrt(2.0 * n_galaxies * pixel_arcmin**2))


def as_config(cfg: WLSimConfig | Mapping[str, Any] | None) -> WLSimConfig:
    """A WLSimConfig from a mapping (e.g. Hydra's ``data.simulation``), itself or None, naming unknown keys."""
    return WLSimConfig.from_mapping(cfg)


def config_hash(cfg: WLSimConfig) -> str:
    """Short, stable hash of the full config and the simulator version."""
    return cfg.content_hash()


# --------------------------------------------------------------------------------------------------
# design, mask, C_ell


def _sobol(n: int, seed: int) -> np.ndarray:
    from scipy.stats import qmc

    with warnings.catch_warnings():  # balance properties need 2^m points; any n is fine for a design
        warnings.filterwarnings("ignore", message=".*balance properties.*")
        return qmc.Sobol(2, scramble=True, seed=seed).random(n)


def cosmology_design(cfg: WLSimConfig) -> np.ndarray:
    """(n_cosmologies, 2) (Omega_m, S_8): the fiducial first, then the config's design (see ``design``).

    "core": round(design_core_fraction (n - 1)) scrambled Sobol points in fiducial +- design_core_halfwidth
    (clipped to the ranges), then the rest as a scrambled Sobol design over the full ranges.
    """
    fid = np.array(cfg.fiducial)
    lo = np.array([cfg.omega_m_range[0], cfg.s8_range[0]])
    hi = np.array([cfg.omega_m_range[1], cfg.s8_range[1]])
    n = cfg.n_cosmologies - 1
    if n <= 0:
        return fid[None]
    if cfg.design == "core":
        n_core = int(round(cfg.design_core_fraction * n))
        half = np.array(cfg.design_core_halfwidth)
        c_lo, c_hi = np.maximum(fid - half, lo), np.minimum(fid + half, hi)
        core = c_lo + _sobol(n_core, cfg.seed) * (c_hi - c_lo) if n_core else np.empty((0, 2))
        wide = lo + _sobol(n - n_core, cfg.seed + 1) * (hi - lo) if n - n_core else np.empty((0, 2))
        return np.vstack([fid, core, wide])
    u = _sobol(n, cfg.seed)
    v = 2 * u - 1  # [-1, 1] around the fiducial; |v|^power bunches points near 0
    pulled = np.sign(v) * np.abs(v) ** cfg.design_power
    points = np.where(pulled < 0, fid + pulled * (fid - lo), fid + pulled * (hi - fid))
    return np.vstack([fid, points])


def survey_mask(cfg: WLSimConfig) -> np.ndarray:
    """Survey-like mask at full resolution (ragged edges, round star holes), block-reduced to the map shape.

    Valid pixels are about ``valid_fraction`` of the map; the result is a deterministic function of the
    config's seed and geometry.
    """
    rng = np.random.default_rng([cfg.seed, 7])
    h, w = cfg.height, cfg.width
    rows = np.arange(h)[:, None]
    cols = np.arange(w)[None, :]
    # ragged footprint: a smooth random boundary on each long edge
    t = np.linspace(0, 1, h)
    def edge() -> np.ndarray:
        k = np.arange(1, 7)
        amp = rng.normal(0, 1, 6) / k
        phase = rng.uniform(0, 2 * np.pi, 6)
        return np.sum(amp[:, None] * np.sin(2 * np.pi * k[:, None] * t[None] + phase[:, None]), axis=0)

    left, right = edge(), edge()
    margin = 0.12 * w
    mask = (cols >= margin * (1 + 0.5 * left[:, None])) & (cols < w - margin * (1 + 0.5 * right[:, None]))
    # star holes until the valid fraction is reached
    yy, xx = np.mgrid[0:h, 0:w]
    area_deg2 = h * w * (cfg.pixel_arcmin / 60) ** 2
    n_max = int(cfg.mask_holes_per_sq_deg * area_deg2 * 20) + 1
    r_lo, r_hi = cfg.mask_hole_radius_arcmin
    for _ in range(n_max):
        if mask.mean() <= cfg.valid_fraction:
            break
        r = np.exp(rng.uniform(np.log(r_lo), np.log(r_hi))) / cfg.pixel_arcmin
        cy, cx = rng.uniform(0, h), rng.uniform(0, w)
        y0, y1 = int(max(cy - r - 1, 0)), int(min(cy + r + 2, h))
        x0, x1 = int(max(cx - r - 1, 0)), int(min(cx + r + 2, w))
        mask[y0:y1, x0:x1] &= (yy[y0:y1, x0:x1] - cy) ** 2 + (xx[y0:y1, x0:x1] - cx) ** 2 > r * r
    del rows
    ds = cfg.downsample
    if ds > 1:
        mask = mask.reshape(h // ds, ds, w // ds, ds).mean(axis=(1, 3)) >= 0.5
    return mask.astype(bool)


def _nz(cfg: WLSimConfig) -> tuple[np.ndarray, np.ndarray]:
    z = np.linspace(1e-3, cfg.nz_z_max, cfg.nz_points)
    return z, z**cfg.nz_alpha * np.exp(-((z / cfg.nz_z0) ** cfg.nz_beta))


def make_cosmology(cfg: WLSimConfig, omega_m: float, s8: float) -> Any:
    """A pyccl Cosmology for (Omega_m, S_8) with the config's fixed parameters."""
    import pyccl as ccl

    return ccl.Cosmology(
        Omega_c=omega_m - cfg.omega_b, Omega_b=cfg.omega_b, h=cfg.h, n_s=cfg.n_s,
        sigma8=s8 / np.sqrt(omega_m / 0.3),
        transfer_function=cfg.transfer_function, matter_power_spectrum=cfg.matter_power_spectrum,
    )


def ell_nodes(cfg: WLSimConfig) -> np.ndarray:
    """Log-spaced ell nodes covering every mode of the padded FFT box."""
    h, w = cfg.shape
    p = cfg.map_pixel_arcmin * ARCMIN
    ell_min = 2 * np.pi / (cfg.pad * max(h, w) * p) * 0.5
    ell_max = np.pi / p * np.sqrt(2) * 1.01
    return np.geomspace(ell_min, ell_max, cfg.n_ell)


def empty_beam_convergence(omega_m: float, h: float, z: np.ndarray, chi: np.ndarray, a: np.ndarray,
                           nz: np.ndarray) -> float:
    """Empty-beam convergence averaged over the sources, the minimum convergence a map can reach.

    kappa_empty = -(3/2) Omega_m (H0/c)^2 int dchi chi q(chi) / a(chi), with the lensing efficiency
    q(chi) = int dz_s n(z_s) (chi_s - chi) / chi_s over sources behind chi and n normalised to one.
    It sets the shift of a lognormal convergence field (Taruya et al. 2002, ApJ 571, 638; Hilbert, Hartlap &
    Schneider 2011, A&A 536, A85, sect. 2.3): kappa >= kappa_empty.

    Args:
        omega_m: Matter density.
        h: H0 / (100 km/s/Mpc).
        z: Redshift grid (increasing), shared by chi, a and nz.
        chi: Comoving distance in Mpc at z.
        a: Scale factor at z.
        nz: Source redshift distribution at z (any normalisation).

    Returns:
        kappa_empty (negative).
    """
    z, chi, a, nz = (np.asarray(v, dtype=np.float64) for v in (z, chi, a, nz))
    p = nz / np.trapezoid(nz, z)
    with np.errstate(divide="ignore", invalid="ignore"):
        ratio = np.where(chi[None, :] > 0, 1.0 - chi[:, None] / chi[None, :], 0.0)  # [lens i, source j]
    q = np.trapezoid(p[None, :] * np.clip(ratio, 0.0, None), z, axis=1)
    h0_c = 100.0 * h / C_KM_S  # 1 / Mpc
    return float(-1.5 * omega_m * h0_c**2 * np.trapezoid(chi * q / a, chi))


def lognormal_shift(cfg: WLSimConfig, cosmo: Any, omega_m: float, dz: float) -> float:
    """The lognormal shift lambda of one map: ``lognormal_shift`` or -kappa_empty of its cosmology and n(z + dz)."""
    if cfg.shift_model == "fixed":
        return cfg.lognormal_shift
    import pyccl as ccl

    z, nz = _nz(cfg)
    zs = z + dz
    keep = zs > 0
    a = 1.0 / (1.0 + zs[keep])
    return -empty_beam_convergence(omega_m, cfg.h, zs[keep], ccl.comoving_radial_distance(cosmo, a), a, nz[keep])


def angular_cl(cfg: WLSimConfig, cosmo: Any, log_t_agn: float | None, dz: float, ell: np.ndarray) -> np.ndarray:
    """Convergence C_ell of one map: baryons via pyccl's BCM, n(z) shifted by dz (None: no baryons)."""
    import pyccl as ccl

    z, nz = _nz(cfg)
    zs = z + dz
    keep = zs > 0
    tracer = ccl.WeakLensingTracer(cosmo, dndz=(zs[keep], nz[keep]))
    pk = None
    if log_t_agn is not None:
        log10_mc = cfg.baryon_log10_mc_pivot + cfg.baryon_log10_mc_slope * (log_t_agn - cfg.baryon_log_t_agn_pivot)
        bcm = ccl.baryons.BaryonsSchneider15(log10Mc=log10_mc)
        pk = bcm.include_baryonic_effects(cosmo, cosmo.get_nonlin_power())
    return ccl.angular_cl(cosmo, tracer, tracer, ell, p_of_k_a=pk)


class NuisanceCl:
    """C_ell of one cosmology as a function of (log T_AGN, dz): exact, or Lagrange-interpolated on a grid.

    Interpolating log C_ell (polynomial of degree n-1 per axis through an n-point grid) costs
    prod(nuisance_grid) pyccl calls per cosmology instead of one per map.
    """

    def __init__(self, cfg: WLSimConfig, cosmo: Any, ell: np.ndarray) -> None:
        self.cfg, self.cosmo, self.ell = cfg, cosmo, ell
        n_t, n_z = cfg.nuisance_grid
        self.exact = n_t <= 0 or n_z <= 0
        if self.exact:
            return
        self.t_nodes = np.linspace(*cfg.log_t_agn_range, n_t) if n_t > 1 else np.array([np.mean(cfg.log_t_agn_range)])
        self.z_nodes = np.linspace(-3 * cfg.dz_std, 3 * cfg.dz_std, n_z) if n_z > 1 else np.array([0.0])
        self.log_cl = np.array([[np.log(angular_cl(cfg, cosmo, t, z, ell)) for z in self.z_nodes] for t in self.t_nodes])

    @staticmethod
    def _lagrange(nodes: np.ndarray, x: float) -> np.ndarray:
        w = np.ones(len(nodes))
        for j in range(len(nodes)):
            for m in range(len(nodes)):
                if m != j:
                    w[j] *= (x - nodes[m]) / (nodes[j] - nodes[m])
        return w

    def __call__(self, log_t_agn: float, dz: float) -> np.ndarray:
        if self.exact:
            return angular_cl(self.cfg, self.cosmo, log_t_agn, dz, self.ell)
        wt, wz = self._lagrange(self.t_nodes, log_t_agn), self._lagrange(self.z_nodes, dz)
        return np.exp(np.einsum("i,j,ijl->l", wt, wz, self.log_cl))


def interpolate_cl(ell_nodes_: np.ndarray, cl: np.ndarray, ell: np.ndarray) -> np.ndarray:
    """C(ell) at any ell by log-log interpolation of the nodes (0 at ell = 0)."""
    out = np.zeros_like(ell, dtype=np.float64)
    nz = ell > 0
    out[nz] = np.exp(np.interp(np.log(ell[nz]), np.log(ell_nodes_), np.log(cl)))
    return out


# --------------------------------------------------------------------------------------------------
# fields


def field_spectrum(cl_fn, box: tuple[int, int], pixel_arcmin: float) -> np.ndarray:
    """Per-mode variance S_k = C(ell_k) W(ell_k)^2 / dOmega on the rfft2 grid of a periodic box."""
    lx, ly = ell_grid(box, pixel_arcmin)
    ell = np.hypot(lx, ly)
    s = np.zeros_like(ell)
    nz = ell > 0  # no mean mode: a convergence map averages to zero
    s[nz] = cl_fn(ell[nz])
    return s * pixel_window(box, pixel_arcmin) ** 2 / (pixel_arcmin * ARCMIN) ** 2


def gaussian_field(spectrum: np.ndarray, box: tuple[int, int], rng: np.random.Generator) -> np.ndarray:
    """A real Gaussian field on the box whose DFT has E|F_k|^2 = N S_k (white noise coloured by sqrt(S))."""
    white = rng.standard_normal(box)
    return np.fft.irfft2(np.fft.rfft2(white) * np.sqrt(spectrum), s=box)


def lognormal_field(spectrum: np.ndarray, box: tuple[int, int], rng: np.random.Generator, shift: float) -> np.ndarray:
    """A shifted lognormal field with the target two-point function (up to clipped negative Gaussian power).

    kappa = shift (exp(g - s^2 / 2) - 1) has correlation xi_k = shift^2 (exp(xi_g) - 1), so the Gaussian
    field g gets xi_g = log(1 + xi_k / shift^2).
    """
    xi = np.fft.irfft2(spectrum, s=box)  # correlation per pixel lag; xi[0, 0] = pixel variance
    xi_g = np.log1p(xi / shift**2)
    s_g = np.maximum(np.fft.rfft2(xi_g).real, 0.0)
    g = gaussian_field(s_g, box, rng)
    var_g = float(np.fft.irfft2(s_g, s=box)[0, 0])
    return shift * (np.exp(g - var_g / 2) - 1.0)


def simulate_map(cfg: WLSimConfig, cl_nodes: np.ndarray, ell: np.ndarray, rng: np.random.Generator,
                 shift: float | None = None) -> np.ndarray:
    """One (H, W) noiseless convergence map for the C_ell given at the nodes `ell`.

    ``shift`` is the lognormal shift (None: the config's ``lognormal_shift``); Gaussian fields ignore it.
    """
    h, w = cfg.shape
    box = (cfg.pad * h, cfg.pad * w)
    spectrum = field_spectrum(lambda e: interpolate_cl(ell, cl_nodes, e), box, cfg.map_pixel_arcmin)
    if cfg.field == "gaussian":
        full = gaussian_field(spectrum, box, rng)
    else:
        full = lognormal_field(spectrum, box, rng, cfg.lognormal_shift if shift is None else shift)
    return full[:h, :w]


# --------------------------------------------------------------------------------------------------
# the data set


def _layout(cfg: WLSimConfig) -> list[str]:
    return ["train"] * cfg.n_train + ["val"] * cfg.n_val + ["test"] * cfg.n_test


def _simulate_cosmology(cfg_dict: dict[str, Any], pixels_path: str, cosmology_id: int, omega_m: float, s8: float,
                        mask: np.ndarray) -> list[dict[str, Any]]:
    """Worker task: every realisation of one cosmology, written into the pixels memmap."""
    cfg = as_config(cfg_dict)
    pixels = np.load(pixels_path, mmap_mode="r+")
    rng = np.random.default_rng([cfg.seed, 1, cosmology_id])
    cosmo = make_cosmology(cfg, omega_m, s8)
    ell = ell_nodes(cfg)
    cl_of = NuisanceCl(cfg, cosmo, ell)
    sigma = cfg.noise_sigma
    rows = []
    for r, split in enumerate(_layout(cfg)):
        log_t_agn = float(rng.uniform(*cfg.log_t_agn_range))
        dz = float(rng.normal(0.0, cfg.dz_std))
        cl = cl_of(log_t_agn, dz)
        shift = lognormal_shift(cfg, cosmo, omega_m, dz) if cfg.field == "lognormal" else float("nan")
        kappa = simulate_map(cfg, cl, ell, np.random.default_rng([cfg.seed, 2, cosmology_id, r]), shift=shift)
        noisy = split == "test"
        if noisy:  # test maps ship with their noise, as the kit's
            kappa = kappa + np.random.default_rng([cfg.seed, 3, cosmology_id, r]).standard_normal(kappa.shape) * sigma
        row = cosmology_id * cfg.n_realisations + r
        pixels[row] = kappa[mask].astype(np.float32)
        rows.append({
            "sample_id": f"c{cosmology_id:03d}_r{r:03d}", "split": split, "cosmology_id": cosmology_id, "realisation": r,
            "omega_m": omega_m, "s8": s8, "log_t_agn": log_t_agn, "dz": dz, "noisy": noisy, "pixel_row": row,
            **({"lognormal_shift": shift} if cfg.field == "lognormal" else {}),
        })
    pixels.flush()
    return rows


def simulate_wl_dataset(out_dir: str | Path, cfg: WLSimConfig | Mapping[str, Any] | None = None, n_workers: int = 2,
                        progress: bool = True) -> Path:
    """Simulate the whole data set into `out_dir` (not cached; see ensure_wl_dataset). Returns the manifest path.

    Results do not depend on `n_workers` (every map's randomness is keyed by (seed, cosmology, realisation)).
    """
    cfg = as_config(cfg)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    mask = survey_mask(cfg)
    np.save(out_dir / MASK_NAME, mask)
    design = cosmology_design(cfg)
    n_total = cfg.n_cosmologies * cfg.n_realisations
    pixels_path = out_dir / PIXELS_NAME
    np.lib.format.open_memmap(pixels_path, mode="w+", dtype=np.float32, shape=(n_total, int(mask.sum())))
    cfg_dict = dataclasses.asdict(cfg)
    tasks = [(cfg_dict, str(pixels_path), k, float(om), float(s8), mask) for k, (om, s8) in enumerate(design)]
    rows: list[dict[str, Any]] = []
    with tqdm(total=n_total, desc="simulate weak-lensing maps", unit="map", disable=not progress) as bar:
        if n_workers <= 1:
            for task in tasks:
                rows += _simulate_cosmology(*task)
                bar.update(cfg.n_realisations)
        else:
            # fork where available: workers only run numpy and pyccl, never torch or CUDA
            ctx = multiprocessing.get_context("fork" if "fork" in multiprocessing.get_all_start_methods() else "spawn")
            with ProcessPoolExecutor(max_workers=n_workers, mp_context=ctx) as pool:
                for future in as_completed([pool.submit(_simulate_cosmology, *t) for t in tasks]):
                    rows += future.result()
                    bar.update(cfg.n_realisations)
    frame = pd.DataFrame(rows).sort_values("pixel_row").reset_index(drop=True)
    manifest = out_dir / MANIFEST_NAME
    frame.to_parquet(manifest, index=False)
    geometry = {
        "pixel_arcmin": cfg.map_pixel_arcmin, "shape": list(cfg.shape), "noise_sigma": cfg.noise_sigma,
        "n_galaxies": cfg.n_galaxies, "shape_noise": cfg.shape_noise, "valid_fraction": float(mask.mean()),
        "sim_version": SIM_VERSION, "config": cfg_dict,
    }
    (out_dir / GEOMETRY_NAME).write_text(json.dumps(geometry, indent=1))
    return manifest


def _is_complete(path: Path) -> bool:
    return all((path / n).is_file() for n in (COMPLETE_NAME, MANIFEST_NAME, PIXELS_NAME, MASK_NAME, GEOMETRY_NAME))


def wl_dataset_dir(cache_root: str | Path, cfg: WLSimConfig | Mapping[str, Any] | None) -> Path:
    """``cache_root / weak_lensing_<hash>`` of a config."""
    return Path(cache_root) / f"weak_lensing_{config_hash(as_config(cfg))}"


def ensure_wl_dataset(cache_root: str | Path, cfg: WLSimConfig | Mapping[str, Any] | None = None, n_workers: int = 2,
                      progress: bool = True) -> Path:
    """The manifest of the simulated data set for `cfg`, generated only when it is not cached.

    Built once by rigor.cache.build_once: into a private temporary directory that gets ``COMPLETE`` last
    and is then renamed into place, under a lock, so concurrent runs generate once and a crashed run never
    leaves a directory that looks finished.
    """
    cfg = as_config(cfg)
    out = build_once(wl_dataset_dir(cache_root, cfg),
                     lambda tmp: simulate_wl_dataset(tmp, cfg, n_workers=n_workers, progress=progress),
                     is_complete=_is_complete, marker=COMPLETE_NAME,
                     marker_text=f"weak-lensing simulation v{SIM_VERSION}, {config_hash(cfg)}\n")
    return out / MANIFEST_NAME
