"""Seed 003's numbers and its exit-criteria table (pure numpy/pandas; no Lightning).

- ``audio_metrics``: per-class accuracy (SPEECH, NONSPEECH), balanced accuracy, ECE and Brier of
  binary logits at a temperature (analysis.calibration and analysis.significance do the arithmetic).
- ``snr_accuracy``: SPEECH accuracy per SNR (the seed's low-SNR question).
- ``pooled_bootstrap_ci``: percentile CI of accuracy-type metrics over the pooled (seed, clip) rows of
  an arm, resampled within each class with analysis.significance's resampler.
- ``wrong_in_every_seed``: the clips an arm gets wrong in every seed, with group and SNR.
- ``choose_threshold`` / ``operating_point``: the seed's operating point, the smallest logit threshold
  whose dev NONSPEECH accuracy reaches the target (>= 95%), and SPEECH / NONSPEECH at it on test.
- ``exit_criteria``: PASS/FAIL of each criterion, thresholds from conf/thresholds/audio.yaml.
- ``audio_summary``: the summary plugin (``evaluate.py task=summarize``): reads each job's
  ``predictions_test.csv``, runs exact McNemar between each arm and the reference arm per seed and a
  paired bootstrap over pooled seeds (analysis.significance.paired_comparison: a seed whose clips or
  targets differ from the reference's is not compared, and a note says why), and writes the exit-criteria table.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from analysis.calibration import brier, ece, probabilities_from_logits
from analysis.significance import paired_comparison, per_class_accuracy, stratified_bootstrap_indices
from analysis.summary import fmt, markdown_table, pick_reference

CLASS_NAMES = {0: "nonspeech", 1: "speech"}
THRESHOLD_KEYS = ("balanced_accuracy_std_max", "speech_accuracy_min", "nonspeech_accuracy_min", "ece_max", "min_seeds",
                  "mcnemar_alpha", "max_shared_groups")


def audio_metrics(logits: np.ndarray, targets: np.ndarray, temperature: float = 1.0, n_bins: int = 5) -> dict[str, float]:
    """Accuracy, SPEECH / NONSPEECH accuracy, balanced accuracy, ECE and Brier of binary logits / T.

    Args:
        logits: (N,) logit(SPEECH) - logit(NONSPEECH).
        targets: (N,) 1 = SPEECH, 0 = NONSPEECH.
        temperature: T > 0 (changes ECE and Brier, never the predicted class).
        n_bins: Equal-width ECE bins (the seed's calibration script used 5).

    Returns:
        ``accuracy, speech_accuracy, nonspeech_accuracy, balanced_accuracy`` (mean of the two class
        accuracies present), ``ece, brier``; NaN for a class with no samples.
    """
    logits = np.asarray(logits, dtype=np.float64).reshape(-1)
    targets = np.asarray(targets).astype(np.int64).reshape(-1)
    if logits.shape != targets.shape:
        raise ValueError(f"logits and targets must have the same length, got {logits.shape} and {targets.shape}")
    if logits.size == 0:
        raise ValueError("audio_metrics: no samples")
    probs = probabilities_from_logits(logits, temperature)
    preds = (probs >= 0.5).astype(np.int64)
    per_class = per_class_accuracy(targets, preds, n_classes=2)
    present = [v for v in per_class.values() if not math.isnan(v)]
    return {
        "accuracy": float(np.mean(preds == targets)),
        "speech_accuracy": per_class[1],
        "nonspeech_accuracy": per_class[0],
        "balanced_accuracy": float(np.mean(present)),
        "ece": ece(probs, targets, n_bins),
        "brier": brier(probs, targets),
    }


def snr_accuracy(logits: np.ndarray, targets: np.ndarray, snr_db: np.ndarray, label: int = 1) -> dict[float, dict[str, float]]:
    """Accuracy on the clips of one label at each SNR (NaN SNRs, e.g. silence, left out).

    Returns:
        ``{snr: {"accuracy": a, "count": n}}`` sorted by SNR.
    """
    logits = np.asarray(logits, dtype=np.float64).reshape(-1)
    targets = np.asarray(targets).astype(np.int64).reshape(-1)
    snr_db = np.asarray(snr_db, dtype=np.float64).reshape(-1)
    keep = (targets == label) & np.isfinite(snr_db)
    out = {}
    for s in np.unique(snr_db[keep]):
        m = keep & (snr_db == s)
        out[float(s)] = {"accuracy": float(np.mean((logits[m] > 0) == bool(label))), "count": int(m.sum())}
    return out


def snr_key(snr: float) -> str:
    """A metric-name-safe SNR: -10 -> 'm10', 5 -> '5', 2.5 -> '2p5'."""
    text = f"{abs(snr):g}".replace(".", "p")
    return ("m" if snr < 0 else "") + text


def pooled_bootstrap_ci(targets: np.ndarray, correct: np.ndarray, n_boot: int = 10000, seed: int = 0,
                        alpha: float = 0.05) -> dict[str, dict[str, float]]:
    """Percentile CIs of balanced, SPEECH and NONSPEECH accuracy over pooled rows, resampled per class.

    Rows are the (seed, clip) predictions of an arm pooled together; each resample keeps each class's
    count (analysis.significance.stratified_bootstrap_indices). Rows of one clip in several seeds are
    not independent, so the CI is narrower than a clip- or group-level one would be.

    Returns:
        ``{metric: {"value", "ci_low", "ci_high"}}`` for balanced_accuracy, speech_accuracy and
        nonspeech_accuracy.
    """
    targets = np.asarray(targets).astype(np.int64)
    correct = np.asarray(correct, dtype=np.float64)
    if targets.shape != correct.shape or targets.size == 0:
        raise ValueError(f"targets and correct must be non-empty and of one shape, got {targets.shape} and {correct.shape}")
    idx = stratified_bootstrap_indices(targets, n_boot, np.random.default_rng(seed))
    out: dict[str, dict[str, float]] = {}
    per = {}
    for k, name in CLASS_NAMES.items():
        mask = targets == k
        value = float(correct[mask].mean()) if mask.any() else float("nan")
        # the class's slots of every resample hold indices of that class only (stratified)
        draws = correct[idx[:, mask]].mean(axis=1) if mask.any() else np.full(n_boot, np.nan)
        per[name] = (value, draws)
    present = [name for name in CLASS_NAMES.values() if not math.isnan(per[name][0])]
    bal_value = float(np.mean([per[n][0] for n in present]))
    bal_draws = np.mean([per[n][1] for n in present], axis=0)
    parts = [("balanced_accuracy", (bal_value, bal_draws))] + [(f"{n}_accuracy", per[n]) for n in CLASS_NAMES.values()]
    for name, (value, draws) in parts:
        if math.isnan(value):
            low = high = float("nan")
        else:
            low, high = np.percentile(draws, [100 * alpha / 2, 100 * (1 - alpha / 2)])
        out[name] = {"value": value, "ci_low": float(low), "ci_high": float(high)}
    return out


def wrong_in_every_seed(tables: Mapping[int, pd.DataFrame]) -> pd.DataFrame:
    """Clips wrong in every seed of an arm.

    Args:
        tables: seed -> predictions table (``sample_id``, ``target``, ``logit`` and metadata such as
            ``group``, ``snr_db``, ``kind``).

    Returns:
        One row per clip wrong in all seeds: sample_id, target, the metadata of the first seed, and
        ``mean_logit`` over seeds; sorted by group then sample_id. Only clips present in every seed count.
    """
    if not tables:
        return pd.DataFrame(columns=["sample_id", "target", "mean_logit"])
    wrong_sets, logits = [], []
    for seed, table in tables.items():
        t = table.assign(sample_id=table["sample_id"].astype(str))
        wrong = t.loc[(t["logit"] > 0) != (t["target"] > 0.5), "sample_id"]
        wrong_sets.append(set(wrong))
        logits.append(t.set_index("sample_id")["logit"])
    common = set.intersection(*wrong_sets)
    first = next(iter(tables.values())).assign(sample_id=lambda f: f["sample_id"].astype(str))
    rows = first[first["sample_id"].isin(common)].copy()
    mean_logit = pd.concat(logits, axis=1).mean(axis=1)
    rows["mean_logit"] = rows["sample_id"].map(mean_logit)
    wanted = ("sample_id", "target", "label_name", "group", "kind", "snr_db", "duration", "mean_logit")
    keep = [c for c in wanted if c in rows.columns]
    sort = [c for c in ("group", "sample_id") if c in rows.columns]
    return rows[keep].sort_values(sort).reset_index(drop=True)


def choose_threshold(logits: np.ndarray, targets: np.ndarray, nonspeech_min: float = 0.95) -> dict[str, Any]:
    """The smallest logit threshold at which at least nonspeech_min of the NONSPEECH clips are rejected.

    A clip is called SPEECH when its logit is strictly above the threshold, so a SPEECH clip tied with it
    is called NONSPEECH: ties go to the class the target protects. The threshold is the k-th smallest
    NONSPEECH logit, k = ceil(nonspeech_min x n_nonspeech); every tied NONSPEECH logit is rejected too,
    so the achieved rate can exceed the target. Of all thresholds meeting the target it keeps the most
    SPEECH clips.

    Args:
        logits: (N,) dev logits, logit(SPEECH) - logit(NONSPEECH).
        targets: (N,) 1 = SPEECH, 0 = NONSPEECH.
        nonspeech_min: Target NONSPEECH accuracy in (0, 1].

    Returns:
        ``threshold``, the dev ``nonspeech_accuracy`` and ``speech_accuracy`` at it (NaN without SPEECH clips).

    Raises:
        ValueError: Without NONSPEECH clips or finite logits, or a target outside (0, 1] (one that cannot be met).
    """
    logits = np.asarray(logits, dtype=np.float64).reshape(-1)
    targets = np.asarray(targets).astype(np.int64).reshape(-1)
    if not 0.0 < nonspeech_min <= 1.0:
        raise ValueError(f"choose_threshold: a NONSPEECH target of {nonspeech_min} cannot be met; expected (0, 1]")
    if logits.shape != targets.shape or not np.isfinite(logits).all():
        raise ValueError("choose_threshold: logits and targets must have one length and finite logits")
    neg = np.sort(logits[targets == 0])
    if neg.size == 0:
        raise ValueError("choose_threshold: no NONSPEECH clips on dev; the NONSPEECH target cannot be set")
    k = int(math.ceil(nonspeech_min * neg.size - 1e-9))  # the tolerance: 0.95 * 60 is 57.000000000000007
    threshold = float(neg[k - 1])
    pos = logits[targets == 1]
    return {"threshold": threshold, "nonspeech_accuracy": float(np.mean(neg <= threshold)),
            "speech_accuracy": float(np.mean(pos > threshold)) if pos.size else float("nan")}


def operating_point(dev_logits: np.ndarray, dev_targets: np.ndarray, test_logits: np.ndarray, test_targets: np.ndarray,
                    nonspeech_min: float = 0.95) -> dict[str, float]:
    """The threshold chosen on dev (choose_threshold) and the test numbers at it, with test AUROC.

    Returns:
        ``threshold``, ``dev_nonspeech_accuracy``, ``dev_speech_accuracy``, test ``speech_accuracy``,
        ``nonspeech_accuracy``, ``balanced_accuracy`` at the threshold, and ``auroc`` (threshold-free).
    """
    from analysis.metrics import auroc

    chosen = choose_threshold(dev_logits, dev_targets, nonspeech_min)
    logits = np.asarray(test_logits, dtype=np.float64).reshape(-1)
    targets = np.asarray(test_targets).astype(np.int64).reshape(-1)
    pred = logits > chosen["threshold"]
    speech = float(np.mean(pred[targets == 1])) if (targets == 1).any() else float("nan")
    nonspeech = float(np.mean(~pred[targets == 0])) if (targets == 0).any() else float("nan")
    return {"threshold": chosen["threshold"], "dev_nonspeech_accuracy": chosen["nonspeech_accuracy"],
            "dev_speech_accuracy": chosen["speech_accuracy"], "speech_accuracy": speech, "nonspeech_accuracy": nonspeech,
            "balanced_accuracy": float(np.nanmean([speech, nonspeech])), "auroc": float(auroc(targets, logits))}


def _verdict(ok: bool | None) -> str:
    return "n/a" if ok is None else ("PASS" if ok else "FAIL")


def exit_criteria(stats: Mapping[str, Any], thresholds: Mapping[str, float]) -> list[dict[str, Any]]:
    """The seed's exit criteria for one arm: rows ``{criterion, value, threshold, verdict}``.

    Args:
        stats: ``n_seeds``, ``balanced_accuracy_std`` (sample std over seeds), ``speech_accuracy``,
            ``nonspeech_accuracy``, ``ece`` (means over seeds; ECE after dev-fitted temperature),
            ``mcnemar_p`` (list of per-seed p-values against the reference arm, or None),
            ``bootstrap`` (the pooled CI dict or None), ``shared_groups`` (max over jobs).
        thresholds: conf/thresholds/audio.yaml.
    """
    missing = [k for k in THRESHOLD_KEYS if k not in thresholds]
    if missing:
        raise ValueError(f"thresholds (conf/thresholds/audio.yaml) lacks {missing}")
    th = {k: float(thresholds[k]) for k in THRESHOLD_KEYS}

    def num(key: str) -> float | None:
        v = stats.get(key)
        return None if v is None or (isinstance(v, float) and math.isnan(v)) else float(v)

    rows = []
    std = num("balanced_accuracy_std")
    rows.append({"criterion": "multi-seed std of balanced accuracy", "value": std,
                 "threshold": f"< {fmt(th['balanced_accuracy_std_max'])}",
                 "verdict": _verdict(None if std is None else std < th["balanced_accuracy_std_max"])})
    for key, name in (("speech_accuracy", "SPEECH accuracy (mean)"), ("nonspeech_accuracy", "NONSPEECH accuracy (mean)")):
        v = num(key)
        rows.append({"criterion": name, "value": v, "threshold": f">= {fmt(th[key + '_min'])}",
                     "verdict": _verdict(None if v is None else v >= th[key + "_min"])})
    e = num("ece")
    rows.append({"criterion": "ECE, temperature fitted on dev (mean)", "value": e, "threshold": f"< {fmt(th['ece_max'])}",
                 "verdict": _verdict(None if e is None else e < th["ece_max"])})
    n = int(stats.get("n_seeds") or 0)
    rows.append({"criterion": "seeds", "value": n, "threshold": f">= {int(th['min_seeds'])}",
                 "verdict": _verdict(n >= th["min_seeds"])})
    ps = stats.get("mcnemar_p")
    if ps:
        rows.append({"criterion": "McNemar vs reference, every seed", "value": max(ps),
                     "threshold": f"p < {fmt(th['mcnemar_alpha'])}", "verdict": _verdict(max(ps) < th["mcnemar_alpha"])})
    else:
        rows.append({"criterion": "McNemar vs reference, every seed", "value": None,
                     "threshold": f"p < {fmt(th['mcnemar_alpha'])}",
                     "verdict": "n/a"})
    boot = stats.get("bootstrap")
    rows.append({"criterion": "bootstrap CI of balanced accuracy (pooled seeds)",
                 "value": None if not boot else f"[{fmt(boot['ci_low'])}, {fmt(boot['ci_high'])}]",
                 "threshold": "computed", "verdict": _verdict(bool(boot))})
    shared = stats.get("shared_groups")
    rows.append({"criterion": "groups shared between splits (every job)", "value": shared,
                 "threshold": f"<= {int(th['max_shared_groups'])}",
                 "verdict": _verdict(None if shared is None else shared <= th["max_shared_groups"])})
    return rows


# --- the summary plugin ------------------------------------------------------------------------------

def _job_predictions(job_dir: str, split: str = "test") -> pd.DataFrame | None:
    from analysis.predictions import read_predictions

    path = Path(job_dir) / f"predictions_{split}.csv"
    if not path.exists():
        return None
    pred = read_predictions(path, kind="binary")
    table = pred.metadata.copy()
    table.insert(0, "sample_id", pred.sample_id.astype(str))
    table.insert(1, "target", pred.targets)
    table.insert(2, "logit", pred.logits)
    return table


def _probs(table: pd.DataFrame) -> np.ndarray:
    """p(SPEECH) from a predictions table's uncalibrated logits (a monotone map: the same decisions)."""
    return probabilities_from_logits(table["logit"].to_numpy())


def _seed_of(job: Mapping[str, Any]) -> int | None:
    seed = (job.get("metrics") or {}).get("seed")
    return None if seed is None else int(seed)


def audio_summary(arms: Mapping[str, Mapping[str, Any]], jobs: Sequence[Mapping[str, Any]], thresholds: Mapping[str, Any],
                  reference: str | None = None, n_boot: int = 10000, alpha: float = 0.05, boot_seed: int = 0,
                  max_listed: int = 20) -> dict[str, Any] | None:
    """Exit criteria per arm, McNemar per seed and a paired bootstrap against the reference arm, hard clips.

    Args:
        arms: The summarizer's arms (``job_dirs``, ``metrics`` summaries, ``n_completed``).
        jobs: The summarizer's job records (``job_dir``, ``metrics``, ``status``).
        thresholds: conf/thresholds/audio.yaml.
        reference: Override(s) naming the reference arm (e.g. ``experiment=audio_lora_attn`` or
            ``audio_grid=r16_a32``; see arm_matches). Of several matching arms, the one with the fewest
            overrides; None, no match or a tie: no McNemar / paired bootstrap.
        n_boot, alpha, boot_seed: Bootstrap resamples, 1 - confidence, and its seed.
        max_listed: Most hard clips listed per arm in the markdown (all are in the result).
    """
    by_dir = {str(j["job_dir"]): j for j in jobs if j.get("status") == "completed"}
    arm_tables: dict[str, dict[int, pd.DataFrame]] = {}
    arm_metrics: dict[str, list[Mapping[str, Any]]] = {}
    arm_dev: dict[str, dict[int, pd.DataFrame]] = {}
    for name, arm in arms.items():
        tables, metrics, dev = {}, [], {}
        for d in arm.get("job_dirs", []):
            job = by_dir.get(str(d))
            if job is None:
                continue
            metrics.append(job.get("metrics") or {})
            table = _job_predictions(str(d))
            seed = _seed_of(job)
            if table is not None and seed is not None:
                tables[seed] = table
                dev_table = _job_predictions(str(d), "val")  # the dev split the temperature was fitted on
                if dev_table is not None:
                    dev[seed] = dev_table
        if tables:
            arm_tables[name], arm_metrics[name], arm_dev[name] = tables, metrics, dev
    if not arm_tables:
        return None
    ref, why = pick_reference(arm_tables, reference)
    notes = [f"{why}; McNemar and the paired bootstrap are skipped"] if why else []

    result: dict[str, Any] = {"reference": ref, "arms": {}}
    md = []
    for name, tables in arm_tables.items():
        metrics = arm_metrics[name]

        def values(key: str) -> list[float]:
            return [float(m[key]) for m in metrics if isinstance(m.get(key), (int, float)) and m.get(key) is not None]

        def mean(key: str) -> float | None:
            v = values(key)
            return float(np.mean(v)) if v else None

        bal = values("test_balanced_accuracy")
        pooled = pd.concat(tables.values(), ignore_index=True)
        correct = ((pooled["logit"] > 0) == (pooled["target"] > 0.5)).to_numpy()
        boot = pooled_bootstrap_ci(pooled["target"].to_numpy(), correct, n_boot, boot_seed, alpha)
        stats: dict[str, Any] = {
            "n_seeds": len(tables),
            "seeds": sorted(tables),
            "balanced_accuracy_mean": float(np.mean(bal)) if bal else None,
            "balanced_accuracy_std": float(np.std(bal, ddof=1)) if len(bal) >= 2 else None,
            "speech_accuracy": mean("test_speech_accuracy"),
            "nonspeech_accuracy": mean("test_nonspeech_accuracy"),
            "ece": mean("test_ece_calibrated"),
            "ece_uncalibrated": mean("test_ece_uncalibrated"),
            "temperature": mean("temperature"),
            "shared_groups": int(max(values("audit_shared_groups"))) if values("audit_shared_groups") else None,
            "bootstrap": boot["balanced_accuracy"],
            "bootstrap_all": boot,
            "mcnemar": {},
            "mcnemar_p": None,
        }
        if ref is not None and name != ref:
            ps, a_rows, b_rows = [], [], []
            for seed in sorted(set(tables) & set(arm_tables[ref])):
                a, b = arm_tables[ref][seed], tables[seed]
                try:  # the one pairing policy: the same clips with the same targets, else no comparison
                    comp = paired_comparison(a["sample_id"].to_numpy(), a["target"].to_numpy(), _probs(a),
                                             b["sample_id"].to_numpy(), b["target"].to_numpy(), _probs(b), metrics=(),
                                             n_boot=0, names=(f"{ref} seed {seed}", f"{name} seed {seed}"))
                except ValueError as err:
                    notes.append(f"{name} seed {seed}: not compared with the reference ({err})")
                    continue
                stats["mcnemar"][seed] = comp["mcnemar"]
                ps.append(comp["mcnemar"]["p"])
                a_rows.append(a.assign(sample_id=f"{seed}:" + a["sample_id"]))
                b_rows.append(b.assign(sample_id=f"{seed}:" + b["sample_id"]))
            stats["mcnemar_p"] = ps or None
            if a_rows:
                # seeds pooled: a clip counts once per seed, paired with the same clip and seed of the other arm
                pa, pb = pd.concat(a_rows), pd.concat(b_rows)
                stats["paired_bootstrap"] = paired_comparison(
                    pa["sample_id"].to_numpy(), pa["target"].to_numpy(), _probs(pa), pb["sample_id"].to_numpy(),
                    pb["target"].to_numpy(), _probs(pb), metrics=("balanced_accuracy",), n_boot=n_boot, seed=boot_seed,
                    alpha=alpha)["bootstrap"]["balanced_accuracy"]
        hard = wrong_in_every_seed(tables)
        stats["wrong_in_every_seed"] = hard.to_dict(orient="records")
        stats["criteria"] = exit_criteria(stats, thresholds)
        # the seed's operating point: a threshold chosen on each seed's dev split for NONSPEECH >= target
        ops = {seed: operating_point(arm_dev[name][seed]["logit"], arm_dev[name][seed]["target"], t["logit"], t["target"],
                                     float(thresholds["nonspeech_accuracy_min"]))
               for seed, t in tables.items() if seed in arm_dev[name]}
        stats["operating_point"] = ops
        if ops:
            op_stats = {**stats, **{k: float(np.mean([o[k] for o in ops.values()]))
                                    for k in ("speech_accuracy", "nonspeech_accuracy")}}
            bal_op = [o["balanced_accuracy"] for o in ops.values()]
            op_stats["balanced_accuracy_std"] = float(np.std(bal_op, ddof=1)) if len(bal_op) >= 2 else None
            stats["criteria_operating_point"] = exit_criteria(op_stats, thresholds)
        result["arms"][name] = stats

        md.append(f"#### {name}\n")
        md.append(f"Seeds {stats['seeds']}; test balanced accuracy {fmt(stats['balanced_accuracy_mean'] or float('nan'))}"
                  f" (pooled bootstrap {int((1 - alpha) * 100)}% CI [{fmt(boot['balanced_accuracy']['ci_low'])}, "
                  f"{fmt(boot['balanced_accuracy']['ci_high'])}]); SPEECH CI [{fmt(boot['speech_accuracy']['ci_low'])}, "
                  f"{fmt(boot['speech_accuracy']['ci_high'])}], NONSPEECH CI [{fmt(boot['nonspeech_accuracy']['ci_low'])}, "
                  f"{fmt(boot['nonspeech_accuracy']['ci_high'])}].\n")
        def criteria_rows(rows: list[dict[str, Any]]) -> list[list[Any]]:
            return [[r["criterion"], "-" if r["value"] is None else r["value"], r["threshold"], r["verdict"]] for r in rows]

        md.append("Exit criteria at the argmax (logit > 0):\n")
        md.append(markdown_table(["criterion", "value", "threshold", "verdict"], criteria_rows(stats["criteria"])))
        if ops:
            target = fmt(float(thresholds["nonspeech_accuracy_min"]))
            md.append(f"\nAt the operating point chosen on dev for NONSPEECH >= {target} "
                      "(threshold per seed; SPEECH and NONSPEECH on test at it; AUROC is threshold-free):\n")
            md.append(markdown_table(["seed", "threshold", "dev NONSPEECH", "dev SPEECH", "test SPEECH", "test NONSPEECH",
                                      "test AUROC"],
                                     [[s, o["threshold"], o["dev_nonspeech_accuracy"], o["dev_speech_accuracy"],
                                       o["speech_accuracy"], o["nonspeech_accuracy"], o["auroc"]] for s, o in ops.items()]))
            md.append("\nExit criteria at the operating point:\n")
            md.append(markdown_table(["criterion", "value", "threshold", "verdict"],
                                     criteria_rows(stats["criteria_operating_point"])))
        if stats["mcnemar"]:
            md.append(f"\nExact McNemar against the reference arm `{ref}` "
                      "(b = reference right only, c = this arm right only):\n")
            md.append(markdown_table(["seed", "b", "c", "p"], [[s, t["b"], t["c"], t["p"]] for s, t in stats["mcnemar"].items()]))
            pb = stats.get("paired_bootstrap")
            if pb:
                md.append(f"\nPaired bootstrap over pooled seeds, balanced accuracy (this arm - reference): {fmt(pb['diff'])} "
                          f"[{fmt(pb['ci_low'])}, {fmt(pb['ci_high'])}].")
        md.append(f"\nClips wrong in every seed: {len(hard)}" + (":\n" if len(hard) else ".\n"))
        if len(hard):
            md.append(markdown_table(list(hard.columns), hard.head(max_listed).values.tolist()))
            if len(hard) > max_listed:
                md.append(f"\n... and {len(hard) - max_listed} more (summary.json lists them all).")
        md.append("")
    if notes:
        md.append("Notes: " + "; ".join(notes))
    result["notes"] = notes
    return {"title": "Seed 003 exit criteria (SPEECH / NONSPEECH)", "markdown": "\n".join(md), "result": result}
