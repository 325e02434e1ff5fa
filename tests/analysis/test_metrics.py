"""Stratified AUROC against sklearn on hand-built bins, including empty and single-class bins."""

import math
import warnings

import numpy as np
import pytest
from sklearn.metrics import roc_auc_score

from analysis.metrics import auroc, spread_summary, stratified_auroc, stratified_metrics


def test_auroc_matches_sklearn_on_random_data():
    rng = np.random.default_rng(0)
    y = rng.integers(0, 2, 500)
    s = rng.normal(size=500) + y
    assert auroc(y, s) == pytest.approx(roc_auc_score(y, s), abs=1e-12)


def test_auroc_single_class_is_nan_with_warning():
    with pytest.warns(RuntimeWarning, match="single class"):
        assert math.isnan(auroc(np.ones(5), np.arange(5.0)))
    with pytest.warns(RuntimeWarning):
        assert math.isnan(auroc(np.array([]), np.array([])))


def test_stratified_auroc_hand_worked():
    # negatives (no θ_E) score 0.1, 0.2, 0.6; positives in bin [0.5,1): 0.5, 0.7; bin [1,2): 0.05
    y = np.array([0, 0, 0, 1, 1, 1])
    s = np.array([0.1, 0.2, 0.6, 0.5, 0.7, 0.05])
    theta = np.array([np.nan, np.nan, np.nan, 0.6, 0.9, 1.5])
    rows = stratified_auroc(y, s, theta, [0.5, 1.0, 2.0, 3.0])
    # bin 1: pairs (pos, neg): 0.5>{0.1,0.2}, 0.5<0.6, 0.7>all → 5/6
    assert rows[0]["auroc"] == pytest.approx(5 / 6)
    assert (rows[0]["n_pos"], rows[0]["n_neg"]) == (2, 3)
    # bin 2: a single positive below every negative → 0.0 is a real value here
    assert rows[1]["auroc"] == pytest.approx(0.0)
    # bin 3: empty → NaN with count 0, never 0.0
    assert math.isnan(rows[2]["auroc"]) and rows[2]["n_pos"] == 0
    assert rows[2]["label"] == "2.00-3.00"


def test_stratified_auroc_matches_sklearn_per_bin():
    rng = np.random.default_rng(1)
    n = 2000
    y = rng.integers(0, 2, n)
    theta = np.where(y == 1, rng.uniform(0.5, 3.0, n), np.nan)
    s = rng.normal(size=n) + y * np.nan_to_num(theta)  # easier at large θ_E
    edges = [0.5, 0.75, 1.0, 1.5, 2.0, 2.5, 3.0]
    rows = stratified_auroc(y, s, theta, edges)
    for row in rows:
        sel = (y == 0) | ((theta >= row["low"]) & (theta < row["high"]))
        assert row["auroc"] == pytest.approx(roc_auc_score(y[sel], s[sel]), abs=1e-12)
    values = [r["auroc"] for r in rows]
    assert values[-1] > values[0]
    summary = spread_summary(rows)
    assert summary["min_auroc"] == pytest.approx(min(values))
    assert summary["spread"] == pytest.approx(max(values) - min(values))


def test_stratified_auroc_no_negatives_is_nan_without_warning_spam():
    y = np.array([1, 1])
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        rows = stratified_auroc(y, np.array([0.3, 0.4]), np.array([0.6, 0.7]), [0.5, 1.0])
    assert math.isnan(rows[0]["auroc"]) and rows[0]["n_neg"] == 0
    assert math.isnan(spread_summary(rows)["min_auroc"])


def test_stratified_auroc_rejects_bad_input():
    with pytest.raises(ValueError, match="same length"):
        stratified_auroc(np.array([0, 1]), np.array([0.1]), np.array([1.0, 1.0]), [0, 1])
    with pytest.raises(ValueError, match="increase"):
        stratified_auroc(np.array([0, 1]), np.array([0.1, 0.2]), np.array([1.0, 1.0]), [1, 1])


def test_stratified_metrics_same_bin_negatives_match_sklearn():
    # PSF bin: negatives have one too, so a bin's positives are scored against that bin's negatives
    rng = np.random.default_rng(2)
    n = 1500
    y = rng.integers(0, 2, n)
    psf = rng.integers(0, 3, n).astype(float)
    s = rng.normal(size=n) + y * (1 + psf)  # easier in worse... any bin-dependent signal
    rows = stratified_metrics(y, s, psf, [-0.5, 0.5, 1.5, 2.5], negatives="same_bin")
    for row, b in zip(rows, (0, 1, 2)):
        sel = psf == b
        assert row["auroc"] == pytest.approx(roc_auc_score(y[sel], s[sel]), abs=1e-12)
        assert (row["n_pos"], row["n_neg"]) == (int((y[sel] == 1).sum()), int((y[sel] == 0).sum()))
    # the same column with all negatives is a different number (and stratified_auroc's)
    all_rows = stratified_metrics(y, s, psf, [-0.5, 0.5, 1.5, 2.5])
    assert all_rows[0]["n_neg"] == int((y == 0).sum())
    assert [r["auroc"] for r in all_rows] == [r["auroc"] for r in stratified_auroc(y, s, psf, [-0.5, 0.5, 1.5, 2.5])]


def test_stratified_metrics_completeness_hand_worked_and_one_class_bins():
    # arc S/N bins [0, 10), [10, 20), [20, 40); negatives have no S/N (NaN)
    y = np.array([0, 0, 0, 1, 1, 1, 1])
    s = np.array([0.1, 0.2, 0.6, 0.5, 0.7, 0.9, 0.95])
    snr = np.array([np.nan, np.nan, np.nan, 5.0, 8.0, 15.0, 12.0])
    rows = stratified_metrics(y, s, snr, [0, 10, 20, 40], threshold=0.6)
    assert (rows[0]["n_detected"], rows[0]["completeness"]) == (1, 0.5)  # 0.7 > 0.6, 0.5 is not
    assert (rows[1]["n_detected"], rows[1]["completeness"]) == (2, 1.0)
    assert rows[0]["auroc"] == pytest.approx(5 / 6)  # 0.5 beats 0.1, 0.2; 0.7 beats all three
    assert math.isnan(rows[2]["auroc"]) and math.isnan(rows[2]["completeness"]) and rows[2]["n_pos"] == 0
    # a threshold that could not be set (NaN) gives NaN completeness, not 0
    assert all(math.isnan(r["completeness"]) for r in stratified_metrics(y, s, snr, [0, 10, 20, 40], threshold=float("nan")))
    # one class in a same_bin stratum: NaN with its counts
    host = np.array([17.0, 17.0, 17.0, 17.0, 20.0, 20.0, 20.0])
    rows = stratified_metrics(y, s, host, [16, 18, 21], negatives="same_bin")
    assert rows[0]["auroc"] == pytest.approx(2 / 3) and math.isnan(rows[1]["auroc"])  # 0.5 vs 0.1, 0.2, 0.6
    assert (rows[1]["n_pos"], rows[1]["n_neg"]) == (3, 0)
    with pytest.raises(ValueError, match="negatives"):
        stratified_metrics(y, s, host, [16, 18], negatives="bin")


# --- edges, ties and the gates (issue 27) ----------------------------------------------------------------

def test_a_value_on_a_stratum_edge_belongs_to_the_bin_above():
    from analysis.metrics import bin_label

    y = np.array([0, 0, 1, 1, 1, 1])
    s = np.array([0.2, 0.4, 0.3, 0.9, 0.5, 0.1])
    theta = np.array([np.nan, np.nan, 0.5, 1.0, 2.0, 1.9999])
    rows = stratified_metrics(y, s, theta, [0.5, 1.0, 2.0], threshold=0.4)
    # 0.5 is in [0.5, 1.0); 1.0 in [1.0, 2.0), not [0.5, 1.0); 2.0 (the last edge) in no bin
    assert [r["n_pos"] for r in rows] == [1, 2]
    assert rows[0]["auroc"] == pytest.approx(0.5)  # 0.3 beats 0.2, loses to 0.4
    assert rows[1]["auroc"] == pytest.approx(0.5)  # 0.9 beats both; 0.1 neither
    # a score exactly at the threshold is not detected (strictly above)
    assert (rows[0]["n_detected"], rows[1]["n_detected"]) == (0, 1)
    assert rows[1]["completeness"] == 0.5
    assert [r["label"] for r in rows] == ["0.50-1.00", "1.00-2.00"]
    assert bin_label(0.125, 10) == "0.12-10.00"
    assert (rows[0]["low"], rows[0]["high"]) == (0.5, 1.0)


def test_tied_scores_count_one_half_in_a_stratum():
    y = np.array([0, 0, 1, 1])
    s = np.array([0.5, 0.2, 0.5, 0.5])
    rows = stratified_auroc(y, s, np.array([np.nan, np.nan, 0.1, 0.2]), [0.0, 1.0])
    assert rows[0]["auroc"] == pytest.approx(0.75)  # each positive: ties 0.5 (1/2), beats 0.2 (1) -> 3/4
    assert rows[0]["auroc"] == pytest.approx(roc_auc_score(y, s))


def test_multiclass_auroc_nan_when_a_class_is_missing():
    p = np.array([[0.7, 0.2, 0.1], [0.2, 0.7, 0.1], [0.6, 0.3, 0.1], [0.1, 0.8, 0.1]])
    with pytest.warns(RuntimeWarning, match=r"only classes \[0, 1\] of 3"):
        assert math.isnan(auroc(np.array([0, 1, 0, 1]), p))
    y = np.array([0, 1, 2, 1])
    p[2] = [0.1, 0.1, 0.8]
    assert auroc(y, p) == pytest.approx(roc_auc_score(y, p, multi_class="ovr", labels=[0, 1, 2]))


def test_spread_summary_skips_nan_bins():
    rows = [{"auroc": 0.9}, {"auroc": float("nan")}, {"auroc": 0.6}, {"auroc": 0.75}]
    assert spread_summary(rows) == {"min_auroc": 0.6, "spread": pytest.approx(0.3)}


def test_gate_verdicts_on_their_edges():
    from analysis.metrics import gate_verdict, gate_verdict_above

    assert [gate_verdict(v, 0.55, 0.6) for v in (0.5, 0.55, 0.57, 0.6, 0.61)] == ["PASS", "WARN", "WARN", "WARN", "FAIL"]
    assert gate_verdict(None, 0.55, 0.6) == "N/A" and gate_verdict(float("nan"), 0.55, 0.6) == "N/A"
    assert [gate_verdict_above(v, 0.9, 0.8) for v in (0.95, 0.9, 0.85, 0.8, 0.79)] == ["PASS", "WARN", "WARN", "WARN", "FAIL"]
    assert gate_verdict_above(None, 0.9, 0.8) == "N/A" and gate_verdict_above(float("nan"), 0.9, 0.8) == "N/A"


def test_bin_spec_and_edges_are_checked():
    from analysis.metrics import bin_spec, check_edges

    assert bin_spec("strata.x", {"column": 3, "edges": ["0", 1]}) == {"column": "3", "edges": [0.0, 1.0]}
    with pytest.raises(ValueError, match=r"strata.x: missing \['edges'\]; expected \{column, edges, negatives\}"):
        bin_spec("strata.x", {"column": "a"}, ", negatives")
    with pytest.raises(ValueError, match=r"strata.x.edges must increase"):
        bin_spec("strata.x", {"column": "a", "edges": [1]})
    with pytest.raises(ValueError, match="expected a list of numbers"):
        check_edges(["a", 1])
    with pytest.raises(ValueError, match="increase strictly"):
        check_edges([0.0, 1.0, 1.0])
    assert check_edges([0, 0.5]) == [0.0, 0.5]


# --- survivors of a mutation run (issue 27) ----------------------------------------------------------------

def test_a_positive_scored_exactly_at_the_threshold_is_not_detected():
    y = np.array([0, 1, 1, 1, 1])
    s = np.array([0.4, 0.4, 0.41, np.nextafter(0.4, 0), 0.9])
    rows = stratified_metrics(y, s, np.array([np.nan, 0.5, 0.5, 0.5, 0.5]), [0.0, 1.0], threshold=0.4)
    assert (rows[0]["n_detected"], rows[0]["completeness"]) == (2, 0.5)  # 0.41 and 0.9; 0.4 is not above


def test_missing_stratum_values_given_as_none_fall_in_no_bin():
    # a metadata column read from JSON holds None for "no value": the same as NaN
    y = np.array([0, 0, 1, 1])
    rows = stratified_metrics(y, np.array([0.1, 0.6, 0.7, 0.2]), [None, None, 0.5, None], [0.0, 1.0])
    assert (rows[0]["n_pos"], rows[0]["n_neg"]) == (1, 2)
    assert rows[0]["auroc"] == pytest.approx(1.0)


def test_multiclass_auroc_refuses_labels_outside_its_columns():
    # label 5 with three score columns: not a reordering of classes sklearn may guess, an error
    p = np.random.default_rng(0).dirichlet(np.ones(3), 6)
    with pytest.raises(ValueError, match="labels"):
        auroc(np.array([0, 1, 5, 0, 1, 5]), p)


def test_auroc_warning_points_at_the_caller():
    with pytest.warns(RuntimeWarning, match="single class") as record:
        auroc(np.ones(3), np.arange(3.0))
    with pytest.warns(RuntimeWarning, match="only classes") as record3:
        auroc(np.array([0, 1]), np.full((2, 3), 1 / 3))
    for w in (record[0], record3[0]):
        # stacklevel 2: this file, not metrics.py (under mutmut a wrapper frame sits between)
        assert w.filename == __file__ or "mutmut" in w.filename


def test_spread_summary_of_no_value_has_both_keys_nan():
    out = spread_summary([{"auroc": float("nan")}])
    assert sorted(out) == ["min_auroc", "spread"] and all(math.isnan(v) for v in out.values())
    assert spread_summary([]).keys() == out.keys()


def test_edge_and_spec_messages_name_what_was_checked():
    from analysis.metrics import bin_spec, check_edges

    with pytest.raises(ValueError, match=r"^bin edges must increase strictly \(two at least\), got \[1.0\]$"):
        check_edges([1])
    with pytest.raises(ValueError, match=r"^bin edges: expected a list of numbers"):
        check_edges(None)
    with pytest.raises(ValueError, match=r"^s: missing \['column'\]; expected \{column, edges\}$"):
        bin_spec("s", {"edges": [0, 1]})
