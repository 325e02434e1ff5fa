"""MC-Dropout wrapper: batched passes, BatchNorm frozen, statistics of the passes."""

import pytest
import torch
from torch import nn

from lightning_modules.mc_dropout import MCDropout


class _Net(nn.Module):
    def __init__(self, p: float = 0.3, classes: int = 3):
        super().__init__()
        self.body = nn.Sequential(nn.Linear(8, 32), nn.BatchNorm1d(32), nn.ReLU(), nn.Dropout(p))
        self.head = nn.Linear(32, classes)
        self.calls = 0

    def forward(self, x):
        self.calls += 1
        out = self.head(self.body(x))
        return out.squeeze(-1) if out.shape[-1] == 1 else out


def test_passes_are_batched_and_stochastic():
    torch.manual_seed(0)
    net = _Net()
    net.eval()
    mc = MCDropout(net, n_passes=25)
    x = torch.randn(10, 8)
    logits = mc.sample_logits(x)
    assert logits.shape == (25, 10, 3)
    assert net.calls == 1                      # one forward for all 25 passes
    assert not torch.allclose(logits[0], logits[1])
    assert not net.training                    # mode restored
    bn = net.body[1]
    assert bn.num_batches_tracked == 0         # BatchNorm stayed in eval mode: running stats untouched


def test_mean_and_std_match_the_passes_multiclass():
    torch.manual_seed(1)
    net = _Net()
    mc = MCDropout(net, n_passes=40)
    x = torch.randn(6, 8)
    torch.manual_seed(2)
    mean, std = mc(x)
    torch.manual_seed(2)
    probs = torch.softmax(mc.sample_logits(x), dim=-1)
    assert torch.allclose(mean, probs.mean(0), atol=1e-6)
    pred = probs.mean(0).argmax(-1)
    expected = probs[:, torch.arange(6), pred].std(0)  # sample std (unbiased) of the predicted class
    assert torch.allclose(std, expected, atol=1e-6)
    assert torch.allclose(mean.sum(-1), torch.ones(6))


def test_binary_and_chunked_passes():
    torch.manual_seed(3)
    net = _Net(classes=1)
    mc = MCDropout(net, n_passes=30, max_batch=7)  # forces several chunks
    mean, std = mc(torch.randn(5, 8))
    assert mean.shape == (5,) and std.shape == (5,)
    assert ((mean > 0) & (mean < 1)).all() and (std > 0).all()


def test_zero_dropout_is_refused_and_deterministic_without_dropout():
    with pytest.raises(ValueError, match="no dropout layer"):
        MCDropout(_Net(p=0.0))
    with pytest.raises(ValueError, match="n_passes"):
        MCDropout(_Net(), n_passes=1)
