"""Each family's test sizes, found by name: ``tests/<family>/tiny.py`` defines ``tiny_overrides(data_dir)``.

A family is named by its data config's ``_target_`` (``datamodules.<family>....``), so adding a family
adds its own tiny.py and edits nothing here.
"""

from __future__ import annotations

import importlib
from pathlib import Path

from omegaconf import DictConfig, OmegaConf

_ABSENT = object()


def family_of(cfg: DictConfig) -> str | None:
    """The family of a composed train config: ``datamodules.<family>.…`` of its data ``_target_``."""
    target = str(OmegaConf.select(cfg, "data._target_", default="") or "")
    parts = target.split(".")
    return parts[1] if len(parts) > 2 and parts[0] == "datamodules" else None


def tiny_overrides(cfg: DictConfig, data_root: Path) -> list[str]:
    """The family's tiny overrides for a composed config, limited to keys the config has.

    Only keys the experiment has are kept, so one list serves every experiment of a family. A family
    without tests/<family>/tiny.py runs as it is.
    """
    family = family_of(cfg)
    if family is None:
        return []
    try:
        module = importlib.import_module(f"tests.{family}.tiny")
    except ModuleNotFoundError:
        return []
    overrides = module.tiny_overrides(data_root / family)
    return [o for o in overrides if OmegaConf.select(cfg, o.split("=", 1)[0].lstrip("+"), default=_ABSENT) is not _ABSENT]
