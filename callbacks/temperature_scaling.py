"""Temperature scaling at the end of training, fitted on the validation split (never on test)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import lightning as L
import torch

from analysis.calibration import calibration_report, fit_temperature
from callbacks.base import RigorCallback, split_outputs

CHECKPOINT_KEY = "rigor_temperature"


class TemperatureScaling(RigorCallback):
    """Fits one temperature T on the best checkpoint's validation logits by minimising NLL.

    Runs after testing (when the best checkpoint is loaded). Reports ECE (15 bins), adaptive ECE,
    Brier, NLL and accuracy before and after on validation and test, writes T into metrics.json
    (``temperature``) and into the best checkpoint (key ``rigor_temperature``), where evaluate.py finds it.

    Args:
        fit_split: Split T is fitted on ("val"; "test" is refused).
        n_bins: ECE bins.
    """

    def __init__(self, fit_split: str = "val", n_bins: int = 15) -> None:
        if fit_split == "test":
            raise ValueError("callbacks.temperature_scaling.fit_split: the temperature must not be fitted on the test split")
        self.fit_split = fit_split
        self.n_bins = n_bins
        self.results: dict[str, Any] = {}

    def on_test_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if pl_module.output_kind not in ("binary", "multiclass"):
            raise ValueError(f"callbacks.temperature_scaling: {type(pl_module).__name__} is a {pl_module.output_kind} model; "
                             "temperature scaling applies to classifiers only (remove the callback)")
        fitted = split_outputs(trainer, pl_module, self.fit_split)  # shared with the other end-of-run analyses
        logits, targets = fitted.outputs, fitted.target.astype(int)
        temperature = fit_temperature(logits, targets)
        out: dict[str, Any] = {"temperature": temperature}
        test = pl_module.epoch_outputs("test")
        evaluated = {self.fit_split: (logits, targets)}
        if len(test["index"]):
            evaluated["test"] = (test["outputs"].numpy(), test["target"].numpy().astype(int))
        for split, (lg, y) in evaluated.items():
            for tag, t in (("uncalibrated", 1.0), ("calibrated", temperature)):
                for name, value in calibration_report(lg, y, t, self.n_bins).items():
                    out[f"{split}_{name}_{tag}"] = value
        self.results = out
        # the best checkpoint's path (callbacks.run_checkpoint keeps it right in a moved run directory)
        best = Path(getattr(trainer.checkpoint_callback, "best_model_path", "") or "")
        if trainer.is_global_zero and best.name and best.exists():
            ckpt = torch.load(best, map_location="cpu", weights_only=True)
            ckpt[CHECKPOINT_KEY] = temperature
            tmp = best.with_suffix(".ckpt.tmp")
            torch.save(ckpt, tmp)
            os.replace(tmp, best)  # atomic: a signal mid-write never leaves a broken best.ckpt

    def summary(self) -> dict[str, Any]:
        return dict(self.results)
