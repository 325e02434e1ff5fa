"""The weak-lensing challenge submission from unlabelled maps (issue 20): data.maps_path and task=weak_lensing_submission.

One tiny direct run; its own test maps, written as an unlabelled .npy (the kit's flattened layout and (N, H, W)),
must give the run's own test predictions, and the submission must hold the network's means and sigmas in
physical units, recomputed here from the checkpoint's weights, buffers and stored input statistics.
"""

from __future__ import annotations

import json
import zipfile
from pathlib import Path

import hydra
from hydra.errors import InstantiationException
import numpy as np
import pandas as pd
import pytest
import torch
import torch.nn.functional as F

from datamodules.weak_lensing.datamodule import WeakLensingDataModule
from rigor.guard import safe_load
from tests.conftest import compose, train_in_process
from tests.weak_lensing.tiny import tiny_overrides
from tests.weak_lensing.wl_data import TINY_SHAPE


def _evaluate(overrides: list[str]) -> dict:
    from evaluate import evaluate

    return evaluate(compose(overrides, config_name="evaluate"))


@pytest.fixture(scope="module")
def wl_run(tmp_path_factory, one_thread) -> Path:
    root = tmp_path_factory.mktemp("wl_submission")
    run = root / "run"
    overrides = ["experiment=weak_lensing_simple_cnn_direct", "debug=fast", "cpu_threads=1", "logger=csv",
                 f"paths.data_dir={root / 'data'}", *tiny_overrides(root / "data")]
    train_in_process(overrides, run, save_config=True)  # evaluate.py rebuilds the run from .hydra/config.yaml
    return run


def _run_datamodule(run: Path, **overrides) -> WeakLensingDataModule:
    from tasks.predict import run_config

    cfg, _ = run_config(run / "checkpoints" / "best.ckpt")
    dm = hydra.utils.instantiate(cfg.data, **overrides)
    dm.setup("predict")
    return dm


def test_submission_from_unlabelled_maps(wl_run, tmp_path) -> None:
    ckpt = wl_run / "checkpoints" / "best.ckpt"
    own = _run_datamodule(wl_run)
    maps = own.split_maps("test")  # (N, H, W) in physical units, with the run's fixed test noise: "noisy" maps
    n = len(maps)
    assert maps.shape[1:] == TINY_SHAPE and n >= 4
    mask = own.mask
    np.save(tmp_path / "mask.npy", mask)
    np.save(tmp_path / "kappa_test.npy", maps[:, mask])  # the kit's layout: (N, n_valid) over the mask
    report = _evaluate(["task=weak_lensing_submission", f"ckpt_path={ckpt}", "trainer=cpu",
                        f'data_overrides=["data.maps_path={tmp_path / "kappa_test.npy"}","data.maps_mask_path={tmp_path / "mask.npy"}",'
                        '"data.labelled=false"]'])
    out = Path(report["submission"]).parent
    assert out.parent == wl_run / "predictions" and out.name.startswith("kappa_test-")

    # the kit's format: {"means": (N, 2), "errorbars": (N, 2)}; the zip holds it as result.json
    sub = json.loads((out / "submission.json").read_text())
    assert sorted(sub) == ["errorbars", "means"]
    assert len(sub["means"]) == len(sub["errorbars"]) == n and all(len(r) == 2 for r in sub["means"] + sub["errorbars"])
    with zipfile.ZipFile(out / "submission.zip") as zf:
        assert zf.namelist() == ["result.json"] and json.loads(zf.read("result.json")) == sub
    means, errs = np.array(sub["means"]), np.array(sub["errorbars"])

    # = the predictions file the predict task wrote (unlabelled, one row per map in file order), with the kit's cut
    pred = pd.read_csv(out / "predictions_test.csv")
    assert "omega_m" not in pred.columns and pred["map_index"].tolist() == list(range(n))
    p_mean = pred[["omega_m_mean", "s8_mean"]].to_numpy()
    p_std = pred[["omega_m_std", "s8_std"]].to_numpy()
    expect_err = np.where(p_mean - p_std < 0, p_mean, p_std)
    np.testing.assert_array_equal(means, p_mean)
    np.testing.assert_array_equal(errs, expect_err)
    assert report["n_errorbars_cut"] == int((p_mean - p_std < 0).sum())

    # = the run's own test predictions: the same maps preprocessed as the run's evaluation maps were
    # (debug=fast tested the first batches only: those rows, by their position in the run's test split)
    run_pred = pd.read_csv(wl_run / "predictions_test.csv", dtype={"sample_id": str})
    rows = own.split_frame("test")["sample_id"].astype(str).tolist()
    at = [rows.index(sid) for sid in run_pred["sample_id"]]
    assert len(at) >= 4
    np.testing.assert_allclose(p_mean[at], run_pred[["omega_m_mean", "s8_mean"]].to_numpy(), rtol=1e-5, atol=1e-7)
    np.testing.assert_allclose(p_std[at], run_pred[["omega_m_std", "s8_std"]].to_numpy(), rtol=1e-5, atol=1e-7)

    # = an independent computation: standardise with the checkpoint's stored statistics, run the net, unscale by hand
    checkpoint = safe_load(ckpt)
    state = checkpoint["WeakLensingDataModule"]
    assert state["input_loc"] == own.input_loc and state["input_scale"] == own.input_scale  # stored = the run's
    assert report["input_stats_source"] == "checkpoint"
    from tasks.predict import run_config

    cfg, _ = run_config(ckpt)
    module = hydra.utils.instantiate(cfg.model)
    module.load_state_dict(checkpoint["state_dict"])
    module.eval()
    x = np.where(mask, (maps - state["input_loc"]) / state["input_scale"], 0.0).astype(np.float32)[:, None]
    with torch.no_grad():
        raw = module.net(torch.from_numpy(x)).double().numpy()
    loc, scale = np.array(state["label_loc"]), np.array(state["label_scale"])
    np.testing.assert_allclose(module.label_loc.numpy(), loc, rtol=1e-6)  # the label scaler the run recorded
    mean = loc + scale * raw[:, :2]
    std = scale * (F.softplus(torch.from_numpy(raw[:, 2:])).numpy() + module.sigma_floor)
    np.testing.assert_allclose(means, mean, rtol=1e-5, atol=1e-7)
    np.testing.assert_allclose(errs, np.where(mean - std < 0, mean, std), rtol=1e-5, atol=1e-7)
    assert 0.05 < means[:, 0].mean() < 0.7 and 0.5 < means[:, 1].mean() < 1.1  # physical units, not standardised

    # (N, H, W) maps without a mask of their own give the same submission
    np.save(tmp_path / "maps_hw.npy", maps)
    again = _evaluate(["task=weak_lensing_submission", f"ckpt_path={ckpt}", "trainer=cpu",
                       f'data_overrides=["data.maps_path={tmp_path / "maps_hw.npy"}","data.labelled=false"]'])
    assert json.loads(Path(again["submission"]).read_text()) == sub


def test_maps_use_the_runs_statistics_and_wrong_shapes_are_refused(wl_run, tmp_path) -> None:
    own = _run_datamodule(wl_run)
    maps = own.split_maps("test")
    np.save(tmp_path / "shifted.npy", maps * 3.0 + 0.5)  # other statistics: not used for the standardisation
    dm = _run_datamodule(wl_run, maps_path=str(tmp_path / "shifted.npy"), labelled=False)
    assert (dm.input_loc, dm.input_scale) == (own.input_loc, own.input_scale)
    assert len(dm.datasets["train"]) == len(dm.datasets["val"]) == 0 and len(dm.datasets["test"]) == len(maps)
    x = dm.datasets["test"][1]["kappa"][0].numpy()
    expect = np.where(own.mask, (maps[1] * 3.0 + 0.5 - own.input_loc) / own.input_scale, 0.0)
    np.testing.assert_allclose(x, expect, rtol=1e-6, atol=1e-6)
    given = _run_datamodule(wl_run, maps_path=str(tmp_path / "shifted.npy"), labelled=False, input_stats={"loc": 0.01, "scale": 2.0})
    np.testing.assert_allclose(given.datasets["test"][1]["kappa"][0].numpy(),
                               np.where(own.mask, (maps[1] * 3.0 + 0.5 - 0.01) / 2.0, 0.0), rtol=1e-6, atol=1e-6)

    # a map shape that is not the model's input: refused at set-up (before any forward pass), naming key, expected, found
    np.save(tmp_path / "narrow.npy", maps[:, :, :40])
    with pytest.raises(ValueError, match=r"data\.maps_path: .*narrow\.npy.*\[356, 44\].*found \[356, 40\]"):
        _run_datamodule(wl_run, maps_path=str(tmp_path / "narrow.npy"), labelled=False)
    with pytest.raises(ValueError, match=r"data\.maps_path: .*narrow\.npy.*\[356, 44\].*found \[356, 40\]"):
        _evaluate(["task=weak_lensing_submission", f"ckpt_path={wl_run / 'checkpoints' / 'best.ckpt'}", "trainer=cpu",
                   f'data_overrides=["data.maps_path={tmp_path / "narrow.npy"}","data.labelled=false"]'])
    assert not (wl_run / "predictions" / "narrow").exists() and not list((wl_run / "predictions").glob("narrow-*/submission.json"))
    # flattened pixels that do not fit the mask, a factor that does not fit, and labels that a maps file lacks
    np.save(tmp_path / "flat.npy", maps[:, own.mask][:, :-3])
    with pytest.raises(ValueError, match=r"data\.maps_path: .*expected \[N, \d+\].*found \[N, \d+\]"):
        _run_datamodule(wl_run, maps_path=str(tmp_path / "flat.npy"), labelled=False)
    with pytest.raises(ValueError, match=r"data\.maps_downsample.*\[712, 88\]; found \[356, 44\]"):
        _run_datamodule(wl_run, maps_path=str(tmp_path / "shifted.npy"), labelled=False, maps_downsample=2)
    with pytest.raises(InstantiationException, match="data.labelled=false"):  # refused by the constructor
        _run_datamodule(wl_run, maps_path=str(tmp_path / "shifted.npy"))


def test_cnn_mcmc_arm_submission(tmp_path, one_thread) -> None:
    """A point head (the kit's CNN + MCMC): the run's validation maps give the likelihood, each map its posterior."""
    import warnings

    from analysis.predictions import read_predictions
    from analysis.weak_lensing.mcmc import summary_posteriors

    run = tmp_path / "run"
    overrides = ["experiment=weak_lensing_simple_cnn_mcmc", "debug=fast", "cpu_threads=1", "logger=csv",
                 "callbacks.wl_score.mcmc.summaries=[outputs]", f"paths.data_dir={tmp_path / 'data'}", *tiny_overrides(tmp_path / "data")]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # short chains: acceptance/ESS warnings are expected
        train_in_process(overrides, run, save_config=True)
    own = _run_datamodule(run)
    maps = own.split_maps("test")
    np.save(tmp_path / "maps.npy", maps)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        report = _evaluate(["task=weak_lensing_submission", f"ckpt_path={run / 'checkpoints' / 'best.ckpt'}", "trainer=cpu",
                            "kit_nonnegative_prior=false", f'data_overrides=["data.maps_path={tmp_path / "maps.npy"}","data.labelled=false"]'])
    sub = json.loads(Path(report["submission"]).read_text())
    assert report["head"] == "point" and report["mcmc"]["n_steps"] == 400  # the run's settings, from its sidecar
    assert len(sub["means"]) == len(sub["errorbars"]) == len(maps)
    # recomputed: the same MCMC on the validation predictions of this checkpoint and the maps' point predictions
    val = read_predictions(report["val_predictions"], kind="regression")
    point = read_predictions(report["predictions"], kind="regression")
    assert point.stds is None and len(val.means) == len(own.split_frame("val"))
    m = report["mcmc"]
    mean, std, _, _ = summary_posteriors(val.means, val.metadata["cosmology_id"].to_numpy(), val.targets, point.means,
                                         n_steps=m["n_steps"], proposal_std=m["proposal_std"], burn_in=m["burn_in"], seed=m["seed"],
                                         acceptance_band=m["acceptance_band"], ess_min=m["ess_min"], grid_size=m["grid_size"],
                                         n_trace=m["n_trace"])
    np.testing.assert_allclose(np.array(sub["means"]), mean, rtol=1e-12)
    np.testing.assert_allclose(np.array(sub["errorbars"]), std, rtol=1e-12)
    # the run's own validation file (best checkpoint) has the same summaries
    np.testing.assert_allclose(val.means, read_predictions(run / "predictions_val.csv", kind="regression").means, rtol=1e-5)
