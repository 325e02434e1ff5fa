"""evaluate.py task=power: what a pilot can resolve, and what a study would need.

    python evaluate.py task=power sweep_dir=multirun/<experiment>/<sweep> power.metrics='[test_auroc]' power.delta=0.01
    python evaluate.py task=power a=<run A>/predictions_test.csv b=<run B>/predictions_test.csv power.delta=0.01

From a sweep (jobs read by rigor.sweeps.read_sweep, arms grouped as task=summarize groups them): per arm and
metric, the variance over seeds split into its seed part and its test-sample part, the minimum detectable
difference (MDD) of a two-arm Welch comparison at the seeds at hand, and the seeds (and test samples) needed
to detect ``power.delta``; per pair of arms, the MDD of Welch's test and, where both arms ran the same seeds
on the same test set, of the paired t-test. From two predictions files: the paired bootstrap SE of each
metric's difference, its MDD and the test samples needed. The numbers come from analysis.power.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from omegaconf import DictConfig

from analysis.calibration import probabilities_from_logits
from analysis.power import (
    SAMPLE_METRICS,
    binomial_variance,
    bootstrap_variance,
    mdd_normal,
    mdd_note,
    mdd_paired,
    mdd_welch,
    metric_value,
    paired_bootstrap_se,
    samples_needed,
    seeds_needed,
    variance_split,
)
from analysis.predictions import read_predictions
from analysis.significance import align_samples
from analysis.summary import group_runs, markdown_table, match_metrics, numeric_metrics, pick_reference, plot_metrics
from rigor.jsonio import write_json
from rigor.overrides import PLUMBING
from rigor.sweeps import read_sweep

#: The predictions file of a job whose test samples the bootstrap resamples.
PREDICTIONS_FILE = "predictions_test.csv"


def sample_metric(name: str, given: Mapping[str, str] | None = None) -> str | None:
    """Which predictions-file metric a metrics.json name is: ``power.sample_metrics[name]``, else by its name.

    ``*balanced_acc*`` -> balanced_accuracy, ``*auroc*`` / ``*_auc`` -> auroc, ``*acc*`` -> accuracy; any
    other metric (a TPR at a fixed FPR, a score) has no bootstrap here, and None is returned.
    """
    if given and name in given:
        value = str(given[name])
        if value not in SAMPLE_METRICS:
            raise ValueError(f"power.sample_metrics.{name}: {value!r} is not one of {SAMPLE_METRICS}")
        return value
    low = name.lower()
    if "balanced_acc" in low:
        return "balanced_accuracy"
    if "auroc" in low or low.endswith("_auc"):
        return "auroc"
    if "acc" in low:
        return "accuracy"
    return None


def _settings(cfg: DictConfig) -> dict[str, Any]:
    node = cfg.get("power") or {}
    alpha, target = float(node.get("alpha", 0.05)), float(node.get("power", 0.8))
    delta = node.get("delta")
    n_test = node.get("n_test")
    if delta is not None and (not isinstance(delta, (int, float)) or delta <= 0):
        raise ValueError(f"power.delta must be a positive number (the difference to detect), got {delta!r}")
    if n_test is not None and (not isinstance(n_test, int) or n_test < 1):
        raise ValueError(f"power.n_test must be a positive integer (test samples per run), got {n_test!r}")
    metrics = node.get("metrics")
    return {"alpha": alpha, "power": target, "delta": None if delta is None else float(delta),
            "metrics": [str(m) for m in metrics] if metrics is not None and not isinstance(metrics, str) else metrics,
            "reference": node.get("reference"), "n_bootstrap": int(node.get("n_bootstrap", 2000)),
            "bootstrap_seed": int(node.get("bootstrap_seed", 0)), "n_test": n_test,
            "sample_metrics": dict(node.get("sample_metrics") or {})}


def _finite(value: float) -> float | None:
    return value if value is not None and math.isfinite(value) else None


class _RunSamples:
    """A job's test predictions, read once: n and the bootstrap variance per metric."""

    def __init__(self, job_dir: str, n_boot: int, seed: int) -> None:
        path = Path(job_dir) / PREDICTIONS_FILE
        self.path = path
        pred = read_predictions(path) if path.is_file() else None
        # a regression file (weak lensing) has no class metric to bootstrap: the run counts as having none
        self.pred = pred if pred is not None and pred.kind in ("binary", "multiclass") else None
        self.n_boot, self.seed, self.cache = n_boot, seed, {}

    @property
    def n(self) -> int | None:
        return len(self.pred) if self.pred is not None else None

    def variance(self, metric: str) -> float:
        if metric not in self.cache:
            probs = probabilities_from_logits(self.pred.logits)
            self.cache[metric] = bootstrap_variance(self.pred.targets, probs, metric, self.n_boot, self.seed)
        return self.cache[metric]


def _sample_variances(name: str, runs: Sequence[Mapping[str, Any]], samples: Mapping[str, _RunSamples],
                      s: Mapping[str, Any]) -> tuple[list[float], str, float | None]:
    """Each run's test-sample variance of metric `name`, the estimate used (in words) and the test size."""
    kind = sample_metric(name, s["sample_metrics"])
    with_file = [samples[r["job_dir"]] for r in runs if samples[r["job_dir"]].pred is not None]
    if kind is not None and with_file and len(with_file) == len(runs):
        n = float(np.mean([x.n for x in with_file]))
        return ([x.variance(kind) for x in with_file],
                f"bootstrap of {PREDICTIONS_FILE} ({kind}, {s['n_bootstrap']} class-stratified resamples)", n)
    if kind == "accuracy" and s["n_test"]:
        values = [numeric_metrics(r["metrics"]).get(name, float("nan")) for r in runs]
        return ([binomial_variance(v, s["n_test"]) if math.isfinite(v) else float("nan") for v in values],
                f"binomial p(1-p)/n, n = power.n_test = {s['n_test']}", float(s["n_test"]))
    why = (f"not every run has a {PREDICTIONS_FILE}: `python evaluate.py ckpt_path=<job>/checkpoints/best.ckpt` "
           "writes it") if kind else "no predictions-file metric of that name"
    return [], f"none ({why}; var_seed is the whole variance)", (float(s["n_test"]) if s["n_test"] else None)


def _arm_row(arm: str, name: str, values: list[float], sample_vars: list[float], estimate: str, n_test: float | None,
             s: Mapping[str, Any]) -> dict[str, Any]:
    split = variance_split(values, sample_vars)
    n, var = split["n"], split["var_total"]
    row: dict[str, Any] = {"arm": arm, "metric": name, **split, "sample_estimate": estimate, "n_test": n_test}
    mdd = mdd_welch(var, var, n, n, s["alpha"], s["power"]) if n >= 2 else float("inf")
    row["mdd"] = mdd
    row["note"] = mdd_note(n, n, var if n >= 2 else None)
    if s["delta"] is not None and n >= 2:
        row["seeds_needed"] = seeds_needed(s["delta"], var, var, s["alpha"], s["power"])
        if n_test and not math.isnan(split["var_sample"]):
            row["test_samples_needed"] = samples_needed(s["delta"], split["var_seed"], split["var_sample"], int(round(n_test)),
                                                        n, s["alpha"], s["power"])
        row["dominant"] = ("test samples" if split["var_sample"] > split["var_seed"] else "seeds") \
            if not math.isnan(split["var_sample"]) else "unknown"
    return row


def _paired_diffs(name: str, runs_a: Sequence[Mapping[str, Any]], runs_b: Sequence[Mapping[str, Any]],
                  samples: Mapping[str, _RunSamples]) -> tuple[list[float] | None, str]:
    """Per-seed differences B - A when both arms ran the same seeds on the same test samples, else (None, why)."""
    by_seed = [{(r["metrics"] or {}).get("seed"): r for r in runs} for runs in (runs_a, runs_b)]
    common = sorted(set(by_seed[0]) & set(by_seed[1]) - {None}, key=str)
    if len(common) < 2:
        return None, f"{len(common)} seed(s) in both arms"
    for seed in common:
        pa, pb = (samples[by_seed[k][seed]["job_dir"]].pred for k in (0, 1))
        if pa is None or pb is None:
            return None, f"seed {seed}: no {PREDICTIONS_FILE} in both arms, so a shared test set is not shown"
        if set(pa.sample_id.tolist()) != set(pb.sample_id.tolist()):
            return None, f"seed {seed}: the arms' {PREDICTIONS_FILE} hold different samples"
    diffs = [numeric_metrics(by_seed[1][s]["metrics"]).get(name, float("nan"))
             - numeric_metrics(by_seed[0][s]["metrics"]).get(name, float("nan")) for s in common]
    return [d for d in diffs if math.isfinite(d)], f"{len(common)} shared seeds, same test samples"


def _sweep_power(sweep_dir: Path, s: dict[str, Any]) -> dict[str, Any]:
    records = read_sweep(sweep_dir)
    if not records:
        raise ValueError(f"{sweep_dir}: no job directories with .hydra/overrides.yaml below it")
    arms = group_runs(records, ignore=("seed", *PLUMBING))
    done = {arm: [r for r in recs if r["status"] == "completed" and r["metrics"] is not None] for arm, recs in arms.items()}
    done = {arm: runs for arm, runs in done.items() if runs}
    if not done:
        raise ValueError(f"{sweep_dir}: no completed job (metrics.json with status completed)")
    names = [k for runs in done.values() for r in runs for k in numeric_metrics(r["metrics"])]
    metrics = match_metrics(names, s["metrics"], "power.metrics") if s["metrics"] else plot_metrics(names)
    samples = {r["job_dir"]: _RunSamples(r["job_dir"], s["n_bootstrap"], s["bootstrap_seed"]) for runs in done.values() for r in runs}

    rows, pairs = [], []
    per_arm: dict[tuple[str, str], dict[str, Any]] = {}
    for name in metrics:
        for arm, runs in done.items():
            runs = [r for r in runs if math.isfinite(numeric_metrics(r["metrics"]).get(name, float("nan")))]
            if not runs:
                continue
            values = [numeric_metrics(r["metrics"])[name] for r in runs]
            sample_vars, estimate, n_test = _sample_variances(name, runs, samples, s)
            row = _arm_row(arm, name, values, sample_vars, estimate, n_test, s)
            rows.append(row)
            per_arm[(arm, name)] = {"row": row, "runs": runs}

    ref, note = pick_reference(list(done), s["reference"])
    if s["reference"] and ref is None:
        raise ValueError(f"power.reference: {note}; arms: {sorted(done)}")
    names_sorted = sorted(done)
    arm_pairs = [(ref, a) for a in names_sorted if a != ref] if ref else \
        [(a, b) for i, a in enumerate(names_sorted) for b in names_sorted[i + 1:]]
    for a, b in arm_pairs:
        for name in metrics:
            if (a, name) not in per_arm or (b, name) not in per_arm:
                continue
            ra, rb = per_arm[(a, name)]["row"], per_arm[(b, name)]["row"]
            pair: dict[str, Any] = {"a": a, "b": b, "metric": name, "n_a": ra["n"], "n_b": rb["n"],
                                    "diff": rb["mean"] - ra["mean"]}
            ok = ra["n"] >= 2 and rb["n"] >= 2
            pair["mdd_welch"] = mdd_welch(ra["var_total"], rb["var_total"], ra["n"], rb["n"], s["alpha"], s["power"]) if ok else float("inf")
            diffs, why = _paired_diffs(name, per_arm[(a, name)]["runs"], per_arm[(b, name)]["runs"], samples)
            pair["paired"] = why
            if diffs is not None and len(diffs) >= 2:
                var_d = float(np.var(diffs, ddof=1))
                pair.update(n_pairs=len(diffs), var_diff=var_d, mdd_paired=mdd_paired(var_d, len(diffs), s["alpha"], s["power"]))
                if s["delta"] is not None:
                    pair["seeds_needed_paired"] = seeds_needed(s["delta"], var_d, None, s["alpha"], s["power"], paired=True)
            if s["delta"] is not None and ok:
                pair["seeds_needed_welch"] = seeds_needed(s["delta"], ra["var_total"], rb["var_total"], s["alpha"], s["power"])
            pairs.append(pair)
    return {"mode": "sweep", "sweep_dir": str(sweep_dir), "metrics": metrics, "arms": rows, "pairs": pairs,
            "reference": ref}


def _files_power(path_a: Path, path_b: Path, s: dict[str, Any]) -> dict[str, Any]:
    a, b = (read_predictions(p, kind=("binary", "multiclass")) for p in (path_a, path_b))
    if a.n_classes != b.n_classes:
        raise ValueError(f"{a.path} has {a.n_classes} classes but {b.path} has {b.n_classes}")
    pos = align_samples(a.sample_id, a.targets, b.sample_id, b.targets, (str(a.path), str(b.path)))
    targets = a.targets
    probs_a, probs_b = probabilities_from_logits(a.logits), probabilities_from_logits(b.logits)[pos]
    metrics = match_metrics(list(SAMPLE_METRICS), s["metrics"], "power.metrics") if s["metrics"] else list(SAMPLE_METRICS)
    n = len(targets)
    rows = []
    for metric in metrics:
        value_a, value_b = metric_value(targets, probs_a, metric), metric_value(targets, probs_b, metric)
        se = paired_bootstrap_se(targets, probs_a, probs_b, metric, s["n_bootstrap"], s["bootstrap_seed"])
        mdd = mdd_normal(se["se_diff"], s["alpha"], s["power"])
        row = {"metric": metric, "n": n, "a": value_a, "b": value_b, "diff": value_b - value_a, **se,
               "var_sample_a": se["se_a"] ** 2, "var_sample_b": se["se_b"] ** 2, "mdd": mdd}
        if s["delta"] is not None:
            # the paired SE shrinks as 1 / sqrt(N): N' = N (MDD / delta)^2 test samples
            row["test_samples_needed"] = int(math.ceil(n * (mdd / s["delta"]) ** 2)) if mdd > 0 else n
        rows.append(row)
    return {"mode": "files", "a": str(a.path), "b": str(b.path), "n": n, "metrics": metrics, "rows": rows}


def _markdown(result: Mapping[str, Any], s: Mapping[str, Any]) -> str:
    d = s["delta"]
    head = (f"# Power: alpha = {s['alpha']:g} (two-sided), power = {s['power']:g}"
            + (f", stated difference delta = {d:g}" if d is not None else ", no stated difference (power.delta)") + "\n")
    if result["mode"] == "files":
        lines = [head, f"A: `{result['a']}`; B: `{result['b']}`; n = {result['n']} samples paired by sample_id.",
                 "MDD = the B − A difference a z-test on the paired bootstrap SE (class-stratified resamples) detects "
                 "with the stated power; test samples needed: N (MDD / delta)², since the SE shrinks as 1/√N.", ""]
        rows = [[r["metric"], r["a"], r["b"], r["diff"], r["se_diff"], r["mdd"], r.get("test_samples_needed", "")]
                for r in result["rows"]]
        lines.append(markdown_table(["metric", "A", "B", "B − A", "SE (paired bootstrap)", "MDD", "test samples for delta"], rows))
        return "\n".join(lines) + "\n"

    lines = [head, f"Sweep `{result['sweep_dir']}`. Per arm: n = completed seeds with the metric; sd over seeds (ddof=1); "
             "var over seeds = var_seed + var_sample (Bouthillier et al. 2021), var_sample = mean test-sample variance of "
             "the runs, var_seed = max(0, var − var_sample); MDD = the difference Welch's t-test between two arms like "
             "this one (n seeds each) detects with the stated power (exact Welch power); seeds needed: per arm, for "
             "delta, at this test size; test samples needed: at n seeds, where only var_sample shrinks (blank: "
             "var_sample unknown; none: var_seed alone is too large).", ""]
    for metric in result["metrics"]:
        rows = [r for r in result["arms"] if r["metric"] == metric]
        if not rows:
            continue
        lines += [f"## {metric}", ""]
        table = [[r["arm"], r["n"], r["mean"], r["sd"], r["var_seed"], r["var_sample"],
                  r["mdd"] if math.isfinite(r["mdd"]) else "none (n < 2)",
                  _needed(r, "seeds_needed", d), _needed(r, "test_samples_needed", d)] for r in rows]
        lines.append(markdown_table(["arm", "n seeds", "mean", "sd", "var_seed", "var_sample", "MDD",
                                     "seeds for delta", "test samples for delta"], table, digits=6))
        lines.append("")
        lines += [f"- {r['arm']}: var_sample: {r['sample_estimate']}" + (f"; {r['note']}" if r["note"] else "") for r in rows]
        pairs = [p for p in result["pairs"] if p["metric"] == metric]
        if pairs:
            lines += ["", "Pairs (B − A): MDD of Welch's test at each arm's variance and seeds; of the paired t-test "
                      "on per-seed differences where both arms ran the same seeds on the same test samples.", ""]
            lines.append(markdown_table(
                ["B − A", "n B / A", "diff", "MDD (Welch)", "MDD (paired)", "seeds for delta (Welch / paired)", "paired?"],
                [[f"{p['b']} − {p['a']}", f"{p['n_b']} / {p['n_a']}", p["diff"],
                  p["mdd_welch"] if math.isfinite(p["mdd_welch"]) else "none (n < 2)", p.get("mdd_paired", ""),
                  f"{_needed(p, 'seeds_needed_welch', d)} / {_needed(p, 'seeds_needed_paired', d)}" if d is not None else "",
                  p["paired"]] for p in pairs]))
        lines.append("")
    return "\n".join(lines) + "\n"


def _needed(row: Mapping[str, Any], key: str, delta: float | None) -> Any:
    """A 'needed' cell: blank without delta or an estimate, else the number, else why there is none."""
    if delta is None or key not in row:
        return ""
    if row[key] is not None:
        return row[key]
    return "none: var_seed alone is too large, more seeds needed" if key == "test_samples_needed" else "over 100,000"


def run_power(cfg: DictConfig) -> dict[str, Any]:
    """Power of a pilot: minimum detectable differences, the variance split, and the seeds or samples needed.

    Writes ``power.json`` and ``power.md`` into the sweep directory (or, for two files, the directory of
    ``a``), or into ``cfg.out_dir``; prints the markdown.

    Args:
        cfg: ``sweep_dir`` (a sweep, or a directory of sweeps), or ``a`` and ``b`` (predictions files of the
            same samples); ``power.{metrics, alpha, power, delta, reference, n_bootstrap, bootstrap_seed,
            n_test, sample_metrics}`` (conf/task/power.yaml) and ``out_dir``.

    Returns:
        The settings and, for a sweep, ``arms`` (one row per arm and metric: variance split, ``mdd``,
        ``seeds_needed``, ``test_samples_needed``, ``sample_estimate``, ``note``) and ``pairs``; for two files,
        ``rows`` (per metric: values, paired bootstrap SEs, ``mdd``, ``test_samples_needed``); and ``paths``.
    """
    s = _settings(cfg)
    sweep_dir, a, b = cfg.get("sweep_dir"), cfg.get("a"), cfg.get("b")
    if sweep_dir and (a or b):
        raise ValueError("task=power: give either sweep_dir or a and b (two predictions files), not both")
    if sweep_dir:
        result = _sweep_power(Path(str(sweep_dir)), s)
        default_out = Path(str(sweep_dir))
    elif a and b:
        result = _files_power(Path(str(a)), Path(str(b)), s)
        default_out = Path(str(a)).parent
    else:
        raise ValueError("task=power needs sweep_dir=<sweep directory>, or a=<predictions file> and "
                         "b=<predictions file> (the keys are missing or empty)")
    out = Path(str(cfg.get("out_dir"))) if cfg.get("out_dir") not in (None, "") else default_out
    out.mkdir(parents=True, exist_ok=True)
    result["settings"] = {k: s[k] for k in ("alpha", "power", "delta", "n_bootstrap", "bootstrap_seed", "n_test")}
    md = _markdown(result, s)
    result["paths"] = {"json": str(out / "power.json"), "md": str(out / "power.md")}
    write_json(out / "power.json", result)
    (out / "power.md").write_text(md)
    print(md)
    return result
