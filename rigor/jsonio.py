"""Strict JSON for every file Rigor writes (metrics.json, summaries, reports).

NaN and infinities become null (strict JSON readers reject NaN; null reads as "undefined"), numpy and
torch scalars become Python numbers, and files are written atomically, so a crash never leaves a
half-written metrics file behind.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np


def to_jsonable(obj: Any) -> Any:
    """Plain JSON values: numpy/torch scalars and arrays to Python, NaN/inf to None, Paths to str."""
    if hasattr(obj, "detach") and hasattr(obj, "tolist"):  # a torch tensor, without importing torch
        obj = obj.detach().cpu().tolist()
    if isinstance(obj, Mapping):
        return {str(k): to_jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple, set)):
        return [to_jsonable(v) for v in obj]
    if isinstance(obj, np.ndarray):
        return [to_jsonable(v) for v in obj.tolist()]
    if isinstance(obj, Path):
        return str(obj)
    if isinstance(obj, (np.bool_, bool)):
        return bool(obj)
    if isinstance(obj, np.integer):
        return int(obj)
    if isinstance(obj, (float, np.floating)):
        return float(obj) if math.isfinite(float(obj)) else None
    return obj


def write_json(path: str | Path, obj: Any) -> Path:
    """Write `obj` as indented strict JSON, atomically (temp file + rename)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(to_jsonable(obj), indent=2, allow_nan=False) + "\n")
    tmp.replace(path)
    return path


def read_record(path: str | Path) -> dict[str, Any] | None:
    """A JSON object written by Rigor (metrics.json, failure.json), or None when missing, unreadable or not
    an object: a half-finished or foreign file reads as "no record", never as an error."""
    try:
        data = json.loads(Path(path).read_text())
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None
