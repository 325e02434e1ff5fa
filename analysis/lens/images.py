"""Pixel-level helpers for square multi-band cutouts: radii, core masks, radial profiles, host models.

Everything here works on arrays shaped (..., H, W) and knows nothing about Lightning. The same
functions build training masks, the shortcut-gate features and the residual preprocessing, so the
model, the gates and the core-sensitivity curve all agree on what "the core" is.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable
from functools import lru_cache

import numpy as np
import torch


@lru_cache(maxsize=16)
def radius_grid(size: int) -> np.ndarray:
    """Distance of every pixel centre from the stamp centre, in pixels.

    Args:
        size: Side of the square stamp (odd sizes have a central pixel at distance 0).

    Returns:
        Array of shape (size, size), read-only.
    """
    c = (size - 1) / 2.0
    y, x = np.mgrid[:size, :size]
    r = np.hypot(y - c, x - c)
    r.setflags(write=False)
    return r


def core_mask(size: int, radius: float) -> np.ndarray:
    """Boolean mask of the pixels strictly closer than `radius` to the centre (radius 0 masks nothing)."""
    return radius_grid(size) < radius


def apply_core_mask(images: torch.Tensor, radius: float, fill: float = 0.0) -> torch.Tensor:
    """Returns a copy of a (N, C, H, W) batch with the central disc of `radius` pixels set to `fill`."""
    if radius <= 0:
        return images.clone()
    mask = torch.from_numpy(core_mask(images.shape[-1], radius)).to(images.device)
    return images.masked_fill(mask, fill)


def _annulus_index(size: int, n_bins: int | None = None) -> tuple[np.ndarray, int]:
    """Integer radius bin of every pixel (1-pixel-wide annuli), and the number of bins kept."""
    r = radius_grid(size)
    ring = np.floor(r + 0.5).astype(np.int64)  # pixel at distance 0.4 belongs to ring 0, 0.6 to ring 1
    max_ring = (size - 1) // 2  # rings beyond the inscribed circle are incomplete
    n = max_ring + 1 if n_bins is None else min(n_bins, max_ring + 1)
    return ring, n


def radial_profile(images: np.ndarray, n_bins: int | None = None) -> np.ndarray:
    """Azimuthally averaged profile of every band.

    Args:
        images: Array (N, C, H, W) with H == W.
        n_bins: Number of 1-pixel annuli from the centre outward (default: up to the inscribed circle).

    Returns:
        Array (N, C, n_bins): mean pixel value in each annulus.
    """
    images = np.asarray(images, dtype=np.float64)
    ring, n = _annulus_index(images.shape[-1], n_bins)
    flat = images.reshape(*images.shape[:-2], -1)
    ring_flat = ring.ravel()
    keep = ring_flat < n
    # one matrix product instead of a python loop over annuli
    onehot = np.zeros((keep.sum(), n))
    onehot[np.arange(keep.sum()), ring_flat[keep]] = 1.0
    sums = flat[..., keep] @ onehot
    counts = onehot.sum(axis=0)
    return sums / counts


def radial_median_model(images: np.ndarray) -> np.ndarray:
    """Smooth, circularly symmetric model of the host galaxy, estimated from each image itself.

    The model is the median pixel value in each 1-pixel annulus, painted back on the stamp. The median
    (not the mean) keeps a thin arc, which covers a small part of its annulus, out of the host model, so
    subtracting the model removes the host and leaves the arc. No simulation truth is used.

    Args:
        images: Array (N, C, H, W).

    Returns:
        Array of the same shape and dtype float32.
    """
    images = np.asarray(images)
    size = images.shape[-1]
    ring, _ = _annulus_index(size)
    n_rings = int(ring.max()) + 1
    flat = images.reshape(*images.shape[:-2], -1)
    model = np.empty_like(flat, dtype=np.float32)
    ring_flat = ring.ravel()
    for k in range(n_rings):
        sel = ring_flat == k
        if not sel.any():  # an even stamp has no pixel within half a pixel of its centre: ring 0 is empty
            continue
        model[..., sel] = np.median(flat[..., sel], axis=-1, keepdims=True)
    return model.reshape(images.shape)


def robust_background(images: np.ndarray, inner_radius: float) -> tuple[np.ndarray, np.ndarray]:
    """Median and MAD-based sigma of the pixels outside `inner_radius`, per image and band.

    Returns:
        (median, sigma), each of shape (N, C, 1, 1); sigma is floored to avoid division by zero.
    """
    images = np.asarray(images)
    outer = ~core_mask(images.shape[-1], inner_radius)
    pix = images[..., outer]
    med = np.median(pix, axis=-1)
    mad = np.median(np.abs(pix - med[..., None]), axis=-1)
    sigma = np.maximum(1.4826 * mad, 1e-12)
    return med[..., None, None], sigma[..., None, None]


def colour_residual(images: np.ndarray, ref_channel: int, fit_radius: float = 12.0) -> np.ndarray:
    """Host removal by colour: each band minus the reference band's host model, scaled (arc-preserving).

    A lens galaxy is red and of one colour across its body, a lensed source blue. The host's shape is taken
    from the reddest band, where the arc is faintest against the host: its radial-median model M (as in
    ``radial_median_model``). Each other band b becomes ``b - alpha_b * M``, with alpha_b the median of
    b / M over the pixels within `fit_radius` (a median, so the few pixels an arc covers do not move it).
    A ring-like arc in a blue band is kept, where the radial median of that band would absorb it (the idea
    of colour-based host removal: RingFinder, Gavazzi et al. 2014, ApJ 785, 144). The reference band itself
    gets ``ref - M``. PSF differences between bands are not matched: a host's core leaves the same small
    pattern in lens and non-lens cutouts. How much arc S/N this keeps against the radial median:
    ``arc_signal_kept`` (docs/results.md, issue 26 item 3).

    Args:
        images: Array (N, C, H, W), flux in each band.
        ref_channel: Index of the reference (reddest) band.
        fit_radius: Radius (pixels) of the central region where alpha is fitted.

    Returns:
        Array (N, C, H, W) float32.
    """
    x = np.asarray(images, dtype=np.float32)
    if not 0 <= ref_channel < x.shape[1]:
        raise ValueError(f"ref_channel {ref_channel} is not a channel of images with {x.shape[1]} channels")
    core = radius_grid(x.shape[-1]) <= fit_radius
    model = radial_median_model(x[:, ref_channel : ref_channel + 1])[:, 0]
    # pixels where the host model is positive: a ratio to sky noise means nothing
    usable = model[:, core] > 0
    out = np.empty_like(x)
    for c in range(x.shape[1]):
        if c == ref_channel:
            out[:, c] = x[:, c] - model
            continue
        ratio = np.where(usable, x[:, c][:, core] / np.where(usable, model[:, core], 1.0), np.nan)
        with warnings.catch_warnings():  # a cutout with no positive host pixel: alpha 0 (nothing subtracted)
            warnings.simplefilter("ignore", RuntimeWarning)
            alpha = np.nan_to_num(np.nanmedian(ratio, axis=1), nan=0.0)
        out[:, c] = x[:, c] - alpha[:, None, None].astype(np.float32) * model
    return out


def arc_signal_kept(with_arc: np.ndarray, without_arc: np.ndarray, step: Callable[[np.ndarray], np.ndarray],
                    background_radius: float = 20.0) -> np.ndarray:
    """Fraction of each arc's matched-filter S/N that a preprocessing step keeps.

    Needs the same cutouts with and without their arc (paired simulation with a shared noise field, so the
    difference is the arc). The arc's signal after the step is ``step(with) - step(without)``; its S/N is
    the root of the sum of its squares over the pixel noise variance of each band, that variance measured
    outside `background_radius` on the arcless cutout after the same step (so a step that adds noise, such as
    subtracting a scaled band, pays for it). The ratio to the same S/N with the identity step is returned:
    1 for the identity, less for a step that removes arc light or adds noise.

    Args:
        with_arc: (N, C, H, W) cutouts with arcs.
        without_arc: (N, C, H, W) the same cutouts without them.
        step: The host removal, images -> images of the same shape (e.g. ``lambda x: x - radial_median_model(x)``).
        background_radius: Radius beyond which the noise is measured.

    Returns:
        (N,) S/N after the step divided by S/N before it.
    """
    def snr(a: np.ndarray, b: np.ndarray) -> np.ndarray:
        _, sigma = robust_background(b, background_radius)
        return np.sqrt((((a - b) / sigma) ** 2).sum(axis=(1, 2, 3)))

    with_arc = np.asarray(with_arc, dtype=np.float32)
    without_arc = np.asarray(without_arc, dtype=np.float32)
    before = snr(with_arc, without_arc)
    after = snr(step(with_arc), step(without_arc))
    return after / np.maximum(before, 1e-30)
