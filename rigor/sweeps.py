"""The sweep reader: what a sweep directory says about its jobs, read in one place.

A job directory is one with ``.hydra/overrides.yaml``; its ``metrics.json`` (written by train.py at the
end of a run), ``failure.json`` (written when it failed or was terminated) and ``.hydra/config.yaml`` say
how it went, and the sweep's ledger (rigor/ledger.py) adds the state of jobs still queued or running.
The launchers (resume plan: ``read_overrides``, ``read_config``, ``completed_metrics``, ``failed_before``), train.py (a
completed run: ``completed_metrics``) and ``evaluate.py task=summarize`` (``read_sweep``) all read jobs
through this module.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml

from rigor.jsonio import read_record
from rigor.ledger import LEDGER_DIR, Ledger
from rigor.overrides import parse_override

#: Where Hydra writes a job's overrides, relative to the job directory.
OVERRIDES_FILE = Path(".hydra") / "overrides.yaml"
CONFIG_FILE = Path(".hydra") / "config.yaml"


def natural_key(path: str | Path) -> list[Any]:
    """Sort key that puts job 2 before job 10."""
    return [int(t) if t.isdigit() else t for t in re.split(r"(\d+)", str(path))]


def read_overrides(job_dir: str | Path) -> tuple[list[str] | None, str | None]:
    """A job's overrides as Hydra saved them.

    Returns:
        (overrides, None); (None, None) when the job has no ``.hydra/overrides.yaml``; ([], reason) when the
        file is unreadable or not a list.
    """
    path = Path(job_dir) / OVERRIDES_FILE
    if not path.is_file():
        return None, None
    try:
        overrides = yaml.safe_load(path.read_text()) or []
    except (OSError, yaml.YAMLError) as err:
        return [], f"unreadable overrides.yaml: {err}"
    if not isinstance(overrides, list):
        return [], f"overrides.yaml is not a list: {overrides!r}"
    return [str(o) for o in overrides], None


def completed_metrics(run_dir: str | Path) -> dict[str, Any] | None:
    """The metrics of a run that completed in `run_dir` (its metrics.json says so), else None."""
    metrics = read_record(Path(run_dir) / "metrics.json")
    return metrics if metrics is not None and metrics.get("status") == "completed" else None


def failed_before(run_dir: str | Path, row: Mapping[str, Any]) -> bool:
    """Whether an unfinished job failed (ledger row or failure.json), rather than was interrupted or never ran."""
    return row.get("state") == "failed" or (read_record(Path(run_dir) / "failure.json") or {}).get("status") == "failed"


def _read_json(path: Path) -> tuple[Any, str | None]:
    try:
        return json.loads(path.read_text()), None
    except (OSError, ValueError) as err:
        return None, f"unreadable {path.name}: {err}"


def read_config(job_dir: str | Path) -> tuple[Any, str | None]:
    """A job's saved config (``.hydra/config.yaml``), unresolved, to compare with another (a resumed sweep).

    Its ``_target_``s are upgraded (moved modules) but not checked against rigor.config's allowed list:
    nothing is instantiated from it. Anything that builds objects reads it with ``load_run_config``.

    Returns:
        (config, None); (None, None) without the file; (None, reason) when it cannot be read.
    """
    from omegaconf import DictConfig, OmegaConf

    from rigor.config import upgrade_targets

    path = Path(job_dir) / CONFIG_FILE
    if not path.is_file():
        return None, None
    try:
        config = OmegaConf.load(path)
    except Exception as err:  # a broken YAML file: name it in the resume check's message
        return None, f"unreadable .hydra/config.yaml: {err}"
    return (upgrade_targets(config), None) if isinstance(config, DictConfig) else (None, ".hydra/config.yaml is not a mapping")


def _read_config(job_dir: Path) -> tuple[Any, str | None]:
    """The job's saved config (``.hydra/config.yaml``), unresolved, or None when there is none."""
    from omegaconf import DictConfig

    from rigor.config import UntrustedTargetError, load_run_config  # imports Lightning: only where a config is read

    path = job_dir / CONFIG_FILE
    if not path.is_file():
        return None, None
    try:
        config = load_run_config(path)
    except UntrustedTargetError:
        raise  # a config that would run code outside the project stops the reader, naming the key
    except Exception as err:  # a broken YAML file: report it with the job, do not stop the summary
        return None, f"unreadable .hydra/config.yaml: {err}"
    return (config, None) if isinstance(config, DictConfig) else (None, ".hydra/config.yaml is not a mapping")


def job_experiment(job_dir: str | Path, overrides: list[str], metrics: Mapping[str, Any] | None) -> str | None:
    """Experiment name: the override, else metrics.json, else .hydra/config.yaml, else the sweep layout."""
    job_dir = Path(job_dir)
    for o in overrides:
        parsed = parse_override(o)
        if parsed.key == "experiment" and parsed.value is not None:
            return str(parsed.value)
    if metrics and isinstance(metrics.get("experiment"), str):
        return metrics["experiment"]
    config = job_dir / CONFIG_FILE
    if config.is_file():
        try:
            loaded = yaml.safe_load(config.read_text()) or {}
            if isinstance(loaded.get("experiment"), str):
                return loaded["experiment"]
        except yaml.YAMLError:
            pass
    # multirun/<experiment>/<timestamp>/<job>/: only trusted when the layout looks like that.
    if job_dir.name.isdigit() and job_dir.parent.name[:1].isdigit() and job_dir.parent.parent.name:
        return job_dir.parent.parent.name
    return None


def read_job(job_dir: str | Path) -> dict[str, Any]:
    """One job directory, as the summary sees it.

    Returns:
        ``job_dir``, ``overrides``, ``metrics`` (the parsed metrics.json or None), ``status`` ("completed"
        when metrics.json exists and its status, if given, is "completed"; "pruned" for a search trial its
        pruner stopped; otherwise its status; with
        failure.json, its status ("terminated" after SIGTERM) or "failed"; else "unfinished"),
        ``experiment``, ``failure`` (failure.json content or None), ``error`` (a problem reading the job)
        and ``config`` (``.hydra/config.yaml`` as an unresolved DictConfig, or None).
    """
    job = Path(job_dir)
    overrides, error = read_overrides(job)
    overrides = overrides or []
    metrics = failure = None
    if (job / "metrics.json").is_file():
        metrics, err = _read_json(job / "metrics.json")
        error = error or err
        if metrics is not None and not isinstance(metrics, dict):
            metrics, error = None, "metrics.json is not a JSON object"
    if (job / "failure.json").is_file():
        failure, err = _read_json(job / "failure.json")
        failure = failure if failure is not None else {"error": err}
    if metrics is not None:
        # A metrics.json is written at the end of a run; an explicit status overrides that.
        status = str(metrics.get("status", "completed"))
        if status == "completed" and metrics.get("pruned"):
            status = "pruned"  # a search trial its pruner stopped (rigor/search.py): finished, but not a full run
    else:
        # train.py's failure.json says "terminated" for a SIGTERM (requeue it), "failed" otherwise
        recorded = failure.get("status") if isinstance(failure, Mapping) else None
        status = (recorded if recorded in ("failed", "terminated") else "failed") if failure is not None or error else "unfinished"
    config, err = _read_config(job)
    error = error or err
    return {"job_dir": str(job), "overrides": overrides, "metrics": metrics, "status": status,
            "experiment": job_experiment(job, overrides, metrics), "failure": failure, "error": error, "config": config}


def read_sweep(sweep_dir: str | Path) -> list[dict[str, Any]]:
    """Every job below `sweep_dir` (itself included): each job directory (``read_job``), with the ledger's state.

    The ledger is newer than a failure.json left by an earlier attempt (a rerun in progress reads as
    running), knows jobs that never started (queued) and jobs whose process vanished (stale, or failed
    with the reason the Ray launcher recorded). A completed metrics.json always wins. Jobs the ledger
    lists without a job directory are added, with ``ledger`` (the row) set on every record it knows.

    Raises:
        FileNotFoundError: `sweep_dir` is not a directory.
    """
    sweep_dir = Path(sweep_dir)
    if not sweep_dir.is_dir():
        raise FileNotFoundError(f"sweep_dir is not a directory: {sweep_dir}")
    job_dirs = sorted({p.parent.parent for p in sweep_dir.rglob(OVERRIDES_FILE.name) if p.parent.name == OVERRIDES_FILE.parent.name},
                      key=natural_key)
    records = [read_job(job) for job in job_dirs]

    by_dir = {r["job_dir"]: r for r in records}
    ledger_dirs = [sweep_dir] if (sweep_dir / LEDGER_DIR).is_dir() else []
    ledger_dirs += sorted({p.parent for p in sweep_dir.rglob(LEDGER_DIR) if p.is_dir()} - {sweep_dir}, key=natural_key)
    added = []
    for directory in ledger_dirs:
        for row in Ledger(directory).rows():
            # <sweep>/<job number> (Hydra's subdir) first: a moved sweep's rows still name the old paths
            recorded = str(Path(str(row["metrics"])).parent) if row.get("metrics") else None
            job_dir = next((d for d in (str(directory / str(row["job"])), recorded) if d in by_dir),
                           str(directory / str(row["job"])))
            rec = by_dir.get(job_dir)
            if rec is None:
                overrides = [str(o) for o in row.get("override_list") or str(row.get("overrides") or "").split()]
                rec = {"job_dir": job_dir, "overrides": overrides, "metrics": None, "status": row.get("state") or "unfinished",
                       "experiment": job_experiment(job_dir, overrides, None), "failure": None, "error": None,
                       "config": None}
                added.append(rec)
            rec["ledger"] = row
            if rec["status"] != "completed" and row.get("state") and row["state"] != "completed":
                rec["status"] = row["state"]
    return sorted(records + added, key=lambda r: natural_key(r["job_dir"]))
