"""The training loop: the schedule of one run (steps, logging, evaluation, checkpoints).

Everything is built from the config. One step of the game (who is updated, in what order and how) is a
``Game`` from ganbench/dynamics/, built from the objective's loss, the penalty and the players; this file
only calls it, logs, evaluates and checkpoints. The hot loop never synchronises with the device outside
logging/checkpoint steps: running sums and the divergence flag stay on the device until a log step reads them.
With ``train.replicas=N`` the same loop trains N seeds as one replicated game (ganbench/replicas.py) and keeps
an ``Output`` (record, writer, evaluator) per seed, each in that seed's own run directory.
"""
import contextlib
import logging
import os
import random
import signal
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, Iterator, List, Optional, Tuple

import numpy as np
import torch
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig, OmegaConf
from torch import nn

from . import board, checkpoint, preemption
from .archs import build as build_arch, describe as describe_arch, one_line as arch_line
from .config import Spec, validate
from .data import build_dataset
from .dynamics import Game, Players, build_dynamics
from .dynamics.base import make_average, make_optimizer
from .errors import CheckpointError, ConfigError, GanbenchError, one_line_error
from .packing import pack, packed_shape
from .penalties.base import input_grad_norm
from .replicas import (SINGLE, Layout, Replicated, join_states, not_batched, refuse_compiled_vmap, replica_config,
                       replica_dirs, replica_overrides, split_state)
from .rundir import log_seed
from .results import RunRecord

log = logging.getLogger("ganbench")

CHECKPOINT = Path("checkpoints") / "last.pt"
# Running sums kept on the device between log steps, in this order.
SUMS = ("loss/D", "loss/G", "loss/penalty", "D/real", "D/fake")


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


def out_of_memory(ex: BaseException, batch_size: int, device: torch.device) -> Optional[GanbenchError]:
    """A device out-of-memory error as one line naming the key that sizes the step."""
    if not isinstance(ex, torch.OutOfMemoryError) and "out of memory" not in str(ex).lower()[:200]:
        return None
    if not isinstance(ex, (torch.OutOfMemoryError, RuntimeError)):
        return None
    return GanbenchError(f"train.batch_size: out of memory on {device} at train.batch_size={batch_size}; "
                         "lower train.batch_size (or eval.batch_size, if it happened while evaluating)")


def lr_factor(step: int, iterations: int, kind: str, start: float) -> float:
    """``train.lr_decay``: the factor on every configured learning rate for the step after ``step``
    generator steps: 1 (none); linear: 1 until start·T, then (T - step) / (T - start·T), 0 at T."""
    if kind == "none":
        return 1.0
    begin = start * iterations
    if step <= begin:
        return 1.0
    return max(0.0, (iterations - step) / (iterations - begin))


def swept_keys() -> List[str]:
    """The keys this job's sweep varies (for the HParams tab); none outside a Hydra multirun."""
    from hydra.core.hydra_config import HydraConfig

    from .cli import swept_keys as keys_of

    try:
        return keys_of(HydraConfig.get())
    except ValueError:  # not inside a Hydra app
        return []


# eval.every=auto for image metrics: at least this many generator steps apart, which bounds a 10k-sample
# Inception evaluation (the cost of ~1,700-2,600 DCGAN steps on a CPU, measured) at ~7-10 % of training.
IMAGE_EVAL_MIN_EVERY = 25_000
AUTO_EVALUATIONS = 10


def resolve_eval_every(every: Any, iterations: int, kind: str) -> int:
    """``eval.every``: an integer as given, or ``auto``: about 10 evaluations per run (iterations / 10),
    for image data no closer than IMAGE_EVAL_MIN_EVERY steps. 0 means only the final evaluation."""
    if every != "auto":
        return int(every)
    n = max(1, iterations // AUTO_EVALUATIONS)
    return max(n, IMAGE_EVAL_MIN_EVERY) if kind == "image" else n


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def rng_fork(device: torch.device) -> contextlib.AbstractContextManager:
    """Run a block with its own copy of the global RNG state, restored afterwards."""
    return torch.random.fork_rng(devices=[device] if device.type == "cuda" else [])


@contextlib.contextmanager
def frozen_buffers(module: nn.Module) -> Iterator[None]:
    """Diagnostics must not move batch-norm running statistics: restore every buffer afterwards."""
    saved = [b.detach().clone() for b in module.buffers()]
    try:
        yield
    finally:
        with torch.no_grad():
            for b, s in zip(module.buffers(), saved):
                b.copy_(s)


class Interrupts:
    """Ctrl-C asks for a clean stop at the end of the current step; a second Ctrl-C aborts at once."""

    def __init__(self, stop: preemption.StopRequest):
        self.stop = stop
        self.previous = None

    def _handler(self, signum: int, frame: Any) -> None:
        if self.stop.requested:
            raise KeyboardInterrupt
        self.stop.requested, self.stop.signum = True, signum
        log.warning("interrupt: saving a checkpoint after this step (press Ctrl-C again to abort)")

    def __enter__(self) -> "Interrupts":
        try:
            self.previous = signal.signal(signal.SIGINT, self._handler)
        except ValueError:  # not the main thread (e.g. some parallel launchers): keep the default
            self.previous = None
        return self

    def __exit__(self, *exc: Any) -> None:
        if self.previous is not None:
            signal.signal(signal.SIGINT, self.previous)


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


def replica_rng_state(layout: Layout, k: int, device: torch.device) -> Dict[str, Any]:
    """Replica k's RNG states in a run's checkpoint format: its generators as the run's global RNGs."""
    state = checkpoint.rng_state()
    state["torch"] = layout.generators["cpu"][k].get_state()
    if device.type == "cuda":
        cuda = list(state["cuda"])
        cuda[device.index or 0] = layout.generators["cuda"][k].get_state()
        state["cuda"] = cuda
    return state


def train(cfg: DictConfig, run_dir: Path, overrides: List[str]) -> Dict[str, Any]:
    """Check and train one GAN in ``run_dir`` (in-process use; the CLI adds the directory lock and the
    deferred writes of ganbench/rundir.py around the same two calls). Returns results.json's record."""
    return run(prepare(cfg, run_dir), run_dir, overrides)


class Output:
    """What one run writes while it trains: its record (results.json, metrics.jsonl), its TensorBoard
    writer, its evaluator, its fixed sample latents; and how it ended. A single run has one; N replicas
    have one each, in their own directories."""

    def __init__(self, start: Start, member: Member, overrides: List[str], step: int,
                 first: Optional["Output"] = None):
        from .metrics import build_evaluator
        from .metrics.evaluator import EXTRACTOR_GROUPS

        cfg, data, device, tc = member.cfg, start.data, start.device, start.spec.train
        self.member, self.run_dir, self.cfg = member, member.run_dir, cfg
        # Replicas share one feature extractor (an Inception network per replica would be N copies of one).
        shared = getattr(first.evaluator, "extractor", None) if first is not None else None
        self.evaluator = build_evaluator(cfg, data, device, member.run_dir, extractor=shared)
        self.image_metrics = any(g in EXTRACTOR_GROUPS for g in self.evaluator.groups)
        self.record = RunRecord(member.run_dir, member.config, overrides, resume_step=step,
                                best_samples=self.evaluator.s.num_samples if self.image_metrics else None)
        self.record.protocol = self.evaluator.protocol()
        # The networks as built (BogoNet's drawn sides included), for results.json, train.log and TensorBoard.
        self.record.architecture = describe_arch(cfg.arch, data.shape, start.spec.penalty.gradient_penalty,
                                                 packed_shape(data.shape, start.spec.pack))
        self.writer = board.open_writer(member.run_dir, step)
        if step == 0:
            board.log_config(self.writer, cfg, 0)
            board.log_architecture(self.writer, self.record.architecture, 0)
        # Fixed latents for samples: their own generator, so they are identical across resumes.
        fixed = torch.Generator().manual_seed(cfg.seed + 1)
        n_vis = tc.sample_grid if data.kind == "image" else max(tc.sample_grid * 40, 1000)
        self.z_fixed = torch.randn(n_vis, start.game.G.z_dim, generator=fixed).to(device)
        self.real_vis = data.sample_eval(n_vis, fixed).to(device) if data.kind == "points" else None
        self.status, self.diverged_step = "running", None
        # A replica's own log lines (those logged inside ``self.logging()``) go to its train.log only.
        self.seed = cfg.seed if start.replicated else None
        with self.logging():
            log.info("%s%s", self.prefix, arch_line(self.record.architecture))

    def logging(self) -> contextlib.AbstractContextManager:
        from .rundir import log_seed

        return log_seed(self.seed)

    @property
    def prefix(self) -> str:
        """What a replica's log lines start with (``seed=<s>: ``); nothing for a single run."""
        return f"seed={self.seed}: " if self.seed is not None else ""

    @property
    def active(self) -> bool:
        return self.status == "running"


def run(start: Start, run_dir: Path, overrides: List[str]) -> Dict[str, Any]:
    """Train the run ``prepare`` checked, in ``run_dir``; resume where its checkpoint stopped. With
    replicas, train them all (each in its own directory) and return their records under ``replicas``."""
    if start.parts:  # replicas that are not batched: each seed's run in turn
        results = []
        for part in start.parts:
            member = part.members[0]
            checkpoint.set_rng_state(part.rng)
            with log_seed(member.cfg.seed):
                results.append(run(part, member.run_dir, replica_overrides(overrides, member.cfg.seed, start.cfg.seed)))
        return replicas_result(start, results)
    cfg, spec, device, data, game = start.cfg, start.spec, start.device, start.data, start.game
    step = start.step
    n_dis, tc = spec.n_dis, spec.train
    replicated = start.replicated

    if not replicated:
        previous = RunRecord.read(run_dir)
        if step >= tc.iterations and previous and previous.get("status") == "completed":
            log.info("run already completed (%d/%d generator steps): nothing to do", step, tc.iterations)
            return previous
    for done in start.finished:
        log.info("%s: already %s, left as it is", done, (RunRecord.read(done) or {}).get("status", "finished"))
    if not start.members:
        return replicas_result(start, [])
    G, D, G_avg = game.G, game.D, game.players.G_avg
    outs: List[Output] = []
    for m in start.members:
        own = replica_overrides(overrides, m.cfg.seed, cfg.seed) if replicated else overrides
        outs.append(Output(start, m, own, step, outs[0] if outs else None))

    def players(k: int):
        """Replica k's (G, D, averaged G) as plain networks; a single run's are the game's own."""
        if not replicated:
            return G, D, G_avg.module if G_avg is not None else None
        return G.replica(k), D.replica(k), G_avg.module.replica(k) if G_avg is not None else None

    eval_every = resolve_eval_every(cfg.eval.every, tc.iterations, data.kind)
    if eval_every:
        log.info("evaluating every %d generator steps (eval.every=%s) and at the end", eval_every, cfg.eval.every)
    B = tc.batch_size * spec.pack  # real samples per D step: train.batch_size packs of m
    decay = tc.lr_decay != "none"  # the factor depends on the step only: exact on resume, no state
    run_shape = game.layout.run_shape
    sums = torch.zeros((len(SUMS),) + run_shape, device=device)
    n_summed = 0
    first_bad = torch.full(run_shape, -1, dtype=torch.long, device=device)

    stop = preemption.install()
    error = None
    for out in outs:
        out.record.write("running", step, tc.iterations, out.member.wall_before, None)
    t_start = time.perf_counter()
    t_log, step_log = t_start, step
    it_per_s: Optional[float] = None
    progress = None
    if tc.progress:
        from tqdm import tqdm

        desc = cfg.objective.name + (f" ×{len(outs)}" if replicated else "")
        progress = tqdm(total=tc.iterations, initial=step, dynamic_ncols=True, mininterval=1.0,
                        desc=desc, unit="it", file=sys.stderr)

    def wall(out: Output) -> float:
        return out.member.wall_before + time.perf_counter() - t_start

    def save_checkpoints() -> None:
        state = game.state_dict()
        for out in outs:
            if not out.active and out.status != "preempted":
                continue
            k = out.member.index
            own = split_state(state, k) if replicated else state
            rng = replica_rng_state(game.layout, k, device) if replicated else checkpoint.rng_state()
            checkpoint.save(dict(own, step=step, wall_time_s=wall(out), rng=rng, config=out.member.config),
                            out.run_dir / CHECKPOINT, keep_previous=replicated)

    def evaluate(out: Output, G_k: nn.Module, G_avg_k: Optional[nn.Module], final: bool) -> None:
        ev = out.evaluator
        values = ev.evaluate(G_k, step, final=final, z_dim=G.z_dim)
        if G_avg_k is not None:
            prefix = "ema_" if tc.g_average == "ema" else "avg_"
            values.update(ev.evaluate(G_avg_k, step, final=final, z_dim=G.z_dim, prefix=prefix))
        samples = (ev.s.num_samples_final if final else ev.s.num_samples) if out.image_metrics else None
        out.record.add(step, step * B * n_dis, wall(out), values, ev.higher_is_better, ev.reasons, eval_samples=samples)
        for name, value in values.items():
            if value is not None:
                out.writer.add_scalar(f"metrics/{name}", value, step)
        shown = {k: v for k, v in values.items() if v is not None}
        log.info("%sstep %d: %s", out.prefix, step, ", ".join(f"{k}={v:.4g}" for k, v in shown.items()) or "no metrics")

    def check(out: Output, is_log: bool, is_eval: bool, is_final: bool) -> None:
        """A check step's diagnostics, samples and evaluation for one run."""
        k = out.member.index
        G_k, D_k, G_avg_k = players(k)
        if is_log:
            means = dict(zip(SUMS, means_all[k]))
            with frozen_buffers(D_k):
                # D judges packs (pack=m): the probe's real samples go in packs of m, as in training.
                means["grad/D_real_norm"] = input_grad_norm(
                    D_k, pack(probe[k] if replicated else probe, spec.pack), create_graph=False).mean().item()
            means["perf/it_per_s"] = it_per_s
            board.log_scalars(out.writer, means, step)
            if progress is not None and k == 0:
                progress.set_postfix({"D": f"{means['loss/D']:.3f}", "G": f"{means['loss/G']:.3f}",
                                      "pen": f"{means['loss/penalty']:.3f}"}, refresh=False)
            elif progress is None:
                log.info("%sstep %d/%d  D %.4f  G %.4f  pen %.4f  %.1f it/s", out.prefix, step,
                         tc.iterations, means["loss/D"], means["loss/G"], means["loss/penalty"], it_per_s)
        if step % tc.sample_every == 0 or step == tc.iterations:
            if data.kind == "image":
                # samples.png: the latest grid as a file too (the DRAGAN paper's sample figures, e.g. Figure 12).
                board.log_image_grid(out.writer, G_k, out.z_fixed, step, png=out.run_dir / "samples.png")
            else:
                # With pack > 1, D judges packs of m points (a function on ℝ^{m·d}), so it has no level sets
                # over the plane: the plot shows the points only.
                board.log_density(out.writer, G_k, D_k if spec.pack == 1 else None, out.z_fixed, out.real_vis, step)
        if is_eval:
            # The final evaluation precedes the final checkpoint: a run killed after that
            # checkpoint has nothing left to redo, one killed before it redoes both.
            evaluate(out, G_k, G_avg_k, final=is_final)

    try:
        with Interrupts(stop):
            while step < tc.iterations:
                # ---- one step of the game (ganbench/dynamics/): the players' updates ----
                if decay:
                    game.scale_lr(lr_factor(step, tc.iterations, tc.lr_decay, tc.lr_decay_start))
                current = game.step()
                step += 1

                # Device-side bookkeeping only: no host sync in the hot loop.
                with torch.no_grad():
                    sums += current
                    bad = ~torch.isfinite(current[:2]).all(0)
                    first_bad = torch.where(bad & (first_bad < 0), torch.full_like(first_bad, step), first_bad)
                n_summed += 1
                if progress is not None:
                    progress.update(1)

                is_log = step % tc.log_every == 0
                is_final = step == tc.iterations
                is_ckpt = step % tc.ckpt_every == 0 or is_final
                is_eval = (eval_every > 0 and step % eval_every == 0) or is_final
                if not (is_log or is_ckpt or is_eval or stop.requested or step % tc.sample_every == 0):
                    continue

                # ---- a check step: the only place that reads device values. Diagnostics run under
                # fork so that they never shift a training RNG stream (exact resume, and results
                # independent of log/sample/eval cadences). ----
                for out, bad_step in zip(outs, first_bad.reshape(-1).tolist()):
                    if bad_step >= 0 and out.active:
                        out.status, out.diverged_step = "diverged", bad_step
                        with out.logging():
                            log.error("%slosses became NaN/inf at generator step %d: stopping (status diverged)",
                                      out.prefix, bad_step)
                            if replicated:  # the others go on; this one's record is final now
                                finish(out, step, tc, wall(out), it_per_s)
                if not any(out.active for out in outs):
                    break
                if is_log:
                    now = time.perf_counter()
                    it_per_s = (step - step_log) / max(now - t_log, 1e-9)
                    t_log, step_log = now, step
                    means_all = (sums / max(n_summed, 1)).reshape(len(SUMS), -1).T.tolist()
                    sums.zero_()
                    n_summed = 0
                with game.layout.fork(device):
                    if is_log:  # each run's probe batch, from its own stream (whole packs: pack divides B)
                        n_probe = min(B, max(spec.pack, 256 - 256 % spec.pack))
                        probe = game.layout.draw(lambda g: data.sample(n_probe, g), data.sample_device) \
                            if replicated else data.sample(n_probe)
                    for out in outs:
                        if out.active:
                            with out.logging():
                                check(out, is_log, is_eval, is_final)
                if is_ckpt or stop.requested:
                    if stop.requested and step < tc.iterations:
                        for out in outs:
                            if out.active:
                                out.status = "preempted"
                    save_checkpoints()
                    for out in outs:
                        out.writer.flush()
                        if out.active:  # the record follows the checkpoint: a later failure keeps this one
                            out.record.write("running", step, tc.iterations, wall(out), it_per_s)
                if stop.requested and step < tc.iterations:
                    break
    except BaseException as ex:
        oom = out_of_memory(ex, tc.batch_size, device)
        if isinstance(ex, (KeyboardInterrupt, Exception)):
            error = str(oom) if oom else failure_line(ex)
            for out in outs:
                if out.active:
                    out.status = "failed"
                    record_failure(out, step, tc, wall(out), it_per_s, error)
        for out in outs:
            board.close_writer(out.writer)  # its own error (a full disk) must not hide the run's
        if progress is not None:
            progress.close()
        preemption.uninstall(stop)
        if oom:
            raise oom from ex
        raise
    if progress is not None:
        progress.close()

    results, failure = [], None
    for out in outs:
        if out.status == "running":
            out.status = "completed"
        if not (replicated and out.status == "diverged"):  # a diverged replica's record was written then
            with out.logging():
                try:
                    finish(out, step, tc, wall(out), it_per_s)
                except Exception as ex:  # noqa: BLE001 - recorded by finish; the others still finish
                    failure = failure or ex
        results.append(RunRecord.read(out.run_dir) or {})
    if failure is not None:
        preemption.uninstall(stop)
        raise failure
    if any(out.status == "preempted" for out in outs):
        preemption.exit_for_requeue(stop)
    # A launcher's worker process runs further jobs: leave it with its own handlers and no watchdog.
    preemption.uninstall(stop)
    return results[0] if not replicated else replicas_result(start, results)


def finish(out: Output, step: int, tc: Any, wall_s: float, it_per_s: Optional[float]) -> None:
    """Write a run's final record and, for a run that ended (completed or diverged), its HParams entry."""
    from .metrics import flatten, log_hparams
    from .metrics.hparams import varied_keys

    record, writer, config = out.record, out.writer, out.member.config
    # Reference statistics are loaded lazily: the protocol knows their size and cache key only now.
    record.protocol = out.evaluator.protocol()
    try:
        if out.status in ("completed", "diverged"):
            final = {k: v["final"] for k, v in record.metrics.items()}
            # The groups a sweep varies, as ``group.key`` scalars for TensorBoard's HParams tab.
            groups = {k: config.get(k) for k in ("seed", "dataset", "arch", "objective", "penalty", "optimizer",
                                                 "dynamics", "train")}
            flat = dict(flatten(groups), status=out.status)
            log_hparams(writer, flat, final, step, varied=varied_keys(swept_keys(), list(flat)))
        writer.close()
    except Exception as ex:  # noqa: BLE001 - e.g. a full disk after the final checkpoint: recorded, re-raised
        out.status = "failed"
        board.close_writer(writer)
        record_failure(out, step, tc, wall_s, it_per_s, failure_line(ex))
        raise
    record.write(out.status, step, tc.iterations, wall_s, it_per_s, diverged_step=out.diverged_step)
    log.info("%s%s at generator step %d/%d (%.1f s); results: %s", out.prefix, out.status, step, tc.iterations,
             wall_s, out.run_dir / "results.json")


def failure_line(ex: BaseException) -> str:
    """What results.json's ``error`` says of ``ex``: a ganbench error's one line, as the CLI prints it (a full
    disk names the file and the free space); any other error's type and message."""
    if isinstance(ex, GanbenchError):
        return one_line_error(ex)
    return f"{type(ex).__name__}: {str(ex).strip()[:500]}"


def record_failure(out: Output, step: int, tc: Any, wall_s: float, it_per_s: Optional[float], error: str) -> None:
    """Write ``status: failed`` with ``error`` at ``step``. When even that write fails (a full disk), the
    previous record stays (the one written at the last checkpoint) and the run's own error is reported."""
    try:
        out.record.write("failed", step, tc.iterations, wall_s, it_per_s, error=error)
    except GanbenchError as ex:
        log.error("%sresults.json was kept as it was: %s", out.prefix, ex)


def replicas_result(start: Start, results: List[Dict[str, Any]]) -> Dict[str, Any]:
    """The job's return value for N replicas: each seed's status and directory (the sweep summary counts
    them one by one), with the worst status first."""
    rows = [{"status": r.get("status"), "run_dir": str(m.run_dir), "error": r.get("error")}
            for m, r in zip(start.members, results)]
    rows += [{"status": (RunRecord.read(d) or {}).get("status"), "run_dir": str(d), "error": None} for d in start.finished]
    order = ("failed", "preempted", "diverged", "completed")
    worst = min((r["status"] for r in rows), key=lambda s: order.index(s) if s in order else 0, default="completed")
    return {"status": worst, "replicas": rows}
