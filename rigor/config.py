"""Config plumbing shared by train.py and evaluate.py: resolvers and building objects from a config."""

from __future__ import annotations

import logging
import os
import secrets
from datetime import datetime
from pathlib import Path
from typing import Any

import hydra
from lightning.pytorch.callbacks import Callback
from lightning.pytorch.loggers import Logger
from omegaconf import DictConfig, OmegaConf

log = logging.getLogger(__name__)

REPO_ROOT = Path(__file__).resolve().parents[1]
_UID = f"{os.getpid():x}{secrets.token_hex(2)}"


def _ddp_strategy() -> str:
    # Under SLURM with one task per GPU (srun started the processes) Lightning must not spawn more;
    # locally, `-m` sweeps need ddp_spawn because plain ddp re-launches the whole sweep in each child.
    return "ddp" if int(os.environ.get("SLURM_NTASKS", "1")) > 1 else "ddp_spawn"


def register_resolvers() -> None:
    """Register Rigor's OmegaConf resolvers (idempotent).

    - ``${repo_root:}``: the checkout's root directory.
    - ``${run_uid:}``: a per-process unique token (pid + random), so two sweeps started in the same
      second get different directories. Cached, so every reference in one run agrees.
    - ``${ddp_strategy:}``: ``ddp`` under a multi-task SLURM job, ``ddp_spawn`` elsewhere.
    - ``${hydra_subdir:<output dir>}``: where Hydra saves this start's config (never over the first one's).
    - ``${model_monitor:<target>}`` / ``${model_mode:<target>}``: the module class's monitor and mode,
      so early stopping watches the same metric as checkpointing.
    """
    if not OmegaConf.has_resolver("repo_root"):
        OmegaConf.register_new_resolver("repo_root", lambda: str(REPO_ROOT))
    if not OmegaConf.has_resolver("run_uid"):
        OmegaConf.register_new_resolver("run_uid", lambda: _UID, use_cache=True)
    if not OmegaConf.has_resolver("ddp_strategy"):
        OmegaConf.register_new_resolver("ddp_strategy", _ddp_strategy)
    if not OmegaConf.has_resolver("hydra_subdir"):
        OmegaConf.register_new_resolver("hydra_subdir", _hydra_subdir)
    if not OmegaConf.has_resolver("model_monitor"):
        OmegaConf.register_new_resolver("model_monitor", lambda target: _module_class(target).monitor)
        OmegaConf.register_new_resolver("model_mode", lambda target: _module_class(target).mode)


def _hydra_subdir(output_dir: str) -> str:
    """``.hydra`` for a run's first start, ``.hydra/restarts/<time>`` once that holds a config."""
    if (Path(output_dir) / ".hydra" / "config.yaml").exists():
        return f".hydra/restarts/{datetime.now():%Y-%m-%d_%H-%M-%S-%f}"
    return ".hydra"


def _module_class(target: str) -> type:
    """The LightningModule class named by a model config's _target_ (its monitor/mode live there)."""
    return hydra.utils.get_class(target)


def instantiate_dict(cfg: DictConfig | None, kind: type, what: str, **kwargs: Any) -> list[Any]:
    """Instantiate every entry of a config dict that has a ``_target_`` (null entries are switched off)."""
    objects: list[Any] = []
    if not cfg:
        return objects
    for name, conf in cfg.items():
        if conf is None:
            continue
        if not isinstance(conf, DictConfig) or "_target_" not in conf:
            raise ValueError(f"{what}.{name}: expected a config with a _target_, got {conf!r}")
        obj = hydra.utils.instantiate(conf, **kwargs)
        if not isinstance(obj, kind):
            raise TypeError(f"{what}.{name}: {conf._target_} is not a {kind.__name__}")
        if hasattr(obj, "summary_name"):
            obj.summary_name = str(name)  # summaries and checkpoint state are keyed by the config name
        objects.append(obj)
    return objects


def instantiate_callbacks(cfg: DictConfig | None) -> list[Callback]:
    return instantiate_dict(cfg, Callback, "callbacks")


def instantiate_loggers(cfg: DictConfig | None) -> list[Logger]:
    return instantiate_dict(cfg, Logger, "logger")
