"""Reseed the global random generators before every training batch, from (seed, epoch, batch, rank).

Rigor's data randomness already depends only on (seed, epoch, sample) (datamodules.base.sample_rngs and
the epoch-seeded sampler), but dropout draws from torch's global generator, whose state a checkpoint
does not carry: a run resumed from last.ckpt drew other dropout masks than the uninterrupted run and
ended with other numbers (clip_subtask_smoke: test accuracy 0.10 against 0.69). Reseeding before each
batch makes a step's draws a function of (seed, epoch, batch, rank) alone. Per batch, not per epoch:
between an epoch's start and its first step Lightning draws from the same generator (the loader
iterator's base seed) in an uninterrupted run but not in a resumed one, which a per-epoch seed missed.
"""

from __future__ import annotations

import random
from typing import Any

import lightning as L
import numpy as np
import torch
from lightning.pytorch.callbacks import Callback


def step_seed(seed: int, epoch: int, batch: int, rank: int = 0) -> int:
    """A 32-bit seed derived from (seed, epoch, batch, rank) by numpy's SeedSequence (independent streams)."""
    return int(np.random.SeedSequence([int(seed) & 0xFFFFFFFF, int(epoch), int(batch), int(rank)]).generate_state(1)[0])


class StepSeed(Callback):
    """Seeds torch (CPU and CUDA), numpy's and Python's global generators before every training batch.

    Args:
        seed: The run's seed (``cfg.seed``).
    """

    def __init__(self, seed: int) -> None:
        self.seed = int(seed)

    def on_train_batch_start(self, trainer: L.Trainer, pl_module: L.LightningModule, batch: Any, batch_idx: int) -> None:
        value = step_seed(self.seed, trainer.current_epoch, batch_idx, trainer.global_rank)
        torch.manual_seed(value)  # also seeds every CUDA device
        np.random.seed(value)
        random.seed(value)
