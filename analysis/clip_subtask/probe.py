"""The linear probe on frozen CLIP embeddings: the baseline arm beside the meta-learner (issue 23).

A multinomial logistic regression on the training embeddings alone (no subtask features), its L2
strength chosen on val, scored on test. If the meta-learner (embedding + subtask outputs) does not beat
it, the subtask features add nothing beyond the embedding: the seed's premise, tested. The probe writes
``predictions_test.csv`` in the contract's format, so ``evaluate.py task=power a=<probe> b=<arm>`` gives the
paired MDD of meta-learner minus probe on the same test images.

    python -m analysis.clip_subtask.probe out_dir=results/clip_probe                            # caption CLIP
    python -m analysis.clip_subtask.probe out_dir=results/clip_probe_ssl data=clip_subtask_ssl  # SimCLR CLIP
"""

from __future__ import annotations

import json
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

C_GRID = (0.01, 0.1, 1.0, 10.0)  # inverse L2 strengths tried on val


def linear_probe(train_x: np.ndarray, train_y: np.ndarray, val_x: np.ndarray, val_y: np.ndarray, test_x: np.ndarray,
                 test_y: np.ndarray, c_grid: Sequence[float] = C_GRID, seed: int = 0) -> dict[str, Any]:
    """Logistic regression on embeddings, C chosen by val accuracy (first of ties), refitted on train only.

    Returns:
        ``C``, ``val_accuracy`` per C, ``test_accuracy`` and ``test_logits`` (N, K) of the chosen probe.
    """
    from sklearn.linear_model import LogisticRegression

    def fit(c: float) -> LogisticRegression:
        return LogisticRegression(C=c, max_iter=3000, random_state=seed).fit(train_x, train_y)

    val = {float(c): float(fit(c).score(val_x, val_y)) for c in c_grid}
    best = max(val, key=lambda c: (val[c], -c))
    model = fit(best)
    return {"C": best, "val_accuracy": val, "test_accuracy": float(model.score(test_x, test_y)),
            "test_logits": model.decision_function(test_x)}


def main(overrides: Sequence[str]) -> dict[str, Any]:
    """Probe the embeddings that ``train.py experiment=clip_subtask_a <overrides>`` would use.

    ``out_dir=<dir>`` (optional, first of the arguments) writes ``predictions_test.csv`` and ``probe.json`` there.
    """
    from hydra import compose, initialize_config_dir
    from hydra.utils import instantiate

    from analysis.predictions import prediction_table, write_predictions
    from rigor.config import register_resolvers

    out_dir = next((a.split("=", 1)[1] for a in overrides if a.startswith("out_dir=")), None)
    overrides = [a for a in overrides if not a.startswith("out_dir=")]
    register_resolvers()
    conf = Path(__file__).resolve().parents[2] / "conf"
    with initialize_config_dir(str(conf), version_base="1.3"):
        cfg = compose("train", overrides=["experiment=clip_subtask_a", *overrides])
    dm = instantiate(cfg.data)
    dm.setup("fit")
    emb = {s: dm.split_tensors(s)["embedding"].numpy() for s in ("train", "val", "test")}
    y = {s: dm.split_frame(s)["target"].to_numpy() for s in ("train", "val", "test")}
    res = linear_probe(emb["train"], y["train"], emb["val"], y["val"], emb["test"], y["test"])
    logits = res.pop("test_logits")
    res.update({"n_train": len(y["train"]), "n_test": len(y["test"]), "weights": dm.weights_path, "overrides": list(overrides)})
    if out_dir:
        out = Path(out_dir)
        out.mkdir(parents=True, exist_ok=True)
        frame = dm.split_frame("test")[["sample_id", "target"]]
        write_predictions(out / "predictions_test.csv", prediction_table("multiclass", logits, frame, "test"),
                          {"kind": "multiclass", "split": "test", "arm": "linear probe", "C": res["C"]})
        (out / "probe.json").write_text(json.dumps(res, indent=1))
    return res


def compare_arms(sweep_dir: str | Path, probe_dir: str | Path | None = None, pairs: Sequence[tuple[str, str]] = (),
                 delta: float = 0.01) -> list[dict[str, Any]]:
    """Paired accuracy comparisons of a sweep's arms (and the probe) on the same test images, with their MDD.

    Args:
        sweep_dir: A multirun directory whose jobs hold ``metrics.json`` (``experiment``, ``seed``) and
            ``predictions_test.csv``.
        probe_dir: A directory with the probe's ``predictions_test.csv`` (one fit; it pairs with every seed), or None.
        pairs: (arm, reference) experiment names; ``probe`` names the probe.
        delta: The difference to size for (``seeds_needed``), in accuracy units.

    Returns:
        Per pair: per-seed accuracy differences, discordant counts b (reference right only) and c, the mean
        difference, the paired-t p over seeds, the MDD of that paired t at the seeds run (``mdd_paired``),
        the seeds needed for ``delta``, and ``sample_sd``: the test-sample part of one seed's difference,
        sqrt(b + c - (c - b)^2 / n) / n (what a larger test set would shrink).
    """
    from scipy.stats import ttest_rel

    from analysis.power import mdd_paired, seeds_needed
    from analysis.predictions import read_predictions

    correct: dict[str, dict[int, pd.Series]] = {}
    for metrics_path in sorted(Path(sweep_dir).glob("*/metrics.json")):
        m = json.loads(metrics_path.read_text())
        if m.get("status") != "completed":
            continue
        pred = read_predictions(metrics_path.parent / "predictions_test.csv", kind="multiclass")
        ok = pd.Series(pred.logits.argmax(axis=1) == pred.targets, index=pred.sample_id)
        correct.setdefault(str(m["experiment"]), {})[int(m["seed"])] = ok
    if probe_dir is not None:
        pred = read_predictions(Path(probe_dir) / "predictions_test.csv", kind="multiclass")
        probe = pd.Series(pred.logits.argmax(axis=1) == pred.targets, index=pred.sample_id)
        seeds = sorted({s for arm in correct.values() for s in arm})
        correct["probe"] = {s: probe for s in seeds}  # deterministic: the same fit against every seed
    out = []
    for arm, ref in pairs:
        seeds = sorted(set(correct.get(arm, {})) & set(correct.get(ref, {})))
        if not seeds:
            continue
        rows = []
        for s in seeds:
            a, r = correct[arm][s], correct[ref][s].reindex(correct[arm][s].index)
            if r.isna().any():
                raise ValueError(f"{arm} and {ref}, seed {s}: different test images")
            r = r.astype(bool)
            b, c, n = int((r & ~a).sum()), int((~r & a).sum()), len(a)
            rows.append({"seed": s, "acc": float(a.mean()), "acc_ref": float(r.mean()), "diff": (c - b) / n, "b": b, "c": c,
                         "sample_sd": float(np.sqrt(max(b + c - (c - b) ** 2 / n, 0.0)) / n)})
        diffs = np.array([r["diff"] for r in rows])
        var = float(diffs.var(ddof=1)) if len(diffs) > 1 else float("nan")
        p = float(ttest_rel([r["acc"] for r in rows], [r["acc_ref"] for r in rows]).pvalue) if len(rows) > 1 else float("nan")
        out.append({"arm": arm, "reference": ref, "seeds": rows, "mean_diff": float(diffs.mean()), "paired_t_p": p,
                    "sd_diff": float(np.sqrt(var)) if len(diffs) > 1 else float("nan"),
                    "mdd": mdd_paired(var, len(rows)) if len(rows) > 1 and var > 0 else float("nan"),
                    "seeds_needed": seeds_needed(delta, var, paired=True) if len(rows) > 1 and var > 0 else None,
                    "sample_sd": float(np.mean([r["sample_sd"] for r in rows]))})
    return out


if __name__ == "__main__":
    if sys.argv[1:2] == ["compare"]:  # python -m analysis.clip_subtask.probe compare <sweep> <probe dir> arm:ref ...
        pairs = [tuple(p.split(":")) for p in sys.argv[4:]]
        print(json.dumps(compare_arms(sys.argv[2], sys.argv[3], pairs), indent=1))
    else:
        print(json.dumps(main(sys.argv[1:]), indent=1))
