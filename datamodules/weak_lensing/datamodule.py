"""Weak-lensing convergence maps (seed 001): a manifest plus the valid pixels of each map and a mask.

Two sources, one reader:

- a manifest (``manifest.parquet``: sample_id, split, cosmology_id, realisation, omega_m, s8, noisy,
  pixel_row and any metadata) beside ``pixels.npy`` (N, n_valid) and ``mask.npy`` (H, W), as the
  embedded simulator (datamodules/weak_lensing/simulate.py) writes it when ``manifest_path`` is unset;
- the FAIR-Universe kit's own arrays (``challenge.dir``): kappa (Ncosmo, Nsys, n_valid) flattened over
  the mask, label (Ncosmo, Nsys, 5) and the mask file; splits along realisations (the last ``n_test``
  realisations of every cosmology are test, the ``n_val`` before them val).

Inputs follow the kit: shape noise sigma = shape_noise / sqrt(2 n_g p^2) is added to noiseless maps (train:
a fresh draw per (seed, epoch, sample); val and test: one fixed draw per sample), then every map is
standardised by one global mean and std of the training maps (noise included), masked pixels set to 0.
Batches: ``kappa`` (1, H, W) float32, ``target`` (2,) = (Omega_m, S_8) in physical units, ``index``.

Unlabelled maps (the kit's test set; evaluate.py task=predict or task=weak_lensing_submission, through
``data_overrides``): ``maps_path`` names a .npy of maps, either (N, n_valid) flattened over a mask as the kit
ships ``WIDE12H_bin2_2arcmin_kappa_noisy_test.npy`` (the mask: ``maps_mask_path``, e.g. the kit's
``WIDE12H_bin2_2arcmin_mask.npy``; null: the run's own full-resolution mask) or (N, H, W). They become the
``test`` split (train and val are empty), one row per map in file order (``sample_id`` ``map_<i>``,
``map_index``), without truth columns, so ``labelled`` must be false. They are preprocessed as the run's
evaluation maps: block-mean by ``maps_downsample`` (null: the run's own factor, ``challenge.downsample`` or
1) over their mask, the run's mask applied (run pixels the maps do not cover count as masked), no noise
added when ``maps_noisy`` (the kit's test maps carry it) else one fixed draw per map, then standardised
with the run's training statistics: ``input_stats`` ({loc, scale}, as a checkpoint stores them, see
``state_dict``) or, when null, the ones computed from the run's training maps, never from these maps. The
run's data source (manifest, simulation or kit arrays) is still read for its mask and statistics. Maps
whose shape after downsampling is not the model's input are refused at set-up, naming the key, the expected
and the found shape. These keys are not in conf/data/weak_lensing*.yaml (a run's saved config, and so its
resume check, stays as it was); data_overrides adds them.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from torch.utils.data import Dataset

from datamodules.base import SPLITS, BaseDataModule, check_columns, sample_rngs
from datamodules.weak_lensing.simulate import noise_sigma

log = logging.getLogger(__name__)

TARGETS = ("omega_m", "s8")
REQUIRED_COLUMNS = ("sample_id", "split", "cosmology_id", "omega_m", "s8")


class MapDataset(Dataset):
    """Maps rebuilt from their valid pixels, with fixed noise for evaluation splits.

    Args:
        pixels: (N_all, n_valid) array (memmap), rows of this split given by `rows`.
        rows: Row of each sample in `pixels`.
        mask: (H, W) bool mask.
        targets: (N, 2) float32 targets.
        fixed_noise: Per-sample noise std to add once (0: none), keyed by (seed, sample).
        loc, scale: Global standardisation.
        seed: Seed of the fixed noise.
        downsample: Block-mean factor applied to the map (real kit maps at full resolution).
    """

    def __init__(self, pixels: np.ndarray, rows: np.ndarray, mask: np.ndarray, targets: np.ndarray, fixed_noise: np.ndarray,
                 loc: float, scale: float, seed: int, downsample: int = 1, salt: int = 0) -> None:
        self.pixels, self.rows, self.full_mask = pixels, np.asarray(rows), mask
        self.targets = np.asarray(targets, dtype=np.float32)
        self.fixed_noise = np.asarray(fixed_noise, dtype=np.float64)
        self.loc, self.scale, self.seed, self.ds, self.salt = loc, scale, seed, downsample, salt
        self.mask = block_mask(mask, downsample)

    def __len__(self) -> int:
        return len(self.rows)

    def raw_map(self, i: int) -> np.ndarray:
        """The (H, W) map of sample i in physical units with its fixed noise (masked pixels 0)."""
        full = np.zeros(self.full_mask.shape, dtype=np.float64)
        full[self.full_mask] = self.pixels[self.rows[i]]
        kappa = block_mean(full, self.full_mask, self.ds)
        if self.fixed_noise[i] > 0:
            rng = np.random.default_rng([self.seed, 99, self.salt, int(i)])
            kappa = kappa + rng.standard_normal(kappa.shape) * self.fixed_noise[i]
        return np.where(self.mask, kappa, 0.0)

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        x = np.where(self.mask, (self.raw_map(i) - self.loc) / self.scale, 0.0).astype(np.float32)
        return {"kappa": torch.from_numpy(x[None]), "target": torch.from_numpy(self.targets[i]), "index": torch.as_tensor(i, dtype=torch.long)}


class UnlabelledMapDataset(MapDataset):
    """MapDataset of maps on their own mask, standardised under the run's mask `model_mask` (the network's input)."""

    def __init__(self, *args: Any, model_mask: np.ndarray, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.model_mask = np.asarray(model_mask, dtype=bool)

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        keep = self.model_mask & self.mask
        x = np.where(keep, (self.raw_map(i) - self.loc) / self.scale, 0.0).astype(np.float32)
        return {"kappa": torch.from_numpy(x[None]), "target": torch.from_numpy(self.targets[i]), "index": torch.as_tensor(i, dtype=torch.long)}


class _MaskedRows:
    """Rows of (N, H, W) maps read as their valid pixels over `mask`, one map at a time (the array stays on disk)."""

    def __init__(self, maps: np.ndarray, mask: np.ndarray) -> None:
        self.maps, self.mask = maps, mask

    def __len__(self) -> int:
        return len(self.maps)

    def __getitem__(self, row: int) -> np.ndarray:
        return np.asarray(self.maps[row], dtype=np.float64)[self.mask]


def block_mask(mask: np.ndarray, ds: int) -> np.ndarray:
    """A block of ds x ds pixels is valid when at least half of it is."""
    if ds <= 1:
        return mask
    h, w = mask.shape
    return mask.reshape(h // ds, ds, w // ds, ds).mean(axis=(1, 3)) >= 0.5


def block_mean(kappa: np.ndarray, mask: np.ndarray, ds: int) -> np.ndarray:
    """Mean of the valid pixels of every ds x ds block (0 where a block has none)."""
    if ds <= 1:
        return kappa
    h, w = kappa.shape
    num = (kappa * mask).reshape(h // ds, ds, w // ds, ds).sum(axis=(1, 3))
    den = mask.reshape(h // ds, ds, w // ds, ds).sum(axis=(1, 3))
    return np.where(den > 0, num / np.maximum(den, 1), 0.0)


class WeakLensingDataModule(BaseDataModule):
    """Convergence maps -> (Omega_m, S_8), in the challenge kit's setting.

    Args:
        manifest_path: A manifest in the format above; None simulates the embedded default (cached).
        challenge: ``{dir, kappa_file, label_file, mask_file, n_val, n_test, downsample}`` to read the kit's
            own arrays instead (None: off).
        map_shape: The (H, W) the model is built for; the data must match it (None: not checked).
        cache_dir: Where simulated data is cached.
        simulation: Keyword arguments of WLSimConfig (datamodules/weak_lensing/simulate.py).
        sim_workers: Processes used to simulate.
        pixel_arcmin: Pixel side of the kit's maps (full resolution) when reading challenge arrays.
        n_galaxies, shape_noise: The kit's noise model (30 arcmin^-2, 0.4).
        maps_path, maps_mask_path, maps_downsample, maps_noisy: Unlabelled maps as the test split (module docstring).
        labelled: False: split frames without the truth columns (required with maps_path).
        input_stats: ``{loc, scale}`` of the input standardisation to use instead of the training maps' (null: computed).
        batch_size, num_workers, seed: See BaseDataModule.
    """

    def __init__(
        self,
        manifest_path: str | None = None,
        challenge: Mapping[str, Any] | None = None,
        map_shape: tuple[int, int] | None = None,
        cache_dir: str = "data",
        simulation: Mapping[str, Any] | None = None,
        sim_workers: int = 2,
        pixel_arcmin: float = 2.0,
        n_galaxies: float = 30.0,
        shape_noise: float = 0.4,
        maps_path: str | None = None,
        maps_mask_path: str | None = None,
        maps_downsample: int | None = None,
        maps_noisy: bool = True,
        labelled: bool = True,
        input_stats: Mapping[str, float] | None = None,
        batch_size: int = 4,
        num_workers: int = 0,
        seed: int = 42,
    ) -> None:
        super().__init__(batch_size=batch_size, num_workers=num_workers, seed=seed)
        self.manifest_path = manifest_path
        self.challenge = dict(challenge) if challenge else None
        self.map_shape = tuple(int(v) for v in map_shape) if map_shape is not None else None
        self.cache_dir = cache_dir
        self.simulation = dict(simulation or {})
        self.sim_workers = sim_workers
        self.pixel_arcmin = pixel_arcmin
        self.n_galaxies = n_galaxies
        self.shape_noise = shape_noise
        self.noise_sigma = 0.0
        self.map_pixel_arcmin = pixel_arcmin
        self.input_loc, self.input_scale = 0.0, 1.0
        self.label_loc = np.zeros(len(TARGETS))
        self.label_scale = np.ones(len(TARGETS))
        self.mask: np.ndarray | None = None
        self.maps_path = str(maps_path) if maps_path else None
        self.maps_mask_path = str(maps_mask_path) if maps_mask_path else None
        self.maps_downsample = None if maps_downsample is None else int(maps_downsample)
        self.maps_noisy = bool(maps_noisy)
        self.labelled = bool(labelled)
        self.input_stats = dict(input_stats) if input_stats else None
        self.input_stats_source = "computed"  # or "given": where input_loc/input_scale came from
        self.restored_state: dict[str, Any] | None = None  # the statistics a checkpoint carried (load_state_dict)
        if self.maps_path and self.labelled:
            raise ValueError(f"data.maps_path={self.maps_path} holds maps without labels: set data.labelled=false")
        if self.maps_downsample is not None and self.maps_downsample < 1:
            raise ValueError(f"data.maps_downsample must be an integer >= 1, got {maps_downsample!r}")
        if self.input_stats is not None:
            missing = [k for k in ("loc", "scale") if k not in self.input_stats]
            if missing or not float(self.input_stats.get("scale", 0)) > 0:
                raise ValueError(f"data.input_stats must be {{loc: <float>, scale: <float > 0>}}, got {dict(self.input_stats)}")

    # --- sources -----------------------------------------------------------------------------------
    def prepare_data(self) -> None:
        if self.manifest_path is None and self.challenge is None:
            self._simulated_manifest()

    def _simulated_manifest(self) -> Path:
        from datamodules.weak_lensing.simulate import ensure_wl_dataset

        return Path(ensure_wl_dataset(self.cache_dir, self.simulation, n_workers=self.sim_workers, progress=True))

    def load(self) -> tuple[pd.DataFrame, np.ndarray, np.ndarray, int, float]:
        """(frame, pixels (N, n_valid), mask (H, W), downsample, pixel_arcmin of the stored maps)."""
        if self.challenge is not None:
            return self._load_challenge()
        manifest = Path(self.manifest_path) if self.manifest_path else self._simulated_manifest()
        if not manifest.exists():
            raise FileNotFoundError(f"data.manifest_path: {manifest} does not exist")
        frame = pd.read_parquet(manifest)
        check_columns(frame, REQUIRED_COLUMNS, manifest)
        bad = sorted(set(frame["split"]) - set(SPLITS))
        if bad:
            raise ValueError(f"{manifest}: column 'split' has values {bad}; expected {list(SPLITS)}")
        if frame["sample_id"].duplicated().any():
            raise ValueError(f"{manifest}: duplicated sample_id values, e.g. {frame.loc[frame['sample_id'].duplicated(), 'sample_id'].head(3).tolist()}")
        pixels_path, mask_path = manifest.with_name("pixels.npy"), manifest.with_name("mask.npy")
        for p in (pixels_path, mask_path):
            if not p.exists():
                raise FileNotFoundError(f"{p} is missing beside the manifest {manifest}")
        pixels = np.load(pixels_path, mmap_mode="r")
        mask = np.load(mask_path).astype(bool)
        if pixels.ndim != 2 or pixels.shape[1] != int(mask.sum()):
            raise ValueError(f"{pixels_path}: expected (N, {int(mask.sum())}) valid pixels of {mask_path}, got {pixels.shape}")
        if "pixel_row" not in frame.columns:
            frame = frame.assign(pixel_row=np.arange(len(frame)))
        if "noisy" not in frame.columns:
            frame = frame.assign(noisy=False)
        if frame["pixel_row"].max() >= len(pixels):
            raise ValueError(f"{manifest}: pixel_row reaches {frame['pixel_row'].max()} but {pixels_path} has {len(pixels)} rows")
        geometry = manifest.with_name("geometry.json")
        pixel = json.loads(geometry.read_text())["pixel_arcmin"] if geometry.exists() else self.pixel_arcmin
        self._sources = {"maps": pixels_path, "mask": mask_path, "labels": manifest}
        return frame, pixels, mask, 1, float(pixel)

    def _load_challenge(self) -> tuple[pd.DataFrame, np.ndarray, np.ndarray, int, float]:
        c = self.challenge
        root = Path(c["dir"])
        paths = {k: root / c[k] for k in ("kappa_file", "label_file", "mask_file")}
        for key, p in paths.items():
            if not p.exists():
                raise FileNotFoundError(f"data.challenge.{key}: {p} does not exist")
        mask = np.load(paths["mask_file"]).astype(bool)
        kappa = np.load(paths["kappa_file"], mmap_mode="r")
        label = np.load(paths["label_file"], mmap_mode="r")
        if kappa.ndim != 3 or kappa.shape[2] != int(mask.sum()) or label.shape[:2] != kappa.shape[:2]:
            raise ValueError(f"{paths['kappa_file']}: expected (Ncosmo, Nsys, {int(mask.sum())}) with labels "
                             f"{paths['label_file']} of shape (Ncosmo, Nsys, >=2); got {kappa.shape} and {label.shape}")
        n_cosmo, n_sys = kappa.shape[:2]
        n_val, n_test = int(c.get("n_val", 0)), int(c.get("n_test", 0))
        split_of = np.array(["train"] * (n_sys - n_val - n_test) + ["val"] * n_val + ["test"] * n_test)
        k, r = np.meshgrid(np.arange(n_cosmo), np.arange(n_sys), indexing="ij")
        lab = np.asarray(label).reshape(n_cosmo * n_sys, -1)
        frame = pd.DataFrame({
            "sample_id": [f"c{a:03d}_r{b:03d}" for a, b in zip(k.ravel(), r.ravel())], "split": split_of[r.ravel()],
            "cosmology_id": k.ravel(), "realisation": r.ravel(), "omega_m": lab[:, 0], "s8": lab[:, 1],
            "noisy": False, "pixel_row": np.arange(n_cosmo * n_sys),
        })
        for j, name in enumerate(("t_agn", "f0", "dz")[: lab.shape[1] - 2]):
            frame[name] = lab[:, 2 + j]
        ds = int(c.get("downsample", 1))
        self._sources = {"maps": paths["kappa_file"], "mask": paths["mask_file"], "labels": paths["label_file"]}
        return frame, kappa.reshape(n_cosmo * n_sys, -1), mask, ds, self.pixel_arcmin * ds

    def check_inputs(self, frame: pd.DataFrame, pixels: np.ndarray, mask: np.ndarray, ds: int) -> None:
        """Refuse, naming the file and column, what would only show up as a NaN training loss.

        A mask without valid pixels (at the stored or the downsampled resolution), maps holding NaN/inf pixels and
        NaN/inf labels. The maps are scanned in chunks of rows (memory-mapped arrays stay on disk).

        Raises:
            ValueError: naming the mask file, the maps file and the sample ids, or the label column.
        """
        src = getattr(self, "_sources", {})
        if not mask.any():
            raise ValueError(f"{src.get('mask', 'mask')}: the mask has no valid pixel (all {mask.size} are False)")
        if not block_mask(mask, ds).any():
            raise ValueError(f"{src.get('mask', 'mask')}: no valid pixel is left after downsampling by {ds} "
                             f"(a block counts when half of its pixels are valid)")
        for col in TARGETS:
            values = pd.to_numeric(frame[col], errors="coerce").to_numpy(np.float64)
            bad = ~np.isfinite(values)
            if bad.any():
                ids = frame.loc[bad, "sample_id"].astype(str).head(5).tolist()
                raise ValueError(f"{src.get('labels', 'labels')}: column {col!r} has {int(bad.sum())} NaN/inf or "
                                 f"non-numeric value(s), e.g. sample_id {ids}")
        rows = np.unique(frame["pixel_row"].to_numpy())
        bad_rows: list[int] = []
        for start in range(0, len(rows), 256):
            chunk = rows[start : start + 256]
            finite = np.isfinite(np.asarray(pixels[chunk])).all(axis=1)
            bad_rows.extend(chunk[~finite].tolist())
        if bad_rows:
            hit = frame.loc[frame["pixel_row"].isin(bad_rows)]
            raise ValueError(f"{src.get('maps', 'maps')}: {len(hit)} map(s) hold NaN/inf pixels, e.g. sample_id "
                             f"{hit['sample_id'].astype(str).head(5).tolist()} (rows {sorted(bad_rows)[:5]})")

    # --- setup -------------------------------------------------------------------------------------
    def setup(self, stage: str | None = None) -> None:
        if self.frames:
            return
        frame, pixels, mask, ds, pixel = self.load()
        if self.maps_path:  # the run's data gives only mask and statistics (it was checked when the run trained on it)
            self.check_inputs(frame.iloc[:0], pixels, mask, ds)
        else:
            self.check_inputs(frame, pixels, mask, ds)  # at set-up, not as a NaN loss after an epoch
        self.map_pixel_arcmin = pixel
        self.noise_sigma = noise_sigma(self.shape_noise, self.n_galaxies, pixel)
        self.mask = block_mask(mask, ds)
        if self.map_shape is not None and tuple(self.mask.shape) != self.map_shape:
            raise ValueError(f"data.map_shape is {list(self.map_shape)} but the maps are {list(self.mask.shape)}; set "
                             "data.map_shape to the simulation's (height, width) / downsample (or the challenge's)")
        train = frame[frame["split"] == "train"]
        if len(train) == 0:
            raise ValueError("weak lensing data: the train split is empty")
        # global input statistics of the training maps as the network sees them (noise included)
        sample = np.asarray(pixels[np.sort(train["pixel_row"].to_numpy()[:: max(len(train) // 200, 1)])], dtype=np.float64)
        if ds > 1:
            full = np.zeros((len(sample), *mask.shape))
            full[:, mask] = sample
            sample = np.stack([block_mean(m, mask, ds)[self.mask] for m in full])
        noise_var = 0.0 if train["noisy"].all() else self.noise_sigma**2
        self.input_loc = float(sample.mean())
        self.input_scale = float(np.sqrt(sample.var() + noise_var))
        if self.input_stats is not None:  # the run's stored statistics (a checkpoint's), not recomputed
            self.input_loc, self.input_scale = float(self.input_stats["loc"]), float(self.input_stats["scale"])
            self.input_stats_source = "given"
        labels = train[list(TARGETS)].to_numpy(np.float64)
        self.label_loc, self.label_scale = labels.mean(axis=0), labels.std(axis=0)
        self.label_scale[self.label_scale == 0] = 1.0
        if self.maps_path:
            frame = frame.iloc[:0]  # the run's data gave mask and statistics; its maps are not predicted
        for i, split in enumerate(SPLITS):
            part = frame[frame["split"] == split].reset_index(drop=True)
            noisy = part["noisy"].to_numpy(bool)
            fixed = np.where(noisy | (split == "train"), 0.0, self.noise_sigma)  # train noise is drawn per epoch
            self.datasets[split] = MapDataset(pixels, part["pixel_row"].to_numpy(), mask, part[list(TARGETS)].to_numpy(np.float32),
                                              fixed, self.input_loc, self.input_scale, self.seed, ds, salt=i)
            self.frames[split] = part.drop(columns=["split", "pixel_row"])
            if not self.labelled:
                self.frames[split] = self.frames[split].drop(columns=list(TARGETS))
            if not self.maps_path:
                log.info("weak lensing %s: %d maps of %d cosmologies", split, len(part), part["cosmology_id"].nunique())
        self._train_noisy = torch.from_numpy(np.array(frame.loc[frame["split"] == "train", "noisy"], dtype=bool))
        if self.maps_path:
            self.datasets["test"], self.frames["test"] = self._unlabelled_maps(mask, ds)
            log.info("weak lensing test: %d unlabelled maps from %s", len(self.frames["test"]), self.maps_path)

    # --- unlabelled maps (the kit's test set) ------------------------------------------------------
    def _unlabelled_maps(self, run_mask: np.ndarray, run_ds: int) -> tuple[Dataset, pd.DataFrame]:
        """The maps of ``maps_path`` as a dataset preprocessed like the run's evaluation maps, and their frame.

        Raises:
            FileNotFoundError: naming data.maps_path / data.maps_mask_path.
            ValueError: maps whose shape does not fit the mask or, downsampled, the model's input (naming the key,
                the expected and the found shape); NaN/inf pixels (naming the map indices).
        """
        path = Path(self.maps_path)
        if not path.is_file():
            raise FileNotFoundError(f"data.maps_path: {path} does not exist")
        if self.maps_mask_path:
            if not Path(self.maps_mask_path).is_file():
                raise FileNotFoundError(f"data.maps_mask_path: {self.maps_mask_path} does not exist")
            own_mask = np.load(self.maps_mask_path).astype(bool)
            if own_mask.ndim != 2:
                raise ValueError(f"data.maps_mask_path: {self.maps_mask_path} must be an (H, W) mask, found shape {list(own_mask.shape)}")
        else:
            own_mask = run_mask  # the run's own full-resolution mask
        maps = np.load(path, mmap_mode="r")
        expected_in = tuple(self.mask.shape)  # the model's input (data.map_shape, checked against the run's data)
        ds = run_ds if self.maps_downsample is None else self.maps_downsample
        ds_key = "data.maps_downsample" if self.maps_downsample is not None else f"the run's downsample factor (data.maps_downsample unset: {ds})"
        mask_key = "data.maps_mask_path" if self.maps_mask_path else "the run's mask (data.maps_mask_path unset)"
        if maps.ndim == 2:
            if maps.shape[1] != int(own_mask.sum()):
                raise ValueError(f"data.maps_path: {path} holds maps flattened over a mask, shape {list(maps.shape)}; expected "
                                 f"[N, {int(own_mask.sum())}] (the valid pixels of {mask_key}, {list(own_mask.shape)}), found "
                                 f"[N, {maps.shape[1]}]; give the maps' own mask as data.maps_mask_path")
            pixels: Any = maps
        elif maps.ndim == 3:
            if tuple(maps.shape[1:]) != tuple(own_mask.shape):
                if self.maps_mask_path:
                    raise ValueError(f"data.maps_path: {path} holds maps of shape {list(maps.shape[1:])} but data.maps_mask_path "
                                     f"is {list(own_mask.shape)}")
                own_mask = np.ones(maps.shape[1:], dtype=bool)  # no mask of their own: every pixel, then the run's mask
            pixels = _MaskedRows(maps, own_mask)
        else:
            raise ValueError(f"data.maps_path: {path} must hold (N, H, W) maps or (N, n_valid) pixels, found shape {list(maps.shape)}")
        h, w = own_mask.shape
        found = (h // ds, w // ds) if h % ds == 0 and w % ds == 0 else None
        if found != expected_in:
            raise ValueError(f"data.maps_path: {path}: the model takes maps of {list(expected_in)} (data.map_shape), so with "
                             f"{ds_key} the maps must be {[expected_in[0] * ds, expected_in[1] * ds]}; found {[h, w]}"
                             + (f" (downsampled: {list(found)})" if found else f" (not divisible by {ds})")
                             + "; set data.maps_downsample to the factor between them")
        n = len(maps)
        if n == 0:
            raise ValueError(f"data.maps_path: {path} holds no maps")
        bad: list[int] = []
        for start in range(0, n, 256):
            chunk = np.asarray(maps[start : start + 256], dtype=np.float64).reshape(min(256, n - start), -1)
            bad.extend((start + np.flatnonzero(~np.isfinite(chunk).all(axis=1))).tolist())
        if bad:
            raise ValueError(f"data.maps_path: {path}: {len(bad)} map(s) hold NaN/inf pixels, e.g. map index {bad[:5]}")
        model_mask = self.mask
        covered = block_mask(own_mask, ds)
        uncovered = int((model_mask & ~covered).sum())
        if uncovered:
            log.warning("data.maps_path: %d of the run's %d valid pixels are outside the maps' mask; they are set as masked",
                        uncovered, int(model_mask.sum()))
        fixed = np.full(n, 0.0 if self.maps_noisy else self.noise_sigma)
        dataset = UnlabelledMapDataset(pixels, np.arange(n), own_mask, np.zeros((n, len(TARGETS)), np.float32), fixed,
                                       self.input_loc, self.input_scale, self.seed, ds, salt=len(SPLITS), model_mask=model_mask)
        frame = pd.DataFrame({"sample_id": [f"map_{i:06d}" for i in range(n)], "map_index": np.arange(n)})
        return dataset, frame

    # --- the statistics a checkpoint keeps ---------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        """The input standardisation and label scaler of the training data (plain floats; in every checkpoint).

        Prediction on other maps (tasks/weak_lensing/submission.py) reads them back from the checkpoint and
        passes them as ``data.input_stats``, so new maps are standardised as the run's training maps were.
        """
        if not self.frames:
            return {}
        return {"input_loc": float(self.input_loc), "input_scale": float(self.input_scale), "noise_sigma": float(self.noise_sigma),
                "label_loc": [float(v) for v in np.asarray(self.label_loc).reshape(-1)],
                "label_scale": [float(v) for v in np.asarray(self.label_scale).reshape(-1)],
                "map_shape": [int(v) for v in self.mask.shape]}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """Kept for reference only: the statistics are recomputed from the same data on set-up (resume is unchanged)."""
        self.restored_state = dict(state_dict)

    # --- training-time noise -----------------------------------------------------------------------
    def noise_batch(self, kappa: torch.Tensor, indices: torch.Tensor, epoch: int) -> torch.Tensor:
        """Shape noise on standardised maps, drawn from (seed, epoch, sample), masked pixels untouched."""
        if self.noise_sigma <= 0:
            return kappa
        shape = kappa.shape[1:]
        draws = np.stack([g.standard_normal(shape) for g in sample_rngs(self.seed, epoch, indices)]).astype(np.float32)
        noise = torch.from_numpy(draws).to(kappa.device) * (self.noise_sigma / self.input_scale)
        keep = (~self._train_noisy[indices.cpu()]).to(kappa.device).reshape(-1, *([1] * len(shape)))
        mask = torch.from_numpy(self.mask).to(kappa.device)
        return kappa + noise * mask * keep

    def on_after_batch_transfer(self, batch: dict[str, torch.Tensor], dataloader_idx: int) -> dict[str, torch.Tensor]:
        trainer = self.trainer
        if trainer is not None and trainer.training:
            batch = {**batch, "kappa": self.noise_batch(batch["kappa"], batch["index"], trainer.current_epoch)}
        return batch

    # --- for analysis ------------------------------------------------------------------------------
    def split_maps(self, split: str) -> np.ndarray:
        """(N, H, W) maps of a split in physical units as evaluated (fixed noise; train maps noiseless)."""
        self.setup()
        ds = self.datasets[split]
        return np.stack([ds.raw_map(i) for i in range(len(ds))]) if len(ds) else np.empty((0, *self.mask.shape))
