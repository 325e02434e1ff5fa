"""OverfitCheck: passes on models that can memorise, fails loudly (naming them) on ones that cannot."""

from __future__ import annotations

from functools import partial

import lightning as L
import pytest
import torch
from torch import nn

from tests.helpers import adamw
from callbacks.overfit_check import OverfitCheck, OverfitCheckError
from lightning_modules.lens.module import LensModule
from lightning_modules.puzzle.nets import CellClassifier
from lightning_modules.puzzle.module import PuzzleClassifier, PuzzleRegressor
from tests.conftest import compose

N_CLASSES = 12


class ListDataset(torch.utils.data.Dataset):
    def __init__(self, images: torch.Tensor, targets: torch.Tensor) -> None:
        self.images, self.targets = images, targets

    def __len__(self) -> int:
        return len(self.targets)

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        return {"image": self.images[i], "target": self.targets[i], "index": torch.tensor(i)}


class BlindNet(nn.Module):
    """Ignores its input: one learned logit vector for every sample, so it can fit one label but not ten."""

    def __init__(self, num_outputs: int, num_rotations: int = 0) -> None:
        super().__init__()
        self.bias = nn.Parameter(torch.zeros(num_outputs + num_rotations))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.bias.expand(x.shape[0], -1)


def distinct_samples(n: int = 10, seed: int = 0, size: int = 16) -> ListDataset:
    gen = torch.Generator().manual_seed(seed)
    return ListDataset(torch.rand(n, 3, size, size, generator=gen), torch.arange(n) % N_CLASSES)


def classifier(net) -> PuzzleClassifier:
    return PuzzleClassifier(net, cols=4, rows=3, optimizer=adamw(1e-3))


def small_cnn() -> partial:
    return partial(CellClassifier, channels=[8, 16], kernel_size=3, stride=2)


def test_capable_model_passes_and_the_module_is_untouched():
    torch.manual_seed(0)
    module = classifier(small_cnn())
    before = {k: v.clone() for k, v in module.state_dict().items()}
    rng = torch.get_rng_state()
    check = OverfitCheck(single_max_steps=300, few_max_epochs=400, lr=1e-2)
    results = check.run(module, distinct_samples())
    assert isinstance(results["overfit_1_step"], int) and results["overfit_1_loss"] < 1e-2
    assert isinstance(results["overfit_10_epoch"], int) and results["overfit_10_accuracy"] == 1.0
    assert all(torch.equal(before[k], v) for k, v in module.state_dict().items())  # a copy was trained
    assert torch.equal(rng, torch.get_rng_state())  # and the run's random stream is where it was


def test_model_that_cannot_learn_fails_naming_it():
    module = classifier(BlindNet)
    check = OverfitCheck(single_max_steps=2000, few_max_epochs=200, lr=1e-1)
    with pytest.raises(OverfitCheckError, match=r"PuzzleClassifier\(net=BlindNet.*could not overfit 10 samples"):
        check.run(module, distinct_samples())
    # one sample it can fit; without raising, the failure is recorded as a missing epoch
    lenient = OverfitCheck(single_max_steps=2000, few_max_epochs=50, lr=1e-1, raise_on_failure=False)
    results = lenient.run(module, distinct_samples())
    assert results["overfit_1_step"] is not None and results["overfit_10_epoch"] is None
    assert results["overfit_10_accuracy"] == pytest.approx(0.1)


def test_single_sample_failure_and_frozen_net():
    module = classifier(small_cnn())
    with pytest.raises(OverfitCheckError, match=r"PuzzleClassifier\(net=CellClassifier.*could not overfit 1 sample"):
        OverfitCheck(single_max_steps=3, lr=1e-4).run(module, distinct_samples())
    for p in module.net.parameters():
        p.requires_grad_(False)
    with pytest.raises(OverfitCheckError, match="PuzzleClassifier.*no trainable parameters"):
        OverfitCheck().run(module, distinct_samples())


def test_binary_module_uses_threshold_zero():
    torch.manual_seed(0)
    net = nn.Sequential(nn.Flatten(), nn.Linear(3 * 16 * 16, 32), nn.ReLU(), nn.Linear(32, 1))
    lens = LensModule(net, optimizer=adamw(1e-3))
    correct = lens.correct_predictions  # BaseTask's default
    assert correct(torch.tensor([2.0, -1.0, 0.5]), {"target": torch.tensor([1.0, 0.0, 0.0])}).tolist() == [True, True, False]
    assert correct(torch.tensor([[2.0], [-1.0]]), {"target": torch.tensor([0, 0])}).tolist() == [False, True]
    data = distinct_samples()
    data.targets = (torch.arange(10) % 2).float()
    results = OverfitCheck(single_max_steps=300, few_max_epochs=300, lr=1e-2).run(lens, data)
    assert results["overfit_1_step"] is not None and results["overfit_10_epoch"] is not None


def test_regressor_is_checked_with_its_own_criterion():
    torch.manual_seed(0)
    module = PuzzleRegressor(small_cnn(), cols=4, rows=3, optimizer=adamw(1e-3))
    data = distinct_samples(4, size=8)
    data.targets = torch.tensor([[0.0, 0.0], [3.0, 0.0], [1.0, 2.0], [2.0, 1.0]])
    results = OverfitCheck(single_max_steps=500, n_few=4, few_max_epochs=1500, lr=1e-2).run(module, data)
    assert results["overfit_4_epoch"] is not None  # rounded (col, row) right for all four
    blind = PuzzleRegressor(BlindNet, cols=4, rows=3, optimizer=adamw(1e-3))
    with pytest.raises(OverfitCheckError, match=r"PuzzleRegressor\(net=BlindNet.*could not overfit 4 samples"):
        OverfitCheck(single_max_steps=500, n_few=4, few_max_epochs=100, lr=1e-1).run(blind, data)


def test_callback_runs_at_fit_start_and_reports_in_summary(tmp_path):
    torch.manual_seed(0)

    class DM(L.LightningDataModule):
        def __init__(self) -> None:
            super().__init__()
            self.datasets = {"train": distinct_samples(16)}

        def train_dataloader(self):
            return torch.utils.data.DataLoader(self.datasets["train"], batch_size=8)

    check = OverfitCheck(single_max_steps=300, few_max_epochs=400, lr=1e-2)
    trainer = L.Trainer(max_epochs=1, limit_train_batches=1, callbacks=[check], logger=False, enable_checkpointing=False,
                        enable_progress_bar=False, enable_model_summary=False, default_root_dir=tmp_path)
    trainer.fit(classifier(small_cnn()), datamodule=DM())
    summary = check.summary()
    assert set(summary) >= {"overfit_1_step", "overfit_10_epoch"}
    restored = OverfitCheck()
    restored.restore(check.state())
    assert restored.summary() == summary


def test_bad_settings_name_the_key():
    with pytest.raises(ValueError, match="callbacks.overfit_check.n_few"):
        OverfitCheck(n_few=0)
    with pytest.raises(ValueError, match="callbacks.overfit_check.few_accuracy"):
        OverfitCheck(few_accuracy=1.5)


def test_debug_preset_switches_it_on_for_any_experiment():
    for experiment in ("lens_smoke", "puzzle_exp4"):
        cfg = compose([f"experiment={experiment}", "debug=overfit"])
        assert cfg.callbacks.overfit_check._target_ == "callbacks.overfit_check.OverfitCheck"
        assert cfg.callbacks.overfit_check.single_loss_below == 1e-2 and cfg.callbacks.overfit_check.n_few == 10
    assert "overfit_check" not in compose(["experiment=lens_smoke"]).callbacks
