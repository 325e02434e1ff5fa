"""MC-Dropout as a wrapper around any BaseTask with dropout (seed 000: 25 stochastic passes).

The passes are batched, not looped: every input of the batch is repeated N times along the batch axis
and sent through the module once (in chunks if that is too large), with only the dropout layers in
training mode, so BatchNorm keeps its running statistics (the seed's ``model.train()`` would also switch
BatchNorm to batch statistics).

Summaries per output kind (``summarize``):

- binary: mean p(class 1) and the std over passes of p;
- multiclass: mean softmax and the std over passes of the predicted class's probability;
- regression (point): mean and std over passes of each target;
- regression with uncertainty: mean of the means and the total std sqrt(mean(std^2) + var(means)).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
from torch import nn

DROPOUT_TYPES = (nn.Dropout, nn.Dropout1d, nn.Dropout2d, nn.Dropout3d, nn.AlphaDropout, nn.FeatureAlphaDropout)


def dropout_layers(module: nn.Module) -> list[nn.Module]:
    """Every dropout layer of `module` with a non-zero rate."""
    return [m for m in module.modules() if isinstance(m, DROPOUT_TYPES) and m.p > 0]


def summarize(kind: str, samples: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean and std of stochastic passes, per output kind (see the module docstring).

    Args:
        kind: ``binary``, ``multiclass`` or ``regression``.
        samples: Outputs of every pass, (n_passes, B, ...) as the module returns them.

    Returns:
        (mean, std): binary (B,), (B,); multiclass (B, C), (B,); regression (B, T), (B, T).
    """
    samples = samples.float()
    if kind == "binary":
        probs = torch.sigmoid(samples)
        return probs.mean(0), probs.std(0)
    if kind == "multiclass":
        probs = torch.softmax(samples, dim=-1)
        mean = probs.mean(0)
        pred = mean.argmax(dim=-1)
        picked = probs.gather(-1, pred.expand(samples.shape[0], -1).unsqueeze(-1)).squeeze(-1)
        return mean, picked.std(0)
    if kind == "regression":
        if samples.dim() == 4:  # (n, B, T, 2): mean and std per pass
            means, stds = samples[..., 0], samples[..., 1]
            return means.mean(0), torch.sqrt((stds**2).mean(0) + means.var(0))
        return samples.mean(0), samples.std(0)
    raise ValueError(f"unknown output kind {kind!r}")


class MCDropout(nn.Module):
    """Stochastic forward passes of a BaseTask with dropout.

    Args:
        module: A BaseTask (anything with ``batch_outputs(batch)`` and ``model_inputs(batch)``).
        n_passes: Number of stochastic passes (seed 000: 25).
        max_batch: Largest number of rows sent through the module at once (passes x samples).

    Raises:
        ValueError: If the module has no active dropout layer (every pass would be identical).
    """

    def __init__(self, module: nn.Module, n_passes: int = 25, max_batch: int = 4096) -> None:
        super().__init__()
        if n_passes < 2:
            raise ValueError(f"mc_dropout.n_passes must be at least 2, got {n_passes}")
        self.module = module
        self.n_passes = n_passes
        self.max_batch = max_batch
        self.dropouts = dropout_layers(module)
        if not self.dropouts:
            raise ValueError(f"{type(module).__name__} has no dropout layer with p > 0: MC-Dropout needs one")

    @torch.inference_mode()
    def sample(self, batch: Mapping[str, Any]) -> torch.Tensor:
        """Outputs of every pass: shape (n_passes, B, ...)."""
        inputs = self.module.model_inputs(batch)
        size = len(batch["index"])
        per_chunk = max(1, self.max_batch // max(size, 1))  # passes per forward
        was_training = self.module.training
        self.module.eval()
        for m in self.dropouts:
            m.train()
        try:
            chunks = []
            for start in range(0, self.n_passes, per_chunk):
                k = min(per_chunk, self.n_passes - start)
                repeated = {key: _repeat(value, k, key) for key, value in inputs.items()}
                out = self.module(repeated)
                chunks.append(out.reshape(k, size, *out.shape[1:]))
        finally:
            self.module.train(was_training)
        return torch.cat(chunks)

    def forward(self, batch: Mapping[str, Any]) -> tuple[torch.Tensor, torch.Tensor]:
        """(mean, std) of the passes for the module's output kind (see ``summarize``)."""
        return summarize(self.module.output_kind, self.sample(batch))


def _repeat(value: Any, k: int, key: str) -> torch.Tensor:
    if not isinstance(value, torch.Tensor):
        raise TypeError(f"MC-Dropout repeats tensor inputs; input {key!r} is a {type(value).__name__}")
    return value.unsqueeze(0).expand(k, *value.shape).reshape(k * value.shape[0], *value.shape[1:])
