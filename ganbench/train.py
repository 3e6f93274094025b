"""The training loop: the schedule of one run (steps, logging, evaluation, checkpoints).

Everything is built from the config. One step of the game (who is updated, in what order and how) is a
``Game`` from ganbench/dynamics/, built from the objective's loss, the penalty and the players; this file
only calls it, logs, evaluates and checkpoints. The hot loop never synchronises with the device outside logging/checkpoint steps: running
sums and the divergence flag stay on the device until a log step reads them.
"""
import contextlib
import logging
import random
import signal
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, Iterator, List, Optional

import numpy as np
import torch
from omegaconf import DictConfig, OmegaConf
from torch import nn

from . import board, checkpoint, preemption
from .archs import build as build_arch
from .config import Spec, validate
from .data import build_dataset
from .dynamics import Game, Players, build_dynamics
from .dynamics.base import make_average, make_optimizer
from .errors import CheckpointError, ConfigError, GanbenchError
from .penalties.base import input_grad_norm
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
class Start:
    """A run that has passed every check of its start; nothing has been written for it yet."""

    cfg: DictConfig
    spec: Spec
    config: Dict[str, Any]
    device: torch.device
    data: Any
    game: Game
    step: int = 0
    wall_before: float = 0.0


def prepare(cfg: DictConfig, run_dir: Path, fresh: bool = False) -> Start:
    """Every check of a run's start that can fail, with nothing written to ``run_dir``.

    Validates the config, resolves the device, builds the dataset and the networks, and loads the
    checkpoint to continue from: the run's own ``checkpoints/last.pt`` (unless ``fresh``, for
    ``restart=true``), else ``resume=<path>``. Giving both is an error, since one of them would be ignored.
    """
    spec: Spec = validate(cfg)
    dynamics = build_dynamics(cfg.get("dynamics"))
    config = OmegaConf.to_container(cfg, resolve=True)
    device = resolve_device(cfg.device)
    log.info("device: %s%s", device, f" ({torch.cuda.get_device_name(device)})" if device.type == "cuda" else "")
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True

    seed_everything(cfg.seed)
    data = build_dataset(cfg.dataset, device, cfg.seed)
    threads = cfg.get("threads", "auto")
    if threads == "auto" and data.kind == "points":
        threads = 1
    if threads != "auto":
        torch.set_num_threads(int(threads))
    # The objective builds its players from the arch (once for most; K pairs for a mixture, ...).
    G, D = spec.loss.build_players(lambda: build_arch(cfg.arch, data.shape, spec.penalty.gradient_penalty))
    G, D = G.to(device), D.to(device)
    opt_G = make_optimizer(spec.optimizer, G.parameters(), spec.opt_g)
    opt_D = make_optimizer(spec.optimizer, D.parameters(), spec.opt_d)
    G_avg = make_average(G, spec.train.g_average, spec.train.ema_beta)
    game = dynamics.bind(Players(G, D, opt_G, opt_D, G_avg), spec.loss, spec.penalty, spec.n_dis, data,
                         spec.train.batch_size, spec.train.iterations)
    start = Start(cfg, spec, config, device, data, game)
    log.info("G: %.2fM parameters, D: %.2fM parameters", sum(p.numel() for p in G.parameters()) / 1e6,
             sum(p.numel() for p in D.parameters()) / 1e6)

    # ---- resume: the run's own checkpoint, else resume=<path> ----
    own = run_dir / CHECKPOINT
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
    try:
        rng = state["rng"]
        step, wall_before = int(state["step"]), float(state.get("wall_time_s", 0.0))
    except (KeyError, TypeError, ValueError) as ex:
        raise CheckpointError(f"checkpoint {source} lacks {ex}; it was left in place") from None
    checkpoint.set_rng_state(rng)
    start.step, start.wall_before = step, wall_before
    game.g_step = step
    log.info("resumed from %s at generator step %d", source, step)
    return start


def train(cfg: DictConfig, run_dir: Path, overrides: List[str]) -> Dict[str, Any]:
    """Check and train one GAN in ``run_dir`` (in-process use; the CLI adds the directory lock and the
    deferred writes of ganbench/rundir.py around the same two calls). Returns results.json's record."""
    return run(prepare(cfg, run_dir), run_dir, overrides)


def run(start: Start, run_dir: Path, overrides: List[str]) -> Dict[str, Any]:
    """Train the run ``prepare`` checked, in ``run_dir``; resume where its checkpoint stopped."""
    cfg, spec, config, device, data, game = start.cfg, start.spec, start.config, start.device, start.data, start.game
    G, D, G_avg = game.G, game.D, game.players.G_avg
    step, wall_before = start.step, start.wall_before
    n_dis, tc = spec.n_dis, spec.train

    previous = RunRecord.read(run_dir)
    if step >= tc.iterations and previous and previous.get("status") == "completed":
        log.info("run already completed (%d/%d generator steps): nothing to do", step, tc.iterations)
        return previous
    from .metrics import build_evaluator, flatten, log_hparams
    from .metrics.evaluator import EXTRACTOR_GROUPS
    from .metrics.hparams import varied_keys

    evaluator = build_evaluator(cfg, data, device, run_dir)
    image_metrics = any(g in EXTRACTOR_GROUPS for g in evaluator.groups)
    record = RunRecord(run_dir, config, overrides, resume_step=step,
                       best_samples=evaluator.s.num_samples if image_metrics else None)
    record.protocol = evaluator.protocol()
    writer = board.open_writer(run_dir, step)
    if step == 0:
        board.log_config(writer, cfg, 0)

    # Fixed latents for samples: their own generator, so they are identical across resumes.
    fixed = torch.Generator().manual_seed(cfg.seed + 1)
    n_vis = tc.sample_grid if data.kind == "image" else max(tc.sample_grid * 40, 1000)
    z_fixed = torch.randn(n_vis, G.z_dim, generator=fixed).to(device)
    real_vis = data.sample_eval(n_vis, fixed).to(device) if data.kind == "points" else None

    eval_every = resolve_eval_every(cfg.eval.every, tc.iterations, data.kind)
    if eval_every:
        log.info("evaluating every %d generator steps (eval.every=%s) and at the end", eval_every, cfg.eval.every)
    B = tc.batch_size
    decay = tc.lr_decay != "none"  # the factor depends on the step only: exact on resume, no state
    sums = torch.zeros(len(SUMS), device=device)
    n_summed = 0
    first_bad = torch.full((), -1, dtype=torch.long, device=device)

    stop = preemption.install()
    status, diverged_step, error = "running", None, None
    record.write("running", step, tc.iterations, wall_before, None)
    t_start = time.perf_counter()
    t_log, step_log = t_start, step
    it_per_s: Optional[float] = None
    progress = None
    if tc.progress:
        from tqdm import tqdm

        progress = tqdm(total=tc.iterations, initial=step, dynamic_ncols=True, mininterval=1.0,
                        desc=f"{cfg.objective.name}", unit="it", file=sys.stderr)

    def wall() -> float:
        return wall_before + time.perf_counter() - t_start

    def save_checkpoint() -> None:
        state = dict(game.state_dict(), step=step, wall_time_s=wall(), rng=checkpoint.rng_state(), config=config)
        checkpoint.save(state, run_dir / CHECKPOINT)

    def evaluate(final: bool) -> None:
        values = evaluator.evaluate(G, step, final=final, z_dim=G.z_dim)
        if G_avg is not None:
            prefix = "ema_" if tc.g_average == "ema" else "avg_"
            values.update(evaluator.evaluate(G_avg.module, step, final=final, z_dim=G.z_dim, prefix=prefix))
        samples = (evaluator.s.num_samples_final if final else evaluator.s.num_samples) if image_metrics else None
        record.add(step, step * B * n_dis, wall(), values, evaluator.higher_is_better, evaluator.reasons,
                   eval_samples=samples)
        for name, value in values.items():
            if value is not None:
                writer.add_scalar(f"metrics/{name}", value, step)
        shown = {k: v for k, v in values.items() if v is not None}
        log.info("step %d: %s", step, ", ".join(f"{k}={v:.4g}" for k, v in shown.items()) or "no metrics")

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
                    bad = ~torch.isfinite(current[:2]).all()
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
                # fork_rng so that they never shift the training RNG stream (exact resume, and results
                # independent of log/sample/eval cadences). ----
                bad_step = int(first_bad.item())
                if bad_step >= 0:
                    status, diverged_step = "diverged", bad_step
                    log.error("losses became NaN/inf at generator step %d: stopping (status diverged)", bad_step)
                    break
                if is_log:
                    now = time.perf_counter()
                    it_per_s = (step - step_log) / max(now - t_log, 1e-9)
                    t_log, step_log = now, step
                    means = dict(zip(SUMS, (sums / max(n_summed, 1)).tolist()))
                    sums.zero_()
                    n_summed = 0
                    with rng_fork(device):
                        probe = data.sample(min(B, 256))
                    with frozen_buffers(D):
                        means["grad/D_real_norm"] = input_grad_norm(D, probe, create_graph=False).mean().item()
                    means["perf/it_per_s"] = it_per_s
                    board.log_scalars(writer, means, step)
                    if progress is not None:
                        progress.set_postfix({"D": f"{means['loss/D']:.3f}", "G": f"{means['loss/G']:.3f}",
                                              "pen": f"{means['loss/penalty']:.3f}"}, refresh=False)
                    else:
                        log.info("step %d/%d  D %.4f  G %.4f  pen %.4f  %.1f it/s", step, tc.iterations,
                                 means["loss/D"], means["loss/G"], means["loss/penalty"], it_per_s)
                if step % tc.sample_every == 0 or step == tc.iterations:
                    if data.kind == "image":
                        board.log_image_grid(writer, G, z_fixed, step)
                    else:
                        board.log_density(writer, G, D, z_fixed, real_vis, step)
                if is_eval:
                    # The final evaluation precedes the final checkpoint: a run killed after that
                    # checkpoint has nothing left to redo, one killed before it redoes both.
                    with rng_fork(device):
                        evaluate(final=is_final)
                if is_ckpt or stop.requested:
                    save_checkpoint()
                    writer.flush()
                if stop.requested and step < tc.iterations:
                    status = "preempted"
                    break
    except BaseException as ex:
        oom = out_of_memory(ex, B, device)
        if isinstance(ex, (KeyboardInterrupt, Exception)) and status == "running":
            status = "failed"
            error = str(oom) if oom else f"{type(ex).__name__}: {str(ex).strip()[:500]}"
            record.write(status, step, tc.iterations, wall(), it_per_s, error=error)
        writer.close()
        if progress is not None:
            progress.close()
        if oom:
            raise oom from ex
        raise
    if progress is not None:
        progress.close()

    if status == "running":
        status = "completed"
    # Reference statistics are loaded lazily: the protocol knows their size and cache key only now.
    record.protocol = evaluator.protocol()
    if status in ("completed", "diverged"):
        final = {k: v["final"] for k, v in record.metrics.items()}
        # The groups a sweep varies, as ``group.key`` scalars for TensorBoard's HParams tab.
        groups = {k: config.get(k) for k in ("seed", "dataset", "arch", "objective", "penalty", "optimizer", "dynamics",
                                             "train")}
        flat = dict(flatten(groups), status=status)
        log_hparams(writer, flat, final, step, varied=varied_keys(swept_keys(), list(flat)))
    writer.close()
    result = record.write(status, step, tc.iterations, wall(), it_per_s, diverged_step=diverged_step)
    log.info("%s at generator step %d/%d (%.1f s); results: %s", status, step, tc.iterations, wall(),
             run_dir / "results.json")
    if status == "preempted":
        preemption.exit_for_requeue(stop)
    return result
