"""Issue 20 on the lens family: score a user's new cutouts (unlabelled, memory-mapped) with any lens run.

The unlabelled manifest has only ``sample_id`` and metadata (no label, split, theta_e, ...); a data set whose
band order, channel count or stamp size differ from the run's is refused before any forward pass.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from datamodules.lens.datamodule import LensDataModule, LensInputs
from tasks.predict import check_inputs_fit
from tests.conftest import train_in_process
from tests.helpers import run_script, write_toy_lens_data
from tests.lens.tiny import TEST_NET


def write_new_cutouts(out_dir: Path, n: int = 30, size: int = 63, channels: int = 3, bands: str | None = None,
                      dtype: type = np.float32, seed: int = 5) -> Path:
    """A survey-style unlabelled manifest: sample_id, ra, dec (and optionally bands), images beside it."""
    toy = write_toy_lens_data(out_dir / "src", {"test": n}, size=size, seed=seed)
    images = np.load(toy.with_name("images.npy"))
    if channels != images.shape[1]:
        images = np.concatenate([images, images[:, :1]], axis=1)[:, :channels]
    frame = pd.DataFrame({"sample_id": [f"cut{i:04d}" for i in range(n)],
                          "ra": np.linspace(150.0, 151.0, n), "dec": np.linspace(2.0, 2.5, n)})
    if bands is not None:
        frame["bands"] = bands
    out_dir.mkdir(parents=True, exist_ok=True)
    frame.to_parquet(out_dir / "manifest.parquet")
    np.save(out_dir / "images.npy", images.astype(dtype))
    return out_dir / "manifest.parquet"


def _dm(manifest: Path, **kw) -> LensDataModule:
    dm = LensDataModule(manifest_path=str(manifest), batch_size=8, **kw)
    dm.setup("predict")
    return dm


class _Consumes:
    input_keys = ("image",)


def test_unlabelled_manifest_is_read_lazily_from_a_memmap(tmp_path):
    manifest = write_new_cutouts(tmp_path / "new", n=20, dtype=np.float16)
    dm = _dm(manifest)
    assert dm.labelled is False and dm.bands == ["g", "r", "z"]
    # no split column: every row is in test, the split task=predict scores; no truth anywhere
    assert {s: len(d) for s, d in dm.datasets.items()} == {"train": 0, "val": 0, "test": 20}
    frame = dm.split_frame("test")
    assert list(frame.columns) == ["sample_id", "ra", "dec"]
    assert np.isnan(dm.datasets["test"].targets).all()
    # the images stay on disk: the split holds the memory-mapped file, not an array of inputs
    inputs = dm.inputs["test"]
    assert isinstance(inputs, LensInputs) and isinstance(inputs.images, np.memmap)
    assert inputs.images.dtype == np.float16 and inputs.shape == (20, 3, 63, 63)
    # each read is the preprocessing of exactly those raw rows, whatever the order asked
    raw = np.load(manifest.with_name("images.npy"))
    expected = dm.preprocess(raw.astype(np.float32))
    idx = [13, 2, 7, 19, 0]
    assert np.array_equal(inputs.read(idx), expected[idx])
    batch = dm.datasets["test"].__getitems__(idx)
    assert [int(b["index"]) for b in batch] == idx
    assert np.array_equal(torch.stack([b["image"] for b in batch]).numpy(), expected[idx])
    assert np.array_equal(dm.datasets["test"][4]["image"].numpy(), expected[4])
    assert np.array_equal(inputs[:, :, 31, 31], expected[:, :, 31, 31])
    loader = dm.split_dataloader("test")
    assert np.array_equal(torch.cat([b["image"] for b in loader]).numpy(), expected)
    # what a labelled metric needs is named when it is asked of unlabelled data
    with pytest.raises(ValueError, match="'label' column"):
        dm.model_inputs("test")
    with pytest.raises(ValueError, match=r"no column\(s\) \['label', 'theta_e', 'psf_bin', 'depth_bin'\]"):
        _dm(manifest, fraction=0.5)


def test_labelled_manifest_missing_a_metric_column_is_named(tmp_path):
    manifest = write_toy_lens_data(tmp_path / "d", {"train": 4, "val": 4, "test": 4})
    pd.read_parquet(manifest).drop(columns=["theta_e"]).to_parquet(manifest)
    with pytest.raises(ValueError, match=r"missing column\(s\) \['theta_e'\].*labelled manifest"):
        _dm(manifest)


def test_band_order_channels_and_stamp_size_must_match(tmp_path, toy_lens_manifest):
    own = LensDataModule(manifest_path=str(toy_lens_manifest), batch_size=8)
    own.setup("predict")
    assert own.input_description() == {"bands": ["g", "r", "z"], "channels": 3, "stamp_size": 63, "preprocessing": "residual"}
    ok = _dm(write_new_cutouts(tmp_path / "ok", n=4, bands="g,r,z"))
    check_inputs_fit(_Consumes(), own, ok, "test", "test")  # same bands, channels, size: accepted

    swapped = _dm(write_new_cutouts(tmp_path / "zrg", n=4, bands="z,r,g"))
    with pytest.raises(ValueError, match=r"'bands': expected \['g', 'r', 'z'\] \(the run's data\), found \['z', 'r', 'g'\]"):
        check_inputs_fit(_Consumes(), own, swapped, "test", "test")
    # data.bands says it as well as a column would; both must agree
    assert _dm(write_new_cutouts(tmp_path / "cfg", n=4), bands=["r", "g", "z"]).input_description()["bands"] == ["r", "g", "z"]
    with pytest.raises(ValueError, match="data.bands is"):
        _dm(write_new_cutouts(tmp_path / "both", n=4, bands="g,r,z"), bands=["r", "g", "z"])

    four = _dm(write_new_cutouts(tmp_path / "griz", n=4, channels=4), bands=["g", "r", "i", "z"])
    with pytest.raises(ValueError) as err:
        check_inputs_fit(_Consumes(), own, four, "test", "test")
    assert "'channels': expected 3 (the run's data), found 4" in str(err.value)
    assert "'bands': expected ['g', 'r', 'z'] (the run's data), found ['g', 'r', 'i', 'z']" in str(err.value)
    with pytest.raises(ValueError, match="4 channels; say their band order"):
        _dm(write_new_cutouts(tmp_path / "griz2", n=4, channels=4))  # 4 channels cannot default to g,r,z

    small = _dm(write_new_cutouts(tmp_path / "s47", n=4, size=47))
    with pytest.raises(ValueError) as err:
        check_inputs_fit(_Consumes(), own, small, "test", "test")
    assert "'stamp_size': expected 63 (the run's data), found 47" in str(err.value)
    assert "input 'image': expected {'shape': (3, 63, 63)" in str(err.value)


# --- end to end: a trained lens run scores new cutouts through evaluate.py ----------------------------


@pytest.fixture(scope="module")
def lens_run(tmp_path_factory, toy_lens_manifest) -> Path:
    run = tmp_path_factory.mktemp("lens_run") / "run"
    train_in_process([f"data.manifest_path={toy_lens_manifest}", "data.batch_size=16", *TEST_NET,
                      "debug=fast", "logger=csv", "cpu_threads=1"], run, save_config=True)
    return run


def test_unlabelled_cutouts_are_scored_and_ranked(lens_run, tmp_path):
    manifest = write_new_cutouts(tmp_path / "survey", n=30)
    ckpt = lens_run / "checkpoints" / "best.ckpt"
    run_script("evaluate.py", f"ckpt_path={ckpt}", "trainer=cpu", f'data_overrides=["data.manifest_path={manifest}"]', "top_k=7")
    (out,) = (lens_run / "predictions").iterdir()
    assert out.name.startswith("manifest-")
    pred = pd.read_csv(out / "predictions_test.csv")
    side = json.loads((out / "predictions_test.json").read_text())
    assert side["labelled"] is False and side["n"] == 30 and side["data"]["manifest"] == str(manifest.resolve())
    assert "target" not in pred.columns and list(pred.columns[:2]) == ["sample_id", "split"]
    assert pred["sample_id"].tolist() == [f"cut{i:04d}" for i in range(30)]
    # metadata carried row by row
    assert np.allclose(pred["ra"], np.linspace(150.0, 151.0, 30)) and np.allclose(pred["dec"], np.linspace(2.0, 2.5, 30))
    # the logits are the model's on these inputs (same weights, same preprocessing)
    from tasks.predict import run_config
    import hydra

    cfg, _ = run_config(ckpt)
    module = hydra.utils.instantiate(cfg.model)
    module.load_state_dict(torch.load(ckpt, map_location="cpu", weights_only=True)["state_dict"])
    module.eval()
    with torch.no_grad():
        images = torch.from_numpy(_dm(manifest).inputs["test"][:])
        logits = module({"image": images}).numpy()
    assert np.allclose(pred["logit"], logits, atol=1e-4)
    # the candidate list: the top 7 by score, ranked, with metadata
    cand = pd.read_csv(out / "candidates.csv")
    score = "prob" if "prob" in cand.columns else "logit"
    top = pred.sort_values(score, ascending=False, kind="stable").head(7)
    assert cand["rank"].tolist() == list(range(1, 8))
    assert cand["sample_id"].tolist() == top["sample_id"].tolist()
    assert cand[score].is_monotonic_decreasing and {"ra", "dec"} <= set(cand.columns)


def test_misfit_data_is_refused_before_any_forward_pass(lens_run, tmp_path, monkeypatch):
    from lightning_modules.lens.module import LensModule

    calls = []

    def counting_forward(self, inputs):
        calls.append(1)
        raise AssertionError("forward must not run on refused data")

    monkeypatch.setattr(LensModule, "forward", counting_forward)
    manifest = write_new_cutouts(tmp_path / "zrg", n=6, bands="z,r,g")
    before = sorted(lens_run.glob("predictions/*/*"))
    ckpt = lens_run / "checkpoints" / "best.ckpt"
    proc = run_script("evaluate.py", f"ckpt_path={ckpt}", "trainer=cpu", f'data_overrides=["data.manifest_path={manifest}"]',
                      check=False)
    assert proc.returncode != 0 and not calls
    assert "does not fit the model" in proc.stderr
    assert "'bands': expected ['g', 'r', 'z'] (the run's data), found ['z', 'r', 'g']" in proc.stderr
    assert sorted(lens_run.glob("predictions/*/*")) == before  # nothing written


def test_a_lens_run_writes_its_test_predictions_at_its_temperature(lens_run, toy_lens_manifest):
    # callbacks.temperature_scaling.write_predictions (conf/callbacks/lens.yaml): task=power reads this file.
    # The whole test split (debug=fast's limit_test_batches cuts only the test loop's own metrics short).
    import hydra

    from analysis.predictions import read_predictions
    from callbacks.temperature_scaling import read_temperature
    from tasks.predict import run_config

    pred = read_predictions(lens_run / "predictions_test.csv", kind="binary")
    temperature = read_temperature(lens_run)["temperature"]
    assert pred.sidecar["temperature"] == temperature and pred.sidecar["temperature_fitted_on"] == "val"
    frame = pd.read_csv(lens_run / "predictions_test.csv")
    assert np.allclose(frame["prob"], 1 / (1 + np.exp(-pred.logits / temperature)))
    assert {"theta_e", "psf_bin"} <= set(frame.columns)
    # the rows are the test split's, in its order, with the best checkpoint's logits on its inputs
    dm = _dm(toy_lens_manifest)
    test = dm.split_frame("test")
    assert pred.sample_id.tolist() == test["sample_id"].astype(str).tolist()
    assert pred.targets.tolist() == test["target"].tolist()
    ckpt = lens_run / "checkpoints" / "best.ckpt"
    cfg, _ = run_config(ckpt)
    module = hydra.utils.instantiate(cfg.model)
    module.load_state_dict(torch.load(ckpt, map_location="cpu", weights_only=True)["state_dict"])
    module.eval()
    with torch.no_grad():
        logits = module({"image": torch.from_numpy(dm.inputs["test"][:])}).numpy()
    assert np.allclose(pred.logits, logits, atol=1e-4)
