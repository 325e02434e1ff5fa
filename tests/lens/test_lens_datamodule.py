"""LensDataModule on a toy manifest in the real format: validation errors, sampling, transforms."""

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from datamodules.lens.datamodule import LensDataModule
from tests.helpers import write_toy_lens_data


def _dm(manifest: Path, **kw) -> LensDataModule:
    return LensDataModule(manifest_path=str(manifest), batch_size=16, **kw)


def test_setup_builds_splits_and_frames(toy_lens_manifest):
    dm = _dm(toy_lens_manifest)
    dm.setup()
    assert {k: len(v) for k, v in dm.datasets.items()} == {"train": 64, "val": 48, "test": 48}
    frame = dm.split_frame("val")
    assert list(frame.columns[:2]) == ["sample_id", "target"]
    assert {"theta_e", "psf_bin", "depth_bin", "pair_id"} <= set(frame.columns)
    item = dm.datasets["val"][3]
    assert item["image"].shape == (3, 63, 63) and int(item["index"]) == 3
    assert int(item["target"]) == frame["target"].iloc[3]


def test_residual_removes_host_but_raw_keeps_it(toy_lens_manifest):
    raw = _dm(toy_lens_manifest, preprocessing="raw")
    res = _dm(toy_lens_manifest, preprocessing="residual")
    raw.setup(), res.setup()
    centre_raw = raw.inputs["val"][:, :, 31, 31].mean()
    centre_res = res.inputs["val"][:, :, 31, 31].mean()
    assert centre_raw > 3 and abs(centre_res) < 1.5


def test_missing_column_names_file_and_column(tmp_path):
    manifest = write_toy_lens_data(tmp_path / "d", {"train": 4, "val": 4, "test": 4})
    pd.read_parquet(manifest).drop(columns=["psf_bin"]).to_parquet(manifest)
    with pytest.raises(ValueError, match=r"manifest.parquet.*missing column\(s\) \['psf_bin'\]"):
        _dm(manifest).setup()


def test_leaking_pair_is_rejected(tmp_path):
    manifest = write_toy_lens_data(tmp_path / "d", {"train": 4, "val": 4, "test": 4})
    frame = pd.read_parquet(manifest)
    frame.loc[frame.index[-1], "pair_id"] = frame.loc[0, "pair_id"]  # one pair in train and test
    frame.to_parquet(manifest)
    with pytest.raises(ValueError, match="pair_id.*more than one split"):
        _dm(manifest).setup()


def test_corrupt_images_are_named(tmp_path):
    manifest = write_toy_lens_data(tmp_path / "d", {"train": 4, "val": 4, "test": 4})
    images = np.load(manifest.with_name("images.npy"))
    images[5, 1, 10, 10] = np.nan
    np.save(manifest.with_name("images.npy"), images)
    with pytest.raises(ValueError, match=r"non-finite pixels in 1 val image.*toy00005"):
        _dm(manifest).setup()
    manifest.with_name("images.npy").write_bytes(b"not an array")
    with pytest.raises(ValueError, match="images.npy: not a readable"):
        _dm(manifest).setup()


def test_bad_options_fail_early(toy_lens_manifest):
    with pytest.raises(ValueError, match="data.mode"):
        _dm(toy_lens_manifest, mode="both")
    with pytest.raises(ValueError, match="data.masking.type"):
        _dm(toy_lens_manifest, masking={"type": "sometimes"})
    with pytest.raises(ValueError, match="until_epoch"):
        _dm(toy_lens_manifest, masking={"type": "scheduled", "schedule": [{"until_epoch": None, "radius": 3, "prob": 1}, {"until_epoch": 4, "radius": 1, "prob": 1}]})


def test_fraction_is_stratified(tmp_path):
    manifest = write_toy_lens_data(tmp_path / "d", {"train": 400, "val": 8, "test": 8})
    dm = _dm(manifest, fraction=0.5)
    dm.setup()
    full = pd.read_parquet(manifest).query("split == 'train'")
    part = dm.split_frame("train")
    assert abs(len(part) - 200) <= 12
    assert part["target"].mean() == pytest.approx(full["label"].mean(), abs=0.03)
    for col in ("psf_bin", "depth_bin"):
        share_full = full[col].value_counts(normalize=True).sort_index()
        share_part = part[col].value_counts(normalize=True).sort_index()
        assert np.allclose(share_full, share_part, atol=0.04)


def test_masking_schedule_follows_seed_table(toy_lens_manifest):
    dm = _dm(toy_lens_manifest, masking={"type": "scheduled", "schedule": [
        {"until_epoch": 10, "radius": 7, "prob": 0.7}, {"until_epoch": 30, "radius": 5, "prob": 0.5},
        {"until_epoch": None, "radius": 3, "prob": 0.3}]})
    assert dm.masking_at(0) == (7, 0.7) and dm.masking_at(9) == (7, 0.7)
    assert dm.masking_at(10) == (5, 0.5) and dm.masking_at(29) == (5, 0.5)
    assert dm.masking_at(30) == (3, 0.3) and dm.masking_at(49) == (3, 0.3)


def test_mask_and_augment_are_deterministic_per_sample(toy_lens_manifest):
    dm = _dm(toy_lens_manifest, masking={"type": "stochastic", "radius": 5, "prob": 0.5},
             augment={"hflip": 0.5, "vflip": 0.5, "rot90": True})
    x = torch.randn(32, 3, 63, 63)
    idx = torch.arange(32)
    a = dm.mask_batch(dm.augment_batch(x, idx, 3), idx, 3)
    # same samples in another order give the same per-sample result
    perm = torch.randperm(32)
    b = dm.mask_batch(dm.augment_batch(x[perm], idx[perm], 3), idx[perm], 3)
    assert torch.equal(a[perm], b)
    masked = (a[:, :, 31, 31] == 0).all(dim=1)
    assert 6 <= int(masked.sum()) <= 26          # about half masked
    assert not torch.equal(dm.augment_batch(x, idx, 4), dm.augment_batch(x, idx, 3))
    # augmentations preserve the pixel multiset of each image (flips/rotations only)
    assert torch.allclose(dm.augment_batch(x, idx, 3).sum(dim=(1, 2, 3)), x.sum(dim=(1, 2, 3)), atol=1e-3)


def test_model_inputs_subset_is_balanced(toy_lens_manifest):
    dm = _dm(toy_lens_manifest, masking={"type": "stochastic", "radius": 5, "prob": 1.0})
    images, labels, groups = dm.model_inputs("val", n=20, seed=1)
    assert images.shape == (20, 3, 63, 63) and labels.sum() == 10
    assert len(set(groups.tolist())) == 20  # pair_id of each sample
    masked, _, _ = dm.model_inputs("val", n=20, epoch=0, seed=1)
    assert (masked[:, :, 31, 31] == 0).all() and not (images[:, :, 31, 31] == 0).all()
