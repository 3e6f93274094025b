"""Hydra only instantiates launchers defined under the ``hydra_plugins`` namespace package.

These are the names that conf/hydra/launcher/*.yaml put in ``_target_``; the implementation (and its
documentation) is ganbench.launchers.slurm. Hydra imports this module while scanning for plugins, so
it stays light: no torch.
"""

from ganbench.launchers import slurm as _impl


class SlurmLauncher(_impl.SlurmLauncher):
    """hydra/launcher=slurm (see ganbench.launchers.slurm.SlurmLauncher)."""


class LocalLauncher(_impl.LocalLauncher):
    """submitit's local executor with ganbench's result collection (ganbench.launchers.slurm)."""
