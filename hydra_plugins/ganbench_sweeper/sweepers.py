"""Hydra only instantiates sweepers defined under the ``hydra_plugins`` namespace package.

This is the name that conf/hydra/sweeper/optuna.yaml puts in ``_target_``; the implementation (and its
documentation) is ganbench.sweep.optuna_search. Hydra imports this module while scanning for
plugins, so it stays light: optuna is imported only when a search starts.
"""
import logging
from typing import Any, List, Optional

from hydra.core.config_search_path import ConfigSearchPath
from hydra.core.config_store import ConfigStore
from hydra.plugins.search_path_plugin import SearchPathPlugin
from hydra.plugins.sweeper import Sweeper
from hydra.types import HydraContext, TaskFunction
from omegaconf import DictConfig

# Hydra imports optuna (and with it alembic, Optuna's schema migrations) when it resolves the sampler's
# _target_, before this sweeper exists; alembic then logs "setup plugin ..." at INFO, seven lines through
# Hydra's logging on every search, even one that stops at a one-line error. This module is imported when
# Hydra scans for plugins, before that.
logging.getLogger("alembic").setLevel(logging.WARNING)


class OptunaSweeper(Sweeper):
    """hydra/sweeper=optuna (see ganbench.sweep.optuna_search.OptunaSearch)."""

    def __init__(self, sampler: Any, storage: Optional[str], study_name: Optional[str], n_trials: Any,
                 n_jobs: Any, params: Optional[DictConfig] = None, studies: Optional[DictConfig] = None,
                 seed: Any = 0) -> None:
        from ganbench.sweep.optuna_search import OptunaSearch

        self.sweeper = OptunaSearch(sampler, storage, study_name, n_trials, n_jobs, params, studies, seed)

    def setup(self, *, hydra_context: HydraContext, task_function: TaskFunction, config: DictConfig) -> None:
        self.sweeper.setup(hydra_context=hydra_context, task_function=task_function, config=config)

    def sweep(self, arguments: List[str]) -> Any:
        return self.sweeper.sweep(arguments)


class OptunaConfigName(SearchPathPlugin):
    """Let ``hydra/sweeper=optuna`` be ganbench's conf/hydra/sweeper/optuna.yaml.

    hydra-optuna-sweeper registers a structured config of the same name (with a defaults list), and Hydra
    refuses a YAML file that shares its name with such a node ("validated against ConfigStore schema with
    the same name"). Hydra calls this plugin after it has imported every plugin, the optuna one included,
    and before it composes: the plugin's node is dropped here, so the name resolves to ganbench's file. The
    plugin's samplers (hydra/sweeper/sampler/*) stay registered; ganbench's file uses them.
    """

    def manipulate_search_path(self, search_path: ConfigSearchPath) -> None:
        sweepers = ConfigStore.instance().repo.get("hydra", {}).get("sweeper", {})
        node = sweepers.get("optuna.yaml")
        if node is not None and getattr(node, "provider", None) == "optuna_sweeper":
            del sweepers["optuna.yaml"]
