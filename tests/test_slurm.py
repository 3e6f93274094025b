"""Sweeps on a real single-node SLURM cluster (slurmctld + slurmd on this machine, munge auth).

The cluster is started with scripts/slurm_cluster.sh in a private temporary folder (its slurm.conf,
state, logs and its own munged with its own key and socket; clients get SLURM_CONF), so running
the tests writes nothing under /etc, /var or /run. It needs root and Debian's slurm-wlm and munge.

Installing those packages (apt-get, as root) is a change to the machine that `pytest` makes only
when asked to: with CI=true, or with the opt-in GANBENCH_SLURM_INSTALL=1. Otherwise, when
slurmctld, slurmd, munged or sbatch is missing, the tests skip with that reason. In CI (CI=true) a
cluster that cannot be started fails the tests instead of skipping them. A requeued job waits ~2
minutes before SLURM starts it again, so the preemption test takes 3-4 minutes.
"""

import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Mapping, NamedTuple, Optional

import pytest

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "scripts" / "slurm_cluster.sh"
LAUNCH = ["hydra/launcher=slurm", "hydra.launcher.cpus_per_task=1", "hydra.launcher.poll_interval_s=2",
          "hydra.launcher.timeout_min=30"]
DAEMONS = ("slurmctld", "slurmd", "munged", "sbatch")
SKIP_NO_PACKAGES = ("slurm-wlm/munge are not installed (no {missing} on PATH): set GANBENCH_SLURM_INSTALL=1 "
                    "or CI=true to let the test apt-get install slurm-wlm munge")
_TRUE = ("1", "true", "yes")


def in_ci(environ: Mapping[str, str]) -> bool:
    return environ.get("CI", "").lower() in _TRUE


def install_allowed(environ: Mapping[str, str]) -> bool:
    """apt-get may run only with CI=true or the explicit opt-in GANBENCH_SLURM_INSTALL=1."""
    return in_ci(environ) or environ.get("GANBENCH_SLURM_INSTALL", "").lower() in _TRUE


class Plan(NamedTuple):
    """What the cluster fixture does: the slurm_cluster.sh start arguments, or why it cannot run."""
    start_args: Optional[list]
    reason: str = ""


def cluster_plan(environ: Mapping[str, str], euid: int, path: Optional[str] = None) -> Plan:
    """Decide from the environment, the effective uid and PATH: start the installed packages, install
    them first (only when install_allowed), or not run (reason)."""
    if euid != 0:
        return Plan(None, "starting slurmctld/slurmd needs root")
    missing = [d for d in DAEMONS if shutil.which(d, path=path) is None]
    if not missing:
        return Plan(["start"])
    if install_allowed(environ):
        return Plan(["start", "--install"])
    return Plan(None, SKIP_NO_PACKAGES.format(missing=", ".join(missing)))


def _unavailable(reason: str):
    if in_ci(os.environ):
        pytest.fail(f"SLURM test must run in CI: {reason}")
    pytest.skip(reason)


@pytest.fixture(scope="module")
def cluster():
    """SLURM_CONF of a running private cluster (an existing SLURM_CLUSTER_DIR's cluster is reused)."""
    if os.name != "posix":
        _unavailable("the SLURM test needs a POSIX machine")
    plan = cluster_plan(os.environ, os.geteuid())
    if plan.start_args is None:
        _unavailable(plan.reason)
    try:
        import hydra_plugins.ganbench_launcher.launchers  # noqa: F401
    except ImportError as err:
        pytest.fail(f"the hydra/launcher=slurm plugin is not importable (reinstall ganbench): {err}")
    # Not pytest's tmp_path: munged needs every folder above its socket to be searchable by the
    # munge user, and pytest's base folder is private to root (0700).
    own_dir = "SLURM_CLUSTER_DIR" not in os.environ
    cluster_dir = os.environ.get("SLURM_CLUSTER_DIR") or tempfile.mkdtemp(prefix="ganbench-slurm-")
    script_env = dict(os.environ, SLURM_CLUSTER_DIR=cluster_dir)
    was_running = "slurmctld running" in subprocess.run(
        ["bash", str(SCRIPT), "status"], env=script_env, capture_output=True, text=True).stdout
    started = subprocess.run(["bash", str(SCRIPT), *plan.start_args], env=script_env, capture_output=True,
                             text=True, timeout=900)
    try:
        if started.returncode != 0:
            _unavailable(f"cannot start a SLURM cluster (exit {started.returncode}): {started.stderr.strip()[-500:]}")
        yield str(Path(cluster_dir) / "slurm.conf")
    finally:
        if not was_running:
            subprocess.run(["bash", str(SCRIPT), "stop"], env=script_env, capture_output=True, timeout=120)
            if own_dir:
                shutil.rmtree(cluster_dir, ignore_errors=True)


# ---------------------------------------------------------------- the decision, without a cluster

def _fake_tools(folder: Path, names) -> str:
    folder.mkdir(exist_ok=True)
    for name in names:
        tool = folder / name
        tool.write_text("#!/bin/sh\nexit 0\n")
        tool.chmod(0o755)
    return str(folder)


def test_no_install_without_ci_or_opt_in(tmp_path, monkeypatch):
    """CI and GANBENCH_SLURM_INSTALL unset, no slurmctld on PATH: skip with the reason, never --install."""
    monkeypatch.delenv("CI", raising=False)
    monkeypatch.delenv("GANBENCH_SLURM_INSTALL", raising=False)
    empty = str(tmp_path / "empty")
    monkeypatch.setenv("PATH", empty)
    plan = cluster_plan(os.environ, euid=0)
    assert plan.start_args is None
    assert plan.reason == SKIP_NO_PACKAGES.format(missing="slurmctld, slurmd, munged, sbatch")
    assert "set GANBENCH_SLURM_INSTALL=1 or CI=true to let the test apt-get install slurm-wlm munge" in plan.reason
    # Values that are not an opt-in do not install either; a partial install is still "missing".
    for env in ({"CI": "false"}, {"CI": ""}, {"GANBENCH_SLURM_INSTALL": "0"}):
        assert cluster_plan(env, euid=0, path=empty).start_args is None, env
    partial = _fake_tools(tmp_path / "partial", ["slurmctld", "slurmd", "sbatch"])
    plan = cluster_plan({}, euid=0, path=partial)
    assert plan.start_args is None and "no munged on PATH" in plan.reason
    # The opt-ins install; installed packages start without installing; not root: never.
    assert cluster_plan({"GANBENCH_SLURM_INSTALL": "1"}, euid=0, path=empty).start_args == ["start", "--install"]
    assert cluster_plan({"CI": "true"}, euid=0, path=empty).start_args == ["start", "--install"]
    installed = _fake_tools(tmp_path / "installed", DAEMONS)
    assert cluster_plan({}, euid=0, path=installed).start_args == ["start"]
    assert cluster_plan({"CI": "true"}, euid=1000, path=empty).start_args is None


def test_script_start_without_install_changes_nothing(tmp_path):
    """slurm_cluster.sh start (no --install) with the packages absent: exit 3, apt-get never called,
    the private folder not even created."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    calls = tmp_path / "apt-get-calls"
    apt = bin_dir / "apt-get"
    apt.write_text(f"#!/bin/sh\necho \"$@\" >> {calls}\nexit 0\n")
    apt.chmod(0o755)
    # /usr/bin and /bin for bash and coreutils, but not /usr/sbin, where slurmctld, slurmd and munged live.
    path = f"{bin_dir}:/usr/bin:/bin"
    if all(shutil.which(d, path=path) for d in DAEMONS):
        pytest.skip("slurmctld/slurmd/munged/sbatch are on /usr/bin or /bin here; cannot hide them")
    cluster_dir = tmp_path / "cluster"
    done = subprocess.run(["bash", str(SCRIPT), "start"], capture_output=True, text=True, timeout=60,
                          env={"PATH": path, "SLURM_CLUSTER_DIR": str(cluster_dir), "HOME": str(tmp_path)})
    assert done.returncode == 3, done.stderr
    assert "not installed" in done.stderr
    assert not calls.exists() and not cluster_dir.exists()


# ---------------------------------------------------------------- on the real cluster

def ganbench_cmd(*args):
    return [sys.executable, "-m", "ganbench.cli", *args]


def env(slurm_conf: str):
    return dict(os.environ, PYTHONUNBUFFERED="1", HYDRA_FULL_ERROR="1", SLURM_CONF=slurm_conf)


def job_dirs(sweep: Path):
    """submitit's per-job folders: <id>_<index> for the tasks of an array, else <id> of a single job."""
    dirs = [p for p in (sweep / ".submitit").iterdir() if p.is_dir()]
    tasks = sorted(p for p in dirs if re.fullmatch(r"\d+_\d+", p.name))
    return tasks or sorted(p for p in dirs if re.fullmatch(r"\d+", p.name))


def run_dirs(sweep: Path):
    return sorted(p for p in sweep.glob("*/seed=*") if p.is_dir())


@pytest.mark.slurm
@pytest.mark.slow
def test_quickstart_sweep_on_slurm(cluster, tmp_path):
    sweep = tmp_path / "sweep"
    shrink = ["train.iterations=60", "train.log_every=20", "train.ckpt_every=30", "train.sample_every=60",
              "eval.every=30"]
    t0 = time.time()
    done = subprocess.run(ganbench_cmd("-m", "experiment=quickstart_sweep", *LAUNCH, f"hydra.sweep.dir={sweep}", *shrink),
                          cwd=tmp_path, env=env(cluster), capture_output=True, text=True, timeout=900)
    print(f"quickstart_sweep on SLURM: {time.time() - t0:.0f} s")
    assert done.returncode == 0, (done.stdout + done.stderr)[-4000:]
    runs = run_dirs(sweep)
    assert len(runs) == 4
    for run in runs:
        res = json.loads((run / "results.json").read_text())
        assert res["status"] == "completed" and res["step"] == res["iterations"] == 60, run
    # one SLURM array task per run, each with submitit's logs
    assert len(job_dirs(sweep)) == 4


@pytest.mark.slurm
@pytest.mark.slow
def test_replicas_on_slurm(cluster, tmp_path):
    """`-m hydra/launcher=slurm objective=vanilla,dragan train.replicas=2`: 2 SLURM jobs of 2 seeds each, every
    seed in its own run directory."""
    sweep = tmp_path / "sweep"
    shrink = ["train.iterations=40", "train.log_every=20", "train.ckpt_every=20", "train.sample_every=40",
              "eval.every=20", "seed=0", "train.replicas=2"]
    done = subprocess.run(ganbench_cmd("-m", "experiment=quickstart_sweep", "hydra.sweeper.params.seed=0", *LAUNCH,
                                       f"hydra.sweep.dir={sweep}", *shrink),
                          cwd=tmp_path, env=env(cluster), capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, (done.stdout + done.stderr)[-4000:]
    assert "sweep of 4 runs" in done.stdout and "4 completed" in done.stdout
    runs = run_dirs(sweep)
    assert sorted(r.name for r in runs) == ["seed=0", "seed=0", "seed=1", "seed=1"]
    for run in runs:
        res = json.loads((run / "results.json").read_text())
        assert res["status"] == "completed" and res["step"] == 40 and res["config"]["seed"] == int(run.name[5:])
    assert len(job_dirs(sweep)) == 2  # one SLURM job per objective, each training its two seeds


def _wait_for(predicate, timeout, what, proc=None):
    end = time.time() + timeout
    while time.time() < end:
        if predicate():
            return
        if proc is not None and proc.poll() is not None:
            raise AssertionError(f"submitting process exited (rc {proc.returncode}) while waiting for {what}")
        time.sleep(0.5)
    raise AssertionError(f"timed out after {timeout} s waiting for {what}")


@pytest.mark.slurm
@pytest.mark.slow
def test_preempted_job_is_requeued_and_resumes_exactly(cluster, tmp_path):
    """scancel --signal=USR2: checkpoint at the next step, requeue, resume in the same dir, exact end."""
    from test_sweeps import raw_event_steps, tensorboard_steps  # tests/ is on sys.path (rootdir conftest)

    sweep = tmp_path / "sweep"
    iterations = 1500
    args = ["-m", "experiment=quickstart_sweep", *LAUNCH, f"hydra.sweep.dir={sweep}",
            "hydra.sweeper.params.objective=vanilla", "hydra.sweeper.params.seed=0",
            f"train.iterations={iterations}", "train.log_every=10", "eval.every=500",
            # the only mid-run checkpoint is the one the signal asks for: resuming past step 0 proves it
            "train.ckpt_every=100000", "train.sample_every=100000"]
    t0 = time.time()
    job_id = None
    proc = subprocess.Popen(ganbench_cmd(*args), cwd=tmp_path, env=env(cluster), stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)
    try:
        def training():
            logs = list(sweep.glob("*/seed=0/train.log"))
            return bool(logs) and "step 20/" in logs[0].read_text()

        _wait_for(training, 300, "the SLURM job to start training", proc)
        (job_dir,) = job_dirs(sweep)
        job_id = job_dir.name
        subprocess.run(["scancel", "--signal=USR2", job_id], check=True, env=env(cluster))
        t_signal = time.time()
        out, _ = proc.communicate(timeout=480)
    finally:
        if proc.poll() is None:
            proc.kill()
            if job_id:
                subprocess.run(["scancel", job_id], check=False, env=env(cluster))
    print(f"requeue test: submitted→signal {t_signal - t0:.0f} s, signal→sweep done {time.time() - t_signal:.0f} s")
    assert proc.returncode == 0, out[-4000:]

    (run,) = run_dirs(sweep)
    res = json.loads((run / "results.json").read_text())
    assert res["status"] == "completed" and res["step"] == res["iterations"] == iterations, res
    log = (run / "train.log").read_text()
    assert "resumed from" in log, log[-2000:]
    resumed_at = int(log.split("resumed from", 1)[1].split("generator step", 1)[1].split()[0])
    assert 20 <= resumed_at < iterations
    submitit_log = "".join(p.read_text() for p in job_dir.glob("*_log.out"))
    assert "Requeued job" in submitit_log and submitit_log.count("Starting with JobEnvironment") == 2

    steps = tensorboard_steps(run, "loss/D")
    assert steps == sorted(set(steps)) and steps[-1] == iterations
    assert set(range(10, iterations + 1, 10)) <= set(steps)
    raw = raw_event_steps(run, "loss/D")
    assert len(raw) == len(set(raw)), "duplicated TensorBoard steps"
    evals = [json.loads(line)["step"] for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert evals == sorted(set(evals)) and evals[-1] == iterations


# ------------------------------------------------- a search through hydra/launcher=slurm (moved from test_search:
# every test of the cluster lives in this module, so that one pytest-xdist worker owns the cluster and its ports)

from test_search import LR, TINY, finished, seed_value, study  # noqa: E402 - the search tests' tiny protocol


@pytest.mark.slurm
@pytest.mark.slow
def test_search_on_slurm(cluster, tmp_path):
    """A 4-trial search through hydra/launcher=slurm: two batches of two trials, each batch one job array."""
    sweep = tmp_path / "sweep"
    t0 = time.time()
    done = subprocess.run(ganbench_cmd("-m", "hydra/sweeper=optuna", *LAUNCH, f"hydra.sweep.dir={sweep}", *TINY,
                                       "train.iterations=40", "search.metric=hq_pct", LR, "hydra.sweeper.n_trials=4",
                                       "hydra.sweeper.n_jobs=2"),
                          cwd=tmp_path, env=env(cluster), capture_output=True, text=True, timeout=900)
    print(f"4-trial search on SLURM: {time.time() - t0:.0f} s")
    assert done.returncode == 0, (done.stdout + done.stderr)[-4000:]
    trials = finished(study(sweep))
    assert [t.state.name for t in trials] == ["COMPLETE"] * 4
    for t in trials:
        assert t.value == pytest.approx(seed_value(sweep, t.user_attrs["run_dirs"][0]))
    assert len(job_dirs(sweep)) == 4  # one array task per trial
