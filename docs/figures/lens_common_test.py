"""The figure of docs/results.md's "Lens arms on common test sets": ROC curves at a search's false-positive rates.

    python docs/figures/lens_common_test.py <scores dir> docs/figures/lens_common_test.png

<scores dir> holds one folder per test set (e.g. ``paired/``, ``unpaired/``), each the ``out_dir`` of an
``evaluate.py task=score_sweep`` run: its ``arms.json`` names every job's predictions file. One panel per test
set, one colour per arm and one curve per seed: TPR against FPR on a log axis (sklearn's ROC curve on the
file's logits), the FPR 1e-3 line dashed. A log axis has no FPR 0: each curve's left end is its TPR with one false positive
(TPR0, before the first, is in the table beside the figure).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import pandas as pd  # noqa: E402
from sklearn.metrics import roc_curve  # noqa: E402


def main(scores: Path, out: Path) -> None:
    sets = sorted(p for p in scores.iterdir() if (p / "arms.json").is_file())
    if not sets:
        raise SystemExit(f"{scores}: no <test set>/arms.json below it (the out_dir of task=score_sweep)")
    fig, axes = plt.subplots(1, len(sets), figsize=(5.2 * len(sets), 4.2), squeeze=False)
    for ax, folder in zip(axes[0], sets):
        report = json.loads((folder / "arms.json").read_text())
        colours: dict[str, str] = {}
        for job in sorted(report["jobs"], key=lambda j: str(j["job_dir"])):
            frame = pd.read_csv(job["predictions"])
            # the experiment from the predictions sidecar: one colour per arm, one line per seed
            arm = json.loads(Path(job["predictions"]).with_suffix(".json").read_text()).get("experiment", "?")
            first = arm not in colours
            colours.setdefault(arm, f"C{len(colours)}")
            fpr, tpr, _ = roc_curve(frame["target"], frame["logit"], drop_intermediate=False)
            keep = fpr > 0
            n_neg = int((frame["target"] == 0).sum())
            ax.step(fpr[keep], tpr[keep], where="post", color=colours[arm], lw=1.0, alpha=0.8,
                    label=arm if first else None)
        ax.axvline(1e-3, color="grey", ls="--", lw=0.8)
        ax.set_xscale("log")
        ax.set_xlim(1 / n_neg, 1)
        ax.set_ylim(0, 1)
        ax.set_xlabel(f"false-positive rate ({n_neg} test negatives)")
        ax.set_ylabel("true-positive rate (completeness)")
        ax.set_title(f"{folder.name} test set ({report['data_label']})")
        ax.legend(loc="upper left", fontsize=8)
    fig.tight_layout()
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=120)
    print(f"figure: {out}")


if __name__ == "__main__":
    if len(sys.argv) != 3:
        raise SystemExit(__doc__)
    main(Path(sys.argv[1]), Path(sys.argv[2]))
