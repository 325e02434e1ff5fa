"""Puzzle pictures: the seed's titles and border colours, and the three PNGs a run writes."""

from __future__ import annotations

from functools import partial
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from matplotlib.colors import to_rgba

from tests.helpers import adamw
from callbacks.puzzle.plots import TRUTH_COLOUR, WRONG_COLOUR, PuzzlePlots, accuracy_map, pair_title, piece_grid
from datamodules.puzzle.datamodule import PuzzleDataModule
from lightning_modules.puzzle.nets import CellClassifier, CellRegressor
from lightning_modules.puzzle.module import PuzzleClassifier, PuzzleRegressor

COLS, ROWS = 6, 4


def test_pair_title_follows_the_seed():
    assert pair_title(7, 7, cols=6) == "T:(1,1) P:(1,1) OK"
    assert pair_title(7, 12, cols=6) == "T:(1,1) P:(0,2) X"


def test_accuracy_map_borders_are_green_and_red():
    correct = np.ones(COLS * ROWS, dtype=bool)
    correct[[3, 10]] = False
    fig = accuracy_map(np.zeros((40, 60, 3), dtype=np.uint8), COLS, ROWS, correct)
    edges = [p.get_edgecolor() for p in fig.axes[0].patches]
    assert len(edges) == COLS * ROWS
    assert edges.count(to_rgba(WRONG_COLOUR)) == 2 and edges.count(to_rgba(TRUTH_COLOUR)) == COLS * ROWS - 2
    assert "91.7%" in fig.axes[0].get_title()
    with pytest.raises(ValueError, match="6 x 4 grid"):
        accuracy_map(np.zeros((40, 60, 3), dtype=np.uint8), COLS, ROWS, correct[:-1])


def test_piece_grid_is_2_by_4_pairs_with_seed_titles():
    probs = np.full((8, COLS * ROWS), 1.0 / (COLS * ROWS))
    fig = piece_grid(np.zeros((8, 16, 16, 3), dtype=np.uint8), COLS, ROWS, probs, list(range(8)), [0, 1, 2, 3, 4, 5, 6, 0])
    assert len(fig.axes) == 2 * 8
    titles = [ax.get_title() for ax in fig.axes if ax.get_title()]
    assert titles[0] == "T:(0,0) P:(0,0) OK" and titles[-1] == "T:(1,1) P:(0,0) X" and len(titles) == 8


def stub_trainer(tmp_path: Path, dm: PuzzleDataModule) -> SimpleNamespace:
    return SimpleNamespace(default_root_dir=str(tmp_path), is_global_zero=True, loggers=[], datamodule=dm)


@pytest.mark.parametrize("kind", ["classifier", "rotation", "regressor"])
def test_callback_writes_the_three_pictures(tmp_path, kind):
    dm = PuzzleDataModule(image="skimage:coffee", cols=COLS, rows=ROWS, piece_size=16, augment={},
                          rotation=kind == "rotation", target="coords" if kind == "regressor" else "cell")
    dm.setup()
    net = partial(CellClassifier if kind != "regressor" else CellRegressor, channels=[4], kernel_size=3, stride=2)
    if kind == "regressor":
        module = PuzzleRegressor(net, COLS, ROWS, optimizer=adamw(1e-3))
    else:
        module = PuzzleClassifier(net, COLS, ROWS, optimizer=adamw(1e-3), rotation=kind == "rotation")
    n = len(dm.datasets["test"])
    with torch.no_grad():
        logits = module({"image": torch.stack([dm.datasets["test"][i]["image"] for i in range(n)])})
    if kind != "regressor":  # make exactly piece 0 right and piece 1 wrong
        logits[:, :COLS * ROWS] = 0.0
        logits[0, 0], logits[1, 0] = 5.0, 5.0
    outputs = {"index": torch.arange(n), "outputs": logits, "target": torch.zeros(n)}
    cb = PuzzlePlots(seed=1)
    paths = cb.draw(stub_trainer(tmp_path, dm), module, outputs)
    names = sorted(Path(p).name for p in paths)
    assert names == ["test_accuracy.png", "test_grid.png", "test_heatmap.png"]
    for p in paths:
        assert Path(p).stat().st_size > 1000 and Path(p).parent == tmp_path / "plots"
    if kind != "regressor":
        assert cb.summary()["test_cells_correct"] == pytest.approx(1 / (COLS * ROWS))
