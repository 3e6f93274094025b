"""Preemption-safe stopping: a signal only sets a flag; the training loop checkpoints, then exits.

The training loop does::

    stop = preemption.install()              # once, before the first step
    ...                                      # after every generator step:
    if stop.requested:
        <save checkpoint, flush TensorBoard, results.json status "preempted">
        preemption.exit_for_requeue(stop)    # never returns

Signals and what happens at the safe point:

- SIGUSR2: what SLURM sends ahead of the time limit through submitit's ``--signal=USR2@<delay>``,
  and what ``scancel --signal=USR2 <job>`` sends. Under submitit (``hydra/launcher=slurm`` or
  ``submitit_local``) the handler submitit had installed is called now, at the safe point: it
  re-pickles the job (``checkpoint()`` of the launcher: same arguments, the run resumes from its own
  directory), counts a time-out against ``max_num_timeout`` when the job is near its time limit,
  requeues (``scontrol requeue``; exit code 144 for the local executor) and exits without writing a
  result, so the submitting process keeps waiting and collects the requeued job's result. Under a
  plain ``sbatch`` (no submitit) we run ``scontrol requeue $SLURM_JOB_ID`` ourselves.
- SIGTERM: SLURM's preemption and ``scancel`` send it (KillWait seconds before SIGKILL). The job
  checkpoints and exits; it requeues itself only while SLURM still reports it RUNNING (a SIGTERM
  from outside SLURM's own kill path). A cancelled job stays cancelled; a preempted job is requeued
  by SLURM itself (PreemptMode=REQUEUE).
- SIGINT (Ctrl-C, caught by the training loop itself) never requeues.
- Outside SLURM: print one line and exit with status 128 + signal; rerunning the same command
  resumes from the checkpoint in the run directory.
- The launcher gone: in a worker process of a local parallel launcher (``hydra/launcher=joblib``'s loky
  workers, any ``multiprocessing`` child) a watchdog thread notices when the process that started the
  worker has exited (``ganbench -m`` killed by PID rather than by process group, a crash, the OOM
  killer). Nobody collects the job's result any more, so training on to the end of the job would only
  burn the cores a rerun needs: the job checkpoints at the next safe point, records "preempted", and
  the worker exits (status 128 + SIGHUP). Rerunning the sweep resumes it. Plain runs and SLURM jobs have
  no such parent and are not watched (``nohup ganbench ...`` outlives its shell, as it should).
"""

from __future__ import annotations

import multiprocessing
import os
import signal
import subprocess
import sys
import threading
from dataclasses import dataclass, field
from typing import Callable, Dict, Optional

SIGNALS = (signal.SIGUSR2, signal.SIGTERM)
# How often the launcher watchdog looks for its parent: a second is nothing next to a training step and
# keeps the orphan's extra work under a second of training plus one checkpoint.
PARENT_POLL_S = 1.0


@dataclass
class StopRequest:
    """Set by the signal handler; read by the training loop (a plain bool: no host sync)."""

    requested: bool = False
    signum: Optional[int] = None
    installed: bool = False
    previous: Dict[int, object] = field(default_factory=dict)
    orphaned_from: Optional[int] = None  # the launcher's PID, once it has exited (watch_parent)
    watch: Optional[threading.Event] = None  # set to end the watchdog thread

    @property
    def signal_name(self) -> str:
        if self.signum:
            return signal.Signals(self.signum).name
        if self.orphaned_from is not None:
            return f"the exit of the launcher process {self.orphaned_from}"
        return "stop request"


def install() -> StopRequest:
    """Install SIGUSR2/SIGTERM handlers that only record the request (main thread only).

    Returns a StopRequest whose ``requested`` flips to True on the first signal. Previous handlers
    (e.g. submitit's) are kept and called later, at the safe point, by ``exit_for_requeue``.
    """
    stop = StopRequest()
    if threading.current_thread() is not threading.main_thread():
        # Signals can only be caught in the main thread; off it, the previous handlers stay.
        watch_parent(stop)
        return stop

    def _handler(signum, frame):  # noqa: ARG001 - signal handler signature
        if not stop.requested:  # the first signal decides (SLURM may add a SIGTERM after a USR2)
            stop.signum = signum
        stop.requested = True

    for sig in SIGNALS:
        stop.previous[sig] = signal.signal(sig, _handler)
    stop.installed = True
    watch_parent(stop)
    return stop


def watch_parent(stop: StopRequest, poll_s: float = PARENT_POLL_S) -> Optional[threading.Thread]:
    """In a ``multiprocessing`` child (a joblib/loky worker), request a stop once its parent has exited.

    The parent is gone when ``os.getppid()`` no longer names it (the kernel reparents an orphan to init or
    to a subreaper). Returns the daemon thread, or None outside a worker process. ``uninstall`` ends it.
    """
    parent = multiprocessing.parent_process()
    if parent is None or stop.watch is not None:
        return None
    parent_pid = parent.pid
    stop.watch = done = threading.Event()

    def _poll() -> None:
        while not done.wait(poll_s):
            if os.getppid() != parent_pid:
                stop.orphaned_from = parent_pid
                stop.requested = True
                return

    thread = threading.Thread(target=_poll, name="ganbench-parent-watch", daemon=True)
    thread.start()
    return thread


def uninstall(stop: StopRequest) -> None:
    """Restore the handlers that were in place before ``install``, and end the parent watchdog."""
    if stop.watch is not None:
        stop.watch.set()
    if stop.installed:
        for sig, handler in stop.previous.items():
            signal.signal(sig, handler if handler is not None else signal.SIG_DFL)
        stop.installed = False


def _submitit_requeue_handler(stop: StopRequest) -> Optional[Callable]:
    """submitit's ``checkpoint_and_try_requeue`` if submitit had installed it for SIGUSR2."""
    handler = stop.previous.get(signal.SIGUSR2)
    owner = getattr(handler, "__self__", None)
    if owner is not None and type(owner).__module__.startswith("submitit.") and getattr(handler, "__name__", "") == "checkpoint_and_try_requeue":
        return handler
    return None


def _slurm_job_state(job_id: str) -> Optional[str]:
    try:
        out = subprocess.run(
            ["scontrol", "show", "job", "-o", job_id], capture_output=True, text=True, timeout=30, check=False
        ).stdout
    except (OSError, subprocess.TimeoutExpired):
        return None
    for token in out.split():
        if token.startswith("JobState="):
            return token.split("=", 1)[1]
    return None


def _requeue_slurm(job_id: str) -> bool:
    try:
        done = subprocess.run(["scontrol", "requeue", job_id], capture_output=True, text=True, timeout=60, check=False)
    except (OSError, subprocess.TimeoutExpired) as err:
        print(f"ganbench: scontrol requeue {job_id} failed: {err}", file=sys.stderr, flush=True)
        return False
    if done.returncode != 0:
        print(f"ganbench: scontrol requeue {job_id} failed: {done.stderr.strip()}", file=sys.stderr, flush=True)
    return done.returncode == 0


def exit_for_requeue(stop: StopRequest) -> None:
    """After the checkpoint is saved: requeue the job when under SLURM/submitit, then exit.

    Never returns: raises SystemExit (status 128 + signal outside submitit), or submitit's own
    exit after its requeue.
    """
    job_id = os.environ.get("SLURM_JOB_ID")
    submitit_handler = _submitit_requeue_handler(stop)
    uninstall(stop)
    sys.stdout.flush()
    sys.stderr.flush()
    code = 128 + (stop.signum or signal.SIGTERM)

    if stop.signum is None and stop.orphaned_from is not None:
        # No one is left to collect a result or an exception: the worker process ends here, its
        # checkpoint and "preempted" record written (the kernel drops the run directory's flock).
        print(f"ganbench: stopped on {stop.signal_name}; checkpoint saved; rerun the sweep to resume",
              file=sys.stderr, flush=True)
        os._exit(128 + signal.SIGHUP)

    if stop.signum == signal.SIGUSR2 and submitit_handler is not None:
        # Re-pickles the job, requeues it (time-out countdown included) and calls sys.exit.
        submitit_handler(signal.SIGUSR2, None)
        raise SystemExit(code)  # not reached: submitit exits or raises (too many time-outs)

    # Only SLURM-side signals requeue; Ctrl-C (SIGINT, set by the training loop) never does.
    slurm_signal = stop.signum in (signal.SIGUSR2, signal.SIGTERM)
    if job_id and slurm_signal and (stop.signum == signal.SIGUSR2 or _slurm_job_state(job_id) == "RUNNING"):
        requeued = _requeue_slurm(job_id)
        where = f"SLURM job {job_id} requeued" if requeued else f"SLURM job {job_id} NOT requeued"
        print(f"ganbench: stopped on {stop.signal_name}; checkpoint saved; {where}", file=sys.stderr, flush=True)
        raise SystemExit(code)

    hint = "SLURM stops or requeues the job" if job_id else "run the same command again to resume"
    print(f"ganbench: stopped on {stop.signal_name}; checkpoint saved; {hint}", file=sys.stderr, flush=True)
    raise SystemExit(code)
