"""Write, read and validate predictions files (the contract in docs/contract.md).

A predictions file is ``predictions_<split>.csv`` plus a sidecar ``predictions_<split>.json``. The CSV
has ``sample_id``, ``split`` and, by output kind:

- binary: ``target`` (0/1) and ``logit``; optional ``prob`` (temperature applied), ``mc_prob``, ``mc_std``;
- multiclass: ``target`` (0..C-1) and ``logit_0..logit_{C-1}``; optional ``prob_k``, ``mc_prob_k``, ``mc_std``
  (std of the predicted class probability);
- regression: per target ``t``: ``t`` (truth), ``t_mean`` and, with uncertainty, ``t_std``; optional
  ``t_mc_mean``, ``t_mc_std``;

then every metadata column of the split. Unlabelled data (a survey's cutouts, a challenge's maps) has no
truth column: the ``target`` (or per-target ``t``) column is left out and the sidecar says
``labelled: false``. The sidecar is built by ``prediction_record`` (one schema, ``SCHEMA_VERSION``):
``schema_version, kind, split, labelled, target_names, data`` (the data's identity), ``temperature``,
``temperature_fitted_on``, ``thresholds``, ``label_scaler``, plus whatever the writer adds (checkpoint,
metrics, a family's numbers such as ``wl_score``/``mcmc``). Every file is written by ``PredictionsWriter``
(``write_predictions`` for a whole table), which streams rows in and renames the finished file into place. The split is recorded in
the content (the ``split`` column and the sidecar), so renaming a test file does not make it a
validation file. Every problem raises a ValueError that names the file and the column, so a bad file
fails before any number is computed from it.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

KINDS = ("binary", "multiclass", "regression")
_NAME_SPLIT = re.compile(r"^predictions_(?P<split>.+)\.csv$")
_LOGIT_K = re.compile(r"^logit_(\d+)$")


@dataclass
class Predictions:
    """One validated predictions file.

    Attributes:
        path: The file it was read from.
        kind: ``binary``, ``multiclass`` or ``regression``.
        sample_id: Sample ids as strings (read as text, so "007" and "7" stay different).
        targets: Classification: integer labels (N,). Regression: truths (N, T).
        logits: Classification: (N,) binary or (N, C) multiclass; None for regression.
        target_names: Regression targets, in column order; empty for classification.
        means, stds: Regression: (N, T) predicted means and stds (stds None for a point regressor).
        name_split: The split named by the file name (``predictions_<split>.csv``), or None.
        column_splits: Distinct values of the ``split`` column, or an empty tuple.
        recorded_split: The split in the sidecar JSON, or None.
        mc_prob: Classification MC-Dropout mean probabilities ((N,) or (N, C)) or None.
        mc_std: MC-Dropout std: (N,) for classification, (N, T) for regression; None without MC columns.
        mc_mean: Regression MC-Dropout means (N, T) or None.
        sidecar: The sidecar JSON (empty when there is none).
        metadata: Every other column, unchanged.
        labelled: False for a file of unlabelled data (no truth columns; ``targets`` is empty).
    """

    path: Path
    kind: str
    sample_id: np.ndarray
    targets: np.ndarray
    logits: np.ndarray | None = None
    target_names: tuple[str, ...] = ()
    means: np.ndarray | None = None
    stds: np.ndarray | None = None
    name_split: str | None = None
    column_splits: tuple[str, ...] = ()
    recorded_split: str | None = None
    mc_prob: np.ndarray | None = None
    mc_std: np.ndarray | None = None
    mc_mean: np.ndarray | None = None
    sidecar: dict[str, Any] = field(default_factory=dict)
    metadata: pd.DataFrame = field(default_factory=pd.DataFrame)
    labelled: bool = True

    def __len__(self) -> int:
        return int(self.sample_id.shape[0])

    @property
    def is_binary(self) -> bool:
        """True for a one-logit (binary) file."""
        return self.kind == "binary"

    @property
    def n_classes(self) -> int:
        """2 for a binary file, C for a multiclass one, 0 for regression."""
        if self.kind == "regression":
            return 0
        return 2 if self.is_binary else int(self.logits.shape[1])

    @property
    def splits(self) -> set[str]:
        """Every split this file claims to come from (name, ``split`` column, sidecar), lower-cased."""
        found = {s.lower() for s in self.column_splits}
        for s in (self.name_split, self.recorded_split):
            if s is not None:
                found.add(s.lower())
        return found

    @property
    def is_test_split(self) -> bool:
        """Whether the file name, its ``split`` column or its sidecar says 'test'."""
        return "test" in self.splits


def split_from_name(path: str | Path) -> str | None:
    """The ``<split>`` of a file named ``predictions_<split>.csv``, else None."""
    match = _NAME_SPLIT.match(Path(path).name)
    return match.group("split") if match else None


def sidecar_path(path: str | Path) -> Path:
    """``predictions_<split>.json`` beside ``predictions_<split>.csv``."""
    return Path(path).with_suffix(".json")


# --------------------------------------------------------------------------------------------------
# writing


def output_columns(kind: str, outputs: np.ndarray, target_names: Sequence[str] = ()) -> dict[str, np.ndarray]:
    """The prediction columns of one output kind (see the module docstring).

    Args:
        kind: ``binary``, ``multiclass`` or ``regression``.
        outputs: binary (N,) logits; multiclass (N, C); regression (N, T) or (N, T, 2) mean and std.
        target_names: Regression target names (T of them).
    """
    outputs = np.asarray(outputs, dtype=np.float64)
    if kind == "binary":
        if outputs.ndim == 2 and outputs.shape[1] == 1:
            outputs = outputs[:, 0]
        if outputs.ndim != 1:
            raise ValueError(f"binary outputs must be (N,) logits, got shape {outputs.shape}")
        return {"logit": outputs}
    if kind == "multiclass":
        if outputs.ndim != 2 or outputs.shape[1] < 2:
            raise ValueError(f"multiclass outputs must be (N, C >= 2) logits, got shape {outputs.shape}")
        return {f"logit_{k}": outputs[:, k] for k in range(outputs.shape[1])}
    if kind == "regression":
        names = list(target_names)
        if outputs.ndim == 1 and len(names) == 1:
            outputs = outputs[:, None]
        if outputs.ndim not in (2, 3) or outputs.shape[1] != len(names) or (outputs.ndim == 3 and outputs.shape[2] != 2):
            raise ValueError(f"regression outputs must be (N, {len(names)}) or (N, {len(names)}, 2) for targets {names}, "
                             f"got shape {outputs.shape}")
        cols: dict[str, np.ndarray] = {}
        for j, t in enumerate(names):
            if outputs.ndim == 3:
                cols[f"{t}_mean"], cols[f"{t}_std"] = outputs[:, j, 0], outputs[:, j, 1]
            else:
                cols[f"{t}_mean"] = outputs[:, j]
        return cols
    raise ValueError(f"unknown output kind {kind!r}; expected one of {KINDS}")


def prediction_table(
    kind: str,
    outputs: np.ndarray,
    frame: pd.DataFrame,
    split: str,
    target_names: Sequence[str] = (),
    probs: np.ndarray | None = None,
    mc: tuple[np.ndarray, np.ndarray] | None = None,
    labelled: bool | None = None,
) -> pd.DataFrame:
    """A predictions table for one split, in the contract's column order.

    Args:
        kind: The module's output kind.
        outputs: The outputs, in the frame's row order.
        frame: The split frame: ``sample_id``, ``target`` (classification) or one column per target
            name (regression), and metadata.
        split: The split name, recorded in a ``split`` column.
        target_names: Regression targets.
        probs: Calibrated probabilities (classification; ``prob`` / ``prob_k`` columns) or None.
        mc: MC-Dropout (mean, std) as ``lightning_modules.mc_dropout.summarize`` gives them, or None.
        labelled: Whether the frame holds the truth; None: it does when it has a truth column. An
            unlabelled table has no ``target`` / ``t`` columns.
    """
    frame = frame.reset_index(drop=True)
    n = len(frame)
    if len(outputs) != n:
        raise ValueError(f"{split}: {len(outputs)} predictions for {n} samples")
    truth = ["target"] if kind in ("binary", "multiclass") else list(target_names)
    if labelled is None:  # decided by the data: a frame without any truth column is unlabelled
        labelled = any(c in frame.columns for c in truth)
    missing = [c for c in ["sample_id", *(truth if labelled else [])] if c not in frame.columns]
    if missing:
        raise ValueError(f"{split}: the split frame lacks {missing} (the datamodule's split_frame must hold them)")
    columns: dict[str, Any] = {"sample_id": frame["sample_id"].astype(str), "split": [split] * n}
    predicted = output_columns(kind, outputs, target_names)
    if kind == "regression":
        for t in target_names:
            if labelled:
                columns[t] = frame[t]
            columns.update({k: v for k, v in predicted.items() if k in (f"{t}_mean", f"{t}_std")})
            if mc is not None:
                j = list(target_names).index(t)
                columns[f"{t}_mc_mean"], columns[f"{t}_mc_std"] = mc[0][:, j], mc[1][:, j]
    else:
        if labelled:
            columns["target"] = frame["target"]
        columns.update(predicted)
        if probs is not None:
            columns.update({k.replace("logit", "prob"): v for k, v in output_columns(kind, _logit_like(kind, probs)).items()})
        if mc is not None:
            columns.update({k.replace("logit", "mc_prob"): v for k, v in output_columns(kind, _logit_like(kind, mc[0])).items()})
            columns["mc_std"] = mc[1]
    meta = frame.drop(columns=[c for c in ["sample_id", "split", *truth] if c in frame.columns])
    clash = [c for c in meta.columns if c in columns]
    if clash:
        raise ValueError(f"{split}: metadata column(s) {clash} collide with prediction columns; rename them in the data")
    return pd.concat([pd.DataFrame(columns), meta], axis=1)


def _logit_like(kind: str, probs: np.ndarray) -> np.ndarray:
    """Binary probabilities may come as (N,) p(class 1) or (N, 2); the file keeps p(class 1)."""
    probs = np.asarray(probs)
    if kind == "binary" and probs.ndim == 2:
        return probs[:, -1]
    return probs


#: Version of the sidecar schema. 1: the keys each writer chose (files before 2027-01); 2: prediction_record.
SCHEMA_VERSION = 2


def prediction_record(
    kind: str,
    split: str,
    target_names: Sequence[str] = (),
    *,
    labelled: bool = True,
    data: Mapping[str, Any] | None = None,
    temperature: float | None = None,
    temperature_fitted_on: str | None = None,
    thresholds: Mapping[str, Any] | None = None,
    label_scaler: Mapping[str, Any] | None = None,
    **extra: Any,
) -> dict[str, Any]:
    """The sidecar of a predictions file: the one schema every writer uses (pure; nothing is written).

    Args:
        kind: ``binary``, ``multiclass`` or ``regression``.
        split: The split the rows come from (recorded in the content, see the module docstring).
        target_names: Regression targets (empty for classification).
        labelled: False for data without truth (no truth columns in the CSV).
        data: The data's identity: ``name`` and ``manifest``/``manifest_sha256`` or ``config_hash``
            (tasks/predict.py data_identity); None: the run's own data.
        temperature: The temperature applied to the ``prob`` columns, or None.
        temperature_fitted_on: The split (and file) the temperature was fitted on.
        thresholds: The family's thresholds in force.
        label_scaler: Regression: per target ``{loc, scale}`` of the standardised labels, where there is one.
        **extra: The writer's own keys (checkpoint, metrics, a family's numbers); they may not replace a
            common key.

    Returns:
        The record, ``schema_version`` first.
    """
    if kind not in KINDS:
        raise ValueError(f"prediction_record: unknown kind {kind!r}; expected one of {KINDS}")
    record: dict[str, Any] = {
        "schema_version": SCHEMA_VERSION, "kind": kind, "split": str(split), "labelled": bool(labelled),
        "target_names": [str(t) for t in target_names], "data": dict(data) if data is not None else None,
        "temperature": None if temperature is None else float(temperature),
        "temperature_fitted_on": temperature_fitted_on,
        "thresholds": dict(thresholds) if thresholds is not None else None,
        "label_scaler": dict(label_scaler) if label_scaler is not None else None,
    }
    clash = sorted(set(extra) & set(record))
    if clash:
        raise ValueError(f"prediction_record: {clash} are common keys; pass them as arguments")
    return {**record, **extra}


def top_candidates(current: pd.DataFrame | None, batch: pd.DataFrame, k: int, score: str) -> pd.DataFrame:
    """The `k` rows with the highest `score` among `current` and `batch` (a running top-k; pure).

    Memory stays O(k) however many batches stream through. Ties keep the earlier row (stable).
    """
    if score not in batch.columns:
        raise ValueError(f"top_candidates: no column {score!r}; found {list(batch.columns)}")
    both = batch if current is None or current.empty else pd.concat([current, batch], ignore_index=True)
    return both.sort_values(score, ascending=False, kind="stable").head(int(k)).reset_index(drop=True)


class PredictionsWriter:
    """The one writer of predictions files: append tables (a batch or a whole split), then close.

    Rows go to ``<name>.csv.partial`` and the finished file is renamed into place by ``close``, so a crash
    never leaves a half-written predictions file for a reader. Usage::

        writer = PredictionsWriter(path)
        for table in batches:
            writer.append(table)
        writer.close(prediction_record(...))
    """

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.partial = self.path.with_name(self.path.name + ".partial")
        self.columns: list[str] | None = None
        self.n = 0

    def append(self, table: pd.DataFrame) -> PredictionsWriter:
        """Append rows; every table must have the first one's columns, in order."""
        if self.columns is None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self.columns = [str(c) for c in table.columns]
            table.to_csv(self.partial, index=False)
        else:
            if [str(c) for c in table.columns] != self.columns:
                raise ValueError(f"{self.path}: rows with columns {list(table.columns)} after {self.columns}")
            table.to_csv(self.partial, index=False, header=False, mode="a")
        self.n += len(table)
        return self

    def close(self, record: Mapping[str, Any]) -> Path:
        """Write the sidecar and move the CSV into place; returns the CSV's path."""
        from rigor.jsonio import write_json

        for key in ("kind", "split"):
            if key not in record:
                raise ValueError(f"write_predictions: the record needs {key!r}")
        if self.columns is None:
            raise ValueError(f"{self.path}: no rows were written")
        full = prediction_record(record["kind"], record["split"], record.get("target_names") or ())
        full.update(record)  # a caller's record fills the schema; the defaults keep every common key present
        full["schema_version"] = SCHEMA_VERSION
        full["n"] = int(record.get("n", self.n))
        os.replace(self.partial, self.path)
        write_json(sidecar_path(self.path), {**full, "csv": self.path.name})
        return self.path


def write_predictions(path: str | Path, table: pd.DataFrame, record: Mapping[str, Any]) -> Path:
    """Write a whole table and its sidecar (PredictionsWriter; `record` best built by prediction_record)."""
    return PredictionsWriter(path).append(table).close(record)


# --------------------------------------------------------------------------------------------------
# reading


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
    n = max(indexed) + 1
    missing = [f"logit_{k}" for k in range(n) if k not in indexed]
    if missing:
        raise ValueError(f"{path}: missing column(s) {missing}; logit columns must run logit_0..logit_{n - 1}")
    if n < 2:
        raise ValueError(f"{path}: a multiclass file needs at least logit_0 and logit_1; a binary file uses 'logit'")
    return [f"logit_{k}" for k in range(n)]


def _regression_names(columns: list[str], sidecar: Mapping[str, Any]) -> list[str]:
    recorded = [str(t) for t in sidecar.get("target_names") or []]
    if recorded:
        return recorded
    return [c[: -len("_mean")] for c in columns if c.endswith("_mean") and not c.endswith("_mc_mean") and c[: -len("_mean")] in columns]


def _detect_kind(columns: list[str], path: Path, sidecar: Mapping[str, Any]) -> str:
    classification = "logit" in columns or any(_LOGIT_K.match(c) for c in columns)
    regression = bool(_regression_names(columns, sidecar)) and not classification
    if classification:
        return "binary" if "logit" in columns else "multiclass"
    if regression:
        return "regression"
    raise ValueError(
        f"{path}: no prediction columns: expected 'logit' (binary), 'logit_0'..'logit_<C-1>' (multiclass) or, per "
        f"target t, 't' and 't_mean' (regression); found {columns}"
    )


def _read_sidecar(path: Path) -> dict[str, Any]:
    side = sidecar_path(path)
    if not side.is_file():
        return {}
    try:
        loaded = json.loads(side.read_text())
    except (OSError, ValueError) as err:
        raise ValueError(f"{side}: unreadable sidecar of {path.name} ({err}); delete it or rewrite the predictions") from err
    if not isinstance(loaded, dict):
        raise ValueError(f"{side}: expected a JSON object")
    return loaded


def read_predictions(path: str | Path, kind: str | Iterable[str] | None = None) -> Predictions:
    """Read a predictions CSV and check it against the contract.

    Args:
        path: A ``predictions_<split>.csv`` file (other names are accepted; the split then comes from the
            ``split`` column or the sidecar).
        kind: The output kind(s) the caller accepts (e.g. ``("binary", "multiclass")`` for calibration);
            None accepts any.

    Returns:
        The validated Predictions.

    Raises:
        FileNotFoundError: The file does not exist.
        ValueError: An empty file, a missing column, non-finite numbers, non-integer or out-of-range
            targets, duplicate sample ids, an incomplete set of MC-Dropout columns, a kind other than
            `kind` or than the sidecar records. The message names the file and the column.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"predictions file not found: {path}")
    try:
        # sample_id as text: ids must match across files exactly, leading zeros included.
        frame = pd.read_csv(path, dtype={"sample_id": str, "split": str})
    except pd.errors.EmptyDataError as err:
        raise ValueError(f"{path}: the file is empty (0 bytes or no header); rewrite it with evaluate.py") from err
    sidecar = _read_sidecar(path)
    columns = [str(c) for c in frame.columns]
    if "sample_id" not in columns:
        raise ValueError(f"{path}: missing column 'sample_id'; found {columns}")
    if len(frame) == 0:
        raise ValueError(f"{path}: has a header but no rows")

    ids = frame["sample_id"]
    if ids.isna().any():
        raise ValueError(f"{path}: column 'sample_id' has {int(ids.isna().sum())} empty value(s)")
    dup = ids[ids.duplicated()].unique()
    if len(dup):
        raise ValueError(f"{path}: column 'sample_id' has {len(dup)} duplicated id(s), e.g. {list(dup[:5])}")

    found = _detect_kind(columns, path, sidecar)
    recorded = sidecar.get("kind")
    if recorded is not None and recorded != found:
        raise ValueError(f"{path}: its sidecar {sidecar_path(path).name} records kind {recorded!r} but the columns are {found!r}")
    wanted = (kind,) if isinstance(kind, str) else (tuple(kind) if kind is not None else KINDS)
    if found not in wanted:
        raise ValueError(f"{path}: holds {found} predictions; this needs {' or '.join(wanted)}")

    result = Predictions(path=path, kind=found, sample_id=ids.to_numpy(dtype=str), targets=np.empty(0),
                         name_split=split_from_name(path), sidecar=sidecar,
                         recorded_split=str(sidecar["split"]) if sidecar.get("split") is not None else None)
    used = {"sample_id", "split"}
    if found == "regression":
        used |= _read_regression(result, frame, columns, path)
    else:
        used |= _read_classification(result, frame, columns, path)
    if "split" in columns:
        result.column_splits = tuple(sorted({str(s).strip() for s in frame["split"].dropna()}))
    result.metadata = frame[[c for c in columns if c not in used]].copy()
    return result


def _unlabelled(sidecar: Mapping[str, Any]) -> bool:
    return sidecar.get("labelled") is False


def _read_classification(result: Predictions, frame: pd.DataFrame, columns: list[str], path: Path) -> set[str]:
    if "target" not in columns and _unlabelled(result.sidecar):
        result.labelled = False
    elif "target" not in columns:
        raise ValueError(f"{path}: missing column 'target' (class labels); found {columns}")
    logit_cols = _logit_columns(columns, path)
    binary = logit_cols == ["logit"]
    n_classes = 2 if binary else len(logit_cols)
    logits = np.column_stack([_numeric_column(frame, c, path) for c in logit_cols])
    result.logits = logits[:, 0] if binary else logits
    result.targets = _targets(frame, path, n_classes) if result.labelled else np.empty(0, dtype=np.int64)
    used = {"target", *logit_cols}
    prob_cols = ["prob"] if binary else [f"prob_{k}" for k in range(n_classes)]
    used |= {c for c in prob_cols if c in columns}
    present = [c for c in columns if c.startswith("mc_prob") or c == "mc_std"]
    if present:
        expected = ["mc_prob"] if binary else [f"mc_prob_{k}" for k in range(n_classes)]
        missing = [c for c in expected + ["mc_std"] if c not in columns]
        if missing:
            kind = "binary" if binary else f"{n_classes}-class"
            raise ValueError(f"{path}: MC-Dropout columns are incomplete for a {kind} file; missing {missing}")
        parsed = {c: _numeric_column(frame, c, path) for c in expected}
        for c, v in parsed.items():
            if ((v < 0) | (v > 1)).any():
                raise ValueError(f"{path}: column '{c}' must hold probabilities in [0, 1]")
        mc_prob = np.column_stack(list(parsed.values()))
        result.mc_prob = mc_prob[:, 0] if binary else mc_prob
        result.mc_std = _numeric_column(frame, "mc_std", path)
        if (result.mc_std < 0).any():
            raise ValueError(f"{path}: column 'mc_std' must be non-negative")
        used |= {*expected, "mc_std"}
    return used


def _read_regression(result: Predictions, frame: pd.DataFrame, columns: list[str], path: Path) -> set[str]:
    names = _regression_names(columns, result.sidecar)
    result.labelled = not (_unlabelled(result.sidecar) and not any(t in columns for t in names))
    missing = [c for t in names for c in ((t, f"{t}_mean") if result.labelled else (f"{t}_mean",)) if c not in columns]
    if missing:
        raise ValueError(f"{path}: regression targets {names} need columns {missing}")
    with_std = [f"{t}_std" in columns for t in names]
    if any(with_std) and not all(with_std):
        raise ValueError(f"{path}: {[f'{t}_std' for t, w in zip(names, with_std) if not w]} missing: either every target "
                         "has a _std column (regression with uncertainty) or none does (point regression)")
    result.target_names = tuple(names)
    result.targets = (np.column_stack([_numeric_column(frame, t, path) for t in names]) if result.labelled
                      else np.empty((0, len(names))))
    result.means = np.column_stack([_numeric_column(frame, f"{t}_mean", path) for t in names])
    used = {*(names if result.labelled else []), *(f"{t}_mean" for t in names)}
    if all(with_std):
        stds = np.column_stack([_numeric_column(frame, f"{t}_std", path) for t in names])
        if (stds <= 0).any():
            bad = [f"{t}_std" for j, t in enumerate(names) if (stds[:, j] <= 0).any()]
            raise ValueError(f"{path}: column(s) {bad} must hold positive standard deviations")
        result.stds = stds
        used |= {f"{t}_std" for t in names}
    mc = [(f"{t}_mc_mean" in columns, f"{t}_mc_std" in columns) for t in names]
    if any(a or b for a, b in mc):
        need = [c for t in names for c in (f"{t}_mc_mean", f"{t}_mc_std") if c not in columns]
        if need:
            raise ValueError(f"{path}: MC-Dropout columns are incomplete; missing {need}")
        result.mc_mean = np.column_stack([_numeric_column(frame, f"{t}_mc_mean", path) for t in names])
        result.mc_std = np.column_stack([_numeric_column(frame, f"{t}_mc_std", path) for t in names])
        used |= {c for t in names for c in (f"{t}_mc_mean", f"{t}_mc_std")}
    return used
