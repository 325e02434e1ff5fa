"""Seed 000's nets and module: shapes and parameter counts, subtask features, head training, MC-Dropout."""

from __future__ import annotations

import functools

import numpy as np
import pytest
import torch
from torch import nn

from analysis.calibration import ece, probabilities_from_logits
from analysis.calibration import fit_temperature_ece_grid
from lightning_modules.clip_subtask.module import ClipSubtaskModule, train_subtask_heads
from lightning_modules.mc_dropout import MCDropout, summarize
from lightning_modules.clip_subtask.nets import MetaLearner, SubtaskMetaNet

SUBTASKS = {"superclass": 2, "brightness": 3, "complexity": 3}


pytestmark = pytest.mark.usefixtures("one_thread")  # tests/conftest.py


def net(features: str = "class", embed_dim: int = 512) -> SubtaskMetaNet:
    torch.manual_seed(0)
    return SubtaskMetaNet(embed_dim, SUBTASKS, subtask_features=features)


def module(embed_dim: int = 16) -> ClipSubtaskModule:
    return ClipSubtaskModule(
        net(embed_dim=embed_dim), subtask_training={"max_epochs": 5, "patience": 2, "batch_size": 32, "lr": 1e-2, "weight_decay": 0},
        optimizer=functools.partial(torch.optim.Adam, lr=1e-3),
    )


def test_meta_learner_on_515_inputs_has_the_seed_shape_and_parameter_count():
    model = net()
    assert model.meta_in_dim == 515
    linears = [m for m in model.meta.modules() if isinstance(m, nn.Linear)]
    assert [(m.in_features, m.out_features) for m in linears] == [(515, 384), (384, 384), (384, 384), (384, 384), (384, 10)]
    assert sum(isinstance(m, nn.BatchNorm1d) for m in model.meta.modules()) == 4
    assert [m.p for m in model.meta.modules() if isinstance(m, nn.Dropout)] == [0.3] * 4
    # by hand: Linear(515,384) + 3 x Linear(384,384) + 4 x BatchNorm(384) (weight, bias) + Linear(384,10)
    expected = (515 * 384 + 384) + 3 * (384 * 384 + 384) + 4 * 2 * 384 + (384 * 10 + 10)
    assert sum(p.numel() for p in model.meta.parameters()) == expected == 648_586
    # one Linear per head: 512 -> 2, 512 -> 3, 512 -> 3
    assert sum(p.numel() for p in model.heads.parameters()) == 513 * 2 + 513 * 3 + 513 * 3
    assert model(torch.randn(7, 512)).shape == (7, 10)


def test_meta_input_is_the_embedding_then_one_predicted_class_per_subtask():
    model = net()
    x = torch.randn(5, 512)
    logits = model.subtask_logits(x)
    inp = model.meta_input(x, logits)
    assert inp.shape == (5, 515)
    assert torch.equal(inp[:, :512], x)
    expected = torch.stack([logits[n].argmax(-1).float() for n in ("superclass", "brightness", "complexity")], dim=1)
    assert torch.equal(inp[:, 512:], expected)


def test_probability_features_are_softmaxes():
    model = net("probs")
    assert model.meta_in_dim == 512 + 8
    x = torch.randn(4, 512)
    inp = model.meta_input(x, model.subtask_logits(x))
    assert torch.allclose(inp[:, 512:514].sum(1), torch.ones(4)) and torch.allclose(inp[:, 514:517].sum(1), torch.ones(4))
    with pytest.raises(ValueError, match="subtask_features"):
        SubtaskMetaNet(512, SUBTASKS, subtask_features="logits")


def test_only_the_meta_learner_is_trainable_and_heads_stay_in_eval_mode():
    m = module()
    trainable = {id(p) for p in m.trainable_parameters()}
    assert trainable == {id(p) for p in m.net.meta.parameters()}
    assert all(not p.requires_grad for p in m.net.heads.parameters())
    m.train()
    assert not m.net.heads.training and m.net.meta.training
    assert m.build_optimizer().param_groups[0]["params"].__len__() == len(list(m.net.meta.parameters()))


def test_subtask_heads_learn_separable_labels_and_keep_their_best_epoch():
    torch.manual_seed(0)
    x = torch.randn(400, 16)
    labels = {"superclass": (x[:, 0] > 0).long(), "brightness": torch.bucketize(x[:, 1].contiguous(), torch.tensor([-0.4, 0.4])),
              "complexity": torch.randint(0, 3, (400,))}  # noise: a head that cannot learn
    data = {"embedding": x, **labels}
    train = {k: v[:300] for k, v in data.items()}
    val = {k: v[300:] for k, v in data.items()}
    model = net(embed_dim=16)
    before = {k: v.clone() for k, v in model.meta.state_dict().items()}
    history = train_subtask_heads(model, train, val, max_epochs=40, patience=3, batch_size=32, lr=3e-2, weight_decay=0, seed=0)
    best_super = max(r["superclass_val_accuracy"] for r in history if not np.isnan(r["superclass_val_accuracy"]))
    with torch.no_grad():
        acc = {n: float((model.heads[n](val["embedding"]).argmax(-1) == val[n]).float().mean()) for n in SUBTASKS}
    assert acc["superclass"] > 0.9 and acc["brightness"] > 0.8
    assert acc["superclass"] == pytest.approx(best_super)  # restored to its best epoch
    assert len(history) < 40  # every head stopped early (the noise head first)
    assert all(torch.equal(before[k], v) for k, v in model.meta.state_dict().items())  # the meta-learner is untouched
    assert all(not p.requires_grad for p in model.heads.parameters())


def test_mc_dropout_samples_dropout_but_keeps_batchnorm_on_running_statistics():
    m = module()
    bn = [x for x in m.modules() if isinstance(x, nn.BatchNorm1d)]
    for layer in bn:  # running statistics far from a batch's own: batch statistics would change the outputs
        layer.running_mean.fill_(-3.0)
        layer.running_var.fill_(9.0)
    batch = {"embedding": torch.randn(6, 16), "index": torch.arange(6), "target": torch.zeros(6, dtype=torch.long)}
    mc = MCDropout(m, n_passes=25)
    running = [layer.running_mean.clone() for layer in bn]
    samples = mc.sample(batch)
    assert samples.shape == (25, 6, 10)
    assert samples.std(0).max() > 0  # dropout sampled
    assert all(torch.equal(layer.running_mean, r) for layer, r in zip(bn, running))  # running stats not updated
    # the mean over many passes approaches the deterministic eval output (BatchNorm in eval mode), not the
    # output with BatchNorm on batch statistics
    m.eval()
    with torch.no_grad():
        eval_out = m.batch_outputs(batch)
        m.train()
        for mod in m.modules():
            if isinstance(mod, nn.Dropout):
                mod.eval()
        batch_stats_out = m.batch_outputs(batch)
    m.eval()
    many = MCDropout(m, n_passes=400).sample(batch).mean(0)
    assert (many - eval_out).abs().mean() < (many - batch_stats_out).abs().mean()
    mean, std = summarize("multiclass", samples)
    assert mean.shape == (6, 10) and std.shape == (6,)
    assert not m.training


def test_ece_grid_temperature_matches_a_brute_force_search():
    rng = np.random.default_rng(0)
    logits = rng.normal(0, 3, size=(300, 4))
    targets = np.where(rng.random(300) < 0.7, logits.argmax(1), rng.integers(0, 4, 300))
    grid = np.linspace(0.5, 3.0, 26)
    t, value = fit_temperature_ece_grid(logits, targets, grid)
    brute = [ece(probabilities_from_logits(logits, g), targets, 15) for g in grid]
    assert value == pytest.approx(min(brute))
    assert t == pytest.approx(grid[int(np.argmin(brute))])
    with pytest.raises(ValueError):
        fit_temperature_ece_grid(logits, targets, np.array([0.0, 1.0]))


def test_meta_learner_defaults_follow_the_seed():
    m = MetaLearner(515)
    assert isinstance(m.layers[-1], nn.Linear) and m.layers[-1].out_features == 10


def test_a_resumed_run_does_not_train_the_heads_again(monkeypatch):
    import lightning_modules.clip_subtask.module as mod

    trained = module()
    assert "heads_trained" in trained.state_dict()  # saved in every checkpoint
    trained.heads_trained.fill_(True)
    resumed = module()
    resumed.load_state_dict(trained.state_dict())
    assert bool(resumed.heads_trained)
    calls = []
    monkeypatch.setattr(mod, "train_subtask_heads", lambda *a, **k: calls.append(1) or [])

    class Data:
        embed_dim, seed = 16, 0

    class Trainer:
        datamodule = Data()

    resumed.trainer = Trainer()
    resumed.on_fit_start()
    assert calls == []
    Data.embed_dim = 32  # embeddings of another size than the net expects: refused by name
    with pytest.raises(ValueError, match="embed_dim=16"):
        resumed.on_fit_start()
