"""How much of each arc's S/N a host-removal step keeps, by θ_E and arc S/N (issue 26 item 3).

    python docs/figures/lens_arc_signal.py <paired data dir> docs/figures/lens_arc_signal.png [n_pairs]

<paired data dir> is a simulated paired lens set (``<paths.data_dir>/lens_paired_<hash>``: manifest.parquet
and images.npy). With the default ``paired_shared_noise`` a pair is one cutout with and without its arc
(same host, same noise), which is what ``analysis.lens.images.arc_signal_kept`` needs. The first n_pairs
(default 2,000) test pairs are measured for the three preprocessing options of ``data.preprocessing``: raw,
residual (per-band radial median) and colour (the reddest band's radial median, scaled to each band).
Prints the median fraction kept per bin as markdown, and what the ideal reader of analysis.lens.ideal (10^4
templates) would reach on these lenses at the S/N each step leaves them; saves the figure.
"""

from __future__ import annotations

import sys
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

from analysis.lens.ideal import ideal_auroc, ideal_tpr_at_fpr  # noqa: E402
from analysis.lens.images import arc_signal_kept, colour_residual, radial_median_model  # noqa: E402

STEPS = {
    "raw": lambda x: x,
    "residual": lambda x: x - radial_median_model(x),
    "colour": lambda x: colour_residual(x, ref_channel=x.shape[1] - 1),
}
THETA_E = [0.5, 0.75, 1.0, 1.5, 2.0, 2.5, 3.0]
SNR = [0, 5, 10, 15, 20, 30, 50, 10000]


def main(data_dir: Path, out: Path, n_pairs: int = 2000) -> None:
    frame = pd.read_parquet(data_dir / "manifest.parquet")
    images = np.load(data_dir / "images.npy", mmap_mode="r")
    test = frame[frame["split"] == "test"]
    pos = test[test["label"] == 1].sort_values("pair_id").head(n_pairs)
    neg = test[test["label"] == 0].set_index("pair_id").loc[pos["pair_id"]]
    with_arc, without = np.asarray(images[pos["image_index"].to_numpy()]), np.asarray(images[neg["image_index"].to_numpy()])
    kept = {name: arc_signal_kept(with_arc, without, step) for name, step in STEPS.items()}

    print(f"{len(pos)} test pairs of {data_dir.name}: median fraction of the arc's S/N kept\n")
    fig, axes = plt.subplots(1, 2, figsize=(10.5, 4.0))
    for ax, column, edges, label in ((axes[0], "theta_e", THETA_E, "θ_E (arcsec)"), (axes[1], "arc_snr", SNR, "arc S/N")):
        bins = pd.cut(pos[column].to_numpy(), edges, right=False)
        names = [f"{lo:g}-{hi:g}" for lo, hi in zip(edges[:-1], edges[1:])]
        table = pd.DataFrame({name: pd.Series(k).groupby(bins, observed=False).median().to_numpy() for name, k in kept.items()},
                             index=names)
        counts = pd.Series(bins).value_counts(sort=False).to_numpy()
        print(f"| {label} | pairs | " + " | ".join(STEPS) + " |\n|" + " --- |" * (2 + len(STEPS)))
        for (name, row), n in zip(table.iterrows(), counts):
            print(f"| {name} | {n} | " + " | ".join(f"{v:.2f}" for v in row) + " |")
        print(f"| all | {len(pos)} | " + " | ".join(f"{np.median(k):.2f}" for k in kept.values()) + " |\n")
        for k, name in enumerate(STEPS):
            ax.plot(range(len(names)), table[name], "o-", color=f"C{k}", label=name)
        ax.set_xticks(range(len(names)), names, rotation=30)
        ax.set_xlabel(label)
        ax.set_ylabel("median fraction of the arc's S/N kept")
        ax.set_ylim(0, 1.05)
    snr = pos["arc_snr"].to_numpy()
    print("| step | ideal reader AUROC | ideal TPR at FPR 1e-3 |  (10^4 templates, each lens at arc_snr x fraction kept)\n| --- | --- | --- |")
    for name, k in kept.items():
        print(f"| {name} | {ideal_auroc(snr * k, 10_000).mean():.3f} | {ideal_tpr_at_fpr(snr * k, 1e-3, 10_000).mean():.3f} |")
    print()
    axes[0].legend()
    fig.tight_layout()
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=120)
    print(f"figure: {out}")


if __name__ == "__main__":
    if len(sys.argv) not in (3, 4):
        raise SystemExit(__doc__)
    main(Path(sys.argv[1]), Path(sys.argv[2]), *(int(a) for a in sys.argv[3:]))
