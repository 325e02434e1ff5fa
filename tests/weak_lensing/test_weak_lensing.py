"""Weak-lensing nets and module: the kit's architecture, the seed's two ResNet settings, heads and losses."""

from __future__ import annotations

import functools

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from lightning_modules.weak_lensing.nets import CBAM, ResNetWithAttention, SimpleCNN
from lightning_modules.weak_lensing.module import WeakLensingRegressor

H, W = 356, 44


def _module(head: str = "direct", loss: str = "nll", net=SimpleCNN) -> WeakLensingRegressor:
    return WeakLensingRegressor(functools.partial(net), H, W, score_scale=1000.0, score_floor=-1.0e6, head=head, loss=loss,
                                optimizer=functools.partial(torch.optim.Adam, lr=2e-4, weight_decay=1e-4))


def test_simple_cnn_is_the_kits() -> None:
    torch.manual_seed(0)
    net = SimpleCNN(H, W, 4)
    convs = [m for m in net.modules() if isinstance(m, nn.Conv2d)]
    assert [(c.out_channels, c.kernel_size, c.stride) for c in convs] == [(16, (5, 5), (2, 2)), (32, (3, 3), (1, 1)), (64, (3, 3), (1, 1)), (128, (3, 3), (1, 1))]
    assert sum(isinstance(m, nn.BatchNorm2d) for m in net.modules()) == 4 and sum(isinstance(m, nn.MaxPool2d) for m in net.modules()) == 4
    fcs = [m for m in net.head if isinstance(m, nn.Linear)]
    assert [f.out_features for f in fcs] == [512, 128, 4]
    assert fcs[0].in_features == 128 * 11 * 1  # 356 x 44 -> /2 (stride) -> /16 (pools) = 11 x 1
    assert [m.p for m in net.head if isinstance(m, nn.Dropout)] == [0.2, 0.1]
    assert net(torch.zeros(3, 1, H, W)).shape == (3, 4)
    with pytest.raises(ValueError, match="downsample"):
        SimpleCNN(178, 22, 2)  # a map downsampled by 8 pools away to nothing


def test_resnet_settings_of_the_seed() -> None:
    reduced = ResNetWithAttention(H, W, 4, n_stages=2, n_cbam=1, dropout=(0.2, 0.1), dtype="float32")
    original = ResNetWithAttention(H, W, 4, n_stages=4, n_cbam=4, dropout=(0.3, 0.2), dtype="float64")
    assert sum(isinstance(m, CBAM) for m in reduced.modules()) == 1
    assert sum(isinstance(m, CBAM) for m in original.modules()) == 4
    assert next(reduced.parameters()).dtype == torch.float32 and next(original.parameters()).dtype == torch.float64
    assert len(reduced.stages) == 2 and len(original.stages) == 4
    # the building check does not move BatchNorm statistics
    assert all(torch.all(m.running_mean == 0) for m in reduced.modules() if isinstance(m, nn.BatchNorm2d))
    x = torch.randn(2, 1, H, W)
    assert reduced(x).dtype == torch.float32 and original(x).dtype == torch.float32 and original(x).shape == (2, 4)
    with pytest.raises(ValueError, match="n_cbam"):
        ResNetWithAttention(H, W, 4, n_stages=2, n_cbam=3)


def test_direct_head_outputs_physical_means_and_positive_sigmas() -> None:
    torch.manual_seed(1)
    m = _module()
    m.label_loc.copy_(torch.tensor([0.3, 0.8]))
    m.label_scale.copy_(torch.tensor([0.1, 0.05]))
    m.eval()
    x = torch.randn(5, 1, H, W)
    raw = m.net(x)
    out = m({"kappa": x})
    assert out.shape == (5, 2, 2) and torch.all(out[..., 1] > 0)
    torch.testing.assert_close(out[..., 0], torch.tensor([0.3, 0.8]) + torch.tensor([0.1, 0.05]) * raw[:, :2])
    torch.testing.assert_close(out[..., 1], torch.tensor([0.1, 0.05]) * (F.softplus(raw[:, 2:]) + 1e-3))


def test_losses_against_hand_written_formulas() -> None:
    m = _module()
    m.label_scale.copy_(torch.tensor([0.1, 0.05]))
    target = torch.tensor([[0.3, 0.8], [0.2, 0.9]])
    mean = torch.tensor([[0.32, 0.79], [0.25, 0.85]])
    std = torch.tensor([[0.02, 0.01], [0.05, 0.03]])
    outputs = torch.stack([mean, std], dim=-1)
    batch = {"target": target, "index": torch.arange(2)}
    z = (mean - target) / m.label_scale
    s = std / m.label_scale
    want_nll = (0.5 * (torch.log(s**2) + z**2 / s**2)).mean()
    torch.testing.assert_close(m.compute_loss(outputs, batch), want_nll)
    score = _module(loss="score")
    score.label_scale.copy_(torch.tensor([0.1, 0.05]))
    torch.testing.assert_close(score.compute_loss(outputs, batch), (z**2 / s**2 + torch.log(s**2)).sum(-1).mean())
    point = _module(head="point", loss="mse")
    point.label_scale.copy_(torch.tensor([0.1, 0.05]))
    torch.testing.assert_close(point.compute_loss(mean, batch), (z**2).mean())
    assert point({"kappa": torch.zeros(2, 1, H, W)}).shape == (2, 2)


def test_bad_head_or_loss_is_refused() -> None:
    with pytest.raises(ValueError, match="model.head"):
        _module(head="mixture")
    with pytest.raises(ValueError, match="does not fit"):
        _module(head="point", loss="nll")
