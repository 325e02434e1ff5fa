"""The checkpoint callbacks train.py adds to every run.

ConfigStamp writes the config that matters into every checkpoint (rigor.guard's resume check reads it back),
and the epoch's validation metrics (a start that resumes after the final epoch trains nothing and reports those).

RunCheckpoint: a ModelCheckpoint whose state survives a run directory that was moved or copied.

Lightning's ModelCheckpoint drops its best score and top-k record when the checkpoint's directory differs
from its own (it warns and keeps only ``best_model_path``), so a moved run that resumes treats its next
epoch as the best one whatever its score: a copied run directory ended with other metrics than the
original (best_epoch 3 -> 4). Here the recorded paths are moved to this directory instead, and the rest
of the state is restored as it was.
"""

from __future__ import annotations

from typing import Any

import lightning as L
from lightning.pytorch.callbacks import Callback, ModelCheckpoint

from rigor.guard import CHECKPOINT_KEY

LAST_VAL_KEY = "rigor_last_val"


class ConfigStamp(Callback):
    """Writes the config that matters into every checkpoint (read back by ``rigor.guard.check_resume``), and the
    latest validation metrics (``val/*``, read back by train.py when a resumed start has no epoch left to run)."""

    def __init__(self, config: dict[str, Any]) -> None:
        self.config = config

    def on_save_checkpoint(self, trainer: L.Trainer, pl_module: L.LightningModule, checkpoint: dict[str, Any]) -> None:
        checkpoint[CHECKPOINT_KEY] = self.config
        checkpoint[LAST_VAL_KEY] = {k: float(v) for k, v in trainer.callback_metrics.items() if k.startswith("val/")}


class RunCheckpoint(ModelCheckpoint):
    """A ModelCheckpoint that maps the paths it restores into its own ``dirpath``."""

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        old = state_dict.get("dirpath")
        if old and self.dirpath and old != self.dirpath:
            def here(path: Any) -> Any:
                return self.dirpath + path[len(old):] if isinstance(path, str) and path.startswith(old) else path

            state_dict = {**state_dict, "dirpath": self.dirpath,
                          "best_k_models": {here(k): v for k, v in (state_dict.get("best_k_models") or {}).items()}}
            for key in ("best_model_path", "kth_best_model_path", "last_model_path"):
                if key in state_dict:
                    state_dict[key] = here(state_dict[key])
        super().load_state_dict(state_dict)
