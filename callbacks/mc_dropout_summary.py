"""MC-Dropout on the test split at the end of training, with seed 000's triage, and the test predictions.

After testing (on the best checkpoint) the module runs ``n_passes`` stochastic passes per test batch
(lightning_modules/mc_dropout.MCDropout: the passes batched into one forward, only the dropout layers
sampling, BatchNorm on its running statistics). metrics.json gains:

- ``mc_mean_std``: the mean over test images of the std (over passes) of the predicted class's
  probability (the seed's "avg uncertainty"), ``mc_accuracy`` (argmax of the mean probability);
- ``mc_review``, ``mc_spot_check``, ``mc_auto_approve`` and their ``mc_frac_*`` (analysis.calibration.mc_triage
  with the thresholds of conf/thresholds/clip_subtask.yaml).

It also writes ``<run dir>/predictions_test.csv`` (and its JSON sidecar) in the contract's format
(logits, ``prob_k`` at the temperature callbacks.temperature_scaling fitted on val, read with
read_temperature, so that callback must be listed first; ``mc_prob_k``, ``mc_std``, the split frame's
metadata), which the family's summary reads for the paired tests of B against A.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import lightning as L
import numpy as np
import torch

from analysis.calibration import mc_triage, probabilities_from_logits
from analysis.predictions import prediction_record, prediction_table, write_predictions
from callbacks.base import RigorCallback, split_outputs
from callbacks.temperature_scaling import read_temperature, require_fitter_first
from lightning_modules.mc_dropout import MCDropout, summarize


class MCDropoutSummary(RigorCallback):
    """MC-Dropout triage on the test split and the test predictions file.

    Args:
        n_passes: Stochastic passes (seed: 25).
        review_std, auto_conf, auto_std: Triage thresholds (from conf/thresholds/clip_subtask.yaml).
        max_batch: Rows per forward (passes x samples).
        write_predictions: Write predictions_test.csv (the summary's paired tests need it).
    """

    def __init__(
        self,
        n_passes: int = 25,
        review_std: float = 0.35,
        auto_conf: float = 0.90,
        auto_std: float = 0.25,
        max_batch: int = 65536,
        write_predictions: bool = True,
    ) -> None:
        self.n_passes = int(n_passes)
        self.triage = {"review_std": float(review_std), "auto_conf": float(auto_conf), "auto_std": float(auto_std)}
        self.max_batch = int(max_batch)
        self.write = bool(write_predictions)
        self.results: dict[str, Any] = {}

    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        if self.write:
            require_fitter_first(trainer, self, self.summary_name or "mc_dropout")

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
        y_test = test.target.astype(int)
        out: dict[str, Any] = {"mc_n_passes": self.n_passes, "mc_mean_std": float(np.mean(mc_std)),
                               "mc_accuracy": float(np.mean(mc_mean.argmax(1) == y_test))}
        out.update({f"mc_{k}": v for k, v in mc_triage(mc_mean, mc_std, **self.triage).items() if k != "n"})
        self.results = out
        if self.write and trainer.is_global_zero:
            fit = read_temperature(trainer.default_root_dir)
            if fit is None:
                raise RuntimeError(f"callbacks.mc_dropout: no temperature under {trainer.default_root_dir}/checkpoints; "
                                   "callbacks.temperature_scaling must run first")
            temperature = fit["temperature"]
            frame = datamodule.split_frame("test").iloc[test.index]
            probs = probabilities_from_logits(test.outputs, temperature)
            table = prediction_table("multiclass", test.outputs, frame, "test", probs=probs, mc=(mc_mean, mc_std))
            write_predictions(Path(trainer.default_root_dir) / "predictions_test.csv", table,
                              prediction_record("multiclass", "test", temperature=temperature, temperature_fitted_on=fit["split"],
                                                thresholds={f"mc_{k}": v for k, v in self.triage.items()},
                                                temperature_split=fit["split"],  # the key readers knew before schema 2
                                                temperature_method=fit["method"], mc_n_passes=self.n_passes,
                                                written_by="callbacks.mc_dropout_summary"))

    def summary(self) -> dict[str, Any]:
        return dict(self.results)
