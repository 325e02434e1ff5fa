"""Issue 26's data checks in docs/results.md: host balance of both unpaired designs, and arc realism.

    python docs/figures/lens_arcs.py data/lens_matched_36f224c929d2/manifest.parquet docs/figures/lens_arcs.png \
        [data/lens_matched_<hash of arc_snr_min=20>/manifest.parquet]

Prints (1) per host parameter, the two-sample KS test of positives against negatives on the validation
split of today's design (``negative_hosts: nonlens``) and the host-matched one (``matched``), drawn as the
simulator draws them (``simulate.host_table``); (2) the positives' arc S/N and lensed r magnitudes
against LensPop's detectability criteria (Collett 2015: S/N >= 20, total magnification > 3, resolved:
theta_E^2 > r_src^2 + (FWHM / 2)^2). Plots the arc S/N and lensed-magnitude histograms of all positives of
the manifest's validation split (both designs share them) with the S/N = 20 line, and, given a third argument, the positives
of the calibrated setting (``arc_snr_min: 20``) as an outline.
"""

from __future__ import annotations

import sys
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

from analysis.lens.hosts import host_balance  # noqa: E402
from datamodules.lens.simulate import ZERO_POINT, host_table  # noqa: E402

SNR_DETECT = 20.0  # Collett 2015 (ApJ 811, 20): a lens is detectable if its arc S/N >= 20


def main(manifest: str, out_png: str, calibrated: str | None = None) -> None:
    pd.set_option("display.width", 200)
    for design in ("nonlens", "matched"):
        table = host_balance(host_table({"negative_hosts": design}, "val"))
        print(f"\nhost balance, val split, negative_hosts={design}\n{table.to_string(index=False, float_format='%.4g')}")

    frame = pd.read_parquet(manifest)
    pos = frame[frame["label"] == 1]
    lensed_r = ZERO_POINT - 2.5 * np.log10(pos["arc_flux"])
    resolved = pos["theta_e"] ** 2 > pos["source_reff"] ** 2 + (pos["psf_fwhm"] / 2) ** 2
    detect = pos["arc_snr"] >= SNR_DETECT
    q = [5, 16, 50, 84, 95]
    print(f"\n{len(pos)} positives (all splits)")
    print("arc S/N percentiles", q, np.percentile(pos["arc_snr"], q).round(1))
    print("lensed r percentiles", q, np.percentile(lensed_r, q).round(2))
    print("unlensed source r percentiles", q, np.percentile(pos["source_mag"], q).round(2))
    print("magnification percentiles", q, np.percentile(pos["magnification"], q).round(1))
    print(f"S/N >= {SNR_DETECT:g}: {detect.mean():.3f}; mu > 3: {(pos['magnification'] > 3).mean():.3f}; "
          f"resolved: {resolved.mean():.3f}; all three: {(detect & resolved & (pos['magnification'] > 3)).mean():.3f}")
    print(f"median lensed r of S/N >= 20 arcs: {np.median(lensed_r[detect]):.2f}, "
          f"of S/N < 20: {np.median(lensed_r[~detect]):.2f}")
    for col, edges in (("depth_bin", [0, 1, 2, 3]), ("theta_e", [0.5, 1.0, 1.5, 2.0, 3.0])):
        for lo, hi in zip(edges[:-1], edges[1:]):
            part = pos[(pos[col] >= lo) & (pos[col] < hi)]
            print(f"  {col} [{lo}, {hi}): n {len(part)}, median S/N {part['arc_snr'].median():.1f}, "
                  f"S/N >= 20 {(part['arc_snr'] >= SNR_DETECT).mean():.2f}")

    cal = None
    if calibrated:
        cal = pd.read_parquet(calibrated).query("label == 1 and split == 'val'")
        cal_r = ZERO_POINT - 2.5 * np.log10(cal["arc_flux"])
        print(f"\ncalibrated ({len(cal)} positives): arc S/N percentiles {np.percentile(cal['arc_snr'], q).round(1)}, "
              f"lensed r percentiles {np.percentile(cal_r, q).round(2)}, source r median {cal['source_mag'].median():.2f}, "
              f"theta_E median {cal['theta_e'].median():.2f} (default {pos['theta_e'].median():.2f})")

    # the figure: validation positives of both settings (5,012 each at the default sizes)
    val = frame["split"].to_numpy()[frame["label"].to_numpy() == 1] == "val"
    pos, lensed_r, detect = pos[val], lensed_r[val], detect[val]
    fig, axes = plt.subplots(1, 2, figsize=(9, 3.3))
    bins = np.logspace(0, np.log10(max(300.0, pos["arc_snr"].max())), 40)
    axes[0].hist(pos["arc_snr"], bins=bins, color="tab:blue", alpha=0.8, label="default (arc_snr_min: 0)")
    if cal is not None:
        axes[0].hist(cal["arc_snr"], bins=bins, histtype="step", color="tab:red", lw=1.5,
                     label="arc_snr_min: 20")
    axes[0].axvline(SNR_DETECT, color="k", ls="--", label=f"S/N = {SNR_DETECT:g} (Collett 2015)")
    axes[0].set(xscale="log", xlabel="arc S/N (matched filter, g+r+z)", ylabel="simulated positives",
                title=f"default: {detect.mean():.0%} of val positives reach S/N 20")
    axes[0].legend(fontsize=8)
    mbins = np.arange(19.0, 25.01, 0.2)
    axes[1].hist([lensed_r[detect], lensed_r[~detect]], bins=mbins, stacked=True, color=["tab:blue", "tab:gray"],
                 label=["S/N >= 20", "S/N < 20"])
    axes[1].set(xlabel="lensed arc r magnitude (AB, total in stamp)", ylabel="simulated positives")
    if cal is not None:
        axes[1].hist(cal_r, bins=mbins, histtype="step", color="tab:red", lw=1.5, label="arc_snr_min: 20")
    axes[1].legend(fontsize=8)
    fig.tight_layout()
    Path(out_png).parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out_png, dpi=90)
    print(f"figure: {out_png}")


if __name__ == "__main__":
    main(*sys.argv[1:4])
