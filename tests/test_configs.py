"""Every config composes; bad names fail early with Hydra's message."""

import subprocess
import sys

import hydra
import pytest
from hydra.errors import ConfigCompositionException
from omegaconf import OmegaConf

from tests.conftest import ROOT, compose

EXPERIMENTS = sorted(p.stem for p in (ROOT / "conf" / "experiment").glob("*.yaml"))


@pytest.mark.parametrize("experiment", EXPERIMENTS)
def test_experiment_composes(experiment):
    cfg = compose([f"experiment={experiment}"])
    assert cfg.experiment_name == experiment
    assert hydra.utils.get_class(cfg.model._target_)
    assert hydra.utils.get_class(cfg.data._target_)
    OmegaConf.to_container(cfg.data, resolve=True)
    OmegaConf.to_container(cfg.model, resolve=True)


def test_lens_matrix_matches_seed_004():
    a1, b1, b2, b3, b4 = (compose([f"experiment=lens_{x}"]) for x in ("a1", "b1", "b2", "b3", "b4"))
    assert (a1.data.mode, a1.data.preprocessing, a1.data.masking) == ("paired", "residual", None)
    assert (b1.data.mode, b1.data.preprocessing, b1.data.masking) == ("unpaired", "residual", None)
    assert dict(b2.data.masking) == {"type": "stochastic", "radius": 5, "prob": 0.5}
    assert dict(b4.data.masking) == {"type": "stochastic", "radius": 3, "prob": 0.3}
    sched = OmegaConf.to_container(b3.data.masking.schedule)
    assert sched == [{"until_epoch": 10, "radius": 7, "prob": 0.7}, {"until_epoch": 30, "radius": 5, "prob": 0.5},
                     {"until_epoch": None, "radius": 3, "prob": 0.3}]
    for cfg in (a1, b1, b2, b3, b4):  # seed 004 section 4.2
        assert cfg.trainer.max_epochs == 50 and cfg.data.batch_size == 128
        assert cfg.model.optimizer.lr == 1e-4 and cfg.model.optimizer.weight_decay == 1e-4
        assert cfg.model.scheduler._target_.endswith("CosineAnnealingLR") and cfg.callbacks.early_stopping.patience == 15
        assert cfg.model.optimizer._target_ == "torch.optim.AdamW"
        assert cfg.callbacks.early_stopping.monitor == "val/auroc" and cfg.callbacks.early_stopping.mode == "max"
        assert cfg.callbacks.shortcut_gates.n_samples == 2000 and cfg.callbacks.shortcut_gates.every_n_epochs == 5
        assert cfg.model.net.model_name == "resnet18" and cfg.model.net.in_chans == 3 and cfg.model.net.num_classes == 1
    gpu = compose(["experiment=lens_b1", "trainer=gpu"])
    assert gpu.trainer.precision == "16-mixed"


def test_unknown_experiment_fails_composition():
    with pytest.raises(ConfigCompositionException, match="nope"):
        compose(["experiment=nope"])


def test_bad_override_fails_before_any_work(tmp_path):
    for override, message in (("experiment=nope", "Could not find 'experiment/nope'"),
                              ("data.batchsize=3", "Could not override 'data.batchsize'")):
        proc = subprocess.run([sys.executable, "train.py", override, f"paths.log_dir={tmp_path}"], cwd=ROOT,
                              capture_output=True, text=True, timeout=120)
        assert proc.returncode != 0
        assert message in proc.stderr
    assert not any(tmp_path.iterdir())  # nothing was written


def test_train_py_imports_neither_torch_nor_lightning_before_a_run_starts():
    # a bad override, a refused sweep and a sweep's launching process (its jobs train elsewhere) stop or wait
    # before any run starts: they must not pay the seconds those imports take (7 s for a typo before)
    code = "import sys, train; print(sorted(m for m in ('torch', 'lightning') if m in sys.modules))"
    proc = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0 and proc.stdout.strip() == "[]", proc.stdout + proc.stderr[-2000:]


def test_monitor_and_mode_read_from_the_source_equal_the_classes(tmp_path, monkeypatch):
    import textwrap

    from rigor.config import _literal_class_attribute, _module_class_attribute

    targets = {cfg.model._target_ for cfg in (compose([f"experiment={e}"]) for e in EXPERIMENTS)}
    assert len(targets) >= 6
    for target in targets:
        cls = hydra.utils.get_class(target)
        for name in ("monitor", "mode"):
            assert _literal_class_attribute(target, name) == getattr(cls, name), (target, name)
    # what the source cannot say is asked of the class: a computed value, two bases, a class not in the file
    (tmp_path / "odd_modules.py").write_text(textwrap.dedent("""
        class Base:
            monitor = "val/loss"
        class Computed(Base):
            monitor = "val/" + "auroc"
        class Child(Base):
            pass
        class Mixin:
            pass
        class Two(Mixin, Base):
            pass
        class Twice(Base):
            monitor = "val/loss"
            monitor = "val/accuracy"
        class Property(Base):
            @property
            def monitor(self):
                return "val/auroc"
        Alias = Base
    """))
    monkeypatch.syspath_prepend(str(tmp_path))
    assert _literal_class_attribute("odd_modules.Child", "monitor") == "val/loss"  # from its base in the file
    assert _literal_class_attribute("odd_modules.Twice", "monitor") == "val/accuracy"  # the last assignment holds
    for target in ("odd_modules.Computed", "odd_modules.Two", "odd_modules.Property", "odd_modules.Alias",
                   "no_such_module.X"):
        with pytest.raises(LookupError):
            _literal_class_attribute(target, "monitor")
    monkeypatch.setenv("RIGOR_EXTRA_TARGETS", "odd_modules")
    assert _module_class_attribute("odd_modules.Computed", "monitor") == "val/auroc"  # imported
    assert _module_class_attribute("odd_modules.Two", "monitor") == "val/loss"


def test_sweep_dirs_of_concurrent_sweeps_differ():
    # two processes started in the same second: the directory name carries a per-process token
    code = ("from omegaconf import OmegaConf; from rigor.config import register_resolvers; register_resolvers(); "
            "c = OmegaConf.create({'d': 'sweep_${run_uid:}', 'e': '${run_uid:}'}); "
            "assert c.d.endswith(c.e); print(c.d)")
    procs = [subprocess.Popen([sys.executable, "-c", code], cwd=ROOT, stdout=subprocess.PIPE, text=True) for _ in range(2)]
    # a generous timeout keeps a loaded CI machine from failing it
    names = [p.communicate(timeout=300)[0].strip() for p in procs]
    assert all(names) and names[0] != names[1]
    cfg = compose([])
    assert "${run_uid:}" in OmegaConf.to_container(cfg.hydra.sweep)["dir"]
    assert "${run_uid:}" in OmegaConf.to_container(cfg.hydra.run)["dir"]


def test_slurm_launcher_takes_tasks_and_gpus_from_trainer():
    cfg = compose(["hydra/launcher=slurm", "trainer=ddp", "trainer.devices=4", "trainer.num_nodes=2"])
    launcher = cfg.hydra.launcher
    assert launcher._target_.endswith("SlurmLauncher")
    assert (launcher.tasks_per_node, launcher.nodes) == (4, 2)
    # gpus_per_node null: the launcher asks for the trainer's GPUs only when it uses them (rigor/launchers.py)
    from rigor.launchers import gpus_per_job

    assert launcher.gpus_per_node is None and gpus_per_job(cfg.trainer) == 4
    assert gpus_per_job(compose(["hydra/launcher=slurm", "trainer=cpu"]).trainer) == 0
    assert launcher.signal_delay_s < launcher.timeout_min * 60 and launcher.lost_job_wait_s > 0


def test_ddp_strategy_follows_slurm(monkeypatch):
    from rigor.config import _ddp_strategy

    monkeypatch.delenv("SLURM_NTASKS", raising=False)
    assert _ddp_strategy() == "ddp_spawn"
    monkeypatch.setenv("SLURM_NTASKS", "8")
    assert _ddp_strategy() == "ddp"
