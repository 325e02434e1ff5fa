"""Shortcut gates (seed 004 sections 5.2 and 6.1): core and radial-profile LR AUROCs, every few epochs.

The same gates on an experiment's data without training are the lens task ``evaluate.py task=lens_gates``
(tasks/lens/gates.py).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import lightning as L


from analysis.lens.gates import shortcut_gates
from analysis.metrics import gate_verdict
from callbacks.base import RigorCallback


class ShortcutGates(RigorCallback):
    """Cross-validated logistic-regression AUROCs on the core pixels and on the radial profile.

    The inputs are validation images as the model sees them: preprocessed, and core-masked with the
    training masking in force at that epoch (so a masking schedule shows up in the gates). Folds keep the
    two members of a pair together (pair_id), so paired data are not scored with leaked hosts. At the end of
    fitting the gates run once more on the full validation set (``final_core_lr_auc``,
    ``final_radial_lr_auc``) and get PASS/WARN/FAIL verdicts.

    Args:
        every_n_epochs: Run after every n-th validation epoch.
        n_samples: Validation inputs per periodic gate (gate_n_samples).
        core_radius: Pixels strictly inside this radius feed the core gate.
        radial_bins: Annuli of the radial profile (None: out to the stamp edge).
        n_folds: Cross-validation folds.
        with_training_masking: Apply the epoch's training masking to the gate inputs.
        seed: Seed of the subset and the folds.
        core_pass_below, core_fail_above: Core gate thresholds (required: ``${thresholds.*}`` in
            conf/callbacks/lens.yaml, from conf/thresholds/lens.yaml).
        radial_pass_below, radial_fail_above: Radial gate thresholds (required, likewise).
    """

    def __init__(
        self,
        every_n_epochs: int = 5,
        n_samples: int = 2000,
        core_radius: float = 5.0,
        radial_bins: int | None = None,
        n_folds: int = 5,
        with_training_masking: bool = True,
        seed: int = 0,
        *,
        core_pass_below: float,
        core_fail_above: float,
        radial_pass_below: float,
        radial_fail_above: float,
    ) -> None:
        self.every_n_epochs = every_n_epochs
        self.n_samples = n_samples
        self.core_radius = core_radius
        self.radial_bins = radial_bins
        self.n_folds = n_folds
        self.core_thresholds = (core_pass_below, core_fail_above)
        self.radial_thresholds = (radial_pass_below, radial_fail_above)
        self.with_training_masking = with_training_masking
        self.seed = seed
        self.history: list[dict[str, Any]] = []
        self.final: dict[str, Any] = {}

    def _gates(self, datamodule: Any, epoch: int, n: int | None) -> dict[str, Any]:
        images, labels, groups = datamodule.model_inputs("val", n=n, epoch=epoch if self.with_training_masking else None, seed=self.seed)
        values = shortcut_gates(images, labels, self.core_radius, self.radial_bins, self.n_folds, self.seed, groups)
        return {**values, **self.verdicts(values)}

    def verdicts(self, values: dict[str, Any]) -> dict[str, str]:
        """``core_gate`` and ``radial_gate`` (PASS/WARN/FAIL) of gate values, with this run's thresholds."""
        return {"core_gate": gate_verdict(values["core_lr_auc"], *self.core_thresholds),
                "radial_gate": gate_verdict(values["radial_lr_auc"], *self.radial_thresholds)}

    def on_validation_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        epoch = trainer.current_epoch
        if not self.active(trainer) or (epoch + 1) % self.every_n_epochs:
            return
        values = self._gates(trainer.datamodule, epoch, self.n_samples)
        self.history.append({"epoch": epoch, **values})
        pl_module.log_dict({f"val/{k}": float(values[k]) for k in ("core_lr_auc", "radial_lr_auc", "gate_n_samples")}, sync_dist=False)

    def on_fit_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        last_epoch = max(trainer.current_epoch - 1, 0)  # current_epoch has already advanced past the last one
        values = self._gates(trainer.datamodule, last_epoch, None)
        self.final = {
            "final_core_lr_auc": values["core_lr_auc"],
            "final_radial_lr_auc": values["radial_lr_auc"],
            "final_gate_n_samples": values["gate_n_samples"],
            "core_gate": values["core_gate"],
            "radial_gate": values["radial_gate"],
        }
        if self.history and trainer.is_global_zero:
            import pandas as pd

            pd.DataFrame(self.history).to_csv(Path(trainer.default_root_dir) / "gate_history.csv", index=False)
            self._plot(trainer)

    def _plot(self, trainer: L.Trainer) -> None:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        fig, ax = plt.subplots(figsize=(6, 4))
        epochs = [h["epoch"] for h in self.history]
        ax.plot(epochs, [h["core_lr_auc"] for h in self.history], "o-", label="core LR AUROC")
        ax.plot(epochs, [h["radial_lr_auc"] for h in self.history], "s-", label="radial LR AUROC")
        for y, style in ((self.core_thresholds[1], "C0"), (self.radial_thresholds[1], "C1")):
            ax.axhline(y, color=style, ls="--", lw=1)
        ax.axhline(0.5, color="grey", lw=0.5)
        ax.set(xlabel="epoch", ylabel="5-fold CV AUROC", title="Shortcut gates (dashed: FAIL above)", ylim=(0.4, 1.0))
        ax.legend()
        self.save_figure(trainer, fig, "gate_history")

    def summary(self) -> dict[str, Any]:
        return dict(self.final)

    def state(self) -> dict[str, Any]:
        return {"history": self.history}

    def restore(self, state: dict[str, Any]) -> None:
        self.history = list(state.get("history", []))
