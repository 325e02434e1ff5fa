"""evaluate.py task=weak_lensing_compare: the seed's weak-lensing arms compared on the same test maps.

    python evaluate.py task=weak_lensing_compare sweep_dir=<sweep> reference=weak_lensing_simple_cnn_direct
    python evaluate.py task=weak_lensing_compare 'runs=[<run>,<run>,...]' 'reference="experiment=weak_lensing_simple_cnn_mcmc ps_mcmc"'

Every completed run contributes one arm per scoreable predictions file of its test maps (the files the
training callback writes):

- ``predictions_test.csv`` with ``t_std`` columns (a direct head): the arm ``<run's arm>``, and, where the run
  has ``checkpoints/sigma_scale.json`` (sigmas calibrated on its validation maps), ``<run's arm> calibrated``
  with k * sigma; a point head's file (no ``t_std``) is not an arm;
- ``predictions_test_cnn_mcmc.csv``: ``<run's arm> cnn_mcmc``; ``predictions_test_ps_mcmc.csv``: ``<run's arm>
  ps_mcmc`` (the power spectrum through the same MCMC).

A run's arm is its overrides less the seed and plumbing (as task=summarize groups runs). Each arm is compared
with the reference arm (or, with ``pairs=[[A, B], ...]``, exactly the listed comparisons: the seed's four are
task=weak_lensing_seed_comparisons) by analysis.arms.compare_arms_by_terms on per-map terms whose means are the reported
numbers: the challenge score (analysis.weak_lensing.score.challenge_scores, the run's score constants from
the sidecar) and the 1-sigma coverage (mean over targets, and per target). Per seed a paired bootstrap over
maps, across seeds the paired t-test of the per-seed values with Holm over the table and the MDD beside
every "not resolved". Maps are paired by ``sample_id`` and must carry the same truth (else an error).
Writes ``wl_arms.md`` and ``wl_arms.json`` into ``out_dir`` (default ``<sweep_dir>/wl_compare``, or
``<parent of the first run>/wl_compare``).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
from omegaconf import DictConfig

from analysis.arms import compare_arms_by_terms
from analysis.predictions import read_predictions
from analysis.summary import arm_name, markdown_table, short_arm_names, summarize_metric
from analysis.weak_lensing.score import apply_sigma_scale, challenge_scores
from callbacks.weak_lensing.score import read_sigma_scale
from rigor.jsonio import write_json
from rigor.overrides import PLUMBING
from rigor.sweeps import natural_key
from tasks.score_sweep import completed_runs, resolve_reference
from tasks.weak_lensing.evaluation import SCORE_KEYS, resolve_settings

# file stem in a run directory -> the suffix of the arm it gives
ARM_FILES = {"predictions_test": "", "predictions_test_cnn_mcmc": "cnn_mcmc", "predictions_test_ps_mcmc": "ps_mcmc"}


def _seed(rec: Mapping[str, Any]) -> Any:
    metrics = rec.get("metrics") or {}
    if metrics.get("seed") is not None:
        return metrics["seed"]
    for o in rec.get("overrides") or []:
        if o.startswith("seed="):
            return o.split("=", 1)[1]
    config = rec.get("config")
    return config.get("seed") if config is not None else None


def _terms(truth: np.ndarray, mean: np.ndarray, std: np.ndarray, names: list[str], scale: float) -> dict[str, np.ndarray]:
    covered = np.abs(truth - mean) <= std
    terms = {"score": challenge_scores(truth, mean, std, scale), "coverage": covered.mean(axis=1)}
    terms.update({f"coverage_{t}": covered[:, j].astype(float) for j, t in enumerate(names)})
    return terms


def run_files(cfg: DictConfig, rec: Mapping[str, Any]) -> list[dict[str, Any]]:
    """The arms one run contributes: one entry per scoreable test predictions file (see the module docstring)."""
    job = Path(rec["job_dir"])
    base = arm_name(rec.get("overrides") or [], rec.get("experiment"), ignore=("seed", *PLUMBING))
    seed = _seed(rec)
    out = []
    for stem, suffix in ARM_FILES.items():
        path = job / f"{stem}.csv"
        if not path.is_file():
            continue
        preds = read_predictions(path, kind="regression")
        if preds.stds is None:
            continue  # a point head's outputs: the MCMC files are its arms
        names = list(preds.target_names)
        scale = float(resolve_settings("wl_score", SCORE_KEYS, cfg, preds.sidecar, path)["scale"])
        arm = f"{base} {suffix}".strip()
        common = {"seed": seed, "ids": preds.sample_id, "truth": preds.targets, "names": names}
        out.append({**common, "arm": arm, "label": str(path),
                    "terms": _terms(preds.targets, preds.means, preds.stds, names, scale)})
        record = read_sigma_scale(job) if stem == "predictions_test" and cfg.get("calibrated", True) else None
        if record is not None:
            std = apply_sigma_scale(preds.stds, names, record["sigma_scale"])
            out.append({**common, "arm": f"{arm} calibrated", "label": f"{path} (sigma x {record['sigma_scale']})",
                        "terms": _terms(preds.targets, preds.means, std, names, scale)})
    if not out:
        print(f"weak_lensing_compare: {job} has no test predictions with sigmas ({', '.join(f'{s}.csv' for s in ARM_FILES)})")
    return out


def run_wl_compare(cfg: DictConfig) -> dict[str, Any]:
    """Score every arm's test maps and compare the arms with the reference (see the module docstring)."""
    records, base = completed_runs(cfg, "weak_lensing_compare")
    default_out = base / "wl_compare"
    runs = [f for rec in records for f in run_files(cfg, rec)]
    if not runs:
        raise ValueError("weak_lensing_compare: no completed run has a scoreable test predictions file")
    arms = sorted({r["arm"] for r in runs})
    terms = [str(t) for t in (cfg.get("terms") or ["score", "coverage"])]
    known = set(runs[0]["terms"])
    unknown = [t for t in terms if t not in known]
    if unknown:
        raise ValueError(f"terms: {unknown} are not per-map terms; choose from {sorted(known)}")
    pairs = None
    if cfg.get("pairs"):
        pairs = []
        for pair in cfg.pairs:
            if len(pair) != 2:
                raise ValueError(f"pairs: each entry is [A, B] (B - A is reported), got {list(pair)}")
            pairs.append(tuple(resolve_reference(arms, str(x)) for x in pair))
    result = compare_arms_by_terms(runs, reference=resolve_reference(arms, cfg.get("reference")), terms=terms,
                                   alpha=float(cfg.get("alpha") or 0.05), power=float(cfg.get("power") or 0.8),
                                   n_boot=int(cfg.get("n_bootstrap") or 2000), seed=int(cfg.get("bootstrap_seed") or 0),
                                   pairs=pairs)
    result["arm_means"] = _arm_means(runs, terms)
    out = Path(str(cfg.out_dir)) if cfg.get("out_dir") else default_out
    out.mkdir(parents=True, exist_ok=True)
    md = _markdown(result)
    (out / "wl_arms.md").write_text(md)
    result["files"] = [{"arm": r["arm"], "seed": r["seed"], "file": r["label"]} for r in runs]
    result["paths"] = {"md": str(out / "wl_arms.md"), "json": str(out / "wl_arms.json")}
    write_json(out / "wl_arms.json", result)
    print(md)
    return result


def _arm_means(runs: list[dict[str, Any]], terms: list[str]) -> list[dict[str, Any]]:
    """Per arm: the seeds, and per term the per-seed values, their mean and Student-t 95% CI."""
    rows = []
    for arm in sorted({r["arm"] for r in runs}):
        mine = sorted((r for r in runs if r["arm"] == arm), key=lambda r: natural_key(r["seed"]))
        row: dict[str, Any] = {"arm": arm, "seeds": [r["seed"] for r in mine]}
        for t in terms:
            values = [float(np.mean(r["terms"][t])) for r in mine]
            row[t] = {"values": values, **summarize_metric(values)}
        rows.append(row)
    return rows


def _fmt(x: Any) -> str:
    return f"{x:.4g}" if isinstance(x, float) and math.isfinite(x) else str(x)


def _markdown(result: dict[str, Any]) -> str:
    short, shared = short_arm_names(result["arms"])
    terms = result["metrics"]
    which = (f"Reference arm A: `{short[result['reference']]}`" if result["reference"] is not None
             else f"{len(result['pairs'])} comparisons (B - A), each its own A")
    lines = ["# Weak-lensing arms on the same test maps", "",
             which + (f"; every arm also has `{' '.join(shared)}`" if shared else "")
             + f". Per seed: paired bootstrap over maps of mean(B) - mean(A); across seeds: paired t-test (ttest_rel) of "
             f"the per-seed values, Holm over the table; MDD at alpha {result['alpha']} and power {result['power']}.", "",
             "## Arms (mean over seeds [95% Student-t CI]; per seed)", ""]
    rows = []
    for r in result["arm_means"]:
        cells = []
        for t in terms:
            s = r[t]
            ci = f" [{_fmt(s['ci_low'])}, {_fmt(s['ci_high'])}]" if s.get("n", 0) > 1 else ""
            cells.append(f"{_fmt(s['mean'])}{ci} ({', '.join(_fmt(v) for v in s['values'])})")
        rows.append([short[r["arm"]], ", ".join(str(s) for s in r["seeds"]), *cells])
    lines.append(markdown_table(["arm", "seeds", *terms], rows))
    lines += ["", "## Across seeds (B - A)", ""]
    lines.append(markdown_table(
        ["arm B", "arm A", "metric", "seeds", "mean A", "mean B", "mean B-A", "sd(B-A)", "t", "p", "p Holm", "MDD", "MDD at alpha/m",
         "verdict"],
        [[short[r["arm"]], short[r["reference"]], r["metric"], r["n_seeds"], r["mean_a"], r["mean_b"], r["mean_diff"], r["sd_diff"], r["t"], r["p"],
          r["p_holm"], r["mdd"], r["mdd_holm"], r["verdict"]] for r in result["across_seeds"]]))
    lines += ["", "## Per seed (B - A over maps [95% CI] (MDD))", ""]
    lines.append(markdown_table(
        ["arm B", "arm A", "seed", "maps", *terms],
        [[short[r["arm"]], short[r["reference"]], r["seed"], r["n"],
          *[f"{_fmt(r[f'{t}_diff'])} [{_fmt(r[f'{t}_ci_low'])}, {_fmt(r[f'{t}_ci_high'])}] ({_fmt(r[f'{t}_mdd'])})" for t in terms]]
         for r in result["per_seed"]]))
    if result["notes"]:
        lines += ["", "## Notes", ""] + [f"- {n}" for n in result["notes"]]
    return "\n".join(lines) + "\n"
