"""Seed 004's gates and section-10 decision tree as pure functions, and its summary plugin.

The thresholds (seed 004 sections 6.1-6.4) live once, in conf/thresholds/lens.yaml; every function here
takes them as an argument (the keys of THRESHOLD_KEYS) and holds no number of its own. The per-run
verdicts of the lens callbacks and the per-arm checks here both come from analysis.metrics.gate_verdict /
gate_verdict_above, so one thresholds node gives one answer everywhere.

A value exactly on a band edge is WARN (neither "<" nor ">" holds), so the tree's "core_reliance < 0.05"
is read as "not FAIL" and "> 0.05" as FAIL; that makes the four top branches cover every case but one,
which the tree leaves out (core gate not FAIL while reliance FAILs) and which is sent to the masking
variants, the remedy aimed at core reliance; its reasons say so.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

from analysis.metrics import gate_verdict, gate_verdict_above
from analysis.summary import markdown_table

#: Every threshold the lens verdicts need (conf/thresholds/lens.yaml).
THRESHOLD_KEYS = (
    "core_pass_below",
    "core_fail_above",
    "radial_pass_below",
    "radial_fail_above",
    "reliance_pass_below",
    "reliance_fail_above",
    "thetae_min_pass_above",
    "thetae_min_fail_below",
    "thetae_spread_pass_below",
    "thetae_spread_fail_above",
    "val_auroc_min",
    "test_auroc_min",
)

#: The data designs the tree runs on, each with its arms in the seed's B1-B4 roles: B, the seed's unpaired data;
#: C, issue 26's host-matched negatives (C1 = B1's training config on them; C2-C4 its masking arms, when run).
#: A1 (paired data) is every design's reference arm.
DESIGNS = {"B": ("lens_b1", "lens_b2", "lens_b3", "lens_b4"), "C": ("lens_c1", "lens_c2", "lens_c3", "lens_c4")}
LENS_ARMS = ("lens_a1", *DESIGNS["B"], *DESIGNS["C"])
#: Metric names tried, in order, for the core gate value of an arm.
CORE_KEYS = ("final_core_lr_auc", "core_lr_auc")


def _value(arm: Mapping[str, Any], key: str) -> float | None:
    v = arm.get(key)
    if isinstance(v, bool) or not isinstance(v, (int, float)):
        return None
    v = float(v)
    return None if math.isnan(v) else v


def _f(v: float | None) -> str:
    return "missing" if v is None else f"{v:.4f}"


def resolve_thresholds(thresholds: Mapping[str, Any] | None) -> dict[str, float]:
    """The lens thresholds as floats, after checking that every key of THRESHOLD_KEYS is there.

    Args:
        thresholds: The ``thresholds`` node of a lens run (conf/thresholds/lens.yaml); a dict or DictConfig.

    Raises:
        ValueError: A missing key (names it and the config file).
    """
    given = dict(thresholds or {})
    missing = [k for k in THRESHOLD_KEYS if given.get(k) is None]
    if missing:
        raise ValueError(
            f"lens thresholds: missing {missing}; they live in conf/thresholds/lens.yaml (select it with "
            f"`- /thresholds: lens` in the experiment's defaults)"
        )
    # Other keys are left alone: a family's thresholds node may hold more than the tree reads, and a
    # misspelt key on the command line is already refused by Hydra (the node is in struct mode).
    return {k: float(given[k]) for k in THRESHOLD_KEYS}


def arm_checks(arm: Mapping[str, Any], th: Mapping[str, float]) -> dict[str, dict[str, Any]]:
    """Every gate of one arm: criterion -> {metric, value, verdict}.

    The core gate reads ``final_core_lr_auc`` (else ``core_lr_auc``); when neither is numeric, a string
    ``core_gate`` verdict ("PASS"/"WARN"/"FAIL") is used as it is.
    """
    core_key = next((k for k in CORE_KEYS if _value(arm, k) is not None), None)
    if core_key is not None:
        core = {"metric": core_key, "value": _value(arm, core_key),
                "verdict": gate_verdict(_value(arm, core_key), th["core_pass_below"], th["core_fail_above"])}
    elif isinstance(arm.get("core_gate"), str) and arm["core_gate"].upper() in ("PASS", "WARN", "FAIL"):
        core = {"metric": "core_gate", "value": None, "verdict": arm["core_gate"].upper()}
    else:
        core = {"metric": CORE_KEYS[0], "value": None, "verdict": "N/A"}
    checks = {"core_gate": core}
    radial = _value(arm, "final_radial_lr_auc")
    checks["radial_gate"] = {"metric": "final_radial_lr_auc", "value": radial,
                             "verdict": gate_verdict(radial, th["radial_pass_below"], th["radial_fail_above"])}
    rel = _value(arm, "core_reliance")
    checks["core_reliance"] = {"metric": "core_reliance", "value": rel,
                               "verdict": gate_verdict(rel, th["reliance_pass_below"], th["reliance_fail_above"])}
    tmin = _value(arm, "test_thetae_min_auroc")
    checks["thetae_min"] = {"metric": "test_thetae_min_auroc", "value": tmin,
                            "verdict": gate_verdict_above(tmin, th["thetae_min_pass_above"], th["thetae_min_fail_below"])}
    spread = _value(arm, "test_thetae_spread")
    checks["thetae_spread"] = {"metric": "test_thetae_spread", "value": spread,
                               "verdict": gate_verdict(spread, th["thetae_spread_pass_below"], th["thetae_spread_fail_above"])}
    val = _value(arm, "best_val_auroc")
    checks["val_auroc"] = {"metric": "best_val_auroc", "value": val,
                           "verdict": "N/A" if val is None else ("PASS" if val > th["val_auroc_min"] else "FAIL")}
    test = _value(arm, "test_auroc")
    checks["test_auroc"] = {"metric": "test_auroc", "value": test,
                            "verdict": "N/A" if test is None else ("PASS" if test > th["test_auroc_min"] else "FAIL")}
    return checks


#: What "passes all criteria" means for a masking variant (test AUROC is reported, not required).
ALL_CRITERIA = ("core_gate", "core_reliance", "thetae_min", "thetae_spread", "val_auroc")
CORE_CRITERIA = ("core_gate", "core_reliance")


def _describe(name: str, checks: Mapping[str, Mapping[str, Any]], keys: tuple[str, ...]) -> str:
    parts = [f"{checks[k]['metric']}={_f(checks[k]['value'])} {checks[k]['verdict']}" for k in keys]
    return f"{name}: " + ", ".join(parts)


def lens_decision(arms: Mapping[str, Mapping[str, Any]], thresholds: Mapping[str, float]) -> dict[str, Any]:
    """Seed 004's section-10 decision tree on per-arm mean metrics.

    Args:
        arms: Experiment name (lens_a1, lens_b1, lens_b2, lens_b3, lens_b4) -> mean metrics
            (final_core_lr_auc, core_reliance, test_thetae_min_auroc, test_thetae_spread,
            best_val_auroc, test_auroc, ...).
        thresholds: Every key of THRESHOLD_KEYS (the run config's ``thresholds`` node).

    Returns:
        ``verdict``: "SUCCESS", "ACCEPTABLE", "STOP_SHORTCUT", "INCOMPLETE" (B1 or one of its metrics is
        missing) or "TEST_MASKING_VARIANTS-><choice>" with choice USE_B3, USE_B2, USE_B4,
        STOP_DATA_REDESIGN (every variant fails the core criteria), NO_WINNER (some variant passes the
        core criteria but none qualifies; a case the seed's tree leaves open) or PENDING (a variant
        needed for the choice is missing).
        ``branch`` and ``choice`` (the two halves), ``missing`` (arms or "arm.metric"), ``reasons`` (the
        numbers that led to it), ``checks`` (per arm gate table), ``thresholds``.
    """
    th = resolve_thresholds(thresholds)
    reasons: list[str] = []
    missing: list[str] = []
    checks = {name: arm_checks(arm, th) for name, arm in arms.items()}
    result: dict[str, Any] = {"checks": checks, "thresholds": th, "missing": missing, "reasons": reasons}

    def done(branch: str, choice: str | None = None) -> dict[str, Any]:
        result.update(branch=branch, choice=choice, verdict=branch if choice is None else f"{branch}->{choice}")
        return result

    if "lens_a1" in arms:
        reasons.append(_describe("A1 (paired diagnostic, for reference)", checks["lens_a1"], ("core_gate", "core_reliance")))
    else:
        missing.append("lens_a1")
        reasons.append("lens_a1 (paired diagnostic baseline) is missing; the tree runs on B1 alone")
    if "lens_b1" not in arms:
        missing.append("lens_b1")
        reasons.append("lens_b1 (unpaired deployment baseline) is missing: the tree starts from B1")
        return done("INCOMPLETE")

    b1 = checks["lens_b1"]
    for crit in CORE_CRITERIA:
        if b1[crit]["verdict"] == "N/A":
            missing.append(f"lens_b1.{b1[crit]['metric']}")
    if any(m.startswith("lens_b1.") for m in missing):
        reasons.append(f"B1 lacks {[m for m in missing if m.startswith('lens_b1.')]}: cannot enter the tree")
        return done("INCOMPLETE")

    core_v, rel_v = b1["core_gate"]["verdict"], b1["core_reliance"]["verdict"]
    core_txt = f"B1 core LR AUC {_f(b1['core_gate']['value'])} -> {core_v} (PASS < {th['core_pass_below']}, FAIL > {th['core_fail_above']})"
    rel_txt = f"B1 core_reliance {_f(b1['core_reliance']['value'])} -> {rel_v} (PASS < {th['reliance_pass_below']}, FAIL > {th['reliance_fail_above']})"
    reasons += [core_txt, rel_txt]

    if core_v == "PASS" and rel_v == "PASS":
        reasons.append("core gate PASS and core_reliance PASS: use the B1 config, proceed to full training")
        return done("SUCCESS")
    if core_v != "FAIL" and rel_v != "FAIL":
        reasons.append("core gate and core_reliance below their FAIL bands: use the B1 config with monitoring")
        return done("ACCEPTABLE")
    if core_v == "FAIL" and rel_v == "FAIL":
        reasons.append("core gate FAIL and core_reliance FAIL: the model is exploiting the core shortcut")
        return done("STOP_SHORTCUT")
    if core_v == "FAIL":
        reasons.append("core gate FAIL but core_reliance not FAIL: test the masking variants B2, B3, B4")
    else:
        reasons.append(
            "core gate not FAIL but core_reliance FAIL: a case the seed's tree leaves out; the model leans on "
            "the core, so test the masking variants B2, B3, B4 (core masking targets exactly that)"
        )

    # --- the masking-variant subtree --------------------------------------------------------------
    passes: dict[str, bool] = {}
    core_ok: dict[str, bool] = {}
    for name in ("lens_b3", "lens_b2", "lens_b4"):
        if name not in arms:
            missing.append(name)
            continue
        c = checks[name]
        passes[name] = all(c[k]["verdict"] == "PASS" for k in ALL_CRITERIA)
        core_ok[name] = all(c[k]["verdict"] == "PASS" for k in CORE_CRITERIA)
        reasons.append(_describe(name, c, ALL_CRITERIA) + f" -> {'passes all criteria' if passes[name] else 'does not pass all'}")

    if passes.get("lens_b3"):
        reasons.append("B3 (scheduled masking) passes all criteria: use B3")
        return done("TEST_MASKING_VARIANTS", "USE_B3")
    if "lens_b3" not in arms:
        reasons.append("B3 is checked first and is missing: run it before choosing")
        return done("TEST_MASKING_VARIANTS", "PENDING")

    b1_spread = b1["thetae_spread"]["value"]
    qualifying = [n for n in ("lens_b2", "lens_b4") if passes.get(n)]
    if qualifying and b1_spread is None:
        missing.append("lens_b1.test_thetae_spread")
        reasons.append(f"{qualifying} pass all criteria but B1's θ_E spread is missing, so 'better spread' is undecidable")
        return done("TEST_MASKING_VARIANTS", "PENDING")
    better = [n for n in qualifying if checks[n]["thetae_spread"]["value"] < b1_spread]
    for n in qualifying:
        s = checks[n]["thetae_spread"]["value"]
        reasons.append(f"{n} θ_E spread {s:.4f} vs B1 {b1_spread:.4f}: {'better' if n in better else 'not better'}")
    if better:
        # Both better: the smaller spread wins (B2 on a tie, it is listed first in the seed).
        best = min(better, key=lambda n: checks[n]["thetae_spread"]["value"])
        absent = [n for n in ("lens_b2", "lens_b4") if n not in arms]
        if absent:
            reasons.append(f"{absent} missing; {best} qualifies on its own numbers")
        return done("TEST_MASKING_VARIANTS", "USE_" + best.split("_")[1].upper())
    if any(n not in arms for n in ("lens_b2", "lens_b4")):
        reasons.append("no present variant qualifies and some are missing: run them before choosing")
        return done("TEST_MASKING_VARIANTS", "PENDING")
    if not any(core_ok.values()):
        reasons.append("every masking variant fails the core criteria (core gate PASS and core_reliance PASS)")
        return done("TEST_MASKING_VARIANTS", "STOP_DATA_REDESIGN")
    reasons.append(
        f"{[n for n, ok in core_ok.items() if ok]} pass the core criteria but no variant qualifies "
        "(B3 fails another criterion; B2/B4 fail one or lack a better θ_E spread): the seed's tree is silent here"
    )
    return done("TEST_MASKING_VARIANTS", "NO_WINNER")


def _arm_means(info: Mapping[str, Any]) -> dict[str, Any]:
    """An arm's agreed string metrics and the mean of every numeric one (the tree's inputs)."""
    means = {k: s["mean"] for k, s in (info.get("metrics") or {}).items()}
    return {**(info.get("strings") or {}), **means}


def lens_summary(
    arms: Mapping[str, Mapping[str, Any]],
    jobs: Sequence[Mapping[str, Any]],
    thresholds: Mapping[str, Any],
) -> dict[str, Any] | None:
    """Summary plugin (``evaluate.py task=summarize``): seed 004's decision tree on the arm means.

    Declared in the lens experiments under ``summary.lens_decision`` with ``thresholds: ${thresholds}``,
    so the tree reads the same thresholds as the run's callbacks.

    Args:
        arms: Arm name -> ``{experiment, n_completed, metrics: {name: {mean, ...}}, strings, ...}``.
        jobs: The job records (unused: the tree works on arm means).
        thresholds: Every key of THRESHOLD_KEYS.

    The tree runs once per data design with arms in the sweep (DESIGNS): design C's arms take B1-B4's
    roles, so the seed's tree is followed again on the redesigned data, as its section 10 prescribes.

    Returns:
        None when no arm is one of the seed's experiments (LENS_ARMS) with completed runs; else
        ``{"title", "markdown", "result"}`` where result is lens_decision's dict (one design), or
        ``{"verdict": None, "by_design": {design: dict}}`` (several), or ``{"note": ...}`` when an
        experiment maps to several arms (the tree needs one arm per experiment).
    """
    th = resolve_thresholds(thresholds)
    lens: dict[str, list[str]] = {}
    for arm, info in arms.items():
        exp = info.get("experiment")
        if isinstance(exp, str) and exp in LENS_ARMS and info.get("n_completed"):
            lens.setdefault(exp, []).append(arm)
    if not lens:
        return None
    title = "Lens decision (seed 004, section 10)"
    ambiguous = {e: a for e, a in lens.items() if len(a) > 1}
    if ambiguous:
        note = f"lens decision skipped: experiments with several arms {ambiguous}; summarize one arm each"
        return {"title": title, "markdown": note, "result": {"note": note, "verdict": None}}
    means = {exp: _arm_means(arms[arm]) for exp, (arm,) in lens.items()}
    designs = [d for d, names in DESIGNS.items() if any(n in means for n in names)] or ["B"]  # A1 alone: INCOMPLETE
    md: list[str] = []
    results: dict[str, dict[str, Any]] = {}
    for design in designs:
        roles = dict(zip(DESIGNS[design], DESIGNS["B"]))  # this design's arm -> the seed's B role it takes
        tree = {roles[e]: m for e, m in means.items() if e in roles}
        if "lens_a1" in means:
            tree["lens_a1"] = means["lens_a1"]
        decision = lens_decision(tree, th)
        results[design] = decision
        if design != "B":
            md += [f"### Design {design}: {DESIGNS[design][0]}-{DESIGNS[design][-1][5:]} in B1-B4's roles", "",
                   f"(the reasons below name the roles: B1 is {DESIGNS[design][0]} here)", ""]
        elif len(designs) > 1:
            md += ["### Design B (the seed's)", ""]
        md += [f"**Verdict: {decision['verdict']}**", ""]
        if decision["missing"]:
            md += [f"Missing: {decision['missing']}", ""]
        md += [f"- {r}" for r in decision["reasons"]]
        criteria = list(next(iter(decision["checks"].values())))
        experiment = {b: e for e, b in roles.items()}  # the table names arms by experiment (lens_c1, not B1)
        rows = [[experiment.get(name, name)] + [f"{_f(c[k]['value'])} {c[k]['verdict']}" for k in criteria]
                for name, c in decision["checks"].items()]
        md += ["", "Per-arm checks (seed means; thresholds from the runs' `thresholds` node):", "",
               markdown_table(["arm", *criteria], rows), ""]
    result = results[designs[0]] if len(designs) == 1 else {"verdict": None, "by_design": results}
    return {"title": title, "markdown": "\n".join(md).rstrip(), "result": result}
