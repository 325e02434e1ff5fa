"""Sweeps that survive: the ledger, resuming a whole sweep, one W&B run per job (docs/sweeps.md).

The end-to-end case runs train.py -m as a user does: a 3-job sweep where one job fails and one is killed
mid-training (SIGKILL, like the OS killing the sweep overnight), then the same command again in the same
sweep directory.
"""

from __future__ import annotations

import json
import multiprocessing
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import lightning as L
import pytest
from lightning.pytorch.callbacks import Callback

from rigor.launchers import Job, SweepLockError, comparable_overrides, completed_return, lock_sweep_dir
from rigor.ledger import Ledger, job_fields
from tests.conftest import ROOT, TOY_SEARCH, train_in_process
from tests.helpers import run_script

ENV = {**os.environ, "WANDB_MODE": "offline", "WANDB_SILENT": "true", "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
#: metrics.json entries that differ between two runs of one config (where and how long it ran)
RUN_SPECIFIC = {"wall_time_s", "run_dir", "device"}


class Chaos(Callback):
    """Test-only trouble for single jobs of a sweep, each once (a marker file remembers it happened).

    Args:
        marker_dir: Where the markers go.
        fail_job: The job number that raises when fitting starts.
        kill_job: The job number whose process is SIGKILLed in the middle of epoch `kill_epoch`.
        kill_epoch: See kill_job.
    """

    def __init__(self, marker_dir: str, fail_job: int = -1, kill_job: int = -1, kill_epoch: int = 1) -> None:
        self.marker_dir = Path(marker_dir)
        self.fail_job, self.kill_job, self.kill_epoch = fail_job, kill_job, kill_epoch

    @staticmethod
    def _job() -> int | None:
        from hydra.core.hydra_config import HydraConfig
        from hydra.types import RunMode

        if not HydraConfig.initialized() or HydraConfig.get().mode != RunMode.MULTIRUN:
            return None
        return int(HydraConfig.get().job.num)

    def _once(self, what: str, job: int) -> bool:
        marker = self.marker_dir / f"{what}_{job}"
        if marker.exists():
            return False
        self.marker_dir.mkdir(parents=True, exist_ok=True)
        marker.touch()
        return True

    def on_fit_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        job = self._job()
        if job == self.fail_job and self._once("failed", job):
            raise RuntimeError(f"chaos: job {job} fails once")

    def on_train_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, outputs, batch, batch_idx: int) -> None:
        job = self._job()
        if job == self.kill_job and trainer.current_epoch == self.kill_epoch and batch_idx == 1 and self._once("killed", job):
            os.kill(os.getpid(), signal.SIGKILL)


class Pause(Callback):
    """Test-only: sleep when fitting starts, so that a sweep is still running when a second one starts."""

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds

    def on_fit_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        import time

        time.sleep(self.seconds)


def tiny(*extra: str) -> list[str]:
    """A job of the toy family (tests/toy_family): a few seconds, the core's code paths, no family's weight."""
    return [TOY_SEARCH, "experiment=toy_binary", "trainer.max_epochs=3", "callbacks.early_stopping=null", "cpu_threads=1",
            *extra]


def chaos(marker_dir: Path, **kwargs: int) -> list[str]:
    return ["+callbacks.chaos._target_=tests.test_sweeps.Chaos", f"+callbacks.chaos.marker_dir={marker_dir}",
            *[f"+callbacks.chaos.{k}={v}" for k, v in kwargs.items()]]


def run_train(args: list[str], timeout: int = 600) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "train.py", *args], cwd=ROOT, env=ENV, capture_output=True, text=True, timeout=timeout)


def states(sweep: Path) -> dict[int, str]:
    return {int(r["job"]): r["state"] for r in Ledger(sweep).rows()}


def same_metrics(a: dict, b: dict) -> list[str]:
    """The metrics.json keys whose values differ (floats to 1e-9 relative), run-specific ones left out."""
    differ = []
    for key in sorted((set(a) | set(b)) - RUN_SPECIFIC):
        x, y = a.get(key, "<absent>"), b.get(key, "<absent>")
        if isinstance(x, float) and isinstance(y, float):
            if x != pytest.approx(y, rel=1e-9, abs=1e-12):
                differ.append(key)
        elif x != y:
            differ.append(key)
    return differ


# --- the ledger on its own ------------------------------------------------------------------------


def test_ledger_rows_attempts_and_table(tmp_path):
    ledger = Ledger(tmp_path)
    ledger.update(0, state="queued", **job_fields(["seed=1", "resume_sweep=/x"], tmp_path / "0"))
    ledger.update(0, state="running", start="t0", pid=os.getpid(), host=os.uname().nodename)
    ledger.update(0, state="failed", end="t1", exit_reason="boom")
    ledger.update(0, state="running", start="t2", pid=os.getpid(), host=os.uname().nodename)
    row = ledger.read(0)
    assert row["attempts"] == 2 and row["state"] == "running" and row["end"] is None and row["exit_reason"] is None
    assert row["overrides"] == "seed=1" and row["metrics"] == str(tmp_path / "0" / "metrics.json")  # resume keys left out
    # a relative run dir (the launcher's view) is written as the absolute path the job itself writes
    assert job_fields([], Path("multirun") / "0")["metrics"] == str(Path.cwd() / "multirun" / "0" / "metrics.json")
    table = (tmp_path / "ledger.csv").read_text().splitlines()
    assert table[0].startswith("job,state,overrides") and table[1].startswith("0,running,seed=1")
    with pytest.raises(ValueError, match="not one of"):
        ledger.update(0, state="done")


def test_a_running_row_whose_process_is_gone_reads_as_stale(tmp_path):
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()  # a pid that no longer exists
    ledger = Ledger(tmp_path)
    ledger.update(3, state="running", pid=proc.pid, host=os.uname().nodename)
    ledger.update(4, state="running", pid=os.getpid(), host=os.uname().nodename)
    rows = {r["job"]: r for r in ledger.rows()}
    assert rows[3]["state"] == "stale" and str(proc.pid) in rows[3]["exit_reason"]
    assert rows[4]["state"] == "running"
    assert ledger.read(3)["state"] == "running"  # the stored row is not rewritten by a reader


def _hammer(sweep: str, job: int) -> None:
    ledger = Ledger(sweep)
    for i in range(25):
        ledger.update(job, state="running" if i % 2 == 0 else "queued", step=i)


def test_parallel_writers_leave_every_row_whole(tmp_path):
    procs = [multiprocessing.get_context("fork").Process(target=_hammer, args=(str(tmp_path), job)) for job in range(4)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(60)
    assert all(p.exitcode == 0 for p in procs)
    rows = Ledger(tmp_path).rows()
    assert [r["job"] for r in rows] == [0, 1, 2, 3] and all(r["step"] == 24 and r["attempts"] == 13 for r in rows)
    lines = (tmp_path / "ledger.csv").read_text().splitlines()
    assert len(lines) == 5 and [line.split(",")[0] for line in lines[1:]] == ["0", "1", "2", "3"]
    assert not list((tmp_path / ".ledger").glob("*.tmp"))


def test_summaries_take_unfinished_states_from_the_ledger(tmp_path):
    from tasks.evaluation import _failure_text, collect_jobs

    def job_dir(num: int, seed: int) -> Path:
        (tmp_path / str(num) / ".hydra").mkdir(parents=True)
        (tmp_path / str(num) / ".hydra" / "overrides.yaml").write_text(f"- seed={seed}\n")
        return tmp_path / str(num)

    (job_dir(0, 1) / "metrics.json").write_text(json.dumps({"status": "completed", "seed": 1, "test_auroc": 0.9}))
    # an earlier attempt failed; the rerun now in progress is what the ledger says
    (job_dir(1, 2) / "failure.json").write_text(json.dumps({"status": "failed", "error": "RuntimeError: old"}))
    job_dir(2, 3)  # its Ray worker was killed: no failure.json, only the launcher's ledger row
    ledger = Ledger(tmp_path)
    for num, seed, state, extra in [(0, 1, "completed", {}), (1, 2, "running", {"pid": os.getpid(), "host": os.uname().nodename}),
                                    (2, 3, "failed", {"exit_reason": "WorkerCrashedError: the worker died"}), (3, 4, "queued", {})]:
        ledger.update(num, state=state, **job_fields([f"seed={seed}"], tmp_path / str(num)), **extra)
    records = {Path(r["job_dir"]).name: r for r in collect_jobs(tmp_path)}
    assert {k: r["status"] for k, r in records.items()} == {"0": "completed", "1": "running", "2": "failed", "3": "queued"}
    assert records["3"]["overrides"] == ["seed=4"]  # never started: known from the ledger alone
    assert "WorkerCrashedError" in _failure_text(records["2"])
    # the sweep moved: its rows name the old paths, the jobs are still matched by number
    moved = tmp_path.parent / "moved_sweep"
    tmp_path.rename(moved)
    records = collect_jobs(moved)
    assert [(r["job_dir"], r["status"]) for r in records] == \
        [(str(moved / "0"), "completed"), (str(moved / "1"), "running"), (str(moved / "2"), "failed"), (str(moved / "3"), "queued")]


def test_plumbing_overrides_do_not_define_a_job():
    assert comparable_overrides(["seed=1", "cpu_threads=2", "+resume_sweep=/a", "paths.sweep_dir=/b", "model.lr=1"]) == \
        ["seed=1", "model.lr=1"]


def test_spellings_of_one_value_define_the_same_job():
    # a user types `true`; Hydra's sweeper writes the job's override back as `True`
    assert comparable_overrides(["model.channels_last=true", "x=[1, 2]", "name=a"]) == \
        comparable_overrides(["model.channels_last=True", "x=[1,2]", "name=a"])
    assert comparable_overrides(["seed=1"]) != comparable_overrides(["seed=2"])
    assert comparable_overrides(["tag='1'"]) != comparable_overrides(["tag=1"])  # a string is not a number


def test_a_completed_job_returns_what_train_returned_without_running(tmp_path):
    # what an optimising sweeper reads from a job a resumed sweep does not launch
    from omegaconf import OmegaConf

    metrics = {"status": "completed", "best_epoch": 4, "best_val_auroc": 0.91, "test_auroc": 0.88}
    job = Job(0, ["seed=1"], OmegaConf.create({"optimized_metric": None}), tmp_path)
    assert completed_return(job, metrics).return_value == 0.91  # the monitor's best, not best_epoch
    job = Job(0, ["seed=1"], OmegaConf.create({"optimized_metric": "test_auroc"}), tmp_path)
    ret = completed_return(job, metrics)
    assert ret.return_value == 0.88 and ret.working_dir == str(tmp_path) and ret.overrides == ["seed=1"]
    assert completed_return(job, {"status": "completed"}).return_value is None


# --- resume a whole sweep -------------------------------------------------------------------------


@pytest.fixture(scope="module")
def reference(tmp_path_factory) -> dict:
    """metrics.json of an uninterrupted run of seed 3 (the job the sweeps below kill).

    Run once per session: test_ray_launcher.py uses it too, and finds it in the session's base directory.
    """
    run = tmp_path_factory.getbasetemp() / "sweeps_reference" / "run"
    if not (run / "metrics.json").is_file():
        train_in_process(tiny("seed=3", "logger=csv"), run)  # in this process: the sweeps' jobs are the processes
    return json.loads((run / "metrics.json").read_text())


@pytest.mark.slow
def test_a_sweep_that_died_resumes_skips_and_reruns(tmp_path, reference):
    sweep, markers = tmp_path / "sweep", tmp_path / "markers"
    # job 0 completes, job 1 fails once, job 2 (seed 3) is killed in epoch 1 with the whole sweep process
    args = [*tiny("logger=wandb"), *chaos(markers, fail_job=1, kill_job=2), "seed=1,2,3"]
    first = run_train(["-m", *args, f"hydra.sweep.dir={sweep}"])
    assert first.returncode == -signal.SIGKILL, first.stderr[-3000:]
    rows = {int(r["job"]): r for r in Ledger(sweep).rows()}
    assert {j: r["state"] for j, r in rows.items()} == {0: "completed", 1: "failed", 2: "stale"}
    assert "chaos: job 1 fails once" in rows[1]["exit_reason"]
    assert (sweep / "2" / "checkpoints" / "last.ckpt").exists() and not (sweep / "2" / "metrics.json").exists()
    run_id = (sweep / "2" / "wandb_run_id.txt").read_text().strip()
    done = (sweep / "0" / "metrics.json").stat()

    # mid-sweep, the summary lists what is unfinished, with the ledger's states
    run_script("evaluate.py", "task=summarize", f"sweep_dir={sweep}")
    result = json.loads((sweep / "summary.json").read_text())
    assert result["states"] == {"completed": 1, "failed": 1, "stale": 1}
    assert {Path(r["job_dir"]).name: r["status"] for r in result["failed"]} == {"1": "failed", "2": "stale"}

    # the same command, with the short alias for the sweep directory
    second = run_train(["-m", *args, f"resume_sweep={sweep}"])
    assert second.returncode == 0, second.stderr[-3000:]
    rows = {int(r["job"]): r for r in Ledger(sweep).rows()}
    assert {j: r["state"] for j, r in rows.items()} == {0: "completed", 1: "completed", 2: "completed"}
    assert [rows[j]["attempts"] for j in (0, 1, 2)] == [1, 2, 2]
    after = (sweep / "0" / "metrics.json").stat()
    assert (after.st_mtime_ns, after.st_size) == (done.st_mtime_ns, done.st_size)  # skipped, untouched
    # not even started: a start would have saved its config under .hydra/restarts/ and logged to train.log
    assert not (sweep / "0" / ".hydra" / "restarts").exists() and (sweep / "1" / ".hydra" / "restarts").is_dir()
    assert "job 0 completed earlier: not launched" in second.stderr + second.stdout
    assert "resuming" in (sweep / "2" / "train.log").read_text()
    resumed = json.loads((sweep / "2" / "metrics.json").read_text())
    assert resumed["epochs_trained"] == 3 and same_metrics(resumed, reference) == []
    # one W&B run for the resumed job: the id it started with, in both offline run directories
    assert (sweep / "2" / "wandb_run_id.txt").read_text().strip() == run_id
    offline = sorted((sweep / "2" / "wandb").glob("offline-run-*"))
    assert len(offline) == 2 and {p.name.rsplit("-", 1)[1] for p in offline} == {run_id}


@pytest.mark.slow
def test_failed_jobs_left_by_flag_and_a_changed_sweep_refused(tmp_path):
    sweep = tmp_path / "sweep"
    bad = ["experiment=lens_smoke", "logger=none", "seed=x,y"]  # both fail at once: not integers
    first = run_train(["-m", *bad, f"hydra.sweep.dir={sweep}"])
    assert first.returncode != 0 and states(sweep) == {0: "failed", 1: "failed"}
    left = run_train(["-m", *bad, f"resume_sweep={sweep}", "rerun_failed=false"])
    assert left.returncode != 0 and "left by rerun_failed=false" in left.stderr
    assert [r["attempts"] for r in Ledger(sweep).rows()] == [1, 1]
    rerun = run_train(["-m", *bad, f"resume_sweep={sweep}"])
    assert rerun.returncode != 0 and [r["attempts"] for r in Ledger(sweep).rows()] == [2, 2]
    changed = run_train(["-m", "experiment=lens_smoke", "logger=none", "seed=y,x", f"resume_sweep={sweep}"])
    assert changed.returncode != 0
    assert "job 0" in changed.stderr and "job 1" in changed.stderr and "started with ['experiment=lens_smoke', 'seed=x']" in changed.stderr
    assert [r["attempts"] for r in Ledger(sweep).rows()] == [2, 2]  # nothing ran


@pytest.mark.slow
def test_submitit_sweep_keeps_a_killed_job_and_resumes_it(tmp_path, reference):
    sweep, markers = tmp_path / "sweep", tmp_path / "markers"
    # submitit's local executor: one process per job, as on SLURM; job 1 (seed 3) is SIGKILLed in epoch 1
    args = [*tiny("logger=csv"), *chaos(markers, kill_job=1), "hydra/launcher=slurm_local", "seed=1,3"]
    first = run_train(["-m", *args, f"hydra.sweep.dir={sweep}"])
    assert first.returncode != 0
    rows = {int(r["job"]): r for r in Ledger(sweep).rows()}
    assert {j: r["state"] for j, r in rows.items()} == {0: "completed", 1: "failed"}, rows
    assert rows[1]["exit_reason"].startswith("UncompletedJobError") and "[state: " in rows[1]["exit_reason"], rows[1]
    print("submitit's reason for the killed job:", rows[1]["exit_reason"])
    second = run_train(["-m", *args, f"resume_sweep={sweep}"])
    assert second.returncode == 0, second.stderr[-3000:]
    assert states(sweep) == {0: "completed", 1: "completed"}
    assert same_metrics(json.loads((sweep / "1" / "metrics.json").read_text()), reference) == []


# --- one sweep per directory, one config per sweep (issue 21 items 6 and 7) ----------------------------


def test_a_sweep_directory_is_held_until_its_process_dies(tmp_path):
    sweep = tmp_path / "sweep"
    holder = subprocess.Popen([sys.executable, "-c", "import sys, time; from rigor.launchers import lock_sweep_dir; "
                               f"lock_sweep_dir({str(sweep)!r}); print('held', flush=True); time.sleep(120)"],
                              cwd=ROOT, env=ENV, stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        with pytest.raises(SweepLockError) as err:
            lock_sweep_dir(sweep)
        assert str(sweep) in str(err.value) and f"pid {holder.pid} on " in str(err.value)
    finally:
        holder.kill()  # SIGKILL: no clean-up runs; the kernel drops the lock with the process
        holder.wait()
    assert lock_sweep_dir(sweep) == sweep / ".sweep.lock"  # free again
    assert lock_sweep_dir(sweep) == sweep / ".sweep.lock"  # and taking it twice in one process is fine


@pytest.mark.slow
def test_two_sweeps_started_together_into_one_directory(tmp_path):
    sweep = tmp_path / "sweep"
    args = ["-m", *tiny("logger=csv"), "+callbacks.pause._target_=tests.test_sweeps.Pause", "+callbacks.pause.seconds=3",
            "seed=1,2", f"hydra.sweep.dir={sweep}"]
    procs = [subprocess.Popen([sys.executable, "train.py", *args], cwd=ROOT, env=ENV, stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True) for _ in range(2)]
    outs = [p.communicate(timeout=600) for p in procs]
    codes = [p.returncode for p in procs]
    assert sorted(codes) != [0, 0], "both sweeps ran: " + outs[0][1][-2000:]
    winner = codes.index(0)
    loser_err = outs[1 - winner][1]
    assert f"{sweep} is in use by another sweep (pid {procs[winner].pid} on " in loser_err, loser_err[-3000:]
    # every job ran once, in one process, with one config
    rows = {int(r["job"]): r for r in Ledger(sweep).rows()}
    assert {j: (r["state"], r["attempts"], int(r["pid"])) for j, r in rows.items()} == \
        {0: ("completed", 1, procs[winner].pid), 1: ("completed", 1, procs[winner].pid)}
    assert not (sweep / "0" / ".hydra" / "restarts").exists() and not (sweep / "1" / ".hydra" / "restarts").exists()
    # the lock died with the winner: the same command now resumes (nothing left to run)
    again = run_train(args)
    assert again.returncode == 0 and "job 1 completed earlier: not launched" in again.stderr + again.stdout


@pytest.mark.slow
def test_a_sweep_resumed_after_its_experiment_file_changed_is_refused(tmp_path):
    conf = tmp_path / "conf"
    shutil.copytree(ROOT / "tests" / "toy_family" / "conf", conf)
    experiment = conf / "experiment" / "toy_edited.yaml"
    experiment.write_text((conf / "experiment" / "toy_binary.yaml").read_text() + "model:\n  hidden: 16\n")
    sweep, markers = tmp_path / "sweep", tmp_path / "markers"
    args = ["-m", f"hydra.searchpath=[file://{conf}]", "experiment=toy_edited", "trainer.max_epochs=2",
            "callbacks.early_stopping=null", "cpu_threads=1", "logger=csv", *chaos(markers, fail_job=1), "seed=1,2"]
    first = run_train([*args, f"hydra.sweep.dir={sweep}"])
    assert first.returncode != 0 and states(sweep) == {0: "completed", 1: "failed"}, first.stderr[-3000:]
    experiment.write_text(experiment.read_text().replace("hidden: 16", "hidden: 8"))
    changed = run_train([*args, f"resume_sweep={sweep}"])
    assert changed.returncode != 0
    assert f"{sweep}: the config files changed since its jobs started" in changed.stderr, changed.stderr[-3000:]
    for job in (0, 1):
        assert f"job {job} ({sweep / str(job)}): model.hidden: 16 (saved) -> 8 (now)" in changed.stderr
    assert [r["attempts"] for r in Ledger(sweep).rows()] == [1, 1]  # nothing ran
    experiment.write_text(experiment.read_text().replace("hidden: 8", "hidden: 16"))  # as it was: resumes
    restored = run_train([*args, f"resume_sweep={sweep}"])
    assert restored.returncode == 0 and states(sweep) == {0: "completed", 1: "completed"}, restored.stderr[-3000:]
