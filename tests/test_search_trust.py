"""Hyperparameter search (hydra/sweeper=optuna): what a resumed search may trust (issue 25).

- A killed and resumed search is the uninterrupted one, trial by trial: ganbench's loop runs in-process with a
  stub launcher (no training), killed at three points (during a batch's launch, between its tells, between
  its asks), resumed, and compared with the same search run through.
- A storage file holding sampler state (CMA-ES pickles its optimizer into optuna.db) is refused before
  Optuna opens it, so a planted pickle never runs; cmaes is not a sampler a search takes.
- Bad input gives one line naming the key, exit 1, nothing written, and no alembic log lines.
"""
from __future__ import annotations

import math
import os
import pickle
import subprocess
from pathlib import Path

import pytest
from omegaconf import OmegaConf

from conftest import GANBENCH

optuna = pytest.importorskip("optuna")

from hydra.core.utils import JobReturn, JobStatus  # noqa: E402

from ganbench.launchers.optuna_search import OptunaSearch, StudyPlan, parse_space  # noqa: E402
from ganbench.search import Objective  # noqa: E402

# TPE past its random start-up after 3 trials, so later draws depend on the finished trials.
TPE = {"_target_": "optuna.samplers.TPESampler", "n_startup_trials": 3}
RANDOM = {"_target_": "optuna.samplers.RandomSampler"}
SPACE = ["x=interval(-2.0, 2.0)", "y=tag(log, interval(1e-3, 1.0))", "k=choice(1, 2, 3)", "fixed=7"]


class Killed(Exception):
    """Stands for SIGKILL: the loop stops where it is, and the study keeps what it had written."""


class StubLauncher:
    """Launches nothing: each job's value is a function of its overrides, as a deterministic training gives
    (the value of a relaunched trial, resumed from its checkpoint, is the value it would have had).
    ``kill_at``: raise Killed when asked to launch this batch (0-based, counted over this launcher's calls)."""

    def __init__(self, kill_at: int = None):
        self.kill_at, self.calls, self.launched = kill_at, 0, []

    def launch(self, overrides, initial_job_idx):
        if self.calls == self.kill_at:
            raise Killed()
        self.calls += 1
        self.launched.append([dict(o.split("=", 1) for o in job) for job in overrides])
        rets = []
        for job in overrides:
            p = dict(o.split("=", 1) for o in job)
            value = (float(p["x"]) - 0.5) ** 2 + math.log10(float(p["y"])) ** 2 / 4 + 0.1 * int(p["k"])
            rets.append(JobReturn(status=JobStatus.COMPLETED,
                                  _return_value={"search": {"value": value, "reason": None, "seeds": [0],
                                                            "values": [value], "statuses": ["completed"],
                                                            "run_dirs": [f"{job}/seed=0"]}}))
        return rets


@pytest.fixture
def tmp_path(tmp_path):
    """A directory in memory (/dev/shm) where there is one: SQLite commits each tell with an fsync, ~25 ms on
    this machine's disk, ~100 of them per search."""
    import shutil
    import tempfile

    shm = Path("/dev/shm")
    if not (shm.is_dir() and os.access(shm, os.W_OK)):
        yield tmp_path
        return
    d = Path(tempfile.mkdtemp(prefix="ganbench-search-", dir=shm))
    try:
        yield d
    finally:
        shutil.rmtree(d, ignore_errors=True)


def _sweeper(tmp_path: Path, sampler: dict, launcher: StubLauncher, n_trials: int = 10, n_jobs: int = 2,
             seed: int = 0) -> OptunaSearch:
    s = OptunaSearch(sampler=None, storage=None, study_name="s", n_trials=n_trials, n_jobs=n_jobs, params=None,
                     seed=seed)
    s.config = OmegaConf.create({"hydra": {"sweeper": {"sampler": sampler}}})
    s.launcher = launcher
    return s


def _run(tmp_path: Path, db: str, sampler: dict, launcher: StubLauncher, **kw):
    """One start of the search's loop (what `ganbench -m hydra/sweeper=optuna ...` runs after its checks)."""
    dists, fixed = parse_space(SPACE)
    plan = StudyPlan("s", dists, fixed, Objective("v", "final", 1, "minimize"), {"space": "stub"})
    sweeper = _sweeper(tmp_path, sampler, launcher, **kw)
    storage = optuna.storages.RDBStorage(f"sqlite:///{tmp_path / db}")
    study = sweeper._study(optuna, storage, plan)
    sweeper._run_study(study, plan, tmp_path)
    return study


def _rows(study):
    return [(t.number, t.state.name, t.params, t.value) for t in study.get_trials()]


def _killed_and_resumed(tmp_path, db, sampler, kill_at=None, fail_tell=None, fail_ask=None, **kw):
    """Start the search, stop it at the given point, check that it left trials RUNNING, start it again."""
    launcher = StubLauncher(kill_at=kill_at)
    count = {"tell": 0, "ask": 0}
    orig = {"tell": optuna.Study.tell, "ask": optuna.Study.ask}

    def stop_at(name, at):
        def call(self, *a, **k):
            if count[name] == at:
                raise Killed()
            count[name] += 1
            return orig[name](self, *a, **k)
        return call

    mp = pytest.MonkeyPatch()
    mp.setattr(optuna.Study, "tell", stop_at("tell", fail_tell))
    mp.setattr(optuna.Study, "ask", stop_at("ask", fail_ask))
    try:
        with pytest.raises(Killed):
            _run(tmp_path, db, sampler, launcher, **kw)
    finally:
        mp.undo()
    url = f"sqlite:///{tmp_path / db}"
    at_kill = _rows(optuna.load_study(study_name="s", storage=url))
    assert any(state == "RUNNING" for _, state, _, _ in at_kill), at_kill
    resumed = StubLauncher()
    study = _run(tmp_path, db, sampler, resumed, **kw)
    return at_kill, study, resumed


_WHOLE = {}


def _whole(tmp_path, sampler):
    """The uninterrupted search: its study's rows and its launcher (computed once per sampler)."""
    key = sampler["_target_"]
    if key not in _WHOLE:
        launcher = StubLauncher()
        _WHOLE[key] = (_rows(_run(tmp_path, "whole.db", sampler, launcher)), launcher)
    return _WHOLE[key]


@pytest.mark.parametrize("sampler, where", [
    (TPE, {"kill_at": 3}),     # during the launch of batch 3 (trials 6, 7 asked and drawn, neither told)
    (TPE, {"fail_tell": 5}),   # between the tells of batch 2 (trial 4 told, trial 5 left RUNNING)
    (TPE, {"fail_ask": 7}),    # between the asks of batch 3 (trial 6 asked, trial 7 not)
    (RANDOM, {"kill_at": 2}),
], ids=["tpe-in-launch", "tpe-between-tells", "tpe-between-asks", "random-in-launch"])
def test_a_killed_search_resumes_into_the_uninterrupted_one(tmp_path, sampler, where):
    """10 trials in batches of 2. Killed at three points and started again, the study equals the one of a
    search that ran through: every trial's number, state, parameters and value."""
    whole, _ = _whole(tmp_path, sampler)
    assert len(whole) == 10 and all(state == "COMPLETE" for _, state, _, _ in whole)
    _, study, _ = _killed_and_resumed(tmp_path, "killed.db", sampler, **where)
    assert _rows(study) == whole


def test_a_resumed_search_does_not_replay_its_first_draws(tmp_path):
    """Random sampler, killed during the launch of batch 2 (trials 4, 5 RUNNING): the trials asked after the
    resume draw from their own seeds; a sampler seeded again as at the start would give trial 6 trial 0's
    parameters (the random sampler's draws depend on its seed only)."""
    _, study, _ = _killed_and_resumed(tmp_path, "k.db", RANDOM, kill_at=2, n_trials=8)
    params = [t.params for t in study.get_trials()]
    assert len(params) == 8 and all(t.state.name == "COMPLETE" for t in study.get_trials())
    for later in params[6:]:
        assert all(later != first for first in params[:6])
    assert len({tuple(sorted(p.items())) for p in params}) == 8


def test_a_resume_relaunches_the_running_trials_with_their_own_parameters(tmp_path):
    """Killed during the launch of batch 2 (trials 4, 5 RUNNING): the resumed search first launches trials 4
    and 5 again, as one batch, with the parameters they had (and the fixed override), tells them, marks them
    relaunched, and asks nothing twice: 8 trials in all, no parameters drawn for a trial that had them."""
    at_kill, study, launcher = _killed_and_resumed(tmp_path, "k.db", TPE, kill_at=2, n_trials=8)
    running = {n: p for n, state, p, _ in at_kill if state == "RUNNING"}
    assert sorted(running) == [4, 5]
    first = launcher.launched[0]
    assert first == [{**{k: str(v) for k, v in running[n].items()}, "fixed": "7"} for n in (4, 5)]
    trials = study.get_trials()
    assert [t.number for t in trials] == list(range(8)) and all(t.state.name == "COMPLETE" for t in trials)
    assert [t.params for t in trials[4:6]] == [running[4], running[5]]
    assert [t.user_attrs.get("relaunched", False) for t in trials] == [False] * 4 + [True] * 2 + [False] * 2
    assert sum(len(b) for b in launcher.launched) == 4


def test_a_batch_killed_while_asked_is_completed_and_launched_whole(tmp_path):
    """Killed after asking trial 6 of batch {6, 7}, before drawing its parameters: at the resume trial 6 draws
    them and trial 7 is asked, beside the RUNNING trial 6 as in the uninterrupted search, and the two are
    launched together: the resumed search launches what the uninterrupted one launched from batch 3 on."""
    _, whole = _whole(tmp_path, TPE)
    _, study, resumed = _killed_and_resumed(tmp_path, "k.db", TPE, fail_ask=7)
    assert resumed.launched == whole.launched[3:] and [len(b) for b in resumed.launched] == [2, 2]
    assert len(study.get_trials()) == 10


def test_the_draws_are_a_function_of_the_seed_and_the_trial_number():
    """trial_seed hashes the pair: distinct for (0, 3) and (3, 0) (seed + number would make them equal), the
    same on every call."""
    from ganbench.launchers.optuna_search import trial_seed

    assert trial_seed(0, 3) == trial_seed(0, 3) != trial_seed(3, 0)
    assert len({trial_seed(s, n) for s in range(4) for n in range(4)}) == 16
