"""Test helpers: a toy lens data set in the real manifest format, and a callback that crashes a run."""

from __future__ import annotations

from pathlib import Path

import lightning as L
import numpy as np
import pandas as pd
from lightning.pytorch.callbacks import Callback


def write_toy_lens_data(out_dir: Path, n: dict[str, int] | None = None, size: int = 63, seed: int = 0) -> Path:
    """Noise stamps with a faint ring (radius θ_E / 0.262 px) for positives; a real-format manifest.

    Not physics: just a fast, learnable stand-in so that tests exercise the real-data code path.
    """
    n = n or {"train": 64, "val": 48, "test": 48}
    rng = np.random.default_rng(seed)
    rows, images = [], []
    r = np.hypot(*np.mgrid[:size, :size] - (size - 1) / 2)
    k = 0
    for split, count in n.items():
        for i in range(count):
            label = i % 2
            theta = rng.uniform(0.5, 3.0) if label else np.nan
            img = rng.normal(0, 1, (3, size, size)) + 5 * np.exp(-(r**2) / 8)  # a host in every stamp
            if label:
                img += 3 * np.exp(-((r - theta / 0.262) ** 2) / 2)
            images.append(img.astype(np.float32))
            rows.append(dict(sample_id=f"toy{k:05d}", split=split, label=label, theta_e=theta,
                             psf_bin=int(rng.integers(0, 3)), depth_bin=int(rng.integers(0, 3)), pair_id=k))
            k += 1
    out_dir.mkdir(parents=True, exist_ok=True)
    pd.DataFrame(rows).to_parquet(out_dir / "manifest.parquet")
    np.save(out_dir / "images.npy", np.stack(images))
    return out_dir / "manifest.parquet"


class CrashAfterEpoch(Callback):
    """Raises at the end of a given epoch (after last.ckpt is written), like a killed job."""

    def __init__(self, epoch: int) -> None:
        self.epoch = epoch

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.current_epoch == self.epoch:
            raise RuntimeError(f"simulated crash after epoch {self.epoch}")


def adamw(lr: float = 1e-3, **kwargs: float):
    """The optimizer partial a model config's ``optimizer: {_target_: torch.optim.AdamW, _partial_: true}`` gives."""
    from functools import partial

    import torch

    return partial(torch.optim.AdamW, lr=lr, **kwargs)
