"""BaseTask: what every family's LightningModule shares.

A family subclasses BaseTask and fills in three hooks, as torchgeo's tasks do:

- ``configure_metrics()`` returns a torchmetrics MetricCollection; it is cloned per split with
  ``train/``, ``val/`` and ``test/`` prefixes, so logged keys follow the ``split/name`` contract.
- ``compute_loss(logits, batch)`` returns the scalar loss.
- ``forward(x)`` (default: the wrapped net).
- ``correct_predictions(logits, batch)`` when "correct" is not argmax / threshold 0 (regression, two heads).

The class attributes ``monitor`` and ``mode`` name the metric that picks the best checkpoint and drives
early stopping; configs read them through ``${model.monitor}``.

Batches are dicts with ``image``, ``target`` and ``index`` (the row of the sample in its split). During
validation and testing the module keeps every sample's logits by index, so callbacks can compute
stratified metrics and evaluate.py can write predictions without running the model twice.
"""

from __future__ import annotations

import math
from typing import Any

import lightning as L
import torch
from torch import nn
from torchmetrics import MetricCollection


class NonFiniteLossError(RuntimeError):
    """Raised when the training loss becomes NaN or infinite."""


class BaseTask(L.LightningModule):
    """Shared training/validation/test logic for every family.

    Args:
        net: The network (any nn.Module).
        optimizer: Keyword arguments of torch.optim.AdamW (lr, weight_decay, ...).
        scheduler: ``{"name": "cosine", "t_max": int}`` or None for a constant learning rate.
    """

    monitor: str = "val/loss"
    mode: str = "min"

    def __init__(self, net: nn.Module, optimizer: dict[str, Any], scheduler: dict[str, Any] | None = None) -> None:
        super().__init__()
        self.save_hyperparameters(ignore=["net"], logger=False)
        self.net = net
        self.optimizer_kwargs = dict(optimizer)
        self.scheduler_cfg = dict(scheduler) if scheduler else None
        metrics = self.configure_metrics()
        self.train_metrics = metrics.clone(prefix="train/")
        self.val_metrics = metrics.clone(prefix="val/")
        self.test_metrics = metrics.clone(prefix="test/")
        self._outputs: dict[str, list[tuple[torch.Tensor, torch.Tensor, torch.Tensor]]] = {"val": [], "test": [], "predict": []}

    # --- hooks a family fills in -------------------------------------------------------------------
    def configure_metrics(self) -> MetricCollection:
        """The metrics of one split (cloned per split)."""
        raise NotImplementedError

    def compute_loss(self, logits: torch.Tensor, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        """Scalar loss of a batch."""
        raise NotImplementedError

    def metric_inputs(self, logits: torch.Tensor, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        """(preds, target) handed to the metric collection; binary families pass logits as they are."""
        return logits, batch["target"]

    def correct_predictions(self, logits: torch.Tensor, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        """Per-sample correctness (used by the overfit check): threshold 0 for one logit, argmax otherwise."""
        target = batch["target"]
        if logits.ndim == 1 or (logits.ndim == 2 and logits.shape[-1] == 1):
            return (logits.reshape(-1) > 0) == (target.reshape(-1) > 0.5)
        return logits.argmax(-1) == target.long()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)

    # --- shared loop -------------------------------------------------------------------------------
    def _metrics(self, split: str) -> MetricCollection:
        return {"train": self.train_metrics, "val": self.val_metrics, "test": self.test_metrics}[split]

    def _step(self, batch: dict[str, torch.Tensor], split: str) -> torch.Tensor:
        logits = self(batch["image"])
        loss = self.compute_loss(logits, batch)
        if split == "train" and not torch.isfinite(loss):
            raise NonFiniteLossError(
                f"{type(self).__name__}: training loss is {loss.item()} at epoch {self.current_epoch}, "
                f"step {self.global_step}; lower the learning rate or check the inputs for NaN/inf"
            )
        metrics = self._metrics(split)
        metrics.update(*self.metric_inputs(logits.detach(), batch))
        batch_size = batch["image"].shape[0]
        on_step = split == "train"
        self.log(f"{split}/loss", loss, on_step=on_step, on_epoch=True, prog_bar=True, batch_size=batch_size, sync_dist=split != "train")
        self.log_dict(metrics, on_step=False, on_epoch=True, prog_bar=split == "val", batch_size=batch_size)
        if split in self._outputs:
            self._outputs[split].append((batch["index"].detach().cpu(), logits.detach().float().cpu(), batch["target"].detach().cpu()))
        return loss

    def training_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> torch.Tensor:
        return self._step(batch, "train")

    def validation_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> None:
        self._step(batch, "val")

    def test_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> None:
        self._step(batch, "test")

    def on_train_epoch_start(self) -> None:
        # the learning rate of seed 004 section 5.1, logged once per epoch
        self.log("train/learning_rate", self.optimizers().param_groups[0]["lr"], on_step=False, on_epoch=True)

    def on_validation_epoch_start(self) -> None:
        self._outputs["val"] = []

    def on_test_epoch_start(self) -> None:
        self._outputs["test"] = []

    def epoch_outputs(self, split: str) -> dict[str, torch.Tensor]:
        """Every sample's index, logits and target from the current val/test epoch, sorted by index.

        Under DDP the pieces of all ranks are gathered and de-duplicated (the distributed sampler pads
        with repeats), so callbacks see each sample exactly once on every rank.
        """
        parts = self._outputs.get(split, [])
        if not parts:
            return {"index": torch.empty(0, dtype=torch.long), "logits": torch.empty(0), "target": torch.empty(0)}
        index = torch.cat([p[0] for p in parts])
        logits = torch.cat([p[1] for p in parts])
        target = torch.cat([p[2] for p in parts])
        if self.trainer is not None and self.trainer.world_size > 1:
            gathered = [self.all_gather(t.to(self.device)).cpu() for t in (index, logits, target)]
            index, logits, target = (g.reshape(-1, *g.shape[2:]) for g in gathered)
        order = torch.argsort(index, stable=True)
        index, logits, target = index[order], logits[order], target[order]
        keep = torch.ones_like(index, dtype=torch.bool)
        keep[1:] = index[1:] != index[:-1]
        return {"index": index[keep], "logits": logits[keep], "target": target[keep]}

    def configure_optimizers(self) -> Any:
        optimizer = torch.optim.AdamW(self.parameters(), **self.optimizer_kwargs)
        if not self.scheduler_cfg:
            return optimizer
        name = self.scheduler_cfg.get("name", "cosine")
        if name != "cosine":
            raise ValueError(f"model.scheduler.name: unknown scheduler {name!r}; expected 'cosine' or scheduler=null")
        t_max = int(self.scheduler_cfg.get("t_max") or self.trainer.max_epochs)
        if t_max <= 0 or math.isinf(t_max):
            raise ValueError(f"model.scheduler.t_max must be a positive number of epochs, got {t_max}")
        scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=t_max, eta_min=self.scheduler_cfg.get("eta_min", 0.0))
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "epoch"}}
