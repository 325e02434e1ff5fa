"""Seed 003's per-run evaluation: SNR-stratified SPEECH accuracy, the leakage audit, predictions files.

After testing the best checkpoint: reads the temperature that callbacks.temperature_scaling fitted on
the dev split (Rigor's ``val``; read_temperature, so that callback must be listed first), writes
``predictions_<fit split>.csv`` and ``predictions_test.csv`` (binary: ``logit``, calibrated ``prob``,
and the clip's group, SNR, duration) into the run directory, and reports the SPEECH accuracy per SNR,
the leakage audit's counts and the operating point chosen on dev for the NONSPEECH target. Temperature,
ECE and Brier before/after are temperature_scaling's.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import lightning as L

from analysis.audio.summary import operating_point, snr_accuracy, snr_key
from analysis.calibration import probabilities_from_logits
from analysis.predictions import prediction_record, prediction_table, write_predictions
from callbacks.base import RigorCallback, split_outputs
from callbacks.temperature_scaling import read_temperature, require_fitter_first


class AudioEvaluation(RigorCallback):
    """Per-SNR accuracy, audit counts and predictions files of an audio run.

    Args:
        write_predictions: Write predictions_<split>.csv for the temperature's fit split and test.
        nonspeech_min: The seed's NONSPEECH target; the operating point (``op_threshold`` chosen on the fit
            split, ``op_speech_accuracy`` / ``op_nonspeech_accuracy`` / ``op_balanced_accuracy`` on test) go
            into metrics.json, beside the module's ``test_auroc``.
    """

    def __init__(self, write_predictions: bool = True, nonspeech_min: float = 0.95) -> None:
        self.write = write_predictions
        self.nonspeech_min = float(nonspeech_min)
        self.results: dict[str, Any] = {}

    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        require_fitter_first(trainer, self, self.summary_name or "audio_evaluation")

    def on_test_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        dm = trainer.datamodule
        fit = read_temperature(trainer.default_root_dir)
        if fit is None:
            raise RuntimeError(f"callbacks.audio_evaluation: no temperature under {trainer.default_root_dir}/checkpoints; "
                               "callbacks.temperature_scaling must run first")
        temperature, fit_split = fit["temperature"], fit["split"]
        fitted = split_outputs(trainer, pl_module, fit_split)  # the pass the temperature was fitted on
        test = pl_module.epoch_outputs("test")
        out: dict[str, Any] = {f"audit_{k}": v for k, v in getattr(dm, "audit", {}).items()}
        splits = {fit_split: (fitted.index, fitted.outputs)}
        if len(test["index"]):
            splits["test"] = (test["index"].numpy(), test["outputs"].numpy())
        if "test" in splits:  # the seed's operating point: threshold from dev for NONSPEECH >= target (analysis.audio.summary)
            dev_frame = dm.split_frame(fit_split).iloc[fitted.index].reset_index(drop=True)
            test_frame = dm.split_frame("test").iloc[splits["test"][0]].reset_index(drop=True)
            op = operating_point(fitted.outputs, dev_frame["target"].to_numpy(), splits["test"][1],
                                 test_frame["target"].to_numpy(), self.nonspeech_min)
            op.pop("auroc")  # test_auroc is the module's own metric
            out.update({f"op_{k}": v for k, v in op.items()})
        for split, (index, logits) in splits.items():
            frame = dm.split_frame(split).iloc[index].reset_index(drop=True)
            if split == "test" and "snr_db" in frame.columns:
                for snr, v in snr_accuracy(logits, frame["target"].to_numpy(), frame["snr_db"].to_numpy()).items():
                    out[f"test_speech_accuracy_snr_{snr_key(snr)}"] = v["accuracy"]
                    out[f"test_speech_count_snr_{snr_key(snr)}"] = v["count"]
            if self.write and trainer.is_global_zero:
                table = prediction_table("binary", logits, frame, split, probs=probabilities_from_logits(logits, temperature))
                write_predictions(Path(trainer.default_root_dir) / f"predictions_{split}.csv", table,
                                  prediction_record("binary", split, temperature=temperature, temperature_fitted_on=fit_split,
                                                    temperature_method=fit["method"]))
        self.results = out

    def summary(self) -> dict[str, Any]:
        return dict(self.results)
