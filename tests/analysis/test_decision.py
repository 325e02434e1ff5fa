"""Seed 004's gates and decision tree on hand-built arms, one test per branch."""

from __future__ import annotations

import pytest

from analysis.decision import DEFAULT_THRESHOLDS, gate_verdict, gate_verdict_above, lens_decision

GOOD = {  # passes every criterion
    "final_core_lr_auc": 0.55,
    "final_radial_lr_auc": 0.52,
    "core_reliance": 0.01,
    "test_thetae_min_auroc": 0.85,
    "test_thetae_spread": 0.10,
    "best_val_auroc": 0.95,
    "test_auroc": 0.93,
}


def arm(**changes):
    return {**GOOD, **changes}


def test_gate_verdict_bands_and_edges():
    assert gate_verdict(0.59, 0.60, 0.65) == "PASS"
    assert gate_verdict(0.60, 0.60, 0.65) == "WARN"  # edges are WARN
    assert gate_verdict(0.65, 0.60, 0.65) == "WARN"
    assert gate_verdict(0.651, 0.60, 0.65) == "FAIL"
    assert gate_verdict(float("nan"), 0.60, 0.65) == "N/A"
    assert gate_verdict_above(0.81, 0.80, 0.70) == "PASS"
    assert gate_verdict_above(0.75, 0.80, 0.70) == "WARN"
    assert gate_verdict_above(0.69, 0.80, 0.70) == "FAIL"


def test_defaults_are_the_seed_numbers():
    assert DEFAULT_THRESHOLDS["core_pass_below"] == 0.60 and DEFAULT_THRESHOLDS["core_fail_above"] == 0.65
    assert DEFAULT_THRESHOLDS["reliance_pass_below"] == 0.03 and DEFAULT_THRESHOLDS["reliance_fail_above"] == 0.05
    assert DEFAULT_THRESHOLDS["thetae_min_pass_above"] == 0.80 and DEFAULT_THRESHOLDS["thetae_spread_fail_above"] == 0.20
    assert DEFAULT_THRESHOLDS["val_auroc_min"] == 0.90 and DEFAULT_THRESHOLDS["test_auroc_min"] == 0.88


def test_success():
    d = lens_decision({"lens_a1": arm(final_core_lr_auc=0.7), "lens_b1": arm()})
    assert d["verdict"] == "SUCCESS" and d["missing"] == []
    assert any("0.5500" in r and "PASS" in r for r in d["reasons"])  # the numbers that led to it


@pytest.mark.parametrize("core, reliance", [(0.62, 0.02), (0.62, 0.04), (0.55, 0.04), (0.65, 0.05)])
def test_acceptable(core, reliance):
    d = lens_decision({"lens_a1": GOOD, "lens_b1": arm(final_core_lr_auc=core, core_reliance=reliance)})
    assert d["verdict"] == "ACCEPTABLE"


def test_stop_shortcut():
    d = lens_decision({"lens_a1": GOOD, "lens_b1": arm(final_core_lr_auc=0.70, core_reliance=0.08)})
    assert d["verdict"] == "STOP_SHORTCUT"
    assert any("0.7000" in r for r in d["reasons"]) and any("0.0800" in r for r in d["reasons"])


B1_MASK = arm(final_core_lr_auc=0.70, core_reliance=0.02, test_thetae_spread=0.18)


def test_use_b3_when_b3_passes_all():
    arms = {"lens_a1": GOOD, "lens_b1": B1_MASK, "lens_b2": arm(), "lens_b3": arm(), "lens_b4": arm()}
    d = lens_decision(arms)
    assert d["verdict"] == "TEST_MASKING_VARIANTS->USE_B3"
    assert d["branch"] == "TEST_MASKING_VARIANTS" and d["choice"] == "USE_B3"


def test_use_b2_when_b3_fails_and_b2_has_better_spread():
    arms = {"lens_a1": GOOD, "lens_b1": B1_MASK, "lens_b3": arm(best_val_auroc=0.85),
            "lens_b2": arm(test_thetae_spread=0.12), "lens_b4": arm(core_reliance=0.04)}
    assert lens_decision(arms)["verdict"] == "TEST_MASKING_VARIANTS->USE_B2"


def test_use_b4_when_both_qualify_and_b4_spread_is_smaller():
    arms = {"lens_a1": GOOD, "lens_b1": B1_MASK, "lens_b3": arm(final_core_lr_auc=0.62),
            "lens_b2": arm(test_thetae_spread=0.12), "lens_b4": arm(test_thetae_spread=0.08)}
    d = lens_decision(arms)
    assert d["verdict"] == "TEST_MASKING_VARIANTS->USE_B4"
    assert any("lens_b4" in r and "better" in r for r in d["reasons"])


def test_stop_data_redesign_when_all_fail_core_criteria():
    arms = {"lens_a1": GOOD, "lens_b1": B1_MASK, "lens_b3": arm(final_core_lr_auc=0.66),
            "lens_b2": arm(core_reliance=0.04), "lens_b4": arm(final_core_lr_auc=0.61)}
    assert lens_decision(arms)["verdict"] == "TEST_MASKING_VARIANTS->STOP_DATA_REDESIGN"


def test_no_winner_when_core_passes_but_spread_is_not_better():
    b1 = {**B1_MASK, "test_thetae_spread": 0.05}
    arms = {"lens_a1": GOOD, "lens_b1": b1, "lens_b3": arm(test_thetae_min_auroc=0.72),
            "lens_b2": arm(test_thetae_spread=0.10), "lens_b4": arm(test_thetae_spread=0.12)}
    d = lens_decision(arms)
    assert d["verdict"] == "TEST_MASKING_VARIANTS->NO_WINNER"


def test_gap_case_core_ok_but_reliance_fails_goes_to_variants():
    arms = {"lens_a1": GOOD, "lens_b1": arm(final_core_lr_auc=0.55, core_reliance=0.09), "lens_b3": arm(),
            "lens_b2": arm(), "lens_b4": arm()}
    d = lens_decision(arms)
    assert d["verdict"] == "TEST_MASKING_VARIANTS->USE_B3"
    assert any("leaves out" in r for r in d["reasons"])


def test_missing_arms_and_metrics_do_not_crash():
    d = lens_decision({"lens_a1": GOOD})
    assert d["verdict"] == "INCOMPLETE" and "lens_b1" in d["missing"]
    d = lens_decision({"lens_b1": {"final_core_lr_auc": 0.55}})
    assert d["verdict"] == "INCOMPLETE" and "lens_b1.core_reliance" in d["missing"] and "lens_a1" in d["missing"]
    d = lens_decision({"lens_a1": GOOD, "lens_b1": B1_MASK, "lens_b2": arm()})
    assert d["verdict"] == "TEST_MASKING_VARIANTS->PENDING" and {"lens_b3", "lens_b4"} <= set(d["missing"])
    # B3 present and failing, B2 qualifying, B4 missing: B2 qualifies on its own numbers
    d = lens_decision({"lens_a1": GOOD, "lens_b1": B1_MASK, "lens_b3": arm(best_val_auroc=0.8), "lens_b2": arm()})
    assert d["verdict"] == "TEST_MASKING_VARIANTS->USE_B2" and "lens_b4" in d["missing"]
    # B3 passes: the missing others do not matter
    d = lens_decision({"lens_a1": GOOD, "lens_b1": B1_MASK, "lens_b3": arm()})
    assert d["verdict"] == "TEST_MASKING_VARIANTS->USE_B3"
    # a variant with a NaN metric cannot pass "all criteria"
    d = lens_decision({"lens_a1": GOOD, "lens_b1": B1_MASK, "lens_b3": arm(test_thetae_spread=float("nan")),
                       "lens_b2": arm(final_core_lr_auc=0.7), "lens_b4": arm(final_core_lr_auc=0.7)})
    assert d["verdict"] == "TEST_MASKING_VARIANTS->NO_WINNER"


def test_thresholds_are_overridable_and_checked():
    arms = {"lens_a1": GOOD, "lens_b1": arm(final_core_lr_auc=0.62)}
    assert lens_decision(arms)["verdict"] == "ACCEPTABLE"
    assert lens_decision(arms, {"core_pass_below": 0.63})["verdict"] == "SUCCESS"
    with pytest.raises(ValueError, match="core_pass_belwo"):
        lens_decision(arms, {"core_pass_belwo": 0.63})


def test_string_core_gate_is_a_fallback():
    b1 = {k: v for k, v in GOOD.items() if k != "final_core_lr_auc"} | {"core_gate": "FAIL", "core_reliance": 0.08}
    assert lens_decision({"lens_a1": GOOD, "lens_b1": b1})["verdict"] == "STOP_SHORTCUT"
