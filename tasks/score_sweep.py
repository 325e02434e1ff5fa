"""evaluate.py task=score_sweep: score every completed job of a sweep (or a list of runs) on one data set,
then compare the arms with paired statistics.

    python evaluate.py task=score_sweep sweep_dir=multirun/<experiment>/<sweep> data=<name> [data.<key>=<value>]
    python evaluate.py task=score_sweep 'runs=[<run a>,<run b>]' 'data_overrides=["data.manifest_path=/x/m.parquet"]'

Each job is scored by tasks.predict.run_predict (its best checkpoint, the same data options), so its
predictions land in ``<job>/predictions/<data name>/predictions_<split>.csv``. The arms (overrides minus the
seed and plumbing, as task=summarize groups them) are then compared with analysis.arms.compare_arms on
``metrics=[...]`` (accuracy, balanced_accuracy, auroc, or a function's dotted name such as
``analysis.lens.search_metrics.tpr0``): per seed exact McNemar and a paired bootstrap, across seeds the
paired t-test on the per-seed values, Holm over the table, and the MDD beside every "not resolved". Writes ``arms.md`` and ``arms.json`` into
``<sweep_dir>/scores/<data label>/`` (or ``out_dir``).

With ``reuse=true`` (the default here) a job whose predictions file on this data was written for the same
request (checkpoint bytes, data, split, trainer, temperature: the sidecar's ``request_hash``,
tasks.predict.prediction_request) is not predicted again, so adding runs to a comparison, or another
reference or metric, costs only the new runs. ``reuse=false`` predicts every job.
"""

from __future__ import annotations

import importlib
import math
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from analysis.arms import binary_or_class_scores, compare_arms
from analysis.calibration import probabilities_from_logits
from analysis.power import SAMPLE_METRICS
from analysis.predictions import read_predictions
from analysis.summary import group_runs, markdown_table, pick_reference
from rigor.cache import content_hash
from rigor.config import target_refusal
from rigor.jsonio import write_json
from rigor.overrides import PLUMBING
from rigor.sweeps import read_sweep
from tasks.predict import _data_choice, _safe, data_overrides, run_predict


def completed_runs(cfg: DictConfig, task: str) -> tuple[list[dict[str, Any]], Path]:
    """Completed jobs (with their overrides) of ``sweep_dir`` or ``runs``, and the folder a report goes under.

    The jobs that did not complete are named on stdout and left out. Shared by the tasks that compare a
    sweep's arms (score_sweep, weak_lensing_compare); ``task`` names the caller in messages.

    Raises:
        ValueError: Neither option, or a folder that holds no job directories.
    """
    if cfg.get("sweep_dir"):
        sweep = Path(str(cfg.sweep_dir))
        records = read_sweep(sweep)
        if not records:
            raise ValueError(f"sweep_dir: {sweep} holds no job directories (.hydra/overrides.yaml)")
        base = sweep
    elif cfg.get("runs"):
        records = []
        for run in cfg.runs:
            found = read_sweep(Path(str(run)))
            if not found:
                raise ValueError(f"runs: {run} is not a run directory (no .hydra/overrides.yaml)")
            records += found
        base = Path(str(cfg.runs[0])).parent
    else:
        raise ValueError(f"task={task} needs sweep_dir=<sweep> or runs=[<run>, ...]")
    skipped = [f"{r['job_dir']} ({r['status']})" for r in records if r["status"] != "completed"]
    if skipped:
        print(f"{task}: left out (not completed): {skipped}")
    return [r for r in records if r["status"] == "completed"], base


def _jobs(cfg: DictConfig) -> tuple[list[dict[str, Any]], Path]:
    """Completed jobs of ``sweep_dir`` or ``runs``, each with its best checkpoint, and the default report folder."""
    done, base = completed_runs(cfg, "score_sweep")
    missing = [r["job_dir"] for r in done if not (Path(r["job_dir"]) / "checkpoints" / "best.ckpt").is_file()]
    if missing:
        raise FileNotFoundError(f"score_sweep: completed job(s) without checkpoints/best.ckpt: {missing}")
    return done, base


def named_metric(name: str) -> tuple[str, str | Callable[..., float]]:
    """A ``metrics=[...]`` entry: a built-in sample metric, or the dotted name of a function ``f(targets, scores)``.

    A family's own metric is named by its path, e.g. ``analysis.lens.search_metrics.tpr0`` (reported as
    ``tpr0``); the name passes the same check as a config's ``_target_`` before anything is imported.

    Returns:
        (the name in the report, the metric).

    Raises:
        ValueError: Neither a built-in metric nor an allowed function.
    """
    if name in SAMPLE_METRICS:
        return name, name
    if "." not in name:
        raise ValueError(f"metrics: {name!r} is not one of {SAMPLE_METRICS}, nor the dotted name of a function "
                         "f(targets, scores) -> float (e.g. analysis.lens.search_metrics.tpr0)")
    reason = target_refusal(name)
    if reason:
        raise ValueError(f"metrics: {name!r} is refused: {reason}")
    module, attr = name.rsplit(".", 1)
    return attr, getattr(importlib.import_module(module), attr)


def resolve_reference(arms: Mapping[str, Any] | Sequence[str], reference: str | None) -> str | None:
    """The arm ``reference=`` names, as task=summarize reads it (analysis.summary.pick_reference: an experiment
    name, or overrides the arm carries); None: the first arm. Checked before any job is scored.

    Raises:
        ValueError: The reference names no arm, or several equally well; the message lists the arms.
    """
    if not reference:
        return None
    ref, note = pick_reference(list(arms), str(reference))
    if ref is None:
        raise ValueError(f"reference: {note}; the arms are {sorted(arms)}")
    return ref


def data_label(cfg: DictConfig) -> str:
    """A name for the data all jobs are scored on: the data=<name> choice and a hash of the data options."""
    node = cfg.get("data")
    given = OmegaConf.to_container(node, resolve=False) if isinstance(node, DictConfig) else None
    choice = _data_choice()
    return f"{_safe(choice or 'data')}-{content_hash([choice, given, data_overrides(cfg)], length=8)}"


def run_score_sweep(cfg: DictConfig) -> dict[str, Any]:
    """Score every completed job on the given data, then compare the arms paired (see the module docstring)."""
    if not isinstance(cfg.get("data"), DictConfig) and not data_overrides(cfg):
        raise ValueError("task=score_sweep: name the data: data=<name> and/or data_overrides=[data.<key>=<value>, ...] "
                         "(every job is then scored on that one data set)")
    # a bad name fails here, before any job is scored
    resolved = [named_metric(str(m)) for m in (cfg.get("metrics") or ["accuracy"])]
    metrics = dict(resolved)
    if len(metrics) < len(resolved):
        names = [name for name, _ in resolved]
        raise ValueError(f"metrics: two entries would be reported under one name: {sorted({n for n in names if names.count(n) > 1})}")
    jobs, base = _jobs(cfg)
    reference = resolve_reference(group_runs(jobs, ignore=("seed", *PLUMBING)), cfg.get("reference"))  # before any scoring
    split = str(cfg.get("split") or "test")
    scored: list[dict[str, Any]] = []
    for job in jobs:
        job_cfg = cfg.copy()
        OmegaConf.set_struct(job_cfg, False)
        job_cfg.ckpt_path = str(Path(job["job_dir"]) / "checkpoints" / "best.ckpt")
        job_cfg.out_dir = None  # each job's own <job>/predictions/<data name>/
        print(f"score_sweep: {job['job_dir']}")
        report = run_predict(job_cfg)
        scored.append({**job, "predictions": report["predictions_path"], "seed": report["seed"]})

    runs = []
    arms = group_runs(scored, ignore=("seed", *PLUMBING))
    for arm, recs in arms.items():
        for rec in recs:
            pred = read_predictions(rec["predictions"], kind=("binary", "multiclass"))
            if not pred.labelled:
                raise ValueError(f"{pred.path}: unlabelled data; arms are compared on labelled data only")
            temperature = pred.sidecar.get("temperature")
            probs = probabilities_from_logits(pred.logits, temperature) if temperature is not None else None
            runs.append({"arm": arm, "seed": rec["seed"], "ids": pred.sample_id, "targets": pred.targets,
                         "scores": binary_or_class_scores(pred.kind, pred.logits, probs), "label": str(pred.path)})
    result = compare_arms(runs, reference=reference, metrics=metrics, alpha=float(cfg.get("alpha") or 0.05),
                          power=float(cfg.get("power") or 0.8), n_boot=int(cfg.get("n_bootstrap") or 2000),
                          seed=int(cfg.get("bootstrap_seed") or 0))
    label = data_label(cfg)
    out = Path(str(cfg.out_dir)) if cfg.get("out_dir") else base / "scores" / label
    out.mkdir(parents=True, exist_ok=True)
    md = _markdown(result, label, split, scored)
    (out / "arms.md").write_text(md)
    result.update({"data_label": label, "split": split,
                   "jobs": [{"job_dir": r["job_dir"], "seed": r["seed"], "predictions": r["predictions"]} for r in scored],
                   "paths": {"md": str(out / "arms.md"), "json": str(out / "arms.json")}})
    write_json(out / "arms.json", result)
    print(md)
    return result


def _fmt(x: Any) -> str:
    return f"{x:.4g}" if isinstance(x, float) and math.isfinite(x) else str(x)


def _markdown(result: dict[str, Any], label: str, split: str, scored: list[dict[str, Any]]) -> str:
    alpha = result["alpha"]
    lines = [f"# Arms on one test set: `{label}` (split {split})", "",
             f"{len(scored)} job(s) scored; reference arm: `{result['reference']}`. Per seed: exact McNemar on correctness "
             f"(Holm over the rows) and a paired bootstrap CI of B - A; across seeds: paired t-test (ttest_rel) of the "
             f"per-seed values, Holm over the table; MDD at alpha {alpha} and power {result['power']}.", "",
             "## Across seeds", ""]
    lines.append(markdown_table(
        ["arm", "metric", "seeds", "mean A", "mean B", "mean B-A", "sd(B-A)", "t", "p", "p Holm", "MDD", "MDD at alpha/m", "verdict"],
        [[r["arm"], r["metric"], r["n_seeds"], r["mean_a"], r["mean_b"], r["mean_diff"], r["sd_diff"], r["t"], r["p"],
          r["p_holm"], r["mdd"], r.get("mdd_holm", math.nan), r["verdict"]] for r in result["across_seeds"]]))
    lines += ["", "## Per seed", ""]
    metrics = result["metrics"]
    rows = []
    for r in result["per_seed"]:
        rows.append([r["arm"], r["seed"], r["n"], r["mcnemar_b"], r["mcnemar_c"], r["mcnemar_p"], r["mcnemar_p_holm"],
                     *[f"{_fmt(r[f'{m}_diff'])} [{_fmt(r[f'{m}_ci_low'])}, {_fmt(r[f'{m}_ci_high'])}] (MDD {_fmt(r[f'{m}_mdd'])})"
                       for m in metrics]])
    lines.append(markdown_table(["arm", "seed", "n", "b (A right)", "c (B right)", "McNemar p", "p Holm",
                                 *[f"{m} B-A [CI] (MDD)" for m in metrics]], rows))
    if result["notes"]:
        lines += ["", "## Notes", ""] + [f"- {n}" for n in result["notes"]]
    return "\n".join(lines) + "\n"
