"""File-based evaluate tasks: calibrate, compare and summarize.

Each task is a plain function of an omegaconf DictConfig (conf/evaluate.yaml) that reads only files
(predictions CSVs, a sweep directory), writes its report next to its input (or into ``out_dir``), prints
a table and returns the numbers as a dict. evaluate.py dispatches to them by ``cfg.task``; the
checkpoint-based ``predict`` task lives there.

The numbers come from analysis/ (pure functions); this module only reads, checks, aligns and writes.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import yaml
from omegaconf import DictConfig, OmegaConf

from analysis.calibration import (
    calibration_report,
    fit_temperature,
    mc_triage,
    probabilities_from_logits,
    reliability_bins,
)
from analysis.decision import LENS_ARMS, lens_decision
from analysis.plots import metric_bars, reliability_diagram
from analysis.predictions import Predictions, read_predictions
from analysis.significance import (
    mcnemar_exact,
    paired_bootstrap_ci,
    per_class_accuracy,
    predictions_from_scores,
)
from analysis.summary import group_runs, markdown_table, numeric_metrics, summarize_metric
from rigor.jsonio import to_jsonable, write_json

# --------------------------------------------------------------------------------------------------
# small helpers


def _get(cfg: DictConfig | Mapping[str, Any], key: str, default: Any = None) -> Any:
    value = cfg.get(key, default) if cfg is not None else default
    return default if value is None else value


def _required_path(cfg: DictConfig, key: str) -> Path:
    value = cfg.get(key)
    if value in (None, ""):
        raise ValueError(f"evaluate: config key '{key}' is required for task={cfg.get('task')} (a file path)")
    return Path(str(value))


def _out_dir(cfg: DictConfig, default: Path) -> Path:
    out = cfg.get("out_dir")
    path = Path(str(out)) if out not in (None, "") else default
    path.mkdir(parents=True, exist_ok=True)
    return path


def _safe(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9._=-]+", "_", name).strip("_") or "x"


# --------------------------------------------------------------------------------------------------
# calibrate


def run_calibrate(cfg: DictConfig) -> dict[str, Any]:
    """Fit a temperature on ``cfg.fit`` and report calibration before/after on ``cfg.apply``.

    Refuses to fit on a test-split file (named predictions_test.csv, or with a ``split`` column saying
    test) unless ``cfg.force``: a temperature tuned on the test set makes its calibration numbers
    optimistic (seed 003 saw exactly that).

    Writes ``<apply stem>_calibration.json`` and ``<apply stem>_reliability.png`` next to the applied
    file, or into ``cfg.out_dir``.

    Args:
        cfg: Needs ``fit`` and ``apply`` (predictions CSVs); uses ``force``, ``n_bins``, ``out_dir`` and
            ``mc_dropout.{review_std, auto_conf, auto_std}``.

    Returns:
        ``temperature``, ``before`` and ``after`` metrics on the applied file (ece, adaptive_ece, brier,
        nll, accuracy), the same on the fit file under ``fit_before``/``fit_after``, per-bin reliability
        tables, MC-Dropout triage counts when the file has MC columns, and the paths written.
    """
    fit_path, apply_path = _required_path(cfg, "fit"), _required_path(cfg, "apply")
    force = bool(_get(cfg, "force", False))
    n_bins = int(_get(cfg, "n_bins", 15))
    fit = read_predictions(fit_path)
    if fit.is_test_split and not force:
        raise ValueError(
            f"{fit.path}: refusing to fit a temperature on the test split (split from name: {fit.name_split!r}, "
            f"split column: {list(fit.column_splits)}); fit on validation/dev predictions, or set force=true"
        )
    target = read_predictions(apply_path)
    if fit.is_binary != target.is_binary or fit.n_classes != target.n_classes:
        raise ValueError(
            f"{fit.path} has {fit.n_classes} classes ({'binary' if fit.is_binary else 'multiclass'}) but "
            f"{target.path} has {target.n_classes} ({'binary' if target.is_binary else 'multiclass'})"
        )

    temperature = fit_temperature(fit.logits, fit.targets)
    before = calibration_report(target.logits, target.targets, 1.0, n_bins)
    after = calibration_report(target.logits, target.targets, temperature, n_bins)
    bins_before = reliability_bins(probabilities_from_logits(target.logits), target.targets, n_bins)
    bins_after = reliability_bins(probabilities_from_logits(target.logits, temperature), target.targets, n_bins)

    result: dict[str, Any] = {
        "temperature": temperature,
        "fit_file": str(fit.path),
        "apply_file": str(target.path),
        "fit_splits": sorted(fit.splits),
        "apply_splits": sorted(target.splits),
        "forced_test_fit": bool(fit.is_test_split and force),
        "same_file": fit.path.resolve() == target.path.resolve(),
        "n_fit": len(fit),
        "n_apply": len(target),
        "n_classes": target.n_classes,
        "n_bins": n_bins,
        "before": before,
        "after": after,
        "fit_before": calibration_report(fit.logits, fit.targets, 1.0, n_bins),
        "fit_after": calibration_report(fit.logits, fit.targets, temperature, n_bins),
        "reliability": {
            "before": {k: v for k, v in bins_before.items()},
            "after": {k: v for k, v in bins_after.items()},
        },
    }
    if target.mc_prob is not None:
        mc = _get(cfg, "mc_dropout", {})
        result["mc_triage"] = mc_triage(
            target.mc_prob,
            target.mc_std,
            review_std=float(_get(mc, "review_std", 0.35)),
            auto_conf=float(_get(mc, "auto_conf", 0.90)),
            auto_std=float(_get(mc, "auto_std", 0.25)),
        )
        result["mc_mean_std"] = float(np.mean(target.mc_std))

    out = _out_dir(cfg, target.path.parent)
    stem = target.path.stem
    png = reliability_diagram(
        bins_before, bins_after, out / f"{stem}_reliability.png",
        title=f"{target.path.name}: T = {temperature:.4f} fitted on {fit.path.name}",
    )
    result["paths"] = {"json": str(out / f"{stem}_calibration.json"), "png": str(png)}
    write_json(out / f"{stem}_calibration.json", result)

    rows = [[k, before[k], after[k], after[k] - before[k]] for k in before]
    print(f"temperature T = {temperature:.4f} (fit on {fit.path}, n={len(fit)}); applied to {target.path} (n={len(target)})")
    if result["forced_test_fit"]:
        print("WARNING: temperature was fitted on a test split (force=true); the 'after' numbers are optimistic")
    print(markdown_table(["metric", "before (T=1)", f"after (T={temperature:.3f})", "change"], rows))
    if "mc_triage" in result:
        t = result["mc_triage"]
        print(markdown_table(["triage", "count", "fraction"],
                             [[k, t[k], t[f"frac_{k}"]] for k in ("review", "spot_check", "auto_approve")]))
    return result


# --------------------------------------------------------------------------------------------------
# compare


def _pair_labels(a: Path, b: Path) -> tuple[str, str]:
    """Short distinct names for two files: their stems, or the nearest differing parent dir + stem."""
    pa, pb = a.resolve().with_suffix("").parts, b.resolve().with_suffix("").parts
    if pa[-1] != pb[-1]:
        return _safe(pa[-1]), _safe(pb[-1])
    k = 2
    while k <= min(len(pa), len(pb)) and pa[-k] == pb[-k]:
        k += 1
    if k > min(len(pa), len(pb)):
        return _safe(pa[-1]), _safe(pb[-1])
    return _safe(f"{pa[-k]}-{pa[-1]}"), _safe(f"{pb[-k]}-{pb[-1]}")


def align_predictions(a: Predictions, b: Predictions, examples: int = 5) -> np.ndarray:
    """Row positions in `b` of `a`'s samples, after checking both hold the same samples and targets.

    Raises:
        ValueError: Different sample sets (how many on each side, with a few example ids), disagreeing
            targets, or different numbers of classes.
    """
    set_a, set_b = set(a.sample_id.tolist()), set(b.sample_id.tolist())
    only_a, only_b = sorted(set_a - set_b), sorted(set_b - set_a)
    if only_a or only_b:
        raise ValueError(
            f"{a.path} and {b.path} hold different samples: {len(only_a)} only in a (e.g. {only_a[:examples]}), "
            f"{len(only_b)} only in b (e.g. {only_b[:examples]}); compare predictions of the same split"
        )
    if a.n_classes != b.n_classes or a.is_binary != b.is_binary:
        raise ValueError(f"{a.path} has {a.n_classes} classes but {b.path} has {b.n_classes}")
    pos = pd.Index(b.sample_id).get_indexer(a.sample_id)
    differ = np.flatnonzero(a.targets != b.targets[pos])
    if differ.size:
        ids = a.sample_id[differ[:examples]].tolist()
        raise ValueError(
            f"{a.path} and {b.path} disagree on 'target' for {differ.size} sample(s), e.g. {ids}; "
            "they cannot come from the same data"
        )
    return pos


def run_compare(cfg: DictConfig) -> dict[str, Any]:
    """Paired comparison of two prediction files on the same samples (B minus A).

    Rows are matched by ``sample_id``. Reports the exact McNemar test (b = A right & B wrong, c = A wrong
    & B right) and paired, class-stratified bootstrap CIs of the difference in accuracy, balanced
    accuracy, AUROC (one-vs-rest macro for multiclass) and per-class accuracy.

    Writes ``compare_<a>_vs_<b>.json`` and ``.md`` into ``cfg.out_dir`` (default: the directory of a).

    Args:
        cfg: Needs ``a`` and ``b`` (predictions CSVs); uses ``n_bootstrap``, ``bootstrap_seed``,
            ``alpha`` and ``out_dir``.

    Returns:
        ``mcnemar``, ``bootstrap`` (metric -> diff, ci_low, ci_high, a, b, ...), ``per_class``, names,
        files, ``n`` and the paths written.
    """
    path_a, path_b = _required_path(cfg, "a"), _required_path(cfg, "b")
    a, b = read_predictions(path_a), read_predictions(path_b)
    pos = align_predictions(a, b)
    targets = a.targets
    probs_a = probabilities_from_logits(a.logits)
    probs_b = probabilities_from_logits(b.logits[pos])
    pred_a, pred_b = predictions_from_scores(probs_a), predictions_from_scores(probs_b)
    n_boot = int(_get(cfg, "n_bootstrap", 10000))
    seed = int(_get(cfg, "bootstrap_seed", 0))
    alpha = float(_get(cfg, "alpha", 0.05))
    name_a, name_b = _pair_labels(a.path, b.path)

    mc = mcnemar_exact(pred_a == targets, pred_b == targets)
    boot = {
        metric: paired_bootstrap_ci(targets, probs_a, probs_b, metric, n_boot=n_boot, seed=seed, alpha=alpha)
        for metric in ("accuracy", "balanced_accuracy", "auroc")
    }
    n_classes = a.n_classes
    pc_a = per_class_accuracy(targets, pred_a, n_classes)
    pc_b = per_class_accuracy(targets, pred_b, n_classes)
    per_class: dict[str, dict[str, float]] = {}
    for k in range(n_classes):
        mask = targets == k
        if not mask.any():
            per_class[str(k)] = {"a": float("nan"), "b": float("nan"), "diff": float("nan"),
                                 "ci_low": float("nan"), "ci_high": float("nan"), "n": 0}
            continue
        # Within one class the stratified bootstrap is a plain bootstrap of that class's samples.
        ci = paired_bootstrap_ci(targets[mask], probs_a[mask], probs_b[mask], "accuracy",
                                 n_boot=n_boot, seed=seed, alpha=alpha)
        per_class[str(k)] = {"a": pc_a[k], "b": pc_b[k], "diff": pc_b[k] - pc_a[k],
                             "ci_low": ci["ci_low"], "ci_high": ci["ci_high"], "n": int(mask.sum())}

    level = f"{100 * (1 - alpha):g}%"
    rows = [[m, r["a"], r["b"], r["diff"], f"[{r['ci_low']:.4f}, {r['ci_high']:.4f}]"] for m, r in boot.items()]
    rows += [[f"accuracy, class {k} (n={r['n']})", r["a"], r["b"], r["diff"],
              f"[{r['ci_low']:.4f}, {r['ci_high']:.4f}]"] for k, r in per_class.items()]
    table = markdown_table(["metric", f"A: {name_a}", f"B: {name_b}", "B - A", f"{level} CI (paired bootstrap)"], rows)
    md = "\n".join([
        f"# Compare {name_a} (A) vs {name_b} (B)",
        "",
        f"- A: `{a.path}`",
        f"- B: `{b.path}`",
        f"- n = {len(targets)} samples matched by sample_id; {n_classes} classes",
        f"- McNemar exact: b (A right, B wrong) = {mc['b']}, c (A wrong, B right) = {mc['c']}, p = {mc['p']:.4g}",
        f"- Bootstrap: {n_boot} paired resamples stratified by class, seed {seed}, percentile {level} CI",
        "",
        table,
        "",
    ])
    out = _out_dir(cfg, a.path.parent)
    stem = f"compare_{name_a}_vs_{name_b}"
    result: dict[str, Any] = {
        "a": str(a.path), "b": str(b.path), "name_a": name_a, "name_b": name_b, "n": int(len(targets)),
        "n_classes": n_classes, "mcnemar": mc, "bootstrap": boot, "per_class": per_class,
        "n_bootstrap": n_boot, "bootstrap_seed": seed, "alpha": alpha,
        "paths": {"json": str(out / f"{stem}.json"), "md": str(out / f"{stem}.md")},
    }
    write_json(out / f"{stem}.json", result)
    (out / f"{stem}.md").write_text(md)
    print(md)
    return result


# --------------------------------------------------------------------------------------------------
# summarize


def _natural_key(path: Path) -> list[Any]:
    return [int(t) if t.isdigit() else t for t in re.split(r"(\d+)", str(path))]


def _read_json(path: Path) -> tuple[Any, str | None]:
    try:
        return json.loads(path.read_text()), None
    except (OSError, ValueError) as err:
        return None, f"unreadable {path.name}: {err}"


def _experiment_of(job_dir: Path, overrides: list[str], metrics: Mapping[str, Any] | None) -> str | None:
    """Experiment name: the override, else metrics.json, else .hydra/config.yaml, else the sweep layout."""
    for o in overrides:
        if o.split("=", 1)[0].lstrip("+~") == "experiment":
            return o.split("=", 1)[1]
    if metrics and isinstance(metrics.get("experiment"), str):
        return metrics["experiment"]
    config = job_dir / ".hydra" / "config.yaml"
    if config.is_file():
        try:
            loaded = yaml.safe_load(config.read_text()) or {}
            if isinstance(loaded.get("experiment"), str):
                return loaded["experiment"]
        except yaml.YAMLError:
            pass
    # multirun/<experiment>/<timestamp>/<job>/: only trusted when the layout looks like that.
    if job_dir.name.isdigit() and job_dir.parent.name[:1].isdigit() and job_dir.parent.parent.name:
        return job_dir.parent.parent.name
    return None


def collect_jobs(sweep_dir: str | Path) -> list[dict[str, Any]]:
    """Every job directory below `sweep_dir` (itself included) that has ``.hydra/overrides.yaml``.

    Returns:
        One record per job: ``job_dir``, ``overrides``, ``metrics`` (the parsed metrics.json or None),
        ``status`` ("completed" when metrics.json exists and its status, if given, is "completed";
        otherwise its status, "failed" when failure.json exists, else "unfinished"), ``experiment``,
        ``failure`` (failure.json content or None) and ``error`` (a problem reading the job).
    """
    sweep_dir = Path(sweep_dir)
    if not sweep_dir.is_dir():
        raise FileNotFoundError(f"sweep_dir is not a directory: {sweep_dir}")
    job_dirs = sorted({p.parent.parent for p in sweep_dir.rglob("overrides.yaml") if p.parent.name == ".hydra"},
                      key=_natural_key)
    records = []
    for job in job_dirs:
        error = None
        try:
            overrides = yaml.safe_load((job / ".hydra" / "overrides.yaml").read_text()) or []
        except yaml.YAMLError as err:
            overrides, error = [], f"unreadable overrides.yaml: {err}"
        if not isinstance(overrides, list):
            overrides, error = [], f"overrides.yaml is not a list: {overrides!r}"
        overrides = [str(o) for o in overrides]
        metrics = failure = None
        if (job / "metrics.json").is_file():
            metrics, err = _read_json(job / "metrics.json")
            error = error or err
            if metrics is not None and not isinstance(metrics, dict):
                metrics, error = None, "metrics.json is not a JSON object"
        if (job / "failure.json").is_file():
            failure, err = _read_json(job / "failure.json")
            failure = failure if failure is not None else {"error": err}
        if metrics is not None:
            # A metrics.json is written at the end of a run; an explicit status overrides that.
            status = str(metrics.get("status", "completed"))
        else:
            status = "failed" if failure is not None or error else "unfinished"
        records.append({
            "job_dir": str(job), "overrides": overrides, "metrics": metrics, "status": status,
            "experiment": _experiment_of(job, overrides, metrics), "failure": failure, "error": error,
        })
    return records


def _consensus_strings(records: list[Mapping[str, Any]]) -> dict[str, str]:
    """String metrics (e.g. gate verdicts) on which every completed run of an arm agrees."""
    out: dict[str, str] = {}
    keys = {k for r in records for k, v in (r["metrics"] or {}).items() if isinstance(v, str)}
    for k in sorted(keys - {"status", "experiment"}):
        values = {r["metrics"].get(k) for r in records}
        if len(values) == 1 and isinstance(next(iter(values)), str):
            out[k] = next(iter(values))
    return out


def _failure_text(rec: Mapping[str, Any], limit: int = 200) -> str:
    parts = []
    if rec.get("error"):
        parts.append(str(rec["error"]))
    fail = rec.get("failure")
    if isinstance(fail, Mapping):
        main = [f"{k}: {fail[k]}" for k in ("type", "error", "message", "exception") if k in fail]
        parts.append("; ".join(main) if main else json.dumps(to_jsonable(fail)))
    elif fail is not None:
        parts.append(str(fail))
    text = " | ".join(parts) or "no metrics.json and no failure.json"
    return text if len(text) <= limit else text[: limit - 3] + "..."


def run_summarize(cfg: DictConfig) -> dict[str, Any]:
    """Summarize a Hydra sweep (or a directory of sweeps): per arm and metric, n, mean, std, t CI.

    Arms are the overrides minus ``seed=...`` (plus the experiment name). Std is the sample std
    (ddof=1); the CI is mean +- t_{1-alpha/2, n-1} * std / sqrt(n). Jobs without a completed
    metrics.json are listed as failed/unfinished with their failure.json, never dropped. When lens
    experiments (lens_a1, lens_b1, ...) are present, seed 004's decision tree is applied to the arm means.

    Writes ``summary.md``, ``summary.csv``, ``summary.json`` and ``summary.png`` into the sweep directory
    (or ``cfg.out_dir``).

    Args:
        cfg: Needs ``sweep_dir``; uses ``alpha``, ``out_dir`` and ``decision_thresholds``.

    Returns:
        ``arms`` (arm -> experiment, n_completed, n_failed, metrics summaries), ``failed`` (records),
        ``decision`` (or None), ``table`` (rows of summary.csv) and the paths written.
    """
    sweep_dir = _required_path(cfg, "sweep_dir")
    alpha = float(_get(cfg, "alpha", 0.05))
    confidence = 1 - alpha
    level = f"{100 * confidence:g}%"
    records = collect_jobs(sweep_dir)
    if not records:
        raise ValueError(f"{sweep_dir}: no job directories with .hydra/overrides.yaml below it")

    arms = group_runs(records)
    table: list[dict[str, Any]] = []
    arm_info: dict[str, dict[str, Any]] = {}
    failed: list[dict[str, Any]] = []
    for arm, recs in arms.items():
        done = [r for r in recs if r["status"] == "completed" and r["metrics"] is not None]
        done_ids = {id(r) for r in done}
        bad = [r for r in recs if id(r) not in done_ids]
        failed += [{**r, "arm": arm} for r in bad]
        values: dict[str, list[float]] = {}
        for r in done:
            for k, v in numeric_metrics(r["metrics"]).items():
                values.setdefault(k, []).append(v)
        summaries = {k: summarize_metric(v, confidence) for k, v in values.items()}
        experiments = sorted({r["experiment"] for r in recs if r["experiment"]})
        arm_info[arm] = {
            "experiment": experiments[0] if len(experiments) == 1 else (experiments or None),
            "n_completed": len(done), "n_failed": len(bad),
            "seeds": [r["metrics"].get("seed") for r in done],
            "metrics": summaries, "strings": _consensus_strings(done),
        }
        for k, s in summaries.items():
            table.append({"arm": arm, "experiment": arm_info[arm]["experiment"], "metric": k, **s})

    # Lens decision tree, when each lens experiment present maps to exactly one arm with results.
    decision = None
    decision_note = None
    lens: dict[str, list[str]] = {}
    for arm, info in arm_info.items():
        if isinstance(info["experiment"], str) and info["experiment"] in LENS_ARMS and info["n_completed"]:
            lens.setdefault(info["experiment"], []).append(arm)
    if lens:
        ambiguous = {e: a for e, a in lens.items() if len(a) > 1}
        if ambiguous:
            decision_note = f"lens decision skipped: experiments with several arms {ambiguous}; summarize one arm each"
        else:
            means = {}
            for exp, (arm,) in lens.items():
                means[exp] = {**arm_info[arm]["strings"], **{k: s["mean"] for k, s in arm_info[arm]["metrics"].items()}}
            thresholds = _get(cfg, "decision_thresholds", {})
            if isinstance(thresholds, DictConfig):
                thresholds = OmegaConf.to_container(thresholds, resolve=True)
            decision = lens_decision(means, thresholds)

    out = _out_dir(cfg, sweep_dir)
    md = [f"# Sweep summary: `{sweep_dir}`", "",
          f"{len(records)} job(s): {sum(i['n_completed'] for i in arm_info.values())} completed, {len(failed)} failed or unfinished.",
          f"Per arm (overrides minus seed): n = completed seeds, mean, std = sample std (ddof=1), "
          f"{level} CI = mean ± t(1-α/2, n-1)·std/√n (Student t; blank for n < 2).", ""]
    for arm, info in arm_info.items():
        md.append(f"## {arm}")
        md.append("")
        md.append(f"completed: {info['n_completed']}, failed/unfinished: {info['n_failed']}, seeds: {info['seeds']}")
        md.append("")
        rows = [[k, s["n"], s["mean"], s["std"],
                 "" if math.isnan(s["ci_half"]) else f"[{s['ci_low']:.4f}, {s['ci_high']:.4f}]"]
                for k, s in info["metrics"].items()]
        if rows:
            md.append(markdown_table(["metric", "n", "mean", "std (ddof=1)", f"{level} CI (t)"], rows))
            md.append("")
        if info["strings"]:
            md.append("Agreed text results: " + ", ".join(f"{k} = {v}" for k, v in info["strings"].items()))
            md.append("")
    if failed:
        md += ["## Failed or unfinished jobs", ""]
        md.append(markdown_table(["job_dir", "arm", "status", "failure"],
                                 [[r["job_dir"], r["arm"], r["status"], _failure_text(r)] for r in failed]))
        md.append("")
    if decision is not None or decision_note:
        md += ["## Lens decision (seed 004, section 10)", ""]
        if decision is not None:
            md.append(f"**Verdict: {decision['verdict']}**")
            if decision["missing"]:
                md.append(f"Missing: {decision['missing']}")
            md.append("")
            md += [f"- {r}" for r in decision["reasons"]]
        else:
            md.append(decision_note)
        md.append("")
    md_text = "\n".join(md)

    paths = {"md": str(out / "summary.md"), "csv": str(out / "summary.csv"), "json": str(out / "summary.json")}
    (out / "summary.md").write_text(md_text)
    columns = ["arm", "experiment", "metric", "n", "mean", "std", "ci_half", "ci_low", "ci_high"]
    pd.DataFrame(table, columns=columns).to_csv(out / "summary.csv", index=False)
    if table:
        paths["png"] = str(metric_bars(table, out / "summary.png"))
    failed_out = [{k: r[k] for k in ("job_dir", "arm", "status", "overrides", "failure", "error")} for r in failed]
    result: dict[str, Any] = {
        "sweep_dir": str(sweep_dir), "n_jobs": len(records), "confidence": confidence,
        "arms": arm_info, "failed": failed_out, "decision": decision, "decision_note": decision_note,
        "table": table, "paths": paths,
    }
    write_json(out / "summary.json", result)
    print(md_text)
    return result


#: Tasks of evaluate.py that work on files only (``predict`` needs a checkpoint and lives there).
TASKS: dict[str, Callable[[DictConfig], dict[str, Any]]] = {
    "calibrate": run_calibrate,
    "compare": run_compare,
    "summarize": run_summarize,
}
