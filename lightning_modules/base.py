"""BaseTask: what every family's LightningModule shares (the contract in docs/contract.md).

A family subclasses BaseTask, declares what it consumes and what it returns, and fills in hooks, as
torchgeo's tasks do:

- ``input_keys``: the batch entries ``forward`` consumes (an image, an embedding, audio features with
  token ids and masks, a masked map). The core never names a key itself.
- ``output_kind``: ``binary`` (``(B,)`` logit), ``multiclass`` (``(B, C)`` logits) or ``regression``
  (``(B, T)`` values, or ``(B, T, 2)`` mean and std), with ``target_names`` for regression.
- ``configure_metrics()`` returns a torchmetrics MetricCollection; it is cloned per split with
  ``train/``, ``val/`` and ``test/`` prefixes, so logged keys follow the ``split/name`` contract.
- ``compute_loss(outputs, batch)`` returns the scalar loss.
- ``forward(inputs)`` (default: the wrapped net on the one input, or on all of them as keywords).
- ``correct_predictions(outputs, batch)`` when "correct" is not argmax / threshold 0.
- ``trainable_parameters()``: what the optimizer sees (frozen backbones and adapters override it).

The class attributes ``monitor`` and ``mode`` name the metric that picks the best checkpoint and drives
early stopping. During validation and testing the module keeps every sample's outputs by index, so
callbacks can compute stratified metrics without running the model twice.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from typing import Any

import lightning as L
import torch
from torch import nn
from torchmetrics import MetricCollection

OUTPUT_KINDS = ("binary", "multiclass", "regression")


class NonFiniteLossError(RuntimeError):
    """Raised when the training loss, or a validation/test output, becomes NaN or infinite."""


def _plain(value: Any) -> Any:
    """OmegaConf containers -> plain dicts/lists (checkpoints must load with weights_only=True)."""
    try:
        from omegaconf import DictConfig, ListConfig, OmegaConf

        if isinstance(value, (DictConfig, ListConfig)):
            return OmegaConf.to_container(value, resolve=True)
    except ImportError:  # pragma: no cover
        pass
    return value


class BaseTask(L.LightningModule):
    """Shared training/validation/test logic for every family.

    Args:
        net: The network (any nn.Module).
        optimizer: A partial taking the parameters (``_partial_: true`` config of any torch optimizer).
        scheduler: A partial taking the optimizer, or None for a constant learning rate.
        scheduler_interval: ``epoch`` or ``step``: when the scheduler steps.
        warmup_steps: Linear warm-up of the learning rate over the first optimizer steps.
        lr_scaling: None, or ``{base_lr, base_batch, batch_size}``: the linear scaling rule
            lr = base_lr x batch_size / base_batch (seed 000), replacing the optimizer's lr.
    """

    monitor: str = "val/loss"
    mode: str = "min"
    input_keys: tuple[str, ...] = ()
    output_kind: str = "multiclass"
    target_names: tuple[str, ...] = ()

    def __init__(
        self,
        net: nn.Module,
        optimizer: Callable[..., torch.optim.Optimizer],
        scheduler: Callable[..., Any] | None = None,
        scheduler_interval: str = "epoch",
        warmup_steps: int = 0,
        lr_scaling: Mapping[str, Any] | None = None,
    ) -> None:
        super().__init__()
        name = type(self).__name__
        if not self.input_keys:
            raise TypeError(f"{name}: declare input_keys, the batch entries forward() consumes (docs/contract.md)")
        if self.output_kind not in OUTPUT_KINDS:
            raise TypeError(f"{name}.output_kind must be one of {OUTPUT_KINDS}, got {self.output_kind!r}")
        if self.output_kind == "regression" and not self.target_names:
            raise TypeError(f"{name}: a regression module names its targets (target_names)")
        if not callable(optimizer):
            raise TypeError(f"model.optimizer: expected a partial optimizer config (_target_ + _partial_: true), got {optimizer!r}")
        if scheduler is not None and not callable(scheduler):
            raise TypeError(f"model.scheduler: expected a partial scheduler config or null, got {scheduler!r}")
        if scheduler_interval not in ("epoch", "step"):
            raise ValueError(f"model.scheduler_interval must be 'epoch' or 'step', got {scheduler_interval!r}")
        if int(warmup_steps) < 0:
            raise ValueError(f"model.warmup_steps must be >= 0, got {warmup_steps}")
        if int(warmup_steps) > 0 and scheduler is not None and scheduler_interval != "step":
            raise ValueError("model.warmup_steps counts optimizer steps: set model.scheduler_interval=step "
                             "(and size the scheduler in steps), or model.warmup_steps=0")
        lr_scaling = _plain(lr_scaling)
        if lr_scaling:
            missing = [k for k in ("base_lr", "base_batch", "batch_size") if lr_scaling.get(k) in (None, "")]
            if missing:
                raise ValueError(f"model.lr_scaling needs {missing} (lr = base_lr x batch_size / base_batch)")
        self.net = net
        self.optimizer_factory = optimizer
        self.scheduler_factory = scheduler
        self.scheduler_interval = scheduler_interval
        self.warmup_steps = int(warmup_steps)
        self.lr_scaling = dict(lr_scaling) if lr_scaling else None
        self.effective_lr: float | None = None
        metrics = self.configure_metrics()
        self.train_metrics = metrics.clone(prefix="train/")
        self.val_metrics = metrics.clone(prefix="val/")
        self.test_metrics = metrics.clone(prefix="test/")
        self._outputs: dict[str, list[tuple[torch.Tensor, torch.Tensor, torch.Tensor]]] = {"val": [], "test": []}

    # --- hooks a family fills in -------------------------------------------------------------------
    def configure_metrics(self) -> MetricCollection:
        """The metrics of one split (cloned per split)."""
        raise NotImplementedError

    def compute_loss(self, outputs: torch.Tensor, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        """Scalar loss of a batch."""
        raise NotImplementedError

    def metric_inputs(self, outputs: torch.Tensor, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        """(preds, target) handed to the metric collection; by default the outputs as they are."""
        return outputs, batch["target"]

    def correct_predictions(self, outputs: torch.Tensor, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        """Per-sample correctness (used by the overfit check): threshold 0 for binary, argmax for multiclass."""
        target = batch["target"]
        if self.output_kind == "binary":
            return (outputs.reshape(-1) > 0) == (target.reshape(-1) > 0.5)
        if self.output_kind == "multiclass":
            return outputs.argmax(-1) == target.long()
        raise NotImplementedError(f"{type(self).__name__}: a regression module defines correct_predictions (a tolerance)")

    def trainable_parameters(self) -> Iterable[nn.Parameter]:
        """The parameters the optimizer updates (default: those with requires_grad)."""
        return [p for p in self.parameters() if p.requires_grad]

    def prediction_outputs(self, outputs: torch.Tensor) -> torch.Tensor:
        """Outputs as the predictions file records them (e.g. regression in physical units); default: as they are."""
        return outputs

    def forward(self, inputs: dict[str, torch.Tensor]) -> torch.Tensor:
        if len(self.input_keys) == 1:
            return self.net(inputs[self.input_keys[0]])
        return self.net(**inputs)

    # --- the one way a batch goes through the model --------------------------------------------------
    def model_inputs(self, batch: Mapping[str, Any]) -> dict[str, Any]:
        """The entries of `batch` that forward consumes (``input_keys``)."""
        missing = [k for k in self.input_keys if k not in batch]
        if missing:
            raise KeyError(f"{type(self).__name__} consumes {list(self.input_keys)} but the batch has no {missing}; "
                           f"it has {sorted(batch)}")
        return {k: batch[k] for k in self.input_keys}

    def batch_outputs(self, batch: Mapping[str, Any]) -> torch.Tensor:
        """The module's outputs for a batch (every loop in Rigor goes through here)."""
        return self(self.model_inputs(batch))

    # --- shared loop -------------------------------------------------------------------------------
    def _metrics(self, split: str) -> MetricCollection:
        return {"train": self.train_metrics, "val": self.val_metrics, "test": self.test_metrics}[split]

    def _step(self, batch: dict[str, torch.Tensor], split: str) -> torch.Tensor:
        outputs = self.batch_outputs(batch)
        if split != "train" and not torch.isfinite(outputs).all():
            # a diverged model can keep a finite training loss; its outputs are still garbage
            raise NonFiniteLossError(
                f"{type(self).__name__}: {split} outputs hold NaN/inf at epoch {self.current_epoch} (step {self.global_step}); "
                "training diverged: lower the learning rate or check the inputs for NaN/inf"
            )
        loss = self.compute_loss(outputs, batch)
        if split == "train" and not torch.isfinite(loss):
            raise NonFiniteLossError(
                f"{type(self).__name__}: training loss is {loss.item()} at epoch {self.current_epoch}, "
                f"step {self.global_step}; lower the learning rate or check the inputs for NaN/inf"
            )
        metrics = self._metrics(split)
        metrics.update(*self.metric_inputs(outputs.detach(), batch))
        batch_size = len(batch["index"])
        on_step = split == "train"
        self.log(f"{split}/loss", loss, on_step=on_step, on_epoch=True, prog_bar=True, batch_size=batch_size, sync_dist=split != "train")
        self.log_dict(metrics, on_step=False, on_epoch=True, prog_bar=split == "val", batch_size=batch_size)
        if split in self._outputs:
            self._outputs[split].append((batch["index"].detach().cpu(), outputs.detach().float().cpu(), batch["target"].detach().cpu()))
        return loss

    def training_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> torch.Tensor:
        return self._step(batch, "train")

    def validation_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> None:
        self._step(batch, "val")

    def test_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> None:
        self._step(batch, "test")

    def predict_step(self, batch: dict[str, torch.Tensor], batch_idx: int, dataloader_idx: int = 0) -> dict[str, torch.Tensor]:
        """Index, outputs and target of a batch; with ``mc_passes`` set, MC-Dropout mean and std too."""
        out = {"index": batch["index"].detach().cpu(), "outputs": self.batch_outputs(batch).detach().float().cpu(),
               "target": batch["target"].detach().cpu()}
        if getattr(self, "mc_passes", 0):
            from lightning_modules.mc_dropout import MCDropout, summarize

            # each pass in the units the predictions file records, then mean and std over passes
            samples = MCDropout(self, self.mc_passes).sample(batch)
            mean, std = summarize(self.output_kind, torch.stack([self.prediction_outputs(s) for s in samples]))
            out.update({"mc_mean": mean.float().cpu(), "mc_std": std.float().cpu()})
        return out

    def on_train_epoch_start(self) -> None:
        self._split_cache = {}  # the weights change from here on
        self.log("train/learning_rate", self.optimizers().param_groups[0]["lr"], on_step=False, on_epoch=True)

    def on_validation_epoch_start(self) -> None:
        self._outputs["val"] = []

    def on_test_epoch_start(self) -> None:
        self._outputs["test"] = []
        self._split_cache = {}  # callbacks.base.split_outputs: one pass per split and test run

    def epoch_outputs(self, split: str) -> dict[str, torch.Tensor]:
        """Every sample's index, outputs and target from the current val/test epoch, sorted by index.

        Under DDP the pieces of all ranks are gathered and de-duplicated (the distributed sampler pads
        with repeats), so callbacks see each sample exactly once on every rank.
        """
        parts = self._outputs.get(split, [])
        if not parts:
            return {"index": torch.empty(0, dtype=torch.long), "outputs": torch.empty(0), "target": torch.empty(0)}
        index = torch.cat([p[0] for p in parts])
        outputs = torch.cat([p[1] for p in parts])
        target = torch.cat([p[2] for p in parts])
        if self._trainer is not None and self._trainer.world_size > 1:
            gathered = [self.all_gather(t.to(self.device)).cpu() for t in (index, outputs, target)]
            index, outputs, target = (g.reshape(-1, *g.shape[2:]) for g in gathered)
        order = torch.argsort(index, stable=True)
        index, outputs, target = index[order], outputs[order], target[order]
        keep = torch.ones_like(index, dtype=torch.bool)
        keep[1:] = index[1:] != index[:-1]
        return {"index": index[keep], "outputs": outputs[keep], "target": target[keep]}

    # --- optimizer ---------------------------------------------------------------------------------
    def scaled_lr(self) -> float | None:
        """The lr of the linear scaling rule (None when it is off)."""
        if not self.lr_scaling:
            return None
        s = self.lr_scaling
        return float(s["base_lr"]) * float(s["batch_size"]) / float(s["base_batch"])

    def build_optimizer(self) -> torch.optim.Optimizer:
        """The configured optimizer over ``trainable_parameters()`` (also used by the overfit check)."""
        params = [p for p in self.trainable_parameters() if p.requires_grad]
        if not params:
            raise ValueError(f"{type(self).__name__} has no trainable parameters; check trainable_parameters() and freezing")
        lr = self.scaled_lr()
        optimizer = self.optimizer_factory(params, lr=lr) if lr is not None else self.optimizer_factory(params)
        self.effective_lr = float(optimizer.param_groups[0]["lr"])
        return optimizer

    def configure_optimizers(self) -> Any:
        optimizer = self.build_optimizer()
        main = self.scheduler_factory(optimizer) if self.scheduler_factory is not None else None
        if self.warmup_steps:
            warm = torch.optim.lr_scheduler.LinearLR(optimizer, start_factor=1.0 / (self.warmup_steps + 1), end_factor=1.0,
                                                     total_iters=self.warmup_steps)
            main = warm if main is None else torch.optim.lr_scheduler.SequentialLR(optimizer, [warm, main], [self.warmup_steps])
            interval = "step"
        else:
            interval = self.scheduler_interval
        if main is None:
            return optimizer
        entry: dict[str, Any] = {"scheduler": main, "interval": interval}
        if isinstance(main, torch.optim.lr_scheduler.ReduceLROnPlateau):
            entry["monitor"] = self.monitor
        return {"optimizer": optimizer, "lr_scheduler": entry}

