"""The lens finder of seed 004: a ResNet18 scoring g,r,z cutouts with one logit, trained with BCE."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torchmetrics import MetricCollection
from torchmetrics.classification import BinaryAccuracy

from lightning_modules.base import BaseTask
from lightning_modules.metrics import DefinedBinaryAUROC


class LensModule(BaseTask):
    """Binary lens / non-lens classifier; the best checkpoint is the one with the highest val AUROC.

    Args:
        *args: BaseTask's arguments (net, optimizer, scheduler, ...).
        channels_last: Run the convolutions in NHWC memory layout: the same arithmetic in another order
            (results move by float rounding only), faster on CPUs with oneDNN and on GPUs with tensor
            cores (docs/benchmarks.md).
        **kwargs: BaseTask's keyword arguments.
    """

    monitor = "val/auroc"
    mode = "max"
    input_keys = ("image",)
    output_kind = "binary"

    def __init__(self, *args, channels_last: bool = False, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.channels_last = bool(channels_last)
        if self.channels_last:
            self.net = self.net.to(memory_format=torch.channels_last)

    def configure_metrics(self) -> MetricCollection:
        # thresholds=None keeps torchmetrics' exact AUROC (no binning); a one-class split gives NaN, not 0.0
        return MetricCollection({"auroc": DefinedBinaryAUROC(thresholds=None), "accuracy": BinaryAccuracy()})

    def forward(self, inputs: dict[str, torch.Tensor]) -> torch.Tensor:
        image = inputs["image"]
        if self.channels_last:
            image = image.contiguous(memory_format=torch.channels_last)
        return self.net(image).squeeze(-1)

    def compute_loss(self, logits: torch.Tensor, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        return F.binary_cross_entropy_with_logits(logits.float(), batch["target"].float())

    def metric_inputs(self, logits: torch.Tensor, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        # torchmetrics applies a sigmoid to inputs outside [0, 1]; pass probabilities to make that explicit
        return torch.sigmoid(logits.float()), batch["target"].long()
