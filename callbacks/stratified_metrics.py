"""Stratified AUROC over any metadata columns (seed 004 section 5.3 for θ_E), every few epochs and on test."""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping
from typing import Any

import lightning as L
import numpy as np

from analysis.metrics import gate_verdict, gate_verdict_above
from analysis.metrics import NEGATIVES, bin_spec, spread_summary, stratified_metrics
from callbacks.base import RigorCallback

log = logging.getLogger(__name__)

#: The verdict thresholds a stratum may carry (seed 6.3 for θ_E), all required when verdicts are on.
VERDICT_KEYS = ("min_auroc_pass", "min_auroc_fail", "spread_pass", "spread_fail")


class StratifiedMetrics(RigorCallback):
    """Per-bin AUROC of the binary score over configured metadata columns; empty bins are NaN with counts.

    One code path (analysis.metrics.stratified_metrics) for every column: θ_E and arc S/N (negatives carry
    none: each bin's positives against all negatives), PSF bin, depth bin, host magnitude (negatives have
    them: ``negatives: same_bin``). Validation bins are logged every ``every_n_epochs``
    (``val/auroc_<name>_<bin>``, ``val/count_<name>_<bin>``); after testing the best checkpoint the summary
    holds ``test_auroc_by_<name>_<bin>``, ``test_count_by_<name>_<bin>`` (positives; ``test_count_neg_by_...``
    too for ``same_bin`` strata), ``test_<name>_min_auroc`` and
    ``test_<name>_spread``, plus ``<name>_min_auroc_verdict`` / ``<name>_spread_verdict`` for strata with
    verdict thresholds, and a bar chart ``plots/<name>_auroc.png`` per stratum.

    Args:
        strata: Name -> ``{column, edges, negatives: all | same_bin, required: bool}``. A column missing
            from the split frame stops the run when ``required``, else that stratum is skipped (logged):
            real manifests may carry any subset of the metadata.
        every_n_epochs: Validation epochs between evaluations.
        verdicts: Name -> ``{min_auroc_pass, min_auroc_fail, spread_pass, spread_fail}`` (PASS above /
            FAIL below on the worst bin; PASS below / FAIL above on max - min), from the family's
            thresholds config; strata without an entry get no verdict.
    """

    def __init__(self, strata: Mapping[str, Mapping[str, Any]], every_n_epochs: int = 5,
                 verdicts: Mapping[str, Mapping[str, float]] | None = None) -> None:
        self.strata: dict[str, dict[str, Any]] = {}
        for name, spec in (strata or {}).items():
            if spec is None:
                continue  # switched off from the command line
            parsed = bin_spec(f"strata.{name}", spec, extra=", negatives, required")
            negatives = spec.get("negatives", "all")
            if negatives not in NEGATIVES:
                raise ValueError(f"strata.{name}.negatives: expected one of {NEGATIVES}, got {negatives!r}")
            self.strata[str(name)] = {**parsed, "negatives": negatives, "required": bool(spec.get("required", False))}
        self.verdicts: dict[str, dict[str, float]] = {}
        for name, th in (verdicts or {}).items():
            if name not in self.strata:
                raise ValueError(f"verdicts.{name}: no stratum of that name (strata: {sorted(self.strata)})")
            missing = [k for k in VERDICT_KEYS if th.get(k) is None]
            if missing:
                raise ValueError(f"verdicts.{name}: missing {missing} (from the family's thresholds config)")
            self.verdicts[str(name)] = {k: float(th[k]) for k in VERDICT_KEYS}
        self.every_n_epochs = every_n_epochs
        self.history: list[dict[str, Any]] = []
        self.test_rows: dict[str, list[dict]] = {}
        self.test_summary: dict[str, Any] = {}
        self._skipped: set[str] = set()

    def _available(self, frame: Any) -> dict[str, dict[str, Any]]:
        out = {}
        for name, spec in self.strata.items():
            if spec["column"] in frame.columns:
                out[name] = spec
            elif spec["required"]:
                raise ValueError(f"strata.{name}: column {spec['column']!r} is not in the split's metadata "
                                 f"(columns: {list(frame.columns)})")
            elif name not in self._skipped:
                self._skipped.add(name)
                log.warning("stratified metrics: no %r column in the data; stratum %s skipped", spec["column"], name)
        return out

    def rows(self, trainer: L.Trainer, pl_module: L.LightningModule, split: str) -> dict[str, list[dict]]:
        """Per-stratum bins of one split, from the outputs the val/test epoch already computed."""
        out = pl_module.epoch_outputs(split)
        frame = trainer.datamodule.split_frame(split)
        index = out["index"].numpy()
        targets, scores = out["target"].numpy(), out["outputs"].numpy()
        return {name: stratified_metrics(targets, scores, frame[spec["column"]].to_numpy(dtype=float)[index],
                                         spec["edges"], negatives=spec["negatives"])
                for name, spec in self._available(frame).items()}

    def on_validation_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        epoch = trainer.current_epoch
        if not self.active(trainer) or (epoch + 1) % self.every_n_epochs:
            return
        rows = self.rows(trainer, pl_module, "val")
        self.history.append({"epoch": epoch, "rows": rows})
        logged = {}
        for name, bins in rows.items():
            for r in bins:
                logged[f"val/auroc_{name}_{r['label']}"] = r["auroc"]
                logged[f"val/count_{name}_{r['label']}"] = float(r["n_pos"])
        pl_module.log_dict(logged, sync_dist=False)

    def on_test_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.test_rows = self.rows(trainer, pl_module, "test")
        same_bin = {name for name, spec in self.strata.items() if spec["negatives"] == "same_bin"}
        self.test_summary = summarize_strata(self.test_rows, self.verdicts, prefix="test_", negative_counts=same_bin)
        for name, bins in self.test_rows.items():
            self._plot(trainer, name, bins)

    def _plot(self, trainer: L.Trainer, name: str, bins: list[dict]) -> None:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        spec = self.strata[name]
        fig, ax = plt.subplots(figsize=(7, 4))
        x = np.arange(len(bins))
        values = [r["auroc"] for r in bins]
        ax.bar(x, np.nan_to_num(values, nan=0.0), color=["lightgrey" if math.isnan(v) else "C0" for v in values])
        for xi, r in zip(x, bins):
            text = "NaN" if math.isnan(r["auroc"]) else f"{r['auroc']:.3f}"
            y = 0.02 if math.isnan(r["auroc"]) else r["auroc"] + 0.01
            ax.text(xi, y, f"{text}\nn={r['n_pos']}", ha="center", fontsize=8)
        th = self.verdicts.get(name)
        if th:
            ax.axhline(th["min_auroc_pass"], color="C2", ls="--", lw=1, label=f"PASS > {th['min_auroc_pass']}")
            ax.axhline(th["min_auroc_fail"], color="C3", ls="--", lw=1, label=f"FAIL < {th['min_auroc_fail']}")
            ax.legend(loc="lower right", fontsize=8)
        against = "all negatives" if spec["negatives"] == "all" else "the bin's negatives"
        ax.set(xticks=x, xticklabels=[r["label"] for r in bins], xlabel=f"{spec['column']} bin",
               ylabel=f"AUROC (bin positives vs {against})", ylim=(0, 1.12), title=f"Test AUROC by {spec['column']}")
        ax.tick_params(axis="x", labelsize=7)
        self.save_figure(trainer, fig, f"{name}_auroc")

    def summary(self) -> dict[str, Any]:
        return dict(self.test_summary)

    def state(self) -> dict[str, Any]:
        return {"history": self.history}

    def restore(self, state: dict[str, Any]) -> None:
        self.history = list(state.get("history", []))


def summarize_strata(rows: Mapping[str, list[dict]], verdicts: Mapping[str, Mapping[str, float]], prefix: str,
                     negative_counts: set[str] | frozenset[str] = frozenset()) -> dict[str, Any]:
    """Flat metrics of stratified bins: per-bin AUROC and count, worst bin, spread and their verdicts.

    ``count_by`` is the bin's positives; strata named in `negative_counts` (scored against their own
    negatives) also get ``count_neg_by``, so a one-class bin shows which class it lacks.
    """
    out: dict[str, Any] = {}
    for name, bins in rows.items():
        spread = spread_summary(bins)
        out[f"{prefix}{name}_min_auroc"] = spread["min_auroc"]
        out[f"{prefix}{name}_spread"] = spread["spread"]
        th = verdicts.get(name)
        if th:
            out[f"{name}_min_auroc_verdict"] = gate_verdict_above(spread["min_auroc"], th["min_auroc_pass"], th["min_auroc_fail"])
            out[f"{name}_spread_verdict"] = gate_verdict(spread["spread"], th["spread_pass"], th["spread_fail"])
        for r in bins:
            out[f"{prefix}auroc_by_{name}_{r['label']}"] = r["auroc"]
            out[f"{prefix}count_by_{name}_{r['label']}"] = r["n_pos"]
            if name in negative_counts:
                out[f"{prefix}count_neg_by_{name}_{r['label']}"] = r["n_neg"]
    return out
