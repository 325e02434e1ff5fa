"""Metrics shared by families, where torchmetrics' own needs a guard."""

from __future__ import annotations

import torch
from torchmetrics.classification import BinaryAUROC
from torchmetrics.utilities import dim_zero_cat


class DefinedBinaryAUROC(BinaryAUROC):
    """BinaryAUROC that is NaN (written as null) when the targets hold one class.

    torchmetrics returns 0.0 with a warning in that case, a number that reads like a real result.
    """

    def compute(self) -> torch.Tensor:
        target = dim_zero_cat(self.target) if isinstance(self.target, list) else self.target
        if target.numel() == 0 or torch.unique(target).numel() < 2:
            return torch.tensor(float("nan"))
        return super().compute()
