"""A full disk (README, "How a run works"): one line naming the file and the free space, the previous
checkpoint and record kept, nothing else changed.

Three ways it went wrong: torch's zip writer reports the failed write as ``RuntimeError: ... unexpected pos``
(not an OSError); TensorBoard's writer thread printed its traceback and results.json stayed ``running``; a
rerun of a completed run left an empty ``.ganbench.lock``. Each is tested with mocked writes raising
OSError(ENOSPC) (runs anywhere) and, where root may mount one, on a real small tmpfs (skipped otherwise).
"""
from __future__ import annotations

import errno
import json
import os
import re
import shutil
import subprocess
import sys
import threading
from pathlib import Path
from typing import Dict, List

import pytest
import torch

from conftest import FAST, POINTS, cli_env, ganbench_run, results, run_train

ENOSPC = OSError(errno.ENOSPC, "No space left on device")
FREE = r"\((\d+ bytes|[\d.]+ [KMG]iB) free\)"
# torch's message when its zip writer's write failed (torch 2.x, caffe2/serialize/inline_container.cc).
UNEXPECTED_POS = "[enforce fail at inline_container.cc:672] . unexpected pos 704 vs 598"
# A run whose checkpoint (~430 KiB: G, D and their Adam states) dwarfs every other file it writes.
BIG = FAST + ["dataset=ring8", "arch=mlp", "arch.width=128", "arch.depth=2", "train.batch_size=16",
              "train.ckpt_every=10"]


def snapshot(root: Path) -> Dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def temporaries(root: Path) -> List[str]:
    return sorted(str(p.relative_to(root)) for p in root.rglob(".*.tmp"))


def one_error_line(proc: subprocess.CompletedProcess) -> str:
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert "Traceback" not in proc.stdout + proc.stderr and "Exception in thread" not in proc.stderr, proc.stderr
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("ganbench: error: "), proc.stderr
    return lines[0].removeprefix("ganbench: error: ")


def torch_like_failure(fail_at_step: int):
    """torch.save as torch's zip writer fails on a full disk: part of the file written, the write's
    OSError(ENOSPC) raised, and then, while it is handled, ``RuntimeError: ... unexpected pos``."""
    real = torch.save

    def save(obj, f, *args, **kwargs):
        if obj.get("step") != fail_at_step:
            return real(obj, f, *args, **kwargs)
        f.write(b"PK\x03\x04 partial")
        try:
            raise OSError(errno.ENOSPC, "No space left on device")
        except OSError:
            raise RuntimeError(UNEXPECTED_POS)

    return save


# ---- 1. the checkpoint write: torch's RuntimeError ----

def test_torch_runtime_error_from_a_full_disk_is_the_disk_full_line(tmp_path, monkeypatch):
    from ganbench.run import checkpoint
    from ganbench.errors import GanbenchError

    path = tmp_path / "checkpoints" / "last.pt"
    checkpoint.save({"step": 1, "G": {"w": torch.ones(3)}}, path)
    good = path.read_bytes()
    monkeypatch.setattr(torch, "save", torch_like_failure(2))
    with pytest.raises(GanbenchError, match=rf"^disk full while writing .*\.last\.pt\.\d+\.tmp {FREE}; the previous"):
        checkpoint.save({"step": 2, "G": {"w": torch.zeros(3)}}, path)
    assert path.read_bytes() == good and checkpoint.load(path)["step"] == 1
    assert [p.name for p in path.parent.iterdir()] == ["last.pt"]


def test_a_writer_that_drops_the_oserror_is_still_a_full_disk(tmp_path, monkeypatch):
    """A writer that swallows its write's OSError and raises something else, outside the handler (no
    ``__context__``): the guarded file saw the ENOSPC, and that decides."""
    from ganbench.run import rundir
    from ganbench.errors import GanbenchError

    class Full:
        def __init__(self, f):
            self.f = f

        def __getattr__(self, name):
            return getattr(self.f, name)

        def __enter__(self):
            return self

        def __exit__(self, *exc):
            self.f.close()

        def write(self, data):
            self.f.write(data[:3])
            raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(rundir, "open", lambda path, mode: Full(open(path, mode)), raising=False)

    def writer(f):
        try:
            f.write(b"abcdef")
        except OSError:
            pass
        raise RuntimeError(UNEXPECTED_POS)

    with pytest.raises(GanbenchError, match=rf"disk full while writing .*x\.tmp {FREE}"):
        rundir.guarded_write(tmp_path / "x.tmp", writer)
    assert list(tmp_path.iterdir()) == []
    def other(f):
        raise RuntimeError(UNEXPECTED_POS)

    with pytest.raises(RuntimeError, match="unexpected pos"):  # no ENOSPC anywhere: the error as it is
        rundir.guarded_write(tmp_path / "y.tmp", other)


def test_failed_checkpoint_in_a_run_records_the_line_and_keeps_the_previous(tmp_path, monkeypatch):
    from ganbench.run import checkpoint
    from ganbench.errors import GanbenchError

    run_dir = tmp_path / "run"
    over = POINTS + ["train.ckpt_every=10", "train.iterations=20"]
    run_train(run_dir, over)
    good = (run_dir / "checkpoints" / "last.pt").read_bytes()
    monkeypatch.setattr(torch, "save", torch_like_failure(30))
    with pytest.raises(GanbenchError, match=rf"disk full while writing .*last\.pt\.\d+\.tmp {FREE}") as caught:
        run_train(run_dir, POINTS + ["train.ckpt_every=10", "train.iterations=40"])
    record = results(run_dir)
    assert (record["status"], record["step"], record["error"]) == ("failed", 30, str(caught.value))
    assert (run_dir / "checkpoints" / "last.pt").read_bytes() == good
    assert checkpoint.load(run_dir / "checkpoints" / "last.pt")["step"] == 20
    assert temporaries(run_dir) == []


# ---- 2. TensorBoard: no writer thread, a failure where it happens, the record says so ----

def test_event_writes_happen_in_the_calling_thread(tmp_path):
    """open_writer's events go through board.Events (TensorBoard's background writer is not started); this
    fails if a TensorBoard release renames what synchronous_events replaces."""
    from tensorboard.summary.writer import event_file_writer

    from ganbench.run import board

    before = {t for t in threading.enumerate() if isinstance(t, event_file_writer._AsyncWriterThread)}
    writer = board.open_writer(tmp_path, 0)
    try:
        assert isinstance(writer.file_writer.event_writer._async_writer, board.Events)
        started = {t for t in threading.enumerate() if isinstance(t, event_file_writer._AsyncWriterThread)} - before
        assert not started
        assert event_file_writer._AsyncWriter is not board.Events  # restored after the constructor
    finally:
        writer.close()


def test_a_full_disk_in_tensorboard_is_one_error_without_a_traceback(tmp_path, monkeypatch, capfd):
    from tensorboard.summary.writer.record_writer import RecordWriter

    from ganbench.run import board
    from ganbench.errors import GanbenchError

    writer = board.open_writer(tmp_path, 0)
    events = writer.file_writer.event_writer._async_writer.path
    assert events.parent == tmp_path and events.name.startswith("events.out.tfevents.")

    write = RecordWriter.write

    def full(self, data):
        if not writes_under(self, tmp_path):  # another test's writer, left open: not this disk
            return write(self, data)
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(RecordWriter, "write", full)
    with pytest.raises(GanbenchError, match=rf"^disk full while writing {events} {FREE}"):
        writer.add_scalar("loss/D", 1.0, 5)
    assert board.close_writer(writer) is None
    err = capfd.readouterr().err
    assert "Traceback" not in err and "Exception in thread" not in err, err


def writes_under(record_writer, folder) -> bool:
    """Whether a TensorBoard RecordWriter writes into ``folder``. The full-disk patches fail only those: an event
    writer that an earlier test of the same process left open (its background thread flushes on its own)
    would otherwise print its own traceback into this test's stderr."""
    import os

    name = getattr(getattr(record_writer, "_writer", None), "filename", None)
    return name is not None and os.fsdecode(name).startswith(str(folder))


def full_after_final_checkpoint(final: int, folder=None) -> None:
    """Every TensorBoard event write (into ``folder``, when given) raises ENOSPC once the checkpoint of step
    ``final`` is written (the case where TensorBoard's thread printed a traceback and results.json stayed
    ``running``)."""
    from tensorboard.summary.writer.record_writer import RecordWriter

    from ganbench.run import checkpoint

    full = []
    save, write = checkpoint.save, RecordWriter.write

    def save_then_fill(state, path, keep_previous=False):
        save(state, path, keep_previous)
        if state["step"] == final:
            full.append(True)

    def event(self, data):
        if full and (folder is None or writes_under(self, folder)):
            raise OSError(errno.ENOSPC, "No space left on device")
        return write(self, data)

    checkpoint.save = save_then_fill
    RecordWriter.write = event


def test_events_failing_after_the_final_checkpoint_in_process(tmp_path, monkeypatch, capfd):
    from tensorboard.summary.writer.record_writer import RecordWriter

    from ganbench.run import checkpoint
    from ganbench.errors import GanbenchError

    monkeypatch.setattr(checkpoint, "save", checkpoint.save)  # restored afterwards
    monkeypatch.setattr(RecordWriter, "write", RecordWriter.write)
    full_after_final_checkpoint(20, tmp_path)
    run_dir = tmp_path / "run"
    with pytest.raises(GanbenchError, match=rf"disk full while writing {run_dir}/events\.out\.tfevents\.\S+ {FREE}") \
            as caught:
        run_train(run_dir, POINTS + ["train.ckpt_every=10", "train.iterations=20"])
    record = results(run_dir)
    assert (record["status"], record["step"], record["error"]) == ("failed", 20, str(caught.value))
    assert checkpoint.load(run_dir / "checkpoints" / "last.pt")["step"] == 20
    err = capfd.readouterr().err
    assert "Traceback" not in err and "Exception in thread" not in err, err


def test_record_unwritable_too_keeps_the_one_of_the_final_checkpoint(tmp_path, monkeypatch):
    """Events and results.json both fail after the final checkpoint: the error is the first failure (the
    event file), and results.json is the record written with that checkpoint (running, step 20), not
    the one written at the start (step 0)."""
    from tensorboard.summary.writer.record_writer import RecordWriter

    from ganbench.run import checkpoint, record as results_module
    from ganbench.errors import GanbenchError

    monkeypatch.setattr(checkpoint, "save", checkpoint.save)
    monkeypatch.setattr(RecordWriter, "write", RecordWriter.write)
    full_after_final_checkpoint(20, tmp_path)
    run_dir = tmp_path / "run"
    write_json = results_module.write_json_atomic
    written = []

    def record_write(path, obj):
        if obj["status"] != "running":  # the final and the failed record: the disk is full by then
            raise GanbenchError(f"disk full while writing {path} (0 bytes free); the previous file was kept")
        written.append(obj["step"])
        write_json(path, obj)

    monkeypatch.setattr(results_module, "write_json_atomic", record_write)
    with pytest.raises(GanbenchError, match=r"disk full while writing .*events\.out\.tfevents"):
        run_train(run_dir, POINTS + ["train.ckpt_every=10", "train.iterations=20"])
    record = results(run_dir)
    assert (record["status"], record["step"]) == ("running", 20) and written == [0, 10, 20]
    assert checkpoint.load(run_dir / "checkpoints" / "last.pt")["step"] == 20


PATCHED_CLI = """
import sys
sys.path.insert(0, {tests!r})
from test_disk_full import full_after_final_checkpoint
full_after_final_checkpoint({final})
from ganbench.cli import main
sys.argv = ["ganbench"] + {args!r}
main()
"""


def test_events_failing_after_the_final_checkpoint_cli(tmp_path):
    """The command line: exit 1, the one line on stderr (the event file, the free space), results.json
    failed at the final step with that line, the final checkpoint in place."""
    from ganbench.run import checkpoint

    run_dir = tmp_path / "run"
    args = FAST + POINTS + ["train.ckpt_every=10", "train.iterations=20", f"hydra.run.dir={run_dir}"]
    script = PATCHED_CLI.format(tests=str(Path(__file__).parent), final=20, args=args)
    proc = subprocess.run([sys.executable, "-c", script], cwd=tmp_path, env=cli_env(), capture_output=True,
                          text=True, timeout=300)
    line = one_error_line(proc)
    assert re.fullmatch(rf"disk full while writing {run_dir}/events\.out\.tfevents\.\S+ {FREE}; .*",
                                      line), line
    record = results(run_dir)
    assert (record["status"], record["step"], record["error"]) == ("failed", 20, line)
    assert checkpoint.load(run_dir / "checkpoints" / "last.pt")["step"] == 20
    assert temporaries(run_dir) == [] and not (run_dir / ".ganbench.lock").exists()


# ---- 3. the run lock on a full disk ----

def test_lock_that_cannot_take_its_pid_is_removed(tmp_path, monkeypatch):
    from ganbench.run import rundir

    run_dir = tmp_path / "run"
    run_dir.mkdir()
    (run_dir / "results.json").write_text("{}")

    def full(fd, data, offset):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(os, "pwrite", full)
    lock = rundir.RunLock(run_dir)
    with pytest.raises(rundir.RunDirError,
                       match=rf"^hydra.run.dir: disk full while writing {run_dir}/\.ganbench\.lock {FREE}; nothing"):
        lock.acquire()
    assert sorted(p.name for p in run_dir.iterdir()) == ["results.json"] and lock.fd is None
    # A lock file left by a dead process keeps its content: nothing was written over it.
    (run_dir / ".ganbench.lock").write_text("999999\n")
    with pytest.raises(rundir.RunDirError, match="disk full"):
        rundir.RunLock(run_dir).acquire()
    assert (run_dir / ".ganbench.lock").read_text() == "999999\n"


# ---- metrics.jsonl: an append is whole or not at all ----

def test_metrics_line_cut_short_by_a_full_disk_is_taken_back(tmp_path, monkeypatch):
    """os.write writes part of the line, the next call fails with ENOSPC: the part is truncated away (a
    later line would otherwise continue the torn one, and the reader would drop both)."""
    from ganbench.run import record as results_module
    from ganbench.errors import GanbenchError
    from ganbench.run.record import RunRecord

    record = RunRecord(tmp_path, {}, [])
    record.add(10, 0, 0.0, {"modes": 8.0}, {"modes": True})
    before = (tmp_path / "metrics.jsonl").read_bytes()
    real_write = os.write
    calls = []

    def short_then_full(fd, data):
        calls.append(len(data))
        if len(calls) == 1:
            return real_write(fd, bytes(data[:5]))
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(results_module.os, "write", short_then_full)
    with pytest.raises(GanbenchError, match=rf"^disk full while writing {tmp_path}/metrics\.jsonl {FREE}"):
        record.add(20, 0, 0.0, {"modes": 7.0}, {"modes": True})
    assert len(calls) == 2 and (tmp_path / "metrics.jsonl").read_bytes() == before


# ---- on a real full disk: a small tmpfs ----

@pytest.fixture
def small_disk(tmp_path):
    """A 4 MiB tmpfs at tmp_path/disk, unmounted afterwards; skipped with the reason where it cannot be
    mounted (not root, no mount, a container without CAP_SYS_ADMIN)."""
    mount = shutil.which("mount")
    if mount is None or os.geteuid() != 0:
        pytest.skip("mounting a tmpfs needs root and mount(8); the mocked tests above cover the same paths")
    point = tmp_path / "disk"
    point.mkdir()
    proc = subprocess.run([mount, "-t", "tmpfs", "-o", "size=4m", "tmpfs", str(point)], capture_output=True, text=True)
    if proc.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here ({proc.stderr.strip() or proc.returncode}); the mocked tests above "
                    "cover the same paths")
    try:
        yield point
    finally:
        subprocess.run(["umount", "-l", str(point)], capture_output=True)


def fill(disk: Path, leave: int) -> None:
    """Fill ``disk`` so that ``leave`` bytes stay free (tmpfs counts whole pages)."""
    free = shutil.disk_usage(disk).free
    with open(disk / "filler", "wb") as f:
        f.write(b"\0" * (free - leave))
    assert shutil.disk_usage(disk).free == leave


@pytest.fixture(scope="module")
def completed_big(tmp_path_factory):
    """A completed 20-step BIG run (checkpoint at step 20), on the ordinary disk, to copy onto a tmpfs."""
    base = tmp_path_factory.mktemp("big")
    run_dir = base / "run"
    proc = ganbench_run([*BIG, "train.iterations=20", f"hydra.run.dir={run_dir}"], base, timeout=300)
    assert proc.returncode == 0, proc.stderr
    return run_dir


def cli(args: List[str], cwd: Path) -> subprocess.CompletedProcess:
    return ganbench_run(args, cwd, timeout=300)


def test_checkpoint_on_a_full_tmpfs(small_disk, completed_big):
    """Resumed to 40 steps with 256 KiB free: the step-30 checkpoint (~430 KiB) cannot be written. With
    that much room left torch's zip writer fails with its RuntimeError, not the OSError (measured: it does
    from 16 KiB free on; with less the OSError comes through)."""
    from ganbench.run import checkpoint

    run_dir = small_disk / "run"
    shutil.copytree(completed_big, run_dir)
    good = (run_dir / "checkpoints" / "last.pt").read_bytes()
    fill(small_disk, 256 * 1024)
    line = one_error_line(cli(BIG + ["train.iterations=40", f"hydra.run.dir={run_dir}"], small_disk))
    assert re.fullmatch(
        rf"disk full while writing {run_dir}/checkpoints/\.last\.pt\.\d+\.tmp {FREE}; the previous file was kept",
        line), line
    record = results(run_dir)
    assert (record["status"], record["step"], record["error"]) == ("failed", 30, line)
    assert (run_dir / "checkpoints" / "last.pt").read_bytes() == good
    assert checkpoint.load(run_dir / "checkpoints" / "last.pt")["step"] == 20
    assert temporaries(run_dir) == [] and not (run_dir / ".ganbench.lock").exists()


def test_rerun_of_a_completed_run_on_a_full_tmpfs_changes_nothing(small_disk, completed_big):
    run_dir = small_disk / "run"
    shutil.copytree(completed_big, run_dir)
    before = snapshot(run_dir)
    fill(small_disk, 0)
    line = one_error_line(cli(BIG + ["train.iterations=20", f"hydra.run.dir={run_dir}"], small_disk))
    lock = run_dir / ".ganbench.lock"
    assert line == f"hydra.run.dir: disk full while writing {lock} (0 bytes free); nothing was changed"
    assert snapshot(run_dir) == before
    assert json.loads((run_dir / "results.json").read_text())["status"] == "completed"
