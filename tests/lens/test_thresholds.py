"""Seed thresholds live once (conf/thresholds/lens.yaml): callbacks and the decision tree read the same node."""

from __future__ import annotations

import inspect

import hydra
import pytest
from omegaconf import OmegaConf

from callbacks.lens.core_sensitivity import CoreSensitivity
from callbacks.lens.shortcut_gates import ShortcutGates
from tests.conftest import compose

GOOD = {"final_core_lr_auc": 0.55, "final_radial_lr_auc": 0.50, "core_reliance": 0.01, "test_thetae_min_auroc": 0.85,
        "test_thetae_spread": 0.10, "best_val_auroc": 0.95, "test_auroc": 0.93}


def _verdicts(overrides: list[str], core_lr_auc: float, reliance: float) -> dict[str, str]:
    """The core gate and reliance verdicts of one run, from its callbacks and from its summary plugin."""
    cfg = compose(["experiment=lens_b1", *overrides])
    gates = hydra.utils.instantiate(cfg.callbacks.shortcut_gates)
    sens = hydra.utils.instantiate(cfg.callbacks.core_sensitivity)
    sens.curves = {"val": {r: 0.9 for r in sens.radii} | {sens.reliance_radius: 0.9 - reliance}}
    plugin = hydra.utils.instantiate(OmegaConf.to_container(cfg.summary.lens_decision, resolve=True))
    b1 = {**GOOD, "final_core_lr_auc": core_lr_auc, "core_reliance": reliance}
    arms = {"experiment=lens_b1": {"experiment": "lens_b1", "n_completed": 1, "strings": {},
                                   "metrics": {k: {"mean": v} for k, v in b1.items()}}}
    checks = plugin(arms=arms, jobs=[])["result"]["checks"]["lens_b1"]
    return {
        "callback_core": gates.verdicts({"core_lr_auc": core_lr_auc, "radial_lr_auc": 0.5})["core_gate"],
        "tree_core": checks["core_gate"]["verdict"],
        "callback_reliance": sens.summary()["core_reliance_verdict"],
        "tree_reliance": checks["core_reliance"]["verdict"],
    }


def test_a_command_line_override_moves_callback_and_tree_together():
    default = _verdicts([], core_lr_auc=0.70, reliance=0.07)
    assert default == {"callback_core": "FAIL", "tree_core": "FAIL", "callback_reliance": "FAIL", "tree_reliance": "FAIL"}
    moved = _verdicts(["thresholds.core_fail_above=0.75", "thresholds.reliance_fail_above=0.08"], core_lr_auc=0.70, reliance=0.07)
    assert moved == {"callback_core": "WARN", "tree_core": "WARN", "callback_reliance": "WARN", "tree_reliance": "WARN"}


def test_every_lens_experiment_reads_the_one_thresholds_file():
    for name in ("lens_a1", "lens_b1", "lens_b2", "lens_b3", "lens_b4", "lens_smoke"):
        cfg = compose([f"experiment={name}", "thresholds.thetae_spread_fail_above=0.33"])
        cb = cfg.callbacks
        assert cb.thetae_auroc.verdicts.thetae.spread_fail == 0.33
        assert cfg.summary.lens_decision.thresholds.thetae_spread_fail_above == 0.33
        assert hydra.utils.instantiate(cb.thetae_auroc).verdicts["thetae"]["spread_fail"] == 0.33
        assert cb.shortcut_gates.core_fail_above == cfg.thresholds.core_fail_above == 0.65
        assert cb.core_sensitivity.reliance_pass_below == cfg.thresholds.reliance_pass_below == 0.03
        assert cb.thetae_auroc.verdicts.thetae.min_auroc_pass == cfg.thresholds.thetae_min_pass_above == 0.80


@pytest.mark.parametrize("cls, names", [
    (ShortcutGates, ("core_pass_below", "core_fail_above", "radial_pass_below", "radial_fail_above")),
    (CoreSensitivity, ("reliance_pass_below", "reliance_fail_above")),
])
def test_callbacks_have_no_threshold_defaults(cls, names):
    params = inspect.signature(cls.__init__).parameters
    assert all(params[n].default is inspect.Parameter.empty for n in names)
