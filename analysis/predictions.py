"""Read and validate a predictions CSV (the contract in shared/DESIGN.md).

Columns: ``sample_id``, ``target``, then ``logit`` (binary, one column) or ``logit_0..logit_{C-1}``
(multiclass), then any metadata columns. Optional MC-Dropout columns: binary ``mc_prob`` and ``mc_std``;
multiclass ``mc_prob_0..mc_prob_{C-1}`` and ``mc_std`` (std of the predicted class probability).

The split a file came from is in its name, ``predictions_<split>.csv``, and optionally in a ``split``
column. Every problem raises a ValueError that names the file and the column, so a bad file fails before
any number is computed from it.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

_NAME_SPLIT = re.compile(r"^predictions_(?P<split>.+)\.csv$")
_LOGIT_K = re.compile(r"^logit_(\d+)$")
_MC_PROB_K = re.compile(r"^mc_prob_(\d+)$")


@dataclass
class Predictions:
    """One validated predictions file.

    Attributes:
        path: The file it was read from.
        sample_id: Sample ids as strings (read as text, so "007" and "7" stay different).
        targets: Integer class labels, shape (N,).
        logits: Shape (N,) for a binary file, (N, C) for a multiclass one.
        name_split: The split named by the file name (``predictions_<split>.csv``), or None.
        column_splits: Distinct values of the ``split`` column, or an empty tuple.
        mc_prob: MC-Dropout mean probabilities ((N,) binary p(class 1), (N, C) multiclass) or None.
        mc_std: MC-Dropout std of the predicted class probability, (N,), or None.
        metadata: Every other column, unchanged.
    """

    path: Path
    sample_id: np.ndarray
    targets: np.ndarray
    logits: np.ndarray
    name_split: str | None = None
    column_splits: tuple[str, ...] = ()
    mc_prob: np.ndarray | None = None
    mc_std: np.ndarray | None = None
    metadata: pd.DataFrame = field(default_factory=pd.DataFrame)

    def __len__(self) -> int:
        return int(self.targets.shape[0])

    @property
    def is_binary(self) -> bool:
        """True for a one-logit (binary) file."""
        return self.logits.ndim == 1

    @property
    def n_classes(self) -> int:
        """2 for a binary file, C for a multiclass one."""
        return 2 if self.is_binary else int(self.logits.shape[1])

    @property
    def splits(self) -> set[str]:
        """Every split this file claims to come from (file name and ``split`` column), lower-cased."""
        found = {s.lower() for s in self.column_splits}
        if self.name_split is not None:
            found.add(self.name_split.lower())
        return found

    @property
    def is_test_split(self) -> bool:
        """Whether the file name or the ``split`` column says 'test'."""
        return "test" in self.splits


def split_from_name(path: str | Path) -> str | None:
    """The ``<split>`` of a file named ``predictions_<split>.csv``, else None."""
    match = _NAME_SPLIT.match(Path(path).name)
    return match.group("split") if match else None


def _numeric_column(frame: pd.DataFrame, column: str, path: Path) -> np.ndarray:
    """A column as finite float64, or a ValueError naming file and column."""
    values = pd.to_numeric(frame[column], errors="coerce").to_numpy(dtype=np.float64)
    bad = ~np.isfinite(values)
    if bad.any():
        row = int(np.flatnonzero(bad)[0])
        raw = frame[column].iloc[row]
        raise ValueError(
            f"{path}: column '{column}' must hold finite numbers; {int(bad.sum())} row(s) do not "
            f"(first at row {row}: {raw!r})"
        )
    return values


def _targets(frame: pd.DataFrame, path: Path, n_classes: int) -> np.ndarray:
    values = pd.to_numeric(frame["target"], errors="coerce").to_numpy(dtype=np.float64)
    bad = ~np.isfinite(values) | (values != np.round(values))
    if bad.any():
        row = int(np.flatnonzero(bad)[0])
        raise ValueError(
            f"{path}: column 'target' must hold integer class labels; {int(bad.sum())} row(s) do not "
            f"(first at row {row}: {frame['target'].iloc[row]!r})"
        )
    targets = values.astype(np.int64)
    out = (targets < 0) | (targets >= n_classes)
    if out.any():
        raise ValueError(
            f"{path}: column 'target' must lie in 0..{n_classes - 1} for {n_classes} classes; "
            f"found {sorted(set(targets[out].tolist()))[:5]}"
        )
    return targets


def _logit_columns(columns: list[str], path: Path) -> list[str]:
    indexed = {int(m.group(1)): c for c in columns if (m := _LOGIT_K.match(c))}
    if "logit" in columns and indexed:
        raise ValueError(f"{path}: has both 'logit' and 'logit_<k>' columns; expected one binary or C multiclass")
    if "logit" in columns:
        return ["logit"]
    if not indexed:
        raise ValueError(
            f"{path}: missing column 'logit' (binary) or 'logit_0'..'logit_<C-1>' (multiclass); "
            f"found {columns}"
        )
    n = max(indexed) + 1
    missing = [f"logit_{k}" for k in range(n) if k not in indexed]
    if missing:
        raise ValueError(f"{path}: missing column(s) {missing}; logit columns must run logit_0..logit_{n - 1}")
    if n < 2:
        raise ValueError(f"{path}: a multiclass file needs at least logit_0 and logit_1; a binary file uses 'logit'")
    return [f"logit_{k}" for k in range(n)]


def _mc_columns(columns: list[str], path: Path, binary: bool, n_classes: int) -> tuple[list[str], str] | None:
    present = [c for c in columns if c.startswith("mc_prob") or c == "mc_std"]
    if not present:
        return None
    expected = ["mc_prob"] if binary else [f"mc_prob_{k}" for k in range(n_classes)]
    missing = [c for c in expected + ["mc_std"] if c not in columns]
    if missing:
        kind = "binary" if binary else f"{n_classes}-class"
        raise ValueError(f"{path}: MC-Dropout columns are incomplete for a {kind} file; missing {missing}")
    return expected, "mc_std"


def read_predictions(path: str | Path) -> Predictions:
    """Read a predictions CSV and check it against the contract.

    Args:
        path: A ``predictions_<split>.csv`` file (other names are accepted; the split is then unknown
            unless a ``split`` column gives it).

    Returns:
        The validated Predictions.

    Raises:
        FileNotFoundError: The file does not exist.
        ValueError: A missing column, non-finite logits, non-integer or out-of-range targets, duplicate
            sample ids, an incomplete set of MC-Dropout columns, or an empty file. The message names the
            file and the column.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"predictions file not found: {path}")
    # sample_id as text: ids must match across files exactly, leading zeros included.
    frame = pd.read_csv(path, dtype={"sample_id": str, "split": str})
    columns = [str(c) for c in frame.columns]
    missing = [c for c in ("sample_id", "target") if c not in columns]
    if missing:
        raise ValueError(f"{path}: missing column(s) {missing}; found {columns}")
    if len(frame) == 0:
        raise ValueError(f"{path}: has a header but no rows")

    ids = frame["sample_id"]
    if ids.isna().any():
        raise ValueError(f"{path}: column 'sample_id' has {int(ids.isna().sum())} empty value(s)")
    dup = ids[ids.duplicated()].unique()
    if len(dup):
        raise ValueError(f"{path}: column 'sample_id' has {len(dup)} duplicated id(s), e.g. {list(dup[:5])}")

    logit_cols = _logit_columns(columns, path)
    binary = logit_cols == ["logit"]
    n_classes = 2 if binary else len(logit_cols)
    logits = np.column_stack([_numeric_column(frame, c, path) for c in logit_cols])
    logits = logits[:, 0] if binary else logits
    targets = _targets(frame, path, n_classes)

    mc_prob = mc_std = None
    mc = _mc_columns(columns, path, binary, n_classes)
    mc_cols: list[str] = []
    if mc is not None:
        prob_cols, std_col = mc
        mc_cols = prob_cols + [std_col]
        parsed = {c: _numeric_column(frame, c, path) for c in prob_cols}
        for c, v in parsed.items():
            if ((v < 0) | (v > 1)).any():
                raise ValueError(f"{path}: column '{c}' must hold probabilities in [0, 1]")
        mc_prob = np.column_stack(list(parsed.values()))
        mc_prob = mc_prob[:, 0] if binary else mc_prob
        mc_std = _numeric_column(frame, std_col, path)
        if (mc_std < 0).any():
            raise ValueError(f"{path}: column 'mc_std' must be non-negative")

    column_splits: tuple[str, ...] = ()
    if "split" in columns:
        column_splits = tuple(sorted({str(s).strip() for s in frame["split"].dropna()}))

    used = {"sample_id", "target", *logit_cols, *mc_cols}
    metadata = frame[[c for c in columns if c not in used]].copy()
    return Predictions(
        path=path,
        sample_id=ids.to_numpy(dtype=str),
        targets=targets,
        logits=logits,
        name_split=split_from_name(path),
        column_splits=column_splits,
        mc_prob=mc_prob,
        mc_std=mc_std,
        metadata=metadata,
    )
