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

from ganbench.sweep.optuna_search import OptunaSearch, StudyPlan, parse_space  # noqa: E402
from ganbench.sweep.search import Objective  # noqa: E402

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
    from ganbench.sweep.optuna_search import trial_seed

    assert trial_seed(0, 3) == trial_seed(0, 3) != trial_seed(3, 0)
    assert len({trial_seed(s, n) for s in range(4) for n in range(4)}) == 16


# ------------------------------------------------------------------------------ sampler state in storage


class Payload:
    """Unpickled, creates ``marker`` (pickle calls open(marker, "w")): what a planted attribute could do."""

    def __init__(self, marker: Path):
        self.marker = str(marker)

    def __reduce__(self):
        return (open, (self.marker, "w"))


def _planted(db: Path, marker: Path, where: str, fingerprint=None) -> bytes:
    """An optuna.db of study 's' (with ganbench's fingerprint, so only the attribute is wrong) whose last
    complete trial (where="trial", where CMA-ES keeps its optimizer) or the study itself holds a pickled
    ``cma:optimizer``, as 2-D trials so that CmaEsSampler would restore it."""
    payload = pickle.dumps(Payload(marker)).hex()
    st = optuna.create_study(storage=f"sqlite:///{db}", study_name="s")
    st.set_user_attr("ganbench_search", fingerprint or {"metric": "hq_pct"})

    def objective(t):
        if where == "trial" and t.number == 1:
            t.set_system_attr("cma:optimizer", payload)
        return t.suggest_float("x", 0, 1) + t.suggest_float("y", 0, 1)

    st.optimize(objective, n_trials=2)
    if where == "study":
        st.set_system_attr("cma:optimizer", payload)
    return db.read_bytes()


@pytest.mark.parametrize("where", ["trial", "study"])
def test_a_planted_sampler_pickle_is_refused_before_optuna_opens_the_file(tmp_path, where):
    """check_storage (run before anything is written) refuses a file holding a system attribute, in one line,
    and leaves it as it was; the marker is never created. The control: Optuna's CmaEsSampler on a copy of the
    trial-planted file does run the payload, so the file is the attack it stands for."""
    from ganbench.errors import ConfigError
    from ganbench.sweep.search import check_storage

    db, marker = tmp_path / "optuna.db", tmp_path / "marker"
    before = _planted(db, marker, where)
    with pytest.raises(ConfigError) as err:
        check_storage(db, {"s": {"metric": "hq_pct"}}, "hydra.sweep.dir")
    msg = str(err.value)
    assert "\n" not in msg
    trial = ", trial 1" if where == "trial" else ""
    assert msg.startswith(f"{db}: study 's'{trial} holds the system attribute 'cma:optimizer', which ganbench's "
                          "search never writes")
    assert not marker.exists() and db.read_bytes() == before

    if where == "trial":
        copy = tmp_path / "copy.db"
        copy.write_bytes(before)
        st = optuna.load_study(study_name="s", storage=f"sqlite:///{copy}", sampler=optuna.samplers.CmaEsSampler())
        with pytest.raises(Exception):  # the "optimizer" it unpickled is a file object
            st.optimize(lambda t: t.suggest_float("x", 0, 1) + t.suggest_float("y", 0, 1), n_trials=1)
        assert marker.exists()


def test_a_search_of_ganbench_writes_no_system_attribute(tmp_path):
    """What the check allows: the loop with TPE and with random sampling leaves no system attribute, so a
    file of ganbench's own search passes it."""
    from ganbench.sweep.search import read_system_attrs

    for sampler in (TPE, RANDOM):
        db = f"{sampler['_target_']}.db"
        _run(tmp_path, db, sampler, StubLauncher(), n_trials=5)
        assert read_system_attrs(tmp_path / db) == []


# ---------------------------------------------------------------------------------------- the command


TINY = ["dataset=ring8", "arch=mlp", "arch.width=16", "arch.depth=1", "train.batch_size=64", "train.iterations=10",
        "train.progress=false", "threads=1", "device=cpu", "search.metric=hq_pct", "hydra.sweeper.n_trials=1",
        "objective.lr=tag(log, interval(1e-4, 1e-2))"]


def _listing(root: Path):
    return sorted((p.relative_to(root).as_posix(), p.stat().st_size if p.is_file() else None)
                  for p in root.rglob("*"))


def _refused(tmp_path: Path, *args: str) -> str:
    """Run a search that must be refused: exit 1, one line on stderr (returned), nothing on stdout (no
    alembic "setup plugin" lines), nothing written under tmp_path (the command's cwd)."""
    before = _listing(tmp_path)
    env = {k: v for k, v in os.environ.items() if k != "HYDRA_FULL_ERROR"}
    done = subprocess.run([str(GANBENCH), "-m", "hydra/sweeper=optuna", f"hydra.sweep.dir={tmp_path / 's'}", *TINY,
                           *args], cwd=tmp_path, capture_output=True, text=True, timeout=300, env=env)
    assert done.returncode == 1, done.stderr[-3000:]
    assert done.stdout == ""
    lines = done.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("ganbench: error: "), done.stderr[-3000:]
    assert _listing(tmp_path) == before
    return lines[0][len("ganbench: error: "):]


SAMPLER_LINE = ("hydra/sweeper/sampler: {} is not available in a search; allowed: tpe, random (a grid is a plain "
                "sweep: ganbench -m a=1,2,3; cmaes stores pickles in the study database; nsgaii and motpe need "
                "several objectives)")


def test_grid_sampler_is_refused_in_one_complete_line(tmp_path):
    assert _refused(tmp_path, "hydra/sweeper/sampler=grid") == SAMPLER_LINE.format("grid")


def test_cmaes_is_refused_and_a_planted_pickle_never_runs(tmp_path):
    """sampler=cmaes on a sweep directory whose optuna.db carries a planted cma:optimizer; then the same file
    with TPE: refused both times in one line, the marker never created."""
    sweep, marker = tmp_path / "s", tmp_path / "marker"
    sweep.mkdir()
    _planted(sweep / "optuna.db", marker, "trial")
    assert _refused(tmp_path, "hydra/sweeper/sampler=cmaes") == SAMPLER_LINE.format("cmaes")
    line = _refused(tmp_path)
    assert line.startswith(f"{sweep / 'optuna.db'}: study 's', trial 1 holds the system attribute 'cma:optimizer'")
    assert not marker.exists()


def test_a_bad_storage_path_names_the_key(tmp_path):
    """A file under a file (the command: one line, nothing written), a directory, a file that is not a
    database (the checks the command runs before writing): one line naming hydra.sweeper.storage."""
    from ganbench.errors import ConfigError
    from ganbench.sweep.search import check_storage, check_storage_path

    (tmp_path / "afile").write_bytes(b"not a database" * 100)
    (tmp_path / "adir").mkdir()
    assert _refused(tmp_path, f"hydra.sweeper.storage=sqlite:///{tmp_path}/afile/x.db") == (
        f"hydra.sweeper.storage: {tmp_path}/afile/x.db cannot be created: {tmp_path}/afile is a file, not a directory")
    with pytest.raises(ConfigError) as err:
        check_storage_path(tmp_path / "adir", "hydra.sweeper.storage")
    assert str(err.value) == (f"hydra.sweeper.storage: {tmp_path}/adir is a directory; give a file, e.g. "
                              f"sqlite:///{tmp_path}/adir/optuna.db")
    check_storage_path(tmp_path / "afile", "hydra.sweeper.storage")   # a file: opened, then checked
    with pytest.raises(ConfigError) as err:
        check_storage(tmp_path / "afile", {"s": {}}, "hydra.sweeper.storage")
    assert str(err.value) == (f"hydra.sweeper.storage: {tmp_path}/afile: not an Optuna database (file is not a "
                              "database); it was left untouched; use another hydra.sweep.dir or hydra.sweeper.storage")
    assert (tmp_path / "afile").read_bytes() == b"not a database" * 100
