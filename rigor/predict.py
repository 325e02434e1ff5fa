"""The checkpoint-based evaluate task: rebuild a run from its saved config and write predictions.

    python evaluate.py ckpt_path=<run>/checkpoints/best.ckpt split=test [mc_dropout.enabled=true]

Writes ``<run>/predictions_<split>.csv`` in the contract of shared/DESIGN.md (sample_id, target,
``logit`` or ``logit_0..logit_{C-1}``, then the datamodule's metadata columns; plus ``prob*`` with the
stored temperature applied, and ``mc_prob*``, ``mc_std`` with MC-Dropout) and
``<run>/predictions_<split>_metrics.json`` with the family's metrics.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import hydra
import lightning as L
import numpy as np
import pandas as pd
import torch
from omegaconf import DictConfig, OmegaConf
from tqdm.auto import tqdm

from analysis.calibration import mc_triage, probabilities_from_logits
from callbacks.temperature_scaling import CHECKPOINT_KEY
from lightning_modules.mc_dropout import MCDropout
from rigor.config import register_resolvers
from rigor.jsonio import write_json

log = logging.getLogger(__name__)


def load_run(ckpt_path: str | Path) -> tuple[DictConfig, L.LightningModule, L.LightningDataModule, dict[str, Any]]:
    """Rebuild datamodule and module from the run's `.hydra/config.yaml` and load the checkpoint's weights.

    Args:
        ckpt_path: ``<run>/checkpoints/<name>.ckpt``.

    Returns:
        (config, module in eval mode, datamodule set up, raw checkpoint dict)
    """
    register_resolvers()
    ckpt_path = Path(ckpt_path)
    if not ckpt_path.exists():
        raise FileNotFoundError(f"ckpt_path: {ckpt_path} does not exist")
    run_dir = ckpt_path.resolve().parent.parent
    config_path = run_dir / ".hydra" / "config.yaml"
    if not config_path.exists():
        raise FileNotFoundError(f"ckpt_path: expected the run's config at {config_path} (checkpoints/ inside a Rigor run directory)")
    cfg = OmegaConf.load(config_path)
    cfg.paths.output_dir = str(run_dir)  # was ${hydra:runtime.output_dir}, unknown outside that run
    checkpoint = torch.load(ckpt_path, map_location="cpu", weights_only=False)
    module: L.LightningModule = hydra.utils.instantiate(cfg.model)
    module.load_state_dict(checkpoint["state_dict"])
    module.eval()
    datamodule: L.LightningDataModule = hydra.utils.instantiate(cfg.data)
    datamodule.setup("predict")
    return cfg, module, datamodule, checkpoint


def logit_columns(logits: np.ndarray, prefix: str = "logit") -> dict[str, np.ndarray]:
    """``logit`` for one-logit (binary) output, ``logit_0..logit_{C-1}`` otherwise."""
    if logits.ndim == 1:
        return {prefix: logits}
    return {f"{prefix}_{k}": logits[:, k] for k in range(logits.shape[1])}


def predict_split(
    module: L.LightningModule,
    datamodule: L.LightningDataModule,
    split: str,
    temperature: float | None = None,
    mc: MCDropout | None = None,
) -> tuple[pd.DataFrame, dict[str, float]]:
    """Predictions table and the family's metrics (its own MetricCollection) for one split."""
    metrics = module.configure_metrics()
    logits, mc_prob, mc_std = [], [], []
    with torch.inference_mode():
        for batch in tqdm(datamodule.split_dataloader(split), desc=f"predict {split}", leave=False):
            batch = {k: v.to(module.device) if isinstance(v, torch.Tensor) else v for k, v in batch.items()}
            out = module(batch["image"]).float()
            metrics.update(*module.metric_inputs(out, batch))
            logits.append(out.cpu())
            if mc is not None:
                mean, std = mc(batch["image"])
                mc_prob.append(mean.cpu())
                mc_std.append(std.cpu())
    values = {k: float(v) for k, v in metrics.compute().items()}
    all_logits = torch.cat(logits).numpy()
    frame = datamodule.split_frame(split).reset_index(drop=True)
    if len(frame) != len(all_logits):
        raise RuntimeError(f"{split}: {len(all_logits)} predictions for {len(frame)} samples")
    columns: dict[str, Any] = {"sample_id": frame["sample_id"], "target": frame["target"], **logit_columns(all_logits)}
    if temperature is not None:
        columns.update(logit_columns(probabilities_from_logits(all_logits, temperature), "prob"))
    if mc is not None:
        mean = torch.cat(mc_prob).numpy()
        columns.update(logit_columns(mean, "mc_prob"))
        columns["mc_std"] = torch.cat(mc_std).numpy()
    meta = frame.drop(columns=["sample_id", "target"])
    table = pd.concat([pd.DataFrame(columns), meta], axis=1)
    return table, values


def run_predict(cfg: DictConfig) -> dict[str, Any]:
    """evaluate.py task=predict: write predictions_<split>.csv and its metrics next to the run."""
    if not cfg.get("ckpt_path"):
        raise ValueError("evaluate: ckpt_path=<run>/checkpoints/best.ckpt is required for task=predict")
    run_cfg, module, datamodule, checkpoint = load_run(cfg.ckpt_path)
    split = cfg.get("split", "test")
    if split not in getattr(datamodule, "datasets", {}):
        raise ValueError(f"split={split!r}: the datamodule has {sorted(getattr(datamodule, 'datasets', {}))}")
    temperature = checkpoint.get(CHECKPOINT_KEY)
    mc_cfg = cfg.get("mc_dropout") or {}
    mc = MCDropout(module, n_passes=int(mc_cfg.get("n_passes", 25))) if mc_cfg.get("enabled", False) else None
    L.seed_everything(int(run_cfg.seed), workers=True)  # MC-Dropout masks are reproducible
    table, values = predict_split(module, datamodule, split, temperature, mc)
    run_dir = Path(cfg.ckpt_path).resolve().parent.parent
    out_dir = Path(cfg.out_dir) if cfg.get("out_dir") else run_dir
    out_dir.mkdir(parents=True, exist_ok=True)
    csv_path = out_dir / f"predictions_{split}.csv"
    table.to_csv(csv_path, index=False)
    report: dict[str, Any] = {"split": split, "n": len(table), "checkpoint": str(cfg.ckpt_path), "temperature": temperature,
                              **{k.replace("/", "_"): v for k, v in values.items()}}
    if mc is not None:
        mean = table[[c for c in table.columns if c.startswith("mc_prob")]].to_numpy().squeeze()
        triage = mc_triage(mean, table["mc_std"].to_numpy(), float(mc_cfg.get("review_std", 0.35)),
                           float(mc_cfg.get("auto_conf", 0.90)), float(mc_cfg.get("auto_std", 0.25)))
        report.update({"mc_passes": mc.n_passes, "mc_mean_std": float(table["mc_std"].mean()),
                       **{f"triage_{k}": v for k, v in triage.items()}})
    metrics_path = out_dir / f"predictions_{split}_metrics.json"
    write_json(metrics_path, report)
    for key, value in report.items():
        print(f"{key:>24}: {value}")
    print(f"predictions: {csv_path}")
    return {**report, "predictions_path": str(csv_path)}
