"""``ganbench --help``: a usage page for this tool (the commands, the config groups and their options),
instead of Hydra's stock one, which stays available as ``--hydra-help``."""
from __future__ import annotations

import textwrap
from pathlib import Path
from typing import List, Optional

GROUPS = ("dataset", "arch", "arch/g", "arch/d", "objective", "penalty", "optimizer", "dynamics", "arm", "experiment")

COMMANDS = """\
usage: ganbench [key=value ...]            train one run; re-running the same command resumes it
       ganbench -m key=a,b seed=0,1,2      sweep, one run per combination (local, one after another)
       ganbench -m ... hydra/launcher=joblib    the same sweep in parallel on this machine's cores
       ganbench -m ... hydra/launcher=slurm     the same sweep as a SLURM job array (preemption-safe)
       ganbench experiment=NAME            a preset comparison (add -m for the presets that sweep)
       ganbench --cfg job [key=value ...]  print the composed config, values resolved (nothing runs)
       ganbench restart=true ...           start a run over: its old directory is moved to <dir>.old-<time>
       ganbench seed=0 train.replicas=10   seeds 0..9 trained together in one process, each in its own seed=<s>/
       ganbench -m hydra/sweeper=optuna experiment=tune_dragan_grid25
                                           hyperparameter search (Optuna, stored in optuna.db: re-run to resume)
       ganbench-report DIR [--metrics a,b] tables and figures (mean and 95% interval over seeds) of runs
       tensorboard --logdir outputs        curves, sample grids, 2-D density plots, the HParams tab

examples:
       ganbench experiment=quickstart                       DRAGAN on 8 Gaussians, ~5 min of one CPU core
       ganbench objective=dragan arch=dcgan                 DRAGAN on CIFAR-10 with a DCGAN
       ganbench -m objective=vanilla,wgan_gp,dragan seed=0,1,2
       ganbench -m experiment=toy_mode_collapse hydra/launcher=joblib
"""

TOP = """\
top-level keys:
       seed=0  device=auto|cpu|cuda|cuda:N|mps  threads=auto|N  resume=PATH  restart=false
       train.iterations=100000  train.batch_size=64  train.log_every  train.ckpt_every  train.sample_every
       train.g_average=none|ema|uniform  train.replicas=1|N  train.compile=false|true|reduce-overhead  pack=1|m
       eval.every=auto|N  metrics.names=auto|[is,fid,kid,modes,...]
       search.metric=NAME  search.value=final|best  search.seeds=1|N      (hydra/sweeper=optuna)
"""

FOOTER = """\
Runs are written to outputs/runs/<overrides>/seed=<seed>/ (sweeps: outputs/sweeps/<time>/...).
Every conf/<group>/<option>.yaml documents its keys; README.md has the full reference.
Hydra's own help and flags: ganbench --hydra-help
"""


def options(conf_dir: Path, group: str) -> List[str]:
    return sorted(p.stem for p in (conf_dir / group).glob("*.yaml"))


def page(conf_dir: str) -> str:
    conf = Path(conf_dir)
    lines = [COMMANDS, "config groups (choose with group=option):"]
    for group in GROUPS:
        opts = ", ".join(options(conf, group))
        wrapped = textwrap.wrap(opts, width=88, initial_indent=f"       {group:<11}", subsequent_indent=" " * 18)
        lines.extend(wrapped)
    launchers = ["basic (default)", "joblib", *options(conf, "hydra/launcher")]
    lines.append(f"       {'launcher':<11}hydra/launcher=" + ", ".join(launchers))
    lines += ["", TOP, FOOTER]
    return "\n".join(lines)


def wants_help(argv: List[str]) -> bool:
    return any(a in ("-h", "--help") for a in argv)


def unknown_flags(argv: List[str]) -> List[str]:
    """Options (``-x``/``--x``) that Hydra's own command-line parser does not know."""
    from hydra._internal.utils import get_args_parser

    _, unknown = get_args_parser().parse_known_args(argv)
    return [a for a in unknown if a.startswith("-")]


#: Hydra flags ganbench refuses, with why. ``--experimental-rerun FILE`` unpickles FILE (a pickle runs whatever
#: code it holds), and the file it reads (``.hydra/config.pickle``, written with ``hydra.callbacks.save_job_info``)
#: is one ganbench never writes: re-running the same command is how a run is continued.
REFUSED = {"--experimental-rerun": "it unpickles the file it is given (loading a pickle runs the code it holds); "
                                   "re-run the same command instead, which resumes the run"}


def refused_flag(argv: List[str]) -> Optional[str]:
    """The first argument that selects a REFUSED flag, as given, with argparse's abbreviations (``--exp``,
    ``--experimental-rerun=FILE``) counted, as Hydra's parser would read them."""
    from hydra._internal.utils import get_args_parser

    flags = [f for a in get_args_parser()._actions for f in a.option_strings if f.startswith("--")]
    for arg in argv:
        if arg == "--":
            break
        name = arg.split("=", 1)[0]
        if not name.startswith("--") or len(name) < 3:
            continue
        matches = [f for f in flags if f == name] or [f for f in flags if f.startswith(name)]
        if len(matches) == 1 and matches[0] in REFUSED:
            return arg
    return None
