"""Sweeps on a real single-node SLURM cluster (slurmctld + slurmd on this machine, munge auth).

The cluster is started with scripts/slurm_cluster.sh (apt-get installs slurm-wlm and munge when
missing, as root). Without the packages or root the tests skip with the reason, except in CI
(CI set), where they must run. A requeued job waits ~2 minutes before SLURM starts it again, so the
preemption test takes 3-4 minutes.
"""

import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest

pytestmark = [pytest.mark.slurm, pytest.mark.slow]

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "scripts" / "slurm_cluster.sh"
IN_CI = bool(os.environ.get("CI"))
LAUNCH = ["hydra/launcher=slurm", "hydra.launcher.cpus_per_task=1", "hydra.launcher.poll_interval_s=2",
          "hydra.launcher.timeout_min=30"]


def _unavailable(reason: str):
    if IN_CI:
        pytest.fail(f"SLURM test must run in CI: {reason}")
    pytest.skip(reason)


@pytest.fixture(scope="module")
def cluster():
    if os.name != "posix" or os.geteuid() != 0:
        _unavailable("starting slurmctld/slurmd needs root")
    try:
        import hydra_plugins.ganbench_launcher.launchers  # noqa: F401
    except ImportError as err:
        pytest.fail(f"the hydra/launcher=slurm plugin is not importable (reinstall ganbench): {err}")
    was_running = "slurmctld running" in subprocess.run(
        ["bash", str(SCRIPT), "status"], capture_output=True, text=True).stdout
    started = subprocess.run(["bash", str(SCRIPT), "start", "--install"], capture_output=True, text=True, timeout=900)
    if started.returncode != 0:
        _unavailable(f"cannot start a SLURM cluster (exit {started.returncode}): {started.stderr.strip()[-500:]}")
    yield
    if not was_running:
        subprocess.run(["bash", str(SCRIPT), "stop"], capture_output=True, timeout=120)


def ganbench_cmd(*args):
    return [sys.executable, "-m", "ganbench.cli", *args]


def env():
    return dict(os.environ, PYTHONUNBUFFERED="1", HYDRA_FULL_ERROR="1")


def job_dirs(sweep: Path):
    """submitit's per-job folders: <id>_<index> for the tasks of an array, else <id> of a single job."""
    dirs = [p for p in (sweep / ".submitit").iterdir() if p.is_dir()]
    tasks = sorted(p for p in dirs if re.fullmatch(r"\d+_\d+", p.name))
    return tasks or sorted(p for p in dirs if re.fullmatch(r"\d+", p.name))


def run_dirs(sweep: Path):
    return sorted(p for p in sweep.glob("*/seed=*") if p.is_dir())


def test_quickstart_sweep_on_slurm(cluster, tmp_path):
    sweep = tmp_path / "sweep"
    shrink = ["train.iterations=60", "train.log_every=20", "train.ckpt_every=30", "train.sample_every=60",
              "eval.every=30"]
    t0 = time.time()
    done = subprocess.run(ganbench_cmd("-m", "experiment=quickstart_sweep", *LAUNCH, f"hydra.sweep.dir={sweep}", *shrink),
                          cwd=tmp_path, env=env(), capture_output=True, text=True, timeout=900)
    print(f"quickstart_sweep on SLURM: {time.time() - t0:.0f} s")
    assert done.returncode == 0, (done.stdout + done.stderr)[-4000:]
    runs = run_dirs(sweep)
    assert len(runs) == 4
    for run in runs:
        res = json.loads((run / "results.json").read_text())
        assert res["status"] == "completed" and res["step"] == res["iterations"] == 60, run
    # one SLURM array task per run, each with submitit's logs
    assert len(job_dirs(sweep)) == 4


def _wait_for(predicate, timeout, what, proc=None):
    end = time.time() + timeout
    while time.time() < end:
        if predicate():
            return
        if proc is not None and proc.poll() is not None:
            raise AssertionError(f"submitting process exited (rc {proc.returncode}) while waiting for {what}")
        time.sleep(0.5)
    raise AssertionError(f"timed out after {timeout} s waiting for {what}")


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
    proc = subprocess.Popen(ganbench_cmd(*args), cwd=tmp_path, env=env(), stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)
    try:
        def training():
            logs = list(sweep.glob("*/seed=0/train.log"))
            return bool(logs) and "step 20/" in logs[0].read_text()

        _wait_for(training, 300, "the SLURM job to start training", proc)
        (job_dir,) = job_dirs(sweep)
        job_id = job_dir.name
        subprocess.run(["scancel", "--signal=USR2", job_id], check=True)
        t_signal = time.time()
        out, _ = proc.communicate(timeout=480)
    finally:
        if proc.poll() is None:
            proc.kill()
            if job_id:
                subprocess.run(["scancel", job_id], check=False)
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
