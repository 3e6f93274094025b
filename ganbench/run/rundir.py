"""The run directory as a resource: one process at a time, nothing written before every check has passed.

A run's start has two phases. First every check that can fail (config, device, dataset, the arch/dataset
fit, the resume target, the checkpoint's identity) runs while the directory is locked and nothing in it is
written: Hydra's ``.hydra/`` files and ``train.log`` are held back (``hydra.output_subdir: null`` in
conf/config.yaml; log records are buffered). Only when all have passed does ``commit`` write ``.hydra/``,
replay the buffered log into ``train.log`` and remove temporary files left by killed processes. A failed
start therefore leaves an existing run byte-identical, and a new directory holds at most a
``results.json`` with ``status: failed`` and the one-line error.
"""
from __future__ import annotations

import contextlib
import contextvars
import errno
import fcntl
import logging
import os
import shutil
import time
from pathlib import Path
from typing import Any, Iterator, List, Optional

from omegaconf import DictConfig, OmegaConf

from ..errors import GanbenchError

log = logging.getLogger("ganbench")

LOCK = ".ganbench.lock"
HYDRA_SUBDIR = ".hydra"


class RunDirError(GanbenchError):
    """The run directory cannot be used: in use by another process, not a directory, not writable."""


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def check_writable_dir(path: Path, key: str) -> None:
    """Raise RunDirError under ``key`` if ``path`` cannot be (or become) a writable directory."""
    path = Path(path)
    probe = path
    while not probe.exists():
        if probe.parent == probe:
            break
        probe = probe.parent
    if probe.exists() and not probe.is_dir():
        what = "is an existing file" if probe == path else f"lies under the file {probe}"
        raise RunDirError(f"{key}: {path} {what}; choose a directory path")
    if probe.exists() and not os.access(probe, os.W_OK | os.X_OK):
        raise RunDirError(f"{key}: {probe} is not writable; choose a writable directory")


class RunLock:
    """An advisory ``fcntl.flock`` on ``<run_dir>/.ganbench.lock`` holding the owner's PID.

    The kernel drops the lock when its holder dies, so a lock file left by a killed process is simply taken
    over. The file is removed on release; a process that opened it just before that notices the unlinked
    inode and retries, so two processes never both believe they hold the directory.
    """

    def __init__(self, run_dir: Path, key: str = "hydra.run.dir"):
        self.run_dir = Path(run_dir)
        self.path = self.run_dir / LOCK
        self.key = key
        self.fd: Optional[int] = None

    def acquire(self) -> "RunLock":
        check_writable_dir(self.run_dir, self.key)
        try:
            self.run_dir.mkdir(parents=True, exist_ok=True)
        except OSError as ex:
            raise RunDirError(f"{self.key}: cannot create {self.run_dir} ({ex.strerror})") from None
        while True:
            try:
                fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
            except OSError as ex:
                raise self._cannot_write(ex) from None
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                holder = os.read(fd, 64).decode(errors="replace").strip() or "?"
                os.close(fd)
                raise RunDirError(
                    f"{self.key}: run directory {self.run_dir} is in use by process {holder} "
                    f"(lock {self.path}); wait for it to end, or give this run another directory"
                ) from None
            try:
                same = os.fstat(fd).st_ino == os.stat(self.path).st_ino
            except FileNotFoundError:
                same = False
            if not same:  # released and unlinked between our open and flock: try the new file
                os.close(fd)
                continue
            previous = os.read(fd, 64).decode(errors="replace").strip()
            try:
                self._write_pid(fd, previous)
            except OSError as ex:
                os.close(fd)
                raise self._cannot_write(ex) from None
            if previous.isdigit() and int(previous) != os.getpid():
                log.info("took over the lock of process %s, which is no longer running", previous)
            self.fd = fd
            return self

    def _write_pid(self, fd: int, previous: str) -> None:
        """Our PID into the locked file, over the previous holder's (an overwrite in place needs no new disk
        block). When the write fails (a full disk), a lock file that was empty, most likely just created
        by us, is removed again: a failed start leaves no lock file behind."""
        pid = f"{os.getpid()}\n".encode()
        try:
            os.pwrite(fd, pid, 0)
            os.ftruncate(fd, len(pid))
        except OSError:
            if not previous:
                try:
                    if os.fstat(fd).st_ino == os.stat(self.path).st_ino:  # we hold it: nobody else is in it
                        os.unlink(self.path)
                except OSError:
                    pass
            raise

    def _cannot_write(self, ex: OSError) -> RunDirError:
        full = disk_full(ex, self.path, "nothing was changed")
        if full is not None:
            return RunDirError(f"{self.key}: {full}")
        return RunDirError(f"{self.key}: cannot write in {self.run_dir} ({ex.strerror})")

    def release(self) -> None:
        if self.fd is None:
            return
        try:
            if os.fstat(self.fd).st_ino == os.stat(self.path).st_ino:
                os.unlink(self.path)
        except FileNotFoundError:
            pass
        os.close(self.fd)
        self.fd = None

    def __enter__(self) -> "RunLock":
        return self.acquire()

    def __exit__(self, *exc: Any) -> None:
        self.release()


def holds_run(run_dir: Path) -> bool:
    """Whether ``run_dir`` holds anything of a run (anything but the lock)."""
    try:
        return any(p.name != LOCK for p in Path(run_dir).iterdir())
    except (FileNotFoundError, NotADirectoryError):
        return False


def stale_temporaries(run_dir: Path) -> List[Path]:
    """Temporary files of atomic writes (``.<name>.<pid>.tmp``) whose writer is no longer running.

    The caller holds the directory's lock, so no live ganbench process writes here; the PID check keeps
    the files of a process that (against the lock) still runs.
    """
    found = []
    for folder in (run_dir, run_dir / "checkpoints"):
        if not folder.is_dir():
            continue
        for path in folder.glob(".*.tmp"):
            parts = path.name.rsplit(".", 2)
            pid = parts[1] if len(parts) == 3 else ""
            if not (pid.isdigit() and int(pid) != os.getpid() and pid_alive(int(pid))):
                found.append(path)
    return found


class BufferedFileLog(logging.Handler):
    """Holds the records meant for the run's log file until the start has passed every check."""

    def __init__(self) -> None:
        super().__init__(level=logging.NOTSET)
        self.records: List[logging.LogRecord] = []
        self.files: List[logging.Handler] = []
        self.root = logging.getLogger()

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)

    def __enter__(self) -> "BufferedFileLog":
        self.files = [h for h in self.root.handlers if isinstance(h, logging.FileHandler)]
        for handler in self.files:
            self.root.removeHandler(handler)
        self.root.addHandler(self)
        return self

    def commit(self) -> None:
        """Attach the file handlers again and write what was held back."""
        self.root.removeHandler(self)
        for handler in self.files:
            self.root.addHandler(handler)
            for record in self.records:
                if record.levelno >= handler.level:
                    handler.handle(record)
        self.records.clear()
        self.files = []

    def __exit__(self, *exc: Any) -> None:
        if self in self.root.handlers:  # the start failed: the run's log file is not touched
            self.root.removeHandler(self)
            for handler in self.files:
                handler.close()


#: The replica whose lines are being logged (None: the job's shared lines).
LOG_SEED: contextvars.ContextVar = contextvars.ContextVar("ganbench_log_seed", default=None)


@contextlib.contextmanager
def log_seed(seed: Optional[int]) -> Iterator[None]:
    """Lines logged in this block belong to the replica of ``seed`` (None: to every run of the job)."""
    token = LOG_SEED.set(seed)
    try:
        yield
    finally:
        LOG_SEED.reset(token)


class SeedFilter(logging.Filter):
    """Pass the job's shared records and those of one replica."""

    def __init__(self, seed: int):
        super().__init__()
        self.seed = seed

    def filter(self, record: logging.LogRecord) -> bool:
        seed = LOG_SEED.get()
        return seed is None or seed == self.seed


class ReplicaLogs:
    """Each replica's ``train.log``: the job's shared lines (device, sizes, evaluations) and its own.

    The job's log file (Hydra's handler, in the job's directory) keeps every line unless that directory is
    replica 0's, in which case it is filtered like the others; the added handlers are closed at the end.
    """

    def __init__(self) -> None:
        self.handlers: List[logging.Handler] = []
        self.filtered: List[tuple] = []

    def attach(self, held: "BufferedFileLog", runs: List[tuple], job_dir: Path) -> None:
        template = held.files[0] if held.files else None
        for run_dir, seed in runs:
            if Path(run_dir) == Path(job_dir):
                for handler in held.files:
                    f = SeedFilter(seed)
                    handler.addFilter(f)
                    self.filtered.append((handler, f))
                continue
            handler = logging.FileHandler(Path(run_dir) / "train.log", delay=True)
            if template is not None:
                handler.setFormatter(template.formatter)
                handler.setLevel(template.level)
            handler.addFilter(SeedFilter(seed))
            held.files.append(handler)
            self.handlers.append(handler)

    def close(self) -> None:
        root = logging.getLogger()
        for handler in self.handlers:
            root.removeHandler(handler)
            handler.close()
        for handler, f in self.filtered:
            handler.removeFilter(f)
        self.handlers, self.filtered = [], []


def write_hydra_files(run_dir: Path, task_cfg: DictConfig, hydra_cfg: DictConfig, overrides: List[str]) -> None:
    """Hydra's own ``.hydra/{config,hydra,overrides}.yaml``, written only once the start has passed."""
    out = Path(run_dir) / HYDRA_SUBDIR
    out.mkdir(parents=True, exist_ok=True)
    hydra_node = OmegaConf.create({"hydra": OmegaConf.to_container(hydra_cfg, resolve=False)})
    for name, node in (("config.yaml", task_cfg), ("hydra.yaml", hydra_node),
                       ("overrides.yaml", OmegaConf.create(list(overrides)))):
        tmp = out / f".{name}.{os.getpid()}.tmp"
        guarded_write(tmp, lambda f, node=node: f.write(OmegaConf.to_yaml(node).encode()))
        os.replace(tmp, out / name)


def guarded_write(path: Path, write: Any) -> None:
    """Open ``path`` for writing, call ``write(file)`` and fsync. On any failure the partial file is
    removed; a full disk becomes one error naming the file and the free space (``disk_full``)."""
    watched = None
    try:
        with open(path, "wb") as f:
            watched = WatchedFile(f)
            write(watched)
            f.flush()
            os.fsync(f.fileno())
    except BaseException as ex:
        try:
            path.unlink()
        except OSError:
            pass
        full = disk_full(ex, path, "the previous file was kept", watched.error if watched else None)
        if full is not None:
            raise full from None
        raise


class WatchedFile:
    """The file a guarded write writes through. It keeps the OSError of a failed write, because a writer may
    report it as something else: torch's zip writer raises ``RuntimeError: ... unexpected pos`` once its
    write failed. It offers write, flush, seek and tell only (no ``fileno``), so every byte goes through
    ``write``."""

    def __init__(self, f: Any):
        self.f = f
        self.error: Optional[OSError] = None

    def write(self, data: Any) -> int:
        try:
            return self.f.write(data)
        except OSError as ex:
            self.error = ex
            raise

    def flush(self) -> None:
        self.f.flush()

    def seek(self, *args: Any) -> int:
        return self.f.seek(*args)

    def tell(self) -> int:
        return self.f.tell()


FULL = (errno.ENOSPC, errno.EDQUOT)


def is_disk_full(ex: Optional[BaseException]) -> bool:
    """Whether a full disk (ENOSPC, EDQUOT) caused ``ex``: the error itself or one in its chain
    (``__cause__``, ``__context__``; torch's zip writer raises its RuntimeError while the OSError is handled)."""
    seen = set()
    while ex is not None and id(ex) not in seen:
        if isinstance(ex, OSError) and ex.errno in FULL:
            return True
        seen.add(id(ex))
        ex = ex.__cause__ or ex.__context__
    return False


def size_text(n: int) -> str:
    """A byte count for a message: bytes below 1 KiB, else KiB, MiB or GiB with one decimal."""
    if n < 1024:
        return f"{n} bytes"
    for unit in ("KiB", "MiB", "GiB"):
        n /= 1024
        if n < 1024 or unit == "GiB":
            return f"{n:.1f} {unit}"
    return ""  # not reached


def disk_full(ex: BaseException, path: Path, kept: str, written: Optional[OSError] = None) -> Optional[GanbenchError]:
    """The one-line error ``disk full while writing <path> (<free> free); <kept>`` when a full disk caused
    ``ex`` (or ``written``, the OSError a ``WatchedFile`` saw), else None. The free space is measured now,
    after the caller removed its partial file: what the next attempt would have."""
    if not (is_disk_full(ex) or is_disk_full(written)):
        return None
    try:
        free = size_text(shutil.disk_usage(Path(path).parent).free)
    except OSError:
        free = "unknown"
    return GanbenchError(f"disk full while writing {path} ({free} free); {kept}")


def move_aside(run_dir: Path) -> Path:
    """``restart=true``: rename the old run directory to ``<dir>.old-<timestamp>``; nothing is deleted."""
    stamp = time.strftime("%Y%m%d-%H%M%S")
    aside = run_dir.with_name(f"{run_dir.name}.old-{stamp}")
    n = 1
    while aside.exists():
        n += 1
        aside = run_dir.with_name(f"{run_dir.name}.old-{stamp}-{n}")
    os.rename(run_dir, aside)
    return aside
