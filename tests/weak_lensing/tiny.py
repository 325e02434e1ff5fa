"""The weak-lensing family's test sizes: tests/weak_lensing/wl_data.py's maps and short chains."""

from __future__ import annotations

from pathlib import Path


def tiny_overrides(data_dir: Path) -> list[str]:
    from tests.weak_lensing.wl_data import TINY_SHAPE, tiny_wl_manifest

    return [f"data.manifest_path={tiny_wl_manifest(data_dir)}", "callbacks.wl_score.mcmc.n_steps=400",
            "callbacks.wl_score.mcmc.n_trace=4", f"data.map_shape={list(TINY_SHAPE)}"]
