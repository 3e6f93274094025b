"""The training loop: the schedule of one run or N (steps, logging, evaluation, checkpoints).

Everything is built from the config. One step of the game (who is updated, in what order and how) is a
``Game`` from ganbench/dynamics/, built from the objective's loss, the penalty and the players; this file
only calls it, logs, evaluates and checkpoints. The hot loop never synchronises with the device outside
logging/checkpoint steps: running sums and the divergence flag stay on the device until a log step reads them.
With ``train.replicas=N`` the same loop trains N seeds as one replicated game (ganbench/replicas.py); what
differs between one run and N (an ``Output`` per seed in its own directory, records, checkpoints, divergence)
is a ``Runs`` (ganbench/run/runs.py), of which a single run is N = 1.
"""
import contextlib
import logging
import signal
import sys
import time
from pathlib import Path
from typing import Any, Dict, Iterator, List, Optional

import torch
from omegaconf import DictConfig
from torch import nn

from ..errors import GanbenchError
from ..packing import pack
from ..penalties.base import input_grad_norm
from ..replicas import replica_overrides
from . import board, checkpoint, preemption
from .rundir import log_seed
from .runs import Output, Runs, failure_line, record_failure, replicas_result
from .start import Start, prepare

log = logging.getLogger("ganbench")


# Running sums kept on the device between log steps, in this order.
SUMS = ("loss/D", "loss/G", "loss/penalty", "D/real", "D/fake")


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


def train(cfg: DictConfig, run_dir: Path, overrides: List[str]) -> Dict[str, Any]:
    """Check and train one GAN in ``run_dir`` (in-process use; the CLI adds the directory lock and the
    deferred writes of ganbench/run/rundir.py around the same two calls). Returns results.json's record."""
    return run(prepare(cfg, run_dir), run_dir, overrides)


def run(start: Start, run_dir: Path, overrides: List[str]) -> Dict[str, Any]:
    """Train the run ``prepare`` checked, in ``run_dir``; resume where its checkpoint stopped. With
    replicas, train them all (each in its own directory) and return their records under ``replicas``:
    batched, through ``loop``; one seed after another (``start.parts``) where the method cannot be batched."""
    return run_in_turn(start, overrides) if start.parts else loop(start, run_dir, overrides)


def run_in_turn(start: Start, overrides: List[str]) -> Dict[str, Any]:
    """Replicas that are not batched: each seed's run by ``loop`` in turn, from the random state prepare drew
    for it, logged under its seed."""
    results = []
    for part in start.parts:
        member = part.members[0]
        checkpoint.set_rng_state(part.rng)
        with log_seed(member.cfg.seed):
            results.append(loop(part, member.run_dir, replica_overrides(overrides, member.cfg.seed, start.cfg.seed)))
    return replicas_result(start, results)


def loop(start: Start, run_dir: Path, overrides: List[str]) -> Dict[str, Any]:
    """The training loop, one schedule for one run or N batched replicas: it drives a ``Runs``
    (ganbench/run/runs.py), which holds what differs between them (outputs, records, checkpoints,
    divergence). Per generator step: n_dis discriminator steps, one generator step; every log_every a host read
    of the summed losses (divergence checked there), every eval.every an evaluation, every ckpt_every a
    checkpoint; a preemption signal (SIGUSR2, SIGTERM: ganbench/run/preemption.py) checkpoints and stops."""
    cfg, spec, device, data, game = start.cfg, start.spec, start.device, start.data, start.game
    step = start.step
    n_dis, tc = spec.n_dis, spec.train

    done = Runs.already(start, run_dir)
    if done is not None:
        return done
    runs = Runs(start, overrides, step)

    eval_every = resolve_eval_every(cfg.eval.every, tc.iterations, data.kind)
    if eval_every:
        log.info("evaluating every %d generator steps (eval.every=%s) and at the end", eval_every, cfg.eval.every)
    B = tc.batch_size * spec.pack  # real samples per D step: train.batch_size packs of m
    n_probe = min(B, max(spec.pack, 256 - 256 % spec.pack))  # whole packs: pack divides B
    decay = tc.lr_decay != "none"  # the factor depends on the step only: exact on resume, no state
    run_shape = game.layout.run_shape  # a per-run scalar: () for one run, (N,) for replicas
    sums = torch.zeros((len(SUMS),) + run_shape, device=device)
    n_summed = 0
    first_bad = torch.full(run_shape, -1, dtype=torch.long, device=device)

    stop = preemption.install()
    error = None
    t_log, step_log = runs.begin(step), step
    it_per_s: Optional[float] = None
    progress = None
    if tc.progress:
        from tqdm import tqdm

        progress = tqdm(total=tc.iterations, initial=step, dynamic_ncols=True, mininterval=1.0,
                        desc=runs.label, unit="it", file=sys.stderr)

    def check(out: Output, is_log: bool, is_eval: bool, is_final: bool) -> None:
        """A check step's diagnostics, samples and evaluation for one run."""
        k = out.member.index
        G_k, D_k, G_avg_k = runs.players(k)
        if is_log:
            means = dict(zip(SUMS, means_all[k]))
            with frozen_buffers(D_k):
                # D judges packs (pack=m): the probe's real samples go in packs of m, as in training.
                means["grad/D_real_norm"] = input_grad_norm(D_k, pack(probes[k], spec.pack), create_graph=False).mean().item()
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
            out.evaluate(G_k, G_avg_k, step, step * B * n_dis, final=is_final)

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
                runs.diverge(first_bad, step, it_per_s)
                if not runs.active():
                    break
                if is_log:
                    now = time.perf_counter()
                    it_per_s = (step - step_log) / max(now - t_log, 1e-9)
                    t_log, step_log = now, step
                    means_all = (sums / max(n_summed, 1)).reshape(len(SUMS), -1).T.tolist()
                    sums.zero_()
                    n_summed = 0
                with game.layout.fork(device):
                    if is_log:  # each run's probe batch, from its own stream
                        probes = runs.probes(data, n_probe)
                    for out in runs.active():
                        with out.logging():
                            check(out, is_log, is_eval, is_final)
                if is_ckpt or stop.requested:
                    if stop.requested and step < tc.iterations:
                        for out in runs.active():
                            out.status = "preempted"
                    runs.save(step)
                    for out in runs:
                        out.writer.flush()
                        if out.active:  # the record follows the checkpoint: a later failure keeps this one
                            out.record.write("running", step, tc.iterations, out.wall(), it_per_s)
                if stop.requested and step < tc.iterations:
                    break
    except BaseException as ex:
        oom = out_of_memory(ex, tc.batch_size, device)
        if isinstance(ex, (KeyboardInterrupt, Exception)):
            error = str(oom) if oom else failure_line(ex)
            for out in runs.active():
                out.status = "failed"
                record_failure(out, step, tc, out.wall(), it_per_s, error)
        for out in runs:
            board.close_writer(out.writer)  # its own error (a full disk) must not hide the run's
        if progress is not None:
            progress.close()
        preemption.uninstall(stop)
        if oom:
            raise oom from ex
        raise
    if progress is not None:
        progress.close()

    try:
        result = runs.finish(step, it_per_s)
    except Exception:
        preemption.uninstall(stop)
        raise
    if any(out.status == "preempted" for out in runs):
        preemption.exit_for_requeue(stop)
    # A launcher's worker process runs further jobs: leave it with its own handlers and no watchdog.
    preemption.uninstall(stop)
    return result
