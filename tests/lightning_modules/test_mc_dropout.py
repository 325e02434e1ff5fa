"""MC-Dropout wrapper: batched passes, BatchNorm frozen, statistics of the passes for every output kind."""

import pytest
import torch
from torch import nn
from torchmetrics import MetricCollection

from lightning_modules.base import BaseTask
from lightning_modules.mc_dropout import MCDropout, summarize
from tests.helpers import adamw


class _Net(nn.Module):
    def __init__(self, p: float = 0.3, out: int = 3):
        super().__init__()
        self.body = nn.Sequential(nn.Linear(8, 32), nn.BatchNorm1d(32), nn.ReLU(), nn.Dropout(p))
        self.head = nn.Linear(32, out)
        self.calls = 0

    def forward(self, x, extra=None):
        self.calls += 1
        return self.head(self.body(x if extra is None else x + extra))


def _task(kind: str, p: float = 0.3, out: int = 3, keys=("x",)):
    class _Task(BaseTask):
        input_keys = keys
        output_kind = kind
        target_names = ("u", "v") if kind == "regression" else ()

        def configure_metrics(self):
            return MetricCollection({})

        def forward(self, inputs):
            y = self.net(**inputs)
            if kind == "binary":
                return y[:, 0]
            if kind == "regression" and out == 4:
                return torch.stack([y[:, :2], nn.functional.softplus(y[:, 2:]) + 0.1], dim=-1)
            return y

    return _Task(_Net(p, out), adamw())


def _batch(n: int = 10, keys=("x",)):
    return {**{k: torch.randn(n, 8) for k in keys}, "index": torch.arange(n), "target": torch.zeros(n)}


def test_passes_are_batched_stochastic_and_batchnorm_stays_in_eval_mode():
    torch.manual_seed(0)
    task = _task("multiclass")
    task.eval()
    mc = MCDropout(task, n_passes=25)
    samples = mc.sample(_batch())
    assert samples.shape == (25, 10, 3)
    assert task.net.calls == 1                 # one forward for all 25 passes
    assert not torch.allclose(samples[0], samples[1])
    assert not task.training and not task.net.body[3].training   # modes restored
    assert task.net.body[1].num_batches_tracked == 0   # BatchNorm used running stats, never batch stats


def test_dict_inputs_are_repeated_together():
    torch.manual_seed(0)
    task = _task("multiclass", keys=("x", "extra"))
    batch = _batch(4, keys=("x", "extra"))
    samples = MCDropout(task, n_passes=5).sample(batch)
    assert samples.shape == (5, 4, 3)
    task.eval()
    with torch.no_grad():
        plain = task.batch_outputs(batch)
    # without dropout noise the passes would all equal the plain output: check their mean is close-ish and shapes agree
    assert plain.shape == samples.shape[1:]


def test_multiclass_mean_and_std_match_the_passes():
    torch.manual_seed(1)
    task = _task("multiclass")
    mc = MCDropout(task, n_passes=40)
    batch = _batch(6)
    torch.manual_seed(2)
    mean, std = mc(batch)
    torch.manual_seed(2)
    probs = torch.softmax(mc.sample(batch), dim=-1)
    assert torch.allclose(mean, probs.mean(0), atol=1e-6)
    pred = probs.mean(0).argmax(-1)
    expected = probs[:, torch.arange(6), pred].std(0)  # sample std (unbiased) of the predicted class
    assert torch.allclose(std, expected, atol=1e-6)
    assert torch.allclose(mean.sum(-1), torch.ones(6))


def test_binary_and_chunked_passes():
    torch.manual_seed(3)
    task = _task("binary", out=1)
    mc = MCDropout(task, n_passes=30, max_batch=7)  # forces several chunks (one pass of 5 per forward)
    mean, std = mc(_batch(5))
    assert task.net.calls == 30
    assert mean.shape == (5,) and std.shape == (5,)
    assert ((mean > 0) & (mean < 1)).all() and (std > 0).all()


def test_regression_summaries_by_hand():
    # point regression: mean and sample std over passes
    samples = torch.tensor([[[1.0, 10.0]], [[3.0, 14.0]]])  # (2 passes, 1 sample, 2 targets)
    mean, std = summarize("regression", samples)
    assert torch.allclose(mean, torch.tensor([[2.0, 12.0]]))
    assert torch.allclose(std, torch.tensor([[2**0.5, 8**0.5]]))
    # with uncertainty: total std = sqrt(mean of variances + variance of means)
    samples = torch.tensor([[[[1.0, 1.0]]], [[[3.0, 2.0]]]])  # (2, 1, 1, [mean, std])
    mean, std = summarize("regression", samples)
    assert torch.allclose(mean, torch.tensor([[2.0]]))
    assert torch.allclose(std, torch.tensor([[((1 + 4) / 2 + 2.0) ** 0.5]]))


def test_regression_with_uncertainty_module():
    torch.manual_seed(4)
    task = _task("regression", out=4)
    mean, std = MCDropout(task, n_passes=20)(_batch(3))
    assert mean.shape == (3, 2) and std.shape == (3, 2) and (std > 0.1).all()


def test_zero_dropout_is_refused():
    with pytest.raises(ValueError, match="no dropout layer"):
        MCDropout(_task("multiclass", p=0.0))
    with pytest.raises(ValueError, match="n_passes"):
        MCDropout(_task("multiclass"), n_passes=1)
