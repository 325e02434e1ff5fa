"""Jigsaw-puzzle pieces (seed 002): one picture cut into a cols x rows grid, a piece per cell.

A piece is its cell plus ``margin`` (a fraction of the cell on every side), resampled to
``piece_size`` x ``piece_size`` x 3. Its label is the cell index ``row * cols + col`` (``target: cell``)
or the cell's ``(col, row)`` (``target: coords``, for regression). With ``rotation: true`` pieces are also
turned by k x 90 degrees and the target becomes ``(cell, k)``.

Which pieces are in which split: the seed's task is memorisation, so train, val and test are all the
plain pieces of the same puzzle (val and test differ only in name) unless ``eval_images`` names another
picture for a split, which is how the generalization run evaluates on a held-out puzzle. Only training
views are augmented (small shifts, colour jitter, optionally jigsaw tab masks), drawn per sample from
(seed, epoch, index), so a resumed run sees the same views. With ``rotation: true``, val/test hold all
four rotations of every piece.

Any image file is a puzzle; ``skimage:<name>`` names a picture that ships inside scikit-image (a
``skimage.data`` function such as ``coffee``, or a file in its data folder such as
``motorcycle_left.png``), so nothing is downloaded.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
from torch.utils.data import Dataset

from datamodules.base import SPLITS, BaseDataModule, sample_rngs

log = logging.getLogger(__name__)

QUARTER_TURNS = 4  # rotations by k x 90 degrees, k = 0..3
TARGETS = ("cell", "coords")
AUGMENT_KEYS = ("shift", "brightness", "contrast", "saturation", "tab_prob", "tab_radius")
OUTSIDE = {"zeros": "zeros", "edge": "border", "reflect": "reflection"}  # data.outside -> grid_sample padding
# uniforms drawn per sample and epoch; a fixed layout, so switching one augmentation never changes another's draws
_DRAWS = {"dx": 0, "dy": 1, "brightness": 2, "contrast": 3, "saturation": 4, "tab": 5, "sides": slice(6, 10), "rotation": 10}
_N_DRAWS = 11


def load_image(spec: str, key: str = "data.image") -> np.ndarray:
    """Read a puzzle picture as (H, W, 3) uint8.

    Args:
        spec: A path to any image file, or ``skimage:<name>`` for a picture shipped with scikit-image.
        key: Config key named in error messages.

    Raises:
        ValueError: The file or name does not exist, or it is not a picture.
    """
    import skimage.data
    import skimage.io

    if not spec:
        raise ValueError(f"{key}: empty; give a path to an image file or skimage:<name> (e.g. skimage:coffee)")
    if spec.startswith("skimage:"):
        name = spec.split(":", 1)[1]
        data_dir = Path(skimage.data.__file__).parent
        loader = getattr(skimage.data, name, None)
        if callable(loader) and not name.startswith("_"):
            try:
                image = loader()
            except Exception as err:  # e.g. a picture skimage would have to download
                raise ValueError(f"{key}: skimage.data.{name}() failed ({err}); pick a picture that ships with scikit-image"
                                 ) from err
        elif (data_dir / name).is_file():
            image = skimage.io.imread(data_dir / name)
        else:
            shipped = sorted(p.name for p in data_dir.glob("*") if p.suffix in (".png", ".jpg", ".tif"))
            raise ValueError(f"{key}: {spec!r} is neither a skimage.data picture nor a file in {data_dir}; "
                             f"files there: {shipped}")
    else:
        path = Path(spec).expanduser()
        if not path.is_file():
            raise ValueError(f"{key}: image file {path} does not exist")
        try:
            image = skimage.io.imread(path)
        except Exception as err:
            raise ValueError(f"{key}: {path} is not a readable image ({err})") from err
    return _as_rgb_uint8(np.asarray(image), spec, key)


def _as_rgb_uint8(image: np.ndarray, spec: str, key: str) -> np.ndarray:
    if image.ndim == 2:
        image = np.repeat(image[..., None], 3, axis=-1)
    if image.ndim != 3 or image.shape[-1] not in (3, 4):
        raise ValueError(f"{key}: {spec} has shape {image.shape}; expected a grey, RGB or RGBA picture")
    image = image[..., :3]  # alpha carries no picture content
    if image.dtype != np.uint8:
        image = image.astype(np.float64)
        if image.max() > 1.0:
            image = image / (65535.0 if image.max() > 255 else 255.0)
        image = np.clip(np.round(image * 255.0), 0, 255).astype(np.uint8)
    return np.ascontiguousarray(image)


def cut_pieces(image: np.ndarray, cols: int, rows: int, margin: float, piece_size: int, pad: int = 0,
               outside: str = "zeros") -> np.ndarray:
    """Cut a picture into cols x rows pieces, each its cell plus `margin`, resampled to a square.

    The picture is first resized (anti-aliased) so that a cell spans ``piece_size / (1 + 2 margin)``
    pixels; every piece is then read with bilinear sampling at that scale. ``pad`` extra pixels on every
    side hold the context that training shifts move into view (the centre crop is the plain piece).

    Args:
        image: (H, W, 3) uint8.
        cols, rows: Grid size.
        margin: Fraction of a cell added on each side.
        piece_size: Output side in pixels.
        pad: Extra context pixels on every side.
        outside: What lies beyond the picture: ``zeros`` (black), ``edge`` or ``reflect``.

    Returns:
        (cols * rows, 3, piece_size + 2 pad, piece_size + 2 pad) uint8, row-major (cell = row * cols + col).
    """
    from skimage.transform import resize

    cell_px = piece_size / (1.0 + 2.0 * margin)  # a cell's side in output pixels
    height, width = max(1, round(rows * cell_px)), max(1, round(cols * cell_px))
    scaled = resize(image, (height, width), order=1, anti_aliasing=True, preserve_range=True).astype(np.float32)
    src = torch.from_numpy(scaled).permute(2, 0, 1)[None]  # (1, 3, h, w)
    side = piece_size + 2 * pad
    # output pixel centres of a piece, in units of cells relative to the cell's top-left corner
    offsets = (torch.arange(side, dtype=torch.float64) + 0.5 - pad) / cell_px - margin
    col, row = np.meshgrid(np.arange(cols), np.arange(rows))
    x_cells = torch.from_numpy(col.ravel()).double()[:, None] + offsets[None]  # (N, side)
    y_cells = torch.from_numpy(row.ravel()).double()[:, None] + offsets[None]
    # cells -> grid_sample's [-1, 1] coordinates (align_corners=False: -1 and 1 are the outer pixel edges)
    gx = (x_cells * (width / cols) / width) * 2 - 1
    gy = (y_cells * (height / rows) / height) * 2 - 1
    grid = torch.stack(torch.broadcast_tensors(gx[:, None, :], gy[:, :, None]), dim=-1).float()  # (N, side, side, 2)
    out = torch.empty((len(grid), 3, side, side), dtype=torch.uint8)
    for start in range(0, len(grid), 256):  # chunks keep the expanded source small
        chunk = grid[start : start + 256]
        sampled = F.grid_sample(src.expand(len(chunk), -1, -1, -1), chunk, mode="bilinear",
                                padding_mode=OUTSIDE[outside], align_corners=False)
        out[start : start + 256] = sampled.round().clamp(0, 255).to(torch.uint8)
    return out.numpy()


class PieceDataset(Dataset):
    """Plain pieces (centre crops of the stored context), normalised, optionally rotated.

    Args:
        context: (P, 3, S + 2 pad, S + 2 pad) uint8 pieces with their shift context.
        pad: Context pixels on every side.
        piece_rows: Sample i shows piece ``piece_rows[i]``.
        targets: (n,) or (n, d) targets.
        rotations: Quarter turns of each sample (None: none).
        mean, std: Per-channel normalisation of [0, 1] pixels.
        with_context: Also yield the uint8 context (training views are cut from it).
    """

    def __init__(self, context: np.ndarray, pad: int, piece_rows: np.ndarray, targets: np.ndarray,
                 rotations: np.ndarray | None, mean: Sequence[float], std: Sequence[float], with_context: bool = False) -> None:
        self.context = torch.from_numpy(context)
        self.pad = pad
        self.piece_rows = np.asarray(piece_rows)
        self.targets = torch.as_tensor(np.asarray(targets))
        self.rotations = None if rotations is None else np.asarray(rotations)
        self.mean = torch.tensor(mean, dtype=torch.float32)[:, None, None]
        self.std = torch.tensor(std, dtype=torch.float32)[:, None, None]
        self.with_context = with_context

    def __len__(self) -> int:
        return len(self.piece_rows)

    def plain(self, i: int) -> torch.Tensor:
        """The i-th sample's piece as uint8 (3, S, S), rotated when the split is rotated."""
        ctx = self.context[self.piece_rows[i]]
        p = self.pad
        piece = ctx[:, p : ctx.shape[1] - p, p : ctx.shape[2] - p]
        if self.rotations is not None and self.rotations[i]:
            piece = torch.rot90(piece, int(self.rotations[i]), dims=(-2, -1))
        return piece

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        image = (self.plain(i).float() / 255.0 - self.mean) / self.std
        item = {"image": image, "target": self.targets[i], "index": torch.as_tensor(i, dtype=torch.long)}
        if self.with_context:
            item["context"] = self.context[self.piece_rows[i]]
        return item


class PuzzleDataModule(BaseDataModule):
    """Pieces of one puzzle for training, and of the same (or another) puzzle for evaluation.

    Args:
        image: The puzzle picture: a file path or ``skimage:<name>``.
        cols, rows: Grid size (cols x rows cells).
        margin: Fraction of a cell added on each side of a piece.
        piece_size: Side of a piece in pixels.
        outside: Beyond the picture's edge: ``zeros``, ``edge`` or ``reflect``.
        target: ``cell`` (index) or ``coords`` ((col, row), for regression).
        rotation: Rotate training views by a random k x 90 degrees and evaluate on all four rotations;
            the target becomes (cell, k).
        eval_images: ``{val: spec | null, test: spec | null}``: null evaluates on the training puzzle.
        augment: Training views only: ``shift`` (max shift, fraction of a cell), ``brightness``,
            ``contrast``, ``saturation`` (max relative change), ``tab_prob`` (probability of a jigsaw tab
            mask) and ``tab_radius`` (tab radius, fraction of a cell).
        tab_fill: Value (after normalisation) of pixels a tab mask removes.
        normalize: ``{mean: [3], std: [3]}`` of [0, 1] pixels.
        batch_size, num_workers, seed: See BaseDataModule.
    """

    def __init__(
        self,
        image: str = "skimage:coffee",
        cols: int = 38,
        rows: int = 25,
        margin: float = 0.25,
        piece_size: int = 64,
        outside: str = "zeros",
        target: str = "cell",
        rotation: bool = False,
        eval_images: Mapping[str, str | None] | None = None,
        augment: Mapping[str, float] | None = None,
        tab_fill: float = 0.0,
        normalize: Mapping[str, Sequence[float]] | None = None,
        batch_size: int = 128,
        num_workers: int = 0,
        seed: int = 42,
    ) -> None:
        super().__init__(batch_size=batch_size, num_workers=num_workers, seed=seed)
        for key, value in (("cols", cols), ("rows", rows), ("piece_size", piece_size)):
            if int(value) != value or value < 1:
                raise ValueError(f"data.{key} must be a positive integer, got {value!r}")
        if not 0.0 <= margin:
            raise ValueError(f"data.margin must be >= 0 (a fraction of a cell), got {margin}")
        if outside not in OUTSIDE:
            raise ValueError(f"data.outside must be one of {list(OUTSIDE)}, got {outside!r}")
        if target not in TARGETS:
            raise ValueError(f"data.target must be one of {list(TARGETS)}, got {target!r}")
        if rotation and target == "coords":
            raise ValueError("data.rotation: the rotation head needs data.target=cell (targets become (cell, k))")
        self.image_spec = image
        self.cols, self.rows = int(cols), int(rows)
        self.margin = float(margin)
        self.piece_size = int(piece_size)
        self.outside = outside
        self.target = target
        self.rotation = bool(rotation)
        self.eval_images = dict(eval_images or {})
        unknown = sorted(set(self.eval_images) - {"val", "test"})
        if unknown:
            raise ValueError(f"data.eval_images: unknown split(s) {unknown}; expected val and/or test")
        self.augment = _check_augment(augment)
        self.tab_fill = float(tab_fill)
        norm = dict(normalize or {"mean": [0.0, 0.0, 0.0], "std": [1.0, 1.0, 1.0]})
        for key in ("mean", "std"):
            if key not in norm or len(norm[key]) != 3:
                raise ValueError(f"data.normalize.{key} must list 3 numbers (one per channel), got {norm.get(key)!r}")
        if any(s <= 0 for s in norm["std"]):
            raise ValueError(f"data.normalize.std must be positive, got {list(norm['std'])}")
        self.mean, self.std = [float(v) for v in norm["mean"]], [float(v) for v in norm["std"]]
        # context pixels around each piece: the largest training shift
        self.pad = math.ceil(self.augment["shift"] * self.cell_px) if self.augment["shift"] > 0 else 0
        self.pictures: dict[str, np.ndarray] = {}  # spec -> (H, W, 3) uint8
        self.contexts: dict[str, np.ndarray] = {}  # spec -> padded uint8 pieces
        self.split_images: dict[str, str] = {}

    # --- geometry ---------------------------------------------------------------------------------
    @property
    def n_cells(self) -> int:
        return self.cols * self.rows

    @property
    def cell_px(self) -> float:
        """A cell's side inside a piece, in pixels."""
        return self.piece_size / (1.0 + 2.0 * self.margin)

    def cell_of(self, col: np.ndarray, row: np.ndarray) -> np.ndarray:
        return np.asarray(row) * self.cols + np.asarray(col)

    # --- building the splits ----------------------------------------------------------------------
    def _picture(self, spec: str, key: str) -> np.ndarray:
        if spec not in self.pictures:
            picture = load_image(spec, key)
            height, width = picture.shape[:2]
            if self.cols > width or self.rows > height:
                raise ValueError(
                    f"data.cols/data.rows: a {self.cols} x {self.rows} grid is larger than {key}={spec} "
                    f"({width} x {height} pixels); every cell needs at least one pixel"
                )
            self.pictures[spec] = picture
            self.contexts[spec] = cut_pieces(picture, self.cols, self.rows, self.margin, self.piece_size, self.pad, self.outside)
        return self.pictures[spec]

    def setup(self, stage: str | None = None) -> None:
        if self.frames:
            return
        col, row = np.meshgrid(np.arange(self.cols), np.arange(self.rows))
        col, row = col.ravel(), row.ravel()
        cells = self.cell_of(col, row)
        for split in SPLITS:
            spec = self.eval_images.get(split) if split != "train" else None
            spec = spec or self.image_spec
            key = f"data.eval_images.{split}" if spec != self.image_spec else "data.image"
            self._picture(spec, key)
            self.split_images[split] = spec
            pieces = np.arange(self.n_cells)
            turns: np.ndarray | None = None
            if self.rotation and split != "train":
                # every piece in all four orientations; the training split draws k per epoch instead
                turns = np.repeat(np.arange(QUARTER_TURNS), self.n_cells)
                pieces = np.tile(pieces, QUARTER_TURNS)
            targets = self._targets(cells[pieces], col[pieces], row[pieces], turns)
            self.datasets[split] = PieceDataset(self.contexts[spec], self.pad, pieces, targets, turns, self.mean, self.std,
                                                with_context=split == "train")
            name = Path(spec.split(":", 1)[1] if spec.startswith("skimage:") else spec).stem
            meta = {"puzzle": spec, "cell": cells[pieces], "col": col[pieces], "row": row[pieces]}
            ids = [f"{name}_c{c:03d}_r{r:03d}" for c, r in zip(col[pieces], row[pieces])]
            if turns is not None:
                meta["rotation"] = turns
                ids = [f"{i}_k{k}" for i, k in zip(ids, turns)]
            self.frames[split] = pd.DataFrame({"sample_id": ids, "target": cells[pieces], **meta})
            log.info("puzzle %s: %d samples from %s (%d x %d cells)", split, len(ids), spec, self.cols, self.rows)

    def _targets(self, cells: np.ndarray, col: np.ndarray, row: np.ndarray, turns: np.ndarray | None) -> np.ndarray:
        if self.target == "coords":
            return np.stack([col, row], axis=1).astype(np.float32)
        if self.rotation:
            k = np.zeros_like(cells) if turns is None else turns
            return np.stack([cells, k], axis=1).astype(np.int64)
        return cells.astype(np.int64)

    # --- what plots and checks read ---------------------------------------------------------------
    def puzzle_image(self, split: str) -> np.ndarray:
        """The (H, W, 3) uint8 picture whose pieces make up `split`."""
        self.setup()
        return self.pictures[self.split_images[split]]

    def piece_images(self, split: str, indices: Sequence[int]) -> np.ndarray:
        """Plain pieces of `split` as the model sees them before normalisation: (n, S, S, 3) uint8."""
        self.setup()
        dataset = self.datasets[split]
        return np.stack([dataset.plain(int(i)).permute(1, 2, 0).numpy() for i in indices])

    # --- training views ---------------------------------------------------------------------------
    def training_view(self, context: torch.Tensor, target: torch.Tensor, indices: torch.Tensor,
                      epoch: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Augmented, normalised training pieces (and targets, whose k changes under rotation).

        Draws come from (seed, epoch, index), so every view is reproducible regardless of batch order.

        Args:
            context: (B, 3, S + 2 pad, S + 2 pad) uint8 pieces with context.
            target: The batch's targets.
            indices: Sample indices (rows of the train split).
            epoch: Training epoch.
        """
        a = self.augment
        device = context.device
        u = torch.tensor(np.array([g.random(_N_DRAWS) for g in sample_rngs(self.seed, epoch, indices)]).reshape(-1, _N_DRAWS),
                         dtype=torch.float32, device=device)
        s, p = self.piece_size, self.pad
        if p:
            # integer shifts in [-pad, pad]: the crop window moves over the stored context
            dx = torch.clamp((u[:, _DRAWS["dx"]] * (2 * p + 1)).long(), max=2 * p)
            dy = torch.clamp((u[:, _DRAWS["dy"]] * (2 * p + 1)).long(), max=2 * p)
            x = torch.stack([context[i, :, oy : oy + s, ox : ox + s] for i, (oy, ox) in enumerate(zip(dy.tolist(), dx.tolist()))])
        else:
            x = context
        x = x.float() / 255.0
        x = _colour_jitter(x, u, a["brightness"], a["contrast"], a["saturation"])
        mean = torch.tensor(self.mean, device=device)[:, None, None]
        std = torch.tensor(self.std, device=device)[:, None, None]
        x = (x - mean) / std
        if a["tab_prob"] > 0:
            chosen = u[:, _DRAWS["tab"]] < a["tab_prob"]
            if chosen.any():
                keep = tab_masks(u[chosen, _DRAWS["sides"]], s, self.margin, a["tab_radius"])
                x[chosen] = torch.where(keep[:, None], x[chosen], torch.full_like(x[chosen], self.tab_fill))
        if self.rotation:
            k = torch.clamp((u[:, _DRAWS["rotation"]] * QUARTER_TURNS).long(), max=QUARTER_TURNS - 1)
            x = x.clone()
            for quarter in range(1, QUARTER_TURNS):
                sel = k == quarter
                if sel.any():
                    x[sel] = torch.rot90(x[sel], quarter, dims=(-2, -1))
            target = torch.stack([target[:, 0], k.to(target.dtype)], dim=1)
        return x.contiguous(), target

    def on_after_batch_transfer(self, batch: dict[str, Any], dataloader_idx: int) -> dict[str, Any]:
        if "context" not in batch:
            return batch
        batch = dict(batch)
        context = batch.pop("context")
        trainer = self.trainer
        if trainer is not None and trainer.training:
            batch["image"], batch["target"] = self.training_view(context, batch["target"], batch["index"], trainer.current_epoch)
        return batch


def _colour_jitter(x: torch.Tensor, u: torch.Tensor, brightness: float, contrast: float, saturation: float) -> torch.Tensor:
    """Brightness, contrast and saturation factors uniform in [1 - a, 1 + a] per sample, on [0, 1] pixels."""
    def factor(col: int, amount: float) -> torch.Tensor:
        return (1.0 + amount * (2.0 * u[:, col] - 1.0))[:, None, None, None]

    if brightness > 0:
        x = x * factor(_DRAWS["brightness"], brightness)
    if contrast > 0:
        mean = x.mean(dim=(1, 2, 3), keepdim=True)
        x = (x - mean) * factor(_DRAWS["contrast"], contrast) + mean
    if saturation > 0:
        grey = x.mean(dim=1, keepdim=True)
        x = (x - grey) * factor(_DRAWS["saturation"], saturation) + grey
    return x.clamp(0.0, 1.0)


def tab_masks(side_draws: torch.Tensor, size: int, margin: float, radius: float) -> torch.Tensor:
    """Jigsaw-piece masks: the cell, plus a round tab out of or minus a round blank in each side.

    Args:
        side_draws: (B, 4) uniforms; below 0.5 the side (top, right, bottom, left) has a tab, else a blank.
        size: Piece side in pixels.
        margin: The piece's margin (fraction of a cell); tabs reach into it.
        radius: Tab radius as a fraction of a cell.

    Returns:
        (B, size, size) bool, True where the piece keeps its pixels.
    """
    cell = size / (1.0 + 2.0 * margin)
    lo, hi = margin * cell, margin * cell + cell  # the cell inside the piece, in pixels
    mid = (lo + hi) / 2
    r = radius * cell
    coords = torch.arange(size, dtype=torch.float32, device=side_draws.device) + 0.5
    yy, xx = torch.meshgrid(coords, coords, indexing="ij")
    keep = ((xx >= lo) & (xx < hi) & (yy >= lo) & (yy < hi)).expand(len(side_draws), -1, -1).clone()
    # side centres and their outward normals: top, right, bottom, left
    sides = ((mid, lo, 0.0, -1.0), (hi, mid, 1.0, 0.0), (mid, hi, 0.0, 1.0), (lo, mid, -1.0, 0.0))
    for j, (cx, cy, nx, ny) in enumerate(sides):
        is_tab = side_draws[:, j] < 0.5
        # a tab's disc sits outside the side, a blank's inside it; both overlap the side by a little
        for sign, chosen in ((1.0, is_tab), (-1.0, ~is_tab)):
            if not chosen.any():
                continue
            ox, oy = cx + sign * nx * 0.6 * r, cy + sign * ny * 0.6 * r
            disc = (xx - ox) ** 2 + (yy - oy) ** 2 <= r**2
            if sign > 0:
                keep[chosen] |= disc
            else:
                keep[chosen] &= ~disc
    return keep


def _check_augment(augment: Mapping[str, float] | None) -> dict[str, float]:
    """Every augmentation key with its amount (0 = off), naming an unknown or out-of-range key."""
    given = dict(augment or {})
    unknown = sorted(set(given) - set(AUGMENT_KEYS))
    if unknown:
        raise ValueError(f"data.augment: unknown key(s) {unknown}; expected {list(AUGMENT_KEYS)}")
    out = {k: float(given.get(k) or 0.0) for k in AUGMENT_KEYS}
    for key in ("shift", "brightness", "contrast", "saturation", "tab_radius"):
        if out[key] < 0:
            raise ValueError(f"data.augment.{key} must be >= 0, got {out[key]}")
    if not 0.0 <= out["tab_prob"] <= 1.0:
        raise ValueError(f"data.augment.tab_prob must be in [0, 1], got {out['tab_prob']}")
    if out["tab_prob"] > 0 and out["tab_radius"] <= 0:
        raise ValueError("data.augment.tab_radius must be > 0 when tab_prob > 0")
    return out
