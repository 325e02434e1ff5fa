"""The lens decision tree on issue 26's redesigned data: design C's arms in B1-B4's roles."""

from __future__ import annotations

from analysis.lens.decision import lens_summary
from tests.lens.test_decision import TH, arm_info

# C1 on host-matched data: core gate and reliance pass (the tree's SUCCESS branch)
C1 = {"final_core_lr_auc": 0.51, "core_reliance": 0.02, "test_thetae_min_auroc": 0.6, "test_thetae_spread": 0.2,
      "best_val_auroc": 0.73, "test_auroc": 0.73, "final_radial_lr_auc": 0.63}
# B1 on the seed's data: both fail (STOP_SHORTCUT)
B1 = {**C1, "final_core_lr_auc": 0.96, "core_reliance": 0.30}


def test_design_c_runs_the_tree_with_c1_as_b1():
    out = lens_summary(arms={"experiment=lens_c1": arm_info("lens_c1", C1)}, jobs=[], thresholds=TH)
    assert out["result"]["verdict"] == "SUCCESS"
    assert "B1 core LR AUC 0.5100 -> PASS" in out["markdown"] and "Design C: lens_c1-c4 in B1-B4's roles" in out["markdown"]
    assert "| lens_c1 |" in out["markdown"]  # the checks table names the experiment, not its role


def test_both_designs_in_one_sweep_get_one_verdict_each():
    arms = {"experiment=lens_b1": arm_info("lens_b1", B1), "experiment=lens_c1": arm_info("lens_c1", C1)}
    out = lens_summary(arms=arms, jobs=[], thresholds=TH)
    by_design = out["result"]["by_design"]
    assert out["result"]["verdict"] is None
    assert by_design["B"]["verdict"] == "STOP_SHORTCUT" and by_design["C"]["verdict"] == "SUCCESS"
    assert out["markdown"].index("### Design B") < out["markdown"].index("### Design C")
    # a B-only sweep reads as before: one verdict, no design headings
    alone = lens_summary(arms={"experiment=lens_b1": arm_info("lens_b1", B1)}, jobs=[], thresholds=TH)
    assert alone["result"]["verdict"] == "STOP_SHORTCUT" and "### Design" not in alone["markdown"]
