"""The meta-learner without the subtask inputs (``model.net.subtask_features=none``, issue 23's ablation).

No subtask head is built, trained or read: the meta-learner's first layer takes the embedding alone, and a
run's predictions do not move when every subtask label is shuffled (the same run with subtask features
does move: the shuffle reaches the model).
"""

from __future__ import annotations

import functools
import json
import logging

import pandas as pd
import pytest
import torch
from torch import nn

from datamodules.clip_subtask.datamodule import ClipSubtaskDataModule
from lightning_modules.clip_subtask.module import ClipSubtaskModule
from lightning_modules.clip_subtask.nets import SubtaskMetaNet
from tests.clip_subtask.tiny import tiny_overrides
from tests.conftest import compose, train_in_process

SUBTASKS = {"superclass": 2, "brightness": 3, "complexity": 3}
SUBTASK_LABELS = ("superclass", "brightness", "complexity")

pytestmark = pytest.mark.usefixtures("one_thread")  # tests/conftest.py


def test_no_subtasks_net_reads_the_embedding_alone():
    torch.manual_seed(0)
    model = SubtaskMetaNet(512, SUBTASKS, subtask_features="none")
    assert model.meta_in_dim == 512 and model.subtask_names == () and len(model.heads) == 0
    first = next(m for m in model.meta.modules() if isinstance(m, nn.Linear))
    assert (first.in_features, first.out_features) == (512, 384)
    # the seed's arm has 515 inputs: only the first layer differs, by 3 x 384 weights
    seed_arm = SubtaskMetaNet(512, SUBTASKS, subtask_features="class")
    n_meta = sum(p.numel() for p in model.meta.parameters())
    assert sum(p.numel() for p in seed_arm.meta.parameters()) - n_meta == 3 * 384
    assert sum(p.numel() for p in model.parameters()) == n_meta  # no head parameters at all
    x = torch.randn(6, 512)
    assert model.subtask_logits(x) == {}
    assert torch.equal(model.meta_input(x, {}), x)
    model.eval()
    assert torch.equal(model(x), model.meta(x))
    with pytest.raises(ValueError, match="at least one subtask"):
        SubtaskMetaNet(512, {}, subtask_features="class")


def test_no_subtasks_module_optimises_the_meta_learner_only():
    module = ClipSubtaskModule(
        SubtaskMetaNet(16, SUBTASKS, subtask_features="none"),
        subtask_training={"max_epochs": 5, "patience": 2, "batch_size": 32, "lr": 1e-2, "weight_decay": 0},
        optimizer=functools.partial(torch.optim.Adam, lr=1e-3),
    )
    assert {id(p) for p in module.trainable_parameters()} == {id(p) for p in module.net.meta.parameters()}
    assert all(len(split) == 0 for split in module.sub_metrics.values())


def _permute_subtask_labels(monkeypatch):
    """Shuffle every split's subtask labels (a fixed permutation per split) right after the datamodule's setup."""
    setup = ClipSubtaskDataModule.setup

    def shuffled_setup(self, stage=None):
        fresh = not self.frames
        setup(self, stage)
        if fresh:
            for i, dataset in enumerate(self.datasets.values()):
                order = torch.randperm(dataset.n, generator=torch.Generator().manual_seed(100 + i))
                for name in SUBTASK_LABELS:
                    dataset.tensors[name] = dataset.tensors[name][order]

    monkeypatch.setattr(ClipSubtaskDataModule, "setup", shuffled_setup)


def _run(experiment: str, extra: list[str], run_dir, tiny_data_root) -> pd.DataFrame:
    overrides = [f"experiment={experiment}", "debug=fast", "cpu_threads=1", "logger=csv",
                 *tiny_overrides(tiny_data_root / "clip_subtask"), *extra]
    train_in_process(overrides, run_dir)
    return pd.read_csv(run_dir / "predictions_test.csv")


@pytest.mark.slow
def test_no_subtasks_run_ignores_the_subtask_labels(tmp_path, tiny_data_root, monkeypatch, caplog):
    experiment = "clip_subtask_a_no_subtasks"
    cfg = compose([f"experiment={experiment}", *tiny_overrides(tiny_data_root / "clip_subtask")])
    assert cfg.model.net.subtask_features == "none"
    embed_dim = int(cfg.model.net.embed_dim)

    with caplog.at_level(logging.INFO, logger="lightning_modules.clip_subtask.module"):
        plain = _run(experiment, [], tmp_path / "plain", tiny_data_root)
    assert "skipping the head-training stage" in caplog.text and "subtask heads trained" not in caplog.text
    run_dir = tmp_path / "plain"
    assert not (run_dir / "subtask_history.csv").exists()
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert metrics["status"] == "completed" and "test_accuracy" in metrics
    assert not any(n in k for k in metrics for n in SUBTASK_LABELS)  # no head was scored
    state = torch.load(run_dir / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=False)["state_dict"]
    assert not any(".heads." in k for k in state)
    assert tuple(state["net.meta.layers.0.weight"].shape) == (384, embed_dim)  # first layer: the embedding only

    # the same run with every subtask label shuffled: the same predictions, to the bit
    with monkeypatch.context() as m:
        _permute_subtask_labels(m)
        shuffled = _run(experiment, [], tmp_path / "shuffled", tiny_data_root)
    pd.testing.assert_frame_equal(plain, shuffled, check_exact=True)

    # control: with subtask features the same shuffle changes the predictions (the heads learn other labels)
    probs = ["model.net.subtask_features=probs"]
    with_heads = _run("clip_subtask_a", probs, tmp_path / "heads", tiny_data_root)
    with monkeypatch.context() as m:
        _permute_subtask_labels(m)
        with_heads_shuffled = _run("clip_subtask_a", probs, tmp_path / "heads_shuffled", tiny_data_root)
    logits = [c for c in with_heads.columns if c.startswith("logit_")]
    assert not with_heads[logits].equals(with_heads_shuffled[logits])
