"""The weak-lensing DataModule: splits, standardisation, the kit's noise, masks, and the kit's own arrays."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from datamodules.weak_lensing.datamodule import WeakLensingDataModule, block_mean
from tests.weak_lensing.wl_data import tiny_wl_manifest


@pytest.fixture(scope="module")
def manifest(tmp_path_factory):
    return tiny_wl_manifest(tmp_path_factory.mktemp("wl"))


def test_splits_batches_and_standardisation(manifest) -> None:
    dm = WeakLensingDataModule(manifest_path=str(manifest), map_shape=(356, 44), batch_size=4, seed=1)
    dm.setup()
    assert [len(dm.datasets[s]) for s in ("train", "val", "test")] == [24, 48, 12]
    frame = dm.split_frame("val")
    assert {"sample_id", "omega_m", "s8", "cosmology_id", "log_t_agn", "dz"} <= set(frame.columns)
    batch = next(iter(dm.train_dataloader()))
    assert batch["kappa"].shape == (4, 1, 356, 44) and batch["kappa"].dtype == torch.float32 and batch["target"].shape == (4, 2)
    masked = ~torch.from_numpy(dm.mask)
    assert torch.all(batch["kappa"][:, 0][:, masked] == 0)
    # the kit's noise, then one global standardisation: training inputs have unit variance over valid pixels
    x = torch.stack([dm.datasets["train"][i]["kappa"] for i in range(24)])
    noisy = dm.noise_batch(x, torch.arange(24), epoch=0)
    valid = noisy[:, 0][:, torch.from_numpy(dm.mask)]
    assert float(valid.mean()) == pytest.approx(0.0, abs=0.1) and float(valid.std()) == pytest.approx(1.0, rel=0.1)
    sigma = 0.4 / np.sqrt(2 * 30 * 8.0**2)
    assert dm.noise_sigma == pytest.approx(sigma)
    added = (noisy - x)[:, 0][:, torch.from_numpy(dm.mask)] * dm.input_scale
    assert float(added.std()) == pytest.approx(sigma, rel=0.02)
    np.testing.assert_allclose(dm.label_loc, dm.split_frame("train")[["omega_m", "s8"]].mean().to_numpy())


def test_noise_is_fixed_for_val_and_per_epoch_for_train(manifest) -> None:
    dm = WeakLensingDataModule(manifest_path=str(manifest), map_shape=(356, 44), seed=1)
    dm.setup()
    a, b = dm.datasets["val"][3]["kappa"], dm.datasets["val"][3]["kappa"]
    torch.testing.assert_close(a, b)
    clean = dm.datasets["val"].raw_map(3) - 0  # val maps carry noise; their noiseless pixels differ from it
    assert np.std(clean[dm.mask]) > 0
    x = dm.datasets["train"][0]["kappa"][None]
    e0 = dm.noise_batch(x, torch.tensor([0]), epoch=0)
    torch.testing.assert_close(e0, dm.noise_batch(x, torch.tensor([0]), epoch=0))  # (seed, epoch, sample) only
    assert not torch.equal(e0, dm.noise_batch(x, torch.tensor([0]), epoch=1))
    # test maps were stored with their noise: no more is added
    assert dm.datasets["test"].fixed_noise.max() == 0


def test_map_shape_mismatch_names_the_key(manifest) -> None:
    dm = WeakLensingDataModule(manifest_path=str(manifest), map_shape=(178, 22))
    with pytest.raises(ValueError, match="data.map_shape"):
        dm.setup()
    with pytest.raises(FileNotFoundError, match="data.manifest_path"):
        WeakLensingDataModule(manifest_path=str(manifest.with_name("nope.parquet"))).setup()


def test_the_kits_own_arrays(tmp_path) -> None:
    rng = np.random.default_rng(0)
    mask = np.zeros((16, 8), dtype=bool)
    mask[2:14, 1:7] = True
    n_cosmo, n_sys = 3, 10
    kappa = rng.normal(0, 0.01, (n_cosmo, n_sys, int(mask.sum()))).astype(np.float16)
    label = np.zeros((n_cosmo, n_sys, 5))
    label[..., 0] = np.array([0.2, 0.3, 0.4])[:, None]
    label[..., 1] = np.array([0.7, 0.8, 0.9])[:, None]
    np.save(tmp_path / "kappa.npy", kappa)
    np.save(tmp_path / "label.npy", label)
    np.save(tmp_path / "mask.npy", mask)
    challenge = {"dir": str(tmp_path), "kappa_file": "kappa.npy", "label_file": "label.npy", "mask_file": "mask.npy",
                 "n_val": 3, "n_test": 2, "downsample": 2}
    dm = WeakLensingDataModule(challenge=challenge, map_shape=(8, 4), seed=0)
    dm.setup()
    assert [len(dm.datasets[s]) for s in ("train", "val", "test")] == [15, 9, 6]
    test = dm.split_frame("test")
    assert sorted(test["realisation"].unique()) == [8, 9] and set(test["cosmology_id"]) == {0, 1, 2}
    assert dm.map_pixel_arcmin == 4.0 and dm.noise_sigma == pytest.approx(0.4 / np.sqrt(2 * 30 * 16))
    # a map is rebuilt from its flattened valid pixels, then block-averaged over valid pixels
    full = np.zeros((16, 8))
    full[mask] = kappa[1, 0]
    np.testing.assert_allclose(dm.datasets["train"].raw_map(5), np.where(dm.mask, block_mean(full, mask, 2), 0), rtol=1e-6)
    with pytest.raises(FileNotFoundError, match="data.challenge.kappa_file"):
        WeakLensingDataModule(challenge={**challenge, "kappa_file": "missing.npy"}).setup()


def test_an_empty_mask_nan_pixels_and_a_nan_label_are_refused_at_set_up(manifest, tmp_path) -> None:
    """Issue 21 item 14: each ran until "training loss is nan, lower the learning rate"."""
    import shutil

    import pandas as pd

    def copy(name: str):
        out = tmp_path / name
        out.mkdir()
        for f in manifest.parent.iterdir():
            if f.is_file():
                shutil.copy(f, out / f.name)
        return out / manifest.name

    empty = copy("empty_mask")
    np.save(empty.with_name("mask.npy"), np.zeros_like(np.load(empty.with_name("mask.npy"))))
    np.save(empty.with_name("pixels.npy"), np.zeros((len(np.load(manifest.with_name("pixels.npy"))), 0), np.float32))
    with pytest.raises(ValueError, match=r"empty_mask/mask.npy: the mask has no valid pixel"):
        WeakLensingDataModule(manifest_path=str(empty)).setup()

    nan_pixels = copy("nan_pixels")
    pixels = np.load(nan_pixels.with_name("pixels.npy"))
    frame = pd.read_parquet(nan_pixels)
    row = int(frame["pixel_row"].iloc[7]) if "pixel_row" in frame.columns else 7
    pixels[row, 3] = np.nan
    np.save(nan_pixels.with_name("pixels.npy"), pixels)
    with pytest.raises(ValueError, match=rf"nan_pixels/pixels.npy: 1 map\(s\) hold NaN/inf pixels, e.g. sample_id \['{frame['sample_id'].iloc[7]}'\]"):
        WeakLensingDataModule(manifest_path=str(nan_pixels)).setup()

    nan_label = copy("nan_label")
    frame.loc[4, "s8"] = np.nan
    frame.to_parquet(nan_label)
    with pytest.raises(ValueError, match=rf"nan_label/manifest.parquet: column 's8' has 1 NaN/inf.*{frame['sample_id'].iloc[4]}"):
        WeakLensingDataModule(manifest_path=str(nan_label)).setup()
