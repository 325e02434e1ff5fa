"""The CLIP family's test sizes: as clip_subtask_smoke, scikit-learn's 8 x 8 digits and a one-epoch tiny CLIP."""

from __future__ import annotations

from pathlib import Path


def tiny_overrides(data_dir: Path) -> list[str]:
    return ["data.source=sklearn_digits", "data.split.val_size=200", "data.split.test_size=300",
            "data.clip.tiny.pretrain.epochs=1", "model.subtask_training.max_epochs=3", "callbacks.mc_dropout.n_passes=5"]
