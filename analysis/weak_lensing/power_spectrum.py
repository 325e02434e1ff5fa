"""Flat-sky angular power spectra of (masked) convergence maps (seed 001's classical baseline).

Conventions, shared with the map simulator (datamodules/weak_lensing/simulate.py): a map of N pixels
of solid angle dOmega has the discrete Fourier transform F_k = sum_x kappa_x exp(-i k.x); for a field with
angular power C(ell), E|F_k|^2 = N C(ell_k) W(ell_k)^2 / dOmega, where W is the square-pixel window
sinc(ell_x p / 2) sinc(ell_y p / 2). So C_hat(ell_k) = |F_k|^2 dOmega / N, divided by the mean of the
squared mask (the usual f_sky correction of a pseudo-C_ell) when a mask is applied.
"""

from __future__ import annotations

import numpy as np

ARCMIN = np.pi / 180.0 / 60.0


def ell_grid(shape: tuple[int, int], pixel_arcmin: float) -> tuple[np.ndarray, np.ndarray]:
    """(ell_x, ell_y) of every mode of ``np.fft.rfft2`` on a map of ``shape`` (rows, cols)."""
    p = pixel_arcmin * ARCMIN
    lx = 2 * np.pi * np.fft.fftfreq(shape[0], d=p)
    ly = 2 * np.pi * np.fft.rfftfreq(shape[1], d=p)
    return np.meshgrid(lx, ly, indexing="ij")


def pixel_window(shape: tuple[int, int], pixel_arcmin: float) -> np.ndarray:
    """Square-pixel window W(ell) = sinc(ell_x p / 2) sinc(ell_y p / 2) on the rfft2 grid."""
    p = pixel_arcmin * ARCMIN
    lx, ly = ell_grid(shape, pixel_arcmin)
    return np.sinc(lx * p / (2 * np.pi)) * np.sinc(ly * p / (2 * np.pi))  # np.sinc(x) = sin(pi x) / (pi x)


def log_bins(ell_min: float, ell_max: float, n_bins: int) -> np.ndarray:
    """n_bins + 1 logarithmically spaced bin edges."""
    if not 0 < ell_min < ell_max or n_bins < 1:
        raise ValueError(f"log_bins: need 0 < ell_min < ell_max and n_bins >= 1, got {ell_min}, {ell_max}, {n_bins}")
    return np.geomspace(ell_min, ell_max, n_bins + 1)


def mode_counts(shape: tuple[int, int], pixel_arcmin: float, edges: np.ndarray) -> np.ndarray:
    """Number of rfft2 modes in each bin (a bin above the Nyquist frequency has none)."""
    lx, ly = ell_grid(shape, pixel_arcmin)
    return np.histogram(np.hypot(lx, ly).ravel(), bins=edges)[0]


def binned_cl(
    maps: np.ndarray,
    pixel_arcmin: float,
    edges: np.ndarray,
    mask: np.ndarray | None = None,
    deconvolve_window: bool = False,
) -> tuple[np.ndarray, np.ndarray]:
    """Binned power spectrum of every map.

    Args:
        maps: (H, W) or (N, H, W) maps (masked pixels may hold anything: they are multiplied by the mask).
        pixel_arcmin: Pixel side in arcmin.
        edges: Bin edges in ell.
        mask: (H, W) weights in [0, 1] (None: no mask).
        deconvolve_window: Divide by the pixel window squared (gives the sky C_ell, not the pixelised one).

    Returns:
        (ell_mean (B,), cl (N, B)): the mean |ell| of the modes in each bin and the mode-averaged C_hat;
        NaN for bins without modes.
    """
    maps = np.asarray(maps, dtype=np.float64)
    single = maps.ndim == 2
    if single:
        maps = maps[None]
    shape = maps.shape[1:]
    if mask is not None:
        mask = np.asarray(mask, dtype=np.float64)
        if mask.shape != shape:
            raise ValueError(f"mask has shape {mask.shape}; expected the map shape {shape}")
        maps = maps * mask
        fsky = float(np.mean(mask**2))
        if fsky <= 0:
            raise ValueError("mask has no valid pixel")
    else:
        fsky = 1.0
    n_pix = shape[0] * shape[1]
    d_omega = (pixel_arcmin * ARCMIN) ** 2
    power = np.abs(np.fft.rfft2(maps)) ** 2 * d_omega / n_pix / fsky
    if deconvolve_window:
        power = power / pixel_window(shape, pixel_arcmin) ** 2
    lx, ly = ell_grid(shape, pixel_arcmin)
    ell = np.hypot(lx, ly).ravel()
    which = np.digitize(ell, edges) - 1
    valid = (which >= 0) & (which < len(edges) - 1)
    counts = np.bincount(which[valid], minlength=len(edges) - 1).astype(np.float64)
    flat = power.reshape(len(maps), -1)[:, valid]
    sums = np.stack([np.bincount(which[valid], weights=row, minlength=len(edges) - 1) for row in flat])
    ell_sum = np.bincount(which[valid], weights=ell[valid], minlength=len(edges) - 1)
    with np.errstate(invalid="ignore", divide="ignore"):
        cl = sums / counts
        ell_mean = ell_sum / counts
    return ell_mean, (cl[0] if single else cl)


def log_cl_summary(maps: np.ndarray, pixel_arcmin: float, edges: np.ndarray, mask: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """log C_hat in the bins that have modes: the power-spectrum summary of the classical baseline.

    Returns:
        (kept bin indices (B',), log C (N, B')).
    """
    maps = np.asarray(maps)
    if maps.ndim == 2:
        maps = maps[None]
    keep = np.flatnonzero(mode_counts(maps.shape[1:], pixel_arcmin, edges) > 0)
    _, cl = binned_cl(maps, pixel_arcmin, edges, mask)
    return keep, np.log(cl[:, keep])


def predicted_pixel_variance(cl_fn, shape: tuple[int, int], pixel_arcmin: float, window: bool = True) -> float:
    """Pixel variance of a Gaussian field of power C(ell) on a periodic (H, W) grid (the simulator's own).

    sigma^2 = (1/N) sum_k S_k with S_k = C(ell_k) W(ell_k)^2 / dOmega over every DFT mode (the ell = 0
    mode carries nothing), computed on the full (not the half) FFT grid.
    """
    p = pixel_arcmin * ARCMIN
    lx = 2 * np.pi * np.fft.fftfreq(shape[0], d=p)
    ly = 2 * np.pi * np.fft.fftfreq(shape[1], d=p)
    lx, ly = np.meshgrid(lx, ly, indexing="ij")
    ell = np.hypot(lx, ly)
    s = np.zeros_like(ell)
    nz = ell > 0
    s[nz] = cl_fn(ell[nz])
    if window:
        s *= (np.sinc(lx * p / (2 * np.pi)) * np.sinc(ly * p / (2 * np.pi))) ** 2
    return float(s.sum() / (shape[0] * shape[1]) / p**2)
