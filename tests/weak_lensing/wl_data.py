"""A tiny simulated weak-lensing data set shared by the family's tests (seconds to generate).

It has the default set's options (lognormal fields with the empty-beam shift, the core design) at tiny
sizes and 8-arcmin pixels (356 x 44: the tests' networks stay small); the models need
``data.map_shape=TINY_SHAPE`` with it.
"""

from __future__ import annotations

from pathlib import Path

TINY_SIM = {
    "n_cosmologies": 6,
    "n_train": 4,
    "n_val": 8,
    "n_test": 2,
    "downsample": 4,
    "nuisance_grid": [2, 1],
    "n_ell": 24,
    "seed": 3,
    "field": "lognormal",
    "shift_model": "empty_beam",
    "design": "core",
}
TINY_SHAPE = (356, 44)


def tiny_wl_manifest(cache_root: Path, **overrides) -> Path:
    """Generate (or reuse) the tiny data set under cache_root; returns its manifest path."""
    from datamodules.weak_lensing.simulate import ensure_wl_dataset

    return ensure_wl_dataset(cache_root, {**TINY_SIM, **overrides}, n_workers=1, progress=False)
