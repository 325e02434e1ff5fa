"""End of a weak-lensing run (seed 001): predictions files, the challenge score and the CNN + MCMC stage.

After testing the best checkpoint, the callback

1. writes ``predictions_val.csv`` and ``predictions_test.csv`` (regression kind: ``t``, ``t_mean`` and,
   for a direct head, ``t_std``; plus the maps' metadata, cosmology_id included) with their sidecars;
2. for a direct head, scores the test predictions (challenge score, standardised MSE, R^2, coverage,
   mean sigma) into metrics.json as ``test_score``, ``test_coverage``, ...; with ``calibrate_sigma`` it
   also fits the per-target sigma scale k on the validation maps (analysis.weak_lensing.score.fit_sigma_scale:
   the nominal 68.3% coverage there), writes it to ``<run>/checkpoints/sigma_scale.json`` and scores the
   test maps again with k * sigma (``test_<metric>_calibrated``, ``sigma_scale_<t>``, ``val_coverage_<t>``
   before and ``val_coverage_<t>_calibrated`` after). MCMC arms keep their posterior sigmas;
3. for each summary in ``mcmc.summaries`` (``outputs``: the network's point predictions; ``power_spectrum``:
   log C_ell of the maps, the classical baseline), builds the per-cosmology Gaussian likelihood from the
   validation maps, samples every test map's posterior at once, writes ``predictions_test_<name>.csv``
   and scores it as ``test_<name>_score`` (name: ``cnn_mcmc`` or ``ps_mcmc``) with the acceptance and ESS
   checks;
4. states what the data allow beside those scores (analysis/weak_lensing/bounds.py, fisher.py):
   ``test_score_prior_only`` and ``test_score_perfect_s8`` on the same test maps, and, for simulated data,
   the power-spectrum Fisher forecast ``fisher_sigma_omega_m``, ``fisher_sigma_s8`` (nuisances
   marginalised; ``*_fixed``: fixed) and ``fisher_score`` (the score of a calibrated predictor at those sigmas),
   then ``fisher_prior_*`` with the design added as a Gaussian prior (the training labels' std).

``sigma_scale.json`` (``sigma_scale: {t: k}``, ``split``, ``n``, ``target_coverage``, ``coverage_before``,
``coverage_after``, ``fitted_on``, ``checkpoint``) is read through ``read_sigma_scale`` only; evaluate.py's
``task=weak_lensing_score calibrate_on=<run>/checkpoints/sigma_scale.json`` applies it to any predictions file,
and ``calibrate_on=<validation predictions>`` fits it on an existing run (and writes the file beside the
checkpoint the predictions record).

Every sidecar it writes records the run's score constants (``wl_score: {scale, floor}``), its label scaler
(``label_scaler: {target: {loc, scale}}``) and its MCMC settings (``mcmc``), so the same numbers come out of
``evaluate.py task=weak_lensing_score`` and ``task=weak_lensing_mcmc`` (tasks/weak_lensing/evaluation.py) on
the run's files.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import lightning as L
import numpy as np
from omegaconf import DictConfig, OmegaConf

from analysis.weak_lensing.bounds import data_bounds
from analysis.weak_lensing.fisher import expected_score, wl_fisher, with_gaussian_prior
from analysis.weak_lensing.mcmc import MCMC_SETTINGS, summary_posteriors
from analysis.weak_lensing.power_spectrum import log_bins, log_cl_summary
from analysis.predictions import prediction_record, prediction_table, write_predictions
from analysis.weak_lensing.score import apply_sigma_scale, sigma_scale_record, wl_metrics
from callbacks.base import RigorCallback, split_outputs
from rigor.jsonio import read_record, write_json

log = logging.getLogger(__name__)

SUMMARY_NAMES = {"outputs": "cnn_mcmc", "power_spectrum": "ps_mcmc"}
# the power-spectrum summary's keys (values: conf/thresholds/weak_lensing.yaml, through conf/callbacks/weak_lensing.yaml)
PS_KEYS = ("ps_ell_min", "ps_ell_max", "ps_n_bins")
SIGMA_SCALE_FILE = "sigma_scale.json"


def sigma_scale_path(run_dir_or_ckpt: str | Path) -> Path:
    """``<run>/checkpoints/sigma_scale.json`` for a run directory, its checkpoints folder or a checkpoint file."""
    path = Path(run_dir_or_ckpt)
    if path.suffix == ".ckpt" or path.is_file():
        return path.parent / SIGMA_SCALE_FILE
    return path / SIGMA_SCALE_FILE if path.name == "checkpoints" else path / "checkpoints" / SIGMA_SCALE_FILE


def read_sigma_scale(path: str | Path) -> dict[str, Any] | None:
    """A run's fitted sigma scales (the record ``sigma_scale_record`` builds, plus split, fitted_on, checkpoint).

    Args:
        path: ``sigma_scale.json`` itself, a run directory, its checkpoints folder or a checkpoint file. Given a
            checkpoint file, scales fitted on another checkpoint of the run (best.ckpt when this is last.ckpt)
            do not apply and give None.

    Returns:
        The record, or None when no scale was fitted.

    Raises:
        ValueError: a file without a ``sigma_scale`` mapping of target names to numbers.
    """
    path = Path(path)
    file = path if path.suffix == ".json" else sigma_scale_path(path)
    record = read_record(file)
    if record is None:
        return None
    if not isinstance(record.get("sigma_scale"), dict) or not record["sigma_scale"]:
        raise ValueError(f"{file}: expected a 'sigma_scale' mapping of target names to factors, found {sorted(record)}")
    if path.suffix == ".ckpt" and record.get("checkpoint") not in (None, path.name):
        return None
    return record


class WLScore(RigorCallback):
    """Predictions, score and posteriors at the end of testing.

    Args:
        score_scale, score_floor: The challenge score's constants (conf/thresholds/weak_lensing.yaml).
        write_val: Also write predictions_val.csv (evaluate.py task=weak_lensing_mcmc needs it; one more pass over the
            validation maps).
        calibrate_sigma: For a direct head, fit the sigma scale on the validation maps (the same one pass), write
            checkpoints/sigma_scale.json and report the test metrics before and after (module docstring).
        mcmc: ``{summaries: [outputs, power_spectrum], n_steps, proposal_std, burn_in, seed, grid_size, n_trace,
            acceptance_band, ess_min, ps_ell_min, ps_ell_max, ps_n_bins}``; ``summaries: []`` switches it off.
            Every key a listed summary needs must be given (power_spectrum also needs the ps_* keys).
        bounds: ``{perfect_s8_sigma, fisher}``: the std given to the exact S_8 of ``test_score_perfect_s8`` and
            whether to compute the Fisher forecast (simulated data only; needs the ps_* keys). None: neither bound.
    """

    def __init__(self, score_scale: float, score_floor: float, write_val: bool = True,
                 mcmc: Mapping[str, Any] | None = None, bounds: Mapping[str, Any] | None = None,
                 calibrate_sigma: bool = False) -> None:
        super().__init__()
        self.bounds = dict(bounds) if bounds else None
        if self.bounds is not None and self.bounds.get("perfect_s8_sigma") is None:
            raise ValueError("callbacks.wl_score.bounds.perfect_s8_sigma is required (conf/thresholds/weak_lensing.yaml)")
        self.score_scale, self.score_floor, self.write_val = float(score_scale), float(score_floor), write_val
        self.calibrate_sigma = bool(calibrate_sigma)
        if isinstance(mcmc, DictConfig):
            mcmc = OmegaConf.to_container(mcmc, resolve=True)  # plain values: they go into JSON sidecars
        self.mcmc = dict(mcmc or {})
        unknown = [s for s in self.mcmc.get("summaries", []) or [] if s not in SUMMARY_NAMES]
        if unknown:
            raise ValueError(f"callbacks.wl_score.mcmc.summaries: unknown {unknown}; expected some of {list(SUMMARY_NAMES)}")
        summaries = self.mcmc.get("summaries") or []
        need = (MCMC_SETTINGS if summaries else ()) + (PS_KEYS if "power_spectrum" in summaries else ())
        missing = [k for k in need if self.mcmc.get(k) is None]
        if missing:
            raise ValueError(f"callbacks.wl_score.mcmc: {missing} required for summaries {list(summaries)} "
                             "(conf/callbacks/weak_lensing.yaml takes them from conf/thresholds/weak_lensing.yaml)")
        self._summary: dict[str, Any] = {}

    def summary(self) -> dict[str, Any]:
        return dict(self._summary)

    def on_test_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        dm = trainer.datamodule
        run_dir = Path(trainer.default_root_dir)
        names = tuple(pl_module.target_names)
        out = pl_module.epoch_outputs("test")
        test_index, test_outputs = out["index"].numpy(), out["outputs"].double().numpy()
        self._write(pl_module, dm, run_dir, "test", test_index, test_outputs)
        summaries = list(self.mcmc.get("summaries", []) or [])
        direct = pl_module.output_kind == "regression" and test_outputs.ndim == 3  # (N, T, [mean, std])
        calibrate = self.calibrate_sigma and direct  # MCMC arms keep their posterior sigmas
        val_index, val_outputs = np.arange(len(dm.split_frame("val"))), None
        if self.write_val or calibrate or "outputs" in summaries:  # a pass over every validation map: only when something needs it
            val = split_outputs(trainer, pl_module, "val")
            val_index, val_outputs = val.index, val.outputs
            if self.write_val:
                self._write(pl_module, dm, run_dir, "val", val_index, val_outputs)
        if direct:
            truth = dm.split_frame("test").iloc[test_index][list(names)].to_numpy(np.float64)
            m = wl_metrics(truth, test_outputs[..., 0], test_outputs[..., 1], names, self.score_scale, self.score_floor,
                           dm.label_loc, dm.label_scale)
            self._summary.update({f"test_{k}": v for k, v in m.items()})
            if calibrate:
                self._calibrate(trainer, dm, names, val_index, np.asarray(val_outputs, dtype=np.float64), truth, test_outputs)
        for summary in summaries:
            self._run_mcmc(summary, pl_module, dm, run_dir, val_index, val_outputs, test_index, test_outputs)
        if self.bounds is not None:
            self._data_bounds(dm, names, test_index)

    def _calibrate(self, trainer: L.Trainer, dm: Any, names: Sequence[str], val_index: np.ndarray, val_outputs: np.ndarray,
                   test_truth: np.ndarray, test_outputs: np.ndarray) -> None:
        """Sigma scale fitted on the validation maps, kept beside the checkpoint, and the test metrics with it."""
        val_truth = dm.split_frame("val").iloc[val_index][list(names)].to_numpy(np.float64)
        fit = sigma_scale_record(val_truth, val_outputs[..., 0], val_outputs[..., 1], names)
        std = apply_sigma_scale(test_outputs[..., 1], names, fit["sigma_scale"])
        m = wl_metrics(test_truth, test_outputs[..., 0], std, names, self.score_scale, self.score_floor,
                       dm.label_loc, dm.label_scale)
        self._summary.update({f"test_{k}_calibrated": v for k, v in m.items() if k != "n"})
        for t in names:
            self._summary[f"sigma_scale_{t}"] = fit["sigma_scale"][t]
            self._summary[f"val_coverage_{t}"] = fit["coverage_before"][t]
            self._summary[f"val_coverage_{t}_calibrated"] = fit["coverage_after"][t]
        self._summary["sigma_scale_n"] = fit["n"]
        if trainer.is_global_zero:
            # beside the checkpoint the outputs came from (the best one, loaded for testing)
            best = Path(getattr(trainer.checkpoint_callback, "best_model_path", "") or "")
            write_json(sigma_scale_path(best if best.name else trainer.default_root_dir),
                       {**fit, "split": "val", "fitted_on": None, "checkpoint": best.name or None})

    def _data_bounds(self, dm: Any, names: Sequence[str], test_index: np.ndarray) -> None:
        """Prior-only and perfect-S_8 scores on the test maps; the Fisher forecast of simulated data."""
        truth = dm.split_frame("test").iloc[test_index][list(names)].to_numpy(np.float64)
        train = dm.split_frame("train")[list(names)].to_numpy(np.float64)
        b = data_bounds(truth, train, names, self.score_scale, self.score_floor, float(self.bounds["perfect_s8_sigma"]))
        self._summary.update({f"test_{k}": v for k, v in b.items()})
        simulated = getattr(dm, "manifest_path", None) is None and getattr(dm, "challenge", None) is None
        if self.bounds.get("fisher") and simulated and all(self.mcmc.get(k) is not None for k in PS_KEYS):
            start = time.time()
            edges = log_bins(float(self.mcmc["ps_ell_min"]), float(self.mcmc["ps_ell_max"]), int(self.mcmc["ps_n_bins"]))
            forecast = wl_fisher(dm.simulation, edges, mask=dm.mask)
            self._summary.update(forecast.as_dict())
            self._summary["fisher_score"] = expected_score([forecast.sigma_omega_m, forecast.sigma_s8], self.score_scale)
            if list(names) == ["omega_m", "s8"]:  # the design as a Gaussian prior of the training labels' std
                both = with_gaussian_prior([forecast.sigma_omega_m, forecast.sigma_s8], forecast.correlation,
                                           [b["prior_std_omega_m"], b["prior_std_s8"]])
                self._summary.update({"fisher_prior_sigma_omega_m": float(both[0]), "fisher_prior_sigma_s8": float(both[1]),
                                      "fisher_prior_score": expected_score(both, self.score_scale)})
            self._summary["fisher_wall_time_s"] = round(time.time() - start, 2)

    # ----------------------------------------------------------------------------------------------
    def _write(self, pl_module: L.LightningModule, dm: Any, run_dir: Path, split: str, index: np.ndarray, outputs: np.ndarray,
               suffix: str = "", extra: Mapping[str, Any] | None = None) -> Path:
        frame = dm.split_frame(split).iloc[index]
        table = prediction_table("regression", outputs, frame, split, pl_module.target_names)
        name = f"predictions_{split}{'_' + suffix if suffix else ''}.csv"
        run = self._run_record(dm, pl_module.target_names)
        return write_predictions(run_dir / name, table, prediction_record(
            "regression", split, pl_module.target_names, label_scaler=run.pop("label_scaler"), **run, **(extra or {})))

    def _run_record(self, dm: Any, names: Sequence[str]) -> dict[str, Any]:
        """The run's numbers for the sidecar: the evaluate tasks read them, so a file scores as the run did."""
        loc, scale = np.asarray(dm.label_loc, dtype=np.float64), np.asarray(dm.label_scale, dtype=np.float64)
        return {"wl_score": {"scale": self.score_scale, "floor": self.score_floor},
                "label_scaler": {t: {"loc": float(loc[j]), "scale": float(scale[j])} for j, t in enumerate(names)},
                "mcmc": {k: v for k, v in self.mcmc.items() if k != "summaries"}}

    def _summaries(self, which: str, dm: Any, index: np.ndarray, outputs: np.ndarray, split: str) -> np.ndarray:
        if which == "outputs":
            return outputs[..., 0] if outputs.ndim == 3 else outputs
        edges = log_bins(float(self.mcmc["ps_ell_min"]), float(self.mcmc["ps_ell_max"]), int(self.mcmc["ps_n_bins"]))
        maps = dm.split_maps(split)[index]
        _, log_cl = log_cl_summary(maps, dm.map_pixel_arcmin, edges, mask=dm.mask)
        return log_cl

    def _run_mcmc(self, which: str, pl_module: L.LightningModule, dm: Any, run_dir: Path, val_index: np.ndarray,
                  val_outputs: np.ndarray, test_index: np.ndarray, test_outputs: np.ndarray) -> None:
        name = SUMMARY_NAMES[which]
        names = list(pl_module.target_names)
        val_frame = dm.split_frame("val").iloc[val_index]
        test_frame = dm.split_frame("test").iloc[test_index]
        start = time.time()
        mean, std, diag, warns = summary_posteriors(
            self._summaries(which, dm, val_index, val_outputs, "val"), val_frame["cosmology_id"].to_numpy(),
            val_frame[names].to_numpy(np.float64), self._summaries(which, dm, test_index, test_outputs, "test"),
            n_steps=int(self.mcmc["n_steps"]), proposal_std=float(self.mcmc["proposal_std"]), burn_in=float(self.mcmc["burn_in"]),
            seed=int(self.mcmc["seed"]), acceptance_band=tuple(self.mcmc["acceptance_band"]), ess_min=float(self.mcmc["ess_min"]),
            grid_size=int(self.mcmc["grid_size"]), n_trace=int(self.mcmc["n_trace"]),
        )
        wall = time.time() - start
        for w in warns:
            log.warning("%s: %s", name, w)
        self._write(pl_module, dm, run_dir, "test", test_index, np.stack([mean, std], axis=-1), suffix=name,
                    extra={"method": name, "diagnostics": diag, "warnings": warns})
        m = wl_metrics(test_frame[names].to_numpy(np.float64), mean, std, names, self.score_scale, self.score_floor,
                       dm.label_loc, dm.label_scale)
        self._summary.update({f"test_{name}_{k}": v for k, v in m.items()})
        self._summary.update({f"{name}_{k}": v for k, v in diag.items()})
        self._summary[f"{name}_wall_time_s"] = round(wall, 2)
        self._summary[f"{name}_n_warnings"] = len(warns)
