"""The file-based evaluate tasks (calibrate, compare, summarize) on small synthetic files; task configs."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from omegaconf import OmegaConf
from scipy import stats

from analysis.predictions import read_predictions
from tasks.evaluation import run_calibrate, run_compare, run_summarize

CONF = Path(__file__).resolve().parents[1] / "conf"
TASKS = sorted(p.stem for p in (CONF / "task").glob("*.yaml"))


def make_cfg(task: str, **overrides):
    """conf/evaluate.yaml + conf/task/<task>.yaml, as Hydra composes them, without the hydra block."""
    base = OmegaConf.load(CONF / "evaluate.yaml")
    base.pop("hydra")
    base.pop("defaults", None)
    return OmegaConf.merge(base, OmegaConf.load(CONF / "task" / f"{task}.yaml"), OmegaConf.create(overrides))


def write_binary(path: Path, n: int = 400, seed: int = 0, scale: float = 3.0, ids=None, mc: bool = False, **extra):
    """Overconfident binary predictions: true logit z, y ~ Bernoulli(sigmoid(z)), written logit = scale * z."""
    rng = np.random.default_rng(seed)
    z = rng.normal(size=n) * 1.5
    y = (rng.random(n) < 1 / (1 + np.exp(-z))).astype(int)
    frame = pd.DataFrame({"sample_id": ids if ids is not None else [f"s{i:04d}" for i in range(n)],
                          "target": y, "logit": scale * z, "theta_e": rng.uniform(0.5, 3, n)})
    if mc:
        p = 1 / (1 + np.exp(-scale * z))
        frame["mc_prob"] = p
        frame["mc_std"] = rng.uniform(0, 0.5, n)
    for k, v in extra.items():
        frame[k] = v
    path.parent.mkdir(parents=True, exist_ok=True)
    frame.to_csv(path, index=False)
    return frame


def write_multiclass(path: Path, n: int = 300, c: int = 3, seed: int = 0, noise: float = 1.0, ids=None):
    rng = np.random.default_rng(seed)
    y = rng.integers(0, c, n)
    logits = np.eye(c)[y] * 2 + rng.normal(size=(n, c)) * noise
    frame = pd.DataFrame({"sample_id": ids if ids is not None else np.arange(n), "target": y, **{f"logit_{k}": logits[:, k] for k in range(c)}})
    path.parent.mkdir(parents=True, exist_ok=True)
    frame.to_csv(path, index=False)
    return frame


# --- predictions reader ----------------------------------------------------------------------------

def test_read_predictions_binary_multiclass_and_metadata(tmp_path):
    write_binary(tmp_path / "predictions_val.csv", mc=True, group="g1")
    p = read_predictions(tmp_path / "predictions_val.csv")
    assert p.is_binary and p.n_classes == 2 and p.name_split == "val" and not p.is_test_split
    assert p.mc_prob.shape == (400,) and list(p.metadata.columns) == ["theta_e", "group"]
    write_multiclass(tmp_path / "predictions_test.csv")
    q = read_predictions(tmp_path / "predictions_test.csv")
    assert q.logits.shape == (300, 3) and q.is_test_split and q.sample_id[0] == "0"


@pytest.mark.parametrize("change, column", [
    (lambda f: f.drop(columns=["target"]), "target"),
    (lambda f: f.drop(columns=["logit"]), "logit"),
    (lambda f: f.assign(logit=np.where(np.arange(len(f)) == 5, np.nan, f["logit"])), "logit"),
    (lambda f: f.assign(target=f["target"] + 0.5), "target"),
    (lambda f: f.assign(target=f["target"] + 3), "target"),
    (lambda f: f.assign(sample_id="same"), "sample_id"),
    (lambda f: f.assign(mc_prob=0.5), "mc_std"),
])
def test_read_predictions_errors_name_file_and_column(tmp_path, change, column):
    path = tmp_path / "predictions_val.csv"
    frame = write_binary(path, n=20)
    change(frame).to_csv(path, index=False)
    with pytest.raises(ValueError) as err:
        read_predictions(path)
    assert str(path) in str(err.value) and column in str(err.value)


def test_read_predictions_multiclass_gap_in_logit_columns(tmp_path):
    path = tmp_path / "predictions_val.csv"
    write_multiclass(path, c=3).drop(columns=["logit_1"]).to_csv(path, index=False)
    with pytest.raises(ValueError, match="logit_1"):
        read_predictions(path)


# --- calibrate -------------------------------------------------------------------------------------

def _triage_by_hand(frame: pd.DataFrame, review: float, conf: float, std: float) -> dict[str, int]:
    top = np.maximum(frame["mc_prob"], 1 - frame["mc_prob"])
    is_review = frame["mc_std"] > review
    auto = ~is_review & (top > conf) & (frame["mc_std"] < std)
    return {"review": int(is_review.sum()), "auto_approve": int(auto.sum()), "spot_check": int((~is_review & ~auto).sum())}


def val_ids(n: int) -> list[str]:
    """Sample ids of a validation file, none of them in a test file that write_binary/write_multiclass wrote."""
    return [f"v{i:04d}" for i in range(n)]


def test_calibrate_fits_on_val_applies_to_test(tmp_path, capsys):
    write_binary(tmp_path / "predictions_val.csv", n=2000, seed=1, ids=val_ids(2000))
    test = write_binary(tmp_path / "predictions_test.csv", n=1000, seed=2, mc=True)
    # the run's thresholds, recorded by predict in the sidecar
    (tmp_path / "predictions_test.json").write_text(json.dumps(
        {"kind": "binary", "split": "test", "thresholds": {"mc_review_std": 0.35, "mc_auto_conf": 0.9, "mc_auto_std": 0.25}}))
    cfg = make_cfg("calibrate", fit=str(tmp_path / "predictions_val.csv"), apply=str(tmp_path / "predictions_test.csv"))
    res = run_calibrate(cfg)
    assert res["temperature"] == pytest.approx(3.0, rel=0.15)  # the logits were scaled by 3
    assert res["after"]["ece"] < res["before"]["ece"]
    assert res["after"]["nll"] < res["before"]["nll"]
    assert res["after"]["accuracy"] == res["before"]["accuracy"]  # T > 0 never changes the argmax
    assert sum(res["reliability"]["before"]["count"]) == 1000
    assert res["mc_triage"]["n"] == 1000
    assert {k: res["mc_triage"][k] for k in ("review", "auto_approve", "spot_check")} == _triage_by_hand(test, 0.35, 0.9, 0.25)
    saved = json.loads((tmp_path / "predictions_test_calibration.json").read_text())
    assert saved["temperature"] == pytest.approx(res["temperature"])
    assert (tmp_path / "predictions_test_reliability.png").stat().st_size > 0
    assert "temperature T" in capsys.readouterr().out


def test_calibrate_triage_thresholds_command_line_then_sidecar_then_a_note(tmp_path):
    write_binary(tmp_path / "predictions_val.csv", n=300, seed=1, ids=val_ids(300))
    test = write_binary(tmp_path / "predictions_test.csv", n=500, seed=2, mc=True)
    files = {"fit": str(tmp_path / "predictions_val.csv"), "apply": str(tmp_path / "predictions_test.csv")}
    # no sidecar, nothing given: no triage, and the note names the keys to give
    res = run_calibrate(make_cfg("calibrate", **files))
    assert "mc_triage" not in res and "mc_dropout.review_std=" in res["mc_triage_note"]
    assert "mc_dropout.auto_std=" in res["mc_triage_note"]
    # the sidecar's thresholds
    (tmp_path / "predictions_test.json").write_text(json.dumps(
        {"split": "test", "thresholds": {"mc_review_std": 0.2, "mc_auto_conf": 0.8, "mc_auto_std": 0.1}}))
    res = run_calibrate(make_cfg("calibrate", **files))
    assert res["mc_triage_thresholds"] == {"review_std": 0.2, "auto_conf": 0.8, "auto_std": 0.1}
    assert res["mc_triage"]["review"] == _triage_by_hand(test, 0.2, 0.8, 0.1)["review"]
    # the command line wins, key by key
    res = run_calibrate(make_cfg("calibrate", **files, mc_dropout={"review_std": 0.4}))
    assert res["mc_triage_thresholds"] == {"review_std": 0.4, "auto_conf": 0.8, "auto_std": 0.1}
    expected = _triage_by_hand(test, 0.4, 0.8, 0.1)
    assert {k: res["mc_triage"][k] for k in expected} == expected


def test_calibrate_refuses_test_split_unless_forced(tmp_path):
    write_binary(tmp_path / "predictions_test.csv")
    cfg = make_cfg("calibrate", fit=str(tmp_path / "predictions_test.csv"), apply=str(tmp_path / "predictions_test.csv"))
    with pytest.raises(ValueError, match="predictions_test.csv"):
        run_calibrate(cfg)
    out = tmp_path / "out"
    res = run_calibrate(make_cfg("calibrate", fit=str(tmp_path / "predictions_test.csv"), apply=str(tmp_path / "predictions_test.csv"),
                                 force=True, out_dir=str(out)))
    assert res["forced_test_fit"] and (out / "predictions_test_calibration.json").exists()


def test_calibrate_refuses_renamed_test_predictions(tmp_path):
    write_binary(tmp_path / "predictions_val.csv")
    apply = str(tmp_path / "predictions_val.csv")
    # the split column counts, whatever the file is called
    write_binary(tmp_path / "dev.csv", split=["test"] * 400)
    with pytest.raises(ValueError, match=r"dev.csv.*'split' column"):
        run_calibrate(make_cfg("calibrate", fit=str(tmp_path / "dev.csv"), apply=apply))
    # so does the sidecar JSON that predict writes beside the file (renamed with it)
    write_binary(tmp_path / "renamed.csv", seed=1, ids=val_ids(400))
    (tmp_path / "renamed.json").write_text(json.dumps({"kind": "binary", "split": "test"}))
    with pytest.raises(ValueError, match=r"renamed.csv.*renamed.json: split='test'"):
        run_calibrate(make_cfg("calibrate", fit=str(tmp_path / "renamed.csv"), apply=apply))
    # a val file with a val sidecar is fine; a broken sidecar is named
    (tmp_path / "renamed.json").write_text(json.dumps({"kind": "binary", "split": "val"}))
    assert run_calibrate(make_cfg("calibrate", fit=str(tmp_path / "renamed.csv"), apply=apply))["temperature"] > 0
    (tmp_path / "renamed.json").write_text("[1, 2]")
    with pytest.raises(ValueError, match="renamed.json"):
        run_calibrate(make_cfg("calibrate", fit=str(tmp_path / "renamed.csv"), apply=apply))


def test_calibrate_refuses_fit_and_apply_that_share_samples(tmp_path):
    """Issue 21 item 9: a copy of the test predictions with the split column rewritten or dropped (and the
    ids renamed) is refused, force or not; force keeps only its documented case (a fit recorded as test)."""
    test = write_binary(tmp_path / "predictions_test.csv", seed=2)
    apply = str(tmp_path / "predictions_test.csv")
    (tmp_path / "predictions_test.json").write_text(json.dumps({"kind": "binary", "split": "test"}))
    copies = {"rewritten.csv": test.assign(split="val"), "dropped.csv": test,
              "renamed.csv": test.assign(sample_id=val_ids(400), split="val").sample(frac=1.0, random_state=0),
              "part.csv": pd.concat([test.iloc[:10], write_binary(tmp_path / "other.csv", n=100, seed=3, ids=val_ids(100))])}
    for name, frame in copies.items():
        frame.to_csv(tmp_path / name, index=False)
        for force in (False, True):
            with pytest.raises(ValueError, match="refusing to fit a temperature on the samples it is applied to") as err:
                run_calibrate(make_cfg("calibrate", fit=str(tmp_path / name), apply=apply, force=force))
            assert name in str(err.value) and apply in str(err.value)
            assert ("sample ids" if name != "renamed.csv" else "under other sample ids") in str(err.value)
            assert "force=true does not apply" in str(err.value)
    with pytest.raises(ValueError, match=r"10 of its 110 sample ids.*e\.g\. s0000"):
        run_calibrate(make_cfg("calibrate", fit=str(tmp_path / "part.csv"), apply=apply))
    # the same file both ways (no split anywhere) is refused too; other samples are fine
    write_binary(tmp_path / "dev.csv", seed=1, ids=val_ids(400))
    with pytest.raises(ValueError, match="400 of its 400 sample ids"):
        run_calibrate(make_cfg("calibrate", fit=str(tmp_path / "dev.csv"), apply=str(tmp_path / "dev.csv")))
    res = run_calibrate(make_cfg("calibrate", fit=str(tmp_path / "dev.csv"), apply=apply))
    assert res["temperature"] > 0 and res["shared_samples"] is None and not res["forced_test_fit"]
    # a collapsed model (one logit for every sample) on other ids is not a copy
    write_binary(tmp_path / "flat_val.csv", n=50, ids=val_ids(50), logit=0.5)
    write_binary(tmp_path / "flat_test.csv", n=50, logit=0.5)
    assert run_calibrate(make_cfg("calibrate", fit=str(tmp_path / "flat_val.csv"),
                                  apply=str(tmp_path / "flat_test.csv")))["shared_samples"] is None


def test_calibrate_multiclass_and_missing_key(tmp_path):
    write_multiclass(tmp_path / "predictions_val.csv", seed=1, noise=2.0, ids=val_ids(300))
    write_multiclass(tmp_path / "predictions_test.csv", seed=2, noise=2.0)
    res = run_calibrate(make_cfg("calibrate", fit=str(tmp_path / "predictions_val.csv"), apply=str(tmp_path / "predictions_test.csv")))
    assert res["temperature"] > 0 and res["n_classes"] == 3
    with pytest.raises(ValueError, match="'fit'"):
        run_calibrate(make_cfg("calibrate", apply=str(tmp_path / "predictions_test.csv")))


# --- compare ---------------------------------------------------------------------------------------

def test_compare_matches_by_sample_id(tmp_path, capsys):
    a = write_binary(tmp_path / "runA" / "predictions_test.csv", n=300, seed=3)
    b = a.copy()
    rng = np.random.default_rng(0)
    b["logit"] = a["logit"] + rng.normal(size=300) * 3
    b = b.sample(frac=1.0, random_state=1)  # shuffled rows: matching must go by sample_id
    (tmp_path / "runB").mkdir()
    b.to_csv(tmp_path / "runB" / "predictions_test.csv", index=False)
    cfg = make_cfg("compare", a=str(tmp_path / "runA" / "predictions_test.csv"),
                   b=str(tmp_path / "runB" / "predictions_test.csv"), n_bootstrap=500)
    res = run_compare(cfg)
    b_sorted = b.set_index("sample_id").loc[a["sample_id"]]
    right_a = (a["logit"].to_numpy() >= 0) == a["target"].to_numpy()
    right_b = (b_sorted["logit"].to_numpy() >= 0) == a["target"].to_numpy()
    assert res["mcnemar"]["b"] == int(np.sum(right_a & ~right_b))
    assert res["mcnemar"]["c"] == int(np.sum(~right_a & right_b))
    expected_p = stats.binomtest(res["mcnemar"]["b"], res["mcnemar"]["b"] + res["mcnemar"]["c"]).pvalue
    assert res["mcnemar"]["p"] == pytest.approx(expected_p)
    acc = res["bootstrap"]["accuracy"]
    assert acc["diff"] == pytest.approx(right_b.mean() - right_a.mean())
    assert acc["ci_low"] <= acc["diff"] <= acc["ci_high"]
    assert set(res["per_class"]) == {"0", "1"}
    name = "compare_runA-predictions_test_vs_runB-predictions_test"
    assert (tmp_path / "runA" / f"{name}.json").exists()
    md = (tmp_path / "runA" / f"{name}.md").read_text()
    assert "| balanced_accuracy |" in md and "McNemar" in md
    assert "B - A" in capsys.readouterr().out


def test_compare_errors_on_mismatched_samples(tmp_path):
    write_binary(tmp_path / "a" / "predictions_test.csv", n=50)
    write_binary(tmp_path / "b" / "predictions_test.csv", n=50, ids=[f"s{i:04d}" for i in range(3, 53)])
    cfg = make_cfg("compare", a=str(tmp_path / "a" / "predictions_test.csv"), b=str(tmp_path / "b" / "predictions_test.csv"))
    with pytest.raises(ValueError) as err:
        run_compare(cfg)
    msg = str(err.value)
    assert "3 only in a" in msg and "s0000" in msg and "3 only in b" in msg and "s0052" in msg


def test_compare_errors_on_disagreeing_targets(tmp_path):
    a = write_binary(tmp_path / "a" / "predictions_test.csv", n=50)
    a.assign(target=1 - a["target"]).to_csv(tmp_path / "b.csv", index=False)
    with pytest.raises(ValueError, match="disagree on 'target' for 50"):
        run_compare(make_cfg("compare", a=str(tmp_path / "a" / "predictions_test.csv"), b=str(tmp_path / "b.csv")))


def test_compare_multiclass(tmp_path):
    write_multiclass(tmp_path / "x" / "predictions_test.csv", seed=4, noise=1.5)
    frame = write_multiclass(tmp_path / "y" / "predictions_test.csv", seed=4, noise=1.5)
    frame["logit_0"] += 0.5
    frame.to_csv(tmp_path / "y" / "predictions_test.csv", index=False)
    res = run_compare(make_cfg("compare", a=str(tmp_path / "x" / "predictions_test.csv"),
                               b=str(tmp_path / "y" / "predictions_test.csv"), n_bootstrap=300, out_dir=str(tmp_path / "o")))
    assert set(res["per_class"]) == {"0", "1", "2"}
    assert res["per_class"]["0"]["diff"] >= 0  # a bias towards class 0 cannot lower its recall
    assert np.isfinite(res["bootstrap"]["auroc"]["ci_low"])
    assert (tmp_path / "o" / "compare_x-predictions_test_vs_y-predictions_test.md").exists()


# --- summarize -------------------------------------------------------------------------------------

def make_job(root: Path, job: str, overrides: list[str], metrics: dict | None = None, failure: dict | None = None,
             config: dict | str | None = None):
    d = root / job
    (d / ".hydra").mkdir(parents=True)
    (d / ".hydra" / "overrides.yaml").write_text("".join(f"- {o}\n" for o in overrides))
    if metrics is not None:
        (d / "metrics.json").write_text(json.dumps(metrics))
    if failure is not None:
        (d / "failure.json").write_text(json.dumps(failure))
    if config is not None:
        text = config if isinstance(config, str) else OmegaConf.to_yaml(OmegaConf.create(config))
        (d / ".hydra" / "config.yaml").write_text(text)
    return d


def test_summarize_sweep_stats_and_failed_jobs(tmp_path, capsys):
    sweep = tmp_path / "multirun" / "demo" / "2026-01-01_00-00-00-000001"
    aucs = [0.91, 0.93, 0.96]
    for i, (seed, auc) in enumerate(zip([1, 2, 3], aucs)):
        make_job(sweep, str(i), ["experiment=demo", f"seed={seed}"],
                 {"seed": seed, "experiment": "demo", "test_auroc": auc, "best_epoch": 3 + i,
                  "core_gate": "PASS", "wall_time_s": 10.0, "status": "completed"})
    for i, seed in enumerate([1, 2]):
        make_job(sweep, str(3 + i), ["experiment=demo", "model.lr=0.01", f"seed={seed}"],
                 {"seed": seed, "experiment": "demo", "test_auroc": 0.8 + seed / 100, "status": "completed"})
    make_job(sweep, "5", ["experiment=demo", "model.lr=0.01", "seed=3"],
             failure={"type": "NonFiniteLossError", "message": "loss became nan at step 12"})
    make_job(sweep, "6", ["experiment=demo", "seed=4"])  # still running / killed: no files at all
    make_job(sweep, "7", ["experiment=demo", "seed=5"], failure={"status": "terminated", "error": "Terminated: SIGTERM during training"})

    res = run_summarize(make_cfg("summarize", sweep_dir=str(sweep)))
    arm = res["arms"]["experiment=demo"]
    s = arm["metrics"]["test_auroc"]
    assert s["n"] == 3 and s["std"] == pytest.approx(np.std(aucs, ddof=1))
    low, high = stats.t.interval(0.95, 2, loc=np.mean(aucs), scale=stats.sem(aucs))
    assert (s["ci_low"], s["ci_high"]) == (pytest.approx(low), pytest.approx(high))
    assert "seed" not in arm["metrics"] and arm["n_completed"] == 3 and arm["n_failed"] == 2
    assert res["arms"]["experiment=demo model.lr=0.01"]["n_failed"] == 1
    failed = {Path(r["job_dir"]).name: r for r in res["failed"]}
    assert set(failed) == {"5", "6", "7"}
    assert failed["5"]["status"] == "failed" and failed["6"]["status"] == "unfinished" and failed["7"]["status"] == "terminated"
    md = (sweep / "summary.md").read_text()
    assert "ddof=1" in md and "NonFiniteLossError" in md and "loss became nan" in md and "unfinished" in md
    csv = pd.read_csv(sweep / "summary.csv")
    assert set(csv["arm"]) == {"experiment=demo", "experiment=demo model.lr=0.01"}
    assert (sweep / "summary.png").stat().st_size > 0 and (sweep / "summary.json").exists()
    assert res["plot_metrics"] == ["test_auroc"]  # not best_epoch or wall_time_s
    assert res["summary_notes"] == [] and "lens_decision" not in res  # no job declares a summary plugin
    assert "Failed or unfinished" in capsys.readouterr().out


#: A saved lens run config, as Hydra writes it: unresolved, with a ${hydra:...} that cannot resolve here.
LENS_JOB_CONFIG = """
experiment_name: EXP
paths:
  output_dir: ${hydra:runtime.output_dir}
thresholds: THRESHOLDS
summary:
  lens_decision:
    _target_: analysis.lens.decision.lens_summary
    _partial_: true
    thresholds: ${thresholds}
"""


def lens_job_config(experiment: str, **changes: float) -> str:
    thresholds = {**OmegaConf.to_container(OmegaConf.load(CONF / "thresholds" / "lens.yaml")), **changes}
    return LENS_JOB_CONFIG.replace("EXP", experiment).replace("THRESHOLDS", json.dumps(thresholds))


def test_summarize_parent_of_sweeps_applies_lens_decision(tmp_path):
    root = tmp_path / "multirun"
    b1 = {"final_core_lr_auc": 0.70, "core_reliance": 0.08, "test_thetae_min_auroc": 0.8,
          "test_thetae_spread": 0.1, "best_val_auroc": 0.95, "test_auroc": 0.93}
    for exp, base in (("lens_a1", {**b1, "final_core_lr_auc": 0.75}), ("lens_b1", b1)):
        sweep = root / exp / "2026-01-01_00-00-00-000001"
        for i, seed in enumerate([1, 2]):
            make_job(sweep, str(i), [f"seed={seed}"],  # experiment only in metrics.json here
                     {**base, "seed": seed, "experiment": exp, "status": "completed",
                      "core_reliance": base["core_reliance"] + 0.001 * i}, config=lens_job_config(exp))
    res = run_summarize(make_cfg("summarize", sweep_dir=str(root), out_dir=str(tmp_path / "report")))
    assert set(res["arms"]) == {"experiment=lens_a1", "experiment=lens_b1"}
    assert res["lens_decision"]["verdict"] == "STOP_SHORTCUT"
    md = (tmp_path / "report" / "summary.md").read_text()
    assert "Lens decision" in md and "STOP_SHORTCUT" in md and "0.0805" in md  # the mean reliance that led to it
    assert json.loads((tmp_path / "report" / "summary.json").read_text())["lens_decision"]["verdict"] == "STOP_SHORTCUT"


def test_summarize_jobs_with_different_thresholds_get_one_section_each(tmp_path):
    b1 = {"final_core_lr_auc": 0.62, "core_reliance": 0.01, "status": "completed", "experiment": "lens_b1"}
    make_job(tmp_path / "s", "0", ["experiment=lens_b1", "seed=1"], {**b1, "seed": 1}, config=lens_job_config("lens_b1"))
    make_job(tmp_path / "s", "1", ["experiment=lens_b1", "thresholds.core_pass_below=0.63", "seed=1"], {**b1, "seed": 1},
             config=lens_job_config("lens_b1", core_pass_below=0.63))
    res = run_summarize(make_cfg("summarize", sweep_dir=str(tmp_path / "s")))
    # one arm per thresholds setting, and each section judges the arm that declared its thresholds:
    # core LR AUC 0.62 is WARN under the seed's 0.60 and PASS under the overridden 0.63
    assert set(res) >= {"lens_decision", "lens_decision#2"} and len(res["summary_notes"]) == 1
    assert res["lens_decision"]["verdict"] == "ACCEPTABLE" and res["lens_decision#2"]["verdict"] == "SUCCESS"


def toy_summary(arms, jobs, label: str, factor: float):
    """A summary plugin that reports what it was given (declared in the fake jobs' configs below)."""
    CALLS.append({"arms": sorted(arms), "jobs": len(jobs), "label": label, "factor": factor})
    mean = arms["experiment=toy"]["metrics"]["score"]["mean"]
    return {"title": f"Toy section {label}", "markdown": f"scaled mean = {factor * mean:.3f}", "result": {"scaled": factor * mean}}


CALLS: list[dict] = []


def test_summarize_calls_a_summary_plugin_from_the_job_config(tmp_path):
    CALLS.clear()
    config = {"factors": {"f": 10.0}, "paths": {"output_dir": "${hydra:runtime.output_dir}"},
              "summary": {"toy": {"_target_": "tests.test_evaluation_tasks.toy_summary", "_partial_": True,
                                  "label": "T", "factor": "${factors.f}"}, "switched_off": None}}
    for i, score in enumerate([0.2, 0.4]):
        make_job(tmp_path / "s", str(i), ["experiment=toy", f"seed={i}"], {"seed": i, "score": score}, config=config)
    make_job(tmp_path / "s", "2", ["experiment=toy", "seed=2"], failure={"error": "boom"}, config=config)
    # another family's run in the same directory, which declares no plugin: the plugin never sees it
    make_job(tmp_path / "s", "3", ["experiment=other", "seed=0"], {"seed": 0, "score": 0.9},
             config={"paths": {"output_dir": "x"}, "summary": {}})
    res = run_summarize(make_cfg("summarize", sweep_dir=str(tmp_path / "s")))
    # one distinct entry: called once, with the arm that declared it and its jobs (failed ones included)
    assert CALLS == [{"arms": ["experiment=toy"], "jobs": 3, "label": "T", "factor": 10.0}]
    assert res["toy"] == {"scaled": pytest.approx(3.0)}
    md = (tmp_path / "s" / "summary.md").read_text()
    assert "## Toy section T" in md and "scaled mean = 3.000" in md
    assert json.loads((tmp_path / "s" / "summary.json").read_text())["toy"]["scaled"] == pytest.approx(3.0)


def test_summarize_plugin_errors_name_the_entry(tmp_path):
    config = {"summary": {"bad": {"_target_": "tests.test_evaluation_tasks.toy_summary", "label": "${nope}"}}}
    make_job(tmp_path / "s", "0", ["seed=1"], {"seed": 1, "score": 0.1}, config=config)
    with pytest.raises(ValueError, match=r"summary.bad does not resolve"):
        run_summarize(make_cfg("summarize", sweep_dir=str(tmp_path / "s")))


def test_summarize_compares_arms_over_seeds(tmp_path):
    sweep = tmp_path / "sweep"
    values = {"lens_a1": [0.30, 0.22, 0.37], "lens_b1": [0.33, 0.29, 0.34]}
    for exp, tprs in values.items():
        for seed, tpr in zip((42, 123, 456), tprs):
            make_job(sweep, f"{exp}_{seed}", [f"experiment={exp}", f"seed={seed}", "trainer=cpu_bf16"],
                     {"seed": seed, "test_tpr0": tpr, "test_auroc": 0.9, "status": "completed"})
    res = run_summarize(make_cfg("summarize", sweep_dir=str(sweep), compare={"metrics": ["test_tpr*"], "reference": "lens_b1"}))
    (test,) = res["seed_comparison"]["tests"]
    assert (test["a"], test["b"], test["metric"]) == ("experiment=lens_b1 trainer=cpu_bf16", "experiment=lens_a1 trainer=cpu_bf16", "test_tpr0")
    assert test["p"] == pytest.approx(stats.ttest_ind(values["lens_a1"], values["lens_b1"], equal_var=False).pvalue)
    md = (sweep / "summary.md").read_text()
    assert "## Arms compared over seeds (Welch)" in md and "| experiment=lens_a1 − experiment=lens_b1 | test_tpr0 | 3 / 3 |" in md
    assert "seed_comparison" not in run_summarize(make_cfg("summarize", sweep_dir=str(sweep)))  # off unless asked
    (sweep / "summary.md").unlink()
    with pytest.raises(ValueError, match=r"compare.reference: reference 'experiment=lens_b9' matches 0 arms"):
        run_summarize(make_cfg("summarize", sweep_dir=str(sweep), compare={"metrics": ["test_tpr0"], "reference": "lens_b9"}))
    assert not (sweep / "summary.md").exists()  # refused before writing anything


def test_summarize_errors(tmp_path):
    sweep = tmp_path / "sweep"
    make_job(sweep, "0", ["seed=1"], {"seed": 1, "test_auroc": 0.9, "status": "completed"})
    with pytest.raises(ValueError, match="'test_aurc' matches no metric"):
        run_summarize(make_cfg("summarize", sweep_dir=str(sweep), plot_metrics=["test_aurc"]))
    with pytest.raises(ValueError, match="compare.metrics: 'test_aurc' matches no metric"):
        run_summarize(make_cfg("summarize", sweep_dir=str(sweep), compare={"metrics": ["test_aurc"]}))
    assert not (sweep / "summary.md").exists()  # refused before writing anything
    with pytest.raises(FileNotFoundError):
        run_summarize(make_cfg("summarize", sweep_dir=str(tmp_path / "nope")))
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match="no job directories"):
        run_summarize(make_cfg("summarize", sweep_dir=str(tmp_path / "empty")))


# --- config ----------------------------------------------------------------------------------------

def _compose_evaluate(overrides: list[str]):
    from hydra import compose, initialize_config_dir

    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        return compose(config_name="evaluate", overrides=overrides, return_hydra_config=True)


def test_evaluate_config_composes_with_hydra():
    cfg = _compose_evaluate(["task=compare", "a=x.csv", "n_bootstrap=100"])
    assert cfg.task._target_ == "tasks.evaluation.run_compare" and cfg.a == "x.csv" and cfg.n_bootstrap == 100
    assert cfg.out_dir is None and "fit" not in cfg and "ckpt_path" not in cfg  # only the chosen task's options
    assert cfg.hydra.job.chdir is False and cfg.hydra.run.dir.startswith("outputs/evaluate/")
    cal = _compose_evaluate(["task=calibrate", "fit=v.csv", "apply=t.csv"])  # the README's command line
    assert (cal.fit, cal.apply, cal.n_bins, cal.force) == ("v.csv", "t.csv", 15, False)
    assert cal.mc_dropout.review_std is None
    default = _compose_evaluate(["ckpt_path=r/checkpoints/best.ckpt"])
    assert default.task._target_ == "tasks.predict.run_predict" and default.split == "test"
    assert default.mc_dropout.n_passes == 25 and default.mc_dropout.enabled is False
    gates = _compose_evaluate(["task=lens_gates", "gates.experiment=lens_b1", "gates.preprocessing=raw"])
    assert gates.task._target_ == "tasks.lens.gates.run_gates" and gates.gates.preprocessing == "raw"


@pytest.mark.parametrize("task", TASKS)
def test_every_task_config_names_a_function(task):
    import hydra

    cfg = _compose_evaluate([f"task={task}"])
    assert callable(hydra.utils.get_method(cfg.task._target_))


def test_unknown_task_fails_with_the_list():
    from hydra.errors import MissingConfigException

    with pytest.raises(MissingConfigException) as err:
        _compose_evaluate(["task=nope"])
    assert "task/nope" in str(err.value) and all(t in str(err.value) for t in TASKS)
    from evaluate import evaluate

    with pytest.raises(ValueError, match="calibrate.*summarize"):
        evaluate(OmegaConf.create({"task": "calibrate"}))  # a name, not a task config
    with pytest.raises(ValueError, match=r"tasks.evaluation.run_nope.*cannot be loaded"):
        evaluate(OmegaConf.create({"task": {"_target_": "tasks.evaluation.run_nope"}}))
