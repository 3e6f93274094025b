"""Sweeps end to end on toy data: presets, launchers, run-directory names, local preemption/resume."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir

from conftest import ganbench_popen, ganbench_run
import ganbench.cli  # noqa: F401 - registers the gb.dirname resolver used by the presets
from ganbench.report import cli as report_cli, tables as report
from ganbench.cli import config_dir

SHRINK = ["train.iterations=60", "train.log_every=20", "train.ckpt_every=30", "train.sample_every=60", "eval.every=30"]


def ganbench(args, cwd, timeout=600, **kw):
    """Run the ganbench CLI in a fresh process (Hydra keeps global state per process)."""
    env = dict(os.environ, HYDRA_FULL_ERROR="1", PYTHONUNBUFFERED="1")
    return subprocess.run(
        [sys.executable, "-m", "ganbench.cli", *args], cwd=cwd, env=env, capture_output=True, text=True,
        timeout=timeout, **kw,
    )


def results(run_dir: Path) -> dict:
    return json.loads((run_dir / "results.json").read_text())


def compose_preset(*overrides):
    with initialize_config_dir(config_dir=config_dir(), version_base="1.3"):
        return compose(config_name="config", overrides=list(overrides), return_hydra_config=True)


def check_2x2_sweep(sweep: Path):
    runs = sorted(p.relative_to(sweep).as_posix() for p in sweep.glob("*/seed=*"))
    # readable names from the sweep's overrides, the swept key (objective) first and the constant ones
    # sorted after it, seed on its own level, the preset's name left out (the sweep folder names it)
    name = lambda o: ",".join([f"objective={o}", *sorted(SHRINK)])  # noqa: E731
    assert runs == [f"{name(o)}/seed={s}" for o in ("dragan", "vanilla") for s in (0, 1)]
    for run in runs:
        res = results(sweep / run)
        assert res["status"] == "completed", (run, res.get("error"))
        assert res["step"] == res["iterations"] == 60
        assert (sweep / run / "metrics.jsonl").exists()
    assert report_cli.main([str(sweep), "--no-figures"]) == 0
    groups = report.group_runs(report.find_runs([sweep]))
    assert [g.label for g in groups] == ["objective=dragan", "objective=vanilla"]
    assert all(g.status_counts() == {"completed": 2} for g in groups)


@pytest.mark.slow
def test_quickstart_sweep_basic_launcher(tmp_path):
    sweep = tmp_path / "sweep"
    done = ganbench_run(["-m", "experiment=quickstart_sweep", f"hydra.sweep.dir={sweep}", *SHRINK], tmp_path,
                        env=dict(os.environ, HYDRA_FULL_ERROR="1"))
    assert done.returncode == 0, done.stderr[-3000:]
    check_2x2_sweep(sweep)


@pytest.mark.slow
def test_quickstart_sweep_joblib(tmp_path):
    sweep = tmp_path / "sweep"
    args = ["-m", "experiment=quickstart_sweep", "hydra/launcher=joblib", "hydra.launcher.n_jobs=2"]
    done = ganbench([*args, f"hydra.sweep.dir={sweep}", *SHRINK], cwd=tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]
    check_2x2_sweep(sweep)
    assert "Joblib.Parallel(n_jobs=2" in done.stdout + done.stderr


def test_submitting_side_imports_no_torch():
    """The CLI module, the launchers, preemption and the report load without torch (light submitter)."""
    code = (
        "import sys, ganbench.cli, ganbench.sweep.slurm, ganbench.sweep.preview, ganbench.run.preemption, "
        "ganbench.report.cli, hydra_plugins.ganbench_launcher.launchers; "
        "assert 'torch' not in sys.modules, 'torch imported'"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]


def test_presets_define_their_sweeps():
    toy = compose_preset("experiment=toy_mode_collapse")
    params = toy.hydra.sweeper.params
    assert params.dataset.split(",") == ["ring8", "grid25"]
    assert sorted(params.arm.split(",")) == sorted(
        ["vanilla", "minimax", "dragan", "wgan", "wgan_gp", "unrolled", "pacgan2", "pacgan4", "sngan"])
    assert "seed" not in params and toy.train.replicas == 10  # 10 trials per job, as replicas
    assert toy.arch.name == "mlp" and "joblib" in toy.hydra.launcher._target_

    quick = compose_preset("experiment=quickstart_sweep")
    assert quick.hydra.sweeper.params.objective.split(",") == ["vanilla", "dragan"]
    assert quick.hydra.sweeper.params.seed.split(",") == ["0", "1"]


@pytest.mark.parametrize(
    "objective, iterations, n_dis, lr, betas, penalty, optimizer",
    [
        ("vanilla", 500_000, 1, 2e-4, [0.5, 0.999], "none", "adam"),
        ("dragan", 500_000, 1, 1e-4, [0.5, 0.9], "dragan", "adam"),
        ("wgan", 100_000, 5, 5e-5, None, "weight_clip", "rmsprop"),
        ("wgan_gp", 100_000, 5, 1e-4, [0.5, 0.9], "wgan_gp", "adam"),
        ("sngan", 100_000, 5, 2e-4, [0.0, 0.9], "none", "adam"),
    ],
)
def test_dragan_vs_wgangp_paper_settings(objective, iterations, n_dis, lr, betas, penalty, optimizer):
    """§3.1: the WGANs' generator budget N, vanilla/DRAGAN 5N (= the WGANs' discriminator steps)."""
    cfg = compose_preset("experiment=dragan_vs_wgangp_cifar10", f"objective={objective}")
    assert cfg.dataset.name == "cifar10" and cfg.arch.name == "dcgan" and cfg.train.batch_size == 64
    assert cfg.train.iterations == iterations
    assert cfg.train.iterations * cfg.objective.n_dis == 500_000  # same discriminator iterations
    assert cfg.arch.d.spectral_norm == (objective == "sngan")
    assert cfg.objective.n_dis == n_dis and cfg.objective.lr == pytest.approx(lr)
    assert cfg.penalty.name == penalty and cfg.optimizer.name == optimizer
    if betas is not None:
        assert list(cfg.optimizer.d.betas) == betas
    if penalty in ("dragan", "wgan_gp"):
        assert cfg.penalty.lambda_ == 10.0 and cfg.penalty.k == 1.0
    if penalty == "weight_clip":
        assert cfg.penalty.clip == 0.01
    # the ^g score of vanilla/DRAGAN is read at step N: an evaluation must fall on it
    assert cfg.compare.wgan_iterations % cfg.eval.every == 0
    assert cfg.eval.num_samples == cfg.eval.num_samples_final  # one protocol for the ^g and ^d numbers
    assert cfg.arch.d_norm == "none"  # one D in every arm: the comparison varies the objective only
    assert set(cfg.hydra.sweeper.params.objective.split(",")) == {"vanilla", "dragan", "wgan", "wgan_gp", "sngan"}
    assert len(cfg.hydra.sweeper.params.seed.split(",")) == 3


def test_sweep_preview_prints_each_objective(capsys):
    from ganbench.sweep import preview

    assert preview.main(["-m", "experiment=dragan_vs_wgangp_cifar10", "--cfg", "job", "--resolve"], config_dir()) == 0
    out = capsys.readouterr().out
    headers = [line for line in out.splitlines() if line.startswith("# run ")]
    assert headers == [f"# run {i}/5: objective={o}  (seeds 0,1,2)"
                       for i, o in enumerate(["vanilla", "dragan", "wgan", "wgan_gp", "sngan"], start=1)]
    blocks = out.split("# run ")[1:]
    assert "iterations: 500000" in blocks[0] and "n_dis: 1" in blocks[0]
    assert "iterations: 100000" in blocks[2] and "n_dis: 5" in blocks[2] and "clip: 0.01" in blocks[2]


def test_dragan_vs_wgangp_cfg_job_via_cli(tmp_path):
    """`ganbench -m <preset> --cfg job` (Hydra alone refuses -m with --cfg; the CLI previews instead)."""
    done = ganbench(["-m", "experiment=dragan_vs_wgangp_cifar10", "--cfg", "job"], cwd=tmp_path, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.count("# run ") == 5 and "objective=wgan_gp" in done.stdout
    assert not (tmp_path / "outputs").exists()  # a preview writes nothing


def _wait_for(predicate, timeout, what):
    end = time.time() + timeout
    while time.time() < end:
        if predicate():
            return
        time.sleep(0.2)
    raise AssertionError(f"timed out waiting for {what}")


def tensorboard_steps(run_dir: Path, tag: str):
    """Steps of ``tag`` as TensorBoard shows them (purged events of a resumed run dropped)."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(run_dir), size_guidance={"scalars": 0})
    acc.Reload()
    return [e.step for e in acc.Scalars(tag)]


def raw_event_steps(run_dir: Path, tag: str):
    """Every (file, step) of ``tag`` written to any event file, purged or not."""
    from tensorboard.backend.event_processing.event_file_loader import EventFileLoader

    out = []
    for path in sorted(run_dir.glob("events.out.tfevents.*")):
        for event in EventFileLoader(str(path)).Load():
            if event.HasField("summary") and any(v.tag == tag for v in event.summary.value):
                out.append(event.step)
    return out


@pytest.mark.slow
@pytest.mark.parametrize("sig", [signal.SIGUSR2, signal.SIGTERM])
def test_signal_checkpoints_and_rerun_resumes_exactly(tmp_path, sig):
    """Outside SLURM: the signal stops the run at a step boundary with a checkpoint; rerunning resumes."""
    run_dir = tmp_path / "run"
    args = ["experiment=quickstart", "objective=vanilla", f"hydra.run.dir={run_dir}", "train.iterations=1000", "train.log_every=10",
            "train.ckpt_every=100000", "train.sample_every=100000", "eval.every=0", "train.progress=false"]
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    proc = ganbench_popen(args, tmp_path, env=env)
    try:
        log = run_dir / "train.log"
        _wait_for(lambda: log.exists() and "step 20/" in log.read_text(), 300, "training to start")
        proc.send_signal(sig)
        proc.wait(timeout=300)
        err = proc.stderr
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 128 + sig, err[-2000:]
    assert f"stopped on {signal.Signals(sig).name}" in err and "run the same command again to resume" in err
    first = results(run_dir)
    assert first["status"] == "preempted" and 20 <= first["step"] < 1000, first
    assert (run_dir / "checkpoints" / "last.pt").exists()

    done = ganbench_run(args, tmp_path, env=dict(os.environ, HYDRA_FULL_ERROR="1"))
    assert done.returncode == 0, done.stderr[-3000:]
    final = results(run_dir)
    assert final["status"] == "completed" and final["step"] == final["iterations"] == 1000
    steps = tensorboard_steps(run_dir, "loss/D")
    assert steps == sorted(set(steps)) and steps[-1] == 1000, steps
    assert set(range(10, 1001, 10)) <= set(steps), "a logging step is missing after the resume"
    # the stop was at a step boundary right after the checkpoint: nothing past it was written twice
    raw = raw_event_steps(run_dir, "loss/D")
    assert len(raw) == len(set(raw)), "duplicated TensorBoard steps"


ORPHAN_CHILD = r"""
import multiprocessing as mp, os, sys, time
from pathlib import Path
from ganbench.run import preemption

def child(out):
    stop = preemption.StopRequest()
    assert preemption.watch_parent(stop, poll_s=0.05) is not None
    time.sleep(0.5)  # the parent is alive: no stop yet
    Path(out, "ready").write_text(f"{os.getpid()} {stop.requested}")
    end = time.time() + 30
    while not stop.requested and time.time() < end:
        time.sleep(0.02)
    Path(out, "stopped").write_text(f"{stop.requested} {stop.orphaned_from} {stop.signal_name}")

if __name__ == "__main__":
    out = sys.argv[1]
    mp.set_start_method("spawn")
    proc = mp.Process(target=child, args=(out,))
    proc.start()
    end = time.time() + 60
    while not Path(out, "ready").exists() and time.time() < end:
        time.sleep(0.02)
    Path(out, "parent").write_text(str(os.getpid()))
    os._exit(0)  # the parent dies without a word to its child (no join, no terminate)
"""


def test_parent_watchdog_stops_an_orphaned_worker(tmp_path):
    """A multiprocessing child whose parent exits gets a stop request; before that it gets none."""
    script = tmp_path / "orphan.py"
    script.write_text(ORPHAN_CHILD)
    done = subprocess.run([sys.executable, str(script), str(tmp_path)], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    _wait_for(lambda: (tmp_path / "stopped").exists(), 30, "the orphan's stop request")
    child_pid, requested_early = (tmp_path / "ready").read_text().split()
    assert requested_early == "False"
    requested, orphaned_from, *name = (tmp_path / "stopped").read_text().split()
    assert requested == "True" and orphaned_from == (tmp_path / "parent").read_text()
    assert " ".join(name) == f"the exit of the launcher process {orphaned_from}"


def test_parent_watchdog_is_off_outside_worker_processes():
    """A plain run (its parent a shell, or nohup's init) is never stopped for its parent's exit."""
    from ganbench.run import preemption

    stop = preemption.install()
    try:
        assert stop.watch is None and not stop.requested
    finally:
        preemption.uninstall(stop)


@pytest.mark.slow
def test_killing_the_joblib_launcher_stops_its_workers(tmp_path):
    """SIGTERM to `ganbench -m` alone (not its process group): the loky workers checkpoint, record
    "preempted" and exit instead of training on unobserved; rerunning the sweep resumes both runs.

    Without the watchdog the orphans train on to step 1,000 (~10 s at batch 64) and end "completed", or
    are still training when the 15 s wait below ends; either fails the test."""
    sweep = tmp_path / "sweep"
    iterations = 1000  # batch 64: the rerun below trains both runs to the end, its cost in this test
    args = ["-m", "experiment=quickstart", "objective=vanilla,dragan", "train.batch_size=64",
            "hydra/launcher=joblib", "hydra.launcher.n_jobs=2",
            f"hydra.sweep.dir={sweep}", f"train.iterations={iterations}", "train.log_every=10",
            "train.ckpt_every=100000", "train.sample_every=100000", "eval.every=0", "train.progress=false"]
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    stderr = tmp_path / "stderr.txt"
    with open(stderr, "w") as err:  # the workers inherit it: their last line lands here
        proc = subprocess.Popen([sys.executable, "-m", "ganbench.cli", *args], cwd=tmp_path, env=env,
                                stdout=subprocess.DEVNULL, stderr=err)
    workers = []
    try:
        logs = lambda: sorted(sweep.glob("*/seed=0/train.log"))  # noqa: E731
        _wait_for(lambda: len(logs()) == 2 and all("step 20/" in p.read_text() for p in logs()), 300,
                  "both jobs to train")
        workers = [int((p.parent / ".ganbench.lock").read_text()) for p in logs()]
        assert proc.pid not in workers and len(set(workers)) == 2
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=60)

        def gone(pid):  # exited: no such process, or a zombie that no init reaps in a container
            try:
                return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] == "Z"
            except (FileNotFoundError, ProcessLookupError):
                return True

        _wait_for(lambda: all(gone(pid) for pid in workers), 15, "the orphaned workers to exit")
    finally:
        if proc.poll() is None:
            proc.kill()
        for pid in workers:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
    runs = [p.parent for p in logs()]
    for run in runs:
        first = results(run)
        assert first["status"] == "preempted" and 20 <= first["step"] < iterations, first
        assert (run / "checkpoints" / "last.pt").exists()
    said = stderr.read_text()
    assert said.count(f"stopped on the exit of the launcher process {proc.pid}; checkpoint saved") == 2, said[-2000:]

    done = ganbench(args, cwd=tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]
    for run in runs:
        final = results(run)
        assert final["status"] == "completed" and final["step"] == iterations, final
        assert "resumed from" in (run / "train.log").read_text()


def test_slurm_collection_fails_lost_jobs_and_keeps_the_others(tmp_path, monkeypatch):
    """Without sacct, a job SLURM no longer runs and that left no result fails; the rest are collected."""
    from types import SimpleNamespace

    from hydra.core.utils import JobReturn, JobStatus
    from submitit.core.utils import UncompletedJobError

    from ganbench.sweep import slurm

    class FakeJob:
        def __init__(self, job_id):
            self.job_id = job_id
            self.paths = SimpleNamespace(result_pickle=tmp_path / f"{job_id}_result.pkl", stderr=tmp_path / "err")

        def done(self):
            raise AssertionError("sacct is off: the collector must not ask submitit's watcher")

        def results(self):
            return [JobReturn(overrides=[self.job_id], status=JobStatus.COMPLETED, _return_value=self.job_id)]

    jobs = [FakeJob("7_0"), FakeJob("7_1"), FakeJob("7_2")]
    polls = []

    def squeue(array_ids):
        polls.append(array_ids)
        if len(polls) == 1:
            return {"7_0": "RUNNING", "7_1": "CANCELLED", "7_2": "PENDING"}
        jobs[0].paths.result_pickle.touch()  # the first job finishes and writes its result
        return {"7_0": "COMPLETED", "7_2": "PENDING"} if len(polls) < 4 else {}

    monkeypatch.setattr(slurm, "_sacct_works", lambda job_id: False)
    monkeypatch.setattr(slurm, "_squeue_states", squeue)
    # 7_1 was cancelled; 7_2 stays PENDING (as a requeued job does) until poll 4, then vanishes
    out = slurm.collect_results(jobs, [["a"], ["b"], ["c"]], poll_interval_s=0.01, lost_job_grace_s=0.0)
    assert out[0].status == JobStatus.COMPLETED and out[0].return_value == "7_0"
    for ret in out[1:]:
        assert ret.status == JobStatus.FAILED and isinstance(ret._return_value, UncompletedJobError)
    assert "7_1 ended without a result" in str(out[1]._return_value)
    assert len(polls) >= 4  # 7_2 was waited for while SLURM listed it as PENDING
