"""Every Hydra, plugin and submitit internal that rigor/launchers.py touches is still there.

rigor/launchers.py lists them in one block ("Hydra and plugin internals") with the versions they were
written against, and pyproject.toml pins those ranges; this test is what fails when an upgrade moves one,
instead of a sweep.
"""

from __future__ import annotations

import importlib.util
import inspect
import signal
from dataclasses import fields

import pytest

from rigor import launchers


def params(func: object) -> list[str]:
    return list(inspect.signature(func).parameters)


def same(a: object, b: object) -> bool:
    """The same class or function by its import path (a test that re-imports Hydra's plugins can make two copies)."""
    return (getattr(a, "__module__", None), getattr(a, "__qualname__", None)) == (b.__module__, b.__qualname__)


def test_hydra_core_internals():
    from hydra._internal.config_loader_impl import ConfigLoaderImpl
    from hydra._internal.core_plugins.basic_launcher import BasicLauncher
    from hydra.core.config_loader import ConfigLoader
    from hydra.core.singleton import Singleton
    from hydra.core.utils import JobReturn, configure_log, filter_overrides, run_job, setup_globals

    assert same(launchers.HydraBasicLauncher, BasicLauncher) and same(launchers.HydraConfigLoaderImpl, ConfigLoaderImpl)
    # rigor.config wraps load_configuration and passes the first four by position
    assert params(ConfigLoaderImpl.load_configuration)[:4] == ["self", "config_name", "overrides", "run_mode"]
    assert params(ConfigLoader.load_sweep_config) == ["self", "master_config", "sweep_overrides"]
    launcher = BasicLauncher()  # setup() sets what rigor's launch reads
    assert {"hydra_context", "task_function", "config"} <= set(params(BasicLauncher.setup))
    assert {"config", "hydra_context", "task_function"} <= set(vars(launcher))
    assert {"hydra_context", "task_function", "config", "job_dir_key", "job_subdir_key"} <= set(params(run_job))
    assert params(configure_log)[:2] == ["log_config", "verbose_config"] and callable(setup_globals)
    assert callable(filter_overrides) and callable(Singleton.get_state)
    from hydra.core.plugins import Plugins  # rigor.search's sweeper gets its launcher as Hydra's sweepers do

    assert params(Plugins.instantiate_launcher)[1:] == ["hydra_context", "task_function", "config"]
    assert {"overrides", "cfg", "hydra_cfg", "working_dir", "task_name", "status"} <= {f.name for f in fields(JobReturn)}
    assert isinstance(getattr(JobReturn, "return_value", None), property)  # the setter rigor's results use


@pytest.mark.skipif(launchers.PluginSlurmLauncher is None, reason="hydra-submitit-launcher not installed")
def test_submitit_plugin_internals():
    import submitit
    from hydra_plugins.hydra_submitit_launcher.config import BaseQueueConf
    from hydra_plugins.hydra_submitit_launcher.submitit_launcher import BaseSubmititLauncher, LocalLauncher, SlurmLauncher

    assert same(launchers.PluginSlurmLauncher, SlurmLauncher) and same(launchers.PluginSubmititLocalLauncher, LocalLauncher)
    assert same(launchers.BaseQueueConf, BaseQueueConf) and "submitit_folder" in {f.name for f in fields(BaseQueueConf)}
    assert launchers.submitit_executor(SlurmLauncher) == "slurm" and launchers.submitit_executor(LocalLauncher) == "local"
    assert params(BaseSubmititLauncher.__call__) == ["self", "sweep_overrides", "job_dir_key", "job_num", "job_id",
                                                     "singleton_state"]
    local = LocalLauncher(submitit_folder="x", timeout_min=1)
    assert local.params["submitit_folder"] == "x"  # rigor's launch builds the executor from params
    assert {"hydra_context", "task_function", "config"} <= set(params(BaseSubmititLauncher.setup))
    assert {"cluster", "folder"} <= set(params(submitit.AutoExecutor.__init__))
    for name in ("update_parameters", "map_array"):
        assert callable(getattr(submitit.AutoExecutor, name))
    assert callable(submitit.Job.results) and isinstance(submitit.Job.state, property)
    # the SLURM launcher: its schema, the resubmission a requeue runs, where results appear, the warning signal
    from hydra_plugins.hydra_submitit_launcher.config import SlurmQueueConf

    assert same(launchers.SlurmQueueConf, SlurmQueueConf) and any(same(base, SlurmQueueConf) for base in launchers.SlurmConf.__mro__)
    assert {"signal_delay_s", "max_num_timeout", "timeout_min"} <= {f.name for f in fields(SlurmQueueConf)}
    assert callable(BaseSubmititLauncher.checkpoint)
    assert isinstance(submitit.Job.paths, property) and isinstance(inspect.getattr_static(submitit.Job, "job_id"), property)
    assert isinstance(submitit.core.utils.JobPaths.result_pickle, property)
    assert launchers.submitit_slurm_signal() == signal.SIGUSR2
    assert "signal" in inspect.getsource(submitit.slurm.slurm._make_sbatch_string)  # --signal=USR2@signal_delay_s


def test_lightning_leaves_the_slurm_signal_to_rigor(monkeypatch):
    """Lightning sets its SLURM auto-requeue handler (SIGUSR1) only where none is set; Rigor's is set first."""
    import lightning as L
    from lightning.fabric.plugins.environments import SLURMEnvironment

    for key, value in {"SLURM_NTASKS": "1", "SLURM_JOB_NAME": "train", "SLURM_JOB_ID": "1", "SLURM_NODELIST": "vm",
                       "SLURM_PROCID": "0", "SLURM_LOCALID": "0", "SLURM_NODEID": "0"}.items():
        monkeypatch.setenv(key, value)
    trainer = L.Trainer(accelerator="cpu", devices=1, logger=False, enable_checkpointing=False)
    environment = trainer._accelerator_connector.cluster_environment
    assert isinstance(environment, SLURMEnvironment) and environment.auto_requeue  # what Lightning does unasked
    before = {s: signal.getsignal(s) for s in (signal.SIGUSR1, signal.SIGUSR2, signal.SIGTERM)}
    signal.signal(signal.SIGUSR2, lambda *_: None)  # submitit's handler, in a job
    owner = launchers.SignalOwner().install()
    try:
        trainer._signal_connector.register_signal_handlers()
        assert signal.getsignal(signal.SIGUSR1) is owner and signal.getsignal(signal.SIGUSR2) is owner
        trainer._signal_connector.teardown()
    finally:
        owner.uninstall()
        for signum, handler in before.items():
            signal.signal(signum, handler)


@pytest.mark.skipif(not launchers.RAY_AVAILABLE, reason="the ray extra is not installed")
def test_ray_plugin_internals():
    from hydra_plugins.hydra_ray_launcher.ray_launcher import RayLauncher

    assert same(launchers.PluginRayLauncher, RayLauncher)
    assert launchers.ray_launcher_config(RayLauncher(ray={"init": {}, "remote": {}})) == {"init": {}, "remote": {}}
    assert {"hydra_context", "task_function", "config"} <= set(params(RayLauncher.setup))
    # the worker-side helper, found without importing ray here (ray_run_job imports it in the worker)
    assert importlib.util.find_spec("hydra_plugins.hydra_ray_launcher._launcher_util") is not None
    run_job = launchers.ray_run_job()
    assert params(run_job) == ["hydra_context", "sweep_config", "task_function", "singleton_state"]


def test_installed_versions_are_in_the_pinned_ranges():
    """pyproject.toml pins each package whose internals rigor/launchers.py touches, and what is installed fits."""
    tomllib = pytest.importorskip("tomllib")  # Python 3.11+
    from importlib.metadata import PackageNotFoundError, version

    from packaging.requirements import Requirement

    from tests.conftest import ROOT

    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    requirements = [Requirement(r) for r in project["dependencies"] + project["optional-dependencies"]["ray"]]
    pins = {r.name: r.specifier for r in requirements}
    for name in ("hydra-core", "hydra-submitit-launcher", "submitit", "hydra-ray-launcher"):
        assert any(s.operator == "<" for s in pins[name]), f"{name} needs an upper bound in pyproject.toml: {pins[name]}"
        try:
            installed = version(name)
        except PackageNotFoundError:
            continue  # an optional extra
        assert pins[name].contains(installed), f"{name} {installed} is outside pyproject.toml's {pins[name]}"
