"""The lens family's test sizes: the toy lens manifest (noise stamps with a ring) and small batches."""

from __future__ import annotations

from pathlib import Path


def tiny_overrides(data_dir: Path) -> list[str]:
    """Overrides that run any lens experiment on tiny data (built once under data_dir)."""
    from tests.helpers import write_toy_lens_data

    manifest = data_dir / "manifest.parquet"
    if not manifest.exists():
        write_toy_lens_data(data_dir)
    return [f"data.manifest_path={manifest}", "data.batch_size=16"]
