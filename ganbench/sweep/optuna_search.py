"""``hydra/sweeper=optuna``: Hydra's Optuna sweeper (hydra-optuna-sweeper) with a loop that resumes.

It keeps the plugin's config (``hydra.sweeper.params`` in Hydra's sweep syntax: ``interval``, ``tag(log,
...)``, ``range``, ``choice``; the plugin's samplers), its parsing of a search space into Optuna
distributions and its way of turning a trial into overrides, and it launches every batch of
``n_jobs`` trials through the configured launcher (basic, joblib, SLURM), as any sweep. Its own loop
(``sweep``) differs where the plugin's cannot do what a search here needs:

- the direction comes from ``search.metric`` (its ``higher_is_better``), not from a second setting;
- the study lives in SQLite in the sweep directory (``optuna.db``), named after the sweep; ``n_trials`` is
  the study's total, so the same command run again continues: finished trials are kept, a trial left
  RUNNING by a killed search is launched again with its own parameters (its run directories are named after
  them, so each run resumes from its checkpoint) and told to that same trial; nothing is asked twice;
- a trial whose seeds did not all complete with a finite value is told as FAIL with the reason (the plugin
  turns a NaN into an exception that ends the whole search, and a job that raises aborts it too), and the
  search goes on;
- everything that can be checked is checked before anything is written: the metric, the keys of the search
  space, the storage file (a file of another search is refused and left untouched);
- ``studies``: several studies of the same budget in one storage (one per objective of a comparison).

A resumed search is the search that would have run: trial n draws with a sampler of its own, seeded with
``trial_seed(hydra.sweeper.seed, n)`` (PerTrialSampler), so what it asks depends on the seed, n and the
trials before it, not on how often the search was started; and a batch the killed search had begun to ask
is completed and launched as that batch. The samplers are TPE and random: CMA-ES keeps its state as a
pickle in the study database, which a resumed search would unpickle, so it is refused, and so is a storage
file holding any sampler state (ganbench.sweep.search.check_storage). Nothing here imports torch.
"""

from __future__ import annotations

import logging
import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple

# alembic (Optuna's schema migrations) logs a line per plugin it sets up, at INFO, on import (the plugin
# module, hydra_plugins/ganbench_sweeper, sets this too: Hydra imports optuna before this module).
logging.getLogger("alembic").setLevel(logging.WARNING)

from hydra.core.override_parser.overrides_parser import OverridesParser  # noqa: E402
from hydra.core.utils import JobReturn, JobStatus  # noqa: E402
from hydra.types import HydraContext, TaskFunction  # noqa: E402
from hydra.utils import instantiate  # noqa: E402
from hydra_plugins.hydra_optuna_sweeper._impl import OptunaSweeperImpl, create_optuna_distribution_from_override  # noqa: E402
from omegaconf import DictConfig, OmegaConf  # noqa: E402
from optuna.samplers import BaseSampler  # noqa: E402 - imported by the plugin's _impl already

from . import search  # noqa: E402
from ..errors import ConfigError, GanbenchError, one_line_error  # noqa: E402
from ..run.record import write_json_atomic  # noqa: E402

log = logging.getLogger("ganbench")

#: hydra/sweeper/sampler choices a search takes. Not cmaes: Optuna's CmaEsSampler stores its optimizer in the
#: study database as a pickle (trial system attribute ``cma:optimizer``) and unpickles it when a search resumes,
#: so a planted one would run code. Not grid (a plain sweep does a grid), nsgaii, motpe (several objectives).
SAMPLERS = {"tpe": "optuna.samplers.TPESampler", "random": "optuna.samplers.RandomSampler"}
# Overrides that do not change what a trial trains (as in the run directory's name): not part of the
# search's identity.
HARMLESS_KEYS = ("device", "threads", "train.progress")
_MISSING = object()


@dataclass
class StudyPlan:
    """One study of the search: its name, search space, fixed overrides, objective and identity."""

    name: str
    distributions: Dict[str, Any]
    fixed: Dict[str, str]
    objective: search.Objective
    fingerprint: Dict[str, Any]


def _lines(params: Optional[Any]) -> List[str]:
    """``key=value`` lines of a params map; a null value removes the key (a preset's ``arm: null`` drops the
    arm sweep of the preset it includes)."""
    return [f"{k}={v}" for k, v in (params or {}).items() if v is not None]


def parse_space(lines: Sequence[str]) -> Tuple[Dict[str, Any], Dict[str, str]]:
    """Override lines → (distributions, fixed values). A key given again replaces what came before (the
    preset's params, then a study's, then the command line)."""
    from optuna.distributions import BaseDistribution

    out: Dict[str, Any] = {}
    for override in OverridesParser.create().parse_overrides(list(lines)):
        key = override.get_key_element()
        out.pop(key, None)
        try:
            out[key] = _range_as_hydra(override, create_optuna_distribution_from_override(override))
        except (AssertionError, NotImplementedError, ValueError) as ex:
            raise ConfigError(f"hydra.sweeper.params.{key}: {override.input_line!r} is not a search range Optuna "
                              f"takes ({one_line_error(ex) or type(ex).__name__}); use interval(a, b), "
                              "tag(log, interval(a, b)), range(a, b, step) or choice(...)") from None
    dists = {k: v for k, v in out.items() if isinstance(v, BaseDistribution)}
    fixed = {k: str(v) for k, v in out.items() if not isinstance(v, BaseDistribution)}
    return dists, fixed


def _range_as_hydra(override: Any, dist: Any) -> Any:
    """``range(a, b[, step])`` means what it means in a plain sweep, a, a+step, ... below b. The plugin maps it
    to an Optuna distribution whose upper end is b itself (Optuna's ends are inclusive); here the upper end is
    the range's last value."""
    from optuna.distributions import DiscreteUniformDistribution, IntUniformDistribution

    if not override.is_range_sweep() or not isinstance(dist, (IntUniformDistribution, DiscreteUniformDistribution)):
        return dist
    values = list(override.sweep_iterator())
    if not values:
        raise ValueError("the range is empty")
    if isinstance(dist, IntUniformDistribution):
        return IntUniformDistribution(int(values[0]), int(values[-1]), step=dist.step)
    return DiscreteUniformDistribution(float(values[0]), float(values[-1]), dist.q)


def trial_seed(seed: int, number: int) -> int:
    """The seed of trial ``number``'s sampler: the first 32-bit word of NumPy's ``SeedSequence([seed, number])``,
    a hash of the pair (seed + number would give seed 0's trial 1 the stream of seed 1's trial 0)."""
    import numpy as np

    return int(np.random.SeedSequence([int(seed), int(number)]).generate_state(1)[0])


class PerTrialSampler(BaseSampler):
    """Trial n's draws come from a sampler of its own, ``make(trial_seed(seed, n))``: a function of (seed, n)
    and of the trials already in the study, never of how many trials this process asked before. One sampler
    seeded once draws trial n from a random state advanced by every earlier draw of *this process*, so a
    killed search started again would draw differently (re-seeded) or replay its first draws (same seed).
    TPE and random keep no other state between trials (their ``after_trial`` does nothing)."""

    def __init__(self, make: Any, seed: int) -> None:
        self._make, self._seed = make, int(seed)
        self._samplers: Dict[int, BaseSampler] = {}

    def _of(self, trial: Any) -> BaseSampler:
        sampler = self._samplers.get(trial.number)
        if sampler is None:
            sampler = self._samplers[trial.number] = self._make(trial_seed(self._seed, trial.number))
        return sampler

    def infer_relative_search_space(self, study: Any, trial: Any) -> Dict[str, Any]:
        return self._of(trial).infer_relative_search_space(study, trial)

    def sample_relative(self, study: Any, trial: Any, search_space: Dict[str, Any]) -> Dict[str, Any]:
        return self._of(trial).sample_relative(study, trial, search_space)

    def sample_independent(self, study: Any, trial: Any, param_name: str, param_distribution: Any) -> Any:
        return self._of(trial).sample_independent(study, trial, param_name, param_distribution)

    def after_trial(self, study: Any, trial: Any, state: Any, values: Any) -> None:
        sampler = self._samplers.pop(trial.number, None)
        if sampler is not None:
            sampler.after_trial(study, trial, state, values)

    def reseed_rng(self) -> None:
        """Nothing: the seeds are the point (only Study.optimize with n_jobs > 1 calls this, not this loop)."""


class OptunaSearch(OptunaSweeperImpl):
    """The sweeper behind ``hydra/sweeper=optuna`` (conf/hydra/sweeper/optuna.yaml documents each key)."""

    def __init__(self, sampler: Any, storage: Optional[str], study_name: Optional[str], n_trials: Any,
                 n_jobs: Any, params: Optional[DictConfig], studies: Optional[DictConfig] = None,
                 seed: Any = 0) -> None:
        super().__init__(sampler=sampler, direction="minimize", storage=storage, study_name=study_name,
                         n_trials=n_trials, n_jobs=n_jobs, max_failure_rate=0.0, search_space=None,
                         custom_search_space=None, params=params)
        self.studies = studies
        self.seed = seed

    def setup(self, *, hydra_context: HydraContext, task_function: TaskFunction, config: DictConfig) -> None:
        super().setup(hydra_context=hydra_context, task_function=task_function, config=config)

    # -------------------------------------------------------------------------------------- checks

    def _check_settings(self) -> None:
        for key in ("n_trials", "n_jobs"):
            v = getattr(self, key)
            if not isinstance(v, int) or isinstance(v, bool) or v < 1:
                raise ConfigError(f"hydra.sweeper.{key}: must be an integer >= 1, got {v!r}")
        target = str(OmegaConf.select(self.config, "hydra.sweeper.sampler._target_", default=""))
        if target not in SAMPLERS.values():
            choice = OmegaConf.select(self.config, "hydra.runtime.choices", default={}).get("hydra/sweeper/sampler")
            given = choice if choice and choice not in SAMPLERS else target.rsplit(".", 1)[-1] or "?"
            raise ConfigError(f"hydra/sweeper/sampler: {given} is not available in a search; allowed: "
                              f"{', '.join(SAMPLERS)} (a grid is a plain sweep: ganbench -m a=1,2,3; cmaes stores "
                              "pickles in the study database; nsgaii and motpe need several objectives)")
        if not isinstance(self.seed, int) or isinstance(self.seed, bool) or self.seed < 0:
            raise ConfigError(f"hydra.sweeper.seed: must be an integer >= 0, got {self.seed!r}")
        own = OmegaConf.select(self.config, "hydra.sweeper.sampler.seed", default=None)
        if own is not None:
            raise ConfigError(f"hydra.sweeper.sampler.seed: must stay null, got {own!r}; set hydra.sweeper.seed "
                              "(trial n draws with a seed made from it and n, so a resumed search asks what the "
                              "uninterrupted one would)")
        if self.studies is not None and (not isinstance(self.studies, DictConfig) or not len(self.studies)):
            raise ConfigError(f"hydra.sweeper.studies: must be null or a map of study name to its parameters, "
                              f"got {self.studies!r}")

    def _compose(self, overrides: List[str]) -> DictConfig:
        try:
            return self.hydra_context.config_loader.load_sweep_config(self.config, overrides)
        except GanbenchError:
            raise
        except Exception as ex:  # noqa: BLE001 - Hydra's composition errors, as one line
            raise ConfigError(f"hydra.sweeper.params: {one_line_error(ex)}") from None

    def _check_keys(self, dists: Dict[str, Any], fixed: Dict[str, str], where: str) -> DictConfig:
        """Compose the study's config (its fixed overrides and every group's first choice) and check that
        each searched key exists; return the config."""
        from optuna.distributions import CategoricalDistribution

        groups = set(OmegaConf.select(self.config, "hydra.runtime.choices", default={}) or {})
        loader = self.hydra_context.config_loader
        picks = []
        for key, dist in dists.items():
            if key.lstrip("+~") in groups:
                if not isinstance(dist, CategoricalDistribution):
                    raise ConfigError(f"{where}.{key}: a config group takes choice(...) of its options, got {dist}")
                options = loader.get_group_options(key.lstrip("+~"))
                bad = [c for c in dist.choices if str(c) not in options]
                if bad:
                    raise ConfigError(f"{where}.{key}: unknown option {bad[0]!r}; allowed: {', '.join(options)}")
                picks.append(f"{key}={dist.choices[0]}")
        cfg = self._compose([f"{k}={v}" for k, v in fixed.items()] + picks)
        for key in dists:
            if key.startswith(("+", "~")) or key in groups:
                continue
            current = OmegaConf.select(cfg, key, default=_MISSING)
            if current is _MISSING:
                parent, _, leaf = key.rpartition(".")
                node = OmegaConf.select(cfg, parent, default=None) if parent else cfg
                have = (f"; {parent or 'the config'} has: {', '.join(map(str, node.keys()))}"
                        if isinstance(node, DictConfig) else f"; {parent} is not a config node")
                raise ConfigError(f"{where}.{key}: no such key in the config{have}")
            _check_kind(f"{where}.{key}", current, dists[key])
        return cfg

    def plan(self, arguments: List[str]) -> List[StudyPlan]:
        """Every study of the search, checked; raises ConfigError before anything is written."""
        from optuna.distributions import distribution_to_json

        self._check_settings()
        base = _lines(self.params)
        name = self.study_name or Path(str(self.config.hydra.sweep.dir)).name
        studies = [(None, [])] if self.studies is None else [
            (str(k), _lines(v if isinstance(v, DictConfig) else {})) for k, v in self.studies.items()]
        plans = []
        for key, extra in studies:
            where = "hydra.sweeper.params" if key is None else f"hydra.sweeper.studies.{key}"
            dists, fixed = parse_space(base + extra + list(arguments))
            if not dists:
                raise ConfigError(f"{where}: no parameter to search; give ranges, e.g. "
                                  "hydra.sweeper.params.penalty.lambda_='tag(log, interval(0.1, 100))'")
            cfg = self._check_keys(dists, fixed, where)
            obj = search.objective(cfg)
            fingerprint = {
                "metric": obj.metric, "value": obj.value, "seeds": obj.seeds, "direction": obj.direction,
                "space": {k: distribution_to_json(d) for k, d in sorted(dists.items())},
                "fixed": {k: v for k, v in sorted(fixed.items()) if k.lstrip("+~") not in HARMLESS_KEYS},
            }
            plans.append(StudyPlan(name if key is None else f"{name}/{key}", dists, fixed, obj, fingerprint))
        return plans

    def storage_url(self) -> Tuple[str, Path, str]:
        """The storage URL, its file (checked: it can be made there) and the key that chose it."""
        sweep_dir = Path(str(self.config.hydra.sweep.dir)).absolute()
        key = "hydra.sweeper.storage" if self.storage else "hydra.sweep.dir"
        url = self.storage or f"sqlite:///{sweep_dir / search.DB_NAME}"
        path = search.sqlite_path(url)
        search.check_storage_path(path, key)
        return url, path, key

    # ----------------------------------------------------------------------------------------- the loop

    def sweep(self, arguments: List[str]) -> List[JobReturn]:
        plans = self.plan(arguments)
        url, db, key = self.storage_url()
        search.check_storage(db, {p.name: p.fingerprint for p in plans}, key)

        import optuna

        optuna.logging.set_verbosity(optuna.logging.WARNING)
        sweep_dir = Path(str(self.config.hydra.sweep.dir))
        sweep_dir.mkdir(parents=True, exist_ok=True)
        db.parent.mkdir(parents=True, exist_ok=True)
        lock = search.SearchLock(sweep_dir).acquire()
        try:
            storage = optuna.storages.RDBStorage(url)
            returns: List[JobReturn] = []
            summary = {}
            for plan in plans:
                study = self._study(optuna, storage, plan)
                returns += self._run_study(study, plan, sweep_dir)
                summary[plan.name] = self._summary(study, plan)
            write_json_atomic(sweep_dir / "optimization_results.json", summary)
            OmegaConf.save(OmegaConf.create(summary), sweep_dir / "optimization_results.yaml")
        finally:
            lock.release()
        return returns

    def _sampler(self) -> PerTrialSampler:
        cfg = self.config.hydra.sweeper.sampler
        return PerTrialSampler(lambda seed: instantiate(cfg, seed=seed), self.seed)

    def _study(self, optuna: Any, storage: Any, plan: StudyPlan) -> Any:
        study = optuna.create_study(storage=storage, study_name=plan.name, direction=plan.objective.direction,
                                    load_if_exists=True)
        if search.FINGERPRINT not in study.user_attrs:
            study.set_user_attr(search.FINGERPRINT, plan.fingerprint)
        study.sampler = self._sampler()
        return study

    def _run_study(self, study: Any, plan: StudyPlan, sweep_dir: Path) -> List[JobReturn]:
        """Relaunch the trials a killed search left RUNNING, then ask batches of ``n_jobs`` up to ``n_trials``.

        Batches start at multiples of ``n_jobs`` (trial numbers), as in an uninterrupted search: a search
        killed while asking a batch left its first trials RUNNING and the rest unasked; the rest is asked
        now, while the study holds what it held then (the finished trials and those RUNNING ones), and the
        batch is launched whole. A RUNNING trial killed before its parameters were all drawn draws them now."""
        from optuna.trial import Trial, TrialState

        trials = study.get_trials(deepcopy=False)
        stale = [t for t in trials if t.state == TrialState.RUNNING]
        done = sum(t.state in (TrialState.COMPLETE, TrialState.FAIL, TrialState.PRUNED) for t in trials)
        log.info("study %s (%s %s of %s, %s): %d of %d trials finished%s", plan.name, plan.objective.direction,
                 plan.objective.value, plan.objective.metric, search.DB_NAME, done, self.n_trials,
                 f", {len(stale)} left running by a search that stopped: launching them again" if stale else "")
        asked = len(trials)
        part = asked % self.n_jobs
        rest = []
        if stale and part and asked < self.n_trials and all(t.state == TrialState.RUNNING for t in trials[-part:]):
            rest = [study.ask() for _ in range(min(self.n_jobs - part, self.n_trials - asked))]
        undrawn = [Trial(study, t._trial_id) for t in stale if set(plan.distributions) - set(t.params)]
        drawn = dict(zip([t.number for t in undrawn + rest],
                         self._configure_trials(undrawn + rest, plan.distributions, plan.fixed)))
        pending = [(t._trial_id, t.number, list(drawn.get(t.number) or self._overrides(t.params, plan.fixed)), True)
                   for t in stale] + [(t._trial_id, t.number, list(drawn[t.number]), False) for t in rest]
        returns: List[JobReturn] = []
        for i in range(0, len(pending), self.n_jobs):
            returns += self._launch(study, plan, pending[i:i + self.n_jobs], sweep_dir)
        asked += len(rest)
        while asked < self.n_trials:
            batch = [study.ask() for _ in range(min(self.n_jobs, self.n_trials - asked))]
            overrides = self._configure_trials(batch, plan.distributions, plan.fixed)
            returns += self._launch(study, plan, [(t._trial_id, t.number, list(o), False)
                                                  for t, o in zip(batch, overrides)], sweep_dir)
            asked += len(batch)
        return returns

    @staticmethod
    def _overrides(params: Dict[str, Any], fixed: Dict[str, str]) -> List[str]:
        """A trial's overrides as the plugin writes them (``_configure_trials``): its parameters, then the
        fixed overrides."""
        merged = dict(params)
        merged.update(fixed)
        return [f"{k}={v}" for k, v in merged.items()]

    def _launch(self, study: Any, plan: StudyPlan, items: List[Tuple[int, int, List[str], bool]],
                sweep_dir: Path) -> List[JobReturn]:
        """Launch one batch, items (trial id, number, overrides, relaunched), and tell each trial its value."""
        from optuna.trial import TrialState

        rets = self.launcher.launch([tuple(o) for _, _, o, _ in items], initial_job_idx=self.job_idx)
        self.job_idx += len(rets)
        storage = study._storage
        for (trial_id, number, _, relaunched), ret in zip(items, rets):
            outcome = _outcome(ret)
            value = outcome.get("value")
            attrs = {
                "seeds": outcome.get("seeds", []), "seed_values": outcome.get("values", []),
                "statuses": outcome.get("statuses", []),
                "run_dirs": [_relative(d, sweep_dir) for d in outcome.get("run_dirs", [])],
                "failure": outcome.get("reason"),
            }
            if relaunched:
                attrs["relaunched"] = True
            for k, v in attrs.items():
                storage.set_trial_user_attr(trial_id, k, v)
            if isinstance(value, (int, float)) and math.isfinite(value):
                study.tell(number, values=[float(value)])
                log.info("trial %d: %s = %.6g (mean of %d seed%s)", number, plan.objective.metric, value,
                         len(attrs["seeds"]), "s" if len(attrs["seeds"]) != 1 else "")
            else:
                study.tell(number, state=TrialState.FAIL)
                log.warning("trial %d failed: %s", number, outcome.get("reason") or "no value")
        return list(rets)

    def _summary(self, study: Any, plan: StudyPlan) -> Dict[str, Any]:
        from optuna.trial import TrialState

        trials = study.get_trials(deepcopy=False)
        complete = [t for t in trials if t.state == TrialState.COMPLETE]
        out: Dict[str, Any] = {"metric": plan.objective.metric, "value": plan.objective.value,
                               "direction": plan.objective.direction, "n_complete": len(complete),
                               "n_failed": sum(t.state == TrialState.FAIL for t in trials)}
        if complete:
            best = study.best_trial
            out.update(best_trial=best.number, best_value=best.value, best_params=dict(best.params))
            log.info("study %s: best trial %d, %s = %.6g, %s", plan.name, best.number, plan.objective.metric,
                     best.value, ", ".join(f"{k}={v}" for k, v in best.params.items()))
        else:
            log.warning("study %s: no trial completed", plan.name)
        return out


def _check_kind(where: str, current: Any, dist: Any) -> None:
    """A searched key keeps its type: Hydra's interval() draws floats, which an integer key refuses in every
    trial (found here, before any trial runs, instead of in each job)."""
    from optuna.distributions import CategoricalDistribution, IntLogUniformDistribution, IntUniformDistribution

    if isinstance(dist, CategoricalDistribution) or current is None:
        return
    if isinstance(current, bool) or isinstance(current, str):
        raise ConfigError(f"{where}: the config holds {current!r}; search it with choice(...)")
    if isinstance(current, int) and not isinstance(dist, (IntUniformDistribution, IntLogUniformDistribution)):
        raise ConfigError(f"{where}: the config holds an integer ({current}) but {type(dist).__name__} draws "
                          "floats (Hydra's interval() is a float range); use range(a, b) or choice(...)")


def _outcome(ret: JobReturn) -> Dict[str, Any]:
    """The trial's ``search`` outcome from its job's return (a job that raised: its one-line error)."""
    if ret.status != JobStatus.COMPLETED:
        value = ret._return_value
        return {"value": None, "reason": one_line_error(value) if isinstance(value, BaseException) else str(value)}
    value = ret._return_value
    if isinstance(value, dict) and isinstance(value.get("search"), dict):
        return value["search"]
    return {"value": None, "reason": f"the job returned no search outcome ({type(value).__name__})"}


def _relative(path: str, sweep_dir: Path) -> str:
    try:
        return os.path.relpath(os.path.abspath(path), os.path.abspath(sweep_dir))
    except ValueError:
        return str(path)


