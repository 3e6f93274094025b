"""Hydra only instantiates launchers defined under the ``hydra_plugins`` namespace package.

This is the name that conf/hydra/launcher/slurm.yaml puts in ``_target_``; the implementation (and its
documentation) is ganbench.launchers.slurm. Hydra imports this module while scanning for plugins, so
it stays light: no torch.
"""

from ganbench.launchers import slurm as _impl


class SlurmLauncher(_impl.SlurmLauncher):
    """hydra/launcher=slurm (see ganbench.launchers.slurm.SlurmLauncher)."""
