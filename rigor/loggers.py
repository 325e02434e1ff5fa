"""Loggers: a CSV logger that never deletes earlier rows, and a quieter WandbLogger.

Lightning's CSVLogger deletes ``metrics.csv`` when its directory is not empty, so a run resumed from
``last.ckpt`` would lose the epochs logged before the crash; and under ``ddp_spawn`` the test phase,
whose writer is a fresh copy, rewrites the file with only its own columns and fails. This writer
appends instead, and starts from the header already on disk.
"""

from __future__ import annotations

import csv
from pathlib import Path
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
    """Lightning's WandbLogger that keeps one W&B run per run directory, across restarts.

    The run id is stored in ``<save_dir>/wandb_run_id.txt`` on the first start and read back on every
    later one, so a resumed run continues its own W&B run (online, or synced later as one offline run)
    instead of opening a second one. The ``anonymous`` setting Lightning always passes is dropped (W&B
    warns that it has no effect).
    """

    ID_FILE = "wandb_run_id.txt"

    def __init__(self, *args: Any, save_dir: str | None = None, id: str | None = None, version: str | None = None,
                 **kwargs: Any) -> None:
        run_id = id or version
        if run_id is None and save_dir:
            path = Path(save_dir) / self.ID_FILE
            if path.is_file():
                run_id = path.read_text().strip() or None
            if run_id is None:
                import secrets

                run_id = secrets.token_hex(4)
                path.parent.mkdir(parents=True, exist_ok=True)
                path.write_text(run_id + "\n")
        super().__init__(*args, save_dir=save_dir, id=run_id, **kwargs)
        self._wandb_init.pop("anonymous", None)
