"""Puzzle nets and modules: the seed's parameter counts and shapes, losses and metrics by hand."""

from __future__ import annotations

import hydra
import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torchmetrics.classification import MulticlassAccuracy

from lightning_modules.puzzle.nets import LargerBackbone, TimmBackbone, count_parameters
from lightning_modules.puzzle.module import CellAccuracy, MeanCellDistance, TopKAccuracy
from tests.conftest import compose

# seed 002's architecture table (the deep head and the regressor follow from our configs' choices)
PARAMS = {"puzzle_exp3": 85_334, "puzzle_exp4": 632_566, "puzzle_exp3_deep": 284_374, "puzzle_exp3_regression": 23_714}


def model_of(experiment: str, *overrides: str) -> nn.Module:
    cfg = compose([f"experiment={experiment}", *overrides])
    return hydra.utils.instantiate(cfg.model)


@pytest.mark.parametrize("experiment", sorted(PARAMS))
def test_parameter_counts_from_the_configs(experiment):
    module = model_of(experiment)
    assert count_parameters(module.net) == PARAMS[experiment]
    assert not any(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in module.net.modules())
    for conv in (m for m in module.net.modules() if isinstance(m, nn.Conv2d)):
        assert conv.kernel_size == (3, 3) and conv.stride == (2, 2) and conv.bias is not None


def test_exp3_count_by_hand():
    # conv(3->16) + conv(16->32) + conv(32->64) + Linear(64->950)
    by_hand = (3 * 9 * 16 + 16) + (16 * 9 * 32 + 32) + (32 * 9 * 64 + 64) + (64 * 950 + 950)
    assert by_hand == 85_334 == count_parameters(model_of("puzzle_exp3").net)


def test_exp4_feature_maps_follow_the_seed():
    net = LargerBackbone(950, channels=[32, 64, 128, 256], kernel_size=3, stride=2)
    shapes = []
    for m in net.features:
        if isinstance(m, nn.Conv2d):
            m.register_forward_hook(lambda mod, inp, out: shapes.append(tuple(out.shape[1:])))
    out = net(torch.zeros(2, 3, 64, 64))
    assert shapes == [(32, 32, 32), (64, 16, 16), (128, 8, 8), (256, 4, 4)]
    assert out.shape == (2, 950)


def test_rotation_head_adds_four_outputs():
    module = model_of("puzzle_rotation")
    assert module.net(torch.zeros(2, 3, 64, 64)).shape == (2, 950 + 4)
    assert count_parameters(module.net) == PARAMS["puzzle_exp4"] + 256 * 4 + 4


@pytest.mark.parametrize("k", [1, 5])
def test_topk_accuracy_matches_torchmetrics(k):
    gen = torch.Generator().manual_seed(k)
    ours, ref = TopKAccuracy(k), MulticlassAccuracy(num_classes=50, top_k=k, average="micro")
    for _ in range(3):
        logits, target = torch.randn(40, 50, generator=gen), torch.randint(0, 50, (40,), generator=gen)
        ours.update(logits, target)
        ref.update(logits, target)
    assert torch.isclose(ours.compute(), ref.compute())
    # by hand: the target ranks 3rd in the first row and 1st in the second
    hand = TopKAccuracy(k)
    hand.update(torch.tensor([[0.1, 0.5, 0.3, 0.9], [0.9, 0.1, 0.2, 0.3]]), torch.tensor([2, 0]))
    assert hand.compute().item() == (0.5 if k == 1 else 1.0)


def test_regression_metrics_by_hand():
    dist, acc = MeanCellDistance(), CellAccuracy(cols=4, rows=3)
    preds = torch.tensor([[3.0, 4.0], [1.2, 0.9], [4.4, -0.7]])
    target = torch.tensor([[0.0, 0.0], [1.0, 1.0], [3.0, 0.0]])
    dist.update(preds, target)
    acc.update(preds, target)
    assert dist.compute().item() == pytest.approx((5.0 + (0.2**2 + 0.1**2) ** 0.5 + (1.4**2 + 0.7**2) ** 0.5) / 3)
    assert acc.compute().item() == pytest.approx(2 / 3)  # the third is beyond the corner: placed in cell (3, 0)


def test_regressor_targets_loss_and_cells():
    module = model_of("puzzle_exp3_regression")
    assert (module.monitor, module.mode) == ("val/mean_distance", "min")
    # an output of ((c + 0.5) / cols, (r + 0.5) / rows) is exactly cell (c, r)
    target = torch.tensor([[2.0, 1.0], [37.0, 24.0]])
    out = (target + 0.5) / torch.tensor([38.0, 25.0])
    batch = {"target": target}
    assert module.compute_loss(out, batch).item() == pytest.approx(0.0, abs=1e-12)
    assert module.correct_predictions(out, batch).all()
    assert module.predicted_cells(out).tolist() == [1 * 38 + 2, 24 * 38 + 37]
    with pytest.raises(ValueError, match="data.target=coords"):
        module.compute_loss(out, {"target": torch.tensor([3, 4])})


def test_classifier_loss_metrics_and_bad_targets():
    module = model_of("puzzle_exp3")
    assert (module.monitor, module.mode) == ("val/top1", "max")
    logits = torch.randn(4, 950)
    target = torch.tensor([0, 5, 949, 7])
    assert module.compute_loss(logits, {"target": target}).item() == pytest.approx(F.cross_entropy(logits, target).item())
    with pytest.raises(ValueError, match="data.target=cell"):
        module.compute_loss(logits, {"target": target.float()[:, None].repeat(1, 2)})


def test_rotation_loss_and_metrics_by_hand():
    module = model_of("puzzle_rotation")
    cell_logits, rot_logits = torch.randn(3, 950), torch.randn(3, 4)
    logits = torch.cat([cell_logits, rot_logits], 1)
    cell = cell_logits.argmax(1)
    k = rot_logits.argmax(1)
    k[1] = (k[1] + 1) % 4  # the second sample's rotation is wrong
    target = torch.stack([cell, k], 1)
    expected = F.cross_entropy(cell_logits, cell) + F.cross_entropy(rot_logits, k)
    assert module.compute_loss(logits, {"target": target}).item() == pytest.approx(expected.item(), rel=1e-6)
    assert module.correct_predictions(logits, {"target": target}).tolist() == [True, False, True]
    metrics = module.val_metrics
    metrics.update(logits, target)
    out = metrics.compute()
    assert out["val/top1"].item() == 1.0 and out["val/rotation_acc"].item() == pytest.approx(2 / 3)
    with pytest.raises(ValueError, match="data.rotation=true"):
        module.compute_loss(logits, {"target": cell})


def test_resnet18_option_random_and_local_weights(tmp_path):
    import timm

    module = model_of("puzzle_exp3", "model=puzzle_resnet18")
    assert isinstance(module.net, TimmBackbone)
    assert module.net(torch.zeros(1, 3, 64, 64)).shape == (1, 950)
    with pytest.raises(Exception, match="model.net.pretrained_path"):  # hydra wraps the ValueError
        model_of("puzzle_exp3", "model=puzzle_resnet18", f"model.net.pretrained_path={tmp_path / 'missing.pth'}")
    # a local ImageNet-style file (with its 1000-class fc) is loaded and its classifier dropped
    reference = timm.create_model("resnet18", pretrained=False, num_classes=1000)
    torch.save(reference.state_dict(), tmp_path / "resnet18.pth")
    loaded = TimmBackbone(950, "resnet18", pretrained_path=str(tmp_path / "resnet18.pth"))
    assert torch.equal(loaded.features.conv1.weight, reference.conv1.weight)
