"""Rigor's launchers, where Hydra looks for plugins (it instantiates launchers only from hydra_plugins.*).

The code lives in rigor/launchers.py; these subclasses only give it names Hydra accepts.
"""

from rigor import launchers as _launchers


class BasicLauncher(_launchers.BasicLauncher):
    """rigor.launchers.BasicLauncher (conf/hydra/launcher/basic.yaml)."""


class RayLauncher(_launchers.RayLauncher):
    """rigor.launchers.RayLauncher (conf/hydra/launcher/ray.yaml); without the ray extra it says how to get it."""


try:
    from hydra_plugins.hydra_submitit_launcher import submitit_launcher as _submitit
except ImportError:  # hydra-submitit-launcher not installed
    _submitit = None

if _submitit is not None:

    class SlurmLauncher(_launchers.SubmititMixin, _submitit.SlurmLauncher):
        """hydra-submitit-launcher's SlurmLauncher with rigor.launchers.SubmititMixin (conf/hydra/launcher/slurm.yaml)."""

    class SubmititLocalLauncher(_launchers.SubmititMixin, _submitit.LocalLauncher):
        """submitit's local executor with rigor.launchers.SubmititMixin (conf/hydra/launcher/slurm_local.yaml)."""
