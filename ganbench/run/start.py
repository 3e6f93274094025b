"""A run's start: every check that can fail, with nothing written yet (``prepare``), and the pieces it
builds (device, threads, dataset, players, game, resume point). ``check_game`` makes the same checks from the
config alone, before Hydra creates the run directory.

Data flows config → start → loop → record: this module reads the config (ganbench/config.py) and the
checkpoints (run/checkpoint.py), builds the game (ganbench/dynamics/) and hands a ``Start`` to run/loop.py.
"""
import contextlib
import logging
import os
import random
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Optional, Tuple

import numpy as np
import torch
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig, OmegaConf
from torch import nn

from ..archs import build as build_arch, data_shape
from ..config import Spec, validate
from ..data import build_dataset
from ..dynamics import Game, Players, build_dynamics
from ..dynamics.base import make_average, make_optimizer
from ..errors import CheckpointError, ConfigError
from ..packing import packed_shape
from ..replicas import (SINGLE, Layout, Replicated, join_states, not_batched, refuse_compiled_vmap, replica_config,
                        replica_dirs)
from . import checkpoint
from .record import RunRecord

log = logging.getLogger("ganbench")

CHECKPOINT = Path("checkpoints") / "last.pt"


def resolve_device(name: str) -> torch.device:
    """``device``: auto (CUDA if available, else CPU), cpu, cuda, cuda:N or mps, each checked to exist."""
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    device = torch.device(name)
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise ConfigError("device: cuda requested but CUDA is not available (use device=auto or device=cpu)")
        if device.index is not None and device.index >= torch.cuda.device_count():
            raise ConfigError(f"device: {name} requested but this machine has {torch.cuda.device_count()} "
                              f"CUDA device(s): cuda:0..cuda:{torch.cuda.device_count() - 1}")
    if device.type == "mps":
        mps = getattr(torch.backends, "mps", None)
        if mps is None or not mps.is_available():
            raise ConfigError("device: mps requested but MPS is not available (use device=auto or device=cpu)")
    return device


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def rng_fork(device: torch.device) -> contextlib.AbstractContextManager:
    """Run a block with its own copy of the global RNG state, restored afterwards."""
    return torch.random.fork_rng(devices=[device] if device.type == "cuda" else [])


@dataclass
class Member:
    """One run a start trains: its directory and its own config. A single run is the one member of its
    start; with ``train.replicas=N`` replica i is the run of seed S+i, in that seed's directory."""

    run_dir: Path
    cfg: DictConfig
    config: Dict[str, Any]
    index: int = 0  # the replica's index along the replica axis (0 for a single run)
    wall_before: float = 0.0


@dataclass
class Start:
    """A run (or N replicas) that has passed every check of its start; nothing has been written for it yet.

    ``members`` are the runs being trained; ``finished`` the replica directories whose runs had already
    ended (completed, or diverged before the others' checkpoint), which this start leaves untouched.
    """

    cfg: DictConfig
    spec: Spec
    config: Dict[str, Any]
    device: torch.device
    data: Any
    game: Optional[Game]
    step: int = 0
    wall_before: float = 0.0
    members: List[Member] = field(default_factory=list)
    finished: List[Path] = field(default_factory=list)
    #: Replicas of a method that is not batched: one single-run start per seed, trained in turn.
    parts: List["Start"] = field(default_factory=list)
    #: The RNG states ``prepare`` left (a part's), restored before it trains.
    rng: Optional[Dict[str, Any]] = None

    @property
    def replicated(self) -> bool:
        return self.spec.train.replicas > 1


def setup_device(cfg: DictConfig) -> torch.device:
    """The run's device, with CUDA's numerics as ``train.tf32`` and ``train.deterministic`` say (logged)."""
    device = resolve_device(cfg.device)
    log.info("device: %s%s", device, f" ({torch.cuda.get_device_name(device)})" if device.type == "cuda" else "")
    if device.type == "cuda":
        tf32, deterministic = bool(cfg.train.get("tf32", True)), bool(cfg.train.get("deterministic", False))
        torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = tf32
        torch.backends.cudnn.benchmark = not deterministic
        torch.backends.cudnn.deterministic = deterministic
        log.info("CUDA numerics: %s products (train.tf32=%s); %s", "TF32" if tf32 else "IEEE fp32", tf32,
                 "cuDNN deterministic, no autotuning (train.deterministic=true: reproducible, slower convolutions)"
                 if deterministic else "cuDNN autotuned (train.deterministic=false: fastest, not bit-reproducible)")
    return device


def usable_cores() -> int:
    """The cores this process may run on: its affinity mask (taskset, SLURM's cgroup), else the machine's."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):
        return max(1, os.cpu_count() or 1)


def parallel_jobs(hydra_node: Any, cores: int) -> int:
    """How many jobs the launcher runs side by side on this machine: hydra-joblib-launcher's ``n_jobs`` in a
    multirun (-1 = every core, -2 = all but one, ..., as joblib counts), else 1 (one run; the basic launcher
    runs jobs one after another; a SLURM job gets its own cores through its affinity mask)."""
    if hydra_node is None or not str(OmegaConf.select(hydra_node, "mode", default="")).endswith("MULTIRUN"):
        return 1
    launcher = OmegaConf.select(hydra_node, "launcher", default=None)
    target = str(OmegaConf.select(launcher, "_target_", default="")) if launcher is not None else ""
    if not target.endswith("JoblibLauncher"):
        return 1
    n = OmegaConf.select(launcher, "n_jobs", default=-1)
    n = int(n) if n is not None else -1
    return max(1, min(cores, cores + 1 + n if n < 0 else n))


def auto_threads(kind: str, cores: int, jobs: int) -> Tuple[int, str]:
    """``threads=auto``: (torch threads, why). 2-D data: 1 (a tiny step spends more time synchronising threads
    than computing: 7 vs 92 it/s measured with 2 threads on a loaded 2-core machine). Images: the usable cores
    divided among the jobs running side by side, at least 1 (a width-16 DCGAN ran at 0.3 it/s in a 2-worker
    sweep on 2 cores with torch's default of 2 threads each, 2-3 it/s alone)."""
    if kind == "points":
        return 1, "2-D data: one thread"
    threads = max(1, cores // jobs)
    return threads, f"{cores} usable core{'s' * (cores > 1)} / {jobs} job{'s' * (jobs > 1)} side by side"


def set_threads(cfg: DictConfig, data: Any) -> None:
    """torch's CPU threads: ``threads`` (an integer), or ``auto`` (``auto_threads``), logged either way."""
    threads = cfg.get("threads", "auto")
    if threads == "auto":
        try:
            hydra_node = HydraConfig.get()
        except ValueError:  # not inside a Hydra job (tests, the API)
            hydra_node = None
        cores = usable_cores()
        threads, why = auto_threads(data.kind, cores, parallel_jobs(hydra_node, cores))
        log.info("threads=auto: %d torch thread%s (%s)", threads, "s" * (threads > 1), why)
    torch.set_num_threads(int(threads))


def bind_game(spec: Spec, dynamics: Game, G: nn.Module, D: nn.Module, data: Any, layout: Layout = SINGLE) -> Game:
    """The optimizers, the averaged generator and the game around players G and D."""
    if spec.train.channels_last:
        G, D = G.to(memory_format=torch.channels_last), D.to(memory_format=torch.channels_last)
    opt_G = make_optimizer(spec.optimizer, G.parameters(), spec.opt_g)
    opt_D = make_optimizer(spec.optimizer, D.parameters(), spec.opt_d)
    G_avg = make_average(G, spec.train.g_average, spec.train.ema_beta)
    # train.batch_size counts D's inputs, packs with pack=m (PacGAN's code: batch_size packs per step), so the
    # game draws batch_size·m samples of each kind per batch.
    game = dynamics.bind(Players(G, D, opt_G, opt_D, G_avg), spec.loss, spec.penalty, spec.n_dis, data,
                         spec.train.batch_size * spec.pack, spec.train.iterations, layout, spec.pack, spec.augment)
    game.set_precision(spec.train.precision)
    game.compile_mode = spec.train.compile
    return game


def build_players(spec: Spec, arch: DictConfig, shape: Any) -> Any:
    """The objective's players from the arch: G for the data's sample shape, D for the packed one (pack)."""
    d_shape = packed_shape(shape, spec.pack)
    return spec.loss.build_players(lambda: build_arch(arch, shape, spec.penalty.gradient_penalty, d_shape))


def log_sizes(G: nn.Module, D: nn.Module, per: str = "") -> None:
    log.info("G: %.2fM parameters, D: %.2fM parameters%s", sum(p.numel() for p in G.parameters()) / 1e6,
             sum(p.numel() for p in D.parameters()) / 1e6, per)


def prepare(cfg: DictConfig, run_dir: Path, fresh: bool = False) -> Start:
    """Every check of a run's start that can fail, with nothing written to ``run_dir``.

    Validates the config, resolves the device, builds the dataset and the networks, and loads the
    checkpoint to continue from: the run's own ``checkpoints/last.pt`` (unless ``fresh``, for
    ``restart=true``), else ``resume=<path>``. Giving both is an error, since one of them would be ignored.
    With ``train.replicas=N`` it prepares the N replicas instead (``prepare_replicas``).
    """
    spec: Spec = validate(cfg)
    dynamics = build_dynamics(cfg.get("dynamics"))
    if spec.train.replicas > 1:
        return prepare_replicas(cfg, spec, dynamics, run_dir, fresh)
    config = OmegaConf.to_container(cfg, resolve=True)
    device = setup_device(cfg)

    seed_everything(cfg.seed)
    data = build_dataset(cfg.dataset, device, cfg.seed)
    set_threads(cfg, data)
    # The objective builds its players from the arch (once for most; K pairs for a mixture, ...).
    G, D = build_players(spec, cfg.arch, data.shape)
    game = bind_game(spec, dynamics, G.to(device), D.to(device), data)
    if spec.train.compile:
        game.compile_steps()
    start = Start(cfg, spec, config, device, data, game, members=[Member(run_dir, cfg, config)])
    log_sizes(G, D)

    # ---- resume: the run's own checkpoint, else resume=<path> ----
    own = own_checkpoint(run_dir)
    own_exists = own.exists() and not fresh
    given = Path(cfg.resume).expanduser() if cfg.resume else None
    if own_exists and given is not None and given.resolve() != own.resolve():
        raise CheckpointError(
            f"resume: this run directory already holds its own checkpoint {own}, which it continues; "
            f"resume={given} would be ignored. Drop resume=, or start a new run directory "
            "(other overrides, hydra.run.dir=..., or restart=true to move this one aside)")
    source = own if own_exists else given
    if source is None:
        return start
    if not source.exists():
        raise CheckpointError(f"resume: no checkpoint at {source}")
    if source.is_dir():
        raise CheckpointError(f"resume: {source} is a directory; give the checkpoint file (e.g. {source / CHECKPOINT})")
    state = checkpoint.load(source)
    keys = checkpoint.IDENTITY_KEYS if source == own else ("dataset", "arch")
    checkpoint.check_matches(state.get("config") or {}, config, source, keys)
    game.load_state_dict(state, source)
    step, wall_before, rng = resume_point(state, source)
    checkpoint.set_rng_state(rng)
    start.step, start.wall_before = step, wall_before
    start.members[0].wall_before = wall_before
    game.g_step = step
    log.info("resumed from %s at generator step %d", source, step)
    return start


def own_checkpoint(run_dir: Path) -> Path:
    """The run's own checkpoint: ``last.pt``, or ``prev.pt`` when a kill between ``keep_previous``'s two
    renames (a file system without hard links) left only that one."""
    own = run_dir / CHECKPOINT
    prev = checkpoint.previous_path(own)
    return prev if not own.exists() and prev.exists() else own


def rewound(entry, step: int):
    """A replica's resume entry at ``step``: its own checkpoint if it is there, else the previous one
    (``checkpoint.save(..., keep_previous=True)``) when that is at ``step``; otherwise unchanged, and the
    caller names the mismatch."""
    i, run_dir_i, cfg_i, config_i, state, at, previous = entry
    prev = checkpoint.previous_path(run_dir_i / CHECKPOINT)
    if at == step or not prev.exists():
        return entry
    prev_state = checkpoint.load(prev)
    checkpoint.check_matches(prev_state.get("config") or {}, config_i, prev)
    if resume_point(prev_state, prev)[0] != step:
        return entry
    log.info("%s: its checkpoint at step %d was written after the job's last complete set of checkpoints; "
             "continuing from its previous one, at step %d, with the other seeds", run_dir_i.name, at, step)
    return (i, run_dir_i, cfg_i, config_i, prev_state, step, previous)


def resume_point(state: Dict[str, Any], source: Path):
    """(generator step, wall seconds before, RNG states) of a checkpoint."""
    try:
        return int(state["step"]), float(state.get("wall_time_s", 0.0)), state["rng"]
    except (KeyError, TypeError, ValueError) as ex:
        raise CheckpointError(f"checkpoint {source} lacks {ex}; it was left in place") from None


def prepare_replicas(cfg: DictConfig, spec: Spec, dynamics: Game, run_dir: Path, fresh: bool) -> Start:
    """``train.replicas=N``: the runs of seeds S..S+N-1, each in its own directory (``replica_dirs``), built
    exactly as each separate run builds its networks and stacked into one replicated game.

    A seed whose run has completed is left alone (nothing to do, as its separate run would find); so is one
    that diverged before the others' last checkpoint. The others resume from their checkpoints, which must
    be at the same step (they are, when one replicated process wrote them).
    """
    n = spec.train.replicas
    if cfg.resume:
        raise CheckpointError("resume: train.replicas continues each seed from its own run directory; resume=<path> "
                              "names one checkpoint: drop resume= (or use train.replicas=1)")
    dirs = replica_dirs(run_dir, cfg.seed, n)
    why = not_batched(spec, dynamics, cfg)
    if why is not None:
        return prepare_in_turn(cfg, spec, dirs, fresh, why)
    device = setup_device(cfg)

    # ---- which seeds still train, and from where ----
    entries, finished = [], []
    for i, run_dir_i in enumerate(dirs):
        cfg_i = replica_config(cfg, cfg.seed + i)
        config_i = OmegaConf.to_container(cfg_i, resolve=True)
        previous = RunRecord.read(run_dir_i) if not fresh else None
        own = own_checkpoint(run_dir_i)
        state = None
        if own.exists() and not fresh:
            state = checkpoint.load(own)
            checkpoint.check_matches(state.get("config") or {}, config_i, own)
        step = resume_point(state, own)[0] if state is not None else 0
        if previous and previous.get("status") == "completed" and step >= spec.train.iterations:
            finished.append(run_dir_i)
            continue
        entries.append((i, run_dir_i, cfg_i, config_i, state, step, previous))
    steps = {e[5] for e in entries}
    if len(steps) > 1:  # a seed that diverged stopped writing checkpoints: leave it, continue the others
        behind = [e for e in entries if (e[6] or {}).get("status") == "diverged"]
        finished += [e[1] for e in behind]
        entries = [e for e in entries if e not in behind]
        steps = {e[5] for e in entries}
    if len(steps) > 1:  # killed between two seeds' checkpoint writes: those ahead go back one checkpoint
        entries = [rewound(e, min(steps)) for e in entries]
        steps = {e[5] for e in entries}
    if len(steps) > 1:
        at = ", ".join(f"{e[1].name} at {e[5]}" for e in entries)
        raise CheckpointError(f"train.replicas: the seeds' checkpoints are at different steps ({at}); continue "
                              "them separately (train.replicas=1), or restart=true")
    start = Start(cfg, spec, OmegaConf.to_container(cfg, resolve=True), device, None, None, finished=finished)
    if not entries:
        return start

    # ---- each replica's networks, built as its separate run builds them ----
    Gs, Ds, generators = [], [], {"cpu": []}
    if device.type != "cpu":
        generators[device.type] = []
    for i, run_dir_i, cfg_i, config_i, state, step, previous in entries:
        seed_everything(cfg_i.seed)
        if start.data is None:
            before = torch.get_rng_state()
            start.data = build_dataset(cfg.dataset, device, cfg_i.seed)
            if not torch.equal(before, torch.get_rng_state()):
                raise ConfigError(f"train.replicas: dataset={cfg.dataset.name} draws random numbers while loading, "
                                  "so the replicas could not share it; use train.replicas=1")
            set_threads(cfg, start.data)
        G, D = build_players(spec, cfg.arch, start.data.shape)
        Gs.append(G)
        Ds.append(D)
        # The replica's stand-ins for the global RNGs of its separate run, from where that run would be.
        generators["cpu"].append(torch.Generator().set_state(torch.get_rng_state()))
        if device.type != "cpu":
            generators[device.type].append(torch.Generator(device).set_state(device_rng_state(device)))
        start.members.append(Member(run_dir_i, cfg_i, config_i, index=len(start.members)))
    layout = Layout(generators)
    G, D = Replicated(Gs, "G").to(device), Replicated(Ds, "D").to(device)
    start.game = game = bind_game(spec, dynamics, G, D, start.data, layout)
    if spec.train.compile:
        refuse_compiled_vmap(G, D)
        game.compile_steps()
    log_sizes(Gs[0], Ds[0], f" per replica; {len(Gs)} replicas (seeds {entries[0][2].seed}..{entries[-1][2].seed})")

    step = steps.pop()
    states = [e[4] for e in entries]
    if step > 0:
        game.load_state_dict(join_states(states), f"the checkpoints of {dirs[0].parent}")
        for k, (state, member) in enumerate(zip(states, start.members)):
            _, member.wall_before, rng = resume_point(state, member.run_dir / CHECKPOINT)
            restore_replica_rng(generators, k, rng, device)
        checkpoint.set_rng_state(resume_point(states[0], start.members[0].run_dir)[2])
        start.step = game.g_step = step
        log.info("resumed %d replicas from their checkpoints at generator step %d", len(states), step)
    return start


def prepare_in_turn(cfg: DictConfig, spec: Spec, dirs: List[Path], fresh: bool, why: str) -> Start:
    """Replicas of a method that cannot be batched: each seed prepared as its separate run (every check
    first, nothing written), then trained one after another in this job. Each part keeps the RNG state its
    own ``prepare`` left, restored before it trains, so every seed is its separate run bit for bit."""
    log.info("train.replicas: %s cannot be batched; its %d seeds train one after another in this job", why, len(dirs))
    parts = []
    for i, run_dir_i in enumerate(dirs):
        part = prepare(replica_config(cfg, cfg.seed + i), run_dir_i, fresh)
        part.rng = checkpoint.rng_state()
        parts.append(part)
    first = parts[0]
    return Start(cfg, spec, OmegaConf.to_container(cfg, resolve=True), first.device, first.data, None,
                 members=[m for part in parts for m in part.members], parts=parts)


def device_rng_state(device: torch.device) -> torch.Tensor:
    """The default generator's state of an accelerator (what a separate run there draws from)."""
    if device.type == "cuda":
        return torch.cuda.get_rng_state(device)
    return getattr(torch, device.type).get_rng_state()  # torch.mps, torch.xpu, ...


def restore_replica_rng(generators: Dict[str, List[torch.Generator]], k: int, rng: Dict[str, Any],
                        device: torch.device) -> None:
    """Replica k's generators set from its checkpoint's RNG states. A checkpoint holds the CUDA states only when
    it was written where CUDA was available (``rng["cuda"]`` is [] otherwise): a CUDA generator then keeps the
    state its seed gave it, as a single run's does (checkpoint.set_rng_state); likewise on other devices, whose
    states no checkpoint holds."""
    generators["cpu"][k].set_state(rng["torch"])
    cuda = rng.get("cuda") or []
    if device.type == "cuda" and len(cuda) > (device.index or 0):
        generators["cuda"][k].set_state(cuda[device.index or 0])


class _Shape:
    """The stand-in dataset of ``check_game``: the sample shape is all a game reads from its data when it binds."""

    def __init__(self, shape: Any) -> None:
        self.shape = tuple(shape)


def check_game(cfg: DictConfig, spec: Spec) -> None:
    """The checks a run's start makes once the config is valid key by key: the device exists (``device``),
    the dynamics' keys, and every check made while the game is put together (``prepare``: the networks
    built from the arch for the dataset's sample shape, the game bound to its players, loss and penalty,
    ``train.compile``). These need the config alone, so a combination that cannot train (dynamics=simultaneous
    with objective.n_dis=2, penalty=consensus without dynamics=simultaneous, objective.layer naming no layer of
    D, objective=mixgan with dynamics=unrolled, ...) fails here, before Hydra makes the run directory, rather
    than in a run directory left holding a failed results.json.

    The game is assembled as ``prepare`` assembles it, from the same functions, so the two cannot
    disagree; its players are built on torch's meta device (shapes only: no memory, no random draws, no
    data read, however large the networks). Nothing of it is kept: ``prepare`` builds the real game.
    Logging and warnings are silenced meanwhile (the real build logs the same lines into the run's log).
    """
    resolve_device(cfg.device)
    dynamics = build_dynamics(cfg.get("dynamics"))
    shape = data_shape(cfg.dataset)
    if shape is None:  # a dataset config that fails its own checks, which name the key
        return
    previous = logging.root.manager.disable
    logging.disable(logging.CRITICAL)
    try:
        with warnings.catch_warnings(), torch.random.fork_rng(devices=[]), torch.device("meta"):
            warnings.simplefilter("ignore")
            G, D = build_players(spec, cfg.arch, shape)
            game = bind_game(spec, dynamics, G, D, _Shape(shape))
            if spec.train.compile:
                if spec.train.replicas > 1:
                    refuse_compiled_vmap(G, D)
                game.compile_steps()  # wraps the steps; compiling waits for their first call
    finally:
        logging.disable(previous)
