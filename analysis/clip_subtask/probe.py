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


if __name__ == "__main__":
    print(json.dumps(main(sys.argv[1:]), indent=1))
