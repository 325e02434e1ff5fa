"""One temperature per run (issue 19): fitted once by TemperatureScaling, kept in checkpoints/temperature.json,
read by every reader through read_temperature; old runs keep theirs inside best.ckpt."""

from __future__ import annotations

import json
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from analysis.calibration import fit_temperature_ece_grid
from callbacks.audio.evaluation import AudioEvaluation
from callbacks.base import RigorCallback
from callbacks.mc_dropout_summary import MCDropoutSummary
from callbacks.temperature_scaling import CHECKPOINT_KEY, TemperatureScaling, read_temperature, require_fitter_first
from tests.callbacks.test_end_of_run_passes import N_VAL, _tested
from tests.conftest import compose


class _Reader(RigorCallback):
    """An end-of-run reader as the audio and MC-Dropout callbacks are: it reads the file in on_test_end."""

    def setup(self, trainer, pl_module, stage):
        require_fitter_first(trainer, self, "reader")

    def on_test_end(self, trainer, pl_module):
        self.seen = read_temperature(trainer.default_root_dir)


def test_fitted_once_written_beside_the_checkpoints_and_seen_by_a_later_reader(tmp_path, monkeypatch):
    reader = _Reader()
    import tests.callbacks.test_end_of_run_passes as eor

    # the same lens toy run as the end-of-run test, with a reader after the fitter
    monkeypatch.setattr(eor, "SearchMetrics", lambda **kw: reader)
    tested = _tested(tmp_path)
    temp = tested["callbacks"][1]
    record = json.loads((tmp_path / "checkpoints" / "temperature.json").read_text())
    assert record == {"temperature": temp.results["temperature"], "split": "val", "n": N_VAL, "method": "nll",
                      "checkpoint": None}
    assert reader.seen == record and read_temperature(tmp_path) == record


def test_readers_refuse_to_run_before_or_without_the_fitter():
    for reader in (AudioEvaluation(), MCDropoutSummary(), _Reader()):
        for callbacks in ([reader], [reader, TemperatureScaling()]):
            with pytest.raises(ValueError, match="list temperature_scaling before"):
                reader.setup(SimpleNamespace(callbacks=callbacks), None, "fit")
        reader.setup(SimpleNamespace(callbacks=[TemperatureScaling(), reader]), None, "fit")


@pytest.mark.parametrize("experiment, reader", [("clip_subtask_smoke", "mc_dropout"), ("audio_smoke", "audio_evaluation")])
def test_family_configs_list_the_fitter_before_its_readers(experiment, reader):
    keys = list(compose([f"experiment={experiment}"]).callbacks)
    assert keys.index("temperature_scaling") < keys.index(reader)


def test_ece_grid_method_is_the_seeds_grid_search():
    rng = np.random.default_rng(0)
    logits, targets = rng.normal(size=(300, 4)) * 3, rng.integers(0, 4, 300)
    fitter = TemperatureScaling(method="ece_grid", grid=(0.5, 3.0, 0.01), n_bins=15)
    # the grid is rounded to 6 decimals, so its end is 3.0 and not 3.000000000000002
    expected = fit_temperature_ece_grid(logits, targets, np.round(np.arange(0.5, 3.0 + 0.005, 0.01), 6), 15)[0]
    assert fitter.fit(logits, targets) == expected and expected <= 3.0
    with pytest.raises(ValueError, match="method: expected one of"):
        TemperatureScaling(method="grid")
    with pytest.raises(ValueError, match="test split"):
        TemperatureScaling(fit_split="test")


def test_read_temperature_falls_back_to_an_old_runs_best_ckpt(tmp_path):
    ckpts = tmp_path / "checkpoints"
    ckpts.mkdir()
    assert read_temperature(tmp_path) is None
    torch.save({"state_dict": {}, CHECKPOINT_KEY: 1.75}, ckpts / "best.ckpt")
    torch.save({"state_dict": {}}, ckpts / "last.ckpt")
    old = {"temperature": 1.75, "split": None, "n": None, "method": "nll", "checkpoint": "best.ckpt"}
    assert read_temperature(tmp_path) == old and read_temperature(ckpts / "best.ckpt") == old
    assert read_temperature(ckpts / "best.ckpt", {CHECKPOINT_KEY: 1.75}) == old  # an already-loaded checkpoint
    assert read_temperature(ckpts / "last.ckpt") is None
    # the file wins, and applies only to the checkpoint it was fitted on
    (ckpts / "temperature.json").write_text(json.dumps({"temperature": 2.0, "split": "val", "n": 10, "method": "nll",
                                                        "checkpoint": "best.ckpt"}))
    assert read_temperature(ckpts / "best.ckpt")["temperature"] == 2.0 and read_temperature(ckpts)["n"] == 10
    assert read_temperature(ckpts / "last.ckpt") is None
