"""Build-once cache for artefacts shared by parallel jobs: simulations, tiny pretrained models, embeddings.

Every such artefact lives at a path named by a hash of what determines it (``content_hash``) and is made
by ``build_once``, one protocol for all of them:

1. a finished artefact is returned at once (a completion check, by default a ``COMPLETE`` marker file);
2. otherwise an exclusive ``fcntl`` lock on ``.<name>.lock`` beside it is taken, and the check is repeated
   (another job may have finished while this one waited);
3. a stray, unfinished artefact at the path is moved aside and deleted (never trusted);
4. the artefact is built into a private temporary sibling ``.<name>.tmp-<pid>-<random>``, the marker is
   written last, and the temporary is renamed into place in one atomic step;
5. a build that raises leaves nothing behind: the temporary is deleted, no marker exists.

So N jobs asking at once build one copy, and no reader ever sees a half-written one. Where ``fcntl`` is
missing (Windows) or the file system refuses locks, the temporary build + rename alone still keeps the
cache safe: both jobs build, and the loser discards its copy.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

COMPLETE_NAME = "COMPLETE"


def content_hash(obj: Any, length: int = 12) -> str:
    """Short, stable hex sha256 of a JSON-able object (keys sorted; other values through ``str``).

    Args:
        obj: What determines the artefact (a config dict, with a version number in it).
        length: Hex digits kept.
    """
    blob = json.dumps(obj, sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:length]


@contextlib.contextmanager
def file_lock(lock_path: str | Path) -> Iterator[None]:
    """Exclusive advisory lock on a file (created if missing); a no-op where flock is unavailable."""
    try:
        import fcntl
    except ImportError:  # Windows: the temporary build + rename protocol alone still keeps the cache safe
        yield
        return
    with open(lock_path, "a") as handle:
        with contextlib.suppress(OSError):  # file systems without flock support: same fallback
            fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            with contextlib.suppress(OSError):
                fcntl.flock(handle, fcntl.LOCK_UN)


def _discard(path: Path) -> None:
    """Delete a file or directory; a directory is first renamed aside (atomic), so nobody reads it half-deleted."""
    if path.is_dir() and not path.is_symlink():
        trash = path.with_name(f".{path.name}.trash-{uuid.uuid4().hex[:8]}")
        os.rename(path, trash)
        shutil.rmtree(trash, ignore_errors=True)
    else:
        with contextlib.suppress(FileNotFoundError):
            path.unlink()


def build_once(
    path: str | Path,
    build: Callable[[Path], Any],
    *,
    is_complete: Callable[[Path], bool] | None = None,
    marker: str | None = COMPLETE_NAME,
    marker_text: str | None = None,
) -> Path:
    """Return `path`, building it first with `build` unless a finished copy is there (see the module docstring).

    Args:
        path: Final location of the artefact, a directory (with a marker) or a single file (``marker=None``);
            its name should carry a hash of what determines it (``content_hash``).
        build: Called as ``build(tmp)`` with a fresh temporary sibling path that does not exist yet; it
            must create it: a directory when `marker` is set, otherwise the file itself.
        is_complete: Whether an existing path is a finished artefact. Default: the marker file exists in it
            (with ``marker=None``: the path exists, which only a finished rename can make true).
        marker: Name of the completion file written into the directory after `build` returns; None for a
            single-file artefact.
        marker_text: Contents of the marker (default: the artefact's name).

    Returns:
        `path`, complete.
    """
    path = Path(path)
    if is_complete is None:
        is_complete = (lambda p: (p / marker).is_file()) if marker else (lambda p: p.exists())
    if is_complete(path):
        return path
    path.parent.mkdir(parents=True, exist_ok=True)
    with file_lock(path.parent / f".{path.name}.lock"):
        if is_complete(path):  # another job finished while we waited for the lock
            return path
        if path.exists() or path.is_symlink():  # a stray, unfinished artefact: never trust it
            _discard(path)
        # a file keeps its suffixes, so that writers which insist on one (np.save) write where we expect
        suffix = "".join(path.suffixes) if marker is None else ""
        tmp = path.parent / f".{path.name}.tmp-{os.getpid()}-{uuid.uuid4().hex[:8]}{suffix}"
        try:
            build(tmp)
            if marker:
                if not tmp.is_dir():
                    raise RuntimeError(f"{path}: the build did not create its directory {tmp}")
                (tmp / marker).write_text(marker_text if marker_text is not None else f"{path.name}\n")
            elif not tmp.exists():
                raise RuntimeError(f"{path}: the build did not create its file {tmp}")
            try:
                os.rename(tmp, path)  # atomic; replaces a file, fails on a non-empty directory
            except OSError:
                if not is_complete(path):  # only a finished winner (no lock available) may take our place
                    raise
                _discard(tmp)
        except BaseException:
            if tmp.exists() or tmp.is_symlink():
                _discard(tmp)
            raise
    return path
