"""Shared fixtures: composed configs and a toy lens manifest."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
# the toy family (tests/toy_family/): the core's end-to-end tests run on it, a few seconds a run
TOY_SEARCH = f"hydra.searchpath=[file://{ROOT / 'tests' / 'toy_family' / 'conf'}]"
sys.path.insert(0, str(ROOT))
os.environ.setdefault("WANDB_MODE", "offline")
os.environ.setdefault("WANDB_SILENT", "true")
os.environ.setdefault("HF_HUB_OFFLINE", "1")  # nothing is downloaded; a hub lookup would wait on retries
# the tests' own callbacks and summary plugins (fault injection, toy plugins) may be named by the run configs
# they write and read back (rigor.config.ALLOWED_TARGETS, extended the documented way, by its variable)
os.environ["RIGOR_EXTRA_TARGETS"] = ",".join(filter(None, [os.environ.get("RIGOR_EXTRA_TARGETS"), "tests"]))

from tests.helpers import write_toy_lens_data  # noqa: E402


@pytest.fixture(scope="module")
def one_thread():
    """One torch thread for a module's tests (the machine is shared); restored afterwards."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="session")
def toy_lens_manifest(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_toy_lens_data(tmp_path_factory.mktemp("toy_lens"))


@pytest.fixture(scope="session")
def tiny_data_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One directory per session under which each family builds its tiny data once (tests/families.py)."""
    return tmp_path_factory.mktemp("tiny_families")


def compose(overrides: list[str], config_name: str = "train"):
    """Compose a config the way train.py would (with the hydra node set, so ${hydra:...} resolves)."""
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir

    from rigor.config import register_resolvers

    register_resolvers()
    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
        return hydra_compose(config_name=config_name, overrides=overrides, return_hydra_config=True)


def train_in_process(overrides: list[str], run_dir: Path, save_config: bool = False) -> dict:
    """Run train.py's train() on a composed config in this process (faster than a subprocess); returns its metrics.

    With ``save_config``, the run's config is also written to ``.hydra/config.yaml`` as a train.py process
    leaves it (evaluate.py rebuilds a run from that file).
    """
    from hydra.core.hydra_config import HydraConfig
    from omegaconf import OmegaConf, open_dict

    from train import train

    cfg = compose([*overrides, f"hydra.run.dir={run_dir}"])
    cfg.hydra.runtime.output_dir = str(run_dir)
    HydraConfig.instance().set_config(cfg)
    with open_dict(cfg):
        del cfg["hydra"]  # train.py's config has no hydra node
    if save_config:
        (Path(run_dir) / ".hydra").mkdir(parents=True, exist_ok=True)
        OmegaConf.save(cfg, Path(run_dir) / ".hydra" / "config.yaml")
    return train(cfg)


#: Test files that take a minute or more, longest (or most waiting) first: with one file per worker
#: (`--dist loadfile`), starting them first lets the many short files fill the other workers meanwhile,
#: instead of one long file running alone at the end. Only the order changes, never what runs. pytest-xdist
#: would sort files by their number of tests instead (most first); addopts' --no-loadscope-reorder keeps this
#: order. The Ray cluster starts after the first files, not beside SLURM's start-up (its raylet has 30 s).
LONG_FILES = ("test_slurm.py", "test_sweeps.py", "test_search.py", "test_train.py", "test_ray_launcher.py",
              "test_reliability.py", "test_evaluate.py", "test_experiments.py", "test_predict_other_data.py")


def pytest_collection_modifyitems(items: list) -> None:
    rank = {name: i for i, name in enumerate(LONG_FILES)}
    items.sort(key=lambda item: rank.get(item.path.name, len(LONG_FILES)))  # stable: the rest keep their order
