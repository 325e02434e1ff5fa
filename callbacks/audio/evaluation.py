"""Seed 003's per-run evaluation: SNR-stratified SPEECH accuracy, the leakage audit, predictions files.

After testing the best checkpoint: fits a temperature on the dev split (Rigor's ``val``; refused when
the split's recorded ``split`` column says test), writes ``predictions_val.csv`` and
``predictions_test.csv`` (binary: ``logit``, calibrated ``prob``, and the clip's group, SNR, duration)
into the run directory, and reports the SPEECH accuracy per SNR and the leakage audit's counts.
Temperature, ECE and Brier before/after come from callbacks.temperature_scaling (same fit).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import lightning as L

from analysis.audio.summary import snr_accuracy, snr_key
from analysis.calibration import fit_temperature, probabilities_from_logits
from analysis.predictions import prediction_table, write_predictions
from callbacks.base import RigorCallback, split_outputs


class AudioEvaluation(RigorCallback):
    """Per-SNR accuracy, audit counts and predictions files of an audio run.

    Args:
        fit_split: The split the temperature is fitted on (``val`` = dev); test is refused.
        write_predictions: Write predictions_<split>.csv for the fit split and test.
    """

    def __init__(self, fit_split: str = "val", write_predictions: bool = True) -> None:
        if fit_split == "test":
            raise ValueError("callbacks.audio_evaluation.fit_split: the temperature must not be fitted on the test split")
        self.fit_split = fit_split
        self.write = write_predictions
        self.results: dict[str, Any] = {}

    def on_test_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        dm = trainer.datamodule
        fit_frame = dm.split_frame(self.fit_split)
        if "split" in fit_frame.columns and (fit_frame["split"].astype(str) == "test").any():
            raise ValueError(f"callbacks.audio_evaluation: split {self.fit_split!r} holds clips recorded as test; "
                             "the temperature must not be fitted on test data")
        fitted = split_outputs(trainer, pl_module, self.fit_split)
        temperature = fit_temperature(fitted.outputs, fitted.target.astype(int))
        test = pl_module.epoch_outputs("test")
        out: dict[str, Any] = {f"audit_{k}": v for k, v in getattr(dm, "audit", {}).items()}
        splits = {self.fit_split: (fitted.index, fitted.outputs)}
        if len(test["index"]):
            splits["test"] = (test["index"].numpy(), test["outputs"].numpy())
        for split, (index, logits) in splits.items():
            frame = dm.split_frame(split).iloc[index].reset_index(drop=True)
            if split == "test" and "snr_db" in frame.columns:
                for snr, v in snr_accuracy(logits, frame["target"].to_numpy(), frame["snr_db"].to_numpy()).items():
                    out[f"test_speech_accuracy_snr_{snr_key(snr)}"] = v["accuracy"]
                    out[f"test_speech_count_snr_{snr_key(snr)}"] = v["count"]
            if self.write and trainer.is_global_zero:
                table = prediction_table("binary", logits, frame, split, probs=probabilities_from_logits(logits, temperature))
                write_predictions(Path(trainer.default_root_dir) / f"predictions_{split}.csv", table,
                                  {"kind": "binary", "split": split, "temperature": temperature,
                                   "temperature_fitted_on": self.fit_split, "target_names": []})
        self.results = out

    def summary(self) -> dict[str, Any]:
        return dict(self.results)
