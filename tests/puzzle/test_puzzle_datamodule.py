"""PuzzleDataModule: piece geometry against hand-made pictures, labels, training views, bad input."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch.utils.data import default_collate

from datamodules.puzzle.datamodule import PuzzleDataModule, cut_pieces, load_image, tab_masks

CELL = 8  # pixels per cell of the synthetic pictures


def cell_picture(cols: int, rows: int, cell: int = CELL) -> np.ndarray:
    """A picture whose every cell has its own flat colour: R = 10 col + 5, G = 10 row + 5, B = 200."""
    img = np.zeros((rows * cell, cols * cell, 3), dtype=np.uint8)
    for r in range(rows):
        for c in range(cols):
            img[r * cell : (r + 1) * cell, c * cell : (c + 1) * cell] = (10 * c + 5, 10 * r + 5, 200)
    return img


@pytest.fixture()
def picture_file(tmp_path):
    import skimage.io

    path = tmp_path / "cells.png"
    skimage.io.imsave(path, cell_picture(5, 4), check_contrast=False)
    return str(path)


def make(picture_file: str, **kwargs) -> PuzzleDataModule:
    args = dict(image=picture_file, cols=5, rows=4, margin=0.25, piece_size=16, augment={}, batch_size=8, seed=3)
    args.update(kwargs)
    dm = PuzzleDataModule(**args)
    dm.setup()
    return dm


def test_cut_pieces_matches_the_cells_by_hand():
    img = cell_picture(5, 4)
    # margin 0: a piece is exactly its cell, so every pixel has the cell's colour (the outermost ring is
    # blended with the neighbours by the bilinear upsampling)
    pieces = cut_pieces(img, 5, 4, margin=0.0, piece_size=16)
    assert pieces.shape == (20, 3, 16, 16) and pieces.dtype == np.uint8
    for cell in range(20):
        c, r = cell % 5, cell // 5
        inner = pieces[cell, :, 1:-1, 1:-1]
        assert (inner[0] == 10 * c + 5).all() and (inner[1] == 10 * r + 5).all() and (inner[2] == 200).all()
    # margin 0.25 on a 16 px piece: the cell spans pixels 2.67..13.33, a band of each neighbour around it
    # (pixels next to a boundary are blended by the bilinear sampling, so the checks keep off them)
    pieces = cut_pieces(img, 5, 4, margin=0.25, piece_size=16)
    p = pieces[1 * 5 + 2]  # col 2, row 1
    assert (p[0, 4:12, 4:12] == 25).all() and (p[1, 4:12, 4:12] == 15).all()
    assert (p[0, 8, :2] == 15).all() and (p[0, 8, -2:] == 35).all()  # left / right neighbours
    assert (p[1, :2, 8] == 5).all() and (p[1, -2:, 8] == 25).all()  # top / bottom neighbours
    # beyond the picture's edge: black (outside=zeros)
    corner = pieces[0]
    assert (corner[:, :2, :] == 0).all() and (corner[:, :, :2] == 0).all()
    assert (corner[2, 4:12, 4:12] == 200).all()
    edge = cut_pieces(img, 5, 4, margin=0.25, piece_size=16, outside="edge")[0]
    assert (edge[2, :2, :2] == 200).all()


def test_pieces_labels_and_frame(picture_file):
    dm = make(picture_file)
    frame = dm.split_frame("train")
    assert list(frame.columns[:2]) == ["sample_id", "target"]
    assert len(frame) == 20 and frame["target"].tolist() == list(range(20))
    assert frame.loc[7, ["col", "row", "cell"]].tolist() == [2, 1, 7]  # row-major: cell = row * cols + col
    item = dm.datasets["train"][7]
    assert item["image"].shape == (3, 16, 16) and item["target"].item() == 7 and item["index"].item() == 7
    # val and test are the same plain pieces (memorisation task)
    for split in ("val", "test"):
        other = dm.datasets[split][7]
        assert torch.equal(other["image"], item["image"]) and "context" not in other
    # normalisation: (x / 255 - mean) / std with mean 0, std 1 by default
    assert torch.allclose(item["image"][2, 8, 8], torch.tensor(200 / 255))


def test_regression_targets_and_other_eval_picture(picture_file, tmp_path):
    import skimage.io

    other = tmp_path / "other.png"
    skimage.io.imsave(other, 255 - cell_picture(5, 4), check_contrast=False)
    dm = make(picture_file, target="coords", eval_images={"test": str(other)})
    assert dm.datasets["train"][7]["target"].tolist() == [2.0, 1.0]
    assert dm.split_frame("test")["puzzle"].iloc[0] == str(other)
    assert dm.split_frame("val")["puzzle"].iloc[0] == picture_file
    assert not torch.equal(dm.datasets["test"][7]["image"], dm.datasets["train"][7]["image"])
    assert dm.puzzle_image("test").shape == (32, 40, 3)


def test_training_views_are_a_function_of_seed_epoch_and_index(picture_file):
    aug = {"shift": 0.25, "brightness": 0.2, "contrast": 0.2, "saturation": 0.2, "tab_prob": 0.5, "tab_radius": 0.2}
    dm = make(picture_file, augment=aug)
    ds = dm.datasets["train"]
    batch = default_collate([ds[i] for i in range(8)])
    x, _ = dm.training_view(batch["context"], batch["target"], batch["index"], epoch=4)
    # the same samples in another batch order give the same views
    order = torch.tensor([5, 2, 7, 0])
    sub = default_collate([ds[int(i)] for i in order])
    y, _ = dm.training_view(sub["context"], sub["target"], sub["index"], epoch=4)
    assert torch.equal(x[order], y)
    z, _ = dm.training_view(batch["context"], batch["target"], batch["index"], epoch=5)
    assert not torch.equal(x, z)
    assert not torch.equal(x, batch["image"])  # augmented
    # with every augmentation off, the training view is the plain piece
    plain = make(picture_file, augment={"shift": 0.0})
    b = default_collate([plain.datasets["train"][i] for i in range(8)])
    v, t = plain.training_view(b["context"], b["target"], b["index"], epoch=0)
    assert torch.allclose(v, b["image"]) and torch.equal(t, b["target"])


def test_shift_moves_the_crop_window(picture_file):
    dm = make(picture_file, augment={"shift": 0.25})  # 0.25 of a 10.67 px cell: up to 3 px
    assert dm.pad == 3
    ds = dm.datasets["train"]
    batch = default_collate([ds[i] for i in range(20)])
    views, _ = dm.training_view(batch["context"], batch["target"], batch["index"], epoch=1)
    for i in range(20):
        ctx = batch["context"][i].float() / 255
        windows = {(dy, dx): ctx[:, dy : dy + 16, dx : dx + 16] for dy in range(7) for dx in range(7)}
        assert any(torch.allclose(views[i], w) for w in windows.values())
    assert not torch.allclose(views, batch["image"])


def test_rotation_splits_and_views(picture_file):
    dm = make(picture_file, rotation=True)
    test = dm.datasets["test"]
    assert len(test) == 4 * 20
    frame = dm.split_frame("test")
    assert frame["rotation"].tolist() == [k for k in range(4) for _ in range(20)]
    item = test[2 * 20 + 7]  # piece 7 turned twice
    assert item["target"].tolist() == [7, 2]
    assert torch.equal(item["image"], torch.rot90(test[7]["image"], 2, dims=(-2, -1)))
    # training: k drawn per sample; the view is the plain piece turned k times and the target says k
    ds = dm.datasets["train"]
    batch = default_collate([ds[i] for i in range(20)])
    assert batch["target"][:, 1].eq(0).all()
    views, target = dm.training_view(batch["context"], batch["target"], batch["index"], epoch=0)
    assert set(target[:, 1].tolist()) <= {0, 1, 2, 3} and len(set(target[:, 1].tolist())) > 1
    for i in range(20):
        k = int(target[i, 1])
        assert torch.allclose(views[i], torch.rot90(batch["image"][i], k, dims=(-2, -1)))
        assert target[i, 0] == i


def test_tab_masks_keep_the_cell_and_cut_tabs_and_blanks():
    size, margin = 32, 0.25  # cell spans pixels 5.33 .. 26.67
    all_tabs = tab_masks(torch.zeros(1, 4), size, margin, radius=0.2)[0]
    all_blanks = tab_masks(torch.ones(1, 4), size, margin, radius=0.2)[0]
    assert all_tabs[16, 16] and all_blanks[16, 16]  # the middle of the cell is always kept
    assert not all_tabs[0, 0] and not all_blanks[0, 0]  # the margin corners never
    assert all_tabs[3, 16] and not all_blanks[3, 16]  # a tab reaches into the top margin
    assert all_tabs[7, 16] and not all_blanks[7, 16]  # a blank bites into the top of the cell
    assert all_tabs.sum() > all_blanks.sum()


def test_bad_input_names_the_key(picture_file, tmp_path):
    with pytest.raises(ValueError, match="data.image.*does not exist"):
        make(str(tmp_path / "missing.png"))
    with pytest.raises(ValueError, match="data.cols/data.rows"):
        make(picture_file, cols=41)  # the picture is 40 px wide
    with pytest.raises(ValueError, match="data.eval_images.test"):
        make(picture_file, eval_images={"test": str(tmp_path / "nope.jpg")})
    with pytest.raises(ValueError, match="data.augment: unknown"):
        PuzzleDataModule(image=picture_file, augment={"rotate": 1})
    with pytest.raises(ValueError, match="data.target"):
        PuzzleDataModule(image=picture_file, target="xy")
    with pytest.raises(ValueError, match="data.rotation"):
        PuzzleDataModule(image=picture_file, target="coords", rotation=True)
    with pytest.raises(ValueError, match="data.image.*skimage"):
        load_image("skimage:no_such_picture")
    (tmp_path / "junk.png").write_text("not a picture")
    with pytest.raises(ValueError, match="data.image.*not a readable image"):
        load_image(str(tmp_path / "junk.png"))


def test_shipped_pictures_load_without_downloads():
    coffee = load_image("skimage:coffee")
    moto = load_image("skimage:motorcycle_left.png")
    assert coffee.shape == (400, 600, 3) and coffee.dtype == np.uint8
    assert moto.shape == (500, 741, 3)
