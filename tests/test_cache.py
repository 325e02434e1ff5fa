"""rigor.cache.build_once: parallel jobs build a shared artefact once, and a failed build leaves nothing finished.

The family sites that use it (simulators, tiny pretrained models, the embedding cache) are checked in their
own family's tests (e.g. tests/audio/test_audio_simulate.py).
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import pytest

from rigor.cache import COMPLETE_NAME, build_once, content_hash
from tests.conftest import ROOT

# A job that waits for the "go" file, then asks for the artefact; its build appends one line per build
# to builds.log and writes the artefact in two parts with a pause between them (a reader that did not wait
# would see part1 without part2).
_JOB = r"""
import json, os, sys, time
from pathlib import Path
from rigor.cache import build_once, content_hash

root = Path(sys.argv[1])
(root / f"ready-{os.getpid()}").touch()
while not (root / "go").exists():
    time.sleep(0.005)

def build(tmp):
    with open(root / "builds.log", "a") as log:
        log.write(f"{os.getpid()}\n")
    tmp.mkdir()
    (tmp / "part1").write_text("a")
    time.sleep(1.0)
    (tmp / "part2").write_text("b")

path = build_once(root / f"artefact_{content_hash({'n': 1})}", build)
print(json.dumps({"path": str(path), "files": sorted(p.name for p in path.iterdir())}))
"""


def test_two_processes_started_together_build_once_and_both_get_the_whole_artefact(tmp_path: Path) -> None:
    jobs = [subprocess.Popen([sys.executable, "-c", _JOB, str(tmp_path)], cwd=ROOT, stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE, text=True) for _ in range(2)]
    deadline = time.time() + 60
    while len(list(tmp_path.glob("ready-*"))) < 2 and time.time() < deadline:
        time.sleep(0.01)
    assert len(list(tmp_path.glob("ready-*"))) == 2, "the two jobs did not start"
    (tmp_path / "go").touch()  # both ask at the same moment
    results = []
    for job in jobs:
        out, err = job.communicate(timeout=120)
        assert job.returncode == 0, err
        results.append(json.loads(out.strip().splitlines()[-1]))

    assert len((tmp_path / "builds.log").read_text().splitlines()) == 1  # built exactly once
    assert results[0]["path"] == results[1]["path"]
    for result in results:
        assert result["files"] == [COMPLETE_NAME, "part1", "part2"]
    assert not [p.name for p in tmp_path.iterdir() if ".tmp-" in p.name]


def test_a_failed_build_leaves_no_marker_and_the_next_call_rebuilds(tmp_path: Path) -> None:
    path = tmp_path / f"thing_{content_hash({'a': 1})}"
    builds = []

    def crash(tmp: Path) -> None:
        builds.append("crash")
        tmp.mkdir()
        (tmp / "half").write_text("written")
        raise RuntimeError("killed mid-build")

    with pytest.raises(RuntimeError, match="killed mid-build"):
        build_once(path, crash)
    assert not path.exists()
    assert not [p.name for p in tmp_path.iterdir() if ".tmp-" in p.name]  # the temporary build is gone

    def good(tmp: Path) -> None:
        builds.append("good")
        tmp.mkdir()
        (tmp / "data").write_text("whole")

    assert build_once(path, good) == path
    assert (path / COMPLETE_NAME).is_file() and (path / "data").read_text() == "whole"
    assert build_once(path, crash) == path  # finished: never built again
    assert builds == ["crash", "good"]


def test_an_unfinished_directory_is_never_trusted(tmp_path: Path) -> None:
    path = tmp_path / "thing"
    path.mkdir()
    (path / "data").write_text("half")  # no marker: a crashed build from before the protocol, say

    def build(tmp: Path) -> None:
        tmp.mkdir()
        (tmp / "data").write_text("whole")

    build_once(path, build, marker_text="made by the test\n")
    assert (path / "data").read_text() == "whole"
    assert (path / COMPLETE_NAME).read_text() == "made by the test\n"
    assert not [p.name for p in tmp_path.iterdir() if "trash" in p.name or ".tmp-" in p.name]


def test_a_single_file_artefact_and_a_custom_completion_check(tmp_path: Path) -> None:
    path = tmp_path / "rows.txt"
    path.write_text("1\n")  # too short for the check below: rebuilt
    builds = []

    def build(tmp: Path) -> None:
        builds.append(tmp)
        assert tmp.name.endswith(".txt") and not tmp.exists()  # the suffix is kept for writers that need it
        tmp.write_text("1\n2\n3\n")

    def three_rows(p: Path) -> bool:
        return p.is_file() and len(p.read_text().splitlines()) == 3

    assert build_once(path, build, is_complete=three_rows, marker=None) == path
    assert path.read_text() == "1\n2\n3\n" and len(builds) == 1
    build_once(path, build, is_complete=three_rows, marker=None)
    assert len(builds) == 1


def test_a_build_that_writes_nothing_fails_naming_the_path(tmp_path: Path) -> None:
    with pytest.raises(RuntimeError, match="thing"):
        build_once(tmp_path / "thing", lambda tmp: None)
    assert not (tmp_path / "thing").exists()


def test_content_hash_is_stable_and_order_free() -> None:
    assert content_hash({"a": 1, "b": [1.0, "x"]}) == content_hash({"b": [1.0, "x"], "a": 1})
    assert content_hash({"a": 1}) != content_hash({"a": 2})
    assert len(content_hash({"a": 1}, length=24)) == 24
    # the exact value is what names existing cache directories: it must not drift
    assert content_hash({"a": [1, 2.0], "b": "x"}, length=16) == "bb8c1e790542ad47"
