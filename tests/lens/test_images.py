"""analysis/lens/images.py on stamps of even size (no pixel at the centre)."""

from __future__ import annotations

import warnings

import numpy as np

from analysis.lens.images import radial_median_model, radius_grid


def test_radial_median_model_of_an_even_stamp_is_each_rings_median_without_warnings():
    stamp = np.random.default_rng(0).normal(size=(1, 2, 8, 8)).astype(np.float32)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # ring 0 is empty on an even stamp: no "Mean of empty slice"
        model = radial_median_model(stamp)
    ring = np.floor(radius_grid(8) + 0.5).astype(int)
    assert not (ring == 0).any()
    for k in np.unique(ring):
        sel = ring == k
        for band in range(2):
            assert np.all(model[0, band][sel] == np.median(stamp[0, band][sel]))
