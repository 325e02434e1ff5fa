"""The lens plan's figure in docs/results.md, from the runs' metrics.json files.

    python docs/figures/lens_plan.py outputs/lens_plan docs/figures/lens_plan.png

Three panels, one line per arm (thin: each seed; thick: the mean): validation AUROC with the core masked
at growing radii (the core-sensitivity curve), test completeness against arc S/N at the threshold that
gives FPR 1e-3 on the validation negatives, and the test TPR at the false-positive rates a search uses (bars: mean, whiskers: 95% t CI over seeds).
"""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from analysis.summary import summarize_metric  # noqa: E402

ARMS = ("lens_a1", "lens_b1", "lens_b2", "lens_b3", "lens_b4")
RADII = (0, 3, 5, 7, 10, 15)
SEARCH = (("test_tpr0", "TPR0"), ("test_tpr10", "TPR10"), ("test_tpr_at_fpr_1e-3", "TPR@1e-3"), ("test_tpr_at_fpr_1e-2", "TPR@1e-2"))


def load(root: Path) -> dict[str, list[dict]]:
    runs: dict[str, list[dict]] = {}
    for path in sorted(root.rglob("metrics.json")):
        m = json.loads(path.read_text())
        if m.get("status") == "completed" and m.get("experiment") in ARMS:
            runs.setdefault(m["experiment"], []).append(m)
    return runs


def snr_bins(m: dict) -> list[tuple[str, float]]:
    keys = [k for k in m if k.startswith("test_completeness_by_arc_snr_")]
    keys.sort(key=lambda k: float(re.findall(r"[\d.]+", k.rsplit("_", 1)[1])[0]))
    return [(k.rsplit("_", 1)[1], m[k]) for k in keys]


def main(root: str, out: str) -> None:
    runs = load(Path(root))
    fig, axes = plt.subplots(1, 3, figsize=(16, 4.6))
    for i, arm in enumerate(a for a in ARMS if a in runs):
        color = f"C{i}"
        seeds = runs[arm]
        curves = np.array([[m[f"core_sensitivity_r{r}"] for r in RADII] for m in seeds])
        for c in curves:
            axes[0].plot(RADII, c, color=color, lw=0.8, alpha=0.5)
        axes[0].plot(RADII, curves.mean(0), "o-", color=color, lw=2, label=f"{arm} (n={len(seeds)})")
        labels = [b for b, _ in snr_bins(seeds[0])]
        comp = np.array([[v if v is not None else np.nan for _, v in snr_bins(m)] for m in seeds])
        x = np.arange(len(labels))
        axes[1].plot(x, np.nanmean(comp, 0), "o-", color=color, lw=2, label=arm)
        vals = np.array([[m.get(k) if m.get(k) is not None else np.nan for k, _ in SEARCH] for m in seeds])
        ci = [summarize_metric(col) for col in vals.T]  # 95% t CI over seeds (none for one seed)
        axes[2].bar(np.arange(len(SEARCH)) + 0.15 * i, [c["mean"] for c in ci], width=0.15, color=color, label=arm,
                    yerr=[0 if np.isnan(c["ci_half"]) else c["ci_half"] for c in ci], capsize=2)
    axes[0].axvline(7, color="grey", ls=":", lw=1)
    axes[0].set(xlabel="core mask radius (pixels)", ylabel="val AUROC", title="Core sensitivity (core_reliance = r0 - r7)")
    axes[1].set_xticks(x, labels, rotation=30)
    axes[1].set(xlabel="arc S/N bin", ylabel="test completeness", ylim=(0, 1),
                title="Completeness vs arc S/N at val FPR 1e-3")
    axes[2].set_xticks(np.arange(len(SEARCH)) + 0.15 * (len(runs) - 1) / 2, [n for _, n in SEARCH])
    axes[2].set(ylabel="test TPR", ylim=(0, 1), title="Search regime (test, 4,426 negatives; 95% t CI)")
    for ax in axes:
        ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(out, dpi=110)
    print(out)


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else "outputs/lens_plan", sys.argv[2] if len(sys.argv) > 2 else "docs/figures/lens_plan.png")
