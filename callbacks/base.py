"""RigorCallback: the small contract shared by Rigor's analysis callbacks.

- ``summary()`` returns the callback's final numbers. Rank 0 writes it to
  ``<run dir>/summaries/<name>.json`` at teardown (``name``: the callback's key in the config) (so it also survives processes that ``ddp_spawn``
  starts and ends), and train.py merges these files into metrics.json (callbacks never read each other).
- ``state()`` / ``restore(state)`` persist the callback's history in checkpoints, so a resumed run ends
  with the same history; state is restored only when fitting resumes, not when the best checkpoint is
  loaded for testing (that would roll the history back to the best epoch).
- ``save_figure`` writes a PNG under ``<run dir>/plots/`` and logs it to W&B when W&B is on.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Callable
from dataclasses import dataclass
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


@dataclass
class SplitOutputs:
    """A split's outputs in sample order: ``index`` (N,), ``outputs`` (N, ...), ``target`` (N, ...).

    With transforms, ``outputs`` maps each transform's name to its outputs.
    """

    index: np.ndarray
    outputs: Any
    target: np.ndarray


def run_split(
    pl_module: L.LightningModule, loader: Any, transforms: dict[Any, Callable[[dict], dict]] | None = None
) -> SplitOutputs:
    """The module's outputs over a whole split, in one pass over the loader, in eval mode.

    This is the one loop callbacks and the overfit check use (evaluate.py's predict goes through
    ``trainer.predict`` and the same ``batch_outputs``).

    Args:
        pl_module: A BaseTask (``batch_outputs(batch)`` gives the outputs).
        loader: An ordered loader of dict batches.
        transforms: Named functions ``batch -> batch`` applied before the forward (e.g. masking an input);
            the family that knows the input key writes them. None: the outputs as they are.
    """
    fns = transforms or {None: lambda b: b}
    outputs: dict[Any, list[torch.Tensor]] = {k: [] for k in fns}
    index, target = [], []
    was_training = pl_module.training
    pl_module.eval()
    # The trainer's precision (autocast for 16/bf16-mixed), so these passes match its own val/test passes
    trainer = getattr(pl_module, "_trainer", None)
    precision = trainer.precision_plugin.forward_context() if trainer is not None else contextlib.nullcontext()
    with torch.inference_mode(), precision:
        for batch in loader:
            batch = {k: v.to(pl_module.device) if isinstance(v, torch.Tensor) else v for k, v in batch.items()}
            index.append(batch["index"].cpu())
            target.append(batch["target"].cpu())
            for key, fn in fns.items():
                outputs[key].append(pl_module.batch_outputs(fn(batch)).float().cpu())
    pl_module.train(was_training)
    stacked = {k: (torch.cat(v).numpy() if v else np.empty(0)) for k, v in outputs.items()}
    return SplitOutputs(
        index=torch.cat(index).numpy() if index else np.empty(0, dtype=int),
        outputs=stacked if transforms else stacked[None],
        target=torch.cat(target).numpy() if target else np.empty(0),
    )


def split_outputs(trainer: L.Trainer, pl_module: L.LightningModule, split: str) -> SplitOutputs:
    """The module's plain outputs on a split for the end-of-run analyses, computed at most once per test run.

    ``test`` is the test pass itself (the module keeps every sample's outputs); any other split is one
    ``run_split`` pass, cached on the module until its next test epoch, so core sensitivity at r = 0,
    temperature scaling and the search metrics share a single validation pass (same loader, same
    weights, same arithmetic: the numbers are those of separate passes).
    """
    cache = pl_module.__dict__.setdefault("_split_cache", {})
    if split in cache:
        return cache[split]
    loader = trainer.datamodule.split_dataloader(split)
    if split == "test":
        test = pl_module.epoch_outputs("test")
        # only a test pass over the whole split stands in for it (limit_test_batches cuts it short)
        size = len(loader.dataset) if hasattr(loader, "dataset") else None
        if len(test["index"]) and len(test["index"]) == size:
            cache[split] = SplitOutputs(index=test["index"].numpy(), outputs=test["outputs"].numpy(), target=test["target"].numpy())
            return cache[split]
    cache[split] = run_split(pl_module, loader)
    return cache[split]


def summary_dir(run_dir: str | Path) -> Path:
    """Where callbacks leave their summaries for train.py."""
    return Path(run_dir) / "summaries"


class RigorCallback(Callback):
    """Base class: summary, checkpointed state and figure saving.

    ``summary_name`` is set from the callback's key in ``callbacks:`` (rigor.config.instantiate_callbacks),
    so two callbacks of one class keep separate summaries and checkpoint states.
    """

    summary_name: str | None = None

    @property
    def name(self) -> str:
        return self.summary_name or type(self).__name__

    def summary(self) -> dict[str, Any]:
        return {}

    def state(self) -> dict[str, Any]:
        return {}

    def restore(self, state: dict[str, Any]) -> None:
        pass

    def on_save_checkpoint(self, trainer: L.Trainer, pl_module: L.LightningModule, checkpoint: dict[str, Any]) -> None:
        checkpoint.setdefault("rigor_callbacks", {})[self.name] = self.state()

    def on_load_checkpoint(self, trainer: L.Trainer, pl_module: L.LightningModule, checkpoint: dict[str, Any]) -> None:
        if trainer.state.fn == TrainerFn.FITTING:
            state = checkpoint.get("rigor_callbacks", {}).get(self.name)
            if state is not None:
                self.restore(state)

    def teardown(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        summary = self.summary()
        if summary and trainer.is_global_zero:
            write_json(summary_dir(trainer.default_root_dir) / f"{self.name}.json", summary)

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
