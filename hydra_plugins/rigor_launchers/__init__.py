"""Rigor's launchers and search sweeper, where Hydra looks for plugins (it instantiates launchers only from hydra_plugins.*).

The code lives in rigor/launchers.py; these subclasses only give it names Hydra accepts (the plugin classes
they extend come from rigor/launchers.py's block of Hydra and plugin internals).
"""

from rigor import launchers as _launchers
from rigor import search as _search


class BasicLauncher(_launchers.BasicLauncher):
    """rigor.launchers.BasicLauncher (conf/hydra/launcher/basic.yaml)."""


class SearchSweeper(_search.SearchSweeper):
    """rigor.search.SearchSweeper: an Optuna study through Rigor's launchers (conf/hydra/sweeper/search.yaml)."""


class RayLauncher(_launchers.RayLauncher):
    """rigor.launchers.RayLauncher (conf/hydra/launcher/ray.yaml); without the ray extra it says how to get it."""


if _launchers.PluginSlurmLauncher is not None:  # hydra-submitit-launcher is installed

    class SlurmLauncher(_launchers.SubmititMixin, _launchers.PluginSlurmLauncher):
        """hydra-submitit-launcher's SlurmLauncher with rigor.launchers.SubmititMixin (conf/hydra/launcher/slurm.yaml)."""

    class SubmititLocalLauncher(_launchers.SubmititMixin, _launchers.PluginSubmititLocalLauncher):
        """submitit's local executor with rigor.launchers.SubmititMixin (conf/hydra/launcher/slurm_local.yaml)."""
