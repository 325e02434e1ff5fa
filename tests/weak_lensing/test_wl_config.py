"""Every number of conf/thresholds/weak_lensing.yaml is written once and reaches every user: the model, the
callback (score and MCMC stage) and the evaluate tasks (for files whose sidecar records none)."""

from __future__ import annotations

from pathlib import Path

import hydra
import pytest
from omegaconf import OmegaConf

from tests.conftest import ROOT, compose
from analysis.weak_lensing.mcmc import MCMC_SETTINGS as MCMC_KEYS
from tasks.weak_lensing.evaluation import SCORE_KEYS, resolve_label_scaler, resolve_settings

THRESHOLDS = ROOT / "conf" / "thresholds" / "weak_lensing.yaml"


def _changed() -> tuple[dict, list[str]]:
    """A distinct new value for every number in the thresholds file, and the overrides that set them."""
    leaves = {}

    def walk(node: dict, prefix: str) -> None:
        for key, value in node.items():
            if isinstance(value, dict):
                walk(value, f"{prefix}{key}.")
            else:
                leaves[f"{prefix}{key}"] = value

    walk(OmegaConf.to_container(OmegaConf.load(THRESHOLDS)), "")
    new = {k: (v + 7 if isinstance(v, int) else v * 1.5 + 0.125) for k, v in leaves.items()}
    return new, [f"thresholds.{k}={v}" for k, v in new.items()]


def test_a_changed_threshold_reaches_the_model_the_callback_and_the_tasks() -> None:
    new, overrides = _changed()
    mcmc_keys = [k.split(".", 1)[1] for k in new if k.startswith("mcmc.")]
    cfg = compose(["experiment=weak_lensing_simple_cnn_mcmc", *overrides])
    # the model's logged val score
    assert (cfg.model.score_scale, cfg.model.score_floor) == (new["score_scale"], new["score_floor"])
    # the callback, as instantiated: score constants and every MCMC setting
    cb = hydra.utils.instantiate(cfg.callbacks.wl_score)
    assert (cb.score_scale, cb.score_floor) == (new["score_scale"], new["score_floor"])
    assert {k: cb.mcmc[k] for k in mcmc_keys} == {k: new[f"mcmc.{k}"] for k in mcmc_keys}
    assert cb.mcmc["acceptance_band"] == [new["acceptance_low"], new["acceptance_high"]] and cb.mcmc["ess_min"] == new["ess_min"]
    assert cb.bounds["perfect_s8_sigma"] == new["perfect_s8_sigma"]
    used = {"score_scale", "score_floor", "acceptance_low", "acceptance_high", "ess_min", "perfect_s8_sigma",
            *(f"mcmc.{k}" for k in mcmc_keys)}
    # the evaluate tasks, on a file whose sidecar records nothing (the seed is the run's: no family value)
    source = Path("predictions_test.csv")
    for task in ("weak_lensing_score", "weak_lensing_mcmc"):
        ecfg = compose([f"task={task}", *overrides], config_name="evaluate")
        assert resolve_settings("wl_score", SCORE_KEYS, ecfg, {}, source) == {"scale": new["score_scale"], "floor": new["score_floor"]}
    m = resolve_settings("mcmc", MCMC_KEYS, ecfg, {"mcmc": {"seed": 5}}, source)
    assert m["acceptance_band"] == [new["acceptance_low"], new["acceptance_high"]] and m["ess_min"] == new["ess_min"]
    assert all(m[k] == new[f"mcmc.{k}"] for k in MCMC_KEYS if f"mcmc.{k}" in new)
    # no number in the file is left without a user checked here
    assert used == set(new)


def test_task_settings_come_from_the_override_then_the_sidecar_then_the_family() -> None:
    cfg = compose(["task=weak_lensing_mcmc", "mcmc.n_steps=123", "wl_score.floor=-5"], config_name="evaluate")
    family = OmegaConf.load(THRESHOLDS)
    sidecar = {"mcmc": {"n_steps": 400, "proposal_std": 0.1, "seed": 9}, "wl_score": {"scale": 2.0, "floor": -3.0},
               "label_scaler": {"omega_m": {"loc": 0.3, "scale": 0.1}, "s8": {"loc": 0.8, "scale": 0.05}}}
    m = resolve_settings("mcmc", MCMC_KEYS, cfg, sidecar, Path("p.csv"))
    assert (m["n_steps"], m["proposal_std"], m["seed"], m["burn_in"]) == (123, 0.1, 9, family.mcmc.burn_in)
    assert resolve_settings("wl_score", SCORE_KEYS, cfg, sidecar, Path("p.csv")) == {"scale": 2.0, "floor": -5}
    assert resolve_label_scaler(cfg, sidecar, ["omega_m", "s8"], Path("p.csv")) == ([0.3, 0.8], [0.1, 0.05])
    assert resolve_label_scaler(cfg, {}, ["omega_m", "s8"], Path("p.csv")) == (None, None)  # the file's own truth
    with pytest.raises(ValueError, match=r"mcmc.seed is not recorded in p.json; pass mcmc.seed="):
        resolve_settings("mcmc", MCMC_KEYS, cfg, {}, Path("p.csv"))


def test_the_callback_refuses_an_mcmc_setting_left_out() -> None:
    cfg = compose(["experiment=weak_lensing_simple_cnn_mcmc", "~callbacks.wl_score.mcmc.burn_in"])
    with pytest.raises(Exception, match="burn_in"):
        hydra.utils.instantiate(cfg.callbacks.wl_score)


def test_the_default_data_is_the_lognormal_set_and_the_gaussian_set_stays_selectable() -> None:
    from datamodules.weak_lensing.simulate import as_config, config_hash

    new = compose(["experiment=weak_lensing_simple_cnn_direct"])
    sim = as_config(OmegaConf.to_container(new.data.simulation, resolve=True))
    assert (sim.field, sim.shift_model, sim.design, sim.n_cosmologies, sim.map_pixel_arcmin) == ("lognormal", "empty_beam", "core", 101, 4.0)
    assert tuple(new.data.map_shape) == sim.shape == (new.model.height, new.model.width)
    old = compose(["experiment=weak_lensing_simple_cnn_direct", "data=weak_lensing_gaussian"])
    # the original set, under the cache directory it always had: today's results stay reproducible
    assert config_hash(as_config(OmegaConf.to_container(old.data.simulation, resolve=True))) == "c5a9f255ed98"
    assert tuple(old.data.map_shape) == (old.model.height, old.model.width) == (356, 44)
