"""docs/figures/weak_lensing_skewness.png: one-point skewness of the noisy test maps against Omega_m, old and new sets.

Run from the repository root after both data sets are cached (python -m analysis.weak_lensing.data_report
--data weak_lensing, then --data weak_lensing_gaussian): python docs/figures/weak_lensing_skewness.py
"""

from __future__ import annotations

import matplotlib
import numpy as np
import pandas as pd

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402  (after the backend)

from analysis.weak_lensing.bounds import one_point_moments  # noqa: E402

fig, axes = plt.subplots(1, 2, figsize=(8, 3.2), sharey=True)
for ax, (d, title) in zip(axes, [("data/weak_lensing_c5a9f255ed98", "old: Gaussian, 8 arcmin, 25 cosmologies"),
                                 ("data/weak_lensing_a1278b3267ba", "new: lognormal (empty-beam shift), 4 arcmin, 101")]):
    f = pd.read_parquet(f"{d}/manifest.parquet"); px = np.load(f"{d}/pixels.npy", mmap_mode="r")
    t = f[f.split == "test"]
    m = one_point_moments(np.asarray(px[t.pixel_row.to_numpy()], dtype=np.float64), np.ones(px.shape[1], bool))
    sc = ax.scatter(t.omega_m, m[:, 1], c=t.s8, s=6, cmap="viridis", vmin=0.68, vmax=0.955)
    ax.set_title(title, fontsize=8); ax.set_xlabel("Omega_m"); ax.axhline(0, color="k", lw=0.5)
axes[0].set_ylabel("one-point skewness (noisy test maps)")
fig.colorbar(sc, ax=axes, label="S_8", shrink=0.9)
fig.savefig("docs/figures/weak_lensing_skewness.png", dpi=90, bbox_inches="tight")
