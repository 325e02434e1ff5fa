"""Lens-finding data (seed 004): a parquet manifest plus a memory-mapped (N, C, H, H) image array.

Real survey cutouts and the embedded simulation go through the same code: with ``manifest_path`` unset,
the simulator in ``datamodules/lens/simulate.py`` writes a manifest in exactly the real format (once,
cached under ``cache_dir``) and it is read back from disk like any other.

Manifest columns (README, "Lens data format"):

- always ``sample_id``; optional ``image_index`` (row in the image array; default: manifest row order),
  ``split`` (default: every row in ``test``, the split ``task=predict`` scores), ``bands`` (the band
  order of the channel axis, e.g. ``g,r,z``, the same in every row; or ``data.bands``) and any further
  metadata, which is carried into predictions files;
- labelled data add ``label`` (0/1) and what the lens metrics need: ``split``, ``theta_e`` (arcsec, NaN
  for negatives), ``psf_bin``, ``depth_bin``, ``pair_id``. A manifest without ``label`` is unlabelled
  (new cutouts to score): its split frames have no ``target`` and predictions files no truth column.

Nothing holds a split in memory: the image array is opened with ``np.load(mmap_mode="r")`` and every
batch reads its rows from disk and preprocesses them (``LensInputs``); the pages a batch touched are
released afterwards, so scoring 200,000 cutouts needs the memory of 20,000 (docs/benchmarks.md).
"""

from __future__ import annotations

import logging
import mmap
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from torch.utils.data import Dataset
from tqdm.auto import tqdm

from analysis.lens.images import apply_core_mask, colour_residual, radial_median_model, robust_background
from datamodules.base import SPLITS, BaseDataModule, check_columns, check_group_leakage, sample_rngs

log = logging.getLogger(__name__)

#: Every manifest has these.
BASE_COLUMNS = ("sample_id",)
#: A labelled manifest (one with ``label``) also has these: the lens metrics, the stratified sampling and
#: the pair grouping read them.
LABELLED_COLUMNS = ("sample_id", "split", "label", "theta_e", "psf_bin", "depth_bin", "pair_id")
REQUIRED_COLUMNS = LABELLED_COLUMNS  # the columns of labelled data (kept under its old name)
#: The band order of data that do not say (the seed's g, r, z).
DEFAULT_BANDS = ("g", "r", "z")
#: Rows read per chunk when a whole split is scanned (non-finite check, LensInputs over a slice).
CHUNK = 1024


def _release_pages(images: np.ndarray, lo: int, hi: int) -> None:
    """Drop the pages of rows [lo, hi) of a memory-mapped array from this process (not from the page cache).

    Pages a read touched otherwise stay mapped and count in the process's resident memory, which would
    then grow with the data set. Arrays in RAM (and platforms without madvise) are left alone.
    """
    mm = getattr(images, "_mmap", None)
    if mm is None or not hasattr(mm, "madvise") or hi <= lo:
        return
    row = images.strides[0]
    base = images.offset % mmap.ALLOCATIONGRANULARITY  # where the array starts inside the mapping
    start = base + lo * row
    start -= start % mmap.PAGESIZE
    end = min(len(mm), base + hi * row)
    try:
        mm.madvise(mmap.MADV_DONTNEED, start, end - start)
    except (OSError, ValueError):  # a closed or odd mapping: only memory is at stake
        pass


class LensInputs:
    """The preprocessed inputs of one split, read from the (memory-mapped) image array on demand.

    Indexing works like an array of shape (n, C, H, W) float32 (``inputs[idx]``, ``inputs[:, :, 31, 31]``),
    but only the rows asked for are read (sorted, as memmap reads like) and preprocessed.

    Args:
        images: The whole (N, C, H, W) image array, normally a memmap.
        rows: Row of `images` of each sample of the split.
        preprocess: Raw batch → model inputs (LensDataModule.preprocess).
        sample_ids: Each sample's id (named when a read finds non-finite values).
        path: The array's file (reopened memory-mapped when the object is pickled to a worker).
    """

    def __init__(self, images: np.ndarray, rows: np.ndarray, preprocess: Callable[[np.ndarray], np.ndarray],
                 sample_ids: np.ndarray, path: Path | None = None) -> None:
        self.images, self.rows = images, np.asarray(rows, dtype=np.int64)
        self.preprocess, self.sample_ids, self.path = preprocess, np.asarray(sample_ids), path

    @property
    def shape(self) -> tuple[int, ...]:
        return (len(self.rows), *self.images.shape[1:])

    dtype = np.dtype(np.float32)
    ndim = 4

    def __len__(self) -> int:
        return len(self.rows)

    def read(self, idx: Sequence[int] | np.ndarray) -> np.ndarray:
        """Model inputs of samples `idx` (positions in the split), in that order: (len(idx), C, H, W) float32."""
        idx = np.asarray(idx, dtype=np.int64).reshape(-1)
        if not len(idx):
            return np.empty((0, *self.images.shape[1:]), dtype=np.float32)
        rows = self.rows[idx]
        order = np.argsort(rows, kind="stable")
        raw = np.asarray(self.images[rows[order]])  # memmap reads want sorted rows
        _release_pages(self.images, int(rows[order[0]]), int(rows[order[-1]]) + 1)
        out = np.empty((len(idx), *self.images.shape[1:]), dtype=np.float32)
        out[order] = self.preprocess(raw)
        finite = np.isfinite(out).all(axis=(1, 2, 3))
        if not finite.all():
            bad = self.sample_ids[idx[~finite]][:5].tolist()
            raise ValueError(f"{self.path}: non-finite model inputs for {int((~finite).sum())} image(s), e.g. sample_id {bad}")
        return out

    def __getitem__(self, key: Any) -> np.ndarray:
        rest: tuple = ()
        if isinstance(key, tuple):
            key, rest = key[0], key[1:]
        if isinstance(key, (int, np.integer)):
            return self.read([int(key) % len(self)])[0][rest]
        positions = np.arange(len(self))[key]
        parts = [self.read(positions[i : i + CHUNK])[(slice(None), *rest)] for i in range(0, len(positions), CHUNK)]
        if not parts:
            return self.read([])[(slice(None), *rest)]
        return parts[0] if len(parts) == 1 else np.concatenate(parts)

    def __array__(self, dtype: Any = None, copy: Any = None) -> np.ndarray:
        out = self[:]
        return out if dtype is None else out.astype(dtype)

    def __getstate__(self) -> dict[str, Any]:
        state = dict(self.__dict__)
        if self.path is not None and isinstance(self.images, np.memmap):
            state["images"] = None  # a memmap pickles as a full copy; the worker maps the file itself
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        if self.images is None:
            self.images = np.load(self.path, mmap_mode="r")


class LensDataset(Dataset):
    """One split's samples: ``image`` (read lazily through LensInputs), ``target`` (NaN if unlabelled), ``index``.

    ``__getitems__`` serves a whole batch with one sorted read and one vectorised preprocessing (the
    DataLoader calls it when it batches).
    """

    def __init__(self, inputs: LensInputs, targets: np.ndarray) -> None:
        self.inputs = inputs
        self.targets = np.asarray(targets, dtype=np.float32)
        if len(self.targets) != len(inputs):
            raise ValueError(f"{len(inputs)} images but {len(self.targets)} targets")

    def __len__(self) -> int:
        return len(self.targets)

    def _items(self, idx: list[int], images: np.ndarray) -> list[dict[str, torch.Tensor]]:
        tensor = torch.from_numpy(images)
        return [{"image": tensor[j], "target": torch.as_tensor(self.targets[i]), "index": torch.as_tensor(i, dtype=torch.long)}
                for j, i in enumerate(idx)]

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        i = int(i)
        return self._items([i], self.inputs.read([i]))[0]

    def __getitems__(self, idx: list[int]) -> list[dict[str, torch.Tensor]]:
        idx = [int(i) for i in idx]
        return self._items(idx, self.inputs.read(idx))


class LensDataModule(BaseDataModule):
    """Paired or unpaired lens cutouts with residual preprocessing, augmentation and core masking.

    Args:
        manifest_path: A real (or previously simulated) manifest; None simulates the embedded default.
        images_path: The (N, C, H, H) .npy array (float32 or float16); default ``images.npy`` beside the manifest.
        bands: The band order of the array's channel axis (e.g. ``[g, r, z]``); None: the manifest's
            ``bands`` column, else the simulation's bands, else g, r, z. A model refuses data whose bands differ
            from its training data's (tasks/predict.py, ``input_description``).
        cache_dir: Where simulated data is cached.
        mode: ``paired`` or ``unpaired`` (chooses the simulated data set).
        preprocessing: ``raw``, ``residual`` (subtract a radial-median host model estimated from the image) or
            ``colour`` (subtract the reference band's radial-median host model, scaled to each band: keeps the
            arc light a ring-like arc loses to the per-band median; ``analysis.lens.images.colour_residual``).
        colour_ref_band: The reference band of ``colour`` preprocessing (None: the last band, the reddest in
            g, r, z order).
        colour_fit_radius: Pixels within this radius fit each band's host scale in ``colour`` preprocessing.
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
        colour_ref_band: str | None = None,
        colour_fit_radius: float = 12.0,
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
        bands: Sequence[str] | None = None,
    ) -> None:
        super().__init__(batch_size=batch_size, num_workers=num_workers, seed=seed)
        if mode not in ("paired", "unpaired"):
            raise ValueError(f"data.mode must be 'paired' or 'unpaired', got {mode!r}")
        if preprocessing not in ("raw", "residual", "colour"):
            raise ValueError(f"data.preprocessing must be 'raw', 'residual' or 'colour', got {preprocessing!r}")
        if colour_fit_radius <= 0:
            raise ValueError(f"data.colour_fit_radius must be > 0 pixels, got {colour_fit_radius}")
        if not 0.0 < fraction <= 1.0:
            raise ValueError(f"data.fraction must be in (0, 1], got {fraction}")
        if isinstance(bands, str):
            bands = [b.strip() for b in bands.split(",") if b.strip()]
        self.manifest_path = manifest_path
        self.images_path = images_path
        self.cache_dir = cache_dir
        self.mode = mode
        self.preprocessing = preprocessing
        self.colour_ref_band = colour_ref_band
        self.colour_fit_radius = float(colour_fit_radius)
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
        self.given_bands = None if bands is None else [str(b) for b in bands]
        self.bands: list[str] | None = None  # set by setup
        self.labelled: bool | None = None  # set by setup: whether the manifest has labels
        self.image_shape: tuple[int, ...] | None = None  # (C, H, W), set by setup
        self.inputs: dict[str, LensInputs] = {}

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

    def _resolve_bands(self, frame: pd.DataFrame, manifest_path: Path, channels: int) -> list[str]:
        """data.bands, else the manifest's ``bands`` column, else the simulation's, else g, r, z; checked."""
        from_manifest = None
        if "bands" in frame.columns:
            values = frame["bands"].dropna().astype(str).unique()
            if len(values) != 1:
                raise ValueError(f"{manifest_path}: column 'bands' must hold one band order for every row, found {values[:5].tolist()}")
            from_manifest = [b.strip() for b in values[0].split(",") if b.strip()]
        if self.given_bands is not None and from_manifest is not None and self.given_bands != from_manifest:
            raise ValueError(f"data.bands is {self.given_bands} but {manifest_path} says bands {from_manifest}; give one")
        bands = self.given_bands or from_manifest
        if bands is None and self.manifest_path is None and self.simulation.get("bands"):
            bands = [str(b) for b in self.simulation["bands"]]
        if bands is None:
            if channels != len(DEFAULT_BANDS):
                raise ValueError(f"{manifest_path}: the images have {channels} channels; say their band order with "
                                 "data.bands=[...] or a 'bands' column (the default g,r,z is 3 bands)")
            bands = list(DEFAULT_BANDS)
        if len(bands) != channels or len(set(bands)) != len(bands):
            raise ValueError(f"{manifest_path}: bands {bands} do not name the images' {channels} channels one each")
        return bands

    def load_manifest(self) -> tuple[pd.DataFrame, np.ndarray, Path]:
        """Read and validate the manifest and open the image array memory-mapped."""
        manifest_path, images_path = self._paths()
        frame = pd.read_parquet(manifest_path)
        check_columns(frame, BASE_COLUMNS, manifest_path)
        labelled = "label" in frame.columns
        if labelled:
            missing = [c for c in LABELLED_COLUMNS if c not in frame.columns]
            if missing:
                raise ValueError(f"{manifest_path}: missing column(s) {missing}; found {list(frame.columns)} "
                                 "(a labelled manifest, one with 'label', needs them for the lens metrics; "
                                 "drop 'label' to score the cutouts unlabelled)")
        if frame["sample_id"].duplicated().any():
            dup = frame.loc[frame["sample_id"].duplicated(), "sample_id"].head(5).tolist()
            raise ValueError(f"{manifest_path}: duplicated sample_id values, e.g. {dup}")
        if "split" in frame.columns:
            bad_split = sorted(set(frame["split"]) - set(SPLITS))
            if bad_split:
                raise ValueError(f"{manifest_path}: column 'split' has values {bad_split}; expected {list(SPLITS)}")
        else:
            frame = frame.assign(split="test")  # new cutouts: the split task=predict scores
        if labelled:
            if not frame["label"].isin([0, 1]).all():
                raise ValueError(f"{manifest_path}: column 'label' must hold 0 or 1 only")
            if frame.loc[frame["label"] == 1, "theta_e"].isna().any():
                raise ValueError(f"{manifest_path}: column 'theta_e' is NaN for some positives; every lens needs its θ_E")
        check_group_leakage(frame, "pair_id", manifest_path)
        try:
            images = np.load(images_path, mmap_mode="r")
        except ValueError as err:
            raise ValueError(f"{images_path}: not a readable .npy array ({err})") from err
        if images.ndim != 4 or images.shape[2] != images.shape[3]:
            raise ValueError(f"{images_path}: expected shape (N, bands, H, H), got {images.shape}")
        if not (np.issubdtype(images.dtype, np.floating) or np.issubdtype(images.dtype, np.integer)):
            raise ValueError(f"{images_path}: expected a numeric array, got dtype {images.dtype}")
        self.bands = self._resolve_bands(frame, manifest_path, int(images.shape[1]))
        if self.preprocessing == "colour" and self.colour_ref_band is not None and self.colour_ref_band not in self.bands:
            raise ValueError(f"data.colour_ref_band={self.colour_ref_band!r} is not one of the data's bands {self.bands}")
        self.labelled = labelled
        self.image_shape = tuple(int(s) for s in images.shape[1:])
        if "image_index" not in frame.columns:
            frame = frame.assign(image_index=np.arange(len(frame)))
        if len(frame) and (frame["image_index"].max() >= len(images) or frame["image_index"].min() < 0):
            raise ValueError(
                f"{manifest_path}: image_index reaches {frame['image_index'].max()} but {images_path} has {len(images)} images"
            )
        return frame.reset_index(drop=True), images, images_path

    def input_description(self) -> dict[str, Any]:
        """What the inputs are, beyond their shape: compared with the run's data before predicting (tasks/predict.py).

        Returns:
            ``bands`` (order of the channel axis), ``channels``, ``stamp_size`` (pixels) and ``preprocessing``.
        """
        if self.image_shape is None:
            self.setup("predict")
        channels, size = self.image_shape[0], self.image_shape[-1]
        return {"bands": list(self.bands), "channels": channels, "stamp_size": size, "preprocessing": self.preprocessing}

    # --- sampling and preprocessing ----------------------------------------------------------------
    def stratified_subset(self, frame: pd.DataFrame) -> pd.DataFrame:
        """Keep `fraction` of each (label, θ_E bin, PSF bin, depth bin) cell, as in seed 004 section 2.2."""
        if self.fraction >= 1.0:
            return frame
        missing = [c for c in ("label", "theta_e", "psf_bin", "depth_bin") if c not in frame.columns]
        if missing:
            raise ValueError(f"data.fraction={self.fraction} samples stratified by label, θ_E, PSF and depth bin, but the "
                             f"manifest has no column(s) {missing}; use data.fraction=1.0 for unlabelled data")
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
        """Raw flux stamps → model inputs: optional host subtraction, per-band noise normalisation, clip.

        Every step works image by image, so a batch gives what its images give one at a time.
        """
        x = np.asarray(raw, dtype=np.float32)
        if self.preprocessing == "residual":
            x = x - radial_median_model(x)
        elif self.preprocessing == "colour":
            ref = len(self.bands) - 1 if self.colour_ref_band is None else self.bands.index(self.colour_ref_band)
            x = colour_residual(x, ref, self.colour_fit_radius)
        med, sigma = robust_background(x, self.background_radius)
        x = ((x - med) / sigma).astype(np.float32)
        if self.clip is not None:
            np.clip(x, -self.clip, self.clip, out=x)
        return x

    def _check_finite(self, images: np.ndarray, part: pd.DataFrame, split: str, images_path: Path) -> None:
        """Refuse non-finite pixels before any training or scoring, reading the split chunk by chunk."""
        rows = part["image_index"].to_numpy()
        order = np.argsort(rows, kind="stable")
        bad = np.zeros(len(rows), dtype=bool)
        for start in tqdm(range(0, len(rows), 8 * CHUNK), desc=f"check {split} pixels", leave=False, disable=len(rows) < 32 * CHUNK):
            sel = order[start : start + 8 * CHUNK]
            block = np.asarray(images[rows[sel]])
            _release_pages(images, int(rows[sel[0]]), int(rows[sel[-1]]) + 1)
            bad[sel] = ~np.isfinite(block).all(axis=(1, 2, 3))
        if bad.any():
            ids = part.loc[bad, "sample_id"].head(5).tolist()
            raise ValueError(f"{images_path}: non-finite pixels in {int(bad.sum())} {split} image(s), e.g. sample_id {ids}")

    def setup(self, stage: str | None = None) -> None:
        if self.frames:
            return
        frame, images, images_path = self.load_manifest()
        for split in SPLITS:
            part = self.stratified_subset(frame[frame["split"] == split].reset_index(drop=True))
            self._check_finite(images, part, split, images_path)
            inputs = LensInputs(images, part["image_index"].to_numpy(), self.preprocess, part["sample_id"].to_numpy(), images_path)
            self.inputs[split] = inputs
            format_columns = [c for c in ("split", "label", "image_index", "bands") if c in part.columns]
            frame_out = part.drop(columns=format_columns)
            if self.labelled:
                labels = part["label"].to_numpy(dtype=np.float32)
                frame_out.insert(1, "target", part["label"].astype(int))  # sample_id, target, then metadata
            else:
                labels = np.full(len(part), np.nan, dtype=np.float32)  # unlabelled: no truth anywhere
            self.datasets[split] = LensDataset(inputs, labels)
            self.frames[split] = frame_out
            if self.labelled:
                log.info("lens %s: %d samples (%d positives)", split, len(part), int(labels.sum()))
            elif len(part):
                log.info("lens %s: %d unlabelled samples", split, len(part))

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
        frame = self.frames[split]
        for column in ("target", "pair_id"):
            if column not in frame.columns:
                name = "label" if column == "target" else column
                raise ValueError(f"model_inputs({split!r}) needs the manifest's {name!r} column (labelled data); "
                                 f"this split has {list(frame.columns)}")
        labels = frame["target"].to_numpy()
        idx = np.arange(len(labels))
        if n is not None and n < len(labels):
            rng = np.random.default_rng(seed)
            per_class = [rng.permutation(idx[labels == c]) for c in (0, 1)]
            take0 = min(len(per_class[0]), n // 2)
            take1 = min(len(per_class[1]), n - take0)
            idx = np.sort(np.concatenate([per_class[0][: n - take1], per_class[1][:take1]]))
        images = torch.from_numpy(self.inputs[split].read(idx))
        if epoch is not None:
            images = self.mask_batch(images, torch.from_numpy(idx), epoch, salt=1)
        return images.numpy(), labels[idx], frame["pair_id"].to_numpy()[idx]


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
