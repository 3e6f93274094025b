"""Hyperparameter search: what a trial trains and the value it hands to Optuna.

    ganbench -m hydra/sweeper=optuna experiment=tune_dragan_grid25

The sweeper (ganbench.sweep.optuna_search, Hydra's Optuna sweeper with ganbench's loop) asks Optuna
for a trial's parameters and launches it as one job through any launcher (basic, joblib, SLURM). This
module is the job's side, and the checks both sides share; it imports neither torch nor optuna, so the
submitting process stays light.

A trial's value. The trial trains the seeds of one setting: with ``train.replicas=N`` the N seeds of one
process, otherwise ``search.seeds=N`` runs one after another in the job (N = 1 by default). Each seed's
results.json gives ``v_s = metrics[search.metric][search.value]``; the trial's value is their mean

    value = (1/N) Σ_s v_s

and only when every seed completed with a finite value. A seed that diverged or failed, or whose metric is
null (e.g. reverse_kl with no high-quality sample), makes the trial FAIL in Optuna, with the reason: a
number standing in for a missing one would steer the search.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import logging
import math
import os
import sqlite3
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Dict, Iterator, List, Mapping, Optional, Sequence

from omegaconf import DictConfig, OmegaConf

from ..errors import ConfigError, GanbenchError
from ..metric_catalog import higher_is_better, produced_metrics

log = logging.getLogger("ganbench")

#: ``_target_`` of conf/hydra/sweeper/optuna.yaml: a job whose hydra node names it is a trial.
SWEEPER_TARGET = "hydra_plugins.ganbench_sweeper.sweepers.OptunaSweeper"
DB_NAME = "optuna.db"
LOCK_NAME = ".ganbench-search.lock"
VALUES = ("final", "best")
#: Study user attribute holding what defines the search (compared when a storage file is reused).
FINGERPRINT = "ganbench_search"


def is_search(hydra_cfg: Any) -> bool:
    """Whether the job is a trial: a multirun job under ganbench's Optuna sweeper (a preset that selects the
    sweeper still trains a single run without -m)."""
    return (str(OmegaConf.select(hydra_cfg, "mode", default="") or "").endswith("MULTIRUN")
            and str(OmegaConf.select(hydra_cfg, "sweeper._target_", default="") or "") == SWEEPER_TARGET)


@dataclass(frozen=True)
class Objective:
    """What a trial returns: ``metric``'s ``value`` (final | best), averaged over ``seeds`` seeds."""

    metric: str
    value: str
    seeds: int
    direction: str   # maximize | minimize, from the metric's higher_is_better


def _int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def objective(cfg: DictConfig) -> Objective:
    """The ``search`` node of a composed config, checked; raises ConfigError with one line naming the key."""
    if cfg.get("task") != "gan":
        raise ConfigError(f"task: a hyperparameter search trains GANs (task=gan), got task={cfg.get('task')}")
    node = cfg.get("search")
    if not isinstance(node, DictConfig):
        raise ConfigError("search: the config has no search node; add '- search: default' to the defaults list")
    produced = produced_metrics(cfg)
    dataset = OmegaConf.select(cfg, "dataset.name", default="?")
    metric = node.get("metric")
    if not produced:
        raise ConfigError(f"search.metric: dataset {dataset} with metrics.names="
                          f"{OmegaConf.select(cfg, 'metrics.names', default=None)} records no metric to search on")
    if metric is None:
        raise ConfigError(f"search.metric: required by hydra/sweeper=optuna; dataset {dataset} produces: "
                          f"{', '.join(produced)}")
    if metric not in produced:
        raise ConfigError(f"search.metric: unknown metric {metric!r}; dataset {dataset} produces: {', '.join(produced)}")
    value = node.get("value")
    if value not in VALUES:
        raise ConfigError(f"search.value: must be one of {', '.join(VALUES)}, got {value!r}")
    seeds = node.get("seeds")
    if not _int(seeds) or seeds < 1:
        raise ConfigError(f"search.seeds: must be an integer >= 1, got {seeds!r}")
    replicas = OmegaConf.select(cfg, "train.replicas", default=1)
    if seeds > 1 and _int(replicas) and replicas > 1:
        raise ConfigError(f"search.seeds: {seeds} with train.replicas={replicas}; a trial's seeds are its replicas "
                          "then: keep search.seeds=1 (or train.replicas=1 to run search.seeds seeds in turn)")
    for key in ("restart", "resume"):
        if cfg.get(key) not in (None, False):
            raise ConfigError(f"{key}: not available in a search (a trial resumes its own run directory; a "
                              "finished trial's runs are what the study recorded)")
    return Objective(str(metric), str(value), int(seeds), "maximize" if higher_is_better(str(metric)) else "minimize")


# ------------------------------------------------------------------------------------------------ the trial


@contextlib.contextmanager
def _log_into(run_dir: Path, job_dir: Path) -> Iterator[None]:
    """Send the run's log lines to ``run_dir/train.log`` instead of the job's (Hydra's file handler)."""
    root = logging.getLogger()
    if Path(run_dir) == Path(job_dir):
        yield
        return
    hydra_files = [h for h in root.handlers if isinstance(h, logging.FileHandler)]
    own = logging.FileHandler(Path(run_dir) / "train.log", delay=True)
    if hydra_files:
        own.setFormatter(hydra_files[0].formatter)
        own.setLevel(hydra_files[0].level)
    for h in hydra_files:
        root.removeHandler(h)
    root.addHandler(own)
    try:
        yield
    finally:
        root.removeHandler(own)
        own.close()
        for h in hydra_files:
            root.addHandler(h)


def run_trial(cfg: DictConfig, run_dir: Path, overrides: List[str],
              train: Callable[[DictConfig, Path, List[str]], Optional[dict]]) -> dict:
    """Train the trial's seeds with ``train(cfg, run_dir, overrides)`` (one job of the CLI) and return the
    job's record with ``search``: the trial's value and each seed's (``trial_outcome``)."""
    try:
        obj = objective(cfg)
    except GanbenchError as ex:  # checked by the sweeper already; a trial's own parameters can still break it
        return {"status": "failed", "error": str(ex), "run_dir": str(run_dir), "overrides": overrides,
                "search": {"value": None, "reason": str(ex), "seeds": [], "values": [], "statuses": [], "run_dirs": []}}
    if obj.seeds == 1:
        ret = train(cfg, run_dir, overrides) or {}
    else:
        from ..replicas import replica_config, replica_dirs, replica_overrides

        rows = []
        for i, d in enumerate(replica_dirs(run_dir, cfg.seed, obj.seeds)):
            seed = cfg.seed + i
            d.mkdir(parents=True, exist_ok=True)
            with _log_into(d, run_dir):
                rec = train(replica_config(cfg, seed), d, replica_overrides(overrides, seed, cfg.seed)) or {}
            rows.append({"status": rec.get("status"), "run_dir": str(d), "error": rec.get("error")})
            if rec.get("status") != "completed":
                break  # the trial fails whatever its other seeds give: do not spend them
        order = ("failed", "preempted", "diverged", "completed")
        worst = min((r["status"] for r in rows), key=lambda s: order.index(s) if s in order else 0)
        ret = {"status": worst, "replicas": rows}
    ret = dict(ret)
    ret["search"] = trial_outcome(ret, run_dir, obj)
    return ret


def _runs_of(ret: Mapping[str, Any], run_dir: Path) -> List[Dict[str, Any]]:
    """(status, run_dir, error) of each seed of a job's return value (one run, or ``replicas`` rows)."""
    if isinstance(ret.get("replicas"), list):
        return [dict(r) for r in ret["replicas"]]
    return [{"status": ret.get("status"), "run_dir": str(ret.get("run_dir") or run_dir), "error": ret.get("error")}]


def trial_outcome(ret: Mapping[str, Any], run_dir: Path, obj: Objective) -> Dict[str, Any]:
    """The trial's value from its seeds' results.json: the mean of ``metrics[metric][value]`` when every seed
    completed with a finite value, else None with the reason (the first seed that has none)."""
    seeds, values, statuses, dirs = [], [], [], []
    reason = None
    for row in _runs_of(ret, run_dir):
        d = Path(str(row.get("run_dir")))
        record = _read_json(d / "results.json") or {}
        status = record.get("status") or row.get("status") or "failed"
        seed = (record.get("config") or {}).get("seed")
        entry = (record.get("metrics") or {}).get(obj.metric) or {}
        v = entry.get(obj.value)
        v = float(v) if isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) else None
        seeds.append(seed)
        values.append(v)
        statuses.append(status)
        dirs.append(str(d))
        if reason is None:
            if status != "completed":
                why = record.get("error") or row.get("error")
                at = f" at step {record.get('diverged_step')}" if status == "diverged" else ""
                reason = f"{d.name}: {status}{at}" + (f": {why}" if why else "")
            elif v is None:
                why = entry.get("reason") or ("not recorded" if not entry else "null")
                reason = f"{d.name}: {obj.metric} ({obj.value}) is null: {why}"
    if not dirs:
        reason = reason or "no run"
    value = None if reason is not None else math.fsum(values) / len(values)
    return {"value": value, "reason": reason, "metric": obj.metric, "kind": obj.value, "seeds": seeds,
            "values": values, "statuses": statuses, "run_dirs": dirs}


def _read_json(path: Path) -> Optional[dict]:
    try:
        return json.loads(Path(path).read_text())
    except (OSError, ValueError):
        return None


# ------------------------------------------------------------------------------------------- the storage


def sqlite_path(url: str, key: str = "hydra.sweeper.storage") -> Path:
    """The file of an ``sqlite:///path`` URL (the only storage a search uses: only the submitting process
    opens it, so a database server buys nothing)."""
    prefix = "sqlite:///"
    if not isinstance(url, str) or not url.startswith(prefix) or len(url) == len(prefix):
        raise ConfigError(f"{key}: must be null (sqlite:///<hydra.sweep.dir>/{DB_NAME}) or sqlite:///<file>, got {url!r}")
    return Path(url[len(prefix):])


def _read(path: Path, key: Optional[str], queries: Mapping[str, Any]) -> Dict[str, list]:
    """Rows of SQL ``queries`` on an existing Optuna SQLite file, through a read-only connection (the file is
    never written here, and nothing in it is unpickled). ConfigError (naming ``key``, the setting that chose
    the file, if given) if it is not one."""
    where = f"{key}: {path}" if key else str(path)
    try:
        con = sqlite3.connect(f"file:{os.path.abspath(path)}?mode=ro", uri=True)
    except sqlite3.Error as ex:
        raise ConfigError(f"{where}: cannot be opened as an Optuna database ({ex}); it was left untouched") from None
    try:
        return {name: con.execute(*q).fetchall() for name, q in queries.items()}
    except sqlite3.Error as ex:
        raise ConfigError(f"{where}: not an Optuna database ({ex}); it was left untouched; use another "
                          "hydra.sweep.dir or hydra.sweeper.storage") from None
    finally:
        con.close()


def read_studies(path: Path, key: Optional[str] = None) -> Dict[str, Optional[dict]]:
    """{study name: its ganbench fingerprint (None if it has none; {} if it has neither one nor trials)} of an
    existing Optuna SQLite file. ConfigError if it is not one."""
    rows = _read(path, key, {
        "names": ("SELECT study_id, study_name FROM studies",),
        "attrs": ("SELECT study_id, value_json FROM study_user_attributes WHERE key = ?", (FINGERPRINT,)),
        "counts": ("SELECT study_id, count(*) FROM trials GROUP BY study_id",)})
    names, counts = dict(rows["names"]), dict(rows["counts"])
    # A study without a fingerprint and without trials is one whose search was stopped between creating it
    # and recording its fingerprint (two transactions): it is adopted, marked with the empty dict.
    out: Dict[str, Optional[dict]] = {name: (None if counts.get(i) else {}) for i, name in names.items()}
    for study_id, value in rows["attrs"]:
        try:
            out[names[study_id]] = json.loads(value)
        except (KeyError, ValueError):
            continue
    return out


def read_system_attrs(path: Path, key: Optional[str] = None) -> List[tuple]:
    """(study name, trial number or None, attribute key) of every study and trial *system* attribute in an
    existing Optuna SQLite file: where Optuna's samplers keep their own state. ganbench's search writes none
    (its samplers, TPE and random, keep none), while CMA-ES keeps its optimizer there as a pickle
    (``cma:optimizer``) that it unpickles when a search resumes: a planted one would run its payload."""
    rows = _read(path, key, {
        "study": ("SELECT s.study_name, NULL, a.key FROM study_system_attributes a "
                  "JOIN studies s ON s.study_id = a.study_id ORDER BY a.study_system_attribute_id",),
        "trial": ("SELECT s.study_name, t.number, a.key FROM trial_system_attributes a JOIN trials t ON "
                  "t.trial_id = a.trial_id JOIN studies s ON s.study_id = t.study_id "
                  "ORDER BY a.trial_system_attribute_id",)})
    return [tuple(r) for r in rows["study"] + rows["trial"]]


def check_storage(path: Path, wanted: Mapping[str, dict], key: Optional[str] = None) -> None:
    """A storage file that exists must hold only studies of this search, each with this search's
    fingerprint (``wanted``: study name → fingerprint), and no system attribute (read_system_attrs);
    otherwise one line, and the file is not touched. ``key``: the setting that chose the file."""
    if not path.exists():
        return
    fix = "use another hydra.sweep.dir (or hydra.sweeper.storage), or move the file away; it was left untouched"
    # First, and for every study in the file: nothing else may have opened it with a sampler of its own.
    attrs = read_system_attrs(path, key)
    if attrs:
        name, number, attr = attrs[0]
        where = f"study {name!r}" + (f", trial {number}" if number is not None else "")
        raise ConfigError(f"{path}: {where} holds the system attribute {attr!r}, which ganbench's search never "
                          "writes (samplers that keep pickled state there, like CMA-ES, are refused: resuming "
                          f"would unpickle it); {fix}")
    held = read_studies(path, key)
    foreign = [name for name in held if name not in wanted]
    if foreign:
        raise ConfigError(f"{path}: holds study {foreign[0]!r}, not {', '.join(map(repr, wanted))}: a storage file "
                          f"from a different search; {fix}")
    for name, theirs in held.items():
        ours = wanted[name]
        if theirs is None:
            raise ConfigError(f"{path}: study {name!r} was not made by ganbench's search (no {FINGERPRINT} "
                              f"attribute): a storage file from a different search; {fix}")
        diff = first_difference(theirs, ours) if theirs else None
        if diff:
            raise ConfigError(f"{path}: study {name!r} is a different search ({diff}); {fix}")


def check_storage_path(path: Path, key: str) -> None:
    """The storage file can be created or opened where it is: not a directory, under a directory (made
    when missing) that can be written. Checked before anything is written; ConfigError naming ``key``."""
    path = Path(path)
    if path.is_dir():
        raise ConfigError(f"{key}: {path} is a directory; give a file, e.g. sqlite:///{path / DB_NAME}")
    parent = path.absolute().parent
    while not parent.exists() and parent != parent.parent:
        parent = parent.parent
    if not parent.is_dir():
        raise ConfigError(f"{key}: {path} cannot be created: {parent} is a file, not a directory")
    if not os.access(parent, os.W_OK | os.X_OK):
        raise ConfigError(f"{key}: {path} cannot be created: {parent} is not writable")


def first_difference(theirs: Mapping[str, Any], ours: Mapping[str, Any], prefix: str = "") -> Optional[str]:
    """``key: <there> there, <here> here`` for the first key whose values differ, or None."""
    for key in sorted(set(theirs) | set(ours)):
        a, b = theirs.get(key), ours.get(key)
        if isinstance(a, Mapping) and isinstance(b, Mapping):
            sub = first_difference(a, b, f"{prefix}{key}.")
            if sub:
                return sub
        elif a != b:
            return f"{prefix}{key}: {_show(a)} there, {_show(b)} here"
    return None


def _show(v: Any) -> str:
    return "absent" if v is None else str(v)


class SearchLock:
    """One search process per sweep directory (``fcntl.flock``; the kernel drops it when the process dies),
    so that a RUNNING trial found at the start was left by a search that was killed."""

    def __init__(self, sweep_dir: Path):
        self.path = Path(sweep_dir) / LOCK_NAME
        self.fd: Optional[int] = None

    def acquire(self) -> "SearchLock":
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.read(fd, 32).decode(errors="replace").strip() or "?"
            os.close(fd)
            raise GanbenchError(f"{self.path.parent}: another search (PID {holder}) is running on this sweep "
                                "directory; wait for it or stop it, then run the command again") from None
        os.ftruncate(fd, 0)
        os.write(fd, str(os.getpid()).encode())
        self.fd = fd
        return self

    def release(self) -> None:
        if self.fd is not None:
            os.close(self.fd)
            self.fd = None


def expected_best(values: Sequence[float], k: int, higher: bool) -> float:
    """Expected best of ``k`` trials drawn without replacement from the n finished ones (Lucic et al. 2018's
    budget curve, computed exactly instead of by resampling). With the values sorted best first, v_(1) .. v_(n),
    the best of k draws is v_(i) when v_(i) is drawn and v_(1) .. v_(i-1) are not:

        E[best of k] = Σ_{i=1}^{n-k+1} C(n-i, k-1) / C(n, k) · v_(i)
    """
    n = len(values)
    if not 1 <= k <= n:
        raise ValueError(f"k={k} must be in 1..{n}")
    ordered = sorted(values, reverse=higher)
    total = math.comb(n, k)
    return math.fsum(math.comb(n - i, k - 1) / total * ordered[i - 1] for i in range(1, n - k + 2))
