"""A lens finder's AUROC and completeness by arc S/N beside an ideal arc reader's (issue 26 item 3).

    python docs/figures/lens_ideal_reader.py docs/figures/lens_ideal_reader.png <predictions_test.csv> ...

Each predictions file is one run scored on a labelled lens test set whose positives carry ``arc_snr`` (the
simulator's matched-filter S/N), e.g. ``<run>/predictions/lens-<hash>/predictions_test.csv`` from
``evaluate.py task=score_sweep``. Per S/N bin: the run's AUROC (the bin's lenses against all negatives)
and its TPR at FPR 1e-3 (threshold set on the same file's negatives), the mean over the files, beside the
ideal reader of ``analysis.lens.ideal`` with 1, 10^2, 10^4 and 10^6 templates on the same lenses. Prints
the table as markdown and saves the figure.
"""

from __future__ import annotations

import sys
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

from analysis.lens.ideal import ideal_reader_table  # noqa: E402
from analysis.lens.search_metrics import tpr_at_fpr  # noqa: E402
from analysis.metrics import auroc  # noqa: E402

EDGES = [0, 5, 10, 15, 20, 30, 50, 10000]
TEMPLATES = [1, 100, 10_000, 1_000_000]
FPR = 1e-3


def run_table(frame: pd.DataFrame) -> list[dict[str, float]]:
    """The run's AUROC and TPR at FPR 1e-3 per S/N bin and over all lenses."""
    neg = frame[frame["target"] == 0]["logit"].to_numpy()
    pos = frame[frame["target"] == 1]
    rows = []
    for lo, hi in zip(EDGES[:-1] + [None], EDGES[1:] + [None]):
        sel = pos if lo is None else pos[(pos["arc_snr"] >= lo) & (pos["arc_snr"] < hi)]
        scores = np.concatenate([sel["logit"].to_numpy(), neg])
        labels = np.r_[np.ones(len(sel)), np.zeros(len(neg))]
        rows.append(dict(bin="all" if lo is None else f"{lo:g}-{hi:g}", count=len(sel),
                         auroc=auroc(labels, scores), tpr=tpr_at_fpr(labels, scores, FPR)))
    return rows


def main(out: Path, files: list[Path]) -> None:
    runs = [pd.DataFrame(run_table(pd.read_csv(f))) for f in files]
    mean = pd.concat(runs).groupby("bin", sort=False)[["count", "auroc", "tpr"]].mean()
    snr = pd.read_csv(files[0]).query("target == 1")["arc_snr"].to_numpy()
    ideal = pd.DataFrame(ideal_reader_table(snr, EDGES, TEMPLATES, FPR))

    head = "| arc S/N | lenses | run AUROC | " + " | ".join(f"ideal N={n:g}" for n in TEMPLATES)
    print(f"{len(files)} run(s); AUROC, then TPR at FPR {FPR:g}\n")
    for col in ("auroc", "tpr"):
        print(head.replace("AUROC", col.upper()) + " |")
        print("|" + " --- |" * (3 + len(TEMPLATES)))
        for name, row in mean.iterrows():
            vals = [ideal[(ideal.n_templates == n) & (ideal.bin == name)][col].item() for n in TEMPLATES]
            print(f"| {name} | {row['count']:.0f} | {row[col]:.3f} | " + " | ".join(f"{v:.3f}" for v in vals) + " |")
        print()

    bins = [b for b in mean.index if b != "all"]
    x = np.arange(len(bins))
    fig, axes = plt.subplots(1, 2, figsize=(10.5, 4.0))
    for ax, col, label in ((axes[0], "auroc", "AUROC (bin's lenses vs all negatives)"),
                           (axes[1], "tpr", f"completeness at FPR {FPR:g}")):
        for k, n in enumerate(TEMPLATES):
            vals = [ideal[(ideal.n_templates == n) & (ideal.bin == b)][col].item() for b in bins]
            ax.plot(x, vals, "--", color=plt.cm.Greys(0.9 - 0.2 * k), label=f"ideal reader, {n:g} template(s)")
        for r, f in zip(runs, files):
            r = r[r.bin != "all"]
            ax.plot(x, r[col], "o-", color="C0", alpha=0.6, label="run (one line per file)" if f == files[0] else None)
        ax.set_xticks(x, bins, rotation=30)
        ax.set_xlabel("arc S/N (matched filter)")
        ax.set_ylabel(label)
        ax.set_ylim(0, 1.02)
    axes[0].legend(fontsize=7, loc="lower right")
    fig.tight_layout()
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=120)
    print(f"figure: {out}")


if __name__ == "__main__":
    if len(sys.argv) < 3:
        raise SystemExit(__doc__)
    main(Path(sys.argv[1]), [Path(p) for p in sys.argv[2:]])
