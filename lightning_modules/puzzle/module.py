"""Puzzle-piece tasks of seed 002: which of the cols x rows cells a piece comes from.

- ``PuzzleClassifier``: cross-entropy over the cells (exp3, exp3 deep, exp4, resnet18); with
  ``rotation: true`` a second, 4-class head predicts the piece's k x 90 degree rotation (seed "next step 2")
  and the target is (cell, k).
- ``PuzzleRegressor``: the exp3 regression variant, predicting the cell's (x, y) centre.

Both report ``top1`` (the regressor: the rounded position is the right cell); the classifier also
``top5`` (torchmetrics), the regressor ``mean_distance`` in cells. Nets are given as a partial
(``_partial_: true`` in the config) and built here, because the number of cells comes from the grid.

Every module also answers ``correct_predictions(logits, batch)`` (used by the overfit check),
``predicted_cells(logits)`` and ``cell_probabilities(logits)`` (used by the puzzle plots).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from torchmetrics import Metric, MetricCollection
from torchmetrics.classification import MulticlassAccuracy
from torchmetrics.wrappers.abstract import WrapperMetric

from lightning_modules.base import BaseTask

QUARTER_TURNS = 4


def _build(net: nn.Module | Callable[..., nn.Module], **kwargs: Any) -> nn.Module:
    """The net itself, or the net a partial builds once the outputs are known."""
    if isinstance(net, nn.Module):
        return net
    if not callable(net):
        raise TypeError(f"model.net must be an nn.Module or a partial (_partial_: true) that builds one, "
                        f"got {type(net).__name__}")
    return net(**kwargs)


class Sliced(WrapperMetric):
    """Feed a metric one head's outputs and one target column of multi-head logits and targets.

    Args:
        metric: The wrapped metric.
        start, stop: Columns of the logits the metric sees.
        target_column: Column of a (B, d) target (None: the target as it is).
    """

    def __init__(self, metric: Metric, start: int, stop: int, target_column: int | None = None) -> None:
        super().__init__()
        self.metric = metric
        self.start, self.stop, self.target_column = start, stop, target_column

    def update(self, preds: torch.Tensor, target: torch.Tensor) -> None:
        t = target if self.target_column is None else target[:, self.target_column]
        self.metric.update(preds[:, self.start : self.stop], t)

    def compute(self) -> torch.Tensor:
        return self.metric.compute()

    def reset(self) -> None:
        self.metric.reset()
        super().reset()

    def forward(self, *args: Any, **kwargs: Any) -> Any:
        self.update(*args, **kwargs)
        return None


class TopKAccuracy(Metric):
    """Fraction of samples whose target is among the k highest logits.

    Equal to torchmetrics' ``MulticlassAccuracy(top_k=k, average="micro")`` (the tests check it), but a
    top-k hit count instead of its per-class stat scores, which cost ~0.2 s per batch at 950 classes.

    Args:
        top_k: k.
    """

    full_state_update = False

    def __init__(self, top_k: int = 1) -> None:
        super().__init__()
        self.top_k = int(top_k)
        self.add_state("correct", default=torch.tensor(0, dtype=torch.long), dist_reduce_fx="sum")
        self.add_state("count", default=torch.tensor(0, dtype=torch.long), dist_reduce_fx="sum")

    def update(self, preds: torch.Tensor, target: torch.Tensor) -> None:
        k = min(self.top_k, preds.shape[-1])
        hits = (preds.topk(k, dim=-1).indices == target.long()[:, None]).any(dim=-1)
        self.correct += hits.sum()
        self.count += preds.shape[0]

    def compute(self) -> torch.Tensor:
        return self.correct.float() / self.count.clamp(min=1)


class MeanCellDistance(Metric):
    """Mean Euclidean distance, in cells, between predicted and true (col, row)."""

    full_state_update = False

    def __init__(self) -> None:
        super().__init__()
        self.add_state("total", default=torch.tensor(0.0, dtype=torch.float64), dist_reduce_fx="sum")
        self.add_state("count", default=torch.tensor(0, dtype=torch.long), dist_reduce_fx="sum")

    def update(self, preds: torch.Tensor, target: torch.Tensor) -> None:
        self.total += torch.linalg.vector_norm(preds.double() - target.double(), dim=-1).sum()
        self.count += preds.shape[0]

    def compute(self) -> torch.Tensor:
        return (self.total / self.count.clamp(min=1)).float()


class CellAccuracy(Metric):
    """Fraction of samples whose predicted cell is the true one.

    The predicted cell is the rounded (col, row), clamped into the grid: a point beyond the picture's
    edge is placed in the nearest edge cell, as a person placing the piece would.

    Args:
        cols, rows: The grid.
    """

    full_state_update = False

    def __init__(self, cols: int, rows: int) -> None:
        super().__init__()
        self.upper = (float(cols - 1), float(rows - 1))
        self.add_state("correct", default=torch.tensor(0, dtype=torch.long), dist_reduce_fx="sum")
        self.add_state("count", default=torch.tensor(0, dtype=torch.long), dist_reduce_fx="sum")

    def update(self, preds: torch.Tensor, target: torch.Tensor) -> None:
        upper = torch.tensor(self.upper, device=preds.device, dtype=preds.dtype)
        cells = torch.minimum(preds.round().clamp(min=0), upper)
        self.correct += (cells == target.round()).all(dim=-1).sum()
        self.count += preds.shape[0]

    def compute(self) -> torch.Tensor:
        return self.correct.float() / self.count.clamp(min=1)


class PuzzleClassifier(BaseTask):
    """Cell classification (and optionally rotation classification) of puzzle pieces.

    Args:
        net: An nn.Module with cols*rows (+4) outputs, or a partial taking ``num_outputs`` and ``num_rotations``.
        cols, rows: The grid (C = cols * rows classes).
        optimizer, scheduler: See BaseTask.
        top_k: The top-k accuracies reported (``top1``, ``top5``, ...).
        rotation: Add the 4-class rotation head; targets are then (cell, k).
        rotation_weight: Weight of the rotation loss next to the cell loss.
    """

    monitor = "val/top1"
    mode = "max"
    input_keys = ("image",)
    output_kind = "multiclass"

    def __init__(self, net: nn.Module | Callable[..., nn.Module], cols: int, rows: int, optimizer: Callable[..., Any],
                 top_k: Sequence[int] = (1, 5), rotation: bool = False, rotation_weight: float = 1.0,
                 **base: Any) -> None:
        self.cols, self.rows = int(cols), int(rows)
        self.n_cells = self.cols * self.rows
        self.top_k = [int(k) for k in top_k]
        if not self.top_k or min(self.top_k) < 1 or max(self.top_k) > self.n_cells:
            raise ValueError(f"model.top_k must be within 1..{self.n_cells}, got {list(top_k)}")
        self.rotation = bool(rotation)
        self.rotation_weight = float(rotation_weight)
        built = _build(net, num_outputs=self.n_cells, num_rotations=QUARTER_TURNS if self.rotation else 0)
        super().__init__(built, optimizer, **base)

    def configure_metrics(self) -> MetricCollection:
        # Sliced keeps the cell metrics on the cell head when a rotation head is appended;
        # compute_groups=False: metrics with equal state shapes must never be merged into one group
        metrics: dict[str, Metric] = {
            f"top{k}": Sliced(TopKAccuracy(k), 0, self.n_cells, 0 if self.rotation else None)
            for k in self.top_k
        }
        if self.rotation:
            metrics["rotation_acc"] = Sliced(MulticlassAccuracy(num_classes=QUARTER_TURNS, average="micro"), self.n_cells,
                                             self.n_cells + QUARTER_TURNS, 1)
        return MetricCollection(metrics, compute_groups=False)

    def _split(self, logits: torch.Tensor, target: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None,
                                                                          torch.Tensor | None]:
        """(cell logits, cell targets, rotation logits, rotation targets), checking the shapes."""
        if logits.shape[-1] != self.n_cells + (QUARTER_TURNS if self.rotation else 0):
            raise ValueError(f"{type(self).__name__}: the net gives {logits.shape[-1]} outputs; expected {self.n_cells} cells"
                             + (f" + {QUARTER_TURNS} rotations" if self.rotation else ""))
        if self.rotation:
            if target.ndim != 2 or target.shape[1] != 2:
                raise ValueError(f"{type(self).__name__}: rotation needs (cell, k) targets, got shape {tuple(target.shape)}; "
                                 "set data.rotation=true")
            return logits[:, : self.n_cells], target[:, 0].long(), logits[:, self.n_cells :], target[:, 1].long()
        if target.ndim != 1 or target.is_floating_point():
            raise ValueError(f"{type(self).__name__}: expects integer cell targets, got {target.dtype} of shape "
                             f"{tuple(target.shape)}; set data.target=cell and data.rotation to model.rotation")
        return logits, target.long(), None, None

    def compute_loss(self, logits: torch.Tensor, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        cell_logits, cell, rot_logits, k = self._split(logits, batch["target"])
        loss = F.cross_entropy(cell_logits.float(), cell)
        if rot_logits is not None:
            loss = loss + self.rotation_weight * F.cross_entropy(rot_logits.float(), k)
        return loss

    def correct_predictions(self, logits: torch.Tensor, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        """Per sample: right cell (and right rotation, with the rotation head)."""
        cell_logits, cell, rot_logits, k = self._split(logits, batch["target"])
        ok = cell_logits.argmax(-1) == cell
        if rot_logits is not None:
            ok = ok & (rot_logits.argmax(-1) == k)
        return ok

    def prediction_outputs(self, outputs: torch.Tensor) -> torch.Tensor:
        """The cell logits (a rotation head's logits are left out of the predictions file)."""
        return outputs[:, : self.n_cells]

    def predicted_cells(self, logits: torch.Tensor) -> torch.Tensor:
        return logits[:, : self.n_cells].argmax(-1)

    def cell_probabilities(self, logits: torch.Tensor) -> torch.Tensor | None:
        return torch.softmax(logits[:, : self.n_cells].float(), dim=-1)


class PuzzleRegressor(BaseTask):
    """Regression of a piece's cell centre (x, y), in [0, 1] picture coordinates, with MSE.

    The net predicts x = (col + 0.5) / cols and y = (row + 0.5) / rows; metrics convert back to cells.
    The best checkpoint is the one with the smallest mean distance in cells.

    Args:
        net: An nn.Module with 2 outputs, or a partial taking ``num_outputs``.
        cols, rows: The grid.
        optimizer, scheduler: See BaseTask.
    """

    monitor = "val/mean_distance"
    mode = "min"
    input_keys = ("image",)
    output_kind = "regression"
    target_names = ("col", "row")  # the predictions file holds col, col_mean, row, row_mean in cells

    def __init__(self, net: nn.Module | Callable[..., nn.Module], cols: int, rows: int, optimizer: Callable[..., Any],
                 **base: Any) -> None:
        self.cols, self.rows = int(cols), int(rows)
        self.n_cells = self.cols * self.rows
        super().__init__(_build(net, num_outputs=2, num_rotations=0), optimizer, **base)
        self.register_buffer("grid", torch.tensor([float(cols), float(rows)]), persistent=False)

    def configure_metrics(self) -> MetricCollection:
        return MetricCollection({"mean_distance": MeanCellDistance(), "top1": CellAccuracy(self.cols, self.rows)},
                                compute_groups=False)

    def _target(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        target = batch["target"]
        if target.ndim != 2 or target.shape[1] != 2 or not target.is_floating_point():
            raise ValueError(f"{type(self).__name__}: expects (col, row) float targets, got {target.dtype} of shape "
                             f"{tuple(target.shape)}; set data.target=coords")
        return target

    def to_cells(self, outputs: torch.Tensor) -> torch.Tensor:
        """Net outputs in [0, 1] picture units -> (col, row) in cells."""
        return outputs.float() * self.grid - 0.5

    def compute_loss(self, logits: torch.Tensor, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        target = (self._target(batch).float() + 0.5) / self.grid
        return F.mse_loss(logits.float(), target)

    def metric_inputs(self, logits: torch.Tensor, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        return self.to_cells(logits), self._target(batch).float()

    def prediction_outputs(self, outputs: torch.Tensor) -> torch.Tensor:
        """(col, row) in cells."""
        return self.to_cells(outputs)

    def _rounded(self, logits: torch.Tensor) -> torch.Tensor:
        cells = self.to_cells(logits).round()
        upper = (self.grid - 1).to(cells.device)
        return torch.minimum(cells.clamp(min=0), upper).long()

    def correct_predictions(self, logits: torch.Tensor, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        """Per sample: the rounded (col, row) is the true cell."""
        return (self._rounded(logits) == self._target(batch).round().long()).all(dim=-1)

    def predicted_cells(self, logits: torch.Tensor) -> torch.Tensor:
        colrow = self._rounded(logits)
        return colrow[:, 1] * self.cols + colrow[:, 0]

    def cell_probabilities(self, logits: torch.Tensor) -> torch.Tensor | None:
        return None  # a point estimate has no distribution over cells
