"""The weak-lensing regressor of seed 001: (Omega_m, S_8) from a convergence map, with or without sigmas.

Heads (``head``):

- ``direct``: the net gives 4 numbers per map, means and sigmas of both targets (sigma = softplus + a
  floor); trained on the Gaussian NLL (``loss: nll``) or on the challenge score without its MSE term
  (``loss: score``: (t - m)^2 / s^2 + log s^2 per target). Outputs (B, 2, 2): the predictions file gets
  ``t_mean`` and ``t_std``.
- ``point``: 2 numbers per map, trained on the MSE of standardised labels (``loss: mse``); the CNN + MCMC
  stage turns these summaries into posteriors (callbacks/weak_lensing/score.py, evaluate.py task=weak_lensing_mcmc).

The net works on standardised labels (the kit's label scaler); the module maps them back, so outputs,
targets and the predictions file are in physical units. The scaler is taken from the datamodule's
training labels when fitting starts and kept in the checkpoint as buffers.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torchmetrics import MeanSquaredError, MetricCollection

from analysis.weak_lensing.score import wl_metrics
from lightning_modules.base import BaseTask

HEADS = {"direct": ("nll", "score"), "point": ("mse",)}


class WeakLensingRegressor(BaseTask):
    """Map -> (Omega_m, S_8) means (and sigmas).

    Args:
        net: A partial building the network from (height, width, n_outputs).
        height, width: Map shape (from the data config).
        head: ``direct`` or ``point``.
        loss: ``nll`` or ``score`` (direct), ``mse`` (point).
        sigma_floor: Smallest sigma, in standardised label units (keeps log s^2 finite).
        score_scale, score_floor: The challenge score's constants, for the logged val score
            (conf/thresholds/weak_lensing.yaml, through conf/model/weak_lensing_base.yaml).
        **base: optimizer, scheduler, ... (BaseTask).
    """

    input_keys = ("kappa",)
    output_kind = "regression"
    target_names = ("omega_m", "s8")
    monitor = "val/loss"
    mode = "min"

    def __init__(self, net: Any, height: int, width: int, score_scale: float, score_floor: float, head: str = "direct",
                 loss: str = "nll", sigma_floor: float = 1e-3, **base: Any) -> None:
        if head not in HEADS:
            raise ValueError(f"model.head must be one of {list(HEADS)}, got {head!r}")
        if loss not in HEADS[head]:
            raise ValueError(f"model.loss={loss!r} does not fit model.head={head!r}; expected one of {list(HEADS[head])}")
        n_targets = len(self.target_names)
        super().__init__(net(height=height, width=width, n_outputs=n_targets * (2 if head == "direct" else 1)), **base)
        self.head, self.loss_name, self.sigma_floor = head, loss, float(sigma_floor)
        self.score_scale, self.score_floor = float(score_scale), float(score_floor)
        self.register_buffer("label_loc", torch.zeros(n_targets))
        self.register_buffer("label_scale", torch.ones(n_targets))

    def setup(self, stage: str) -> None:
        # the label scaler of the training data; a checkpoint brings its own back when loaded
        dm = getattr(self.trainer, "datamodule", None) if self._trainer is not None else None
        if stage == "fit" and dm is not None and hasattr(dm, "label_loc"):
            dm.setup(stage)
            self.label_loc.copy_(torch.as_tensor(np.asarray(dm.label_loc), dtype=self.label_loc.dtype))
            self.label_scale.copy_(torch.as_tensor(np.asarray(dm.label_scale), dtype=self.label_scale.dtype))

    # --- forward -----------------------------------------------------------------------------------
    def forward(self, inputs: dict[str, torch.Tensor]) -> torch.Tensor:
        raw = self.net(inputs["kappa"])
        n = len(self.target_names)
        if self.head == "point":
            return self.label_loc + self.label_scale * raw
        mean = self.label_loc + self.label_scale * raw[:, :n]
        std = self.label_scale * (F.softplus(raw[:, n:]) + self.sigma_floor)
        return torch.stack([mean, std], dim=-1)

    def means(self, outputs: torch.Tensor) -> torch.Tensor:
        return outputs[..., 0] if self.head == "direct" else outputs

    # --- losses and metrics ------------------------------------------------------------------------
    def configure_metrics(self) -> MetricCollection:
        return MetricCollection({"mse": MeanSquaredError()})

    def compute_loss(self, outputs: torch.Tensor, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        target = batch["target"].to(outputs.dtype)
        # in standardised label units, so both targets weigh alike and the loss scale does not depend on the data
        z = (self.means(outputs) - target) / self.label_scale
        if self.head == "point":
            return (z**2).mean()
        s = outputs[..., 1] / self.label_scale
        if self.loss_name == "nll":
            return F.gaussian_nll_loss(torch.zeros_like(z), z, s**2, full=False)
        return (z**2 / s**2 + torch.log(s**2)).sum(dim=-1).mean()  # the challenge score without its MSE term

    def metric_inputs(self, outputs: torch.Tensor, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        return (self.means(outputs) - batch["target"]) / self.label_scale, torch.zeros_like(batch["target"])

    def correct_predictions(self, outputs: torch.Tensor, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        # "right" for the overfit check: both targets within 0.1 label std
        return ((self.means(outputs) - batch["target"]).abs() < 0.1 * self.label_scale).all(dim=-1)

    def _log_score(self, split: str) -> None:
        if self.head != "direct" or (self.trainer is not None and self.trainer.sanity_checking):
            return
        out = self.epoch_outputs(split)
        if len(out["index"]) == 0:
            return
        o, t = out["outputs"].double().numpy(), out["target"].double().numpy()
        m = wl_metrics(t, o[..., 0], o[..., 1], self.target_names, self.score_scale, self.score_floor,
                       self.label_loc.cpu().double().numpy(), self.label_scale.cpu().double().numpy())
        self.log(f"{split}/score", m["score"])
        self.log(f"{split}/coverage", m["coverage"])

    def on_validation_epoch_end(self) -> None:
        # the test split's score comes from callbacks/weak_lensing/score.py (on every test map, with the MCMC variants)
        self._log_score("val")
