"""``ganbench -m <sweep> --cfg job``: print the config of every run a sweep would launch.

Hydra 1.3 refuses ``--cfg`` together with ``-m``; for a preset that sets its sweep in
``hydra.sweeper.params`` the interesting output is the config of each run (e.g. each objective with
its paper settings), so the CLI hands such a command line to ``sweep_configs``. Runs that differ
only by seed are printed once, with their seeds in the header. Nothing is written to disk.
"""

from __future__ import annotations

import sys
from typing import List, Optional, Sequence

from hydra import compose, initialize_config_dir
from hydra._internal.core_plugins.basic_sweeper import BasicSweeper
from hydra.core.global_hydra import GlobalHydra
from hydra.core.override_parser.overrides_parser import OverridesParser
from omegaconf import OmegaConf

CFG_TYPES = ("job", "hydra", "all")


def expand_sweep(config_dir: str, overrides: Sequence[str], config_name: str = "config") -> List[List[str]]:
    """The override list of every job of the sweep: hydra.sweeper.params × command-line sweeps.

    Same rule as Hydra's BasicSweeper: the preset's params come first, the command line after, and
    a key given on the command line replaces the preset's values for that key.
    """
    parser = OverridesParser.create()
    parsed = parser.parse_overrides(list(overrides))
    plain = [o.input_line for o in parsed if not o.is_sweep_override()]
    with _initialized(config_dir):
        primary = compose(config_name=config_name, overrides=plain, return_hydra_config=True)
    params = primary.hydra.sweeper.get("params") or {}
    param_lines = [f"{k}={v}" for k, v in params.items()]
    every = parser.parse_overrides(param_lines + list(overrides))
    (batch,) = BasicSweeper.split_arguments(every, None)
    return batch


def sweep_configs(
    config_dir: str, overrides: Sequence[str], cfg_type: str = "job", resolve: bool = False, config_name: str = "config"
) -> str:
    """YAML of each distinct run of the sweep (runs that differ only by seed are shown once)."""
    if cfg_type not in CFG_TYPES:
        raise ValueError(f"--cfg {cfg_type}: expected one of {', '.join(CFG_TYPES)}")
    search = search_preview(config_dir, overrides, cfg_type, resolve, config_name)
    if search is not None:
        return search
    jobs = expand_sweep(config_dir, overrides, config_name)
    seeds: dict = {}
    for job in jobs:
        key = tuple(o for o in job if not o.startswith("seed="))
        seeds.setdefault(key, []).extend(o.split("=", 1)[1] for o in job if o.startswith("seed="))
    out = []
    with _initialized(config_dir):
        for n, (key, job_seeds) in enumerate(seeds.items(), start=1):
            first_seed = [f"seed={job_seeds[0]}"] if job_seeds else []
            cfg = compose(config_name=config_name, overrides=[*key, *first_seed], return_hydra_config=cfg_type != "job")
            if cfg_type == "hydra":
                cfg = OmegaConf.create({"hydra": cfg.hydra})
            shown = [o for o in key if o.split("=", 1)[0].lstrip("+~") not in _CONSTANT_KEYS]
            header = f"# run {n}/{len(seeds)}: {' '.join(shown) or '(no overrides)'}"
            replicas = OmegaConf.select(cfg, "train.replicas", default=1) if cfg_type == "job" else 1
            if isinstance(replicas, int) and replicas > 1:
                first = int(job_seeds[0]) if job_seeds else int(OmegaConf.select(cfg, "seed", default=0))
                header += f"  (seeds {first}..{first + replicas - 1} in one process: train.replicas)"
            elif job_seeds:
                header += f"  (seeds {','.join(job_seeds)})"
            out.append(header + "\n" + OmegaConf.to_yaml(cfg, resolve=resolve))
    return "\n".join(out)


def search_preview(config_dir: str, overrides: Sequence[str], cfg_type: str, resolve: bool,
                   config_name: str = "config") -> Optional[str]:
    """For hydra/sweeper=optuna: the search space and the config every trial shares (its fixed overrides
    applied, the searched keys at their config values); None for other sweepers."""
    from ganbench.sweep.search import SWEEPER_TARGET  # noqa: PLC0415

    parser = OverridesParser.create()
    parsed = parser.parse_overrides(list(overrides))
    plain = [o.input_line for o in parsed if not o.is_sweep_override()]
    with _initialized(config_dir):
        primary = compose(config_name=config_name, overrides=plain, return_hydra_config=True)
        if str(primary.hydra.sweeper.get("_target_")) != SWEEPER_TARGET:
            return None
        params = {str(k): str(v) for k, v in (primary.hydra.sweeper.get("params") or {}).items() if v is not None}
        params.update({o.key_or_group: o.input_line.split("=", 1)[1] for o in parsed if o.is_sweep_override()})
        every = parser.parse_overrides([f"{k}={v}" for k, v in params.items()])
        fixed = [o.input_line for o in every if not o.is_sweep_override()]
        cfg = compose(config_name=config_name, overrides=plain + fixed, return_hydra_config=cfg_type != "job")
    space = [o for o in every if o.is_sweep_override()]
    sweeper = primary.hydra.sweeper
    lines = [f"# hyperparameter search (hydra/sweeper=optuna): {sweeper.n_trials} trials in batches of "
             f"{sweeper.n_jobs}, search.metric={OmegaConf.select(primary, 'search.metric')} "
             f"({OmegaConf.select(primary, 'search.value')}), sampler {sweeper.sampler._target_.rsplit('.', 1)[-1]}"]
    lines += [f"#   {o.input_line}" for o in space] or ["#   (no search space: give ranges in hydra.sweeper.params)"]
    for name, extra in (sweeper.get("studies") or {}).items():
        lines.append(f"#   study {name}: " + " ".join(f"{k}={v}" for k, v in (extra or {}).items() if v is not None))
    if cfg_type == "hydra":
        cfg = OmegaConf.create({"hydra": cfg.hydra})
    lines.append("# the config every trial shares (searched keys at their config values):")
    return "\n".join(lines) + "\n" + OmegaConf.to_yaml(cfg, resolve=resolve)


def wants_preview(argv: Sequence[str]) -> bool:
    """True for a command line with both -m/--multirun and -c/--cfg (which Hydra itself rejects)."""
    args = set(argv)
    return bool(args & {"-m", "--multirun"}) and any(a in ("-c", "--cfg") or a.startswith("--cfg=") for a in argv)


def main(argv: Sequence[str], config_dir: str) -> int:
    """``ganbench -m ... --cfg job|hydra|all [--resolve]``: print each run's config; exit status."""
    overrides: List[str] = []
    cfg_type, resolve, config_name = "job", False, "config"
    it = iter(argv)
    for arg in it:
        if arg in ("-m", "--multirun"):
            continue
        if arg in ("-c", "--cfg"):
            cfg_type = next(it, "job")
        elif arg.startswith("--cfg="):
            cfg_type = arg.split("=", 1)[1]
        elif arg == "--resolve":
            resolve = True
        elif arg in ("-cn", "--config-name"):
            config_name = next(it, config_name)
        elif arg.startswith("--config-name="):
            config_name = arg.split("=", 1)[1]
        elif arg.startswith("-"):
            print(f"ganbench: error: {arg}: not supported together with -m --cfg", file=sys.stderr)
            return 2
        else:
            overrides.append(arg)
    try:
        print(sweep_configs(config_dir, overrides, cfg_type, resolve, config_name))
    except Exception as ex:  # noqa: BLE001 - one line for the user, like the rest of the CLI
        from ganbench.errors import one_line_error  # noqa: PLC0415 - the CLI's own error condenser

        print(f"ganbench: error: {one_line_error(ex)}", file=sys.stderr)
        return 1
    return 0


# Overrides that every run shares and that the header would only repeat.
_CONSTANT_KEYS = {"experiment"}


class _initialized:
    """initialize_config_dir that also works when a Hydra app is already initialised."""

    def __init__(self, config_dir: str):
        self.config_dir = config_dir
        self._ctx = None

    def __enter__(self):
        if GlobalHydra.instance().is_initialized():
            GlobalHydra.instance().clear()
        self._ctx = initialize_config_dir(config_dir=self.config_dir, version_base="1.3")
        self._ctx.__enter__()
        return self

    def __exit__(self, *exc):
        return self._ctx.__exit__(*exc)
