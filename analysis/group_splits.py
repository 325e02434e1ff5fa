"""Group-stratified splits and the leakage audit (pure numpy; no Lightning).

A group is a speaker (speech) or a sound source (non-speech). Clips of one group are near-copies of
each other for a classifier, so a group must sit in exactly one split: otherwise the test score
measures memorised voices, not detection. Splits are drawn per class of the group's label, so both
splits hold SPEECH and NONSPEECH groups ("group-stratified"), and the audit refuses any pair of splits
that share a group, naming the groups.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np


class LeakageError(ValueError):
    """Raised when two splits share a group."""


def group_labels(groups: Sequence, labels: Sequence) -> dict:
    """The label of each group: its majority label (ties go to the smaller label).

    Args:
        groups: (N,) group of each sample.
        labels: (N,) label of each sample.

    Returns:
        ``{group: label}``.
    """
    groups = np.asarray(groups)
    labels = np.asarray(labels)
    if groups.shape != labels.shape or groups.ndim != 1:
        raise ValueError(f"groups and labels must be 1-D of the same length, got {groups.shape} and {labels.shape}")
    out = {}
    for g in np.unique(groups):
        values, counts = np.unique(labels[groups == g], return_counts=True)
        out[g] = values[np.argmax(counts)]
    return out


def group_split(groups: Sequence, labels: Sequence, fraction: float, seed: int) -> np.ndarray:
    """Pick whole groups for a held-out split, stratified by the groups' labels.

    Within each label class, the class's groups are shuffled with ``numpy.random.default_rng(seed)``
    and ``round(fraction x n_groups)`` of them are held out; at least one when the class has two or
    more groups and fraction > 0, and never all of them, so both sides keep every class.

    Args:
        groups: (N,) group of each sample.
        labels: (N,) label of each sample (a group's label is its majority label).
        fraction: Fraction of each class's groups to hold out, in [0, 1).
        seed: Seed of the shuffle.

    Returns:
        (N,) bool, True for the samples of held-out groups.
    """
    if not 0.0 <= fraction < 1.0:
        raise ValueError(f"fraction must lie in [0, 1), got {fraction}")
    groups = np.asarray(groups)
    per_group = group_labels(groups, labels)
    rng = np.random.default_rng(seed)
    held = []
    for label in sorted(set(per_group.values())):
        members = np.array(sorted(g for g, lab in per_group.items() if lab == label))
        n = members.size
        k = int(round(fraction * n))
        if fraction > 0 and n >= 2:
            k = min(max(k, 1), n - 1)
        else:
            k = 0
        held.extend(rng.permutation(members)[:k].tolist())
    return np.isin(groups, np.array(held, dtype=groups.dtype))


def leakage_report(split_groups: Mapping[str, Sequence]) -> dict[str, list]:
    """Groups shared by each pair of splits.

    Args:
        split_groups: ``{split name: groups of its samples}``.

    Returns:
        ``{"a|b": sorted shared groups}`` for every pair of splits that share at least one group
        (empty dict: no leakage).
    """
    names = list(split_groups)
    sets = {name: set(np.asarray(split_groups[name]).tolist()) for name in names}
    report = {}
    for i, a in enumerate(names):
        for b in names[i + 1 :]:
            shared = sorted(sets[a] & sets[b], key=str)
            if shared:
                report[f"{a}|{b}"] = shared
    return report


def audit_leakage(split_groups: Mapping[str, Sequence], max_named: int = 10) -> dict[str, int]:
    """Refuse splits that share a group; otherwise return the group and sample counts per split.

    Args:
        split_groups: ``{split name: groups of its samples}``.
        max_named: How many shared groups to name per pair in the error.

    Returns:
        ``{"<split>_groups": n, "<split>_samples": n, ..., "shared_groups": 0}``.

    Raises:
        LeakageError: naming each pair of splits and the groups they share.
    """
    report = leakage_report(split_groups)
    if report:
        parts = []
        for pair, shared in report.items():
            a, b = pair.split("|")
            names = ", ".join(map(str, shared[:max_named])) + (" ..." if len(shared) > max_named else "")
            parts.append(f"{a} and {b} share {len(shared)} group(s): {names}")
        raise LeakageError("leakage audit failed: " + "; ".join(parts))
    out: dict[str, int] = {}
    for name, groups in split_groups.items():
        groups = np.asarray(groups)
        out[f"{name}_groups"] = int(np.unique(groups).size)
        out[f"{name}_samples"] = int(groups.size)
    out["shared_groups"] = 0
    return out
