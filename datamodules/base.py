"""What every family's DataModule shares: array datasets, an epoch-seeded sampler, manifest checks.

The contract other parts rely on:

- each split's dataset yields dicts with the entries the family's module consumes, ``target`` and
  ``index`` (the sample's row in ``split_frame(split)``);
- ``split_frame(split)`` is a DataFrame with ``sample_id``, ``target`` and every metadata column the
  family knows (predictions CSVs are built from it);
- training randomness (shuffling, augmentation) is a function of (seed, epoch, sample), never of hidden
  global RNG state, so a run resumed from ``last.ckpt`` continues exactly as an uninterrupted one.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from pathlib import Path

import lightning as L
import numpy as np
import pandas as pd
import torch
from torch.utils.data import DataLoader, Dataset, Sampler

SPLITS = ("train", "val", "test")


class ArrayDataset(Dataset):
    """Arrays (images, maps, features) from an (optionally memory-mapped) array, with targets.

    Args:
        images: Array (N, ...); rows are read lazily when it is a memmap.
        targets: One target per row (int or float).
        rows: Optional row numbers into `images` (sample i reads images[rows[i]]).
        key: The batch entry the rows go to (the family's module names it in ``input_keys``).
    """

    def __init__(self, images: np.ndarray, targets: np.ndarray, rows: np.ndarray | None = None, key: str = "x") -> None:
        self.key = key
        self.images = images
        self.targets = np.asarray(targets)
        self.rows = np.arange(len(self.targets)) if rows is None else np.asarray(rows)
        if len(self.rows) != len(self.targets):
            raise ValueError(f"{len(self.rows)} rows but {len(self.targets)} targets")

    def __len__(self) -> int:
        return len(self.targets)

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        image = torch.from_numpy(np.array(self.images[self.rows[i]], dtype=np.float32))
        return {self.key: image, "target": torch.as_tensor(self.targets[i]), "index": torch.as_tensor(i, dtype=torch.long)}


class SeededShuffleSampler(Sampler[int]):
    """A shuffling sampler whose order depends only on (seed, epoch).

    Lightning calls ``set_epoch`` at the start of every epoch, so a resumed run replays the same orders.
    """

    def __init__(self, n: int, seed: int) -> None:
        self.n, self.seed, self.epoch = n, seed, 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __iter__(self) -> Iterator[int]:
        return iter(np.random.default_rng([self.seed, self.epoch]).permutation(self.n).tolist())

    def __len__(self) -> int:
        return self.n


def sample_rngs(seed: int, epoch: int, indices: torch.Tensor) -> list[np.random.Generator]:
    """One generator per sample from (seed, epoch, sample index): augmentation independent of batch order."""
    return [np.random.default_rng([seed, epoch, int(i)]) for i in indices.tolist()]


def check_columns(frame: pd.DataFrame, required: Sequence[str], source: str | Path) -> None:
    """Raise a ValueError naming the file and every required column it lacks."""
    missing = [c for c in required if c not in frame.columns]
    if missing:
        raise ValueError(f"{source}: missing column(s) {missing}; found {list(frame.columns)}")


def check_group_leakage(frame: pd.DataFrame, group_col: str, source: str | Path) -> None:
    """Raise if any group (e.g. a pair of images sharing a host) appears in more than one split."""
    if group_col not in frame.columns:
        return
    groups = frame.dropna(subset=[group_col]).groupby(group_col)["split"].nunique()
    leaking = groups[groups > 1]
    if len(leaking):
        examples = leaking.index[:5].tolist()
        raise ValueError(
            f"{source}: {len(leaking)} value(s) of {group_col!r} appear in more than one split (e.g. {examples}); "
            "a group must live in one split only, or the test set leaks into training"
        )


class BaseDataModule(L.LightningDataModule):
    """Dataloaders over ``self.datasets[split]`` with an epoch-seeded training order.

    Args:
        batch_size: Samples per batch.
        num_workers: DataLoader worker processes (0 loads in the main process).
        seed: Seed of shuffling and augmentation.
    """

    #: The config keys that size the splits (named when a split is empty or has one class).
    size_keys: str = "the data config (data.*)"

    def __init__(self, batch_size: int, num_workers: int = 0, seed: int = 0) -> None:
        super().__init__()
        if not isinstance(batch_size, int) or batch_size < 1:
            raise ValueError(f"data.batch_size must be a positive integer, got {batch_size!r}")
        if not isinstance(num_workers, int) or num_workers < 0:
            raise ValueError(f"data.num_workers must be an integer >= 0, got {num_workers!r}")
        self.batch_size = batch_size
        self.num_workers = num_workers
        self.seed = seed
        self.datasets: dict[str, Dataset] = {}
        self.frames: dict[str, pd.DataFrame] = {}

    def split_frame(self, split: str) -> pd.DataFrame:
        """sample_id, target and metadata of every sample of a split, in dataset order."""
        if split not in self.frames:
            self.setup("predict")
        return self.frames[split]

    def _loader(self, split: str, shuffle: bool) -> DataLoader:
        if split not in self.datasets:
            raise KeyError(f"split {split!r} is not set up; available: {sorted(self.datasets)}")
        dataset = self.datasets[split]
        sampler = SeededShuffleSampler(len(dataset), self.seed) if shuffle else None
        return DataLoader(
            dataset,
            batch_size=self.batch_size,
            sampler=sampler,
            num_workers=self.num_workers,
            persistent_workers=self.num_workers > 0,
            pin_memory=torch.cuda.is_available(),
        )

    def train_dataloader(self) -> DataLoader:
        return self._loader("train", shuffle=True)

    def val_dataloader(self) -> DataLoader:
        return self._loader("val", shuffle=False)

    def test_dataloader(self) -> DataLoader:
        return self._loader("test", shuffle=False)

    def split_dataloader(self, split: str) -> DataLoader:
        """A plain, ordered loader of any split (for predictions and analysis callbacks)."""
        return self._loader(split, shuffle=False)
