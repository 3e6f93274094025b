"""The training loop: the schedule of one run or N (steps, logging, evaluation, checkpoints).

Everything is built from the config. One step of the game (who is updated, in what order and how) is a
``Game`` from ganbench/dynamics/, built from the objective's loss, the penalty and the players; this file
only calls it, logs, evaluates and checkpoints. The hot loop never synchronises with the device outside
logging/checkpoint steps: running sums and the divergence flag stay on the device until a log step reads them.
With ``train.replicas=N`` the same loop trains N seeds as one replicated game (ganbench/replicas.py) and keeps
an ``Output`` (record, writer, evaluator) per seed, each in that seed's own run directory.
"""
import contextlib
import logging
import signal
import sys
import time
from pathlib import Path
from typing import Any, Dict, Iterator, List, Optional

import torch
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig
from torch import nn

from ..archs import describe as describe_arch, one_line as arch_line
from ..errors import GanbenchError, one_line_error
from ..packing import pack, packed_shape
from ..penalties.base import input_grad_norm
from ..replicas import Layout, replica_overrides, split_state
from . import board, checkpoint, preemption
from .names import swept_keys
from .record import RunRecord
from .rundir import log_seed
from .start import CHECKPOINT, Member, Start, prepare

log = logging.getLogger("ganbench")


def job_swept_keys() -> List[str]:
    """The keys this job's sweep varies (for the HParams tab); none outside a Hydra multirun."""
    try:
        return swept_keys(HydraConfig.get())
    except ValueError:  # not inside a Hydra app
        return []


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
    deferred writes of ganbench/run/rundir.py around the same two calls). Returns results.json's record."""
    return run(prepare(cfg, run_dir), run_dir, overrides)


class Output:
    """What one run writes while it trains: its record (results.json, metrics.jsonl), its TensorBoard
    writer, its evaluator, its fixed sample latents; and how it ended. A single run has one; N replicas
    have one each, in their own directories."""

    def __init__(self, start: Start, member: Member, overrides: List[str], step: int,
                 first: Optional["Output"] = None):
        from ..metrics import build_evaluator
        from ..metrics.evaluator import EXTRACTOR_GROUPS

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
    from ..metrics import flatten, log_hparams
    from ..metrics.hparams import varied_keys

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
            log_hparams(writer, flat, final, step, varied=varied_keys(job_swept_keys(), list(flat)))
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
