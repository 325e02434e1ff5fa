"""Weak-lensing evaluation tasks (seed 001), run on predictions files by evaluate.py.

    python evaluate.py task=weak_lensing_score predictions=<run>/predictions_test.csv
    python evaluate.py task=weak_lensing_mcmc val=<run>/predictions_val.csv test=<run>/predictions_test.csv

``wl_score`` reads a predictions CSV of the regression kind with uncertainty (per target ``t``, ``t_mean``,
``t_std``) and reports the challenge score (mean over maps, floored), the standardised MSE, R^2 and
1-sigma coverage per target; it writes ``<stem>_wl_score.json`` and the per-map scores
``<stem>_wl_scores.csv`` next to the file. ``wl_mcmc`` runs the CNN + MCMC stage on a run's point
predictions (``t_mean`` of the validation maps, grouped by ``cosmology_id``, give the likelihood; every
test map gets a posterior) and writes ``<test stem>_mcmc.csv`` (regression kind with ``t_std``) and its score.
The numbers come from analysis/weak_lensing/score.py and analysis/weak_lensing/mcmc.py.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from omegaconf import DictConfig, OmegaConf

from analysis.weak_lensing.mcmc import summary_posteriors
from analysis.predictions import prediction_table, read_predictions, write_predictions
from analysis.weak_lensing.score import per_map_frame, wl_metrics
from rigor.jsonio import write_json

log = logging.getLogger(__name__)


def _path(cfg: DictConfig, key: str) -> Path:
    value = cfg.get(key)
    if value in (None, ""):
        raise ValueError(f"evaluate: {key}=<predictions CSV> is required for task={cfg.get('task', {}).get('_target_', '?')}")
    path = Path(str(value))
    if not path.exists():
        raise FileNotFoundError(f"evaluate: {key}={path} does not exist")
    return path


def _out_dir(cfg: DictConfig, default: Path) -> Path:
    out = Path(str(cfg.out_dir)) if cfg.get("out_dir") else default
    out.mkdir(parents=True, exist_ok=True)
    return out


def _print(title: str, metrics: dict[str, Any]) -> None:
    print(title)
    for k, v in metrics.items():
        print(f"  {k:32s} {v:.6g}" if isinstance(v, float) else f"  {k:32s} {v}")


def run_wl_score(cfg: DictConfig) -> dict[str, Any]:
    """Challenge score and reference metrics of one predictions file (see the module docstring)."""
    path = _path(cfg, "predictions")
    preds = read_predictions(path, kind="regression")
    if preds.stds is None:
        raise ValueError(f"{path}: the challenge score needs t_std columns (regression with uncertainty); this file is a "
                         "point regressor's: run evaluate.py task=weak_lensing_mcmc on it first")
    names = list(preds.target_names)
    t = cfg.get("wl_score") or {}
    loc, scale = t.get("label_loc"), t.get("label_scale")
    metrics = wl_metrics(preds.targets, preds.means, preds.stds, names, float(t.get("scale", 1000.0)), float(t.get("floor", -1e6)),
                         None if loc is None else list(loc), None if scale is None else list(scale))
    out = _out_dir(cfg, path.parent)
    frame = pd.read_csv(path)
    per_map_frame(frame, names, float(t.get("scale", 1000.0))).to_csv(out / f"{path.stem}_wl_scores.csv", index=False)
    report = {"predictions": str(path), "target_names": names, **metrics}
    write_json(out / f"{path.stem}_wl_score.json", report)
    _print(f"wl_score: {path}", metrics)
    return report


def run_wl_mcmc(cfg: DictConfig) -> dict[str, Any]:
    """CNN + MCMC on a run's val and test predictions files (see the module docstring)."""
    val_path, test_path = _path(cfg, "val"), _path(cfg, "test")
    val, test = read_predictions(val_path, kind="regression"), read_predictions(test_path, kind="regression")
    if val.target_names != test.target_names:
        raise ValueError(f"{val_path} has targets {val.target_names} but {test_path} has {test.target_names}")
    if "cosmology_id" not in val.metadata.columns:
        raise ValueError(f"{val_path}: column 'cosmology_id' is required (maps are grouped by cosmology for the likelihood)")
    if val.is_test_split:
        raise ValueError(f"{val_path}: the likelihood must come from validation maps, but this file is a test split")
    m = cfg.get("mcmc") or {}
    t = cfg.get("wl_score") or {}
    names = list(val.target_names)
    start = time.time()
    mean, std, diag, warns = summary_posteriors(
        val.means, val.metadata["cosmology_id"].to_numpy(), val.targets, test.means,
        n_steps=int(m.get("n_steps", 10_000)), proposal_std=float(m.get("proposal_std", 0.06)), burn_in=float(m.get("burn_in", 0.2)),
        seed=int(m.get("seed", 0)), acceptance_band=tuple(m.get("acceptance_band", (0.2, 0.5))), ess_min=float(m.get("ess_min", 100)),
        grid_size=int(m.get("grid_size", 256)), n_trace=int(m.get("n_trace", 32)), progress=bool(m.get("progress", False)),
    )
    wall = time.time() - start
    metrics = wl_metrics(test.targets, mean, std, names, float(t.get("scale", 1000.0)), float(t.get("floor", -1e6)))
    out = _out_dir(cfg, test_path.parent)
    frame = pd.read_csv(test_path, dtype={"sample_id": str})
    meta = frame.drop(columns=[c for c in frame.columns if c in ("sample_id", "split", *names)
                               or any(c.startswith(f"{n}_") for n in names)])
    table = prediction_table("regression", np.stack([mean, std], axis=-1),
                             pd.concat([frame[["sample_id", *names]], meta], axis=1), str(test.recorded_split or "test"), names)
    plain = OmegaConf.to_container(m, resolve=True) if isinstance(m, DictConfig) else dict(m)
    csv = write_predictions(out / f"{test_path.stem}_mcmc.csv", table, {"kind": "regression", "split": str(test.recorded_split or "test"),
                            "target_names": names, "method": "cnn_mcmc", "mcmc": plain, "diagnostics": diag, "warnings": warns,
                            "val": str(val_path), "test": str(test_path)})
    report = {"predictions": str(csv), **{f"mcmc_{k}": v for k, v in metrics.items()}, **diag, "wall_time_s": round(wall, 2),
              "warnings": warns}
    write_json(out / f"{test_path.stem}_mcmc_score.json", report)
    _print(f"wl_mcmc: {csv}", {k: v for k, v in report.items() if k != "warnings"})
    for w in warns:
        print(f"  warning: {w}")
    return report
