"""Preemption-safe stopping: a signal only sets a flag; the training loop checkpoints and exits.

The loop calls ``stop = install()`` once, checks ``stop.requested`` after every generator step,
saves its state, then calls ``exit_for_requeue(stop)``.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
from dataclasses import dataclass, field

# SLURM sends SIGUSR2 ahead of a time limit when asked (submitit's `--signal=USR2@90`), a user can
# send it with `scancel --signal=USR2`, and SIGTERM is what preemption and `scancel` deliver.
SIGNALS = (signal.SIGUSR2, signal.SIGTERM)


@dataclass
class StopRequest:
    """Set by the signal handler; read by the training loop (a plain bool: no host sync)."""

    requested: bool = False
    signum: int | None = None
    installed: bool = False
    previous: dict = field(default_factory=dict)


def install() -> StopRequest:
    """Install SIGUSR2/SIGTERM handlers that only record the request (main thread only)."""
    stop = StopRequest()
    if threading.current_thread() is not threading.main_thread():
        # Joblib/loky workers may run tasks off the main thread; signals cannot be caught there.
        return stop

    def _handler(signum, frame):  # noqa: ARG001 - signal handler signature
        stop.requested = True
        stop.signum = signum

    for sig in SIGNALS:
        stop.previous[sig] = signal.signal(sig, _handler)
    stop.installed = True
    return stop


def exit_for_requeue(stop: StopRequest) -> None:
    """Requeue the SLURM job (if any) and exit; locally raise SystemExit with a one-line message."""
    name = signal.Signals(stop.signum).name if stop.signum else "stop request"
    job_id = os.environ.get("SLURM_JOB_ID")
    if job_id:
        subprocess.run(["scontrol", "requeue", job_id], check=False)
    raise SystemExit(f"ganbench: stopped on {name}; checkpoint saved, rerun the same command to resume")
