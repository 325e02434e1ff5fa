"""Lens-finding data (seed 004): a parquet manifest plus a memory-mapped (N, 3, 63, 63) g,r,z array.

Real survey cutouts and the embedded simulation go through the same code: with ``manifest_path`` unset,
the simulator in ``datamodules/lens/simulate.py`` writes a manifest in exactly the real format (once,
cached under ``cache_dir``) and it is read back from disk like any other.

Manifest columns: ``sample_id, split, label, theta_e`` (arcsec, NaN for negatives), ``psf_bin,
depth_bin, pair_id``; optional ``image_index`` (row in the image array; default: manifest row order)
and any further metadata, which is carried into predictions CSVs.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from tqdm.auto import tqdm

from analysis.lens.images import apply_core_mask, radial_median_model, robust_background
from datamodules.base import SPLITS, ArrayDataset, BaseDataModule, check_columns, check_group_leakage, sample_rngs

log = logging.getLogger(__name__)

REQUIRED_COLUMNS = ("sample_id", "split", "label", "theta_e", "psf_bin", "depth_bin", "pair_id")


class LensDataModule(BaseDataModule):
    """Paired or unpaired lens cutouts with residual preprocessing, augmentation and core masking.

    Args:
        manifest_path: A real (or previously simulated) manifest; None simulates the embedded default.
        images_path: The (N, 3, H, W) .npy array; default ``images.npy`` beside the manifest.
        cache_dir: Where simulated data is cached.
        mode: ``paired`` or ``unpaired`` (chooses the simulated data set).
        preprocessing: ``raw`` or ``residual`` (subtract a radial-median host model estimated from the image).
        background_radius: Pixels beyond this radius define each image's background level and noise, used
            to normalise every band to units of its own noise.
        clip: Normalised values are clipped to [-clip, clip] (None: no clipping).
        fraction: Fraction of every split kept, sampled stratified by label, θ_E bin, PSF bin and depth bin.
        fraction_seed: Seed of that sampling.
        thetae_edges: θ_E bin edges (arcsec) used for the stratified sampling.
        augment: ``{hflip: p, vflip: p, rot90: bool}`` (seed 004 section 4.3); training inputs only.
        masking: None, ``{type: stochastic, radius, prob}`` or ``{type: scheduled, schedule: [{until_epoch,
            radius, prob}, ...]}`` (``until_epoch`` null for the last stage); training inputs only.
        mask_fill: Value written into masked pixels (0 = background after normalisation).
        simulation: Keyword arguments of the simulator's LensSimConfig.
        sim_workers: Processes used to simulate.
        batch_size, num_workers, seed: See BaseDataModule.
    """

    size_keys = "data.fraction, the manifest's split/label columns, or data.simulation.n_train/n_val/n_test"

    def __init__(
        self,
        manifest_path: str | None = None,
        images_path: str | None = None,
        cache_dir: str = "data",
        mode: str = "unpaired",
        preprocessing: str = "residual",
        background_radius: float = 20.0,
        clip: float | None = 100.0,
        fraction: float = 1.0,
        fraction_seed: int = 0,
        thetae_edges: Sequence[float] = (0.5, 0.75, 1.0, 1.5, 2.0, 2.5, 3.0),
        augment: Mapping[str, Any] | None = None,
        masking: Mapping[str, Any] | None = None,
        mask_fill: float = 0.0,
        simulation: Mapping[str, Any] | None = None,
        sim_workers: int = 2,
        batch_size: int = 128,
        num_workers: int = 0,
        seed: int = 42,
    ) -> None:
        super().__init__(batch_size=batch_size, num_workers=num_workers, seed=seed)
        if mode not in ("paired", "unpaired"):
            raise ValueError(f"data.mode must be 'paired' or 'unpaired', got {mode!r}")
        if preprocessing not in ("raw", "residual"):
            raise ValueError(f"data.preprocessing must be 'raw' or 'residual', got {preprocessing!r}")
        if not 0.0 < fraction <= 1.0:
            raise ValueError(f"data.fraction must be in (0, 1], got {fraction}")
        self.manifest_path = manifest_path
        self.images_path = images_path
        self.cache_dir = cache_dir
        self.mode = mode
        self.preprocessing = preprocessing
        self.background_radius = background_radius
        self.clip = clip
        self.fraction = fraction
        self.fraction_seed = fraction_seed
        self.thetae_edges = [float(e) for e in thetae_edges]
        self.augment = dict(augment or {})
        self.masking = _check_masking(masking)
        self.mask_fill = mask_fill
        self.simulation = dict(simulation or {})
        self.sim_workers = sim_workers
        self.inputs: dict[str, np.ndarray] = {}

    # --- data on disk ------------------------------------------------------------------------------
    def prepare_data(self) -> None:
        """Simulate the embedded data set once (only on rank 0; cached)."""
        if self.manifest_path is None:
            self._simulated_manifest()

    def _simulated_manifest(self) -> Path:
        from datamodules.lens.simulate import ensure_lens_dataset

        cfg = {**self.simulation, "mode": self.mode}
        return Path(ensure_lens_dataset(self.cache_dir, cfg, n_workers=self.sim_workers, progress=True))

    def _paths(self) -> tuple[Path, Path]:
        manifest = Path(self.manifest_path) if self.manifest_path else self._simulated_manifest()
        images = Path(self.images_path) if self.images_path else manifest.with_name("images.npy")
        for p, key in ((manifest, "data.manifest_path"), (images, "data.images_path")):
            if not p.exists():
                raise FileNotFoundError(f"{key}: {p} does not exist")
        return manifest, images

    def load_manifest(self) -> tuple[pd.DataFrame, np.ndarray, Path]:
        """Read and validate the manifest and open the image array memory-mapped."""
        manifest_path, images_path = self._paths()
        frame = pd.read_parquet(manifest_path)
        check_columns(frame, REQUIRED_COLUMNS, manifest_path)
        if frame["sample_id"].duplicated().any():
            dup = frame.loc[frame["sample_id"].duplicated(), "sample_id"].head(5).tolist()
            raise ValueError(f"{manifest_path}: duplicated sample_id values, e.g. {dup}")
        bad_split = sorted(set(frame["split"]) - set(SPLITS))
        if bad_split:
            raise ValueError(f"{manifest_path}: column 'split' has values {bad_split}; expected {list(SPLITS)}")
        if not frame["label"].isin([0, 1]).all():
            raise ValueError(f"{manifest_path}: column 'label' must hold 0 or 1 only")
        if frame.loc[frame["label"] == 1, "theta_e"].isna().any():
            raise ValueError(f"{manifest_path}: column 'theta_e' is NaN for some positives; every lens needs its θ_E")
        check_group_leakage(frame, "pair_id", manifest_path)
        try:
            images = np.load(images_path, mmap_mode="r")
        except ValueError as err:
            raise ValueError(f"{images_path}: not a readable .npy array ({err})") from err
        if images.ndim != 4 or images.shape[1] != 3 or images.shape[2] != images.shape[3]:
            raise ValueError(f"{images_path}: expected shape (N, 3, H, H) with bands g,r,z, got {images.shape}")
        if "image_index" not in frame.columns:
            frame = frame.assign(image_index=np.arange(len(frame)))
        if len(frame) and (frame["image_index"].max() >= len(images) or frame["image_index"].min() < 0):
            raise ValueError(
                f"{manifest_path}: image_index reaches {frame['image_index'].max()} but {images_path} has {len(images)} images"
            )
        return frame.reset_index(drop=True), images, images_path

    # --- sampling and preprocessing ----------------------------------------------------------------
    def stratified_subset(self, frame: pd.DataFrame) -> pd.DataFrame:
        """Keep `fraction` of each (label, θ_E bin, PSF bin, depth bin) cell, as in seed 004 section 2.2."""
        if self.fraction >= 1.0:
            return frame
        theta_bin = np.digitize(frame["theta_e"].fillna(-1.0).to_numpy(), self.thetae_edges)
        keys = pd.DataFrame({"label": frame["label"], "tb": theta_bin, "psf": frame["psf_bin"], "depth": frame["depth_bin"]})
        rng = np.random.default_rng(self.fraction_seed)
        keep: list[int] = []
        for _, idx in keys.groupby(list(keys.columns), sort=True).groups.items():
            idx = np.asarray(idx)
            n = int(round(self.fraction * len(idx)))
            keep.extend(rng.choice(idx, size=n, replace=False).tolist())
        return frame.loc[sorted(keep)].reset_index(drop=True)

    def preprocess(self, raw: np.ndarray) -> np.ndarray:
        """Raw flux stamps → model inputs: optional host subtraction, per-band noise normalisation, clip."""
        x = np.asarray(raw, dtype=np.float32)
        if self.preprocessing == "residual":
            x = x - radial_median_model(x)
        med, sigma = robust_background(x, self.background_radius)
        x = ((x - med) / sigma).astype(np.float32)
        if self.clip is not None:
            np.clip(x, -self.clip, self.clip, out=x)
        return x

    def setup(self, stage: str | None = None) -> None:
        if self.frames:
            return
        frame, images, images_path = self.load_manifest()
        for split in SPLITS:
            part = self.stratified_subset(frame[frame["split"] == split].reset_index(drop=True))
            rows = part["image_index"].to_numpy()
            out = np.empty((len(rows), *images.shape[1:]), dtype=np.float32)
            chunk = 1024
            for start in tqdm(range(0, len(rows), chunk), desc=f"preprocess {split} ({self.preprocessing})", leave=False):
                block = np.asarray(images[np.sort(rows[start : start + chunk])])
                order = np.argsort(np.argsort(rows[start : start + chunk]))  # memmap reads want sorted rows
                out[start : start + chunk] = self.preprocess(block[order])
            finite = np.isfinite(out).all(axis=(1, 2, 3))
            if not finite.all():
                bad = part.loc[~finite, "sample_id"].head(5).tolist()
                raise ValueError(f"{images_path}: non-finite pixels in {int((~finite).sum())} {split} image(s), e.g. sample_id {bad}")
            self.inputs[split] = out
            labels = part["label"].to_numpy(dtype=np.float32)
            self.datasets[split] = ArrayDataset(out, labels, key="image")
            frame_out = part.drop(columns=["split", "label", "image_index"])
            frame_out.insert(1, "target", part["label"].astype(int))  # sample_id, target, then metadata
            self.frames[split] = frame_out
            log.info("lens %s: %d samples (%d positives)", split, len(part), int(labels.sum()))

    # --- training-time transforms ------------------------------------------------------------------
    def masking_at(self, epoch: int) -> tuple[float, float]:
        """(radius, probability) of core masking in force at `epoch` (0, 0 when masking is off)."""
        m = self.masking
        if m is None:
            return 0.0, 0.0
        if m["type"] == "stochastic":
            return float(m["radius"]), float(m["prob"])
        for stage in m["schedule"]:
            if stage.get("until_epoch") is None or epoch < stage["until_epoch"]:
                return float(stage["radius"]), float(stage["prob"])
        last = m["schedule"][-1]
        return float(last["radius"]), float(last["prob"])

    def mask_batch(self, images: torch.Tensor, indices: torch.Tensor, epoch: int, salt: int = 0) -> torch.Tensor:
        """Core-mask each sample with the epoch's probability; the draw depends on (seed, epoch, index)."""
        radius, prob = self.masking_at(epoch)
        if radius <= 0 or prob <= 0:
            return images
        draws = torch.tensor([g.random() for g in sample_rngs(self.seed + salt, epoch, indices)], device=images.device)
        chosen = draws < prob
        if chosen.any():
            images = images.clone()
            images[chosen] = apply_core_mask(images[chosen], radius, self.mask_fill)
        return images

    def augment_batch(self, images: torch.Tensor, indices: torch.Tensor, epoch: int) -> torch.Tensor:
        """Flips and 90° rotations (seed 004 section 4.3), drawn per sample from (seed, epoch, index)."""
        rngs = sample_rngs(self.seed, epoch, indices)
        draws = np.array([[g.random(), g.random(), g.integers(0, 4)] for g in rngs]).reshape(-1, 3)
        dev = images.device
        hflip = torch.from_numpy(draws[:, 0] < self.augment.get("hflip", 0.0)).to(dev)
        vflip = torch.from_numpy(draws[:, 1] < self.augment.get("vflip", 0.0)).to(dev)
        x = torch.where(hflip[:, None, None, None], images.flip(-1), images)
        x = torch.where(vflip[:, None, None, None], x.flip(-2), x)
        if self.augment.get("rot90", False):
            k = torch.from_numpy(draws[:, 2].astype(np.int64)).to(dev)
            x = x.clone()
            for quarter in (1, 2, 3):
                sel = k == quarter
                if sel.any():
                    x[sel] = torch.rot90(x[sel], quarter, dims=(-2, -1))
        return x

    def on_after_batch_transfer(self, batch: dict[str, torch.Tensor], dataloader_idx: int) -> dict[str, torch.Tensor]:
        trainer = self.trainer
        if trainer is not None and trainer.training:
            epoch = trainer.current_epoch
            images = self.augment_batch(batch["image"], batch["index"], epoch)
            batch = {**batch, "image": self.mask_batch(images, batch["index"], epoch, salt=1)}
        return batch

    def model_inputs(
        self, split: str, n: int | None = None, epoch: int | None = None, seed: int = 0
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Inputs as the model sees them: preprocessed, plus the training core masking of `epoch` if given.

        Args:
            split: Which split.
            n: Take a label-stratified random subset of this many (None: all).
            epoch: Apply that epoch's training masking (None: no masking).
            seed: Seed of the subset.

        Returns:
            (images (n, 3, H, W) float32, labels (n,) int, groups (n,): pair_id, for group-aware CV)
        """
        self.setup()
        labels = self.frames[split]["target"].to_numpy()
        idx = np.arange(len(labels))
        if n is not None and n < len(labels):
            rng = np.random.default_rng(seed)
            per_class = [rng.permutation(idx[labels == c]) for c in (0, 1)]
            take0 = min(len(per_class[0]), n // 2)
            take1 = min(len(per_class[1]), n - take0)
            idx = np.sort(np.concatenate([per_class[0][: n - take1], per_class[1][:take1]]))
        images = torch.from_numpy(self.inputs[split][idx])
        if epoch is not None:
            images = self.mask_batch(images, torch.from_numpy(idx), epoch, salt=1)
        return images.numpy(), labels[idx], self.frames[split]["pair_id"].to_numpy()[idx]


def _check_masking(masking: Mapping[str, Any] | None) -> dict | None:
    """Validate the masking config early, naming the bad key."""
    if not masking:
        return None
    m = dict(masking)
    kind = m.get("type")
    if kind == "stochastic":
        for key in ("radius", "prob"):
            if key not in m:
                raise ValueError(f"data.masking.{key} is required for stochastic masking")
        if not 0 <= m["prob"] <= 1:
            raise ValueError(f"data.masking.prob must be in [0, 1], got {m['prob']}")
        return m
    if kind == "scheduled":
        schedule = [dict(s) for s in m.get("schedule") or []]
        if not schedule:
            raise ValueError("data.masking.schedule must list at least one {until_epoch, radius, prob} stage")
        ends = [s.get("until_epoch") for s in schedule]
        if any(e is None for e in ends[:-1]) or any(b <= a for a, b in zip(ends[:-1], ends[1:-1])):
            raise ValueError(f"data.masking.schedule: until_epoch must increase and only the last may be null, got {ends}")
        m["schedule"] = schedule
        return m
    raise ValueError(f"data.masking.type must be 'stochastic' or 'scheduled', got {kind!r}")
