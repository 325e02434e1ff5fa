"""Loggers: a CSV logger that never deletes earlier rows, and a quieter WandbLogger.

Lightning's CSVLogger deletes ``metrics.csv`` when its directory is not empty, so a run resumed from
``last.ckpt`` would lose the epochs logged before the crash; and under ``ddp_spawn`` the test phase,
whose writer is a fresh copy, rewrites the file with only its own columns and fails. This writer
appends instead, and starts from the header already on disk.
"""

from __future__ import annotations

import csv
from typing import Any

from lightning.pytorch.loggers import CSVLogger
from lightning.pytorch.loggers import WandbLogger as _LightningWandbLogger
from lightning.pytorch.loggers.csv_logs import ExperimentWriter
from lightning.pytorch.loggers.logger import rank_zero_experiment


class _AppendingWriter(ExperimentWriter):
    def _check_log_dir_exists(self) -> None:
        pass  # keep what is there: a resumed run appends to its own history

    def save(self) -> None:
        if self.metrics and not self.metrics_keys and self._fs.isfile(self.metrics_file_path):
            with self._fs.open(self.metrics_file_path, "r", newline="") as file:
                self.metrics_keys = next(csv.reader(file), [])
        super().save()


class AppendingCSVLogger(CSVLogger):
    """Drop-in CSVLogger (same arguments) whose metrics.csv survives resumes and spawned test phases."""

    @property
    @rank_zero_experiment
    def experiment(self) -> ExperimentWriter:
        if self._experiment is None:
            self._fs.makedirs(self.root_dir, exist_ok=True)
            self._experiment = _AppendingWriter(log_dir=self.log_dir)
        return self._experiment


class WandbLogger(_LightningWandbLogger):
    """Lightning's WandbLogger without the ``anonymous`` setting it always passes (W&B warns it has no effect)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._wandb_init.pop("anonymous", None)
