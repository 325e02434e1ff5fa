"""Sweeps on a real SLURM: a single-node cluster (tests/slurm_cluster.py) started for this module.

One sweep of the toy family (which has dropout) goes through sbatch with ``hydra/launcher=slurm`` and a
2-minute time limit, four jobs at once, each meeting one thing a cluster does to jobs (SlurmChaos):

- job 0 (seed 1): ``scontrol requeue`` mid-training: SIGTERM, requeued by SLURM, resumes from last.ckpt;
- job 1 (seed 2): runs into its time limit: SLURM's USR2 comes before it (``signal_delay_s``, and up to 30 s
  earlier: SLURM checks limits every 30 s), the run stops, the launcher requeues the job, which resumes;
- job 2 (seed 3): ``scancel`` mid-training: the sweep goes on and ends; the same command again resumes it;
- job 3 (seed x): a bad override: the job fails with its error.

The same command with the local launcher is the reference: the same ledger states and summary, and the
same metrics for every completed job. Skipped, with the install command, where SLURM is not installed.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import lightning as L
import pytest
from lightning.pytorch.callbacks import Callback

from rigor.launchers import check_time_limit
from rigor.ledger import Ledger
from rigor.sweeps import read_sweep
from tests.conftest import ROOT
from tests.lens.tiny import TEST_NET
from tests.slurm_cluster import SingleNodeSlurm, missing
from tests.test_sweeps import ENV, Chaos, same_metrics, states, tiny

WHY_NOT = missing()


class SlurmChaos(Callback):
    """Test-only: what a cluster does to single jobs of a sweep, in the first training batch of `epoch`, once.

    Does nothing outside a SLURM job, so a local sweep with the same overrides is the reference.

    Args:
        marker_dir: Where the once-markers go.
        requeue_job: This job runs ``scontrol requeue`` on itself.
        cancel_job: This job runs ``scancel`` on itself.
        wait_job: This job waits (up to `wait_s`) for SLURM's warning signal before its time limit.
        epoch: See above.
        wait_s: See wait_job.
    """

    def __init__(self, marker_dir: str, requeue_job: int = -1, cancel_job: int = -1, wait_job: int = -1, epoch: int = 1,
                 wait_s: float = 160) -> None:
        self.marker_dir = Path(marker_dir)
        self.requeue_job, self.cancel_job, self.wait_job = requeue_job, cancel_job, wait_job
        self.epoch, self.wait_s = epoch, wait_s

    def on_train_batch_start(self, trainer: L.Trainer, pl_module: L.LightningModule, batch, batch_idx: int) -> None:
        if "SLURM_JOB_ID" not in os.environ or trainer.current_epoch != self.epoch or batch_idx != 0:
            return
        # an array task by its array name: scancel takes its raw SLURM_JOB_ID as an unknown job
        array, task = os.environ.get("SLURM_ARRAY_JOB_ID"), os.environ.get("SLURM_ARRAY_TASK_ID")
        slurm_id = f"{array}_{task}" if array and task else os.environ["SLURM_JOB_ID"]
        job = Chaos._job()
        command = {self.requeue_job: ["scontrol", "requeue", slurm_id], self.cancel_job: ["scancel", slurm_id],
                   self.wait_job: []}.get(job)
        if command is None or job < 0:
            return
        marker = self.marker_dir / f"slurm_{job}"
        if marker.exists():
            return
        self.marker_dir.mkdir(parents=True, exist_ok=True)
        marker.touch()
        if command:
            # scancel signals every process of the job, itself included when it has not exited yet (a loaded
            # machine): its death by that SIGTERM is the cancel working, any other failure is an error
            done = subprocess.run(command)
            if done.returncode not in (0, -signal.SIGTERM):
                raise subprocess.CalledProcessError(done.returncode, command)
        end = time.monotonic() + self.wait_s
        while not trainer.received_sigterm and time.monotonic() < end:  # until SLURM's signal reached the run
            time.sleep(0.2)


def slurm_chaos(marker_dir: Path) -> list[str]:
    return ["+callbacks.slurm_chaos._target_=tests.test_slurm.SlurmChaos", f"+callbacks.slurm_chaos.marker_dir={marker_dir}",
            "+callbacks.slurm_chaos.requeue_job=0", "+callbacks.slurm_chaos.wait_job=1", "+callbacks.slurm_chaos.cancel_job=2"]


#: the cluster user's settings for these jobs: one CPU, no GPU, little memory, a 2-minute limit whose warning comes
#: 2 s before it (88-118 s after the start: SLURM's 30 s checks); Rigor's poll and lost-job wait shortened for the
#: test. With 1 minute the warning could come 28 s after the start: on a loaded 2-core machine, before a job had
#: imported Lightning and set its handler, so it died of the signal (exit 140) instead of stopping.
SLURM = ["hydra/launcher=slurm", "hydra.launcher.timeout_min=2", "hydra.launcher.signal_delay_s=2",
         "hydra.launcher.cpus_per_task=1", "hydra.launcher.mem_gb=null", "hydra.launcher.max_num_timeout=2",
         "hydra.launcher.queue_poll_s=2", "hydra.launcher.lost_job_wait_s=3"]


def test_a_time_limit_at_or_under_the_signal_lead_time_is_refused():
    with pytest.raises(ValueError, match=r"timeout_min=2 \(120 s\) is at or under hydra.launcher.signal_delay_s=120"):
        check_time_limit({"timeout_min": 2, "signal_delay_s": 120})
    check_time_limit({"timeout_min": 3, "signal_delay_s": 120})


@pytest.fixture(scope="module")
def slurm(tmp_path_factory: pytest.TempPathFactory):
    """A single-node SLURM for this module (6 one-CPU slots: the jobs mostly wait), stopped afterwards."""
    if WHY_NOT:
        pytest.skip(WHY_NOT)
    cluster = SingleNodeSlurm(tmp_path_factory.mktemp("slurm"), cpus=6)
    cluster.start()
    before = os.environ.get("SLURM_CONF")
    os.environ["SLURM_CONF"] = str(cluster.conf)  # sbatch, squeue, scontrol of the sweep and of its jobs
    yield cluster
    cluster.stop()
    if before is None:
        os.environ.pop("SLURM_CONF", None)
    else:
        os.environ["SLURM_CONF"] = before
    left = subprocess.run(["pgrep", "-f", f"slurm(ctld|d|stepd).*{cluster.root}|munged.*rigor-munge"], capture_output=True,
                          text=True).stdout.split()
    assert not left, f"SLURM processes left running: {left}"


def lens_grid(manifest: Path, markers: Path) -> list[str]:
    """A lens sweep at test size (timm's test ResNet on the toy lens manifest), no dropout: job 0 requeued, job 1 timed out."""
    return ["-m", f"data.manifest_path={manifest}", "data.batch_size=32", *TEST_NET, "trainer.max_epochs=3", "logger=csv",
            "callbacks.early_stopping=null", "cpu_threads=1", "callbacks.shortcut_gates.every_n_epochs=1",
            "callbacks.thetae_auroc.every_n_epochs=1", "callbacks.core_sensitivity.splits=[val]", "seed=1,2",
            "+callbacks.slurm_chaos._target_=tests.test_slurm.SlurmChaos", f"+callbacks.slurm_chaos.marker_dir={markers}",
            "+callbacks.slurm_chaos.requeue_job=0", "+callbacks.slurm_chaos.wait_job=1"]


@pytest.fixture(scope="module")
def sweeps(slurm: SingleNodeSlurm, tmp_path_factory: pytest.TempPathFactory, toy_lens_manifest: Path) -> dict:
    """The SLURM sweeps (toy, and lens beside it), the toy one's command again, and the local references."""
    tmp = tmp_path_factory.mktemp("slurm_sweeps")
    grid = ["-m", *tiny(), "seed=1,2,3,x", "rerun_failed=false", *slurm_chaos(tmp / "markers")]
    env = {**ENV, "SLURM_CONF": str(slurm.conf)}

    def train(*args: str, base: list[str] = grid) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, "train.py", *base, *args], cwd=ROOT, env=env, capture_output=True,
                              text=True, timeout=900)

    out: dict = {"slurm": tmp / "slurm", "local": tmp / "local", "lens_slurm": tmp / "lens_slurm", "lens_local": tmp / "lens_local"}
    lens = lens_grid(toy_lens_manifest, tmp / "lens_markers")
    side = [threading.Thread(target=lambda: out.update(reference=train(f"hydra.sweep.dir={out['local']}"))),
            threading.Thread(target=lambda: out.update(lens_reference=train(f"hydra.sweep.dir={out['lens_local']}", base=lens))),
            threading.Thread(target=lambda: out.update(lens=train(*SLURM, f"hydra.sweep.dir={out['lens_slurm']}", base=lens)))]
    for thread in side:
        thread.start()
    for attempt in ("first", "again"):
        start = time.monotonic()
        out[attempt] = train(*SLURM, f"hydra.sweep.dir={out['slurm']}")
        out[f"{attempt}_wall_s"] = round(time.monotonic() - start, 1)
        out[f"{attempt}_rows"] = {int(r["job"]): r for r in Ledger(out["slurm"]).rows()}
        out[f"{attempt}_states"] = {job: row["state"] for job, row in out[f"{attempt}_rows"].items()}
    for thread in side:
        thread.join()
    out["lens_rows"] = {int(r["job"]): r for r in Ledger(out["lens_slurm"]).rows()}
    print(json.dumps({k: v for k, v in out.items() if k.endswith(("_wall_s", "_states"))}))
    for attempt in ("first", "again"):
        print(attempt, {job: (row["state"], row["attempts"], row["exit_reason"]) for job, row in out[f"{attempt}_rows"].items()})
    return out


def metrics(sweep: Path, job: int) -> dict:
    return json.loads((sweep / str(job) / "metrics.json").read_text())


def summary_states(sweep: Path) -> dict[str, str]:
    return {Path(r["job_dir"]).name: r["status"] for r in read_sweep(sweep)}


def job_log(sweep: Path, text: str) -> str:
    """The submitit logs (stdout and stderr of every attempt) of the SLURM job whose logs hold `text`."""
    for folder in sorted(p for p in (sweep / ".submitit").iterdir() if p.is_dir()):
        content = "\n".join(f.read_text(errors="replace") for f in sorted(folder.glob("*_log.*")))
        if text in content:
            return content
    return ""


@pytest.mark.slow
def test_the_first_sweep_ends_with_each_job_where_slurm_left_it(sweeps):
    first, rows = sweeps["first"], sweeps["first_rows"]
    assert sweeps["first_states"] == {0: "completed", 1: "completed", 2: "terminated", 3: "failed"}, \
        (first.stdout[-3000:], first.stderr[-3000:])
    assert "Bypassing sacct error" not in first.stderr + first.stdout
    # requeued once each (again if SLURM's time-limit warning came before a job was done: it resumes all the same)
    assert rows[0]["attempts"] >= 2 and rows[1]["attempts"] >= 2, rows
    assert "SIGTERM during training" in rows[2]["exit_reason"] and "CANCELLED" in rows[2]["exit_reason"], rows[2]
    assert "seed must be an integer, got 'x'" in rows[3]["exit_reason"], rows[3]


@pytest.mark.slow
def test_requeue_and_time_limit_resume_to_the_uninterrupted_numbers(sweeps):
    assert sweeps["reference"].returncode != 0  # the seed=x job failed there too
    for job in (0, 1):
        assert not same_metrics(metrics(sweeps["slurm"], job), metrics(sweeps["local"], job)), job
    warned = job_log(sweeps["slurm"], "SIGUSR2 from SLURM")
    assert warned and "Requeued job" in warned and "Bypassing signal SIGUSR2" not in warned
    assert not list(sweeps["slurm"].rglob("hpc_ckpt_*.ckpt"))  # Lightning's own SLURM requeue never acted


@pytest.mark.slow
def test_the_same_command_resumes_the_cancelled_job_and_agrees_with_the_local_launcher(sweeps):
    assert sweeps["again_states"] == {0: "completed", 1: "completed", 2: "completed", 3: "failed"}, \
        sweeps["again"].stderr[-3000:]
    assert states(sweeps["local"]) == sweeps["again_states"]
    assert not same_metrics(metrics(sweeps["slurm"], 2), metrics(sweeps["local"], 2))
    slurm_rows, local_rows = sweeps["again_rows"], {int(r["job"]): r for r in Ledger(sweeps["local"]).rows()}
    assert slurm_rows[3]["exit_reason"] == local_rows[3]["exit_reason"]
    assert summary_states(sweeps["slurm"]) == summary_states(sweeps["local"])


@pytest.mark.slow
def test_lens_requeued_and_timed_out_jobs_resume_to_the_uninterrupted_numbers(sweeps):
    """The lens family (no dropout, its own callbacks' state) through the same cluster: requeue and time limit."""
    lens, rows = sweeps["lens"], sweeps["lens_rows"]
    assert lens.returncode == 0 and sweeps["lens_reference"].returncode == 0, (lens.stderr[-3000:], sweeps["lens_reference"].stderr[-3000:])
    assert {job: row["state"] for job, row in rows.items()} == {0: "completed", 1: "completed"}, rows
    assert states(sweeps["lens_local"]) == {0: "completed", 1: "completed"}
    assert rows[0]["attempts"] >= 2 and rows[1]["attempts"] >= 2, rows  # requeued, and stopped by the time limit
    assert job_log(sweeps["lens_slurm"], "SIGUSR2 from SLURM")
    for job in (0, 1):
        assert not same_metrics(metrics(sweeps["lens_slurm"], job), metrics(sweeps["lens_local"], job)), job
    assert summary_states(sweeps["lens_slurm"]) == summary_states(sweeps["lens_local"])
