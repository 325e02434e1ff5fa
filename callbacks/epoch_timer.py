"""Wall time per training epoch (seed 004 section 5.1: epoch_time_sec)."""

from __future__ import annotations

import time

import lightning as L

from callbacks.base import RigorCallback


class EpochTimer(RigorCallback):
    """Logs ``train/epoch_time_sec``: from the start of the training epoch to the end of its validation."""

    def __init__(self) -> None:
        self._start: float | None = None

    def on_train_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._start = time.perf_counter()

    def on_validation_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if self._start is not None and self.active(trainer):
            pl_module.log("train/epoch_time_sec", time.perf_counter() - self._start, sync_dist=False)
            self._start = None
