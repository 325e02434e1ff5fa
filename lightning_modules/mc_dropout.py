"""MC-Dropout as a wrapper around any module with dropout (seed 000: 25 stochastic passes).

The passes are batched, not looped: the batch is repeated N times along the batch axis and sent
through the network once (in chunks if that is too large), with only the dropout layers in training
mode, so BatchNorm keeps its running statistics.
"""

from __future__ import annotations

import torch
from torch import nn

DROPOUT_TYPES = (nn.Dropout, nn.Dropout1d, nn.Dropout2d, nn.Dropout3d, nn.AlphaDropout, nn.FeatureAlphaDropout)


def dropout_layers(module: nn.Module) -> list[nn.Module]:
    """Every dropout layer of `module` with a non-zero rate."""
    return [m for m in module.modules() if isinstance(m, DROPOUT_TYPES) and m.p > 0]


class MCDropout(nn.Module):
    """Stochastic forward passes of a classifier with dropout.

    Args:
        model: A module mapping (B, ...) inputs to (B,) binary or (B, C) multiclass logits.
        n_passes: Number of stochastic passes (seed 000: 25).
        max_batch: Largest number of rows sent through the model at once (passes x samples).

    Raises:
        ValueError: If the model has no active dropout layer (every pass would be identical).
    """

    def __init__(self, model: nn.Module, n_passes: int = 25, max_batch: int = 4096) -> None:
        super().__init__()
        if n_passes < 2:
            raise ValueError(f"mc_dropout.n_passes must be at least 2, got {n_passes}")
        self.model = model
        self.n_passes = n_passes
        self.max_batch = max_batch
        self.dropouts = dropout_layers(model)
        if not self.dropouts:
            raise ValueError(f"{type(model).__name__} has no dropout layer with p > 0: MC-Dropout needs one")

    @torch.inference_mode()
    def sample_logits(self, x: torch.Tensor) -> torch.Tensor:
        """Logits of every pass: shape (n_passes, B) or (n_passes, B, C)."""
        was_training = self.model.training
        self.model.eval()
        for m in self.dropouts:
            m.train()
        try:
            batch = x.shape[0]
            stacked = x.unsqueeze(0).expand(self.n_passes, *x.shape).reshape(self.n_passes * batch, *x.shape[1:])
            chunks = [self.model(part) for part in torch.split(stacked, max(self.max_batch, 1))]
            logits = torch.cat(chunks)
        finally:
            self.model.train(was_training)
        return logits.reshape(self.n_passes, batch, *logits.shape[1:])

    @staticmethod
    def probabilities(logits: torch.Tensor) -> torch.Tensor:
        """Per-pass probabilities: p(class 1) for binary logits, softmax for multiclass."""
        return torch.sigmoid(logits) if logits.dim() == 2 else torch.softmax(logits, dim=-1)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Mean probability and the std (over passes) of the predicted class's probability.

        Returns:
            (mean_prob, std): mean_prob (B,) p(class 1) or (B, C); std (B,).
        """
        probs = self.probabilities(self.sample_logits(x).float())
        mean = probs.mean(dim=0)
        if probs.dim() == 2:  # binary: the predicted class's probability is p or 1 - p; same std
            return mean, probs.std(dim=0)
        pred = mean.argmax(dim=-1)
        picked = probs.gather(-1, pred.expand(self.n_passes, -1).unsqueeze(-1)).squeeze(-1)
        return mean, picked.std(dim=0)
