"""Lens-search metrics on the best checkpoint: TPR0, TPR10, TPR at fixed FPR, purity, completeness curves.

AUROC averages over every false-positive rate; a lens search works at FPR 1e-3 and below (lenses are 1 in
10^3-10^4 galaxies). After testing, this callback scores the validation and test splits with the best
checkpoint and reports what the Bologna Lens Finding Challenge ranks by (analysis/lens/search_metrics.py), the
selection function (completeness against arc S/N and θ_E at a threshold fixed on the validation
negatives) and a ROC with a log FPR axis.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Mapping, Sequence
from typing import Any

import lightning as L
import numpy as np

from analysis.metrics import bin_spec, stratified_metrics
from analysis.lens.search_metrics import rate_label, search_metrics, threshold_at_fpr
from callbacks.base import RigorCallback, split_outputs


class SearchMetrics(RigorCallback):
    """Search numbers for each split in ``splits``, on the best checkpoint, after testing.

    Summary keys per split (``val_`` / ``test_`` prefix): ``tpr0``, ``tpr10``, ``tpr_at_fpr_<f>``,
    ``purity_at_c<c>_prev_<p>`` with ``_ci_low`` / ``_ci_high``, ``n_pos``, ``n_neg``; then
    ``search_threshold`` (the score threshold at ``curve_fpr`` on the ``threshold_split`` negatives) and
    ``<split>_completeness_by_<name>_<bin>`` / ``<split>_detected_by_<name>_<bin>`` per curve. Plots:
    ``plots/roc_log_fpr.png`` and ``plots/completeness_<name>.png``. NaN (``null`` in metrics.json) marks
    an FPR the negatives cannot resolve.

    Args:
        fprs: FPRs for ``tpr_at_fpr_<f>``.
        completeness: Completeness levels for purity.
        prevalences: Lens fractions for purity (e.g. 1e-3, 1e-4).
        n_boot: Class-stratified bootstrap resamples for the purity CIs.
        alpha: 1 - confidence of those CIs.
        seed: Bootstrap seed.
        curve_fpr: FPR that fixes the completeness curves' threshold.
        threshold_split: Split whose negatives fix that threshold (validation: never the test set).
        curves: Name -> ``{column, edges}``; completeness of each bin's positives. A column the data lack
            is skipped (real manifests may not carry arc_snr).
        splits: Splits to score.
    """

    def __init__(
        self,
        fprs: Sequence[float],
        completeness: Sequence[float],
        prevalences: Sequence[float],
        n_boot: int,
        alpha: float,
        seed: int,
        curve_fpr: float,
        threshold_split: str = "val",
        curves: Mapping[str, Mapping[str, Any]] | None = None,
        splits: Sequence[str] = ("val", "test"),
    ) -> None:
        self.fprs = [float(f) for f in fprs]
        self.completeness = [float(c) for c in completeness]
        self.prevalences = [float(p) for p in prevalences]
        self.n_boot, self.alpha, self.seed = int(n_boot), float(alpha), int(seed)
        self.curve_fpr = float(curve_fpr)
        self.threshold_split = threshold_split
        self.curves: dict[str, dict[str, Any]] = {}
        for name, spec in (curves or {}).items():
            if spec is None:
                continue  # switched off from the command line
            self.curves[str(name)] = bin_spec(f"curves.{name}", spec)
        self.splits = list(splits)
        if self.curves and threshold_split not in self.splits:
            raise ValueError(f"threshold_split={threshold_split!r} must be one of splits={self.splits}")
        self.results: dict[str, Any] = {}
        self.roc: dict[str, tuple[np.ndarray, np.ndarray, int]] = {}
        self.curve_rows: dict[str, dict[str, list[dict]]] = {}

    def on_test_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        dm = trainer.datamodule
        scored: dict[str, tuple[np.ndarray, np.ndarray, np.ndarray]] = {}
        for split in self.splits:
            out = split_outputs(trainer, pl_module, split)  # test: the test pass itself; val: the shared pass
            outputs = np.asarray(out.outputs, dtype=np.float64)
            if outputs.ndim != 1:
                raise ValueError(f"SearchMetrics scores a binary module (one logit per sample); {split} outputs have "
                                 f"shape {outputs.shape}")
            scored[split] = (out.target.astype(int).ravel(), outputs, out.index)
        results: dict[str, Any] = {}
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)  # unresolved FPRs are NaN by design; the keys say which
            for split, (y, s, _) in scored.items():
                m = search_metrics(y, s, self.fprs, self.completeness, self.prevalences, self.n_boot, self.seed, self.alpha)
                m.pop("auroc")  # already in metrics.json (test_auroc, best_val_auroc)
                results.update({f"{split}_{k}": v for k, v in m.items()})
        if self.curves:
            y, s, _ = scored[self.threshold_split]
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", RuntimeWarning)
                threshold = threshold_at_fpr(s[y == 0], self.curve_fpr)
            results["search_threshold"] = threshold
            results["search_threshold_fpr"] = self.curve_fpr
            for split, (y, s, index) in scored.items():
                frame = dm.split_frame(split)
                self.curve_rows[split] = {}
                for name, spec in self.curves.items():
                    if spec["column"] not in frame.columns:
                        continue
                    strata = frame[spec["column"]].to_numpy(dtype=float)[index]
                    rows = stratified_metrics(y, s, strata, spec["edges"], threshold=threshold)
                    self.curve_rows[split][name] = rows
                    for r in rows:
                        results[f"{split}_completeness_by_{name}_{r['label']}"] = r["completeness"]
                        results[f"{split}_detected_by_{name}_{r['label']}"] = r["n_detected"]
        self.results = results
        if trainer.is_global_zero:
            self._plot_roc(trainer, scored)
            for name in self.curves:
                self._plot_curve(trainer, name)

    def _plot_roc(self, trainer: L.Trainer, scored: Mapping[str, tuple[np.ndarray, np.ndarray, np.ndarray]]) -> None:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
        from sklearn.metrics import roc_curve

        fig, ax = plt.subplots(figsize=(6, 4.5))
        floor = 1.0
        for i, (split, (y, s, _)) in enumerate(scored.items()):
            n_neg = int(np.sum(y == 0))
            if n_neg == 0 or n_neg == y.size:
                continue
            fpr, tpr, _ = roc_curve(y, s)
            # FPR = 0 has no place on a log axis: draw it at half the resolution limit 1/n_neg
            ax.step(np.maximum(fpr, 0.5 / n_neg), tpr, where="post", color=f"C{i}", label=f"{split} (n_neg={n_neg})")
            ax.axvline(1.0 / n_neg, color=f"C{i}", ls=":", lw=1)
            floor = min(floor, 0.5 / n_neg)
        for f in self.fprs:
            ax.axvline(f, color="grey", lw=0.5)
        ax.set(xscale="log", xlim=(min(floor, min(self.fprs, default=1.0)) / 2, 1.0), ylim=(0, 1.02),
               xlabel="false-positive rate (log; dotted: 1/n_neg, the smallest resolved FPR)", ylabel="true-positive rate",
               title="ROC, best checkpoint")
        ax.legend(loc="lower right", fontsize=8)
        self.save_figure(trainer, fig, "roc_log_fpr")

    def _plot_curve(self, trainer: L.Trainer, name: str) -> None:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        fig, ax = plt.subplots(figsize=(7, 4))
        drawn = False
        for i, (split, curves) in enumerate(self.curve_rows.items()):
            rows = curves.get(name)
            if not rows:
                continue
            x = np.arange(len(rows))
            ax.plot(x, [r["completeness"] for r in rows], "o-", color=f"C{i}", label=split)
            for xi, r in zip(x, rows):
                ax.annotate(f"n={r['n_pos']}", (xi, 0.02 + 0.05 * i), ha="center", fontsize=7, color=f"C{i}")
            ax.set(xticks=x, xticklabels=[r["label"] for r in rows])
            drawn = True
        if not drawn:
            plt.close(fig)
            return
        t = self.results.get("search_threshold", float("nan"))
        note = "unresolved (too few negatives)" if math.isnan(t) else f"score > {t:.3g}"
        ax.set(ylim=(0, 1.05), xlabel=f"{self.curves[name]['column']} bin", ylabel="completeness (TPR of the bin)",
               title=f"Completeness at FPR {rate_label(self.curve_fpr)} on {self.threshold_split} negatives ({note})")
        ax.tick_params(axis="x", labelsize=7)
        ax.legend(fontsize=8)
        self.save_figure(trainer, fig, f"completeness_{name}")

    def summary(self) -> dict[str, Any]:
        return dict(self.results)
