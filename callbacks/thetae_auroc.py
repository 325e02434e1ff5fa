"""θ_E-stratified AUROC with counts (seed 004 section 5.3), every few epochs and on the test set."""

from __future__ import annotations

from typing import Any

import lightning as L
import numpy as np

from analysis.gates import gate_verdict, gate_verdict_above
from analysis.metrics import spread_summary, stratified_auroc
from callbacks.base import RigorCallback


class ThetaEStratifiedAUROC(RigorCallback):
    """Scores each θ_E bin's positives against all negatives; empty bins are NaN with count 0.

    Args:
        edges: θ_E bin edges in arcsec.
        every_n_epochs: Validation epochs between evaluations.
        column: Metadata column holding θ_E.
        min_auroc_pass, min_auroc_fail: Seed 6.3 thresholds on the worst bin (PASS above / FAIL below);
            required, from conf/thresholds/lens.yaml.
        spread_pass, spread_fail: Seed 6.3 thresholds on max - min over bins (PASS below / FAIL above);
            required, likewise.
    """

    def __init__(
        self,
        edges: list[float] = (0.5, 0.75, 1.0, 1.5, 2.0, 2.5, 3.0),
        every_n_epochs: int = 5,
        column: str = "theta_e",
        *,
        min_auroc_pass: float,
        min_auroc_fail: float,
        spread_pass: float,
        spread_fail: float,
    ) -> None:
        self.edges = [float(e) for e in edges]
        self.every_n_epochs = every_n_epochs
        self.column = column
        self.min_thresholds = (min_auroc_pass, min_auroc_fail)
        self.spread_thresholds = (spread_pass, spread_fail)
        self.history: list[dict[str, Any]] = []
        self.test_rows: list[dict] = []
        self.test_summary: dict[str, Any] = {}

    def _rows(self, trainer: L.Trainer, pl_module: L.LightningModule, split: str) -> list[dict]:
        out = pl_module.epoch_outputs(split)
        frame = trainer.datamodule.split_frame(split)
        index = out["index"].numpy()
        strata = frame[self.column].to_numpy(dtype=float)[index]
        return stratified_auroc(out["target"].numpy(), out["outputs"].numpy(), strata, self.edges)

    def on_validation_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        epoch = trainer.current_epoch
        if not self.active(trainer) or (epoch + 1) % self.every_n_epochs:
            return
        rows = self._rows(trainer, pl_module, "val")
        self.history.append({"epoch": epoch, "rows": rows})
        logged = {}
        for r in rows:
            logged[f"val/auroc_thetae_{r['label']}"] = r["auroc"]
            logged[f"val/count_thetae_{r['label']}"] = float(r["n_pos"])
        pl_module.log_dict(logged, sync_dist=False)

    def on_test_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.test_rows = self._rows(trainer, pl_module, "test")
        spread = spread_summary(self.test_rows)
        min_verdict = gate_verdict_above(spread["min_auroc"], *self.min_thresholds)
        self.test_summary = {
            "test_thetae_min_auroc": spread["min_auroc"],
            "test_thetae_spread": spread["spread"],
            "thetae_min_auroc_verdict": min_verdict,
            "thetae_spread_verdict": gate_verdict(spread["spread"], *self.spread_thresholds),
        }
        for r in self.test_rows:
            self.test_summary[f"test_auroc_by_thetae_{r['label']}"] = r["auroc"]
            self.test_summary[f"test_count_by_thetae_{r['label']}"] = r["n_pos"]
        self._plot(trainer)

    def _plot(self, trainer: L.Trainer) -> None:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        fig, ax = plt.subplots(figsize=(7, 4))
        labels = [r["label"] for r in self.test_rows]
        values = [r["auroc"] for r in self.test_rows]
        x = np.arange(len(labels))
        ax.bar(x, np.nan_to_num(values, nan=0.0), color=["C0" if v == v else "lightgrey" for v in values])
        for xi, r in zip(x, self.test_rows):
            text = "NaN" if r["auroc"] != r["auroc"] else f"{r['auroc']:.3f}"
            ax.text(xi, 0.02 if r["auroc"] != r["auroc"] else r["auroc"] + 0.01, f"{text}\nn={r['n_pos']}", ha="center", fontsize=8)
        ax.axhline(self.min_thresholds[0], color="C2", ls="--", lw=1, label=f"PASS > {self.min_thresholds[0]}")
        ax.axhline(self.min_thresholds[1], color="C3", ls="--", lw=1, label=f"FAIL < {self.min_thresholds[1]}")
        ax.set(xticks=x, xticklabels=labels, xlabel="θ_E bin (arcsec)", ylabel="AUROC (bin positives vs all negatives)", ylim=(0, 1.12), title="Test AUROC by θ_E")
        ax.legend(loc="lower right", fontsize=8)
        self.save_figure(trainer, fig, "thetae_auroc")

    def summary(self) -> dict[str, Any]:
        return dict(self.test_summary)

    def state(self) -> dict[str, Any]:
        return {"history": self.history}

    def restore(self, state: dict[str, Any]) -> None:
        self.history = list(state.get("history", []))
