"""Seed 000's comparison of arm B against arm A, as a summary plugin of ``evaluate.py task=summarize``.

The table: per arm, n, mean, std and Student-t CI of test accuracy, ECE after temperature scaling, T,
MC-Dropout uncertainty, triage counts and subtask accuracies (the arm statistics the summarizer
already computed; nothing is recomputed here).

The paired tests use each run's ``predictions_test.csv`` (written by callbacks/mc_dropout_summary.py),
matched by ``sample_id`` under analysis.significance's one policy (every run on the same test images
with the same targets, else an error), so A and B are judged on the same test images:

- per seed: the exact McNemar test of run A(seed s) against run B(seed s) (analysis.significance.mcnemar_exact);
- across seeds: (1) the paired bootstrap CI over test images of the seed-averaged accuracy difference
  (analysis.significance.paired_bootstrap_ci; each image's resample carries its correctness in every
  seed of both arms, stratified by class); (2) the exact McNemar test of the per-image majority vote over
  seeds (each image counted once: pooling the per-seed tables would count every image once per seed as
  if it were a new one); (3) the paired t-test over seeds of the accuracy difference (training noise).
- the same paired t-test over seeds for the calibrated ECE (the seed's "highly significant" claim).

The verdict (``clip_verdict``) calls B better (or worse) only when the bootstrap CI excludes zero and the
majority-vote McNemar p is below ``thresholds.alpha``; otherwise the data do not show a difference.
Overlapping or non-overlapping confidence intervals of two arms' means are not a test, and are not used.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from scipy import stats

from analysis.significance import align_samples, mcnemar_exact, paired_comparison
from analysis.summary import fmt, markdown_table

#: (metrics.json key, label) of the seed's comparison table, in order.
TABLE_METRICS = (
    ("test_accuracy", "accuracy"),
    ("test_ece_calibrated", "ECE after T"),
    ("temperature", "T (fitted on val)"),
    ("test_ece_uncalibrated", "ECE before T"),
    ("mc_mean_std", "MC-Dropout mean std"),
    ("mc_review", "triage: review"),
    ("mc_spot_check", "triage: spot check"),
    ("mc_auto_approve", "triage: auto-approve"),
    ("test_superclass_accuracy", "subtask: superclass"),
    ("test_brightness_accuracy", "subtask: brightness"),
    ("test_complexity_accuracy", "subtask: complexity"),
    ("best_epoch", "best epoch"),
    ("lr", "lr"),
    ("wall_time_s", "wall time (s)"),
)
PREDICTIONS_FILE = "predictions_test.csv"


def _context(overrides: Sequence[str]) -> str:
    """The overrides that are neither the seed nor the experiment: A and B pair only within one context."""
    kept = [o for o in overrides if o.split("=", 1)[0].lstrip("+~") not in ("seed", "experiment")]
    return " ".join(sorted(kept))


def read_correct(job_dir: str | Path) -> pd.DataFrame:
    """``sample_id``, ``target`` and ``correct`` (argmax of the logits == target) of a run's test predictions."""
    path = Path(job_dir) / PREDICTIONS_FILE
    if not path.exists():
        raise FileNotFoundError(f"{path}: missing (callbacks.mc_dropout writes it at the end of a clip_subtask run)")
    frame = pd.read_csv(path, dtype={"sample_id": str})
    logit_cols = sorted((c for c in frame.columns if c.startswith("logit_")), key=lambda c: int(c.split("_")[1]))
    missing = [c for c in ("sample_id", "target") if c not in frame.columns]
    if missing or not logit_cols:
        raise ValueError(f"{path}: expected sample_id, target and logit_0..logit_C-1 columns; missing {missing or 'logit_*'}")
    pred = frame[logit_cols].to_numpy().argmax(axis=1)
    return pd.DataFrame({"sample_id": frame["sample_id"], "target": frame["target"].astype(int),
                         "correct": pred == frame["target"].to_numpy()})


def aligned_correct(base: pd.DataFrame, frame: pd.DataFrame, names: tuple[str, str]) -> np.ndarray:
    """`frame`'s correctness in the row order of `base`, under the one pairing policy (same images, same targets)."""
    pos = align_samples(base["sample_id"].to_numpy(), base["target"].to_numpy(), frame["sample_id"].to_numpy(),
                        frame["target"].to_numpy(), names)
    return frame["correct"].to_numpy(bool)[pos]


def seed_t_test(a: Sequence[float], b: Sequence[float]) -> dict[str, float]:
    """Paired t-test over seeds of b - a (scipy.stats.ttest_rel); NaN p with fewer than 2 pairs or zero spread."""
    a, b = np.asarray(a, float), np.asarray(b, float)
    diff = b - a
    out = {"n": int(diff.size), "mean_diff": float(diff.mean()) if diff.size else float("nan")}
    if diff.size < 2 or np.allclose(diff, diff[0]):
        out.update({"t": float("nan"), "p": float("nan")})
    else:
        res = stats.ttest_rel(b, a)
        out.update({"t": float(res.statistic), "p": float(res.pvalue)})
    return out


def majority_correct(correct: np.ndarray) -> np.ndarray:
    """Per image: correct in more than half of the seeds (columns); a tie (even seed count) counts as wrong."""
    correct = np.asarray(correct, bool)
    return correct.sum(axis=1) * 2 > correct.shape[1]


def seed_comparison(
    targets: np.ndarray, correct_a: np.ndarray, correct_b: np.ndarray, n_boot: int = 10000, seed: int = 0,
    alpha: float = 0.05, ids: np.ndarray | None = None,
) -> dict[str, Any]:
    """B against A on the same images over several seeds (analysis.significance.paired_comparison per seed).

    Args:
        targets: (N,) class labels.
        correct_a, correct_b: (N, S) correctness of each seed's run (column s of A pairs with column s of B),
            rows already aligned (aligned_correct).
        n_boot, seed, alpha: Of the paired bootstrap.
        ids: (N,) sample ids of the rows (default: row numbers).

    Returns:
        ``per_seed`` (McNemar b, c, p and accuracies per column), ``bootstrap`` (seed-mean accuracy
        difference and its CI), ``majority_mcnemar``, ``seed_t`` (accuracy, paired t over seeds).
    """
    correct_a, correct_b = np.asarray(correct_a, bool), np.asarray(correct_b, bool)
    if correct_a.ndim == 1:
        correct_a, correct_b = correct_a[:, None], correct_b[:, None]
    if correct_a.shape != correct_b.shape or correct_a.shape[0] != len(targets):
        raise ValueError(f"correct_a {correct_a.shape} and correct_b {correct_b.shape} must match, with {len(targets)} rows")
    ids = np.arange(len(targets)) if ids is None else np.asarray(ids)
    comp = paired_comparison(ids, targets, correct_a, ids, targets, correct_b, n_boot=n_boot, seed=seed, alpha=alpha, correct=True)
    per_seed = [{**test, "acc_a": float(correct_a[:, s].mean()), "acc_b": float(correct_b[:, s].mean())}
                for s, test in enumerate(comp["mcnemar"])]
    return {
        "per_seed": per_seed,
        "bootstrap": comp["bootstrap"]["accuracy"],
        "majority_mcnemar": mcnemar_exact(majority_correct(correct_a), majority_correct(correct_b)),
        "seed_t": seed_t_test([r["acc_a"] for r in per_seed], [r["acc_b"] for r in per_seed]),
    }


def clip_verdict(comparison: Mapping[str, Any], alpha: float = 0.05) -> str:
    """``B better``, ``A better`` or ``no difference shown``: a CI that excludes 0 and McNemar p < alpha."""
    boot, mc = comparison["bootstrap"], comparison["majority_mcnemar"]
    if mc["p"] < alpha and boot["ci_low"] > 0:
        return "B better"
    if mc["p"] < alpha and boot["ci_high"] < 0:
        return "A better"
    return "no difference shown"


def _pp(x: float) -> str:
    return "nan" if x is None or (isinstance(x, float) and math.isnan(x)) else f"{100 * x:+.2f} pp"


def _p(x: float) -> str:
    return "nan" if x is None or (isinstance(x, float) and math.isnan(x)) else f"{x:.3g}"


def comparison_table(arms: Mapping[str, Any], order: Sequence[str]) -> str:
    """The seed's table: one row per metric, one column per arm, ``mean ± std [CI]`` with n."""
    headers = ["metric", *[f"{arm} (n={arms[arm]['n_completed']})" for arm in order]]
    rows = []
    for key, label in TABLE_METRICS:
        cells = []
        for arm in order:
            s = arms[arm]["metrics"].get(key)
            cells.append("" if s is None else f"{fmt(s['mean'])} ± {fmt(s['std'])} [{fmt(s['ci_low'])}, {fmt(s['ci_high'])}]")
        if any(cells):
            rows.append([label, *cells])
    return markdown_table(headers, rows)


def clip_summary(
    arms: Mapping[str, Any],
    jobs: Sequence[Mapping[str, Any]],
    thresholds: Mapping[str, Any],
    baseline: str = "clip_subtask_a",
    candidate: str = "clip_subtask_b",
    n_boot: int = 10000,
    bootstrap_seed: int = 0,
) -> dict[str, Any] | None:
    """The summary section: the comparison table and, for each context with both arms, the paired tests.

    Args:
        arms: The summarizer's arms (``experiment``, ``n_completed``, ``metrics`` summaries, ...).
        jobs: Job records (``job_dir``, ``overrides``, ``metrics``, ``status``, ``experiment``).
        thresholds: ``alpha`` (the significance level; default 0.05).
        baseline, candidate: Experiment names of arm A and arm B.
        n_boot, bootstrap_seed: Paired bootstrap settings.
    """
    alpha = float(thresholds.get("alpha", 0.05))
    mine = [arm for arm, info in arms.items() if info.get("experiment") in (baseline, candidate) and info.get("n_completed")]
    if not mine:
        return None
    order = sorted(mine, key=lambda a: (arms[a]["experiment"] != baseline, a))
    md = ["Mean ± sample std [Student-t 95% CI] over seeds; ECE with 15 equal-width bins; T fitted on val.", "",
          comparison_table(arms, order), ""]
    result: dict[str, Any] = {"arms": order, "alpha": alpha, "comparisons": {}}

    done = [j for j in jobs if j.get("status") == "completed" and j.get("metrics") and j.get("experiment") in (baseline, candidate)]
    contexts: dict[str, dict[str, dict[int, Mapping[str, Any]]]] = {}
    for job in done:
        side = "a" if job["experiment"] == baseline else "b"
        contexts.setdefault(_context(job.get("overrides") or []), {"a": {}, "b": {}})[side][int(job["metrics"]["seed"])] = job
    for context, sides in sorted(contexts.items()):
        seeds = sorted(set(sides["a"]) & set(sides["b"]))
        title = f"B ({candidate}) vs A ({baseline})" + (f", {context}" if context else "")
        if not seeds:
            md += [f"### {title}", "", "No seed has a completed run in both arms: no paired test.", ""]
            continue
        frames = {side: [read_correct(sides[side][s]["job_dir"]) for s in seeds] for side in ("a", "b")}
        base = frames["a"][0]
        names = {side: [f"{PREDICTIONS_FILE} of arm {side.upper()}, seed {s}" for s in seeds] for side in ("a", "b")}
        cols = {side: [aligned_correct(base, f, (names["a"][0], n)) for f, n in zip(frames[side], names[side])]
                for side in ("a", "b")}
        targets = base["target"].to_numpy()
        comp = seed_comparison(targets, np.column_stack(cols["a"]), np.column_stack(cols["b"]), n_boot, bootstrap_seed,
                               alpha, ids=base["sample_id"].to_numpy())
        ece_a = [sides["a"][s]["metrics"].get("test_ece_calibrated", float("nan")) for s in seeds]
        ece_b = [sides["b"][s]["metrics"].get("test_ece_calibrated", float("nan")) for s in seeds]
        comp["ece_seed_t"] = seed_t_test(ece_a, ece_b)
        comp["verdict"] = clip_verdict(comp, alpha)
        comp["seeds"] = seeds
        comp["n_images"] = int(len(targets))
        result["comparisons"][context or "(base)"] = comp
        boot, maj, st = comp["bootstrap"], comp["majority_mcnemar"], comp["seed_t"]
        rows = [[s, f"{100 * r['acc_a']:.2f}%", f"{100 * r['acc_b']:.2f}%", _pp(r["acc_b"] - r["acc_a"]), r["b"], r["c"], _p(r["p"])]
                for s, r in zip(seeds, comp["per_seed"])]
        level = f"{100 * (1 - alpha):g}%"
        md += [f"### {title}", "",
               f"{len(targets)} test images, seeds {seeds}. b = A right and B wrong, c = A wrong and B right.", "",
               markdown_table(["seed", "acc A", "acc B", "B - A", "b", "c", "McNemar p (exact)"], rows), "",
               f"- Seed-averaged accuracy difference B - A: {_pp(boot['diff'])}, paired bootstrap {level} CI over test images "
               f"[{_pp(boot['ci_low'])}, {_pp(boot['ci_high'])}] ({boot['n_boot']} resamples, stratified by class).",
               f"- McNemar on the per-image majority vote over seeds: b = {maj['b']}, c = {maj['c']}, p = {_p(maj['p'])}.",
               f"- Paired t-test over {st['n']} seeds (training noise): mean difference {_pp(st['mean_diff'])}, p = {_p(st['p'])}.",
               f"- Calibrated ECE, paired t-test over seeds: B - A = {_pp(comp['ece_seed_t']['mean_diff'])}, "
               f"p = {_p(comp['ece_seed_t']['p'])}.",
               "",
               f"**Verdict: {comp['verdict']}.** " + _verdict_sentence(comp, alpha), ""]
    return {"title": "CLIP subtask meta-learner: arm B against arm A (seed 000)", "markdown": "\n".join(md), "result": result}


def _verdict_sentence(comp: Mapping[str, Any], alpha: float) -> str:
    boot, maj = comp["bootstrap"], comp["majority_mcnemar"]
    if comp["verdict"] == "no difference shown":
        return (f"B - A = {_pp(boot['diff'])}, and the data do not show that B differs from A at alpha = {alpha:g} "
                f"(CI [{_pp(boot['ci_low'])}, {_pp(boot['ci_high'])}], majority-vote McNemar p = {_p(maj['p'])}). "
                "A higher mean with overlapping intervals is not evidence of a difference.")
    better = "B" if comp["verdict"] == "B better" else "A"
    return (f"{better} is more accurate by {_pp(abs(boot['diff']))} (CI [{_pp(boot['ci_low'])}, {_pp(boot['ci_high'])}], "
            f"majority-vote McNemar p = {_p(maj['p'])}).")
