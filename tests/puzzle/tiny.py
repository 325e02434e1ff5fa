"""The puzzle family's test sizes: the default puzzle is small already; no overfit check."""

from __future__ import annotations

from pathlib import Path


def tiny_overrides(data_dir: Path) -> list[str]:
    return ["data.batch_size=32", "callbacks.overfit_check=null"]
