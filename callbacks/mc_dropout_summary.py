"""MC-Dropout on the test split at the end of training, with seed 000's triage, and the test predictions.

After testing (on the best checkpoint) the module runs ``n_passes`` stochastic passes per test batch
(lightning_modules/mc_dropout.MCDropout: the passes batched into one forward, only the dropout layers
sampling, BatchNorm on its running statistics). metrics.json gains:

- ``mc_mean_std``: the mean over test images of the std (over passes) of the predicted class's
  probability (the seed's "avg uncertainty"), ``mc_accuracy`` (argmax of the mean probability);
- ``mc_review``, ``mc_spot_check``, ``mc_auto_approve`` and their ``mc_frac_*`` (analysis.calibration.mc_triage
  with the thresholds of conf/thresholds/clip_subtask.yaml);
- with ``temperature_method: ece_grid``: ``temperature_ece_grid`` (the T minimising val ECE on a grid,
  the seed's way) and ``test_ece_calibrated_ece_grid``; the NLL temperature is the core
  TemperatureScaling callback's ``temperature``.

It also writes ``<run dir>/predictions_test.csv`` (and its JSON sidecar) in the contract's format
(logits, ``prob_k`` with the temperature fitted on val by the configured method, ``mc_prob_k``, ``mc_std``,
the split frame's metadata), which the family's summary reads for the paired tests of B against A.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import lightning as L
import numpy as np
import torch

from analysis.calibration import ece, fit_temperature, mc_triage, probabilities_from_logits
from analysis.calibration import fit_temperature_ece_grid
from analysis.predictions import prediction_table, write_predictions
from callbacks.base import RigorCallback, split_outputs
from lightning_modules.mc_dropout import MCDropout, summarize

TEMPERATURE_METHODS = ("nll", "ece_grid")


class MCDropoutSummary(RigorCallback):
    """MC-Dropout triage on the test split and the test predictions file.

    Args:
        n_passes: Stochastic passes (seed: 25).
        review_std, auto_conf, auto_std: Triage thresholds (from conf/thresholds/clip_subtask.yaml).
        temperature_method: ``nll`` (default) or ``ece_grid`` (also report the seed's grid temperature).
        grid: ``[start, stop, step]`` of the ECE grid.
        n_bins: ECE bins.
        max_batch: Rows per forward (passes x samples).
        write_predictions: Write predictions_test.csv (the summary's paired tests need it).
    """

    def __init__(
        self,
        n_passes: int = 25,
        review_std: float = 0.35,
        auto_conf: float = 0.90,
        auto_std: float = 0.25,
        temperature_method: str = "nll",
        grid: tuple[float, float, float] = (0.5, 3.0, 0.001),
        n_bins: int = 15,
        max_batch: int = 65536,
        write_predictions: bool = True,
    ) -> None:
        if temperature_method not in TEMPERATURE_METHODS:
            raise ValueError(f"callbacks.mc_dropout.temperature_method: expected one of {TEMPERATURE_METHODS}, got {temperature_method!r}")
        self.n_passes = int(n_passes)
        self.triage = {"review_std": float(review_std), "auto_conf": float(auto_conf), "auto_std": float(auto_std)}
        self.temperature_method = temperature_method
        self.grid = tuple(float(g) for g in grid)
        self.n_bins = int(n_bins)
        self.max_batch = int(max_batch)
        self.write = bool(write_predictions)
        self.results: dict[str, Any] = {}

    def on_test_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        datamodule = trainer.datamodule
        mc = MCDropout(pl_module, self.n_passes, self.max_batch)
        index, means, stds = [], [], []
        for batch in datamodule.split_dataloader("test"):
            batch = {k: v.to(pl_module.device) if isinstance(v, torch.Tensor) else v for k, v in batch.items()}
            mean, std = summarize(pl_module.output_kind, mc.sample(batch))
            index.append(batch["index"].cpu())
            means.append(mean.cpu())
            stds.append(std.cpu())
        order = torch.argsort(torch.cat(index))
        mc_mean, mc_std = torch.cat(means)[order].numpy(), torch.cat(stds)[order].numpy()
        test = split_outputs(trainer, pl_module, "test")  # the test pass itself
        val = split_outputs(trainer, pl_module, "val")
        y_test, y_val = test.target.astype(int), val.target.astype(int)
        out: dict[str, Any] = {"mc_n_passes": self.n_passes, "mc_mean_std": float(np.mean(mc_std)),
                               "mc_accuracy": float(np.mean(mc_mean.argmax(1) == y_test))}
        out.update({f"mc_{k}": v for k, v in mc_triage(mc_mean, mc_std, **self.triage).items() if k != "n"})
        temperature = fit_temperature(val.outputs, y_val)
        if self.temperature_method == "ece_grid":
            start, stop, step = self.grid
            t_grid, val_ece = fit_temperature_ece_grid(val.outputs, y_val, np.arange(start, stop + step / 2, step), self.n_bins)
            out.update({"temperature_ece_grid": t_grid, "val_ece_calibrated_ece_grid": val_ece,
                        "test_ece_calibrated_ece_grid": ece(probabilities_from_logits(test.outputs, t_grid), y_test, self.n_bins)})
            temperature = t_grid  # the predictions file's probabilities use the configured fit
        self.results = out
        if self.write and trainer.is_global_zero:
            frame = datamodule.split_frame("test").iloc[test.index]
            probs = probabilities_from_logits(test.outputs, temperature)
            table = prediction_table("multiclass", test.outputs, frame, "test", probs=probs, mc=(mc_mean, mc_std))
            write_predictions(Path(trainer.default_root_dir) / "predictions_test.csv", table,
                              {"kind": "multiclass", "split": "test", "temperature": temperature, "temperature_split": "val",
                               "temperature_method": self.temperature_method,
                               "mc_n_passes": self.n_passes,
                               "thresholds": {f"mc_{k}": v for k, v in self.triage.items()}, "written_by": "callbacks.mc_dropout_summary"})

    def summary(self) -> dict[str, Any]:
        return dict(self.results)
