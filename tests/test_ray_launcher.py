"""hydra/launcher=ray on CPU: parallel jobs, one logical GPU per job, failures kept per job, resume; and the
hyperparameter search's two trials at once through Ray.

One Ray cluster (2 logical GPUs on a CPU machine) is started for the module and every sweep joins it
through ``hydra.launcher.ray.init.address``, which is also how a sweep uses an existing cluster.
"""

from __future__ import annotations

import json
import re
import signal
import socket
import subprocess
import sys
import time
from datetime import datetime
from pathlib import Path

import pytest
from omegaconf import OmegaConf

from tasks.evaluation import run_summarize
from rigor.launchers import gpus_per_job, ray_init_options
from rigor.ledger import Ledger
from tests.conftest import ROOT
from tests.test_sweeps import ENV, chaos, reference, run_train, same_metrics, tiny  # noqa: F401 (reference: a fixture)

pytestmark = pytest.mark.slow
CLUSTER_CPUS = 4  # logical: Ray hands them out, the jobs themselves are tiny


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def ray_address(tmp_path_factory) -> str:
    """A local Ray cluster with 2 logical GPUs for this module; its address."""
    found = None
    log = tmp_path_factory.mktemp("ray") / "ray_start.log"
    # a short-lived test cluster: no token authentication (Ray >= 2.5x turns it on for `ray start`; a driver
    # joining such a cluster needs RAY_AUTH_MODE=token and the token, see docs/sweeps.md)
    env = {**ENV, "RAY_AUTH_MODE": "disabled"}
    for attempt in (1, 2):
        cmd = [str(Path(sys.executable).parent / "ray"), "start", "--head", "--block", f"--port={_free_port()}",
               f"--ray-client-server-port={_free_port()}", f"--num-cpus={CLUSTER_CPUS}",
               "--num-gpus=2", "--include-dashboard=false", "--object-store-memory=100000000", "--disable-usage-stats"]
        with open(log, "w") as out:
            head = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT)
        deadline = time.time() + 120
        while "will now block" not in log.read_text() and head.poll() is None and time.time() < deadline:
            time.sleep(0.5)
        # Ray gives its raylet a fixed 30 s to register; on two loaded cores (the suite's other workers) it may
        # not make it: a second start then, not a failed module
        if attempt == 1 and head.poll() is not None and "timed out during startup" in log.read_text():
            continue
        break
    try:
        assert head.poll() is None and "will now block" in log.read_text(), log.read_text()[-3000:]
        # the address other machines would use (what `ray start` prints), so the driver finds its raylet
        found = re.search(r"--address='([^']+)'", log.read_text())
        assert found, log.read_text()[-3000:]
        yield found.group(1)
    finally:
        head.send_signal(signal.SIGTERM)  # ray start --block stops the processes it started
        try:
            head.wait(60)
        except subprocess.TimeoutExpired:
            head.kill()
        # Ray leaves the address of the cluster it started here; a later ray.init() would try to join it
        current = Path("/tmp/ray/ray_current_cluster")
        if found and current.is_file() and current.read_text().strip() == found.group(1):
            current.unlink()


def ray_args(address: str, num_cpus: int = 1, num_gpus: int = 0) -> list[str]:
    return ["hydra/launcher=ray", f"hydra.launcher.ray.init.address={address}",
            f"hydra.launcher.ray.remote.num_cpus={num_cpus}", f"hydra.launcher.ray.remote.num_gpus={num_gpus}"]


def _time(value: str) -> datetime:
    return datetime.fromisoformat(value)


def test_an_existing_cluster_gets_no_resource_options():
    assert ray_init_options({"address": "10.0.0.1:6379", "num_cpus": 4, "num_gpus": None, "include_dashboard": False,
                             "object_store_memory": 10**8, "namespace": "x"}) == {"address": "10.0.0.1:6379", "namespace": "x"}
    # no address: a new local cluster, never one that `ray start` left running on this machine
    assert ray_init_options({"address": None, "num_cpus": 4, "num_gpus": None, "include_dashboard": False}) == \
        {"address": "local", "num_cpus": 4, "include_dashboard": False}
    # conf/hydra/launcher/ray.yaml starts local clusters whose workers run at normal priority (Ray's default
    # is nice +15: beside other work the jobs starve); an existing cluster keeps its own setting
    init = OmegaConf.load(Path(__file__).parents[1] / "conf" / "hydra" / "launcher" / "ray.yaml").ray.init
    assert ray_init_options(init)["_system_config"] == {"worker_niceness": 0}
    assert "_system_config" not in ray_init_options({**OmegaConf.to_container(init), "address": "10.0.0.1:6379"})


def test_gpus_per_job_follow_the_trainer():
    assert gpus_per_job({"accelerator": "cpu", "devices": 1}) == 0
    assert gpus_per_job({"accelerator": "gpu", "devices": 1}) == 1
    assert gpus_per_job({"accelerator": "cuda", "devices": 2}) == 2
    assert gpus_per_job(OmegaConf.create({"accelerator": "gpu", "devices": [0, 3]})) == 2
    assert gpus_per_job({"accelerator": "gpu", "devices": "auto"}) == 1


def test_parallel_jobs_one_gpu_each_and_a_failed_job_kept(tmp_path, ray_address, record_property):
    sweep = tmp_path / "sweep"
    # 40 toy epochs (a few seconds): the ledger's times are whole seconds, and the jobs must overlap in them;
    # cpu_threads follows num_cpus
    args = [a for a in tiny("logger=csv") if not a.startswith(("cpu_threads=", "trainer.max_epochs="))] + ["trainer.max_epochs=40"]
    start = time.time()
    proc = run_train(["-m", *args, *ray_args(ray_address, num_cpus=1, num_gpus=1), "seed=1,2,x", f"hydra.sweep.dir={sweep}"])
    wall = time.time() - start
    # the failed job fails the sweep's exit status only after the others finished
    assert proc.returncode != 0 and "seed must be an integer" in proc.stderr, proc.stderr[-3000:]
    rows = {int(r["job"]): r for r in Ledger(sweep).rows()}
    assert {j: r["state"] for j, r in rows.items()} == {0: "completed", 1: "completed", 2: "failed"}
    assert "seed must be an integer, got 'x'" in rows[2]["exit_reason"]
    metrics = [json.loads((sweep / str(j) / "metrics.json").read_text()) for j in (0, 1)]
    # Ray's logical GPUs: each job saw its own CUDA_VISIBLE_DEVICES; cpu_threads followed num_cpus
    assert sorted(m["device"]["cuda_visible_devices"] for m in metrics) == ["0", "1"]
    assert [m["device"]["torch_threads"] for m in metrics] == [1, 1]
    assert [OmegaConf.load(sweep / str(j) / ".hydra" / "config.yaml").cpu_threads for j in (0, 1)] == [1, 1]  # null unless set
    assert all(m["device"]["accelerator"] == "cpu" for m in metrics)
    # both jobs ran at the same time
    assert _time(rows[0]["start"]) < _time(rows[1]["end"]) and _time(rows[1]["start"]) < _time(rows[0]["end"])
    sequential = sum(m["wall_time_s"] for m in metrics)
    record_property("ray_sweep_wall_s", round(wall, 1))
    record_property("sum_of_job_walls_s", sequential)
    print(f"Ray sweep of 2 jobs (+1 failing): {wall:.1f} s wall; the jobs' own wall times add up to {sequential:.1f} s")
    # the summary lists the failed job with its reason
    result = run_summarize(OmegaConf.create({"sweep_dir": str(sweep)}))
    assert [(Path(r["job_dir"]).name, r["status"]) for r in result["failed"]] == [("2", "failed")]


def test_a_killed_worker_is_a_failed_job_and_the_sweep_resumes(tmp_path, ray_address, reference):
    sweep, markers = tmp_path / "sweep", tmp_path / "markers"
    # job 1 (seed 3): its worker is SIGKILLed in epoch 1, as the OS does when memory runs out; job 2 fails once
    args = [*tiny("logger=csv"), *chaos(markers, kill_job=1, fail_job=2), *ray_args(ray_address),
            "seed=1,3,2"]
    first = run_train(["-m", *args, f"hydra.sweep.dir={sweep}"])
    assert first.returncode != 0
    rows = {int(r["job"]): r for r in Ledger(sweep).rows()}
    assert {j: r["state"] for j, r in rows.items()} == {0: "completed", 1: "failed", 2: "failed"}, rows
    assert "WorkerCrashedError" in rows[1]["exit_reason"] and "chaos: job 2 fails once" in rows[2]["exit_reason"]
    assert (sweep / "1" / "checkpoints" / "last.ckpt").exists() and not (sweep / "1" / "metrics.json").exists()
    done = (sweep / "0" / "metrics.json").stat().st_mtime_ns

    second = run_train(["-m", *args, f"hydra.sweep.dir={sweep}"])
    assert second.returncode == 0, second.stderr[-3000:]
    rows = {int(r["job"]): r for r in Ledger(sweep).rows()}
    assert {j: r["state"] for j, r in rows.items()} == {0: "completed", 1: "completed", 2: "completed"}
    assert [rows[j]["attempts"] for j in (0, 1, 2)] == [1, 2, 2]  # no silent Ray retry: one attempt per start
    assert (sweep / "0" / "metrics.json").stat().st_mtime_ns == done
    assert "resuming" in (sweep / "1" / "train.log").read_text()
    assert same_metrics(json.loads((sweep / "1" / "metrics.json").read_text()), reference) == []


# --- the search sweeper (rigor/search.py): two trials at once, on this module's cluster -----------------


def test_search_two_workers_a_finished_trial_frees_its_slot(tmp_path, ray_address):
    """Job 0 waits for job 2 to start: job 1 ends first and job 2 takes its slot while job 0 still runs."""
    pytest.importorskip("optuna")  # the search extra (the test extra includes it)
    from tests.test_search import search

    sweep = tmp_path / "sweep"
    out = run_train(search(sweep, "logger=csv", "hydra.sweeper.n_jobs=2", *ray_args(ray_address),
                           "+callbacks.slow._target_=tests.test_search.SlowJob", "+callbacks.slow.job=0",
                           "+callbacks.slow.seconds=180", f"+callbacks.slow.marker_dir={tmp_path / 'started'}"))
    assert out.returncode == 0, out.stderr[-3000:]
    rows = {int(r["job"]): r for r in Ledger(sweep).rows()}
    assert sorted(rows) == [0, 1, 2] and all(r["state"] == "completed" for r in rows.values())
    assert rows[1]["start"] < rows[0]["end"]  # two at once
    assert rows[1]["end"] <= rows[2]["start"] < rows[0]["end"]  # job 2 got job 1's slot, job 0 still running
    assert len({r["pid"] for r in rows.values()}) >= 2
