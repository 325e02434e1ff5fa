"""The lens family's test sizes: the toy lens manifest (noise stamps with a ring) and small batches."""

from __future__ import annotations

from pathlib import Path


#: timm's own small ResNet for tests (370k parameters, about 4x faster to train than ResNet18 here): the
#: lens code paths at test size; tests/test_configs.py checks the experiments themselves name ResNet18
TEST_NET = ["model.net.model_name=test_resnet"]


def tiny_overrides(data_dir: Path) -> list[str]:
    """Overrides that run any lens experiment on tiny data (built once under data_dir)."""
    from tests.helpers import write_toy_lens_data

    manifest = data_dir / "manifest.parquet"
    if not manifest.exists():
        write_toy_lens_data(data_dir)
    return [f"data.manifest_path={manifest}", "data.batch_size=16", *TEST_NET]
