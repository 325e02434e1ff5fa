"""Seed 004's gates and decision tree on hand-built arms, one test per branch; the summary plugin."""

from __future__ import annotations

import functools
import inspect
from pathlib import Path

import pytest
from omegaconf import OmegaConf

from analysis.lens import decision
from analysis.lens.decision import THRESHOLD_KEYS, lens_summary
from analysis.metrics import gate_verdict, gate_verdict_above

#: The one copy of the seed's thresholds: conf/thresholds/lens.yaml.
TH = OmegaConf.to_container(OmegaConf.load(Path(__file__).resolve().parents[2] / "conf" / "thresholds" / "lens.yaml"))


def lens_decision(arms, thresholds=None):
    """The tree with the configured thresholds, updated with `thresholds`."""
    return decision.lens_decision(arms, {**TH, **(thresholds or {})})

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


def test_config_holds_the_seed_numbers_and_code_holds_none():
    assert set(TH) == set(THRESHOLD_KEYS)
    assert TH["core_pass_below"] == 0.60 and TH["core_fail_above"] == 0.65
    assert TH["radial_pass_below"] == 0.55 and TH["radial_fail_above"] == 0.60
    assert TH["reliance_pass_below"] == 0.03 and TH["reliance_fail_above"] == 0.05
    assert TH["thetae_min_pass_above"] == 0.80 and TH["thetae_min_fail_below"] == 0.70
    assert TH["thetae_spread_pass_below"] == 0.15 and TH["thetae_spread_fail_above"] == 0.20
    assert TH["val_auroc_min"] == 0.90 and TH["test_auroc_min"] == 0.88
    assert not hasattr(decision, "DEFAULT_THRESHOLDS")
    assert inspect.signature(decision.lens_decision).parameters["thresholds"].default is inspect.Parameter.empty


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
    partial = {k: v for k, v in TH.items() if k != "reliance_fail_above"}
    with pytest.raises(ValueError, match=r"reliance_fail_above.*conf/thresholds/lens.yaml"):
        decision.lens_decision(arms, partial)
    with pytest.raises(ValueError, match="core_pass_below"):
        decision.lens_decision(arms, {**TH, "core_pass_below": None})


def test_string_core_gate_is_a_fallback():
    b1 = {k: v for k, v in GOOD.items() if k != "final_core_lr_auc"} | {"core_gate": "FAIL", "core_reliance": 0.08}
    assert lens_decision({"lens_a1": GOOD, "lens_b1": b1})["verdict"] == "STOP_SHORTCUT"


def arm_info(experiment: str, means: dict, n: int = 2, strings: dict | None = None) -> dict:
    """An arm as the summarizer hands it to plugins (metric -> {mean, ...})."""
    return {"experiment": experiment, "n_completed": n, "n_failed": 0, "seeds": list(range(n)), "job_dirs": [],
            "metrics": {k: {"n": n, "mean": v} for k, v in means.items()}, "strings": strings or {}}


def test_lens_summary_runs_the_tree_on_arm_means():
    arms = {"experiment=lens_a1": arm_info("lens_a1", GOOD),
            "experiment=lens_b1": arm_info("lens_b1", arm(final_core_lr_auc=0.70, core_reliance=0.08)),
            "experiment=other": arm_info("other", GOOD)}
    out = lens_summary(arms=arms, jobs=[], thresholds=TH)
    assert out["result"]["verdict"] == "STOP_SHORTCUT" and set(out["result"]["checks"]) == {"lens_a1", "lens_b1"}
    assert "Lens decision" in out["title"] and "**Verdict: STOP_SHORTCUT**" in out["markdown"]
    assert "| lens_b1 | 0.7000 FAIL |" in out["markdown"]  # the per-arm checks table
    # the same arms under other thresholds: the tree follows them
    relaxed = {**TH, "core_fail_above": 0.75, "reliance_fail_above": 0.1}
    assert lens_summary(arms=arms, jobs=[], thresholds=relaxed)["result"]["verdict"] == "ACCEPTABLE"
    # a string verdict agreed by every seed is an input too (core_gate when no numeric value exists)
    b1 = {k: v for k, v in GOOD.items() if k != "final_core_lr_auc"} | {"core_reliance": 0.08}
    arms["experiment=lens_b1"] = arm_info("lens_b1", b1, strings={"core_gate": "FAIL"})
    assert lens_summary(arms=arms, jobs=[], thresholds=TH)["result"]["verdict"] == "STOP_SHORTCUT"


def test_lens_summary_has_nothing_to_say_without_lens_arms_and_refuses_to_guess():
    assert lens_summary(arms={"experiment=puzzle": arm_info("puzzle_exp4", {"x": 1.0})}, jobs=[], thresholds=TH) is None
    assert lens_summary(arms={"experiment=lens_b1": arm_info("lens_b1", GOOD, n=0)}, jobs=[], thresholds=TH) is None
    two = {"experiment=lens_b1": arm_info("lens_b1", GOOD), "experiment=lens_b1 data.fraction=0.5": arm_info("lens_b1", GOOD)}
    out = lens_summary(arms=two, jobs=[], thresholds=TH)
    assert out["result"]["verdict"] is None and "several arms" in out["markdown"]


def test_lens_summary_is_a_partial_taking_arms_and_jobs():
    # how the summarizer calls it: instantiate(_partial_=True, thresholds=...)(arms=..., jobs=...)
    fn = functools.partial(lens_summary, thresholds=TH)
    assert fn(arms={}, jobs=[]) is None


# --- survivors of a mutation run (issue 27): the per-arm table and the report, written out ----------------

def test_arm_checks_table_of_a_full_arm_written_out():
    checks = decision.arm_checks(arm(final_radial_lr_auc=0.57, best_val_auroc=0.90, test_auroc=0.88), TH)
    assert checks == {
        "core_gate": {"metric": "final_core_lr_auc", "value": 0.55, "verdict": "PASS"},
        "radial_gate": {"metric": "final_radial_lr_auc", "value": 0.57, "verdict": "WARN"},  # 0.55 <= 0.57 <= 0.60
        "core_reliance": {"metric": "core_reliance", "value": 0.01, "verdict": "PASS"},
        "thetae_min": {"metric": "test_thetae_min_auroc", "value": 0.85, "verdict": "PASS"},
        "thetae_spread": {"metric": "test_thetae_spread", "value": 0.10, "verdict": "PASS"},
        # exactly on the minimum: not above it, so FAIL
        "val_auroc": {"metric": "best_val_auroc", "value": 0.90, "verdict": "FAIL"},
        "test_auroc": {"metric": "test_auroc", "value": 0.88, "verdict": "FAIL"},
    }
    assert decision.arm_checks(arm(final_radial_lr_auc=0.61), TH)["radial_gate"]["verdict"] == "FAIL"
    assert decision.arm_checks(arm(final_radial_lr_auc=0.54), TH)["radial_gate"]["verdict"] == "PASS"


def test_arm_checks_of_an_empty_arm_and_of_string_or_nan_values():
    empty = decision.arm_checks({}, TH)
    assert {k: (c["metric"], c["value"], c["verdict"]) for k, c in empty.items()} == {
        "core_gate": ("final_core_lr_auc", None, "N/A"),
        "radial_gate": ("final_radial_lr_auc", None, "N/A"),
        "core_reliance": ("core_reliance", None, "N/A"),
        "thetae_min": ("test_thetae_min_auroc", None, "N/A"),
        "thetae_spread": ("test_thetae_spread", None, "N/A"),
        "val_auroc": ("best_val_auroc", None, "N/A"),
        "test_auroc": ("test_auroc", None, "N/A"),
    }
    # a NaN mean is no value: N/A, never FAIL (NaN > min is False)
    nan = decision.arm_checks(arm(best_val_auroc=float("nan"), test_auroc=float("nan")), TH)
    assert (nan["val_auroc"]["value"], nan["val_auroc"]["verdict"]) == (None, "N/A")
    assert (nan["test_auroc"]["value"], nan["test_auroc"]["verdict"]) == (None, "N/A")
    # a string core verdict (any case) when no numeric value exists; any other string is N/A
    for given, verdict in (("warn", "WARN"), ("Pass", "PASS"), ("FAIL", "FAIL"), ("maybe", "N/A")):
        core = decision.arm_checks({"core_gate": given}, TH)["core_gate"]
        assert core == ({"metric": "core_gate", "value": None, "verdict": verdict} if verdict != "N/A"
                        else {"metric": "final_core_lr_auc", "value": None, "verdict": "N/A"})
    # the fallback key: core_lr_auc when final_core_lr_auc is absent
    assert decision.arm_checks({"core_lr_auc": 0.7}, TH)["core_gate"] == {"metric": "core_lr_auc", "value": 0.7, "verdict": "FAIL"}


def test_lens_summary_markdown_written_out():
    b1 = arm(final_radial_lr_auc=0.57, best_val_auroc=0.90)
    out = lens_summary(arms={"experiment=lens_b1": arm_info("lens_b1", b1)}, jobs=[], thresholds=TH)
    assert out["title"] == "Lens decision (seed 004, section 10)"
    assert out["result"]["verdict"] == "SUCCESS" and out["result"]["missing"] == ["lens_a1"]
    assert out["markdown"] == "\n".join([
        "**Verdict: SUCCESS**",
        "",
        "Missing: ['lens_a1']",
        "",
        "- lens_a1 (paired diagnostic baseline) is missing; the tree runs on B1 alone",
        "- B1 core LR AUC 0.5500 -> PASS (PASS < 0.6, FAIL > 0.65)",
        "- B1 core_reliance 0.0100 -> PASS (PASS < 0.03, FAIL > 0.05)",
        "- core gate PASS and core_reliance PASS: use the B1 config, proceed to full training",
        "",
        "Per-arm checks (seed means; thresholds from the runs' `thresholds` node):",
        "",
        "| arm | core_gate | radial_gate | core_reliance | thetae_min | thetae_spread | val_auroc | test_auroc |",
        "|---|---|---|---|---|---|---|---|",
        "| lens_b1 | 0.5500 PASS | 0.5700 WARN | 0.0100 PASS | 0.8500 PASS | 0.1000 PASS | 0.9000 FAIL | 0.9300 PASS |",
    ])
    # several arms for one experiment: a note, no verdict
    two = {"experiment=lens_b1": arm_info("lens_b1", GOOD), "experiment=lens_b1 x=1": arm_info("lens_b1", GOOD)}
    note = ("lens decision skipped: experiments with several arms {'lens_b1': ['experiment=lens_b1', 'experiment=lens_b1 x=1']}; "
            "summarize one arm each")
    assert lens_summary(arms=two, jobs=[], thresholds=TH) == {
        "title": "Lens decision (seed 004, section 10)", "markdown": note, "result": {"note": note, "verdict": None}}


def test_a_missing_value_is_printed_as_missing():
    d = lens_decision({"lens_a1": {"test_auroc": 0.9}, "lens_b1": GOOD})
    assert d["reasons"][0] == "A1 (paired diagnostic, for reference): final_core_lr_auc=missing N/A, core_reliance=missing N/A"


A1_TXT = "A1 (paired diagnostic, for reference): final_core_lr_auc=0.5500 PASS, core_reliance=0.0100 PASS"


def _variant(name: str, core: str, spread: str, verdict: str = "PASS", passes: bool = True) -> str:
    """One masking variant's reason line, as _describe writes it over ALL_CRITERIA."""
    return (f"{name}: final_core_lr_auc={core} {verdict}, core_reliance=0.0100 PASS, test_thetae_min_auroc=0.8500 PASS, "
            f"test_thetae_spread={spread} PASS, best_val_auroc=0.9500 PASS -> "
            + ("passes all criteria" if passes else "does not pass all"))


@pytest.mark.parametrize("arms, verdict, missing, reasons", [
    ({"lens_a1": GOOD}, "INCOMPLETE", ["lens_b1"],
     [A1_TXT, "lens_b1 (unpaired deployment baseline) is missing: the tree starts from B1"]),
    ({"lens_b1": {"final_core_lr_auc": 0.55}}, "INCOMPLETE", ["lens_a1", "lens_b1.core_reliance"],
     ["lens_a1 (paired diagnostic baseline) is missing; the tree runs on B1 alone",
      "B1 lacks ['lens_b1.core_reliance']: cannot enter the tree"]),
    ({"lens_a1": GOOD, "lens_b1": GOOD}, "SUCCESS", [],
     [A1_TXT, "B1 core LR AUC 0.5500 -> PASS (PASS < 0.6, FAIL > 0.65)",
      "B1 core_reliance 0.0100 -> PASS (PASS < 0.03, FAIL > 0.05)",
      "core gate PASS and core_reliance PASS: use the B1 config, proceed to full training"]),
    ({"lens_a1": GOOD, "lens_b1": arm(final_core_lr_auc=0.62)}, "ACCEPTABLE", [],
     [A1_TXT, "B1 core LR AUC 0.6200 -> WARN (PASS < 0.6, FAIL > 0.65)",
      "B1 core_reliance 0.0100 -> PASS (PASS < 0.03, FAIL > 0.05)",
      "core gate and core_reliance below their FAIL bands: use the B1 config with monitoring"]),
    ({"lens_a1": GOOD, "lens_b1": arm(final_core_lr_auc=0.70, core_reliance=0.08)}, "STOP_SHORTCUT", [],
     [A1_TXT, "B1 core LR AUC 0.7000 -> FAIL (PASS < 0.6, FAIL > 0.65)",
      "B1 core_reliance 0.0800 -> FAIL (PASS < 0.03, FAIL > 0.05)",
      "core gate FAIL and core_reliance FAIL: the model is exploiting the core shortcut"]),
    ({"lens_a1": GOOD, "lens_b1": B1_MASK, "lens_b3": arm(final_core_lr_auc=0.62),
      "lens_b2": arm(test_thetae_spread=0.12), "lens_b4": arm(test_thetae_spread=0.08)}, "TEST_MASKING_VARIANTS->USE_B4", [],
     [A1_TXT, "B1 core LR AUC 0.7000 -> FAIL (PASS < 0.6, FAIL > 0.65)",
      "B1 core_reliance 0.0200 -> PASS (PASS < 0.03, FAIL > 0.05)",
      "core gate FAIL but core_reliance not FAIL: test the masking variants B2, B3, B4",
      _variant("lens_b3", "0.6200", "0.1000", "WARN", passes=False),
      _variant("lens_b2", "0.5500", "0.1200"),
      _variant("lens_b4", "0.5500", "0.0800"),
      "lens_b2 θ_E spread 0.1200 vs B1 0.1800: better",
      "lens_b4 θ_E spread 0.0800 vs B1 0.1800: better"]),
])
def test_reasons_of_each_top_branch_written_out(arms, verdict, missing, reasons):
    d = lens_decision(arms)
    assert (d["verdict"], d["missing"], d["reasons"]) == (verdict, missing, reasons)
    assert d["thresholds"] == {k: float(v) for k, v in TH.items()}


@pytest.mark.parametrize("arms, verdict, last", [
    ({"lens_b1": arm(final_core_lr_auc=0.55, core_reliance=0.09)}, "TEST_MASKING_VARIANTS->PENDING",
     ["core gate not FAIL but core_reliance FAIL: a case the seed's tree leaves out; the model leans on the core, so test "
      "the masking variants B2, B3, B4 (core masking targets exactly that)",
      "B3 is checked first and is missing: run it before choosing"]),
    ({"lens_b1": B1_MASK, "lens_b3": arm()}, "TEST_MASKING_VARIANTS->USE_B3",
     [_variant("lens_b3", "0.5500", "0.1000"), "B3 (scheduled masking) passes all criteria: use B3"]),
    ({"lens_b1": B1_MASK, "lens_b3": arm(best_val_auroc=0.8), "lens_b2": arm()}, "TEST_MASKING_VARIANTS->USE_B2",
     ["lens_b2 θ_E spread 0.1000 vs B1 0.1800: better", "['lens_b4'] missing; lens_b2 qualifies on its own numbers"]),
    ({"lens_b1": {k: v for k, v in B1_MASK.items() if k != "test_thetae_spread"}, "lens_b3": arm(best_val_auroc=0.8),
      "lens_b2": arm()}, "TEST_MASKING_VARIANTS->PENDING",
     ["['lens_b2'] pass all criteria but B1's θ_E spread is missing, so 'better spread' is undecidable"]),
    ({"lens_b1": B1_MASK, "lens_b3": arm(best_val_auroc=0.8), "lens_b2": arm(best_val_auroc=0.8)},
     "TEST_MASKING_VARIANTS->PENDING", ["no present variant qualifies and some are missing: run them before choosing"]),
    ({"lens_b1": B1_MASK, "lens_b3": arm(final_core_lr_auc=0.66), "lens_b2": arm(core_reliance=0.04),
      "lens_b4": arm(final_core_lr_auc=0.61)}, "TEST_MASKING_VARIANTS->STOP_DATA_REDESIGN",
     ["every masking variant fails the core criteria (core gate PASS and core_reliance PASS)"]),
    ({"lens_b1": {**B1_MASK, "test_thetae_spread": 0.05}, "lens_b3": arm(test_thetae_min_auroc=0.72),
      "lens_b2": arm(test_thetae_spread=0.10), "lens_b4": arm(core_reliance=0.04)}, "TEST_MASKING_VARIANTS->NO_WINNER",
     ["lens_b2 θ_E spread 0.1000 vs B1 0.0500: not better",
      "['lens_b3', 'lens_b2'] pass the core criteria but no variant qualifies (B3 fails another criterion; B2/B4 fail "
      "one or lack a better θ_E spread): the seed's tree is silent here"]),
])
def test_closing_reasons_of_the_variant_subtree(arms, verdict, last):
    d = lens_decision(arms)
    assert d["verdict"] == verdict and d["reasons"][-len(last):] == last


# --- survivors of the second mutation run (issue 27): designs B and C, and A1 alone ----------------------

_TABLE_HEAD = ["Per-arm checks (seed means; thresholds from the runs' `thresholds` node):", "",
               "| arm | core_gate | radial_gate | core_reliance | thetae_min | thetae_spread | val_auroc | test_auroc |",
               "|---|---|---|---|---|---|---|---|"]
_GOOD_ROW = "0.5500 PASS | 0.5200 PASS | 0.0100 PASS | 0.8500 PASS | 0.1000 PASS | 0.9500 PASS | 0.9300 PASS |"
_A1_REASON = "- A1 (paired diagnostic, for reference): final_core_lr_auc=0.5500 PASS, core_reliance=0.0100 PASS"


def test_lens_summary_runs_the_tree_once_per_design_written_out():
    arms = {"experiment=lens_a1": arm_info("lens_a1", GOOD), "experiment=lens_b1": arm_info("lens_b1", GOOD),
            "experiment=lens_c1": arm_info("lens_c1", arm(final_core_lr_auc=0.70, core_reliance=0.08))}
    out = lens_summary(arms=arms, jobs=[], thresholds=TH)
    assert out["result"]["verdict"] is None
    assert {k: v["verdict"] for k, v in out["result"]["by_design"].items()} == {"B": "SUCCESS", "C": "STOP_SHORTCUT"}
    assert set(out["result"]["by_design"]["C"]["checks"]) == {"lens_b1", "lens_a1"}  # C1 in B1's role
    assert out["markdown"] == "\n".join([
        "### Design B (the seed's)", "",
        "**Verdict: SUCCESS**", "",
        _A1_REASON,
        "- B1 core LR AUC 0.5500 -> PASS (PASS < 0.6, FAIL > 0.65)",
        "- B1 core_reliance 0.0100 -> PASS (PASS < 0.03, FAIL > 0.05)",
        "- core gate PASS and core_reliance PASS: use the B1 config, proceed to full training", "",
        *_TABLE_HEAD, "| lens_b1 | " + _GOOD_ROW, "| lens_a1 | " + _GOOD_ROW, "",
        "### Design C: lens_c1-c4 in B1-B4's roles", "",
        "(the reasons below name the roles: B1 is lens_c1 here)", "",
        "**Verdict: STOP_SHORTCUT**", "",
        _A1_REASON,
        "- B1 core LR AUC 0.7000 -> FAIL (PASS < 0.6, FAIL > 0.65)",
        "- B1 core_reliance 0.0800 -> FAIL (PASS < 0.03, FAIL > 0.05)",
        "- core gate FAIL and core_reliance FAIL: the model is exploiting the core shortcut", "",
        *_TABLE_HEAD,
        "| lens_c1 | 0.7000 FAIL | 0.5200 PASS | 0.0800 FAIL | 0.8500 PASS | 0.1000 PASS | 0.9500 PASS | 0.9300 PASS |",
        "| lens_a1 | " + _GOOD_ROW,
    ])


def test_lens_summary_of_a1_alone_is_incomplete_on_design_b():
    out = lens_summary(arms={"experiment=lens_a1": arm_info("lens_a1", GOOD)}, jobs=[], thresholds=TH)
    assert out["result"]["verdict"] == "INCOMPLETE" and out["result"]["missing"] == ["lens_b1"]
    assert out["markdown"] == "\n".join([
        "**Verdict: INCOMPLETE**", "", "Missing: ['lens_b1']", "", _A1_REASON,
        "- lens_b1 (unpaired deployment baseline) is missing: the tree starts from B1", "",
        *_TABLE_HEAD, "| lens_a1 | " + _GOOD_ROW,
    ])


def test_a_variant_spread_equal_to_b1s_is_not_better():
    arms = {"lens_a1": GOOD, "lens_b1": {**B1_MASK, "test_thetae_spread": 0.10}, "lens_b3": arm(best_val_auroc=0.8),
            "lens_b2": arm(), "lens_b4": arm(core_reliance=0.04)}
    d = lens_decision(arms)
    assert d["verdict"] == "TEST_MASKING_VARIANTS->NO_WINNER"
    assert "lens_b2 θ_E spread 0.1000 vs B1 0.1000: not better" in d["reasons"]


def test_a_missing_b1_spread_is_listed_as_missing():
    b1 = {k: v for k, v in B1_MASK.items() if k != "test_thetae_spread"}
    d = lens_decision({"lens_a1": GOOD, "lens_b1": b1, "lens_b3": arm(best_val_auroc=0.8), "lens_b2": arm()})
    assert d["verdict"] == "TEST_MASKING_VARIANTS->PENDING"
    assert d["missing"] == ["lens_b4", "lens_b1.test_thetae_spread"]
