"""The ``ganbench`` console script: a Hydra app over ``conf/``.

Torch is imported inside the task, so that a process that only submits jobs (SLURM, joblib) stays light.
Errors the user can fix are printed as one line (``ganbench: error: ...``) with exit code 1; the full
traceback is shown with ``HYDRA_FULL_ERROR=1``.
"""
import hashlib
import logging
import os
import re
import sys
from pathlib import Path
from typing import Any, List, Optional

import hydra
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from hydra.experimental.callback import Callback
from omegaconf import DictConfig, OmegaConf

from .errors import GanbenchError, one_line_error  # noqa: F401 - one_line_error re-exported

log = logging.getLogger("ganbench")


def config_dir() -> str:
    """conf/ as shipped in the wheel (ganbench/conf), or the repository's top-level conf/ (editable install)."""
    here = Path(__file__).resolve().parent
    for candidate in (here / "conf", here.parent / "conf"):
        if (candidate / "config.yaml").is_file():
            return str(candidate)
    raise FileNotFoundError(f"ganbench: cannot find conf/config.yaml next to {here}")


def run_dirname(override_dirname: str) -> str:
    """A safe, readable directory name from Hydra's ``k=v,k=v`` override string.

    Path separators in values (``dataset.path=../data/x.tar.gz``) must not create or escape directories;
    names past 200 characters keep a prefix plus a hash so they stay unique.
    """
    name = override_dirname or "default"
    # A path value keeps its file name plus a hash of the whole path: readable, and two different
    # paths with the same file name still get different run directories.
    name = re.sub(
        r"=([^,=]*[/\\][^,=]*)",
        lambda m: "=" + re.split(r"[/\\]", m.group(1).rstrip("/\\"))[-1] + "@"
        + hashlib.sha1(m.group(1).encode()).hexdigest()[:6],
        name,
    )
    name = re.sub(r"[/\\]", "_", name).replace("..", "_")
    name = re.sub(r"[^\w.,=+\-\[\]:@%]", "_", name)
    if len(name) > 200:
        name = name[:180] + "__" + hashlib.sha1(override_dirname.encode()).hexdigest()[:10]
    return name


if not OmegaConf.has_resolver("gb.dirname"):
    OmegaConf.register_new_resolver("gb.dirname", run_dirname)


def _run_and_report(func: Any) -> Any:
    """Replacement for Hydra's reporter: one line, exit code 1, traceback only with HYDRA_FULL_ERROR=1."""
    try:
        return func()
    except Exception as ex:  # noqa: BLE001 - this is the top-level reporter
        if os.environ.get("HYDRA_FULL_ERROR") == "1":
            raise
        print(f"ganbench: error: {one_line_error(ex)}", file=sys.stderr)
        sys.exit(1)


class ValidateOnRunStart(Callback):
    """Validate a single run's config before Hydra creates its directory, so bad input writes nothing."""

    def on_run_start(self, config: DictConfig, **kwargs: Any) -> None:
        # Hydra turns a callback's exceptions into warnings, so report and exit here (SystemExit passes).
        try:
            validate_task(config)
        except GanbenchError as ex:
            if os.environ.get("HYDRA_FULL_ERROR") == "1":
                import traceback

                traceback.print_exc()
            print(f"ganbench: error: {one_line_error(ex)}", file=sys.stderr)
            sys.exit(1)


def validate_task(cfg: DictConfig) -> None:
    from .config import validate, validate_top

    if cfg.get("task") == "gan":
        validate(cfg)
        from .data import validate_dataset_config

        validate_dataset_config(cfg.dataset)
        from .metrics import validate as validate_metrics

        validate_metrics(cfg)
    else:
        validate_top(cfg)
        from .gmm import validate as validate_gmm

        validate_gmm(cfg.get("gmm"))


def task(cfg: DictConfig) -> Optional[dict]:
    """One job: train a GAN (task=gan) or run the GMM-GAN lab (task=gmm). Returns the results record."""
    run_dir = Path(HydraConfig.get().runtime.output_dir)
    overrides: List[str] = list(HydraConfig.get().overrides.task)
    try:
        if cfg.task == "gmm":
            from .gmm import run

            return run(cfg, run_dir)
        from .train import train

        return train(cfg, run_dir, overrides)
    except Exception as ex:
        if os.environ.get("HYDRA_FULL_ERROR") == "1":
            raise
        _log_to_file_only(ex)
        if HydraConfig.get().mode == RunMode.RUN:
            # Hydra would add its own "Error executing job" line: report the one line here instead.
            print(f"ganbench: error: {one_line_error(ex)}", file=sys.stderr)
            sys.exit(1)
        raise  # in a sweep, the launcher records the failure and the other jobs go on


def _log_to_file_only(ex: Exception) -> None:
    """The traceback belongs in the run's train.log, not on a terminal that gets one line."""
    record = log.makeRecord(log.name, logging.ERROR, __file__, 0, "run failed", None,
                            (type(ex), ex, ex.__traceback__))
    for handler in logging.getLogger().handlers + log.handlers:
        if isinstance(handler, logging.FileHandler):
            handler.handle(record)


_app = hydra.main(version_base="1.3", config_path=config_dir(), config_name="config")(task)


def main() -> None:
    from .launchers import preview

    if preview.wants_preview(sys.argv[1:]):
        # Hydra refuses -m with --cfg; show each job of the sweep instead (writes nothing, runs nothing).
        sys.exit(_run_and_report(lambda: preview.main(sys.argv[1:], config_dir())))
    import hydra._internal.utils as hydra_utils

    hydra_utils.run_and_report = _run_and_report
    _app()


if __name__ == "__main__":
    main()
