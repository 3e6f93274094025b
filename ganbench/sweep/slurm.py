"""Hydra submitit launchers for ganbench: preemption-safe requeue and robust result collection.

Used through ``hydra/launcher=slurm`` (conf/hydra/launcher/slurm.yaml). Differences from
hydra-submitit-launcher's own ``SlurmLauncher``:

- Requeue at a safe point. submitit installs a SIGUSR2 handler in the job that checkpoints and
  requeues immediately. ganbench's training loop replaces it with a flag (ganbench.run.preemption),
  saves its checkpoint at the end of the current generator step, and only then hands over to
  submitit's handler, which re-pickles this launcher's call (``checkpoint``: same sweep overrides;
  the run resumes from its own directory) and runs ``scontrol requeue``.
- Waiting without accounting. submitit learns a job's end from ``sacct``; without an accounting
  database it only sees result files, so a job killed from outside (scancel, OOM, node failure)
  would be waited for forever. Here, when no result file exists, ``squeue`` is asked as well: a job
  that SLURM no longer runs or queues (requeued jobs are PENDING, so they count as alive) and that
  left no result within ``lost_job_grace_s`` becomes a failed job of the sweep, the others are still
  collected.
- Failed jobs do not abort the collection: each becomes a FAILED JobReturn, and Hydra reports the
  first failure after every job has been collected.

Nothing here imports torch: the submitting process stays light.
"""

from __future__ import annotations

import logging
import os
import subprocess
import time
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence

from hydra.core.singleton import Singleton
from hydra.core.utils import JobReturn, JobStatus, filter_overrides
from hydra_plugins.hydra_submitit_launcher.config import BaseQueueConf
from hydra_plugins.hydra_submitit_launcher.submitit_launcher import SlurmLauncher as _HydraSlurmLauncher
from omegaconf import OmegaConf

log = logging.getLogger(__name__)

# squeue states of a job that is not coming back by itself (the rest: pending, running, requeued...).
_ENDED_STATES = {
    "BOOT_FAIL", "CANCELLED", "COMPLETED", "DEADLINE", "FAILED", "NODE_FAIL",
    "OUT_OF_MEMORY", "TIMEOUT", "SPECIAL_EXIT", "REVOKED",
}


# Keys of conf/hydra/launcher/slurm.yaml that are ours, not submitit executor parameters.
OWN_KEYS = ("poll_interval_s", "lost_job_grace_s")


class SlurmLauncher(_HydraSlurmLauncher):
    """hydra/launcher=slurm: SLURM job arrays through submitit, requeued on preemption.

    ``launch`` is hydra-submitit-launcher's, except for how results are collected.
    """

    def launch(self, job_overrides: Sequence[Sequence[str]], initial_job_idx: int) -> Sequence[JobReturn]:
        import submitit  # noqa: PLC0415 - keep plugin discovery and `--help` fast

        assert self.config is not None  # type: ignore[attr-defined]
        own = {k: self.params[k] for k in OWN_KEYS if k in self.params}
        params = {k: v for k, v in self.params.items() if k not in OWN_KEYS}

        init_keys = {"max_num_timeout"}
        init_params = {"folder": params["submitit_folder"]}
        init_params.update({f"{self._EXECUTOR}_{k}": v for k, v in params.items() if k in init_keys})
        executor = submitit.AutoExecutor(cluster=self._EXECUTOR, **init_params)
        base = set(OmegaConf.structured(BaseQueueConf).keys())
        executor.update_parameters(
            **{
                (k if k in base else f"{self._EXECUTOR}_{k}"): v
                for k, v in params.items()
                if k not in init_keys | {"submitit_folder"}
            }
        )

        sweep_dir = Path(str(self.config.hydra.sweep.dir))  # type: ignore[attr-defined]
        sweep_dir.mkdir(parents=True, exist_ok=True)
        if "mode" in self.config.hydra.sweep:  # type: ignore[attr-defined]
            os.chmod(sweep_dir, mode=int(str(self.config.hydra.sweep.mode), 8))  # type: ignore[attr-defined]
        log.info(f"Submitit '{self._EXECUTOR}' sweep output dir : {sweep_dir}")

        job_params: List[Any] = []
        for idx, overrides in enumerate(job_overrides, start=initial_job_idx):
            log.info(f"\t#{idx} : {' '.join(filter_overrides(overrides))}")
            job_params.append((list(overrides), "hydra.sweep.dir", idx, f"job_id_for_{idx}", Singleton.get_state()))

        jobs = executor.map_array(self, *zip(*job_params))
        if jobs:
            log.info(f"Submitted {len(jobs)} jobs ({jobs[0].job_id.split('_')[0]}); logs in {jobs[0].paths.folder.parent}")
        return collect_results(
            jobs,
            [list(o) for o in job_overrides],
            poll_interval_s=float(own.get("poll_interval_s", 5.0)),
            lost_job_grace_s=float(own.get("lost_job_grace_s", 120.0)),
        )


def _squeue_states(array_ids: Sequence[str]) -> Optional[Dict[str, str]]:
    """Map "<jobid>" / "<arrayid>_<task>" to its squeue state; None when squeue is unusable."""
    try:
        out = subprocess.run(
            ["squeue", "--noheader", "--array", "--states=all", "--format=%i %T", "--jobs", ",".join(array_ids)],
            capture_output=True, text=True, timeout=60, check=False,
        )
    except (OSError, subprocess.TimeoutExpired):
        return None
    if out.returncode != 0 and "Invalid job id" not in out.stderr:
        return None
    states = {}
    for line in out.stdout.splitlines():
        parts = line.split()
        if len(parts) == 2:
            states[parts[0]] = parts[1]
    return states


def _sacct_works(job_id: str) -> bool:
    try:
        return subprocess.run(["sacct", "--noheader", "-j", job_id], capture_output=True, timeout=60).returncode == 0
    except (OSError, subprocess.TimeoutExpired):
        return False


def _failed(overrides: List[str], error: BaseException) -> JobReturn:
    ret = JobReturn(overrides=overrides, status=JobStatus.FAILED)
    ret.return_value = error
    return ret


def collect_results(
    jobs: Sequence[Any],
    overrides: Sequence[List[str]],
    poll_interval_s: float = 5.0,
    lost_job_grace_s: float = 120.0,
) -> List[JobReturn]:
    """Wait for every job's result file (a requeued job keeps its id and writes it when done).

    A job counts as lost when, without a result file, squeue has reported it ended (or no longer
    knows it) for ``lost_job_grace_s`` seconds in a row.
    """
    from submitit.core.utils import UncompletedJobError  # noqa: PLC0415

    results: List[Optional[JobReturn]] = [None] * len(jobs)
    pending = set(range(len(jobs)))
    # Without accounting, submitit's sacct calls only fail (and warn every poll): skip them.
    ask_scheduler = bool(jobs) and _sacct_works(jobs[0].job_id.split("_")[0])
    gone_since: Dict[int, float] = {}
    while pending:
        for i in sorted(pending):
            job = jobs[i]
            # done(): the result file exists, or the scheduler (sacct / local process) says it ended.
            if not (job.paths.result_pickle.exists() or (ask_scheduler and job.done())):
                continue
            pending.discard(i)
            try:
                results[i] = job.results()[0]
            except Exception as err:  # noqa: BLE001 - a job's failure is reported per job, below
                results[i] = _failed(list(overrides[i]), err)
        if not pending:
            break
        states = _squeue_states(sorted({jobs[i].job_id.split("_")[0] for i in pending}))
        now = time.time()
        for i in sorted(pending):
            if states is None:
                continue
            state = states.get(jobs[i].job_id)
            if state is not None and state.split()[0].rstrip("+") not in _ENDED_STATES:
                gone_since.pop(i, None)
                continue
            first = gone_since.setdefault(i, now)
            if now - first >= lost_job_grace_s and not jobs[i].paths.result_pickle.exists():
                pending.discard(i)
                msg = (
                    f"job {jobs[i].job_id} ended without a result (squeue state: {state or 'gone'}); "
                    f"see {jobs[i].paths.stderr}"
                )
                log.error(msg)
                results[i] = _failed(list(overrides[i]), UncompletedJobError(msg))
        time.sleep(poll_interval_s)
    return [r for r in results if r is not None]

