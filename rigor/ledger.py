"""The sweep ledger: one row per job of a sweep, kept up to date while the sweep runs.

Each job's state lives in ``<sweep dir>/.ledger/<job>.json``, replaced atomically (temp file + os.replace)
on every change, so jobs running in parallel processes never write the same file. After every change the
human-readable table ``<sweep dir>/ledger.csv`` is rebuilt from those files under an fcntl lock.

States: ``queued`` (the launcher has it), ``running`` (train.py started it), ``completed``, ``failed``,
``terminated`` (SIGTERM; resumable from last.ckpt), ``pruned`` (a search trial its pruner stopped early: finished,
not failed; rigor/search.py). A ``running`` row whose process is gone (same host,
pid no longer alive: killed by the OS, or the whole sweep process died) reads as ``stale``. Launchers write
the queued rows and the failures a job cannot write itself (a Ray worker killed by the OS); train.py
writes the rest.
"""

from __future__ import annotations

import csv
import fcntl
import io
import json
import os
import socket
import tempfile
from contextlib import contextmanager
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Iterator

from rigor.overrides import override_key

STATES = ("queued", "running", "completed", "failed", "terminated", "stale", "pruned")
COLUMNS = ("job", "state", "overrides", "start", "end", "exit_reason", "metrics", "attempts", "host", "pid", "updated")
LEDGER_DIR = ".ledger"
TABLE = "ledger.csv"


def now() -> str:
    """The current UTC time as an ISO string (what every time column holds)."""
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def _atomic_write(path: Path, text: str) -> None:
    """Write `text` to `path` so a reader sees the old or the new content, never half of one."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w") as file:
            file.write(text)
            file.flush()
            os.fsync(file.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # someone else's process: it exists
    return True


class Ledger:
    """The ledger of one sweep directory.

    Args:
        sweep_dir: The sweep's directory (Hydra's ``hydra.sweep.dir``).
    """

    def __init__(self, sweep_dir: str | Path) -> None:
        self.sweep_dir = Path(sweep_dir)
        self.dir = self.sweep_dir / LEDGER_DIR

    @property
    def table_path(self) -> Path:
        return self.sweep_dir / TABLE

    @contextmanager
    def _lock(self) -> Iterator[None]:
        self.dir.mkdir(parents=True, exist_ok=True)
        with open(self.dir / ".lock", "a") as handle:
            fcntl.flock(handle, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(handle, fcntl.LOCK_UN)

    def _job_path(self, job: int | str) -> Path:
        return self.dir / f"{job}.json"

    def read(self, job: int | str) -> dict[str, Any] | None:
        """The stored row of `job` (as written, no stale check), or None."""
        try:
            return json.loads(self._job_path(job).read_text())
        except (FileNotFoundError, ValueError):
            return None

    def update(self, job: int | str, **fields: Any) -> dict[str, Any]:
        """Merge `fields` into the row of `job`, write it atomically and rebuild the table.

        A new ``running`` state counts one more attempt. Returns the row as stored.
        """
        if "state" in fields and fields["state"] not in STATES:
            raise ValueError(f"ledger state {fields['state']!r} is not one of {STATES}")
        with self._lock():
            row = self.read(job) or {"job": job, "attempts": 0}
            if fields.get("state") == "running":
                row["attempts"] = int(row.get("attempts") or 0) + 1
                row["end"] = row["exit_reason"] = None  # a restart clears the previous attempt's end
            row.update(fields)
            row["updated"] = now()
            _atomic_write(self._job_path(job), json.dumps(row, indent=1, default=str))
            self._write_table()
        return row

    def rows(self) -> list[dict[str, Any]]:
        """Every job's row, by job number; a ``running`` row whose process is gone reads as ``stale``."""
        rows = []
        for path in self.dir.glob("*.json") if self.dir.is_dir() else []:
            try:
                row = json.loads(path.read_text())
            except ValueError:
                continue
            if row.get("state") == "running" and row.get("pid") and row.get("host") == socket.gethostname() \
                    and not _pid_alive(int(row["pid"])):
                row = {**row, "state": "stale", "exit_reason": f"process {row['pid']} is gone (killed?); resume the sweep"}
            rows.append(row)
        return sorted(rows, key=lambda r: (int(r["job"]) if str(r["job"]).isdigit() else 1 << 30, str(r["job"])))

    def _write_table(self) -> None:
        out = io.StringIO()
        writer = csv.DictWriter(out, fieldnames=COLUMNS, extrasaction="ignore")
        writer.writeheader()
        for row in self.rows():
            writer.writerow({k: ("" if row.get(k) is None else row.get(k)) for k in COLUMNS})
        _atomic_write(self.table_path, out.getvalue())


#: overrides that say how the sweep was started, not what a job is (left out of the rows)
RESUME_KEYS = ("resume_sweep", "rerun_failed")


def job_fields(overrides: list[str] | tuple[str, ...], run_dir: str | Path) -> dict[str, Any]:
    """The columns a job's row always carries: its overrides and where its metrics.json goes (an absolute
    path, as Hydra gives the job its output dir, so the launcher's row and the job's agree)."""
    kept = [str(o) for o in overrides if override_key(str(o)) not in RESUME_KEYS]
    return {"overrides": " ".join(kept), "override_list": kept, "metrics": os.path.abspath(Path(run_dir) / "metrics.json")}


def this_process() -> dict[str, Any]:
    """Host and pid of the current process (so a dead one can be told from a running one)."""
    return {"host": socket.gethostname(), "pid": os.getpid()}
