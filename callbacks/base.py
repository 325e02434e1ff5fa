"""RigorCallback: the small contract shared by Rigor's analysis callbacks.

- ``summary()`` returns the callback's final numbers. Rank 0 writes it to
  ``<run dir>/summaries/<Callback>.json`` at teardown (so it also survives processes that ``ddp_spawn``
  starts and ends), and train.py merges these files into metrics.json (callbacks never read each other).
- ``state()`` / ``restore(state)`` persist the callback's history in checkpoints, so a resumed run ends
  with the same history; state is restored only when fitting resumes, not when the best checkpoint is
  loaded for testing (that would roll the history back to the best epoch).
- ``save_figure`` writes a PNG under ``<run dir>/plots/`` and logs it to W&B when W&B is on.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

import lightning as L
import numpy as np
import torch
from lightning.pytorch.callbacks import Callback
from lightning.pytorch.loggers import WandbLogger
from lightning.pytorch.trainer.states import TrainerFn

from rigor.jsonio import write_json

log = logging.getLogger(__name__)


def split_logits(
    pl_module: L.LightningModule, loader: Any, transforms: dict[Any, Callable[[torch.Tensor], torch.Tensor]] | None = None
) -> tuple[dict[Any, np.ndarray], np.ndarray]:
    """Logits of a whole split under each input transform, in one pass over the loader, in eval mode.

    Args:
        pl_module: The module (its forward gives the logits).
        loader: An ordered loader of dict batches with ``image`` and ``target``.
        transforms: Named functions applied to the image batch (default: ``{None: identity}``).

    Returns:
        ({name: logits}, targets as int)
    """
    transforms = transforms or {None: lambda x: x}
    logits: dict[Any, list[torch.Tensor]] = {k: [] for k in transforms}
    targets = []
    was_training = pl_module.training
    pl_module.eval()
    with torch.inference_mode():
        for batch in loader:
            images = batch["image"].to(pl_module.device)
            targets.append(batch["target"])
            for key, fn in transforms.items():
                logits[key].append(pl_module(fn(images)).float().cpu())
    pl_module.train(was_training)
    return {k: torch.cat(v).numpy() for k, v in logits.items()}, torch.cat(targets).numpy().astype(int)


def summary_dir(run_dir: str | Path) -> Path:
    """Where callbacks leave their summaries for train.py."""
    return Path(run_dir) / "summaries"


class RigorCallback(Callback):
    """Base class: summary, checkpointed state and figure saving."""

    def summary(self) -> dict[str, Any]:
        return {}

    def state(self) -> dict[str, Any]:
        return {}

    def restore(self, state: dict[str, Any]) -> None:
        pass

    def on_save_checkpoint(self, trainer: L.Trainer, pl_module: L.LightningModule, checkpoint: dict[str, Any]) -> None:
        checkpoint.setdefault("rigor_callbacks", {})[type(self).__name__] = self.state()

    def on_load_checkpoint(self, trainer: L.Trainer, pl_module: L.LightningModule, checkpoint: dict[str, Any]) -> None:
        if trainer.state.fn == TrainerFn.FITTING:
            state = checkpoint.get("rigor_callbacks", {}).get(type(self).__name__)
            if state is not None:
                self.restore(state)

    def teardown(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        summary = self.summary()
        if summary and trainer.is_global_zero:
            write_json(summary_dir(trainer.default_root_dir) / f"{type(self).__name__}.json", summary)

    @staticmethod
    def active(trainer: L.Trainer) -> bool:
        """False during the sanity-check pass, whose numbers mean nothing."""
        return not trainer.sanity_checking

    @staticmethod
    def save_figure(trainer: L.Trainer, fig: Any, name: str) -> Path:
        """Save `fig` as <run dir>/plots/<name>.png and log it to W&B if a W&B logger is attached."""
        import matplotlib.pyplot as plt

        out = Path(trainer.default_root_dir) / "plots" / f"{name}.png"
        out.parent.mkdir(parents=True, exist_ok=True)
        if trainer.is_global_zero:
            fig.savefig(out, dpi=120, bbox_inches="tight")
            for logger in trainer.loggers:
                if isinstance(logger, WandbLogger):
                    logger.log_image(key=f"plots/{name}", images=[str(out)])
        plt.close(fig)
        return out
