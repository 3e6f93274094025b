"""The ``ganbench`` console script: a Hydra app over ``conf/``.

Torch is imported inside the task, so that a process that only submits jobs (SLURM, joblib) stays light.
Errors the user can fix are printed as one line (``ganbench: error: ...``) with exit code 1; the full
traceback is shown with ``HYDRA_FULL_ERROR=1``.
"""
import logging
import os
import sys
from pathlib import Path
from typing import Any, List, Optional

import hydra
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from hydra.experimental.callback import Callback
from omegaconf import DictConfig, OmegaConf

from .errors import ConfigError, GanbenchError, one_line_error  # noqa: F401 - one_line_error re-exported

log = logging.getLogger("ganbench")


def config_dir() -> str:
    """conf/ as shipped in the wheel (ganbench/conf), or the repository's top-level conf/ (editable install)."""
    here = Path(__file__).resolve().parent
    for candidate in (here / "conf", here.parent / "conf"):
        if (candidate / "config.yaml").is_file():
            return str(candidate)
    raise FileNotFoundError(f"ganbench: cannot find conf/config.yaml next to {here}")


from .run.names import mark_swept_keys, run_dirname  # noqa: E402

if not OmegaConf.has_resolver("gb.dirname"):
    OmegaConf.register_new_resolver("gb.dirname", run_dirname)
if not OmegaConf.has_resolver("gb.shared"):
    from .config import arch_shared  # light: omegaconf only (the submitting process imports no torch)

    OmegaConf.register_new_resolver("gb.shared", arch_shared)


def _run_and_report(func: Any) -> Any:
    """Replacement for Hydra's reporter: one line, exit code 1, traceback only with HYDRA_FULL_ERROR=1.

    A multirun's job returns come back through here: a summary of the sweep follows them.
    """
    try:
        ret = func()
    except Exception as ex:  # noqa: BLE001 - this is the top-level reporter
        if os.environ.get("HYDRA_FULL_ERROR") == "1":
            raise
        print(f"ganbench: error: {one_line_error(ex)}", file=sys.stderr)
        sys.exit(1)
    from .sweep.summary import is_sweep_result, summarize

    if is_sweep_result(ret):
        failed = summarize(ret, sys.stdout)
        if failed:
            sys.exit(1)
    return ret


def _fail(ex: BaseException) -> None:
    if os.environ.get("HYDRA_FULL_ERROR") == "1":
        import traceback

        traceback.print_exc()
    print(f"ganbench: error: {one_line_error(ex)}", file=sys.stderr)
    sys.exit(1)


class ValidateOnRunStart(Callback):
    """Validate a single run's config and its directory before Hydra creates it, so bad input writes nothing."""

    def on_run_start(self, config: DictConfig, **kwargs: Any) -> None:
        # Hydra turns a callback's exceptions into warnings, so report and exit here (SystemExit passes).
        try:
            from .run.rundir import check_writable_dir

            check_writable_dir(Path(str(config.hydra.run.dir)), "hydra.run.dir")
            validate_task(config)
        except GanbenchError as ex:
            _fail(ex)

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        try:
            from .run.rundir import check_writable_dir

            check_writable_dir(Path(str(config.hydra.sweep.dir)), "hydra.sweep.dir")
        except GanbenchError as ex:
            _fail(ex)


def validate_task(cfg: DictConfig) -> None:
    """Every check of a run's config (the config alone: no data read, nothing written); a ConfigError names
    the key. ``ValidateOnRunStart`` runs it before Hydra makes the run directory."""
    from .config import validate, validate_top
    from .errors import check_torch_build
    from .run.start import check_game

    restart = cfg.get("restart", False)
    if not isinstance(restart, bool):
        raise ConfigError(f"restart: must be true or false (got {restart!r})")
    if cfg.get("task") == "gan":
        spec = validate(cfg)
        from .data import uses_torchvision, validate_dataset_config

        validate_dataset_config(cfg.dataset)
        if uses_torchvision(cfg.dataset):
            # A torchvision built for another torch: one line, before the run directory exists. A 2-D run never
            # imports it (and skips its ~1 s import).
            check_torch_build()
        from .metrics import validate as validate_metrics

        validate_metrics(cfg)
        check_game(cfg, spec)
    else:
        validate_top(cfg)
        from .gmm import resolve_device, validate as validate_gmm

        resolve_device(validate_gmm(cfg.get("gmm")), cfg)  # the device exists, as check_game checks for task=gan


def task(cfg: DictConfig) -> Optional[dict]:
    """One job: train a GAN (task=gan) or run the GMM-GAN lab (task=gmm). Returns the results record.

    The start runs in two phases (ganbench/run/rundir.py): with the directory locked, every check that can
    fail; only then are ``.hydra/``, ``train.log`` and the run's files written. A start that fails leaves
    an existing run untouched and a new directory with at most a ``failed`` results.json.
    """
    hydra_cfg = HydraConfig.get()
    run_dir = Path(hydra_cfg.runtime.output_dir)
    overrides: List[str] = list(hydra_cfg.overrides.task)
    from .sweep import search

    if search.is_search(hydra_cfg):
        # A trial of hydra/sweeper=optuna: its seeds' runs, and the value the search reads from them.
        return search.run_trial(cfg, run_dir, overrides, lambda c, d, o: train_job(c, hydra_cfg, d, o))
    return train_job(cfg, hydra_cfg, run_dir, overrides)


def train_job(cfg: DictConfig, hydra_cfg: DictConfig, run_dir: Path, overrides: List[str]) -> Optional[dict]:
    """The job ``task`` runs, in ``run_dir`` with ``overrides`` (those of the command line or of the sweep)."""
    from .run import rundir
    from .run.record import RESULTS, write_json_atomic

    sweep = hydra_cfg.mode == RunMode.MULTIRUN
    key = "hydra.sweep.dir" if sweep else "hydra.run.dir"
    # train.replicas=N: N runs, each in its own directory (ganbench/replicas.py), each locked and written
    # as its separate run would be; the job's own directory is replica 0's under the default naming.
    runs = [(run_dir, cfg, overrides)]
    replicas = _replicas(cfg)
    if replicas > 1:
        from .replicas import replica_config, replica_dirs, replica_overrides

        runs = [(d, replica_config(cfg, cfg.seed + i), replica_overrides(overrides, cfg.seed + i, cfg.seed))
                for i, d in enumerate(replica_dirs(run_dir, cfg.seed, replicas))]
    locks = {d: rundir.RunLock(d, key) for d, _, _ in runs}
    new_dirs = {d for d, _, _ in runs if not rundir.holds_run(d)}
    started = False
    logs = rundir.ReplicaLogs()
    try:
        with rundir.BufferedFileLog() as held:
            for lock in locks.values():
                lock.acquire()
            validate_task(cfg)
            restart = bool(cfg.get("restart", False))
            start = None
            if cfg.task == "gan":
                from .run.start import prepare

                start = prepare(cfg, run_dir, fresh=restart)
            for d in list(locks):
                if restart and d not in new_dirs:
                    aside = rundir.move_aside(d)
                    old, locks[d] = locks[d], rundir.RunLock(d, key).acquire()
                    old.path = aside / rundir.LOCK
                    old.release()
                    log.info("restart=true: moved the previous run to %s", aside)
            if replicas > 1:
                logs.attach(held, [(d, c.seed) for d, c, _ in runs], run_dir)
            held.commit()
            for d, cfg_d, overrides_d in runs:
                for path in rundir.stale_temporaries(d):
                    path.unlink(missing_ok=True)
                    log.info("removed %s, left by a process that was killed while writing it", path)
                rundir.write_hydra_files(d, cfg_d, hydra_cfg, overrides_d)
            if run_dir not in locks:  # replicas below a custom hydra.run.dir: the job's own files there
                rundir.write_hydra_files(run_dir, cfg, hydra_cfg, overrides)
            started = True
        if cfg.task == "gmm":
            from .gmm import run

            return run(cfg, run_dir)
        from .run.loop import run

        return run(start, run_dir, overrides)
    except Exception as ex:
        if os.environ.get("HYDRA_FULL_ERROR") == "1":
            raise
        line = one_line_error(ex)
        if started:
            _log_to_file_only(ex)
        else:
            for d, _, overrides_d in runs:
                if d in new_dirs and locks[d].fd is not None:
                    # A new directory records why it holds no run; an existing run is left byte-identical.
                    try:
                        write_json_atomic(d / RESULTS, {"status": "failed", "step": 0, "error": line,
                                                        "overrides": overrides_d})
                    except Exception:  # noqa: BLE001 - the one-line error below is what matters
                        pass
        if not sweep:
            # Hydra would add its own "Error executing job" line: report the one line here instead.
            print(f"ganbench: error: {line}", file=sys.stderr)
            sys.exit(1)
        # In a sweep the other jobs go on; the summary at the end lists this one's error.
        print(f"ganbench: error: {run_dir}: {line}", file=sys.stderr)
        return {"status": "failed", "error": line, "run_dir": str(run_dir), "overrides": overrides}
    finally:
        logs.close()
        for lock in locks.values():
            lock.release()


def _replicas(cfg: DictConfig) -> int:
    """``train.replicas`` as given (validated with the rest of the config; here only its directories)."""
    value = OmegaConf.select(cfg, "train.replicas", default=1) if cfg.get("task") == "gan" else 1
    return value if isinstance(value, int) and not isinstance(value, bool) and value > 1 else 1


def _log_to_file_only(ex: Exception) -> None:
    """The traceback belongs in the run's train.log, not on a terminal that gets one line."""
    record = log.makeRecord(log.name, logging.ERROR, __file__, 0, "run failed", None,
                            (type(ex), ex, ex.__traceback__))
    for handler in logging.getLogger().handlers + log.handlers:
        if isinstance(handler, logging.FileHandler):
            handler.handle(record)


_app = hydra.main(version_base="1.3", config_path=config_dir(), config_name="config")(task)


def main() -> None:
    from . import usage
    from .sweep import preview

    if usage.wants_help(sys.argv[1:]):
        print(usage.page(config_dir()))
        sys.exit(0)
    refused = usage.refused_flag(sys.argv[1:])
    if refused:
        # Before Hydra's parser sees it: Hydra would load the file, or print its usage block when it is absent.
        flag = refused.split("=", 1)[0]
        full = next(f for f in usage.REFUSED if f.startswith(flag))
        print(f"ganbench: error: {full} is not available: {usage.REFUSED[full]}", file=sys.stderr)
        sys.exit(2)
    unknown = usage.unknown_flags(sys.argv[1:])
    if unknown:
        # Hydra's argparse would print its usage block first: one line instead.
        print(f"ganbench: error: unrecognized option {unknown[0]}; see ganbench --help (Hydra's flags: "
              "ganbench --hydra-help)", file=sys.stderr)
        sys.exit(2)

    if preview.wants_preview(sys.argv[1:]):
        # Hydra refuses -m with --cfg; show each job of the sweep instead (writes nothing, runs nothing).
        sys.exit(_run_and_report(lambda: preview.main(sys.argv[1:], config_dir())))
    import hydra._internal.utils as hydra_utils

    hydra_utils.run_and_report = _run_and_report
    args = sys.argv[1:]
    wants_job = any(a in ("--cfg", "-c") and args[i + 1:i + 2] == ["job"] for i, a in enumerate(args))
    if wants_job and "--resolve" not in args:
        # The config as it will run: interpolations (${objective.lr}, ${compare.iterations...}) resolved.
        sys.argv.append("--resolve")
    mark_swept_keys(sys.argv[1:])
    _app()


if __name__ == "__main__":
    main()
