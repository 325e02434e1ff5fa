"""File-based evaluate tasks: calibrate, compare and summarize.

Each task is a plain function of an omegaconf DictConfig (conf/evaluate.yaml plus its own
conf/task/<name>.yaml) that reads only files (predictions CSVs and their .json sidecars, a sweep
directory), writes its report next to its input (or into ``out_dir``), prints a table and returns the
numbers as a dict. evaluate.py calls the one named by ``task._target_``.

The numbers come from analysis/ (pure functions); this module only reads, checks, aligns and writes.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from omegaconf import DictConfig, OmegaConf

from analysis.calibration import (
    calibration_report,
    fit_temperature,
    mc_triage,
    probabilities_from_logits,
    reliability_bins,
)
from analysis.plots import metric_bars, reliability_diagram
from analysis.predictions import Predictions, read_predictions
from analysis.significance import (
    paired_bootstrap_ci,
    paired_comparison,
    per_class_accuracy,
    predictions_from_scores,
)
from analysis.summary import (
    group_runs,
    markdown_table,
    match_metrics,
    numeric_metrics,
    pick_reference,
    plot_metrics,
    seed_comparison,
    summarize_metric,
)
from rigor.jsonio import to_jsonable, write_json
from rigor.overrides import PLUMBING
from rigor.sweeps import read_sweep

# --------------------------------------------------------------------------------------------------
# small helpers


def _get(cfg: DictConfig | Mapping[str, Any], key: str, default: Any = None) -> Any:
    value = cfg.get(key, default) if cfg is not None else default
    return default if value is None else value


def _task_name(cfg: DictConfig) -> str:
    task = cfg.get("task")
    target = task.get("_target_") if isinstance(task, Mapping) else task
    return str(target).rsplit(".", 1)[-1].removeprefix("run_")


def _required_path(cfg: DictConfig, key: str) -> Path:
    value = cfg.get(key)
    if value in (None, ""):
        raise ValueError(f"evaluate: config key '{key}' is required for task={_task_name(cfg)} (a file path)")
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

#: MC-Dropout triage options of task=calibrate -> their names in a family's thresholds node.
MC_TRIAGE_KEYS = {"review_std": "mc_review_std", "auto_conf": "mc_auto_conf", "auto_std": "mc_auto_std"}


def evidence_of_test_split(pred: Predictions) -> list[str]:
    """Why a predictions file counts as test data: its name, its ``split`` column, its JSON sidecar.

    The content decides, not only the name: a renamed ``predictions_test.csv`` still has split=test in
    its rows and in its sidecar.
    """
    evidence = []
    if (pred.name_split or "").lower() == "test":
        evidence.append(f"file name {pred.path.name!r}")
    if "test" in {str(v).lower() for v in pred.column_splits}:
        evidence.append(f"'split' column {sorted(pred.column_splits)}")
    if (pred.recorded_split or "").lower() == "test":
        evidence.append(f"{pred.path.with_suffix('.json').name}: split='test'")
    return evidence


def shared_samples(fit: Predictions, target: Predictions) -> str | None:
    """Why a temperature fitted on `fit` would be fitted on the samples it is applied to, or None.

    Decided by the content, not by the ``split`` column (which a copy can rewrite or drop): the two
    files share sample ids, or they hold the same rows of logits and targets under other ids (a renamed
    copy of one file). A file whose logits are all one value (a collapsed model) is not compared by rows.
    """
    shared = np.intersect1d(fit.sample_id, target.sample_id)
    if len(shared):
        return (f"{len(shared)} of its {len(fit)} sample ids are in {target.path} "
                f"(e.g. {', '.join(map(str, shared[:5]))})")
    if fit.logits.shape == target.logits.shape and len(np.unique(fit.logits.reshape(len(fit), -1), axis=0)) > 1:
        # each file's distinct (logits, target) rows with their counts: equal for a copy in any row order
        (rows_a, counts_a), (rows_b, counts_b) = (
            np.unique(np.column_stack([p.logits.reshape(len(p), -1), p.targets]), axis=0, return_counts=True)
            for p in (fit, target))
        if rows_a.shape == rows_b.shape and np.array_equal(rows_a, rows_b) \
                and np.array_equal(counts_a, counts_b):
            return f"its {len(fit)} rows of logits and targets are those of {target.path}, under other sample ids"
    return None


def resolve_triage(given: Any, recorded: Any) -> tuple[dict[str, float], list[str]]:
    """MC-Dropout triage thresholds: ``given`` (``mc_dropout.<key>``) first, else ``recorded`` (``mc_<key>``).

    Returns:
        (the thresholds found, the keys found in neither place).
    """
    found, missing = {}, []
    for key, name in MC_TRIAGE_KEYS.items():
        value = given.get(key) if isinstance(given, Mapping) else None
        value = recorded.get(name) if value is None and isinstance(recorded, Mapping) else value
        if value is None:
            missing.append(key)
        else:
            found[key] = float(value)
    return found, missing


def triage_thresholds(cfg: DictConfig, pred: Predictions) -> tuple[dict[str, float] | None, str | None]:
    """MC-Dropout triage thresholds of a predictions file: the command line's ``mc_dropout.*``, else the
    sidecar's ``thresholds.mc_*`` (the run config's thresholds node, which predict records).

    Returns:
        (thresholds, None), or (None, a note naming the keys to give) when some are in neither place.
    """
    found, missing = resolve_triage(_get(cfg, "mc_dropout", {}) or {}, pred.sidecar.get("thresholds") or {})
    path = pred.path
    if missing:
        return None, (
            f"MC-Dropout triage skipped: {path} has mc_prob/mc_std but no threshold for {missing} (neither "
            f"mc_dropout.<key> on the command line nor thresholds.{{{', '.join(MC_TRIAGE_KEYS[k] for k in missing)}}} "
            f"in {path.with_suffix('.json').name}); give e.g. "
            + " ".join(f"mc_dropout.{k}=<value>" for k in missing)
        )
    return found, None


def run_calibrate(cfg: DictConfig) -> dict[str, Any]:
    """Fit a temperature on ``cfg.fit`` and report calibration before/after on ``cfg.apply``.

    Refuses to fit on test data unless ``cfg.force``: the file's name (predictions_test.csv), its
    ``split`` column or its JSON sidecar (``split``) saying test each count, so a renamed test file is
    still refused. A temperature tuned on the test set makes its calibration numbers optimistic (seed
    003 saw exactly that).

    Refuses, whatever the files say their split is, when ``fit`` and ``apply`` share samples (sample ids,
    or the same rows of logits and targets under other ids): ``force`` does not lift that, except in its
    documented case, a fit on a file recorded as test.

    Writes ``<apply stem>_calibration.json`` and ``<apply stem>_reliability.png`` next to the applied
    file, or into ``cfg.out_dir``.

    Args:
        cfg: Needs ``fit`` and ``apply`` (predictions CSVs); uses ``force``, ``n_bins``, ``out_dir`` and
            ``mc_dropout.{review_std, auto_conf, auto_std}`` (null: the applied run's recorded thresholds).

    Returns:
        ``temperature``, ``before`` and ``after`` metrics on the applied file (ece, adaptive_ece, brier,
        nll, accuracy), the same on the fit file under ``fit_before``/``fit_after``, per-bin reliability
        tables, MC-Dropout triage counts when the file has MC columns, and the paths written.
    """
    fit_path, apply_path = _required_path(cfg, "fit"), _required_path(cfg, "apply")
    force = bool(_get(cfg, "force", False))
    n_bins = int(_get(cfg, "n_bins", 15))
    fit = read_predictions(fit_path, kind=("binary", "multiclass"))
    evidence = evidence_of_test_split(fit)
    if evidence and not force:
        raise ValueError(
            f"{fit.path}: refusing to fit a temperature on the test split ({'; '.join(evidence)}); fit on "
            "validation/dev predictions, or set force=true"
        )
    target = read_predictions(apply_path, kind=("binary", "multiclass"))
    if fit.is_binary != target.is_binary or fit.n_classes != target.n_classes:
        raise ValueError(
            f"{fit.path} has {fit.n_classes} classes ({'binary' if fit.is_binary else 'multiclass'}) but "
            f"{target.path} has {target.n_classes} ({'binary' if target.is_binary else 'multiclass'})"
        )
    overlap = shared_samples(fit, target)
    # force=true covers only the documented case, a fit on a file recorded as test (flagged below);
    # a file whose split says nothing (rewritten or dropped) gets no way around the overlap
    if overlap and not (evidence and force):
        raise ValueError(
            f"{fit.path}: refusing to fit a temperature on the samples it is applied to: {overlap}. The 'after' "
            "numbers would be optimistic whatever the files' split says; fit on validation/dev predictions of "
            "other samples (the fit file's own before/after is reported as fit_before/fit_after)"
            + ("" if evidence else "; force=true does not apply: it allows only a fit on a file recorded as test")
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
        "forced_test_fit": bool(evidence and force),
        "test_split_evidence": evidence,
        "same_file": fit.path.resolve() == target.path.resolve(),
        "shared_samples": overlap,
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
        triage, note = triage_thresholds(cfg, target)
        if triage is not None:
            result["mc_triage"] = mc_triage(target.mc_prob, target.mc_std, **triage)
            result["mc_triage_thresholds"] = triage
        else:
            result["mc_triage_note"] = note
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
    if "mc_triage_note" in result:
        print(result["mc_triage_note"])
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
    a, b = (read_predictions(p, kind=("binary", "multiclass")) for p in (path_a, path_b))
    if a.n_classes != b.n_classes or a.is_binary != b.is_binary:
        raise ValueError(f"{a.path} has {a.n_classes} classes but {b.path} has {b.n_classes}")
    n_boot = int(_get(cfg, "n_bootstrap", 10000))
    seed = int(_get(cfg, "bootstrap_seed", 0))
    alpha = float(_get(cfg, "alpha", 0.05))
    name_a, name_b = _pair_labels(a.path, b.path)

    comp = paired_comparison(a.sample_id, a.targets, probabilities_from_logits(a.logits), b.sample_id, b.targets,
                             probabilities_from_logits(b.logits), metrics=("accuracy", "balanced_accuracy", "auroc"),
                             n_boot=n_boot, seed=seed, alpha=alpha, names=(str(a.path), str(b.path)))
    targets, probs_a, probs_b, mc, boot = comp["targets"], comp["scores_a"], comp["scores_b"], comp["mcnemar"], comp["bootstrap"]
    pred_a, pred_b = predictions_from_scores(probs_a), predictions_from_scores(probs_b)
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


def collect_jobs(sweep_dir: str | Path) -> list[dict[str, Any]]:
    """Every job below `sweep_dir` (itself included), with its sweep ledger's state: rigor.sweeps.read_sweep.

    Returns:
        One record per job: ``job_dir``, ``overrides``, ``metrics`` (the parsed metrics.json or None),
        ``status`` ("completed" when metrics.json exists and its status, if given, is "completed";
        otherwise its status; with failure.json, its status ("terminated" after SIGTERM) or "failed"; else
        "unfinished"; an unfinished job's ledger state where the ledger has one), ``experiment``,
        ``failure`` (failure.json content or None), ``error`` (a problem reading the job), ``config``
        (``.hydra/config.yaml`` as an unresolved DictConfig, or None) and ``ledger`` (its row, where known).
    """
    return read_sweep(sweep_dir)


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
    row = rec.get("ledger") or {}
    if row.get("exit_reason") and not isinstance(fail, Mapping):
        parts.append(str(row["exit_reason"]))  # e.g. a Ray worker the OS killed: no failure.json was written
    if rec.get("status") in ("queued", "running") and not parts:
        parts.append(f"{rec['status']} (ledger, updated {row.get('updated')})")
    text = " | ".join(parts) or "no metrics.json and no failure.json"
    return text if len(text) <= limit else text[: limit - 3] + "..."


def summary_plugins(jobs: list[Mapping[str, Any]]) -> tuple[dict[str, dict[str, Any]], list[str]]:
    """Every distinct ``summary`` entry of the completed jobs' saved configs, resolved.

    Only the ``summary`` node is resolved (its ``thresholds: ${thresholds}`` against the job's own
    config); the rest of a saved config may hold ``${hydra:...}`` interpolations that cannot resolve
    outside its run. An entry set to null is switched off.

    Returns:
        (section name -> ``{"config": resolved entry, "job_dirs": [...]}``, notes). Two jobs giving the
        same name different settings (e.g. thresholds overridden in one arm) yield two sections,
        ``<name>`` and ``<name>#2``, and a note that says so.
    """
    sections: dict[str, dict[str, Any]] = {}
    keys: dict[str, str] = {}  # canonical JSON of an entry -> its section name
    notes: list[str] = []
    for job in jobs:
        config = job.get("config")
        if job.get("status") != "completed" or not isinstance(config, DictConfig) or config.get("summary") is None:
            continue
        for name in config.summary:
            node = config.summary[name]
            if node is None:
                continue
            try:
                entry = OmegaConf.to_container(node, resolve=True)
            except Exception as err:
                raise ValueError(f"{job['job_dir']}/.hydra/config.yaml: summary.{name} does not resolve: {err}") from err
            if not isinstance(entry, dict) or "_target_" not in entry:
                raise ValueError(f"{job['job_dir']}/.hydra/config.yaml: summary.{name} needs a _target_, got {entry!r}")
            # resolved, every plugin is checked before any is called (a target an interpolation made, too)
            from rigor.config import check_targets

            check_targets(entry, f"{job['job_dir']}/.hydra/config.yaml", f"summary.{name}")
            key = json.dumps([str(name), to_jsonable(entry)], sort_keys=True)
            if key not in keys:
                section = str(name)
                k = 2
                while section in sections:
                    section = f"{name}#{k}"
                    k += 1
                if section != name:
                    notes.append(f"summary.{name}: jobs disagree on its settings; section {section} uses those of {job['job_dir']}")
                keys[key] = section
                sections[section] = {"config": entry, "job_dirs": []}
            sections[keys[key]]["job_dirs"].append(job["job_dir"])
    return sections, notes


def call_summary_plugin(name: str, entry: Mapping[str, Any], arms: Mapping[str, Any], jobs: list[Mapping[str, Any]]) -> Any:
    """Instantiate one ``summary`` entry (always as a partial) and call it as ``fn(arms=..., jobs=...)``."""
    import hydra

    from rigor.config import check_targets

    check_targets(entry, "the sweep's job configs", f"summary.{name}")
    fn = hydra.utils.instantiate({**entry, "_partial_": True}, _convert_="all")
    result = fn(arms=arms, jobs=jobs)
    if result is not None and not (isinstance(result, Mapping) and {"title", "markdown"} <= set(result)):
        raise ValueError(f"summary.{name} ({entry['_target_']}) returned {type(result).__name__}; expected None or "
                         "{'title': str, 'markdown': str, 'result': dict}")
    return result


def run_summarize(cfg: DictConfig) -> dict[str, Any]:
    """Summarize a Hydra sweep (or a directory of sweeps): per arm and metric, n, mean, std, t CI.

    Arms are the overrides minus ``seed=...`` and plumbing keys (rigor/overrides.py PLUMBING: threads, paths,
    the launcher), plus the experiment name. Std is the sample std
    (ddof=1); the CI is mean +- t_{1-alpha/2, n-1} * std / sqrt(n). Jobs without a completed
    metrics.json are listed as failed/unfinished with their failure.json, never dropped. Then every
    distinct ``summary`` entry of the completed jobs' saved configs (a family's plugin, e.g. a decision
    tree) is called once as ``fn(arms=..., jobs=...)``, with the arms (and their jobs) that declared it,
    and its section added.

    Writes ``summary.md``, ``summary.csv``, ``summary.json`` and ``summary.png`` into the sweep directory
    (or ``cfg.out_dir``).

    Args:
        cfg: Needs ``sweep_dir``; uses ``alpha``, ``out_dir`` and ``plot_metrics`` (the panels of
            summary.png: analysis.summary.plot_metrics).

    Returns:
        ``arms`` (arm -> experiment, n_completed, n_failed, seeds, job_dirs, metrics summaries, strings),
        ``failed`` (records), ``table`` (rows of summary.csv), the paths written, ``summary_notes``, and
        each plugin's result under its name (None when it had nothing to say).
    """
    sweep_dir = _required_path(cfg, "sweep_dir")
    alpha = float(_get(cfg, "alpha", 0.05))
    confidence = 1 - alpha
    level = f"{100 * confidence:g}%"
    records = collect_jobs(sweep_dir)
    if not records:
        raise ValueError(f"{sweep_dir}: no job directories with .hydra/overrides.yaml below it")

    arms = group_runs(records, ignore=("seed", *PLUMBING))  # threads, paths, launcher: how a run ran, not its arm
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
            "job_dirs": [r["job_dir"] for r in recs],
            "metrics": summaries, "strings": _consensus_strings(done),
        }
        for k, s in summaries.items():
            table.append({"arm": arm, "experiment": arm_info[arm]["experiment"], "metric": k, **s})

    # summary.png's panels; a typo in plot_metrics fails here, before any file is written
    shown = plot_metrics([r["metric"] for r in table], _get(cfg, "plot_metrics", None)) if table else []
    # compare.metrics: Welch's t over seeds between arms (arms whose test sets differ cannot be paired)
    compare = _get(cfg, "compare", None) or {}
    compared = match_metrics([r["metric"] for r in table], compare["metrics"], "compare.metrics") \
        if compare.get("metrics") else []
    if compared and compare.get("reference"):
        reference, why = pick_reference([a for a, i in arm_info.items() if i["n_completed"]], str(compare["reference"]))
        if reference is None:  # a typo would otherwise give a section that compares nothing
            raise ValueError(f"compare.reference: {why} with a completed job; arms: {sorted(arm_info)}")

    # Family sections: every distinct `summary` entry of the jobs' saved configs, called once each.
    plugins, plugin_notes = summary_plugins(records)
    sections: dict[str, Any] = {}
    for name, plugin in plugins.items():
        # a plugin sees only the arms whose jobs declared it (another family's runs may share the sweep dir)
        declared = set(plugin["job_dirs"])
        own = {a: i for a, i in arm_info.items() if declared & set(i["job_dirs"])}
        own_dirs = {d for i in own.values() for d in i["job_dirs"]}
        sections[name] = call_summary_plugin(name, plugin["config"], own, [r for r in records if r["job_dir"] in own_dirs])
    if compared:
        if "seed_comparison" in sections:
            raise ValueError("summary.seed_comparison: the name is taken by compare.metrics' section; rename the entry")
        sections["seed_comparison"] = seed_comparison(arm_info, records, compared, compare.get("reference"), confidence)
        plugins["seed_comparison"] = {"config": {"_target_": "analysis.summary.seed_comparison"}}

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
    states: dict[str, int] = {}
    for r in records:
        states[r["status"]] = states.get(r["status"], 0) + 1
    if any("ledger" in r for r in records):
        md += ["Job states (sweep ledger, ledger.csv): " + ", ".join(f"{k}: {v}" for k, v in sorted(states.items())), ""]
    if failed:
        md += ["## Failed or unfinished jobs", ""]
        md.append(markdown_table(["job_dir", "arm", "status", "failure"],
                                 [[r["job_dir"], r["arm"], r["status"], _failure_text(r)] for r in failed]))
        md.append("")
    for name, section in sections.items():
        if section is not None:
            md += [f"## {section['title']}", "", f"(summary.{name}: {plugins[name]['config']['_target_']})", "",
                   section["markdown"], ""]
    if plugin_notes:
        md += ["## Notes", ""] + [f"- {n}" for n in plugin_notes] + [""]
    md_text = "\n".join(md)

    paths = {"md": str(out / "summary.md"), "csv": str(out / "summary.csv"), "json": str(out / "summary.json")}
    (out / "summary.md").write_text(md_text)
    columns = ["arm", "experiment", "metric", "n", "mean", "std", "ci_half", "ci_low", "ci_high"]
    pd.DataFrame(table, columns=columns).to_csv(out / "summary.csv", index=False)
    if table:
        paths["png"] = str(metric_bars(table, out / "summary.png", metrics=shown))
    failed_out = [{k: r[k] for k in ("job_dir", "arm", "status", "overrides", "failure", "error")} for r in failed]
    result: dict[str, Any] = {
        "sweep_dir": str(sweep_dir), "n_jobs": len(records), "confidence": confidence,
        "arms": arm_info, "failed": failed_out, "states": states, "table": table, "paths": paths,
        "summary_notes": plugin_notes, "plot_metrics": shown,
    }
    for name, section in sections.items():
        if name in result:
            raise ValueError(f"summary.{name}: the name is taken by summary.json's own {name!r}; rename the entry")
        result[name] = None if section is None else section.get("result")
    write_json(out / "summary.json", result)
    print(md_text)
    return result
