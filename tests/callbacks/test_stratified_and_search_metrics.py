"""StratifiedMetrics and SearchMetrics callbacks on hand-made outputs, against analysis/ and sklearn."""

from __future__ import annotations

import math
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest
import torch
from sklearn.metrics import roc_auc_score

from analysis.lens.search_metrics import tpr0, tpr10, tpr_at_fpr
from callbacks.lens.search_metrics import SearchMetrics
from callbacks.stratified_metrics import StratifiedMetrics

THETAE_VERDICTS = {"min_auroc_pass": 0.8, "min_auroc_fail": 0.7, "spread_pass": 0.15, "spread_fail": 0.2}


def _split(n: int, seed: int) -> tuple[pd.DataFrame, np.ndarray]:
    """A split frame with lens metadata (NaN θ_E / arc S/N for negatives) and scores that grow with S/N."""
    rng = np.random.default_rng(seed)
    target = np.arange(n) % 2
    snr = np.where(target == 1, rng.uniform(1, 60, n), np.nan)
    frame = pd.DataFrame({"sample_id": [f"s{i}" for i in range(n)], "target": target,
                          "theta_e": np.where(target == 1, rng.uniform(0.5, 3.0, n), np.nan), "arc_snr": snr,
                          "psf_bin": rng.integers(0, 3, n)})
    scores = rng.normal(size=n) + np.nan_to_num(snr) / 15
    return frame, scores.astype(np.float32).astype(np.float64)  # the loop gives float32 outputs


class _Module(torch.nn.Module):
    """Stands in for a BaseTask: epoch_outputs for the stratified callback, batch_outputs for run_split."""

    def __init__(self, outputs: dict[str, tuple[np.ndarray, np.ndarray]]) -> None:
        super().__init__()
        self.outputs = outputs
        self.logged: dict[str, float] = {}
        self.anchor = torch.nn.Parameter(torch.zeros(1))

    @property
    def device(self) -> torch.device:
        return self.anchor.device

    def epoch_outputs(self, split: str) -> dict[str, torch.Tensor]:
        target, scores = self.outputs[split]
        order = np.random.default_rng(0).permutation(len(target))  # sorted by index, as BaseTask returns them
        index = np.sort(order)
        return {"index": torch.as_tensor(index), "outputs": torch.as_tensor(scores[index]),
                "target": torch.as_tensor(target[index])}

    def batch_outputs(self, batch: dict) -> torch.Tensor:
        return batch["score"]

    def log_dict(self, values: dict, sync_dist: bool = False) -> None:
        self.logged.update(values)


def _trainer(tmp_path, frames: dict[str, pd.DataFrame], scores: dict[str, np.ndarray], batch: int = 64):
    def loader(split):
        f, s = frames[split], scores[split]
        return [{"index": torch.arange(i, min(i + batch, len(f))), "target": torch.tensor(f["target"].to_numpy()[i:i + batch]),
                 "score": torch.as_tensor(s[i:i + batch])} for i in range(0, len(f), batch)]

    dm = SimpleNamespace(split_frame=lambda split: frames[split], split_dataloader=loader)
    return SimpleNamespace(datamodule=dm, default_root_dir=str(tmp_path), loggers=[], is_global_zero=True,
                           sanity_checking=False, current_epoch=4)


def test_stratified_callback_bins_match_sklearn_and_skip_missing_columns(tmp_path):
    frame, scores = _split(600, seed=1)
    frames, score_map = {"val": frame, "test": frame}, {"val": scores, "test": scores}
    module = _Module({s: (frame["target"].to_numpy(), scores) for s in frames})
    trainer = _trainer(tmp_path, frames, score_map)
    cb = StratifiedMetrics(
        strata={"thetae": {"column": "theta_e", "edges": [0.5, 1.0, 2.0, 3.0], "required": True},
                "psf_bin": {"column": "psf_bin", "edges": [-0.5, 0.5, 1.5, 2.5], "negatives": "same_bin"},
                "host_mag": {"column": "host_mag", "edges": [17, 19, 21]}},  # not in this data: skipped
        every_n_epochs=5, verdicts={"thetae": THETAE_VERDICTS})
    cb.on_validation_epoch_end(trainer, module)
    assert module.logged and all(k.startswith(("val/auroc_", "val/count_")) for k in module.logged)
    cb.on_test_epoch_end(trainer, module)
    s = cb.summary()
    y = frame["target"].to_numpy()
    sel = (y == 0) | ((frame["theta_e"] >= 1.0) & (frame["theta_e"] < 2.0)).to_numpy()
    assert s["test_auroc_by_thetae_1.00-2.00"] == pytest.approx(roc_auc_score(y[sel], scores[sel]))
    sel = (frame["psf_bin"] == 2).to_numpy()
    assert s["test_auroc_by_psf_bin_1.50-2.50"] == pytest.approx(roc_auc_score(y[sel], scores[sel]))
    bins = [s[f"test_auroc_by_thetae_{b}"] for b in ("0.50-1.00", "1.00-2.00", "2.00-3.00")]
    assert s["test_thetae_min_auroc"] == min(bins) and s["test_thetae_spread"] == pytest.approx(max(bins) - min(bins))
    assert s["thetae_min_auroc_verdict"] in {"PASS", "WARN", "FAIL"} and "psf_bin_min_auroc_verdict" not in s
    assert not any("host_mag" in k for k in s)
    assert s["test_count_neg_by_psf_bin_1.50-2.50"] == int(((frame["psf_bin"] == 2) & (frame["target"] == 0)).sum())
    assert not any(k.startswith("test_count_neg_by_thetae") for k in s)  # θ_E bins use all negatives
    assert (tmp_path / "plots" / "thetae_auroc.png").exists() and (tmp_path / "plots" / "psf_bin_auroc.png").exists()


def test_stratified_callback_required_column_and_bad_config():
    with pytest.raises(ValueError, match="verdicts.snr"):
        StratifiedMetrics(strata={"thetae": {"column": "theta_e", "edges": [0, 1]}}, verdicts={"snr": THETAE_VERDICTS})
    with pytest.raises(ValueError, match="spread_fail"):
        StratifiedMetrics(strata={"thetae": {"column": "theta_e", "edges": [0, 1]}},
                          verdicts={"thetae": {k: v for k, v in THETAE_VERDICTS.items() if k != "spread_fail"}})
    with pytest.raises(ValueError, match="negatives"):
        StratifiedMetrics(strata={"psf": {"column": "psf_bin", "edges": [0, 1], "negatives": "bin"}})
    # bad edges are refused when the callback is built, before any training
    with pytest.raises(ValueError, match=r"strata.thetae.edges must increase strictly.*\[0.0, 2.0, 1.0\]"):
        StratifiedMetrics(strata={"thetae": {"column": "theta_e", "edges": [0, 2, 1]}})
    with pytest.raises(ValueError, match=r"strata.thetae: missing \['column'\]; expected \{column, edges, negatives"):
        StratifiedMetrics(strata={"thetae": {"edges": [0, 1]}})
    cb = StratifiedMetrics(strata={"thetae": {"column": "theta_e", "edges": [0, 1], "required": True}})
    with pytest.raises(ValueError, match="'theta_e' is not in the split's metadata"):
        cb._available(pd.DataFrame({"x": [1]}))


def test_search_callback_numbers_threshold_from_val_and_plots(tmp_path):
    val, s_val = _split(2400, seed=2)    # 1,200 negatives: FPR 1e-3 resolved (one false positive allowed)
    test, s_test = _split(600, seed=3)   # 300 negatives: 1e-3 is not
    frames, scores = {"val": val, "test": test}, {"val": s_val, "test": s_test}
    trainer = _trainer(tmp_path, frames, scores)
    module = _Module({"test": (test["target"].to_numpy(), s_test)})  # test: the test pass's own outputs; val: a pass
    cb = SearchMetrics(fprs=[1e-2, 1e-3], completeness=[0.5], prevalences=[1e-3], n_boot=100, alpha=0.05, seed=0,
                       curve_fpr=1e-3, curves={"arc_snr": {"column": "arc_snr", "edges": [0, 10, 30, 60]},
                                           "host_mag": {"column": "host_mag", "edges": [17, 21]}})
    cb.on_test_end(trainer, module)
    m = cb.summary()
    y_val, y_test = val["target"].to_numpy(), test["target"].to_numpy()
    assert m["val_tpr0"] == tpr0(y_val, s_val) and m["test_tpr10"] == tpr10(y_test, s_test)
    assert m["val_tpr_at_fpr_1e-3"] == tpr_at_fpr(y_val, s_val, 1e-3)
    assert math.isnan(m["test_tpr_at_fpr_1e-3"]) and not math.isnan(m["test_tpr_at_fpr_1e-2"])
    assert (m["test_n_pos"], m["test_n_neg"]) == (300, 300)
    assert "val_auroc" not in m and "test_auroc" not in m  # the module already reports AUROC
    # completeness: threshold = 2nd highest val negative (one FP of 1,200 allowed), applied to test positives
    t = np.sort(s_val[y_val == 0])[::-1][1]
    assert m["search_threshold"] == t
    pos = (y_test == 1) & (test["arc_snr"] >= 10).to_numpy() & (test["arc_snr"] < 30).to_numpy()
    assert m["test_completeness_by_arc_snr_10.00-30.00"] == pytest.approx(np.mean(s_test[pos] > t))
    assert m["test_completeness_by_arc_snr_30.00-60.00"] >= m["test_completeness_by_arc_snr_0.00-10.00"]
    assert not any("host_mag" in k for k in m)
    assert m["val_purity_at_c0.5_prev_1e-3_ci_low"] <= m["val_purity_at_c0.5_prev_1e-3"] <= m["val_purity_at_c0.5_prev_1e-3_ci_high"]
    assert (tmp_path / "plots" / "roc_log_fpr.png").stat().st_size > 0
    assert (tmp_path / "plots" / "completeness_arc_snr.png").stat().st_size > 0
    assert not (tmp_path / "plots" / "completeness_host_mag.png").exists()


def test_search_callback_refuses_bad_config_and_non_binary_outputs(tmp_path):
    with pytest.raises(ValueError, match=r"curves.snr: missing \['edges'\]"):
        SearchMetrics(fprs=[1e-2], completeness=[0.5], prevalences=[1e-3], n_boot=0, alpha=0.05, seed=0, curve_fpr=1e-2,
                      curves={"snr": {"column": "arc_snr"}})
    with pytest.raises(ValueError, match=r"curves.snr.edges: expected a list of numbers"):
        SearchMetrics(fprs=[1e-2], completeness=[0.5], prevalences=[1e-3], n_boot=0, alpha=0.05, seed=0, curve_fpr=1e-2,
                      curves={"snr": {"column": "arc_snr", "edges": ["low", "high"]}})
    with pytest.raises(ValueError, match=r"curves.snr.edges must increase strictly \(two at least\), got \[5.0\]"):
        SearchMetrics(fprs=[1e-2], completeness=[0.5], prevalences=[1e-3], n_boot=0, alpha=0.05, seed=0, curve_fpr=1e-2,
                      curves={"snr": {"column": "arc_snr", "edges": [5]}})
    with pytest.raises(ValueError, match="threshold_split"):
        SearchMetrics(fprs=[1e-2], completeness=[0.5], prevalences=[1e-3], n_boot=0, alpha=0.05, seed=0, curve_fpr=1e-2,
                      threshold_split="dev", curves={"snr": {"column": "arc_snr", "edges": [0, 1]}})
    frame, scores = _split(40, seed=4)
    trainer = _trainer(tmp_path, {"val": frame, "test": frame}, {"val": np.c_[scores, scores], "test": np.c_[scores, scores]})
    cb = SearchMetrics(fprs=[1e-2], completeness=[0.5], prevalences=[1e-3], n_boot=0, alpha=0.05, seed=0, curve_fpr=1e-2)
    with pytest.raises(ValueError, match=r"binary module.*\(40, 2\)"):
        cb.on_test_end(trainer, _Module({}))
