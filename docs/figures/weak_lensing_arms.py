"""The figure of docs/results.md's weak-lensing seeds section: every arm's score and coverage, one dot per seed.

    python docs/figures/weak_lensing_arms.py <wl_arms.json> docs/figures/weak_lensing_arms.png [metrics.json]

<wl_arms.json> is the report of ``evaluate.py task=weak_lensing_compare`` (its ``arm_means`` hold each arm's
per-seed challenge score and 1-sigma coverage on the same test maps). The optional metrics.json of any run on
the same maps adds what the data allow as lines: the prior-only score, the perfect-S_8 score and the
power-spectrum Fisher forecast with the design prior (``test_score_prior_only``, ``test_score_perfect_s8``,
``fisher_prior_score``). Left: score per arm (dots: seeds; bar: mean). Right: coverage, with 0.683 and +-0.05.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

BOUNDS = {"test_score_prior_only": ("prior only", ":"), "test_score_perfect_s8": ("perfect S_8, prior Omega_m", "--"),
          "fisher_prior_score": ("power-spectrum Fisher + design prior", "-.")}


def short(arm: str) -> str:
    """``experiment=weak_lensing_resnet_attn_direct data.batch_size=64 calibrated`` -> ``resnet_attn_direct b64 calibrated``."""
    words = []
    for token in arm.split():
        if token.startswith("experiment="):
            words.insert(0, token.split("=", 1)[1].removeprefix("weak_lensing_"))
        elif token.startswith("data.batch_size="):
            words.append("b" + token.split("=", 1)[1])
        else:
            words.append(token)
    return " ".join(words)


def main(report_path: Path, out: Path, metrics_path: Path | None = None) -> None:
    report = json.loads(report_path.read_text())
    rows = sorted(report["arm_means"], key=lambda r: r["score"]["mean"])
    fig, (left, right) = plt.subplots(1, 2, figsize=(12, 0.45 * len(rows) + 1.8), sharey=True,
                                      gridspec_kw={"width_ratios": [2, 1]})
    y = np.arange(len(rows))
    for ax, term in ((left, "score"), (right, "coverage")):
        for i, row in enumerate(rows):
            values = row[term]["values"]
            ax.scatter(values, [i] * len(values), color="C0", s=18, zorder=3)
            ax.plot([row[term]["mean"]] * 2, [i - 0.3, i + 0.3], color="k", lw=2)
        ax.grid(axis="x", alpha=0.3)
    if metrics_path is not None:
        metrics = json.loads(metrics_path.read_text())
        for key, (label, style) in BOUNDS.items():
            if metrics.get(key) is not None:
                left.axvline(metrics[key], color="C3", ls=style, lw=1, label=f"{label} ({metrics[key]:+.2f})")
        left.legend(loc="upper left", fontsize=7, framealpha=0.9)
    left.axvline(0, color="grey", lw=0.8)
    right.axvline(0.683, color="C2", lw=1)
    right.axvspan(0.633, 0.733, color="C2", alpha=0.12)
    left.set_yticks(y, [short(r["arm"]) for r in rows], fontsize=8)
    left.set_xlabel("challenge score (mean over the test maps; dots: seeds, bar: mean)")
    right.set_xlabel("1-sigma coverage (0.683 +- 0.05 shaded)")
    fig.suptitle("Weak-lensing arms on the same test maps")
    fig.tight_layout()
    fig.savefig(out, dpi=120)
    print(out)


if __name__ == "__main__":
    if len(sys.argv) not in (3, 4):
        raise SystemExit(__doc__)
    main(Path(sys.argv[1]), Path(sys.argv[2]), Path(sys.argv[3]) if len(sys.argv) == 4 else None)
