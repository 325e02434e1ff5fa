"""BaseTask: the contract's checks, the optimizer it builds, and one step of each output kind."""

from __future__ import annotations

from functools import partial

import pytest
import torch
from torch import nn
from torchmetrics import MeanSquaredError, MetricCollection
from torchmetrics.classification import MulticlassAccuracy

from lightning_modules.base import BaseTask
from tests.helpers import adamw
from tests.toy_family.toy import ToyBinary, ToyRegression


class _Multi(BaseTask):
    input_keys = ("x",)
    output_kind = "multiclass"

    def configure_metrics(self):
        return MetricCollection({"acc": MulticlassAccuracy(num_classes=3, average="micro")})

    def compute_loss(self, outputs, batch):
        return nn.functional.cross_entropy(outputs, batch["target"])


def _batch(n=4):
    return {"x": torch.randn(n, 4), "aux": torch.randn(n, 3), "target": torch.zeros(n), "index": torch.arange(n)}


def test_a_module_must_declare_inputs_kind_and_targets():
    class NoInputs(BaseTask):
        pass

    with pytest.raises(TypeError, match="declare input_keys"):
        NoInputs(nn.Linear(4, 3), adamw())

    class BadKind(_Multi):
        output_kind = "ranking"

    with pytest.raises(TypeError, match="output_kind must be one of"):
        BadKind(nn.Linear(4, 3), adamw())

    class NoNames(_Multi):
        output_kind = "regression"

    with pytest.raises(TypeError, match="names its targets"):
        NoNames(nn.Linear(4, 3), adamw())
    with pytest.raises(TypeError, match="partial optimizer config"):
        _Multi(nn.Linear(4, 3), {"lr": 1e-3})
    with pytest.raises(KeyError, match=r"consumes \['x'\] but the batch has no \['x'\]"):
        _Multi(nn.Linear(4, 3), adamw()).batch_outputs({"image": torch.zeros(1, 4), "index": torch.arange(1)})


def _quiet(task: BaseTask) -> BaseTask:
    """Outside a Trainer, self.log has nowhere to go: drop the calls."""
    task.log = lambda *a, **k: None
    task.log_dict = lambda *a, **k: None
    return task


def test_each_output_kind_steps_and_keeps_outputs_by_index():
    torch.manual_seed(0)
    multi = _quiet(_Multi(nn.Linear(4, 3), adamw()))
    batch = {"x": torch.randn(5, 4), "target": torch.tensor([0, 1, 2, 1, 0]), "index": torch.tensor([4, 3, 2, 1, 0])}
    multi._step(batch, "val")
    out = multi.epoch_outputs("val")
    assert out["index"].tolist() == [0, 1, 2, 3, 4] and out["outputs"].shape == (5, 3)
    with torch.no_grad():
        expected = multi.net(batch["x"])
    assert torch.allclose(out["outputs"][0], expected[4])  # sorted by index
    binary = ToyBinary(adamw())
    b = {**_batch(), "target": torch.tensor([0.0, 1.0, 0.0, 1.0])}
    assert binary.batch_outputs(b).shape == (4,)
    assert binary.correct_predictions(torch.tensor([1.0, -1.0, -2.0, 3.0]), b).tolist() == [False, False, True, True]
    reg = _quiet(ToyRegression(adamw()))
    r = {**_batch(), "target": torch.randn(4, 2)}
    outputs = reg.batch_outputs(r)
    assert outputs.shape == (4, 2, 2) and (outputs[..., 1] > 0).all()  # mean and a positive std per target
    assert torch.isfinite(reg._step(r, "train"))


def _optimizer(task: BaseTask):
    class _Trainer:
        max_epochs = 3

    task._trainer = _Trainer()  # what configure_optimizers may read
    return task.configure_optimizers()


def test_optimizer_sees_only_trainable_parameters_and_the_scaled_lr():
    task = _Multi(nn.Sequential(nn.Linear(4, 8), nn.Linear(8, 3)), partial(torch.optim.SGD, lr=0.1),
                  lr_scaling={"base_lr": 1e-3, "base_batch": 128, "batch_size": 256})
    task.net[0].requires_grad_(False)  # a frozen backbone
    opt = _optimizer(task)
    params = [p for g in opt.param_groups for p in g["params"]]
    assert len(params) == 2 and all(p.requires_grad for p in params)
    assert opt.param_groups[0]["lr"] == pytest.approx(2e-3) and task.effective_lr == pytest.approx(2e-3)  # 1e-3 x 256 / 128


def test_warmup_per_step_then_the_schedule():
    sched = partial(torch.optim.lr_scheduler.StepLR, step_size=100, gamma=0.5)
    task = _Multi(nn.Linear(4, 3), partial(torch.optim.SGD, lr=1.0), scheduler=sched, scheduler_interval="step", warmup_steps=3)
    conf = _optimizer(task)
    opt, entry = conf["optimizer"], conf["lr_scheduler"]
    assert entry["interval"] == "step"
    lrs = []
    for _ in range(5):
        lrs.append(opt.param_groups[0]["lr"])
        opt.step()
        entry["scheduler"].step()
    assert lrs[:4] == pytest.approx([0.25, 0.5, 0.75, 1.0]) and lrs[4] == pytest.approx(1.0)
    with pytest.raises(ValueError, match="scheduler_interval=step"):
        _Multi(nn.Linear(4, 3), adamw(), scheduler=sched, scheduler_interval="epoch", warmup_steps=3)


def test_plateau_scheduler_watches_the_monitor():
    task = _Multi(nn.Linear(4, 3), adamw(), scheduler=partial(torch.optim.lr_scheduler.ReduceLROnPlateau, factor=0.5, patience=5))
    conf = _optimizer(task)
    assert conf["lr_scheduler"]["monitor"] == task.monitor and conf["lr_scheduler"]["interval"] == "epoch"


def test_point_regression_metrics_use_the_mean():
    reg = ToyRegression(adamw())
    preds, target = reg.metric_inputs(torch.tensor([[[1.0, 0.5], [2.0, 0.5]]]), {"target": torch.tensor([[1.0, 4.0]])})
    metric = MeanSquaredError()
    metric.update(preds, target)
    assert float(metric.compute()) == pytest.approx((0 + 4) / 2)
