"""Sweep launchers that keep every job: Hydra's basic launcher and the Ray launcher, with a ledger and resume.

Every launcher holds an exclusive lock on its sweep directory for the whole sweep (``lock_sweep_dir``), so a
second sweep into the same directory is refused, naming the holder's pid, whatever the timing. They
write a ``queued`` row per job into the sweep's ledger (rigor/ledger.py) before launching, and refuse
to resume a sweep directory whose jobs were started with other overrides (naming the job), or whose jobs'
saved config differs from what the config files give now (naming the keys). A job whose
metrics.json says completed is left to train.py, which checks its config and returns without training;
a failed job is run again unless ``rerun_failed=false``.

The submitit launchers (``hydra/launcher=slurm``, ``slurm_local``) get the same through SubmititMixin; with
``slurm``, a time limit at or under the warning signal's lead time is refused, jobs are followed with
squeue rather than sacct (a job gone from the queue without a result is failed within a bounded wait),
and in each job one handler owns SLURM's warning signal (SignalOwner: stop, then requeue, then resume).
The Ray launcher (``hydra/launcher=ray``) subclasses hydra-ray-launcher's: jobs are collected with
``ray.wait`` as they finish, so a job that raises, or whose worker the OS killed (out of memory), becomes a
failed job with its reason in the ledger while the others go on. Task retries are off by default
(``max_retries: 0``); a retry, when turned on, shows as one more attempt in the job's ledger row.

Hydra instantiates launchers only from the ``hydra_plugins`` package, so the configs name the thin
subclasses in ``hydra_plugins/rigor_launchers``.
"""

from __future__ import annotations

import fcntl
import logging
import os
import signal
import socket
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Sequence

from hydra.core.config_store import ConfigStore
from hydra.core.utils import JobReturn, JobStatus, filter_overrides
from hydra.types import HydraContext
from omegaconf import DictConfig, OmegaConf, open_dict

from rigor.ledger import Ledger, job_fields, now
from rigor.overrides import comparable_overrides  # noqa: F401  (re-exported: the resume check's comparison)
from rigor.sweeps import completed_metrics, failed_before, read_config, read_overrides

# =================================================================================================
# Hydra and plugin internals: every name Rigor uses that is not the documented API of hydra-core, its
# launcher plugins or submitit is imported or called here and nowhere else (rigor.config's sweep
# composition takes ConfigLoaderImpl from here). Written and checked against hydra-core 1.3.8,
# hydra-submitit-launcher 1.2.0, hydra-ray-launcher 1.2.2 and submitit 1.5.4; pyproject.toml pins those
# ranges, and tests/test_internals.py checks that each one is still there, so an upgrade fails that
# test rather than a sweep.
#
# hydra-core 1.3.8:
#   hydra._internal.core_plugins.basic_launcher.BasicLauncher   subclassed; setup() sets hydra_context, config,
#                                                               task_function
#   hydra._internal.config_loader_impl.ConfigLoaderImpl         load_configuration(self, config_name, overrides,
#                                                               run_mode, ...) wrapped by rigor.config
#   hydra.core.utils run_job, setup_globals, configure_log      undocumented helpers every launcher plugin uses
#   HydraContext.config_loader.load_sweep_config(cfg, overrides), Singleton.get_state()   (idem)
#   hydra.core.plugins.Plugins.instance().instantiate_launcher(hydra_context=, task_function=, config=)
#                                                               how a sweeper gets the configured launcher (rigor.search)
# hydra-ray-launcher 1.2.2:
#   ray_launcher.RayLauncher                                    subclassed; its ray_cfg (.init, .remote)
#   _launcher_util._run_job(hydra_context=, sweep_config=, task_function=, singleton_state=)   run in a Ray worker
# hydra-submitit-launcher 1.2.0:
#   submitit_launcher.SlurmLauncher / LocalLauncher             subclassed; _EXECUTOR, params (submitit_folder,
#                                                               max_num_timeout), __call__(sweep_overrides,
#                                                               job_dir_key, job_num, job_id, singleton_state)
#   config.BaseQueueConf                                        the parameters submitit takes unprefixed
#   config.SlurmQueueConf                                       subclassed: the slurm launcher's schema with Rigor's keys
#   BaseSubmititLauncher.checkpoint()                           what submitit's requeue resubmits (this call again)
# submitit 1.5.4 (public, used as the plugin's launch uses it):
#   AutoExecutor(cluster=, folder=, <cluster>_max_num_timeout=), update_parameters, map_array, Job.results(), Job.state
# submitit 1.5.4 (internal):
#   Job.job_id, Job.paths.result_pickle                         a SLURM job's result file, watched instead of sacct
#   slurm.slurm.SlurmJobEnvironment.USR_SIG                     the signal its sbatch asks for (--signal=USR2@delay); the
#                                                               job-side handler submitit sets for it is taken over, and
#                                                               called (checkpoint, scontrol requeue, exit) once the run stopped
# lightning 2.6 (internal):
#   trainer.connectors.signal_connector._SignalConnector       sets its SLURM auto-requeue handler (SIGUSR1) only where no
#                                                               handler is set: Rigor's is, so Lightning never requeues
# =================================================================================================

from hydra._internal.config_loader_impl import ConfigLoaderImpl as HydraConfigLoaderImpl  # noqa: F401  (for rigor.config)
from hydra._internal.core_plugins.basic_launcher import BasicLauncher as HydraBasicLauncher
from hydra.core.singleton import Singleton
from hydra.core.utils import configure_log, run_job, setup_globals

try:
    from hydra_plugins.hydra_ray_launcher.ray_launcher import RayLauncher as PluginRayLauncher

    RAY_AVAILABLE = True
except ImportError:  # the `ray` extra is not installed
    RAY_AVAILABLE = False

    class PluginRayLauncher(HydraBasicLauncher):  # type: ignore[no-redef]
        """Stands in for hydra-ray-launcher when it is missing, so the config fails with the way out."""

        def __init__(self, **kwargs: Any) -> None:
            raise ImportError('hydra/launcher=ray needs the ray extra: pip install -e ".[ray]"')

try:
    from hydra_plugins.hydra_submitit_launcher.config import BaseQueueConf
    from hydra_plugins.hydra_submitit_launcher.submitit_launcher import LocalLauncher as PluginSubmititLocalLauncher
    from hydra_plugins.hydra_submitit_launcher.submitit_launcher import SlurmLauncher as PluginSlurmLauncher
    from hydra_plugins.hydra_submitit_launcher.config import SlurmQueueConf
except ImportError:  # hydra-submitit-launcher not installed
    BaseQueueConf = PluginSlurmLauncher = PluginSubmititLocalLauncher = SlurmQueueConf = None  # type: ignore[assignment,misc]


def ray_run_job() -> Callable[..., JobReturn]:
    """hydra-ray-launcher's ``_launcher_util._run_job`` (imports ray: called in the Ray worker)."""
    from hydra_plugins.hydra_ray_launcher._launcher_util import _run_job

    return _run_job


def ray_launcher_config(launcher: Any) -> DictConfig:
    """The plugin RayLauncher's ``ray`` config (``init``, ``remote``), kept as ``ray_cfg``."""
    return launcher.ray_cfg


def submitit_executor(launcher: Any) -> str:
    """The submitit executor a plugin launcher class stands for (``slurm``, ``local``): its ``_EXECUTOR``."""
    return launcher._EXECUTOR


def submitit_result_file(handle: Any) -> Path:
    """Where a submitted job's result (or error) appears once its function returned or raised."""
    return Path(handle.paths.result_pickle)


def submitit_slurm_signal() -> signal.Signals:
    """The signal submitit asks SLURM to send before a time limit (``--signal=USR2@<signal_delay_s>``)."""
    from submitit.slurm.slurm import SlurmJobEnvironment

    return signal.Signals[f"SIG{SlurmJobEnvironment.USR_SIG}"]


def instantiate_launcher(*, hydra_context: HydraContext, task_function: Any, config: DictConfig) -> Any:
    """The launcher ``hydra/launcher`` names, set up, as Hydra's own sweepers get it (rigor.search's sweeper)."""
    from hydra.core.plugins import Plugins

    return Plugins.instance().instantiate_launcher(hydra_context=hydra_context, task_function=task_function, config=config)


# =================================================================================================

log = logging.getLogger(__name__)


class SweepResumeError(ValueError):
    """An existing sweep directory holds a job that was started with other overrides."""


class SweepConfigError(SweepResumeError):
    """A resumed sweep's jobs were started under a config that the config files no longer give."""


class SweepLockError(RuntimeError):
    """Another sweep process holds the sweep directory."""


#: The file in a sweep directory whose lock says a sweep process owns the directory.
SWEEP_LOCK = ".sweep.lock"
#: Sweep directories this process holds: resolved path -> the open descriptor that keeps the lock.
_HELD: dict[str, int] = {}


def lock_sweep_dir(sweep_dir: str | Path) -> Path:
    """Hold an exclusive lock on `sweep_dir` until this process exits; refuse when another process holds it.

    A POSIX record lock (``fcntl.lockf``) on ``<sweep_dir>/.sweep.lock``: the kernel drops it when the
    process ends, SIGKILL included, so a sweep killed overnight leaves nothing to clean up before its
    resume; forked children (DataLoader workers) do not inherit it; it also works on NFS. The file
    records the holder (pid, host, start) for the message. Taking it again in the holding process is a
    no-op.

    Returns:
        The lock file.

    Raises:
        SweepLockError: Another process holds the directory; the message names it and the holder's pid.
    """
    sweep_dir = Path(sweep_dir)
    sweep_dir.mkdir(parents=True, exist_ok=True)
    path = sweep_dir / SWEEP_LOCK
    key = str(path.resolve())
    if key in _HELD:
        return path
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.lockf(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        holder = ""
        for _ in range(20):  # the holder writes its pid just after locking: wait a moment for it
            holder = os.pread(fd, 4096, 0).decode(errors="replace").strip()
            if holder:
                break
            time.sleep(0.1)
        os.close(fd)  # closing drops this process's locks on the file: it holds none
        raise SweepLockError(
            f"{sweep_dir} is in use by another sweep ({holder or 'holder unknown'}; lock {path}): two sweeps in one "
            "directory would run the same jobs in the same job directories. Wait for it to end and run the command "
            "again (it resumes: completed jobs are skipped), or give another hydra.sweep.dir / resume_sweep.") from None
    os.ftruncate(fd, 0)
    os.pwrite(fd, f"pid {os.getpid()} on {socket.gethostname()}, since {now()}\n".encode(), 0)
    _HELD[key] = fd  # never closed: closing any descriptor of the file would drop the lock
    log.info("holding %s (pid %d)", path, os.getpid())
    return path


class SweepDirLock:
    """For launchers: lock the sweep directory in ``setup``, before the sweeper writes anything into it."""

    def setup(self, *, hydra_context: HydraContext, task_function: Any, config: DictConfig) -> None:
        super().setup(hydra_context=hydra_context, task_function=task_function, config=config)  # type: ignore[misc]
        lock_sweep_dir(str(config.hydra.sweep.dir))


@dataclass
class Job:
    """One job of a sweep, as the launcher sees it."""

    idx: int
    overrides: list[str]
    config: DictConfig
    run_dir: Path


def plan_jobs(hydra_context: HydraContext, config: DictConfig, job_overrides: Sequence[Sequence[str]],
              initial_job_idx: int, job_id: Any = None) -> tuple[list[Job], dict[int, JobReturn]]:
    """Compose each job's config, check a resumed sweep, write the queued rows.

    Args:
        hydra_context: The launcher's Hydra context.
        config: The sweep's config.
        job_overrides: The overrides of each job in this batch.
        initial_job_idx: The number of the batch's first job.
        job_id: Callable idx -> hydra.job.id (None: the job number).

    Returns:
        The jobs to launch, and the results of jobs that are not launched: completed ones (with the value
        they returned, read from their metrics.json) and failed ones kept as failed under
        ``rerun_failed=false``.

    Raises:
        SweepResumeError: A job directory holds a job started with other overrides.
        SweepConfigError: A started job's saved config differs from the one it would get now (the
            experiment file or another config file changed); not with ``resume_force=true``.
    """
    sweep_dir = Path(str(config.hydra.sweep.dir))
    lock_sweep_dir(sweep_dir)  # taken in setup already; here for a launcher that skipped it
    ledger = Ledger(sweep_dir)
    rerun_failed = bool(config.get("rerun_failed", True))
    jobs: list[Job] = []
    kept: dict[int, JobReturn] = {}
    mismatches, changed = [], []
    for offset, overrides in enumerate(job_overrides):
        idx = initial_job_idx + offset
        sweep_config = hydra_context.config_loader.load_sweep_config(config, list(overrides))
        with open_dict(sweep_config):
            sweep_config.hydra.job.id = job_id(idx) if job_id else idx
            sweep_config.hydra.job.num = idx
        run_dir = sweep_dir / str(sweep_config.hydra.sweep.subdir)
        stored, unreadable = read_overrides(run_dir)
        if unreadable:
            mismatches.append(f"  job {idx} ({run_dir}): {unreadable}")
        elif stored is not None:
            before, now_ = comparable_overrides(stored), comparable_overrides(list(overrides))
            if before != now_:
                mismatches.append(f"  job {idx} ({run_dir}): started with {before}, now {now_}")
            else:
                changed += config_changes(idx, run_dir, sweep_config)
        jobs.append(Job(idx, list(overrides), sweep_config, run_dir))
    if mismatches:
        raise SweepResumeError(f"{sweep_dir} holds jobs started with other overrides; resuming would mix two sweeps:\n"
                               + "\n".join(mismatches)
                               + "\nRun the sweep's original command (same values, same order), or start a new sweep.")
    if changed:
        message = (f"{sweep_dir}: the config files changed since its jobs started; resuming would run the rest under "
                   "another config than the jobs that ran, and a summary would pool both:\n" + "\n".join(changed)
                   + "\nRestore the config files as they were, or start a new sweep; resume_force=true resumes anyway.")
        if not config.get("resume_force", False):
            raise SweepConfigError(message)
        log.warning("resume_force=true: %s", message)
    to_run = []
    for job in jobs:
        row = ledger.read(job.idx) or {}
        done = completed_metrics(job.run_dir)
        if done is not None:  # not launched: a process, Ray task or SLURM job for nothing
            log.info("job %d completed earlier: not launched", job.idx)
            if not row:  # a sweep from before the ledger
                ledger.update(job.idx, state="completed", **job_fields(filter_overrides(job.overrides), job.run_dir))
            kept[job.idx] = completed_return(job, done)
            continue
        if failed_before(job.run_dir, row) and not rerun_failed:
            log.info("job %d failed before and rerun_failed=false: left as it is", job.idx)
            kept[job.idx] = failed_return(job, RuntimeError(f"job {job.idx} failed earlier (left by rerun_failed=false): "
                                                            f"{row.get('exit_reason') or 'see its failure.json'}"))
            continue
        ledger.update(job.idx, state="queued", start=None, end=None, exit_reason=None,
                      **job_fields(filter_overrides(job.overrides), job.run_dir))
        to_run.append(job)
    return to_run, kept


def config_changes(idx: int, run_dir: Path, sweep_config: DictConfig, limit: int = 20) -> list[str]:
    """How the config a job would get now differs from the one it started with (its ``.hydra/config.yaml``).

    Both are compared unresolved, as rigor/guard.py ``relevant_config`` defines them (plumbing keys left
    out), so an edited experiment file shows as the keys it changed and a moved sweep directory as nothing.

    Returns:
        Message lines naming the job and each changed key (none: unchanged, or the job never started).
    """
    from rigor.guard import config_diff, relevant_config  # imports Lightning: only for a resumed sweep

    saved, unreadable = read_config(run_dir)
    if unreadable:
        return [f"  job {idx} ({run_dir}): {unreadable}"]
    if saved is None:
        return []
    diff = config_diff(relevant_config(saved, resolve=False), relevant_config(sweep_config, resolve=False))
    lines = [f"  job {idx} ({run_dir}): {key}: {old!r} (saved) -> {new!r} (now)" for key, old, new in diff[:limit]]
    return lines + ([f"  job {idx}: ... and {len(diff) - limit} more"] if len(diff) > limit else [])


def sweep_value(cfg: DictConfig, metrics: dict[str, Any]) -> float | None:
    """The metric a sweeper optimises: optimized_metric, else the best value of the module's monitor."""
    name = cfg.get("optimized_metric") or next((k for k in metrics if k.startswith("best_") and k != "best_epoch"), "")
    value = metrics.get(name)
    return float(value) if isinstance(value, (int, float)) else None


def completed_return(job: Job, metrics: dict[str, Any]) -> JobReturn:
    """The JobReturn of a job that completed in an earlier start of the sweep (what train.py returned then)."""
    ret = JobReturn(overrides=job.overrides, cfg=job.config, hydra_cfg=None, working_dir=str(job.run_dir), task_name=None,
                    status=JobStatus.COMPLETED)
    ret.return_value = sweep_value(job.config, metrics)
    return ret


def failed_return(job: Job, error: BaseException) -> JobReturn:
    """A JobReturn that the sweeper reports as this job's failure (after the other jobs ran)."""
    ret = JobReturn(overrides=job.overrides, cfg=None, hydra_cfg=None, working_dir=str(job.run_dir), task_name=None,
                    status=JobStatus.FAILED)
    ret.return_value = error
    return ret


class BasicLauncher(SweepDirLock, HydraBasicLauncher):
    """Hydra's basic launcher (one job after the other, in this process) with the ledger and resume checks."""

    def launch(self, job_overrides: Sequence[Sequence[str]], initial_job_idx: int) -> Sequence[JobReturn]:
        setup_globals()
        assert self.hydra_context is not None and self.config is not None and self.task_function is not None
        configure_log(self.config.hydra.hydra_logging, self.config.hydra.verbose)
        jobs, results = plan_jobs(self.hydra_context, self.config, job_overrides, initial_job_idx)
        log.info("Launching %d jobs locally (%d left as they are)", len(jobs), len(results))
        for job in jobs:
            log.info("\t#%d : %s", job.idx, " ".join(filter_overrides(job.overrides)))
            results[job.idx] = run_job(hydra_context=self.hydra_context, task_function=self.task_function,
                                       config=job.config, job_dir_key="hydra.sweep.dir", job_subdir_key="hydra.sweep.subdir")
            configure_log(self.config.hydra.hydra_logging, self.config.hydra.verbose)
        return [results[i] for i in sorted(results)]


# --- Ray ------------------------------------------------------------------------------------------

#: ray.init options that describe a new local cluster; an existing one (ray.init.address) refuses them
LOCAL_CLUSTER_KEYS = ("num_cpus", "num_gpus", "resources", "object_store_memory", "include_dashboard", "dashboard_host",
                      "dashboard_port", "_memory", "_temp_dir", "_system_config")


def ray_init_options(init: DictConfig | dict[str, Any]) -> dict[str, Any]:
    """ray.init keyword arguments: all given ones for a new local cluster, no resource ones for an existing one.

    Args:
        init: ``hydra.launcher.ray.init``; ``address`` null means a new cluster on this machine.
    """
    options = OmegaConf.to_container(init, resolve=True) if isinstance(init, DictConfig) else dict(init)
    if not options.get("address"):
        # "local": always a new cluster; with no address Ray joins any cluster `ray start` left on this machine
        options["address"] = "local"
    elif options["address"] != "local":
        dropped = [k for k in LOCAL_CLUSTER_KEYS if options.pop(k, None) is not None]
        if dropped:
            log.info("ray.init.address=%s: an existing cluster; its own resources apply (ignoring %s)", options["address"], dropped)
    return {k: v for k, v in options.items() if v is not None}


def gpus_per_job(trainer: Any) -> int:
    """GPUs a job asks Ray for when ``ray.remote.num_gpus`` is null: what its trainer config uses.

    Ray hands out 0 GPUs unless asked, and then leaves CUDA_VISIBLE_DEVICES alone, so every job of a GPU
    sweep would land on the same GPU.
    """
    trainer = trainer or {}
    if str(trainer.get("accelerator", "cpu")) not in ("gpu", "cuda"):
        return 0
    devices = trainer.get("devices", 1)
    if isinstance(devices, int) and devices > 0:
        return devices
    if isinstance(devices, (list, tuple)) or OmegaConf.is_list(devices):
        return len(devices)
    return 1  # "auto", -1: one GPU per job; ask for more with hydra.launcher.ray.remote.num_gpus


def _run_job_in_worker(hydra_context: HydraContext, sweep_config: DictConfig, task_function: Any,
                       singleton_state: dict[Any, Any]) -> JobReturn:
    """Run one job in a Ray worker; cpu_threads, when null, follows the CPUs Ray gave the task."""
    import ray

    from rigor.config import register_resolvers

    register_resolvers()  # the worker never imported train.py, whose config uses them
    if sweep_config.get("cpu_threads") is None:
        cpus = ray.get_runtime_context().get_assigned_resources().get("CPU")
        if cpus:
            with open_dict(sweep_config):
                sweep_config.cpu_threads = max(1, int(cpus))
    return ray_run_job()(hydra_context=hydra_context, sweep_config=sweep_config, task_function=task_function,
                         singleton_state=singleton_state)


def _reason(err: BaseException, limit: int = 400) -> str:
    text = " ".join(line.strip() for line in str(err).strip().splitlines() if line.strip())
    text = text.split(" Error stream produced:")[0]  # submitit appends the job's whole stderr
    text = f"{type(err).__name__}: {text}"
    return text if len(text) <= limit else text[: limit - 3] + "..."


def record_lost_job(ledger: Ledger, job: Job, err: BaseException, where: str, detail: str = "") -> JobReturn:
    """A job that ended without returning (its worker killed, an error outside the job): a failed job.

    Its ledger row keeps the end the job wrote itself (failed / terminated), else becomes failed with
    the reason.
    """
    reason = _reason(err) + detail
    log.error("job %d failed in %s: %s", job.idx, where, reason)
    row = ledger.read(job.idx) or {}
    if row.get("state") in ("failed", "terminated"):
        own = row.get("exit_reason")  # the job's own word, and the scheduler's after it
        ledger.update(job.idx, exit_reason=own + detail if own and detail and detail not in own else own or reason)
    else:
        ledger.update(job.idx, state="failed", end=now(), exit_reason=reason)
    return failed_return(job, RuntimeError(f"job {job.idx} ({job.run_dir}): {reason}"))


class RayLauncher(SweepDirLock, PluginRayLauncher):
    """hydra-ray-launcher's local launcher, with failures collected per job instead of raised on the first one.

    Config (conf/hydra/launcher/ray.yaml): ``ray.init`` goes to ``ray.init`` (``address`` joins an
    existing cluster), ``ray.remote`` to ``ray.remote`` for every job (``num_cpus``, ``num_gpus``,
    ``max_retries``, ``memory``).
    """

    def launch(self, job_overrides: Sequence[Sequence[str]], initial_job_idx: int) -> Sequence[JobReturn]:
        results = self.submit(job_overrides, initial_job_idx)
        while self.running():
            results.update(self.wait_next())
        return [results[i] for i in sorted(results)]

    def running(self) -> int:
        """How many submitted jobs have not been collected by ``wait_next``."""
        return len(self.__dict__.get("_pending", {}))

    def submit(self, job_overrides: Sequence[Sequence[str]], initial_job_idx: int) -> dict[int, JobReturn]:
        """Start a batch's jobs as Ray tasks without waiting for them (rigor.search: a freed slot takes the next trial).

        Returns:
            The results of the jobs that are not launched (completed earlier, or kept failed); collect the
            launched ones with ``wait_next``.
        """
        import ray

        setup_globals()
        assert self.config is not None and self.hydra_context is not None and self.task_function is not None
        configure_log(self.config.hydra.hydra_logging, self.config.hydra.verbose)
        jobs, results = plan_jobs(self.hydra_context, self.config, job_overrides, initial_job_idx,
                                  job_id=lambda idx: f"job_id_for_{idx}")
        if not jobs:
            return results
        if not ray.is_initialized():
            options = ray_init_options(ray_launcher_config(self).init)
            log.info("starting Ray: ray.init(%s)", options)
            ray.init(**options)
        remote = {"num_cpus": 1, "max_retries": 0, **OmegaConf.to_container(ray_launcher_config(self).remote, resolve=True)}
        if remote.get("num_gpus") is None:
            remote["num_gpus"] = gpus_per_job(self.config.get("trainer"))
        remote = {k: v for k, v in remote.items() if v is not None}
        task = ray.remote(**remote)(_run_job_in_worker)
        log.info("Ray launcher: %d jobs (ray.remote %s), sweep dir %s", len(jobs), remote, self.config.hydra.sweep.dir)
        state = Singleton.get_state()
        pending = self.__dict__.setdefault("_pending", {})
        for job in jobs:
            log.info("\t#%d : %s", job.idx, " ".join(filter_overrides(job.overrides)))
            ref = task.remote(hydra_context=self.hydra_context, sweep_config=job.config, task_function=self.task_function,
                              singleton_state=state)
            pending[ref] = job
        return results

    def wait_next(self) -> dict[int, JobReturn]:
        """Wait for the first submitted job to finish (``ray.wait``); its result (a failed one for a job that raised
        or whose worker died)."""
        import ray

        assert self.config is not None
        pending = self.__dict__.setdefault("_pending", {})
        ledger = Ledger(self.config.hydra.sweep.dir)
        results: dict[int, JobReturn] = {}
        ready, _ = ray.wait(list(pending), num_returns=1)
        for ref in ready:
            job = pending.pop(ref)
            try:
                results[job.idx] = ray.get(ref)
            except Exception as err:  # RayTaskError, WorkerCrashedError, OutOfMemoryError, ...: this job only
                results[job.idx] = record_lost_job(ledger, job, err, "Ray")
        return results


# --- submitit (SLURM) -----------------------------------------------------------------------------

#: SLURM job states after which a job runs no more (squeue's %T); REQUEUED, PENDING, COMPLETING, ... are alive
SLURM_ENDED = frozenset({"COMPLETED", "CANCELLED", "FAILED", "TIMEOUT", "OUT_OF_MEMORY", "NODE_FAIL", "BOOT_FAIL",
                         "DEADLINE", "PREEMPTED", "REVOKED", "SPECIAL_EXIT"})
#: how early SLURM may send a --signal: it checks time limits every 30 s, its documentation says up to 60 s
SIGNAL_EARLY_S = 60
#: launcher keys that are Rigor's, not submitit's (conf/hydra/launcher/slurm.yaml)
RIGOR_KEYS = ("lost_job_wait_s", "queue_poll_s")

if SlurmQueueConf is not None:

    @dataclass
    class SlurmConf(SlurmQueueConf):  # type: ignore[misc,valid-type]
        """hydra-submitit-launcher's SlurmQueueConf with Rigor's keys (the schema of conf/hydra/launcher/slurm.yaml).

        Attributes:
            lost_job_wait_s: How long a job that left SLURM's queue may take to leave its result (a shared
                file system's delay) before it is a failed job.
            queue_poll_s: The longest wait between two ``squeue`` calls (they start 2 s apart and double).
        """

        _target_: str = "hydra_plugins.rigor_launchers.SlurmLauncher"
        lost_job_wait_s: int = 30
        queue_poll_s: int = 30

    ConfigStore.instance().store(group="hydra/launcher", name="slurm_schema", node=SlurmConf, provider="rigor")


def check_time_limit(params: dict[str, Any]) -> None:
    """Refuse a time limit at or under the lead time of SLURM's warning signal.

    SLURM sends the signal ``signal_delay_s`` before the limit: with a shorter limit it comes as the job
    starts, before a handler is set, and kills it (exit 140) with nothing requeued.

    Raises:
        ValueError: Naming both values.
    """
    timeout_min, delay_s = params.get("timeout_min"), params.get("signal_delay_s")
    if timeout_min is None or delay_s is None:
        return
    limit_s, delay_s = int(timeout_min) * 60, int(delay_s)
    if limit_s <= delay_s:
        raise ValueError(
            f"hydra.launcher.timeout_min={timeout_min} ({limit_s} s) is at or under hydra.launcher.signal_delay_s="
            f"{delay_s}: SLURM would send its warning signal as the job starts, before a handler is set, and kill it "
            "(exit 140) without a requeue. Give a longer timeout_min or a shorter signal_delay_s.")
    if limit_s - delay_s < SIGNAL_EARLY_S:
        log.warning("hydra.launcher.timeout_min=%s (%d s) leaves %d s before SLURM's warning signal "
                    "(signal_delay_s=%d), which SLURM may send up to %d s early: a job that has not set its handler "
                    "by then (a few seconds of imports) dies without a requeue", timeout_min, limit_s,
                    limit_s - delay_s, delay_s, SIGNAL_EARLY_S)


class SignalOwner:
    """In a SLURM job: the one handler of SLURM's warning signals (submitit's USR2 and Lightning's USR1).

    submitit's own USR2 handler requeues the job and exits at once, in the middle of a training step, and
    Lightning (which sees SLURM) would set a USR1 handler that saves and requeues on its own. Instead, the
    signal stops the run as SIGTERM does (train.py's handler: at the next batch boundary, ledger
    ``terminated``; last.ckpt holds the last finished epoch), and once the run has ended, submitit's
    handler requeues the job (up to ``max_num_timeout`` time-outs) or says why not. Lightning sets its
    handler only where none is set, so it never acts.
    """

    def __init__(self) -> None:
        self.received: int | None = None
        self.submitit_handler: Any = None
        self.previous: dict[int, Any] = {}

    def install(self) -> SignalOwner:
        usr = submitit_slurm_signal()
        self.submitit_handler = signal.getsignal(usr)
        for signum in dict.fromkeys((usr, signal.SIGUSR1)):
            self.previous[signum] = signal.signal(signum, self)
        return self

    def __call__(self, signum: int, frame: Any) -> None:
        if self.received is None:
            log.warning("%s from SLURM (its time limit is near, or it is preempted): the run stops at the next batch "
                        "boundary, then the job is requeued and resumes from last.ckpt", signal.Signals(signum).name)
        self.received = signum
        term = signal.getsignal(signal.SIGTERM)
        if callable(term):
            term(signal.SIGTERM, frame)  # train.py's (Lightning's while fitting, which calls train.py's)

    def requeue(self) -> None:
        """Hand the signal to submitit: it resubmits this call, runs ``scontrol requeue`` and exits, or raises.

        Not when SLURM no longer runs the job: a ``scancel`` or ``scontrol requeue`` (SIGTERM) that came
        before or with the warning has decided already, and a cancelled job must stay cancelled.
        """
        if not callable(self.submitit_handler) or self.received is None:
            return
        array, task = os.environ.get("SLURM_ARRAY_JOB_ID"), os.environ.get("SLURM_ARRAY_TASK_ID")
        job_id = f"{array}_{task}" if array and task else os.environ.get("SLURM_JOB_ID", "")  # as squeue names it
        states = slurm_states([job_id]) if job_id else None
        state = (states or {}).get(job_id, ("", ""))[0]
        if states is not None and state != "RUNNING":
            log.warning("SLURM job %s is %s (cancelled or requeued from outside): not requeued by Rigor",
                        job_id, state or "gone")
            return
        self.submitit_handler(self.received, None)

    def uninstall(self) -> None:
        for signum, handler in self.previous.items():
            signal.signal(signum, handler)


def _slurm(command: list[str], timeout: float = 60) -> subprocess.CompletedProcess | None:
    try:
        return subprocess.run(command, capture_output=True, text=True, timeout=timeout)
    except (OSError, subprocess.TimeoutExpired) as err:
        log.warning("%s: %s", command[0], err)
        return None


def slurm_states(job_ids: Sequence[str]) -> dict[str, tuple[str, str]] | None:
    """SLURM's state and reason of each job still in the controller's memory (squeue, no accounting needed).

    A job that is not listed has ended long enough ago (``MinJobAge``) to be purged.

    Returns:
        job id (``123_4`` for array tasks) -> (state, reason); None when squeue could not ask the controller.
    """
    arrays = sorted({j.split("_")[0] for j in job_ids})
    out = _slurm(["squeue", "--noheader", "--array", "--states=all", f"--jobs={','.join(arrays)}", "--format=%i|%T|%r"])
    if out is None:
        return None
    if out.returncode != 0:
        if "Invalid job id" in out.stderr:
            return {}  # all purged
        log.warning("squeue failed (%s): job states unknown this time", out.stderr.strip()[:200])
        return None
    states = {}
    for line in out.stdout.splitlines():
        parts = line.strip().split("|")
        if len(parts) == 3:
            states[parts[0]] = (parts[1], parts[2])
    return states


def slurm_end(job_id: str) -> str:
    """How a job that left the queue ended, in a few words (``scontrol show job``; sacct when it was purged)."""
    out = _slurm(["scontrol", "--oneliner", "show", "job", job_id], timeout=30)
    if out is not None and out.returncode == 0:
        fields = dict(kv.split("=", 1) for kv in out.stdout.split() if "=" in kv)
        code = fields.get("ExitCode", "?")
        status = code.split(":")[0]
        if status.isdigit() and int(status) > 128 and int(status) - 128 in signal.valid_signals():
            code += f" ({signal.Signals(int(status) - 128).name})"  # the job's process died of it
        return f"SLURM state {fields.get('JobState', '?')}, exit code {code}, reason {fields.get('Reason', '?')}"
    out = _slurm(["sacct", "--noheader", "--parsable2", "--allocations", "--format=State,ExitCode", f"--jobs={job_id}"],
                 timeout=30)
    if out is not None and out.returncode == 0 and out.stdout.strip():
        state, _, code = out.stdout.strip().splitlines()[0].partition("|")
        return f"SLURM state {state}, exit code {code} (from accounting)"
    return "no longer known to SLURM (purged after MinJobAge, and no accounting to ask)"


def collect_slurm(jobs: Sequence[Job], handles: Sequence[Any], ledger: Ledger, lost_job_wait_s: float,
                  queue_poll_s: float) -> dict[int, JobReturn]:
    """Wait for every SLURM job's result; a job that left the queue without one is a failed job.

    submitit learns job states from sacct only: without accounting every poll logs three "Bypassing sacct
    error" lines and a job that died without a result (killed before its handler was set, cancelled, out of
    memory) stays "unknown", so the sweep waited forever. Here the result files are checked every second
    and the queue with one ``squeue`` (2 s, then doubling up to `queue_poll_s`); a job that has ended
    (or is no longer listed) and has left no result within `lost_job_wait_s` is failed, with how it ended.

    Returns:
        Job number -> its JobReturn.
    """
    results: dict[int, JobReturn] = {}
    pending = {job.idx: (job, handle) for job, handle in zip(jobs, handles)}
    seen: dict[int, str] = {}
    ended_at: dict[int, float] = {}
    interval, next_poll = 2.0, 0.0
    while pending:
        for idx, (job, handle) in list(pending.items()):
            if submitit_result_file(handle).exists():
                del pending[idx]
                try:
                    results[idx] = handle.results()[0]
                except Exception as err:  # submitit.core.utils.UncompletedJobError (not requeued), ...: this job only
                    results[idx] = record_lost_job(ledger, job, err, "SLURM", f" [SLURM job {handle.job_id}]")
        if not pending:
            break
        clock = time.monotonic()
        if clock >= next_poll:
            states = slurm_states([h.job_id for _, h in pending.values()])
            for idx, (job, handle) in pending.items() if states is not None else ():
                state, reason = states.get(handle.job_id, ("GONE", "not in the queue"))
                if seen.get(idx) != f"{state} ({reason})":
                    seen[idx] = f"{state} ({reason})"
                    log.info("job %d (SLURM %s): %s", idx, handle.job_id, seen[idx])
                if state in SLURM_ENDED or state == "GONE":
                    ended_at.setdefault(idx, clock)
                else:
                    ended_at.pop(idx, None)  # requeued
            interval, next_poll = min(interval * 2, queue_poll_s), clock + interval
        for idx in [i for i, t in ended_at.items() if i in pending and clock - t >= lost_job_wait_s]:
            job, handle = pending.pop(idx)
            err = RuntimeError(f"SLURM job {handle.job_id} ended without a result (waited {lost_job_wait_s:g} s for it)")
            results[idx] = record_lost_job(ledger, job, err, "SLURM", f" [{slurm_end(handle.job_id)}]")
        time.sleep(1)
    return results


class SubmititMixin(SweepDirLock):
    """For hydra-submitit-launcher's launchers: the ledger, resume checks, and per-job failures.

    The plugin's own launch returns ``[j.results()[0] for j in jobs]``, so the first job that raised
    outside train.py (killed for memory, a node failure) ended the collection of the others, and a job
    that vanished without a result (no accounting) was waited for forever. With ``slurm``: a time limit
    at or under the warning signal's lead time is refused before anything is submitted, jobs are
    followed through squeue (``collect_slurm``), and in the job one handler owns the warning signal
    (``SignalOwner``).
    """

    def setup(self, *, hydra_context: HydraContext, task_function: Any, config: DictConfig) -> None:
        if submitit_executor(self) == "slurm":
            check_time_limit(self.params)  # type: ignore[attr-defined]
        super().setup(hydra_context=hydra_context, task_function=task_function, config=config)

    def __call__(self, *args: Any, **kwargs: Any) -> JobReturn:
        from rigor.config import register_resolvers

        register_resolvers()  # the job process never imported train.py, whose config uses them
        owner = SignalOwner().install() if submitit_executor(self) == "slurm" else None
        try:
            return super().__call__(*args, **kwargs)  # type: ignore[misc]
        except BaseException:
            if owner is not None and owner.received is not None:
                owner.uninstall()
                owner.requeue()  # exits; or raises why not (too many time-outs), which submitit records as the result
            raise
        finally:
            if owner is not None:
                owner.uninstall()

    def launch(self, job_overrides: Sequence[Sequence[str]], initial_job_idx: int) -> Sequence[JobReturn]:
        import submitit

        config, name = self.config, submitit_executor(self)  # type: ignore[attr-defined]
        assert config is not None
        jobs, results = plan_jobs(self.hydra_context, config, job_overrides, initial_job_idx,  # type: ignore[attr-defined]
                                  job_id=lambda idx: f"job_id_for_{idx}")
        if not jobs:
            return [results[i] for i in sorted(results)]
        # the executor, as the plugin builds it
        params = dict(self.params)  # type: ignore[attr-defined]
        rigor = {k: params.pop(k) for k in RIGOR_KEYS if k in params}
        if name == "slurm" and params.get("gpus_per_node") is None:
            # a CPU trainer asks for none; sbatch would refuse GPUs a node does not have
            params["gpus_per_node"] = gpus_per_job(config.get("trainer")) or None
        init_keys = {"max_num_timeout", "submitit_folder"}
        init_params = {"folder": params["submitit_folder"]}
        if "max_num_timeout" in params:
            init_params[f"{name}_max_num_timeout"] = params["max_num_timeout"]
        executor = submitit.AutoExecutor(cluster=name, **init_params)
        base = set(OmegaConf.structured(BaseQueueConf).keys())
        executor.update_parameters(**{k if k in base else f"{name}_{k}": v for k, v in params.items()
                                      if k not in init_keys and v is not None})
        sweep_dir = Path(str(config.hydra.sweep.dir))
        if "mode" in config.hydra.sweep:
            os.chmod(sweep_dir, mode=int(str(config.hydra.sweep.mode), 8))
        log.info("Submitit '%s': %d jobs (%d left as they are), sweep dir %s", name, len(jobs), len(results), sweep_dir)
        state = Singleton.get_state()
        params_per_job = [(job.overrides, "hydra.sweep.dir", job.idx, f"job_id_for_{job.idx}", state) for job in jobs]
        for job in jobs:
            log.info("\t#%d : %s", job.idx, " ".join(filter_overrides(job.overrides)))
        submitted = executor.map_array(self, *zip(*params_per_job))
        ledger = Ledger(sweep_dir)
        if name == "slurm":
            log.info("SLURM jobs %s: following them with squeue (no sacct needed)", ", ".join(h.job_id for h in submitted))
            results.update(collect_slurm(jobs, submitted, ledger, float(rigor.get("lost_job_wait_s", 30)),
                                         float(rigor.get("queue_poll_s", 30))))
            return [results[i] for i in sorted(results)]
        for job, handle in zip(jobs, submitted):
            try:
                results[job.idx] = handle.results()[0]
            except Exception as err:  # submitit.core.utils.FailedJobError, UncompletedJobError, ...: this job only
                results[job.idx] = record_lost_job(ledger, job, err, f"submitit ({name})", f" [state: {handle.state}]")
        return [results[i] for i in sorted(results)]
