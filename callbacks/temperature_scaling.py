"""Temperature scaling: the one place a run's temperature is fitted, and the one reader of it.

TemperatureScaling fits T once per run, at the end (on the best checkpoint's validation logits; never on
test), and writes ``<run>/checkpoints/temperature.json`` (``temperature``, ``split``, ``n``, ``method``,
``checkpoint``) atomically; best.ckpt is never rewritten. Every reader (evaluate.py's predict, the
audio evaluation, the MC-Dropout summary) goes through ``read_temperature``. Runs saved before this
file existed carry T inside best.ckpt (key ``rigor_temperature``); ``read_temperature`` falls back to it.

End-of-run readers call ``require_fitter_first`` in ``setup``: the fitter must be listed before them in
``callbacks:`` (Lightning runs ``on_test_end`` in that order), so the file is there when they read it.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import lightning as L
import numpy as np
import torch

from analysis.calibration import calibration_report, fit_temperature, fit_temperature_ece_grid, probabilities_from_logits
from analysis.predictions import prediction_record, prediction_table, write_predictions
from callbacks.base import RigorCallback, split_outputs
from rigor.jsonio import read_record, write_json

#: Where runs saved before temperature.json kept T: inside best.ckpt (read as a fallback only).
CHECKPOINT_KEY = "rigor_temperature"
TEMPERATURE_FILE = "temperature.json"
METHODS = ("nll", "ece_grid")


def temperature_path(run_dir_or_ckpt: str | Path) -> Path:
    """``<run>/checkpoints/temperature.json`` for a run directory, its checkpoints folder or a checkpoint file."""
    path = Path(run_dir_or_ckpt)
    if path.suffix == ".ckpt" or path.is_file():
        return path.parent / TEMPERATURE_FILE
    return path / TEMPERATURE_FILE if path.name == "checkpoints" else path / "checkpoints" / TEMPERATURE_FILE


def read_temperature(run_dir_or_ckpt: str | Path, checkpoint: Mapping[str, Any] | None = None) -> dict[str, Any] | None:
    """The run's fitted temperature: ``{temperature, split, n, method, checkpoint}``, or None when none was fitted.

    Args:
        run_dir_or_ckpt: A run directory, its ``checkpoints`` folder, or a checkpoint file. Given a
            checkpoint file, a temperature fitted on another checkpoint of the run (e.g. best.ckpt when
            this is last.ckpt) does not apply and gives None.
        checkpoint: The checkpoint file's contents when the caller has already loaded them (the
            fallback for old runs then needs no second load).

    Returns:
        The record of temperature.json; for a run saved before it, ``{"temperature": T, "split": None,
        "n": None, "method": "nll", "checkpoint": <name>}`` from best.ckpt's ``rigor_temperature``.
    """
    path = Path(run_dir_or_ckpt)
    is_ckpt = path.suffix == ".ckpt" or path.is_file()
    ckpt = path if is_ckpt else temperature_path(path).parent / "best.ckpt"
    record = read_record(temperature_path(path))
    if record is not None:
        if "temperature" not in record:
            raise ValueError(f"{temperature_path(path)}: expected a 'temperature' key, found {sorted(record)}")
        if is_ckpt and record.get("checkpoint") not in (None, path.name):
            return None
        return record
    if checkpoint is None:
        if not ckpt.is_file():
            return None
        checkpoint = torch.load(ckpt, map_location="cpu", weights_only=True)
    value = checkpoint.get(CHECKPOINT_KEY)
    if value is None:
        return None
    return {"temperature": float(value), "split": None, "n": None, "method": "nll", "checkpoint": ckpt.name}


def require_fitter_first(trainer: L.Trainer, reader: L.Callback, who: str) -> None:
    """Refuse a reader of the temperature that would run before (or without) TemperatureScaling.

    Args:
        trainer: The trainer whose callbacks run ``on_test_end`` in list order.
        reader: The callback that reads temperature.json at the end of the run.
        who: Its config key, for the message.
    """
    names = [type(c).__name__ for c in trainer.callbacks]
    fitters = [i for i, c in enumerate(trainer.callbacks) if isinstance(c, TemperatureScaling)]
    mine = next(i for i, c in enumerate(trainer.callbacks) if c is reader)
    if not fitters or fitters[0] > mine:
        raise ValueError(f"callbacks.{who} reads the temperature that callbacks.temperature_scaling fits at the end of the "
                         f"run; list temperature_scaling before {who} (callbacks in order: {names})")


def _recorded_test_rows(trainer: L.Trainer, split: str) -> bool:
    """Whether the split's frame holds rows whose recorded ``split`` column says test."""
    frame_of = getattr(trainer.datamodule, "split_frame", None)
    if frame_of is None:
        return False
    frame = frame_of(split)
    return "split" in frame.columns and bool((frame["split"].astype(str) == "test").any())


class TemperatureScaling(RigorCallback):
    """Fits one temperature T on the best checkpoint's validation logits, by NLL or the seed's ECE grid.

    Runs after testing (when the best checkpoint is loaded). Reports ECE, adaptive ECE, Brier, NLL and
    accuracy before and after on the fit split and test, writes T into metrics.json (``temperature``)
    and into ``<run>/checkpoints/temperature.json`` (read_temperature), where evaluate.py and the other
    end-of-run callbacks find it.

    Args:
        fit_split: Split T is fitted on ("val"; "test", or rows recorded as test, are refused).
        n_bins: ECE bins (of the report and of the ECE grid).
        method: ``nll`` (minimise NLL) or ``ece_grid`` (the T of ``grid`` minimising ECE, seed 000's way).
        grid: ``[start, stop, step]`` of the ECE grid (stop included).
        write_predictions: Also write ``<run>/predictions_test.csv`` (and its sidecar) with the probabilities at
            T, as evaluate.py's predict would, for runs whose family writes no test predictions otherwise
            (the lens runs: task=power and task=compare read it). Leave it off where another callback writes
            that file (the MC-Dropout summary).
    """

    def __init__(self, fit_split: str = "val", n_bins: int = 15, method: str = "nll",
                 grid: tuple[float, float, float] = (0.5, 3.0, 0.001), write_predictions: bool = False) -> None:
        if fit_split == "test":
            raise ValueError("callbacks.temperature_scaling.fit_split: the temperature must not be fitted on the test split")
        if method not in METHODS:
            raise ValueError(f"callbacks.temperature_scaling.method: expected one of {METHODS}, got {method!r}")
        self.fit_split = fit_split
        self.n_bins = int(n_bins)
        self.method = method
        self.grid = tuple(float(g) for g in grid)
        self.write_predictions = bool(write_predictions)
        self.results: dict[str, Any] = {}

    def fit(self, logits: np.ndarray, targets: np.ndarray) -> float:
        """T on these logits by the configured method."""
        if self.method == "nll":
            return fit_temperature(logits, targets)
        start, stop, step = self.grid
        return fit_temperature_ece_grid(logits, targets, np.round(np.arange(start, stop + step / 2, step), 6), self.n_bins)[0]  # 3.000000000000002 is not on the grid

    def on_test_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if pl_module.output_kind not in ("binary", "multiclass"):
            raise ValueError(f"callbacks.temperature_scaling: {type(pl_module).__name__} is a {pl_module.output_kind} model; "
                             "temperature scaling applies to classifiers only (remove the callback)")
        # decided by the data's recorded split, not by the split's name
        if _recorded_test_rows(trainer, self.fit_split):
            raise ValueError(f"callbacks.temperature_scaling: split {self.fit_split!r} holds rows recorded as test; "
                             "the temperature must not be fitted on test data")
        fitted = split_outputs(trainer, pl_module, self.fit_split)  # shared with the other end-of-run analyses
        logits, targets = fitted.outputs, fitted.target.astype(int)
        temperature = self.fit(logits, targets)
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
        if trainer.is_global_zero:
            # beside the checkpoint T belongs to (callbacks.run_checkpoint keeps the path right in a moved run)
            best = Path(getattr(trainer.checkpoint_callback, "best_model_path", "") or "")
            target = temperature_path(best if best.name else trainer.default_root_dir)
            write_json(target, {"temperature": temperature, "split": self.fit_split, "n": int(len(targets)),
                                "method": self.method, "checkpoint": best.name or None})
            if self.write_predictions and len(test["index"]):
                tested = split_outputs(trainer, pl_module, "test")
                frame = trainer.datamodule.split_frame("test").iloc[tested.index]
                kind = pl_module.output_kind
                table = prediction_table(kind, tested.outputs, frame, "test",
                                         probs=probabilities_from_logits(tested.outputs, temperature))
                write_predictions(Path(trainer.default_root_dir) / "predictions_test.csv", table,
                                  prediction_record(kind, "test", temperature=temperature, temperature_fitted_on=self.fit_split,
                                                    checkpoint=best.name or None, written_by="callbacks.temperature_scaling"))

    def summary(self) -> dict[str, Any]:
        return dict(self.results)
