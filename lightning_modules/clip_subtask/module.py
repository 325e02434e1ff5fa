"""The CLIP subtask meta-learner of seed 000, on frozen CLIP image embeddings.

Two stages, as the seed trains them:

1. At the start of fitting, the subtask heads (superclass, brightness, complexity) are trained on their
   own labels over the training embeddings, each with early stopping on its validation accuracy
   (``subtask_training.patience``), restored to its best epoch and frozen. Their per-epoch losses and
   accuracies go to the loggers (``subtask/<name>_{train_loss,val_loss,val_accuracy}``, step = subtask
   epoch) and to ``<run dir>/subtask_history.csv``. A resumed run finds them trained (the
   ``heads_trained`` buffer is in the checkpoint) and does not train them again.
2. Lightning then trains the meta-learner on [embedding, subtask outputs]; only its parameters reach
   the optimizer. Every val/test epoch also logs each frozen head's loss and accuracy
   (``val/<name>_accuracy``, ``test/<name>_accuracy``), so the training-dynamics tables of the seed
   can be read off one CSV.

With ``model.net.subtask_features=none`` (the ablation) the net has no heads: stage 1 is skipped (the log
says so, no ``subtask_history.csv`` is written, no ``val/<name>_*`` metrics are logged) and the
meta-learner trains on the embedding alone; the subtask labels in the batches are never read.
"""

from __future__ import annotations

import copy
import csv
import logging
import math
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from torchmetrics import MetricCollection
from torchmetrics.classification import MulticlassAccuracy

from lightning_modules.base import BaseTask, _plain
from lightning_modules.clip_subtask.nets import SubtaskMetaNet

log = logging.getLogger(__name__)

SUBTASK_TRAINING_KEYS = ("max_epochs", "patience", "batch_size", "lr", "weight_decay")


def train_subtask_heads(
    net: SubtaskMetaNet,
    train: Mapping[str, torch.Tensor],
    val: Mapping[str, torch.Tensor],
    max_epochs: int,
    patience: int,
    batch_size: int,
    lr: float,
    weight_decay: float,
    seed: int,
) -> list[dict[str, float]]:
    """Train every subtask head on its own labels (Adam, cross-entropy), each with its own early stopping.

    Each head keeps the weights of its best validation accuracy and stops when that has not improved
    for `patience` epochs; training ends when every head has stopped or at `max_epochs`. The heads are
    independent (separate parameters and losses), so training them in one loop equals training them apart.

    Args:
        net: The network; only ``net.heads`` change.
        train, val: ``embedding`` and one label tensor per subtask name.
        seed: Seed of the minibatch order.

    Returns:
        One row per epoch: ``epoch`` and ``<name>_{train_loss,val_loss,val_accuracy}`` (NaN once a head stopped).
    """
    names = list(net.subtask_names)
    missing = [n for n in ["embedding", *names] if n not in train or n not in val]
    if missing:
        raise KeyError(f"subtask training needs tensors {missing}; got {sorted(train)}")
    device = next(net.parameters()).device
    x_train, x_val = train["embedding"].to(device), val["embedding"].to(device)
    y_train = {n: train[n].to(device).long() for n in names}
    y_val = {n: val[n].to(device).long() for n in names}
    params = [p for n in names for p in net.heads[n].parameters()]
    for p in params:
        p.requires_grad_(True)
    optimizer = torch.optim.Adam(params, lr=lr, weight_decay=weight_decay)
    generator = torch.Generator().manual_seed(seed)
    best = {n: (-1.0, copy.deepcopy(net.heads[n].state_dict())) for n in names}
    waited = {n: 0 for n in names}
    active = set(names)
    history: list[dict[str, float]] = []
    net.heads.train()
    for epoch in range(max_epochs):
        order = torch.randperm(len(x_train), generator=generator).to(device)
        totals = {n: 0.0 for n in names}
        for batch in torch.split(order, batch_size):
            x = x_train[batch]
            losses = {n: F.cross_entropy(net.heads[n](x), y_train[n][batch]) for n in active}
            optimizer.zero_grad(set_to_none=True)
            sum(losses.values()).backward()
            optimizer.step()
            for n, loss in losses.items():
                totals[n] += loss.item() * len(batch)
        row: dict[str, float] = {"epoch": epoch}
        with torch.no_grad():
            for n in names:
                if n not in active:
                    row.update({f"{n}_train_loss": float("nan"), f"{n}_val_loss": float("nan"), f"{n}_val_accuracy": float("nan")})
                    continue
                logits = net.heads[n](x_val)
                acc = float((logits.argmax(-1) == y_val[n]).float().mean())
                row.update({f"{n}_train_loss": totals[n] / len(x_train), f"{n}_val_loss": float(F.cross_entropy(logits, y_val[n])),
                            f"{n}_val_accuracy": acc})
                if acc > best[n][0]:
                    best[n] = (acc, copy.deepcopy(net.heads[n].state_dict()))
                    waited[n] = 0
                else:
                    waited[n] += 1
                    if waited[n] >= patience:
                        active.discard(n)
        history.append(row)
        if not active:
            break
    for n in names:
        net.heads[n].load_state_dict(best[n][1])
    for p in params:
        p.requires_grad_(False)
    return history


class ClipSubtaskModule(BaseTask):
    """Seed 000's meta-learner (10 classes) with frozen subtask heads; best checkpoint = best val accuracy.

    Args:
        net: A SubtaskMetaNet.
        subtask_training: ``max_epochs``, ``patience``, ``batch_size``, ``lr``, ``weight_decay`` of the heads.
        optimizer, scheduler, scheduler_interval, warmup_steps, lr_scaling: As BaseTask (the meta-learner).
    """

    monitor = "val/accuracy"
    mode = "max"
    input_keys = ("embedding",)
    output_kind = "multiclass"

    def __init__(
        self,
        net: SubtaskMetaNet,
        subtask_training: Mapping[str, Any],
        optimizer: Any,
        scheduler: Any = None,
        scheduler_interval: str = "epoch",
        warmup_steps: int = 0,
        lr_scaling: Mapping[str, Any] | None = None,
    ) -> None:
        self.n_classes = int(net.meta.layers[-1].out_features)
        super().__init__(net, optimizer, scheduler, scheduler_interval, warmup_steps, lr_scaling)
        cfg = _plain(subtask_training)
        missing = [k for k in SUBTASK_TRAINING_KEYS if k not in cfg]
        if missing:
            raise ValueError(f"model.subtask_training needs {missing}")
        self.subtask_training = dict(cfg)
        for p in net.heads.parameters():
            p.requires_grad_(False)  # the optimizer sees the meta-learner only
        # persistent: a resumed run (and evaluate.py) knows the heads are trained
        self.register_buffer("heads_trained", torch.tensor(False))
        self.subtask_history: list[dict[str, float]] = []
        self.sub_metrics = nn.ModuleDict({
            split: nn.ModuleDict({n: MulticlassAccuracy(num_classes=len(net.heads[n][-1].bias), average="micro")
                                  for n in net.subtask_names})
            for split in ("val", "test")
        })

    def configure_metrics(self) -> MetricCollection:
        return MetricCollection({"accuracy": MulticlassAccuracy(num_classes=self.n_classes, average="micro")})

    def compute_loss(self, outputs: torch.Tensor, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        return F.cross_entropy(outputs.float(), batch["target"].long())

    def trainable_parameters(self) -> Iterable[nn.Parameter]:
        return [p for p in self.net.meta.parameters() if p.requires_grad]

    def train(self, mode: bool = True) -> ClipSubtaskModule:
        super().train(mode)
        self.net.heads.eval()  # frozen: the same outputs whatever the mode
        return self

    # --- stage 1: the subtask heads ----------------------------------------------------------------
    def on_fit_start(self) -> None:
        datamodule = self.trainer.datamodule
        if getattr(datamodule, "embed_dim", None) not in (None, self.net.embed_dim):
            raise ValueError(f"model.net.embed_dim={self.net.embed_dim} but the data's "
                             f"embeddings have {datamodule.embed_dim} dimensions")
        if not self.net.subtask_names:
            log.info("model.net.subtask_features=%s: no subtask heads, skipping the head-training stage; the meta-learner "
                     "reads the embedding only (%d inputs)", self.net.subtask_features, self.net.meta_in_dim)
            return
        if bool(self.heads_trained):
            log.info("subtask heads already trained (resumed run): not training them again")
            return
        cfg = self.subtask_training
        self.subtask_history = train_subtask_heads(
            self.net, datamodule.split_tensors("train"), datamodule.split_tensors("val"), int(cfg["max_epochs"]),
            int(cfg["patience"]), int(cfg["batch_size"]), float(cfg["lr"]), float(cfg["weight_decay"]),
            seed=int(getattr(datamodule, "seed", 0)),
        )
        self.heads_trained.fill_(True)
        self.net.heads.eval()
        best = {n: max(r[f"{n}_val_accuracy"] for r in self.subtask_history if not math.isnan(r[f"{n}_val_accuracy"]))
                for n in self.net.subtask_names}
        log.info("subtask heads trained for %d epochs; best val accuracy %s", len(self.subtask_history), best)
        for logger in self.loggers:
            for row in self.subtask_history:
                # a stopped head has NaN rows: leave them out of the logs
                logger.log_metrics({f"subtask/{k}": v for k, v in row.items() if k != "epoch" and not math.isnan(v)},
                                   step=int(row["epoch"]))
        if self.trainer.is_global_zero and self.subtask_history:
            out = Path(self.trainer.default_root_dir) / "subtask_history.csv"
            with open(out, "w", newline="") as f:
                writer = csv.DictWriter(f, fieldnames=list(self.subtask_history[0]))
                writer.writeheader()
                writer.writerows(self.subtask_history)

    # --- stage 2: the meta-learner, with the frozen heads' numbers logged per epoch ------------------
    def _subtask_step(self, batch: dict[str, torch.Tensor], split: str) -> None:
        logits = self.net.subtask_logits(batch["embedding"])
        size = len(batch["index"])
        for name, lg in logits.items():
            target = batch[name].long()
            self.log(f"{split}/{name}_loss", F.cross_entropy(lg.float(), target), on_step=False, on_epoch=True, batch_size=size)
            metric = self.sub_metrics[split][name]
            metric.update(lg.detach(), target)
            self.log(f"{split}/{name}_accuracy", metric, on_step=False, on_epoch=True, batch_size=size)

    def validation_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> None:
        super().validation_step(batch, batch_idx)
        self._subtask_step(batch, "val")

    def test_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> None:
        super().test_step(batch, batch_idx)
        self._subtask_step(batch, "test")
