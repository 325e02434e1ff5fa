"""Weak-lensing evaluation tasks (seed 001), run on predictions files by evaluate.py.

    python evaluate.py task=weak_lensing_score predictions=<run>/predictions_test.csv [calibrate_on=<run>/predictions_val.csv]
    python evaluate.py task=weak_lensing_score predictions=<file>.csv calibrate_on=<run>/checkpoints/sigma_scale.json
    python evaluate.py task=weak_lensing_mcmc val=<run>/predictions_val.csv test=<run>/predictions_test.csv

``wl_score`` reads a predictions CSV of the regression kind with uncertainty (per target ``t``, ``t_mean``,
``t_std``) and reports the challenge score (mean over maps, floored), the standardised MSE, R^2 and
1-sigma coverage per target; it writes ``<stem>_wl_score.json`` and the per-map scores
``<stem>_wl_scores.csv`` next to the file. With ``calibrate_on=<validation predictions>`` it also fits, per
target, the factor k that gives the validation maps' sigmas their nominal 1-sigma coverage
(analysis.weak_lensing.score.fit_sigma_scale), scores this file with k * sigma, prints the metrics before
and after side by side, and writes ``<stem>_calibrated.csv`` (its sidecar records k and where it was fitted)
with its per-map scores. When the validation file is the run's own (its sidecar names the checkpoint, as
task=predict writes it, and no other data), k is also kept beside that checkpoint in
``checkpoints/sigma_scale.json``, the file the training callback writes (callbacks/weak_lensing/score.py).
``calibrate_on=<run>/checkpoints/sigma_scale.json`` applies scales fitted before instead of fitting them.
``wl_mcmc`` runs the CNN + MCMC stage on a run's point
predictions (``t_mean`` of the validation maps, grouped by ``cosmology_id``, give the likelihood; every
test map gets a posterior) and writes ``<test stem>_mcmc.csv`` (regression kind with ``t_std``) and its score.
The numbers come from analysis/weak_lensing/score.py and analysis/weak_lensing/mcmc.py.

Settings (score constants, label scaler, MCMC settings) are resolved per key: the task's config value when
set (an explicit override), else the run's value recorded in the predictions sidecar (the callback writes
them), else the family's (conf/thresholds/weak_lensing.yaml, composed into the task). So a run's own file
gives the run's own numbers. A file whose sidecar has no label scaler is standardised by its own truth
(with a warning); an MCMC seed must come from the sidecar or ``mcmc.seed``.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from omegaconf import DictConfig, OmegaConf

from analysis.weak_lensing.mcmc import MCMC_SETTINGS, summary_posteriors
from analysis.predictions import prediction_record, prediction_table, read_predictions, write_predictions
from analysis.weak_lensing.score import apply_sigma_scale, per_map_frame, sigma_scale_record, wl_metrics
from callbacks.weak_lensing.score import read_sigma_scale, sigma_scale_path
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


SCORE_KEYS = ("scale", "floor")


def _plain(node: Any) -> Any:
    return OmegaConf.to_container(node, resolve=True) if isinstance(node, DictConfig) else node


def _family(cfg: DictConfig) -> dict[str, dict[str, Any]]:
    """The family's numbers (conf/thresholds/weak_lensing.yaml) laid out as a sidecar records them (no seed)."""
    th = cfg.get("thresholds")
    if th is None:
        return {"wl_score": {}, "mcmc": {}}
    return {"wl_score": {"scale": th.score_scale, "floor": th.score_floor},
            "mcmc": {**_plain(th.mcmc), "acceptance_band": [th.acceptance_low, th.acceptance_high], "ess_min": th.ess_min}}


def resolve_settings(section: str, keys: Sequence[str], cfg: DictConfig, sidecar: Mapping[str, Any], source: Path) -> dict[str, Any]:
    """One value per key: ``cfg.<section>.<key>`` if set, else the sidecar's ``<section>.<key>``, else the family's.

    Raises:
        ValueError: naming the key, the sidecar and the override to pass, when no source has it.
    """
    override = _plain(cfg.get(section)) or {}
    recorded = sidecar.get(section) or {}
    family = _family(cfg)[section]
    out: dict[str, Any] = {}
    for key in keys:
        for value in (override.get(key), recorded.get(key), family.get(key)):
            if value is not None:
                out[key] = value
                break
        else:
            raise ValueError(f"evaluate: {section}.{key} is not recorded in {source.with_suffix('.json')}; pass {section}.{key}=<value>")
    return out


def resolve_label_scaler(cfg: DictConfig, sidecar: Mapping[str, Any], names: Sequence[str],
                         source: Path) -> tuple[list[float] | None, list[float] | None]:
    """The label scaler of the standardised MSE: ``wl_score.label_loc/label_scale`` if set, else the sidecar's.

    Returns (None, None) when neither has one: the standardised MSE then uses the file's own truth mean/std.
    """
    t = cfg.get("wl_score") or {}
    loc, scale = t.get("label_loc"), t.get("label_scale")
    recorded = sidecar.get("label_scaler") or {}
    if loc is None and all(n in recorded for n in names):
        loc = [recorded[n]["loc"] for n in names]
    if scale is None and all(n in recorded for n in names):
        scale = [recorded[n]["scale"] for n in names]
    if loc is None or scale is None:
        log.warning("%s: no label scaler in its sidecar and none given (wl_score.label_loc/label_scale); the standardised "
                    "MSE uses this file's own truth mean and std, not the run's training labels", source)
    for key, value in (("label_loc", loc), ("label_scale", scale)):
        if value is not None and len(value) != len(names):
            raise ValueError(f"evaluate: wl_score.{key} has {len(value)} values for the targets {list(names)}")
    return (None if loc is None else [float(v) for v in loc]), (None if scale is None else [float(v) for v in scale])


def _scaler_record(names: Sequence[str], loc: Sequence[float] | None, scale: Sequence[float] | None) -> dict[str, Any]:
    if loc is None or scale is None:
        return {}
    return {"label_scaler": {n: {"loc": float(loc[j]), "scale": float(scale[j])} for j, n in enumerate(names)}}


def run_wl_score(cfg: DictConfig) -> dict[str, Any]:
    """Challenge score and reference metrics of one predictions file (see the module docstring)."""
    path = _path(cfg, "predictions")
    preds = read_predictions(path, kind="regression")
    if preds.stds is None:
        raise ValueError(f"{path}: the challenge score needs t_std columns (regression with uncertainty); this file is a "
                         "point regressor's: run evaluate.py task=weak_lensing_mcmc on it first")
    names = list(preds.target_names)
    score = resolve_settings("wl_score", SCORE_KEYS, cfg, preds.sidecar, path)
    loc, scale = resolve_label_scaler(cfg, preds.sidecar, names, path)
    metrics = wl_metrics(preds.targets, preds.means, preds.stds, names, float(score["scale"]), float(score["floor"]), loc, scale)
    out = _out_dir(cfg, path.parent)
    frame = pd.read_csv(path)
    per_map_frame(frame, names, float(score["scale"])).to_csv(out / f"{path.stem}_wl_scores.csv", index=False)
    report = {"predictions": str(path), "target_names": names, **metrics,
              "settings": {"wl_score": score, "label_loc": loc, "label_scale": scale}}
    if cfg.get("calibrate_on"):
        report["calibrated"] = _calibrated(cfg, path, preds, frame, names, score, loc, scale, out)
    write_json(out / f"{path.stem}_wl_score.json", report)
    _print(f"wl_score: {path}", metrics)
    if "calibrated" in report:
        cal = report["calibrated"]
        _print(f"calibrated sigmas (k fitted on {cal['fitted_on']}, {cal['n_fit']} maps): {cal['predictions']}",
               {**{f"sigma_scale_{t}": k for t, k in cal["sigma_scale"].items()}, **cal["metrics"]})
        _print_before_after(metrics, cal["metrics"], names)
        if cal["sigma_scale_file"]:
            print(f"sigma scale kept in {cal['sigma_scale_file']}")
    return report


def _print_before_after(before: Mapping[str, float], after: Mapping[str, float], names: Sequence[str]) -> None:
    keys = ["score", "coverage", *[f"{m}_{t}" for t in names for m in ("coverage", "mean_sigma")]]
    print(f"  {'':32s} {'before':>12s} {'after':>12s}")
    for key in keys:
        print(f"  {key:32s} {before[key]:12.6g} {after[key]:12.6g}")


def _calibrated(cfg: DictConfig, path: Path, preds: Any, frame: pd.DataFrame, names: list[str], score: Mapping[str, Any],
                loc: Any, scale: Any, out: Path) -> dict[str, Any]:
    """Sigmas scaled per target by k fitted on validation maps (fit_sigma_scale), scored on this file's maps.

    ``calibrate_on`` is a validation predictions file (k is fitted on it here) or a sigma_scale.json (k fitted
    before, by the callback or by this task). Writes ``<stem>_calibrated.csv`` (the same rows, ``t_std`` times k; its sidecar records the factors and the
    file they were fitted on) and its per-map scores, so task=weak_lensing_score, a submission or a paired
    comparison can read the calibrated file like any other.
    """
    source = Path(str(cfg.calibrate_on))
    if not source.exists():
        raise FileNotFoundError(f"calibrate_on={source} does not exist")
    if source.suffix == ".json":
        fit, kept = _stored_scale(source), None
        ckpt = preds.sidecar.get("checkpoint")  # task=predict's files name theirs; the callback's do not
        if ckpt and Path(str(ckpt)).resolve().parent != source.resolve().parent:
            raise ValueError(f"calibrate_on={source} is another run's sigma scale: {path} holds predictions of {ckpt}")
    else:
        fit, kept = _fit_scale(source, path, preds, names)
    std = apply_sigma_scale(preds.stds, names, fit["sigma_scale"])
    metrics = wl_metrics(preds.targets, preds.means, std, names, float(score["scale"]), float(score["floor"]), loc, scale)
    cal = frame.copy()
    for j, t in enumerate(names):
        cal[f"{t}_std"] = std[:, j]
    record = {key: v for key, v in preds.sidecar.items() if key not in ("csv", "n", "schema_version")}
    record.update({"kind": "regression", "split": str(preds.recorded_split or record.get("split") or "test"),
                   "target_names": names, "sigma_scale": fit["sigma_scale"], "sigma_scale_fitted_on": fit["fitted_on"],
                   "sigma_scale_n": fit.get("n"), "sigma_scale_target": fit.get("target_coverage"), "calibrated_from": str(path)})
    csv = write_predictions(out / f"{path.stem}_calibrated.csv", cal, record)
    per_map_frame(cal, names, float(score["scale"])).to_csv(out / f"{path.stem}_calibrated_wl_scores.csv", index=False)
    return {"predictions": str(csv), "fitted_on": fit["fitted_on"], "n_fit": fit.get("n"), "sigma_scale": fit["sigma_scale"],
            "fit_coverage_before": fit.get("coverage_before"), "fit_coverage_after": fit.get("coverage_after"),
            "sigma_scale_file": None if kept is None else str(kept), "metrics": metrics}


def _stored_scale(source: Path) -> dict[str, Any]:
    """A sigma_scale.json written before (by the callback or by a fit here): its record, fitted_on always set."""
    record = read_sigma_scale(source)
    if record is None:
        raise ValueError(f"calibrate_on={source} is not a sigma_scale.json record (expected a JSON object with 'sigma_scale')")
    return {**record, "fitted_on": record.get("fitted_on") or f"{record.get('split') or '?'} split of the run ({source})"}


def _fit_scale(val_path: Path, path: Path, preds: Any, names: list[str]) -> tuple[dict[str, Any], Path | None]:
    """k fitted on a validation predictions file; kept beside the run's checkpoint when the file is the run's own.

    Returns:
        The record (sigma_scale_record plus split, fitted_on, checkpoint) and the sigma_scale.json written, or None.
    """
    if val_path.resolve() == path.resolve():
        raise ValueError(f"calibrate_on={val_path} is the file being scored: fit the sigma scale on validation maps")
    val = read_predictions(val_path, kind="regression")
    if val.is_test_split:
        raise ValueError(f"calibrate_on={val_path} is a test split: the sigma scale must be fitted on validation maps")
    if val.stds is None:
        raise ValueError(f"calibrate_on={val_path}: no t_std columns to calibrate")
    if list(val.target_names) != names:
        raise ValueError(f"calibrate_on={val_path} has targets {list(val.target_names)}; {path} has {names}")
    ckpt, other = val.sidecar.get("checkpoint"), preds.sidecar.get("checkpoint")
    if ckpt and other and Path(str(ckpt)).resolve() != Path(str(other)).resolve():
        raise ValueError(f"calibrate_on={val_path} holds predictions of {ckpt} but {path} those of {other}: "
                         "the sigma scale belongs to one model")
    fit = {**sigma_scale_record(val.targets, val.means, val.stds, names), "split": str(val.recorded_split or "val"),
           "fitted_on": str(val_path), "checkpoint": None if not ckpt else Path(str(ckpt)).name}
    # kept as the run's own only for its own validation maps (task=predict records the checkpoint; data null: the run's data)
    if not ckpt or not Path(str(ckpt)).is_file() or val.sidecar.get("data") is not None:
        log.info("%s names no checkpoint of the run's own data: sigma_scale.json is not written (k is in the report "
                 "and in the calibrated file's sidecar)", val_path)
        return fit, None
    return fit, write_json(sigma_scale_path(Path(str(ckpt))), fit)


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
    names = list(val.target_names)
    m = resolve_settings("mcmc", MCMC_SETTINGS, cfg, test.sidecar, test_path)
    score = resolve_settings("wl_score", SCORE_KEYS, cfg, test.sidecar, test_path)
    loc, scale = resolve_label_scaler(cfg, test.sidecar, names, test_path)
    start = time.time()
    mean, std, diag, warns = summary_posteriors(
        val.means, val.metadata["cosmology_id"].to_numpy(), val.targets, test.means,
        n_steps=int(m["n_steps"]), proposal_std=float(m["proposal_std"]), burn_in=float(m["burn_in"]), seed=int(m["seed"]),
        acceptance_band=tuple(m["acceptance_band"]), ess_min=float(m["ess_min"]), grid_size=int(m["grid_size"]),
        n_trace=int(m["n_trace"]), progress=bool((cfg.get("mcmc") or {}).get("progress", False)),
    )
    wall = time.time() - start
    metrics = wl_metrics(test.targets, mean, std, names, float(score["scale"]), float(score["floor"]), loc, scale)
    out = _out_dir(cfg, test_path.parent)
    frame = pd.read_csv(test_path, dtype={"sample_id": str})
    meta = frame.drop(columns=[c for c in frame.columns if c in ("sample_id", "split", *names)
                               or any(c.startswith(f"{n}_") for n in names)])
    table = prediction_table("regression", np.stack([mean, std], axis=-1),
                             pd.concat([frame[["sample_id", *names]], meta], axis=1), str(test.recorded_split or "test"), names)
    # the output's sidecar carries the settings on, so task=weak_lensing_score on it gives this report's numbers
    csv = write_predictions(out / f"{test_path.stem}_mcmc.csv", table, prediction_record(
        "regression", str(test.recorded_split or "test"), names, **_scaler_record(names, loc, scale), method="cnn_mcmc",
        wl_score=score, mcmc=m, diagnostics=diag, warnings=warns, val=str(val_path), test=str(test_path),
        data=test.sidecar.get("data")))
    report = {"predictions": str(csv), **{f"mcmc_{k}": v for k, v in metrics.items()}, **diag, "wall_time_s": round(wall, 2),
              "warnings": warns}
    write_json(out / f"{test_path.stem}_mcmc_score.json", report)
    _print(f"wl_mcmc: {csv}", {k: v for k, v in report.items() if k != "warnings"})
    for w in warns:
        print(f"  warning: {w}")
    return report
