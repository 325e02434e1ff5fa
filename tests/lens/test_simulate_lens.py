"""The embedded lens simulator: format, determinism, physics of pairs and shortcuts, caching, config errors."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

import datamodules.lens.simulate as lens
from datamodules.lens.simulate import LensSimConfig, ensure_lens_dataset, simulate_lens_dataset

SMALL = dict(n_train=60, n_val=30, n_test=30, seed=7)
TINY = dict(n_train=4, n_val=2, n_test=2)
HOST_COLUMNS = ["host_mag", "host_n", "host_reff", "host_q", "host_pa", "host_g_r", "host_r_z", "host_x", "host_y"]


def _load(manifest: Path) -> tuple[pd.DataFrame, np.ndarray]:
    return pd.read_parquet(manifest), np.load(manifest.with_name("images.npy"))


def _core_flux(images: np.ndarray, radius: float = 2.0) -> np.ndarray:
    """r-band flux inside `radius` pixels of the stamp centre."""
    size = images.shape[-1]
    r = np.hypot(*(np.mgrid[:size, :size] - (size - 1) / 2))
    return images[:, 1][:, r < radius].sum(axis=1)


@pytest.fixture(scope="module")
def unpaired(tmp_path_factory: pytest.TempPathFactory) -> tuple[LensSimConfig, pd.DataFrame, np.ndarray]:
    cfg = LensSimConfig(mode="unpaired", **SMALL)
    manifest = simulate_lens_dataset(tmp_path_factory.mktemp("unpaired"), cfg, n_workers=1, progress=False)
    return (cfg, *_load(manifest))


@pytest.fixture(scope="module")
def paired(tmp_path_factory: pytest.TempPathFactory) -> tuple[LensSimConfig, pd.DataFrame, np.ndarray]:
    cfg = LensSimConfig(mode="paired", **SMALL)
    manifest = simulate_lens_dataset(tmp_path_factory.mktemp("paired"), cfg, n_workers=1, progress=False)
    return (cfg, *_load(manifest))


# --- format ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("which", ["unpaired", "paired"])
def test_format_counts_and_truth(which: str, request: pytest.FixtureRequest) -> None:
    cfg, frame, images = request.getfixturevalue(which)
    n = cfg.n_train + cfg.n_val + cfg.n_test
    assert images.shape == (n, 3, 63, 63) and images.dtype == np.float32
    assert np.isfinite(images).all()
    for col in ("sample_id", "split", "label", "theta_e", "psf_bin", "depth_bin", "pair_id", "image_index"):
        assert col in frame.columns
    assert frame["sample_id"].is_unique
    assert sorted(frame["image_index"]) == list(range(n))
    for split in ("train", "val", "test"):
        part = frame[frame["split"] == split]
        assert len(part) == getattr(cfg, f"n_{split}")
        assert (part["label"] == 1).sum() == len(part) // 2  # 50/50
    pos, neg = frame[frame["label"] == 1], frame[frame["label"] == 0]
    assert neg["theta_e"].isna().all() and neg["arc_snr"].isna().all()
    assert pos["theta_e"].notna().all()
    assert ((pos["theta_e"] >= cfg.theta_e_min) & (pos["theta_e"] < cfg.theta_e_max)).all()
    assert set(frame["psf_bin"]) <= {0, 1, 2} and set(frame["depth_bin"]) <= {0, 1, 2}
    # a pair never spans two splits
    assert (frame.groupby("pair_id")["split"].nunique() == 1).all()
    # arcs are visible but not blinding: matched-filter S/N of a few to tens
    assert (pos["arc_snr"] > 1).all() and 5 < pos["arc_snr"].median() < 100
    assert (pos["magnification"] > 1.5).all()


def test_unpaired_every_sample_is_its_own_group(unpaired) -> None:
    frame = unpaired[1]
    assert frame["pair_id"].is_unique


# --- determinism -----------------------------------------------------------------------------------------


def test_deterministic_and_independent_of_workers(unpaired, tmp_path: Path) -> None:
    cfg, frame, images = unpaired
    manifest = simulate_lens_dataset(tmp_path / "again", cfg, n_workers=2, progress=False)
    frame2, images2 = _load(manifest)
    assert np.array_equal(images, images2)
    pd.testing.assert_frame_equal(frame, frame2)


def test_seed_changes_the_data(tmp_path: Path) -> None:
    a = _load(simulate_lens_dataset(tmp_path / "a", LensSimConfig(seed=1, **TINY), n_workers=1, progress=False))
    b = _load(simulate_lens_dataset(tmp_path / "b", LensSimConfig(seed=2, **TINY), n_workers=1, progress=False))
    assert not np.array_equal(a[1], b[1])


def test_val_and_test_do_not_depend_on_n_train(unpaired, tmp_path: Path) -> None:
    cfg, frame, images = unpaired
    other = LensSimConfig(mode="unpaired", n_train=10, n_val=cfg.n_val, n_test=cfg.n_test, seed=cfg.seed)
    frame2, images2 = _load(simulate_lens_dataset(tmp_path, other, n_workers=1, progress=False))
    keep, keep2 = frame["split"] != "train", frame2["split"] != "train"
    assert np.array_equal(images[frame.loc[keep, "image_index"]], images2[frame2.loc[keep2, "image_index"]])


# --- physics ---------------------------------------------------------------------------------------------


def test_paired_members_share_host_and_conditions(paired) -> None:
    _, frame, _ = paired
    groups = frame.groupby("pair_id")
    assert (groups.size() == 2).all()
    assert (groups["label"].agg(sorted).map(tuple) == (0, 1)).all()
    for col in ["split", "psf_bin", "depth_bin", "host_flux", *HOST_COLUMNS]:
        assert (groups[col].nunique() == 1).all(), col


def test_paired_difference_is_an_arc_near_theta_e(paired) -> None:
    cfg, frame, images = paired
    pos = frame[frame["label"] == 1].set_index("pair_id")
    neg = frame[frame["label"] == 0].set_index("pair_id").loc[pos.index]
    diff = images[pos["image_index"]].sum(axis=1) - images[neg["image_index"]].sum(axis=1)
    size = cfg.stamp_size
    yy, xx = np.mgrid[:size, :size] - (size - 1) / 2
    ratios, inner = [], []
    for k, (_, row) in enumerate(pos.iterrows()):
        # distance from the (jittered) lens centre, in pixels
        r = np.hypot(xx - row["host_x"] / cfg.pixel_scale, yy - row["host_y"] / cfg.pixel_scale)
        flux = np.clip(diff[k], 0, None)
        ratios.append((flux * r).sum() / flux.sum() / (row["theta_e"] / cfg.pixel_scale))
        if row["theta_e"] >= 1.0:
            inner.append(flux[r < 1.0].sum() / flux.sum())
    ratios, resolved = np.asarray(ratios), pos["theta_e"].to_numpy() >= 1.0
    # arcs wider than the PSF sit within a factor 2 of theta_E; for theta_E ~ 0.5" the PSF (up to 1.7"
    # FWHM) alone pushes the light's mean radius to ~2 theta_E
    assert np.all((ratios[resolved] > 0.5) & (ratios[resolved] < 2.0)), ratios[resolved]
    assert np.all((ratios > 0.5) & (ratios < 3.0)), ratios
    assert 0.8 < np.median(ratios) < 1.5
    # the arc's light avoids the host centre
    assert np.max(inner) < 0.05


def test_core_brightness_shortcut_exists_unpaired_but_not_paired(unpaired, paired) -> None:
    _, frame, images = unpaired
    core = _core_flux(images[frame["image_index"]])
    label = frame["label"].to_numpy()
    assert core[label == 1].mean() > 2.0 * core[label == 0].mean()
    assert frame.loc[label == 1, "host_n"].mean() > frame.loc[label == 0, "host_n"].mean()
    assert frame.loc[label == 1, "host_reff"].mean() < frame.loc[label == 0, "host_reff"].mean()

    # paired: same host in both members, so the core only differs by arc light, which for wide arcs is ~0
    _, frame, images = paired
    pos = frame[(frame["label"] == 1) & (frame["theta_e"] >= 1.5)].set_index("pair_id")
    neg = frame[frame["label"] == 0].set_index("pair_id").loc[pos.index]
    core_pos, core_neg = _core_flux(images[pos["image_index"]]), _core_flux(images[neg["image_index"]])
    assert len(pos) >= 10
    assert abs(core_pos.mean() / core_neg.mean() - 1) < 0.05


# --- cache ----------------------------------------------------------------------------------------------


def test_cache_reuses_a_finished_dataset(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    manifest = ensure_lens_dataset(tmp_path, {"mode": "unpaired", **TINY}, n_workers=1, progress=False)
    out = manifest.parent
    assert out.parent == tmp_path and out.name.startswith("lens_unpaired_")
    assert (out / "COMPLETE").is_file() and (out / "images.npy").is_file()
    assert [p.name for p in tmp_path.iterdir() if ".tmp-" in p.name] == []

    def no_regeneration(*args, **kwargs):
        raise AssertionError("regenerated a cached data set")

    monkeypatch.setattr(lens, "simulate_lens_dataset", no_regeneration)
    # an equal config spelled differently (ints for floats, lists for tuples, a LensSimConfig) hits the cache
    same = {"mode": "unpaired", "theta_e_max": 3, "psf_fwhm_bins": [1.0, 1.3, 1.6], **TINY}
    assert ensure_lens_dataset(tmp_path, same, progress=False) == manifest
    assert ensure_lens_dataset(tmp_path, LensSimConfig(**TINY), progress=False) == manifest
    assert lens.lens_dataset_dir(tmp_path, {"mode": "paired", **TINY}) != out


def test_cache_regenerates_a_dir_without_complete(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    cfg = {"mode": "paired", **TINY}
    out = lens.lens_dataset_dir(tmp_path, cfg)
    out.mkdir(parents=True)
    (out / "manifest.parquet").write_text("half written")
    (out / "images.npy").write_text("half written")
    calls = []
    real = lens.simulate_lens_dataset
    monkeypatch.setattr(lens, "simulate_lens_dataset", lambda *a, **k: calls.append(1) or real(*a, **k))
    manifest = ensure_lens_dataset(tmp_path, cfg, n_workers=1, progress=False)
    assert calls == [1] and manifest.parent == out and (out / "COMPLETE").is_file()
    frame, images = _load(manifest)
    assert len(frame) == len(images) == 8


def test_cache_crash_leaves_nothing_that_looks_finished(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def crash(out_dir, *args, **kwargs):
        Path(out_dir).mkdir(parents=True)
        (Path(out_dir) / "manifest.parquet").write_text("partial")
        raise RuntimeError("killed")

    monkeypatch.setattr(lens, "simulate_lens_dataset", crash)
    with pytest.raises(RuntimeError, match="killed"):
        ensure_lens_dataset(tmp_path, TINY, progress=False)
    assert not lens.lens_dataset_dir(tmp_path, TINY).exists()
    assert [p.name for p in tmp_path.iterdir() if ".tmp-" in p.name] == []


def test_cache_concurrent_callers_generate_once(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    calls = []
    real = lens.simulate_lens_dataset

    def slow(*args, **kwargs):
        calls.append(1)
        time.sleep(0.5)  # keep the first caller busy while the second arrives
        return real(*args, **kwargs)

    monkeypatch.setattr(lens, "simulate_lens_dataset", slow)
    results: list[Path] = []
    threads = [threading.Thread(target=lambda: results.append(ensure_lens_dataset(tmp_path, TINY, n_workers=1, progress=False)))
               for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(results) == 2 and results[0] == results[1] and results[0].is_file()
    assert calls == [1]


def test_the_default_hash_names_the_existing_cache() -> None:
    # the cache directory of the default data set: a change regenerates every cache (and changes run numbers)
    assert lens.config_hash(LensSimConfig()) == lens.config_hash(lens.as_config(None)) == "e1329b50cd97"
    assert lens.lens_dataset_dir("/c", None).name == "lens_unpaired_e1329b50cd97"


# --- config errors ----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "overrides, field",
    [
        ({"mode": "both"}, "mode"),
        ({"theta_e_min": 3.0, "theta_e_max": 1.0}, "theta_e_min"),
        ({"theta_e_min": 2.0, "theta_e_max": 2.0}, "theta_e_min"),
        ({"n_train": 0}, "n_train"),
        ({"n_val": -4}, "n_val"),
        ({"n_test": 7}, "n_test"),
        ({"stamp_size": 0}, "stamp_size"),
        ({"pixel_scale": 0.0}, "pixel_scale"),
        ({"supersample": 0}, "supersample"),
        ({"psf_fwhm_bins": []}, "psf_fwhm_bins"),
        ({"depth_sky_sigma": [[0.1, 0.1]]}, "depth_sky_sigma"),
        ({"lens_host_n": [4.0, 2.0]}, "lens_host_n"),
        ({"source_q": [0.5, 1.5]}, "source_q"),
        ({"source_mag": [23.0]}, "source_mag"),
        ({"n_train": 2.5}, "n_train"),
        ({"bands": ["g", "r", "i"]}, "bands"),
        ({"colour": "blue"}, "colour"),
    ],
)
def test_bad_config_names_the_field(overrides: dict, field: str, tmp_path: Path) -> None:
    with pytest.raises(ValueError, match=field):
        ensure_lens_dataset(tmp_path, overrides, progress=False)
    assert list(tmp_path.iterdir()) == []  # nothing generated
    if field != "colour":
        with pytest.raises(ValueError, match=field):
            LensSimConfig(**overrides)


def test_moffat_psf_and_independent_pair_noise(tmp_path: Path) -> None:
    cfg = LensSimConfig(mode="paired", psf_type="moffat", paired_shared_noise=False, **TINY)
    frame, images = _load(simulate_lens_dataset(tmp_path, cfg, n_workers=1, progress=False))
    assert np.isfinite(images).all()
    pos = frame[frame["label"] == 1].set_index("pair_id")
    neg = frame[frame["label"] == 0].set_index("pair_id").loc[pos.index]
    corner = (images[pos["image_index"]] - images[neg["image_index"]])[:, 1, :8, :8]  # far from host and arc
    sky = pos["sky_sigma"].to_numpy()[:, None, None]
    assert 1.0 < np.std(corner / sky) < 2.0  # two independent noise fields: sqrt(2) sky sigma
