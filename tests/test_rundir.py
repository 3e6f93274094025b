"""The run directory as a resource (ganbench/run/rundir.py and the CLI's start): one process per directory,
no failed start changes an existing run, a new directory records why it failed, stale temporary files go,
TensorBoard never shows a step twice, restart=true moves a run aside, and a sweep ends with a summary."""
from __future__ import annotations

import errno
import json
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Dict, List

import pytest

from conftest import FAST, POINTS, ganbench_popen, ganbench_run, run_train, scalar_events

TINY = POINTS + FAST


def cli(args: List[str], cwd: Path, timeout: float = 120) -> subprocess.CompletedProcess:
    return ganbench_run(args, cwd, timeout=timeout)


def snapshot(root: Path) -> Dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def one_error_line(proc: subprocess.CompletedProcess) -> str:
    assert proc.returncode != 0, proc.stdout + proc.stderr
    assert "Traceback" not in proc.stdout + proc.stderr
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("ganbench: error: "), proc.stderr
    return lines[0]


@pytest.fixture(scope="module")
def finished(tmp_path_factory):
    """A finished tiny run (its own checkpoint, results.json, .hydra/, train.log, events) and its files."""
    base = tmp_path_factory.mktemp("finished")
    run_dir = base / "run"
    proc = cli(TINY + ["train.iterations=20", f"hydra.run.dir={run_dir}"], cwd=base)
    assert proc.returncode == 0, proc.stderr
    assert json.loads((run_dir / "results.json").read_text())["status"] == "completed"
    return base, run_dir, snapshot(run_dir)


# Failing invocations aimed at the finished run: each check of the start, in the order the start runs them.
# (extra overrides, what the one error line must name)
INTO_FINISHED = {
    "unknown_key": (["train.foo=1"], "train.foo"),
    "bad_value": (["train.batch_size=0"], "train.batch_size"),
    "bad_penalty_option": (["penalty.form=foo"], "penalty.form"),
    "device_cuda": (["device=cuda"], "device"),
    "device_mps": (["device=mps"], "device"),
    "other_seed": (["seed=5"], "seed"),
    "other_objective": (["objective=wgan_gp"], "objective"),
    "other_batch": (["train.batch_size=32"], "train.batch_size"),
    "other_dataset": (["dataset=grid25"], "dataset.name"),
    "other_width": (["arch.width=16"], "arch.width"),
    "arch_does_not_fit": (["arch=dcgan"], "arch"),
    "resume_missing": (["resume=/nonexistent/last.pt"], "resume"),
    "resume_besides_own": (["resume=/tmp"], "resume"),
    "folder_without_path": (["dataset=folder"], "dataset.path"),
    "restart_not_bool": (["restart=maybe"], "restart"),
}


@pytest.mark.parametrize("case", sorted(INTO_FINISHED))
def test_failed_start_leaves_a_finished_run_byte_identical(finished, case):
    base, run_dir, before = finished
    extra, key = INTO_FINISHED[case]
    proc = cli(TINY + ["train.iterations=20", f"hydra.run.dir={run_dir}"] + extra, cwd=base)
    line = one_error_line(proc)
    assert key in line, line
    assert snapshot(run_dir) == before, f"{case}: the finished run's files changed"
    assert not (run_dir / ".ganbench.lock").exists()
    assert json.loads((run_dir / "results.json").read_text())["status"] == "completed"


def test_resume_next_to_own_checkpoint_names_both(finished, tmp_path):
    base, run_dir, _ = finished
    other = tmp_path / "other.pt"
    other.write_bytes(b"x")
    line = one_error_line(cli(TINY + ["train.iterations=20", f"hydra.run.dir={run_dir}", f"resume={other}"], cwd=base))
    assert str(run_dir / "checkpoints" / "last.pt") in line and str(other) in line


def test_rerunning_a_finished_command_keeps_its_record(finished):
    base, run_dir, before = finished
    proc = cli(TINY + ["train.iterations=20", f"hydra.run.dir={run_dir}"], cwd=base)
    assert proc.returncode == 0, proc.stderr
    assert (run_dir / "results.json").read_bytes() == before["results.json"]
    assert (run_dir / "checkpoints/last.pt").read_bytes() == before["checkpoints/last.pt"]


def test_failed_start_in_a_new_directory_records_failed(tmp_path):
    run_dir = tmp_path / "new"
    # A check that reads a file (the config's own checks, the device's included, run before the directory exists).
    missing = tmp_path / "nowhere.pt"
    line = one_error_line(cli(TINY + [f"resume={missing}", f"hydra.run.dir={run_dir}"], cwd=tmp_path))
    record = json.loads((run_dir / "results.json").read_text())
    assert record["status"] == "failed" and record["error"] == line.removeprefix("ganbench: error: ")
    assert sorted(p.name for p in run_dir.iterdir()) == ["results.json"]


def test_validation_error_creates_nothing(tmp_path):
    run_dir = tmp_path / "never"
    one_error_line(cli(TINY + ["train.batch_size=0", f"hydra.run.dir={run_dir}"], cwd=tmp_path))
    assert not run_dir.exists()


@pytest.mark.parametrize("how", ["file", "under_file"])
def test_bad_run_dir_is_reported_under_its_key(tmp_path, how):
    target = tmp_path / "a_file"
    target.write_text("keep")
    run_dir = target if how == "file" else target / "sub"
    line = one_error_line(cli(TINY + [f"hydra.run.dir={run_dir}"], cwd=tmp_path))
    assert "hydra.run.dir" in line and str(target) in line
    assert target.read_text() == "keep"


def test_two_processes_one_directory(tmp_path):
    """The second process aimed at a held directory exits with one line naming it and the holder's PID."""
    run_dir = tmp_path / "shared"
    first = ganbench_popen([*TINY, "train.iterations=1000000", f"hydra.run.dir={run_dir}"], tmp_path)
    try:
        deadline = time.time() + 90
        while not (run_dir / "results.json").exists():  # written when training is about to start
            assert first.poll() is None, first.stderr
            assert time.time() < deadline, "the first run never started"
            time.sleep(0.2)
        holder = (run_dir / ".ganbench.lock").read_text().strip()
        assert holder == str(first.pid)
        before = json.loads((run_dir / "results.json").read_text())
        line = one_error_line(cli(TINY + ["seed=3", "train.iterations=10", f"hydra.run.dir={run_dir}"], cwd=tmp_path))
        assert str(run_dir) in line and str(first.pid) in line
        assert json.loads((run_dir / "results.json").read_text())["config"]["seed"] == before["config"]["seed"] == 0
    finally:
        first.send_signal(signal.SIGTERM)  # a clean stop: checkpoint, status preempted
        first.wait(timeout=60)
    assert not (run_dir / ".ganbench.lock").exists()


def test_stale_lock_and_temporaries_of_a_dead_process_are_taken_over(tmp_path):
    run_dir = tmp_path / "stale"
    (run_dir / "checkpoints").mkdir(parents=True)
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    (run_dir / ".ganbench.lock").write_text(f"{dead.pid}\n")
    leftovers = [run_dir / f".results.json.{dead.pid}.tmp", run_dir / "checkpoints" / f".last.pt.{dead.pid}.tmp"]
    for path in leftovers:
        path.write_bytes(b"torn")
    proc = cli(TINY + ["train.iterations=10", f"hydra.run.dir={run_dir}"], cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert not any(p.exists() for p in leftovers)
    assert not (run_dir / ".ganbench.lock").exists()
    assert "took over the lock" in (run_dir / "train.log").read_text()


@pytest.mark.parametrize("third", [True, False], ids=["recreated_and_held", "unlinked"])
def test_lock_rechecks_the_inode_after_flock(tmp_path, monkeypatch, third):
    """Between our open and our flock the holder releases (unlinks the lock file) and, with ``third``,
    another process creates a new lock file and takes it. Our flock then succeeds on the stale inode,
    which no one else will ever look at: only the inode re-check stops two holders.

    flock locks belong to open file descriptions, so a second open of the new file in this process
    stands for the third process: our flock on it really conflicts."""
    import fcntl
    import os

    from ganbench.run import rundir

    run_dir = tmp_path / "run"
    run_dir.mkdir()
    path = run_dir / rundir.LOCK
    path.write_text("111\n")  # the holder's file, opened by us first
    real_flock = fcntl.flock
    held = []

    def flock(fd, op):
        if not held and os.fstat(fd).st_ino == os.stat(path).st_ino:
            path.unlink()  # the holder's release
            if third:
                other = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
                real_flock(other, fcntl.LOCK_EX | fcntl.LOCK_NB)
                os.write(other, b"333\n")
                held.append(other)
            else:
                held.append(None)
        return real_flock(fd, op)

    monkeypatch.setattr(fcntl, "flock", flock)
    lock = rundir.RunLock(run_dir)
    try:
        if third:
            with pytest.raises(rundir.RunDirError, match=r"is in use by process 333 "):
                lock.acquire()
            assert lock.fd is None and path.read_text() == "333\n"
        else:
            lock.acquire()
            assert os.fstat(lock.fd).st_ino == os.stat(path).st_ino  # the file that is there, not the stale one
            assert path.read_text() == f"{os.getpid()}\n"
    finally:
        lock.release()
        if held and held[0] is not None:
            os.close(held[0])


def test_restart_moves_the_old_run_aside(finished, tmp_path):
    base, run_dir, before = finished
    copy = tmp_path / "run"
    subprocess.run(["cp", "-a", str(run_dir), str(copy)], check=True)
    before = snapshot(copy)
    proc = cli(TINY + ["train.iterations=10", f"hydra.run.dir={copy}", "restart=true"], cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    aside = [p for p in tmp_path.iterdir() if p.name.startswith("run.old-")]
    assert len(aside) == 1 and snapshot(aside[0]) == before
    assert json.loads((copy / "results.json").read_text())["step"] == 10


def test_no_duplicate_tensorboard_steps_after_a_kill_before_the_first_checkpoint(tmp_path):
    run_dir = tmp_path / "killed"
    args = TINY + ["train.log_every=5", "train.ckpt_every=1000000", f"hydra.run.dir={run_dir}"]
    proc = ganbench_popen([*args, "train.iterations=1000000"], tmp_path)
    deadline = time.time() + 90
    while not any(run_dir.glob("events.*")) or len(scalar_events(run_dir).get("loss/D", [])) < 3:
        assert time.time() < deadline and proc.poll() is None
        time.sleep(0.5)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert not (run_dir / "checkpoints" / "last.pt").exists()
    done = cli(args + ["train.iterations=20"], cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    steps = scalar_events(run_dir)["loss/D"]
    assert steps == [5, 10, 15, 20]


def test_disk_full_names_the_file_and_keeps_the_last_checkpoint(tmp_path, monkeypatch):
    import torch

    from ganbench.run import checkpoint
    from ganbench.errors import GanbenchError

    path = tmp_path / "checkpoints" / "last.pt"
    checkpoint.save({"step": 1, "G": {}}, path)
    good = path.read_bytes()

    def full(obj, f, *a, **k):
        f.write(b"partial")
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(torch, "save", full)
    free = r"\((\d+ bytes|[\d.]+ [KMG]iB) free\)"
    with pytest.raises(GanbenchError, match=rf"disk full while writing .*last\.pt\.\d+\.tmp {free}"):
        checkpoint.save({"step": 2, "G": {}}, path)
    assert path.read_bytes() == good
    assert [p.name for p in path.parent.iterdir()] == ["last.pt"]


def test_a_full_disk_never_replaces_a_record(tmp_path, monkeypatch):
    from ganbench.run import rundir
    from ganbench.errors import GanbenchError
    from ganbench.run.record import RunRecord

    record = RunRecord(tmp_path, {}, [])
    record.write("completed", 5, 5, 1.0, 1.0)
    before = (tmp_path / "results.json").read_bytes()

    def full(path, write):
        raise GanbenchError(f"disk full while writing {path} (0.0 MiB free); the previous file was kept")

    monkeypatch.setattr(rundir, "guarded_write", full)
    with pytest.raises(GanbenchError):
        record.write("running", 5, 10, 1.0, None)
    assert (tmp_path / "results.json").read_bytes() == before


def test_best_within_one_protocol(tmp_path):
    """A final 50k-sample FID is not compared with 10k-sample ones: best is over the in-training protocol."""
    from ganbench.run.record import RunRecord

    record = RunRecord(tmp_path, {}, [], best_samples=10_000)
    record.add(10, 0, 0.0, {"fid": 30.0}, {"fid": False}, eval_samples=10_000)
    record.add(20, 0, 0.0, {"fid": 25.0}, {"fid": False}, eval_samples=10_000)
    record.add(30, 0, 0.0, {"fid": 20.0}, {"fid": False}, eval_samples=50_000)
    written = record.write("completed", 30, 30, 1.0, 1.0)
    fid = written["metrics"]["fid"]
    assert (fid["final"], fid["best"], fid["best_step"]) == (20.0, 25.0, 20)
    assert written["protocol"]["best"]["eval_samples"] == 10_000
    only_final = RunRecord(tmp_path / "x", {}, [], best_samples=10_000)
    (tmp_path / "x").mkdir()
    only_final.add(30, 0, 0.0, {"fid": 20.0}, {"fid": False}, eval_samples=50_000)
    written = only_final.write("completed", 30, 30, 1.0, 1.0)
    assert (written["metrics"]["fid"]["best"], written["protocol"]["best"]["eval_samples"]) == (20.0, 50_000)


@pytest.mark.parametrize("every,iterations,kind,expect", [
    ("auto", 1500, "points", 150), ("auto", 8000, "points", 800), ("auto", 5, "points", 1),
    ("auto", 100_000, "image", 25_000), ("auto", 500_000, "image", 50_000), (0, 1500, "points", 0),
    (250, 1500, "points", 250),
])
def test_eval_every_auto(every, iterations, kind, expect):
    from ganbench.run.loop import resolve_eval_every

    assert resolve_eval_every(every, iterations, kind) == expect


def test_eval_every_auto_gives_curves(tmp_path):
    run_dir = tmp_path / "auto"
    overrides = [o for o in TINY if not o.startswith(("eval.every", "metrics.names"))]
    run_train(run_dir, overrides + ["train.iterations=50", "metrics.names=[modes]", "eval.every=auto"], fast=False)
    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == list(range(5, 55, 5))


def test_swept_keys_lead_run_names():
    from ganbench.run.names import swept_first

    name = "arch=mlp,metrics.names=[a,b],objective=dragan,train.iterations=5"
    assert swept_first(name, ["objective"]) == "objective=dragan,arch=mlp,metrics.names=[a,b],train.iterations=5"
    assert swept_first(name, ["train.iterations", "objective"]).startswith("train.iterations=5,objective=dragan,")
    assert swept_first(name, []) == name


def test_sweep_summary_names_every_failure_and_the_next_command(tmp_path):
    sweep = tmp_path / "sweep"
    proc = cli(["-m", *TINY, "train.iterations=10", "train.batch_size=16,0", "objective=vanilla,dragan",
                f"hydra.sweep.dir={sweep}"], cwd=tmp_path, timeout=300)
    assert proc.returncode == 1
    out = proc.stdout
    assert f"sweep of 4 runs in {sweep}: 2 completed, 0 diverged, 2 failed" in out
    failures = [line for line in out.splitlines() if line.strip().startswith("failed:")]
    assert len(failures) == 2 and all("train.batch_size: must be an integer >= 1" in f for f in failures)
    assert f"next: ganbench-report {sweep}" in out
    dirs = sorted(p.name for p in sweep.iterdir() if p.is_dir())
    assert all(d.startswith(("train.batch_size=", "objective=")) for d in dirs), dirs
    assert all(d.split(",")[1].startswith("objective=") for d in dirs), dirs
    # the completed runs' HParams experiment marks exactly the swept keys as differing
    from tensorboard.backend.event_processing.event_file_loader import EventFileLoader
    from tensorboard.plugins.hparams.plugin_data_pb2 import HParamsPluginData

    done = next(sweep.glob("train.batch_size=16,*/seed=0"))
    differs = set()
    for path in done.glob("events.*"):
        for event in EventFileLoader(str(path)).Load():
            for value in event.summary.value:
                if value.tag == "_hparams_/experiment":
                    infos = HParamsPluginData.FromString(value.metadata.plugin_data.content).experiment.hparam_infos
                    differs = {h.name for h in infos if h.differs}
    assert differs == {"train.batch_size", "objective.name"}


def test_hparams_open_on_what_a_sweep_varies(tmp_path):
    from tensorboard.backend.event_processing.event_file_loader import EventFileLoader
    from tensorboard.plugins.hparams.plugin_data_pb2 import HParamsPluginData
    from torch.utils.tensorboard import SummaryWriter

    from ganbench.metrics.hparams import log_hparams, varied_keys

    flat = {"arch.depth": 2, "arch.width": 8, "objective.name": "dragan", "objective.lr": 1e-3, "seed": 1}
    varied = varied_keys(["objective", "seed"], list(flat))
    assert varied == ["objective.name", "seed"]
    writer = SummaryWriter(str(tmp_path))
    log_hparams(writer, flat, {"modes": 8.0}, 10, varied=varied)
    writer.close()
    infos = []
    for path in tmp_path.glob("events.*"):
        for event in EventFileLoader(str(path)).Load():
            for value in event.summary.value:
                if value.tag == "_hparams_/experiment":
                    infos = HParamsPluginData.FromString(value.metadata.plugin_data.content).experiment.hparam_infos
    # TensorBoard sorts by (not differs, name): the varied keys come first.
    ordered = sorted(infos, key=lambda h: (not h.differs, h.name))
    assert [h.name for h in ordered[:2]] == ["objective.name", "seed"]


def test_help_is_a_usage_page(tmp_path):
    proc = cli(["--help"], cwd=tmp_path)
    assert proc.returncode == 0
    for words in ("ganbench -m", "hydra/launcher=slurm", "ganbench-report", "tensorboard --logdir",
                  "objective  dragan, ebgan", "restart=true", "--hydra-help"):
        assert words in proc.stdout, words


def test_cfg_job_shows_resolved_values(tmp_path):
    proc = cli(["--cfg", "job", "objective=dragan", "dataset=ring8", "arch=mlp"], cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert "${" not in proc.stdout


def test_out_of_memory_names_the_batch_size():
    import torch

    from ganbench.run.loop import out_of_memory

    err = out_of_memory(torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB"), 512,
                        torch.device("cuda"))
    assert err is not None and str(err).startswith("train.batch_size: out of memory on cuda")
    assert "train.batch_size=512" in str(err)
    assert out_of_memory(ValueError("bad"), 512, torch.device("cpu")) is None
