"""A toy family for contract tests: dict inputs, and regression-with-uncertainty or binary outputs.

It lives entirely in tests/toy_family/ (code and configs) and is run with
``python train.py hydra.searchpath=[file://<repo>/tests/toy_family/conf] experiment=toy_regression``,
which proves a family plugs in without a line changed in the core.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import Dataset
from torchmetrics import MeanSquaredError, MetricCollection
from torchmetrics.classification import BinaryAUROC

from datamodules.base import SPLITS, BaseDataModule
from lightning_modules.base import BaseTask


class DictDataset(Dataset):
    def __init__(self, x: np.ndarray, aux: np.ndarray, target: np.ndarray) -> None:
        self.x, self.aux, self.target = (torch.as_tensor(a) for a in (x, aux, target))

    def __len__(self) -> int:
        return len(self.x)

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        return {"x": self.x[i], "aux": self.aux[i], "target": self.target[i], "index": torch.as_tensor(i)}


class ToyDataModule(BaseDataModule):
    """y_a = x . w + noise, y_b = aux . v + noise (noise grows with |x_0|); binary: y_a > 0.

    ``data_seed`` draws another data set from the same law (the weights w, v stay those of seed 0, so a
    model trained on one scores on another); ``labelled: false`` leaves the truth out of the frames and
    gives NaN targets (unlabelled data, as a survey's cutouts); ``n_features`` other than 4 makes a data set
    whose inputs do not fit the model (for the shape check of evaluate.py's predict).
    """

    def __init__(self, task: str, n: dict[str, int], batch_size: int, seed: int = 0, num_workers: int = 0,
                 data_seed: int = 0, labelled: bool = True, n_features: int = 4) -> None:
        super().__init__(batch_size, num_workers, seed)
        self.task, self.n = task, dict(n)
        self.data_seed, self.labelled, self.n_features = int(data_seed), bool(labelled), int(n_features)

    def setup(self, stage: str | None = None) -> None:
        if self.frames:
            return
        rng = np.random.default_rng(0)
        w, v = rng.normal(size=4), rng.normal(size=3)
        if self.data_seed:  # the default keeps the exact stream of seed 0 (existing runs and tests)
            rng = np.random.default_rng([self.data_seed, 1])
        for split in SPLITS:
            n = self.n[split]
            x = rng.normal(size=(n, 4)).astype(np.float32)
            aux = rng.normal(size=(n, 3)).astype(np.float32)
            scale = 0.1 + 0.5 * np.abs(x[:, 0])
            a = x @ w + scale * rng.normal(size=n)
            b = aux @ v + scale * rng.normal(size=n)
            ids = [f"{split}{i:04d}" for i in range(n)]
            if self.n_features != 4:
                x = rng.normal(size=(n, self.n_features)).astype(np.float32)
            if self.task == "regression":
                target = np.stack([a, b], 1).astype(np.float32)
                self.frames[split] = pd.DataFrame({"sample_id": ids, "a": a, "b": b, "group": np.arange(n) % 5})
            else:
                target = (a > 0).astype(np.float32)
                self.frames[split] = pd.DataFrame({"sample_id": ids, "target": target.astype(int), "group": np.arange(n) % 5})
            if not self.labelled:
                self.frames[split] = self.frames[split].drop(columns=["target", "a", "b"], errors="ignore")
                target = np.full_like(target, np.nan)
            self.datasets[split] = DictDataset(x, aux, target)


class ToyNet(nn.Module):
    def __init__(self, n_out: int, hidden: int = 32, dropout: float = 0.1) -> None:
        super().__init__()
        self.body = nn.Sequential(nn.Linear(7, hidden), nn.ReLU(), nn.Dropout(dropout), nn.Linear(hidden, n_out))

    def forward(self, x: torch.Tensor, aux: torch.Tensor) -> torch.Tensor:
        return self.body(torch.cat([x, aux], dim=-1))


class ToyRegression(BaseTask):
    """Two targets, each with a mean and a std (softplus), Gaussian NLL."""

    input_keys = ("x", "aux")
    output_kind = "regression"
    target_names = ("a", "b")

    def __init__(self, optimizer: Any, hidden: int = 32, dropout: float = 0.1, **base: Any) -> None:
        super().__init__(ToyNet(4, hidden, dropout), optimizer, **base)

    def forward(self, inputs: dict[str, torch.Tensor]) -> torch.Tensor:
        raw = self.net(**inputs).reshape(-1, 2, 2)
        return torch.stack([raw[..., 0], F.softplus(raw[..., 1]) + 1e-3], dim=-1)

    def configure_metrics(self) -> MetricCollection:
        return MetricCollection({"mse": MeanSquaredError()})

    def compute_loss(self, outputs: torch.Tensor, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        return F.gaussian_nll_loss(outputs[..., 0], batch["target"], outputs[..., 1] ** 2)

    def metric_inputs(self, outputs: torch.Tensor, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        return outputs[..., 0], batch["target"]

    def correct_predictions(self, outputs: torch.Tensor, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        return ((outputs[..., 0] - batch["target"]).abs() < 0.1).all(dim=-1)


class ToyBinary(BaseTask):
    """One logit from the same dict inputs, BCE."""

    input_keys = ("x", "aux")
    output_kind = "binary"
    monitor = "val/auroc"
    mode = "max"

    def __init__(self, optimizer: Any, hidden: int = 32, dropout: float = 0.1, **base: Any) -> None:
        super().__init__(ToyNet(1, hidden, dropout), optimizer, **base)

    def forward(self, inputs: dict[str, torch.Tensor]) -> torch.Tensor:
        return self.net(**inputs).squeeze(-1)

    def configure_metrics(self) -> MetricCollection:
        return MetricCollection({"auroc": BinaryAUROC()})

    def compute_loss(self, outputs: torch.Tensor, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        return F.binary_cross_entropy_with_logits(outputs, batch["target"].float())

    def metric_inputs(self, outputs: torch.Tensor, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        return torch.sigmoid(outputs), batch["target"].long()


def toy_summary(arms: dict[str, Any], jobs: list[dict[str, Any]], label: str) -> dict[str, Any] | None:
    """A summary plugin: how many completed jobs each arm has (proves plugins are called)."""
    counts = {arm: info["n_completed"] for arm, info in arms.items()}
    return {"title": f"Toy plugin ({label})", "markdown": f"toy arms: {counts}", "result": {"counts": counts, "label": label}}
