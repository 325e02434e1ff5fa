"""A FAIR-Universe weak-lensing (phase 1) submission from a run and a set of maps, labelled or not.

    python evaluate.py task=weak_lensing_submission ckpt_path=<run>/checkpoints/best.ckpt \\
        'data_overrides=["data.maps_path=/kit/WIDE12H_bin2_2arcmin_kappa_noisy_test.npy","data.maps_mask_path=/kit/WIDE12H_bin2_2arcmin_mask.npy","data.labelled=false"]'

The maps are predicted through evaluate.py's predict task (tasks/predict.py: the run's saved config, its
checkpoint, the input check against the run's own data, the streamed predictions file), with the input
standardisation the checkpoint stores (the datamodule's ``state_dict``; a checkpoint from before it has
none and the datamodule recomputes it from the run's training maps, the same numbers). The predictions
file holds (Omega_m, S_8) in physical units: the module undoes the label scaler it recorded (its
``label_loc``/``label_scale`` buffers). Then:

- a direct head (means and sigmas from the network): the file's ``t_mean``/``t_std`` are the submission;
- a point head (the kit's CNN + MCMC arm): the run's validation maps are predicted with the same checkpoint,
  their per-cosmology mean and covariance give the likelihood, and every map's posterior is sampled
  (analysis.weak_lensing.mcmc.summary_posteriors) with the run's MCMC settings (recorded in its
  predictions sidecar; ``mcmc.<key>`` overrides, conf/thresholds/weak_lensing.yaml the fallback); the
  posterior means and stds are the submission, also written as ``predictions_test_cnn_mcmc.csv``.

With ``kit_nonnegative_prior`` (default, as the kit's notebooks do) an error bar reaching below zero is cut
to the mean (``errorbar = mean`` where ``mean - errorbar < 0``). Written to
``<run>/predictions/<data name>/``: ``submission.json`` ({"means": [[Omega_m, S_8], ...], "errorbars": [...]},
one entry per map in file order, the kit's ``result.json`` content), ``submission.zip`` (that JSON as
``result.json``, what Codabench takes) and ``submission_info.json`` (checkpoint, maps file and its sha256,
head, statistics used, how many error bars were cut). The data name: ``<maps file stem>-<sha256[:8]>`` for
``data.maps_path``, else the predict task's name of the data.
"""

from __future__ import annotations

import json
import logging
import zipfile
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from omegaconf import DictConfig, OmegaConf

from analysis.predictions import prediction_record, prediction_table, read_predictions, write_predictions
from analysis.weak_lensing.mcmc import MCMC_SETTINGS, summary_posteriors
from rigor.guard import safe_load
from rigor.jsonio import write_json
from tasks.predict import apply_data_overrides, data_identity, data_overrides, run_config, run_predict
from tasks.weak_lensing.evaluation import resolve_settings

log = logging.getLogger(__name__)

DATAMODULE_STATE_KEY = "WeakLensingDataModule"  # Lightning keeps a datamodule's state_dict under its class name
KIT_JSON = "result.json"  # the name inside the zip that the challenge's ingestion reads


def stored_input_stats(checkpoint: dict[str, Any]) -> dict[str, float] | None:
    """The input standardisation {loc, scale} a checkpoint stores (the datamodule's state_dict), or None."""
    state = checkpoint.get(DATAMODULE_STATE_KEY) or {}
    if "input_loc" in state and "input_scale" in state:
        return {"loc": float(state["input_loc"]), "scale": float(state["input_scale"])}
    return None


def kit_payload(means: np.ndarray, errorbars: np.ndarray) -> dict[str, list[list[float]]]:
    """The kit's submission content: ``{"means": (N, 2) list, "errorbars": (N, 2) list}``."""
    means, errorbars = np.asarray(means, dtype=np.float64), np.asarray(errorbars, dtype=np.float64)
    if means.shape != errorbars.shape or means.ndim != 2 or means.shape[1] != 2:
        raise ValueError(f"submission: means {means.shape} and errorbars {errorbars.shape} must both be (N, 2)")
    if not (np.isfinite(means).all() and np.isfinite(errorbars).all() and (errorbars > 0).all()):
        raise ValueError("submission: means and error bars must be finite and error bars > 0")
    return {"means": means.tolist(), "errorbars": errorbars.tolist()}


def nonnegative_prior(means: np.ndarray, errorbars: np.ndarray) -> tuple[np.ndarray, int]:
    """The kit's prior that the parameters are positive: an error bar reaching below 0 is cut to the mean."""
    errorbars = np.array(errorbars, dtype=np.float64)
    cut = np.asarray(means) - errorbars < 0
    errorbars[cut] = np.asarray(means, dtype=np.float64)[cut]
    return errorbars, int(cut.sum())


def write_submission(out_dir: Path, means: np.ndarray, errorbars: np.ndarray) -> tuple[Path, Path]:
    """``submission.json`` and ``submission.zip`` (the JSON inside as ``result.json``) in `out_dir`."""
    payload = kit_payload(means, errorbars)
    out_dir.mkdir(parents=True, exist_ok=True)
    json_path = out_dir / "submission.json"
    json_path.write_text(json.dumps(payload))
    zip_path = out_dir / "submission.zip"
    with zipfile.ZipFile(zip_path, "w", compression=zipfile.ZIP_DEFLATED) as zf:
        zf.write(json_path, arcname=KIT_JSON)
    return json_path, zip_path


def _data_name(cfg: DictConfig, run_cfg: DictConfig, overrides: list[str]) -> tuple[str, dict[str, Any]]:
    """The name of the data's predictions directory and what identifies the maps."""
    replacement = cfg.get("data") if isinstance(cfg.get("data"), DictConfig) else None
    data_cfg = apply_data_overrides(run_cfg, replacement, overrides).data
    identity = data_identity(data_cfg, None)  # a maps file: named by its stem and sha256
    if "maps" in identity:
        return identity["name"], {"maps_path": identity["maps"], "maps_sha256": identity["maps_sha256"]}
    return identity["name"], {"data": identity["name"]}


def _predict(cfg: DictConfig, split: str, overrides: list[str], out_dir: Path) -> Path:
    """tasks/predict.py's run_predict on `split` of the data `overrides` name, its files in `out_dir`."""
    sub = OmegaConf.create({
        "ckpt_path": str(cfg.ckpt_path), "split": split, "data_overrides": overrides, "out_dir": str(out_dir),
        "trainer": cfg.get("trainer"),
        "top_k": 0, "mc_dropout": {"enabled": False},
    })
    if isinstance(cfg.get("data"), DictConfig) and split == "test":
        sub.data = cfg.data
    return Path(run_predict(sub)["predictions_path"])


def _cnn_mcmc(cfg: DictConfig, run_dir: Path, test_path: Path, out_dir: Path) -> tuple[np.ndarray, np.ndarray, dict[str, Any]]:
    """Posterior means and stds of the maps of `test_path` (point predictions) from the run's validation maps."""
    val_path = _predict(cfg, "val", [], out_dir / "run_val")  # the run's own validation maps, this checkpoint
    val, test = read_predictions(val_path, kind="regression"), read_predictions(test_path, kind="regression")
    if "cosmology_id" not in val.metadata.columns:
        raise ValueError(f"{val_path}: column 'cosmology_id' is required (maps are grouped by cosmology for the likelihood)")
    sidecar_path = next((p for p in (run_dir / "predictions_test.csv", run_dir / "predictions_val.csv")
                         if p.with_suffix(".json").exists()), run_dir / "predictions_test.csv")
    sidecar = read_predictions(sidecar_path, kind="regression").sidecar if sidecar_path.exists() else {}
    m = resolve_settings("mcmc", MCMC_SETTINGS, cfg, sidecar, sidecar_path)
    mean, std, diag, warns = summary_posteriors(
        val.means, val.metadata["cosmology_id"].to_numpy(), val.targets, test.means,
        n_steps=int(m["n_steps"]), proposal_std=float(m["proposal_std"]), burn_in=float(m["burn_in"]), seed=int(m["seed"]),
        acceptance_band=tuple(m["acceptance_band"]), ess_min=float(m["ess_min"]), grid_size=int(m["grid_size"]),
        n_trace=int(m["n_trace"]), progress=bool((cfg.get("mcmc") or {}).get("progress", False)))
    for w in warns:
        log.warning("cnn_mcmc: %s", w)
    names = list(test.target_names)
    frame = pd.read_csv(test_path, dtype={"sample_id": str})
    meta = frame.drop(columns=[c for c in frame.columns if c in ("sample_id", "split", *names) or any(c.startswith(f"{n}_") for n in names)])
    table = prediction_table("regression", np.stack([mean, std], axis=-1), pd.concat([frame[["sample_id"]], meta], axis=1),
                             "test", names, labelled=False)
    write_predictions(out_dir / "predictions_test_cnn_mcmc.csv", table, prediction_record(
        "regression", "test", names, labelled=False, method="cnn_mcmc", mcmc=m, diagnostics=diag, warnings=warns,
        val=str(val_path), test=str(test_path), data=test.sidecar.get("data")))
    return mean, std, {"mcmc": m, "mcmc_diagnostics": diag, "mcmc_warnings": warns, "val_predictions": str(val_path)}


def run_wl_submission(cfg: DictConfig) -> dict[str, Any]:
    """Predict the maps that ``data_overrides`` (or ``data=<name>``) name and write the challenge submission.

    Args:
        cfg: ``ckpt_path`` (required), ``data_overrides`` and/or ``data``, ``trainer``, ``kit_nonnegative_prior``,
            ``out_dir`` (default ``<run>/predictions/<data name>``), ``mcmc.<key>`` (point heads).
    """
    if not cfg.get("ckpt_path"):
        raise ValueError("evaluate: ckpt_path=<run>/checkpoints/best.ckpt is required for task=weak_lensing_submission")
    checkpoint = safe_load(cfg.ckpt_path)
    run_cfg, run_dir = run_config(cfg.ckpt_path, checkpoint)
    target = str(run_cfg.model.get("_target_", ""))
    if not target.startswith("lightning_modules.weak_lensing"):
        raise ValueError(f"task=weak_lensing_submission: {cfg.ckpt_path} is a {target!r} run, not a weak-lensing one")
    head = str(run_cfg.model.get("head", "direct"))
    overrides = data_overrides(cfg)
    if not overrides and not isinstance(cfg.get("data"), DictConfig):
        raise ValueError("task=weak_lensing_submission: name the maps, e.g. 'data_overrides=[\"data.maps_path=<maps.npy>\","
                         "\"data.maps_mask_path=<mask.npy>\",\"data.labelled=false\"]' (the run's own test maps: "
                         "'data_overrides=[data.labelled=false]')")
    stats = stored_input_stats(checkpoint)
    given = [o for o in overrides if o.startswith("data.input_stats")]
    if stats is not None and not given:
        overrides = [*overrides, f"data.input_stats={{loc:{stats['loc']!r},scale:{stats['scale']!r}}}"]
    elif stats is None and not given:
        log.warning("%s stores no input statistics (a checkpoint from before they were kept): the datamodule recomputes "
                    "them from the run's training maps", cfg.ckpt_path)
    name, maps_id = _data_name(cfg, run_cfg, [o for o in overrides if not o.startswith("data.input_stats")])
    out_dir = Path(str(cfg.out_dir)) if cfg.get("out_dir") else run_dir / "predictions" / name
    test_path = _predict(cfg, "test", overrides, out_dir)
    preds = read_predictions(test_path, kind="regression")
    order = np.argsort(preds.metadata["map_index"].to_numpy(), kind="stable") if "map_index" in preds.metadata.columns else np.arange(len(preds.means))
    extra: dict[str, Any] = {}
    if head == "direct":
        if preds.stds is None:
            raise ValueError(f"{test_path}: a direct head's predictions need t_std columns")
        means, errorbars = preds.means, preds.stds
    elif head == "point":
        means, errorbars, extra = _cnn_mcmc(cfg, run_dir, test_path, out_dir)
    else:
        raise ValueError(f"task=weak_lensing_submission: model.head={head!r}; only 'direct' (means and sigmas) and 'point' "
                         "(CNN + MCMC) heads are supported")
    names = list(preds.target_names)
    if names != ["omega_m", "s8"]:
        raise ValueError(f"{test_path}: targets {names}; the challenge takes (omega_m, s8) in that order")
    means, errorbars = np.asarray(means)[order], np.asarray(errorbars)[order]
    n_cut = 0
    if cfg.get("kit_nonnegative_prior", True):
        errorbars, n_cut = nonnegative_prior(means, errorbars)
    json_path, zip_path = write_submission(out_dir, means, errorbars)
    info = {"checkpoint": str(cfg.ckpt_path), "experiment": run_cfg.get("experiment_name"), "head": head, "n": int(len(means)),
            "target_names": names, "predictions": str(test_path), **maps_id,
            "input_stats": stats, "input_stats_source": "checkpoint" if stats is not None and not given else
            ("data.input_stats" if given else "recomputed from the run's training maps"),
            "label_scaler": preds.sidecar.get("label_scaler"), "kit_nonnegative_prior": bool(cfg.get("kit_nonnegative_prior", True)),
            "n_errorbars_cut": n_cut, "submission": str(json_path), "zip": str(zip_path), **extra}
    write_json(out_dir / "submission_info.json", info)
    print(f"submission: {json_path} ({len(means)} maps; {n_cut} error bars cut at 0)")
    print(f"zip for the challenge: {zip_path}")
    return info
