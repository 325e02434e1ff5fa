"""The audio family's test sizes: as audio_smoke, a few dozen clips and a 20-step pretext."""

from __future__ import annotations

from pathlib import Path


def tiny_overrides(data_dir: Path) -> list[str]:
    return ["data.batch_size=8", "data.simulation.n_speakers=6", "data.simulation.clips_per_speaker=4",
            "data.simulation.n_sources=7", "data.simulation.clips_per_source=3", "data.simulation.test_fraction=0.3",
            "data.test_fraction=0.3", "data.dev_fraction=0.3", "model.net.pretext.steps=20"]
