"""evaluate.py's predict task: rebuild a run from its saved config and write its predictions file.

    python evaluate.py ckpt_path=<run>/checkpoints/best.ckpt split=test [mc_dropout.enabled=true] [trainer=cpu]

The run's own trainer config is used (GPU and precision apply; ``trainer=<name>`` picks another file of
conf/trainer/), and the checkpoint is restored by Lightning through ``trainer.predict(ckpt_path=...)``,
so a module that saves only its trainable weights (adapters) restores through its own
``load_state_dict``. Writes ``<run>/predictions_<split>.csv`` and ``predictions_<split>.json`` in the
contract of docs/contract.md (analysis/predictions.py).
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import hydra
import lightning as L
import numpy as np
import torch
from omegaconf import DictConfig, OmegaConf

from analysis.calibration import mc_triage, probabilities_from_logits
from analysis.predictions import prediction_table, write_predictions
from callbacks.temperature_scaling import read_temperature
from rigor.config import REPO_ROOT, register_resolvers
from tasks.evaluation import resolve_triage
from rigor.guard import config_of_checkpoint, safe_load, saved_run_config

log = logging.getLogger(__name__)

def run_config(ckpt_path: str | Path, checkpoint: dict[str, Any] | None = None) -> tuple[DictConfig, Path]:
    """The saved config of the run that holds `ckpt_path` (``<run>/checkpoints/<name>.ckpt``) and its directory.

    Every ``_target_`` in it is checked (rigor.config.ALLOWED_TARGETS) before anything is built. Given the
    loaded `checkpoint`, the config is the one its config stamp says it was trained under
    (rigor.guard.config_of_checkpoint); a mismatch with every saved config is an error naming the keys.
    """
    register_resolvers()
    ckpt_path = Path(ckpt_path)
    if not ckpt_path.is_file():
        raise FileNotFoundError(f"ckpt_path: {ckpt_path} does not exist")
    run_dir = ckpt_path.resolve().parent.parent
    config_path = run_dir / ".hydra" / "config.yaml"
    if not config_path.exists():
        raise FileNotFoundError(f"ckpt_path: expected the run's config at {config_path} (checkpoints/ inside a Rigor run directory)")
    if checkpoint is not None:
        return config_of_checkpoint(run_dir, checkpoint, ckpt_path)[0], run_dir
    return saved_run_config(config_path, run_dir), run_dir


def trainer_config(run_cfg: DictConfig, name: str | DictConfig | None) -> DictConfig:
    """The run's trainer config, or conf/trainer/<name>.yaml; one device (prediction needs no DDP).

    Args:
        run_cfg: The run's saved config.
        name: None (the run's own trainer), a conf/trainer name, or the node Hydra composed from
            ``trainer=<name>`` on evaluate.py's command line (evaluate.yaml's defaults list).
    """
    if isinstance(name, DictConfig):
        trainer = OmegaConf.create(OmegaConf.to_container(name))  # not in struct mode: keys are dropped below
    elif name:
        path = REPO_ROOT / "conf" / "trainer" / f"{name}.yaml"
        if not path.is_file():
            choices = sorted(p.stem for p in path.parent.glob("*.yaml"))
            raise ValueError(f"trainer={name!r}: no conf/trainer/{name}.yaml; choose one of {choices}")
        own = OmegaConf.load(path)
        base = OmegaConf.load(path.parent / "default.yaml")
        own.pop("defaults", None)
        trainer = OmegaConf.merge(base, own)
    else:
        trainer = run_cfg.trainer.copy()
    for key in ("sync_batchnorm", "strategy", "limit_predict_batches"):
        trainer.pop(key, None)
    trainer.devices, trainer.num_nodes = 1, 1
    return trainer


def _thresholds(run_cfg: DictConfig) -> dict[str, Any]:
    node = run_cfg.get("thresholds")
    return OmegaConf.to_container(node, resolve=True) if node is not None else {}


def run_predict(cfg: DictConfig) -> dict[str, Any]:
    """Write predictions_<split>.csv/.json of a checkpoint and print the family's metrics.

    Args:
        cfg: ``ckpt_path`` (required), ``split``, ``out_dir``, ``trainer`` (a conf/trainer name or null),
            ``mc_dropout.{enabled, n_passes, review_std, auto_conf, auto_std}``.
    """
    if not cfg.get("ckpt_path"):
        raise ValueError("evaluate: ckpt_path=<run>/checkpoints/best.ckpt is required for task=predict")
    checkpoint = safe_load(cfg.ckpt_path)  # refuses a file that would run code, before Lightning reads it
    run_cfg, run_dir = run_config(cfg.ckpt_path, checkpoint)  # the config its stamp says; targets checked
    split = cfg.get("split") or "test"
    L.seed_everything(int(run_cfg.seed), workers=True)  # MC-Dropout masks are reproducible
    datamodule: L.LightningDataModule = hydra.utils.instantiate(run_cfg.data)
    datamodule.setup("predict")
    if split not in getattr(datamodule, "datasets", {}):
        raise ValueError(f"split={split!r}: the datamodule has {sorted(getattr(datamodule, 'datasets', {}))}")
    module: L.LightningModule = hydra.utils.instantiate(run_cfg.model)
    mc_cfg = cfg.get("mc_dropout") or {}
    n_passes = int(mc_cfg.get("n_passes") or 25) if mc_cfg.get("enabled", False) else 0
    if n_passes:
        from lightning_modules.mc_dropout import MCDropout

        MCDropout(module, n_passes)  # refuses a model without dropout before any work
        module.mc_passes = n_passes
    trainer: L.Trainer = hydra.utils.instantiate(trainer_config(run_cfg, cfg.get("trainer")), logger=False, callbacks=[],
                                                 default_root_dir=str(run_dir), enable_checkpointing=False)
    parts = trainer.predict(module, dataloaders=datamodule.split_dataloader(split), ckpt_path=str(cfg.ckpt_path),
                            weights_only=True)
    merged = {k: torch.cat([p[k] for p in parts]) for k in parts[0]} if parts else {}
    if not merged:
        raise RuntimeError(f"{split}: the split is empty; nothing to predict")
    order = torch.argsort(merged["index"], stable=True)
    merged = {k: v[order] for k, v in merged.items()}
    outputs, target = merged["outputs"], merged["target"]

    metrics = module.configure_metrics()
    metrics.update(*module.metric_inputs(outputs, {"target": target, "index": merged["index"]}))
    values = {k.replace("/", "_"): float(v) for k, v in metrics.compute().items()}
    kind = module.output_kind
    shown = module.prediction_outputs(outputs).numpy()
    # the run's temperature.json beside the checkpoint (old runs: the value inside best.ckpt)
    fit = read_temperature(cfg.ckpt_path, checkpoint)
    temperature = None if fit is None else fit["temperature"]
    probs = probabilities_from_logits(shown, temperature) if temperature is not None and kind != "regression" else None
    mc = (merged["mc_mean"].numpy(), merged["mc_std"].numpy()) if n_passes else None
    frame = datamodule.split_frame(split).iloc[merged["index"].numpy()]
    table = prediction_table(kind, shown, frame, split, getattr(module, "target_names", ()), probs=probs, mc=mc)

    thresholds = _thresholds(run_cfg)
    report: dict[str, Any] = {"kind": kind, "split": split, "target_names": list(getattr(module, "target_names", ())),
                              "n": len(table), "checkpoint": str(cfg.ckpt_path), "experiment": run_cfg.get("experiment_name"),
                              "seed": int(run_cfg.seed), "temperature": temperature, "thresholds": thresholds,
                              "metrics": values}
    if mc is not None:
        report.update({"mc_passes": n_passes, "mc_mean_std": float(np.mean(mc[1]))})
        if kind != "regression":
            found, missing = resolve_triage(mc_cfg, thresholds)
            if missing:
                raise ValueError(f"MC-Dropout triage needs {[f'mc_dropout.{k}' for k in missing]}: the run's config has no "
                                 "thresholds.mc_* (seed 000: review_std 0.35, auto_conf 0.90, auto_std 0.25); give them")
            triage = mc_triage(mc[0], mc[1], **found)
            report.update({f"triage_{k}": v for k, v in triage.items()})
    out_dir = Path(cfg.out_dir) if cfg.get("out_dir") else run_dir
    csv_path = write_predictions(out_dir / f"predictions_{split}.csv", table, report)
    for key, value in report.items():
        if key not in ("thresholds", "metrics"):
            print(f"{key:>24}: {value}")
    for key, value in values.items():
        print(f"{key:>24}: {value}")
    print(f"predictions: {csv_path}")
    return {**report, **values, "predictions_path": str(csv_path)}
