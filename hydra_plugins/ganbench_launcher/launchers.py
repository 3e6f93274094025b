"""Hydra only instantiates launchers defined under the ``hydra_plugins`` namespace package.

This is the name that conf/hydra/launcher/slurm.yaml puts in ``_target_``; the implementation (and its
documentation) is ganbench.sweep.slurm. Hydra imports this module while scanning for plugins, so
it stays light: no torch.
"""

from ganbench.sweep import slurm as _impl


class SlurmLauncher(_impl.SlurmLauncher):
    """hydra/launcher=slurm (see ganbench.sweep.slurm.SlurmLauncher)."""
