"""Issue 23: the user's own images (manifest or folder) and the label-free SimCLR stand-in backbone."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch

from datamodules.clip_subtask.datamodule import ClipSubtaskDataModule
from datamodules.clip_subtask.simulate import augment_views, nt_xent
from datamodules.clip_subtask.user_images import load_user_images
from tests.clip_subtask.test_clip_subtask_datamodule import MICRO_CFG

pytestmark = pytest.mark.usefixtures("one_thread")  # tests/conftest.py

NAMES = ["dark", "light"]


def write_pngs(root, n_per_class: int = 6, size: int = 12) -> list[dict]:
    from PIL import Image

    rng = np.random.default_rng(0)
    rows = []
    for k, name in enumerate(NAMES):
        for i in range(n_per_class):
            pixels = rng.integers(0, 100, (size, size, 3)) + 150 * k  # "light" images are brighter
            path = root / f"{name}_{i}.png"
            Image.fromarray(pixels.astype(np.uint8)).save(path)
            rows.append({"path": path.name, "label": name, "split": ("train", "train", "train", "train", "val", "test")[i]})
    return rows


def make(root, cache_dir, image_size=16) -> ClipSubtaskDataModule:
    return ClipSubtaskDataModule(
        source="images", root=str(root), image_size=image_size, class_names=NAMES, superclass_map=[0, 1],
        split={"val_size": 2, "test_size": 2, "split_seed": 0},
        subtasks={"mode": "percentile", "brightness_thresholds": [85, 170], "edge_thresholds": [50, 150],
                  "edge_pixel_threshold": 50, "percentiles": [100 / 3, 200 / 3], "drop_border": False},
        clip={"model": "rigor-test-tiny", "pretrained": None, "normalize": True, "batch_size": 64, "device": "cpu",
              "tiny": {"model_name": "rigor-test-tiny", "model_cfg": MICRO_CFG,
                       "pretrain": {"epochs": 1, "batch_size": 8, "lr": 1e-3, "weight_decay": 0.0, "seed": 0,
                                    "caption_template": "a {} picture"}}},
        cache_dir=str(cache_dir), batch_size=4)


def test_a_manifest_of_pngs_is_embedded_through_the_cache(tmp_path) -> None:
    rows = write_pngs(tmp_path)
    pd.DataFrame(rows).to_csv(tmp_path / "manifest.csv", index=False)
    dm = make(tmp_path / "manifest.csv", tmp_path / "cache")
    dm.setup("fit")
    sizes = {s: len(dm.split_frame(s)) for s in ("train", "val", "test")}
    assert sizes == {"train": 8, "val": 2, "test": 2}
    assert list(dm.split_frame("test")["target"]) == [0, 1] and dm.embed_dim == MICRO_CFG["embed_dim"]
    emb = dm.split_tensors("test")["embedding"]
    assert torch.allclose(emb.norm(dim=1), torch.ones(2), atol=1e-5)
    # the same files again: served from the cache (no new embedding directory)
    before = sorted(p.name for p in (tmp_path / "cache" / "clip_embeddings").iterdir())
    again = make(tmp_path / "manifest.csv", tmp_path / "cache")
    again.setup("fit")
    assert sorted(p.name for p in (tmp_path / "cache" / "clip_embeddings").iterdir()) == before
    assert torch.equal(again.split_tensors("test")["embedding"], emb)


def test_a_folder_without_splits_is_split_by_class(tmp_path) -> None:
    for name in NAMES:
        (tmp_path / "imgs" / name).mkdir(parents=True)
    for row in write_pngs(tmp_path):
        (tmp_path / row["path"]).rename(tmp_path / "imgs" / row["label"] / row["path"])
    images, labels, splits, _ = load_user_images(tmp_path / "imgs", NAMES, image_size=8)
    assert images.shape == (12, 8, 8, 3) and splits is None and np.bincount(labels).tolist() == [6, 6]


def test_unreadable_files_and_unknown_labels_fail_naming_the_file(tmp_path) -> None:
    rows = write_pngs(tmp_path, n_per_class=2)
    (tmp_path / "broken.png").write_bytes(b"not a png")
    bad_file = pd.DataFrame([*rows, {"path": "broken.png", "label": "dark", "split": "train"}])
    bad_file.to_csv(tmp_path / "a.csv", index=False)
    with pytest.raises(ValueError, match="cannot read image .*broken.png"):
        load_user_images(tmp_path / "a.csv", NAMES)
    pd.DataFrame([*rows, {"path": rows[0]["path"], "label": "purple", "split": "train"}]).to_csv(tmp_path / "b.csv", index=False)
    with pytest.raises(ValueError, match=r"dark_0.png has label 'purple', not one of data.class_names \['dark', 'light'\]"):
        load_user_images(tmp_path / "b.csv", NAMES)
    pd.DataFrame([{"path": "missing.png", "label": "dark"}]).to_csv(tmp_path / "c.csv", index=False)
    with pytest.raises(ValueError, match="cannot read image .*missing.png"):
        load_user_images(tmp_path / "c.csv", NAMES)


def test_simclr_views_and_nt_xent() -> None:
    g = torch.Generator().manual_seed(0)
    x = torch.randn(4, 3, 16, 16)
    v1, v2 = augment_views(x, {}, g), augment_views(x, {}, g)
    assert v1.shape == x.shape and not torch.allclose(v1, v2)
    # NT-Xent by hand: two views, identical features -> the positive is the most similar row
    f = torch.eye(3).repeat(2, 1)
    z = torch.nn.functional.normalize(f, dim=1)
    sim = z @ z.T / 0.5
    sim.fill_diagonal_(float("-inf"))
    expected = torch.nn.functional.cross_entropy(sim, torch.tensor([3, 4, 5, 0, 1, 2]))
    assert nt_xent(f, 0.5) == pytest.approx(float(expected))
    assert nt_xent(f, 0.5) < nt_xent(torch.randn(6, 3, generator=torch.Generator().manual_seed(1)), 0.5)
