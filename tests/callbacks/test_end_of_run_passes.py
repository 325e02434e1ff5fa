"""The end-of-run analyses share passes (issue 12 item 2): the test pass is reused, validation runs once.

Each number must equal what a separate pass gives (sklearn AUROC on a fresh pass, a temperature fitted
on a fresh validation pass), and the network must forward exactly test + val + the masked radii.
"""

from __future__ import annotations

from functools import partial
from pathlib import Path

import lightning as L
import numpy as np
import pytest
import timm
import torch
from sklearn.metrics import roc_auc_score

from analysis.calibration import fit_temperature
from analysis.lens.images import apply_core_mask
from callbacks.base import run_split
from callbacks.lens.core_sensitivity import CoreSensitivity
from callbacks.lens.search_metrics import SearchMetrics
from callbacks.temperature_scaling import TemperatureScaling
from datamodules.lens.datamodule import LensDataModule
from lightning_modules.lens.module import LensModule
from tests.helpers import write_toy_lens_data

N_VAL, N_TEST = 40, 36


def _tested(tmp, limit_test_batches: int | None = None) -> dict:
    """A lens module after trainer.test with three end-of-run callbacks, and the images its net saw."""
    torch.set_num_threads(1)
    manifest = write_toy_lens_data(Path(tmp) / "d", {"train": 16, "val": N_VAL, "test": N_TEST}, size=31)
    dm = LensDataModule(manifest_path=str(manifest), batch_size=16, seed=0)
    torch.manual_seed(0)
    net = timm.create_model("resnet18", pretrained=False, in_chans=3, num_classes=1)
    module = LensModule(net, optimizer=partial(torch.optim.AdamW, lr=1e-4))
    seen: list[int] = []
    module.net.register_forward_hook(lambda m, args, out: seen.append(len(args[0])))
    callbacks = [
        CoreSensitivity(radii=[0, 3], reliance_radius=3, reliance_pass_below=0.03, reliance_fail_above=0.05),
        TemperatureScaling(),
        SearchMetrics(fprs=[0.1], completeness=[0.5], prevalences=[1e-3], n_boot=10, alpha=0.05, seed=0, curve_fpr=0.1),
    ]
    trainer = L.Trainer(accelerator="cpu", logger=False, enable_checkpointing=False, enable_progress_bar=False,
                        enable_model_summary=False, callbacks=callbacks, default_root_dir=str(tmp),
                        limit_test_batches=limit_test_batches)
    trainer.test(module, datamodule=dm, verbose=False)
    return {"module": module, "dm": dm, "callbacks": callbacks, "images": sum(seen)}


@pytest.fixture(scope="module")
def tested(tmp_path_factory):
    return _tested(tmp_path_factory.mktemp("eor"))


def test_network_forwards_test_once_val_once_and_each_masked_radius(tested):
    # test pass (N_TEST) + one shared val pass (N_VAL) + r=3 on val and test; separate passes would add
    # r=0 twice more, temperature's val pass and the search metrics' val + test passes
    assert tested["images"] == N_TEST + N_VAL + (N_VAL + N_TEST)


def test_shared_numbers_equal_separate_passes(tested):
    module, dm = tested["module"], tested["dm"]
    sens, temp, search = tested["callbacks"]
    module._split_cache = {}
    for split in ("val", "test"):
        fresh = run_split(module, dm.split_dataloader(split))
        assert sens.curves[split][0.0] == pytest.approx(roc_auc_score(fresh.target, fresh.outputs), abs=1e-12)
        masked = run_split(module, dm.split_dataloader(split),
                           {3: lambda b: {**b, "image": apply_core_mask(b["image"], 3.0, 0.0)}})
        assert sens.curves[split][3.0] == pytest.approx(roc_auc_score(masked.target, masked.outputs[3]), abs=1e-12)
    val = run_split(module, dm.split_dataloader("val"))
    assert temp.results["temperature"] == fit_temperature(val.outputs, val.target.astype(int))
    assert search.results["val_n_neg"] == int(np.sum(val.target == 0))
    assert search.results["test_n_pos"] == int(np.sum(run_split(module, dm.split_dataloader("test")).target == 1))


def test_cache_is_dropped_when_a_new_test_epoch_starts(tested):
    module = tested["module"]
    module._split_cache = {"val": "stale"}
    module.on_test_epoch_start()
    assert module._split_cache == {}


def test_a_shortened_test_pass_does_not_stand_in_for_the_split(tmp_path):
    # limit_test_batches=1 (debug runs): the test pass saw 16 of 36 samples; the analyses need all of them
    run = _tested(tmp_path, limit_test_batches=1)
    search = run["callbacks"][2]
    assert search.results["test_n_pos"] + search.results["test_n_neg"] == N_TEST
    assert run["images"] == 16 + N_VAL + N_TEST + (N_VAL + N_TEST)  # short test pass, then a full one
