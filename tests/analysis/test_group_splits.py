"""Group-stratified splits never share a group; the audit refuses a split that does, naming the groups."""

from __future__ import annotations

import numpy as np
import pytest

from analysis.group_splits import LeakageError, audit_leakage, group_labels, group_split, leakage_report


def _random_layout(seed: int) -> tuple[np.ndarray, np.ndarray]:
    """A random set of groups of random sizes; each group has one label (speaker or source)."""
    rng = np.random.default_rng(seed)
    n_groups = int(rng.integers(4, 40))
    sizes = rng.integers(1, 15, size=n_groups)
    group_label = rng.integers(0, 2, size=n_groups)
    group_label[:2] = [0, 1]  # both classes present
    groups = np.repeat([f"g{i:03d}" for i in range(n_groups)], sizes)
    labels = np.repeat(group_label, sizes)
    order = rng.permutation(groups.size)  # rows in any order
    return groups[order], labels[order]


@pytest.mark.parametrize("seed", range(60))
def test_split_never_shares_a_group_over_seeds(seed: int) -> None:
    groups, labels = _random_layout(seed)
    fraction = [0.1, 0.2, 0.3, 0.5][seed % 4]
    test = group_split(groups, labels, fraction, seed)
    dev = np.zeros_like(test)
    dev[~test] = group_split(groups[~test], labels[~test], 0.2, seed + 1)
    train = ~test & ~dev
    tr, dv, te = set(groups[train]), set(groups[dev]), set(groups[test])
    assert not (tr & te) and not (tr & dv) and not (dv & te)
    assert tr | dv | te == set(groups)
    # stratified: every class keeps at least one group in train, and each class with >= 2 groups has one held out
    per_group = group_labels(groups, labels)
    for label in (0, 1):
        members = [g for g, lab in per_group.items() if lab == label]
        in_test = [g for g in members if g in te]
        assert len(in_test) < len(members)
        if len(members) >= 2:
            assert len(in_test) >= 1
    audit_leakage({"train": groups[train], "dev": groups[dev], "test": groups[test]})


def test_split_sizes_hand_worked() -> None:
    # 8 speakers (label 1) and 5 sources (label 0), 20%: round(1.6) = 2 speakers, round(1.0) = 1 source
    groups = np.array([f"spk{i}" for i in range(8)] + [f"src{i}" for i in range(5)])
    labels = np.array([1] * 8 + [0] * 5)
    held = group_split(groups, labels, 0.2, seed=0)
    assert held[:8].sum() == 2 and held[8:].sum() == 1
    # same seed, same split; rows in another order give the same groups
    again = group_split(groups[::-1], labels[::-1], 0.2, seed=0)[::-1]
    np.testing.assert_array_equal(held, again)
    # fraction 0 holds nothing out; a class with one group is never emptied
    assert not group_split(groups, labels, 0.0, seed=0).any()
    one = group_split(np.array(["a", "a", "b"]), np.array([0, 0, 1]), 0.5, seed=3)
    assert not one.any()


def test_group_label_is_majority() -> None:
    assert group_labels(["a", "a", "a", "b"], [1, 1, 0, 0]) == {"a": 1, "b": 0}


def test_audit_refuses_crafted_leak_naming_groups() -> None:
    splits = {
        "train": ["spk_001", "spk_002", "src_pink_00", "spk_007"],
        "dev": ["spk_003"],
        "test": ["spk_007", "src_tone_01", "src_pink_00"],
    }
    assert leakage_report(splits) == {"train|test": ["spk_007", "src_pink_00"]}
    with pytest.raises(LeakageError, match=r"train and test share 2 group\(s\): spk_007, src_pink_00"):
        audit_leakage(splits)
    splits["dev"] = ["spk_001"]
    with pytest.raises(LeakageError, match=r"train and dev share 1 group\(s\): spk_001"):
        audit_leakage(splits)


def test_audit_counts_clean_split() -> None:
    out = audit_leakage({"train": ["a", "a", "b"], "test": ["c"]})
    assert out == {"train_groups": 2, "train_samples": 3, "test_groups": 1, "test_samples": 1, "shared_groups": 0}


def test_bad_fraction_fails() -> None:
    with pytest.raises(ValueError, match="fraction"):
        group_split(["a", "b"], [0, 1], 1.0, 0)
