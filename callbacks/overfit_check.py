"""Overfit sanity checks (seed 002, tests 1 and 2), for any BaseTask.

Before training starts, a deep copy of the module is trained with its own optimizer on

1. one sample of the train split, until its loss is below ``single_loss_below``: reports the step
   (``overfit_1_step``; the seed's exp4 got there at step 11, exp3 at step 33);
2. ``n_few`` samples (one full batch per epoch), until all of them are predicted correctly: reports the
   epoch (``overfit_10_epoch``; exp4: 79, exp3: 266).

Samples come straight from the train dataset, so no training augmentation is applied. The copy is
thrown away and the random number generators are restored, so the run itself is unchanged. A model
that cannot memorise one or ten samples has a bug (wiring, loss, learning rate): the check raises
``OverfitCheckError`` naming the module and its net, and the run stops before wasting its budget.

"Correct" is the module's ``correct_predictions(logits, batch)`` (BaseTask's default: one logit
per sample is a binary decision at 0 (the lens family) and several are an argmax over classes.
"""

from __future__ import annotations

import copy
import logging
from typing import Any

import lightning as L
import numpy as np
import torch
from torch import nn
from torch.utils.data import default_collate

from callbacks.base import RigorCallback

log = logging.getLogger(__name__)


class OverfitCheckError(RuntimeError):
    """A model could not memorise a handful of samples."""


def describe_model(pl_module: nn.Module) -> str:
    """``Module(net=Net, N parameters)``: what error messages name."""
    net = getattr(pl_module, "net", None)
    inner = net if isinstance(net, nn.Module) else pl_module
    n = sum(p.numel() for p in inner.parameters())
    return f"{type(pl_module).__name__}(net={type(inner).__name__}, {n:,} parameters)"


class OverfitCheck(RigorCallback):
    """Memorise 1 and `n_few` training samples with a throwaway copy of the module before fitting.

    Args:
        single_max_steps: Steps allowed to bring one sample's loss below ``single_loss_below``.
        single_loss_below: Loss that counts as memorised.
        n_few: Samples of the second check.
        few_max_epochs: Full-batch epochs allowed to predict all of them correctly.
        few_accuracy: Accuracy that counts as memorised (1.0: all).
        lr: Learning rate of the copy's optimizer (the module's own optimizer config; null: its own lr).
        weight_decay: Weight decay of that optimizer (null: the module's own).
        split: Split the samples come from.
        seed: Picks the samples (the single sample is the first of the few).
        enabled: Switch both checks off without removing the callback.
        raise_on_failure: Raise OverfitCheckError when a check fails (else log an error and record it).
    """

    def __init__(
        self,
        single_max_steps: int = 200,
        single_loss_below: float = 1e-2,
        n_few: int = 10,
        few_max_epochs: int = 1000,
        few_accuracy: float = 1.0,
        lr: float | None = 1e-3,
        weight_decay: float | None = 0.0,
        split: str = "train",
        seed: int = 0,
        enabled: bool = True,
        raise_on_failure: bool = True,
    ) -> None:
        if single_max_steps < 1 or few_max_epochs < 1:
            raise ValueError("callbacks.overfit_check: single_max_steps and few_max_epochs must be >= 1")
        if n_few < 1:
            raise ValueError(f"callbacks.overfit_check.n_few must be >= 1, got {n_few}")
        if not 0.0 < few_accuracy <= 1.0:
            raise ValueError(f"callbacks.overfit_check.few_accuracy must be in (0, 1], got {few_accuracy}")
        self.single_max_steps = int(single_max_steps)
        self.single_loss_below = float(single_loss_below)
        self.n_few = int(n_few)
        self.few_max_epochs = int(few_max_epochs)
        self.few_accuracy = float(few_accuracy)
        self.lr, self.weight_decay = lr, weight_decay
        self.split = split
        self.seed = int(seed)
        self.enabled = enabled
        self.raise_on_failure = raise_on_failure
        self.results: dict[str, Any] = {}

    # --- Lightning hooks --------------------------------------------------------------------------
    def on_fit_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if not self.enabled or self.results:  # a resumed run keeps the results of its first start
            return
        dm = trainer.datamodule
        dataset = (getattr(dm, "datasets", None) or {}).get(self.split) if dm is not None else None
        if dataset is None:
            raise ValueError(f"callbacks.overfit_check.split: the datamodule has no {self.split!r} dataset")
        self.results = self.run(pl_module, dataset)

    def summary(self) -> dict[str, Any]:
        return dict(self.results)

    def state(self) -> dict[str, Any]:
        return dict(self.results)

    def restore(self, state: dict[str, Any]) -> None:
        self.results = dict(state)

    # --- the checks -------------------------------------------------------------------------------
    def run(self, pl_module: L.LightningModule, dataset: Any) -> dict[str, Any]:
        """Run both checks on copies of `pl_module` and return their results (raises on failure)."""
        n = len(dataset)
        if n == 0:
            raise ValueError(f"callbacks.overfit_check: the {self.split} split is empty")
        picks = np.random.default_rng(self.seed).permutation(n)[: min(self.n_few, n)]
        device = pl_module.device
        batch = _to(default_collate([dataset[int(i)] for i in picks]), device)
        one = {k: v[:1] for k, v in batch.items()}
        name = describe_model(pl_module)
        results: dict[str, Any] = {}
        # fork_rng: dropout or other randomness in the copy must not shift the run's own random stream
        with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
            step, loss = self._single(pl_module, one)
            results.update({"overfit_1_step": step, "overfit_1_loss": loss})
            if step is None:
                self._fail(f"{name} could not overfit 1 sample: its loss is still {loss:.4g} after {self.single_max_steps} "
                           f"steps (needs < {self.single_loss_below:g}); check the wiring, the loss and the learning rate")
            else:
                log.info("overfit check: %s memorised 1 sample at step %d (loss %.4g)", name, step, loss)
            k = len(picks)
            epoch, acc = self._few(pl_module, batch)
            results.update({f"overfit_{k}_epoch": epoch, f"overfit_{k}_accuracy": acc})
            if epoch is None:
                self._fail(f"{name} could not overfit {k} samples: accuracy {acc:.1%} after {self.few_max_epochs} epochs "
                           f"(needs {self.few_accuracy:.0%}); the model cannot tell these samples apart")
            else:
                log.info("overfit check: %s reached %.0f%% on %d samples at epoch %d", name, 100 * acc, k, epoch)
        return results

    def _fail(self, message: str) -> None:
        if self.raise_on_failure:
            raise OverfitCheckError(message)
        log.error("overfit check FAILED: %s", message)

    def _copy(self, pl_module: L.LightningModule) -> tuple[L.LightningModule, torch.optim.Optimizer]:
        # the memo maps the trainer to None: the copy must not drag the trainer (loggers, loaders) along
        trainer = getattr(pl_module, "_trainer", None)
        clone = copy.deepcopy(pl_module, memo={id(trainer): None} if trainer is not None else None)
        clone.train()
        params = [p for p in clone.trainable_parameters() if p.requires_grad]
        if not params:
            raise OverfitCheckError(f"{describe_model(pl_module)} has no trainable parameters; it cannot learn anything")
        # the module's own optimizer (its config), with this check's lr and weight decay when given
        own = {k: v for k, v in (("lr", self.lr), ("weight_decay", self.weight_decay)) if v is not None}
        return clone, clone.optimizer_factory(params, **own)

    def _correct(self, module: L.LightningModule, logits: torch.Tensor, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        return module.correct_predictions(logits, batch)  # BaseTask's hook

    def _single(self, pl_module: L.LightningModule, batch: dict[str, torch.Tensor]) -> tuple[int | None, float]:
        """First step (0-based, loss measured before that step's update) with loss below the threshold."""
        clone, opt = self._copy(pl_module)
        best = float("inf")
        with torch.enable_grad():
            for step in range(self.single_max_steps):
                loss = clone.compute_loss(clone.batch_outputs(batch), batch)
                value = float(loss.detach())
                best = min(best, value)
                if value < self.single_loss_below:
                    return step, value
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
        return None, best

    def _few(self, pl_module: L.LightningModule, batch: dict[str, torch.Tensor]) -> tuple[int | None, float]:
        """First full-batch epoch (0-based, before its update) at which the accuracy reaches the target."""
        clone, opt = self._copy(pl_module)
        best = 0.0
        with torch.enable_grad():
            for epoch in range(self.few_max_epochs):
                logits = clone.batch_outputs(batch)
                acc = float(self._correct(clone, logits.detach(), batch).float().mean())
                best = max(best, acc)
                if acc >= self.few_accuracy:
                    return epoch, acc
                loss = clone.compute_loss(logits, batch)
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
        return None, best


def _to(batch: dict[str, Any], device: torch.device) -> dict[str, Any]:
    return {k: v.to(device) if isinstance(v, torch.Tensor) else v for k, v in batch.items()}
