"""Rigor's launchers, where Hydra looks for plugins (it instantiates launchers only from hydra_plugins.*).

The code lives in rigor/launchers.py; these subclasses only give it names Hydra accepts.
"""

from rigor import launchers as _launchers


class BasicLauncher(_launchers.BasicLauncher):
    """rigor.launchers.BasicLauncher (conf/hydra/launcher/basic.yaml)."""


if _launchers.RAY_AVAILABLE:

    class RayLauncher(_launchers.RayLauncher):
        """rigor.launchers.RayLauncher (conf/hydra/launcher/ray.yaml)."""
