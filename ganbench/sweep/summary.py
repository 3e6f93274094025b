"""The summary printed when a multirun ends: how many runs completed, diverged and failed, every failure's
one-line error, the sweep directory, and the ``ganbench-report`` command to run next."""
from __future__ import annotations

import os
import shlex
from collections import Counter
from typing import Any, Iterable, List, TextIO, Tuple

from hydra.core.utils import JobReturn, JobStatus

from ..errors import one_line_error

ORDER = ("completed", "diverged", "preempted", "failed")


def _jobs(ret: Any) -> List[JobReturn]:
    if isinstance(ret, JobReturn):
        return [ret]
    if isinstance(ret, (list, tuple)):
        return [job for item in ret for job in _jobs(item)]
    return []


def is_sweep_result(ret: Any) -> bool:
    """Whether ``ret`` is what Hydra's multirun returns (lists of JobReturn)."""
    return isinstance(ret, (list, tuple)) and bool(_jobs(ret))


def outcomes(job: JobReturn) -> List[Tuple[str, str, str]]:
    """(status, run directory, one-line error or "") of each run of one job: one, or each seed of a job
    with ``train.replicas`` (its return value lists them under ``replicas``)."""
    try:
        run_dir = str(job.hydra_cfg.hydra.runtime.output_dir)
    except Exception:  # noqa: BLE001 - a job lost by its launcher may have no config
        run_dir = "?"
    value = job._return_value
    if job.status == JobStatus.FAILED:
        return [("failed", run_dir, one_line_error(value) if isinstance(value, BaseException) else str(value))]
    if isinstance(value, dict) and isinstance(value.get("replicas"), list):
        return [(str(r.get("status") or "completed"), str(r.get("run_dir") or run_dir), str(r.get("error") or ""))
                for r in value["replicas"]]
    if isinstance(value, dict):
        return [(str(value.get("status") or "completed"), run_dir, str(value.get("error") or ""))]
    return [("completed", run_dir, "")]


def sweep_dir(jobs: Iterable[JobReturn]) -> str:
    dirs = []
    for job in jobs:
        try:
            dirs.append(str(job.hydra_cfg.hydra.sweep.dir))
        except Exception:  # noqa: BLE001
            continue
    return os.path.commonpath([os.path.abspath(d) for d in dirs]) if dirs else "?"


def summarize(ret: Any, out: TextIO) -> int:
    """Print the sweep's summary to ``out``; return the number of failed runs."""
    jobs = _jobs(ret)
    runs = [o for job in jobs for o in outcomes(job)]
    counts = Counter(status for status, _, _ in runs)
    statuses = [s for s in ORDER if s in counts or s in ("completed", "diverged", "failed")]
    statuses += sorted(s for s in counts if s not in statuses)
    where = sweep_dir(jobs)
    parts = ", ".join(f"{counts.get(s, 0)} {s}" for s in statuses)
    print(f"ganbench: sweep of {len(runs)} run{'s' if len(runs) != 1 else ''} in {where}: {parts}", file=out)
    for status, run_dir, error in runs:
        if status == "failed":
            shown = os.path.relpath(run_dir, where) if where != "?" and run_dir != "?" else run_dir
            print(f"  failed: {shown}: {error or 'no error recorded'}", file=out)
    print(f"  next: ganbench-report {shlex.quote(where)}", file=out)
    out.flush()
    return counts.get("failed", 0)
