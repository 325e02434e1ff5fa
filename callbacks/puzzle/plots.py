"""The seed-002 pictures of a finished puzzle run, drawn after testing (on the best checkpoint).

- ``<split>_accuracy.png``: the puzzle with every cell bordered green (predicted right) or red (wrong);
  with rotations, a cell is green only when all its rotated pieces are right.
- ``<split>_heatmap.png``: one piece's probability over the grid on the semi-transparent puzzle, the
  true cell bordered green and the predicted cell red.
- ``<split>_grid.png``: 2 x 4 pairs of (piece, probability map), titled ``T:(c,r) P:(c,r) OK`` or ``X``.

The drawing functions are pure (arrays in, matplotlib Figure out), so they are tested without a run.
A regressor has no distribution over cells; its maps show the predicted point instead of a heatmap.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import lightning as L
import numpy as np
from matplotlib.figure import Figure
from matplotlib.patches import Rectangle

from callbacks.base import RigorCallback

TRUTH_COLOUR, WRONG_COLOUR = "lime", "red"


def _cell_rect(cell: int, cols: int, cw: float, ch: float, colour: str, lw: float, inset: float = 0.0) -> Rectangle:
    """A cell's border, shrunk by `inset` (fraction of the cell) so neighbouring borders do not cover it."""
    col, row = cell % cols, cell // cols
    return Rectangle(((col + inset) * cw, (row + inset) * ch), (1 - 2 * inset) * cw, (1 - 2 * inset) * ch, fill=False,
                     edgecolor=colour, linewidth=lw)


def accuracy_map(image: np.ndarray, cols: int, rows: int, correct: np.ndarray, title: str = "") -> Figure:
    """The puzzle with each cell's border green (correct) or red (wrong).

    Args:
        image: (H, W, 3) uint8 picture.
        cols, rows: Grid size.
        correct: (cols * rows,) bool per cell, row-major.
        title: Figure title (the accuracy is appended).
    """
    correct = np.asarray(correct, dtype=bool).reshape(-1)
    if correct.size != cols * rows:
        raise ValueError(f"accuracy_map: {correct.size} cells given for a {cols} x {rows} grid")
    h, w = image.shape[:2]
    cw, ch = w / cols, h / rows
    fig = Figure(figsize=(12, 12 * h / w + 0.6))
    ax = fig.add_subplot()
    ax.imshow(image, extent=(0, w, h, 0))
    # wrong cells last, so a red border is never hidden under a green one
    for cell in [*np.flatnonzero(correct), *np.flatnonzero(~correct)]:
        ok = bool(correct[cell])
        ax.add_patch(_cell_rect(int(cell), cols, cw, ch, TRUTH_COLOUR if ok else WRONG_COLOUR, 0.7 if ok else 1.2, inset=0.06))
    ax.set_xlim(0, w)
    ax.set_ylim(h, 0)
    ax.set_axis_off()
    counts = f"({int(correct.sum())}/{correct.size} cells, green = correct, red = wrong)"
    ax.set_title(f"{title} accuracy {correct.mean():.1%} {counts}".strip())
    return fig


def confidence_heatmap(image: np.ndarray, cols: int, rows: int, probs: np.ndarray | None, true_cell: int, pred_cell: int,
                       title: str = "", point: tuple[float, float] | None = None) -> Figure:
    """One piece's probability over every cell, on the semi-transparent puzzle.

    Args:
        image: (H, W, 3) uint8 picture.
        cols, rows: Grid size.
        probs: (cols * rows,) probabilities, or None (a regressor: only the predicted point is drawn).
        true_cell, pred_cell: Bordered green and red.
        title: Figure title.
        point: Predicted (col, row) in cells, drawn as a cross (regression).
    """
    h, w = image.shape[:2]
    cw, ch = w / cols, h / rows
    fig = Figure(figsize=(12, 12 * h / w + 0.6))
    ax = fig.add_subplot()
    ax.imshow(image, extent=(0, w, h, 0), alpha=0.35)
    if probs is not None:
        heat = ax.imshow(np.asarray(probs, dtype=float).reshape(rows, cols), extent=(0, w, h, 0), cmap="jet", alpha=0.55,
                         interpolation="nearest", vmin=0.0)
        fig.colorbar(heat, ax=ax, fraction=0.03, pad=0.01, label="probability")
    if point is not None:
        ax.plot([(point[0] + 0.5) * cw], [(point[1] + 0.5) * ch], "x", color=WRONG_COLOUR, markersize=12, mew=3)
    ax.add_patch(_cell_rect(true_cell, cols, cw, ch, TRUTH_COLOUR, 2.5))
    ax.add_patch(_cell_rect(pred_cell, cols, cw, ch, WRONG_COLOUR, 1.5, inset=0.15))  # inside the green when right
    ax.set_xlim(0, w)
    ax.set_ylim(h, 0)
    ax.set_axis_off()
    ax.set_title(title or "confidence heatmap (green = truth, red = prediction)")
    return fig


def pair_title(true_cell: int, pred_cell: int, cols: int) -> str:
    """``T:(c,r) P:(c,r) OK`` or ``... X``, as in the seed."""
    t, p = (true_cell % cols, true_cell // cols), (pred_cell % cols, pred_cell // cols)
    return f"T:({t[0]},{t[1]}) P:({p[0]},{p[1]}) {'OK' if true_cell == pred_cell else 'X'}"


def piece_grid(pieces: np.ndarray, cols: int, rows: int, probs: np.ndarray | None, true_cells: Sequence[int],
               pred_cells: Sequence[int], layout: tuple[int, int] = (2, 4), points: np.ndarray | None = None) -> Figure:
    """Pairs of (piece, probability map over the grid), `layout` pairs (rows x pairs per row).

    Args:
        pieces: (n, S, S, 3) uint8 pieces, n = layout[0] * layout[1] (fewer leaves blanks).
        cols, rows: Grid size.
        probs: (n, cols * rows) probabilities, or None (regression: `points` are drawn instead).
        true_cells, pred_cells: Per piece.
        layout: (rows of pairs, pairs per row).
        points: (n, 2) predicted (col, row) in cells, for regression.
    """
    n_rows, per_row = layout
    fig = Figure(figsize=(4.2 * per_row, 2.0 * n_rows + 0.5))
    axes = fig.subplots(n_rows, 2 * per_row, squeeze=False, gridspec_kw={"width_ratios": [1, cols / rows] * per_row})
    for slot in range(n_rows * per_row):
        ax_piece, ax_map = axes[slot // per_row, 2 * (slot % per_row)], axes[slot // per_row, 2 * (slot % per_row) + 1]
        ax_piece.set_axis_off()
        ax_map.set_axis_off()
        if slot >= len(pieces):
            continue
        true_cell, pred_cell = int(true_cells[slot]), int(pred_cells[slot])
        ax_piece.imshow(pieces[slot])
        title = pair_title(true_cell, pred_cell, cols)
        ax_piece.set_title(title, fontsize=8, color="green" if title.endswith("OK") else "red")
        if probs is not None:
            ax_map.imshow(np.asarray(probs[slot], dtype=float).reshape(rows, cols), cmap="jet", interpolation="nearest",
                          extent=(0, cols, rows, 0))
        else:
            ax_map.imshow(np.zeros((rows, cols)), cmap="Greys", extent=(0, cols, rows, 0), vmin=0, vmax=1)
            if points is not None:
                ax_map.plot([points[slot][0] + 0.5], [points[slot][1] + 0.5], "x", color=WRONG_COLOUR, markersize=6)
        ax_map.add_patch(_cell_rect(true_cell, cols, 1.0, 1.0, TRUTH_COLOUR, 1.6))
        ax_map.add_patch(_cell_rect(pred_cell, cols, 1.0, 1.0, WRONG_COLOUR, 0.8, inset=0.2))
        ax_map.set_xlim(0, cols)
        ax_map.set_ylim(rows, 0)
    fig.suptitle("pieces and their probability over the grid (green = truth, red = prediction)", fontsize=10)
    return fig


class PuzzlePlots(RigorCallback):
    """Draws the accuracy map, a confidence heatmap and the piece grid of a split after testing.

    Needs a datamodule with ``cols``, ``rows``, ``split_frame``, ``puzzle_image`` and ``piece_images``
    (PuzzleDataModule) and a module with ``predicted_cells`` and ``cell_probabilities`` (puzzle modules).

    Args:
        split: The split drawn; its logits come from the test pass (``test``) of the best checkpoint.
        heatmap_piece: Sample index of the heatmap's piece.
        grid_layout: (rows of pairs, pairs per row) of the piece grid.
        seed: Picks the grid's pieces.
    """

    def __init__(self, split: str = "test", heatmap_piece: int = 0, grid_layout: Sequence[int] = (2, 4), seed: int = 0) -> None:
        if split != "test":
            raise ValueError(f"callbacks.puzzle_plots.split: only 'test' is drawn (after testing the best checkpoint), "
                             f"got {split!r}")
        if len(grid_layout) != 2 or min(grid_layout) < 1:
            raise ValueError(f"callbacks.puzzle_plots.grid_layout must be [rows, pairs per row], got {list(grid_layout)}")
        self.split = split
        self.heatmap_piece = int(heatmap_piece)
        self.grid_layout = (int(grid_layout[0]), int(grid_layout[1]))
        self.seed = int(seed)
        self.written: list[str] = []
        self.cells_correct: float | None = None

    def on_test_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        outputs = pl_module.epoch_outputs(self.split)
        if not len(outputs["index"]):
            return
        self.written = [str(p) for p in self.draw(trainer, pl_module, outputs)]

    def draw(self, trainer: L.Trainer, pl_module: L.LightningModule, outputs: dict[str, Any]) -> list[Any]:
        dm = trainer.datamodule
        cols, rows = dm.cols, dm.rows
        frame = dm.split_frame(self.split).iloc[outputs["index"].numpy()]
        logits = outputs["outputs"]
        pred = pl_module.predicted_cells(logits).cpu().numpy()
        probs_t = pl_module.cell_probabilities(logits)
        probs = None if probs_t is None else probs_t.cpu().numpy()
        points = pl_module.to_cells(logits).cpu().numpy() if probs is None and hasattr(pl_module, "to_cells") else None
        truth = frame["cell"].to_numpy()
        ok = pred == truth
        per_cell = np.ones(cols * rows, dtype=bool)
        np.logical_and.at(per_cell, truth, ok)  # with rotations a cell is right only if all its pieces are
        self.cells_correct = float(per_cell.mean())
        image = dm.puzzle_image(self.split)
        name = frame["puzzle"].iloc[0] if "puzzle" in frame.columns else ""
        paths = [self.save_figure(trainer, accuracy_map(image, cols, rows, per_cell, title=f"{name}:"), f"{self.split}_accuracy")]

        i = min(max(self.heatmap_piece, 0), len(truth) - 1)
        title = f"piece {frame['sample_id'].iloc[i]}: {pair_title(int(truth[i]), int(pred[i]), cols)}"
        fig = confidence_heatmap(image, cols, rows, None if probs is None else probs[i], int(truth[i]), int(pred[i]), title,
                                 None if points is None else tuple(points[i]))
        paths.append(self.save_figure(trainer, fig, f"{self.split}_heatmap"))

        n = min(self.grid_layout[0] * self.grid_layout[1], len(truth))
        picks = np.sort(np.random.default_rng(self.seed).choice(len(truth), size=n, replace=False))
        pieces = dm.piece_images(self.split, outputs["index"].numpy()[picks])
        fig = piece_grid(pieces, cols, rows, None if probs is None else probs[picks], truth[picks], pred[picks],
                         self.grid_layout, None if points is None else points[picks])
        paths.append(self.save_figure(trainer, fig, f"{self.split}_grid"))
        return paths

    def summary(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        if self.cells_correct is not None:
            out[f"{self.split}_cells_correct"] = self.cells_correct
        return out
